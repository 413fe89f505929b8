"""--stage_input: batches staged onto the training device one step ahead (staging.py).

Real queue runners, sessions, checkpoints; one subprocess, for the stop signal.
"""
import re
import signal
import threading

import numpy as np
import pytest
import tensorflow as tf

from resnet_cifar import evaluation
from resnet_cifar import resolve as resolve_lib
from resnet_cifar import staging
import synthetic
from resnet_cifar import training
from processes import (AbslRecords, Process, assert_one_line_error, eval_precisions, latest_step, logged_steps,
                       main_exit_status, resolve)

TINY = ['--num_residual_units=1', '--batch_size=32', '--nolr_batch_scaling', '--noeval_after_training']
BATCH = 3


def counting_batches():
    """(images float32 [BATCH, 4, 4, 1], labels int32 [BATCH]) from a queue that one queue-runner
    thread fills with 1, 2, 3, ... in order: batch b (from 1) holds the labels
    BATCH*(b-1)+1 .. BATCH*b, and each image is filled with its label."""
    counter = tf.Variable(0, name='counter')
    queue = tf.queue.FIFOQueue(4 * BATCH, [tf.float32, tf.int32], shapes=[[4, 4, 1], []])
    number = tf.compat.v1.assign_add(counter, 1)
    enqueue = queue.enqueue([tf.fill([4, 4, 1], tf.cast(number, tf.float32)), number])
    tf.compat.v1.train.add_queue_runner(tf.compat.v1.train.QueueRunner(queue, [enqueue]))
    return queue.dequeue_many(BATCH)


def labels_of_batch(b):
    return list(range(BATCH * (b - 1) + 1, BATCH * b + 1))


@pytest.mark.timeout(60)
def test_each_run_takes_the_batch_staged_by_the_run_before_in_queue_order():
    with tf.Graph().as_default():
        images, labels = counting_batches()
        staged_images, staged_labels = staging.stage(images, labels, '/cpu:0')
        assert staged_images.shape.as_list() == [BATCH, 4, 4, 1]
        assert staged_labels.shape.as_list() == [BATCH]
        put, = staging.put_ops()
        size = staging.buffer_size(put)
        hook = staging.StagingHook([put])
        # MonitoredSession starts the queue runners under its Coordinator before the hook
        # primes the buffer, and stops them through it on close.
        with tf.compat.v1.train.MonitoredSession(hooks=[hook]) as session:
            raw_run = lambda fetches: session.run_step_fn(
                lambda step_context: step_context.session.run(fetches))
            assert raw_run(size) == 1  # primed with batch 1
            for b in range(1, 6):
                # One run: trains on batch b while batch b + 1 is dequeued and staged.
                taken_images, taken, dequeued = session.run([staged_images, staged_labels, labels])
                assert list(taken) == labels_of_batch(b)
                assert list(dequeued) == labels_of_batch(b + 1)
                np.testing.assert_array_equal(taken_images[:, 0, 0, 0], taken)  # pairs stay together
                assert raw_run(size) == 1


@pytest.mark.timeout(60)
def test_the_buffer_never_holds_more_than_two_batches():
    with tf.Graph().as_default():
        images, labels = counting_batches()
        _, staged_labels = staging.stage(images, labels, '/cpu:0')
        put, = staging.put_ops()
        size = staging.buffer_size(put)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            coord = tf.compat.v1.train.Coordinator()
            threads = tf.compat.v1.train.start_queue_runners(session, coord=coord)
            third_put = threading.Thread(target=session.run, args=(put,), daemon=True)
            try:
                staging.StagingHook([put]).after_create_session(session, coord)
                session.run(put)
                assert session.run(size) == staging.CAPACITY == 2
                third_put.start()
                third_put.join(0.5)
                assert third_put.is_alive()  # waits for room
                assert session.run(size) == 2
                assert list(session.run(staged_labels)) == labels_of_batch(1)
                third_put.join(10)
                assert not third_put.is_alive()
                assert session.run(size) == 2
                assert [list(session.run(staged_labels)) for _ in range(2)] == [labels_of_batch(2),
                                                                                 labels_of_batch(3)]
            finally:
                if third_put.is_alive():  # never leave a put waiting in a closing session
                    session.run(staged_labels)
                    third_put.join(10)
                coord.request_stop()
                coord.join(threads, stop_grace_period_secs=10)


@pytest.fixture(scope='module')
def learnable(tmp_path_factory):
    return synthetic.write_learnable_dataset(tmp_path_factory.mktemp('learnable'), num_train=1000, num_test=200)


@pytest.mark.timeout(240)
def test_staged_run_stops_on_sigterm_with_its_step_saved_resumes_there_and_learns(learnable, tmp_path, capsys):
    train_path, test_path = learnable
    log_root = str(tmp_path / 'run')
    command = ['--mode=train', '--dataset=cifar10', '--train_data_path=' + train_path, '--log_root=' + log_root,
               '--train_steps=150', '--save_checkpoints_steps=1000', '--log_every_n_steps=1',
               '--random_seed=3', '--stage_input'] + TINY
    trainer = Process(command)
    try:
        trainer.wait_for(r'step 20/150', timeout=150)
        trainer.proc.send_signal(signal.SIGTERM)
        assert trainer.wait(60) == 0, trainer.stderr[-3000:]
    finally:
        trainer.kill()
    stopped = re.search(r'stopped by SIGTERM at step (\d+); checkpoint (\S+) saved', trainer.stderr)
    assert stopped, trainer.stderr[-3000:]
    stop_step = int(stopped.group(1))
    assert stop_step >= 20 and latest_step(log_root) == stop_step
    assert max(logged_steps(trainer.stderr, 150)) == stop_step  # nothing ran after the save

    # The same command again, in this process: it resumes at the saved step and finishes.
    config = resolve(command)
    assert config.devices.stage_input is True
    with AbslRecords() as records:
        training.train(config)
    logged = logged_steps('\n'.join(records.messages), 150)
    assert min(logged) == stop_step + 1 and max(logged) == 150, sorted(logged)
    assert sorted(logged) == list(range(stop_step + 1, 151))
    assert latest_step(log_root) == 150

    config = resolve(['--mode=eval', '--dataset=cifar10', '--eval_data_path=' + test_path,
                           '--log_root=' + log_root, '--eval_once', '--num_residual_units=1'])
    capsys.readouterr()
    evaluation.evaluate(config)
    (step, precision), = eval_precisions(capsys.readouterr().out)
    assert step == 150 and precision >= 0.9


@pytest.mark.timeout(120)
def test_seeded_staged_and_unstaged_runs_train_on_the_same_batches(learnable, tmp_path):
    """Staging drops no batch and reorders none: with one reader thread and a seed, the
    staged run logs the unstaged run's losses step by step."""
    train_path, _ = learnable
    losses = {}
    for flag in ('--stage_input', '--nostage_input'):
        config = resolve(['--mode=train', '--dataset=cifar10', '--train_data_path=' + train_path,
                               '--log_root=' + str(tmp_path / flag), '--train_steps=6', '--log_every_n_steps=1',
                               '--random_seed=7', '--num_input_threads=1', flag] + TINY)
        with AbslRecords() as records:
            training.train(config)
        losses[flag] = {step: loss for step, (loss, _) in logged_steps('\n'.join(records.messages), 6).items()}
    assert sorted(losses['--stage_input']) == list(range(1, 7))
    assert losses['--stage_input'] == losses['--nostage_input']


@pytest.mark.timeout(120)
def test_two_cpu_towers_stage_each_batch_on_their_own_device_and_train(learnable, tmp_path):
    train_path, _ = learnable
    log_root = str(tmp_path / 'run')
    config = resolve(['--mode=train', '--dataset=cifar10', '--train_data_path=' + train_path,
                           '--log_root=' + log_root, '--train_steps=12', '--log_every_n_steps=4',
                           '--num_gpus=2', '--tower_device=cpu', '--stage_input'] + TINY)
    with tf.Graph().as_default():
        model = training.build_train_graph(config)
        puts = staging.put_ops()
        assert [tf.DeviceSpec.from_string(op.device).device_index for op in puts] == [0, 1]
        for tower, put in zip(model.towers, puts):
            assert tower.images.op.type == 'Unstage' and tower.images.device == put.device
            assert tower.images.op.get_attr('shared_name') == put.get_attr('shared_name')
            assert tower.images.shape.as_list() == [16, 32, 32, 3]
    with AbslRecords() as records:
        training.train(config)
    assert sorted(logged_steps('\n'.join(records.messages), 12)) == [4, 8, 12]
    assert latest_step(log_root) == 12


@pytest.mark.timeout(60)
def test_a_bad_record_found_while_priming_is_the_one_line_data_error(tmp_path, capsys):
    bad = synthetic.write_bad_label_file(tmp_path)
    code, err = main_exit_status(['--mode=train', '--dataset=cifar10', '--train_data_path=' + bad,
                                     '--log_root=' + str(tmp_path / 'run'), '--train_steps=50',
                                     '--num_input_threads=1', '--stage_input'] + TINY, capsys)
    assert_one_line_error(code, err, 1, "bad.bin', record 5: label 12 out of range")


@pytest.mark.timeout(60)
def test_stage_input_defaults_to_on_for_gpus_only():
    assert resolve(['--mode=train', '--dataset=digits']).devices.stage_input is False  # no GPU here
    assert resolve(['--mode=train', '--dataset=digits', '--stage_input']).devices.stage_input is True
    assert resolve(['--mode=train', '--dataset=digits', '--nostage_input']).devices.stage_input is False
    assert resolve(['--mode=train', '--dataset=digits', '--num_gpus=2', '--tower_device=cpu']
                   ).devices.stage_input is False
    assert resolve_lib.default_stage_input(1, 'gpu') and resolve_lib.default_stage_input(4, 'gpu')
    assert not resolve_lib.default_stage_input(0, 'gpu')
    assert not resolve_lib.default_stage_input(2, 'cpu')
