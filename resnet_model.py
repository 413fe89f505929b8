"""Pre-activation residual network for 32x32 images (CIFAR-10/100), TF1-style graph.

He et al., "Identity Mappings in Deep Residual Networks" (2016), in the layout of
the classic TensorFlow CIFAR suite:

  init/conv                 3x3 convolution, 16 filters
  unit_1_0 .. unit_1_{n-1}  stride 1, 16k filters (plain) or 64k (bottleneck)
  unit_2_0 .. unit_2_{n-1}  stride 2, 32k filters (plain) or 128k (bottleneck)
  unit_3_0 .. unit_3_{n-1}  stride 2, 64k filters (plain) or 256k (bottleneck)
  unit_last/bn              batch norm, ReLU, global average pool -> `features`
  logit                     fully connected layer -> `logits`

with n = num_residual_units and k = width. Depth is 6n+2 for plain units and
9n+2 for bottleneck units. Every unit is pre-activation: batch norm and leaky
ReLU come before each convolution. The first unit's pre-activation also feeds
its shortcut (it "shares the stem's activation"); every other unit's shortcut
takes the unit's input as is.

Conventions:
  * Weight decay is `weight_decay_rate * sum(tf.nn.l2_loss(w))`, i.e. rate times
    half the sum of squares, over the convolution and fully connected weights
    only. Those are found through WEIGHT_DECAY_COLLECTION, filled when the
    variables are created, never by matching names.
  * Convolutions are He-normal with fan-out: stddev sqrt(2 / (k*k*out_filters)).
    The fully connected weights are uniform in +-sqrt(3 / in_features) (unit
    variance scaling), biases zero.
  * Bottleneck units put their stride on the 3x3 convolution, so the strided
    unit does not discard three quarters of its input before looking at it.
  * The final activation (unit_last) is a plain ReLU, so `features` are >= 0.
  * Mixed precision (compute_dtype float16 or bfloat16): the images and each
    convolution's weights are cast to the compute dtype where they are used, and
    fused batch norm takes 16-bit activations with float32 gamma, beta and
    statistics. Every variable is float32, so checkpoints do not depend on the
    dtype. `features` are cast back to float32: the fully connected layer, cost,
    weight decay and precision are float32. float16 training scales the loss
    (loss_scaling.py).
"""
import collections
import math

import tensorflow as tf

from resnet_cifar import config
from resnet_cifar import loss_scaling
from resnet_cifar import settings
from resnet_cifar.settings import GRAPH_MODES as MODES

WEIGHT_DECAY_COLLECTION = 'weight_decay_variables'
# The output of every residual unit, for activation histograms.
ACTIVATIONS_COLLECTION = 'unit_activations'
# The name of a variable's moving average (tf.compat.v1.train.ExponentialMovingAverage's).
SHADOW_SUFFIX = '/ExponentialMovingAverage'

_STEM_FILTERS = 16
_STAGE_STRIDES = (1, 2, 2)

# Every field is a setting of resnet_cifar/settings.py: its meaning, default and check are
# declared there, once; lr_boundaries and lr_values default to () here (lrn_rate at every step).
_HParamsBase = collections.namedtuple('HParams', settings.HPARAMS_FIELDS,
                                      defaults=tuple(settings.HPARAMS_DEFAULTS.values()))


class HParams(_HParamsBase):
    """Hyperparameters of the network and its training step, checked on creation.

    The seed's nine fields come first, in its order: batch_size (images per training step;
    informational, the graph works for any batch size), num_classes, min_lrn_rate (the
    rate's floor), lrn_rate (the rate when lr_values is empty), num_residual_units,
    use_bottleneck, weight_decay_rate, relu_leakiness, optimizer. The others have defaults:
    width, momentum, bn_decay, bn_epsilon, data_format, the schedule (lr_schedule,
    lr_boundaries, lr_values as config.Schedule has them, and its warmup), the regularizers,
    moving_average_decay and compute_dtype (settings.HPARAMS_FIELDS lists them in order).

    A bad value raises ValueError 'HParams.<field> must be <what the setting takes>; got
    <value>', with the check of the setting (the flag's); `_replace` checks too.
    """
    __slots__ = ()

    def __new__(cls, *args, **kwargs):
        return super().__new__(cls, **_checked(_HParamsBase(*args, **kwargs)._asdict()))

    @classmethod
    def _make(cls, iterable):
        return cls(*iterable)


def _checked(fields):
    """The fields checked (and normalized to Python's types) by their settings, and the schedule
    checked as a whole as config.Schedule checks it; ValueError naming the field otherwise."""
    out = settings.check_hparams(fields)
    boundaries, values, kind = out['lr_boundaries'], out['lr_values'], out['lr_schedule']
    if values:
        problem = config.schedule_problem(boundaries, values, kind, out['warmup_steps'])
    elif boundaries or kind != 'piecewise':
        problem = 'a %s schedule needs rates for its boundaries, got none' % kind
    else:
        problem = None  # lrn_rate at every step
    if problem:
        raise ValueError('HParams.lr_boundaries/lr_values: %s' % problem)
    return out


def scheduled_rate(step, boundaries, values, kind='piecewise', warmup_steps=0, name='learning_rate'):
    """The learning rate at `step` (an int64 scalar tensor), a float32 scalar tensor.

    piecewise: values[i] from boundaries[i-1] (inclusive) up to boundaries[i].
    cosine: boundaries (end,), values (start, final): start + (final - start) *
    (1 - cos(pi * p)) / 2 with p = clip((step - warmup_steps) / (end - warmup_steps), 0, 1),
    so `final` from `end` on. With warmup_steps, the rate of step s < warmup_steps is
    multiplied by (s + 1) / warmup_steps. Computed in float64, as config.Schedule.rate_at.
    """
    with tf.name_scope('schedule'):
        step_number = tf.cast(step, tf.float64)
        if kind == 'cosine':
            (end,), (start_rate, final_rate) = boundaries, values
            progress = tf.clip_by_value((step_number - warmup_steps) / float(end - warmup_steps), 0.0, 1.0)
            rate = final_rate + (start_rate - final_rate) * 0.5 * (1.0 + tf.cos(math.pi * progress))
        else:
            passed = tf.greater_equal(step, tf.constant(boundaries, tf.int64, shape=[len(boundaries)]))
            index = tf.reduce_sum(tf.cast(passed, tf.int32))
            rate = tf.gather(tf.constant(values, tf.float64), index)
        if warmup_steps:
            rate *= tf.minimum((step_number + 1.0) / warmup_steps, 1.0)
    return tf.cast(rate, tf.float32, name=name)


def mixup(images, labels, alpha, seed=None):
    """Mixup (Zhang et al., 2018) within one batch: each image is mixed with a partner.

    Args:
      images: float32 [batch, height, width, channels]; labels: float32 [batch, classes].
      alpha: > 0; each image's weight is drawn from Beta(alpha, alpha).
      seed: op seed of the draws, or None.
    Returns:
      (mixed images, mixed labels, weights float32 [batch], partners int32 [batch]):
      mixed[i] = weights[i] * x[i] + (1 - weights[i]) * x[partners[i]], for the images and
      the labels alike; partners is a random permutation of the batch. Labels that each
      sum to one still do.
    """
    count = tf.shape(images)[0]
    seeds = (None, None, None) if seed is None else (seed, seed + 1, seed + 2)
    first = tf.random.gamma([count], alpha, seed=seeds[0])
    second = tf.random.gamma([count], alpha, seed=seeds[1])
    weights = first / tf.maximum(first + second, 1e-12)
    partners = tf.random.shuffle(tf.range(count), seed=seeds[2])
    mixed_images = _mix(images, weights, partners)
    mixed_labels = _mix(labels, weights, partners)
    return mixed_images, mixed_labels, weights, partners


def _mix(x, weights, partners):
    """weights[i] * x[i] + (1 - weights[i]) * x[partners[i]] along the first axis."""
    shape = tf.concat([tf.shape(weights), tf.ones([tf.rank(x) - 1], tf.int32)], 0)
    w = tf.reshape(weights, shape)
    return w * x + (1.0 - w) * tf.gather(x, partners)


def smoothed_labels(labels, epsilon):
    """(1 - epsilon) * labels + epsilon / classes; labels float32 [batch, classes]."""
    classes = tf.cast(tf.shape(labels)[1], labels.dtype)
    return (1.0 - epsilon) * labels + epsilon / classes


def count_params(variables):
    """Total number of elements in `variables` (an iterable of tf.Variable)."""
    total = 0
    for variable in variables:
        shape = variable.shape
        if not shape.is_fully_defined():
            raise ValueError('count_params: variable %s has an unknown shape %s'
                             % (variable.name, shape))
        total += shape.num_elements()
    return int(total)


class ResNet:
    """The network, its cost and (in train mode) its training step.

    Args:
      hps: HParams.
      images: float32 [batch, height, width, channels] (NHWC, whatever
        hps.data_format says; the model transposes internally for NCHW).
        CIFAR images are [batch, 32, 32, 3].
      labels: float32 one-hot [batch, num_classes]; None for build_network() alone.
      mode: 'train' (batch-norm batch moments, a train_op) or 'eval'
        (batch-norm moving statistics, no train_op).

    `build_graph()` builds everything for one device. Data-parallel towers
    (towers.py) build the same from the public pieces, in this order:
    `build_step_state()` once (or `share_step_state(lead)`), `build_forward()`
    per tower, `compute_gradients(cost)`, then `build_train_op(grads_and_vars,
    moments)`: `moving_statistics_updates(moments)` and `apply_gradients(grads_and_vars,
    update_ops)`.

    Attributes (shapes per batch):
      global_step: int64 scalar variable.
      step_value: int64 scalar, the global step read once per session.run,
        before this step's increment: the step the train op runs at.
      lrn_rate: float32 scalar tensor 'learning_rate', the rate of the schedule
        (hps.lr_boundaries, hps.lr_values) at step_value; computed in the
        graph, so every process of a cluster agrees on it.
      effective_lrn_rate: max(lrn_rate, hps.min_lrn_rate), the rate the optimizer uses.
      ema: the ExponentialMovingAverage of the trainable variables, or None.
      loss_scale: (train mode, compute_dtype float16) the
        loss_scaling.DynamicLossScale of the train op, else None.
      logits: float32 [batch, num_classes].
      predictions: softmax of logits, [batch, num_classes].
      features: float32 [batch, D], the pooled activations the fully connected
        layer reads; D = 64*width (plain) or 256*width (bottleneck).
      target_labels: float32 [batch, num_classes], what the network learns: in train mode
        with hps.mixup_alpha the mixed (soft) labels of the mixed images, else `labels`.
      cross_entropy: scalar, mean softmax cross-entropy against target_labels, smoothed
        in train mode by hps.label_smoothing.
      weight_decay: scalar, weight_decay_rate * sum(tf.nn.l2_loss(w)).
      cost: cross_entropy + weight_decay.
      precision: scalar, fraction of the batch whose argmax matches the argmax of
        target_labels (with mixup: the class of the image with the larger weight).
      batch_moments: (train mode) [(moving mean or variance variable, this
        batch's mean or unbiased variance)] of every batch norm, in graph order.
      bn_update_ops: (train mode, after build_graph) the moving mean/variance
        assign ops, also in tf.compat.v1.GraphKeys.UPDATE_OPS.
      train_op: (train mode) optimizer step, then the moving-average update,
        plus the batch-norm updates.
      summaries: tf.compat.v1.summary.merge_all() of the graph.
    """

    def __init__(self, hps, images, labels, mode):
        if not isinstance(hps, HParams):
            raise ValueError('ResNet hps must be a resnet_model.HParams; got %r' % (hps,))
        if mode not in MODES:
            raise ValueError("ResNet mode must be 'train' or 'eval'; got %r" % (mode,))
        self.hps = hps
        self.mode = mode
        self.images = _checked_images(images)
        self.labels = None if labels is None else _checked_labels(labels, hps.num_classes)
        self.target_labels = None
        self.global_step = self.step_value = self.lrn_rate = self.effective_lrn_rate = None
        self.ema = self.loss_scale = None
        self.logits = self.predictions = self.features = None
        self.cross_entropy = self.weight_decay = self.cost = self.precision = None
        self.batch_moments = []
        self.bn_update_ops = []
        self.train_op = None
        self.summaries = None
        self._weight_variables = []

    @property
    def _channels_last(self):
        return self.hps.data_format == 'NHWC'

    def build_graph(self, is_frozen=None, build_train_op=None):
        """Builds the whole one-device graph in the default graph: model, cost, train op, summaries.

        Args:
          is_frozen: optional predicate on a trainable variable; the train op
            leaves the variables it accepts unchanged (no gradient, no optimizer
            slot), though their moving averages are kept as usual.
          build_train_op: optional function (model, grads_and_vars, moments) ->
            train op, in place of ResNet.build_train_op (synchronous replicas
            of a cluster, distributed.py).
        """
        self.build_step_state()
        self.build_forward()
        if self.mode == 'train':
            build_train_op = build_train_op or ResNet.build_train_op
            self.train_op = build_train_op(self, self.compute_gradients(self.cost, is_frozen),
                                           self.batch_moments)
        add_scalar_summaries(self.cost, self.cross_entropy, self.weight_decay, self.precision,
                             self.effective_lrn_rate, self.loss_scale)
        self.summaries = tf.compat.v1.summary.merge_all()

    def variables_to_restore(self):
        """Checkpoint name -> variable, for an eval Saver that loads the moving averages.

        Trainable variables are loaded from their moving-average shadows; every
        other global variable (batch-norm moving statistics, global step) from
        its own name. Shadow variables themselves are left
        out. Without moving averages this is the plain name -> variable mapping.
        """
        graph = self.logits.graph
        variables = graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)
        shadows = set()
        if self.ema is not None:
            trainable = graph.get_collection(tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES)
            shadows = {self.ema.average(v).ref() for v in trainable if self.ema.average(v) is not None}
        return restore_names([v for v in variables if v.ref() not in shadows],
                             from_shadows=self.ema is not None)

    # The public pieces of the graph, for one device (build_graph) or several towers.

    def build_step_state(self):
        """The state one optimizer step shares: global step, learning rate, EMA, loss scale."""
        self.global_step = tf.compat.v1.train.get_or_create_global_step()
        # One read per session.run: the optimizer's update depends on the rate, and the
        # increment on the update, so this is the step before the increment.
        self.step_value = tf.identity(self.global_step, name='step_value')
        self.lrn_rate = scheduled_rate(self.step_value, self.hps.lr_boundaries,
                                       self.hps.lr_values or (self.hps.lrn_rate,),
                                       self.hps.lr_schedule, self.hps.warmup_steps)
        self.effective_lrn_rate = tf.maximum(self.lrn_rate, self.hps.min_lrn_rate,
                                             name='effective_learning_rate')
        if self.hps.moving_average_decay > 0:
            self.ema = tf.compat.v1.train.ExponentialMovingAverage(
                self.hps.moving_average_decay, num_updates=self.global_step)
        if self.mode == 'train' and self.hps.compute_dtype == 'float16':
            # float16 training needs a loss scale (bfloat16 has float32's exponent range).
            self.loss_scale = loss_scaling.DynamicLossScale()

    def share_step_state(self, lead):
        """Uses the step state of `lead` (another tower, after its build_step_state())."""
        for name in ('global_step', 'step_value', 'lrn_rate', 'effective_lrn_rate', 'ema', 'loss_scale'):
            setattr(self, name, getattr(lead, name))

    def build_forward(self):
        """Forward pass, cost and precision; in train mode it records the batch moments, and
        mixes the batch (hps.mixup_alpha) and smooths its labels (hps.label_smoothing)."""
        images, self.target_labels = self.images, self.labels
        if self.mode == 'train' and self.hps.mixup_alpha > 0:
            with tf.name_scope('mixup'):
                images, self.target_labels, _, _ = mixup(images, self.labels, self.hps.mixup_alpha)
        self.build_network(images)
        self._build_cost()
        # The class with the larger weight in a mixed image; the label itself without mixup.
        correct = tf.equal(tf.argmax(self.logits, 1), tf.argmax(self.target_labels, 1))
        self.precision = tf.reduce_mean(tf.cast(correct, tf.float32), name='precision')

    def build_network(self, images=None):
        """The network alone, from `images` (default: the model's) to features, logits and
        predictions: no cost, no step state, nothing of training (export.py serves this)."""
        x = self._in_compute_dtype(self.images if images is None else images)
        if not self._channels_last:
            x = tf.transpose(x, [0, 3, 1, 2])
        with tf.compat.v1.variable_scope('init'):
            x = self._conv('conv', x, 3, int(self.images.shape[3]), _STEM_FILTERS, 1)
        x = self._residual_stages(x)
        with tf.compat.v1.variable_scope('unit_last'):
            x = tf.cast(tf.nn.relu(self._batch_norm('bn', x)), tf.float32)
            self.features = tf.reduce_mean(x, axis=[1, 2] if self._channels_last else [2, 3],
                                           name='features')
        with tf.compat.v1.variable_scope('logit'):
            self.logits = self._fully_connected(self.features, self.hps.num_classes)
        self.predictions = tf.nn.softmax(self.logits, name='predictions')

    def compute_gradients(self, cost, is_frozen=None):
        """[(gradient, variable)] of `cost` for every trainable variable (None if frozen).

        With a loss scale the gradients come from the scaled cost, divided by the scale again.
        """
        variables = tf.compat.v1.trainable_variables()
        trained = [v for v in variables if not (is_frozen and is_frozen(v))]
        differentiate = (tf.compat.v1.gradients if self.loss_scale is None
                         else self.loss_scale.gradients)
        gradients = differentiate(cost, trained, colocate_gradients_with_ops=True)
        by_variable = {v.ref(): g for v, g in zip(trained, gradients)}
        return [(by_variable.get(v.ref()), v) for v in variables]

    def moving_statistics_updates(self, moments):
        """Ops moving each batch-norm statistic toward its batch value: for every (moving, value)
        of `moments`, moving <- bn_decay * moving + (1 - bn_decay) * value. They are also
        added to tf.compat.v1.GraphKeys.UPDATE_OPS."""
        updates = []
        with tf.name_scope('moving_statistics'):
            for moving, batch_value in moments:
                delta = (moving - batch_value) * (1.0 - self.hps.bn_decay)
                updates.append(tf.compat.v1.assign_sub(moving, delta))
                tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.UPDATE_OPS, updates[-1])
        return updates

    def build_train_op(self, grads_and_vars, moments):
        """The train op of one process: the batch-norm moving statistics move toward `moments`
        ([(moving variable, batch value)], into bn_update_ops), and apply_gradients."""
        self.bn_update_ops = self.moving_statistics_updates(moments)
        return self.apply_gradients(grads_and_vars, self.bn_update_ops)

    def apply_gradients(self, grads_and_vars, update_ops):
        """The train op: optimizer step (+1 global step), then the EMA update, plus update_ops.

        With a loss scale, a step whose gradients overflowed skips the optimizer
        step (still +1 global step) and the scale adapts.
        """
        optimizer = self.make_optimizer()
        if self.loss_scale is None:
            step = optimizer.apply_gradients(
                grads_and_vars, global_step=self.global_step, name='apply_gradients')
        else:
            step = self.loss_scale.apply_if_finite(optimizer, grads_and_vars, self.global_step)
        if self.ema is not None:
            with tf.control_dependencies([step]):
                # Reads the global step after the increment: decay_t uses t = new step.
                step = self.ema.apply([v for _, v in grads_and_vars])
        return tf.group(step, *update_ops, name='train_op')

    # The network, in small pieces.

    def _stage_filters(self):
        """Output filters of the three stages."""
        base = (64, 128, 256) if self.hps.use_bottleneck else (16, 32, 64)
        return [f * self.hps.width for f in base]

    def _residual_stages(self, x):
        unit = self._bottleneck_unit if self.hps.use_bottleneck else self._plain_unit
        in_filters = _STEM_FILTERS
        for stage, (out_filters, stride) in enumerate(
                zip(self._stage_filters(), _STAGE_STRIDES), start=1):
            for i in range(self.hps.num_residual_units):
                with tf.compat.v1.variable_scope('unit_%d_%d' % (stage, i)):
                    x = unit(x, in_filters, out_filters, stride if i == 0 else 1,
                             shared_activation=(stage == 1 and i == 0))
                    tf.compat.v1.add_to_collection(ACTIVATIONS_COLLECTION, x)
                in_filters = out_filters
        return x

    def _plain_unit(self, x, in_filters, out_filters, stride, shared_activation):
        """bn1-relu-conv1 (3x3, stride), bn2-relu-conv2 (3x3); parameter-free shortcut."""
        activated = self._bn_relu('bn1', x)
        shortcut = activated if shared_activation else x
        y = self._conv('conv1', activated, 3, in_filters, out_filters, stride)
        y = self._conv('conv2', self._bn_relu('bn2', y), 3, out_filters, out_filters, 1)
        if stride != 1 or in_filters != out_filters:
            shortcut = self._pool_and_pad(shortcut, in_filters, out_filters, stride)
        return y + shortcut

    def _bottleneck_unit(self, x, in_filters, out_filters, stride, shared_activation):
        """bn-relu-conv 1x1, 3x3 (stride), 1x1 to out_filters; projection shortcut."""
        inner = out_filters // 4
        activated = self._bn_relu('bn1', x)
        shortcut = activated if shared_activation else x
        y = self._conv('conv1', activated, 1, in_filters, inner, 1)
        y = self._conv('conv2', self._bn_relu('bn2', y), 3, inner, inner, stride)
        y = self._conv('conv3', self._bn_relu('bn3', y), 1, inner, out_filters, 1)
        if stride != 1 or in_filters != out_filters:
            shortcut = self._conv('shortcut', shortcut, 1, in_filters, out_filters, stride)
        return y + shortcut

    def _pool_and_pad(self, x, in_filters, out_filters, stride):
        """Average-pools to the new stride and zero-pads the channels."""
        if stride != 1:
            # SAME padding keeps the shape equal to the strided SAME convolution's,
            # also for odd sizes.
            x = tf.nn.avg_pool2d(x, stride, stride, 'SAME', data_format=self.hps.data_format)
        extra = out_filters - in_filters
        if extra > 0:
            channel_pad = [extra // 2, extra - extra // 2]
            if self._channels_last:
                paddings = [[0, 0], [0, 0], [0, 0], channel_pad]
            else:
                paddings = [[0, 0], channel_pad, [0, 0], [0, 0]]
            x = tf.pad(x, paddings)
        return x

    def _bn_relu(self, name, x):
        x = self._batch_norm(name, x)
        if self.hps.relu_leakiness > 0:
            return tf.nn.leaky_relu(x, alpha=self.hps.relu_leakiness)
        return tf.nn.relu(x)

    def _batch_norm(self, name, x):
        """Fused batch norm; train mode also builds the moving-statistics updates.

        x may be 16-bit: gamma, beta and the batch and moving statistics stay float32.
        """
        channels = int(x.shape[3 if self._channels_last else 1])
        with tf.compat.v1.variable_scope(name):
            beta = tf.compat.v1.get_variable(
                'beta', [channels], tf.float32, initializer=tf.compat.v1.zeros_initializer())
            gamma = tf.compat.v1.get_variable(
                'gamma', [channels], tf.float32, initializer=tf.compat.v1.ones_initializer())
            moving_mean = tf.compat.v1.get_variable(
                'moving_mean', [channels], tf.float32,
                initializer=tf.compat.v1.zeros_initializer(), trainable=False)
            moving_variance = tf.compat.v1.get_variable(
                'moving_variance', [channels], tf.float32,
                initializer=tf.compat.v1.ones_initializer(), trainable=False)
            if self.mode == 'train':
                y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                    x, gamma, beta, epsilon=self.hps.bn_epsilon,
                    data_format=self.hps.data_format, is_training=True)
                # `variance` is the unbiased (n / (n - 1)) batch variance.
                self.batch_moments += [(moving_mean, mean), (moving_variance, variance)]
            else:
                y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                    x, gamma, beta, mean=moving_mean, variance=moving_variance,
                    epsilon=self.hps.bn_epsilon, data_format=self.hps.data_format,
                    is_training=False)
            return y

    def _weight_variable(self, name, shape, initializer):
        """A weight that weight decay applies to (kept in WEIGHT_DECAY_COLLECTION)."""
        weights = tf.compat.v1.get_variable(name, shape, tf.float32, initializer=initializer)
        collection = tf.compat.v1.get_collection_ref(WEIGHT_DECAY_COLLECTION)
        if not any(w is weights for w in collection):
            collection.append(weights)
        self._weight_variables.append(weights)
        return weights

    def _conv(self, name, x, kernel_size, in_filters, out_filters, stride):
        with tf.compat.v1.variable_scope(name):
            weights = self._weight_variable(
                'weights', [kernel_size, kernel_size, in_filters, out_filters],
                tf.compat.v1.variance_scaling_initializer(
                    scale=2.0, mode='fan_out', distribution='untruncated_normal'))
            return tf.nn.conv2d(x, self._in_compute_dtype(weights), stride, 'SAME',
                                data_format=self.hps.data_format)

    def _in_compute_dtype(self, x):
        """x (a tensor or variable) cast to hps.compute_dtype; the gradient flows back cast."""
        dtype = tf.as_dtype(self.hps.compute_dtype)
        return x if x.dtype.base_dtype == dtype else tf.cast(x, dtype)

    def _fully_connected(self, x, out_dim):
        weights = self._weight_variable(
            'weights', [int(x.shape[1]), out_dim],
            tf.compat.v1.variance_scaling_initializer(
                scale=1.0, mode='fan_in', distribution='uniform'))
        biases = tf.compat.v1.get_variable(
            'biases', [out_dim], tf.float32, initializer=tf.compat.v1.zeros_initializer())
        return tf.nn.bias_add(tf.matmul(x, weights), biases, name='logits')

    def _build_cost(self):
        with tf.name_scope('costs'):
            targets = self.target_labels
            if self.mode == 'train' and self.hps.label_smoothing > 0:
                targets = smoothed_labels(targets, self.hps.label_smoothing)
            per_image = tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=self.logits)
            self.cross_entropy = tf.reduce_mean(per_image, name='cross_entropy')
            if self.hps.weight_decay_rate > 0:
                l2 = tf.add_n([tf.nn.l2_loss(w) for w in self._weight_variables])
                self.weight_decay = tf.multiply(self.hps.weight_decay_rate, l2,
                                                name='weight_decay')
            else:
                self.weight_decay = tf.constant(0.0, name='weight_decay')
            self.cost = tf.add(self.cross_entropy, self.weight_decay, name='cost')

    def make_optimizer(self):
        """The hps.optimizer at effective_lrn_rate: plain gradient descent or momentum."""
        if self.hps.optimizer == 'sgd':
            return tf.compat.v1.train.GradientDescentOptimizer(self.effective_lrn_rate)
        # Nesterov keeps the same 'Momentum' slots: checkpoints move between the two.
        return tf.compat.v1.train.MomentumOptimizer(self.effective_lrn_rate, self.hps.momentum,
                                                    use_nesterov=self.hps.optimizer == 'nesterov')


def restore_names(variables, from_shadows):
    """{checkpoint name: variable} for a Saver that restores `variables`.

    With from_shadows, each trainable variable is read from its moving-average
    shadow '<name>/ExponentialMovingAverage' (what ExponentialMovingAverage
    saves); every other variable, and every variable without from_shadows,
    from its own name.
    """
    variables = list(variables)
    graph = variables[0].graph if variables else tf.compat.v1.get_default_graph()
    trainable = {v.ref() for v in graph.get_collection(tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES)}
    return {(v.op.name + SHADOW_SUFFIX if from_shadows and v.ref() in trainable else v.op.name): v
            for v in variables}


def add_scalar_summaries(cost, cross_entropy, weight_decay, precision, lrn_rate, loss_scale=None):
    """The training scalars, with exactly these tags, for one model or several towers.

    total_loss is `cost` (cross-entropy plus weight decay), logged beside its two
    parts; learning_rate is the rate in use; loss_scale (float16 training) the
    scale of a loss_scaling.DynamicLossScale, when given.
    """
    for tag, value in (('total_loss', cost), ('cross_entropy', cross_entropy),
                       ('weight_decay', weight_decay), ('precision', precision),
                       ('learning_rate', lrn_rate)):
        _scalar_summary(tag, value)
    if loss_scale is not None:
        _scalar_summary('loss_scale', loss_scale.scale)


def _scalar_summary(tag, value):
    """A scalar summary whose tag is `tag` as given.

    tf.compat.v1.summary.scalar derives the tag from a unique op name, so it would
    log 'learning_rate_1' next to the variable called 'learning_rate', and prefix
    any enclosing name scope.
    """
    summary = tf.raw_ops.ScalarSummary(tags=tag, values=value, name=tag + '_summary')
    tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.SUMMARIES, summary)


def _checked_images(images):
    images = tf.convert_to_tensor(images)
    shape = images.shape
    if shape.rank != 4 or shape[3] is None or not images.dtype.is_floating:
        raise ValueError('ResNet images must be a float tensor [batch, height, width, channels] '
                         'with known channels; got %s %s' % (images.dtype.name, shape))
    return tf.cast(images, tf.float32) if images.dtype != tf.float32 else images


def _checked_labels(labels, num_classes):
    labels = tf.convert_to_tensor(labels)
    shape = labels.shape
    if (shape.rank != 2 or shape[1] not in (None, num_classes)
            or not labels.dtype.is_floating):
        raise ValueError('ResNet labels must be one-hot float [batch, %d]; got %s %s'
                         % (num_classes, labels.dtype.name, shape))
    return tf.cast(labels, tf.float32) if labels.dtype != tf.float32 else labels
