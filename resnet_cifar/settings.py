"""Every setting, declared once: its flag, --help group, RunConfig field, check and run rules. No TensorFlow.

A `Setting` says, in one place:
  name          the flag's name, which errors name too: "--batch_size=0: expected a positive integer"
  default       the RunConfig field's default; `flag_default` when the flag's differs (None: decided later)
  help, group   the flag's help (or a function that gives it, read when the flag is defined) and its
                --help group ('' for a value without a flag of its own)
  section       the RunConfig section of its field ('run' for RunConfig's own fields; None: a flag only)
  field         the field's name (and config.json key), when it is not the flag's name
  kind          the field's type (default: the default's): int, float, bool, str, Optional[...], Tuple[...]
  choices       the values it may take (or a function that gives them: a registry's names, read when
                checked); `flag_choices` when the flag takes others too
  check         value -> what was expected, or None when the value is good (bounds below)
  run           'model' or 'split' (a run keeps them), 'recipe' (a resumed trainer may change it,
                unless fixed=True): a run setting, stored in <log_root>/config.json
  old_default   the value of a run setting that an older run's config.json lacks
  hparams       the field is one of resnet_model.HParams' (`hparams_default` its default there)
  in_epochs     a field in steps whose flag counts epochs with --train_epochs (resolve.py converts it)
  run_fraction  the presets.Preset attribute that gives such a field as a fraction of the run,
                taken when the flag is not given

From these: resnet_main.py defines the flags and the --help groups (`define_flags`, `FLAG_GROUPS`),
config.py and cluster.py make the RunConfig sections (`section`) and check them (`check_fields`), run_files.py
reads and checks config.json (`KEYS`, `setting_of_key`, `OLD_DEFAULTS`, `FIXED_KEYS`), resolve.py
maps the flags to the settings (`section_values`, `keys_of_flag`, `check_flag_values`), and
resnet_model.HParams takes its fields, defaults and checks (`HPARAMS_FIELDS`, `check_hparams`).

Why a schema of our own, not ml_collections.config_flags or fancyflags (looked at 2026-12-07):
both define nested flags with dotted names (--config.schedule.label_smoothing, --replay.capacity),
so every flag name users type would change; neither knows config.json, the settings a resumed run
may change, or our one-line FlagError; and each is a new runtime dependency. What we need is a
table and ~150 lines of plain Python over dataclasses and absl.
"""
import dataclasses
import math
import numbers
import typing
from typing import Any, Callable, Optional, Tuple

from resnet_cifar import datasets
from resnet_cifar import errors
from resnet_cifar import presets
from resnet_cifar import schedules

MODES = ('train', 'eval', 'extract', 'finetune', 'export')
# What a network graph (resnet_model.ResNet) and an input pipeline (cifar_input) are built for.
GRAPH_MODES = ('train', 'eval')
OPTIMIZERS = ('mom', 'sgd', 'nesterov')
DATA_FORMATS = ('NHWC', 'NCHW')
COMPUTE_DTYPES = ('float32', 'float16', 'bfloat16')
TOWER_DEVICES = ('gpu', 'cpu')
VARIABLE_DEVICES = ('cpu', 'gpu')
# The batch size the base learning rates are given for: with lr_batch_scaling, a rate r runs
# as r * batch_size / BASE_BATCH_SIZE (the linear scaling rule).
BASE_BATCH_SIZE = 128
# Bounds of the network's size, so that a typo (or a hand-edited config.json) is an error, not a
# graph that grows until memory runs out: ResNet-1202 (n=200) is the deepest CIFAR ResNet of the
# papers, and width 64 gives 4,096 filters in the last stage (WRN-28-10 has width 10).
MAX_RESIDUAL_UNITS = 200
MAX_WIDTH = 64
# The smallest epsilon fused batch norm accepts (it silently raises smaller ones).
MIN_BN_EPSILON = 1.001e-5

_SAME = object()  # flag_default: the field's default


# ---------------------------------------------------------------------------- checks

def count(most=None):
    """A positive integer (None passes: an Optional field left unset), at most `most`."""
    def check(value):
        if value is None or 1 <= value <= (most if most is not None else value):
            return None
        return 'a positive integer' + (' up to %d' % most if most is not None and value > most else '')
    return check


def at_least(low, expected=None):
    """low <= value; `expected` says it in words (default '0 or more')."""
    return lambda value: None if value >= low else (expected or '%g or more' % low)


def in_range(low, high, low_open=False):
    """low <= value < high (low < value with low_open)."""
    def check(value):
        if (value > low if low_open else value >= low) and value < high:
            return None
        return 'a value in %s%g, %g)' % ('(' if low_open else '[', low, high)
    return check


def positive_number(expected='a positive learning rate'):
    return lambda value: None if value > 0 and math.isfinite(value) else expected


# ---------------------------------------------------------------------------- the declaration

@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting (see the module's docstring)."""
    name: str
    default: Any
    help: str = ''
    group: str = ''
    section: Optional[str] = None
    field: str = ''
    kind: Any = None
    flag_default: Any = _SAME
    flag_kind: Any = None
    choices: Tuple[str, ...] = ()
    flag_choices: Tuple[str, ...] = ()
    check: Optional[Callable] = None
    run: str = ''
    fixed: bool = False
    old_default: Any = _SAME
    hparams: bool = False
    hparams_default: Any = _SAME
    sets: str = ''
    in_epochs: bool = False
    run_fraction: str = ''

    def __post_init__(self):
        object.__setattr__(self, 'field', self.field or self.name)
        if self.kind is None:
            object.__setattr__(self, 'kind', type(self.default))
        if self.flag_default is _SAME:
            object.__setattr__(self, 'flag_default', self.default)
        if self.hparams_default is _SAME:
            object.__setattr__(self, 'hparams_default', self.default)

    def help_text(self):
        """The flag's help: `help`, or what `help` gives when it is a function."""
        return self.help() if callable(self.help) else self.help

    def allowed(self):
        """The values it may take now: `choices`, or what `choices` gives when it is a function."""
        return tuple(self.choices()) if callable(self.choices) else self.choices

    @property
    def may_change_on_resume(self):
        return self.run == 'recipe' and not self.fixed


S = Setting  # short, for the table below


_RUN, _DATA, _MODEL, _SCHEDULE = 'Run', 'Data', 'Model', 'Training schedule'
_CKPT, _EVAL, _TRANSFER, _DEVICES, _CLUSTER = ('Checkpoints and logging', 'Eval', 'Transfer and export',
                                               'Devices and precision', 'Cluster')

SETTINGS = (
    # Run.
    S('mode', 'train', 'train: run the training loop; eval: score each new checkpoint in --log_root; '
      'extract: save the bottleneck features of --extract_data_path; finetune: train a new softmax layer on '
      'saved features; export: write a SavedModel of a checkpoint to --export_dir.', _RUN, 'run', choices=MODES),
    S('dataset', 'cifar10', lambda: 'Dataset: %s.' % datasets.described_names(), _RUN, 'data',
      choices=datasets.dataset_names, run='model'),
    S('log_root', '', 'Directory of the checkpoints, shared by train and eval. Default: runs/<dataset>.',
      _RUN, 'run', flag_default=None),
    S('train_dir', '', 'Directory of the training event files. Default: <log_root>/train.', _RUN, 'run',
      flag_default=None),
    S('eval_dir', '', 'Directory of the eval event files. Default: <log_root>/eval.', _RUN, 'run',
      flag_default=None),
    # Data.
    S('train_data_path', '', 'Glob pattern(s), comma-separated, of the training record files. '
      'Default: where the download script puts --dataset.', _DATA, 'data', flag_default=None),
    S('eval_data_path', '', 'Glob pattern(s), comma-separated, of the eval record files. '
      'Default: where the download script puts --dataset.', _DATA, 'data', flag_default=None),
    S('validation_size', 0, 'Hold the last N training records out of training (files in --train_data_path '
      'order, nothing copied); eval then scores each checkpoint on them, chooses the best on them, and scores '
      'the test set once, on the best. 0: no validation split.', _DATA, 'data', check=at_least(0),
      run='split', old_default=0),
    S('label_mode', 'fine', 'CIFAR-100 only: train on the 100 fine or the 20 coarse labels.', _DATA, 'data',
      choices=datasets.LABEL_MODES, run='model'),
    S('image_size', 32, 'Image side in pixels. CIFAR images are 32x32; only 32 is supported.', _DATA, 'data'),
    S('num_input_threads', None, 'Reader threads of the training input queue. Default: one per CPU core, '
      'at least 2.', _DATA, 'data', kind=Optional[int], check=count()),
    S('cutout_size', 0, 'Cutout: each training image gets a random SxS square zeroed (after standardization, '
      'clipped at the borders). 0: none.', _DATA, 'schedule', run='recipe', old_default=0,
      check=lambda v: None if 0 <= v <= datasets.IMAGE_SIZE else '0 (none) to %d pixels' % datasets.IMAGE_SIZE),
    # Model.
    S('num_residual_units', 5, 'Residual units per stage: depth is 6n+2 plain, 9n+2 bottleneck (5 = ResNet-32). '
      'Default: 5, or 2 for digits.', _MODEL, 'model', flag_default=None, check=count(MAX_RESIDUAL_UNITS),
      run='model', hparams=True),
    S('use_bottleneck', False, 'Bottleneck (1x1, 3x3, 1x1) units instead of plain ones.', _MODEL, 'model',
      run='model', hparams=True),
    S('width', 1, 'Width multiplier k of the filters (k=10 with n=4 is WRN-28-10).', _MODEL, 'model',
      check=count(MAX_WIDTH), run='model', hparams=True),
    S('momentum', 0.9, check=in_range(0, 1), hparams=True),
    S('bn_decay', 0.9, check=in_range(0, 1, low_open=True), hparams=True),
    S('bn_epsilon', 1e-3, check=at_least(MIN_BN_EPSILON), hparams=True),
    S('data_format', 'NHWC', 'Layout of the activations: NCHW (channels first) is faster on GPUs, NHWC on CPUs. '
      'Default: NCHW when training on GPUs, NHWC on the CPU. Input images are NHWC either way, and checkpoints '
      'do not depend on it.', _MODEL, 'model', flag_default=None, choices=DATA_FORMATS, hparams=True),
    S('relu_leakiness', 0.1, 'Slope of the leaky ReLU for negative inputs, in [0, 1).', _MODEL, 'model',
      check=in_range(0, 1), run='model', hparams=True),
    # Training schedule.
    S('preset', '', 'A whole training recipe (docs/recipes.md): resnet32_classic, resnet110, wrn28_10 or '
      'fast_cifar. Flags given with it override its values.', _SCHEDULE, 'schedule', flag_default=None,
      choices=('',) + presets.NAMES, flag_choices=presets.NAMES, run='recipe', fixed=True, old_default=''),
    S('train_steps', 80000, 'Training ends at this global step. Default: 80000 (the classic recipe), 1000 for '
      'digits.', _SCHEDULE, 'schedule', flag_default=None, check=count(), run='recipe'),
    S('train_epochs', None, 'The run\'s length in passes over the training records (those not held out), '
      'instead of --train_steps; --lr_boundaries and --lr_warmup then count epochs too.', _SCHEDULE,
      kind=Optional[float], check=lambda v: None if v is None or (math.isfinite(v) and v >= 1e-9)
      else 'a positive number', sets='train_steps'),
    S('batch_size', 128, 'Images per step. Default: 128 in train mode, 100 in eval mode.', _SCHEDULE, 'schedule',
      flag_default=None, check=count(), run='recipe', hparams=True),
    S('optimizer', 'mom', 'mom: momentum 0.9; nesterov: Nesterov momentum 0.9; sgd: plain gradient descent.',
      _SCHEDULE, 'schedule', choices=OPTIMIZERS, run='recipe', hparams=True),
    S('weight_decay_rate', 0.0002, 'L2 weight decay on convolution and fully connected weights.', _SCHEDULE,
      'schedule', check=at_least(0), run='recipe', hparams=True),
    S('lrn_rate', 0.1, 'Initial learning rate at batch 128: the default --lr_values are multiples of it.',
      _SCHEDULE, check=positive_number(), hparams=True),
    S('min_lrn_rate', 0.0001, 'Floor of the learning rate.', _SCHEDULE, 'schedule', check=at_least(0),
      run='recipe', hparams=True),
    S('lr_schedule', 'piecewise', schedules.FLAG_HELP, _SCHEDULE, 'schedule', choices=schedules.KINDS,
      run='recipe', old_default='piecewise', hparams=True),
    S('lr_boundaries', (40000, 60000, 80000), 'Comma-separated global steps (epochs with --train_epochs) where '
      'the learning rate changes. ' + schedules.BOUNDARIES_HELP, _SCHEDULE, 'schedule', kind=Tuple[int, ...],
      flag_default=None, flag_kind=str, run='recipe', hparams=True, hparams_default=()),
    S('lr_values', (0.1, 0.01, 0.001, 0.0001), 'Comma-separated learning rates at batch 128, one more than '
      '--lr_boundaries. ' + schedules.RATES_HELP, _SCHEDULE,
      'schedule', kind=Tuple[float, ...], flag_default=None, flag_kind=str, run='recipe', hparams=True,
      hparams_default=()),
    S('lr_warmup', 0, 'Linear warmup over the first K steps (epochs with --train_epochs): the rate of step '
      's < K is multiplied by (s + 1) / K. 0: none.', _SCHEDULE, 'schedule', field='warmup_steps',
      flag_kind=float, check=lambda v: None if math.isfinite(v) and v >= 0  # the flag may count epochs
      else 'a non-negative number' if isinstance(v, float) else '0 or more',
      run='recipe', old_default=0, hparams=True, in_epochs=True, run_fraction='warmup'),
    S('lr_batch_scaling', False, 'The learning rates are for batch 128: run them times --batch_size / 128 (the '
      'linear scaling rule, so that other batches and more towers keep the recipe).', _SCHEDULE, 'schedule',
      flag_default=True, run='recipe', old_default=False),
    S('label_smoothing', 0.0, 'Label smoothing epsilon: training targets are (1 - eps) * one-hot + eps / '
      'classes. 0: none.', _SCHEDULE, 'schedule', check=in_range(0, 1), run='recipe', old_default=0.0,
      hparams=True),
    S('mixup_alpha', 0.0, 'Mixup: each training image and its label are mixed with another of its batch, '
      'weights drawn from Beta(alpha, alpha). 0: none.', _SCHEDULE, 'schedule', check=at_least(0), run='recipe',
      old_default=0.0, hparams=True),
    S('moving_average_decay', 0.999, 'Decay of the exponential moving average of the weights that eval uses; '
      '0 turns it off.', _SCHEDULE, 'schedule', check=in_range(0, 1), run='recipe', hparams=True),
    S('random_seed', None, 'Seed of the graph and the input shuffling; with --num_input_threads=1, CPU runs '
      'repeat step for step.', _SCHEDULE, 'run', kind=Optional[int]),
    # Checkpoints and logging.
    S('save_checkpoints_steps', None, 'Save a checkpoint every N steps (instead of seconds). Default: runs of '
      'at most 10000 steps save every tenth of the run (at least 100 steps apart).', _CKPT, 'checkpoints',
      field='save_steps', kind=Optional[int], check=count()),
    S('save_checkpoints_secs', 120, 'Save a checkpoint every N seconds (runs of more than 10000 steps, unless '
      '--save_checkpoints_steps is given).', _CKPT, 'checkpoints', field='save_secs', kind=Optional[int],
      check=count()),
    S('keep_checkpoint_max', 5, 'How many recent checkpoints to keep in --log_root.', _CKPT, 'checkpoints',
      field='keep_max', check=count()),
    S('log_every_n_steps', 100, 'Log a progress line and write summaries every N steps.', _CKPT, 'checkpoints',
      check=count()),
    S('summary_histograms', False, 'Also write histograms of the weights and of each residual unit\'s output '
      'with the summaries (larger event files).', _CKPT, 'checkpoints'),
    # Eval.
    S('batch_size', 100, section='eval', check=count()),  # --batch_size outside train mode
    S('eval_batch_count', 0, 'Eval batches per checkpoint; 0 scores the whole eval set.', _EVAL, 'eval',
      field='batch_count', check=at_least(0, '0 (whole set) or more')),
    S('eval_once', False, 'Score the latest checkpoint once, then exit (with --validation_size: then score the '
      'best checkpoint on the test records).', _EVAL, 'eval', field='once'),
    S('eval_interval_secs', 10, 'Seconds between looks for a new checkpoint in eval mode.', _EVAL, 'eval',
      field='interval_secs', check=count()),
    S('eval_use_moving_average', True, 'Score the moving-average shadows of the weights when the checkpoint '
      'has them; false scores the raw weights.', _EVAL, 'eval', field='use_moving_average'),
    S('eval_after_training', True, 'Train mode: once training is done, score the last checkpoint on the eval '
      'records (when they are there) and print the held-out precision.', _EVAL, 'eval', field='after_training'),
    S('eval_flip', False, 'Eval: average the logits of each image and of its left-right mirror (test-time '
      'augmentation; twice the work per image).', _EVAL, 'eval', field='flip'),
    # Transfer and export.
    S('checkpoint_path', None, 'Extract and export modes: the checkpoint (a prefix such as runs/x/model.ckpt-300, '
      'or a directory) to use. Default: the latest in --log_root (export: with a validation split the best one '
      'eval kept in --log_root/best, else the latest).', _TRANSFER, 'transfer', kind=Optional[str]),
    S('extract_data_path', None, 'Extract mode: glob pattern(s), comma-separated, of the records to run, once, '
      'in file order.', _TRANSFER, 'transfer', kind=Optional[str]),
    S('features_path', None, 'Extract mode: the .npz file to write the features and labels to.', _TRANSFER,
      'transfer', kind=Optional[str]),
    S('train_features', None, 'Finetune mode: the features .npz to train the new layer on.', _TRANSFER,
      'transfer', kind=Optional[str]),
    S('eval_features', None, 'Finetune mode: the features .npz to score the new layer on.', _TRANSFER,
      'transfer', kind=Optional[str]),
    S('finetune_epochs', 30, 'Finetune mode: passes over the train features.', _TRANSFER, 'transfer',
      check=count()),
    S('finetune_batch_size', 128, 'Finetune mode: features per step.', _TRANSFER, 'transfer', check=count()),
    S('finetune_lrn_rate', 0.1, 'Finetune mode: learning rate of the new layer (momentum 0.9).', _TRANSFER,
      'transfer', check=positive_number()),
    S('init_checkpoint', None, 'Train mode: start a new run from this checkpoint (prefix or directory) of '
      'another run: every layer but the fully connected one, whose classes may differ. Ignored once '
      '--log_root has its own checkpoint.', _TRANSFER, 'transfer', kind=Optional[str]),
    S('freeze_restored_layers', False, 'Train mode with --init_checkpoint: train only the new fully connected '
      'layer; the restored weights stay as they are (batch-norm statistics still adapt).', _TRANSFER,
      'transfer', run='recipe'),
    S('export_dir', None, 'Export mode: the new directory of the SavedModel (uint8 images in, class '
      'probabilities and bottleneck features out) of --checkpoint_path, else with a validation split the best '
      'checkpoint eval kept in --log_root/best, else the latest of --log_root.', _TRANSFER, 'transfer',
      kind=Optional[str]),
    # Devices and precision.
    S('num_gpus', 0, 'GPUs to use: 0 runs on the CPU, 1 on the first GPU, N > 1 trains N data-parallel towers '
      '(each takes --batch_size/N images; eval always uses one device).', _DEVICES, 'devices',
      check=at_least(0, '0 (CPU) or more')),
    S('tower_device', 'gpu', 'With --num_gpus: gpu places tower i on GPU i; cpu on logical CPU device i (the '
      'same towers without GPUs, for testing).', _DEVICES, 'devices', choices=TOWER_DEVICES),
    S('variable_device', 'cpu', 'With --num_gpus > 1: where the shared variables live, the CPU or the first GPU.',
      _DEVICES, 'devices', choices=VARIABLE_DEVICES),
    S('stage_input', False, 'Train mode: copy the next batch onto the training device(s) while the current step '
      'runs (a staging area; each step trains on the batch staged by the step before). Default: on when '
      'training on GPU(s), off on the CPU.', _DEVICES, 'devices', flag_default=None),
    S('compute_dtype', 'float32', 'Precision of the convolutions and batch norm: auto (training in bfloat16 on '
      'CPUs with bfloat16 instructions, AVX512_BF16 or AMX, else float32; eval, extract and export in float32), '
      'float32, or mixed precision: float16 (with dynamic loss scaling; slow on CPUs) or bfloat16. Variables and '
      'checkpoints stay float32 either way.', _DEVICES, 'model', flag_default='auto', choices=COMPUTE_DTYPES,
      flag_choices=('auto',) + COMPUTE_DTYPES, hparams=True),
    # A cluster: cluster.Cluster's fields, from these flags or from TF_CONFIG (cluster.py checks how they fit).
    S('job_name', '', 'This task\'s job in a cluster: ps (serves the variables) or worker (trains; worker 0 '
      'is the chief). Default: one machine, or the task of TF_CONFIG when it is set.', _CLUSTER, 'cluster',
      flag_default=None),
    S('task_index', 0, 'This task\'s index in its job (--ps_hosts or --worker_hosts).', _CLUSTER, 'cluster'),
    S('ps_hosts', (), 'Comma-separated host:port of the parameter servers, the same for every task.',
      _CLUSTER, 'cluster', kind=Tuple[str, ...], flag_default=None, flag_kind=str),
    S('worker_hosts', (), 'Comma-separated host:port of the workers, the same for every task; the first is '
      'the chief.', _CLUSTER, 'cluster', kind=Tuple[str, ...], flag_default=None, flag_kind=str),
    S('sync_replicas', False, 'With a cluster: each update averages one gradient of every worker '
      '(SyncReplicasOptimizer); the global step counts updates. Default: asynchronous, every worker step is '
      'an update.', _CLUSTER, 'cluster'),
    S('cluster_timeout_secs', 120, 'With a cluster: how long a task waits for a ps task or the chief before it '
      'gives up with an error naming the address.', _CLUSTER, 'cluster', field='timeout_secs',
      check=at_least(1, 'a positive number of seconds')),
    # resnet_model.HParams only: the classes come from the dataset.
    S('num_classes', 10, check=count(), hparams=True),
)


# ---------------------------------------------------------------------------- derived

FLAGS = tuple(s for s in SETTINGS if s.group)
FLAG_GROUPS = [(group, [s.name for s in FLAGS if s.group == group])
               for group in dict.fromkeys(s.group for s in FLAGS)]
RUN_SETTINGS = tuple(s for s in SETTINGS if s.run)
# The run settings in steps whose flags count epochs with --train_epochs.
IN_EPOCHS = tuple(s for s in RUN_SETTINGS if s.in_epochs)
MODEL_KEYS = tuple(s.field for s in RUN_SETTINGS if s.run == 'model')
SPLIT_KEYS = tuple(s.field for s in RUN_SETTINGS if s.run == 'split')
TRAINING_KEYS = tuple(s.field for s in RUN_SETTINGS if s.run == 'recipe')
KEYS = MODEL_KEYS + SPLIT_KEYS + TRAINING_KEYS
# The run settings a process of the run may not give another value to.
FIXED_KEYS = MODEL_KEYS + SPLIT_KEYS + tuple(s.field for s in RUN_SETTINGS
                                             if s.run == 'recipe' and not s.may_change_on_resume)
# The values of the run settings added since the first config.json, which older runs trained with.
OLD_DEFAULTS = {s.field: s.old_default for s in RUN_SETTINGS if s.old_default is not _SAME}
# Where each run setting (a config.json key) lives in a RunConfig.
SETTING_SECTIONS = {s.field: s.section for s in RUN_SETTINGS}
_BY_KEY = {s.field: s for s in RUN_SETTINGS}
_BY_FLAG = {s.name: s for s in FLAGS}

# resnet_model.HParams: the seed's nine fields, in its order, then the others with their defaults,
# in main's order at its release (3b63bf2), which positional calls rely on; a field added since
# comes after them, in declaration order.
HPARAMS_REQUIRED = ('batch_size', 'num_classes', 'min_lrn_rate', 'lrn_rate', 'num_residual_units',
                    'use_bottleneck', 'weight_decay_rate', 'relu_leakiness', 'optimizer')
_HPARAMS_RELEASED = HPARAMS_REQUIRED + (
    'width', 'momentum', 'bn_decay', 'bn_epsilon', 'moving_average_decay', 'data_format', 'compute_dtype',
    'lr_boundaries', 'lr_values', 'lr_schedule', 'warmup_steps', 'label_smoothing', 'mixup_alpha')
_HPARAMS = {s.field: s for s in SETTINGS if s.hparams}
HPARAMS_FIELDS = _HPARAMS_RELEASED + tuple(name for name in _HPARAMS if name not in _HPARAMS_RELEASED)
HPARAMS_DEFAULTS = {name: _HPARAMS[name].hparams_default for name in HPARAMS_FIELDS if name not in HPARAMS_REQUIRED}


def flag_of_key(key):
    """The flag of a run setting (a config.json key): 'lr_warmup' for 'warmup_steps'."""
    return _BY_KEY[key].name


def setting_of_key(key):
    """The Setting of a run setting (a config.json key)."""
    return _BY_KEY[key]


def keys_of_flag(name):
    """The run settings (config.json keys) a flag sets: ('warmup_steps',) for lr_warmup,
    ('train_steps',) for train_epochs, () for a flag of no run setting."""
    setting = _BY_FLAG.get(name)
    if setting is None:
        return ()
    return tuple(key for key in (setting.field if setting.run else '', setting.sets) if key)


def of_section(name):
    """The settings whose field is in RunConfig section `name` ('run': RunConfig's own)."""
    return tuple(s for s in SETTINGS if s.section == name)


def section_values(name, flag_values):
    """{field: value} of a section's settings that have a flag of their own, from the flags'
    values; a flag left at None gives the field's default where the field may not be None."""
    out = {}
    for s in of_section(name):
        if not s.group:
            continue
        value = flag_values[s.name]
        out[s.field] = s.default if value is None and not _optional(s.kind) else value
    return out


def define_flags(flags, module_name=None):
    """Defines the absl flag of every setting that has one; `flags` is absl.flags. absl lists a
    flag in --helpfull under `module_name` (default: this module's), and the main module first."""
    for s in FLAGS:
        kind = s.flag_kind or s.kind
        kind = _inner(kind) if _optional(kind) else kind
        args = (s.name, s.flag_default)
        if s.choices or s.flag_choices:
            flags.DEFINE_enum(*args, list(s.flag_choices or s.allowed()), s.help_text(), module_name=module_name)
            continue
        define = {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer, float: flags.DEFINE_float}
        define.get(kind, flags.DEFINE_string)(*args, s.help_text(), module_name=module_name)


def section(name):
    """Class decorator: a frozen dataclass whose fields are the settings of RunConfig section
    `name` (in declaration order), then the fields the class declares itself."""
    def make(cls):
        own = dict(cls.__dict__.get('__annotations__', {}))
        annotations = {}
        for s in of_section(name):
            annotations[s.field] = s.kind
            setattr(cls, s.field, s.default)
        annotations.update(own)
        cls.__annotations__ = annotations
        return dataclasses.dataclass(frozen=True)(cls)
    return make


class BadValue(errors.FlagError):
    """A value a setting does not take: `expected` says what it takes (exit status 2, as any
    flag error; run_files reports it as a value of config.json)."""

    def __init__(self, setting, value, expected):
        super().__init__('--%s=%s: expected %s' % (setting.name, shown(value), expected))
        self.setting, self.value, self.expected = setting, value, expected


def one_of(choices):
    """'one of a, b, c', with '' shown as "'' (none)"."""
    return 'one of %s' % ', '.join(choice or "'' (none)" for choice in choices)


def shown(value):
    """A value as a message shows it: '0.1' for 0.1, '40000,60000' for a list."""
    if isinstance(value, (list, tuple)):
        return ','.join(map(str, value))
    if isinstance(value, float):
        return '%g' % value
    return str(value)


def checked(setting, value):
    """`value` of the setting's kind (lists as tuples, numbers as Python's int or float), if
    it is one and passes the setting's check; BadValue otherwise."""
    try:
        value = _coerced(value, setting.kind)
    except ValueError:
        raise BadValue(setting, value, _expected_kind(setting, value)) from None
    choices = setting.allowed()
    if choices and value not in choices:
        raise BadValue(setting, value, one_of(choices))
    problem = setting.check(value) if setting.check and value is not None else None
    if problem:
        raise BadValue(setting, value, problem)
    return value


def check_fields(section_object, name):
    """Checks (and normalizes: lists to tuples, ints to floats) the fields of a RunConfig section
    that are settings; FlagError naming the flag, carrying the field (`setting`), the section
    (`section`) and `expected`."""
    for s in of_section(name):
        try:
            object.__setattr__(section_object, s.field, checked(s, getattr(section_object, s.field)))
        except BadValue as e:
            error = errors.FlagError(str(e))
            error.setting, error.section, error.expected = s.field, name, e.expected
            raise error from None


def check_flag_values(flag_values):
    """FlagError for a flag whose value is no field's as it stands (a flag of no section, or one
    in other units than its field, such as --lr_warmup in epochs)."""
    for s in FLAGS:
        value = flag_values.get(s.name)
        if s.check and value is not None and (s.section is None or s.flag_kind is float):
            problem = s.check(value)
            if problem:
                raise errors.FlagError('--%s=%s: expected %s' % (s.name, shown(value), problem))


def check_hparams(values):
    """The HParams field values `values`, checked by their settings and normalized; ValueError
    'HParams.<field> must be <expected>; got <value>' for the first that is bad."""
    out = dict(values)
    for name, value in values.items():
        try:
            out[name] = checked(_HPARAMS[name], value)
        except BadValue as e:
            raise ValueError('HParams.%s must be %s; got %r' % (name, e.expected, value)) from None
    return out


def _optional(kind):
    return typing.get_origin(kind) is typing.Union and type(None) in typing.get_args(kind)


def _inner(kind):
    return [k for k in typing.get_args(kind) if k is not type(None)][0]


def _coerced(value, kind):
    """`value` as `kind` (int, float, bool, str, Optional[...], Tuple[x, ...]); ValueError if it is not one.
    numpy's integers, floats and bools count as Python's."""
    if _optional(kind):
        return None if value is None else _coerced(value, _inner(kind))
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError
        return tuple(_coerced(v, typing.get_args(kind)[0]) for v in value)
    is_bool = isinstance(value, bool) or (type(value).__module__ == 'numpy' and 'bool' in type(value).__name__)
    if kind is bool or is_bool:
        if kind is bool and is_bool:
            return bool(value)
        raise ValueError
    if kind is int and isinstance(value, numbers.Integral) and -2 ** 63 <= value < 2 ** 63:
        return int(value)  # TensorFlow's int64 (a JSON integer has no bound)
    if kind is float and isinstance(value, numbers.Real) and math.isfinite(value):
        return float(value)
    if kind is str and isinstance(value, str):
        return value
    raise ValueError


_KIND_PLURALS = {int: 'integers below 2^63', float: 'finite numbers', str: 'strings'}
_KIND_NAMES = {int: 'an integer below 2^63', float: 'a finite number', bool: 'true or false', str: 'a string'}


def _expected_kind(setting, value):
    """What a value of the wrong kind should have been: for a list, what its items should be."""
    if setting.choices:
        return one_of(setting.allowed())
    kind = _inner(setting.kind) if _optional(setting.kind) else setting.kind
    if typing.get_origin(kind) is tuple:
        return 'a list of %s' % _KIND_PLURALS[typing.get_args(kind)[0]]
    return _KIND_NAMES[kind]
