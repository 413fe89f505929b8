"""Reusing another run's weights: find its checkpoint, check it fits, restore it.

Used by feature extraction (features.py) and by training with an init checkpoint
(training.py). Every problem is a CheckpointError with a one-line message that
names the checkpoint and, for an architecture mismatch, the first variables
that differ and their shapes.
"""
import os

import tensorflow as tf
from absl import logging

from resnet_cifar import checkpoints

# The fully connected layer: it depends on the number of classes, so it is
# never restored from another run; it is the "new layer" of a fine-tuned network.
NEW_LAYER_SCOPE = 'logit'
# Optimizer slots ('<var>/Momentum') and moving averages ('<var>/ExponentialMovingAverage')
# are named after their variable; these two are the only other bookkeeping variables
# (checkpoints of older runs hold a 'learning_rate' variable; the rate is now computed
# in the graph from the global step).
_BOOKKEEPING = ('global_step', 'learning_rate')
_SHOWN_MISMATCHES = 3


# A checkpoint that is missing, unreadable, or of another architecture.
CheckpointError = checkpoints.CheckpointError


def find_checkpoint(path):
    """The checkpoint prefix that `path` names.

    Args:
      path: a checkpoint prefix (runs/x/model.ckpt-300, or one of its
        .index/.data-* files), or a directory: its newest checkpoint that restores
        (a warning for each newer one that does not).
    Raises:
      CheckpointError: nothing readable there.
    """
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        newest, skipped = checkpoints.newest_restorable(path)
        for prefix, reason in skipped:
            logging.warning('skipping checkpoint %s: %s', prefix, reason)
        if newest is None:
            raise CheckpointError('no checkpoint in directory %r%s: train first, or name a checkpoint '
                                  'such as %s' % (path, ' restores' if skipped else '',
                                                  os.path.join(path, 'model.ckpt-1000')))
        return newest
    for suffix in ('.index', '.meta'):
        if path.endswith(suffix):
            path = path[:-len(suffix)]
    if '.data-' in os.path.basename(path):
        path = path[:path.rindex('.data-')]
    if not tf.io.gfile.exists(path + '.index'):
        raise CheckpointError('no checkpoint at %r: expected a directory of checkpoints or a '
                              'checkpoint prefix such as runs/cifar10/model.ckpt-80000 (the part '
                              'before .index)' % path)
    return path


def checkpoint_shapes(checkpoint_path):
    """{variable name: shape as a list} of a checkpoint; CheckpointError if unreadable."""
    try:
        return {name: list(shape) for name, shape in tf.train.list_variables(checkpoint_path)}
    except (tf.errors.OpError, ValueError) as e:
        raise CheckpointError('cannot read checkpoint %r: %s'
                              % (checkpoint_path, _first_line(str(e)))) from None


def read_variable(checkpoint_path, name, default=None):
    """The value of `name` in the checkpoint, or `default` when it has none."""
    if name not in checkpoint_shapes(checkpoint_path):
        return default
    return tf.train.load_variable(checkpoint_path, name)


def network_variables(variables):
    """The network's own variables among `variables`, in their order.

    Leaves out the global step, the learning rate, and every variable named
    after another one (optimizer slots, moving-average shadows).
    """
    variables = list(variables)
    names = {v.op.name for v in variables}
    return [v for v in variables if v.op.name not in _BOOKKEEPING and not any(
        v.op.name.startswith(other + '/') for other in names if other != v.op.name)]


def is_new_layer(variable):
    """True for the fully connected layer's variables, which are never restored."""
    return variable.op.name.startswith(NEW_LAYER_SCOPE + '/')


def check_architecture(checkpoint_path, variables, ignore=is_new_layer):
    """Raises CheckpointError unless the checkpoint holds `variables` with their shapes.

    Args:
      checkpoint_path: a checkpoint prefix.
      variables: the network variables to restore (see network_variables), in
        graph order: the first mismatches named are the first in the network.
      ignore: predicate on a variable that the check skips (by default the
        fully connected layer, whose shape depends on the number of classes).

    A checkpoint variable that this network lacks counts as a mismatch too
    (a deeper network's units), unless it is bookkeeping: named after one of
    the variables (slots, shadows) or with a base name none of them has.
    """
    saved = checkpoint_shapes(checkpoint_path)
    wanted = [v for v in variables if not ignore(v)]
    names = {v.op.name for v in variables}
    base_names = {name.rsplit('/', 1)[-1] for name in names}
    problems = []
    for v in wanted:
        shape = v.shape.as_list()
        name = v.op.name
        if name not in saved:
            problems.append('%s %s is not in the checkpoint' % (name, shape))
        elif saved[name] != shape:
            problems.append('%s is %s here but %s in the checkpoint' % (name, shape, saved[name]))
    for name in sorted(saved):
        if (name not in names and name.rsplit('/', 1)[-1] in base_names
                and not name.startswith(NEW_LAYER_SCOPE + '/')
                and not any(name.startswith(n + '/') for n in names)):
            problems.append('the checkpoint has %s %s, which this network lacks' % (name, saved[name]))
    if problems:
        more = len(problems) - _SHOWN_MISMATCHES
        flags = ('--num_residual_units, --width and --use_bottleneck'
                 if any(not p.startswith(NEW_LAYER_SCOPE + '/') for p in problems)
                 else '--dataset and --label_mode: the number of classes')
        raise CheckpointError(
            'checkpoint %s does not match this network (check %s): %s%s'
            % (checkpoint_path, flags, '; '.join(problems[:_SHOWN_MISMATCHES]),
               '; and %d more' % more if more > 0 else ''))


def check_resumable(checkpoint_path, variables):
    """Raises CheckpointError unless the checkpoint holds every one of `variables`, with its shape.

    For a run that resumes from its own checkpoint: the network (fully connected
    layer included), then the optimizer slots and moving averages.
    """
    check_architecture(checkpoint_path, network_variables(variables), ignore=lambda v: False)
    saved = checkpoint_shapes(checkpoint_path)
    missing = [v.op.name for v in variables if v.op.name not in saved]
    if missing:
        flags = ' and '.join(flag for suffix, flag in [('/Momentum', '--optimizer or --freeze_restored_layers'),
                                                       ('/ExponentialMovingAverage', '--moving_average_decay')]
                             if any(name.endswith(suffix) for name in missing)) or 'the flags'
        raise CheckpointError('checkpoint %s has no %s (and %d more): it was trained with other %s; '
                              'resume with the run\'s' % (checkpoint_path, missing[0], len(missing) - 1, flags))


def warm_start_fn(model, init_checkpoint, resume_from):
    """A tf.compat.v1.train.Scaffold init_fn that starts `model` from another run's weights.

    It restores every network variable except the fully connected layer (so the
    number of classes may differ) from `init_checkpoint`, and starts their
    moving averages at the restored values. The optimizer slots, the global step
    and the learning rate start fresh. Call it in the training graph before the
    session is created.

    Returns None when there is no `init_checkpoint`, or when the run resumes from
    its own checkpoint `resume_from` (a prefix, or None for a new run).
    Raises CheckpointError for a missing checkpoint or another architecture.
    """
    if not init_checkpoint:
        return None
    if resume_from is not None:
        logging.info('resuming from %s; --init_checkpoint is only used to start a run', resume_from)
        return None
    path = find_checkpoint(init_checkpoint)
    graph = tf.compat.v1.get_default_graph()
    variables = network_variables(graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES))
    check_architecture(path, variables)
    restored = [v for v in variables if not is_new_layer(v)]
    saver = tf.compat.v1.train.Saver({v.op.name: v for v in restored}, name='init_checkpoint_saver')
    shadows = [(model.step.ema.average(v), v) for v in restored if model.step.ema is not None]
    copy_to_shadows = tf.group(*[s.assign(v) for s, v in shadows if s is not None],
                               name='init_moving_averages')

    def init_fn(scaffold, session):
        del scaffold
        try:
            saver.restore(session, path)
        except (tf.errors.OpError, ValueError) as e:
            raise CheckpointError('cannot restore %s: %s' % (path, _first_line(str(e)))) from None
        session.run(copy_to_shadows)
        logging.info('started from %s: restored %d variables; %s starts fresh',
                     path, len(restored), NEW_LAYER_SCOPE)

    return init_fn


def _first_line(text):
    lines = text.strip().splitlines()
    return lines[0] if lines else text
