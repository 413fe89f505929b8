"""cifar_input: reader queues, file checks and the record-check CLI, on small synthetic files."""
import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import cifar_input
from cifar_input import DataError
import synthetic
from synthetic import random_images, write_records

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORD10 = 3073
RECORD100 = 3074


def standardize(images):
    """numpy per_image_standardization of float [N, 32, 32, 3]."""
    images = images.astype(np.float64)
    mean = images.mean(axis=(1, 2, 3), keepdims=True)
    std = images.std(axis=(1, 2, 3), keepdims=True)
    return (images - mean) / np.maximum(std, 1.0 / np.sqrt(3072))


def run_queue(fetches, max_runs, init_local=False, after_stop=None):
    """Runs `fetches` (built in the current default graph) until OutOfRangeError or max_runs.

    Returns the list of results, followed by the value of `after_stop` when
    given: fetches run once the queue runners have stopped. Queue runners go
    through a Coordinator; an error in a runner thread is re-raised by coord.join().
    """
    results = []
    with tf.compat.v1.Session() as sess:
        if init_local:
            sess.run(tf.compat.v1.local_variables_initializer())
        coord = tf.compat.v1.train.Coordinator()
        threads = tf.compat.v1.train.start_queue_runners(sess, coord)
        try:
            for _ in range(max_runs):
                results.append(sess.run(fetches))
        except tf.errors.OutOfRangeError:
            pass
        finally:
            coord.request_stop()
            coord.join(threads)
        if after_stop is not None:
            results.append(sess.run(after_stop))
    return results


@pytest.fixture
def two_files(tmp_path):
    """Two CIFAR-10 files of 5 and 3 records; returns (pattern, images, labels) in file order."""
    images = random_images(8, seed=1)
    labels = np.array([3, 1, 4, 1, 5, 9, 2, 6])
    write_records(tmp_path / 'data_batch_1.bin', images[:5], labels[:5])
    write_records(tmp_path / 'data_batch_2.bin', images[5:], labels[5:])
    return str(tmp_path / 'data_batch_*.bin'), images, labels


# ---------------------------------------------------------------- eval mode

@pytest.mark.timeout(30)
def test_eval_returns_written_pixels_and_labels_in_file_order(two_files):
    pattern, images, labels = two_files
    with tf.Graph().as_default():
        batch = cifar_input.build_input('cifar10', pattern, 3, 'eval', num_epochs=1)
        assert batch[0].shape.as_list() == [None, 32, 32, 3]
        assert batch[1].shape.as_list() == [None, 10]
        batches = run_queue(batch, max_runs=10, init_local=True)
    out_images = np.concatenate([b[0] for b in batches])
    out_labels = np.concatenate([b[1] for b in batches])
    assert out_images.dtype == np.float32 and out_labels.dtype == np.float32
    np.testing.assert_allclose(out_images, standardize(images), atol=1e-4)
    np.testing.assert_array_equal(out_labels, np.eye(10)[labels])


@pytest.mark.timeout(30)
def test_eval_one_epoch_yields_every_record_once_with_smaller_last_batch(tmp_path):
    labels = np.arange(250) % 10
    path = write_records(tmp_path / 'test_batch.bin', random_images(250, seed=2), labels)
    assert cifar_input.count_records('cifar10', path) == 250
    with tf.Graph().as_default():
        _, batch_labels = cifar_input.build_input('cifar10', path, 100, 'eval', num_epochs=1)
        batches = run_queue(batch_labels, max_runs=5, init_local=True)
    assert [len(b) for b in batches] == [100, 100, 50]  # then OutOfRangeError ended run_queue
    np.testing.assert_array_equal(np.concatenate(batches).argmax(axis=1), labels)


@pytest.mark.timeout(30)
def test_cifar100_fine_and_coarse_labels_come_from_their_bytes(tmp_path):
    fine = np.array([0, 57, 99, 12])
    coarse = np.array([19, 3, 0, 7])
    path = write_records(tmp_path / 'train.bin', random_images(4, seed=3), fine, coarse_labels=coarse)
    assert os.path.getsize(path) == 4 * RECORD100
    for label_mode, expected, classes in (('fine', fine, 100), ('coarse', coarse, 20)):
        assert cifar_input.num_classes('cifar100', label_mode) == classes
        with tf.Graph().as_default():
            _, labels = cifar_input.build_input('cifar100', path, 4, 'eval', num_epochs=1,
                                                label_mode=label_mode)
            assert labels.shape.as_list() == [None, classes]
            out = np.concatenate(run_queue(labels, max_runs=3, init_local=True))
        np.testing.assert_array_equal(out, np.eye(classes)[expected])
        _, np_labels = cifar_input.read_records('cifar100', path, label_mode)
        np.testing.assert_array_equal(np_labels, expected)


# ---------------------------------------------------------------- train mode

# Crops are taken from the 36x36 image (2 zero rows and columns each side): offsets 0..4.
CROP_OFFSETS = set(range(5))


def crop_flip_candidates(image, beyond=3):
    """Every standardized 32x32 crop of the zero-padded image, flipped or not, with offsets from
    -beyond to 4 + beyond in each axis (counted in the 36x36 image), so that a crop from outside
    0..4 is recognized as such.

    Returns (candidates [N, 32, 32, 3], [(dy, dx, flipped)]).
    """
    pad = 2 + beyond
    padded = np.pad(image.astype(np.float64), ((pad, pad), (pad, pad), (0, 0)))
    crops, params = [], []
    for dy in range(-beyond, 5 + beyond):
        for dx in range(-beyond, 5 + beyond):
            crop = padded[dy + beyond:dy + beyond + 32, dx + beyond:dx + beyond + 32]
            crops += [crop, crop[:, ::-1]]
            params += [(dy, dx, False), (dy, dx, True)]
    return standardize(np.stack(crops)), params


def assert_every_crop_offset(seen):
    """Each offset 0..4 occurs in each axis among the (dy, dx, flipped) seen, and no other."""
    assert {dy for dy, _, _ in seen} == CROP_OFFSETS, sorted(seen)
    assert {dx for _, dx, _ in seen} == CROP_OFFSETS, sorted(seen)


@pytest.mark.timeout(40)
def test_train_mode_crops_flips_standardizes_with_several_threads(tmp_path):
    images = random_images(4, seed=4)
    path = write_records(tmp_path / 'train.bin', images, np.arange(4))
    candidates = [crop_flip_candidates(image) for image in images]
    with tf.Graph().as_default() as graph:
        batch = cifar_input.build_input('cifar10', path, 16, 'train', num_threads=3,
                                        shuffle_capacity=32, seed=7)
        assert batch[0].shape.as_list() == [16, 32, 32, 3]
        assert batch[1].shape.as_list() == [16, 10]
        readers = [op for op in graph.get_operations() if op.type == 'FixedLengthRecordReaderV2']
        assert len(readers) == 3
        # Read after the runners stop: a reader waiting for a file name holds its
        # lock, so a count fetched beside the batch could block an op thread.
        produced = [tf.raw_ops.ReaderNumRecordsProducedV2(reader_handle=r.outputs[0]) for r in readers]
        runners = graph.get_collection(tf.compat.v1.GraphKeys.QUEUE_RUNNERS)
        assert sorted(len(r.enqueue_ops) for r in runners) == [1, 3]  # filename producer, readers
        *results, produced_counts = run_queue(batch, max_runs=4, after_stop=produced)
    assert len(results) == 4
    assert all(n > 0 for n in produced_counts), 'a reader thread produced nothing: %s' % produced_counts
    out_images = np.concatenate([r[0] for r in results])
    out_labels = np.concatenate([r[1] for r in results]).argmax(axis=1)
    np.testing.assert_allclose(out_images.mean(axis=(1, 2, 3)), 0.0, atol=1e-4)
    np.testing.assert_allclose(out_images.std(axis=(1, 2, 3)), 1.0, atol=1e-3)
    seen = set()
    for image, label in zip(out_images, out_labels):
        crops, params = candidates[label]
        errors = np.abs(crops - image).max(axis=(1, 2, 3))
        assert errors.min() < 1e-4, 'output image is no crop/flip of padded record %d' % label
        seen.add(params[errors.argmin()])
    assert_every_crop_offset(seen)  # 64 crops: an offset missed by chance is about 1e-6
    assert {flipped for _, _, flipped in seen} == {False, True}


@pytest.mark.timeout(40)
def test_digits_are_cropped_but_never_mirrored(tmp_path):
    images = random_images(2, seed=5)
    path = write_records(tmp_path / 'train.bin', images, np.arange(2))
    candidates = [crop_flip_candidates(image) for image in images]
    with tf.Graph().as_default():
        batch = cifar_input.build_input('digits', path, 32, 'train', num_threads=2,
                                        shuffle_capacity=64, seed=3)
        results = run_queue(batch, max_runs=2)
    seen = set()
    for image, label in zip(np.concatenate([r[0] for r in results]),
                            np.concatenate([r[1] for r in results]).argmax(axis=1)):
        crops, params = candidates[label]
        errors = np.abs(crops - image).max(axis=(1, 2, 3))
        assert errors.min() < 1e-4
        seen.add(params[errors.argmin()])
    assert_every_crop_offset(seen)
    assert not any(flipped for _, _, flipped in seen), seen


@pytest.mark.timeout(30)
def test_towers_dequeue_from_one_queue_and_queue_fill_is_summarized(two_files):
    pattern, _, _ = two_files
    with tf.Graph().as_default() as graph:
        input_queue = cifar_input.make_input_queue('cifar10', pattern, 4, 'train', num_threads=2, seed=1)
        assert input_queue.num_classes == 10 and input_queue.mode == 'train'
        towers = [input_queue.dequeue(4) for _ in range(2)]
        summaries = graph.get_collection(tf.compat.v1.GraphKeys.SUMMARIES)
        results = run_queue([towers, summaries], max_runs=2)
    values = [tf.compat.v1.Summary.FromString(s).value[0] for s in results[-1][1]]
    fills = {value.tag: value.simple_value for value in values}
    assert 'input/batch_queue_fill' in fills
    assert any(tag.startswith('input/input_producer/fraction_of_') for tag in fills), fills
    assert all(0.0 <= fill <= 1.0 for fill in fills.values())
    for (tower_a, tower_b), _ in results:
        assert tower_a[0].shape == tower_b[0].shape == (4, 32, 32, 3)


# ---------------------------------------------------------------- label range at run time

@pytest.mark.timeout(30)
def test_eval_label_out_of_range_fails_naming_record_and_label(tmp_path):
    path = synthetic.write_bad_label_file(tmp_path, n=20)
    with tf.Graph().as_default():
        _, labels = cifar_input.build_input('cifar10', path, 4, 'eval', num_epochs=1)
        with pytest.raises(tf.errors.InvalidArgumentError) as error:
            run_queue(labels, max_runs=10, init_local=True)
    assert 'bad.bin:5' in str(error.value) and '12' in str(error.value)


@pytest.mark.timeout(30)
def test_train_label_out_of_range_is_reraised_by_coordinator_join(tmp_path):
    path = synthetic.write_bad_label_file(tmp_path, n=20)
    with tf.Graph().as_default():
        images, _ = cifar_input.build_input('cifar10', path, 4, 'train', num_threads=2, shuffle_capacity=8)
        with tf.compat.v1.Session() as sess:
            coord = tf.compat.v1.train.Coordinator()
            threads = tf.compat.v1.train.start_queue_runners(sess, coord)
            try:
                for _ in range(100):
                    sess.run(images)
            except (tf.errors.OutOfRangeError, tf.errors.CancelledError):
                pass  # the failing runner closed the queue
            finally:
                coord.request_stop()
                with pytest.raises(tf.errors.InvalidArgumentError) as error:
                    coord.join(threads)
    assert 'bad.bin:5' in str(error.value) and '12' in str(error.value)


# ---------------------------------------------------------------- bad input, before any op

def assert_data_error_before_ops(match, **kwargs):
    """build_input(**kwargs) raises a one-line DataError matching `match` and creates no op."""
    args = dict(dataset='cifar10', batch_size=4, mode='eval')
    args.update(kwargs)
    with tf.Graph().as_default() as graph:
        with pytest.raises(DataError, match=match) as error:
            cifar_input.build_input(**args)
        assert graph.get_operations() == []
    assert '\n' not in str(error.value)
    return str(error.value)


def test_pattern_matching_nothing_names_the_pattern(tmp_path, two_files):
    pattern, _, _ = two_files
    missing = str(tmp_path / 'nothing_*.bin')
    assert_data_error_before_ops(r"no file matches data_path pattern '.*nothing_\*\.bin'",
                                 data_path=pattern + ',' + missing)


def test_truncated_file_names_file_size_record_size_and_dataset(tmp_path):
    path = tmp_path / 'data_batch_1.bin'
    path.write_bytes(b'\x01' * (2 * RECORD10 + 100))
    message = assert_data_error_before_ops('data_batch_1.bin', data_path=str(path))
    assert '%d bytes' % (2 * RECORD10 + 100) in message
    assert '3073-byte cifar10 records' in message and 'truncated' in message


def test_cifar100_file_read_as_cifar10_is_caught(tmp_path):
    path = write_records(tmp_path / 'train.bin', random_images(3), [1, 2, 3], coarse_labels=[0, 0, 0])
    message = assert_data_error_before_ops('3073-byte cifar10 records', data_path=path)
    assert 'train.bin' in message and '%d bytes' % (3 * RECORD100) in message
    assert 'cifar100' in message  # the size fits cifar100 records: a hint at the wrong --dataset


def test_empty_file(tmp_path):
    (tmp_path / 'empty.bin').write_bytes(b'')
    assert_data_error_before_ops(r"'.*empty\.bin' is empty", data_path=str(tmp_path / 'empty.bin'))


def test_directory_and_unreadable_file(tmp_path):
    (tmp_path / 'sub').mkdir()
    assert_data_error_before_ops(r"'.*sub' is a directory", data_path=str(tmp_path / 'su*'))
    os.symlink(str(tmp_path / 'gone.bin'), str(tmp_path / 'dangling.bin'))
    assert_data_error_before_ops(r"cannot read record file '.*dangling\.bin'",
                                 data_path=str(tmp_path / 'dangling.bin'))


def test_bad_arguments_are_named(two_files):
    pattern, _, _ = two_files
    message = assert_data_error_before_ops("unknown dataset 'cifar11'", dataset='cifar11', data_path=pattern)
    assert 'cifar10, cifar100, digits' in message
    assert_data_error_before_ops('batch_size must be an integer >= 1, got 0', batch_size=0, data_path=pattern)
    assert_data_error_before_ops("unknown mode 'test'; expected one of: train, eval", mode='test',
                                 data_path=pattern)
    assert_data_error_before_ops(r"label_mode 'coarse' needs .*\(cifar100\)", label_mode='coarse',
                                 data_path=pattern)
    assert_data_error_before_ops('num_epochs must be an integer >= 1, got 0', num_epochs=0, data_path=pattern)
    assert_data_error_before_ops('shuffle_capacity must be >= batch_size', mode='train', shuffle_capacity=2,
                                 data_path=pattern)


def test_missing_default_data_says_how_to_download():
    for name in cifar_input.dataset_names():
        info = cifar_input.dataset_info(name)
        if not glob.glob(info.default_eval_path):
            break
    else:
        pytest.skip('every dataset is present under data/')
    message = assert_data_error_before_ops('get it with: ' + info.download_command, dataset=name,
                                           data_path=info.default_eval_path)
    assert info.default_eval_path in message


# ---------------------------------------------------------------- CLI

@pytest.mark.timeout(60)
def test_cli_prints_check_and_exits_zero(two_files):
    pattern, _, labels = two_files
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'cifar_input.py'), '--dataset=cifar10', '--data_path=' + pattern],
                            capture_output=True, text=True, timeout=50)
    assert result.returncode == 0, result.stderr
    assert 'data_batch_1.bin: 5 records' in result.stdout
    assert 'data_batch_2.bin: 3 records' in result.stdout
    assert 'records: 8' in result.stdout
    assert 'pixel mean (R, G, B):' in result.stdout and 'pixel std  (R, G, B):' in result.stdout


@pytest.mark.timeout(60)
def test_cli_bad_file_is_one_error_line_and_exit_one(tmp_path):
    (tmp_path / 'short.bin').write_bytes(b'\x00' * 100)
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'cifar_input.py'), '--dataset=cifar10',
                             '--data_path=' + str(tmp_path / 'short.bin')],
                            capture_output=True, text=True, timeout=50)
    assert result.returncode == 1
    error_lines = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
    assert len(error_lines) == 1 and 'short.bin' in error_lines[0] and '100 bytes' in error_lines[0]
    assert result.stdout == ''


def test_cli_bad_flag_exits_two():
    with pytest.raises(SystemExit) as exit_info:
        cifar_input.main(['--dataset=cifar11'])
    assert exit_info.value.code == 2


# ---------------------------------------------------------------- validation split

@pytest.fixture
def three_files(tmp_path):
    """Files of 5, 70 and 130 CIFAR-10 records; returns (pattern, images, labels) in file order."""
    images, labels = random_images(205, seed=4), np.arange(205) % 10
    for name, first, end in (('data_batch_1.bin', 0, 5), ('data_batch_2.bin', 5, 75), ('data_batch_3.bin', 75, 205)):
        write_records(tmp_path / name, images[first:end], labels[first:end])
    return str(tmp_path / 'data_batch_*.bin'), images, labels


def read_part(pattern, validation_size, validation, mode='eval', batch_size=16):
    """(images, labels as class numbers) of one part of the records, one pass."""
    with tf.Graph().as_default():
        batch = cifar_input.build_input('cifar10', pattern, batch_size, mode, num_epochs=1, num_threads=1,
                                        validation_size=validation_size, validation=validation)
        batches = run_queue(batch, max_runs=100, init_local=True)
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]).argmax(axis=1)


@pytest.mark.timeout(60)
@pytest.mark.parametrize('validation_size', [150, 130, 1])  # inside a file, at a file's start, the last record
def test_validation_holds_out_the_last_records_and_training_reads_only_the_others(three_files, validation_size):
    pattern, images, labels = three_files
    kept = 205 - validation_size
    train_images, train_labels = read_part(pattern, validation_size, validation=False)
    valid_images, valid_labels = read_part(pattern, validation_size, validation=True)
    # The counts add up, each part is exactly its records in file order, so no record is in both.
    assert (len(train_labels), len(valid_labels)) == (kept, validation_size)
    np.testing.assert_allclose(train_images, standardize(images[:kept]), atol=1e-4)
    np.testing.assert_allclose(valid_images, standardize(images[kept:]), atol=1e-4)
    np.testing.assert_array_equal(np.concatenate([train_labels, valid_labels]), labels)


@pytest.mark.timeout(60)
def test_train_mode_reads_only_the_training_part(three_files):
    """The shuffling, augmenting train queue drops the held-out records too: one pass over the
    files gives the 9 training records (labels 0..8), none of the 196 held out."""
    pattern, _, labels = three_files
    _, train_labels = read_part(pattern, 196, validation=False, mode='train', batch_size=1)
    assert sorted(train_labels) == list(labels[:9])
