"""run_files.py: a run's config.json is its serialized RunConfig; older formats still read."""
import json
import os

import pytest

import processes
from resnet_cifar import run_files
from resnet_cifar.config import Data, Model, RunConfig, Schedule


@pytest.mark.timeout(60)
def test_a_trained_run_can_be_rebuilt_from_its_config_json(tiny_run):
    config = run_files.load_config(tiny_run)
    assert isinstance(config, RunConfig) and config.mode == 'train'
    assert (config.data.dataset, config.model.num_residual_units, config.schedule.batch_size) == ('digits', 1, 32)
    assert (config.schedule.train_steps, config.schedule.lr_boundaries) == (60, (30, 45, 60))
    assert (config.checkpoints.save_steps, config.checkpoints.keep_max) == (20, 2)
    assert config.log_root == tiny_run and config.eval.after_training is False
    # The same config the trainer was given, except its provenance: rebuilt, it trains the same run.
    again = processes.resolve(processes.TINY_DIGITS + ['--mode=train', '--log_root=' + tiny_run, '--train_steps=60',
                                                       '--save_checkpoints_steps=20', '--keep_checkpoint_max=2',
                                                       '--log_every_n_steps=20'])
    assert again.schedule == config.schedule and again.model == config.model and again.data == config.data
    settings, source = run_files.read(tiny_run)
    assert source == os.path.join(tiny_run, 'config.json')
    assert settings == run_files.settings_of(config)


def test_settings_read_from_each_format(tmp_path):
    config = RunConfig(log_root=str(tmp_path), data=Data(dataset='digits'), model=Model(width=2),
                       schedule=Schedule(train_steps=300, lr_boundaries=(100, 200), lr_values=(0.2, 0.02, 0.002)))
    run_files.write(config)
    saved = json.load(open(run_files.path(str(tmp_path))))
    assert saved['written']['by'] == 'resnet_main.py --mode=train' and saved['model']['width'] == 2
    settings, _ = run_files.read(str(tmp_path))
    assert settings == run_files.settings_of(config)
    assert (settings['width'], settings['lr_values'], settings['train_steps']) == (2, [0.2, 0.02, 0.002], 300)
    # The previous version's flat file.
    with open(run_files.path(str(tmp_path)), 'w') as f:
        json.dump(settings, f)
    assert run_files.read(str(tmp_path))[0] == settings
    with pytest.raises(run_files.SettingsError, match='no RunConfig saved there'):
        run_files.load_config(str(tmp_path))
    # A value of the wrong kind is one line naming the file and the key.
    with open(run_files.path(str(tmp_path)), 'w') as f:
        json.dump(dict(config.to_dict(), model=dict(config.to_dict()['model'], width='2')), f)
    with pytest.raises(run_files.SettingsError, match=r'config.json: "width" is "2"; expected an integer below 2\^63$'):
        run_files.read(str(tmp_path))


def test_a_bad_value_outside_the_run_settings_is_named_by_its_section(tmp_path):
    """eval's batch_size is no run setting: its error names "eval.batch_size" and its value, not
    the schedule's "batch_size" (a run setting of the same name, whose value is good)."""
    config = RunConfig(log_root=str(tmp_path), data=Data(dataset='digits'), schedule=Schedule(batch_size=32))
    run_files.write(config)
    saved = json.load(open(run_files.path(str(tmp_path))))
    for section, key, value, name in (('eval', 'batch_size', 0, 'eval.batch_size'),
                                      ('schedule', 'batch_size', 0, 'batch_size'),
                                      ('checkpoints', 'keep_max', -1, 'checkpoints.keep_max')):
        with open(run_files.path(str(tmp_path)), 'w') as f:
            json.dump(dict(saved, **{section: dict(saved[section], **{key: value})}), f)
        with pytest.raises(run_files.SettingsError) as info:
            run_files.load_config(str(tmp_path))
        assert str(info.value) == '%s: "%s" is %d; expected a positive integer' % (
            run_files.path(str(tmp_path)), name, value)


def test_a_process_record_never_overwrites_the_run_settings(tmp_path):
    config = RunConfig(log_root=str(tmp_path), data=Data(dataset='digits'))
    run_files.write(config)
    before = open(run_files.path(str(tmp_path))).read()
    assert run_files.write_record(str(tmp_path), config, config.hparams()) is None
    assert open(run_files.path(str(tmp_path))).read() == before
    record_path = run_files.write_record(config.train_dir, config, config.hparams())
    record = json.load(open(record_path))
    assert RunConfig.from_dict(record['run_config']) == config and record['hparams']['num_residual_units'] == 5


# ---------------------------------------------------------------------------- config.json of older versions

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')
# What both fixture runs trained (tests/fixtures/README.md): digits, ResNet-8, batch 32, 20 steps.
_TRAINED = {'dataset': 'digits', 'label_mode': 'fine', 'num_residual_units': 1, 'use_bottleneck': False, 'width': 1,
            'relu_leakiness': 0.1, 'validation_size': 0, 'batch_size': 32, 'optimizer': 'mom',
            'weight_decay_rate': 0.0002, 'moving_average_decay': 0.999, 'lr_boundaries': [10, 15, 20],
            'min_lrn_rate': 0.0001, 'train_steps': 20, 'freeze_restored_layers': False, 'lr_schedule': 'piecewise',
            'cutout_size': 0, 'mixup_alpha': 0.0, 'preset': ''}
FIXTURE_SETTINGS = {
    # Today's main: --label_smoothing=0.1 --lr_warmup=5, the rates scaled to batch 32.
    'config_main.json': dict(_TRAINED, lr_values=[0.025, 0.0025, 0.00025, 2.5e-05], warmup_steps=5,
                             lr_batch_scaling=True, label_smoothing=0.1),
    # Before the validation split (and the presets, schedules, regularizers): their old defaults.
    'config_before_validation_split.json': dict(_TRAINED, lr_values=[0.1, 0.01, 0.001, 0.0001], warmup_steps=0,
                                                lr_batch_scaling=False, label_smoothing=0.0),
}


def fixture_run(name, tiny_run, tmp_path):
    """A copy of tiny_run (digits, ResNet-8: the fixtures' network) whose config.json is the fixture
    `name`, with its directories and data paths made this checkout's."""
    log_root = processes.copy_run(tiny_run, tmp_path / 'run')
    with open(os.path.join(FIXTURES, name)) as f:
        saved = json.load(f)
    data = os.path.join(processes.REPO, 'data', 'digits-bin')
    saved['data'].update(train_data_path=os.path.join(data, 'data_batch_1.bin'),
                         eval_data_path=os.path.join(data, 'test_batch.bin'))
    saved.update(log_root=log_root, train_dir=os.path.join(log_root, 'train'), eval_dir=os.path.join(log_root, 'eval'))
    with open(run_files.path(log_root), 'w') as f:
        json.dump(saved, f)
    return log_root


@pytest.mark.timeout(60)
@pytest.mark.parametrize('name', sorted(FIXTURE_SETTINGS))
def test_config_json_of_older_versions_reads_as_it_was_written(name, tiny_run, tmp_path):
    log_root = fixture_run(name, tiny_run, tmp_path)
    expected = FIXTURE_SETTINGS[name]
    settings, source = run_files.read(log_root)
    assert (settings, source) == (expected, run_files.path(log_root))
    config = run_files.load_config(log_root)
    assert run_files.settings_of(config) == expected
    assert (config.checkpoints.save_steps, config.checkpoints.keep_max, config.eval.after_training) == (20, 2, False)


@pytest.mark.timeout(120)
@pytest.mark.parametrize('name', sorted(FIXTURE_SETTINGS))
def test_a_run_of_an_older_version_resumes_evals_and_exports(name, tiny_run, tmp_path):
    from resnet_cifar import evaluation, export, training
    log_root = fixture_run(name, tiny_run, tmp_path)
    config = processes.resolve(['--mode=train', '--log_root=' + log_root, '--train_steps=62', '--compute_dtype=float32',
                                '--log_every_n_steps=1', '--noeval_after_training'])
    assert run_files.settings_of(config) == dict(FIXTURE_SETTINGS[name], train_steps=62)
    assert config.changes_to_run == ()
    training.train(config)
    assert processes.checkpoint_steps(log_root)[-1] == 62
    # The resumed trainer wrote the file again, in this version's format, with the run's settings.
    assert run_files.read(log_root)[0] == dict(FIXTURE_SETTINGS[name], train_steps=62)
    eval_config = processes.resolve(['--mode=eval', '--eval_once', '--eval_batch_count=1', '--log_root=' + log_root])
    assert (eval_config.model, eval_config.schedule.train_steps) == (config.model, 62)
    evaluation.evaluate(eval_config)
    export_dir = str(tmp_path / 'export')
    export.export_saved_model(processes.resolve(['--mode=export', '--log_root=' + log_root,
                                                 '--export_dir=' + export_dir]))
    assert os.path.exists(os.path.join(export_dir, 'saved_model.pb'))
