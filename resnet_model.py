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

import tensorflow as tf

from resnet_cifar import schedules
from resnet_cifar import settings
from resnet_cifar import train_step
from resnet_cifar.settings import GRAPH_MODES as MODES

WEIGHT_DECAY_COLLECTION = 'weight_decay_variables'
# The output of every residual unit, for activation histograms.
ACTIVATIONS_COLLECTION = 'unit_activations'

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
    use_bottleneck, weight_decay_rate, relu_leakiness, optimizer. The others have defaults, in
    main's released order: width, momentum, bn_decay, bn_epsilon, moving_average_decay,
    data_format, compute_dtype, the four fields of the learning-rate schedule (a recipe of
    resnet_cifar/schedules.py, which says what they mean), then the two regularizers
    (settings.HPARAMS_FIELDS lists every field in order).

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
    recipe = _HParamsBase(**out)
    if recipe.lr_values:
        problem = schedules.recipe_problem(recipe)
    elif recipe.lr_boundaries or recipe.lr_schedule != 'piecewise':
        problem = 'a %s schedule needs rates for its boundaries, got none' % recipe.lr_schedule
    else:
        problem = None  # lrn_rate at every step
    if problem:
        raise ValueError('HParams.lr_boundaries/lr_values: %s' % problem)
    return out


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
    """The network and its loss.

    Args:
      hps: HParams.
      images: float32 [batch, height, width, channels], e.g. [batch, 32, 32, 3]: NHWC,
        whatever hps.data_format says (the model transposes internally for NCHW).
      labels: float32 one-hot [batch, num_classes]; None for build_network() alone.
      mode: 'train' (batch-norm batch moments, mixup, label smoothing) or 'eval'
        (batch-norm moving statistics).

    `build_graph()` builds everything for one device, the train op included, with
    resnet_cifar/train_step.py's TrainStep (the training half); data-parallel towers
    (towers.py) call `build_forward()` per tower and share one TrainStep.

    Attributes (shapes per batch):
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
      step: (after build_graph) its train_step.TrainStep: global step, learning rate,
        moving averages, loss scale, batch-norm updates, variables_to_restore().
      train_op: (train mode, after build_graph) step.train_op.
      summaries: (after build_graph) tf.compat.v1.summary.merge_all() of the graph.
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
        self.logits = self.predictions = self.features = None
        self.cross_entropy = self.weight_decay = self.cost = self.precision = None
        self.batch_moments = []
        self.step = self.train_op = self.summaries = None
        self._weight_variables = []

    @property
    def _channels_last(self):
        return self.hps.data_format == 'NHWC'

    def build_graph(self, is_frozen=None, build_train_op=None):
        """The whole one-device graph in the default graph: step, network, cost, train op, summaries.

        is_frozen: optional predicate on a trainable variable, which the train op then leaves
        unchanged; build_train_op: see TrainStep.make_train_op (distributed.py's SyncReplicas).
        """
        self.step = train_step.TrainStep(self.hps, self.mode)
        self.build_forward()
        if self.mode == 'train':
            self.train_op = self.step.make_train_op(self.step.compute_gradients(self.cost, is_frozen),
                                                    self.batch_moments, build_train_op)
        train_step.add_scalar_summaries(self.cost, self.cross_entropy, self.weight_decay, self.precision,
                                        self.step)
        self.summaries = tf.compat.v1.summary.merge_all()

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
        x = _in_dtype(self.images if images is None else images, self.hps.compute_dtype)
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

    # The network, in small pieces.

    def _residual_stages(self, x):
        unit = self._bottleneck_unit if self.hps.use_bottleneck else self._plain_unit
        base_filters = (64, 128, 256) if self.hps.use_bottleneck else (16, 32, 64)
        stage_filters = [f * self.hps.width for f in base_filters]
        in_filters = _STEM_FILTERS
        for stage, (out_filters, stride) in enumerate(zip(stage_filters, _STAGE_STRIDES), start=1):
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
            shortcut = _pool_and_pad(shortcut, in_filters, out_filters, stride, self.hps.data_format)
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
            beta, gamma, moving_mean, moving_variance = _batch_norm_variables(channels)
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
            return tf.nn.conv2d(x, _in_dtype(weights, self.hps.compute_dtype), stride, 'SAME',
                                data_format=self.hps.data_format)

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


def _batch_norm_variables(channels):
    """(beta, gamma, moving_mean, moving_variance) of one batch norm, float32 [channels] each,
    in the current variable scope; the moving statistics are not trainable."""
    def variable(name, initializer, trainable=True):
        return tf.compat.v1.get_variable(name, [channels], tf.float32, initializer=initializer,
                                         trainable=trainable)
    return (variable('beta', tf.compat.v1.zeros_initializer()),
            variable('gamma', tf.compat.v1.ones_initializer()),
            variable('moving_mean', tf.compat.v1.zeros_initializer(), trainable=False),
            variable('moving_variance', tf.compat.v1.ones_initializer(), trainable=False))


def _pool_and_pad(x, in_filters, out_filters, stride, data_format):
    """Average-pools to the new stride and zero-pads the channels (the plain unit's shortcut)."""
    if stride != 1:
        # SAME padding keeps the shape equal to the strided SAME convolution's,
        # also for odd sizes.
        x = tf.nn.avg_pool2d(x, stride, stride, 'SAME', data_format=data_format)
    extra = out_filters - in_filters
    if extra > 0:
        channel_pad = [extra // 2, extra - extra // 2]
        if data_format == 'NHWC':
            paddings = [[0, 0], [0, 0], [0, 0], channel_pad]
        else:
            paddings = [[0, 0], channel_pad, [0, 0], [0, 0]]
        x = tf.pad(x, paddings)
    return x


def _in_dtype(x, dtype):
    """x (a tensor or variable) cast to `dtype` (a name); the gradient flows back cast."""
    dtype = tf.as_dtype(dtype)
    return x if x.dtype.base_dtype == dtype else tf.cast(x, dtype)


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
