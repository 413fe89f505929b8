"""A trained network as a SavedModel that plain TensorFlow 2 can load and call.

`export_saved_model(config)` writes config.transfer.export_dir from the checkpoint
`choose_checkpoint(config)` gives: config.transfer.checkpoint_path (a prefix or a
directory); else, when the run holds out a validation split, the best one that eval
kept in <log_root>/best/ (best.py), chosen on the validation records; else the newest
one of config.log_root that restores. Without a validation split best/ was chosen on
the test records, an optimistic choice, so export takes it only when the run has no
other checkpoint left. One log line says which checkpoint and why. The weights are the
moving averages when the checkpoint has them (config.eval.use_moving_average).

The graph is the network's forward pass alone (ResNet.build_network): no cost, no
summaries, no optimizer or moving-average updates, no input queues. Two signatures,
both taking `images`: raw uint8 [N, 32, 32, 3] RGB images, standardized inside the
graph as in training:

  serving_default  probabilities float32 [N, num_classes], classes int64 [N]
  features         features float32 [N, D], what the fully connected layer reads

  model = tf.saved_model.load(export_dir)
  out = model.signatures['serving_default'](images=tf.constant(uint8_images))

An existing non-empty export_dir is refused before anything is built; the model
is written to a temporary directory beside it and renamed into place, so a failed
export leaves nothing half-written.
"""
import os
import shutil
import tempfile

import tensorflow as tf
from absl import logging

import resnet_model
from resnet_cifar import best
from resnet_cifar import checkpoints
from resnet_cifar import guards
from resnet_cifar import run_files
from resnet_cifar import train_step
from resnet_cifar import transfer
from resnet_cifar.errors import CheckpointError, FlagError

SERVING_SIGNATURE = 'serving_default'
FEATURES_SIGNATURE = 'features'


def export_saved_model(config):
    """Writes the SavedModel; returns the checkpoint it holds.

    Raises:
      errors.FlagError: export_dir exists and is not empty.
      errors.CheckpointError: no checkpoint, or one of another network.
    """
    export_dir = config.transfer.export_dir
    check_export_dir(export_dir)
    checkpoint, why = choose_checkpoint(config)
    logging.info('exporting %s, %s', _shown(checkpoint, config), why)
    parent = os.path.dirname(os.path.abspath(export_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix='.%s.' % os.path.basename(os.path.abspath(export_dir)), dir=parent)
    try:
        with_shadows = _write(config, checkpoint, os.path.join(staging, 'model'))
        if os.path.isdir(export_dir):
            os.rmdir(export_dir)  # empty, checked above
        os.replace(os.path.join(staging, 'model'), export_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logging.info('exported %s (%s weights) to %s', checkpoint,
                 'moving-average' if with_shadows else 'raw', export_dir)
    print('exported %s to %s: signatures %s (probabilities, classes) and %s, on uint8 [N, 32, 32, 3] images'
          % (checkpoint, export_dir, SERVING_SIGNATURE, FEATURES_SIGNATURE), flush=True)
    return checkpoint


def choose_checkpoint(config):
    """(checkpoint prefix, why it is the one: a phrase for the log line).

    Raises:
      errors.CheckpointError: no checkpoint that restores.
    """
    if config.transfer.checkpoint_path:
        return (transfer.find_checkpoint(config.transfer.checkpoint_path),
                'as --checkpoint_path=%s names' % config.transfer.checkpoint_path)
    log_root = config.log_root
    kept = best.path(log_root)
    held_out = _validation_size(log_root)
    if kept and held_out:
        return transfer.find_checkpoint(kept), 'chosen on %d validation records' % held_out
    if kept and checkpoints.latest(log_root) is None:
        return (transfer.find_checkpoint(kept), "the run's only checkpoint left: without a validation split it "
                'was chosen on the test set, an optimistic choice')
    if held_out:
        why = 'eval has kept no best/ on the validation records yet'
    elif kept:
        why = 'without a validation split, best/%s was chosen on the test set' % os.path.basename(kept)
    else:
        why = 'the run has no validation split to choose a best one on'
    return transfer.find_checkpoint(log_root), "the run's latest checkpoint: " + why


def _validation_size(log_root):
    """The records the run holds out of training to choose its best checkpoint on (0: none)."""
    settings, _ = run_files.read(log_root)
    return (settings or {}).get('validation_size') or 0


def _shown(checkpoint, config):
    """The checkpoint as the log line names it: inside the run, relative to it (best/model.ckpt-600)."""
    inside = os.path.relpath(checkpoint, config.log_root)
    return checkpoint if config.transfer.checkpoint_path or inside.startswith('..') else inside


def check_export_dir(export_dir):
    """FlagError unless export_dir is new or an empty directory."""
    problem = guards.new_dir_problem(export_dir)
    if problem:
        raise FlagError('--export_dir=%s: %s' % (export_dir, problem))


def _write(config, checkpoint, path):
    """Builds the serving graph, restores `checkpoint` into it and saves it at `path`.
    Returns True when the moving-average shadows were restored."""
    hps = config.hparams()
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.uint8, [None, 32, 32, 3], name='images')
        standardized = tf.image.per_image_standardization(tf.cast(images, tf.float32))
        model = resnet_model.ResNet(hps, standardized, None, 'eval')
        model.build_network()
        global_step = tf.compat.v1.train.get_or_create_global_step()  # says which step the model is
        network = transfer.network_variables(tf.compat.v1.global_variables())
        transfer.check_architecture(checkpoint, network, ignore=lambda v: False)
        with_shadows = config.eval.use_moving_average and any(
            name.endswith(train_step.SHADOW_SUFFIX) for name in transfer.checkpoint_shapes(checkpoint))
        restored = train_step.restore_names(network, with_shadows)
        restored['global_step'] = global_step
        signatures = {
            SERVING_SIGNATURE: tf.compat.v1.saved_model.predict_signature_def(
                {'images': images}, {'probabilities': model.predictions, 'classes': tf.argmax(model.logits, 1)}),
            FEATURES_SIGNATURE: tf.compat.v1.saved_model.predict_signature_def(
                {'images': images}, {'features': model.features}),
        }
        saver = tf.compat.v1.train.Saver(restored)
        with tf.compat.v1.Session() as session:
            try:
                saver.restore(session, checkpoint)
            except (tf.errors.OpError, ValueError) as e:
                raise CheckpointError('cannot restore %s: %s' % (checkpoint, str(e).strip().splitlines()[0])) from None
            builder = tf.compat.v1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(session, [tf.compat.v1.saved_model.tag_constants.SERVING],
                                                 signature_def_map=signatures, strip_default_attrs=True)
            builder.save()
    return with_shadows
