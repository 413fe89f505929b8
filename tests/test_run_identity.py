"""A run knows who it is: its log root is the real directory it had at the start, its name holds
no glob character that TensorFlow's Saver would match other runs with, it has an id, and eval
records what it scored by that id and by checkpoint content (issue 26)."""
import json
import os
import re
import shutil
import signal

import pytest

import processes
from processes import TINY_DIGITS, Process

SAVE_EVERY = ['--save_checkpoints_steps=10', '--log_every_n_steps=10']


def _run_copy(tiny_run, destination):
    return processes.copy_run(tiny_run, str(destination))


def _train(*flags):
    """Trains in this process (the same code as resnet_main.py's, without a TensorFlow start):
    for tests whose subject is what eval or a later start makes of the run."""
    from resnet_cifar import training
    training.train(processes.resolve(['--mode=train', *TINY_DIGITS, *flags]))


def _checkpoint_files(log_root):
    return [name for name in os.listdir(log_root) if name.startswith('model.ckpt-') or name == 'checkpoint']


def _move_checkpoints_away(log_root, away):
    os.makedirs(away, exist_ok=True)
    for name in _checkpoint_files(log_root):
        os.replace(os.path.join(log_root, name), os.path.join(away, name))


@pytest.mark.parametrize('name', ['r[12]', 'r*', 'r?'])
def test_a_sibling_run_survives_a_log_root_named_with_glob_characters(tiny_run, tmp_path, capsys, name):
    """The Saver's rotation globs the prefix unescaped: on the old code `r[12]`, `r*` and `r?`
    deleted r1's checkpoints (and never rotated their own)."""
    sibling = _run_copy(tiny_run, tmp_path / 'r1')
    before = processes.snapshot(sibling)
    log_root = str(tmp_path / name)
    code, err = processes.main_exit(['--mode=train', *TINY_DIGITS, '--log_root=' + log_root, '--train_steps=80',
                                     '--save_checkpoints_steps=20', '--keep_checkpoint_max=2',
                                     '--log_every_n_steps=20'], capsys)
    line = processes.assert_one_line_error(code, err, 2, '--log_root', name[1])
    assert 'another --log_root' in line or 'rename' in line, line
    assert processes.snapshot(sibling) == before
    assert not os.path.exists(log_root) or not _checkpoint_files(log_root)


def test_a_glob_character_in_checkpoint_path_is_refused(tiny_run, tmp_path, capsys):
    source = _run_copy(tiny_run, tmp_path / 'a*b')
    code, err = processes.main_exit(['--mode=export', '--checkpoint_path=' + source,
                                     '--export_dir=' + str(tmp_path / 'exported')], capsys)
    processes.assert_one_line_error(code, err, 2, '--checkpoint_path', "'*'")
    assert not os.path.exists(str(tmp_path / 'exported'))


def _retarget(link, target):
    """Points the symlink `link` at `target` in one rename, as `ln -sfn` does."""
    incoming = link + '.new'
    os.symlink(target, incoming)
    os.replace(incoming, link)


@pytest.mark.parametrize('above', [False, True], ids=['link-to-log-root', 'link-above-log-root'])
def test_a_retargeted_symlink_never_sends_a_write_into_the_other_run(tiny_run, tmp_path, above):
    """On the old code, the trainer wrote its later checkpoints into B, rotated B's away and
    rewrote B's state file."""
    first, other = tmp_path / 'A', tmp_path / 'B'
    if above:
        os.makedirs(str(first / 'run'))
        os.makedirs(str(other))
        _run_copy(tiny_run, other / 'run')
        own, theirs = str(first / 'run'), str(other / 'run')
    else:
        os.makedirs(str(first))
        _run_copy(tiny_run, other)
        own, theirs = str(first), str(other)
    link = str(tmp_path / 'cur')
    os.symlink(str(first), link)
    before = processes.snapshot(str(other))
    trainer = Process(['--mode=train', *TINY_DIGITS, '--log_root=' + (link + '/run' if above else link),
                       '--train_steps=100000', '--keep_checkpoint_max=2', *SAVE_EVERY])
    try:
        trainer.wait_for(r'saved checkpoint 20\b', 120)
        _retarget(link, str(other))
        trainer.wait_for(r'saved checkpoint 60\b', 120)
        trainer.proc.send_signal(signal.SIGTERM)
        assert trainer.wait(120) == 0, trainer.stderr[-3000:]
    finally:
        trainer.kill()
    assert processes.snapshot(str(other)) == before
    steps = processes.checkpoint_steps(own)
    assert steps and steps[-1] >= 60, os.listdir(own)
    assert theirs != own


def test_starting_over_with_a_changed_flag_is_a_new_run(tiny_run, tmp_path, capsys):
    """A trainer without a checkpoint to resume from (and no best/) starts a new run: the flags'
    settings, no change logged against the old config.json, a new id."""
    log_root = _run_copy(tiny_run, tmp_path / 'run')
    shutil.rmtree(os.path.join(log_root, 'eval'), ignore_errors=True)
    old_id = json.load(open(os.path.join(log_root, 'config.json'))).get('run_id')
    _move_checkpoints_away(log_root, str(tmp_path / 'away'))
    with processes.AbslRecords() as records:
        code, err = processes.main_exit_status(['--mode=train', *TINY_DIGITS, '--log_root=' + log_root,
                                                '--train_steps=20', '--save_checkpoints_steps=20', '--lrn_rate=0.4'],
                                               capsys)
    assert code == 0, err[-3000:]
    assert not any('instead of the run' in message for message in records.messages)
    saved = json.load(open(os.path.join(log_root, 'config.json')))
    assert saved['schedule']['lr_values'][0] == 0.4
    assert saved['schedule']['train_steps'] == 20
    assert saved['run_id'] and saved['run_id'] != old_id
    assert processes.checkpoint_steps(log_root)[-1] == 20


def test_a_failed_start_leaves_config_json_as_it_was(tiny_run, tmp_path, capsys):
    """A new run whose --init_checkpoint is of another network stops before training; the
    settings file it found stays as it was (on the old code it was rewritten first)."""
    log_root = str(tmp_path / 'run')
    os.makedirs(log_root)
    old = '{"dataset": "digits", "num_residual_units": 1}\n'
    with open(os.path.join(log_root, 'config.json'), 'w') as f:
        f.write(old)
    code, err = processes.main_exit_status(['--mode=train', *TINY_DIGITS[:1], '--num_residual_units=2',
                                            '--batch_size=32', '--noeval_after_training', '--log_root=' + log_root,
                                            '--train_steps=20', '--init_checkpoint=' + tiny_run], capsys)
    assert code == 1, err[-3000:]
    assert len(processes.error_lines(err)) == 1, err[-3000:]
    assert open(os.path.join(log_root, 'config.json')).read() == old


def test_a_start_that_fails_when_the_session_is_created_leaves_config_json_as_it_was(tiny_run, tmp_path, capsys):
    """An --init_checkpoint of the right network whose data file is damaged passes every check of
    the start (they read its index) and fails in the restore, when the session is created. On the
    old code config.json had already been rewritten with a new run id by then."""
    init = tmp_path / 'init'
    os.makedirs(str(init))
    for name in os.listdir(tiny_run):
        if name.startswith('model.ckpt-60.'):
            shutil.copy(os.path.join(tiny_run, name), str(init / name))
    data = str(init / 'model.ckpt-60.data-00000-of-00001')
    with open(data, 'r+b') as f:  # same size, every byte zero: only the restore's checksums see it
        f.write(bytes(os.path.getsize(data)))
    log_root = str(tmp_path / 'run')
    os.makedirs(log_root)
    old = '{"dataset": "digits", "num_residual_units": 1, "run_id": "%s"}\n' % ('ab' * 16)
    with open(os.path.join(log_root, 'config.json'), 'w') as f:
        f.write(old)
    code, err = processes.main_exit_status(['--mode=train', *TINY_DIGITS, '--log_root=' + log_root, '--train_steps=20',
                                            '--init_checkpoint=' + str(init / 'model.ckpt-60')], capsys)
    processes.assert_one_line_error(code, err, 1, 'cannot restore', str(init / 'model.ckpt-60'))
    assert open(os.path.join(log_root, 'config.json')).read() == old
    assert not os.path.exists(os.path.join(log_root, 'train', 'config.json'))


def test_a_resumed_run_keeps_its_id_and_an_old_run_gets_one(tiny_run, tmp_path):
    log_root = _run_copy(tiny_run, tmp_path / 'run')
    settings_path = os.path.join(log_root, 'config.json')
    saved = json.load(open(settings_path))
    saved.pop('run_id', None)  # as an older version wrote it
    with open(settings_path, 'w') as f:
        json.dump(saved, f)
    _train('--log_root=' + log_root, '--train_steps=80', '--save_checkpoints_steps=20')
    given = json.load(open(settings_path))['run_id']
    assert re.match(r'^[0-9a-f]{32}$', given), given
    _train('--log_root=' + log_root, '--train_steps=100', '--save_checkpoints_steps=20')
    assert json.load(open(settings_path))['run_id'] == given


@pytest.mark.parametrize('changed', [[], ['--lrn_rate=0.4']], ids=['same-flags', 'changed-flag'])
def test_starting_over_in_an_evaluated_directory_is_refused(tiny_run, tmp_path, capsys, changed):
    """On the old code the trainer started a new run beside the old run's best/ (exit 0), whose
    figures eval then reported as the new run's; with a changed flag it rewrote config.json and
    crashed with `TypeError: Expected binary or unicode string, got None`."""
    log_root = _run_copy(tiny_run, tmp_path / 'run')
    assert processes.main_status(['--mode=eval', '--log_root=' + log_root, '--eval_once']) == 0
    kept = json.load(open(os.path.join(log_root, 'best', 'best.json')))
    _move_checkpoints_away(log_root, str(tmp_path / 'away'))
    before = processes.snapshot(log_root)
    code, err = processes.main_exit_status(['--mode=train', *TINY_DIGITS, '--log_root=' + log_root,
                                            '--train_steps=20', '--save_checkpoints_steps=20', *changed], capsys)
    line = processes.assert_one_line_error(code, err, 1, log_root, 'step %d' % kept['step'],
                                           'another --log_root', 'put the checkpoints back')
    assert processes.snapshot(log_root) == before, line


def test_eval_scores_a_run_started_over_in_the_same_directory(tiny_run, tmp_path, capsys):
    """On the old code eval said `the checkpoint at --train_steps=60 is already scored; eval done`
    and kept reporting the old run's best."""
    log_root = _run_copy(tiny_run, tmp_path / 'run')
    first = processes.main_stdout(['--mode=eval', '--log_root=' + log_root], capsys)  # in this process
    assert [step for step, _ in processes.eval_precisions(first)] == [40, 60], first
    _move_checkpoints_away(log_root, str(tmp_path / 'away'))
    shutil.rmtree(os.path.join(log_root, 'best'))
    _train('--log_root=' + log_root, '--train_steps=60', '--save_checkpoints_steps=20', '--keep_checkpoint_max=2',
           '--lrn_rate=0.02')
    second = processes.run_main('--mode=eval', '--log_root=' + log_root)
    assert 'already scored' not in second.stderr
    scored = processes.eval_precisions(second.stdout)
    assert [step for step, _ in scored] == [40, 60], second.stdout + second.stderr[-2000:]
    best_precision = max(p for _, p in scored)
    assert re.search(r'best precision %.4f' % best_precision, second.stdout.splitlines()[-1]), second.stdout
    results = json.load(open(os.path.join(log_root, 'eval', 'results.json')))
    assert [(e['step'], round(e['precision'], 4)) for e in results['checkpoints']] == scored
    kept = json.load(open(os.path.join(log_root, 'best', 'best.json')))
    assert kept['run_id'] == json.load(open(os.path.join(log_root, 'config.json')))['run_id']
    assert round(kept['precision'], 4) == best_precision


def _fake_checkpoint(directory, step, content):
    prefix = os.path.join(str(directory), 'model.ckpt-%d' % step)
    with open(prefix + '.index', 'w') as f:
        f.write(content)
    return prefix


def _legacy_state(eval_dir, scored):
    os.makedirs(eval_dir, exist_ok=True)
    with open(os.path.join(eval_dir, 'eval_state.json'), 'w') as f:
        json.dump({'scored': scored, 'best_precision': 0.5}, f)


def test_eval_state_knows_a_checkpoint_by_run_and_content(tmp_path):
    from resnet_cifar import evaluation
    eval_dir = str(tmp_path / 'eval')
    os.makedirs(eval_dir)
    first = _fake_checkpoint(tmp_path, 60, 'weights of the first run')
    state = evaluation.EvalState(eval_dir, ('run-a', 0))
    state.record(first, evaluation.Score(60, 0.5, 1.0, 10, 1.0), evaluation.fingerprint(first))
    assert evaluation.EvalState(eval_dir, ('run-a', 0)).is_scored(first)
    assert not evaluation.EvalState(eval_dir, ('run-b', 0)).is_scored(first)
    again = _fake_checkpoint(tmp_path, 60, 'weights of the same run, saved again')
    assert not evaluation.EvalState(eval_dir, ('run-a', 0)).is_scored(again)


def test_an_eval_state_of_an_older_version_stays_the_run_s_own(tmp_path):
    """A state without ids (an older version's, by name) holds for a run without an id, and for a
    run of an older version that got its id on resuming, up to that step; not for a new run."""
    from resnet_cifar import evaluation
    eval_dir = str(tmp_path / 'eval')
    _legacy_state(eval_dir, {'model.ckpt-40': 40, 'model.ckpt-60': 60})
    forty, sixty = _fake_checkpoint(tmp_path, 40, 'a'), _fake_checkpoint(tmp_path, 60, 'b')
    assert evaluation.EvalState(eval_dir).is_scored(sixty)
    resumed = evaluation.EvalState(eval_dir, ('run-a', 40))
    assert resumed.is_scored(forty) and not resumed.is_scored(sixty) and resumed.best_precision == 0.5
    assert not evaluation.EvalState(eval_dir, ('run-a', 0)).is_scored(forty)


@pytest.mark.timeout(180)
def test_eval_following_an_old_run_keeps_the_scores_after_it_gets_an_id(tiny_run, tmp_path):
    """REVIEW.md #2: an eval started on a run of an older version (no id) goes on while a trainer
    resumes the run, which gives it an id from that step. On the old code eval wrote its scores of
    the later steps without the id, and the next eval dropped them and scored them again."""
    log_root = _run_copy(tiny_run, tmp_path / 'run')
    settings_path = os.path.join(log_root, 'config.json')
    saved = json.load(open(settings_path))
    for key in ('run_id', 'run_id_from_step'):  # as an older version wrote it
        saved.pop(key, None)
    saved['schedule']['train_steps'] = 100  # stopped at 60 of 100
    with open(settings_path, 'w') as f:
        json.dump(saved, f)
    evaluator = Process(['--mode=eval', '--log_root=' + log_root, '--eval_interval_secs=1'])
    try:
        evaluator.wait_for(r'waiting for a new checkpoint', 120)
        _train('--log_root=' + log_root, '--train_steps=100', '--save_checkpoints_steps=20', '--keep_checkpoint_max=5')
        assert evaluator.wait(120) == 0, evaluator.stderr[-3000:]
    finally:
        evaluator.kill()
    run_id = json.load(open(settings_path))['run_id']
    assert 'got the id %s at step 60' % run_id in evaluator.stderr, evaluator.stderr[-3000:]
    results = json.load(open(os.path.join(log_root, 'eval', 'results.json')))
    assert results['run_id'] == run_id and [e['step'] for e in results['checkpoints']] == [40, 60, 80, 100]
    assert json.load(open(os.path.join(log_root, 'best', 'best.json')))['run_id'] == run_id
    again = processes.run_main('--mode=eval', '--log_root=' + log_root)
    assert processes.eval_precisions(again.stdout) == [], again.stdout
    assert 'already scored' in again.stderr and 'another run' not in again.stderr, again.stderr[-3000:]
    assert sorted(os.listdir(log_root)).count('best') == 1
    assert not [name for name in os.listdir(log_root) if 'of-another-run' in name]


@pytest.mark.timeout(180)
def test_eval_following_a_run_that_is_started_over_scores_the_new_run_afresh(tiny_run, tmp_path):
    """On the old code eval went on with the first run's id: results.json held the new run's
    scores under the old run's id, beside the old run's scores of the steps it did not reach."""
    log_root = _run_copy(tiny_run, tmp_path / 'run')
    settings_path = os.path.join(log_root, 'config.json')
    saved = json.load(open(settings_path))
    saved['schedule']['train_steps'] = 100  # stopped at 60 of 100
    with open(settings_path, 'w') as f:
        json.dump(saved, f)
    evaluator = Process(['--mode=eval', '--log_root=' + log_root, '--eval_interval_secs=1'])
    try:
        evaluator.wait_for(r'waiting for a new checkpoint', 120)
        _move_checkpoints_away(log_root, str(tmp_path / 'away'))
        os.replace(os.path.join(log_root, 'best'), str(tmp_path / 'away' / 'best'))
        _train('--log_root=' + log_root, '--train_steps=100', '--save_checkpoints_steps=50', '--keep_checkpoint_max=5')
        assert evaluator.wait(120) == 0, evaluator.stderr[-3000:]
    finally:
        evaluator.kill()
    run_id = json.load(open(settings_path))['run_id']
    assert run_id != saved['run_id']
    assert 'scored afresh' in evaluator.stderr, evaluator.stderr[-3000:]
    results = json.load(open(os.path.join(log_root, 'eval', 'results.json')))
    assert results['run_id'] == run_id and [e['step'] for e in results['checkpoints']] == [0, 50, 100], results
    assert json.load(open(os.path.join(log_root, 'best', 'best.json')))['run_id'] == run_id
