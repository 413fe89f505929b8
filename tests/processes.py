"""resnet_main.py in real subprocesses, and what tests read back from a run directory."""
import glob
import os
import re
import shutil
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(REPO, 'resnet_main.py')

# The smallest ResNet (8 layers) on the bundled digits, which are real handwritten images.
# A ResNet-8 at batch 32; no held-out score at the end of training (tests that want it ask for it).
TINY_DIGITS = ['--dataset=digits', '--num_residual_units=1', '--batch_size=32', '--noeval_after_training']


def run(*args, timeout=240):
    """resnet_main.py with `args` to the end; returns the CompletedProcess (stdout, stderr as text)."""
    return subprocess.run([sys.executable, MAIN] + list(args), capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


class Process(object):
    """A resnet_main.py subprocess whose stderr lines are collected as they come."""

    def __init__(self, args, **popen_args):
        self.proc = subprocess.Popen([sys.executable, MAIN] + list(args), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd=REPO, **popen_args)
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
