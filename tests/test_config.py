"""config.py: the frozen, typed RunConfig, its checks and its round trip through config.json."""
import dataclasses
import json
import subprocess
import sys

import pytest

from resnet_cifar import config as config_lib
from resnet_cifar import settings
from resnet_cifar.config import Checkpoints, Data, Devices, Eval, Model, RunConfig, Schedule, Transfer
from resnet_cifar.errors import Error, FlagError


def test_defaults_are_the_classic_recipe():
    config = RunConfig()
    assert (config.mode, config.log_root, config.train_dir) == ('train', 'runs/cifar10', 'runs/cifar10/train')
    assert (config.model.num_residual_units, config.schedule.batch_size, config.schedule.train_steps) == (5, 128, 80000)
    assert config.schedule.lr_boundaries == (40000, 60000, 80000)
    assert config.schedule.lr_values == (0.1, 0.01, 0.001, 0.0001)
    assert config.data.train_data_path.endswith('cifar-10-batches-bin/data_batch_*.bin')
    assert (config.checkpoints.save_steps, config.checkpoints.save_secs) == (None, 120)


def test_it_is_frozen_and_a_misspelled_setting_is_an_error():
    config = RunConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.mode = 'eval'
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.schedule.train_steps = 5
    with pytest.raises(AttributeError):
        config.schedule.train_step  # noqa: B018 (a typo reads nothing, silently or not)
    with pytest.raises(TypeError):
        Schedule(train_step=5)


@pytest.mark.parametrize('make, message', [
    (lambda: Schedule(batch_size=0), '--batch_size=0: expected a positive integer'),
    (lambda: Schedule(train_steps=-3), '--train_steps=-3: expected a positive integer'),
    (lambda: Schedule(batch_size='128'), '--batch_size=128: expected an integer'),
    (lambda: Schedule(moving_average_decay=1.0), '--moving_average_decay=1: expected a value in [0, 1)'),
    (lambda: Schedule(weight_decay_rate=float('nan')), '--weight_decay_rate=nan: expected a finite number'),
    (lambda: Schedule(lr_boundaries=[10, 5], lr_values=[0.1, 0.01, 0.001]),
     '--lr_boundaries/--lr_values: boundaries must increase, got 10,5'),
    (lambda: Schedule(lr_boundaries=[10], lr_values=[0.1]),
     '--lr_boundaries/--lr_values: expected one more learning rate than boundaries'),
    (lambda: Schedule(lr_boundaries=[10], lr_values=[0.1, -1.0]),
     '--lr_boundaries/--lr_values: learning rates must be positive numbers'),
    (lambda: Schedule(optimizer='adam'), '--optimizer=adam: expected one of mom, sgd, nesterov'),
    (lambda: Model(relu_leakiness=1.5), '--relu_leakiness=1.5: expected a value in [0, 1)'),
    (lambda: Model(width=0), '--width=0: expected a positive integer'),
    (lambda: Model(use_bottleneck=1), '--use_bottleneck=1: expected true or false'),
    (lambda: Model(compute_dtype='float64'), '--compute_dtype=float64: expected one of float32'),
    (lambda: Data(dataset='mnist'), '--dataset=mnist: expected one of cifar10, cifar100, digits'),
    (lambda: Data(dataset='cifar10', label_mode='coarse'), '--label_mode=coarse: only cifar100'),
    (lambda: Data(image_size=28), '--image_size=28: CIFAR records hold 32x32 images'),
    (lambda: Checkpoints(keep_max=0), '--keep_checkpoint_max=0: expected a positive integer'),
    (lambda: Checkpoints(save_steps=0), '--save_checkpoints_steps=0: expected a positive integer'),
    (lambda: Eval(batch_count=-1), '--eval_batch_count=-1: expected 0 (whole set) or more'),
    (lambda: Eval(interval_secs=0), '--eval_interval_secs=0: expected a positive integer'),
    (lambda: Devices(num_gpus=-1), '--num_gpus=-1: expected 0 (CPU) or more'),
    (lambda: Devices(variable_device='gpu'), '--variable_device=gpu: needs GPU towers'),
    (lambda: Transfer(finetune_lrn_rate=0.0), '--finetune_lrn_rate=0: expected a positive learning rate'),
    (lambda: RunConfig(mode='serve'), '--mode=serve: expected one of train, eval, extract, finetune'),
    (lambda: RunConfig(mode='extract'), '--mode=extract needs --extract_data_path'),
    (lambda: RunConfig(transfer=Transfer(freeze_restored_layers=True)),
     '--freeze_restored_layers: needs --init_checkpoint'),
    (lambda: RunConfig(schedule=Schedule(batch_size=33), devices=Devices(num_gpus=2, tower_device='cpu')),
     '--batch_size=33: not divisible by --num_gpus=2'),
    (lambda: RunConfig(model=Model(data_format='NCHW', compute_dtype='float16')),
     '--data_format=NCHW: float16 on the CPU'),
])
def test_each_bad_value_is_a_flag_error_naming_the_flag(make, message):
    with pytest.raises(FlagError) as error:
        make()
    assert str(error.value).startswith(message), str(error.value)
    assert '\n' not in str(error.value) and error.value.exit_status == 2
    assert isinstance(error.value, Error)


def test_values_are_normalized_to_their_types():
    schedule = Schedule(lr_boundaries=[10, 20], lr_values=[1, 0.1, 0.01], weight_decay_rate=0)
    assert schedule.lr_boundaries == (10, 20) and schedule.lr_values == (1.0, 0.1, 0.01)
    assert isinstance(schedule.lr_values[0], float) and isinstance(schedule.weight_decay_rate, float)
    assert Checkpoints(save_steps=50).save_secs is None  # steps win over the default seconds


def test_the_schedule_gives_its_rate_at_each_step_and_describes_itself():
    schedule = Schedule()
    assert [schedule.rate_at(step) for step in (0, 39999, 40000, 59999, 60000, 80000, 90000)] == [
        0.1, 0.1, 0.01, 0.01, 0.001, 0.0001, 0.0001]
    assert Schedule(lr_boundaries=[5], lr_values=[0.1, 1e-6], min_lrn_rate=1e-4).rate_at(10) == 1e-4  # floor
    assert schedule.describe() == ('0.1 until step 40000, 0.01 until step 60000, 0.001 until step 80000, '
                                   'then 0.0001; never below 0.0001')


def test_towers_batch_size_and_devices_depend_on_the_mode():
    devices = Devices(num_gpus=2, tower_device='cpu')
    train = RunConfig(devices=devices, schedule=Schedule(batch_size=64))
    assert (train.num_towers, train.batch_size, train.devices.device) == (2, 64, '/cpu:0')
    evaluate = RunConfig(mode='eval', devices=devices, schedule=Schedule(batch_size=64), eval=Eval(batch_size=30))
    assert (evaluate.num_towers, evaluate.batch_size) == (1, 30)  # eval runs on one device
    assert Devices(num_gpus=1).device == '/gpu:0' and Devices(num_gpus=1, tower_device='cpu').device == '/cpu:0'


def test_hparams_carry_the_model_and_the_recipe():
    config = RunConfig(data=Data(dataset='cifar100', label_mode='coarse'),
                       model=Model(num_residual_units=3, width=2, use_bottleneck=True, compute_dtype='bfloat16'),
                       schedule=Schedule(optimizer='sgd', lr_values=(0.4, 0.04, 0.004, 0.0004)))
    hps = config.hparams()
    assert (hps.num_classes, hps.num_residual_units, hps.width, hps.use_bottleneck) == (20, 3, 2, True)
    assert (hps.optimizer, hps.lrn_rate, hps.batch_size, hps.compute_dtype) == ('sgd', 0.4, 128, 'bfloat16')


def test_hparams_take_every_field_the_config_has_and_nothing_else_is_dropped():
    """Each HParams field a RunConfig section holds comes from it (whatever the section), the
    others are the dataset's classes, the first rate and the HParams defaults of settings that
    have no flag (momentum, batch norm)."""
    model = dict(num_residual_units=3, use_bottleneck=True, width=2, data_format='NCHW', relu_leakiness=0.2,
                 compute_dtype='bfloat16')
    schedule = dict(batch_size=64, optimizer='nesterov', weight_decay_rate=0.001, min_lrn_rate=0.001,
                    lr_schedule='piecewise', lr_boundaries=(100, 200), lr_values=(0.4, 0.04, 0.004),
                    warmup_steps=5, label_smoothing=0.1, mixup_alpha=0.2, moving_average_decay=0.99)
    held = {s.field: s.section for s in settings.SETTINGS if s.hparams and s.section}
    assert set(held) >= set(model) | set(schedule)
    config = RunConfig(data=Data(dataset='cifar100'), model=Model(**model), schedule=Schedule(**schedule))
    hps = config.hparams()
    assert {field: getattr(hps, field) for field in held} == {
        field: getattr(getattr(config, section), field) for field, section in held.items()}
    assert {field: getattr(hps, field) for field in dict(model, **schedule)} == dict(model, **schedule)
    unheld = {s.field: s.default for s in settings.SETTINGS if s.hparams and not s.section}
    assert sorted(unheld) == ['bn_decay', 'bn_epsilon', 'lrn_rate', 'momentum', 'num_classes']
    assert (hps.num_classes, hps.lrn_rate) == (100, 0.4)
    assert (hps.momentum, hps.bn_decay, hps.bn_epsilon) == (unheld['momentum'], unheld['bn_decay'],
                                                            unheld['bn_epsilon'])


def test_config_json_round_trip_rebuilds_the_same_config(tmp_path):
    config = RunConfig(mode='train', log_root=str(tmp_path), random_seed=3,
                       data=Data(dataset='digits'), model=Model(num_residual_units=2, width=2),
                       schedule=Schedule(train_steps=300, lr_boundaries=(100, 200), lr_values=(0.2, 0.02, 0.002)),
                       checkpoints=Checkpoints(save_steps=30), transfer=Transfer(init_checkpoint='/x/model.ckpt-5'),
                       taken_from_run=('width',), changes_to_run=('--weight_decay_rate=0.001 instead of ...',))
    text = json.dumps(config.to_dict())
    assert RunConfig.from_dict(json.loads(text)) == config
    with pytest.raises(TypeError):
        RunConfig.from_dict(dict(json.loads(text), modle={}))
    broken = json.loads(text)
    broken['schedule']['train_steps'] = 'many'
    with pytest.raises(FlagError, match='--train_steps=many: expected an integer'):
        RunConfig.from_dict(broken)


def test_the_settings_of_config_json_map_onto_the_config():
    config = RunConfig(data=Data(dataset='digits'), transfer=Transfer(freeze_restored_layers=True,
                                                                      init_checkpoint='x'))
    assert config_lib.setting(config, 'dataset') == 'digits'
    assert config_lib.setting(config, 'lr_values') == (0.1, 0.01, 0.001, 0.0001)
    assert config_lib.setting(config, 'freeze_restored_layers') is True
    sections = {field.name for field in dataclasses.fields(RunConfig)}
    assert set(settings.SETTING_SECTIONS.values()) <= sections


def test_building_a_config_imports_no_tensorflow():
    script = ('import sys\nfrom resnet_cifar import config, resolve, run_files\n'
              'config.RunConfig(data=config.Data(dataset="digits"))\n'
              'print("tensorflow" in sys.modules)')
    done = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == 'False', done.stderr[-2000:]
