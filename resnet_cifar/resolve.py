"""From the command line's values, and the run's saved settings, to one RunConfig.

`run_config(values, given)` takes the flag values as a plain dict and the names of
the flags the user gave; it reads no flags itself. A new run takes its settings
from the flags and their defaults. Eval, extract and a trainer resuming a run
(its log_root has a checkpoint) take each run setting their flags leave out
from the run's config.json (run_files.py); a model flag that differs from the
run's is a run_files.SettingsError. Defaults that depend on the dataset, the mode
or the devices are decided here.
"""
import dataclasses
import math
import os

from resnet_cifar import best
from resnet_cifar import checkpoints
from resnet_cifar import cluster as cluster_lib
from resnet_cifar import config as config_lib
from resnet_cifar import cpu
from resnet_cifar import datasets
from resnet_cifar import guards
from resnet_cifar import presets
from resnet_cifar import run_files
from resnet_cifar import schedules
from resnet_cifar import settings as settings_lib
from resnet_cifar.errors import DataError, FlagError

# Runs of at most this many steps save a checkpoint every tenth of the run (at least every
# SHORT_RUN_MIN_SAVE_STEPS steps) unless told otherwise, so that their eval curves have points.
SHORT_RUN_STEPS = 10000
SHORT_RUN_MIN_SAVE_STEPS = 100

# The settings each mode takes from the run when its flags leave them out.
_FROM_THE_RUN = {
    'train': settings_lib.KEYS,
    'eval': settings_lib.MODEL_KEYS + settings_lib.SPLIT_KEYS + ('train_steps',),
    # Extract's --dataset and --label_mode describe the records, not the network.
    'extract': tuple(key for key in settings_lib.MODEL_KEYS if key not in ('dataset', 'label_mode')),
    'export': settings_lib.MODEL_KEYS,
}


def run_config(values, given, environ=None):
    """The RunConfig of the command line.

    Args:
      values: {flag name: value} of every flag (absl's FLAGS.flag_values_dict()).
      given: the names of the flags given on the command line.
      environ: the environment, for TF_CONFIG when no cluster flag is given; default os.environ.
    Raises:
      errors.FlagError: naming the flag and what was expected.
      run_files.SettingsError: a model flag that differs from the run's, or a
        settings file that cannot be read.
    """
    settings_lib.check_flag_values(values)
    cluster = cluster_lib.from_values(values, given, os.environ if environ is None else environ)
    _check_lengths(values, given)
    log_root = real_path(values['log_root'] or os.path.join('runs', values['dataset']))
    values = dict(values, **{name: real_path(values[name]) for name in ('checkpoint_path', 'init_checkpoint')
                             if values[name]})
    check_glob_characters(values, log_root, cluster.job_name)
    settings, changes, taken = resolve_settings(values, given, log_root)
    sections = {name: dict(settings_lib.section_values(name, values), **_section(settings, name))
                for name in ('data', 'model', 'schedule', 'checkpoints', 'eval', 'devices', 'transfer')}
    sections['data']['train_data_path'] = train_data_path(values, given, log_root, settings)
    sections['model']['data_format'] = data_format(values)
    sections['model']['compute_dtype'], dtype_choice = compute_dtype(values)
    sections['checkpoints'] = _checkpoints(values, given, settings['train_steps'], sections['checkpoints'])
    sections['eval']['after_training'] = after_training(values, given)
    if values['batch_size'] is not None and values['mode'] != 'train':  # else Eval's own default
        sections['eval']['batch_size'] = values['batch_size']
    sections['devices']['stage_input'] = stage_input(values)
    kinds = {field.name: field.type for field in dataclasses.fields(config_lib.RunConfig)}
    config = config_lib.RunConfig(
        **dict(settings_lib.section_values('run', values), log_root=log_root),
        **{name: kinds[name](**fields) for name, fields in sections.items()},
        cluster=cluster, taken_from_run=tuple(taken), changes_to_run=tuple(changes),
        compute_dtype_choice=dtype_choice)
    check_gpus(config)
    if config.cluster.job_name != 'ps':  # a parameter server writes nothing
        check_outputs(config)
    check_validation_size(config)
    return config


# What TensorFlow's file matching reads as a pattern: the Saver's rotation and its checkpoint
# lookups match the prefix unescaped, so a run named with one of these reaches other runs' files.
GLOB_CHARACTERS = '*?[\\'


def real_path(path):
    """The real directory or file `path` names now, symlinks resolved, absolute: resolved once
    at the start, so that a link retargeted later never sends a write into another run."""
    return os.path.realpath(os.path.expanduser(path))


def check_glob_characters(values, log_root, job_name):
    """FlagError for a run directory or checkpoint whose real path holds a glob character
    (a parameter server reads and writes no file)."""
    if job_name == 'ps':
        return
    paths = [('log_root', log_root)]
    if values['mode'] in ('extract', 'export') and values['checkpoint_path']:
        paths = []  # the run directory is --checkpoint_path's
    paths += [(name, values[name]) for name in ('checkpoint_path', 'init_checkpoint') if values[name]]
    for name, path in paths:
        found = [c for c in GLOB_CHARACTERS if c in path]
        if found:
            raise FlagError('--%s=%s: its real path holds %r, which TensorFlow reads as a wildcard when it '
                            'looks for and rotates checkpoints (it would reach other runs\' files); rename '
                            'the directory or give another --%s' % (name, path, found[0], name))


def _section(settings, section):
    """{field: value} of the run settings in `settings` that live in RunConfig section `section`."""
    return {key: value for key, value in settings.items() if settings_lib.SETTING_SECTIONS[key] == section}


def _checkpoints(values, given, train_steps, fields):
    """The Checkpoints fields of the flags; a short run saves every tenth of its steps unless a save
    flag is given."""
    if (fields['save_steps'] is None and 'save_checkpoints_secs' not in given
            and train_steps <= SHORT_RUN_STEPS):
        fields = dict(fields, save_steps=max(SHORT_RUN_MIN_SAVE_STEPS, train_steps // 10))
    return fields


def train_data_path(values, given, log_root, settings):
    """--train_data_path; for eval of a run with a validation split, the run's unless given."""
    if values['mode'] == 'eval' and settings['validation_size'] and 'train_data_path' not in given:
        return run_files.train_data_path(log_root) or ''
    return values['train_data_path'] or ''


def check_validation_size(config):
    """FlagError unless --validation_size leaves training records (training and eval read the split)."""
    data = config.data
    if not data.validation_size or config.mode not in ('train', 'eval') or config.cluster.job_name == 'ps':
        return
    total = datasets.count_records(data.dataset, data.train_data_path)
    if data.validation_size >= total:
        raise FlagError('--validation_size=%d: expected fewer than the %d records of %s, to leave some to train on'
                        % (data.validation_size, total, data.train_data_path))


def after_training(values, given):
    """--eval_after_training, except for a run on other training data than the dataset's own with
    no --eval_data_path: the dataset's default test set would say nothing about it."""
    return values['eval_after_training'] and ('eval_data_path' in given or 'train_data_path' not in given)


def _check_lengths(values, given):
    """FlagError for a run length given twice."""
    if 'train_steps' in given and 'train_epochs' in given:
        raise FlagError('--train_epochs=%g and --train_steps=%d: give one, the length of the run in epochs '
                        'or in steps' % (values['train_epochs'], values['train_steps']))


def flag_settings(values, dataset=None, given=(), run=None):
    """The run settings (settings.KEYS) as the flags, the preset and the defaults give them,
    in steps and in the rates the steps use (a new run).

    given: the flags given (they win over the preset's values). run: {key: value} of the
    run's own batch_size and validation_size when resuming, which epochs and the batch
    scaling of the learning rates are counted with.
    """
    dataset = dataset or values['dataset']
    values, preset = presets.apply(values, given)
    defaults = datasets.dataset_info(dataset).run_defaults  # train_steps, num_residual_units
    run = run or {}
    given_batch = values['batch_size'] if values['mode'] == 'train' else None
    batch_size = run.get('batch_size', given_batch if given_batch is not None else settings_lib.BASE_BATCH_SIZE)
    per_epoch = steps_per_epoch(values, dataset, batch_size,
                                run.get('validation_size', values['validation_size']))
    if per_epoch is not None:
        train_steps = max(1, math.ceil(values['train_epochs'] * per_epoch - 1e-9))
    else:
        train_steps = values['train_steps'] if values['train_steps'] is not None else defaults['train_steps']
    in_steps = (lambda x: int(round(x * per_epoch))) if per_epoch is not None else (lambda x: int(round(x)))
    kind = values['lr_schedule']
    boundaries = schedule_boundaries(values, kind, train_steps, preset, in_steps)
    scale = batch_size / settings_lib.BASE_BATCH_SIZE if values['lr_batch_scaling'] else 1.0
    if values['lr_values'] is not None:
        rates = parse_list('lr_values', values['lr_values'], float)
    elif preset is not None and preset.rates and 'lr_boundaries' not in given:
        rates = [values['lrn_rate'] * factor for factor in preset.rates]
    else:
        rates = schedules.default_rates(kind, values['lrn_rate'], len(boundaries))
    settings = {s.field: values[s.name] for s in settings_lib.RUN_SETTINGS}
    settings.update(in_run_steps(values, given, preset, train_steps, in_steps))
    settings.update({
        'dataset': dataset,
        'num_residual_units': (values['num_residual_units'] if values['num_residual_units'] is not None
                               else defaults['num_residual_units']),
        'batch_size': batch_size,
        'lr_boundaries': boundaries,
        'lr_values': [_clean(rate * scale) for rate in rates],
        'lr_batch_scaling': bool(values['lr_batch_scaling']),
        'preset': values['preset'] or '',
        'train_steps': train_steps,
    })
    return settings


def in_run_steps(values, given, preset, train_steps, in_steps):
    """{field: steps} of the settings counted in steps of the run (settings.IN_EPOCHS): the
    flag's value in steps (in_steps converts epochs), or when the flag is not given, the
    preset's fraction of the run (its setting's run_fraction)."""
    out = {}
    for s in settings_lib.IN_EPOCHS:
        fraction = None
        if preset is not None and s.run_fraction and s.name not in given:
            fraction = getattr(preset, s.run_fraction)
        out[s.field] = in_steps(values[s.name]) if fraction is None else int(round(fraction * train_steps))
    return out


def _clean(rate):
    """A rate without the rounding noise of its product (0.02, not 0.020000000000000004)."""
    return float('%.12g' % rate)


def steps_per_epoch(values, dataset, batch_size, validation_size):
    """Steps of one pass over the training records (those not held out for validation) when the
    run's length is in epochs (--train_epochs, or the preset's), else None.

    Only training needs the records: another mode without them ignores the epochs.
    """
    if values['train_epochs'] is None:
        return None
    path = values['train_data_path'] or datasets.dataset_info(dataset).default_train_path
    try:
        records = datasets.count_records(dataset, path) - validation_size
    except DataError:
        if values['mode'] == 'train':
            raise
        return None
    return max(records, 1) / batch_size


def schedule_boundaries(values, kind, train_steps, preset, in_steps):
    """The boundaries of the schedule (schedules.py says what they mean for its kind):
    --lr_boundaries (in epochs when the run's length is), else the preset's fractions of the
    run, else the kind's default (50%, 75% and 100% of the run for piecewise, its end for cosine)."""
    if values['lr_boundaries'] is not None:
        if values['train_epochs'] is None:
            return parse_list('lr_boundaries', values['lr_boundaries'], int)
        epochs = parse_list('lr_boundaries', values['lr_boundaries'], float)
        if not all(math.isfinite(e) for e in epochs):
            raise FlagError('--lr_boundaries=%s: expected finite numbers of epochs' % values['lr_boundaries'])
        return [in_steps(e) for e in epochs]
    if preset is not None and preset.boundaries:
        return [max(1, int(round(f * train_steps))) for f in preset.boundaries]
    return schedules.default_boundaries(kind, train_steps)


def parse_list(name, text, convert):
    """A comma-separated flag value as a list; FlagError naming the flag when malformed."""
    try:
        return [convert(item) for item in text.split(',') if item.strip()]
    except ValueError:
        raise FlagError('--%s=%s: expected comma-separated numbers' % (name, text)) from None


def given_keys(given):
    """The settings (settings.KEYS) the given flags set (settings.keys_of_flag: a flag may set
    a field of another name, or another setting, as --train_epochs sets train_steps)."""
    return {key for name in given for key in settings_lib.keys_of_flag(name)}


def resolve_settings(values, given, log_root):
    """(settings {key: value} of settings.KEYS, [changes to the run's recipe, as text],
    [the keys taken from the run])."""
    source_dir = run_dir_of(values, log_root)
    saved, source = saved_settings(values['mode'], source_dir)
    keys = [key for key in _FROM_THE_RUN[values['mode']] if key in saved] if saved else ()
    chosen_keys = given_keys(given)
    dataset = saved['dataset'] if 'dataset' in keys and 'dataset' not in given else values['dataset']
    run = {key: saved[key] for key in ('batch_size', 'validation_size') if key in keys and key not in chosen_keys}
    settings = flag_settings(values, dataset, given, run)
    chosen = {key: settings[key] for key in keys if key in chosen_keys}
    if saved:
        run_files.differences(source_dir, saved, source, chosen)
        settings.update({key: saved[key] for key in keys if key not in chosen})
    if 'lr_boundaries' in keys and 'lr_values' in keys:
        settings['lr_boundaries'], settings['lr_values'] = resumed_schedule(values, given, saved, settings)
    changes = ['%s instead of the run\'s %s' % (run_files.as_flag(key, settings[key]),
                                                run_files.as_flag(key, saved[key]))
               for key in settings_lib.TRAINING_KEYS
               if key in keys and key != 'train_steps' and settings[key] != saved[key]]
    return settings, changes, [key for key in keys if key not in chosen]


def saved_settings(mode, source_dir):
    """(settings, their file) of the run in source_dir, or (None, None): a mode that takes none,
    or a run without a checkpoint yet (in it, or kept by eval in best/) (the settings of a new run
    come from its first trainer). A trainer without a checkpoint to resume from starts a new run:
    its settings come from the flags alone, never from an old config.json."""
    if mode not in _FROM_THE_RUN or checkpoints.latest(source_dir) is None and (
            mode == 'train' or best.path(source_dir) is None):
        return None, None
    return run_files.read(source_dir)


def run_dir_of(values, log_root):
    """The run directory: --log_root, or in extract mode --checkpoint_path's (a directory or a prefix)."""
    path = (values['checkpoint_path'] if values['mode'] in ('extract', 'export') else None) or log_root
    return path if os.path.isdir(path) or path == log_root else os.path.dirname(path)


def resumed_schedule(values, given, saved, settings):
    """(boundaries, rates) of a resumed run: the run's, with what the flags change.

    settings: the resumed run's settings, the run's merged with the flags given.
    --train_steps (or --train_epochs) moves only the end: the run's boundaries stay
    unless --lr_boundaries is given or --lr_schedule changes the kind (then the new
    kind's default boundaries over the resumed run), so a cosine keeps its end and an
    extended run goes on at the rate it ended at. --lr_values
    replaces the rates; --lrn_rate alone scales the run's rates so that the first is
    --lrn_rate (scaled with the batch like the run's). New boundaries of another
    count than the run's get the default rates from the run's first.
    """
    if 'lr_boundaries' in given:
        boundaries = settings['lr_boundaries']
    elif settings['lr_schedule'] != saved['lr_schedule']:  # the new kind's default, over the run
        boundaries = schedule_boundaries(dict(values, lr_boundaries=None), settings['lr_schedule'],
                                         settings['train_steps'], None, int)
    else:
        boundaries = saved['lr_boundaries']
    if 'lr_values' in given:
        return boundaries, settings['lr_values']
    rates = saved['lr_values']
    batch_scale = settings['batch_size'] / settings_lib.BASE_BATCH_SIZE if settings['lr_batch_scaling'] else 1.0
    scale = values['lrn_rate'] * batch_scale / rates[0] if 'lrn_rate' in given else 1.0
    if len(rates) != len(boundaries) + 1:
        return boundaries, [_clean(rate) for rate in schedules.default_rates(settings['lr_schedule'],
                                                                             rates[0] * scale, len(boundaries))]
    return boundaries, rates if scale == 1.0 else [_clean(rate * scale) for rate in rates]


def default_stage_input(num_gpus, tower_device):
    """--stage_input when not given: on for GPU training, off on the CPU (no copy to hide)."""
    return num_gpus >= 1 and tower_device == 'gpu'


def stage_input(values):
    """--stage_input, or its default for the devices."""
    if values['stage_input'] is None:
        return default_stage_input(values['num_gpus'], values['tower_device'])
    return bool(values['stage_input'])


def compute_dtype(values):
    """(--compute_dtype, '') as given, or for auto (dtype, why auto picked it): bfloat16 for
    training on a CPU with bfloat16 instructions and oneDNN on, else float32 (cpu.py)."""
    if values['compute_dtype'] != 'auto':
        return values['compute_dtype'], ''
    gpu_training = values['num_gpus'] >= 1 and values['tower_device'] == 'gpu'
    return cpu.auto_compute_dtype(values['mode'], gpu_training, cpu.cpu_flags(), cpu.onednn_on())


def data_format(values):
    """--data_format, or by default NCHW when training on GPUs, NHWC on the CPU."""
    if values['data_format']:
        return values['data_format']
    return 'NCHW' if values['num_gpus'] >= 1 and values['tower_device'] == 'gpu' else 'NHWC'


def check_gpus(config):
    """FlagError when --num_gpus asks for more GPUs than TensorFlow sees (imports TensorFlow)."""
    if config.devices.num_gpus > 0 and config.devices.tower_device == 'gpu':
        from resnet_cifar import quiet
        visible = len(quiet.import_tensorflow().config.list_physical_devices('GPU'))
        if config.devices.num_gpus > visible:
            raise FlagError('--num_gpus=%d: TensorFlow sees %d GPU(s) on this machine'
                            % (config.devices.num_gpus, visible))


def check_outputs(config):
    """FlagError naming the flag of an output directory that cannot be created or written."""
    written = {'train': ('log_root', 'train_dir'), 'eval': ('eval_dir',), 'finetune': ('log_root',),
               'extract': ('features_path',), 'export': ('export_dir',)}.get(config.mode, ())
    outputs = [('log_root', config.log_root), ('train_dir', config.train_dir), ('eval_dir', config.eval_dir)]
    if config.mode == 'extract' and config.transfer.features_path:
        outputs.append(('features_path', os.path.dirname(os.path.abspath(config.transfer.features_path))))
    if config.mode == 'export':
        problem = guards.new_dir_problem(config.transfer.export_dir)
        if problem:
            raise FlagError('--export_dir=%s: %s' % (config.transfer.export_dir, problem))
        outputs.append(('export_dir', os.path.dirname(os.path.abspath(config.transfer.export_dir))))
    for name, path in outputs:
        problem = guards.output_dir_problem(path, writable=name in written)
        if problem:
            raise FlagError('--%s=%s: %s' % (name, path, problem))
