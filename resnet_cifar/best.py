"""The best checkpoint of a run, kept in <log_root>/best/ where rotation never deletes it.

Before scoring a checkpoint, eval holds it: its files are hard-linked (copied where
links are not possible) into a folder of its own in best/, so the trainer's rotation
cannot take it away while it is scored. A checkpoint better than every one before
is then promoted: a new best/ is built beside the old one (its files, best.json, then
the `checkpoint` state file) and the two folders are exchanged in one rename; any
other is released. At every moment best/ is one whole checkpoint, the old best or the
new one, which tf.train.latest_checkpoint(best_dir) and --checkpoint_path=<log_root>/best
read. best/best.json says which step it is and what it scored. An error writing any of
it (a full disk) names the file and leaves best/ as it was.
"""
import ctypes
import errno
import glob
import json
import os
import shutil

from resnet_cifar import checkpoints
from resnet_cifar import guards
from resnet_cifar.errors import RunError

DIR_NAME = 'best'
INFO_FILE = 'best.json'
STATE_FILE = 'checkpoint'  # TensorFlow's checkpoint state file, in its text format
_INCOMING = '.incoming-'
_HOLDING = '.held-by-'  # + the eval process's id
_BUILDING = '.best-by-'  # + the eval process's id: the next best/, beside it in log_root


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
        if all(os.path.exists(source) for source in files):
            raise  # not the checkpoint that went: this side could not write (a full disk)
        return None
    return held


def remove_holding_folders(log_root):
    """Removes the holding folders, and the unfinished best/ folders, of eval processes that are
    gone (and this one's)."""
    best_dir = directory(log_root)
    for parent, prefix in [(best_dir, _HOLDING), (log_root, _BUILDING)]:
        for name in os.listdir(parent) if os.path.isdir(parent) else []:
            pid = name[len(prefix):].split('.')[0]
            if name.startswith(prefix) and pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
                shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


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
    """Makes the held checkpoint the kept best. The new best/ is built in a folder beside it (the
    checkpoint's files, best.json, then the state file) that is then exchanged with best/ in one
    rename; the previous best goes with the folder. Raises OSError naming the file or folder
    that could not be written; best/ is then as it was (the held files are gone)."""
    best_dir = directory(log_root)
    name = os.path.basename(held)
    building = os.path.join(log_root, '%s%d' % (_BUILDING, os.getpid()))
    shutil.rmtree(building, ignore_errors=True)
    try:
        os.mkdir(building)
        for source in checkpoint_files(held):
            os.replace(source, os.path.join(building, os.path.basename(source)))
        guards.replace_file(os.path.join(building, INFO_FILE), json.dumps(dict(info, checkpoint=name), indent=1))
        guards.replace_file(os.path.join(building, STATE_FILE),
                            'model_checkpoint_path: "%s"\nall_model_checkpoint_paths: "%s"\n' % (name, name))
        _exchange(building, best_dir)
    finally:
        shutil.rmtree(building, ignore_errors=True)  # after the exchange: the previous best/


# Linux's renameat2(2): both paths exist and swap places in one step.
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(new_dir, best_dir):
    """Puts folder new_dir at best_dir and the previous best_dir at new_dir. In one rename where the
    system can (Linux, most local file systems); elsewhere best_dir is missing between two."""
    if not os.path.isdir(best_dir):
        os.rename(new_dir, best_dir)
        return
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not Linux, or a C library without it
        renameat2 = None
    if renameat2 is not None:
        renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        if renameat2(_AT_FDCWD, os.fsencode(new_dir), _AT_FDCWD, os.fsencode(best_dir), _RENAME_EXCHANGE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), best_dir)
    previous = new_dir + '.previous'
    os.rename(best_dir, previous)
    try:
        os.rename(new_dir, best_dir)
    except OSError:
        os.rename(previous, best_dir)
        raise
    os.rename(previous, new_dir)


def _link_or_copy(source, target):
    """Puts `source` at `target` in one rename; a hard link keeps the file when the source is deleted."""
    incoming = os.path.join(os.path.dirname(target), _INCOMING + os.path.basename(target))
    _remove(incoming)
    try:
        try:
            os.link(source, incoming)
        except OSError:
            if not os.path.exists(source):
                raise
            shutil.copyfile(source, incoming)
        os.replace(incoming, target)
    except OSError as e:
        _remove(incoming)
        if not os.path.exists(source):
            raise  # the checkpoint went
        raise guards.naming(e, target) from None


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def path(log_root):
    """The kept best checkpoint's prefix, or None when eval has kept none."""
    return checkpoints.latest(directory(log_root))


def info(log_root):
    """best.json of the kept best checkpoint, or None; RunError when it is not a regular file."""
    try:
        with guards.open_regular(os.path.join(directory(log_root), INFO_FILE), RunError, 'of JSON') as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
