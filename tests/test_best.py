"""best.py: the best checkpoint kept in <log_root>/best/, whole at every moment, whatever rotation does."""
import json
import os

from resnet_cifar import best


def fake_checkpoint(log_root, step, content):
    prefix = os.path.join(str(log_root), 'model.ckpt-%d' % step)
    for suffix in ('.index', '.data-00000-of-00001', '.meta'):
        with open(prefix + suffix, 'w') as f:
            f.write('%s%s' % (content, suffix))
    return prefix


def test_the_kept_checkpoint_survives_its_rotation_and_a_better_one_replaces_it(tmp_path):
    first = fake_checkpoint(tmp_path, 10, 'ten')
    assert best.path(str(tmp_path)) is None
    assert best.keep(str(tmp_path), first, {'step': 10, 'precision': 0.5}) is None
    for suffix in ('.index', '.data-00000-of-00001'):
        os.remove(first + suffix)  # the trainer's rotation
    kept = best.path(str(tmp_path))
    assert kept == os.path.join(str(tmp_path), 'best', 'model.ckpt-10')
    assert open(kept + '.index').read() == 'ten.index'
    assert open(kept + '.data-00000-of-00001').read() == 'ten.data-00000-of-00001'
    assert best.info(str(tmp_path)) == {'step': 10, 'precision': 0.5, 'checkpoint': 'model.ckpt-10'}

    second = fake_checkpoint(tmp_path, 20, 'twenty')
    assert best.keep(str(tmp_path), second, {'step': 20, 'precision': 0.7}) is None
    assert best.path(str(tmp_path)).endswith(os.path.join('best', 'model.ckpt-20'))
    # The old one's files are gone, the meta graph is never copied, no temporary file is left.
    assert sorted(os.listdir(str(tmp_path / 'best'))) == [
        'best.json', 'checkpoint', 'model.ckpt-20.data-00000-of-00001', 'model.ckpt-20.index']
    assert json.load(open(str(tmp_path / 'best' / 'best.json')))['precision'] == 0.7


def test_a_checkpoint_gone_before_it_is_kept_leaves_the_previous_best(tmp_path):
    kept = fake_checkpoint(tmp_path, 10, 'ten')
    best.keep(str(tmp_path), kept, {'step': 10})
    gone = os.path.join(str(tmp_path), 'model.ckpt-30')
    assert best.keep(str(tmp_path), gone, {'step': 30}) == '%s has no index file any more' % gone
    assert best.path(str(tmp_path)).endswith('model.ckpt-10')
    assert best.info(str(tmp_path))['step'] == 10


def test_a_copied_run_has_its_own_best(tmp_path):
    """The state file names the checkpoint by its base name, so a copy of the run reads its own."""
    import shutil
    best.keep(str(tmp_path / 'run'), fake_checkpoint(_made(tmp_path / 'run'), 10, 'ten'), {'step': 10})
    shutil.copytree(str(tmp_path / 'run'), str(tmp_path / 'copy'))
    shutil.rmtree(str(tmp_path / 'run'))
    assert best.path(str(tmp_path / 'copy')) == os.path.join(str(tmp_path / 'copy'), 'best', 'model.ckpt-10')


def _made(directory):
    os.makedirs(str(directory), exist_ok=True)
    return directory


def test_an_unfinished_best_left_by_a_killed_eval_is_removed_and_best_stays(tmp_path):
    """A killed eval may leave the next best/ it was building beside best/ (and, on a system
    without an exchanging rename, the previous one); the next eval removes them."""
    import subprocess
    import sys
    log_root = str(tmp_path)
    best.keep(log_root, fake_checkpoint(tmp_path, 10, 'ten'), {'step': 10})
    gone = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True,
                          text=True, check=True)
    dead_pid = int(gone.stdout)
    left = [os.path.join(log_root, '.best-by-%d' % dead_pid), os.path.join(log_root, '.best-by-%d.previous' % dead_pid)]
    for folder in left:
        os.makedirs(folder)
        fake_checkpoint(folder, 20, 'twenty')
    best.remove_holding_folders(log_root)
    assert not any(os.path.exists(folder) for folder in left)
    assert best.path(log_root).endswith(os.path.join('best', 'model.ckpt-10'))
    assert best.info(log_root)['step'] == 10
