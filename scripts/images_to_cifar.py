#!/usr/bin/env python3
"""Converts labelled images into CIFAR-10-layout binary files, ready for training.

    python scripts/images_to_cifar.py --input=my_photos/ --output_dir=data/my-photos-bin
    python scripts/images_to_cifar.py --input=arrays.npz --output_dir=data/my-arrays-bin

--input is either
  * a folder with one subfolder per class (class names sorted give labels
    0..K-1; files may sit in nested folders below a class folder), or
  * an .npz with `images` (uint8 [N, H, W, 3], [N, H, W, 1|4] or [N, H, W])
    and `labels` (integers [N], 0..255), optionally `label_names` (strings [K]).

Images are decoded (PNG, JPEG, GIF first frame, BMP) and resized to 32x32
with TensorFlow (bilinear, antialiased; the aspect ratio is not kept).
Grayscale becomes 3 equal channels, alpha is dropped. Files that do not decode
are listed on stderr and counted in the report; all others are converted.

--output_dir receives data_batch_1.bin (train), test_batch.bin (test) and
batches.meta.txt (one class name per line), as CIFAR-10 ships them. The split
is a seeded shuffle, stratified per class, so it is the same on every run.
"""
import argparse
import os
import sys
import zipfile

import numpy as np

os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow as tf  # noqa: E402  (after the environment it reads)


import cifar_input  # noqa: E402

IMAGE_SIZE = 32
MAX_CLASSES = 256  # the label is one byte
TRAIN_FILE = 'data_batch_1.bin'
TEST_FILE = 'test_batch.bin'
META_FILE = 'batches.meta.txt'
RESIZE_BATCH = 1024


class ConversionError(Exception):
    """A failure reported to the user as one `error: ...` line."""


def _to_rgb(image):
    """uint8 [H, W, C] with C in 1..4 -> uint8 [H, W, 3]: grey is repeated, alpha dropped."""
    channels = image.shape[-1]
    if channels in (1, 2):
        return tf.image.grayscale_to_rgb(image[:, :, :1])
    if channels == 4:
        return image[:, :, :3]
    return image


def _resize(images):
    """uint8 [N, H, W, 3] -> uint8 [N, 32, 32, 3]; no-op when already 32x32."""
    if images.shape[1] == IMAGE_SIZE and images.shape[2] == IMAGE_SIZE:
        return np.asarray(images, dtype=np.uint8)
    resized = tf.image.resize(tf.cast(images, tf.float32), [IMAGE_SIZE, IMAGE_SIZE],
                              method='bilinear', antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8).numpy()


def decode_file(path):
    """Decodes one image file to uint8 [32, 32, 3]; returns None when it does not decode."""
    try:
        with open(path, 'rb') as f:
            contents = f.read()
        image = tf.io.decode_image(contents, expand_animations=False)
    except (OSError, tf.errors.OpError):
        return None
    if image.shape.rank != 3 or image.shape[-1] not in (1, 2, 3, 4) or 0 in image.shape:
        return None
    return _resize(_to_rgb(image)[None].numpy())[0]


def list_class_files(folder):
    """Class names (sorted subfolders) and the sorted files of each, hidden entries excluded.

    Returns (class names [K], [(path, label)]).
    """
    names = sorted(entry.name for entry in os.scandir(folder)
                   if entry.is_dir() and not entry.name.startswith('.'))
    if not names:
        raise ConversionError('--input=%s: no class subfolders; expected one subfolder per class '
                              '(or an .npz file)' % folder)
    if len(names) > MAX_CLASSES:
        raise ConversionError('--input=%s: %d class subfolders; at most %d fit the one-byte label'
                              % (folder, len(names), MAX_CLASSES))
    files = []
    for label, name in enumerate(names):
        for root, dirs, filenames in os.walk(os.path.join(folder, name)):
            dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
            files.extend((os.path.join(root, f), label)
                         for f in sorted(filenames) if not f.startswith('.'))
    return names, files


def read_folder(folder):
    """Decodes a class-per-subfolder tree.

    Returns (uint8 [N, 32, 32, 3], int64 [N] labels, class names, unreadable paths).
    """
    names, files = list_class_files(folder)
    images, labels, unreadable = [], [], []
    for path, label in files:
        image = decode_file(path)
        if image is None:
            unreadable.append(path)
        else:
            images.append(image)
            labels.append(label)
    if not images:
        raise ConversionError('--input=%s: none of its %d files decodes as an image'
                              % (folder, len(files)))
    return np.stack(images), np.asarray(labels, dtype=np.int64), names, unreadable


def _npz_images(path, images):
    if images.dtype != np.uint8:
        raise ConversionError('%s: images have dtype %s; expected uint8' % (path, images.dtype))
    if images.ndim == 3:
        images = images[:, :, :, None]
    if images.ndim != 4 or images.shape[-1] not in (1, 2, 3, 4) or 0 in images.shape:
        raise ConversionError('%s: images have shape %s; expected [N, H, W, 3], [N, H, W, 1|4] '
                              'or [N, H, W]' % (path, list(images.shape)))
    if images.shape[-1] in (1, 2):
        images = np.repeat(images[:, :, :, :1], 3, axis=3)
    images = images[:, :, :, :3]
    return np.concatenate([_resize(images[i:i + RESIZE_BATCH])
                           for i in range(0, len(images), RESIZE_BATCH)])


def _npz_labels(path, labels, num_images):
    if num_images == 0 or labels.size == 0:
        raise ConversionError('%s: no images; expected at least one' % path)
    if labels.ndim != 1 or len(labels) != num_images:
        raise ConversionError('%s: labels have shape %s; expected [%d], one per image'
                              % (path, list(labels.shape), num_images))
    if not np.issubdtype(labels.dtype, np.integer):
        raise ConversionError('%s: labels have dtype %s; expected integers' % (path, labels.dtype))
    if labels.min() < 0 or labels.max() >= MAX_CLASSES:
        raise ConversionError('%s: labels range %d..%d; expected 0..%d (one byte)'
                              % (path, labels.min(), labels.max(), MAX_CLASSES - 1))
    return labels.astype(np.int64)


def read_npz(path):
    """Reads an .npz with `images`, `labels` and optional `label_names`.

    Returns (uint8 [N, 32, 32, 3], int64 [N] labels, class names, []).
    """
    if not zipfile.is_zipfile(path):
        raise ConversionError('--input=%s: not an .npz file (a zip of arrays) nor a folder' % path)
    try:
        with np.load(path, allow_pickle=False) as arrays:
            contents = {key: arrays[key] for key in arrays.files}
    except (OSError, ValueError) as e:
        raise ConversionError('--input=%s: cannot read it as .npz: %s' % (path, ' '.join(str(e).split())))
    missing = [key for key in ('images', 'labels') if key not in contents]
    if missing:
        raise ConversionError('%s: no %s array; expected `images` and `labels` (found: %s)'
                              % (path, ' or '.join(missing), ', '.join(sorted(contents)) or 'none'))
    images = contents['images']
    labels = _npz_labels(path, contents['labels'], len(images))
    images = _npz_images(path, images)
    num_classes = int(labels.max()) + 1
    if 'label_names' in contents:
        names = [name.decode('utf-8') if isinstance(name, bytes) else str(name)
                 for name in contents['label_names'].reshape(-1)]
        if len(names) < num_classes:
            raise ConversionError('%s: %d label_names for labels up to %d; expected at least %d'
                                  % (path, len(names), num_classes - 1, num_classes))
    else:
        names = [str(label) for label in range(num_classes)]
    return images, labels, names, []


def split_indices(labels, test_fraction, seed):
    """Stratified seeded split: per class, round(count * test_fraction) images go to test.

    Returns (train indices, test indices), each shuffled.
    """
    rng = np.random.RandomState(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        num_test = int(np.floor(len(members) * test_fraction + 0.5))
        test.append(members[:num_test])
        train.append(members[num_test:])
    train, test = np.concatenate(train), np.concatenate(test)
    if len(train) == 0 or len(test) == 0:
        raise ConversionError('--test_fraction=%g: with %d images the %s split would be empty'
                              % (test_fraction, len(labels), 'train' if len(train) == 0 else 'test'))
    return rng.permutation(train), rng.permutation(test)


def encode_records(images, labels):
    """CIFAR-10 records: per image, the label byte then the R, G, B planes (row-major 32x32)."""
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return np.concatenate([labels.astype(np.uint8)[:, None], planes], axis=1).tobytes()


def _write_atomically(path, data):
    temporary = path + '.part'
    with open(temporary, 'wb') as f:
        f.write(data)
    os.replace(temporary, path)


def write_dataset(output_dir, images, labels, names, train, test):
    """Writes the train/test record files and batches.meta.txt. Returns (train path, test path)."""
    for name in names:
        if '\n' in name or '\r' in name:
            raise ConversionError('class name %r contains a line break; batches.meta.txt holds one '
                                  'name per line' % name)
    os.makedirs(output_dir, exist_ok=True)
    train_path = os.path.join(output_dir, TRAIN_FILE)
    test_path = os.path.join(output_dir, TEST_FILE)
    _write_atomically(train_path, encode_records(images[train], labels[train]))
    _write_atomically(test_path, encode_records(images[test], labels[test]))
    _write_atomically(os.path.join(output_dir, META_FILE),
                      ''.join(name + '\n' for name in names).encode('utf-8'))
    return train_path, test_path


def report_unreadable(unreadable):
    if unreadable:
        print('skipped %d unreadable images:' % len(unreadable), file=sys.stderr)
        for path in unreadable:
            print('  %s' % path, file=sys.stderr)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split('\n\n', 2)[2])
    parser.add_argument('--input', required=True,
                        help='folder with one subfolder per class, or an .npz with images/labels')
    parser.add_argument('--output_dir', required=True, help='folder that receives the CIFAR files')
    parser.add_argument('--test_fraction', type=float, default=0.2,
                        help='fraction of each class written to test_batch.bin (default %(default)s)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the split (default %(default)s)')
    args = parser.parse_args(argv)
    if not 0.0 < args.test_fraction < 1.0:
        parser.error('--test_fraction=%g: expected a number strictly between 0 and 1'
                     % args.test_fraction)
    return args


def convert(input_path, output_dir, test_fraction, seed):
    """Reads, splits, writes and re-checks the records. Returns the final report (text)."""
    if os.path.isdir(input_path):
        images, labels, names, unreadable = read_folder(input_path)
    elif os.path.isfile(input_path):
        images, labels, names, unreadable = read_npz(input_path)
    else:
        raise ConversionError('--input=%s: no such folder or file' % input_path)
    report_unreadable(unreadable)
    train, test = split_indices(labels, test_fraction, seed)
    paths = write_dataset(output_dir, images, labels, names, train, test)
    # The input module's record check on what was written: layout and counts.
    counts = [cifar_input.count_records('cifar10', path) for path in paths]
    lines = ['converted %d images of %d classes from %s; skipped %d unreadable'
             % (len(labels), len(names), input_path, len(unreadable))]
    lines += ['%s: %d records' % (path, count) for path, count in zip(paths, counts)]
    lines.append(format_report(names, labels, train, test))
    lines.append('train on it with: python resnet_main.py --dataset=cifar10 --train_data_path=%s '
                 '--eval_data_path=%s' % paths)
    if len(names) > cifar_input.num_classes('cifar10'):
        lines.append('note: %d classes; training with --dataset=cifar10 accepts labels 0..%d only'
                     % (len(names), cifar_input.num_classes('cifar10') - 1))
    return '\n'.join(lines)


def format_report(names, labels, train, test):
    """Per-class table of train and test counts, with the class names."""
    train_counts = np.bincount(labels[train], minlength=len(names))
    test_counts = np.bincount(labels[test], minlength=len(names))
    width = max(len(name) for name in names)
    lines = ['  label  %-*s  train  test' % (width, 'name')]
    lines += ['  %5d  %-*s  %5d  %4d' % (label, width, name, train_counts[label], test_counts[label])
              for label, name in enumerate(names)]
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    try:
        report = convert(args.input, args.output_dir, args.test_fraction, args.seed)
    except (ConversionError, cifar_input.DataError) as e:
        print('error: %s' % e, file=sys.stderr)
        return 1
    except OSError as e:
        print('error: --output_dir=%s: %s' % (args.output_dir, e.strerror or e), file=sys.stderr)
        return 1
    print(report)
    return 0


if __name__ == '__main__':
    sys.exit(main())
