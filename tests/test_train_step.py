"""Tests of train_step: the variables a checkpoint holds stay those of the graphs that
wrote today's runs (a fixture recorded before the training half left resnet_model.py),
one step's arithmetic, a custom train op builder, the towers' one TrainStep, restore names."""
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
