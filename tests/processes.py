"""The tests' shared helpers: resnet_main.py in real subprocesses and in this process, and what
tests read back from a run directory (checkpoints, event files, log lines)."""
import glob
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest
from absl import logging

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(REPO, 'resnet_main.py')

# The smallest ResNet (8 layers) on the bundled digits, which are real handwritten images.
# A ResNet-8 at batch 32 at the rates as given (not scaled to the batch); no held-out score at the
# end of training (tests that want it ask for it).
TINY_DIGITS = ['--dataset=digits', '--num_residual_units=1', '--batch_size=32', '--nolr_batch_scaling',
               '--noeval_after_training']
# A run that does not end by itself: tests stop it.
LONG_RUN = ['--mode=train', '--train_steps=100000', '--save_checkpoints_steps=100000']
# A tiny network that learns the synthetic classes (synthetic.py) in a few hundred steps.
TINY = ['--num_residual_units=1', '--batch_size=32', '--nolr_batch_scaling', '--log_every_n_steps=10',
        '--noeval_after_training']


def run(*args, timeout=240):
    """resnet_main.py with `args` to the end, in the test's own empty working directory (conftest.py);
    returns the CompletedProcess (stdout, stderr as text)."""
    return subprocess.run([sys.executable, MAIN] + list(args), capture_output=True, text=True,
                          timeout=timeout)


class Process(object):
    """A resnet_main.py subprocess whose stderr lines are collected as they come."""

    def __init__(self, args, **popen_args):
        self.proc = subprocess.Popen([sys.executable, MAIN] + list(args), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, **popen_args)
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def stderr(self):
        return ''.join(self.lines)

    def wait_for(self, pattern, timeout):
        """Waits until a stderr line matches `pattern`; returns the match."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for line in list(self.lines):
                found = re.search(pattern, line)
                if found:
                    return found
            if self.proc.poll() is not None:
                self._reader.join(5)
                break
            time.sleep(0.05)
        raise AssertionError('no line matching %r (exit %s):\n%s'
                             % (pattern, self.proc.poll(), self.stderr[-4000:]))

    def wait(self, timeout):
        try:
            self.proc.wait(timeout=timeout)
        finally:
            self.kill()
        self._reader.join(10)
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith('error:')]


def assert_one_line_error(code, stderr, expected_code, *fragments):
    """The program exited with `expected_code` and one `error:` line holding every fragment."""
    assert code == expected_code, stderr[-3000:]
    lines = error_lines(stderr)
    assert len(lines) == 1, stderr[-3000:]
    assert 'Traceback' not in stderr, stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def checkpoint_steps(log_root):
    """Steps of the checkpoints whose index file exists in log_root, sorted."""
    return sorted(int(re.search(r'model\.ckpt-(\d+)\.index$', p).group(1))
                  for p in glob.glob(os.path.join(log_root, 'model.ckpt-*.index')))


def logged_steps(stderr, total):
    """{step: (loss text, lr)} of the progress lines 'step N/total ...: loss X, ..., lr Y'."""
    return {int(m.group(1)): (m.group(2), float(m.group(3))) for m in re.finditer(
        r'step (\d+)/%d .*?: loss ([0-9.naif]+), precision [0-9.]+, lr ([0-9.e+-]+),' % total, stderr)}


def snapshot(directory):
    """{relative path: (size, mtime_ns)} of every file below `directory`."""
    found = {}
    for folder, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(folder, name)
            stat = os.stat(path)
            found[os.path.relpath(path, directory)] = (stat.st_size, stat.st_mtime_ns)
    return found


def copy_run(source, destination):
    """A copy of a run directory, as `cp -r` makes it."""
    shutil.copytree(source, destination)
    return str(destination)


def learning_rate_at(step, boundaries, values, min_lrn_rate):
    """The rate of the piecewise schedule at global step `step` (config.Schedule.rate_at)."""
    from resnet_cifar.config import Schedule
    return Schedule(lr_boundaries=boundaries, lr_values=values, min_lrn_rate=min_lrn_rate).rate_at(step)


def load_script(name):
    """The module of scripts/<name>.py, loaded in this process."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, 'scripts', name + '.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_main(*args, timeout=240, check=True):
    """run(), and with `check` an AssertionError showing the output unless it exits 0."""
    proc = run(*args, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError('exit %d\nstdout:\n%s\nstderr:\n%s' % (proc.returncode, proc.stdout, proc.stderr[-5000:]))
    return proc


def start_main(*args):
    return subprocess.Popen([sys.executable, MAIN] + list(args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def read_scalars(directory):
    """{tag: {step: value}} from every event file in `directory`."""
    import tensorflow as tf
    scalars = {}
    for path in sorted(glob.glob(os.path.join(directory, 'events.out.tfevents.*'))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.HasField('simple_value'):
                    scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def eval_precisions(stdout):
    """[(step, precision)] from eval's one line per checkpoint."""
    return [(int(m.group(1)), float(m.group(2)))
            for m in re.finditer(r'^step (\d+): precision ([0-9.]+)', stdout, re.M)]


class AbslRecords(object):
    """Collects absl log messages (at INFO and above) while active."""

    def __init__(self, pattern=None):
        import logging as std_logging
        self.messages = []
        self.seen = threading.Event()
        self._pattern = pattern

        class Handler(std_logging.Handler):
            def emit(handler, record):
                message = record.getMessage()
                self.messages.append(message)
                if self._pattern and re.search(self._pattern, message):
                    self.seen.set()
        self._handler = Handler()

    def __enter__(self):
        logging.get_absl_logger().addHandler(self._handler)
        self._verbosity = logging.get_verbosity()
        logging.set_verbosity(logging.INFO)
        return self

    def __exit__(self, *exc):
        logging.set_verbosity(self._verbosity)
        logging.get_absl_logger().removeHandler(self._handler)


def latest_step(log_root):
    """The global step of log_root's latest checkpoint, or None."""
    import tensorflow as tf
    path = tf.train.latest_checkpoint(log_root)
    return None if path is None else int(path.rsplit('-', 1)[1])


def read_checkpoint(prefix):
    """{name: value} of every tensor of a checkpoint; reading checks each tensor's checksum."""
    import tensorflow as tf
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def assert_all_checkpoints_loadable(log_root):
    steps = checkpoint_steps(log_root)
    assert steps, os.listdir(log_root)
    for step in steps:
        values = read_checkpoint(os.path.join(log_root, 'model.ckpt-%d' % step))
        assert int(values['global_step']) == step
    return steps


def main_exit(args, capsys):
    """(exit code, stderr) of resnet_main with `args`; the flags are reset afterwards."""
    import resnet_main
    resnet_main.FLAGS.unparse_flags()
    try:
        with pytest.raises(SystemExit) as exit_info:
            resnet_main.main(resnet_main.parse_flags(['resnet_main.py'] + list(args)))
    finally:
        resnet_main.FLAGS.unparse_flags()
    return exit_info.value.code, capsys.readouterr().err


def main_exit_status(args, capsys):
    """(exit status, stderr) of resnet_main's main() on `args` in this process (status 0 when it
    returns); the flags are reset afterwards."""
    capsys.readouterr()
    return main_status(args), capsys.readouterr().err


def main_stdout(args, capsys):
    """stdout of resnet_main's main() on `args` in this process, which must exit 0 (for an eval
    whose score is the subject, not the process: no TensorFlow start)."""
    capsys.readouterr()
    status = main_status(args)
    out, err = capsys.readouterr()
    assert status == 0, 'exit %s\nstdout:\n%s\nstderr:\n%s' % (status, out, err[-3000:])
    return out


def main_status(args):
    """The exit status of resnet_main's main() on `args` in this process (0 when it returns);
    the flags, the environment (main() sets TensorFlow's, such as TF_ENABLED_DEVICE_TYPES) and
    absl's log level are put back afterwards, so that later tests and their subprocesses see
    none of it. Output goes where it would (capsys can read it)."""
    import resnet_main
    from absl import logging
    environ, verbosity = dict(os.environ), logging.get_verbosity()
    resnet_main.FLAGS.unparse_flags()
    try:
        resnet_main.main(resnet_main.parse_flags(['resnet_main.py'] + list(args)))
        return 0
    except SystemExit as e:
        return e.code
    finally:
        resnet_main.FLAGS.unparse_flags()
        os.environ.clear()
        os.environ.update(environ)
        logging.set_verbosity(verbosity)


def main_log(args):
    """(exit status, its log as text) of resnet_main's main() on `args` in this process: for a run
    whose log, not its process, is the subject (no TensorFlow start). Parsing the flags sets absl's
    level from --verbosity, so the run gets --verbosity=0: INFO, as resnet_main.py logs."""
    with AbslRecords() as log:
        status = main_status(list(args) + ['--verbosity=0'])
    return status, '\n'.join(log.messages)


def resolve(args):
    """The RunConfig resnet_main builds for `args`; the flags are reset afterwards."""
    import resnet_main
    f = resnet_main.FLAGS
    f.unparse_flags()
    try:
        f(['resnet_main.py'] + list(args))
        return resnet_main.configure()
    finally:
        f.unparse_flags()
