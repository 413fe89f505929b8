"""loss_scaling.DynamicLossScale on a graph of two small variables: unscaled gradients, the
skipped update on an overflow, halving down to MIN_SCALE, doubling after growth_interval
finite steps, and local variables that checkpoints do not hold. The ResNet's float16 graphs
and runs are in test_mixed_precision.py."""
import numpy as np
import pytest
import tensorflow as tf

from resnet_cifar import loss_scaling


class Linear(object):
    """cost = (sum(w * x) + b)^2 in float32, x fed (default finite); a third variable, `unused`,
    is not in the cost. The step: GradientDescent at 0.01 through DynamicLossScale."""

    def __init__(self, **scale_args):
        self.x = tf.compat.v1.placeholder_with_default(np.array([1.0, 2.0, 3.0], np.float32), [3])
        self.w = tf.compat.v1.get_variable('w', initializer=np.array([0.5, -0.25, 0.125], np.float32))
        self.b = tf.compat.v1.get_variable('b', initializer=np.float32(0.25))
        self.unused = tf.compat.v1.get_variable('unused', initializer=np.float32(1.0))
        self.global_step = tf.compat.v1.train.get_or_create_global_step()
        self.cost = tf.square(tf.reduce_sum(self.w * self.x) + self.b)
        self.loss_scale = loss_scaling.DynamicLossScale(**scale_args)
        self.variables = [self.w, self.b, self.unused]
        self.gradients = self.loss_scale.gradients(self.cost, self.variables)
        optimizer = tf.compat.v1.train.GradientDescentOptimizer(0.01)
        self.train_op = self.loss_scale.apply_if_finite(
            optimizer, list(zip(self.gradients, self.variables)), self.global_step)

    def state(self, session):
        """(scale, good_steps, skipped_in_a_row, global step)."""
        scale = self.loss_scale
        return tuple(session.run([scale.scale, scale.good_steps, scale.skipped_in_a_row, self.global_step]))

    def weights(self, session):
        return session.run([self.w, self.b])


def session_of(model):
    session = tf.compat.v1.Session(graph=model.cost.graph)
    session.run([tf.compat.v1.global_variables_initializer(), tf.compat.v1.local_variables_initializer()])
    return session


@pytest.mark.timeout(30)
@pytest.mark.parametrize('args, wrong', [
    ({'initial_scale': 0.5}, 'initial_scale >= 1'),
    ({'growth_interval': 0}, 'growth_interval >= 1'),
    ({'initial_scale': float('nan')}, 'nan'),
])
def test_a_scale_below_1_or_no_growth_interval_is_refused(args, wrong):
    with tf.Graph().as_default(), pytest.raises(ValueError, match=wrong):
        loss_scaling.DynamicLossScale(**args)


@pytest.mark.timeout(30)
def test_the_scale_lives_in_local_variables_that_checkpoints_do_not_hold():
    with tf.Graph().as_default():
        model = Linear()
        local = sorted(v.op.name for v in tf.compat.v1.local_variables())
        assert local == ['loss_scale', 'loss_scale_good_steps', 'loss_scale_skipped_in_a_row']
        assert not any(v.op.name.startswith('loss_scale') for v in tf.compat.v1.global_variables())
        assert model.loss_scale.initial_scale == loss_scaling.INITIAL_SCALE == 2.0 ** 15


@pytest.mark.timeout(30)
def test_gradients_are_those_of_the_unscaled_cost():
    with tf.Graph().as_default():
        model = Linear(initial_scale=2.0 ** 10)
        plain = tf.compat.v1.gradients(model.cost, [model.w, model.b])
        assert model.gradients[2] is None  # not in the cost
        with session_of(model) as session:
            scaled, expected = session.run([model.gradients[:2], plain])
    for got, want in zip(scaled, expected):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert np.any(expected[0] != 0)


@pytest.mark.timeout(30)
def test_an_overflow_skips_the_update_halves_the_scale_and_still_counts_the_step():
    with tf.Graph().as_default():
        model = Linear()
        with session_of(model) as session:
            start = model.weights(session)
            session.run(model.train_op)
            assert model.state(session) == (2.0 ** 15, 1, 0, 1)
            moved = model.weights(session)
            assert all(not np.array_equal(a, b) for a, b in zip(start, moved))
            for skipped in (1, 2):
                session.run(model.train_op, feed_dict={model.x: [np.inf, 1.0, 1.0]})
                assert all(np.array_equal(a, b) for a, b in zip(moved, model.weights(session)))
                assert model.state(session) == (2.0 ** (15 - skipped), 0, skipped, 1 + skipped)
            session.run(model.train_op)  # finite again: the skipped count starts over
            assert model.state(session) == (2.0 ** 13, 1, 0, 4)


@pytest.mark.timeout(30)
def test_scale_doubles_after_the_finite_steps_threshold_and_never_drops_below_1(monkeypatch):
    """growth_interval defaults to GROWTH_INTERVAL as it is when the scale is made."""
    monkeypatch.setattr(loss_scaling, 'GROWTH_INTERVAL', 3)
    with tf.Graph().as_default():
        model = Linear()
        assert model.loss_scale.growth_interval == 3
        with session_of(model) as session:
            states = []
            for _ in range(4):
                session.run(model.train_op)
                states.append(model.state(session)[:2])
            assert states == [(2.0 ** 15, 1), (2.0 ** 15, 2), (2.0 ** 16, 0), (2.0 ** 16, 1)]

            model.loss_scale.scale.load(1.5, session)
            for expected_step in (5, 6):  # overflows at 1.5, then at 1: the floor holds
                session.run(model.train_op, feed_dict={model.x: [np.nan, 1.0, 1.0]})
                assert model.state(session) == (loss_scaling.MIN_SCALE, 0, expected_step - 4, expected_step)


@pytest.mark.timeout(30)
def test_a_scale_whose_double_is_not_finite_stays_as_it_is():
    with tf.Graph().as_default():
        model = Linear(growth_interval=1)
        with session_of(model) as session:
            session.run(model.train_op)
            assert model.state(session)[:2] == (2.0 ** 16, 0)  # doubled after one finite step
            model.loss_scale.scale.load(3e38, session)  # float32's largest is 3.4e38
            session.run(model.train_op)
            scale, good_steps = model.state(session)[:2]
    assert scale == pytest.approx(3e38, rel=1e-6) and good_steps == 1  # a finite step, counted, not doubled
