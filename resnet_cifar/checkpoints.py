"""The checkpoints of a run directory: find them, check them, mend the state file.

A run directory (--log_root) holds checkpoints `model.ckpt-N` (an `.index` file,
`.data-*` shards and a `.meta` file) and TensorFlow's state file `checkpoint`,
which names the latest. That file can hold absolute paths into the place the
run had before it was copied or moved, or be empty or garbled after a crash.
Nothing here follows a path out of the run directory: a checkpoint the state
file names is looked up by its base name inside it, and when the state file is
of no use, the newest checkpoint on disk is the latest.

- `latest(run_dir)`: the newest checkpoint, for readers (eval, extract).
- `problem(prefix)`: why a checkpoint cannot be restored, or None.
- `newest_restorable(run_dir)`: the newest checkpoint that restores.
- `prepare_resume(run_dir)`: for the one trainer of a run: the checkpoint to
  resume from, damaged ones moved into `damaged/`, the state file rewritten
  with relative names.
"""
import collections
import glob
import os
import re

from absl import logging

from resnet_cifar import guards
from resnet_cifar.errors import CheckpointError

STATE_FILE = 'checkpoint'
DAMAGED_DIR = 'damaged'
_NAME = re.compile(r'^model\.ckpt-(\d+)$')
_STATE_LINE = re.compile(r'^\s*(model_checkpoint_path|all_model_checkpoint_paths)\s*:\s*"([^"\\]*)"\s*$'
                         r'|^\s*(all_model_checkpoint_timestamps|last_preserved_timestamp)\s*:\s*[-+.e\d]+\s*$'
                         r'|^\s*$')


def step_of(prefix):
    """The global step in a checkpoint's name ('.../model.ckpt-1200' -> 1200), or None."""
    found = _NAME.match(os.path.basename(prefix))
    return int(found.group(1)) if found else None


def missing_file(prefix):
    """The first file of checkpoint `prefix` that is not there (the index, then data shards), or None."""
    if not os.path.exists(prefix + '.index'):
        return prefix + '.index'
    shards = glob.glob(glob.escape(prefix) + '.data-*-of-*')
    if not shards:
        return prefix + '.data-00000-of-00001'
    count = int(shards[0].rsplit('-of-', 1)[1])
    for shard in range(count):
        path = '%s.data-%05d-of-%05d' % (prefix, shard, count)
        if not os.path.exists(path):
            return path
    return None


def on_disk(run_dir):
    """[(step, prefix)] of the checkpoints in run_dir whose files are all there, oldest first."""
    try:
        names = os.listdir(run_dir)
    except OSError:
        return []
    found = []
    for name in names:
        if name.endswith('.index') and _NAME.match(name[:-len('.index')]):
            prefix = os.path.join(run_dir, name[:-len('.index')])
            if missing_file(prefix) is None:
                found.append((step_of(prefix), prefix))
    return sorted(found)


# latest: the base name the state file gives as the latest, or None; listed: the base names
# of its list; problem: why the file is of no use, or None; elsewhere: the directory its
# paths point into when that is not the run directory (a copied or moved run), or None.
State = collections.namedtuple('State', ['latest', 'listed', 'problem', 'elsewhere'])


def read_state(run_dir):
    """What the state file of run_dir says, as a State.

    Raises:
      CheckpointError: the state file is a FIFO, a socket, a device or a directory.
    """
    path = os.path.join(run_dir, STATE_FILE)
    try:
        with guards.open_regular(path, CheckpointError, '(the checkpoint state file)', encoding='utf-8',
                                 errors='replace') as f:
            text = f.read()
    except FileNotFoundError:
        return State(None, [], 'missing', None)
    except OSError as e:
        return State(None, [], 'unreadable (%s)' % (e.strerror or e), None)
    lines = [_STATE_LINE.match(line) for line in text.splitlines()]
    entries = [(m.group(1), m.group(2)) for m in lines if m and m.group(1)]
    latest = [value for key, value in entries if key == 'model_checkpoint_path']
    if not text.strip():
        return State(None, [], 'empty', None)
    if not all(lines) or len(latest) != 1 or not all(_NAME.match(os.path.basename(v)) for _, v in entries):
        return State(None, [], 'garbled', None)
    directories = {os.path.dirname(v) for _, v in entries if os.path.isabs(v)}
    elsewhere = sorted(d for d in directories if not _same_directory(d, run_dir))
    return State(os.path.basename(latest[0]),
                 [os.path.basename(v) for key, v in entries if key == 'all_model_checkpoint_paths'],
                 None, elsewhere[0] if elsewhere else None)


def _same_directory(a, b):
    return os.path.realpath(a) == os.path.realpath(b)


def latest(run_dir):
    """The newest checkpoint prefix inside run_dir, or None when it has none.

    The one the state file names, looked up inside run_dir, if its index file is
    there; else the newest checkpoint on disk whose files are all there.
    """
    named = read_state(run_dir).latest
    if named and os.path.exists(os.path.join(run_dir, named + '.index')):
        return os.path.join(run_dir, named)
    whole = on_disk(run_dir)
    return whole[-1][1] if whole else None


def problem(prefix):
    """Why checkpoint `prefix` cannot be restored, in words, or None when it can.

    Reads every tensor, so a truncated file or a failed checksum shows.
    """
    missing = missing_file(prefix)
    if missing and missing.endswith('.index'):
        return 'it was deleted (training keeps only the newest --keep_checkpoint_max checkpoints)'
    if missing:
        return 'its data file %s is missing' % os.path.basename(missing)
    try:
        import tensorflow as tf  # only to read a checkpoint: finding one needs no TensorFlow
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as e:  # the reader raises IndexError, ValueError or OpError subclasses
        return 'damaged: %s' % guards.error_line(e)
    return None


def newest_restorable(run_dir):
    """(prefix, skipped): the newest checkpoint of run_dir that restores, or None, and the
    [(prefix, problem)] of the newer ones that do not.

    Starts at latest() and walks to older checkpoints whose files are all there.
    """
    start = latest(run_dir)
    if start is None:
        return None, []
    older = [prefix for step, prefix in reversed(on_disk(run_dir)) if step < step_of(start)]
    skipped = []
    for prefix in [start] + older:
        reason = problem(prefix)
        if reason is None:
            return prefix, skipped
        skipped.append((prefix, reason))
    return None, skipped


def prepare_resume(run_dir):
    """The checkpoint prefix a trainer resumes from, or None for a new run.

    Call it holding the run's lock (guards.RunLock): it writes. Takes the newest
    checkpoint that restores (newest_restorable); the newer ones that do not are
    moved into run_dir/damaged/, one warning each. Then the state file names the
    chosen checkpoint by its base name, and lists for rotation only checkpoints it
    listed before (or just the chosen one when it was of no use), so a checkpoint
    the state file did not list is never deleted.

    Raises:
      CheckpointError: checkpoints exist but none of them restores; nothing is changed.
    """
    state = read_state(run_dir)
    chosen, damaged = newest_restorable(run_dir)
    if chosen is None and damaged:
        raise CheckpointError('no checkpoint in %s restores: %s; they are kept: to start over, move %s away or '
                              'give another --log_root' % (run_dir, '; '.join('%s %s' % (os.path.basename(p), r)
                                                                             for p, r in damaged), run_dir))
    if chosen is None:
        return None
    for prefix, reason in damaged:
        logging.warning('checkpoint %s is %s; its files are moved to %s; resuming from %s', prefix,
                        reason if reason.startswith('damaged') else 'incomplete: ' + reason,
                        _move_aside(prefix), os.path.basename(chosen))
    _log_state_repair(run_dir, state, chosen, [os.path.basename(p) for p, _ in damaged])
    listed = [name for name in state.listed if not state.problem and _is_older_and_whole(run_dir, name, chosen)]
    write_state(run_dir, chosen, listed)
    return chosen


def _is_older_and_whole(run_dir, name, chosen):
    step = step_of(name)
    return step is not None and step < step_of(chosen) and missing_file(os.path.join(run_dir, name)) is None


def _log_state_repair(run_dir, state, chosen, damaged_names):
    path = os.path.join(run_dir, STATE_FILE)
    if state.problem:
        logging.warning('the checkpoint state file %s is %s; recovered from the checkpoint files: '
                        'resuming from %s; the older checkpoints are not rotated: delete them when '
                        'you no longer need them', path, state.problem, chosen)
    elif state.elsewhere:
        logging.info('%s named checkpoints in %s (the run was copied or moved); resuming from its own %s',
                     path, state.elsewhere, chosen)
    elif state.latest not in damaged_names and not os.path.exists(os.path.join(run_dir, state.latest + '.index')):
        logging.warning('the checkpoint state file %s names %s, which is not in %s; resuming from %s',
                        path, state.latest, run_dir, chosen)


def _move_aside(prefix):
    """Moves the files of checkpoint `prefix` into <its directory>/damaged/; returns that folder."""
    folder = os.path.join(os.path.dirname(prefix), DAMAGED_DIR)
    os.makedirs(folder, exist_ok=True)
    name = os.path.basename(prefix)
    taken = 1
    while glob.glob(os.path.join(glob.escape(folder), glob.escape(name) + '.*')):
        taken += 1  # damaged twice at the same step: keep both
        name = '%s~%d' % (os.path.basename(prefix), taken)
    for path in glob.glob(glob.escape(prefix) + '.*'):
        os.replace(path, os.path.join(folder, name + path[len(prefix):]))
    return folder


def write_state(run_dir, latest_prefix, older_names=()):
    """Replaces the state file in one step: `latest_prefix` is the latest, and the list is
    `older_names` plus it, all by base name, so the file holds no path out of run_dir."""
    names = list(older_names) + [os.path.basename(latest_prefix)]
    text = 'model_checkpoint_path: "%s"\n' % names[-1]
    text += ''.join('all_model_checkpoint_paths: "%s"\n' % name for name in names)
    path = os.path.join(run_dir, STATE_FILE)
    try:
        with guards.open_regular(path, CheckpointError, '(the checkpoint state file)') as f:
            if f.read() == text:
                return
    except OSError:
        pass
    guards.replace_file(path, text)
