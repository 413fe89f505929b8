"""Data-parallel towers on 2 logical CPU devices: placement, shared variables, averaged
gradients, one train step, a learning run scored by the normal eval, and flag errors."""
import os

import numpy as np
import pytest
import tensorflow as tf

import cifar_input
import resnet_model
import synthetic
from resnet_cifar import devices
from processes import resolve
from resnet_cifar import run_files
from resnet_cifar.config import Checkpoints, Data, Devices, Model, RunConfig, Schedule
from resnet_cifar import towers
from resnet_cifar import training
from processes import TINY, eval_precisions, read_scalars, run_main
import processes

TOWER_BATCH = 4


def fixed_batch(n, seed=0):
    """(images float32 [n, 32, 32, 3], one-hot labels float32 [n, 10]) as numpy."""
    rng = np.random.RandomState(seed)
    images = rng.normal(0.0, 1.0, size=(n, 32, 32, 3)).astype(np.float32)
    return images, np.eye(10, dtype=np.float32)[rng.randint(0, 10, size=n)]


def build_two_towers(images, labels):
    """A 2-tower TowerModel on /cpu:0 and /cpu:1 over constant tower batches, variables on /cpu:0."""
    halves = [(tf.constant(images[i::2]), tf.constant(labels[i::2])) for i in range(2)]
    return towers.TowerModel(synthetic.tiny_hps(batch_size=len(images)), halves, towers.tower_devices(2, 'cpu'),
                             '/cpu:0')


def device_of(device_string):
    spec = tf.DeviceSpec.from_string(device_string)
    return spec.device_type, spec.device_index


def summary_tags(session, summaries):
    return sorted(v.tag for v in tf.compat.v1.Summary.FromString(session.run(summaries)).value)


def one_tower_reference():
    """Global variable names and shapes, and summary tags, of the one-device train graph."""
    with tf.Graph().as_default():
        images, labels = fixed_batch(2 * TOWER_BATCH)
        model = resnet_model.ResNet(synthetic.tiny_hps(batch_size=2 * TOWER_BATCH), tf.constant(images),
                                    tf.constant(labels), 'train')
        model.build_graph()
        variables = {v.op.name: v.shape.as_list() for v in tf.compat.v1.global_variables()}
        trainable = [v.op.name for v in tf.compat.v1.trainable_variables()]
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            tags = summary_tags(session, model.summaries)
    return variables, trainable, tags


def test_average_gradients_is_the_mean_per_variable():
    with tf.Graph().as_default():
        a = tf.compat.v1.get_variable('a', [2])
        b = tf.compat.v1.get_variable('b', [2, 2])
        unused = tf.compat.v1.get_variable('unused', [3])
        grads_a = [np.array([1., 2.]), np.array([3., -2.]), np.array([5., 9.])]
        grads_b = [np.full((2, 2), 1.), np.full((2, 2), 2.), np.full((2, 2), 6.)]
        tower_grads = [[(tf.constant(ga, tf.float32), a), (tf.constant(gb, tf.float32), b), (None, unused)]
                       for ga, gb in zip(grads_a, grads_b)]
        averaged = towers.average_gradients(tower_grads)
        assert [v for _, v in averaged] == [a, b, unused]
        assert averaged[2][0] is None
        with tf.compat.v1.Session() as session:
            mean_a, mean_b = session.run([averaged[0][0], averaged[1][0]])
        np.testing.assert_allclose(mean_a, [3., 3.])
        np.testing.assert_allclose(mean_b, np.full((2, 2), 3.))

        one = [(tf.constant([1., 1.]), a)]
        assert towers.average_gradients([one]) == one
        with pytest.raises(ValueError, match='no towers'):
            towers.average_gradients([])
        with pytest.raises(ValueError, match='numbers of variables'):
            towers.average_gradients([one, one + one])
        with pytest.raises(ValueError, match='disagree'):
            towers.average_gradients([one, [(tf.constant([1., 1.]), unused)]])
        with pytest.raises(ValueError, match='some towers only'):
            towers.average_gradients([one, [(None, a)]])


@pytest.mark.timeout(120)
def test_two_cpu_towers_own_devices_and_share_one_copy_of_the_variables():
    variables, trainable, tags = one_tower_reference()
    with tf.Graph().as_default() as graph:
        model = build_two_towers(*fixed_batch(2 * TOWER_BATCH))
        # One copy: the same variables (weights, moving statistics, optimizer slots,
        # EMA shadows, step, learning rate) with the same shapes as one device.
        assert {v.op.name: v.shape.as_list() for v in tf.compat.v1.global_variables()} == variables
        assert [v.op.name for v in tf.compat.v1.trainable_variables()] == trainable
        for v in tf.compat.v1.global_variables():
            assert device_of(v.device) == ('CPU', 0), (v.op.name, v.device)

        convs = [op for op in graph.get_operations() if op.type == 'Conv2D']
        assert len(convs) == 2 * 7  # stem + 2 per unit, 3 units, per tower
        for op in convs:
            tower = int(op.name.split('/')[0][len('tower_'):])
            assert device_of(op.device) == ('CPU', tower), (op.name, op.device)

        with tf.compat.v1.Session(config=devices.session_config(2)) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            metadata = tf.compat.v1.RunMetadata()
            session.run(model.train_op, run_metadata=metadata,
                        options=tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE))
            assert summary_tags(session, model.summaries) == tags
    # Where the convolutions really ran, forward and backward.
    ran_on = {}
    for device_stats in metadata.step_stats.dev_stats:
        for node in device_stats.node_stats:
            if node.node_name.endswith('/Conv2D') or 'Conv2DBackprop' in node.node_name:
                ran_on[node.node_name] = device_of(device_stats.device)
    assert len(ran_on) >= 2 * 7 * 2, sorted(ran_on)
    for name, device in ran_on.items():
        assert device == ('CPU', int(name.split('/')[0][len('tower_'):])), (name, device)


@pytest.mark.timeout(120)
def test_averaged_gradient_is_the_mean_and_is_applied_once(tmp_path):
    images, labels = fixed_batch(2 * TOWER_BATCH, seed=3)
    checkpoint = str(tmp_path / 'towers.ckpt')
    with tf.Graph().as_default():
        model = build_two_towers(images, labels)
        variables = [v for _, v in model.grads_and_vars]
        moving_mean = [v for v in tf.compat.v1.global_variables() if v.op.name == 'unit_1_0/bn1/moving_mean'][0]
        tower_means = [dict((m.ref(), value) for m, value in t.batch_moments)[moving_mean.ref()]
                       for t in model.towers]
        with tf.compat.v1.Session(config=devices.session_config(2)) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver().save(session, checkpoint)
            before = session.run(variables)
            averaged, per_tower, means = session.run(
                [[g for g, _ in model.grads_and_vars], [[g for g, _ in t] for t in model.tower_grads],
                 tower_means])
            session.run(model.train_op)
            after, step, moving = session.run([variables, model.step.global_step, moving_mean])
    assert len(averaged) == len(variables) == 23
    for mean, tower_0, tower_1 in zip(averaged, *per_tower):
        np.testing.assert_allclose(mean, (tower_0 + tower_1) / 2, rtol=1e-5, atol=1e-7)
    # Applied once: the first momentum step is variable - learning_rate * gradient.
    assert step == 1
    for old, new, mean in zip(before, after, averaged):
        np.testing.assert_allclose(new, old - 0.1 * mean, rtol=1e-5, atol=1e-7)
    # Moving mean: one update (bn_decay 0.9, from 0) toward the mean of the tower batch means.
    np.testing.assert_allclose(moving, 0.1 * (means[0] + means[1]) / 2, rtol=1e-5, atol=1e-7)

    # Each tower's gradient is the one-device model's gradient on that tower's images,
    # with the variables of the 2-tower checkpoint (restored by name into one device).
    with tf.Graph().as_default():
        images_in = tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3])
        labels_in = tf.compat.v1.placeholder(tf.float32, [None, 10])
        single = resnet_model.ResNet(synthetic.tiny_hps(batch_size=TOWER_BATCH), images_in, labels_in, 'train')
        single.build_graph()
        gradients = tf.compat.v1.gradients(single.cost, tf.compat.v1.trainable_variables())
        with tf.compat.v1.Session() as session:
            tf.compat.v1.train.Saver().restore(session, checkpoint)
            for i in range(2):
                expected = session.run(gradients, {images_in: images[i::2], labels_in: labels[i::2]})
                for want, got in zip(expected, per_tower[i]):
                    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.timeout(300)
def test_two_tower_run_learns_and_normal_eval_scores_it(learnable, tmp_path, capsys):
    train_path, test_path = learnable
    log_root = str(tmp_path / 'run')
    train = run_main('--mode=train', '--dataset=cifar10', '--train_data_path=' + train_path,
                     '--log_root=' + log_root, '--train_steps=300', '--random_seed=1',
                     '--num_gpus=2', '--tower_device=cpu', *TINY)
    assert 'step 300/300' in train.stderr
    config = run_files.load_config(log_root)
    assert (config.num_towers, config.devices.tower_device) == (2, 'cpu')
    scalars = read_scalars(os.path.join(log_root, 'train'))
    for tag in ('total_loss', 'precision', 'learning_rate', 'examples_per_sec'):
        assert tag in scalars, sorted(scalars)
    assert not any('tower' in tag for tag in scalars), sorted(scalars)

    # The normal one-device eval scores the 2-tower checkpoint (in this process).
    out = processes.main_stdout(['--mode=eval', '--dataset=cifar10', '--eval_data_path=' + test_path,
                                 '--log_root=' + log_root, '--eval_once', '--num_residual_units=1'], capsys)
    scores = eval_precisions(out)
    assert len(scores) == 1 and scores[0][0] == 300, out
    assert scores[0][1] >= 0.9, out


@pytest.mark.timeout(60)
def test_tower_flags_resolve():
    config = resolve(['--num_gpus=3', '--tower_device=cpu', '--batch_size=33'])
    assert (config.num_towers, config.devices.tower_device, config.devices.variable_device_name) == (3, 'cpu', '/cpu:0')
    assert devices.num_cpu_devices(config) == 3
    # Eval uses one device whatever --num_gpus says, so its batch need not divide.
    config = resolve(['--mode=eval', '--num_gpus=3', '--tower_device=cpu', '--batch_size=100'])
    assert (config.num_towers, config.devices.device) == (1, '/cpu:0')
    assert devices.num_cpu_devices(config) == 1
    assert resolve([]).num_towers == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize('args, expected', [
    (['--num_gpus=3', '--tower_device=cpu', '--batch_size=32'], '--batch_size=32: not divisible by --num_gpus=3'),
    (['--num_gpus=2', '--tower_device=cpu', '--variable_device=gpu'], '--variable_device=gpu'),
    (['--variable_device=gpu'], '--variable_device=gpu'),
    (['--num_gpus=2', '--tower_device=tpu'], 'tower_device'),
])
def test_tower_flag_errors_exit_2_with_one_line(args, expected, capsys):
    code, err = processes.main_exit(args, capsys)
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith('error: ') and expected in err, err


@pytest.mark.timeout(90)
@pytest.mark.parametrize('num_towers', [1, 2])
def test_image_and_histogram_summaries_have_the_same_tags_for_1_and_2_towers(tmp_path, num_towers):
    train_path, _ = synthetic.write_learnable_dataset(tmp_path, num_train=64, num_test=8)
    config = RunConfig(data=Data(dataset='cifar10', train_data_path=train_path, num_input_threads=1),
                       model=Model(num_residual_units=1), schedule=Schedule(batch_size=2 * TOWER_BATCH),
                       checkpoints=Checkpoints(summary_histograms=True),
                       devices=Devices(num_gpus=num_towers, tower_device='cpu'))
    with tf.Graph().as_default():
        model = training.build_train_graph(config)
        ops = [op for op in tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.SUMMARIES)]
        image_ops = [op for op in ops if op.op.type == 'ImageSummary']
        with tf.compat.v1.Session(config=devices.session_config(num_towers)) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            with cifar_input.running_queues(session):
                tags = summary_tags(session, model.summaries)
    assert len(image_ops) == 1
    assert 'input_images/image/0' in tags
    assert 'activations/unit_1_0' in tags and 'activations/unit_3_0' in tags
    assert 'weights/unit_1_0/conv1/weights' in tags
    assert not any('tower_' in tag for tag in tags), tags
    assert len([t for t in tags if t.startswith('activations/')]) == 3  # one per unit, not per tower
