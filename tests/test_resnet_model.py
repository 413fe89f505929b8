"""Tests of resnet_model: HParams validation, shapes, parameter counts, the network and its loss
(the training step, its learning rate, moving averages and restore map: test_train_step.py)."""
import os
import pickle

import numpy as np
import pytest
import tensorflow as tf

import resnet_model
import synthetic

CLASSIC = dict(batch_size=128, num_classes=10, min_lrn_rate=0.0001, lrn_rate=0.1,
               num_residual_units=5, use_bottleneck=False, weight_decay_rate=0.0002,
               relu_leakiness=0.1, optimizer='mom')


def one_hot(labels, num_classes):
    return np.eye(num_classes, dtype=np.float32)[labels]


def random_batch(n, num_classes, seed):
    rng = np.random.RandomState(seed)
    images = rng.normal(0.0, 1.0, size=(n, 32, 32, 3)).astype(np.float32)
    labels = rng.randint(0, num_classes, size=n)
    return images, one_hot(labels, num_classes)


build = synthetic.build_model
by_name = synthetic.global_variable


# ---------------------------------------------------------------------------- HParams

def test_classic_hparams_call_works_verbatim():
    hps = resnet_model.HParams(batch_size=128, num_classes=10, min_lrn_rate=0.0001,
                               lrn_rate=0.1, num_residual_units=5, use_bottleneck=False,
                               weight_decay_rate=0.0002, relu_leakiness=0.1, optimizer='mom')
    assert hps._fields[:9] == ('batch_size', 'num_classes', 'min_lrn_rate', 'lrn_rate',
                               'num_residual_units', 'use_bottleneck', 'weight_decay_rate',
                               'relu_leakiness', 'optimizer')
    assert (hps.width, hps.momentum, hps.bn_decay, hps.bn_epsilon, hps.moving_average_decay,
            hps.data_format, hps.compute_dtype) == (1, 0.9, 0.9, 1e-3, 0.999, 'NHWC', 'float32')
    assert hps.num_residual_units == 5 and hps.optimizer == 'mom'


# HParams' fields in main's order at its release (3b63bf2), which positional calls rely on.
RELEASED_FIELDS = ('batch_size', 'num_classes', 'min_lrn_rate', 'lrn_rate', 'num_residual_units', 'use_bottleneck',
                   'weight_decay_rate', 'relu_leakiness', 'optimizer', 'width', 'momentum', 'bn_decay', 'bn_epsilon',
                   'moving_average_decay', 'data_format', 'compute_dtype', 'lr_boundaries', 'lr_values',
                   'lr_schedule', 'warmup_steps', 'label_smoothing', 'mixup_alpha')


def test_hparams_fields_keep_their_released_order_and_positions():
    """The classic nine-field positional call, and a call giving every released field by position,
    mean what they meant at main's release; a field added since comes after these."""
    classic = resnet_model.HParams(128, 10, 0.0001, 0.1, 5, False, 0.0002, 0.1, 'mom')
    assert classic == resnet_model.HParams(**CLASSIC)
    assert resnet_model.HParams._fields[:len(RELEASED_FIELDS)] == RELEASED_FIELDS
    every = resnet_model.HParams(128, 10, 0.0001, 0.1, 5, False, 0.0002, 0.1, 'mom', 2, 0.8, 0.95, 1e-4, 0.99,
                                 'NCHW', 'bfloat16', (100,), (0.1, 0.01), 'piecewise', 10, 0.1, 0.2)
    assert every._asdict() == dict(zip(RELEASED_FIELDS, (
        128, 10, 0.0001, 0.1, 5, False, 0.0002, 0.1, 'mom', 2, 0.8, 0.95, 1e-4, 0.99, 'NCHW', 'bfloat16', (100,),
        (0.1, 0.01), 'piecewise', 10, 0.1, 0.2)), **{name: getattr(classic, name) for name in
                                                     resnet_model.HParams._fields[len(RELEASED_FIELDS):]})


def test_replace_make_and_pickle_go_through_validation():
    hps = resnet_model.HParams(**CLASSIC)
    wide = hps._replace(width=10, num_residual_units=4)
    assert isinstance(wide, resnet_model.HParams) and wide.width == 10
    assert pickle.loads(pickle.dumps(wide)) == wide
    with pytest.raises(ValueError, match=r'HParams\.optimizer .*mom, sgd'):
        hps._replace(optimizer='adam')
    with pytest.raises(ValueError, match=r'HParams\.width'):
        resnet_model.HParams._make(list(hps)[:9] + [0])


def test_hparams_normalize_numbers():
    hps = resnet_model.HParams(**dict(CLASSIC, lrn_rate=1, batch_size=np.int64(64),
                                      use_bottleneck=np.bool_(True)))
    assert type(hps.lrn_rate) is float and type(hps.batch_size) is int
    assert hps.use_bottleneck is True


# The checks are the settings' (resnet_cifar/settings.py), the same as the flags'.
@pytest.mark.parametrize('field, value, allowed', [
    ('optimizer', 'adam', 'one of mom, sgd, nesterov'),
    ('optimizer', None, 'one of mom, sgd, nesterov'),
    ('batch_size', 0, 'a positive integer'),
    ('batch_size', 12.0, 'an integer below 2\\^63'),
    ('num_classes', -1, 'a positive integer'),
    ('num_residual_units', 0, 'a positive integer'),
    ('num_residual_units', 201, 'a positive integer up to 200'),
    ('width', True, 'an integer below 2\\^63'),
    ('use_bottleneck', 'yes', 'true or false'),
    ('relu_leakiness', 1.0, r'a value in \[0, 1\)'),
    ('relu_leakiness', -0.1, r'a value in \[0, 1\)'),
    ('lrn_rate', 0.0, 'a positive learning rate'),
    ('lrn_rate', float('nan'), 'a finite number'),
    ('min_lrn_rate', -1e-4, '0 or more'),
    ('weight_decay_rate', -0.1, '0 or more'),
    ('momentum', 1.0, r'a value in \[0, 1\)'),
    ('bn_decay', 0.0, r'a value in \(0, 1\)'),
    ('bn_decay', 1.0, r'a value in \(0, 1\)'),
    ('bn_epsilon', 1e-7, '1.001e-05 or more'),
    ('moving_average_decay', 1.0, r'a value in \[0, 1\)'),
    ('data_format', 'NCWH', 'one of NHWC, NCHW'),
    ('compute_dtype', 'float64', 'one of float32, float16, bfloat16'),
    ('compute_dtype', tf.float16, 'one of float32, float16, bfloat16'),
    ('label_smoothing', 1.0, r'a value in \[0, 1\)'),
    ('mixup_alpha', -1.0, '0 or more'),
    ('warmup_steps', -1, '0 or more'),
])
@pytest.mark.timeout(10)
def test_invalid_hparams_name_field_and_allowed_values(field, value, allowed):
    pattern = r'^HParams\.%s must be %s; got ' % (field, allowed)
    with pytest.raises(ValueError, match=pattern) as info:
        resnet_model.HParams(**dict(CLASSIC, **{field: value}))
    assert '\n' not in str(info.value)


# ---------------------------------------------------------------------------- shapes and sizes

VARIANTS = {
    'plain': dict(num_residual_units=1),
    'bottleneck': dict(num_residual_units=1, use_bottleneck=True),
    'wide': dict(num_residual_units=1, width=2),
}


@pytest.mark.parametrize('variant', sorted(VARIANTS))
@pytest.mark.parametrize('num_classes', [10, 100])
@pytest.mark.timeout(60)
def test_output_shapes_for_any_batch(variant, num_classes):
    # batch_size=128 in HParams, yet batches of 1 and 7 run: nothing bakes it in.
    hps = synthetic.tiny_hps(num_classes=num_classes, batch_size=128, **VARIANTS[variant])
    feature_dim = (256 if hps.use_bottleneck else 64) * hps.width
    with tf.Graph().as_default():
        model = build(hps, 'eval')
        assert model.logits.shape.as_list() == [None, num_classes]
        assert model.features.shape.as_list() == [None, feature_dim]
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            for n in (1, 7, 128):
                images, labels = random_batch(n, num_classes, seed=n)
                logits, predictions, features, cost = session.run(
                    [model.logits, model.predictions, model.features, model.cost],
                    {model.images: images, model.labels: labels})
                assert logits.shape == predictions.shape == (n, num_classes)
                assert features.shape == (n, feature_dim)
                np.testing.assert_allclose(predictions.sum(axis=1), 1.0, rtol=1e-5)
                assert np.isfinite(cost) and cost.shape == ()


@pytest.mark.timeout(30)
def test_train_mode_runs_batches_of_1_and_7():
    with tf.Graph().as_default():
        model = build(synthetic.tiny_hps(), 'train')
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            for n in (1, 7):
                images, labels = random_batch(n, 10, seed=n)
                _, logits = session.run([model.train_op, model.logits],
                                        {model.images: images, model.labels: labels})
                assert logits.shape == (n, 10)
            assert session.run(model.step.global_step) == 2


def expected_param_count(n, bottleneck, width, num_classes):
    """Trainable parameters from the architecture's definition (no biases before BN)."""
    def conv(k, cin, cout):
        return k * k * cin * cout

    def bn(c):
        return 2 * c  # gamma and beta; moving statistics are not trainable

    total = conv(3, 3, 16)
    cin = 16
    outs = [f * width for f in ((64, 128, 256) if bottleneck else (16, 32, 64))]
    for stage, cout in enumerate(outs):
        for i in range(n):
            if bottleneck:
                inner = cout // 4
                total += bn(cin) + conv(1, cin, inner) + bn(inner) + conv(3, inner, inner)
                total += bn(inner) + conv(1, inner, cout)
                if cin != cout or (i == 0 and stage > 0):
                    total += conv(1, cin, cout)  # projection shortcut
            else:
                total += bn(cin) + conv(3, cin, cout) + bn(cout) + conv(3, cout, cout)
            cin = cout
    total += bn(cin) + cin * num_classes + num_classes
    return total


@pytest.mark.parametrize('n, bottleneck, width, num_classes', [
    (5, False, 1, 10),     # ResNet-32
    (2, False, 1, 100),
    (2, True, 1, 10),      # ResNet-20 bottleneck
    (1, True, 2, 100),
    (1, False, 4, 10),     # wide
])
@pytest.mark.timeout(30)
def test_trainable_parameter_count_matches_architecture(n, bottleneck, width, num_classes):
    hps = synthetic.tiny_hps(num_residual_units=n, use_bottleneck=bottleneck, width=width,
                   num_classes=num_classes)
    with tf.Graph().as_default():
        build(hps, 'eval')
        count = resnet_model.count_params(tf.compat.v1.trainable_variables())
    assert count == expected_param_count(n, bottleneck, width, num_classes)
    if (n, bottleneck, width, num_classes) == (5, False, 1, 10):
        assert count == 464154  # "0.46M" in He et al. for ResNet-32


@pytest.mark.timeout(30)
def test_variable_names_collections_and_depth():
    hps = synthetic.tiny_hps(num_residual_units=2, use_bottleneck=True)
    with tf.Graph().as_default():
        model = build(hps, 'train')
        trainable = {v.op.name for v in tf.compat.v1.trainable_variables()}
        global_names = {v.op.name for v in tf.compat.v1.global_variables()}
        decayed = {v.op.name for v in tf.compat.v1.get_collection(
            resnet_model.WEIGHT_DECAY_COLLECTION)}
        convs = [op for op in tf.compat.v1.get_default_graph().get_operations()
                 if op.type == 'Conv2D']
    assert {'init/conv/weights', 'unit_1_0/bn1/gamma', 'unit_1_0/shortcut/weights',
            'unit_2_0/conv1/weights', 'unit_2_0/bn1/beta', 'unit_2_1/conv3/weights',
            'unit_3_1/bn3/gamma', 'unit_last/bn/beta', 'logit/weights',
            'logit/biases'} <= trainable
    assert 'unit_1_1/shortcut/weights' not in trainable  # identity shortcut inside a stage
    assert {'unit_2_0/bn1/moving_mean', 'unit_last/bn/moving_variance', 'global_step'} <= global_names - trainable
    assert 'learning_rate' not in global_names  # computed from the global step, not stored
    assert decayed == {name for name in trainable if name.endswith('/weights')}
    # 9n+2 weighted layers: stem, 3 convs per unit, FC (+3 projection shortcuts off the path).
    assert len(convs) - 3 + 1 == 9 * 2 + 2
    shadowed = {name.rsplit('/', 1)[0] for name in global_names
                if name.endswith('/ExponentialMovingAverage')}
    assert shadowed == trainable  # moving statistics and the step get no shadow
    assert len(model.step.bn_update_ops) == 2 * (3 * 3 * 2 + 1)


@pytest.mark.timeout(30)
def test_count_params_counts_elements():
    with tf.Graph().as_default():
        a = tf.compat.v1.get_variable('a', [3, 4])
        b = tf.compat.v1.get_variable('b', [5])
        assert resnet_model.count_params([a, b]) == 17
        assert resnet_model.count_params([]) == 0


# ---------------------------------------------------------------------------- training

@pytest.mark.timeout(60)
def test_tiny_network_overfits_a_fixed_batch():
    images, labels = random_batch(32, 10, seed=1)  # noise with random labels: pure memorization
    hps = synthetic.tiny_hps(batch_size=32)
    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(1)
        model = build(hps, 'train', tf.constant(images), tf.constant(labels))
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            first_cost = session.run(model.cross_entropy)
            for step in range(100):
                _, precision, cross_entropy = session.run(
                    [model.train_op, model.precision, model.cross_entropy])
                if precision == 1.0:
                    break
    assert precision == 1.0, 'precision %.3f after %d steps' % (precision, step + 1)
    assert cross_entropy < first_cost / 2


@pytest.mark.timeout(30)
def test_cost_is_cross_entropy_plus_decay_of_exactly_the_weights():
    hps = synthetic.tiny_hps(weight_decay_rate=0.01)
    images, labels = random_batch(8, 10, seed=3)
    with tf.Graph().as_default():
        model = build(hps, 'train', tf.constant(images), tf.constant(labels))
        variables = tf.compat.v1.trainable_variables()
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            # Non-zero biases and BN parameters, so decaying them would show.
            session.run([v.assign(v + 0.5) for v in variables
                         if not v.op.name.endswith('/weights')])
            values, logits, cross_entropy, weight_decay, cost = session.run(
                [{v.op.name: v for v in variables}, model.logits, model.cross_entropy,
                 model.weight_decay, model.cost])
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected_cross_entropy = -(labels * log_softmax).sum(axis=1).mean()
    weights = [name for name in values if name.endswith('/weights')]
    assert len(weights) == 1 + 2 * 3 + 1  # stem, two convs per unit, FC
    # tf.nn.l2_loss convention: half the sum of squares.
    expected_decay = 0.01 * sum((values[name].astype(np.float64) ** 2).sum() / 2
                                for name in weights)
    np.testing.assert_allclose(cross_entropy, expected_cross_entropy, rtol=1e-5)
    np.testing.assert_allclose(weight_decay, expected_decay, rtol=1e-5)
    np.testing.assert_allclose(cost, expected_cross_entropy + expected_decay, rtol=1e-5)


@pytest.mark.parametrize('boundaries, values, message', [
    ((2, 2), (0.1, 0.2, 0.3), 'boundaries must increase'),
    ((2,), (0.1,), 'one more learning rate than boundaries'),
    ((2,), (), 'needs rates for its boundaries'),
    ((), (float('nan'),), 'a list of finite numbers'),
    ((), (-0.1,), 'learning rates must be positive numbers'),
])
def test_bad_schedule_is_a_value_error(boundaries, values, message):
    with pytest.raises(ValueError, match=message):
        synthetic.tiny_hps(lr_boundaries=boundaries, lr_values=values)


# ---------------------------------------------------------------------------- eval mode

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A tiny network trained a few steps: its hps, variable values and a checkpoint."""
    hps = synthetic.tiny_hps()
    images, labels = random_batch(16, 10, seed=6)
    checkpoint = str(tmp_path_factory.mktemp('trained') / 'model.ckpt')
    with tf.Graph().as_default():
        model = build(hps, 'train', tf.constant(images), tf.constant(labels))
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            for _ in range(5):
                session.run(model.train_op)
            state = session.run({v.op.name: v for v in tf.compat.v1.global_variables()})
            tf.compat.v1.train.Saver().save(session, checkpoint)
    return dict(hps=hps, checkpoint=checkpoint, state=state)


@pytest.mark.timeout(60)
def test_eval_uses_moving_statistics_and_is_batch_independent(trained):
    images, _ = random_batch(9, 10, seed=7)
    with tf.Graph().as_default():
        model = build(trained['hps'], 'eval')
        graph = tf.compat.v1.get_default_graph()
        bn_ops = [op for op in graph.get_operations() if op.type.startswith('FusedBatchNorm')]
        assert len(bn_ops) == 2 * 3 + 1 and not any(op.get_attr('is_training') for op in bn_ops)
        with tf.compat.v1.Session() as session:
            tf.compat.v1.train.Saver().restore(session, trained['checkpoint'])  # raw weights
            feed = {model.images: images}
            bn_io = session.run([(op.inputs[0], op.outputs[0]) for op in bn_ops], feed)
            batch_logits = session.run(model.logits, feed)
            single_logits = [session.run(model.logits, {model.images: images[i:i + 1]})
                             for i in range(len(images))]
    epsilon = trained['hps'].bn_epsilon
    state = trained['state']
    for op, (x, y) in zip(bn_ops, bn_io):
        scope = op.name.rsplit('/', 1)[0]
        mean, variance = state[scope + '/moving_mean'], state[scope + '/moving_variance']
        expected = (state[scope + '/gamma'] * (x - mean) / np.sqrt(variance + epsilon)
                    + state[scope + '/beta'])
        np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.concatenate(single_logits), batch_logits, rtol=1e-4, atol=1e-5)


@pytest.mark.timeout(30)
def test_train_mode_normalizes_with_the_batch():
    # The contrast to the eval test above: in train mode the batch changes an image's logits.
    images, labels = random_batch(6, 10, seed=8)
    with tf.Graph().as_default():
        model = build(synthetic.tiny_hps(), 'train')
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            full = session.run(model.logits, {model.images: images})
            half = session.run(model.logits, {model.images: images[:3]})
    assert not np.allclose(full[:3], half, rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------------------- structure

def _run_layout(hps, mode, images, labels, values=None):
    """Runs one step in a fresh graph: (logits, cost, features, trained weights, variable values).

    `values` (name -> array) sets the variables first, so two layouts can start equal.
    """
    with tf.Graph().as_default():
        model = build(hps, mode, tf.constant(images), tf.constant(labels))
        variables = tf.compat.v1.global_variables()
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            if values is not None:
                for v in variables:
                    v.load(values[v.op.name], session)
            start = {v.op.name: session.run(v) for v in variables}
            logits, cost, features = session.run([model.logits, model.cost, model.features])
            trained = {}
            if mode == 'train':
                session.run(model.train_op)
                trained = {v.op.name: session.run(v) for v in variables}
    return logits, cost, features, trained, start


@pytest.mark.skipif(os.environ.get('TF_ENABLE_ONEDNN_OPTS') == '0',
                    reason='NCHW runs on the CPU only through oneDNN')
@pytest.mark.parametrize('mode, use_bottleneck', [('train', False), ('eval', True)])
@pytest.mark.timeout(60)
def test_nchw_computes_what_nhwc_computes(mode, use_bottleneck):
    # The GPU default layout, checked on the CPU (oneDNN runs NCHW): same weights,
    # same images -> the same logits, cost, features and one training step.
    images, labels = random_batch(8, 10, seed=3)
    hps = synthetic.tiny_hps(use_bottleneck=use_bottleneck)
    logits, cost, features, trained, start = _run_layout(hps, mode, images, labels)
    nchw = _run_layout(hps._replace(data_format='NCHW'), mode, images, labels, values=start)
    np.testing.assert_allclose(nchw[0], logits, rtol=1e-4, atol=1e-4)
    assert nchw[1] == pytest.approx(cost, rel=1e-5)
    np.testing.assert_allclose(nchw[2], features, rtol=1e-4, atol=1e-5)
    assert set(nchw[3]) == set(trained)
    for name, value in trained.items():
        # Compare the updates as a whole: batch norm's backward pass over 8 images
        # cancels large terms, so float32 sums in another order move single
        # elements by a percent or so; a layout mistake would move them all by ~100%.
        update, nchw_update = value - start[name], nchw[3][name] - start[name]
        assert np.linalg.norm(nchw_update - update) <= 3e-2 * np.linalg.norm(update) + 1e-7, name
    if mode == 'train':
        moved = [n for n in trained if not np.array_equal(trained[n], start[n])]
        assert 'unit_1_0/conv1/weights' in moved and 'unit_last/bn/moving_mean' in moved


@pytest.mark.timeout(30)
def test_second_tower_reuses_variables():
    hps = synthetic.tiny_hps()
    with tf.Graph().as_default():
        first = build(hps, 'train')
        count = len(tf.compat.v1.global_variables())
        with tf.compat.v1.variable_scope(tf.compat.v1.get_variable_scope(), reuse=True):
            with tf.name_scope('tower_1'):
                second = resnet_model.ResNet(hps, first.images, first.labels, 'train')
                second.build_forward()
        assert len(tf.compat.v1.global_variables()) == count
        assert len(tf.compat.v1.get_collection(resnet_model.WEIGHT_DECAY_COLLECTION)) == 8
        # The forward pass alone builds no step state: the towers share one TrainStep.
        assert second.step is None and second.train_op is None
        # The second tower records its batch moments, for the same moving statistics, and
        # builds no update of its own (towers.py averages the moments into one update).
        assert [m.name for m, _ in second.batch_moments] == [m.name for m, _ in first.batch_moments]
        assert len(tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)) == len(first.step.bn_update_ops)


@pytest.mark.timeout(30)
def test_bad_mode_and_inputs_are_value_errors():
    hps = synthetic.tiny_hps()
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3])
        labels = tf.compat.v1.placeholder(tf.float32, [None, 10])
        with pytest.raises(ValueError, match="mode must be 'train' or 'eval'; got 'test'"):
            resnet_model.ResNet(hps, images, labels, 'test')
        with pytest.raises(ValueError, match='images must be a float tensor'):
            resnet_model.ResNet(hps, tf.compat.v1.placeholder(tf.float32, [None, 32, 32]),
                                labels, 'eval')
        with pytest.raises(ValueError, match=r'labels must be one-hot float \[batch, 10\]'):
            resnet_model.ResNet(hps, images, tf.compat.v1.placeholder(tf.float32, [None, 100]),
                                'eval')
        with pytest.raises(ValueError, match='hps must be a resnet_model.HParams'):
            resnet_model.ResNet(dict(CLASSIC), images, labels, 'eval')
