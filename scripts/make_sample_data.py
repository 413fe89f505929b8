#!/usr/bin/env python3
"""Regenerates the bundled sample data set, data/digits-bin/, from scikit-learn's digits.

    pip install -e '.[sample]'          # scikit-learn, needed by this script only
    python scripts/make_sample_data.py  # rewrites data/digits-bin/

The 1,797 8x8 handwritten digits that scikit-learn ships (grey levels 0..16,
ink high) are scaled to 0..255, upsampled to 32x32 with bilinear
interpolation (half-pixel centres, computed in float64 with numpy), copied to
3 identical channels, and split by a seeded shuffle into 1,497 training and
300 test images (30 of each digit). The output is CIFAR-10 binary layout: data_batch_1.bin,
test_batch.bin and batches.meta.txt (the names zero..nine).

Everything is deterministic: running it twice writes byte-identical files.
"""
import argparse
import os
import sys

import numpy as np

os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


LABEL_NAMES = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine')
IMAGE_SIZE = 32
DEFAULT_NUM_TEST = 300
DEFAULT_SEED = 0
DIGITS_MAX_LEVEL = 16.0


def load_digits():
    """scikit-learn's digits: (float64 [1797, 8, 8] grey levels 0..16, int64 [1797] labels 0..9)."""
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError:
        raise SystemExit("error: scikit-learn is not installed; it is needed only by this script: "
                         "pip install -e '.[sample]' (or pip install scikit-learn)")
    digits = sklearn_load_digits()
    return np.asarray(digits.images, dtype=np.float64), np.asarray(digits.target, dtype=np.int64)


def bilinear_matrix(in_size, out_size):
    """float64 [out_size, in_size]: row i holds the bilinear weights of output pixel i.

    Half-pixel centres: output pixel i samples input coordinate
    (i + 0.5) * in_size / out_size - 0.5, clamped to the image.
    """
    coords = (np.arange(out_size) + 0.5) * in_size / out_size - 0.5
    coords = np.clip(coords, 0.0, in_size - 1)
    lower = np.floor(coords).astype(np.int64)
    upper = np.minimum(lower + 1, in_size - 1)
    frac = coords - lower
    weights = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    np.add.at(weights, (rows, lower), 1.0 - frac)
    np.add.at(weights, (rows, upper), frac)
    return weights


def to_cifar_images(digit_images):
    """float64 [N, 8, 8] levels 0..16 -> uint8 [N, 32, 32, 3], three identical channels."""
    scaled = digit_images * (255.0 / DIGITS_MAX_LEVEL)
    rows = bilinear_matrix(scaled.shape[1], IMAGE_SIZE)
    cols = bilinear_matrix(scaled.shape[2], IMAGE_SIZE)
    upsampled = np.matmul(np.matmul(rows, scaled), cols.T)  # [32, 8] @ [N, 8, 8] @ [8, 32]
    grey = np.clip(np.floor(upsampled + 0.5), 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, :, None], 3, axis=3)


def encode_records(images, labels):
    """CIFAR-10 records: per image, the label byte then the R, G, B planes (row-major 32x32)."""
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return np.concatenate([labels.astype(np.uint8)[:, None], planes], axis=1).tobytes()


def split(labels, num_test, seed):
    """Seeded split, stratified: each class gives num_test // K test images (the first
    num_test % K classes one more). Returns (train indices, test indices), each shuffled.
    """
    rng = np.random.RandomState(seed)
    classes = np.unique(labels)
    train, test = [], []
    for rank, label in enumerate(classes):
        members = rng.permutation(np.flatnonzero(labels == label))
        take = num_test // len(classes) + (1 if rank < num_test % len(classes) else 0)
        test.append(members[:take])
        train.append(members[take:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def write_sample(output_dir, num_test=DEFAULT_NUM_TEST, seed=DEFAULT_SEED):
    """Writes data_batch_1.bin, test_batch.bin, batches.meta.txt. Returns (train path, test path)."""
    digit_images, labels = load_digits()
    if not 0 < num_test < len(labels):
        raise SystemExit('error: --num_test=%d: expected 1..%d' % (num_test, len(labels) - 1))
    images = to_cifar_images(digit_images)
    train, test = split(labels, num_test, seed)
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    for name, indices in (('data_batch_1.bin', train), ('test_batch.bin', test)):
        path = os.path.join(output_dir, name)
        with open(path, 'wb') as f:
            f.write(encode_records(images[indices], labels[indices]))
        paths.append(path)
    with open(os.path.join(output_dir, 'batches.meta.txt'), 'w') as f:
        f.write(''.join(name + '\n' for name in LABEL_NAMES))
    return tuple(paths)


def main(argv=None):
    import cifar_input
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--output_dir', default=os.path.join(cifar_input.DATA_DIR, 'digits-bin'),
                        help='folder to write (default: the repo\'s data/digits-bin)')
    parser.add_argument('--num_test', type=int, default=DEFAULT_NUM_TEST,
                        help='images in test_batch.bin (default %(default)s); the rest train')
    parser.add_argument('--seed', type=int, default=DEFAULT_SEED,
                        help='seed of the train/test permutation (default %(default)s)')
    args = parser.parse_args(argv)
    for name, path in zip(('train', 'test'), write_sample(args.output_dir, args.num_test, args.seed)):
        print('== %s: %s' % (name, path))
        print(cifar_input.format_summary(cifar_input.record_summary('digits', path)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
