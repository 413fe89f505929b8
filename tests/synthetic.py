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


def learnable_images(labels, num_classes=10, seed=0):
    """Images whose class decides their colour and pattern, plus noise.

    Class c gets a distinct base colour and a stripe pattern whose direction and
    period depend on c, so even a tiny network separates the classes after a few
    hundred steps, with crops and flips applied.

    Returns uint8 [len(labels), 32, 32, 3].
    """
    rng = np.random.RandomState(seed)
    labels = np.asarray(labels)
    n = labels.shape[0]
    hues = np.linspace(0.0, 1.0, num_classes, endpoint=False)
    yy, xx = np.mgrid[0:32, 0:32]
    images = np.empty((n, 32, 32, 3), dtype=np.float32)
    for i, c in enumerate(labels):
        h = hues[c]
        colour = 127.5 + 100.0 * np.array(
            [np.cos(2 * np.pi * h), np.cos(2 * np.pi * (h + 1 / 3.)), np.cos(2 * np.pi * (h + 2 / 3.))])
        period = 4 + (c % 3) * 3
        stripes = (yy if c % 2 == 0 else xx) // (period // 2) % 2
        pattern = (stripes * 2.0 - 1.0) * 40.0
        images[i] = colour[None, None, :] + pattern[:, :, None]
    images += rng.normal(0.0, 12.0, size=images.shape)
    return np.clip(images, 0, 255).astype(np.uint8)


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
