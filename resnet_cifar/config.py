"""One frozen, typed RunConfig: every setting of a run, checked when it is made. No TensorFlow.

  RunConfig                 mode, log_root, train_dir, eval_dir, random_seed, and:
    data: Data              which records, and how to read them
    model: Model            the network
    schedule: Schedule      the training recipe: steps, batch, optimizer, learning rates
    checkpoints: Checkpoints  how often training saves and logs
    eval: Eval              how eval scores checkpoints
    devices: Devices        where the graph runs
    transfer: Transfer      extract, finetune and --init_checkpoint
    cluster: cluster.Cluster  this process's task in a parameter-server cluster, if any

Each section's fields are the settings declared for it in resnet_cifar/settings.py,
with their types, defaults and checks; a field has the name of its flag unless its
setting names another (Eval.once is --eval_once). The classes here add what concerns
several fields at once. A value that cannot work raises errors.FlagError naming the flag, for
example "--batch_size=0: expected a positive integer". `RunConfig.to_dict()` is what
<log_root>/config.json holds, and `RunConfig.from_dict` rebuilds the config from it.
resnet_cifar/resolve.py builds a RunConfig from the command line.
"""
import dataclasses
import os
import typing
from typing import Tuple

from resnet_cifar import cpu
from resnet_cifar import datasets
from resnet_cifar import schedules
from resnet_cifar import settings
from resnet_cifar.cluster import Cluster
from resnet_cifar.errors import FlagError


@settings.section('data')
class Data:
    """Which records, and how to read them.

    The data paths are comma-separated glob patterns; '' means the dataset's own
    files in data/ (where scripts/download_cifar.py puts them).
    """
    def __post_init__(self):
        settings.check_fields(self, 'data')
        if self.label_mode not in datasets.dataset_info(self.dataset).label_modes:
            having = datasets.with_coarse_labels()
            raise FlagError('--label_mode=%s: only %s %s %s labels, not %s' % (
                self.label_mode, ', '.join(having), 'has' if len(having) == 1 else 'have', self.label_mode,
                self.dataset))
        if self.image_size != datasets.IMAGE_SIZE:
            raise FlagError('--image_size=%d: CIFAR records hold 32x32 images; only 32 is supported'
                            % self.image_size)
        info = datasets.dataset_info(self.dataset)
        object.__setattr__(self, 'train_data_path', self.train_data_path or info.default_train_path)
        object.__setattr__(self, 'eval_data_path', self.eval_data_path or info.default_eval_path)

    @property
    def num_classes(self):
        return datasets.num_classes(self.dataset, self.label_mode)


@settings.section('model')
class Model:
    """The network: a pre-activation ResNet of depth 6n+2 (plain units) or 9n+2 (bottleneck)."""

    def __post_init__(self):
        settings.check_fields(self, 'model')


@settings.section('schedule')
class Schedule:
    """The training recipe. Steps are global steps; rates are per step, in weight units per gradient unit.

    Its learning-rate fields are a recipe of schedules.py (for_recipe), which says what each
    kind makes of lr_boundaries and lr_values and how the warmup and the floor apply. The
    rates are as used: resolve.py has already scaled them with the batch size when lr_batch_scaling is
    set (recorded so that a resumed run scales the rates it is given the same way).
    """
    def __post_init__(self):
        settings.check_fields(self, 'schedule')
        problem = schedules.recipe_problem(self)
        if problem:
            raise FlagError('--lr_boundaries/--lr_values: %s' % problem)

    def learning_rate(self):
        """The schedules.LearningRate of this recipe."""
        return schedules.for_recipe(self)

    def rate_at(self, step):
        """The learning rate of the train step that runs at global step `step` (the graph computes
        the same: schedules.LearningRate.in_graph)."""
        return self.learning_rate().rate_at(step)

    def describe(self):
        """The schedule in words, as schedules.LearningRate.describe says it: '0.1 until step
        40000, 0.01 until step 60000, then 0.001; never below 0.0001'."""
        return self.learning_rate().describe()


@settings.section('checkpoints')
class Checkpoints:
    """How often training saves a checkpoint and logs; by steps when save_steps is set, else by time."""

    def __post_init__(self):
        settings.check_fields(self, 'checkpoints')
        if self.save_steps is not None:
            object.__setattr__(self, 'save_secs', None)
        elif self.save_secs is None:
            raise FlagError('--save_checkpoints_secs: expected a number of seconds, or '
                            '--save_checkpoints_steps')


@settings.section('eval')
class Eval:
    """How the eval process (and the score at the end of training) reads checkpoints."""

    def __post_init__(self):
        settings.check_fields(self, 'eval')


@settings.section('devices')
class Devices:
    """Where the graph runs: the CPU, one GPU, or num_gpus data-parallel towers (train mode)."""

    def __post_init__(self):
        settings.check_fields(self, 'devices')
        if self.variable_device == 'gpu' and (self.num_gpus < 1 or self.tower_device == 'cpu'):
            raise FlagError('--variable_device=gpu: needs GPU towers (--num_gpus >= 1, --tower_device=gpu)')

    @property
    def device(self):
        """The device of a one-device graph (and of eval): '/gpu:0' or '/cpu:0'."""
        return '/gpu:0' if self.num_gpus >= 1 and self.tower_device == 'gpu' else '/cpu:0'

    @property
    def variable_device_name(self):
        return '/%s:0' % self.variable_device


@settings.section('transfer')
class Transfer:
    """Other uses of a trained network: extract (bottleneck features), finetune (a new layer on
    them), export (a SavedModel), and starting a new run from another run's weights."""

    def __post_init__(self):
        settings.check_fields(self, 'transfer')
        if self.features_path and os.path.isdir(self.features_path):
            raise FlagError('--features_path=%s: is a directory; expected a file name such as features.npz'
                            % self.features_path)


# The flags each mode needs.
_REQUIRED = {'extract': ('extract_data_path', 'features_path'),
             'finetune': ('train_features', 'eval_features'),
             'export': ('export_dir',)}


@settings.section('run')
class RunConfig:
    """Every setting of one process of a run.

    log_root holds the checkpoints and config.json; train_dir and eval_dir (by
    default <log_root>/train and /eval) the event files. `taken_from_run` names
    the settings this process took from the run's config.json (resolve.py), and
    `changes_to_run` describes, as flags, what a resuming trainer changes of the
    run's recipe. `compute_dtype_choice` says why --compute_dtype=auto chose
    model.compute_dtype ('' when the flag named the dtype).
    """
    data: Data = dataclasses.field(default_factory=Data)
    model: Model = dataclasses.field(default_factory=Model)
    schedule: Schedule = dataclasses.field(default_factory=Schedule)
    checkpoints: Checkpoints = dataclasses.field(default_factory=Checkpoints)
    eval: Eval = dataclasses.field(default_factory=Eval)
    devices: Devices = dataclasses.field(default_factory=Devices)
    transfer: Transfer = dataclasses.field(default_factory=Transfer)
    cluster: Cluster = dataclasses.field(default_factory=Cluster)
    taken_from_run: Tuple[str, ...] = ()
    changes_to_run: Tuple[str, ...] = ()
    compute_dtype_choice: str = ''      # why --compute_dtype=auto picked model.compute_dtype; '' if asked for

    def __post_init__(self):
        self._check_sections()
        settings.check_fields(self, 'run')
        log_root = self.log_root or os.path.join('runs', self.data.dataset)
        object.__setattr__(self, 'log_root', log_root)
        object.__setattr__(self, 'train_dir', self.train_dir or os.path.join(log_root, 'train'))
        object.__setattr__(self, 'eval_dir', self.eval_dir or os.path.join(log_root, 'eval'))
        self._check_together()

    def _check_together(self):
        """FlagError for settings that cannot work together."""
        for name in _REQUIRED.get(self.mode, ()):
            if not getattr(self.transfer, name):
                raise FlagError('--mode=%s needs --%s' % (self.mode, name))
        if self.mode == 'train' and self.transfer.freeze_restored_layers:
            if not self.transfer.init_checkpoint and 'freeze_restored_layers' not in self.taken_from_run:
                raise FlagError('--freeze_restored_layers: needs --init_checkpoint, the run to restore from')
            if self.num_towers > 1:
                raise FlagError('--freeze_restored_layers: not supported with --num_gpus > 1 towers yet; '
                                'train the new layer on one device')
        self._check_cluster()
        if self.batch_size % self.num_towers:
            raise FlagError('--batch_size=%d: not divisible by --num_gpus=%d; each tower takes an equal '
                            'share of the batch' % (self.batch_size, self.devices.num_gpus))
        if self.model.data_format == 'NCHW' and self.devices.device == '/cpu:0':
            if not cpu.onednn_on():
                raise FlagError('--data_format=NCHW: on the CPU only oneDNN runs NCHW, and '
                                'TF_ENABLE_ONEDNN_OPTS=0 turns it off; use NHWC')
            if self.model.compute_dtype == 'float16':
                raise FlagError('--data_format=NCHW: float16 on the CPU runs on TensorFlow\'s generic '
                                'kernels, which pool NHWC only; use NHWC')

    def _check_cluster(self):
        if not self.cluster.is_distributed:
            return
        if self.mode != 'train':
            raise FlagError('--job_name=%s: a cluster trains (--mode=train); run --mode=%s without the '
                            'cluster flags' % (self.cluster.job_name, self.mode))
        if self.cluster.sync_replicas and self.model.compute_dtype == 'float16':
            raise FlagError('--sync_replicas: not supported with --compute_dtype=float16 (its loss scale '
                            'skips steps); use bfloat16 or float32')

    @property
    def input_seed(self):
        """The seed of the input shuffling: random_seed, plus the task index of a worker, so that
        each worker of a cluster reads its own order; None when random_seed is None."""
        if self.random_seed is None:
            return None
        return self.random_seed + (self.cluster.task_index if self.cluster.job_name == 'worker' else 0)

    @property
    def num_towers(self):
        """Data-parallel towers: num_gpus when training on more than one, else 1."""
        return self.devices.num_gpus if self.mode == 'train' and self.devices.num_gpus > 1 else 1

    @property
    def batch_size(self):
        """Images per step of this mode: the training batch, or eval's."""
        return self.schedule.batch_size if self.mode == 'train' else self.eval.batch_size

    def _check_sections(self):
        """FlagError for a section that is not of its class, or a bad value of RunConfig's own fields."""
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            kind, value = hints[field.name], getattr(self, field.name)
            if dataclasses.is_dataclass(kind) and not isinstance(value, kind):
                raise FlagError('RunConfig.%s must be a %s; got %r' % (field.name, kind.__name__, value))
        for name in ('taken_from_run', 'changes_to_run'):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def hparams(self):
        """The resnet_model.HParams of this run's network and training step: every field of a
        section that is HParams' (today those of model and schedule), with this mode's batch and the
        dataset's classes; the others (momentum, batch norm) keep their HParams defaults."""
        import resnet_model  # TensorFlow: only once a graph is built
        values = {s.field: getattr(self if s.section == 'run' else getattr(self, s.section), s.field)
                  for s in settings.SETTINGS if s.hparams and s.section}
        values.update(batch_size=self.batch_size, num_classes=self.data.num_classes,
                      lrn_rate=self.schedule.lr_values[0])
        return resnet_model.HParams(**values)

    def to_dict(self):
        """Plain JSON-able values: {field: value, section: {field: value}}."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        """The RunConfig of to_dict()'s output; FlagError (naming the setting) for a bad value,
        TypeError for an unknown field."""
        sections = {field.name: field.type for field in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for name, value in values.items():
            kind = hints.get(name) if name in sections else None
            kwargs[name] = kind(**value) if dataclasses.is_dataclass(kind) and isinstance(value, dict) else value
        return cls(**kwargs)


def setting(config, key):
    """The value of a run setting (a key of settings.SETTING_SECTIONS) in `config`."""
    return getattr(getattr(config, settings.SETTING_SECTIONS[key]), key)
