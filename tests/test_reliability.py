"""Kill it, feed it garbage, fill its disk: the run keeps its work and says what is wrong.

Real subprocesses where the process itself is the subject (signals, SIGKILL,
a file-size limit, repeatability across processes); everything else runs
in-process on real graphs, sessions, queue runners and checkpoints.
"""
import glob
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
from absl import logging

import cifar_input
from resnet_cifar import evaluation
from resnet_cifar import guards
import in_process
import processes
from resnet_cifar.config import RunConfig
import synthetic
from resnet_cifar import training
from processes import (MAIN, REPO, TINY_DIGITS, Process, assert_one_line_error, checkpoint_steps,
                       error_lines, logged_steps)

TINY = ['--num_residual_units=1', '--batch_size=32', '--noeval_after_training']


# ---------------------------------------------------------------- helpers

def run_main_in_process(args, capsys):
    """resnet_main.main on `args` in this process; returns (exit code, stderr)."""
    capsys.readouterr()
    return in_process.main_status(args), capsys.readouterr().err


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
    path = tf.train.latest_checkpoint(log_root)
    return None if path is None else int(path.rsplit('-', 1)[1])


def read_checkpoint(prefix):
    """{name: value} of every tensor of a checkpoint; reading checks each tensor's checksum."""
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def assert_all_checkpoints_loadable(log_root):
    steps = checkpoint_steps(log_root)
    assert steps, os.listdir(log_root)
    for step in steps:
        values = read_checkpoint(os.path.join(log_root, 'model.ckpt-%d' % step))
        assert int(values['global_step']) == step
    return steps


@pytest.fixture(scope='module')
def learnable(tmp_path_factory):
    directory = tmp_path_factory.mktemp('learnable')
    return synthetic.write_learnable_dataset(directory, num_train=640, num_test=100)


# ---------------------------------------------------------------- kill, stop, resume, repeat

SCHEDULE = ['--lr_boundaries=15,30', '--lr_values=0.1,0.02,0.004']


@pytest.mark.timeout(240)
def test_sigterm_saves_sigkill_resumes_and_seeded_runs_repeat(learnable, tmp_path):
    """Two seeded runs side by side. A gets SIGTERM: it saves its step and exits 0. B gets
    SIGKILL after a checkpoint; the same command again resumes and finishes. A and B log the
    same losses for their first 20 steps."""
    train_path, _ = learnable
    common = ['--mode=train', '--dataset=cifar10', '--train_data_path=' + train_path,
              '--train_steps=40', '--save_checkpoints_steps=10', '--log_every_n_steps=1',
              '--keep_checkpoint_max=10', '--random_seed=7', '--num_input_threads=1'] + TINY + SCHEDULE
    root_a, root_b = str(tmp_path / 'a'), str(tmp_path / 'b')
    a = Process(common + ['--log_root=' + root_a])
    b = Process(common + ['--log_root=' + root_b])
    try:
        # Each run is stopped on its own event, whichever comes first. (Killing B only once A
        # had logged step 22 let B, when A started late on a loaded machine, reach step 40
        # first: the resumed run then trained nothing.)
        terminated = killed = False
        deadline = time.time() + 180  # a bound for a hung child, not a wait
        while not (terminated and killed):
            if not terminated and any(re.search(r'step (2[2-9]|3\d)/40', line) for line in list(a.lines)):
                a.proc.send_signal(signal.SIGTERM)
                terminated = True
            if not killed and (latest_step(root_b) or 0) >= 20:
                b.proc.send_signal(signal.SIGKILL)
                killed = True
            assert terminated or a.proc.poll() is None, 'A ended before step 22:\n' + a.stderr[-3000:]
            assert killed or b.proc.poll() is None, 'B ended before checkpoint 20:\n' + b.stderr[-3000:]
            assert time.time() < deadline, (a.stderr[-2000:], b.stderr[-2000:])
            time.sleep(0.01)
        assert b.wait(30) == -signal.SIGKILL
        assert a.wait(60) == 0, a.stderr[-3000:]
    finally:
        a.kill()
        b.kill()

    # SIGTERM: a checkpoint of the step it stopped at, and a clean exit.
    stopped = re.search(r'stopped by SIGTERM at step (\d+); checkpoint (\S+) saved', a.stderr)
    assert stopped, a.stderr[-3000:]
    assert 'Traceback' not in a.stderr
    stop_step = int(stopped.group(1))
    assert stop_step >= 22 and latest_step(root_a) == stop_step
    assert max(logged_steps(a.stderr, 40)) == stop_step  # nothing ran after the save

    # Repeatable: the same losses, step by step.
    losses_a, losses_b = logged_steps(a.stderr, 40), logged_steps(b.stderr, 40)
    first_20 = list(range(1, 21))
    assert [losses_a[s][0] for s in first_20] == [losses_b[s][0] for s in first_20]

    # SIGKILL: every checkpoint left is whole; at most one interval of work is lost.
    killed_at = max(losses_b)
    resume_step = latest_step(root_b)
    assert killed_at - resume_step <= 10, (killed_at, resume_step)
    # Killed mid-run, or the resume below would have nothing to show.
    assert 20 <= resume_step < 40 and killed_at < 40, (killed_at, resume_step)
    assert_all_checkpoints_loadable(root_b)
    before = read_checkpoint(os.path.join(root_b, 'model.ckpt-%d' % resume_step))
    shadows = [name for name in before if name.endswith('/ExponentialMovingAverage')]
    assert shadows, sorted(before)

    resumed = subprocess.run([sys.executable, MAIN] + common + ['--log_root=' + root_b],
                             capture_output=True, text=True, cwd=REPO, timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    logged = logged_steps(resumed.stderr, 40)
    assert min(logged) == resume_step + 1 and max(logged) == 40, sorted(logged)
    for step, (_, lr) in logged.items():  # the line at step s describes the step run at s - 1
        assert lr == pytest.approx(processes.learning_rate_at(step - 1, [15, 30], [0.1, 0.02, 0.004], 1e-4))
    assert latest_step(root_b) == 40
    assert_all_checkpoints_loadable(root_b)
    # The resumed run saved its first step again: its shadows are the restored ones, not fresh.
    again = read_checkpoint(os.path.join(root_b, 'model.ckpt-%d' % resume_step))
    final = read_checkpoint(os.path.join(root_b, 'model.ckpt-40'))
    for name in shadows:
        np.testing.assert_array_equal(again[name], before[name])
    assert any(not np.allclose(final[name], before[name]) for name in shadows)


@pytest.mark.timeout(60)
def test_second_signal_exits_at_once_even_while_the_main_thread_waits():
    script = '\n'.join([
        'import os, sys, time',
        'from resnet_cifar import guards',
        'with guards.StopSignals(first_message="%s: asked to stop") as stop:',
        '    print("ready", flush=True)',
        '    while not stop.requested:',
        '        time.sleep(0.01)',
        '    print("requested", stop.signal_name, flush=True)',
        '    os.read(os.pipe()[0], 1)  # blocks for good',
    ])
    proc = subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stdout.readline().strip() == 'ready'
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout.readline().split() == ['requested', 'SIGTERM']
        time.sleep(0.3)
        assert proc.poll() is None  # the first signal only asks
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 128 + signal.SIGINT
        stderr = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert 'SIGTERM: asked to stop' in stderr and 'error: SIGINT again: exiting at once' in stderr


@pytest.mark.timeout(180)
def test_sigint_stops_a_waiting_eval_at_once(learnable, tmp_path):
    _, test_path = learnable
    # A 600 s interval: an eval that slept it out, not woken by the signal, fails the wait below
    # by far, on any machine (no tight wall-clock bound).
    evaluator = Process(['--mode=eval', '--dataset=cifar10', '--eval_data_path=' + test_path,
                         '--log_root=' + str(tmp_path / 'not_yet'), '--eval_interval_secs=600'] + TINY)
    try:
        evaluator.wait_for('waiting for the first checkpoint', timeout=100)
        evaluator.proc.send_signal(signal.SIGINT)
        assert evaluator.wait(60) == 0, evaluator.stderr[-3000:]
    finally:
        evaluator.kill()
    assert 'eval stopped by SIGINT' in evaluator.stderr
    assert 'Traceback' not in evaluator.stderr and 'KeyboardInterrupt' not in evaluator.stderr


# ---------------------------------------------------------------- full disk, unwritable places

@pytest.mark.timeout(180)
def test_full_disk_at_a_save_is_one_error_and_the_last_checkpoint_stays(learnable, tmp_path):
    """A file-size limit (RLIMIT_FSIZE) set on the running trainer makes its next checkpoint
    write fail the way a full disk does."""
    train_path, _ = learnable
    log_root = str(tmp_path / 'run')
    trainer = Process(['--mode=train', '--dataset=cifar10', '--train_data_path=' + train_path,
                       '--log_root=' + log_root, '--train_steps=100000', '--save_checkpoints_steps=10',
                       '--log_every_n_steps=100000'] + TINY)
    try:
        deadline = time.time() + 120
        while latest_step(log_root) is None or latest_step(log_root) < 10:
            assert trainer.proc.poll() is None and time.time() < deadline, trainer.stderr[-3000:]
            time.sleep(0.05)
        resource.prlimit(trainer.proc.pid, resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
        code = trainer.wait(90)
    finally:
        trainer.kill()
    line = assert_one_line_error(code, trainer.stderr, 1, 'cannot save checkpoint', log_root, 'is kept')
    assert 'File too large' in line
    kept = tf.train.latest_checkpoint(log_root)
    assert kept and kept in line
    assert int(read_checkpoint(kept)['global_step']) == latest_step(log_root) >= 10


@pytest.mark.timeout(60)
@pytest.mark.parametrize('mode, flag', [('train', 'log_root'), ('train', 'train_dir'), ('eval', 'eval_dir')])
def test_output_dir_under_a_file_is_a_flag_error_at_start(mode, flag, tmp_path, capsys):
    a_file = tmp_path / 'a_file'
    a_file.write_text('not a directory')
    bad = str(a_file / 'run')
    code, err = run_main_in_process(['--mode=' + mode, '--dataset=digits', '--%s=%s' % (flag, bad)], capsys)
    assert_one_line_error(code, err, 2, '--%s=%s' % (flag, bad), 'is a file, not a directory')


def test_output_dir_problem_names_the_reason(tmp_path):
    assert guards.output_dir_problem(str(tmp_path / 'new' / 'deeper')) is None
    (tmp_path / 'f').write_text('x')
    assert guards.output_dir_problem(str(tmp_path / 'f')) == 'exists and is not a directory'
    assert guards.output_dir_problem(str(tmp_path / 'f' / 'x'), writable=False).startswith('cannot be created')


@pytest.mark.timeout(60)
def test_unwritable_log_root_is_a_flag_error_at_start(capsys):
    """As root, the check runs with the effective uid of nobody, for whom 0555 means read-only."""
    directory = tempfile.mkdtemp(dir='/tmp')
    try:
        os.chmod(directory, 0o555)
        log_root = os.path.join(directory, 'run')
        as_root = os.geteuid() == 0
        if as_root:
            os.seteuid(65534)
        try:
            problem = guards.output_dir_problem(log_root)
            code, err = run_main_in_process(['--mode=train', '--dataset=digits', '--log_root=' + log_root], capsys)
        finally:
            if as_root:
                os.seteuid(0)
        assert problem == 'cannot be created: %s is not writable (permission denied)' % directory
        assert_one_line_error(code, err, 2, '--log_root=' + log_root, 'not writable (permission denied)')
        assert not os.path.exists(log_root)
    finally:
        os.chmod(directory, 0o755)
        shutil.rmtree(directory)


# ---------------------------------------------------------------- NaN, corrupt checkpoints

@pytest.fixture(scope='module')
def diverged(learnable, tmp_path_factory):
    """A run whose learning rate jumps to 1e6 at step 12: (log_root, TrainingError message)."""
    train_path, _ = learnable
    log_root = str(tmp_path_factory.mktemp('diverged') / 'run')
    config = in_process.resolve(['--mode=train', '--dataset=cifar10', '--train_data_path=' + train_path,
                           '--log_root=' + log_root, '--train_steps=40', '--save_checkpoints_steps=5',
                           '--keep_checkpoint_max=20', '--lr_boundaries=12', '--lr_values=0.1,1e6',
                           '--log_every_n_steps=100'] + TINY)
    with pytest.raises(training.TrainingError) as error:
        training.train(config)
    return log_root, str(error.value)


@pytest.mark.timeout(120)
def test_nan_loss_stops_naming_the_step_and_the_finite_checkpoint_it_keeps(diverged):
    log_root, message = diverged
    found = re.match(r'(loss is|the model variables are) NaN or Inf at step (\d+); '
                     r'the last good checkpoint, (\S+), is kept$', message)
    assert found, message
    assert int(found.group(2)) >= 12
    assert found.group(3) == tf.train.latest_checkpoint(log_root)
    steps = assert_all_checkpoints_loadable(log_root)
    assert steps[-1] <= int(found.group(2)) + 1
    for step in steps:  # no checkpoint holds a non-finite value
        for name, value in read_checkpoint(os.path.join(log_root, 'model.ckpt-%d' % step)).items():
            if np.issubdtype(np.asarray(value).dtype, np.floating):
                assert np.all(np.isfinite(value)), (step, name)


@pytest.mark.timeout(120)
def test_nan_loss_between_saves_names_the_step_and_keeps_the_first_checkpoint(learnable, tmp_path):
    train_path, _ = learnable
    log_root = str(tmp_path / 'run')
    config = in_process.resolve(['--mode=train', '--dataset=cifar10', '--train_data_path=' + train_path,
                           '--log_root=' + log_root, '--train_steps=60', '--save_checkpoints_steps=1000',
                           '--lr_boundaries=12', '--lr_values=0.1,1e6', '--log_every_n_steps=100'] + TINY)
    with pytest.raises(training.TrainingError) as error:
        training.train(config)
    found = re.match(r'loss is NaN or Inf at step (\d+); the last good checkpoint, (\S+), is kept$',
                     str(error.value))
    assert found and int(found.group(1)) >= 12, str(error.value)
    assert found.group(2) == os.path.join(log_root, 'model.ckpt-0')
    assert checkpoint_steps(log_root) == [0]  # the diverged weights were not saved at the end


def test_a_checkpoint_holding_inf_is_refused():
    with tf.Graph().as_default():
        weights = tf.compat.v1.get_variable('w', initializer=tf.constant([1.0, 2.0]))
        tf.compat.v1.get_variable('step', initializer=tf.constant(3, tf.int64))
        check = training.FiniteVariablesCheck()
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            check.before_save(session, 3)  # finite: no error
            session.run(weights.assign([1.0, np.inf]))
            with pytest.raises(training.NanLossError, match='the model variables are NaN or Inf at step 3'):
                check.before_save(session, 3)


@pytest.mark.timeout(60)
def test_the_same_command_after_the_last_step_trains_nothing(diverged, learnable, tmp_path):
    train_path, _ = learnable
    log_root = str(tmp_path / 'run')
    shutil.copytree(diverged[0], log_root)
    step = latest_step(log_root)
    files = sorted(os.listdir(log_root))
    config = in_process.resolve(['--mode=train', '--dataset=cifar10', '--train_data_path=' + train_path,
                           '--log_root=' + log_root, '--train_steps=%d' % step] + TINY)
    training.train(config)
    assert sorted(os.listdir(log_root)) == files and latest_step(log_root) == step


@pytest.mark.timeout(60)
def test_nan_loss_through_the_program_is_one_line_exit_1(diverged, learnable, tmp_path, capsys):
    train_path, _ = learnable
    log_root = str(tmp_path / 'run')
    shutil.copytree(diverged[0], log_root)
    before = checkpoint_steps(log_root)
    code, err = run_main_in_process(['--mode=train', '--dataset=cifar10', '--train_data_path=' + train_path,
                                     '--log_root=' + log_root, '--train_steps=40', '--save_checkpoints_steps=5',
                                     '--keep_checkpoint_max=20', '--lr_boundaries=12', '--lr_values=0.1,1e6',
                                     '--log_every_n_steps=100'] + TINY, capsys)
    assert_one_line_error(code, err, 1, 'NaN or Inf at step', 'the last good checkpoint')
    assert checkpoint_steps(log_root) == before


def corrupt(prefix):
    """Truncates the data file of checkpoint `prefix` to half its size."""
    data = glob.glob(prefix + '.data-*')[0]
    size = os.path.getsize(data)
    with open(data, 'r+b') as f:
        f.truncate(size // 2)


@pytest.mark.timeout(120)
def test_eval_skips_a_corrupt_checkpoint_and_scores_the_next(diverged, learnable, tmp_path, capsys):
    _, test_path = learnable
    log_root = str(tmp_path / 'run')
    shutil.copytree(diverged[0], log_root)
    good = [os.path.join(log_root, 'model.ckpt-%d' % s) for s in checkpoint_steps(log_root)]
    newest, corrupted = good[-1], good[-2]
    corrupt(corrupted)
    aside = str(tmp_path / 'aside')
    os.makedirs(aside)
    for path in glob.glob(newest + '.*'):
        shutil.move(path, aside)
    tf.compat.v1.train.update_checkpoint_state(log_root, corrupted, good[:-1])
    newest_step = int(newest.rsplit('-', 1)[1])
    args = ['--mode=eval', '--dataset=cifar10', '--eval_data_path=' + test_path, '--log_root=' + log_root,
            '--train_steps=%d' % newest_step, '--eval_interval_secs=1'] + TINY

    step = {path: int(path.rsplit('-', 1)[1]) for path in good}

    def eval_with_records(extra_args, helper=None):
        """Runs evaluate in this process: ([skip warnings], [steps scored])."""
        config = in_process.resolve(args + extra_args)
        capsys.readouterr()
        with AbslRecords(pattern='skipping checkpoint') as records:
            thread = threading.Thread(target=helper, args=(records,)) if helper else None
            if thread:
                thread.start()
            evaluation.evaluate(config)
            if thread:
                thread.join()
        skips = [m for m in records.messages if 'skipping checkpoint' in m]
        return skips, [int(s) for s in re.findall(r'^step (\d+): precision', capsys.readouterr().out, re.M)]

    # Once: the newest checkpoint is corrupt, so the one before it is scored.
    skips, scored = eval_with_records(['--eval_once'])
    assert len(skips) == 1 and corrupted in skips[0] and 'damaged' in skips[0], skips
    assert scored == [step[good[-3]]]

    def bring_back_the_newest(records):
        if records.seen.wait(60):
            for path in glob.glob(os.path.join(aside, '*')):
                shutil.move(path, log_root)
            tf.compat.v1.train.update_checkpoint_state(log_root, newest, good)

    # Beside training: the corrupt one is skipped for the newest older one not scored yet,
    # then the next new checkpoint is scored.
    skips, scored = eval_with_records([], bring_back_the_newest)
    assert len(skips) == 1 and corrupted in skips[0], skips
    assert scored == [step[p] for p in good[:-3][-1:]] + [newest_step]


@pytest.mark.timeout(60)
def test_a_checkpoint_rotated_away_is_unreadable_not_fatal(diverged, learnable, tmp_path):
    _, test_path = learnable
    config = in_process.resolve(['--mode=eval', '--dataset=cifar10', '--eval_data_path=' + test_path,
                           '--log_root=' + diverged[0]] + TINY)
    evaluator = evaluation.EvalGraph(config.hparams(), config)
    with pytest.raises(evaluation.UnreadableCheckpoint, match=r'ckpt-123456: it was deleted \(training keeps only '
                       r'the newest --keep_checkpoint_max checkpoints\)$'):
        evaluator.score(os.path.join(str(tmp_path), 'model.ckpt-123456'))


def test_garbage_eval_state_is_ignored_with_a_warning(tmp_path):
    (tmp_path / 'eval_state.json').write_text('{"scored": {"model.ckpt-1')
    with AbslRecords() as records:
        state = evaluation.EvalState(str(tmp_path))
    assert state.scored == {} and state.best_precision == 0.0
    assert any('eval_state.json' in m for m in records.messages)


# ---------------------------------------------------------------- bad data, everywhere

def write_bad_label_file(directory, n=40, bad_index=5, bad_label=12):
    labels = np.arange(n) % 10
    labels[bad_index] = bad_label
    return synthetic.write_records(os.path.join(str(directory), 'bad.bin'), synthetic.random_images(n), labels)


def bad_data_cases(directory):
    """[(name, data path, dataset, fragments of the expected message)]."""
    d = str(directory)
    os.makedirs(d)
    truncated = os.path.join(d, 'truncated.bin')
    with open(truncated, 'wb') as f:
        f.write(b'\x01' * (2 * 3073 + 100))
    cifar100 = synthetic.write_records(os.path.join(d, 'c100.bin'), synthetic.random_images(3), [1, 2, 3],
                                       coarse_labels=[0, 0, 0])
    os.makedirs(os.path.join(d, 'a_dir'))
    return [
        ('truncated', truncated, 'cifar10', ['truncated.bin', 'not a whole number of 3073-byte']),
        ('cifar100 as cifar10', cifar100, 'cifar10', ['c100.bin', 'wrong --dataset']),
        ('empty pattern', ',', 'cifar10', ['is empty; expected comma-separated file patterns']),
        ('no match', os.path.join(d, 'nothing_*.bin'), 'cifar10', ['no file matches', 'nothing_*.bin']),
        ('directory', os.path.join(d, 'a_dir'), 'cifar10', ['a_dir', 'is a directory']),
    ]


@pytest.mark.timeout(60)
@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_bad_data_files_are_one_line_errors_in_train_and_eval(mode, tmp_path, capsys):
    for name, path, dataset, fragments in bad_data_cases(tmp_path / 'data'):
        code, err = run_main_in_process(['--mode=' + mode, '--dataset=' + dataset,
                                         '--%s_data_path=%s' % (mode, path),
                                         '--log_root=' + str(tmp_path / 'run')] + TINY, capsys)
        assert code == 1, (name, err)
        assert_one_line_error(code, err, 1, *fragments)


@pytest.mark.timeout(60)
def test_bad_data_in_the_record_check_command(tmp_path, capsys):
    for name, path, dataset, fragments in bad_data_cases(tmp_path / 'data'):
        code = cifar_input.main(['--dataset=' + dataset, '--data_path=' + path])
        assert_one_line_error(code, capsys.readouterr().err, 1, *fragments)
    bad = write_bad_label_file(tmp_path)
    code = cifar_input.main(['--dataset=cifar10', '--data_path=' + bad])
    assert_one_line_error(code, capsys.readouterr().err, 1, "bad.bin', record 5: label 12 out of range")
    # --verbosity=1 adds the stack trace; the error line stays.
    code = cifar_input.main(['--dataset=cifar10', '--data_path=' + bad, '--verbosity=1'])
    err = capsys.readouterr().err
    assert code == 1 and 'Traceback' in err and len(error_lines(err)) == 1


@pytest.mark.timeout(60)
def test_unreadable_record_file_names_it(tmp_path, capsys):
    """chmod 000 does not stop root, so as root the check runs with the effective uid of nobody."""
    directory = tempfile.mkdtemp(dir='/tmp')
    try:
        os.chmod(directory, 0o755)
        path = synthetic.write_records(os.path.join(directory, 'locked.bin'), synthetic.random_images(2), [1, 2])
        os.chmod(path, 0)
        as_root = os.geteuid() == 0
        if as_root:
            os.seteuid(65534)
        try:
            with pytest.raises(cifar_input.DataError, match=r"cannot read record file '.*locked\.bin': "
                               r"Permission denied"):
                cifar_input.check_files('cifar10', path)
            code = cifar_input.main(['--dataset=cifar10', '--data_path=' + path])
        finally:
            if as_root:
                os.seteuid(0)
        assert_one_line_error(code, capsys.readouterr().err, 1, 'locked.bin', 'Permission denied')
    finally:
        shutil.rmtree(directory)


@pytest.mark.timeout(120)
def test_label_out_of_range_at_run_time_is_one_line_in_train_and_eval(diverged, tmp_path, capsys):
    bad = write_bad_label_file(tmp_path)
    expected = "bad.bin', record 5: label 12 out of range; cifar10 fine labels are 0..9"
    code, err = run_main_in_process(['--mode=train', '--dataset=cifar10', '--train_data_path=' + bad,
                                     '--log_root=' + str(tmp_path / 'run'), '--train_steps=50',
                                     '--num_input_threads=1'] + TINY, capsys)
    assert_one_line_error(code, err, 1, expected)
    code, err = run_main_in_process(['--mode=eval', '--dataset=cifar10', '--eval_data_path=' + bad,
                                     '--log_root=' + diverged[0], '--eval_dir=' + str(tmp_path / 'eval'),
                                     '--eval_once'] + TINY, capsys)
    assert_one_line_error(code, err, 1, expected)
    # Asked for, the stack trace comes too.
    code, err = run_main_in_process(['--mode=eval', '--dataset=cifar10', '--eval_data_path=' + bad,
                                     '--log_root=' + diverged[0], '--eval_dir=' + str(tmp_path / 'eval'),
                                     '--eval_once', '--verbosity=1'] + TINY, capsys)
    assert code == 1 and 'Traceback' in err and len(error_lines(err)) == 1


BAD_FLAGS = [
    (['--save_checkpoints_steps=0'], '--save_checkpoints_steps=0'),
    (['--num_input_threads=0'], '--num_input_threads=0'),
    (['--eval_batch_count=-1'], '--eval_batch_count=-1'),
    (['--keep_checkpoint_max=0'], '--keep_checkpoint_max=0'),
    (['--lr_boundaries=10,10', '--lr_values=0.1,0.01,0.001'], 'increase'),
    (['--num_gpus=2', '--batch_size=33'], 'num_gpus'),
    (['--train_dir=' + MAIN], 'not a directory'),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize('args, expected', BAD_FLAGS)
def test_more_bad_flags_exit_2(args, expected, capsys):
    code, err = run_main_in_process(['--dataset=digits'] + args, capsys)
    assert_one_line_error(code, err, 2, expected)


# ---------------------------------------------------------------- fuzzing the input layer

def fuzz_case(rng, directory):
    """Random files and a pattern; returns build_input keyword arguments."""
    dataset = str(rng.choice(['cifar10', 'cifar100', 'digits']))
    record = 3074 if dataset == 'cifar100' else 3073
    names = []
    for i in range(rng.randint(1, 4)):
        kind = rng.randint(6)
        name = os.path.join(directory, 'f%d.bin' % i)
        if kind == 0:
            size = 0
        elif kind == 1:
            size = int(rng.randint(1, 4 * record))
        elif kind == 2:
            size = int(rng.randint(1, 6)) * (3074 if record == 3073 else 3073)
        else:
            size = int(rng.randint(1, 40)) * record
        data = rng.randint(0, 256, size=size).astype(np.uint8)
        if kind >= 4 and size % record == 0 and size:  # labels in range, the rest random
            rows = data.reshape(-1, record)
            rows[:, 0] = rng.randint(0, 20 if dataset == 'cifar100' else 10, size=len(rows))
            rows[:, record - 3073] = rng.randint(0, 10, size=len(rows))
        data.tofile(name)
        names.append(name)
    if rng.rand() < 0.15:
        os.makedirs(os.path.join(directory, 'f_dir.bin'))
    choice = rng.randint(5)
    if choice == 0:
        pattern = os.path.join(directory, '*.bin')
    elif choice == 1:
        pattern = ','.join(names)
    elif choice == 2:
        pattern = os.path.join(directory, 'none_*') + ',' + names[0]
    elif choice == 3:
        pattern = str(rng.choice([',', ' ', ', ,', names[0] + ',,']))
    else:
        pattern = os.path.join(directory, 'f[0-%d].bin' % (len(names) - 1))
    label_mode = 'coarse' if dataset == 'cifar100' and rng.rand() < 0.5 else 'fine'
    mode = str(rng.choice(['train', 'eval']))
    return dict(dataset=dataset, data_path=pattern, batch_size=int(rng.randint(1, 9)), mode=mode,
                label_mode=label_mode, num_threads=int(rng.randint(1, 3)) if mode == 'train' else None,
                num_epochs=1 if mode == 'eval' else None, shuffle_capacity=64 if mode == 'train' else None)


def run_fuzz_case(kwargs, max_batches=3):
    """'data error' (before any op), 'label error' (at run time) or 'batches' (each one
    checked); a hang fails the case."""
    with tf.Graph().as_default():
        try:
            images, labels = cifar_input.build_input(**kwargs)
        except cifar_input.DataError as e:
            assert '\n' not in str(e)
            return 'data error'
        local_init = tf.compat.v1.local_variables_initializer()
        options = tf.compat.v1.RunOptions(timeout_in_ms=20000)  # a hang fails as DeadlineExceeded
        classes = cifar_input.num_classes(kwargs['dataset'], kwargs['label_mode'])
        with tf.compat.v1.Session() as session:
            session.run(local_init)
            coord = tf.compat.v1.train.Coordinator()
            threads = tf.compat.v1.train.start_queue_runners(session, coord=coord)
            outcome = 'batches'
            try:
                for _ in range(max_batches):
                    image_batch, label_batch = session.run([images, labels], options=options)
                    assert image_batch.shape[1:] == (32, 32, 3) and 0 < len(image_batch) <= kwargs['batch_size']
                    assert np.all(np.isfinite(image_batch))
                    assert label_batch.shape == (len(image_batch), classes)
                    assert np.all(label_batch.sum(axis=1) == 1)
            except (tf.errors.OutOfRangeError, tf.errors.CancelledError):
                pass  # end of the epoch, or the queue closed by a failing reader
            except tf.errors.InvalidArgumentError as e:
                outcome = cifar_input.data_error(e)
            finally:
                coord.request_stop()
                try:
                    coord.join(threads, stop_grace_period_secs=10)
                except tf.errors.InvalidArgumentError as e:
                    outcome = cifar_input.data_error(e)
    if isinstance(outcome, cifar_input.DataError):
        assert re.match(r"record file '.*', record \d+: label \d+ out of range; ", str(outcome)), outcome
        return 'label error'
    return outcome


@pytest.mark.timeout(180)
def test_fuzzed_files_and_patterns_end_in_a_data_error_or_valid_batches(tmp_path):
    rng = np.random.RandomState(2024)
    outcomes = []
    for case in range(40):
        directory = str(tmp_path / ('case%d' % case))
        os.makedirs(directory)
        kwargs = fuzz_case(rng, directory)
        outcomes.append(run_fuzz_case(kwargs))
    # Every outcome occurs, so the loop tested each path.
    assert {'data error', 'label error', 'batches'} <= set(outcomes), outcomes


@pytest.mark.timeout(30)
def test_unreadable_eval_state_is_ignored_with_a_warning(tmp_path):
    os.makedirs(str(tmp_path / 'eval_state.json'))  # a directory where the file should be
    state = evaluation.EvalState(str(tmp_path))
    assert state.scored == {} and state.best_precision == 0.0


@pytest.mark.timeout(30)
def test_a_numpy_array_file_is_not_a_features_file(tmp_path):
    from resnet_cifar import features
    path = str(tmp_path / 'features.npy')
    np.save(path, np.zeros((3, 4), np.float32))
    with pytest.raises(features.FeaturesError, match='is not a features file'):
        features.load_features(path)


def test_checkpoint_step_from_its_name():
    assert evaluation.step_in_name('/runs/x/model.ckpt-1200') == 1200
    assert evaluation.step_in_name('/runs/x/model.ckpt') == -1


@pytest.mark.timeout(60)
def test_unwritable_features_path_is_a_flag_error(tmp_path, capsys):
    import in_process
    blocker = tmp_path / 'file'
    blocker.write_text('not a directory')
    code, err = in_process.main_exit(['--mode=extract', '--extract_data_path=x.bin',
                                      '--features_path=%s' % (blocker / 'features.npz')], capsys)
    assert code == 2
    assert err.startswith('error: --features_path=') and len(err.splitlines()) == 1, err


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


# ---------------------------------------------------------------- one trainer per run, writers, live data, Ctrl-C

LONG_RUN = ['--mode=train', '--train_steps=100000', '--save_checkpoints_steps=100000']


@pytest.mark.timeout(300)
def test_a_second_trainer_is_refused_and_a_killed_trainers_lock_is_taken_over(tmp_path):
    log_root = str(tmp_path / 'run')
    first = Process(TINY_DIGITS + LONG_RUN + ['--log_root=' + log_root, '--log_every_n_steps=10'])
    try:
        first.wait_for(r'step 10/', timeout=150)
        second = subprocess.run([sys.executable, MAIN] + TINY_DIGITS + [
            '--mode=train', '--train_steps=30', '--log_root=' + log_root], capture_output=True, text=True,
            cwd=REPO, timeout=150)
        assert_one_line_error(second.returncode, second.stderr, 1, '--log_root=' + log_root,
                              'pid %d' % first.proc.pid)
        assert first.proc.poll() is None  # the first one trains on
        first.proc.send_signal(signal.SIGKILL)
        assert first.wait(30) == -signal.SIGKILL
    finally:
        first.kill()
    # The next trainer, in this process, takes over the lock the killed one left.
    config = in_process.resolve(TINY_DIGITS + ['--mode=train', '--train_steps=20', '--log_root=' + log_root])
    with AbslRecords() as records:  # after the flags: resetting them resets absl's verbosity
        training.train(config)
    taken = [m for m in records.messages if 'taking over the lock' in m]
    assert len(taken) == 1 and 'pid %d' % first.proc.pid in taken[0], records.messages
    assert checkpoint_steps(log_root)[-1] == 20


@pytest.mark.timeout(300)
def test_a_full_disk_under_the_summary_writer_is_one_line_and_a_final_checkpoint(tmp_path):
    """The file-size limit is set above the checkpoint's size, so the growing event file of the
    train directory (histograms every step) is the first file to hit it."""
    log_root = str(tmp_path / 'run')
    trainer = Process(TINY_DIGITS + LONG_RUN + ['--log_root=' + log_root, '--log_every_n_steps=1',
                                                '--summary_histograms'])
    try:
        trainer.wait_for(r'step 5/', timeout=150)
        events = glob.glob(os.path.join(log_root, 'train', 'events.out.tfevents.*'))[0]
        data = glob.glob(os.path.join(log_root, 'model.ckpt-0.data-*'))[0]
        limit = max(os.path.getsize(events), os.path.getsize(data)) + 100 * 1024
        resource.prlimit(trainer.proc.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        code = trainer.wait(120)
    finally:
        trainer.kill()
    line = assert_one_line_error(code, trainer.stderr, 1, 'cannot write summaries to',
                                 os.path.join(log_root, 'train'), 'File too large')
    assert line.count('cannot write summaries') == 1, line
    last_step = max(logged_steps(trainer.stderr, 100000))
    assert checkpoint_steps(log_root)[-1] == last_step > 5  # the steps since ckpt-0 were saved
    assert 'model.ckpt-%d saved' % last_step in line


@pytest.mark.timeout(300)
def test_a_training_file_truncated_during_the_run_stops_it_with_a_checkpoint(tmp_path):
    data = str(tmp_path / 'train.bin')
    shutil.copy(os.path.join(REPO, 'data', 'digits-bin', 'data_batch_1.bin'), data)
    log_root = str(tmp_path / 'run')
    trainer = Process(TINY_DIGITS + LONG_RUN + ['--log_root=' + log_root, '--train_data_path=' + data,
                                                '--log_every_n_steps=10'])
    try:
        trainer.wait_for(r'step 10/', timeout=150)
        size = os.path.getsize(data)
        os.truncate(data, size - 1000)  # a partial record at the end
        code = trainer.wait(120)
    finally:
        trainer.kill()
    line = assert_one_line_error(code, trainer.stderr, 1, "record file '%s'" % data,
                                 'not a whole number of 3073-byte digits records',
                                 'changed during training', '%d bytes at the start' % size)
    saved = checkpoint_steps(log_root)[-1]
    assert saved >= 10 and 'model.ckpt-%d saved' % saved in line


def tensorflow_is_loading(pid):
    try:
        with open('/proc/%d/maps' % pid) as f:
            return 'tensorflow' in f.read()
    except OSError:
        return False


@pytest.mark.timeout(120)
def test_ctrl_c_while_tensorflow_imports_is_one_line(tmp_path):
    proc = subprocess.Popen([sys.executable, MAIN, '--mode=train', '--dataset=digits',
                             '--log_root=' + str(tmp_path / 'run')],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.time() + 60
        while not tensorflow_is_loading(proc.pid):
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_one_line_error(proc.returncode, stderr, 130, 'interrupted by SIGINT while starting')
    assert 'KeyboardInterrupt' not in stderr
    assert not os.path.exists(str(tmp_path / 'run'))


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


@pytest.mark.timeout(300)
def test_a_full_disk_under_the_log_root_event_file_is_one_line_after_the_final_checkpoint(tmp_path):
    """The event file of --log_root (graph, checkpoint events) is larger than the file-size limit,
    the checkpoint files are not: the final save after SIGTERM fits, the event file does not."""
    log_root = str(tmp_path / 'run')
    trainer = Process(TINY_DIGITS + LONG_RUN + ['--log_root=' + log_root, '--log_every_n_steps=100000'])
    try:
        deadline = time.time() + 150
        while not checkpoint_steps(log_root):
            assert trainer.proc.poll() is None and time.time() < deadline, trainer.stderr[-3000:]
            time.sleep(0.05)
        events = glob.glob(os.path.join(log_root, 'events.out.tfevents.*'))[0]
        data = glob.glob(os.path.join(log_root, 'model.ckpt-0.data-*'))[0]
        limit = os.path.getsize(data) + 100 * 1024
        assert os.path.getsize(events) > limit
        resource.prlimit(trainer.proc.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        trainer.proc.send_signal(signal.SIGTERM)
        code = trainer.wait(120)
    finally:
        trainer.kill()
    line = assert_one_line_error(code, trainer.stderr, 1, 'cannot write summaries to %s: ' % log_root,
                                 'File too large')
    assert 'checkpoint %s saved' % tf.train.latest_checkpoint(log_root) in line
    assert checkpoint_steps(log_root)[-1] > 0


def test_an_event_file_error_right_after_a_whole_save_is_not_a_failed_save(tmp_path):
    """The saver writes a checkpoint event to --log_root's event file after the checkpoint is
    whole; an error there (the writer thread died on a full disk) names the event file."""
    log_root = str(tmp_path)
    for suffix in ('.index', '.data-00000-of-00001'):
        with open(os.path.join(log_root, 'model.ckpt-40' + suffix), 'w'):
            pass
    config = RunConfig(log_root=log_root)
    saves = training.SaveTracker()
    saves.before_save(None, 40)
    error = training._session_error(IndexError('run/events.out.tfevents.1; File too large'), config, saves)
    assert str(error) == ('cannot write summaries to %s: run/events.out.tfevents.1; File too large; checkpoint '
                          '%s saved; free space and run the same command to resume'
                          % (log_root, os.path.join(log_root, 'model.ckpt-40')))
    # TensorFlow's saver names the checkpoint in the state file before it writes the .meta file.
    error = training._session_error(IndexError('run/model.ckpt-40.meta.tmp1; File too large'), config, saves)
    assert str(error).startswith('cannot save checkpoint 40 in %s' % log_root)
    saves.before_save(None, 60)  # the save of 60 itself failed
    error = training._session_error(IndexError('run/model.ckpt-60.data; File too large'), config, saves)
    assert str(error).startswith('cannot save checkpoint 60 in %s' % log_root)
