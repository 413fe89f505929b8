"""Transfer: bottleneck features (--mode=extract), a new softmax layer (--mode=finetune),
and training from another run's weights (--init_checkpoint, --freeze_restored_layers).

One tiny network is trained once per module (in process, through resnet_main.main);
the command lines under test run as real subprocesses where their output matters.
"""
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

import cifar_input
from resnet_cifar import evaluation
import resnet_model
import synthetic
from resnet_cifar import train_step
from resnet_cifar.config import Data, RunConfig
from processes import TINY, run_main
import processes

NAMES = ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine']


def main_in_process(*args):
    """resnet_main.main on these flags in this process; returns the exit status."""
    return processes.main_status(args)


def eval_precision(hps, log_root, data_path):
    """The eval-mode precision (moving averages) of the latest checkpoint in log_root."""
    config = RunConfig(mode='eval', data=Data(dataset='cifar10', eval_data_path=data_path))
    return evaluation.EvalGraph(hps, config).score(tf.train.latest_checkpoint(log_root)).precision


def one_error_line(err):
    lines = [line for line in err.splitlines() if line.startswith('error: ')]
    assert len(lines) == 1 and 'Traceback' not in err, err[-3000:]
    return lines[0]


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    directory = tmp_path_factory.mktemp('data')
    train_path, test_path = synthetic.write_learnable_dataset(directory, num_train=1000, num_test=200)
    with open(os.path.join(str(directory), 'batches.meta.txt'), 'w') as f:
        f.write('\n'.join(NAMES) + '\n')
    return train_path, test_path


@pytest.fixture(scope='module')
def trained(data, tmp_path_factory):
    """log_root of a tiny 10-class network trained 100 steps on the learnable data."""
    log_root = str(tmp_path_factory.mktemp('trained'))
    assert main_in_process('--mode=train', '--dataset=cifar10', '--train_data_path=' + data[0],
                           '--log_root=' + log_root, '--train_steps=100', '--random_seed=1',
                           *TINY) == 0
    return log_root


@pytest.fixture(scope='module')
def five_class_run(tmp_path_factory):
    """Checkpoint directory of a tiny 5-class network (classes 0..4 of the learnable images).

    No flag makes a 5-class network, so it is trained here: real reader queues,
    the first five of the ten one-hot columns, a MonitoredTrainingSession.
    """
    directory = tmp_path_factory.mktemp('five')
    labels = np.random.RandomState(5).randint(0, 5, size=500)
    data_path = synthetic.write_records(os.path.join(str(directory), 'five.bin'),
                                        synthetic.learnable_images(labels, 10, seed=7), labels)
    log_root = os.path.join(str(directory), 'run')
    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(5)
        images, one_hot = cifar_input.build_input('cifar10', data_path, 32, 'train', seed=5)
        model = resnet_model.ResNet(synthetic.tiny_hps(num_classes=5), images, one_hot[:, :5], 'train')
        model.build_graph()
        with tf.compat.v1.train.MonitoredTrainingSession(
                checkpoint_dir=log_root, save_summaries_steps=None, save_summaries_secs=None,
                hooks=[tf.compat.v1.train.StopAtStepHook(last_step=40)]) as session:
            while not session.should_stop():
                session.run(model.train_op)
    return log_root


@pytest.mark.timeout(240)
def test_extract_then_finetune_matches_the_network(data, trained, tmp_path, capsys):
    train_path, test_path = data
    train_npz, test_npz = str(tmp_path / 'train.npz'), str(tmp_path / 'test.npz')
    extract = run_main('--mode=extract', '--dataset=cifar10', '--log_root=' + trained,
                       '--num_residual_units=1', '--extract_data_path=' + train_path,
                       '--features_path=' + train_npz, '--batch_size=100', '--log_every_n_steps=2')
    assert 'extract: 200/1000 images' in extract.stderr, extract.stderr[-3000:]
    assert 'wrote 1000 features of dimension 64' in extract.stdout
    assert main_in_process('--mode=extract', '--dataset=cifar10', '--log_root=' + trained,
                           '--num_residual_units=1', '--extract_data_path=' + test_path,
                           '--features_path=' + test_npz) == 0

    with np.load(train_npz) as saved:
        assert sorted(saved.files) == ['features', 'labels', 'metadata']
        features, labels = saved['features'], saved['labels']
        metadata = json.loads(str(saved['metadata']))
    assert features.shape == (1000, 64) and features.dtype == np.float32
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, cifar_input.read_records('cifar10', train_path)[1])
    assert metadata['checkpoint'] == tf.train.latest_checkpoint(trained)
    assert metadata['global_step'] == 100
    assert (metadata['dataset'], metadata['feature_dim'], metadata['num_classes']) == ('cifar10', 64, 10)
    assert metadata['moving_average'] is True
    assert metadata['label_names'] == NAMES
    assert features.min() >= 0  # after the final ReLU

    # The features are exactly what the network's own (averaged) layer reads: that
    # layer applied to them scores what eval scores.
    checkpoint = metadata['checkpoint']
    weights = tf.train.load_variable(checkpoint, 'logit/weights' + train_step.SHADOW_SUFFIX)
    biases = tf.train.load_variable(checkpoint, 'logit/biases' + train_step.SHADOW_SUFFIX)
    with np.load(test_npz) as saved:
        test_features, test_labels = saved['features'], saved['labels']
    network_precision = eval_precision(synthetic.tiny_hps(batch_size=100), trained, test_path)
    replayed = np.mean(np.argmax(test_features @ weights + biases, 1) == test_labels)
    assert replayed == pytest.approx(network_precision, abs=0.01)
    assert network_precision >= 0.8

    out = str(tmp_path / 'head')
    capsys.readouterr()
    assert main_in_process('--mode=finetune', '--log_root=' + out, '--train_features=' + train_npz,
                           '--eval_features=' + test_npz, '--finetune_epochs=20',
                           '--random_seed=3') == 0
    printed = capsys.readouterr().out
    head_precision = float(printed.split('finetune: precision ')[1].split(',')[0])
    # A new head on the features does about as well as the network's own layer, or
    # better: that layer had only the network's 100 steps (one CI run: 1.0 against 0.895).
    assert head_precision >= network_precision - 0.05, (head_precision, network_precision)
    head = tf.train.latest_checkpoint(os.path.join(out, 'finetune'))
    assert head is not None
    assert tf.train.load_variable(head, 'logit/weights').shape == (64, 10)


@pytest.mark.timeout(120)
def test_extract_is_repeatable_and_takes_another_label_set(data, trained, five_class_run, tmp_path):
    _, test_path = data
    paths = [str(tmp_path / name) for name in ('a.npz', 'b.npz', 'five.npz')]
    flags = ['--mode=extract', '--dataset=cifar10', '--num_residual_units=1',
             '--extract_data_path=' + test_path]
    for path, checkpoint in zip(paths, [tf.train.latest_checkpoint(trained), trained, five_class_run]):
        assert main_in_process('--checkpoint_path=' + checkpoint, '--features_path=' + path, *flags) == 0
    first, second, five = [np.load(path) for path in paths]
    np.testing.assert_array_equal(first['features'], second['features'])
    np.testing.assert_array_equal(first['labels'], second['labels'])
    # A 5-class network's features, with this data's 10 labels.
    metadata = json.loads(str(five['metadata']))
    assert (metadata['num_classes'], metadata['source_num_classes'], metadata['global_step']) == (10, 5, 40)
    assert five['features'].shape == (200, 64)
    assert not np.array_equal(five['features'], first['features'])


@pytest.mark.timeout(240)
def test_init_checkpoint_from_five_to_ten_classes(data, five_class_run, tmp_path):
    train_path, test_path = data
    source = tf.train.latest_checkpoint(five_class_run)
    log_root = str(tmp_path / 'run')
    assert main_in_process('--mode=train', '--dataset=cifar10', '--train_data_path=' + train_path,
                           '--log_root=' + log_root, '--train_steps=50', '--random_seed=2',
                           '--init_checkpoint=' + five_class_run, *TINY) == 0
    assert eval_precision(synthetic.tiny_hps(), log_root, test_path) >= 0.5  # chance is 0.1
    trained = tf.train.latest_checkpoint(log_root)
    assert tf.train.load_variable(trained, 'global_step') == 50  # a fresh step count
    assert not np.array_equal(tf.train.load_variable(trained, 'init/conv/weights'),
                              tf.train.load_variable(source, 'init/conv/weights'))
    # What training started from: the checkpoint the run saves before its first step holds the
    # source's weights (and moving averages of them), not a fresh init ...
    start = os.path.join(log_root, 'model.ckpt-0')
    assert tf.train.load_variable(start, 'global_step') == 0
    started = dict(tf.train.list_variables(start))
    network = [name for name in dict(tf.train.list_variables(source))
               if name.endswith(('/weights', '/beta', '/gamma', '/moving_mean', '/moving_variance'))
               and not name.startswith('logit/') and not name.endswith(('/Momentum', 'Average'))]
    # The stem, 3 units of (bn1, conv1, bn2, conv2), the final batch norm; 2 or 4 values each.
    assert len(network) == 1 + 3 * (4 + 1 + 4 + 1) + 4, network
    for name in network:
        value = tf.train.load_variable(source, name)
        np.testing.assert_array_equal(tf.train.load_variable(start, name), value, err_msg=name)
        if name + train_step.SHADOW_SUFFIX in started:
            np.testing.assert_array_equal(tf.train.load_variable(start, name + train_step.SHADOW_SUFFIX),
                                          value, err_msg=name)
    assert sum(name + train_step.SHADOW_SUFFIX in started for name in network) >= 21
    # (trained weights: a fresh init would have gamma 1, beta 0, moving statistics 0 and 1)
    assert not np.array_equal(tf.train.load_variable(source, 'unit_last/bn/gamma'), np.ones(64))
    # ... but for the fully connected layer, which starts fresh: 10 classes, zero biases, and
    # weights from the fan-in uniform initializer, none copied from the 5-class layer.
    weights = tf.train.load_variable(start, 'logit/weights')
    assert weights.shape == (64, 10)
    np.testing.assert_array_equal(tf.train.load_variable(start, 'logit/biases'), np.zeros(10))
    limit = np.sqrt(3.0 / 64)
    assert np.abs(weights).max() <= limit and 0.7 < weights.std() / (limit / np.sqrt(3)) < 1.3
    source_weights = tf.train.load_variable(source, 'logit/weights')
    assert not any(np.allclose(weights[:, i], source_weights[:, j]) for i in range(10) for j in range(5))

    frozen_root = str(tmp_path / 'frozen')
    assert main_in_process('--mode=train', '--dataset=cifar10', '--train_data_path=' + train_path,
                           '--log_root=' + frozen_root, '--train_steps=20',
                           '--init_checkpoint=' + source, '--freeze_restored_layers', *TINY) == 0
    frozen = tf.train.latest_checkpoint(frozen_root)
    saved = dict(tf.train.list_variables(frozen))
    restored = [name for name in saved if name.endswith(('/weights', '/beta', '/gamma'))
                and not name.startswith('logit/')]
    # The stem, 3 units of (bn1, conv1, bn2, conv2), the final batch norm.
    assert len(restored) == 1 + 3 * 6 + 2, restored
    for name in restored:
        np.testing.assert_array_equal(tf.train.load_variable(frozen, name),
                                      tf.train.load_variable(source, name), err_msg=name)
        np.testing.assert_array_equal(tf.train.load_variable(frozen, name + train_step.SHADOW_SUFFIX),
                                      tf.train.load_variable(source, name), err_msg=name)
        assert name + '/Momentum' not in saved  # not in the optimizer at all
    assert tf.train.load_variable(frozen, 'logit/weights').shape == (64, 10)
    assert 'logit/weights/Momentum' in saved

    # A resumed run continues from its own checkpoint and never reads --init_checkpoint.
    assert main_in_process('--mode=train', '--dataset=cifar10', '--train_data_path=' + train_path,
                           '--log_root=' + frozen_root, '--train_steps=30',
                           '--init_checkpoint=' + str(tmp_path / 'gone'), '--freeze_restored_layers',
                           *TINY) == 0
    resumed = tf.train.latest_checkpoint(frozen_root)
    assert tf.train.load_variable(resumed, 'global_step') == 30
    np.testing.assert_array_equal(tf.train.load_variable(resumed, 'unit_1_0/conv1/weights'),
                                  tf.train.load_variable(source, 'unit_1_0/conv1/weights'))


MISMATCHES = [
    # (flags of the network built here, what the one-line error names)
    (['--num_residual_units=2'], 'unit_1_1/bn1/beta [16] is not in the checkpoint'),
    (['--num_residual_units=1', '--width=2'],
     'unit_1_0/conv1/weights is [3, 3, 16, 32] here but [3, 3, 16, 16] in the checkpoint'),
    (['--num_residual_units=1', '--use_bottleneck'],
     'unit_1_0/conv1/weights is [1, 1, 16, 16] here but [3, 3, 16, 16] in the checkpoint'),
]


@pytest.mark.timeout(60)
def test_missing_inputs_are_one_line_errors(data, trained, tmp_path, capsys):
    test_path = data[1]
    not_npz = tmp_path / 'not.npz'
    not_npz.write_bytes(b'not a zip file')
    cases = [
        (['--mode=extract', '--checkpoint_path=' + str(tmp_path / 'nowhere'),
          '--extract_data_path=' + test_path, '--features_path=' + str(tmp_path / 'f.npz')],
         "no checkpoint at '%s'" % (tmp_path / 'nowhere')),
        (['--mode=extract', '--log_root=' + str(tmp_path), '--extract_data_path=' + test_path,
          '--features_path=' + str(tmp_path / 'f.npz')], 'no checkpoint in directory'),
        (['--mode=finetune', '--train_features=' + str(tmp_path / 'missing.npz'),
          '--eval_features=' + str(tmp_path / 'missing.npz'), '--log_root=' + str(tmp_path)],
         'missing.npz\' does not exist: write it with --mode=extract'),
        (['--mode=finetune', '--train_features=' + str(not_npz), '--eval_features=' + str(not_npz),
          '--log_root=' + str(tmp_path)], 'is not a features file from --mode=extract'),
        (['--mode=train', '--train_data_path=' + data[0], '--log_root=' + str(tmp_path / 'run'),
          '--init_checkpoint=' + str(tmp_path / 'nowhere')], 'no checkpoint at'),
    ]
    for args, expected in cases:
        assert main_in_process('--dataset=cifar10', '--num_residual_units=1', *args) == 1, args
        line = one_error_line(capsys.readouterr().err)
        assert expected in line, line


@pytest.mark.timeout(60)
def test_extract_bad_records_are_one_line_errors(trained, tmp_path, capsys):
    truncated = tmp_path / 'truncated.bin'
    truncated.write_bytes(b'\0' * 5000)  # not a whole number of 3,073-byte records
    bad_label = synthetic.write_records(str(tmp_path / 'bad_label.bin'), synthetic.random_images(3),
                                        [1, 12, 2])
    for path, expected in [(str(truncated), 'not a whole number'), (bad_label, 'label 12 out of range')]:
        assert main_in_process('--mode=extract', '--dataset=cifar10', '--num_residual_units=1',
                               '--log_root=' + trained, '--extract_data_path=' + path,
                               '--features_path=' + str(tmp_path / 'f.npz')) == 1
        line = one_error_line(capsys.readouterr().err)
        assert expected in line and path in line, line
    assert not (tmp_path / 'f.npz').exists()


TRANSFER_FLAG_ERRORS = [
    (['--mode=extract', '--features_path=f.npz'], '--mode=extract needs --extract_data_path'),
    (['--mode=extract', '--extract_data_path=x.bin'], '--mode=extract needs --features_path'),
    (['--mode=finetune', '--train_features=a.npz'], '--mode=finetune needs --eval_features'),
    (['--mode=finetune', '--train_features=a.npz', '--eval_features=b.npz', '--finetune_epochs=0'],
     '--finetune_epochs=0'),
    (['--finetune_lrn_rate=-1'], '--finetune_lrn_rate=-1'),
    (['--freeze_restored_layers'], 'needs --init_checkpoint'),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize('args, expected', TRANSFER_FLAG_ERRORS)
def test_transfer_flag_errors_exit_2(args, expected, capsys):
    assert main_in_process(*args) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and expected in err, err


@pytest.mark.timeout(30)
def test_a_numpy_array_file_is_not_a_features_file(tmp_path):
    from resnet_cifar import features
    path = str(tmp_path / 'features.npy')
    np.save(path, np.zeros((3, 4), np.float32))
    with pytest.raises(features.FeaturesError, match='is not a features file'):
        features.load_features(path)


@pytest.mark.timeout(60)
def test_unwritable_features_path_is_a_flag_error(tmp_path, capsys):
    blocker = tmp_path / 'file'
    blocker.write_text('not a directory')
    code, err = processes.main_exit(['--mode=extract', '--extract_data_path=x.bin',
                                     '--features_path=%s' % (blocker / 'features.npz')], capsys)
    assert code == 2
    assert err.startswith('error: --features_path=') and len(err.splitlines()) == 1, err


def save_untrained(directory, hps):
    """A checkpoint of a freshly initialized eval-mode network; returns its path."""
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3])
        labels = tf.compat.v1.placeholder(tf.float32, [None, hps.num_classes])
        resnet_model.ResNet(hps, images, labels, 'eval').build_graph()
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            return tf.compat.v1.train.Saver().save(session, os.path.join(str(directory), 'model.ckpt'))


@pytest.mark.timeout(120)
@pytest.mark.parametrize('network, expected', MISMATCHES)
def test_mismatched_checkpoint_is_one_clear_line(network, expected, data, trained, tmp_path, capsys):
    train_path, test_path = data
    status = main_in_process('--mode=extract', '--dataset=cifar10', '--checkpoint_path=' + trained,
                             '--features_path=' + str(tmp_path / 'f.npz'), *network)
    assert status == 1
    # The trained run has its settings file: the flags that differ are named before any restore.
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith('error: %s: the run in %s has ' % (network[-1], trained)), line
    assert not os.path.exists(str(tmp_path / 'f.npz'))

    status = main_in_process('--mode=train', '--dataset=cifar10', '--train_data_path=' + train_path,
                             '--log_root=' + str(tmp_path / 'run'), '--init_checkpoint=' + trained,
                             *network)
    assert status == 1
    assert expected in one_error_line(capsys.readouterr().err)
    assert tf.train.latest_checkpoint(str(tmp_path / 'run')) is None


@pytest.mark.timeout(60)
def test_deeper_checkpoint_is_a_mismatch(data, tmp_path, capsys):
    checkpoint = save_untrained(tmp_path, synthetic.tiny_hps(num_residual_units=2))
    status = main_in_process('--mode=extract', '--dataset=cifar10', '--num_residual_units=1',
                             '--checkpoint_path=' + checkpoint, '--extract_data_path=' + data[1],
                             '--features_path=' + str(tmp_path / 'f.npz'))
    assert status == 1
    line = one_error_line(capsys.readouterr().err)
    assert 'the checkpoint has unit_1_1/bn1/beta [16], which this network lacks' in line, line


# ---------------------------------------------------------------- NaN and Inf in fine-tuning

DIGITS_TEST = os.path.join(processes.REPO, 'data', 'digits-bin', 'test_batch.bin')


@pytest.fixture(scope='module')
def digit_features(tiny_run, tmp_path_factory):
    """The features of the 300 bundled digit test images under the session's tiny run."""
    path = str(tmp_path_factory.mktemp('digit_features') / 'digits.npz')
    assert main_in_process('--mode=extract', '--dataset=digits', '--log_root=' + tiny_run,
                           '--extract_data_path=' + DIGITS_TEST, '--features_path=' + path) == 0
    return path


def file_bytes(directory):
    """{relative path: bytes} of every file under `directory`."""
    found = {}
    for parent, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(parent, name)
            with open(path, 'rb') as f:
                found[os.path.relpath(path, directory)] = f.read()
    return found


@pytest.mark.timeout(240)
def test_finetune_stops_on_nan_features_and_on_a_nan_loss_keeping_the_good_layer(digit_features, tmp_path):
    log_root = str(tmp_path / 'head')
    flags = ['--mode=finetune', '--log_root=' + log_root, '--finetune_epochs=2', '--random_seed=3']
    assert main_in_process('--train_features=' + digit_features, '--eval_features=' + digit_features, *flags) == 0
    layer_dir = os.path.join(log_root, 'finetune')
    good = file_bytes(layer_dir)
    assert tf.train.latest_checkpoint(layer_dir) is not None and 'config.json' in good

    with np.load(digit_features) as saved:
        arrays = {name: saved[name] for name in saved.files}
    arrays['features'][3, 5] = np.nan
    arrays['features'][7, :2] = np.inf
    holed = str(tmp_path / 'holed.npz')
    np.savez(holed, **arrays)
    done = processes.run('--train_features=' + digit_features, '--eval_features=' + holed, *flags)
    line = one_error_line(done.stderr)
    print(line)
    assert done.returncode == 1, done.stderr[-3000:]
    assert holed in line and '3 NaN or Inf values' in line and '2 of 300' in line, line
    assert file_bytes(layer_dir) == good
    from resnet_cifar import features
    with pytest.raises(features.FeaturesError, match='holds 3 NaN or Inf values'):
        features.load_features(holed)  # the same check for the train features

    # Finite features, a loss that diverges: stopped at the step where it did, nothing saved.
    done = processes.run('--train_features=' + digit_features, '--eval_features=' + digit_features,
                         '--finetune_lrn_rate=1e30', *flags)
    line = one_error_line(done.stderr)
    assert done.returncode == 1, done.stderr[-3000:]
    print(line)
    assert re.search(r'loss is NaN or Inf at step \d+', line) and layer_dir in line, line
    assert 'finetune: precision' not in done.stdout
    assert file_bytes(layer_dir) == good
