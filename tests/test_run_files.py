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
    with pytest.raises(run_files.SettingsError, match=r'config.json: "width" is "2"; expected a int'):
        run_files.read(str(tmp_path))


def test_a_process_record_never_overwrites_the_run_settings(tmp_path):
    config = RunConfig(log_root=str(tmp_path), data=Data(dataset='digits'))
    run_files.write(config)
    before = open(run_files.path(str(tmp_path))).read()
    assert run_files.write_record(str(tmp_path), config, config.hparams()) is None
    assert open(run_files.path(str(tmp_path))).read() == before
    record_path = run_files.write_record(config.train_dir, config, config.hparams())
    record = json.load(open(record_path))
    assert RunConfig.from_dict(record['run_config']) == config and record['hparams']['num_residual_units'] == 5
