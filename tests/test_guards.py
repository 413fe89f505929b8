"""guards.py: stop signals, output-directory checks, the trainer's lock, one-line error text."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import processes
from processes import (LONG_RUN, MAIN, TINY_DIGITS, AbslRecords, Process, assert_one_line_error,
                       checkpoint_steps)
from resnet_cifar import guards
from resnet_cifar import training

TINY = ['--num_residual_units=1', '--batch_size=32', '--nolr_batch_scaling', '--noeval_after_training']


WAITING_SCRIPT = '\n'.join([
    'import os, sys, time',
    'from resnet_cifar import guards',
    'with guards.StopSignals(first_message="%s: asked to stop") as stop:',
    '    print("ready", flush=True)',
    '    while not stop.requested:',
    '        time.sleep(0.01)',
    '    print("requested", stop.signal_name, flush=True)',
    '    os.read(os.pipe()[0], 1)  # blocks for good',
])


def start_waiting_script():
    """A process whose main thread blocks for good under StopSignals, once asked to stop."""
    proc = subprocess.Popen([sys.executable, '-c', WAITING_SCRIPT], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == 'ready'
    return proc


@pytest.mark.timeout(60)
@pytest.mark.parametrize('first, second, after_the_window', [
    (signal.SIGINT, signal.SIGINT, False),  # the same kind, right after: Ctrl-C twice
    (signal.SIGTERM, signal.SIGINT, True),  # another kind, later than the same request's window
])
def test_second_signal_exits_at_once_even_while_the_main_thread_waits(first, second, after_the_window):
    proc = start_waiting_script()
    try:
        proc.send_signal(first)
        assert proc.stdout.readline().split() == ['requested', first.name]
        if after_the_window:
            time.sleep(guards.StopSignals.SAME_REQUEST_SECS + 0.2)  # the time is what is tested here
        assert proc.poll() is None  # the first signal only asks
        proc.send_signal(second)
        assert proc.wait(timeout=10) == 128 + second
        stderr = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert '%s: asked to stop' % first.name in stderr
    assert 'error: %s again: exiting at once' % second.name in stderr


@pytest.mark.timeout(60)
@pytest.mark.timeout(60)
def test_a_signal_of_another_kind_right_after_the_first_is_the_same_stop_request():
    """A terminal's Ctrl-C (SIGINT) and a wrapper script's trap that passes SIGTERM on (review
    finding 3): one request. A third signal, of a kind already seen, exits at once. (Signals sent
    together may arrive in either order.)"""
    proc = start_waiting_script()
    try:
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGTERM)
        requested, first = proc.stdout.readline().split()
        assert requested == 'requested' and first in ('SIGINT', 'SIGTERM')
        for line in proc.stderr:  # ends (EOF) if the process exits instead
            assert 'exiting at once' not in line
            # Python runs pending handlers in signal-number order, the watcher counts them as they
            # came: the two names are the two kinds, in either order.
            same = re.search(r'(SIG[A-Z]+) right after (SIG[A-Z]+): the same stop request', line)
            if same:
                assert set(same.groups()) == {'SIGINT', 'SIGTERM'}, line
                break
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 128 + signal.SIGTERM
        assert 'error: SIGTERM again: exiting at once' in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.timeout(120)
def test_training_saves_its_step_on_ctrl_c_and_a_wrappers_sigterm_right_after(tmp_path):
    """Issue 26 #9 for users' scripts (review finding 3): SIGINT and SIGTERM together, as a
    terminal's Ctrl-C and a `trap` passing SIGTERM on to `python resnet_main.py ... &` send them."""
    log_root = str(tmp_path / 'run')
    trainer = Process(TINY_DIGITS + LONG_RUN + ['--log_root=' + log_root, '--log_every_n_steps=1'])
    try:
        trainer.wait_for(r'step 3/100000', 90)
        trainer.proc.send_signal(signal.SIGINT)
        trainer.proc.send_signal(signal.SIGTERM)
        code = trainer.wait(60)
    finally:
        trainer.kill()
    assert code == 0, trainer.stderr[-3000:]
    # Signals sent together may arrive in either order: the first names the stop.
    stopped = re.search(r'stopped by SIG(?:INT|TERM) at step (\d+); checkpoint (.+?) saved; ', trainer.stderr)
    assert stopped, trainer.stderr[-3000:]
    step = int(stopped.group(1))
    assert step >= 3 and checkpoint_steps(log_root)[-1] == step
    assert stopped.group(2) == os.path.join(log_root, 'model.ckpt-%d' % step)
    assert 'exiting at once' not in trainer.stderr


def test_output_dir_problem_names_the_reason(tmp_path):
    assert guards.output_dir_problem(str(tmp_path / 'new' / 'deeper')) is None
    (tmp_path / 'f').write_text('x')
    assert guards.output_dir_problem(str(tmp_path / 'f')) == 'exists and is not a directory'
    assert guards.output_dir_problem(str(tmp_path / 'f' / 'x'), writable=False).startswith('cannot be created')


def test_error_line_finds_the_cause_under_tensorflow_headers():
    class GraphError(Exception):
        def __init__(self, message):
            super().__init__(message)
            self.message = message
    wrapped = GraphError("Graph execution error:\n\nDetected at node 'save/SaveV2' defined at (most recent "
                         "call last):\n  File \"a.py\", line 3, in <module>\n    main()\nNode: 'save/SaveV2'\n"
                         "run/model.ckpt-20.data: File too large\n\t [[{{node save/SaveV2}}]]")
    assert guards.error_line(wrapped) == 'run/model.ckpt-20.data: File too large'
    assert guards.error_line(GraphError('Graph execution error:\n\nno space\n\t [[{{node x}}]]')) == 'no space'
    assert guards.error_line(OSError(28, 'No space left on device', '/x')) == '/x: No space left on device'


@pytest.mark.timeout(300)
def test_a_second_trainer_is_refused_and_a_killed_trainers_lock_is_taken_over(tmp_path):
    log_root = str(tmp_path / 'run')
    first = Process(TINY_DIGITS + LONG_RUN + ['--log_root=' + log_root, '--log_every_n_steps=10'])
    try:
        first.wait_for(r'step 10/', timeout=150)
        second = subprocess.run([sys.executable, MAIN] + TINY_DIGITS + [
            '--mode=train', '--train_steps=30', '--log_root=' + log_root], capture_output=True, text=True,
            timeout=150)
        assert_one_line_error(second.returncode, second.stderr, 1, '--log_root=' + log_root,
                              'pid %d' % first.proc.pid)
        assert first.proc.poll() is None  # the first one trains on
        first.proc.send_signal(signal.SIGKILL)
        assert first.wait(30) == -signal.SIGKILL
    finally:
        first.kill()
    # The next trainer, in this process, takes over the lock the killed one left.
    config = processes.resolve(TINY_DIGITS + ['--mode=train', '--train_steps=20', '--log_root=' + log_root])
    with AbslRecords() as records:  # after the flags: resetting them resets absl's verbosity
        training.train(config)
    taken = [m for m in records.messages if 'taking over the lock' in m]
    assert len(taken) == 1 and 'pid %d' % first.proc.pid in taken[0], records.messages
    assert checkpoint_steps(log_root)[-1] == 20


def test_a_file_system_without_flock_is_a_warning_not_a_refusal(tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_locks(*args):
        raise OSError(errno.ENOLCK, 'No locks available')
    monkeypatch.setattr(fcntl, 'flock', no_locks)
    path = str(tmp_path / 'trainer.lock')
    with AbslRecords() as records:
        with guards.RunLock(path, 'trainer', '--log_root=x'):
            assert guards.live_holder(path).startswith('pid %d on host ' % os.getpid())
    assert any('cannot lock it (No locks available)' in m for m in records.messages), records.messages
    assert open(path).read() == '' and guards.live_holder(path) is None


def test_a_second_eval_on_a_run_is_refused_while_the_first_follows_it(tiny_run, tmp_path):
    """Two evals on one run would rename each other's checkpoints in best/ and overwrite each
    other's results.json: the second is one line naming the first, and the first goes on."""
    from resnet_cifar import run_files
    run_dir = processes.copy_run(tiny_run, tmp_path / 'run')
    settings, _ = run_files.read(run_dir)
    # As a trainer extending the run writes it: the first eval then waits for step 100.
    guards.replace_file(run_files.path(run_dir), json.dumps(dict(settings, train_steps=100)))
    first = Process(['--mode=eval', '--log_root=' + run_dir, '--eval_interval_secs=1'])
    try:
        first.wait_for(r'waiting for a new checkpoint', timeout=150)  # 40 and 60 scored
        best_before = processes.snapshot(os.path.join(run_dir, 'best'))
        second = subprocess.run([sys.executable, MAIN, '--mode=eval', '--eval_once', '--log_root=' + run_dir],
                                capture_output=True, text=True, timeout=150)
        assert_one_line_error(second.returncode, second.stderr, 1, '--log_root=' + run_dir,
                              'another eval', 'pid %d' % first.proc.pid)
        assert first.proc.poll() is None  # the first one waits on
        assert processes.snapshot(os.path.join(run_dir, 'best')) == best_before
    finally:
        first.kill()
