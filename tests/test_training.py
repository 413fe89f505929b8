"""training.py: NaN and Inf stops, full disks, changing training files, nothing left to train;
every one a one-line error with the last good checkpoint kept."""
import glob
import logging
import os
import resource
import re
import shutil
import signal
import time

import numpy as np
import pytest
import tensorflow as tf
from absl import logging as absl_logging

import processes
from processes import (LONG_RUN, REPO, TINY_DIGITS, Process, assert_all_checkpoints_loadable, assert_one_line_error,
                       checkpoint_steps, latest_step, logged_steps, read_checkpoint)
from resnet_cifar import training
from resnet_cifar.config import RunConfig

TINY = ['--num_residual_units=1', '--batch_size=32', '--nolr_batch_scaling', '--noeval_after_training']


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
    config = processes.resolve(['--mode=train', '--dataset=cifar10', '--train_data_path=' + train_path,
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
    config = processes.resolve(['--mode=train', '--dataset=cifar10', '--train_data_path=' + train_path,
                                '--log_root=' + log_root, '--train_steps=%d' % step] + TINY)
    training.train(config)
    assert sorted(os.listdir(log_root)) == files and latest_step(log_root) == step


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
    error = training.session_error(IndexError('run/events.out.tfevents.1; File too large'), config, saves)
    assert str(error) == ('cannot write summaries to %s: run/events.out.tfevents.1; File too large; checkpoint '
                          '%s saved; free space and run the same command to resume'
                          % (log_root, os.path.join(log_root, 'model.ckpt-40')))
    # TensorFlow's saver names the checkpoint in the state file before it writes the .meta file.
    error = training.session_error(IndexError('run/model.ckpt-40.meta.tmp1; File too large'), config, saves)
    assert str(error).startswith('cannot save checkpoint 40 in %s' % log_root)
    saves.before_save(None, 60)  # the save of 60 itself failed
    error = training.session_error(IndexError('run/model.ckpt-60.data; File too large'), config, saves)
    assert str(error).startswith('cannot save checkpoint 60 in %s' % log_root)


def _add_learning_rate_variable(prefix, value):
    """Rewrites checkpoint `prefix` with a 'learning_rate' variable, as runs saved before the
    rate was computed in the graph from the global step."""
    values = read_checkpoint(prefix)
    with tf.Graph().as_default():
        variables = [tf.compat.v1.Variable(v, name=name) for name, v in values.items()]
        variables.append(tf.compat.v1.Variable(np.float32(value), name='learning_rate'))
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver(variables).save(session, prefix, write_meta_graph=False)


@pytest.mark.timeout(180)
def test_a_checkpoint_with_the_old_learning_rate_variable_resumes_and_evals(tiny_run, tmp_path, capsys):
    log_root = processes.copy_run(tiny_run, tmp_path / 'run')
    _add_learning_rate_variable(os.path.join(log_root, 'model.ckpt-60'), 0.5)
    assert 'learning_rate' in read_checkpoint(os.path.join(log_root, 'model.ckpt-60'))
    trained = processes.run_main('--mode=train', '--log_root=' + log_root, '--train_steps=70',
                                 '--log_every_n_steps=5')
    assert 'resuming from' in trained.stderr and checkpoint_steps(log_root)[-1] == 70
    # The run's schedule (0.0001 from step 60 on), not the stored 0.5.
    assert {step: lr for step, (_, lr) in logged_steps(trained.stderr, 70).items()} == {
        65: pytest.approx(0.0001), 70: pytest.approx(0.0001)}
    scored = processes.main_stdout(['--mode=eval', '--log_root=' + log_root, '--eval_once', '--eval_batch_count=1'],
                                   capsys)  # in this process
    assert processes.eval_precisions(scored)[0][0] == 70


@pytest.mark.timeout(300)
def test_a_wall_clock_set_back_an_hour_does_not_stop_time_based_saves(tmp_path, monkeypatch):
    """--save_checkpoints_secs=1 on a real run in this process. During the first timed save time.time()
    (the wall clock) goes back 3600 s; saves go on every second, and after three more of them a
    SIGTERM stops the run with a checkpoint. (Issue 26: TensorFlow's saver timer reads the wall
    clock, and no save came for an hour.) Bounded by --train_steps: on the old code the run
    reached its end with no save between the first and the last."""
    log_root = str(tmp_path / 'run')
    config = processes.resolve(TINY_DIGITS + ['--mode=train', '--log_root=' + log_root, '--train_steps=600',
                                              '--save_checkpoints_secs=1', '--log_every_n_steps=5'])
    real_time, offset = time.time, []
    monkeypatch.setattr(time, 'time', lambda: real_time() - sum(offset))
    saves_after_the_jump = []

    class OnSaves(logging.Handler):
        def emit(self, record):
            saved = re.match(r'saved checkpoint (\d+)$', record.getMessage())
            if not saved:
                return
            if int(saved.group(1)) == 0:
                return  # at session start TensorFlow's timer starts counting after this save
            if not offset:
                offset.append(3600)  # the clock is set back once, the timer having started before
            elif len(saves_after_the_jump) < 3:
                saves_after_the_jump.append(int(saved.group(1)))
                if len(saves_after_the_jump) == 3:
                    os.kill(os.getpid(), signal.SIGTERM)  # training saves this step and stops

    handler = OnSaves()
    with processes.AbslRecords() as records:
        absl_logging.get_absl_logger().addHandler(handler)
        try:
            assert training.train(config) is None
        finally:
            absl_logging.get_absl_logger().removeHandler(handler)
    assert len(saves_after_the_jump) == 3, records.messages[-20:]
    stopped = [m for m in records.messages if m.startswith('stopped by SIGTERM at step')]
    assert stopped and int(stopped[0].split()[5].rstrip(';')) < 600, records.messages[-5:]
    assert set(saves_after_the_jump) <= set(checkpoint_steps(log_root) + [0])
    rates = [float(m) for m in re.findall(r'([0-9.e+]+) examples/sec', '\n'.join(records.messages))]
    assert rates and max(rates) < 1e6, rates  # the progress lines' rate does not divide by a negative time


def test_the_saver_timer_counts_on_when_even_the_monotonic_clock_is_set_back(monkeypatch):
    """libfaketime sets CLOCK_MONOTONIC back with the wall clock (a real clock step never moves
    it): the timer then counts its seconds from the step back, not from an hour ahead."""
    now = [1000.0]
    monkeypatch.setattr(time, 'monotonic', lambda: now[0])
    timer = training.MonotonicTimer(every_secs=5)
    assert timer.should_trigger_for_step(0)
    timer.update_last_triggered_step(0)
    now[0] = 1003.0
    assert not timer.should_trigger_for_step(10)
    now[0] = 1003.0 - 3600  # set back an hour
    assert not timer.should_trigger_for_step(20)
    now[0] += 5
    assert timer.should_trigger_for_step(30)
    assert timer.update_last_triggered_step(30) == (pytest.approx(5.0), 30)
    assert timer.last_triggered_step() == 30
