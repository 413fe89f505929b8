"""Small CIFAR-layout record files that tests write with numpy.

Images are uint8 [N, 32, 32, 3] (HWC); on disk each record is the label
byte(s) followed by the red, green and blue planes, each 32x32 row-major,
exactly as the CIFAR binary distribution stores them.
"""
import numpy as np


def encode_records(images, labels, coarse_labels=None):
    """Returns the bytes of CIFAR records.

    Args:
      images: uint8 array [N, 32, 32, 3].
      labels: int array [N]; the CIFAR-10 label, or the CIFAR-100 fine label.
      coarse_labels: int array [N] for CIFAR-100 records (coarse byte first),
        or None for CIFAR-10 records.
    """
    images = np.asarray(images, dtype=np.uint8)
    n = images.shape[0]
    planes = images.transpose(0, 3, 1, 2).reshape(n, 3072)
    columns = [np.asarray(labels, dtype=np.uint8).reshape(n, 1), planes]
    if coarse_labels is not None:
        columns.insert(0, np.asarray(coarse_labels, dtype=np.uint8).reshape(n, 1))
    return np.concatenate(columns, axis=1).tobytes()


def write_records(path, images, labels, coarse_labels=None):
    """Writes CIFAR records to `path` and returns the path as a string."""
    with open(path, 'wb') as f:
        f.write(encode_records(images, labels, coarse_labels))
    return str(path)


def random_images(n, seed=0):
    """uint8 [n, 32, 32, 3] of uniform noise."""
    return np.random.RandomState(seed).randint(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


# The class patterns of learnable_images. Each is a function of the pixel coordinates
# (yy, xx), a random phase and a random sign, with the values +1 and -1 on exactly half
# of the 32x32 pixels each (every period divides 32), so every class has the same
# histogram of pixel values: only the arrangement of the pixels differs. Each pattern
# looks the same (up to its phase) after a shift, as a random crop makes, and after a
# left-right flip: stripes and checkerboards are symmetric, and a diagonal stripe
# flips into the other diagonal, which the class draws with the same chance.
def _stripes(axis, period):
    def pattern(yy, xx, phase, sign):
        return ((yy, xx)[axis] + phase) // (period // 2) % 2
    return pattern


def _checkerboard(cell):
    def pattern(yy, xx, phase, sign):
        return ((yy + phase) // cell + (xx + 3 * phase) // cell) % 2
    return pattern


def _diagonal(period):
    def pattern(yy, xx, phase, sign):
        return ((yy + sign * xx) % period + phase) % period // (period // 2)
    return pattern


_PATTERNS = (
    _stripes(0, 2), _stripes(1, 2),        # 1-pixel rows, columns
    _stripes(0, 4), _stripes(1, 4),
    _stripes(0, 8), _stripes(1, 8),
    _checkerboard(1), _checkerboard(2), _checkerboard(4),
    _diagonal(4),
)
MAX_LEARNABLE_CLASSES = len(_PATTERNS)

# Every class: this colour, the pattern at this contrast, and pixel noise.
_COLOUR = np.array([140.0, 120.0, 100.0])
_CONTRAST = 40.0
_NOISE = 12.0


def learnable_images(labels, num_classes=10, seed=0):
    """Images whose class decides only their spatial pattern, plus noise.

    Class c is one texture: rows or columns of period 2, 4 or 8 pixels,
    checkerboards of 1, 2 or 4-pixel cells, or diagonal stripes (either
    diagonal, at random), at a random phase. Every class has the same colour and
    contrast: each pattern is +-40 grey levels on exactly half of the pixels
    around one base colour, plus Gaussian noise (std 12), so the per-channel
    means and standard deviations say nothing about the class, even after
    per-image standardization. The textures survive random 32x32 crops of the
    4-pixel padded image and left-right flips; a tiny network separates them
    after a few dozen steps.

    num_classes: at most MAX_LEARNABLE_CLASSES (10); classes beyond num_classes
    in `labels` are an error.

    Returns uint8 [len(labels), 32, 32, 3].
    """
    labels = np.asarray(labels)
    if not 1 <= num_classes <= MAX_LEARNABLE_CLASSES:
        raise ValueError('num_classes must be in 1..%d; got %r' % (MAX_LEARNABLE_CLASSES, num_classes))
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError('labels must be in 0..%d' % (num_classes - 1))
    rng = np.random.RandomState(seed)
    n = labels.shape[0]
    yy, xx = np.mgrid[0:32, 0:32]
    images = np.empty((n, 32, 32, 3), dtype=np.float32)
    for i, c in enumerate(labels):
        phase, sign = rng.randint(0, 8), rng.choice([-1, 1])
        pattern = _PATTERNS[c](yy, xx, phase, sign) * 2.0 - 1.0
        images[i] = _COLOUR + _CONTRAST * pattern[:, :, None]
    images += rng.normal(0.0, _NOISE, size=images.shape)
    return np.clip(np.round(images), 0, 255).astype(np.uint8)


def write_learnable_dataset(directory, num_train=1000, num_test=200, num_classes=10, seed=0):
    """Writes train.bin and test.bin of learnable CIFAR-10-layout records.

    Returns (train_path, test_path).
    """
    import os
    rng = np.random.RandomState(seed)
    train_labels = rng.randint(0, num_classes, size=num_train)
    test_labels = rng.randint(0, num_classes, size=num_test)
    train_path = write_records(os.path.join(str(directory), 'train.bin'),
                               learnable_images(train_labels, num_classes, seed + 1), train_labels)
    test_path = write_records(os.path.join(str(directory), 'test.bin'),
                              learnable_images(test_labels, num_classes, seed + 2), test_labels)
    return train_path, test_path


def tiny_hps(**overrides):
    """resnet_model.HParams of a ResNet-8 (one unit per stage) at batch 32, 10 classes, with the
    classic recipe's other values; `overrides` replace any field."""
    import resnet_model
    fields = dict(batch_size=32, num_classes=10, min_lrn_rate=0.0001, lrn_rate=0.1, num_residual_units=1,
                  use_bottleneck=False, weight_decay_rate=0.0002, relu_leakiness=0.1, optimizer='mom')
    fields.update(overrides)
    return resnet_model.HParams(**fields)


def write_bad_label_file(directory, n=40, bad_index=5, bad_label=12):
    """<directory>/bad.bin: n CIFAR-10 records of noise whose record `bad_index` has label
    `bad_label` (out of range from 10 on); returns the path."""
    import os
    labels = np.arange(n) % 10
    labels[bad_index] = bad_label
    return write_records(os.path.join(str(directory), 'bad.bin'), random_images(n), labels)


def build_model(hps, mode, images=None, labels=None):
    """A one-device resnet_model.ResNet (build_graph) in the default graph; float32 placeholders
    [None, 32, 32, 3] and [None, num_classes] unless tensors are given."""
    import resnet_model
    import tensorflow as tf
    if images is None:
        images = tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3], name='images')
    if labels is None:
        labels = tf.compat.v1.placeholder(tf.float32, [None, hps.num_classes], name='labels')
    model = resnet_model.ResNet(hps, images, labels, mode)
    model.build_graph()
    return model


def global_variable(name):
    """The global variable called `name` (op name) in the default graph; exactly one."""
    import tensorflow as tf
    matches = [v for v in tf.compat.v1.global_variables() if v.op.name == name]
    assert len(matches) == 1, name
    return matches[0]
