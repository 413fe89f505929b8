"""Training recipes: each schedule in the graph and in Schedule.rate_at, equal to its formula,
through restarts, extensions and towers; cutout, mixup and label smoothing; presets and
epochs as resolved and recorded in config.json."""
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

import cifar_input
import processes
import resnet_model
import synthetic
from processes import read_scalars
from resnet_cifar import run_files
from resnet_cifar import training
from resnet_cifar.config import Schedule
from resnet_cifar.errors import FlagError

TINY = ['--num_residual_units=1', '--batch_size=16', '--noeval_after_training']


def cosine(step, warmup, end, start_rate, final_rate):
    """The cosine schedule written out: (s+1)/warmup of the start rate in the warmup, then half
    a cosine from start_rate (at step warmup) to final_rate (at step end), then final_rate."""
    if step < warmup:
        return start_rate * (step + 1) / warmup
    if step >= end:
        return final_rate
    return final_rate + (start_rate - final_rate) * (1 + math.cos(math.pi * (step - warmup) / (end - warmup))) / 2


# (Schedule, {step: the rate the formula gives, worked out by hand or by `cosine`}).
SCHEDULES = {
    'piecewise': (Schedule(lr_boundaries=(4, 8), lr_values=(0.3, 0.03, 0.003), min_lrn_rate=0.0),
                  {0: 0.3, 3: 0.3, 4: 0.03, 7: 0.03, 8: 0.003, 100: 0.003}),
    'piecewise_warmup': (Schedule(lr_boundaries=(6,), lr_values=(0.4, 0.04), warmup_steps=4, min_lrn_rate=0.0),
                         {0: 0.1, 1: 0.2, 3: 0.4, 4: 0.4, 6: 0.04}),
    'cosine': (Schedule(lr_schedule='cosine', lr_boundaries=(100,), lr_values=(0.2, 0.002), min_lrn_rate=0.0),
               {0: 0.2, 50: 0.101, 100: 0.002, 150: 0.002}),
    'cosine_warmup': (Schedule(lr_schedule='cosine', lr_boundaries=(110,), lr_values=(0.2, 0.002),
                               warmup_steps=10, min_lrn_rate=0.0),
                      {step: cosine(step, 10, 110, 0.2, 0.002) for step in (0, 4, 9, 10, 35, 60, 109, 110, 500)}),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize('name', sorted(SCHEDULES))
def test_each_schedule_in_the_graph_and_in_python_equals_its_formula(name):
    schedule, expected = SCHEDULES[name]
    with tf.Graph().as_default():
        step = tf.compat.v1.placeholder(tf.int64, [])
        _, rate = schedule.learning_rate().in_graph(step)
        with tf.compat.v1.Session() as session:
            for at, value in expected.items():
                assert schedule.rate_at(at) == pytest.approx(value, rel=1e-9), (name, at)
                assert session.run(rate, {step: at}) == pytest.approx(value, rel=1e-6), (name, at)


def test_a_cosine_schedule_is_checked():
    with pytest.raises(FlagError, match='a cosine schedule has one boundary'):
        Schedule(lr_schedule='cosine', lr_boundaries=(10, 20), lr_values=(0.1, 0.01, 0.001))
    with pytest.raises(FlagError, match='the cosine must end after the warmup'):
        Schedule(lr_schedule='cosine', lr_boundaries=(10,), lr_values=(0.1, 0.01), warmup_steps=10)
    with pytest.raises(FlagError, match='--lr_warmup=-1: expected 0 or more'):
        Schedule(warmup_steps=-1)


def logged_rates(train_dir):
    """{global step: the learning_rate summary}; the summary at step s is of the step run at s - 1."""
    return {step: value for step, value in read_scalars(train_dir)['learning_rate'].items() if step > 0}


# Piecewise with a warmup, and a cosine with a warmup that ends at step 8.
RESUMED_SCHEDULES = {
    'piecewise': ['--lr_boundaries=3,6', '--lr_values=0.1,0.05,0.02', '--lr_warmup=2'],
    'cosine': ['--lr_schedule=cosine', '--lr_boundaries=8', '--lr_values=0.1,0.01', '--lr_warmup=2'],
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize('kind', sorted(RESUMED_SCHEDULES))
def test_restarts_and_an_extension_keep_the_schedule_step_for_step(kind, learnable, tmp_path):
    """Three trainers: to step 4, restarted from checkpoint 4 to the run's end at 8, then
    extended to 12 with --train_steps alone; every step's logged rate is the run's schedule,
    and the extension goes on at the rate the run ended at."""
    train_path, _ = learnable
    log_root = str(tmp_path / 'run')
    common = ['--mode=train', '--dataset=cifar10', '--train_data_path=' + train_path, '--log_root=' + log_root,
              '--log_every_n_steps=1', '--save_checkpoints_steps=4', '--nolr_batch_scaling'] + TINY
    training.train(processes.resolve(common + ['--train_steps=4'] + RESUMED_SCHEDULES[kind]))
    training.train(processes.resolve(common + ['--train_steps=8']))
    first = run_files.load_config(log_root).schedule
    training.train(processes.resolve(common + ['--train_steps=12']))
    extended = run_files.load_config(log_root).schedule
    assert (extended.train_steps, first.train_steps) == (12, 8)
    assert (extended.lr_schedule, extended.lr_boundaries, extended.lr_values, extended.warmup_steps) == \
        (kind, first.lr_boundaries, first.lr_values, 2)
    rates = logged_rates(os.path.join(log_root, 'train'))
    assert sorted(rates) == list(range(1, 13))
    for step, rate in rates.items():
        assert rate == pytest.approx(extended.rate_at(step - 1), rel=1e-5), (step, rates)
    assert rates[1] == pytest.approx(0.05) and rates[2] == pytest.approx(0.1)  # the warmup: 1/2, 2/2
    ended_at = 0.02 if kind == 'piecewise' else 0.01
    assert [rates[step] for step in range(9, 13)] == pytest.approx([ended_at] * 4)
    if kind == 'cosine':
        assert rates[5] == pytest.approx(cosine(4, 2, 8, 0.1, 0.01), rel=1e-5)
        assert rates[8] > ended_at  # still falling at the run's last step


@pytest.mark.timeout(300)
def test_towers_at_2_devices_and_1_device_log_the_same_rate_at_every_step(learnable, tmp_path):
    """With mixup (within each tower's batch) and cutout, which leave the schedule alone."""
    train_path, _ = learnable
    logged = {}
    for num_gpus in (0, 2):
        log_root = str(tmp_path / ('run%d' % num_gpus))
        config = processes.resolve(['--mode=train', '--dataset=cifar10', '--train_data_path=' + train_path,
                                    '--log_root=' + log_root, '--train_steps=6', '--log_every_n_steps=1',
                                    '--lr_schedule=cosine', '--lr_warmup=2', '--num_gpus=%d' % num_gpus,
                                    '--tower_device=cpu', '--mixup_alpha=0.2', '--cutout_size=8'] + TINY)
        assert config.num_towers == max(num_gpus, 1)
        training.train(config)
        logged[num_gpus] = logged_rates(os.path.join(log_root, 'train'))
    assert sorted(logged[0]) == list(range(1, 7))
    assert logged[0] == logged[2]
    # Batch 16 scales the default cosine from 0.1 to 0.0125.
    assert config.schedule.lr_values == (0.0125, 0.0000125)
    assert logged[2] == {step: pytest.approx(config.schedule.rate_at(step - 1), rel=1e-5) for step in range(1, 7)}


# ---------------------------------------------------------------- regularizers

@pytest.mark.timeout(30)
def test_cutout_zeroes_exactly_a_square_clipped_at_the_borders():
    images = np.random.RandomState(0).uniform(1.0, 2.0, size=(4, 32, 32, 3)).astype(np.float32)
    centres = np.array([[16, 16], [0, 0], [31, 5], [2, 30]], np.int32)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        cut = session.run(cifar_input.cutout_at(tf.constant(images), tf.constant(centres), 8))
    expected = images.copy()
    for image, (rows, cols) in zip(expected, [((12, 20), (12, 20)), ((0, 4), (0, 4)), ((27, 32), (1, 9)),
                                              ((0, 6), (26, 32))]):
        image[rows[0]:rows[1], cols[0]:cols[1]] = 0.0
    np.testing.assert_array_equal(cut, expected)
    assert [int((image == 0).all(axis=-1).sum()) for image in cut] == [64, 16, 40, 36]


def zero_box(image):
    """(rows, cols) of the bounding box of the pixels that are 0 in every channel, and their count."""
    zero = (image == 0).all(axis=-1)
    rows, cols = np.nonzero(zero.any(axis=1))[0], np.nonzero(zero.any(axis=0))[0]
    return (rows[0], rows[-1] + 1), (cols[0], cols[-1] + 1), int(zero.sum())


@pytest.mark.timeout(120)
def test_the_training_queue_cuts_out_a_square_after_standardization(learnable):
    train_path, _ = learnable
    size = 10
    with tf.Graph().as_default():
        images, _ = cifar_input.build_input('cifar10', train_path, 64, 'train', num_threads=1, seed=3,
                                            cutout_size=size)
        with tf.compat.v1.Session() as session, cifar_input.running_queues(session):
            batch = session.run(images)
    clipped = 0
    for image in batch:
        (top, bottom), (left, right), count = zero_box(image)
        for first, end in ((top, bottom), (left, right)):
            assert end - first == size or first == 0 or end == 32  # the whole side, unless at a border
            assert size // 2 <= end - first <= size
        assert count == (bottom - top) * (right - left)  # the box is all zero: a square, not scattered zeros
        clipped += count < size * size
        # Standardized, then cut: the rest of the image has mean ~0 and std ~1, not the raw pixels.
        assert abs(image.mean()) < 0.5 and np.abs(image).max() < 20
    assert 0 < clipped < len(batch)


@pytest.mark.timeout(30)
def test_mixup_labels_sum_to_one_and_mix_the_right_pair():
    n, classes = 16, 10
    # Image i is the constant i, label i % classes: a mixed image says which two it came from.
    images = np.tile(np.arange(n, dtype=np.float32)[:, None, None, None], (1, 32, 32, 3))
    labels = np.eye(classes, dtype=np.float32)[np.arange(n) % classes]
    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(5)
        mixed = resnet_model.mixup(tf.constant(images), tf.constant(labels), 0.4)
        with tf.compat.v1.Session() as session:
            mixed_images, mixed_labels, weights, partners = session.run(mixed)
    assert sorted(partners) == list(range(n)) and list(partners) != list(range(n))
    assert np.all((weights >= 0) & (weights <= 1)) and np.ptp(weights) > 0.1
    np.testing.assert_allclose(mixed_labels.sum(axis=1), 1.0, rtol=1e-6)
    for i in range(n):
        np.testing.assert_allclose(mixed_images[i], weights[i] * i + (1 - weights[i]) * partners[i], rtol=1e-5)
        expected = weights[i] * labels[i] + (1 - weights[i]) * labels[partners[i]]
        np.testing.assert_allclose(mixed_labels[i], expected, rtol=1e-5, atol=1e-7)


@pytest.mark.timeout(60)
def test_label_smoothing_changes_the_loss_as_the_formula_says():
    images, labels = synthetic.random_images(8, seed=2).astype(np.float32) / 255.0, np.eye(10)[np.arange(8)]
    epsilon = 0.2
    with tf.Graph().as_default():
        # Seeded: near-uniform logits from an unlucky draw make smoothing change the loss by
        # less than the test can tell (0.00022 was seen once).
        tf.compat.v1.set_random_seed(1)
        model = resnet_model.ResNet(synthetic.tiny_hps(label_smoothing=epsilon, moving_average_decay=0.0),
                                    tf.constant(images), tf.constant(labels, tf.float32), 'train')
        model.build_graph()
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            logits, cross_entropy, precision = session.run([model.logits, model.cross_entropy, model.precision])
    log_softmax = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) \
        - logits.max(1, keepdims=True)
    smoothed = (1 - epsilon) * labels + epsilon / 10
    assert cross_entropy == pytest.approx(-(smoothed * log_softmax).sum(axis=1).mean(), rel=1e-5)
    plain = -(labels * log_softmax).sum(axis=1).mean()
    assert abs(cross_entropy - plain) > 1e-3, (cross_entropy, plain)
    assert precision == pytest.approx((logits.argmax(1) == labels.argmax(1)).mean())  # the hard labels


# ---------------------------------------------------------------- presets and epochs

# What each preset sets, as config.json records it (with --batch_size=16, rates times 16/128).
PRESET_VALUES = {
    'resnet32_classic': dict(optimizer='mom', weight_decay_rate=0.0002, lr_schedule='piecewise',
                             lr_values=[0.0125, 0.00125, 0.000125, 0.0000125], label_smoothing=0.0),
    'resnet110': dict(optimizer='mom', weight_decay_rate=0.0001, lr_schedule='piecewise',
                      lr_values=[0.00125, 0.0125, 0.00125, 0.000125], label_smoothing=0.0),
    'wrn28_10': dict(optimizer='nesterov', weight_decay_rate=0.0005, lr_schedule='piecewise',
                     lr_values=[0.0125, 0.0025, 0.0005, 0.0001], label_smoothing=0.0),
    'fast_cifar': dict(optimizer='nesterov', weight_decay_rate=0.0005, lr_schedule='cosine',
                       lr_values=[0.025, 0.000025], label_smoothing=0.1),
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize('preset', sorted(PRESET_VALUES))
def test_each_preset_trains_explicit_flags_override_it_and_config_json_records_it(preset, learnable, tmp_path):
    train_path, _ = learnable
    log_root = str(tmp_path / 'run')
    # Explicit flags override the preset's network (ResNet-8, not 32, 110, 20 or WRN-28-10) and length.
    config = processes.resolve(['--mode=train', '--preset=' + preset, '--dataset=cifar10', '--train_data_path='
                                + train_path, '--log_root=' + log_root, '--train_steps=5', '--width=1',
                                '--log_every_n_steps=1'] + TINY)
    training.train(config)
    saved = json.load(open(run_files.path(log_root)))
    assert (saved['model']['num_residual_units'], saved['model']['width']) == (1, 1)
    assert saved['schedule']['train_steps'] == 5
    assert {key: saved['schedule'][key] for key in PRESET_VALUES[preset]} == PRESET_VALUES[preset]
    assert saved['schedule']['preset'] == preset and saved['schedule']['lr_batch_scaling'] is True
    assert processes.checkpoint_steps(log_root)[-1] == 5
    rates = logged_rates(os.path.join(log_root, 'train'))
    assert rates == {step: pytest.approx(config.schedule.rate_at(step - 1), rel=1e-5) for step in range(1, 6)}


def test_presets_in_epochs_resolve_against_the_records_not_held_out(learnable, tmp_path, capsys):
    train_path, _ = learnable  # 1,000 records
    common = ['--mode=train', '--dataset=cifar10', '--train_data_path=' + train_path, '--log_root=' + str(tmp_path)]
    # 30 epochs of 1,000 records at batch 16: 1875 steps, the warmup 2 epochs, the cosine to the end.
    fast = processes.resolve(common + ['--preset=fast_cifar', '--batch_size=16']).schedule
    assert (fast.train_steps, fast.warmup_steps, fast.lr_boundaries, fast.lr_values) == \
        (1875, 125, (1875,), (0.025, 0.000025))
    wrn = processes.resolve(common + ['--preset=wrn28_10', '--nolr_batch_scaling', '--lrn_rate=0.2']).schedule
    # 200 epochs of 1,000 / 128 steps: epochs 60, 120 and 160; --lrn_rate scales the preset's rates.
    assert (wrn.train_steps, wrn.lr_boundaries, wrn.lr_values) == (1563, (469, 938, 1250), (0.2, 0.04, 0.008, 0.0016))
    # Epoch flags count the records left after the validation split: 800 / 16 = 50 steps an epoch.
    split = processes.resolve(common + ['--train_epochs=2.5', '--lr_boundaries=1,2', '--lr_warmup=0.5',
                                        '--validation_size=200', '--batch_size=16']).schedule
    assert (split.train_steps, split.lr_boundaries, split.warmup_steps) == (125, (50, 100), 25)
    code, err = processes.main_exit(common + ['--train_epochs=2', '--train_steps=100'], capsys)
    processes.assert_one_line_error(code, err, 2, '--train_epochs=2 and --train_steps=100: give one')


def test_a_run_from_before_the_recipes_resumes_with_their_old_values(tmp_path, capsys):
    """A config.json without the recipe keys: a piecewise run, no warmup, no regularizers, its
    rates as they were (no batch scaling, also not of a new --lrn_rate), no preset."""
    settings = dict(dataset='digits', num_residual_units=1, batch_size=32, lr_boundaries=[30, 45],
                    lr_values=[0.1, 0.01, 0.001], train_steps=60)
    (tmp_path / 'config.json').write_text(json.dumps(settings))
    for suffix in ('.index', '.data-00000-of-00001'):
        (tmp_path / ('model.ckpt-60' + suffix)).write_text('')
    schedule = processes.resolve(['--mode=train', '--log_root=' + str(tmp_path), '--train_steps=80',
                                  '--lrn_rate=0.2']).schedule
    assert (schedule.lr_schedule, schedule.warmup_steps, schedule.lr_batch_scaling, schedule.preset) == \
        ('piecewise', 0, False, '')
    assert (schedule.mixup_alpha, schedule.label_smoothing, schedule.cutout_size) == (0.0, 0.0, 0)
    assert (schedule.lr_boundaries, schedule.lr_values) == ((30, 45), (0.2, 0.02, 0.002))
    # Another kind of schedule on resuming: its default over the run, from the run's first rate.
    cosine = processes.resolve(['--mode=train', '--log_root=' + str(tmp_path), '--lr_schedule=cosine']).schedule
    assert (cosine.train_steps, cosine.lr_boundaries, cosine.lr_values) == (60, (60,), (0.1, 0.0001))
    # A run's preset, like its network, stays; its recipe flags may change one by one.
    code, err = processes.main_exit(['--mode=train', '--log_root=' + str(tmp_path), '--preset=fast_cifar'], capsys)
    processes.assert_one_line_error(code, err, 1, '--preset=fast_cifar: the run in %s has no --preset' % tmp_path)
