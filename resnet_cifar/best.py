"""The best checkpoint of a run, kept in <log_root>/best/ where rotation never deletes it.

Before scoring a checkpoint, eval holds it: its files are hard-linked (copied where
links are not possible) into a folder of its own in best/, so the trainer's rotation
cannot take it away while it is scored. A checkpoint better than every one before
is then promoted: its files move into best/ under their own names, and only then
does best/'s `checkpoint` state file switch to them, in one rename; any other is
released. At every moment best/ names one whole checkpoint,
which tf.train.latest_checkpoint(best_dir) and --checkpoint_path=<log_root>/best
read. best/best.json says which step it is and what it scored.
"""
import glob
import json
import os
import shutil

from resnet_cifar import checkpoints
from resnet_cifar import guards

DIR_NAME = 'best'
INFO_FILE = 'best.json'
STATE_FILE = 'checkpoint'  # TensorFlow's checkpoint state file, in its text format
_INCOMING = '.incoming-'
_HOLDING = '.held-by-'  # + the eval process's id


def directory(log_root):
    return os.path.join(log_root, DIR_NAME)


def checkpoint_files(prefix):
    """The files that make up the checkpoint `prefix`: its index and data shards."""
    return sorted(f for f in glob.glob(glob.escape(prefix) + '.*')
                  if f.endswith('.index') or '.data-' in os.path.basename(f))


def keep(log_root, checkpoint_path, info):
    """Makes `checkpoint_path` the run's kept best checkpoint; info: a JSON-able dict for best.json.

    Returns None, or why the checkpoint could not be kept (its files went meanwhile);
    the previous best then stays. Eval uses hold() before scoring and promote() after.
    """
    held = hold(log_root, checkpoint_path)
    try:
        if held is None:
            return '%s has no index file any more' % checkpoint_path
        promote(log_root, held, info)
        return None
    finally:
        remove_holding_folders(log_root)


def hold(log_root, checkpoint_path):
    """Links the checkpoint's files into a folder of this process in best/, where the trainer's
    rotation cannot delete them; returns the held prefix (score it, then promote or release it),
    or None when the checkpoint's files are gone (or partly gone) already."""
    holding = os.path.join(directory(log_root), '%s%d' % (_HOLDING, os.getpid()))
    os.makedirs(holding, exist_ok=True)
    files = checkpoint_files(checkpoint_path)
    held = os.path.join(holding, os.path.basename(checkpoint_path))
    release(held)
    if not any(f.endswith('.index') for f in files) or not any('.data-' in f for f in files):
        return None
    try:
        for source in files:
            _link_or_copy(source, os.path.join(holding, os.path.basename(source)))
    except OSError:
        release(held)
        return None
    return held


def remove_holding_folders(log_root):
    """Removes the holding folders of eval processes that are gone (and this one's)."""
    best_dir = directory(log_root)
    for name in os.listdir(best_dir) if os.path.isdir(best_dir) else []:
        pid = name[len(_HOLDING):]
        if name.startswith(_HOLDING) and pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
            shutil.rmtree(os.path.join(best_dir, name), ignore_errors=True)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def release(held):
    """Deletes a held checkpoint's files."""
    for name in checkpoint_files(held):
        _remove(name)


def promote(log_root, held, info):
    """Makes the held checkpoint the kept best: its files move into best/, then the state file
    switches to them in one rename, then the previous best's files go."""
    best_dir = directory(log_root)
    name = os.path.basename(held)
    for source in checkpoint_files(held):
        os.replace(source, os.path.join(best_dir, os.path.basename(source)))
    guards.replace_file(os.path.join(best_dir, STATE_FILE),
                        'model_checkpoint_path: "%s"\nall_model_checkpoint_paths: "%s"\n' % (name, name))
    guards.replace_file(os.path.join(best_dir, INFO_FILE), json.dumps(dict(info, checkpoint=name), indent=1))
    for stale in os.listdir(best_dir):
        path = os.path.join(best_dir, stale)
        if os.path.isfile(path) and stale not in (STATE_FILE, INFO_FILE) and not stale.startswith(name + '.'):
            _remove(path)


def _link_or_copy(source, target):
    """Puts `source` at `target` in one rename; a hard link keeps the file when the source is deleted."""
    incoming = os.path.join(os.path.dirname(target), _INCOMING + os.path.basename(target))
    _remove(incoming)
    try:
        os.link(source, incoming)
    except OSError:
        if not os.path.exists(source):
            raise
        shutil.copyfile(source, incoming)
    os.replace(incoming, target)


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def path(log_root):
    """The kept best checkpoint's prefix, or None when eval has kept none."""
    return checkpoints.latest(directory(log_root))


def info(log_root):
    """best.json of the kept best checkpoint, or None."""
    try:
        with open(os.path.join(directory(log_root), INFO_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
