"""Tests of the training half: the variables a checkpoint holds stay those of the
graphs that wrote today's runs (a recorded fixture)."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import resnet_model
import synthetic
from resnet_cifar import distributed
from resnet_cifar import towers

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
