"""The settings of a run, fixed when it starts, in <log_root>/config.json.

Every process of a run must agree on them: the trainer and its resumptions,
eval beside it, extract after it. The first trainer writes them; every later
trainer of the run writes them again with what it changed.

- MODEL_KEYS decide the network and what its outputs mean. A process whose
  flags give another value than the run's must stop (`differences`).
- TRAINING_KEYS are the run's recipe. A resumed trainer keeps the run's unless
  its flags give a new value, which then holds from the step it resumes at.

The file is a flat JSON object of those keys, plus `written_by` and `time`.
Runs made before this file existed have their settings in the record that
each trainer wrote, <log_root>/train/config.json (`hparams` and `config`);
`read` falls back to that.
"""
import json
import os
import time

import guards

FILE_NAME = 'config.json'
MODEL_KEYS = ('dataset', 'label_mode', 'num_residual_units', 'use_bottleneck', 'width', 'relu_leakiness')
TRAINING_KEYS = ('batch_size', 'optimizer', 'weight_decay_rate', 'moving_average_decay',
                 'lr_boundaries', 'lr_values', 'min_lrn_rate', 'train_steps', 'freeze_restored_layers')
KEYS = MODEL_KEYS + TRAINING_KEYS
_LEGACY_RECORD = os.path.join('train', 'config.json')


class SettingsError(RuntimeError):
    """A settings file that cannot be read, or flags that differ from the run's; one line."""


def path(log_root):
    return os.path.join(log_root, FILE_NAME)


def read(log_root):
    """The run's settings {key: value} (of KEYS), or None when the run has none yet.

    A file of an older version may lack keys added since: those are left out, and
    the flags give them. Raises SettingsError naming the file when it exists but
    is not a settings file.
    """
    settings = _load(path(log_root))
    if settings is not None:
        if 'dataset' not in settings:
            raise SettingsError('%s is not a run settings file: it has no "dataset"' % path(log_root))
        return {key: settings[key] for key in KEYS if key in settings}
    return _legacy(log_root)


def _load(file_path):
    try:
        with open(file_path) as f:
            settings = json.load(f)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise SettingsError('cannot read %s: %s' % (file_path, e.strerror or e)) from None
    except ValueError as e:
        raise SettingsError('%s is not valid JSON (%s): restore it, or delete it to take the settings '
                            'from the flags' % (file_path, e)) from None
    if not isinstance(settings, dict):
        raise SettingsError('%s is not a run settings file: expected a JSON object' % file_path)
    return settings


def _legacy(log_root):
    """The settings in the record of a trainer older than this file, or None."""
    try:
        record = _load(os.path.join(log_root, _LEGACY_RECORD))
    except SettingsError:
        return None  # a record is not the run's settings: without it the flags decide
    if record is None:
        return None
    known = dict(record.get('config', {}), **record.get('hparams', {}))
    if 'dataset' not in known:
        return None
    return {key: known[key] for key in KEYS if key in known}


def write(log_root, settings):
    """Writes the settings (a dict holding every key of KEYS) in one step."""
    record = {key: settings[key] for key in KEYS}
    record.update(written_by='resnet_main.py --mode=train', time=time.strftime('%Y-%m-%d %H:%M:%S'))
    guards.replace_file(path(log_root), json.dumps(record, indent=2, sort_keys=True) + '\n')


def as_flag(key, value):
    """How a setting is given on the command line: '--width=2', '--nouse_bottleneck', '--lr_values=0.1,0.01'."""
    if isinstance(value, bool):
        return '--%s%s' % ('' if value else 'no', key)
    if isinstance(value, (list, tuple)):
        value = ','.join('%g' % v if isinstance(v, float) else str(v) for v in value)
    elif isinstance(value, float):
        value = '%g' % value
    return '--%s=%s' % (key, value)


def differences(log_root, saved, given):
    """Raises SettingsError naming each model flag in `given` whose value is not the run's.

    Args:
      log_root: the run directory, for the message.
      saved: the run's settings (read()).
      given: {key: value} of the model settings the user gave as flags.
    """
    differ = [key for key in MODEL_KEYS if key in given and key in saved and given[key] != saved[key]]
    if differ:
        raise SettingsError('%s: the run in %s has %s (%s); leave the model flags out to use the run\'s'
                            % (' '.join(as_flag(k, given[k]) for k in differ), log_root,
                               ' '.join(as_flag(k, saved[k]) for k in differ), path(log_root)))
