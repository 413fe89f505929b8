"""Eval on a real full disk (a small tmpfs): every error names the file it could not write, and
<log_root>/best/ is whole at every instant, the old best or the new one."""
import errno
import fcntl
import json
import os
import shutil

import pytest
import tensorflow as tf

import disks
import processes
from resnet_cifar import best
from resnet_cifar import guards
from resnet_cifar import summaries


@pytest.fixture
def small_disk(tmp_path):
    with disks.small_disk(str(tmp_path / 'disk')) as mount_point:
        yield mount_point


def fake_checkpoint(log_root, step, content):
    prefix = os.path.join(log_root, 'model.ckpt-%d' % step)
    for suffix in ('.index', '.data-00000-of-00001', '.meta'):
        with open(prefix + suffix, 'w') as f:
            f.write('%s%s' % (content, suffix))
    return prefix


def assert_best_is_whole(log_root, step):
    """best/ holds the checkpoint at `step` and nothing else but its state file and best.json, and
    both readers, tf.train.latest_checkpoint and best.info, name that checkpoint. Returns its prefix."""
    best_dir = best.directory(log_root)
    name = 'model.ckpt-%d' % step
    assert sorted(n for n in os.listdir(best_dir) if not n.startswith('.held-by-')) == sorted(
        ['best.json', 'checkpoint', name + '.data-00000-of-00001', name + '.index']), os.listdir(best_dir)
    assert tf.train.latest_checkpoint(best_dir) == os.path.join(best_dir, name)
    info = best.info(log_root)
    assert info['checkpoint'] == name and info['step'] == step, info
    return os.path.join(best_dir, name)


@pytest.mark.timeout(60)
def test_a_promotion_stopped_by_a_full_disk_at_any_step_leaves_the_old_best_whole(small_disk):
    """The disk is filled with 0, 1, 2 ... pages left until the promotion succeeds: each write of
    it fails once, in turn; after each failure best/ is the old best, whole, and the error names
    the file."""
    log_root = os.path.join(small_disk, 'run')
    os.makedirs(log_root)
    assert best.keep(log_root, fake_checkpoint(log_root, 10, 'ten'), {'step': 10, 'precision': 0.5}) is None
    better = fake_checkpoint(log_root, 20, 'twenty')
    failures = []
    for free_pages in range(12):
        disks.leave_free(disks.fill(small_disk), free_pages)
        held = best.hold(log_root, better)
        assert held is not None
        try:
            best.promote(log_root, held, {'step': 20, 'precision': 0.7})
        except OSError as e:
            assert e.errno == errno.ENOSPC and e.filename and str(e.filename).startswith(log_root), repr(e)
            failures.append(e.filename)
            kept = assert_best_is_whole(log_root, 10)
            assert open(kept + '.index').read() == 'ten.index'
            assert best.info(log_root)['precision'] == 0.5
        else:
            break
        finally:
            best.release(held)
            best.remove_holding_folders(log_root)
    else:
        pytest.fail('the promotion never succeeded: %s' % failures)
    assert len(failures) >= 2, failures  # at least best.json and the state file
    kept = assert_best_is_whole(log_root, 20)
    assert open(kept + '.data-00000-of-00001').read() == 'twenty.data-00000-of-00001'
    assert best.info(log_root) == {'step': 20, 'precision': 0.7, 'checkpoint': 'model.ckpt-20'}
    assert sorted(os.listdir(log_root)) == sorted(['best', 'model.ckpt-10.index', 'model.ckpt-10.meta',
                                                   'model.ckpt-10.data-00000-of-00001', 'model.ckpt-20.index',
                                                   'model.ckpt-20.meta', 'model.ckpt-20.data-00000-of-00001'])


@pytest.mark.timeout(240)
def test_eval_on_a_full_disk_names_the_file_and_keeps_best_whole(tiny_run, small_disk):
    """Eval scores the checkpoint at step 40 and waits; the disk is then filled and the run's
    state file switched to step 60 (a rename, which needs no space): scoring it cannot be saved."""
    log_root = os.path.join(small_disk, 'run')
    shutil.copytree(tiny_run, log_root, ignore=shutil.ignore_patterns('events.*', 'graph.pbtxt', 'train'))
    state = os.path.join(log_root, 'checkpoint')
    shutil.copyfile(state, state + '.at-60')
    with open(state, 'w') as f:
        f.write('model_checkpoint_path: "model.ckpt-40"\nall_model_checkpoint_paths: "model.ckpt-40"\n')
    os.link(state, state + '.at-40')  # so that replacing the state file frees no space
    evaluator = processes.Process(['--mode=eval', '--log_root=' + log_root, '--eval_interval_secs=1'])
    try:
        evaluator.wait_for(r'waiting for a new checkpoint', 180)
        disks.fill(small_disk)
        os.replace(state + '.at-60', state)
        assert disks.free_bytes(small_disk) == 0
        code = evaluator.wait(120)
    finally:
        evaluator.kill()
    errors = [line for line in evaluator.lines if line.startswith('error: ')]
    assert code == 1 and len(errors) == 1 and 'Traceback' not in evaluator.stderr, evaluator.stderr[-3000:]
    results = os.path.join(log_root, 'eval', 'results.json')
    assert errors[0].startswith('error: %s: No space left on device; eval stopped' % results), errors[0]
    kept = assert_best_is_whole(log_root, 40)
    assert int(tf.train.load_variable(kept, 'global_step')) == 40
    eval_dir = os.path.join(log_root, 'eval')
    with open(os.path.join(eval_dir, 'results.json')) as f:
        assert [entry['step'] for entry in json.load(f)['checkpoints']] == [40]
    with open(os.path.join(eval_dir, 'eval_state.json')) as f:
        assert [entry['step'] for entry in json.load(f)['checkpoints']] == [40]


@pytest.mark.timeout(60)
def test_the_lock_and_the_event_file_name_themselves_on_a_full_disk(small_disk):
    eval_dir = os.path.join(small_disk, 'eval')
    os.makedirs(eval_dir)
    disks.fill(small_disk)
    lock = os.path.join(small_disk, 'eval.lock')
    with pytest.raises(OSError) as error:
        with guards.RunLock(lock, 'eval', '--log_root=' + small_disk):
            pass
    assert guards.error_line(error.value) == lock + ': No space left on device'
    with open(lock) as f:  # the refused holder released it
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with summaries.writer_errors_reported_once(), pytest.raises(summaries.SummaryWriteError) as error:
        summaries.write_scalars(eval_dir, 1, {'Precision': 0.5})
    assert str(error.value).startswith('cannot write summaries to %s: ' % eval_dir), str(error.value)
    assert 'No space left on device' in str(error.value)
