"""A run directory's checkpoints: copied, moved, with a damaged state file or a damaged checkpoint.

The end-to-end tests run resnet_main.py on copies of the `tiny_run` fixture (conftest.py): in real
subprocesses where a process of its own is the subject, else in this process; the unit tests call
checkpoints.py on real checkpoint files.
"""
import glob
import json
import os
import re
import shutil

import numpy as np
import pytest

from resnet_cifar import checkpoints
import processes
from processes import TINY_DIGITS, checkpoint_steps, copy_run, logged_steps, run, snapshot

TEST_BATCH = os.path.join(processes.REPO, 'data', 'digits-bin', 'test_batch.bin')
# The fixture's own saving flags, so that a resumed copy rotates as the original did.
SAVING = ['--save_checkpoints_steps=20', '--keep_checkpoint_max=2', '--log_every_n_steps=20']


def write_absolute_state_file(run_dir):
    """The `checkpoint` state file as TensorFlow's Saver writes it for an absolute --log_root."""
    steps = checkpoint_steps(run_dir)
    lines = ['model_checkpoint_path: "%s"' % os.path.join(run_dir, 'model.ckpt-%d' % steps[-1])]
    lines += ['all_model_checkpoint_paths: "%s"' % os.path.join(run_dir, 'model.ckpt-%d' % s) for s in steps]
    with open(os.path.join(run_dir, 'checkpoint'), 'w') as f:
        f.write('\n'.join(lines) + '\n')


def data_file(prefix):
    return glob.glob(prefix + '.data-*')[0]


def train(log_root, train_steps, *extra):
    return run('--mode=train', *TINY_DIGITS, '--log_root=' + log_root, '--train_steps=%d' % train_steps,
               *(SAVING + list(extra)))


def eval_run(log_root, *extra):
    return run('--mode=eval', *TINY_DIGITS, '--log_root=' + log_root, '--eval_interval_secs=1', *extra)


def scored_steps(stdout):
    return [int(line.split()[1].rstrip(':')) for line in stdout.splitlines() if line.startswith('step ')]


# ---------------------------------------------------------------- copied and moved runs

@pytest.mark.timeout(300)
def test_a_copied_run_trains_on_its_own_checkpoints_and_leaves_the_original_alone(tiny_run, tmp_path):
    original = copy_run(tiny_run, tmp_path / 'orig')
    write_absolute_state_file(original)
    copy = copy_run(original, tmp_path / 'copy')
    before = snapshot(original)

    done = train(copy, 100)
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'resuming from %s at step' % os.path.join(copy, 'model.ckpt-60') in done.stderr
    assert snapshot(original) == before  # not one file of the original changed
    assert checkpoint_steps(copy) == [80, 100]  # the copy rotated its own checkpoints
    state = open(os.path.join(copy, 'checkpoint')).read()
    assert original not in state and 'model.ckpt-100' in state


@pytest.mark.timeout(300)
def test_a_moved_run_is_found_by_eval_extract_and_train(tiny_run, tmp_path, capsys):
    original = copy_run(tiny_run, tmp_path / 'orig')
    write_absolute_state_file(original)
    moved = str(tmp_path / 'moved')
    os.rename(original, moved)

    # Eval and extract in this process (the same code as in their own), training in its own.
    assert processes.main_status(['--mode=eval', *TINY_DIGITS, '--log_root=' + moved, '--eval_once']) == 0
    assert scored_steps(capsys.readouterr().out) == [60]

    features_path = str(tmp_path / 'features.npz')
    assert processes.main_status(['--mode=extract', *TINY_DIGITS, '--log_root=' + moved,
                                  '--extract_data_path=' + TEST_BATCH, '--features_path=' + features_path]) == 0
    metadata = json.loads(str(np.load(features_path)['metadata']))
    assert metadata['checkpoint'] == os.path.join(moved, 'model.ckpt-60') and metadata['global_step'] == 60

    resumed = train(moved, 80)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'resuming from %s at step' % os.path.join(moved, 'model.ckpt-60') in resumed.stderr
    assert checkpoint_steps(moved) == [60, 80]
    assert not os.path.exists(original)


# ---------------------------------------------------------------- a damaged state file

@pytest.mark.timeout(300)
@pytest.mark.parametrize('content', ['', 'model_checkpoint_path: "model.ckpt-6\x00\x17 {{ garbage'],
                         ids=['empty', 'garbled'])
def test_a_damaged_state_file_is_recovered_from_the_checkpoint_files(tiny_run, tmp_path, content, capsys):
    run_dir = copy_run(tiny_run, tmp_path / 'run')
    with open(os.path.join(run_dir, 'checkpoint'), 'w') as f:
        f.write(content)

    if not content:  # eval reads the checkpoint files as training does; once is enough
        assert processes.main_status(['--mode=eval', *TINY_DIGITS, '--log_root=' + run_dir, '--eval_once']) == 0
        assert scored_steps(capsys.readouterr().out) == [60]

    resumed = train(run_dir, 80)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    recovered = [line for line in resumed.stderr.splitlines() if 'state file' in line]
    assert len(recovered) == 1 and 'model.ckpt-60' in recovered[0], resumed.stderr[-3000:]
    assert sorted(logged_steps(resumed.stderr, 80)) == [80]  # it went on from 60, not from 0
    assert checkpoint_steps(run_dir) == [40, 60, 80]  # nothing it could not vouch for was rotated away


# ---------------------------------------------------------------- a damaged checkpoint

def damage(prefix, how):
    path = data_file(prefix)
    os.truncate(path, 0 if how == 'empty' else os.path.getsize(path) // 2)
    return {os.path.basename(p): os.path.getsize(p) for p in glob.glob(prefix + '.*')}


@pytest.mark.timeout(300)
@pytest.mark.parametrize('how', ['truncated', 'empty'])
def test_training_falls_back_past_a_damaged_newest_checkpoint_and_keeps_its_files(tiny_run, tmp_path, how):
    run_dir = copy_run(tiny_run, tmp_path / 'run')
    damaged = damage(os.path.join(run_dir, 'model.ckpt-60'), how)

    resumed = train(run_dir, 80)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # absl's warning lines start 'Wmmdd'; the one about ckpt-60 is the only one naming it.
    warnings = [line for line in resumed.stderr.splitlines()
                if re.match(r'W\d{4} ', line) and 'model.ckpt-60' in line]
    assert len(warnings) == 1 and 'damaged' in warnings[0], resumed.stderr[-3000:]
    assert 'resuming from %s at step' % os.path.join(run_dir, 'model.ckpt-40') in resumed.stderr
    assert sorted(logged_steps(resumed.stderr, 80)) == [60, 80]
    kept = os.path.join(run_dir, checkpoints.DAMAGED_DIR)
    assert {name: os.path.getsize(os.path.join(kept, name)) for name in os.listdir(kept)} == damaged
    assert checkpoint_steps(run_dir)[-1] == 80


@pytest.mark.timeout(300)
def test_eval_scores_the_newest_checkpoint_that_restores_when_the_last_one_is_damaged(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run, tmp_path / 'run')
    damage(os.path.join(run_dir, 'model.ckpt-60'), 'truncated')

    scored = eval_run(run_dir, '--train_steps=60')
    assert scored.returncode == 0, scored.stderr[-3000:]
    skips = [line for line in scored.stderr.splitlines() if 'skipping checkpoint' in line]
    assert len(skips) == 1 and 'model.ckpt-60' in skips[0] and 'damaged' in skips[0], scored.stderr[-3000:]
    assert scored_steps(scored.stdout) == [40]


@pytest.mark.timeout(300)
def test_eval_says_a_checkpoint_lost_its_data_file(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run, tmp_path / 'run')
    lost = data_file(os.path.join(run_dir, 'model.ckpt-60'))
    os.remove(lost)

    scored = eval_run(run_dir, '--train_steps=60')
    assert scored.returncode == 0, scored.stderr[-3000:]
    skips = [line for line in scored.stderr.splitlines() if 'skipping checkpoint' in line]
    assert len(skips) == 1, scored.stderr[-3000:]
    assert 'its data file %s is missing' % os.path.basename(lost) in skips[0]
    assert 'Variable name' not in skips[0]
    assert scored_steps(scored.stdout) == [40]


# ---------------------------------------------------------------- checkpoints.py on real files

def test_latest_is_always_inside_the_run_directory(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run, tmp_path / 'run')
    write_absolute_state_file(run_dir)
    elsewhere = str(tmp_path / 'elsewhere')
    shutil.move(run_dir, elsewhere)
    assert checkpoints.latest(elsewhere) == os.path.join(elsewhere, 'model.ckpt-60')
    os.remove(os.path.join(elsewhere, 'checkpoint'))
    assert checkpoints.latest(elsewhere) == os.path.join(elsewhere, 'model.ckpt-60')
    assert checkpoints.latest(str(tmp_path / 'no_such_run')) is None


def test_problem_reads_every_tensor(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run, tmp_path / 'run')
    prefix = os.path.join(run_dir, 'model.ckpt-60')
    assert checkpoints.problem(prefix) is None
    path = data_file(prefix)
    with open(path, 'r+b') as f:  # same size, one byte flipped: only a checksum can tell
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert checkpoints.problem(prefix).startswith('damaged')
    os.remove(path)
    assert checkpoints.problem(prefix) == 'its data file %s is missing' % os.path.basename(path)


def test_prepare_resume_refuses_when_no_checkpoint_restores_and_moves_nothing(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run, tmp_path / 'run')
    for step in (40, 60):
        damage(os.path.join(run_dir, 'model.ckpt-%d' % step), 'truncated')
    before = snapshot(run_dir)
    with pytest.raises(checkpoints.CheckpointError, match='no checkpoint in .* restores: model.ckpt-60 '):
        checkpoints.prepare_resume(run_dir)
    assert snapshot(run_dir) == before


def test_extract_and_init_checkpoint_take_the_newest_checkpoint_that_restores(tiny_run, tmp_path):
    from resnet_cifar import transfer
    run_dir = copy_run(tiny_run, tmp_path / 'run')
    damage(os.path.join(run_dir, 'model.ckpt-60'), 'truncated')
    assert transfer.find_checkpoint(run_dir) == os.path.join(run_dir, 'model.ckpt-40')
    damage(os.path.join(run_dir, 'model.ckpt-40'), 'empty')
    with pytest.raises(transfer.CheckpointError, match='no checkpoint in directory .* restores'):
        transfer.find_checkpoint(run_dir)
