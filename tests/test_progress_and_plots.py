"""In-process: eval progress lines, top-5 precision, and the plot script."""
import dataclasses
import glob
import logging
import os
import struct
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from resnet_cifar import progress
from resnet_cifar import summaries
from resnet_cifar.config import Data, Eval, Model, RunConfig, Schedule
from resnet_cifar import evaluation
import resnet_model
import processes
import synthetic

plot_curves = processes.load_script('plot_curves')

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def wait_for(condition, timeout=5.0):
    deadline = time.time() + timeout
    while not condition() and time.time() < deadline:
        time.sleep(0.01)
    return condition()


@pytest.mark.timeout(10)
def test_eval_progress_every_tenth_of_a_large_set_only():
    eval_progress = progress.EvalProgress(10000, 100)
    assert (eval_progress.total_batches, eval_progress.every_n_batches) == (100, 10)
    lines = {b: eval_progress.line(80000, b, b * 100, b * 0.5) for b in range(1, 101)}
    assert sorted(b for b, line in lines.items() if line) == list(range(10, 100, 10))
    assert lines[30] == ('eval of step 80000: batch 30/100 (30%), 3000/10000 images, '
                         '200.0 images/sec, ETA 0:00:35')
    small = progress.EvalProgress(300, 100)  # the digits sample: 3 batches
    assert small.every_n_batches == 0
    assert not any(small.line(1, b, b * 100, 1.0) for b in range(1, 4))
    ragged = progress.EvalProgress(2050, 100)  # 21 batches, the last one partial
    assert (ragged.total_batches, ragged.every_n_batches) == (21, 3)


def write_cifar100(path, num_images, seed=0):
    rng = np.random.RandomState(seed)
    fine = rng.randint(0, 100, size=num_images)
    return synthetic.write_records(path, synthetic.random_images(num_images, seed), fine, fine // 5)


def save_random_checkpoint(hps, log_root, step, seed=None):
    """A train-mode ResNet's freshly initialized variables, saved at global step `step`."""
    with tf.Graph().as_default():
        if seed is not None:
            tf.compat.v1.set_random_seed(seed)
        images = tf.zeros([1, 32, 32, 3])
        labels = tf.one_hot([0], hps.num_classes)
        model = resnet_model.ResNet(hps, images, labels, 'train')
        model.build_graph()
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            session.run(model.global_step.assign(step))
            return tf.compat.v1.train.Saver().save(session, os.path.join(log_root, 'model.ckpt'),
                                                   global_step=step)


def numpy_precisions(evaluator, checkpoint, ks=(1, 5)):
    """Top-k precision for each k of `ks`, of the checkpoint on the eval set, from logits
    fetched batch by batch."""
    logits, labels = [], []
    with tf.compat.v1.Session(graph=evaluator.graph) as session:
        evaluator.raw_saver.restore(session, checkpoint)
        session.run(evaluator.local_init)
        coord = tf.compat.v1.train.Coordinator()
        threads = tf.compat.v1.train.start_queue_runners(session, coord=coord)
        try:
            while True:
                batch_logits, batch_labels = session.run([evaluator.model.logits, evaluator.model.labels])
                logits.append(batch_logits)
                labels.append(batch_labels.argmax(1))
        except tf.errors.OutOfRangeError:
            pass
        finally:
            coord.request_stop()
            coord.join(threads)
    logits, labels = np.concatenate(logits), np.concatenate(labels)
    # The rank of each image's label among its logits (0: the top one).
    ranks = (logits > logits[np.arange(len(labels)), labels][:, None]).sum(axis=1)
    return tuple((ranks < k).mean() for k in ks)


@pytest.mark.timeout(120)
def test_cifar100_eval_writes_top_5_precision_and_progress(tmp_path, caplog, capsys):
    eval_path = write_cifar100(str(tmp_path / 'test.bin'), 120)
    log_root = str(tmp_path / 'run')
    config = RunConfig(mode='eval', log_root=log_root, data=Data(dataset='cifar100', eval_data_path=eval_path),
                       model=Model(num_residual_units=1), schedule=Schedule(train_steps=1, moving_average_decay=0),
                       eval=Eval(batch_size=4, once=True, interval_secs=1, use_moving_average=False))
    hps = config.hparams()
    checkpoint = save_random_checkpoint(hps, log_root, step=1, seed=3)
    # The absl logger has its own level, which an earlier in-process flag parse may have raised.
    caplog.set_level(logging.INFO, logger='absl')
    evaluation.evaluate(config)

    expected_top1, top4, expected_top5, top6 = numpy_precisions(
        evaluation.EvalGraph(hps, config), checkpoint, ks=(1, 4, 5, 6))
    # This seeded random net on 100 classes tells top-5 from top-1 and from its neighbours.
    assert expected_top1 < top4 < expected_top5 < top6, (expected_top1, top4, expected_top5, top6)
    scalars = {}
    for path in glob.glob(os.path.join(config.eval_dir, 'events.out.tfevents.*')):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                scalars[(value.tag, event.step)] = value.simple_value
    assert scalars[('Precision@5', 1)] == pytest.approx(expected_top5, abs=1e-6)
    assert scalars[('Precision', 1)] == pytest.approx(expected_top1, abs=1e-6)
    assert scalars[('Precision@5', 1)] > scalars[('Precision', 1)]
    assert 'precision@5 %.4f' % expected_top5 in capsys.readouterr().out

    # 120 images in batches of 4: 30 batches, a progress line every 3 but not after the last.
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith('eval of step 1:')]
    assert [line.split(',')[0] for line in progress] == [
        'eval of step 1: batch %d/30 (%d%%)' % (b, 100 * b // 30) for b in range(3, 30, 3)]

    # Run again beside a finished training (the launcher's command again): it ends without
    # waiting its 600 s interval and without scoring the step again. (In a thread: a wait would
    # fail this test, not end pytest through its timeout.)
    caplog.clear()
    following = dataclasses.replace(config, eval=dataclasses.replace(config.eval, once=False, interval_secs=600))
    again = threading.Thread(target=evaluation.evaluate, args=(following,), daemon=True)
    again.start()
    again.join(90)
    assert not again.is_alive(), caplog.text[-3000:]
    assert 'already scored; eval done' in caplog.text
    assert not any(r.getMessage().startswith('eval of step 1:') for r in caplog.records)


@pytest.mark.timeout(10)
def test_cifar10_eval_has_no_top_5():
    assert 'cifar10' not in evaluation.TOP_5_DATASETS and 'digits' not in evaluation.TOP_5_DATASETS
    assert evaluation.Score(1, 0.5, 1.0, 10, 0.1).precision_at_5 is None


def png_size(path):
    """(width, height) from the PNG header; checks the signature and the IHDR chunk."""
    with open(path, 'rb') as f:
        head = f.read(24)
    assert head[:8] == PNG_SIGNATURE, head[:8]
    assert head[12:16] == b'IHDR'
    return struct.unpack('>II', head[16:24])


@pytest.mark.timeout(60)
def test_plot_curves_draws_train_loss_and_eval_precision(tmp_path, capsys):
    log_root = str(tmp_path / 'run')
    for step in (100, 200, 300):
        summaries.write_scalars(os.path.join(log_root, 'train'), step, {
            'total_loss': 3.0 - step / 200.0, 'cross_entropy': 2.9 - step / 200.0, 'precision': step / 400.0})
    for step in (150, 300):
        summaries.write_scalars(os.path.join(log_root, 'eval'), step, {
            'Precision': step / 500.0, 'Best Precision': step / 500.0, 'loss': 2.0})
    summaries.write_scalars(os.path.join(log_root, 'eval'), 300, {'Precision': 0.7})  # logged again: last wins

    scalars = plot_curves.read_scalars(log_root)
    assert sorted(scalars) == ['eval', 'train']
    assert scalars['train']['total_loss'] == [(100, 2.5), (200, 2.0), (300, 1.5)]
    assert scalars['eval']['Precision'] == [(150, pytest.approx(0.3)), (300, pytest.approx(0.7))]

    out = str(tmp_path / 'plots' / 'curves.png')
    assert plot_curves.main([log_root, out]) == 0
    width, height = png_size(out)
    assert (width, height) == (plot_curves.FIGURE_INCHES[0] * plot_curves.DPI,
                               plot_curves.FIGURE_INCHES[1] * plot_curves.DPI)
    assert os.path.getsize(out) > 10000  # axes, lines and legends, not a blank image
    assert 'wrote ' + out in capsys.readouterr().out


@pytest.mark.timeout(30)
def test_plot_curves_errors_are_one_line(tmp_path, capsys):
    assert plot_curves.main([str(tmp_path / 'missing'), str(tmp_path / 'a.png')]) == 2
    assert plot_curves.main([str(tmp_path), str(tmp_path / 'a.png')]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == ['error: LOG_ROOT %s: not a directory' % (tmp_path / 'missing'),
                   'error: no event files under %s: train first' % tmp_path]
    assert not os.path.exists(str(tmp_path / 'a.png'))
