"""What each dataset's records look like and where they are; no TensorFlow.

CIFAR-10 (and the bundled 'digits' sample): 1 label byte, then 3,072 image
bytes. CIFAR-100: 1 coarse-label byte, 1 fine-label byte, then the image.
"""
import collections
import os

from resnet_cifar.errors import DataError

IMAGE_SIZE = 32
IMAGE_DEPTH = 3
IMAGE_BYTES = IMAGE_SIZE * IMAGE_SIZE * IMAGE_DEPTH
PADDED_SIZE = IMAGE_SIZE + 4  # train-mode crops are taken from a 36x36 zero-padded image
LABEL_MODES = ('fine', 'coarse')

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data')
DATASET_NAMES = ('cifar10', 'cifar100', 'digits')

DatasetInfo = collections.namedtuple('DatasetInfo', [
    'name', 'label_bytes', 'record_bytes', 'num_fine_classes',
    'num_coarse_classes',  # None for single-label datasets
    'default_train_path', 'default_eval_path', 'download_command',
    'random_flip',  # train-mode left-right flips: right for photos, wrong for digits
])

_DATASETS = {
    'cifar10': DatasetInfo(
        'cifar10', 1, 1 + IMAGE_BYTES, 10, None,
        os.path.join(DATA_DIR, 'cifar-10-batches-bin', 'data_batch_*.bin'),
        os.path.join(DATA_DIR, 'cifar-10-batches-bin', 'test_batch.bin'),
        'python scripts/download_cifar.py --dataset=cifar10', True),
    'cifar100': DatasetInfo(
        'cifar100', 2, 2 + IMAGE_BYTES, 100, 20,
        os.path.join(DATA_DIR, 'cifar-100-binary', 'train.bin'),
        os.path.join(DATA_DIR, 'cifar-100-binary', 'test.bin'),
        'python scripts/download_cifar.py --dataset=cifar100', True),
    'digits': DatasetInfo(
        'digits', 1, 1 + IMAGE_BYTES, 10, None,
        os.path.join(DATA_DIR, 'digits-bin', 'data_batch_1.bin'),
        os.path.join(DATA_DIR, 'digits-bin', 'test_batch.bin'),
        'python scripts/make_sample_data.py', False),
}


def dataset_info(dataset):
    """Returns the DatasetInfo of `dataset`, one of DATASET_NAMES."""
    if not isinstance(dataset, str) or dataset not in _DATASETS:
        raise DataError('unknown dataset %r; expected one of: %s' % (dataset, ', '.join(DATASET_NAMES)))
    return _DATASETS[dataset]


def num_classes(dataset, label_mode='fine'):
    """Number of classes of `dataset` under `label_mode` ('fine' or 'coarse')."""
    return _label_layout(dataset, label_mode)[1]


def _label_layout(dataset, label_mode):
    """(byte offset of the label in a record, number of classes)."""
    info = dataset_info(dataset)
    if label_mode not in LABEL_MODES:
        raise DataError('unknown label_mode %r; expected one of: %s' % (label_mode, ', '.join(LABEL_MODES)))
    if label_mode == 'fine':
        return info.label_bytes - 1, info.num_fine_classes
    if info.num_coarse_classes is None:
        raise DataError("label_mode 'coarse' needs a dataset with coarse labels (cifar100); "
                        '%s has only one label per record' % dataset)
    return 0, info.num_coarse_classes
