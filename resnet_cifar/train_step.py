"""The training half of a ResNet: one optimizer step, for one device, towers and cluster workers.

A TrainStep holds what one optimizer step shares, whoever computes the cost: the
global step, the learning rate of the schedule, the moving averages of the weights
(ExponentialMovingAverage), the float16 loss scale (loss_scaling.py) and the
optimizer. It turns a cost into gradients and (gradients, batch-norm batch moments)
into the train op: the optimizer step (+1 global step), the moving-average update and
the batch-norm moving-statistics updates. It also knows which checkpoint name each
variable is restored from (the restore map of eval, export and features).

The one-device ResNet (resnet_model.ResNet.build_graph), the data-parallel towers
(towers.TowerModel, one TrainStep for all towers) and the synchronous workers of a
cluster (distributed.SyncReplicas, a build_train_op of its own) all build it the
same way, so their variables (global_step, 'Momentum' slots, '/ExponentialMovingAverage'
shadows, the loss scale's local variables) have the same names:

    step = train_step.TrainStep(hps, 'train')       # before the forward pass
    model.build_forward()                           # the cost, the batch moments
    step.make_train_op(step.compute_gradients(model.cost), model.batch_moments)
"""
import tensorflow as tf

from resnet_cifar import loss_scaling
from resnet_cifar import schedules

# The name of a variable's moving average (tf.compat.v1.train.ExponentialMovingAverage's).
SHADOW_SUFFIX = '/ExponentialMovingAverage'


class TrainStep:
    """The state one optimizer step shares and the ops that take the step.

    Args:
      hps: resnet_model.HParams (the schedule, optimizer, moving-average, batch-norm
        decay and compute dtype fields are read).
      mode: 'train' or 'eval'. An eval graph holds the global step, the rate and the
        moving averages' names (for variables_to_restore) but no loss scale.
    Built in the default graph and device when constructed.

    Attributes:
      global_step: int64 scalar variable.
      step_value: int64 scalar, the global step read once per session.run, before this
        step's increment: the step the train op runs at.
      lrn_rate: float32 scalar tensor 'learning_rate', the rate of hps's schedule
        (schedules.for_recipe) at step_value; computed in the graph, so every
        process of a cluster agrees on it.
      effective_lrn_rate: max(lrn_rate, hps.min_lrn_rate), the rate the optimizer uses.
      ema: the ExponentialMovingAverage of the trainable variables, or None.
      loss_scale: (train mode, compute_dtype float16) the loss_scaling.DynamicLossScale,
        else None.
      bn_update_ops: (after make_train_op) the moving mean/variance assign ops, also in
        tf.compat.v1.GraphKeys.UPDATE_OPS.
      train_op: (after make_train_op) optimizer step, then the moving-average update,
        plus the batch-norm updates.
    """

    def __init__(self, hps, mode='train'):
        self.hps = hps
        self.global_step = tf.compat.v1.train.get_or_create_global_step()
        # One read per session.run: the optimizer's update depends on the rate, and the
        # increment on the update, so this is the step before the increment.
        self.step_value = tf.identity(self.global_step, name='step_value')
        self.lrn_rate, self.effective_lrn_rate = schedules.for_recipe(hps).in_graph(self.step_value)
        self.ema = self.loss_scale = None
        if hps.moving_average_decay > 0:
            self.ema = tf.compat.v1.train.ExponentialMovingAverage(
                hps.moving_average_decay, num_updates=self.global_step)
        if mode == 'train' and hps.compute_dtype == 'float16':
            # float16 training needs a loss scale (bfloat16 has float32's exponent range).
            self.loss_scale = loss_scaling.DynamicLossScale()
        self.bn_update_ops = []
        self.train_op = None

    def compute_gradients(self, cost, is_frozen=None):
        """[(gradient, variable)] of `cost` for every trainable variable (None if frozen).

        is_frozen: optional predicate on a trainable variable; those it accepts get no
        gradient (so no optimizer slot), though their moving averages are kept as usual.
        With a loss scale the gradients come from the scaled cost, divided by the scale again.
        """
        variables = tf.compat.v1.trainable_variables()
        trained = [v for v in variables if not (is_frozen and is_frozen(v))]
        differentiate = (tf.compat.v1.gradients if self.loss_scale is None
                         else self.loss_scale.gradients)
        gradients = differentiate(cost, trained, colocate_gradients_with_ops=True)
        by_variable = {v.ref(): g for v, g in zip(trained, gradients)}
        return [(by_variable.get(v.ref()), v) for v in variables]

    def make_train_op(self, grads_and_vars, moments, build_train_op=None):
        """Sets and returns train_op: build_train_op(self, grads_and_vars, moments), by default
        TrainStep.build_train_op (distributed.SyncReplicas brings its own).

        moments: [(moving mean or variance variable, its batch value)], in graph order.
        """
        self.train_op = (build_train_op or TrainStep.build_train_op)(self, grads_and_vars, moments)
        return self.train_op

    def build_train_op(self, grads_and_vars, moments):
        """The train op of one process: the batch-norm moving statistics move toward `moments`
        ([(moving variable, batch value)], into bn_update_ops), and apply_gradients."""
        self.bn_update_ops = self.moving_statistics_updates(moments)
        return self.apply_gradients(grads_and_vars, self.bn_update_ops)

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

    def make_optimizer(self):
        """The hps.optimizer at effective_lrn_rate: plain gradient descent or momentum."""
        if self.hps.optimizer == 'sgd':
            return tf.compat.v1.train.GradientDescentOptimizer(self.effective_lrn_rate)
        # Nesterov keeps the same 'Momentum' slots: checkpoints move between the two.
        return tf.compat.v1.train.MomentumOptimizer(self.effective_lrn_rate, self.hps.momentum,
                                                    use_nesterov=self.hps.optimizer == 'nesterov')

    def variables_to_restore(self):
        """Checkpoint name -> variable, for an eval Saver that loads the moving averages.

        Trainable variables are loaded from their moving-average shadows; every
        other global variable (batch-norm moving statistics, global step) from
        its own name. Shadow variables themselves are left
        out. Without moving averages this is the plain name -> variable mapping.
        """
        graph = self.global_step.graph
        variables = graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)
        shadows = set()
        if self.ema is not None:
            trainable = graph.get_collection(tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES)
            shadows = {self.ema.average(v).ref() for v in trainable if self.ema.average(v) is not None}
        return restore_names([v for v in variables if v.ref() not in shadows],
                             from_shadows=self.ema is not None)


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


def add_scalar_summaries(cost, cross_entropy, weight_decay, precision, step):
    """The training scalars, with exactly these tags, for one model or several towers.

    total_loss is `cost` (cross-entropy plus weight decay), logged beside its two
    parts; learning_rate is the rate in use (step.effective_lrn_rate); loss_scale
    (float16 training) the scale of step.loss_scale, when there is one.
    """
    for tag, value in (('total_loss', cost), ('cross_entropy', cross_entropy),
                       ('weight_decay', weight_decay), ('precision', precision),
                       ('learning_rate', step.effective_lrn_rate)):
        _scalar_summary(tag, value)
    if step.loss_scale is not None:
        _scalar_summary('loss_scale', step.loss_scale.scale)


def _scalar_summary(tag, value):
    """A scalar summary whose tag is `tag` as given.

    tf.compat.v1.summary.scalar derives the tag from a unique op name, so it would
    log 'learning_rate_1' next to the variable called 'learning_rate', and prefix
    any enclosing name scope.
    """
    summary = tf.raw_ops.ScalarSummary(tags=tag, values=value, name=tag + '_summary')
    tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.SUMMARIES, summary)
