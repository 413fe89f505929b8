"""Bottleneck features of a trained ResNet, and a new softmax layer trained on them.

`extract_features(config)` runs the records of config.transfer.extract_data_path
once, in file order and without augmentation, through a trained network and
saves what its fully connected layer reads (`ResNet.features`: after the final
batch norm, ReLU and global average pool) to the .npz config.transfer.features_path:

  features  float32 [N, D]   D = 64 * width (plain units) or 256 * width (bottleneck)
  labels    int64 [N]        in record order
  metadata  a JSON string: checkpoint, global_step, dataset, label_mode, data_path,
            num_records, feature_dim, num_classes (of the labels), source_num_classes
            (of the network's own layer, or null), moving_average, label_names (or null)

`finetune(config)` trains a dense softmax layer (momentum, weight decay,
shuffled mini-batches) on config.transfer.train_features, scores it on
config.transfer.eval_features and saves it to <log_root>/finetune. Its variables are
named like the network's fully connected layer (logit/weights, logit/biases).
"""
import json
import os
import time

import numpy as np
import tensorflow as tf
from absl import logging

import cifar_input
import resnet_model
from resnet_cifar import devices
from resnet_cifar import guards
from resnet_cifar import progress
from resnet_cifar import run_files
from resnet_cifar import train_step
from resnet_cifar import transfer
from resnet_cifar.errors import DataError, RunError

FINETUNE_SUBDIR = 'finetune'


class FeaturesError(DataError):
    """A features file that is missing or not what --mode=extract writes."""


class FinetuneError(RunError):
    """A fine-tuning whose loss stopped being finite; nothing was saved."""


# ---------------------------------------------------------------- extract

def extract_features(config):
    """Writes the features of config.transfer.extract_data_path to config.transfer.features_path.

    The checkpoint is config.transfer.checkpoint_path (a prefix or a directory),
    else the latest one in config.log_root. Its moving-average shadows are used
    when it has them and config.eval.use_moving_average is on. The fully
    connected layer is not restored, so the number of classes (of the records'
    labels, config.data) may differ from the network's.

    Returns the metadata dict. Raises errors.CheckpointError (no checkpoint,
    another architecture) or errors.DataError (bad records).
    """
    checkpoint = transfer.find_checkpoint(config.transfer.checkpoint_path or config.log_root)
    data_path = config.transfer.extract_data_path
    num_records = cifar_input.count_records(config.data.dataset, data_path)
    extractor = _Extractor(config, checkpoint)
    start = time.time()
    features, labels = extractor.run(num_records, config.checkpoints.log_every_n_steps)
    if len(labels) != num_records:
        raise DataError('read %d of the %d records of %s' % (len(labels), num_records, data_path))
    metadata = extractor.metadata(features, labels)
    save_features(config.transfer.features_path, features, labels, metadata)
    seconds = time.time() - start
    _log_progress(len(labels), num_records, seconds)
    print('wrote %d features of dimension %d to %s (checkpoint %s, step %s; %.1f s)'
          % (len(labels), features.shape[1], config.transfer.features_path, checkpoint,
             metadata['global_step'], seconds), flush=True)
    return metadata


class _Extractor(object):
    """The eval-mode network over the records to extract, and the Saver of its checkpoint."""

    def __init__(self, config, checkpoint):
        self.config, self.checkpoint = config, checkpoint
        self.hps = config.hparams()
        self.data_path = config.transfer.extract_data_path
        self.graph = tf.Graph()
        with self.graph.as_default():
            with tf.compat.v1.device('/cpu:0'):
                images, labels = cifar_input.build_input(config.data.dataset, self.data_path, self.hps.batch_size,
                                                         'eval', num_epochs=1, label_mode=config.data.label_mode)
            with tf.compat.v1.device(config.devices.device):
                model = resnet_model.ResNet(self.hps, images, labels, 'eval')
                model.build_graph()
            network = transfer.network_variables(tf.compat.v1.global_variables())
            transfer.check_architecture(checkpoint, network)
            self.saved = transfer.checkpoint_shapes(checkpoint)
            self.use_shadows = bool(config.eval.use_moving_average and any(
                name.endswith(train_step.SHADOW_SUFFIX) for name in self.saved))
            restored = [v for v in network if not transfer.is_new_layer(v)]
            self.saver = tf.compat.v1.train.Saver(train_step.restore_names(restored, self.use_shadows))
            self.fetches = {'features': model.features, 'labels': tf.argmax(labels, 1)}
            self.local_init = tf.compat.v1.local_variables_initializer()

    def run(self, num_records, log_every_n_batches):
        """(features float32 [N, D], labels int64 [N]) of one pass over the records."""
        start, rows, label_rows, done = time.time(), [], [], 0
        with tf.compat.v1.Session(graph=self.graph, config=devices.session_config()) as session:
            try:
                self.saver.restore(session, self.checkpoint)
            except (tf.errors.OpError, ValueError) as e:
                raise transfer.CheckpointError('cannot restore %s: %s'
                                               % (self.checkpoint, str(e).strip().splitlines()[0])) from None
            session.run(self.local_init)
            with cifar_input.running_queues(session) as coord:
                while not coord.should_stop():
                    result = session.run(self.fetches)
                    rows.append(result['features'])
                    label_rows.append(result['labels'])
                    done += len(result['labels'])
                    if len(rows) % log_every_n_batches == 0:
                        _log_progress(done, num_records, time.time() - start)
        return np.concatenate(rows).astype(np.float32), np.concatenate(label_rows).astype(np.int64)

    def metadata(self, features, labels):
        source_biases = self.saved.get(transfer.NEW_LAYER_SCOPE + '/biases')
        data = self.config.data
        return {
            'checkpoint': self.checkpoint,
            'global_step': _to_int(transfer.read_variable(self.checkpoint, 'global_step')),
            'dataset': data.dataset,
            'label_mode': data.label_mode,
            'data_path': self.data_path,
            'num_records': int(len(labels)),
            'feature_dim': int(features.shape[1]),
            'num_classes': self.hps.num_classes,
            'source_num_classes': source_biases[0] if source_biases else None,
            'moving_average': self.use_shadows,
            'label_names': cifar_input.label_names(data.dataset, self.data_path, data.label_mode),
        }


def _log_progress(done, total, seconds):
    rate = done / max(seconds, 1e-9)
    eta = progress.format_duration((total - done) / max(rate, 1e-9))
    logging.info('extract: %d/%d images (%.1f%%), %.1f images/sec, ETA %s', done, total,
                 100.0 * done / max(total, 1), rate, eta)


def _to_int(value):
    return None if value is None else int(value)


def save_features(path, features, labels, metadata):
    """Writes the .npz atomically (a failed run leaves any earlier file as it was)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, '.%s.tmp' % os.path.basename(path))
    with open(tmp, 'wb') as f:
        np.savez(f, features=features, labels=labels, metadata=np.array(json.dumps(metadata)))
    os.replace(tmp, path)


def load_features(path):
    """(features float32 [N, D], labels int64 [N], metadata dict) of a features file.

    Raises FeaturesError naming the file when it is missing, not a regular file (a FIFO), or
    not a features file.
    """
    try:
        opened = guards.open_regular(path, FeaturesError, '(a features .npz from --mode=extract)',
                                     shown=repr(path), binary=True)
    except FileNotFoundError:
        raise FeaturesError('features file %r does not exist: write it with --mode=extract '
                            '--features_path=%s' % (path, path)) from None
    except OSError as e:
        raise FeaturesError('cannot read features file %r: %s' % (path, e.strerror or e)) from None
    try:
        with opened, np.load(opened, allow_pickle=False) as data:
            features, labels = data['features'], data['labels']
            metadata = json.loads(str(data['metadata']))
    except (OSError, ValueError, KeyError, TypeError) as e:  # TypeError: an .npy, not an .npz
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FeaturesError('%r is not a features file from --mode=extract (%s)' % (path, reason)) from None
    if not isinstance(metadata, dict):
        raise FeaturesError('%r is not a features file from --mode=extract (no metadata)' % path)
    if (features.ndim != 2 or labels.shape != (features.shape[0],) or not features.shape[0]
            or labels.min() < 0 or labels.max() >= metadata.get('num_classes', 0)):
        raise FeaturesError('features file %r is inconsistent: features %s, labels %s, num_classes %s'
                            % (path, features.shape, labels.shape, metadata.get('num_classes')))
    features = features.astype(np.float32)
    _check_finite(path, features)  # after the cast: a float64 value beyond float32's range is Inf here
    return features, labels.astype(np.int64), metadata


def _check_finite(path, features):
    """FeaturesError naming the file and the count when `features` holds NaN or Inf."""
    finite = np.isfinite(features)
    if not finite.all():
        raise FeaturesError('features file %r holds %d NaN or Inf values (in %d of %d rows): fine-tuning '
                            'on it cannot work; extract it again from a checkpoint with finite weights'
                            % (path, finite.size - int(finite.sum()), int((~finite.all(axis=1)).sum()),
                               features.shape[0]))


# ---------------------------------------------------------------- fine-tune

class SoftmaxLayer(object):
    """A dense softmax layer on fed features, with its momentum training step.

    Placeholders: features float32 [batch, feature_dim], labels int64 [batch].
    Tensors: logits [batch, num_classes], cost (mean cross-entropy +
    weight_decay_rate * l2_loss(weights)), cross_entropy, num_correct (int64 scalar).
    """

    def __init__(self, feature_dim, num_classes, learning_rate, momentum, weight_decay_rate):
        self.features = tf.compat.v1.placeholder(tf.float32, [None, feature_dim], 'features')
        self.labels = tf.compat.v1.placeholder(tf.int64, [None], 'labels')
        self.global_step = tf.compat.v1.train.get_or_create_global_step()
        with tf.compat.v1.variable_scope(transfer.NEW_LAYER_SCOPE):
            weights = tf.compat.v1.get_variable(
                'weights', [feature_dim, num_classes], tf.float32,
                initializer=tf.compat.v1.variance_scaling_initializer(
                    scale=1.0, mode='fan_in', distribution='uniform'))
            biases = tf.compat.v1.get_variable(
                'biases', [num_classes], tf.float32, initializer=tf.compat.v1.zeros_initializer())
        self.logits = tf.nn.bias_add(tf.matmul(self.features, weights), biases)
        self.cross_entropy = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=self.labels, logits=self.logits))
        self.cost = self.cross_entropy + weight_decay_rate * tf.nn.l2_loss(weights)
        self.num_correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(self.logits, 1), self.labels), tf.int64))
        self.train_op = tf.compat.v1.train.MomentumOptimizer(learning_rate, momentum).minimize(
            self.cost, global_step=self.global_step)
        self.variables = [weights, biases]

    def score(self, session, features, labels, batch_size):
        """(precision, mean cross-entropy) over all of `features`, in batches."""
        correct, loss_sum = 0, 0.0
        for start in range(0, len(labels), batch_size):
            feed = {self.features: features[start:start + batch_size],
                    self.labels: labels[start:start + batch_size]}
            batch_correct, batch_loss = session.run([self.num_correct, self.cross_entropy], feed)
            correct += int(batch_correct)
            loss_sum += float(batch_loss) * len(feed[self.labels])
        return correct / len(labels), loss_sum / len(labels)


def finetune(config):
    """Trains a softmax layer on the train features; prints and returns its eval precision.

    Uses momentum 0.9 and config.schedule.weight_decay_rate, and config.transfer's
    train_features, eval_features, finetune_epochs, finetune_batch_size and
    finetune_lrn_rate; config.random_seed; the layer is saved in <log_root>/finetune.
    The number of classes comes from the features files.

    Returns {'precision', 'loss', 'train_precision', 'checkpoint'}.
    Raises FeaturesError for a missing or mismatched features file, or one holding NaN or Inf;
    FinetuneError when the loss stops being finite (then nothing in <log_root>/finetune changes).
    """
    t = config.transfer
    (train_x, train_y), (eval_x, eval_y), num_classes = _load_pair(t.train_features, t.eval_features)
    out_dir = os.path.join(config.log_root, FINETUNE_SUBDIR)
    hps = config.hparams()
    logging.info('finetune: %d train features of dimension %d, %d classes, %d epochs of batch %d',
                 len(train_y), train_x.shape[1], num_classes, t.finetune_epochs, t.finetune_batch_size)
    rng = np.random.RandomState(config.random_seed)
    with tf.Graph().as_default():
        if config.random_seed is not None:
            tf.compat.v1.set_random_seed(config.random_seed)
        layer = SoftmaxLayer(train_x.shape[1], num_classes, t.finetune_lrn_rate, hps.momentum,
                             hps.weight_decay_rate)
        saver = tf.compat.v1.train.Saver(max_to_keep=1, save_relative_paths=True)
        with tf.compat.v1.Session(config=devices.session_config()) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            try:
                _train_layer(session, layer, train_x, train_y, t.finetune_epochs, t.finetune_batch_size, rng)
            except _NonFiniteLoss as e:
                raise FinetuneError('finetune: loss is NaN or Inf at step %d (--finetune_lrn_rate=%g); nothing '
                                    'saved, %s is as it was' % (e.step, t.finetune_lrn_rate, out_dir)) from None
            train_precision, _ = layer.score(session, train_x, train_y, t.finetune_batch_size)
            precision, loss = layer.score(session, eval_x, eval_y, t.finetune_batch_size)
            run_files.write_record(out_dir, config, hps)  # only for a layer that is saved
            checkpoint = saver.save(session, os.path.join(out_dir, 'model.ckpt'), global_step=layer.global_step)
    print('finetune: precision %.4f, loss %.4f on %d eval features (train precision %.4f); '
          'layer saved to %s' % (precision, loss, len(eval_y), train_precision, checkpoint), flush=True)
    return {'precision': precision, 'loss': loss, 'train_precision': train_precision,
            'checkpoint': checkpoint}


def _load_pair(train_path, eval_path):
    """((train features, labels), (eval features, labels), number of classes); FeaturesError
    when the two files do not fit together."""
    train_x, train_y, train_meta = load_features(train_path)
    eval_x, eval_y, eval_meta = load_features(eval_path)
    if train_x.shape[1] != eval_x.shape[1]:
        raise FeaturesError('%s has %d-dimensional features but %s has %d: extract both with the same '
                            'checkpoint' % (train_path, train_x.shape[1], eval_path, eval_x.shape[1]))
    num_classes = train_meta['num_classes']
    if eval_meta['num_classes'] != num_classes:
        raise FeaturesError('%s has %d classes but %s has %d: extract both from the same --dataset '
                            'and --label_mode' % (train_path, num_classes, eval_path, eval_meta['num_classes']))
    return (train_x, train_y), (eval_x, eval_y), num_classes


class _NonFiniteLoss(Exception):
    def __init__(self, step):
        super().__init__('loss is NaN or Inf at step %d' % step)
        self.step = step


def _train_layer(session, layer, features, labels, epochs, batch_size, rng):
    """Shuffled mini-batch epochs; logs the train loss and precision five times.

    Raises _NonFiniteLoss with the number of steps run before a batch whose loss is NaN or Inf,
    or before the last epoch's score when that is (the last step made the weights so).
    """
    step = 0
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(labels))
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            _, cost = session.run([layer.train_op, layer.cost],
                                  {layer.features: features[batch], layer.labels: labels[batch]})
            if not np.isfinite(cost):  # the cost of the weights before this step's update
                raise _NonFiniteLoss(step)
            step += 1
        if epoch == epochs or epoch % max(1, epochs // 5) == 0:
            precision, loss = layer.score(session, features, labels, batch_size)
            if not np.isfinite(loss):
                raise _NonFiniteLoss(step)
            logging.info('finetune epoch %d/%d: train loss %.4f, train precision %.4f',
                         epoch, epochs, loss, precision)
