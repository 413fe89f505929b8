"""evaluation.py: scoring checkpoints (top-5 on CIFAR-100), skipping damaged or rotated ones,
the eval state, stopping a waiting eval."""
import dataclasses
import glob
import json
import logging
import os
import re
import shutil
import signal
import threading

import numpy as np
import pytest
import tensorflow as tf

import cifar_input
import processes
import resnet_model
import synthetic
from processes import AbslRecords, Process, checkpoint_steps
from resnet_cifar import evaluation
from resnet_cifar.config import Data, Eval, Model, RunConfig, Schedule
from resnet_cifar.errors import RunError

TINY = ['--num_residual_units=1', '--batch_size=32', '--nolr_batch_scaling', '--noeval_after_training']


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
        config = processes.resolve(args + extra_args)
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

    # Beside training: every checkpoint not scored yet, oldest first; the corrupt one is skipped,
    # then the next new checkpoint is scored.
    skips, scored = eval_with_records([], bring_back_the_newest)
    assert len(skips) == 1 and corrupted in skips[0], skips
    assert scored == [step[p] for p in good[:-3]] + [newest_step]


@pytest.mark.timeout(60)
def test_a_checkpoint_rotated_away_is_unreadable_not_fatal(diverged, learnable, tmp_path):
    _, test_path = learnable
    config = processes.resolve(['--mode=eval', '--dataset=cifar10', '--eval_data_path=' + test_path,
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


@pytest.mark.timeout(30)
def test_an_eval_state_that_is_no_regular_file_is_one_line_naming_it(tmp_path):
    """A garbled file is eval's own record to rebuild (above); a directory, FIFO or device in its
    place is something else the user must move away: eval would never be able to write its state."""
    os.makedirs(str(tmp_path / 'eval_state.json'))  # a directory where the file should be
    with pytest.raises(RunError, match=r'eval_state\.json is a directory; expected a regular file'):
        evaluation.EvalState(str(tmp_path))


def test_checkpoint_step_from_its_name():
    assert evaluation.step_in_name('/runs/x/model.ckpt-1200') == 1200
    assert evaluation.step_in_name('/runs/x/model.ckpt') == -1


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
            session.run(model.step.global_step.assign(step))
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
    assert not cifar_input.dataset_info('cifar10').top_5 and not cifar_input.dataset_info('digits').top_5
    assert evaluation.Score(1, 0.5, 1.0, 10, 0.1).precision_at_5 is None


def test_the_held_out_score_after_training_is_a_warning_when_it_cannot_be_had(tiny_run, tmp_path, caplog):
    """The run is trained and saved by then: missing eval records or a missing checkpoint are a
    warning, not a failed run."""
    caplog.set_level(logging.WARNING, logger='absl')
    no_records = RunConfig(log_root=tiny_run, data=Data(dataset='digits', eval_data_path=str(tmp_path / 'no.bin')),
                           model=Model(num_residual_units=1))
    assert evaluation.score_after_training(no_records) is None
    assert "no held-out precision: no file matches data_path pattern '%s'" % (tmp_path / 'no.bin') in caplog.text
    no_run = RunConfig(log_root=str(tmp_path), data=Data(dataset='digits'), model=Model(num_residual_units=1))
    assert evaluation.score_after_training(no_run) is None
    assert 'no held-out precision: no checkpoint in %s' % tmp_path in caplog.text
    score = evaluation.score_after_training(dataclasses.replace(no_records, data=Data(dataset='digits')))
    assert (score.step, score.num_images) == (60, 300)


@pytest.mark.timeout(120)
def test_eval_beside_training_scores_every_checkpoint_oldest_first_once(tiny_run, tmp_path, capsys):
    """When training saves faster than eval scores, eval falls behind instead of leaving holes:
    every checkpoint on disk is scored, oldest first; a restarted eval scores none again."""
    run_dir = processes.copy_run(tiny_run, tmp_path / 'run')  # checkpoints 40 and 60, training done
    config = processes.resolve(['--mode=eval', '--log_root=' + run_dir, '--eval_interval_secs=1'])
    capsys.readouterr()
    evaluation.evaluate(config)
    printed = re.findall(r'^step (\d+): precision ([0-9.]+)', capsys.readouterr().out, re.M)
    assert [step for step, _ in printed] == ['40', '60']
    evaluation.evaluate(config)
    assert re.findall(r'^step (\d+): precision', capsys.readouterr().out, re.M) == []

    # results.json: every checkpoint, the best, and the latest one in detail.
    results = json.load(open(os.path.join(config.eval_dir, 'results.json')))
    assert [(e['step'], '%.4f' % e['precision']) for e in results['checkpoints']] == [
        (int(step), precision) for step, precision in printed]
    assert results['best'] == max(results['checkpoints'], key=lambda e: e['precision'])
    latest = results['latest']
    confusion = np.array(latest['confusion_matrix'])
    assert latest['step'] == 60 and confusion.shape == (10, 10) and confusion.sum() == 300
    assert np.trace(confusion) / 300 == pytest.approx(latest['precision'])
    assert latest['per_class_precision'] == pytest.approx(list(np.diag(confusion) / confusion.sum(axis=1)))
    assert latest['class_names'][:3] == ['zero', 'one', 'two'] and len(latest['class_names']) == 10
    assert 'optimistic' in results['best_is_chosen_on']


@pytest.mark.timeout(120)
def test_eval_flip_averages_each_image_with_its_mirror(tiny_run, tmp_path):
    """With --eval_flip an image and its mirror score the same, though the network itself does not."""
    test_path = processes.resolve(['--mode=eval', '--log_root=' + tiny_run]).data.eval_data_path
    images, labels = cifar_input.read_records('digits', test_path)
    mirrored_path = synthetic.write_records(str(tmp_path / 'mirrored.bin'), images[:, :, ::-1], labels)
    checkpoint = os.path.join(tiny_run, 'model.ckpt-60')

    def score(data_path, *flags):
        config = processes.resolve(['--mode=eval', '--log_root=' + tiny_run, '--eval_data_path=' + data_path]
                                   + list(flags))
        return evaluation.EvalGraph(config.hparams(), config).score(checkpoint)

    plain, plain_mirrored = score(test_path), score(mirrored_path)
    flipped, flipped_mirrored = score(test_path, '--eval_flip'), score(mirrored_path, '--eval_flip')
    assert plain.loss != pytest.approx(plain_mirrored.loss, abs=1e-3)  # digits are not mirror-symmetric
    assert flipped.num_images == flipped_mirrored.num_images == 300
    assert flipped.loss == pytest.approx(flipped_mirrored.loss, abs=1e-5)
    assert abs(flipped.precision - flipped_mirrored.precision) <= 1 / 300  # a tie may break either way
    np.testing.assert_allclose(flipped.confusion.sum(axis=1), plain.confusion.sum(axis=1))


@pytest.mark.timeout(400)
def test_eval_beside_training_on_a_validation_split_keeps_the_best_and_scores_the_test_once(tmp_path):
    """Training saves every 5 steps and keeps one checkpoint; eval beside it scores what it finds
    on the 300 held-out validation records, each checkpoint once, in step order, keeps the best
    in best/, and at the end scores that one on the test records. Export then takes best/."""
    from resnet_cifar import best, export
    run_dir = str(tmp_path / 'run')
    run = ['--dataset=digits', '--log_root=' + run_dir]
    trainer = Process(['--mode=train', *run, *TINY, '--train_steps=60', '--save_checkpoints_steps=5',
                       '--keep_checkpoint_max=1', '--validation_size=300'])
    evaluator = Process(['--mode=eval', *run, '--eval_interval_secs=1'])
    try:
        assert trainer.wait(300) == 0, trainer.stderr[-3000:]
        assert evaluator.wait(300) == 0, evaluator.stderr[-3000:]
    finally:
        trainer.kill()
        evaluator.kill()
    out = evaluator.proc.stdout.read()
    scored = [(int(s), float(p)) for s, p in re.findall(r'^step (\d+): validation precision ([0-9.]+)', out, re.M)]
    steps = [step for step, _ in scored]
    assert steps == sorted(set(steps)) and steps[-1] == 60, out  # each once, in order, the last one too
    assert checkpoint_steps(run_dir) == [60]  # the others were rotated away

    results = json.load(open(os.path.join(run_dir, 'eval', 'results.json')))
    assert [(e['step'], '%.4f' % e['precision']) for e in results['checkpoints']] == [
        (step, '%.4f' % precision) for step, precision in scored]
    chosen = results['best']
    assert chosen == max(results['checkpoints'], key=lambda e: (e['precision'], e['step']))  # the later of equals
    assert 'validation records: the last 300 of' in results['best_is_chosen_on']
    test = results['test']
    assert (test['step'], test['checkpoint'], test['images']) == (chosen['step'], 'model.ckpt-%d' % chosen['step'], 300)
    confusion = np.array(test['confusion_matrix'])
    assert confusion.sum() == 300 and np.trace(confusion) / 300 == pytest.approx(test['precision'])
    assert test['class_names'][0] == 'zero' and len(test['per_class_precision']) == 10
    assert len(re.findall(r'^test precision', out, re.M)) == 1
    assert 'test precision %.4f on 300 images' % test['precision'] in out

    # best/ holds that checkpoint: scored again on the validation records, it gives the same figure.
    kept = best.path(run_dir)
    assert kept == os.path.join(run_dir, 'best', 'model.ckpt-%d' % chosen['step'])
    config = processes.resolve(['--mode=eval', '--log_root=' + run_dir])
    again = evaluation.EvalGraph(config.hparams(), config, evaluation.checkpoint_records(config)).score(kept)
    assert (again.step, again.precision) == (chosen['step'], pytest.approx(chosen['precision']))

    # Export takes best/ by default, also when the run's own checkpoints are gone.
    for name in glob.glob(os.path.join(run_dir, 'model.ckpt-*')):
        os.remove(name)
    export_config = processes.resolve(['--mode=export', '--log_root=' + run_dir,
                                       '--export_dir=' + str(tmp_path / 'model')])
    assert export.export_saved_model(export_config) == kept


@pytest.mark.timeout(180)
def test_the_test_score_is_kept_for_the_same_checkpoint_only(tmp_path):
    """REVIEW.md #8: the test score was kept by the best checkpoint's name; a best/ holding another
    checkpoint under the same name (a run resumed from an earlier step saves that name again)
    kept the old test score on the old code ('is in ... already')."""
    from processes import TINY, run_main
    train_path = synthetic.write_records(tmp_path / 'train.bin', synthetic.random_images(400, seed=3),
                                         [i % 10 for i in range(400)])
    test_path = synthetic.write_records(tmp_path / 'test.bin', synthetic.random_images(50, seed=4),
                                        [i % 10 for i in range(50)])
    log_root = str(tmp_path / 'run')
    data = ['--dataset=cifar10', '--train_data_path=' + train_path, '--eval_data_path=' + test_path,
            '--log_root=' + log_root]
    from resnet_cifar import training  # set-up in this process: eval's subprocesses are the subject
    training.train(processes.resolve(['--mode=train', *TINY, *data, '--validation_size=200', '--train_steps=4',
                                      '--save_checkpoints_steps=2']))
    first = run_main('--mode=eval', *data)
    assert 'test precision' in first.stdout, first.stdout
    kept = json.load(open(os.path.join(log_root, 'best', 'best.json')))
    other = 2 if kept['step'] == 4 else 4
    kept_prefix = os.path.join(log_root, 'best', 'model.ckpt-%d' % kept['step'])
    for target in glob.glob(kept_prefix + '.*'):
        os.remove(target)
        shutil.copy(os.path.join(log_root, 'model.ckpt-%d' % other) + target[len(kept_prefix):], target)
    second = run_main('--mode=eval', *data)
    assert 'test precision' in second.stdout, second.stdout + second.stderr[-2000:]
    assert json.load(open(os.path.join(log_root, 'eval', 'results.json')))['test']['step'] == other
