"""A run's settings, fixed when it starts: eval and a resumed trainer read them from the run's
config.json, refuse model flags that differ, and an extended run keeps its learning-rate schedule.

The end-to-end tests run resnet_main.py (in real subprocesses where the process is the subject,
else its main() in this process) on copies of the `tiny_run` fixture (conftest.py): ResNet-8
(--num_residual_units=1, not the digits default of 2), 60 steps of batch 32 with the default
schedule (0.1, then 0.01 from step 30, 0.001 from 45, 0.0001 from 60).
"""
import json
import os
import shutil

import pytest

import processes
from resnet_cifar import run_files
from resnet_cifar import training
from resnet_cifar.config import Data, RunConfig
from processes import TINY_DIGITS, assert_one_line_error, copy_run, logged_steps, run, snapshot

TINY_RUN_SCHEDULE = ([30, 45, 60], [0.1, 0.01, 0.001, 0.0001])


@pytest.mark.timeout(300)
def test_eval_reads_the_model_from_the_run_and_refuses_model_flags_that_differ(tiny_run, tmp_path, capsys):
    run_dir = copy_run(tiny_run, tmp_path / 'run')
    # No model flags at all: the network is the run's (ResNet-8), and so is --train_steps.
    scored = processes.main_stdout(['--mode=eval', '--dataset=digits', '--log_root=' + run_dir,
                                    '--eval_interval_secs=1'], capsys)  # in this process: its scores are the subject
    assert scored.startswith('step 40: precision'), scored

    for flags, named in [(['--width=2', '--eval_once'], '--width=2'),
                         (['--num_residual_units=2'], '--num_residual_units=2')]:
        code, err = processes.main_exit(['--mode=eval', *TINY_DIGITS, '--log_root=' + run_dir,
                                         '--eval_interval_secs=1', *flags], capsys)
        assert_one_line_error(code, err, 1, named, os.path.join(run_dir, 'config.json'))
        assert capsys.readouterr().out == ''


@pytest.mark.timeout(300)
def test_resuming_with_other_model_flags_is_one_line_and_writes_nothing(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run, tmp_path / 'run')
    before = snapshot(run_dir)
    refused = run('--mode=train', '--dataset=digits', '--num_residual_units=2', '--nouse_bottleneck',
                  '--batch_size=32', '--log_root=' + run_dir, '--train_steps=80')
    line = assert_one_line_error(refused.returncode, refused.stderr, 1, '--num_residual_units=2')
    assert '--num_residual_units=1' in line and 'use_bottleneck' not in line  # only what differs
    assert snapshot(run_dir) == before


def _train_in_process(*args):
    """The log of resnet_main's main() on `args` in this process, which must exit 0."""
    status, log = processes.main_log(args)
    assert status == 0, log[-3000:]
    return log


@pytest.mark.timeout(300)
def test_an_extended_run_keeps_its_schedule_unless_given_a_new_one(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run, tmp_path / 'run')
    extended = _train_in_process('--mode=train', *TINY_DIGITS, '--log_root=' + run_dir, '--train_steps=100',
                                 '--log_every_n_steps=20')
    rates = logged_steps(extended, 100)
    assert sorted(rates) == [80, 100], extended[-3000:]
    for step, (_, lr) in rates.items():  # the line at step s describes the step run at s - 1
        assert lr == pytest.approx(processes.learning_rate_at(step - 1, *TINY_RUN_SCHEDULE, 1e-4))
    assert 'learning rate: 0.1 until step 30, 0.01 until step 45, 0.001 until step 60, then 0.0001' \
        in extended

    changed = _train_in_process('--mode=train', *TINY_DIGITS, '--log_root=' + run_dir, '--train_steps=120',
                                '--log_every_n_steps=10', '--lr_boundaries=110', '--lr_values=0.05,0.002')
    assert {s: lr for s, (_, lr) in logged_steps(changed, 120).items()} == {
        110: pytest.approx(0.05), 120: pytest.approx(0.002)}
    assert "from step 100: --lr_boundaries=110 instead of the run's --lr_boundaries=30,45,60" in changed
    saved = run_files.read(run_dir)[0]
    assert (saved['lr_boundaries'], saved['lr_values'], saved['train_steps']) == ([110], [0.05, 0.002], 120)


# ---------------------------------------------------------------- resolving flags against a run

# A complete settings file, as a digits run with the defaults writes it.
DIGITS_DEFAULTS = dict(dataset='digits', label_mode='fine', num_residual_units=2, use_bottleneck=False,
                       width=1, relu_leakiness=0.1, batch_size=128, optimizer='mom', weight_decay_rate=0.0002,
                       moving_average_decay=0.999, lr_boundaries=[500, 750, 1000],
                       lr_values=[0.1, 0.01, 0.001, 0.0001], min_lrn_rate=0.0001, train_steps=1000,
                       freeze_restored_layers=False)


def write_flat_settings(log_root, settings):
    """config.json as the previous version wrote it: a flat object of the settings."""
    with open(run_files.path(log_root), 'w') as f:
        json.dump(settings, f)


def write_run(log_root, **changes):
    """A run directory with settings and an (empty) checkpoint at step 50: a run in progress."""
    settings = dict(DIGITS_DEFAULTS, **changes)
    write_flat_settings(str(log_root), settings)
    for suffix in ('.index', '.data-00000-of-00001'):
        with open(os.path.join(str(log_root), 'model.ckpt-50' + suffix), 'w'):
            pass
    return settings


def test_flags_not_given_come_from_the_run(tmp_path):
    saved = write_run(tmp_path, dataset='digits', num_residual_units=3, width=2, relu_leakiness=0.2,
                      train_steps=700)
    config = processes.resolve(['--mode=eval', '--log_root=' + str(tmp_path)])
    hps = config.hparams()
    assert config.data.dataset == 'digits' and config.schedule.train_steps == 700
    assert (hps.num_residual_units, hps.width, hps.relu_leakiness) == (3, 2, 0.2)
    assert hps.batch_size == 100  # eval's own batch, not the run's
    assert saved['batch_size'] != 100


def test_a_resumed_trainer_keeps_the_run_recipe_and_takes_explicit_changes(tmp_path):
    write_run(tmp_path, weight_decay_rate=0.0005, batch_size=64, lr_boundaries=[100, 200],
              lr_values=[0.2, 0.02, 0.002], optimizer='sgd')
    config = processes.resolve(['--mode=train', '--log_root=' + str(tmp_path), '--train_steps=400'])
    hps = config.hparams()
    assert (hps.weight_decay_rate, hps.batch_size, hps.optimizer) == (0.0005, 64, 'sgd')
    assert (list(config.schedule.lr_boundaries), list(config.schedule.lr_values)) == ([100, 200], [0.2, 0.02, 0.002])
    # --lrn_rate alone rescales the run's boundaries, not boundaries recomputed from --train_steps.
    config = processes.resolve(['--mode=train', '--log_root=' + str(tmp_path), '--lrn_rate=0.4'])
    assert list(config.schedule.lr_boundaries) == [100, 200]
    assert list(config.schedule.lr_values) == pytest.approx([0.4, 0.04, 0.004])
    assert list(config.changes_to_run) == ["--lr_values=0.4,0.04,0.004 instead of the run's --lr_values=0.2,0.02,0.002"]
    config = processes.resolve(['--mode=train', '--log_root=' + str(tmp_path), '--lrn_rate=0.2'])
    assert list(config.schedule.lr_values) == [0.2, 0.02, 0.002] and list(config.changes_to_run) == []  # the run's own rate
    write_run(tmp_path, lr_boundaries=[100, 200], lr_values=[0.1, 0.05, 0.01])  # not tenfold steps
    config = processes.resolve(['--mode=train', '--log_root=' + str(tmp_path), '--lrn_rate=0.2'])
    assert list(config.schedule.lr_values) == pytest.approx([0.2, 0.1, 0.02])


def test_a_new_run_in_a_directory_without_checkpoints_takes_its_flags(tmp_path):
    write_run(tmp_path, num_residual_units=3)
    for name in os.listdir(str(tmp_path)):
        if name.startswith('model.ckpt-'):
            os.remove(os.path.join(str(tmp_path), name))
    hps = processes.resolve(['--mode=train', '--log_root=' + str(tmp_path), '--num_residual_units=4']).hparams()
    assert hps.num_residual_units == 4


@pytest.mark.parametrize('text, expected', [
    ('{"dataset": "digi', 'is not valid JSON'),
    ('["digits"]', 'is not a run settings file: expected a JSON object'),
    ('{"dataset": "digits", "width": "2"}', '"width" is "2"; expected an integer below 2^63'),
    ('{"dataset": "digits", "use_bottleneck": 1}', '"use_bottleneck" is 1; expected true or false'),
    ('{"dataset": "mnist"}', '"dataset" is "mnist"; expected one of cifar10, cifar100, digits'),
    ('{"dataset": "digits", "lr_boundaries": [5], "lr_values": []}', 'one more of "lr_values"'),
    ('{"dataset": "digits", "lr_values": [0.1, "x"]}', '"lr_values" is [0.1, "x"]; expected a list of finite numbers'),
    ('{"dataset": "digits", "preset": "bogus"}',
     '"preset" is "bogus"; expected one of \'\' (none), resnet32_classic, resnet110, wrn28_10, fast_cifar'),
])
def test_a_bad_settings_file_is_one_error_naming_it(tmp_path, capsys, text, expected):
    write_run(tmp_path)
    path = tmp_path / 'config.json'
    path.write_text(text)
    code, err = processes.main_exit(['--mode=eval', '--log_root=' + str(tmp_path)], capsys)
    assert_one_line_error(code, err, 1, str(path), expected)


def test_a_frozen_run_stays_frozen_when_resumed_without_the_flag(tmp_path):
    write_run(tmp_path, freeze_restored_layers=True)
    config = processes.resolve(['--mode=train', '--log_root=' + str(tmp_path)])
    assert config.transfer.freeze_restored_layers is True


@pytest.mark.timeout(120)
def test_a_run_older_than_its_settings_file_uses_its_trainers_record_or_its_checkpoint(tiny_run, tmp_path,
                                                                                       capsys):
    run_dir = copy_run(tiny_run, tmp_path / 'run')
    os.remove(os.path.join(run_dir, 'config.json'))
    config = processes.resolve(['--mode=eval', '--log_root=' + run_dir])
    assert (config.data.dataset, config.model.num_residual_units, config.schedule.train_steps) == ('digits', 1, 60)
    code, err = processes.main_exit(['--mode=eval', '--log_root=' + run_dir, '--width=3'], capsys)
    assert_one_line_error(code, err, 1, '--width=3', os.path.join(run_dir, 'train', 'config.json'))

    # Without any record, the flags decide, and the checkpoint itself catches a wrong network.
    os.remove(os.path.join(run_dir, 'train', 'config.json'))
    before = snapshot(run_dir)
    code, err = processes.main_exit(['--mode=train', '--dataset=digits', '--log_root=' + run_dir,
                                     '--train_steps=80', '--batch_size=32'], capsys)
    assert_one_line_error(code, err, 1, 'model.ckpt-60 does not match this network',
                          '--num_residual_units, --width and --use_bottleneck')
    after = snapshot(run_dir)
    assert {k: v for k, v in after.items() if k != 'trainer.lock'} == \
        {k: v for k, v in before.items() if k != 'trainer.lock'}


def test_keys_a_settings_file_lacks_come_from_the_flags(tmp_path):
    write_run(tmp_path)
    settings = dict(DIGITS_DEFAULTS, num_residual_units=3)
    del settings['relu_leakiness'], settings['freeze_restored_layers']
    (tmp_path / 'config.json').write_text(json.dumps(settings))
    hps = processes.resolve(['--mode=eval', '--log_root=' + str(tmp_path), '--relu_leakiness=0.3']).hparams()
    assert (hps.num_residual_units, hps.relu_leakiness) == (3, 0.3)


@pytest.mark.timeout(120)
def test_a_train_dir_that_is_the_log_root_keeps_the_run_settings(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run, tmp_path / 'run')
    training.train(processes.resolve(['--mode=train', '--log_root=' + run_dir, '--train_dir=' + run_dir,
                                      '--train_steps=61']))
    saved, source = run_files.read(run_dir)
    assert saved['num_residual_units'] == 1 and saved['train_steps'] == 61
    assert source == os.path.join(run_dir, 'config.json')


@pytest.mark.timeout(300)
def test_eval_beside_an_extended_run_follows_it_to_its_new_end(tiny_run, tmp_path):
    """Eval takes --train_steps from the run. While a live trainer holds the run's lock without
    having written the settings yet, the run is not over, even when its last checkpoint is at
    the old end; once the settings say 100, eval waits for step 100."""
    from resnet_cifar import guards
    run_dir = copy_run(tiny_run, tmp_path / 'run')
    old = run_files.read(run_dir)[0]
    evaluator = None
    try:
        with guards.RunLock(os.path.join(run_dir, run_files.LOCK_FILE), 'trainer', 'this test'):
            evaluator = processes.Process(['--mode=eval', '--log_root=' + run_dir, '--eval_interval_secs=1'])
            evaluator.wait_for(r'waiting for a new checkpoint', timeout=150)  # 40 and 60 scored, not done
            write_flat_settings(run_dir, dict(old, train_steps=100))  # what the trainer writes first
        # The trainer in this process: the eval beside it is the subject.
        training.train(processes.resolve(['--mode=train', '--log_root=' + run_dir, '--train_steps=100',
                                          '--save_checkpoints_steps=20', '--log_every_n_steps=20']))
        assert evaluator.wait(150) == 0, evaluator.stderr[-3000:]
    finally:
        if evaluator:
            evaluator.kill()
    scored = [int(line.split()[1].rstrip(':')) for line in evaluator.proc.stdout.read().splitlines()
              if line.startswith('step ')]
    assert scored[:2] == [40, 60] and scored[-1] == 100, scored
    assert 'scored the checkpoint at --train_steps=100; eval done' in evaluator.stderr


def test_no_held_out_score_on_the_default_test_set_of_a_run_on_other_data(tmp_path):
    log_root = '--log_root=' + str(tmp_path / 'run')
    assert processes.resolve(['--dataset=digits', log_root]).eval.after_training
    own_data = processes.resolve(['--dataset=digits', log_root, '--train_data_path=/my/train.bin'])
    assert not own_data.eval.after_training  # digits' test set would say nothing about it
    assert processes.resolve(['--dataset=digits', log_root, '--train_data_path=/my/train.bin',
                              '--eval_data_path=/my/test.bin']).eval.after_training
    assert not processes.resolve(['--dataset=digits', log_root, '--noeval_after_training']).eval.after_training


@pytest.mark.timeout(60)
def test_a_validation_size_that_leaves_nothing_to_train_on_is_a_flag_error(capsys):
    """The digits sample's training file holds 1,497 records."""
    for size, expected in [(1497, '--validation_size=1497: expected fewer than the 1497 records of '),
                           (-1, '--validation_size=-1: expected 0 or more')]:
        code, err = processes.main_exit(['--mode=train', '--dataset=digits', '--validation_size=%d' % size], capsys)
        assert_one_line_error(code, err, 2, expected)
    assert processes.resolve(['--mode=train', '--dataset=digits', '--validation_size=1496']).data.validation_size == 1496


def test_eval_takes_the_validation_split_and_its_records_from_the_run(tmp_path, capsys):
    """Eval scores the records the trainer held out: its --validation_size and --train_data_path
    come from the run; a trainer resuming the run may not change the split."""
    elsewhere = str(tmp_path / 'elsewhere.bin')
    shutil.copy(Data(dataset='digits').train_data_path, elsewhere)
    write_run(tmp_path)
    run_files.write(RunConfig(log_root=str(tmp_path), data=Data(
        dataset='digits', train_data_path=elsewhere, validation_size=300)))
    config = processes.resolve(['--mode=eval', '--log_root=' + str(tmp_path)])
    assert (config.data.validation_size, config.data.train_data_path) == (300, elsewhere)
    code, err = processes.main_exit(['--mode=train', '--log_root=' + str(tmp_path), '--validation_size=200'], capsys)
    assert_one_line_error(code, err, 1, '--validation_size=200: the run in %s has --validation_size=300' % tmp_path)


def test_a_run_older_than_the_split_may_not_gain_one_when_resumed(tmp_path, capsys):
    """Its config.json has no validation_size: it trained on every record, so a resume that
    would hold some out (and let eval validate on trained-on records) is refused."""
    write_run(tmp_path)
    assert 'validation_size' not in DIGITS_DEFAULTS
    code, err = processes.main_exit(['--mode=train', '--log_root=' + str(tmp_path), '--validation_size=200'], capsys)
    assert_one_line_error(code, err, 1, '--validation_size=200: the run in %s has --validation_size=0' % tmp_path)
