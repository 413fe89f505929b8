"""datasets: the registry (one entry per dataset, and a dataset registered here is taken by
config.py, run_files.py, resolve.py, training and eval by name), and the host-side record
checks, counts, summaries and the validation split, on small synthetic files."""
import fnmatch
import functools
import os
import types

import numpy as np
import pytest
from absl import flags as absl_flags

import resnet_main
import synthetic
from resnet_cifar import config as config_lib
from resnet_cifar import datasets
from resnet_cifar import evaluation
from resnet_cifar import resolve
from resnet_cifar import run_files
from resnet_cifar import settings
from resnet_cifar import training
from resnet_cifar.errors import DataError, FlagError
from synthetic import random_images, write_records


@pytest.fixture
def two_files(tmp_path):
    """Two CIFAR-10 files of 5 and 3 records; returns (pattern, images, labels) in file order."""
    images = random_images(8, seed=1)
    labels = np.array([3, 1, 4, 1, 5, 9, 2, 6])
    write_records(tmp_path / 'data_batch_1.bin', images[:5], labels[:5])
    write_records(tmp_path / 'data_batch_2.bin', images[5:], labels[5:])
    return str(tmp_path / 'data_batch_*.bin'), images, labels


# ---------------------------------------------------------------- the registry

def test_each_dataset_is_one_entry_that_says_all_the_suite_knows_of_it():
    assert datasets.dataset_names() == ('cifar10', 'cifar100', 'digits')
    for name in datasets.dataset_names():
        info = datasets.dataset_info(name)
        assert info.record_bytes == info.label_bytes + 32 * 32 * 3
        assert set(info.run_defaults) == {'train_steps', 'num_residual_units'}
        for mode in info.label_modes:
            offset, classes, _ = datasets.label_layout(name, mode)
            assert 0 <= offset < info.label_bytes and datasets.num_classes(name, mode) == classes
        if info.download:  # the download script unpacks the files the default paths name
            folder = os.path.join(datasets.DATA_DIR, info.download.folder)
            assert os.path.dirname(info.default_train_path) == folder == os.path.dirname(info.default_eval_path)
            assert info.download_command == 'python scripts/download_cifar.py --dataset=%s' % name
            train_pattern = os.path.basename(info.default_train_path)
            assert all(fnmatch.fnmatch(f, train_pattern) for f in info.download.train_files)
            assert info.download.test_files == [os.path.basename(info.default_eval_path)]
    cifar100 = datasets.dataset_info('cifar100')
    assert (cifar100.label_modes, datasets.num_classes('cifar100', 'coarse'), cifar100.top_5) == (
        ('fine', 'coarse'), 20, True)
    assert not datasets.dataset_info('cifar10').top_5 and not datasets.dataset_info('digits').top_5
    assert datasets.with_coarse_labels() == ('cifar100',)
    assert datasets.dataset_info('digits').run_defaults == {'train_steps': 1000, 'num_residual_units': 2}
    assert datasets.dataset_info('digits').download is None


def test_an_entry_gets_the_classic_run_defaults_or_must_give_both():
    labels = {'fine': datasets.Labels(0, 5, None)}
    plain = datasets.DatasetInfo('plain', 1, labels, 'a.bin', 'b.bin', 'make it', False)
    assert plain.run_defaults == datasets.CLASSIC_RUN == {'train_steps': 80000, 'num_residual_units': 5}
    half = datasets.DatasetInfo('half', 1, labels, 'a.bin', 'b.bin', 'make it', False,
                                run_defaults={'train_steps': 10})
    with pytest.raises(ValueError, match="^dataset 'half': run_defaults must give num_residual_units, "
                                         'train_steps, got train_steps$'):
        datasets.register(half)
    assert 'half' not in datasets.dataset_names()


def test_coarse_labels_of_a_dataset_without_them_are_one_line():
    with pytest.raises(FlagError, match='^--label_mode=coarse: only cifar100 has coarse labels, not digits$'):
        config_lib.Data(dataset='digits', label_mode='coarse')
    with pytest.raises(DataError, match=r"label_mode 'coarse' needs a dataset with coarse labels \(cifar100\); "
                                        'cifar10 has only one label per record'):
        datasets.label_layout('cifar10', 'coarse')
    with pytest.raises(ValueError, match="'cifar10' is registered already"):
        datasets.register(datasets.dataset_info('cifar10'))


def test_the_dataset_flag_is_defined_from_the_registry():
    """--dataset's choices and help (each name, with its description) come from the registry when
    the flags are defined; resnet_main.py defines them on import, so a dataset registered later
    is not among them (datasets.register says so)."""
    datasets.register(datasets.DatasetInfo('tiny_shapes', 1, {'fine': datasets.Labels(0, 5, None)}, 'a.bin',
                                           'b.bin', 'make it', False, description='a test set'))
    fresh = absl_flags.FlagValues()
    define = {name: functools.partial(getattr(absl_flags, name), flag_values=fresh)
              for name in ('DEFINE_enum', 'DEFINE_boolean', 'DEFINE_integer', 'DEFINE_float', 'DEFINE_string')}
    try:
        settings.define_flags(types.SimpleNamespace(**define))
    finally:
        datasets.unregister('tiny_shapes')
    assert fresh['dataset'].help == ('<cifar10|cifar100|digits|tiny_shapes>: Dataset: cifar10, cifar100, digits '
                                     '(the bundled sample in data/digits-bin), or tiny_shapes (a test set).')
    assert fresh['dataset'].parser.enum_values == ['cifar10', 'cifar100', 'digits', 'tiny_shapes']
    main = resnet_main.FLAGS['dataset']
    assert main.help == ('<cifar10|cifar100|digits>: Dataset: cifar10, cifar100, or digits (the bundled sample '
                         'in data/digits-bin).')
    assert main.parser.enum_values == ['cifar10', 'cifar100', 'digits']
    assert datasets.described_names() == 'cifar10, cifar100, or digits (the bundled sample in data/digits-bin)'


@pytest.fixture
def five_shapes(tmp_path):
    """A dataset registered for the test: 'five_shapes', 5 classes named in shapes.txt, its
    default files in tmp_path (learnable records in CIFAR-10's layout); removed afterwards."""
    directory = tmp_path / 'five_shapes'
    directory.mkdir()
    labels = np.arange(120) % 5
    write_records(directory / 'train.bin', synthetic.learnable_images(labels, num_classes=5, seed=1), labels)
    write_records(directory / 'test.bin', synthetic.learnable_images(labels[:40], num_classes=5, seed=2), labels[:40])
    (directory / 'shapes.txt').write_text('stripe\nchecker\nring\nwave\ndot\n')
    info = datasets.register(datasets.DatasetInfo(
        'five_shapes', 1, {'fine': datasets.Labels(0, 5, 'shapes.txt')}, str(directory / 'train.bin'),
        str(directory / 'test.bin'), 'make it with the test', random_flip=False,
        run_defaults={'train_steps': 4, 'num_residual_units': 1}))
    try:
        yield info
    finally:
        datasets.unregister('five_shapes')
    assert 'five_shapes' not in datasets.dataset_names()


def flag_values(**values):
    """{flag: value} of resnet_main's flags at their defaults, with `values` (the --dataset enum
    was made before the test registered its dataset, so its value is set here, not parsed)."""
    resnet_main.FLAGS.unparse_flags()
    resnet_main.FLAGS(['resnet_main.py'])
    try:
        return dict(resnet_main.FLAGS.flag_values_dict(), **values)
    finally:
        resnet_main.FLAGS.unparse_flags()


@pytest.mark.timeout(120)
def test_a_registered_dataset_is_taken_end_to_end_and_on_resume(five_shapes, tmp_path):
    """One register() call: config.py checks the name and takes its classes and files, resolve.py
    its run defaults, training trains on it, run_files reads its config.json back (the old
    run_files refused any dataset but the three it named), and eval and resume take it from there."""
    log_root = str(tmp_path / 'run')
    common = dict(dataset='five_shapes', log_root=log_root, batch_size=8, save_checkpoints_steps=2,
                  eval_after_training=False)
    config = resolve.run_config(flag_values(mode='train', **common), set(common) | {'mode'})
    assert (config.data.num_classes, config.schedule.train_steps, config.model.num_residual_units) == (5, 4, 1)
    assert config.data.eval_data_path == five_shapes.default_eval_path
    training.train(config)
    saved, _ = run_files.read(log_root)
    assert saved['dataset'] == 'five_shapes' and run_files.load_config(log_root).data.dataset == 'five_shapes'
    # A resumed trainer and eval, neither naming the dataset, take it from the run.
    resumed = resolve.run_config(flag_values(mode='train', log_root=log_root, train_steps=6),
                                 {'mode', 'log_root', 'train_steps'})
    assert (resumed.data.dataset, resumed.data.num_classes, resumed.schedule.train_steps) == ('five_shapes', 5, 6)
    scoring = resolve.run_config(flag_values(mode='eval', log_root=log_root, eval_once=True),
                                 {'mode', 'log_root', 'eval_once'})
    assert scoring.data.dataset == 'five_shapes' and 'dataset' in scoring.taken_from_run
    score = evaluation.score_after_training(scoring)
    assert (score.step, score.num_images, score.confusion.shape, score.precision_at_5) == (4, 40, (5, 5), None)
    assert datasets.label_names('five_shapes', five_shapes.default_eval_path) == [
        'stripe', 'checker', 'ring', 'wave', 'dot']


# ---------------------------------------------------------------- files and records (no graph)

def test_record_summary_label_out_of_range_names_file_record_label(tmp_path):
    path = synthetic.write_bad_label_file(tmp_path, n=20)
    with pytest.raises(DataError, match=r"bad\.bin', record 5: label 12 out of range"):
        datasets.record_summary('cifar10', path)


def test_list_files_sorts_each_pattern_and_removes_duplicates(tmp_path, two_files):
    pattern, _, _ = two_files
    write_records(tmp_path / 'a.bin', random_images(1), [0])
    first, second = str(tmp_path / 'data_batch_1.bin'), str(tmp_path / 'data_batch_2.bin')
    files = datasets.list_files('%s, %s,%s' % (str(tmp_path / 'data_batch_2.bin'), pattern,
                                               str(tmp_path / 'a.bin')))
    assert files == [second, first, str(tmp_path / 'a.bin')]
    assert datasets.check_files('cifar10', pattern) == [(first, 5), (second, 3)]


def test_record_summary_counts_stats_and_label_names(tmp_path, two_files):
    pattern, images, labels = two_files
    assert datasets.label_names('cifar10', pattern) is None
    names = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']
    (tmp_path / 'batches.meta.txt').write_text('\n'.join(names) + '\n\n')
    summary = datasets.record_summary('cifar10', pattern)
    assert summary['num_records'] == 8
    assert summary['class_counts'] == np.bincount(labels, minlength=10).tolist()
    np.testing.assert_allclose(summary['pixel_mean'], images.reshape(-1, 3).mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(summary['pixel_std'], images.reshape(-1, 3).std(axis=0), rtol=1e-7)
    assert summary['label_names'] == names
    report = datasets.format_summary(summary)
    assert 'records: 8' in report and 'cat' in report
    read_images, read_labels = datasets.read_records('cifar10', pattern)
    np.testing.assert_array_equal(read_images, images)
    np.testing.assert_array_equal(read_labels, labels)


def test_cifar100_label_name_files(tmp_path):
    path = write_records(tmp_path / 'test.bin', random_images(2), [5, 6], coarse_labels=[1, 2])
    (tmp_path / 'coarse_label_names.txt').write_text('\n'.join('c%d' % i for i in range(20)))
    assert datasets.label_names('cifar100', path, 'coarse')[2] == 'c2'
    assert datasets.label_names('cifar100', path, 'fine') is None
    assert datasets.record_summary('cifar100', path, 'coarse')['class_counts'][1:3] == [1, 1]


def test_split_records_counts_from_the_end_of_the_last_file():
    checked = [('a', 5), ('b', 70), ('c', 130)]
    assert datasets.split_records(checked, 150) == ([('a', 0, 5), ('b', 0, 50)], [('b', 50, 70), ('c', 0, 130)])
    assert datasets.split_records(checked, 130) == ([('a', 0, 5), ('b', 0, 70)], [('c', 0, 130)])
    assert datasets.split_records(checked, 0) == ([('a', 0, 5), ('b', 0, 70), ('c', 0, 130)], [])
    with pytest.raises(DataError, match='cannot hold out 205 of 205 records'):
        datasets.split_records(checked, 205)
