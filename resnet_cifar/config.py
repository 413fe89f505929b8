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

A field has the name of its flag unless its class maps it (`_FLAGS`): Eval.once is
--eval_once. A value that cannot work raises errors.FlagError naming the flag, for
example "--batch_size=0: expected a positive integer". `RunConfig.to_dict()` is what
<log_root>/config.json holds, and `RunConfig.from_dict` rebuilds the config from it.
resnet_cifar/resolve.py builds a RunConfig from the command line.
"""
import dataclasses
import math
import os
import typing
from typing import Optional, Tuple

from resnet_cifar import cpu
from resnet_cifar import datasets
from resnet_cifar import schedules
from resnet_cifar.cluster import Cluster
from resnet_cifar.errors import FlagError

MODES = ('train', 'eval', 'extract', 'finetune', 'export')
OPTIMIZERS = ('mom', 'sgd', 'nesterov')
# The batch size the base learning rates are given for: with lr_batch_scaling, a rate r runs
# as r * batch_size / BASE_BATCH_SIZE (the linear scaling rule).
BASE_BATCH_SIZE = 128
DATA_FORMATS = ('NHWC', 'NCHW')
COMPUTE_DTYPES = ('float32', 'float16', 'bfloat16')
TOWER_DEVICES = ('gpu', 'cpu')
VARIABLE_DEVICES = ('cpu', 'gpu')


def _flag(section, name):
    return getattr(section, '_FLAGS', {}).get(name, name)


def _fail(section, name, value, expected):
    """Raises the FlagError of a field; it carries the field's name and what was expected, for
    the message of a settings file (run_files.py) that holds the value."""
    shown = ','.join(map(str, value)) if isinstance(value, (list, tuple)) else value
    error = FlagError('--%s=%s: expected %s' % (_flag(section, name), shown, expected))
    error.setting, error.expected = name, expected
    raise error


def _coerced(value, kind):
    """`value` as `kind` (int, float, bool, str, Optional[...], Tuple[x, ...]); ValueError if it is not one."""
    if typing.get_origin(kind) is typing.Union:  # Optional[x]
        inner = [k for k in typing.get_args(kind) if k is not type(None)][0]
        return None if value is None else _coerced(value, inner)
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError
        return tuple(_coerced(v, typing.get_args(kind)[0]) for v in value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ValueError
    if kind is int and not -2 ** 63 <= value < 2 ** 63:  # TensorFlow's int64 (a JSON integer has no bound)
        raise ValueError
    if kind is float and not math.isfinite(value):
        raise ValueError
    return value


_KIND_NAMES = {int: 'an integer below 2^63', float: 'a finite number', bool: 'true or false', str: 'a string'}


def _check_types(section):
    """Checks (and normalizes: lists to tuples, ints to floats) every field of a dataclass."""
    hints = typing.get_type_hints(type(section))
    for field in dataclasses.fields(section):
        kind, value = hints[field.name], getattr(section, field.name)
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, kind):
                raise FlagError('RunConfig.%s must be a %s; got %r' % (field.name, kind.__name__, value))
            continue
        try:
            object.__setattr__(section, field.name, _coerced(value, kind))
        except ValueError:
            args = [k for k in typing.get_args(kind) if k is not type(None)]
            _fail(section, field.name, value, _KIND_NAMES.get(args[0] if args else kind, 'a list'))


def _choice(section, name, choices):
    if getattr(section, name) not in choices:
        _fail(section, name, getattr(section, name), 'one of %s' % ', '.join(choices))


def _positive(section, *names):
    for name in names:
        value = getattr(section, name)
        if value is not None and value < 1:
            _fail(section, name, value, 'a positive integer')


def _at_most(section, name, most, what):
    """value <= most; `what` says what the value is ('a positive integer')."""
    if getattr(section, name) > most:
        _fail(section, name, getattr(section, name), '%s up to %d' % (what, most))


def _in_range(section, name, low, high=None):
    """low <= value (< high)."""
    value = getattr(section, name)
    if value < low or (high is not None and value >= high):
        _fail(section, name, '%g' % value, 'a value in [%g, %g)' % (low, high) if high is not None
              else '%g or more' % low)


@dataclasses.dataclass(frozen=True)
class Data:
    """Which records, and how to read them.

    The data paths are comma-separated glob patterns; '' means the dataset's own
    files in data/ (where scripts/download_cifar.py puts them).
    """
    dataset: str = 'cifar10'            # registered in datasets.py: cifar10, cifar100, digits (the sample)
    label_mode: str = 'fine'            # CIFAR-100: the 100 fine or the 20 coarse labels
    train_data_path: str = ''
    eval_data_path: str = ''
    num_input_threads: Optional[int] = None  # reader threads; None: one per CPU core, at least 2
    image_size: int = 32                # pixels; CIFAR records hold 32x32 images
    validation_size: int = 0            # the last N training records, held out to choose the best checkpoint

    def __post_init__(self):
        _check_types(self)
        _choice(self, 'dataset', datasets.dataset_names())
        _choice(self, 'label_mode', datasets.LABEL_MODES)
        if self.label_mode not in datasets.dataset_info(self.dataset).label_modes:
            having = datasets.with_coarse_labels()
            raise FlagError('--label_mode=%s: only %s %s %s labels, not %s' % (
                self.label_mode, ', '.join(having), 'has' if len(having) == 1 else 'have', self.label_mode,
                self.dataset))
        _positive(self, 'num_input_threads')
        _in_range(self, 'validation_size', 0)
        if self.image_size != datasets.IMAGE_SIZE:
            raise FlagError('--image_size=%d: CIFAR records hold 32x32 images; only 32 is supported'
                            % self.image_size)
        info = datasets.dataset_info(self.dataset)
        object.__setattr__(self, 'train_data_path', self.train_data_path or info.default_train_path)
        object.__setattr__(self, 'eval_data_path', self.eval_data_path or info.default_eval_path)

    @property
    def num_classes(self):
        return datasets.num_classes(self.dataset, self.label_mode)


# Bounds of the network's size, so that a typo (or a hand-edited config.json) is an error, not a
# graph that grows until memory runs out: ResNet-1202 (n=200) is the deepest CIFAR ResNet of the
# papers, and width 64 gives 4,096 filters in the last stage (WRN-28-10 has width 10).
MAX_RESIDUAL_UNITS = 200
MAX_WIDTH = 64


@dataclasses.dataclass(frozen=True)
class Model:
    """The network: a pre-activation ResNet of depth 6n+2 (plain units) or 9n+2 (bottleneck)."""
    num_residual_units: int = 5         # n per stage: 5 is ResNet-32
    use_bottleneck: bool = False        # 1x1, 3x3, 1x1 units instead of 3x3, 3x3
    width: int = 1                      # filter multiplier k (n=4, k=10 is WRN-28-10)
    relu_leakiness: float = 0.1         # slope of the leaky ReLU for negative inputs, [0, 1)
    data_format: str = 'NHWC'           # activation layout: NHWC (CPU) or NCHW (GPU)
    compute_dtype: str = 'float32'      # float32, or float16 / bfloat16 mixed precision

    def __post_init__(self):
        _check_types(self)
        _positive(self, 'num_residual_units', 'width')
        _at_most(self, 'num_residual_units', MAX_RESIDUAL_UNITS, 'a positive integer')
        _at_most(self, 'width', MAX_WIDTH, 'a positive integer')
        _in_range(self, 'relu_leakiness', 0, 1)
        _choice(self, 'data_format', DATA_FORMATS)
        _choice(self, 'compute_dtype', COMPUTE_DTYPES)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The training recipe. Steps are global steps; rates are per step, in weight units per gradient unit.

    lr_schedule is a kind of schedules.py, which says what lr_boundaries and lr_values
    mean for it (piecewise: the steps where the rate changes and the rates; cosine: (end,)
    and (start, final)). A linear warmup multiplies the rate of step s < warmup_steps by
    (s + 1) / warmup_steps. No rate is below min_lrn_rate. The rates are as used: resolve.py
    has already scaled them with the batch size when lr_batch_scaling is set (recorded so
    that a resumed run scales the rates it is given the same way).
    """
    _FLAGS = {'warmup_steps': 'lr_warmup'}
    train_steps: int = 80000            # training ends at this global step
    batch_size: int = 128               # images per step, over all towers
    optimizer: str = 'mom'              # mom: momentum 0.9; nesterov: Nesterov momentum 0.9; sgd: plain
    weight_decay_rate: float = 0.0002   # times half the sum of squared conv and fc weights
    moving_average_decay: float = 0.999  # of the weights' shadows that eval scores; 0: none
    lr_schedule: str = 'piecewise'      # piecewise or cosine
    lr_boundaries: Tuple[int, ...] = (40000, 60000, 80000)
    lr_values: Tuple[float, ...] = (0.1, 0.01, 0.001, 0.0001)
    min_lrn_rate: float = 0.0001
    warmup_steps: int = 0               # linear warmup over the first N steps; 0: none
    lr_batch_scaling: bool = False      # the rates were given for batch 128 and scaled to batch_size
    cutout_size: int = 0                # training images get a random SxS square zeroed; 0: none
    mixup_alpha: float = 0.0            # mixup of image pairs, weights ~ Beta(alpha, alpha); 0: none
    label_smoothing: float = 0.0        # epsilon: the target is (1 - eps) * one-hot + eps / classes
    preset: str = ''                    # the preset the recipe started from (presets.py), or ''

    def __post_init__(self):
        _check_types(self)
        _positive(self, 'train_steps', 'batch_size')
        _choice(self, 'optimizer', OPTIMIZERS)
        _choice(self, 'lr_schedule', schedules.KINDS)
        _in_range(self, 'weight_decay_rate', 0)
        _in_range(self, 'moving_average_decay', 0, 1)
        _in_range(self, 'min_lrn_rate', 0)
        _in_range(self, 'warmup_steps', 0)
        if not 0 <= self.cutout_size <= datasets.IMAGE_SIZE:
            _fail(self, 'cutout_size', self.cutout_size, '0 (none) to %d pixels' % datasets.IMAGE_SIZE)
        _in_range(self, 'mixup_alpha', 0)
        _in_range(self, 'label_smoothing', 0, 1)
        problem = schedules.problem(self.lr_schedule, self.lr_boundaries, self.lr_values, self.warmup_steps)
        if problem:
            raise FlagError('--lr_boundaries/--lr_values: %s' % problem)

    def learning_rate(self):
        """The schedules.LearningRate of this recipe."""
        return schedules.learning_rate(self.lr_schedule, self.lr_boundaries, self.lr_values, self.warmup_steps,
                                       self.min_lrn_rate)

    def rate_at(self, step):
        """The learning rate of the train step that runs at global step `step` (the graph computes
        the same: schedules.LearningRate.in_graph)."""
        return self.learning_rate().rate_at(step)

    def describe(self):
        """'0.1 until step 40000, 0.01 until step 60000, then 0.001; never below 0.0001', or for
        cosine 'cosine from 0.1 at step 0 to 0.0001 at step 3000, then 0.0001; ...'; the warmup
        comes first when there is one."""
        return self.learning_rate().describe()


@dataclasses.dataclass(frozen=True)
class Checkpoints:
    """How often training saves a checkpoint and logs; by steps when save_steps is set, else by time."""
    _FLAGS = {'save_steps': 'save_checkpoints_steps', 'save_secs': 'save_checkpoints_secs',
              'keep_max': 'keep_checkpoint_max'}
    save_steps: Optional[int] = None    # a checkpoint every N global steps
    save_secs: Optional[int] = 120      # else every N seconds
    keep_max: int = 5                   # newest checkpoints kept in log_root
    log_every_n_steps: int = 100        # a progress line and the summaries, every N steps
    summary_histograms: bool = False    # weight and activation histograms too

    def __post_init__(self):
        _check_types(self)
        _positive(self, 'save_steps', 'save_secs', 'keep_max', 'log_every_n_steps')
        if self.save_steps is not None:
            object.__setattr__(self, 'save_secs', None)
        elif self.save_secs is None:
            raise FlagError('--save_checkpoints_secs: expected a number of seconds, or '
                            '--save_checkpoints_steps')


@dataclasses.dataclass(frozen=True)
class Eval:
    """How the eval process (and the score at the end of training) reads checkpoints."""
    _FLAGS = {'batch_size': 'batch_size', 'batch_count': 'eval_batch_count', 'once': 'eval_once',
              'interval_secs': 'eval_interval_secs', 'use_moving_average': 'eval_use_moving_average',
              'after_training': 'eval_after_training', 'flip': 'eval_flip'}
    batch_size: int = 100               # images per eval (and extract) step
    batch_count: int = 0                # batches per checkpoint; 0: the whole eval set
    once: bool = False                  # score the latest checkpoint, then exit
    interval_secs: int = 10             # between looks for a new checkpoint
    use_moving_average: bool = True     # score the weights' shadows when the checkpoint has them
    after_training: bool = True         # a finished trainer scores its last checkpoint on the eval set
    flip: bool = False                  # average the logits of each image and its mirror

    def __post_init__(self):
        _check_types(self)
        _positive(self, 'batch_size', 'interval_secs')
        if self.batch_count < 0:
            _fail(self, 'batch_count', self.batch_count, '0 (whole set) or more')


@dataclasses.dataclass(frozen=True)
class Devices:
    """Where the graph runs: the CPU, one GPU, or num_gpus data-parallel towers (train mode)."""
    num_gpus: int = 0                   # 0: CPU; 1: the first GPU; N > 1: N towers in training
    tower_device: str = 'gpu'           # gpu, or cpu: the towers on logical CPU devices (tests)
    variable_device: str = 'cpu'        # with towers: where the shared variables live
    stage_input: bool = False           # copy the next batch to the device during each step

    def __post_init__(self):
        _check_types(self)
        if self.num_gpus < 0:
            _fail(self, 'num_gpus', self.num_gpus, '0 (CPU) or more')
        _choice(self, 'tower_device', TOWER_DEVICES)
        _choice(self, 'variable_device', VARIABLE_DEVICES)
        if self.variable_device == 'gpu' and (self.num_gpus < 1 or self.tower_device == 'cpu'):
            raise FlagError('--variable_device=gpu: needs GPU towers (--num_gpus >= 1, --tower_device=gpu)')

    @property
    def device(self):
        """The device of a one-device graph (and of eval): '/gpu:0' or '/cpu:0'."""
        return '/gpu:0' if self.num_gpus >= 1 and self.tower_device == 'gpu' else '/cpu:0'

    @property
    def variable_device_name(self):
        return '/%s:0' % self.variable_device


@dataclasses.dataclass(frozen=True)
class Transfer:
    """Other uses of a trained network: extract (bottleneck features), finetune (a new layer on
    them), export (a SavedModel), and starting a new run from another run's weights."""
    checkpoint_path: Optional[str] = None    # extract, export: a checkpoint prefix or directory
    extract_data_path: Optional[str] = None  # extract: the records to run, once, in order
    features_path: Optional[str] = None      # extract: the .npz to write
    train_features: Optional[str] = None     # finetune: the .npz to train on
    eval_features: Optional[str] = None      # finetune: the .npz to score on
    finetune_epochs: int = 30
    finetune_batch_size: int = 128
    finetune_lrn_rate: float = 0.1
    init_checkpoint: Optional[str] = None    # train: start a new run from another run's weights
    freeze_restored_layers: bool = False     # train only the new fully connected layer
    export_dir: Optional[str] = None         # export: the new SavedModel directory

    def __post_init__(self):
        _check_types(self)
        _positive(self, 'finetune_epochs', 'finetune_batch_size')
        if self.finetune_lrn_rate <= 0:
            _fail(self, 'finetune_lrn_rate', '%g' % self.finetune_lrn_rate, 'a positive learning rate')
        if self.features_path and os.path.isdir(self.features_path):
            raise FlagError('--features_path=%s: is a directory; expected a file name such as features.npz'
                            % self.features_path)


# The flags each mode needs.
_REQUIRED = {'extract': ('extract_data_path', 'features_path'),
             'finetune': ('train_features', 'eval_features'),
             'export': ('export_dir',)}


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Every setting of one process of a run.

    log_root holds the checkpoints and config.json; train_dir and eval_dir (by
    default <log_root>/train and /eval) the event files. `taken_from_run` names
    the settings this process took from the run's config.json (resolve.py), and
    `changes_to_run` describes, as flags, what a resuming trainer changes of the
    run's recipe. `compute_dtype_choice` says why --compute_dtype=auto chose
    model.compute_dtype ('' when the flag named the dtype).
    """
    mode: str = 'train'
    log_root: str = ''                  # default: runs/<dataset>
    train_dir: str = ''
    eval_dir: str = ''
    random_seed: Optional[int] = None   # of the graph and the input shuffling
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
        _check_types(self)
        _choice(self, 'mode', MODES)
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

    def hparams(self):
        """The resnet_model.HParams of this run's network and training step."""
        import resnet_model  # TensorFlow: only once a graph is built
        return resnet_model.HParams(
            batch_size=self.batch_size, num_classes=self.data.num_classes,
            min_lrn_rate=self.schedule.min_lrn_rate, lrn_rate=self.schedule.lr_values[0],
            num_residual_units=self.model.num_residual_units, use_bottleneck=self.model.use_bottleneck,
            weight_decay_rate=self.schedule.weight_decay_rate, relu_leakiness=self.model.relu_leakiness,
            optimizer=self.schedule.optimizer, width=self.model.width,
            moving_average_decay=self.schedule.moving_average_decay,
            data_format=self.model.data_format, compute_dtype=self.model.compute_dtype,
            lr_boundaries=self.schedule.lr_boundaries, lr_values=self.schedule.lr_values,
            lr_schedule=self.schedule.lr_schedule, warmup_steps=self.schedule.warmup_steps,
            label_smoothing=self.schedule.label_smoothing, mixup_alpha=self.schedule.mixup_alpha)

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


# Where each setting of the run's settings file (run_files.py) lives in a RunConfig.
SETTING_SECTIONS = {
    'dataset': 'data', 'label_mode': 'data', 'validation_size': 'data',
    'num_residual_units': 'model', 'use_bottleneck': 'model', 'width': 'model', 'relu_leakiness': 'model',
    'batch_size': 'schedule', 'optimizer': 'schedule', 'weight_decay_rate': 'schedule',
    'moving_average_decay': 'schedule', 'lr_boundaries': 'schedule', 'lr_values': 'schedule',
    'min_lrn_rate': 'schedule', 'train_steps': 'schedule', 'freeze_restored_layers': 'transfer',
    'lr_schedule': 'schedule', 'warmup_steps': 'schedule', 'lr_batch_scaling': 'schedule',
    'cutout_size': 'schedule', 'mixup_alpha': 'schedule', 'label_smoothing': 'schedule', 'preset': 'schedule',
}


def setting(config, key):
    """The value of a run setting (a key of SETTING_SECTIONS) in `config`."""
    return getattr(getattr(config, SETTING_SECTIONS[key]), key)
