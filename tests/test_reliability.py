"""Kill it, feed it garbage, fill its disk: the run keeps its work and says what is wrong.

Real subprocesses where the process itself is the subject (signals, SIGKILL,
a file-size limit, repeatability across processes); everything else runs
in-process on real graphs, sessions, queue runners and checkpoints.
"""
import os
import re
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

import cifar_input
from resnet_cifar import guards
import processes
import synthetic
from processes import (MAIN, Process, assert_all_checkpoints_loadable, assert_one_line_error,
                       checkpoint_steps, latest_step, logged_steps, read_checkpoint, error_lines)

TINY = ['--num_residual_units=1', '--batch_size=32', '--nolr_batch_scaling', '--noeval_after_training']


# ---------------------------------------------------------------- helpers


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
                             capture_output=True, text=True, timeout=180)
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


# ---------------------------------------------------------------- full disk, unwritable places


@pytest.mark.timeout(60)
@pytest.mark.parametrize('mode, flag', [('train', 'log_root'), ('train', 'train_dir'), ('eval', 'eval_dir')])
def test_output_dir_under_a_file_is_a_flag_error_at_start(mode, flag, tmp_path, capsys):
    a_file = tmp_path / 'a_file'
    a_file.write_text('not a directory')
    bad = str(a_file / 'run')
    code, err = processes.main_exit_status(['--mode=' + mode, '--dataset=digits', '--%s=%s' % (flag, bad)], capsys)
    assert_one_line_error(code, err, 2, '--%s=%s' % (flag, bad), 'is a file, not a directory')


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
            code, err = processes.main_exit_status(['--mode=train', '--dataset=digits', '--log_root=' + log_root], capsys)
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


@pytest.mark.timeout(60)
def test_nan_loss_through_the_program_is_one_line_exit_1(diverged, learnable, tmp_path, capsys):
    train_path, _ = learnable
    log_root = str(tmp_path / 'run')
    shutil.copytree(diverged[0], log_root)
    before = checkpoint_steps(log_root)
    code, err = processes.main_exit_status(['--mode=train', '--dataset=cifar10', '--train_data_path=' + train_path,
                                     '--log_root=' + log_root, '--train_steps=40', '--save_checkpoints_steps=5',
                                     '--keep_checkpoint_max=20', '--lr_boundaries=12', '--lr_values=0.1,1e6',
                                     '--log_every_n_steps=100'] + TINY, capsys)
    assert_one_line_error(code, err, 1, 'NaN or Inf at step', 'the last good checkpoint')
    assert checkpoint_steps(log_root) == before


# ---------------------------------------------------------------- bad data, everywhere

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
        code, err = processes.main_exit_status(['--mode=' + mode, '--dataset=' + dataset,
                                                '--%s_data_path=%s' % (mode, path),
                                                '--log_root=' + str(tmp_path / 'run')] + TINY, capsys)
        assert code == 1, (name, err)
        assert_one_line_error(code, err, 1, *fragments)


@pytest.mark.timeout(60)
def test_bad_data_in_the_record_check_command(tmp_path, capsys):
    for name, path, dataset, fragments in bad_data_cases(tmp_path / 'data'):
        code = cifar_input.main(['--dataset=' + dataset, '--data_path=' + path])
        assert_one_line_error(code, capsys.readouterr().err, 1, *fragments)
    bad = synthetic.write_bad_label_file(tmp_path)
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
    bad = synthetic.write_bad_label_file(tmp_path)
    expected = "bad.bin', record 5: label 12 out of range; cifar10 fine labels are 0..9"
    code, err = processes.main_exit_status(['--mode=train', '--dataset=cifar10', '--train_data_path=' + bad,
                                     '--log_root=' + str(tmp_path / 'run'), '--train_steps=50',
                                     '--num_input_threads=1'] + TINY, capsys)
    assert_one_line_error(code, err, 1, expected)
    code, err = processes.main_exit_status(['--mode=eval', '--dataset=cifar10', '--eval_data_path=' + bad,
                                     '--log_root=' + diverged[0], '--eval_dir=' + str(tmp_path / 'eval'),
                                     '--eval_once'] + TINY, capsys)
    assert_one_line_error(code, err, 1, expected)
    # Asked for, the stack trace comes too.
    code, err = processes.main_exit_status(['--mode=eval', '--dataset=cifar10', '--eval_data_path=' + bad,
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
    code, err = processes.main_exit_status(['--dataset=digits'] + args, capsys)
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


# ---------------------------------------------------------------- one trainer per run, writers, live data, Ctrl-C



def tensorflow_is_loading(pid, library='tensorflow'):
    try:
        with open('/proc/%d/maps' % pid) as f:
            return library in f.read()
    except OSError:
        return False


@pytest.mark.timeout(120)
def test_ctrl_c_while_tensorflow_imports_is_one_line(tmp_path):
    proc = subprocess.Popen([sys.executable, MAIN, '--mode=train', '--dataset=digits',
                             '--log_root=' + str(tmp_path / 'run')],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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


# Where the test sends SIGINT: ('start', STAGE) waits for resnet_main.py's 'start: STAGE' line
# (RESNET_CIFAR_TRACE_START=1), ('maps', NAME) for a library of that name to be loaded, ('log', RE)
# for a log line, ('file', NAME) for a file in the run directory. The second item: whether the
# process starts with SIGINT ignored, as a job started with `&` by a shell without job control does.
START_POINTS = [
    (('start', 'python'), True), (('start', 'python'), False),
    (('start', 'flags'), True), (('start', 'flags'), False),
    (('start', 'main'), True), (('start', 'main'), False),
    (('start', 'tensorflow'), True), (('start', 'tensorflow'), False),
    (('maps', 'libtensorflow_framework'), True), (('maps', 'libtensorflow_framework'), False),
    (('maps', '_pywrap_tensorflow_internal'), True),
    (('start', 'imported'), True), (('start', 'imported'), False),
    (('log', r'compute dtype'), True), (('log', r'compute dtype'), False),
    (('log', r'ResNet: \d+ trainable parameters'), True),
    (('file', 'config.json'), False),
    (('log', r'learning rate:'), True),
    (('log', r'saved checkpoint 0'), False),
    (('log', r'step 2/'), True), (('log', r'step 3/'), False),
]


def _interrupt_at(point, ignored, log_root):
    """Starts a training run, sends it SIGINT once `point` is reached; returns None when it ended
    as it must (exit 130, one line, nothing written; or stopped with a checkpoint of its stop
    step), else what went wrong."""
    (kind, what), env = point, dict(os.environ, RESNET_CIFAR_TRACE_START='1')
    command = [sys.executable, MAIN] + processes.TINY_DIGITS + processes.LONG_RUN + [
        '--log_root=' + log_root, '--log_every_n_steps=1']
    if ignored:  # the shell's `trap '' INT` is inherited through exec
        command = ['/bin/sh', '-c', 'trap "" INT; exec "$@"', 'sh'] + command
    proc = _Spawned(command, env)
    try:
        reached = proc.wait_until(lambda: _reached(proc, kind, what, log_root), timeout=150)
        if not reached:
            return 'never reached %s %s (exit %s): %s' % (kind, what, proc.proc.poll(), proc.stderr[-1500:])
        proc.proc.send_signal(signal.SIGINT)
        try:
            code = proc.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            return 'SIGINT at %s %s (ignored=%s) was lost: still running 60 s later:\n%s' % (
                kind, what, ignored, proc.stderr[-1500:])
        proc.reader.join(10)
        return _outcome_problem(code, proc.stderr, log_root, '%s %s (ignored=%s)' % (kind, what, ignored))
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait()


class _Spawned(object):
    """A subprocess whose stderr lines are collected as they come (any command, unlike Process)."""

    def __init__(self, command, env):
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env)
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def stderr(self):
        return ''.join(self.lines)

    def wait_until(self, condition, timeout):
        deadline = time.monotonic() + timeout  # a bound for a hung child, not a wait
        while time.monotonic() < deadline and self.proc.poll() is None:
            if condition():
                return True
            time.sleep(0.005)
        return False


def _reached(proc, kind, what, log_root):
    if kind == 'start':
        return 'start: %s\n' % what in proc.lines
    if kind == 'maps':
        return tensorflow_is_loading(proc.proc.pid, what)
    if kind == 'file':
        return os.path.exists(os.path.join(log_root, what))
    return any(re.search(what, line) for line in list(proc.lines))


def _outcome_problem(code, stderr, log_root, where):
    lines = error_lines(stderr)
    if code == 130:
        if len(lines) == 1 and 'Traceback' not in stderr and not os.path.exists(log_root):
            return None
        return 'SIGINT at %s: exit 130 but %s:\n%s' % (
            where, 'wrote %s' % os.listdir(log_root) if os.path.exists(log_root) else 'not one line', stderr[-1500:])
    stopped = re.search(r'stopped by SIGINT at step (\d+); checkpoint (\S+) saved', stderr)
    if code == 0 and stopped and stopped.group(2).endswith('-' + stopped.group(1)) and int(
            stopped.group(1)) in checkpoint_steps(log_root):
        return None
    return 'SIGINT at %s: exit %s:\n%s' % (where, code, stderr[-1500:])


@pytest.mark.timeout(600)
def test_ctrl_c_at_any_point_of_start_up_stops_it_in_one_line_or_with_a_checkpoint(tmp_path):
    """SIGINT at 21 points from resnet_main.py's first line to training's third step, in processes
    that start with SIGINT as the shell gave it and with it ignored: each run exits 130 with one
    line and nothing written, or stops training with a checkpoint of its stop step. (Issue 27: a
    Ctrl-C sent while TensorFlow imported was lost, and the run trained on.)"""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=2) as pool:  # two at a time: the machine may be shared
        problems = list(pool.map(lambda args: _interrupt_at(args[1][0], args[1][1], str(tmp_path / str(args[0]))),
                                 enumerate(START_POINTS)))
    problems = [p for p in problems if p]
    assert not problems, '\n\n'.join(problems)
