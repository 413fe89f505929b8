"""The dataset registry, and the record files checked, counted and read on the host (numpy);
no TensorFlow, so the download script needs none.

Each dataset is one DatasetInfo in the registry (`register`): its record layout, its labels
(classes, the file that names them, coarse labels), its default paths and download, whether
eval scores top-5, and the defaults of a new run on it. The flags, config.py, run_files.py,
resolve.py, evaluation.py, cifar_input.py and scripts/download_cifar.py ask it by name.

CIFAR-10 (and the bundled 'digits' sample): 1 label byte, then 3,072 image
bytes. CIFAR-100: 1 coarse-label byte, 1 fine-label byte, then the image.
cifar_input.py reads the same records through TF1 reader queues.
"""
import collections
import dataclasses
import glob
import hashlib
import os
from typing import Optional

import numpy as np

from resnet_cifar import guards
from resnet_cifar.errors import DataError

IMAGE_SIZE = 32
IMAGE_DEPTH = 3
IMAGE_BYTES = IMAGE_SIZE * IMAGE_SIZE * IMAGE_DEPTH
PADDED_SIZE = IMAGE_SIZE + 4  # train-mode crops are taken from a 36x36 zero-padded image
LABEL_MODES = ('fine', 'coarse')

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data')

# One label of a record: its byte offset, its number of classes, and the file beside the
# records that names the classes, one per line (None: no names).
Labels = collections.namedtuple('Labels', ['offset', 'classes', 'names_file'])
# The classic recipe for CIFAR (ResNet-32 for 80,000 steps): the run_defaults of a dataset that names none.
CLASSIC_RUN = {'train_steps': 80000, 'num_residual_units': 5}
# Where scripts/download_cifar.py fetches a dataset: the archive's URL and MD5, the folder it
# unpacks to (in data/), and the train and test record files inside that folder.
Download = collections.namedtuple('Download', ['url', 'md5', 'folder', 'train_files', 'test_files'])


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Everything the suite knows about one dataset: one entry of the registry (register)."""
    name: str
    label_bytes: int                # label bytes before the image bytes of each record
    labels: dict                    # {label mode ('fine', 'coarse'): Labels}
    default_train_path: str         # comma-separated glob patterns: where its download puts it
    default_eval_path: str
    download_command: str           # how to get the default files (said when they are missing)
    random_flip: bool               # train-mode left-right flips: right for photos, wrong for digits
    top_5: bool = False             # eval also scores top-5 precision (says something with many classes)
    # The settings of a new run on it that the flags leave unset: train_steps and num_residual_units.
    run_defaults: dict = dataclasses.field(default_factory=lambda: dict(CLASSIC_RUN))
    download: Optional[Download] = None  # None: not fetched by scripts/download_cifar.py
    description: str = ''           # what --help says of it beside its name ('' for nothing)

    @property
    def record_bytes(self):
        return self.label_bytes + IMAGE_BYTES

    @property
    def label_modes(self):
        """The label modes this dataset's records carry ('fine' always)."""
        return tuple(mode for mode in LABEL_MODES if mode in self.labels)


_REGISTRY = {}


def register(info):
    """Adds a dataset to the registry; ValueError if the name is taken.

    config.json checks, input, eval and the download script take it by name from then on.
    The flags do not: resnet_main.py defines --dataset (its choices and help, from
    dataset_names() and described_names()) when it is imported, so a dataset registered
    after that is no --dataset value; an entry in this module is one everywhere."""
    if info.name in _REGISTRY:
        raise ValueError('dataset %r is registered already' % info.name)
    if 'fine' not in info.labels or not set(info.labels) <= set(LABEL_MODES):
        raise ValueError('dataset %r: labels must be of the modes %s, fine among them' % (info.name, LABEL_MODES))
    if set(info.run_defaults) != set(CLASSIC_RUN):
        raise ValueError('dataset %r: run_defaults must give %s, got %s'
                         % (info.name, ', '.join(sorted(CLASSIC_RUN)), ', '.join(sorted(info.run_defaults)) or 'none'))
    _REGISTRY[info.name] = info
    return info


def unregister(name):
    """Removes a dataset registered by `register` (tests, and tools that add one for a while)."""
    _REGISTRY.pop(name, None)


def dataset_names():
    """The names of the registered datasets, in the order they were registered."""
    return tuple(_REGISTRY)


def described_names():
    """'cifar10, cifar100, or digits (the bundled sample in data/digits-bin)': the registered
    datasets, each with its description, as --dataset's help lists them."""
    names = ['%s (%s)' % (name, info.description) if info.description else name
             for name, info in _REGISTRY.items()]
    return ' or '.join(names) if len(names) < 3 else '%s, or %s' % (', '.join(names[:-1]), names[-1])


def with_coarse_labels():
    """The names of the datasets whose records carry coarse labels too."""
    return tuple(name for name, info in _REGISTRY.items() if 'coarse' in info.labels)


_TORONTO = 'https://www.cs.toronto.edu/~kriz/'
register(DatasetInfo(
    'cifar10', 1, {'fine': Labels(0, 10, 'batches.meta.txt')},
    os.path.join(DATA_DIR, 'cifar-10-batches-bin', 'data_batch_*.bin'),
    os.path.join(DATA_DIR, 'cifar-10-batches-bin', 'test_batch.bin'),
    'python scripts/download_cifar.py --dataset=cifar10', True, 
    download=Download(_TORONTO + 'cifar-10-binary.tar.gz', 'c32a1d4ab5d03f1284b67883e8d87530',
                      'cifar-10-batches-bin', ['data_batch_%d.bin' % i for i in range(1, 6)], ['test_batch.bin'])))
register(DatasetInfo(
    'cifar100', 2,
    {'fine': Labels(1, 100, 'fine_label_names.txt'), 'coarse': Labels(0, 20, 'coarse_label_names.txt')},
    os.path.join(DATA_DIR, 'cifar-100-binary', 'train.bin'),
    os.path.join(DATA_DIR, 'cifar-100-binary', 'test.bin'),
    'python scripts/download_cifar.py --dataset=cifar100', True, top_5=True, 
    download=Download(_TORONTO + 'cifar-100-binary.tar.gz', '03b5dce01913d631647c71ecec9e9cb8',
                      'cifar-100-binary', ['train.bin'], ['test.bin'])))
register(DatasetInfo(
    'digits', 1, {'fine': Labels(0, 10, 'batches.meta.txt')},
    os.path.join(DATA_DIR, 'digits-bin', 'data_batch_1.bin'),
    os.path.join(DATA_DIR, 'digits-bin', 'test_batch.bin'),
    'python scripts/make_sample_data.py', False, run_defaults={'train_steps': 1000, 'num_residual_units': 2},
    description='the bundled sample in data/digits-bin'))


def dataset_info(dataset):
    """Returns the DatasetInfo of `dataset`, one of dataset_names()."""
    if not isinstance(dataset, str) or dataset not in _REGISTRY:
        raise DataError('unknown dataset %r; expected one of: %s' % (dataset, ', '.join(dataset_names())))
    return _REGISTRY[dataset]


def num_classes(dataset, label_mode='fine'):
    """Number of classes of `dataset` under `label_mode` ('fine' or 'coarse')."""
    return label_layout(dataset, label_mode).classes


def label_layout(dataset, label_mode):
    """The Labels of `dataset` under `label_mode`: byte offset in a record, classes, names file."""
    info = dataset_info(dataset)
    if label_mode not in LABEL_MODES:
        raise DataError('unknown label_mode %r; expected one of: %s' % (label_mode, ', '.join(LABEL_MODES)))
    if label_mode not in info.labels:
        raise DataError("label_mode '%s' needs a dataset with %s labels (%s); %s has only one label per record"
                        % (label_mode, label_mode, ', '.join(with_coarse_labels()), dataset))
    return info.labels[label_mode]


class _NoMatchError(DataError):
    """A data_path pattern matched no file."""


# ---------------------------------------------------------------- files (no graph)

def list_files(data_path):
    """Files matched by `data_path`: comma-separated glob patterns.

    Each pattern's matches are sorted; the patterns keep their order and a
    file matched twice is listed once. Raises DataError naming the pattern
    that matches nothing, or the directory or unreadable file matched.
    """
    if not isinstance(data_path, str) or not data_path.strip(', '):
        raise DataError('data_path %r is empty; expected comma-separated file patterns' % (data_path,))
    files = []
    for pattern in data_path.split(','):
        pattern = os.path.expanduser(pattern.strip())
        if not pattern:
            continue
        # A path that exists is itself, even when it holds glob characters such as '['.
        matches = [pattern] if os.path.exists(pattern) else sorted(glob.glob(pattern))
        if not matches:
            raise _NoMatchError('no file matches data_path pattern %r' % pattern)
        files.extend(f for f in matches if f not in files)
    for f in files:
        _check_readable(f)
    return files


def _check_readable(path):
    """DataError unless `path` is a regular file this process can open; a FIFO, a socket or a
    device is refused before it is opened (opening a FIFO waits for a writer, for ever)."""
    if os.path.isdir(path):
        raise DataError('%r is a directory; expected a record file (use a pattern such as %r)'
                        % (path, os.path.join(path, '*.bin')))
    try:
        with guards.open_regular(path, DataError, 'of records', shown=repr(path), binary=True):
            pass
    except OSError as e:
        raise DataError('cannot read record file %r: %s' % (path, e.strerror or e)) from None


def check_files(dataset, data_path):
    """Validates every file of `data_path`; returns [(file, number of records)].

    Raises DataError for: no match (with the download command when
    `data_path` is the dataset's default path), an empty file, or a file
    whose size is not a whole number of the dataset's records.
    """
    info = dataset_info(dataset)
    try:
        files = list_files(data_path)
    except _NoMatchError as e:
        if data_path in (info.default_train_path, info.default_eval_path):
            raise DataError('%s; the %s data is not there yet, get it with: %s'
                            % (e, dataset, info.download_command)) from None
        raise
    return [(f, _count_file_records(info, f)) for f in files]


def _count_file_records(info, path):
    size = os.path.getsize(path)
    if size == 0:
        raise DataError('record file %r is empty; expected %s records of %d bytes'
                        % (path, info.name, info.record_bytes))
    if size % info.record_bytes:
        others = [d.name for d in _REGISTRY.values() if d.record_bytes != info.record_bytes
                  and size % d.record_bytes == 0]
        hint = (' (its size fits %s records: wrong --dataset?)' % others[0]) if others else ''
        raise DataError('record file %r is %d bytes, not a whole number of %d-byte %s records: '
                        'truncated download, or another dataset\'s file%s'
                        % (path, size, info.record_bytes, info.name, hint))
    return size // info.record_bytes


def changed_file_error(dataset, checked):
    """A DataError for the first file of `checked` that changed since it was checked, or None.

    checked: [(file, number of records)] from check_files. A file that is gone,
    shrank, or no longer holds whole records changed; one that grew by whole
    records did not (its records are as good as the others). The reader threads
    would read such a file silently: they drop a partial record at a file's end.
    """
    info = dataset_info(dataset)
    for path, num_records in checked:
        then = num_records * info.record_bytes
        try:
            now = os.path.getsize(path)
        except OSError as e:
            return DataError('record file %r: %s; it was there when training started'
                             % (path, e.strerror or e))
        if now % info.record_bytes:
            return DataError('record file %r is %d bytes, not a whole number of %d-byte %s records: it '
                             'changed during training (%d bytes at the start)'
                             % (path, now, info.record_bytes, info.name, then))
        if now < then:
            return DataError('record file %r shrank to %d records during training (%d at the start)'
                             % (path, now // info.record_bytes, num_records))
    return None


def split_records(checked, validation_size):
    """The training and the validation records of files holding both: the last
    `validation_size` records, in the order of `checked`, are held out for validation.

    checked: [(file, number of records)] from check_files. Returns (training,
    validation), each [(file, first record, end record)] of the files with records
    in that part, in the same order; record indices count from 0 in each file and
    the end is exclusive. No file is copied: readers skip the other part's records.
    """
    total = sum(n for _, n in checked)
    if not 0 <= validation_size < total:
        raise DataError('cannot hold out %d of %d records for validation' % (validation_size, total))
    training, validation = [], []
    start = 0  # of each file, in records of all files
    for path, count in checked:
        cut = min(max(total - validation_size - start, 0), count)  # this file's training records
        if cut > 0:
            training.append((path, 0, cut))
        if cut < count:
            validation.append((path, cut, count))
        start += count
    return training, validation


def split_record(dataset, checked, validation_size):
    """What identifies a run's validation split exactly, as JSON-able values: the training
    files in order with their record counts, and the sha256 of each file's held-out records.

    checked: [(file, number of records)] from check_files. Reads only the held-out records.
    """
    _, validation = split_records(checked, validation_size)
    info = dataset_info(dataset)
    return {'validation_size': validation_size, 'files': [[path, count] for path, count in checked],
            'held_out': [[path, first, end, _records_digest(info, path, first, end)]
                         for path, first, end in validation]}


def split_moved_error(dataset, checked, record, source='the run'):
    """A DataError naming the first file of `checked` that would move the split of `record`
    (split_record's), or None when the same records are held out of the same number of records.

    A file added, gone, grown, shrunk or reordered changes the record counts; one rewritten
    with as many records changes the held-out digests. Files may have moved or been renamed:
    their names are not compared. source: where the record was read, for the message.
    """
    then = record['files']
    advice = 'restore the training files the run started with, or train a new run in another --log_root'
    for i in range(max(len(checked), len(then))):
        if i >= len(checked):
            return DataError("the run's validation split moved: record file %r (%d records) is not among the "
                             'training files any more (%s); %s' % (then[i][0], then[i][1], source, advice))
        path, count = checked[i]
        if i >= len(then):
            return DataError("the run's validation split moved: record file %r was not among the %d training "
                             'files when the split was made (%s); %s' % (path, len(then), source, advice))
        if count != then[i][1]:
            return DataError("the run's validation split moved: record file %r holds %d records, %d when the "
                             'split was made (%s); %s' % (path, count, then[i][1], source, advice))
    info = dataset_info(dataset)
    for (path, first, end), (_, _, _, digest) in zip(split_records(checked, record['validation_size'])[1],
                                                     record['held_out']):
        if _records_digest(info, path, first, end) != digest:
            return DataError("the run's validation split moved: record file %r was replaced or rewritten: its "
                             'records %d to %d, held out for validation, are not those the split was made with '
                             '(%s); %s' % (path, first, end - 1, source, advice))
    return None


def _records_digest(info, path, first, end):
    """sha256 (hex) of records [first, end) of a checked file."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        f.seek(first * info.record_bytes)
        remaining = (end - first) * info.record_bytes
        while remaining > 0:
            chunk = f.read(min(remaining, 1 << 20))
            if not chunk:
                raise DataError('record file %r ended before record %d; it changed while it was read' % (path, end))
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def count_records(dataset, data_path):
    """Total number of records in `data_path` (files are checked; no graph is built)."""
    return sum(n for _, n in check_files(dataset, data_path))


def _read_file(info, path):
    """uint8 [n, record_bytes] of one checked file."""
    return np.fromfile(path, dtype=np.uint8).reshape(-1, info.record_bytes)


def _images_of(records, label_bytes):
    """uint8 [n, 32, 32, 3] HWC from records [n, record_bytes]."""
    planes = records[:, label_bytes:].reshape(-1, IMAGE_DEPTH, IMAGE_SIZE, IMAGE_SIZE)
    return planes.transpose(0, 2, 3, 1)


def read_records(dataset, data_path, label_mode='fine'):
    """All records of `data_path` in file order, as numpy.

    Returns (images uint8 [N, 32, 32, 3] HWC, labels int64 [N]); labels are
    not range-checked here (record_summary does that).
    """
    info = dataset_info(dataset)
    offset = label_layout(dataset, label_mode).offset
    records = [_read_file(info, f) for f, _ in check_files(dataset, data_path)]
    records = np.concatenate(records, axis=0)
    return np.ascontiguousarray(_images_of(records, info.label_bytes)), records[:, offset].astype(np.int64)


def label_names(dataset, data_path, label_mode='fine'):
    """Class names from the dataset's names file (Labels.names_file: batches.meta.txt, or
    CIFAR-100's fine_label_names.txt or coarse_label_names.txt) beside the first file of
    `data_path`, or None. One name per non-empty line."""
    names_file = label_layout(dataset, label_mode).names_file
    meta_path = os.path.join(os.path.dirname(list_files(data_path)[0]), names_file or '')
    if not names_file or not os.path.isfile(meta_path):
        return None
    with open(meta_path) as f:
        return [line.strip() for line in f if line.strip()]


def record_summary(dataset, data_path, label_mode='fine'):
    """Counts and pixel statistics of `data_path`, read with numpy.

    Returns a dict: dataset, label_mode, files [(file, n)], num_records,
    class_counts (list, len num_classes), pixel_mean [3] and pixel_std [3]
    (R, G, B on the 0..255 scale), label_names (list or None). Raises
    DataError naming the file, record index and label of a label out of range.
    """
    info = dataset_info(dataset)
    offset, classes, _ = label_layout(dataset, label_mode)
    files = check_files(dataset, data_path)
    class_counts = np.zeros(classes, dtype=np.int64)
    pixel_sum = np.zeros(IMAGE_DEPTH)
    pixel_sq_sum = np.zeros(IMAGE_DEPTH)
    for path, _ in files:
        records = _read_file(info, path)
        labels = records[:, offset]
        bad = np.flatnonzero(labels >= classes)
        if bad.size:
            raise DataError('record file %r, record %d: label %d out of range; %s %s labels are 0..%d'
                            % (path, bad[0], labels[bad[0]], dataset, label_mode, classes - 1))
        class_counts += np.bincount(labels, minlength=classes)
        for start in range(0, len(records), 1000):  # chunks keep float64 copies small
            planes = records[start:start + 1000, info.label_bytes:].reshape(-1, IMAGE_DEPTH, IMAGE_SIZE ** 2)
            planes = planes.astype(np.float64)
            pixel_sum += planes.sum(axis=(0, 2))
            pixel_sq_sum += (planes ** 2).sum(axis=(0, 2))
    num_pixels = sum(n for _, n in files) * IMAGE_SIZE ** 2
    pixel_mean = pixel_sum / num_pixels
    pixel_std = np.sqrt(np.maximum(pixel_sq_sum / num_pixels - pixel_mean ** 2, 0.0))
    return {
        'dataset': dataset, 'label_mode': label_mode, 'files': files,
        'num_records': int(class_counts.sum()), 'class_counts': class_counts.tolist(),
        'pixel_mean': pixel_mean.tolist(), 'pixel_std': pixel_std.tolist(),
        'label_names': label_names(dataset, data_path, label_mode),
    }


def format_summary(summary):
    """Human-readable multi-line report of a record_summary dict."""
    counts = summary['class_counts']
    names = summary.get('label_names') or []
    lines = ['dataset: %s (%s labels, %d classes)'
             % (summary.get('dataset', '?'), summary.get('label_mode', 'fine'), len(counts)),
             'files:']
    lines += ['  %s: %d records' % (f, n) for f, n in summary['files']]
    lines.append('records: %d' % summary['num_records'])
    lines.append('records per class:')
    for c, count in enumerate(counts):
        name = (' %s' % names[c]) if c < len(names) else ''
        lines.append('  %3d%-16s %d' % (c, name, count))
    lines.append('pixel mean (R, G, B): %s' % ' '.join('%.2f' % m for m in summary['pixel_mean']))
    lines.append('pixel std  (R, G, B): %s' % ' '.join('%.2f' % s for s in summary['pixel_std']))
    return '\n'.join(lines)
