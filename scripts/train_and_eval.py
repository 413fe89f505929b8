"""Training, the eval process beside it and TensorBoard, with one command.

  python scripts/train_and_eval.py --dataset=digits
  python scripts/train_and_eval.py --dataset=cifar10 --log_root=runs/cifar10 --port=6006

Every flag except the launcher's own goes to both resnet_main.py processes, train
and eval, so give data, path, model and step flags as you would to resnet_main.py
(the launcher sets --mode). TensorBoard serves the log root on 127.0.0.1; the URL
is printed at the start. Output lines of the three are prefixed [train], [eval]
and [tensorboard].

Ctrl-C (SIGINT) or SIGTERM stops all three: training finishes its step and saves
a checkpoint, eval and TensorBoard stop, and the launcher exits with 130 (143 for
SIGTERM). A second Ctrl-C kills whatever is left at once. When training and eval
are done, TensorBoard keeps serving until Ctrl-C (exit 0), unless --exit_when_done.
If training or eval fails, the launcher stops the others and exits with its status.

Launcher flags:
  --port=N              TensorBoard's port (default 6006, or a free one if 6006 is taken)
  --no_tensorboard      run training and eval only
  --exit_when_done      exit once training and eval are done
  --stop_timeout_secs=S how long training may take to save and exit after a stop (300)
"""
import argparse
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from resnet_cifar import quiet  # no TensorFlow in it

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(REPO, 'resnet_main.py')
HOST = '127.0.0.1'
DEFAULT_PORT = 6006
POLL_SECS = 0.2
QUICK_STOP_SECS = 15  # for eval and TensorBoard, which have nothing to save


class LaunchError(Exception):
    """A launcher flag or environment that cannot work; exit status 2."""


class _Parser(argparse.ArgumentParser):
    """Reports a bad launcher flag as a LaunchError (one line), not usage text."""

    def error(self, message):
        raise LaunchError(message)


def parse_args(argv):
    """Splits argv into the launcher's options and the flags passed to resnet_main.py.

    Returns (options, passthrough). options also holds dataset, log_root, train_dir
    and eval_dir as the resnet_main.py processes will see them (they stay in passthrough).
    """
    own = _Parser(add_help=False, allow_abbrev=False)
    own.add_argument('--port', type=int)
    own.add_argument('--no_tensorboard', action='store_true')
    own.add_argument('--exit_when_done', action='store_true')
    own.add_argument('--stop_timeout_secs', type=float, default=300.0)
    own.add_argument('-h', '--help', action='store_true')
    options, passthrough = own.parse_known_args(argv)
    shared = _Parser(add_help=False, allow_abbrev=False)
    for name in ('dataset', 'log_root', 'train_dir', 'eval_dir', 'mode'):
        shared.add_argument('--' + name)
    paths, _ = shared.parse_known_args(passthrough)
    if paths.mode is not None:
        raise LaunchError('--mode=%s: the launcher runs both modes; leave --mode out' % paths.mode)
    if options.port is not None and not 0 < options.port < 65536:
        raise LaunchError('--port=%d: expected a port number in 1..65535' % options.port)
    if options.stop_timeout_secs <= 0:
        raise LaunchError('--stop_timeout_secs=%g: expected a positive number' % options.stop_timeout_secs)
    # The same defaults as resnet_main.py.
    options.dataset = paths.dataset or 'cifar10'
    options.log_root = paths.log_root or os.path.join('runs', options.dataset)
    options.train_dir = paths.train_dir or os.path.join(options.log_root, 'train')
    options.eval_dir = paths.eval_dir or os.path.join(options.log_root, 'eval')
    return options, passthrough


def tensorboard_logdir(options):
    """The log root, or the nearest directory above it and --train_dir/--eval_dir."""
    return os.path.commonpath([os.path.abspath(p) for p in
                               (options.log_root, options.train_dir, options.eval_dir)])


def port_is_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def choose_port(requested):
    """The requested port if free (LaunchError if not), else 6006 or any free port."""
    if requested is not None:
        if not port_is_free(requested):
            raise LaunchError('--port=%d: already in use on %s; pick another or leave --port out'
                              % (requested, HOST))
        return requested
    return DEFAULT_PORT if port_is_free(DEFAULT_PORT) else free_port()


def port_answers(port):
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def latest_checkpoint_name(log_root):
    """'model.ckpt-N' from log_root/checkpoint, without importing TensorFlow; None if none."""
    try:
        with open(os.path.join(log_root, 'checkpoint')) as f:
            match = re.search(r'^model_checkpoint_path: "(.*)"', f.read(), re.M)
    except OSError:
        return None
    return match and os.path.basename(match.group(1))


def _find_prctl():
    try:
        return ctypes.CDLL(None).prctl if sys.platform.startswith('linux') else None
    except (AttributeError, OSError):
        return None


_PRCTL = _find_prctl()  # looked up here: the child between fork and exec should only call it
_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """In the child, before exec: SIGTERM it when the launcher dies, even by SIGKILL."""
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Child(object):
    """One process of the three, its output copied line by line with a [name] prefix."""

    def __init__(self, name, command, out_lock, quieted=False):
        """`quieted`: a process that does not quiet TensorFlow itself (TensorBoard): TensorFlow
        keeps its CUDA platform off (the cuInit error of a machine without a driver), and the
        C++ log lines below TF_CPP_MIN_LOG_LEVEL are dropped from its output (quiet.keep_line)."""
        env = dict(os.environ, PYTHONUNBUFFERED='1')
        env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
        if quieted:
            env.setdefault('TF_ENABLED_DEVICE_TYPES', 'CPU')
        self._level = int(env['TF_CPP_MIN_LOG_LEVEL']) if quieted and env['TF_CPP_MIN_LOG_LEVEL'].isdigit() else 0
        self.name = name
        # Its own session: a Ctrl-C in the terminal reaches the launcher only, which
        # then stops the children in order.
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                     preexec_fn=_die_with_parent if _PRCTL else None)
        self.last_line = ''
        self._lock = out_lock
        self._reader = threading.Thread(target=self._copy_output, daemon=True)
        self._reader.start()
        say('%s: pid %d' % (name, self.proc.pid), out_lock)

    def _copy_output(self):
        for raw in iter(self.proc.stdout.readline, b''):
            if not quiet.keep_line(raw, self._level):
                continue
            line = raw.decode('utf-8', 'replace').rstrip('\n')
            if line.strip():
                self.last_line = line
            say('[%s] %s' % (self.name, line), self._lock)
        self.proc.stdout.close()

    def running(self):
        return self.proc.poll() is None

    def signal(self, signum):
        if self.running():
            try:
                self.proc.send_signal(signum)
            except ProcessLookupError:
                pass

    def finish_output(self):
        self._reader.join(timeout=5)


def say(text, lock):
    with lock:
        sys.stdout.write(text + '\n')
        sys.stdout.flush()


class Launcher(object):

    def __init__(self, options, passthrough):
        self.options = options
        self.passthrough = passthrough
        self.lock = threading.Lock()
        self.stop_signals = []  # signal numbers received, in order
        self.trainer = self.evaluator = self.tensorboard = None
        self.url = None

    def _on_signal(self, signum, frame):
        self.stop_signals.append(signum)

    def _killing(self):
        return len(self.stop_signals) >= 2

    def run(self):
        """Starts the three, watches them; returns the exit status."""
        port = None
        if not self.options.no_tensorboard:
            try:
                import tensorboard  # noqa: F401  (only to give a clear error early)
            except ImportError:
                raise LaunchError('tensorboard is not installed: pip install tensorboard '
                                  '(or pass --no_tensorboard)') from None
            port = choose_port(self.options.port)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)
        try:
            return self._watch(port)
        finally:
            self._stop_all()

    def _start_main(self, name, mode):
        # The eval process beside training scores the last checkpoint; the trainer need not again.
        own = ['--noeval_after_training'] if mode == 'train' else []
        return Child(name, [sys.executable, MAIN, '--mode=' + mode] + own + self.passthrough, self.lock)

    def _watch(self, port):
        started = time.time()
        self.trainer = self._start_main('train', 'train')
        if port is not None:
            logdir = tensorboard_logdir(self.options)
            self.tensorboard = Child('tensorboard', [
                sys.executable, '-m', 'tensorboard.main', '--logdir=' + logdir,
                '--host=' + HOST, '--port=%d' % port], self.lock, quieted=True)
            self.url = 'http://%s:%d/' % (HOST, port)
            say('TensorBoard: %s (logdir %s)' % (self.url, logdir), self.lock)
        config_json = os.path.join(self.options.train_dir, 'config.json')
        tensorboard_ready = done = False
        while True:
            if self.stop_signals:
                return self._stop_on_signal(done)
            # Eval starts once training got past its flag and data checks (it writes
            # config.json then), so a bad flag gives one error line, not two.
            if self.evaluator is None and self.trainer.running() and _written_since(config_json, started):
                self.evaluator = self._start_main('eval', 'eval')
            status = self._check_children()
            if status is not None:
                return status
            if self.tensorboard and not tensorboard_ready and port_answers(port):
                tensorboard_ready = True
                say('TensorBoard ready: %s' % self.url, self.lock)
            if not done and not self.trainer.running() and self.evaluator and not self.evaluator.running():
                done = True
                if self.options.exit_when_done or not self.tensorboard:
                    say('training and eval done', self.lock)
                    return 0
                say('training and eval done; TensorBoard still serves %s; Ctrl-C to stop' % self.url,
                    self.lock)
            time.sleep(POLL_SECS)

    def _check_children(self):
        """An exit status when a child failed (after stopping the others), else None."""
        if not self.trainer.running() and self.trainer.proc.returncode != 0:
            self.trainer.finish_output()
            if not self.trainer.last_line.startswith('error: '):  # else its one line says it all
                say('error: training exited with status %d; stopping the others'
                    % self.trainer.proc.returncode, self.lock)
            return self.trainer.proc.returncode
        if self.evaluator and not self.evaluator.running() and self.evaluator.proc.returncode != 0:
            self.evaluator.finish_output()
            say('error: eval exited with status %d; stopping training (it saves a checkpoint) and '
                'TensorBoard' % self.evaluator.proc.returncode, self.lock)
            return self.evaluator.proc.returncode
        if self.trainer.proc.returncode == 0 and self.evaluator is None:
            # Training finished before eval started (nothing left to train): eval scores the end.
            self.evaluator = self._start_main('eval', 'eval')
        if self.tensorboard and not self.tensorboard.running():
            self.tensorboard.finish_output()
            say('warning: TensorBoard exited with status %d (%s); training and eval go on'
                % (self.tensorboard.proc.returncode, self.tensorboard.last_line), self.lock)
            self.tensorboard = None
        return None

    def _stop_on_signal(self, done):
        name = signal.Signals(self.stop_signals[0]).name
        say('%s: stopping; training saves a checkpoint first (Ctrl-C again to kill at once)' % name,
            self.lock)
        self._stop_all()
        checkpoint = latest_checkpoint_name(self.options.log_root)
        say('stopped; latest checkpoint: %s' % (os.path.join(self.options.log_root, checkpoint)
                                                 if checkpoint else 'none'), self.lock)
        return 0 if done else 128 + self.stop_signals[0]

    def _stop_all(self):
        """Training by SIGINT (it saves, then exits), eval and TensorBoard by SIGTERM; waits for all."""
        children = [c for c in (self.trainer, self.evaluator, self.tensorboard) if c is not None]
        for child in children:
            child.signal(signal.SIGINT if child is self.trainer else signal.SIGTERM)
        deadline = time.time() + QUICK_STOP_SECS
        trainer_deadline = time.time() + self.options.stop_timeout_secs
        while any(c.running() for c in children):
            now = time.time()
            for child in children:
                late = now > (trainer_deadline if child is self.trainer else deadline)
                if child.running() and (late or self._killing()):
                    say('killing %s (pid %d)' % (child.name, child.proc.pid), self.lock)
                    child.signal(signal.SIGKILL)
                    child.proc.wait()
            time.sleep(POLL_SECS)
        for child in children:
            child.finish_output()


def _written_since(path, since):
    try:
        return os.stat(path).st_mtime >= since - 1.0
    except OSError:
        return False


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        options, passthrough = parse_args(argv)
        if options.help:
            print(__doc__)
            return 0
        return Launcher(options, passthrough).run()
    except LaunchError as e:
        sys.stderr.write('error: %s\n' % e)
        return 2


if __name__ == '__main__':
    sys.exit(main())
