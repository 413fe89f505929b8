"""CIFAR-10/100 binary records through TF1 reader queues, and a record-check CLI.

Record layout, exactly as the CIFAR binary distribution stores it:
  CIFAR-10 (and the bundled 'digits' sample): 1 label byte, then 3,072 image
    bytes: the 1,024 red values, then green, then blue, each plane 32x32 row-major.
  CIFAR-100: 1 coarse-label byte (20 classes), 1 fine-label byte (100 classes),
    then the same 3,072 image bytes.

Graph side: `build_input` (or `make_input_queue` + `InputQueue.dequeue` for
several towers) gives float32 NHWC images and float32 one-hot labels from a
queue fed by `QueueRunner` threads. Start them with
`tf.compat.v1.train.start_queue_runners(sess, coord)`; with `num_epochs` set,
run `tf.compat.v1.local_variables_initializer()` first.

Host side (numpy, no graph): `list_files`, `check_files`, `changed_file_error`, `split_record`,
`split_moved_error`, `count_records`, `read_records`, `label_names`, `record_summary`. Run this file to check a
download: python cifar_input.py --dataset=cifar10 [--data_path=...]
"""
import argparse
import contextlib
import numbers
import os
import re
import sys

if __name__ == '__main__':
    os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow as tf

from resnet_cifar import guards
# The dataset table and the host-side record checks live in a module without TensorFlow (the
# download script uses them); these names are part of this module's API.
from resnet_cifar.datasets import (DATA_DIR, IMAGE_BYTES, IMAGE_DEPTH, IMAGE_SIZE, LABEL_MODES,  # noqa: F401
                                   PADDED_SIZE, changed_file_error, check_files, count_records, dataset_info,
                                   dataset_names, format_summary, label_layout, label_names, list_files,
                                   num_classes, read_records, record_summary, split_moved_error, split_record,
                                   split_records)
from resnet_cifar.errors import DataError
from resnet_cifar.settings import GRAPH_MODES as MODES  # what a pipeline is built for


@contextlib.contextmanager
def running_queues(session):
    """Runs the graph's queue runners under a Coordinator for the `with` block.

    Yields the Coordinator. The end of a `num_epochs` pass (OutOfRangeError)
    ends the block quietly; on exit the threads are always stopped and joined,
    and a bad record found by a reader thread comes out as a DataError.
    """
    coord = tf.compat.v1.train.Coordinator()
    threads = tf.compat.v1.train.start_queue_runners(session, coord=coord)
    try:
        yield coord
    except tf.errors.OutOfRangeError:
        pass
    finally:
        coord.request_stop()
        try:
            coord.join(threads, stop_grace_period_secs=10)
        except tf.errors.InvalidArgumentError as e:
            raise data_error(e) from None


def is_bad_record_error(error):
    """True when `error` is a reader thread's failed label check (see data_error)."""
    return bool(_LABEL_CHECK_MESSAGE.search(getattr(error, 'message', None) or str(error)))


def data_error(op_error):
    """The DataError of a bad record found at run time by a reader thread.

    `op_error` is the tf.errors.OpError that the reader threads' coordinator
    re-raised; a failed label check becomes the one-line message record_summary
    gives, naming the file, the record and the label. Other errors keep the
    line that states their cause (guards.error_line).
    """
    text = getattr(op_error, 'message', None) or str(op_error)
    found = _LABEL_CHECK_MESSAGE.search(text)
    if found:
        return DataError('record file %r, record %s: label %s out of range; %s'
                         % (found.group('file'), found.group('record'), found.group('label'),
                            found.group('expected')))
    return DataError(guards.error_line(op_error))


# ---------------------------------------------------------------- graph

class InputQueue(object):
    """The batch queue that `build_input` dequeues from.

    Attributes: num_classes (int), queue (RandomShuffleQueue in train mode,
    FIFOQueue in eval mode; elements are float32 [32, 32, 3] images and int32
    labels), mode ('train' or 'eval'). Several towers may each call dequeue().
    """

    def __init__(self, queue, num_classes, mode):
        self.queue = queue
        self.num_classes = num_classes
        self.mode = mode

    def dequeue(self, batch_size):
        """Returns (images float32 [batch, 32, 32, 3], labels float32 one-hot [batch, num_classes]).

        Train mode: dequeue_many, static batch dimension. Eval mode:
        dequeue_up_to, so the last batch of an epoch may be smaller (batch
        dimension None); then OutOfRangeError. (In train mode with num_epochs,
        a final partial batch is dropped.)
        """
        _check_positive_int('batch_size', batch_size)
        if self.mode == 'train':
            images, labels = self.queue.dequeue_many(batch_size)
        else:
            images, labels = self.queue.dequeue_up_to(batch_size)
        return images, tf.one_hot(labels, self.num_classes, dtype=tf.float32)


def _check_positive_int(flag, value, allow_none=False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise DataError('%s must be an integer >= 1, got %r' % (flag, value))


# What the label check of _read_examples prints when it fails.
_LABEL_CHECK_MESSAGE = re.compile(
    r'label out of range: record\] \[(?P<file>.*):(?P<record>\d+)\] \[has label\] \[(?P<label>-?\d+)\] '
    r'\[but (?P<expected>[^\]]*)\]')

# Records a reader thread reads, decodes and augments at a time. Per-image ops
# cost more in dispatch than in arithmetic (a 32x32 image is tiny), so the
# readers work on chunks: 5 to 6 times the images/s of one record at a time.
READ_CHUNK = 64


def _read_examples(filename_queue, info, label_offset, classes, label_mode, ranges=None):
    """Up to READ_CHUNK records of one file: (images float32 [n, 32, 32, 3], labels int32 [n]).

    ranges: None, or [(file, first record, end record)] of every file in the
    filename queue: records outside its file's range are dropped (n may be 0).
    The labels are checked at run time; a bad one fails the enqueue with an
    InvalidArgumentError naming 'file:record_index' and the label of the first
    bad record of the chunk.
    """
    reader = tf.compat.v1.FixedLengthRecordReader(record_bytes=info.record_bytes)
    keys, values = reader.read_up_to(filename_queue, READ_CHUNK)
    if ranges is not None:
        keys, values = _in_ranges(keys, values, ranges)
    records = tf.reshape(tf.io.decode_raw(values, tf.uint8), [-1, info.record_bytes])
    labels = tf.cast(records[:, label_offset], tf.int32)
    # One past the end when none is bad, also in an empty chunk (one whose records were all filtered out).
    first_bad = tf.argmax(tf.cast(tf.concat([labels >= classes, [True]], 0), tf.int32))
    check_labels = tf.compat.v1.debugging.assert_less(
        labels, classes, data=['label out of range: record', tf.concat([keys, ['']], 0)[first_bad], 'has label',
                               tf.concat([labels, [0]], 0)[first_bad],
                               'but %s %s labels are 0..%d' % (info.name, label_mode, classes - 1)])
    with tf.control_dependencies([check_labels]):
        labels = tf.identity(labels)
    planes = tf.reshape(records[:, info.label_bytes:], [-1, IMAGE_DEPTH, IMAGE_SIZE, IMAGE_SIZE])
    # CHW to HWC by unstack/stack, not tf.transpose: oneDNN's transpose logs a spurious
    # 'DT_UINT8 only on platforms with AVX-512' error for uint8 (also on AVX-512 CPUs), and
    # grappler moves a cast placed before the transpose back after it.
    images = tf.cast(tf.stack(tf.unstack(planes, axis=1), axis=-1), tf.float32)
    return images, labels


def _in_ranges(keys, values, ranges):
    """The (keys, values) of the records inside their file's range; keys are 'file:record_index'."""
    files = tf.constant([path for path, _, _ in ranges])
    file_of_key = tf.strings.regex_replace(keys, ':[0-9]+$', '')
    which = tf.argmax(tf.cast(tf.equal(file_of_key[:, None], files[None, :]), tf.int32), axis=1)
    index = tf.strings.to_number(tf.strings.regex_replace(keys, '^.*:', ''), tf.int64)
    first = tf.gather(tf.constant([first for _, first, _ in ranges], tf.int64), which)
    end = tf.gather(tf.constant([end for _, _, end in ranges], tf.int64), which)
    inside = tf.logical_and(index >= first, index < end)
    return tf.boolean_mask(keys, inside), tf.boolean_mask(values, inside)


def _augment(images, crop_seed, flip_seed, flip):
    """Per image: a random 32x32 crop of the 36x36 zero-padded image, and a random
    left-right flip if `flip`. images: float32 [n, 32, 32, 3].

    Each crop (and flip) is one gather of rows and one of columns: a flipped
    image takes its columns in reverse order.
    """
    margin = PADDED_SIZE - IMAGE_SIZE
    padded = tf.pad(images, [[0, 0], [margin // 2, margin - margin // 2],
                             [margin // 2, margin - margin // 2], [0, 0]])
    count = tf.shape(images)[0]
    offsets = tf.random.uniform([count, 2], 0, margin + 1, tf.int32, seed=crop_seed)
    positions = tf.range(IMAGE_SIZE)
    rows = offsets[:, :1] + positions
    cols = offsets[:, 1:] + positions
    if flip:
        flipped = tf.random.uniform([count, 1], 0, 2, tf.int32, seed=flip_seed) > 0
        cols = tf.where(flipped, offsets[:, 1:] + (IMAGE_SIZE - 1) - positions, cols)
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, cols, axis=2, batch_dims=1)


def cutout(images, size, seed=None):
    """Per image, a size x size square at a uniformly random centre set to zero, clipped at the
    borders (DeVries and Taylor, 2017). images: float32 [n, 32, 32, channels]."""
    centres = tf.random.uniform([tf.shape(images)[0], 2], 0, IMAGE_SIZE, tf.int32, seed=seed)
    return cutout_at(images, centres, size)


def cutout_at(images, centres, size):
    """images float32 [n, 32, 32, channels] with rows [r - size//2, r - size//2 + size) and the
    same columns around each centre (r, c) of centres int32 [n, 2] set to zero (the part
    of the square inside the image)."""
    positions = tf.range(IMAGE_SIZE)
    first = centres - size // 2
    in_rows = (positions >= first[:, :1]) & (positions < first[:, :1] + size)   # [n, 32]
    in_cols = (positions >= first[:, 1:]) & (positions < first[:, 1:] + size)   # [n, 32]
    inside = in_rows[:, :, None] & in_cols[:, None, :]                          # [n, 32, 32]
    return images * tf.cast(tf.logical_not(inside), images.dtype)[:, :, :, None]


def _queue_sizes(mode, batch_size, shuffle_capacity, repeatable=False):
    """(capacity, min_after_dequeue) of the batch queue.

    repeatable: a train queue that takes an element only when it is full, so each
    random draw picks from the same records whatever the timing of the reader
    thread and the trainer. With one reader thread and a seed, the batches are
    then the same in every run; each batch is read while the step waits for it.
    """
    if mode == 'eval':
        return 4 * batch_size, 0
    capacity = 16 * batch_size if shuffle_capacity is None else shuffle_capacity
    if repeatable:
        return capacity, capacity - 1
    return capacity, capacity // 2


def make_input_queue(dataset, data_path, batch_size, mode, num_threads=None, shuffle_capacity=None,
                     num_epochs=None, label_mode='fine', seed=None, validation_size=0, validation=False,
                     cutout_size=0):
    """Builds the reader threads and batch queue; returns an InputQueue.

    Args:
      dataset: one of dataset_names() (datasets.py's registry).
      data_path: comma-separated glob patterns of record files.
      batch_size: images per dequeue; sizes the queues.
      mode: 'train' (file order shuffled, several readers, random crop and,
        for photos (DatasetInfo.random_flip), left-right flip,
        RandomShuffleQueue) or 'eval' (file order, one reader, FIFOQueue).
      num_threads: train-mode reader threads, default max(2, cpu count);
        eval mode always uses exactly one, so this is ignored there.
      shuffle_capacity: train-mode shuffle queue capacity (>= batch_size),
        default 16 * batch_size; min_after_dequeue is half of it. Ignored in eval.
      num_epochs: passes over the files, None = forever. It creates a local
        variable: run tf.compat.v1.local_variables_initializer() before
        starting the queue runners.
      label_mode: 'fine' or 'coarse' (cifar100 only).
      seed: op seed for file shuffling, the shuffle queue and augmentation.
        With a seed and num_threads=1, train batches are the same in every run
        (the shuffle queue then waits to be full before each draw; slower).
      validation_size: when positive, the last validation_size records of
        data_path (datasets.split_records) are held out: read only the others,
        or with `validation`, only those.
      cutout_size: train mode: each image gets a random cutout_size squared square
        zeroed after standardization (cutout); 0: none.

    All arguments and files are checked (check_files) before any op is made.
    """
    info = dataset_info(dataset)
    _check_queue_args(mode, batch_size, num_threads, num_epochs, shuffle_capacity)
    label_offset, classes, _ = label_layout(dataset, label_mode)
    files, ranges = _files_and_ranges(check_files(dataset, data_path), validation_size, validation)

    train = mode == 'train'
    if not train:
        num_threads = 1
    elif num_threads is None:
        num_threads = max(2, os.cpu_count() or 1)
    capacity, min_after_dequeue = _queue_sizes(mode, batch_size, shuffle_capacity,
                                               repeatable=train and seed is not None and num_threads == 1)
    with tf.name_scope('input'):
        filename_queue = tf.compat.v1.train.string_input_producer(
            files, num_epochs=num_epochs, shuffle=train, seed=seed)
        shapes = [[IMAGE_SIZE, IMAGE_SIZE, IMAGE_DEPTH], []]
        if train:
            queue = tf.queue.RandomShuffleQueue(capacity, min_after_dequeue, [tf.float32, tf.int32],
                                                shapes=shapes, seed=seed)
        else:
            queue = tf.queue.FIFOQueue(capacity, [tf.float32, tf.int32], shapes=shapes)
        enqueue_ops = [_enqueue_op(queue, filename_queue, info, label_offset, classes, label_mode,
                                   seed, thread, train, ranges, cutout_size) for thread in range(num_threads)]
        # The default close_op closes the queue once every enqueue thread has
        # hit the end of the last epoch, so dequeue_up_to returns the remainder.
        tf.compat.v1.train.add_queue_runner(tf.compat.v1.train.QueueRunner(queue, enqueue_ops))
        tf.compat.v1.summary.scalar('batch_queue_fill', tf.cast(queue.size(), tf.float32) / capacity)
    return InputQueue(queue, classes, mode)


def _files_and_ranges(checked, validation_size, validation):
    """(files to read, their record ranges or None for whole files) of one part of the records."""
    if validation_size:
        ranges = split_records(checked, validation_size)[1 if validation else 0]
    else:
        ranges = [(path, 0, count) for path, count in checked]
    counts = dict(checked)
    whole = all(end - first == counts[path] for path, first, end in ranges)
    return [path for path, _, _ in ranges], None if whole else ranges


def _check_queue_args(mode, batch_size, num_threads, num_epochs, shuffle_capacity):
    """DataError naming the argument that cannot work."""
    if mode not in MODES:
        raise DataError('unknown mode %r; expected one of: %s' % (mode, ', '.join(MODES)))
    _check_positive_int('batch_size', batch_size)
    _check_positive_int('num_threads', num_threads, allow_none=True)
    _check_positive_int('num_epochs', num_epochs, allow_none=True)
    _check_positive_int('shuffle_capacity', shuffle_capacity, allow_none=True)
    if shuffle_capacity is not None and shuffle_capacity < batch_size:
        raise DataError('shuffle_capacity must be >= batch_size (%d), got %d' % (batch_size, shuffle_capacity))


def _enqueue_op(queue, filename_queue, info, label_offset, classes, label_mode, seed, thread, train, ranges,
                cutout_size=0):
    """One reader thread's op: read records, augment them (train mode), standardize, cut out
    (train mode, cutout_size), enqueue."""
    images, labels = _read_examples(filename_queue, info, label_offset, classes, label_mode, ranges)
    if train:
        # Equal op seeds would give every thread, and crop and flip, the same random stream.
        crop_seed, flip_seed = (None, None) if seed is None else (seed + 2 * thread + 1, seed + 2 * thread + 2)
        images = _augment(images, crop_seed, flip_seed, info.random_flip)
    images = tf.image.per_image_standardization(images)
    if train and cutout_size:
        images = cutout(images, cutout_size, None if seed is None else seed + _CUTOUT_SEED_OFFSET + thread)
    return queue.enqueue_many([images, labels])


# Cutout's op seeds start here, apart from the crop and flip seeds of any thread.
_CUTOUT_SEED_OFFSET = 100003


def build_input(dataset, data_path, batch_size, mode, num_threads=None, shuffle_capacity=None,
                num_epochs=None, label_mode='fine', seed=None, validation_size=0, validation=False,
                cutout_size=0):
    """Images and labels of CIFAR records from reader queues.

    Returns (images, labels): images float32 [batch, 32, 32, 3] NHWC,
    standardized per image (static batch dimension in train mode, None in
    eval mode); labels float32 one-hot [batch, num_classes]. See
    make_input_queue for the arguments; with num_epochs set, run
    tf.compat.v1.local_variables_initializer().
    """
    input_queue = make_input_queue(dataset, data_path, batch_size, mode, num_threads=num_threads,
                                   shuffle_capacity=shuffle_capacity, num_epochs=num_epochs,
                                   label_mode=label_mode, seed=seed, validation_size=validation_size,
                                   validation=validation, cutout_size=cutout_size)
    return input_queue.dequeue(batch_size)


# ---------------------------------------------------------------- CLI

def main(argv=None):
    """Record-check CLI. argv: arguments without the program name (default sys.argv[1:])."""
    parser = argparse.ArgumentParser(description='Check CIFAR binary record files: files, record and '
                                     'per-class counts, pixel mean and std.')
    parser.add_argument('--dataset', default='cifar10', choices=dataset_names())
    parser.add_argument('--data_path', default=None,
                        help="comma-separated file patterns; default: the dataset's default train path")
    parser.add_argument('--label_mode', default='fine', choices=LABEL_MODES)
    parser.add_argument('--verbosity', '-v', type=int, default=0,
                        help='1 or more: print the stack trace of an error too')
    args = parser.parse_args(argv)
    data_path = args.data_path or dataset_info(args.dataset).default_train_path
    try:
        print(format_summary(record_summary(args.dataset, data_path, args.label_mode)))
    except (DataError, OSError) as e:
        if args.verbosity >= 1:
            import traceback
            traceback.print_exc()
        message = ('%s: %s' % (e.filename, e.strerror) if isinstance(e, OSError) and e.strerror
                   else str(e).strip().splitlines()[0])
        print('error: %s' % message, file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
