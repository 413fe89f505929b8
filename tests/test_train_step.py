"""Tests of train_step: the variables a checkpoint holds stay those of the graphs that
wrote today's runs (a fixture recorded before the training half left resnet_model.py),
one step's arithmetic, a custom train op builder, the towers' one TrainStep, restore names;
and through a one-device ResNet: the batch-norm moving statistics, the learning rate in the
graph, the training summaries, the moving averages of the weights and the eval restore map."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import resnet_model
import synthetic
from resnet_cifar import distributed
from resnet_cifar import towers
from resnet_cifar import train_step

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'graph_variables.json')


def _batch(hps, n=4):
    rng = np.random.RandomState(0)
    images = tf.constant(rng.normal(size=(n, 32, 32, 3)).astype(np.float32))
    labels = tf.constant(np.eye(hps.num_classes, dtype=np.float32)[rng.randint(0, hps.num_classes, n)])
    return images, labels


def random_batch(n, num_classes, seed):
    """(float32 images [n, 32, 32, 3] of noise, one-hot labels [n, num_classes])."""
    rng = np.random.RandomState(seed)
    images = rng.normal(0.0, 1.0, size=(n, 32, 32, 3)).astype(np.float32)
    return images, np.eye(num_classes, dtype=np.float32)[rng.randint(0, num_classes, size=n)]


build = synthetic.build_model
by_name = synthetic.global_variable


def _one_device(mode, **overrides):
    def build():
        hps = synthetic.tiny_hps(**overrides)
        model = resnet_model.ResNet(hps, *_batch(hps), mode)
        model.build_graph()
        return model
    return build


def _frozen_but_logit():
    hps = synthetic.tiny_hps()
    model = resnet_model.ResNet(hps, *_batch(hps), 'train')
    model.build_graph(is_frozen=lambda v: not v.op.name.startswith('logit/'))
    return model


def _two_towers(**overrides):
    def build():
        hps = synthetic.tiny_hps(batch_size=8, **overrides)
        return towers.TowerModel(hps, [_batch(hps), _batch(hps)], towers.tower_devices(2, 'cpu'), '/cpu:0')
    return build


def _sync_replicas(num_towers):
    def build():
        sync = distributed.SyncReplicas(2)
        if num_towers > 1:
            hps = synthetic.tiny_hps(batch_size=8)
            return towers.TowerModel(hps, [_batch(hps), _batch(hps)], towers.tower_devices(2, 'cpu'), '/cpu:0',
                                     sync.build_train_op)
        hps = synthetic.tiny_hps()
        model = resnet_model.ResNet(hps, *_batch(hps), 'train')
        model.build_graph(build_train_op=sync.build_train_op)
        return model
    return build


# Each graph a run of today's main may have written or may read, by a name.
GRAPHS = {
    'train_plain': _one_device('train'),
    'train_bottleneck': _one_device('train', use_bottleneck=True),
    'train_no_moving_average': _one_device('train', moving_average_decay=0.0),
    'train_float16': _one_device('train', compute_dtype='float16'),
    'train_bfloat16': _one_device('train', compute_dtype='bfloat16'),
    'train_sgd': _one_device('train', optimizer='sgd'),
    'train_nesterov': _one_device('train', optimizer='nesterov'),
    'train_frozen_but_logit': _frozen_but_logit,
    'train_2_cpu_towers': _two_towers(),
    'train_2_cpu_towers_float16': _two_towers(compute_dtype='float16'),
    'train_sync_replicas': _sync_replicas(1),
    'train_sync_replicas_2_towers': _sync_replicas(2),
    'eval_plain': _one_device('eval'),
    'eval_bottleneck': _one_device('eval', use_bottleneck=True),
    'eval_no_moving_average': _one_device('eval', moving_average_decay=0.0),
}


def graph_variables(name):
    """{'global': sorted [name, shape], 'local': sorted [name, shape]} of GRAPHS[name]."""
    with tf.Graph().as_default():
        GRAPHS[name]()
        return {kind: sorted([v.op.name, v.shape.as_list()] for v in variables)
                for kind, variables in (('global', tf.compat.v1.global_variables()),
                                        ('local', tf.compat.v1.local_variables()))}


def write_fixture(path=FIXTURE):
    """Records every graph's variables into `path` (run once on the code whose checkpoints count)."""
    with open(path, 'w') as f:
        json.dump({name: graph_variables(name) for name in GRAPHS}, f, indent=0, sort_keys=True)
        f.write('\n')


@pytest.mark.timeout(60)
@pytest.mark.parametrize('name', sorted(GRAPHS))
def test_variable_names_and_shapes_are_those_of_the_recorded_graphs(name):
    with open(FIXTURE) as f:
        recorded = json.load(f)[name]
    assert graph_variables(name) == recorded


@pytest.mark.timeout(30)
def test_one_step_applies_the_gradient_moves_statistics_and_averages_the_weights():
    hps = synthetic.tiny_hps(optimizer='sgd', lrn_rate=0.5, moving_average_decay=0.9, bn_decay=0.75)
    with tf.Graph().as_default():
        step = train_step.TrainStep(hps, 'train')
        weight = tf.compat.v1.get_variable('weight', initializer=3.0)
        frozen = tf.compat.v1.get_variable('frozen', initializer=1.0)
        moving = tf.compat.v1.get_variable('moving', initializer=2.0, trainable=False)
        grads_and_vars = step.compute_gradients(weight * weight + frozen, lambda v: v.op.name == 'frozen')
        assert [(g is None, v.op.name) for g, v in grads_and_vars] == [(False, 'weight'), (True, 'frozen')]
        train_op = step.make_train_op(grads_and_vars, [(moving, tf.constant(10.0))])
        assert train_op is step.train_op and len(step.bn_update_ops) == 1
        assert sorted(step.variables_to_restore()) == ['frozen/ExponentialMovingAverage', 'global_step',
                                                       'moving', 'weight/ExponentialMovingAverage']
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            session.run(train_op)
            values = session.run({'weight': weight, 'frozen': frozen, 'moving': moving,
                                  'step': step.global_step, 'shadow': step.ema.average(weight)})
    # weight 3 - 0.5 * 6; moving 2 + 0.25 * (10 - 2); the shadow's decay min(0.9, (1 + 1) / (10 + 1)).
    assert values == pytest.approx({'weight': 0.0, 'frozen': 1.0, 'moving': 4.0, 'step': 1,
                                    'shadow': 3.0 * 2.0 / 11.0})


@pytest.mark.timeout(30)
def test_a_train_op_builder_gets_the_step_and_the_moments():
    seen = []

    def build_train_op(step, grads_and_vars, moments):
        seen.append((step, [v.op.name for _, v in grads_and_vars], [m.op.name for m, _ in moments]))
        return tf.no_op(name='custom_train_op')

    with tf.Graph().as_default():
        hps = synthetic.tiny_hps()
        model = resnet_model.ResNet(hps, *_batch(hps), 'train')
        model.build_graph(build_train_op=build_train_op)
        assert model.train_op.name == 'custom_train_op' and model.step.train_op is model.train_op
    (step, variables, moving), = seen
    assert step is model.step and 'logit/weights' in variables
    assert moving[:2] == ['unit_1_0/bn1/moving_mean', 'unit_1_0/bn1/moving_variance']


@pytest.mark.timeout(30)
def test_towers_hold_one_train_step_and_the_towers_none():
    with tf.Graph().as_default():
        model = _two_towers(compute_dtype='float16')()
        assert isinstance(model.step, train_step.TrainStep) and model.train_op is model.step.train_op
        assert [tower.step for tower in model.towers] == [None, None]
        assert model.step.loss_scale is not None
        copied = [name for name in ('global_step', 'step_value', 'lrn_rate', 'effective_lrn_rate', 'ema',
                                    'loss_scale', 'bn_update_ops') if hasattr(model, name)]
        assert copied == []


def test_restore_names_reads_trainable_variables_from_their_shadows():
    with tf.Graph().as_default():
        weight = tf.compat.v1.get_variable('weight', initializer=1.0)
        moving = tf.compat.v1.get_variable('moving', initializer=1.0, trainable=False)
        assert train_step.restore_names([weight, moving], from_shadows=True) == {
            'weight' + train_step.SHADOW_SUFFIX: weight, 'moving': moving}
        assert train_step.restore_names([weight, moving], from_shadows=False) == {'weight': weight, 'moving': moving}


# ---------------------------------------------------------------------------- through a one-device ResNet

@pytest.mark.timeout(30)
def test_moving_statistics_follow_bn_decay():
    hps = synthetic.tiny_hps(bn_decay=0.8)
    images, labels = random_batch(8, 10, seed=2)
    with tf.Graph().as_default():
        model = build(hps, 'train', tf.constant(images), tf.constant(labels))
        stem_bn = [op for op in tf.compat.v1.get_default_graph().get_operations()
                   if op.type.startswith('FusedBatchNorm') and op.name.startswith('unit_1_0/bn1/')]
        assert len(stem_bn) == 1
        moving_mean = by_name('unit_1_0/bn1/moving_mean')
        moving_variance = by_name('unit_1_0/bn1/moving_variance')
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            mean0, variance0 = session.run([moving_mean, moving_variance])
            x, _ = session.run([stem_bn[0].inputs[0], model.train_op])
            mean1, variance1 = session.run([moving_mean, moving_variance])
    x = x.reshape(-1, x.shape[-1]).astype(np.float64)
    np.testing.assert_array_equal(mean0, 0.0)
    np.testing.assert_array_equal(variance0, 1.0)
    np.testing.assert_allclose(mean1, 0.8 * mean0 + 0.2 * x.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(variance1, 0.8 * variance0 + 0.2 * x.var(0, ddof=1), rtol=1e-4)


@pytest.mark.timeout(30)
def test_learning_rate_follows_the_global_step_and_is_floored_by_min_lrn_rate():
    # 0.05 at steps 0 and 1, 0.2 at step 2, then 1e-6, floored to 0.01, from step 3 on.
    hps = synthetic.tiny_hps(optimizer='sgd', lrn_rate=0.05, min_lrn_rate=0.01, moving_average_decay=0.0,
                             lr_boundaries=(2, 3), lr_values=(0.05, 0.2, 1e-6))
    images, labels = random_batch(8, 10, seed=4)
    with tf.Graph().as_default():
        model = build(hps, 'train', tf.constant(images), tf.constant(labels))
        biases = by_name('logit/biases')
        assert model.step.lrn_rate.op.name == 'learning_rate'
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            for step, effective in ((0, 0.05), (1, 0.05), (2, 0.2), (3, 0.01), (4, 0.01)):
                before = session.run(biases)
                # The bias gradient is mean(softmax - labels); biases carry no decay.
                predictions, _, summary, ran_at = session.run(
                    [model.predictions, model.train_op, model.summaries, model.step.step_value])
                after = session.run(biases)
                assert ran_at == step and session.run(model.step.global_step) == step + 1
                gradient = (predictions - labels).mean(axis=0)
                np.testing.assert_allclose(after - before, -effective * gradient,
                                           rtol=1e-3, atol=1e-7)
                logged = {v.tag: v.simple_value for v in
                          tf.compat.v1.Summary.FromString(summary).value}
                assert logged['learning_rate'] == pytest.approx(effective)


@pytest.mark.timeout(30)
def test_summaries_hold_model_scalars_and_earlier_summaries():
    images, labels = random_batch(4, 10, seed=5)
    with tf.Graph().as_default():
        tf.compat.v1.summary.scalar('input/queue_fill', tf.constant(0.5))
        model = build(synthetic.tiny_hps(), 'train', tf.constant(images), tf.constant(labels))
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            summary, cost, precision = session.run(
                [model.summaries, model.cost, model.precision])
    values = {v.tag: v.simple_value for v in tf.compat.v1.Summary.FromString(summary).value}
    assert set(values) == {'input/queue_fill', 'total_loss', 'cross_entropy', 'weight_decay',
                           'precision', 'learning_rate'}
    assert values['total_loss'] == pytest.approx(cost) and values['precision'] == pytest.approx(precision)
    assert values['learning_rate'] == pytest.approx(0.1)


EMA_DECAY = 0.3  # low, so both branches of min(decay, (1 + t) / (10 + t)) occur in 5 steps
EMA_STEPS = 5
EMA_WATCHED = ('init/conv/weights', 'unit_2_0/bn2/gamma', 'logit/biases')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A tiny network trained a few steps with EMA; its history and a checkpoint."""
    hps = synthetic.tiny_hps(moving_average_decay=EMA_DECAY)
    images, labels = random_batch(16, 10, seed=6)
    checkpoint = str(tmp_path_factory.mktemp('trained') / 'model.ckpt')
    history = {'steps': [], 'values': [], 'shadows': []}
    with tf.Graph().as_default():
        model = build(hps, 'train', tf.constant(images), tf.constant(labels))
        watched = [by_name(name) for name in EMA_WATCHED]
        shadows = [model.step.ema.average(v) for v in watched]
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            bn_before = session.run({v.op.name: v for v in tf.compat.v1.global_variables()
                                     if 'moving_' in v.op.name})
            history['initial_values'] = session.run(watched)
            history['initial_shadows'] = session.run(shadows)
            for _ in range(EMA_STEPS):
                session.run(model.train_op)
                step, values, shadow_values = session.run([model.step.global_step, watched, shadows])
                history['steps'].append(step)
                history['values'].append(values)
                history['shadows'].append(shadow_values)
            state = session.run({v.op.name: v for v in tf.compat.v1.global_variables()})
            shadow_state = session.run({v.op.name: model.step.ema.average(v)
                                        for v in tf.compat.v1.trainable_variables()})
            tf.compat.v1.train.Saver().save(session, checkpoint)
    return dict(hps=hps, checkpoint=checkpoint, history=history, state=state,
                shadow_state=shadow_state, bn_before=bn_before)


@pytest.mark.timeout(60)
def test_ema_shadows_match_numpy_recurrence(trained):
    history = trained['history']
    assert history['steps'] == list(range(1, EMA_STEPS + 1))
    for initial_value, initial_shadow in zip(history['initial_values'], history['initial_shadows']):
        np.testing.assert_array_equal(initial_shadow, initial_value)
    expected = [s.astype(np.float64) for s in history['initial_shadows']]
    decays = []
    for step, values, shadows in zip(history['steps'], history['values'], history['shadows']):
        decay = min(EMA_DECAY, (1.0 + step) / (10.0 + step))
        decays.append(decay)
        expected = [decay * e + (1 - decay) * v for e, v in zip(expected, values)]
        for e, s in zip(expected, shadows):
            np.testing.assert_allclose(s, e, rtol=1e-5, atol=1e-7)
    assert decays[0] < EMA_DECAY and decays[-1] == EMA_DECAY
    # The shadow lags: it is not simply the variable.
    assert not np.allclose(history['shadows'][-1][0], history['values'][-1][0])


@pytest.mark.timeout(60)
def test_moving_statistics_change_with_training(trained):
    for name, before in trained['bn_before'].items():
        assert not np.allclose(trained['state'][name], before), name


@pytest.mark.timeout(60)
def test_eval_saver_loads_shadows_into_model_variables(trained):
    with tf.Graph().as_default():
        model = build(trained['hps'], 'eval')
        mapping = model.step.variables_to_restore()
        trainable = tf.compat.v1.trainable_variables()
        assert mapping['init/conv/weights/ExponentialMovingAverage'].op.name == 'init/conv/weights'
        assert mapping['unit_1_0/bn1/moving_mean'].op.name == 'unit_1_0/bn1/moving_mean'
        assert mapping['global_step'] is model.step.global_step
        assert len(mapping) == len(tf.compat.v1.global_variables())
        with tf.compat.v1.Session() as session:
            tf.compat.v1.train.Saver(mapping).restore(session, trained['checkpoint'])
            restored = session.run({v.op.name: v for v in tf.compat.v1.global_variables()})
    for v in trainable:
        np.testing.assert_array_equal(restored[v.op.name], trained['shadow_state'][v.op.name])
    for name, value in restored.items():
        if name not in trained['shadow_state']:
            np.testing.assert_array_equal(value, trained['state'][name])
    assert restored['global_step'] == EMA_STEPS


@pytest.mark.timeout(30)
def test_moving_average_decay_zero_turns_ema_off():
    images, labels = random_batch(4, 10, seed=9)
    with tf.Graph().as_default():
        model = build(synthetic.tiny_hps(moving_average_decay=0.0), 'train',
                      tf.constant(images), tf.constant(labels))
        assert model.step.ema is None
        names = {v.op.name for v in tf.compat.v1.global_variables()}
        assert not any('ExponentialMovingAverage' in name for name in names)
        assert set(model.step.variables_to_restore()) == names
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            session.run(model.train_op)
            assert session.run(model.step.global_step) == 1
