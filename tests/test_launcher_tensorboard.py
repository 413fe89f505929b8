"""scripts/train_and_eval.py end to end on the digits sample, and a real TensorBoard reading its runs."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(REPO, 'scripts', 'train_and_eval.py')
# A tiny network on the bundled digits; eval scores the checkpoint at the last step.
TINY_DIGITS = ['--dataset=digits', '--num_residual_units=1', '--batch_size=32', '--nolr_batch_scaling',
               '--eval_interval_secs=1', '--noeval_after_training']
TRAIN_TAGS = ('total_loss', 'cross_entropy', 'weight_decay', 'precision', 'learning_rate',
              'examples_per_sec', 'global_step/sec', 'input/batch_queue_fill')
EVAL_TAGS = ('Precision', 'Best Precision', 'loss')


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def child_pids(output):
    """{'train': pid, 'eval': pid, 'tensorboard': pid} from the launcher's 'NAME: pid N' lines."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r'^(train|eval|tensorboard): pid (\d+)$',
                                                               output, re.M)}


def gone(pid):
    """True once neither the process nor anything left in its process group exists."""
    for probe in (os.kill, os.killpg):
        try:
            probe(pid, 0)
            return False
        except ProcessLookupError:
            pass
    return True


def assert_all_gone(pids, timeout=20):
    deadline = time.time() + timeout
    while not all(gone(p) for p in pids.values()) and time.time() < deadline:
        time.sleep(0.2)
    assert all(gone(p) for p in pids.values()), {n: p for n, p in pids.items() if not gone(p)}


class Launcher(object):
    """The launcher as a subprocess whose output a thread collects."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, LAUNCHER] + list(args), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self):
        return ''.join(self.lines)

    def wait_for(self, pattern, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline and self.proc.poll() is None:
            if re.search(pattern, self.output, re.M):
                return True
            time.sleep(0.2)
        return bool(re.search(pattern, self.output, re.M))

    def finish(self, timeout):
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(timeout=5)
        return self.proc.returncode


def get_json(port, route, **params):
    url = 'http://127.0.0.1:%d/%s' % (port, route)
    if params:
        url += '?' + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read().decode('utf-8'))


def scalar_steps(port, run, tag):
    """{step: value} of a scalar tag, through the scalars plugin ([wall_time, step, value] rows)."""
    return {step: value for _, step, value in get_json(port, 'data/plugin/scalars/scalars', run=run, tag=tag)}


@pytest.mark.timeout(420)
def test_launcher_runs_to_the_end_then_tensorboard_serves_its_runs(tmp_path):
    log_root = str(tmp_path / 'run')
    launcher = Launcher(*TINY_DIGITS, '--log_root=' + log_root, '--train_steps=30',
                        '--save_checkpoints_steps=15', '--log_every_n_steps=10', '--summary_histograms',
                        '--port=%d' % free_port(), '--exit_when_done')
    assert launcher.finish(timeout=300) == 0, launcher.output[-5000:]
    output = launcher.output
    pids = child_pids(output)
    assert sorted(pids) == ['eval', 'tensorboard', 'train'], output[-3000:]
    assert_all_gone(pids)
    assert re.search(r'^TensorBoard: http://127\.0\.0\.1:\d+/', output, re.M)
    assert re.search(r'^\[train\] .*step 30/30 \(100\.0%\): loss [0-9.]+, precision [0-9.]+, lr [0-9.e-]+, '
                     r'[0-9.]+ examples/sec, ETA 0:00:00$', output, re.M), output[-3000:]
    final = re.search(r'^\[eval\] step 30: precision ([0-9.]+)', output, re.M)
    assert final, output[-3000:]
    assert re.search(r'^training and eval done$', output, re.M), output[-3000:]
    # TensorBoard's TensorFlow start-up noise stays out: absl's banner, C++ info lines, cuInit.
    assert not re.findall(r'^\[tensorboard\] (?:WARNING: All log messages|[IWE]\d{4} |.*cuInit).*$', output, re.M)

    # A real TensorBoard on the run's log root.
    port = free_port()
    server = subprocess.Popen([sys.executable, '-m', 'tensorboard.main', '--logdir=' + log_root,
                               '--host=127.0.0.1', '--port=%d' % port],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        tags = {}
        while time.time() < deadline and server.poll() is None:
            try:
                tags = get_json(port, 'data/plugin/scalars/tags')
                # Loading is incremental: wait for the last eval scalar.
                if 30 in scalar_steps(port, 'eval', 'Precision'):
                    break
            except (urllib.error.URLError, ConnectionError, KeyError, ValueError):
                pass
            time.sleep(1)
        assert server.poll() is None, server.stderr.read()[-3000:]
        assert {'train', 'eval'} <= set(get_json(port, 'data/runs'))
        tags = get_json(port, 'data/plugin/scalars/tags')
        for tag in TRAIN_TAGS:
            assert sorted(scalar_steps(port, 'train', tag)) == [10, 20, 30], (tag, sorted(tags['train']))
        for tag in EVAL_TAGS:
            assert 30 in scalar_steps(port, 'eval', tag), (tag, sorted(tags['eval']))
        assert scalar_steps(port, 'eval', 'Precision')[30] == pytest.approx(float(final.group(1)), abs=1e-4)
        assert 'Precision@5' not in tags['eval']  # digits have 10 classes: no top-5
        train_loss = scalar_steps(port, 'train', 'total_loss')
        cross_entropy = scalar_steps(port, 'train', 'cross_entropy')
        assert all(train_loss[s] > cross_entropy[s] for s in (10, 20, 30))  # plus weight decay

        images = get_json(port, 'data/plugin/images/tags')['train']
        assert sorted(images) == ['input_images/image/%d' % i for i in range(3)]
        histograms = set(get_json(port, 'data/plugin/histograms/tags')['train'])
        assert {'activations/unit_1_0', 'activations/unit_2_0', 'activations/unit_3_0',
                'weights/init/conv/weights', 'weights/logit/weights'} <= histograms, sorted(histograms)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert_all_gone({'own tensorboard': server.pid})


@pytest.mark.timeout(300)
def test_sigint_stops_all_three_after_a_final_checkpoint(tmp_path):
    log_root = str(tmp_path / 'run')
    launcher = Launcher(*TINY_DIGITS, '--log_root=' + log_root, '--train_steps=100000',
                        '--log_every_n_steps=5', '--port=%d' % free_port())
    try:
        assert launcher.wait_for(r'^\[train\] .*step 10/100000', timeout=200), launcher.output[-3000:]
        assert launcher.wait_for(r'^eval: pid', timeout=30), launcher.output[-3000:]
    finally:
        launcher.proc.send_signal(signal.SIGINT)
        returncode = launcher.finish(timeout=120)
    output = launcher.output
    assert returncode == 128 + signal.SIGINT, output[-3000:]
    pids = child_pids(output)
    assert sorted(pids) == ['eval', 'tensorboard', 'train'], output[-3000:]
    assert_all_gone(pids)
    assert re.search(r'^\[train\] .*stopped by SIGINT at step \d+; checkpoint \S+ saved', output, re.M), output[-3000:]
    saved = re.search(r'^stopped; latest checkpoint: (.*model\.ckpt-(\d+))$', output, re.M)
    assert saved, output[-3000:]
    # Periodic checkpoints come every 120 s: this one is the stop's.
    assert int(saved.group(2)) >= 10
    assert os.path.exists(saved.group(1) + '.index')
    assert 'Traceback' not in output, output[-3000:]


@pytest.mark.timeout(60)
@pytest.mark.parametrize('flag, error', [
    ('--mode=train', 'error: --mode=train: the launcher runs both modes; leave --mode out'),
    ('--port=abc', "error: argument --port: invalid int value: 'abc'"),
    ('--port=70000', 'error: --port=70000: expected a port number in 1..65535'),
])
def test_launcher_flag_errors_are_one_line_and_start_nothing(tmp_path, flag, error):
    proc = subprocess.run([sys.executable, LAUNCHER, flag, '--log_root=' + str(tmp_path)],
                          capture_output=True, text=True, timeout=50)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [error]
    assert proc.stdout == '' and os.listdir(str(tmp_path)) == []


@pytest.mark.timeout(120)
def test_a_bad_training_flag_gives_the_trainers_one_error_line():
    proc = subprocess.run([sys.executable, LAUNCHER, '--dataset=digits', '--batch_size=0', '--no_tensorboard'],
                          capture_output=True, text=True, timeout=110)
    assert proc.returncode == 2, proc.stdout[-3000:]
    errors = [line for line in proc.stdout.splitlines() if re.match(r'(\[\w+\] )?error: ', line)]
    assert errors == ['[train] error: --batch_size=0: expected a positive integer'], proc.stdout[-3000:]
    assert sorted(child_pids(proc.stdout)) == ['train']  # eval never started
