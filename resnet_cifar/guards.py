"""Keeping a run's work: stop signals, output directories, one-line errors.

No TensorFlow import here, so the signal handling is cheap to test on its own.

- `StopSignals`: while active, the first SIGTERM or SIGINT asks the program to
  stop (training saves a checkpoint first; eval stops at once) and a second
  one exits the process at once (unless it is of the other kind and within 2 s).
- `output_dir_problem`: why a directory cannot be created or written, before
  a run starts.
- `error_line`: the one-line message of an OSError or TensorFlow error.
- `RunLock`: one process of a kind at a time per run directory (a second trainer, or a
  second eval, is refused).
- `replace_file`: writes a small file in one step (whole or not at all).
- `open_regular`: opens a file for reading only when it is a regular file (a FIFO would
  block open() for ever).
"""
import fcntl
import os
import re
import signal
import socket
import stat
import threading
import time

from absl import logging

from resnet_cifar.errors import RunError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(BaseException):
    """Raised in the main thread by a stop signal when StopSignals(raise_at_once=True).

    A BaseException, like KeyboardInterrupt, so `except Exception` does not swallow it.
    """

    def __init__(self, signal_name):
        super().__init__('stopped by %s' % signal_name)
        self.signal_name = signal_name


class StopSignals(object):
    """Context manager: SIGTERM and SIGINT ask to stop; a second one exits at once.

    First signal: `requested` becomes True and `signal_name` names it; with
    raise_at_once=True the main thread also gets `Stopped` (at its next Python
    bytecode, which includes waking from time.sleep). Second signal: the process
    exits at once with status 128 + the signal number; but one of the other kind
    within SAME_REQUEST_SECS (monotonic) of the first is the same request (a
    terminal's Ctrl-C and a wrapper script's trap passing SIGTERM on), and only
    a third exits.

    A watcher thread reads the signal numbers from the interpreter's wakeup fd,
    so `requested` is set and a second signal still exits even while the main
    thread is blocked inside TensorFlow (Python-level handlers only run when the
    main thread returns to the interpreter). Only the main thread can install
    signal handlers; in another thread this context manager does nothing.

    Args:
      raise_at_once: raise Stopped in the main thread on the first signal.
      first_message: logged on the first signal; '%s' is replaced by the signal name.
    """

    SAME_REQUEST_SECS = 2.0

    def __init__(self, raise_at_once=False, first_message='%s: stopping; send it again to exit at once'):
        self.raise_at_once = raise_at_once
        self.first_message = first_message
        self.signal_name = None
        self._requested = threading.Event()
        self._seen = set()  # the kinds of stop signal received
        self._first_at = None  # time.monotonic() of the first
        self._lock = threading.Lock()
        self._active = False
        self._raised = False

    @property
    def requested(self):
        return self._requested.is_set()

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._old_handlers = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        self._old_wakeup_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        self._watcher = threading.Thread(target=self._watch, name='stop-signals', daemon=True)
        self._watcher.start()
        self._active = True
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        if not self._active:
            return False
        self._active = False
        signal.set_wakeup_fd(self._old_wakeup_fd)
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        os.write(self._write_fd, b'\0')  # 0 is no signal: it tells the watcher to end
        self._watcher.join(5)
        os.close(self._write_fd)
        os.close(self._read_fd)
        return False

    def _on_signal(self, signum, frame):
        """Python-level handler, in the main thread; the watcher does the counting."""
        self._note(signum)
        # Raised once, by the main thread: the watcher may have noted this signal first.
        if self.raise_at_once and not self._raised:
            self._raised = True
            raise Stopped(self.signal_name)

    def _note(self, signum):
        """Marks the stop as requested; True for the first signal (the one that named it)."""
        with self._lock:
            first = self.signal_name is None
            if first:
                self.signal_name = signal.Signals(signum).name
        self._requested.set()
        return first

    def _watch(self):
        while True:
            try:
                data = os.read(self._read_fd, 64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum == 0:
                    return
                if signum not in STOP_SIGNALS:  # another handled signal, such as SIGALRM
                    continue
                self._on_stop_signal(signum)

    def _on_stop_signal(self, signum):
        """Counts a stop signal, in the watcher thread: the first asks, one of another kind within
        SAME_REQUEST_SECS of it is the same request, any other exits the process at once."""
        name, now = signal.Signals(signum).name, time.monotonic()
        if not self._seen:
            self._seen, self._first_at, self._first_name = {signum}, now, name
            self._note(signum)
            logging.warning(self.first_message, name)
        elif signum not in self._seen and now - self._first_at < self.SAME_REQUEST_SECS:
            self._seen.add(signum)
            # The first this thread counted: Python may have run the handlers in another order.
            logging.warning('%s right after %s: the same stop request; send it again to exit at once',
                            name, self._first_name)
        else:
            os.write(2, ('error: %s again: exiting at once\n' % name).encode())
            os._exit(128 + signum)


def output_dir_problem(path, writable=True):
    """Why directory `path` cannot be used for output, or None when it can.

    `path` need not exist yet: its nearest existing ancestor must then be a
    directory this process may write into (so that it can be created). Nothing
    is created. os.access also reports a read-only file system, even to root.
    """
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(path) and not os.path.isdir(path):
        return 'exists and is not a directory'
    existing = path
    while not os.path.exists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        return 'cannot be created: %s is a file, not a directory' % existing
    if writable and not os.access(existing, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
        what = 'is' if existing == path else 'cannot be created: %s is' % existing
        return '%s not writable (%s)' % (what, _access_reason(existing))
    return None


def new_dir_problem(path):
    """Why `path` cannot be a new output directory (it exists and is not an empty directory),
    or None; nothing there is ever overwritten."""
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        return 'exists and is not empty; give a new directory (nothing is overwritten)'
    return None


def _access_reason(path):
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return 'read-only file system'
    except OSError:
        pass
    return 'permission denied'


def file_kind(mode):
    """What a file that is not a regular file is, from its st_mode: 'a directory', 'a FIFO', ..."""
    kinds = ((stat.S_ISDIR, 'a directory'), (stat.S_ISFIFO, 'a FIFO'), (stat.S_ISSOCK, 'a socket'),
             (stat.S_ISCHR, 'a character device'), (stat.S_ISBLK, 'a block device'))
    return next((name for is_kind, name in kinds if is_kind(mode)), 'not a regular file')


def open_regular(path, error, of_what='', shown=None, binary=False, **text_args):
    """open(path) for reading, only once os.stat says it is a regular file: a FIFO would block
    open() for ever, and a socket or a device is no file of the run's.

    Args:
      error: the errors.Error class raised, naming the file, when it is not a regular file.
      of_what: what the file should hold, for the message: 'of records' gives '... expected a
        regular file of records'.
      shown: how the message names the file (default: the path).
      binary: open it in 'rb' mode; else text, with `text_args` (encoding=, errors=).
    Raises:
      `error` for a directory, a FIFO, a socket or a device; OSError as open() raises it
      (FileNotFoundError, PermissionError).
    """
    def check(mode):
        if not stat.S_ISREG(mode):
            raise error('%s is %s; expected a regular file%s' % (shown or path, file_kind(mode),
                                                                 ' ' + of_what if of_what else ''))
    check(os.stat(path).st_mode)
    # Non-blocking, so that a FIFO put in its place since the stat is caught, not waited on.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        check(os.fstat(fd).st_mode)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, 'rb' if binary else 'r', **text_args)


def error_line(error):
    """One line describing an OSError, a TensorFlow OpError or any exception."""
    if isinstance(error, OSError) and error.strerror:
        if error.filename is not None:
            return '%s: %s' % (error.filename, error.strerror)
        return error.strerror
    text = getattr(error, 'message', None) or str(error) or type(error).__name__
    lines = [line.rstrip() for line in str(text).strip().splitlines() if line.strip()]
    # TensorFlow may open with a header ('Graph execution error:'), an indented stack of
    # where the failing op was defined and a "Node: 'name'" line; the cause is the first
    # line that is none of these.
    causes = [line for line in lines
              if not (line[0].isspace() or line.endswith(':') or line.startswith('Node: '))]
    return (causes or [line.strip() for line in lines] or [type(error).__name__])[0]


class LockedError(RunError):
    """Another live process holds the lock; the message names it."""


class RunLock(object):
    """Context manager: an exclusive lock on `path`, held by this process while active.

    The lock is an flock(2) on the file, so the kernel releases it when the
    process ends in any way, kill -9 included; the file itself stays. It holds
    the holder's pid, host and start time, for the message of a refused process;
    a clean exit empties it, so content left in an unlocked file is the trace of
    a process that was killed, and the next holder logs that it takes over.

    Args:
      path: the lock file; its directory must exist.
      owner: what the holder is, for the messages ('trainer').
      flag: how the user named the directory, for the messages ('--log_root=runs/x').
      advice: what the refused process's user can do, the message's end.
    Raises (on entry):
      LockedError: another process holds the lock.
      OSError: the lock file cannot be written (a full disk); it names the file.
    """

    def __init__(self, path, owner, flag, advice='stop it first, or give another directory'):
        self.path = path
        self._owner = owner
        self._flag = flag
        self._advice = advice
        self._file = None

    def __enter__(self):
        lock_file = open(self.path, 'a+')
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_from_start(lock_file) or 'a process that has not written its name yet'
            lock_file.close()
            raise LockedError('%s: another %s is using this run: %s; %s'
                              % (self._flag, self._owner, holder, self._advice)) from None
        except OSError as e:  # a file system without flock (some network and FUSE mounts)
            logging.warning('%s: cannot lock it (%s): a second %s on this run would not be refused',
                            self.path, e.strerror or e, self._owner)
        else:
            self._log_take_over(lock_file)
        try:
            lock_file.seek(0)
            lock_file.truncate()
            lock_file.write('pid %d on host %s since %s\n' % (os.getpid(), socket.gethostname(),
                                                              time.strftime('%Y-%m-%d %H:%M:%S')))
            lock_file.flush()
        except OSError as e:  # a full disk
            _close_quietly(lock_file)  # releases the lock
            raise naming(e, self.path) from None
        self._file = lock_file
        return self

    def _log_take_over(self, lock_file):
        left = _read_from_start(lock_file)
        if left:
            logging.info('%s: taking over the lock left by %s, which is no longer running', self.path, left)

    def __exit__(self, exc_type, exc_value, traceback):
        if self._file is None:
            return False
        try:
            self._file.seek(0)
            self._file.truncate()
        except OSError:
            pass  # a full or read-only disk: the kernel releases the lock all the same
        self._file.close()  # closing the last descriptor releases the flock
        return False


def live_holder(path):
    """The text of lock file `path` ('pid N on host H since T') while the process it names may
    be running, else None. A process on this host is looked up by its pid; one on another
    host cannot be, and counts as running. Reads only: never takes the lock."""
    try:
        with open(path) as f:
            holder = f.read().strip()
    except OSError:
        return None
    found = re.match(r'pid (\d+) on host (\S+) ', holder)
    if not found:
        return None
    if found.group(2) != socket.gethostname():
        return holder
    try:
        os.kill(int(found.group(1)), 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # another user's process: it exists
    return holder


def _close_quietly(open_file):
    """Closes a file whose buffered text may not be writable any more; the descriptor closes all the same."""
    try:
        open_file.close()
    except OSError:
        pass


def _read_from_start(open_file):
    open_file.seek(0)
    return open_file.read().strip()


def replace_file(path, text):
    """Writes `text` to `path` through a temporary file and a rename: a crash leaves the old
    file or the new one, never a part of it. Raises OSError naming `path` (a full disk fails
    the write or the flush, whose error names no file)."""
    tmp = '%s.tmp-%d' % (path, os.getpid())
    try:
        with open(tmp, 'w') as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise naming(e, path) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def naming(error, path):
    """`error`, an OSError, as one whose filename is `path` (for error_line), when it has an errno."""
    if error.errno is None:
        return error
    return OSError(error.errno, error.strerror, path)
