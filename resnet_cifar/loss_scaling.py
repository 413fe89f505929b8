"""Dynamic loss scaling for float16 training.

Small float16 gradients underflow to zero (float16 has nothing between 0 and
6e-8). The cost is multiplied by a scale S before differentiation, lifting the
backward pass's values into float16's range, and the float32 gradients of the
variables are divided by S again. A scale too large overflows some gradient to
Inf or NaN: that step skips the optimizer update (weights and optimizer slots
stay as they are) and halves S, never below MIN_SCALE. After GROWTH_INTERVAL
finite steps in a row S doubles, so it stays near the largest scale that does
not overflow.

The scale and its count of finite steps are LOCAL variables: checkpoints do not
hold them, so float16 and float32 runs resume from each other's checkpoints, and
the scale restarts at INITIAL_SCALE on every start.
"""
import tensorflow as tf

INITIAL_SCALE = 2.0 ** 15
# Finite steps in a row after which the scale doubles.
GROWTH_INTERVAL = 2000
MIN_SCALE = 1.0


def _local_variable(name, dtype, initial_value):
    return tf.compat.v1.get_variable(
        name, [], dtype, initializer=tf.compat.v1.constant_initializer(initial_value),
        trainable=False, collections=[tf.compat.v1.GraphKeys.LOCAL_VARIABLES])


class DynamicLossScale(object):
    """The scale as two local variables, and the ops that use and adapt it.

    Args:
      initial_scale: the scale at the start of every session; default INITIAL_SCALE.
      growth_interval: finite steps in a row before the scale doubles; default
        GROWTH_INTERVAL (read when constructed).

    Attributes:
      scale: float32 scalar local variable 'loss_scale'.
      good_steps: int64 scalar local variable 'loss_scale_good_steps', the finite
        steps since the scale last changed.
      skipped_in_a_row: int64 scalar local variable 'loss_scale_skipped_in_a_row',
        the overflowed (skipped) steps since the last finite one.
    """

    def __init__(self, initial_scale=None, growth_interval=None):
        self.initial_scale = float(INITIAL_SCALE if initial_scale is None else initial_scale)
        self.growth_interval = int(GROWTH_INTERVAL if growth_interval is None else growth_interval)
        if not self.initial_scale >= MIN_SCALE or self.growth_interval < 1:
            raise ValueError('DynamicLossScale needs initial_scale >= %g and growth_interval >= 1; '
                             'got %r and %r' % (MIN_SCALE, initial_scale, growth_interval))
        self.scale = _local_variable('loss_scale', tf.float32, self.initial_scale)
        self.good_steps = _local_variable('loss_scale_good_steps', tf.int64, 0)
        self.skipped_in_a_row = _local_variable('loss_scale_skipped_in_a_row', tf.int64, 0)

    def gradients(self, cost, variables, **kwargs):
        """d cost / d variables, differentiated as cost * scale, then divided by the scale.

        cost: float32 scalar. kwargs go to tf.compat.v1.gradients. Returns one
        gradient (or None) per variable; overflowed entries are Inf or NaN.
        """
        # One read for both ends: the scale update of this step waits for these gradients.
        scale = tf.identity(self.scale.read_value(), name='loss_scale_value')
        gradients = tf.compat.v1.gradients(cost * scale, variables, **kwargs)
        inverse = tf.math.reciprocal(scale)
        return [None if g is None else g * tf.cast(inverse, g.dtype) for g in gradients]

    def apply_if_finite(self, optimizer, grads_and_vars, global_step, name='apply_gradients'):
        """The train step: optimizer update if every gradient is finite, +1 global step, new scale.

        grads_and_vars: [(unscaled gradient or None, variable)]; None (frozen)
        entries are left out of the check. The global step counts every step,
        skipped or not. Returns the op that does all three.
        """
        checks = [tf.reduce_all(tf.math.is_finite(g)) for g, _ in grads_and_vars if g is not None]
        finite = tf.reduce_all(tf.stack(checks), name='gradients_finite')
        applied = tf.cond(finite, lambda: optimizer.apply_gradients(grads_and_vars, name=name),
                          tf.no_op, name='apply_if_finite')
        with tf.control_dependencies([applied]):
            count = tf.compat.v1.assign_add(global_step, 1)
            adapt = self._update(finite)
        return tf.group(count, adapt, name='loss_scaled_step')

    def _update(self, finite):
        """Halve on overflow (floor MIN_SCALE); double after growth_interval finite steps."""
        scale = self.scale.read_value()
        good_steps = tf.where(finite, self.good_steps.read_value() + 1, tf.constant(0, tf.int64))
        doubled = scale * 2.0
        grow = tf.logical_and(good_steps >= self.growth_interval, tf.math.is_finite(doubled))
        new_scale = tf.where(finite, tf.where(grow, doubled, scale),
                             tf.maximum(scale * 0.5, MIN_SCALE))
        new_good_steps = tf.where(grow, tf.constant(0, tf.int64), good_steps)
        skipped = tf.where(finite, tf.constant(0, tf.int64), self.skipped_in_a_row.read_value() + 1)
        return tf.group(self.scale.assign(new_scale), self.good_steps.assign(new_good_steps),
                        self.skipped_in_a_row.assign(skipped))
