"""The learnable synthetic data: only spatial patterns tell its classes apart.

Each check looks at the images as the network sees them: written as CIFAR-10 records,
read back by the real input pipeline in train mode (random crops of the padded image,
left-right flips, per-image standardization), with the reader threads stopped through
a Coordinator.
"""
import numpy as np
import pytest
import tensorflow as tf
from sklearn.linear_model import LogisticRegression

import cifar_input
import synthetic

NUM_CLASSES = 10
NUM_IMAGES = 1000  # per set; chance is 10%, and its standard error 1% at this size


def pipeline_images(path, count, seed):
    """`count` (images, labels) of the train-mode input pipeline over the records in `path`."""
    with tf.Graph().as_default():
        images, labels = cifar_input.build_input('cifar10', path, 100, 'train', num_threads=1,
                                                 seed=seed)
        with tf.compat.v1.Session() as session:
            with cifar_input.running_queues(session):
                batches = [session.run([images, labels]) for _ in range(count // 100)]
    return (np.concatenate([b[0] for b in batches]),
            np.concatenate([np.argmax(b[1], 1) for b in batches]))


@pytest.fixture(scope='module')
def augmented(tmp_path_factory):
    """((train images, labels), (held-out images, labels)) through the input pipeline."""
    train_path, test_path = synthetic.write_learnable_dataset(
        tmp_path_factory.mktemp('learnable'), num_train=NUM_IMAGES, num_test=NUM_IMAGES)
    return pipeline_images(train_path, NUM_IMAGES, seed=1), pipeline_images(test_path, NUM_IMAGES, seed=2)


def colour_statistics(images):
    """Per image: the mean and standard deviation of each channel, [N, 6]."""
    images = np.asarray(images, np.float64)
    return np.concatenate([images.mean(axis=(1, 2)), images.std(axis=(1, 2))], axis=1)


def spectrum(images):
    """Per image: the magnitude of the 2-D Fourier transform of its grey image at the
    frequencies 0..16 along each axis (the rest mirror them), [N, 289]. It ignores where
    a pattern starts (its phase), and so a crop's shift."""
    grey = np.asarray(images, np.float64).mean(axis=3)
    return np.abs(np.fft.fft2(grey))[:, :17, :17].reshape(len(grey), -1)


def logistic_precision(features, train, test):
    """Precision on `test` of a logistic regression fitted on `train`, both seeing `features`."""
    scale = features(train[0]).std(axis=0) + 1e-9
    classifier = LogisticRegression(max_iter=2000)
    classifier.fit(features(train[0]) / scale, train[1])
    return classifier.score(features(test[0]) / scale, test[1])


def nearest_mean_precision(features, train, test):
    """Precision on `test` of the nearest class mean of `train`, both seeing `features`."""
    seen = features(train[0])
    scale = seen.std(axis=0) + 1e-9
    means = np.stack([seen[train[1] == c].mean(axis=0) for c in range(NUM_CLASSES)]) / scale
    distances = ((features(test[0])[:, None, :] / scale - means[None]) ** 2).sum(axis=2)
    return np.mean(np.argmin(distances, axis=1) == test[1])


@pytest.mark.timeout(120)
def test_every_class_has_the_same_colour_statistics():
    labels = np.repeat(np.arange(NUM_CLASSES), 100)
    images = synthetic.learnable_images(labels, NUM_CLASSES, seed=3)
    assert images.shape == (1000, 32, 32, 3) and images.dtype == np.uint8
    stats = colour_statistics(images).reshape(NUM_CLASSES, 100, 6)
    # Class means of the channel means and stds: the noise moves a mean of 1,024 pixels
    # by 12/32 = 0.4 grey levels per image, 0.04 over 100 images.
    per_class = stats.mean(axis=1)
    spread = per_class.max(axis=0) - per_class.min(axis=0)
    assert np.all(spread < 0.5), per_class
    # ... and image by image, not only on average.
    assert np.all(stats[..., :3].std(axis=1) < 1.0), stats[..., :3].std(axis=1)
    assert stats[..., 3:].min() > 35, 'every image has the full contrast'


@pytest.mark.timeout(120)
def test_channel_statistics_stay_at_chance_but_the_spatial_pattern_is_learnable(augmented):
    train, test = augmented
    assert train[0].shape == (NUM_IMAGES, 32, 32, 3)
    assert np.bincount(train[1], minlength=NUM_CLASSES).min() > 50
    # Per-channel means and stds of the augmented, standardized images: chance (10%).
    colour = logistic_precision(colour_statistics, train, test)
    assert colour < 0.2, colour
    colour = nearest_mean_precision(colour_statistics, train, test)
    assert colour < 0.2, colour
    # The same classifier on a shift-invariant view of the pixels separates the classes.
    spatial = logistic_precision(spectrum, train, test)
    assert spatial > 0.9, spatial


@pytest.mark.timeout(60)
def test_learnable_images_are_seeded_and_check_their_labels():
    labels = np.arange(NUM_CLASSES)
    first = synthetic.learnable_images(labels, NUM_CLASSES, seed=4)
    np.testing.assert_array_equal(first, synthetic.learnable_images(labels, NUM_CLASSES, seed=4))
    assert not np.array_equal(first, synthetic.learnable_images(labels, NUM_CLASSES, seed=5))
    with pytest.raises(ValueError, match='labels'):
        synthetic.learnable_images([0, 5], 5)
    with pytest.raises(ValueError, match='num_classes'):
        synthetic.learnable_images([0], synthetic.MAX_LEARNABLE_CLASSES + 1)
