"""A quiet TensorFlow start: its start-up noise off, real errors through.

Where each line of noise comes from (TensorFlow 2.21, measured):

* ``WARNING: All log messages before absl::InitializeLog() ...``, then
  ``I... port.cc] oneDNN custom operations are on`` and ``I... cudart_stub.cc]
  Could not find cuda drivers``: printed by static initialisers while
  ``import tensorflow`` loads libtensorflow_framework.so, and again by the copy
  of absl/TSL inside ``_pywrap_profiler_plugin.so``. They come before TensorFlow
  reads TF_CPP_MIN_LOG_LEVEL, so no variable turns them off (also at 3; absl
  has no environment variable for its level; GLOG_* is not read). The only
  handle is the import's stderr: `tensorflow_import` filters absl-format lines
  there by the level TF_CPP_MIN_LOG_LEVEL asks for and passes every other byte.
* ``E... cuda_platform.cc] failed call to cuInit: ... (303)``: the CUDA platform
  starting on a machine without a driver. TF_ENABLED_DEVICE_TYPES=CPU, set
  before the import, keeps TensorFlow from starting it: `prepare` sets it for
  runs that use no GPU.
* ``E... util.cc] oneDNN supports DT_UINT8 only on platforms with AVX-512``:
  oneDNN's transpose given uint8 (also on AVX-512 CPUs); cifar_input no longer
  transposes uint8.
* ``WARNING:tensorflow:From ...: ... is deprecated and will be removed``
  (eight of them) and ``INFO:tensorflow:Graph was finalized`` and the like:
  TensorFlow's Python logger; a filter on the 'tensorflow' logger drops them.

The user's own settings win: `prepare` only fills in variables that are unset.
To see everything again: ``TF_CPP_MIN_LOG_LEVEL=0 python resnet_main.py ...``
(every filter here follows that variable; at 0 none is installed).

Use, before anything imports TensorFlow (absl and this module do not)::

    from resnet_cifar import quiet
    quiet.prepare(uses_gpu=FLAGS.num_gpus > 0 and FLAGS.tower_device == 'gpu')
    tf = quiet.import_tensorflow()
"""
import contextlib
import logging
import os
import re
import sys
import warnings

DEFAULT_MIN_LOG_LEVEL = '2'  # TensorFlow's C++ log: errors and fatals only

# absl's C++ log line: severity, MMDD, time, thread, file:line]
_ABSL_LINE = re.compile(rb'^([IWEF])\d{4} [0-9:.]+\s+\d+ [^\s\]]+:\d+\] ')
_ABSL_BANNER = b'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR'
_SEVERITY = {b'I': 0, b'W': 1, b'E': 2, b'F': 3}
_DEPRECATION = 'is deprecated and will be removed'
_TF_MODULES = r'(tensorflow|tf_keras|keras|tensorboard|google\.protobuf|flatbuffers|h5py)(\.|$)'


def min_log_level():
    """TF_CPP_MIN_LOG_LEVEL as TensorFlow reads it: an int 0..3; unset or malformed is 0."""
    try:
        return max(0, min(3, int(os.environ.get('TF_CPP_MIN_LOG_LEVEL', '0'))))
    except ValueError:
        return 0


class _TensorFlowLogFilter(logging.Filter):
    """On the 'tensorflow' logger: INFO chatter from level 1, deprecation notices from level 2."""

    def filter(self, record):
        level = min_log_level()
        if level >= 1 and record.levelno < logging.WARNING:
            return False
        if level >= 2 and record.levelno == logging.WARNING and _DEPRECATION in str(record.msg):
            return False
        return True


_LOG_FILTER = _TensorFlowLogFilter()


def prepare(uses_gpu=True):
    """Call before TensorFlow is imported. Returns the TF_CPP_MIN_LOG_LEVEL in force.

    Args:
      uses_gpu: False when the run needs no GPU: TensorFlow then leaves its CUDA
        platform off (TF_ENABLED_DEVICE_TYPES=CPU), whose start on a machine
        without a driver logs a cuInit error.
    A variable the user set is left as it is.
    """
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', DEFAULT_MIN_LOG_LEVEL)
    if not uses_gpu:
        os.environ.setdefault('TF_ENABLED_DEVICE_TYPES', 'CPU')
    level = min_log_level()
    # The logger TensorFlow will use is this one; it need not be imported for that.
    tf_logger = logging.getLogger('tensorflow')
    if _LOG_FILTER not in tf_logger.filters:
        tf_logger.addFilter(_LOG_FILTER)
    if level >= 2:
        # Python warnings that TensorFlow's own code (and what it imports) triggers.
        warnings.filterwarnings('ignore', category=DeprecationWarning, module=_TF_MODULES)
        warnings.filterwarnings('ignore', category=PendingDeprecationWarning, module=_TF_MODULES)
    return level


def keep_line(line, level):
    """False for a C++ log line (or absl's pre-initialisation banner) below `level`."""
    if level < 1:
        return True
    if line.rstrip(b'\r\n') == _ABSL_BANNER:
        return False
    match = _ABSL_LINE.match(line)
    if not match:
        return True
    severity = _SEVERITY[match.group(1)]
    return severity >= level or severity == _SEVERITY[b'F']


def _pump(read_fd, write_fd, level):
    pending = b''
    while True:
        try:
            chunk = os.read(read_fd, 65536)
        except OSError:
            chunk = b''
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b'\n')
        out = b''.join(line + b'\n' for line in lines if keep_line(line + b'\n', level))
        _write_all(write_fd, out)
    if pending and keep_line(pending, level):
        _write_all(write_fd, pending)
    os.close(read_fd)


def _write_all(fd, data):
    while data:
        try:
            data = data[os.write(fd, data):]
        except InterruptedError:
            continue
        except OSError:
            return


@contextlib.contextmanager
def stderr_filter(level=None):
    """Within the block, file descriptor 2 goes through `keep_line`.

    Only absl-format C++ log lines below `level` (default: TF_CPP_MIN_LOG_LEVEL)
    and absl's banner are dropped; everything else, Python tracebacks and
    TensorFlow errors included, is passed on line by line, in order. At level 0
    nothing is changed.

    The filter is a forked child process, not a thread: while a shared library
    loads, the main thread holds the GIL, and a fatal line followed by an abort
    must still come out (the child drains the pipe after this process is gone).
    """
    level = min_log_level() if level is None else level
    if level < 1:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:  # the filter: reads until every writer is gone
        try:
            os.close(write_fd)
            _pump(read_fd, saved, level)
        finally:
            os._exit(0)
    os.close(read_fd)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        finally:
            os.dup2(saved, 2)  # the pipe's last writer here goes: the filter drains it and ends
            os.close(saved)
            os.waitpid(child, 0)  # its lines come out before anything written after the block


# TensorFlow's import also imports Keras's optimizers, only to register them for Keras
# SavedModels, and skips them when that import fails. This suite uses no Keras, and with
# Keras 3 installed that import took 2 of the 5 seconds of every start (TensorFlow 2.21,
# 2026-12-01). `tf.keras` still loads Keras when something asks for it.
_SKIPPED_AT_IMPORT = ('keras.src.optimizers', 'tf_keras.src.optimizers')


def import_tensorflow():
    """Imports TensorFlow with `stderr_filter` around the import, and without Keras; returns
    the module.

    Call `prepare` first. Later ``import tensorflow`` statements get the same module.
    """
    if 'tensorflow' in sys.modules:
        return sys.modules['tensorflow']
    # A None entry makes `import name` fail at once, without importing its packages.
    skipped = [name for name in _SKIPPED_AT_IMPORT if name not in sys.modules]
    sys.modules.update(dict.fromkeys(skipped))
    try:
        with stderr_filter():
            import tensorflow as tf
    finally:
        for name in skipped:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
    return tf
