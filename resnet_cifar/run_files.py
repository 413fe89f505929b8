"""A run directory's own files: the run's settings in <log_root>/config.json, and records.

Every process of a run must agree on its settings: the trainer and its
resumptions, eval beside it, extract after it. The first trainer writes
config.json (the serialized RunConfig, `RunConfig.to_dict()` plus a `written`
note); every later trainer of the run writes it again with what it changed.

- settings.MODEL_KEYS decide the network and what its outputs mean. A process
  whose flags give another value than the run's must stop (`differences`).
- settings.SPLIT_KEYS say which records the run trains on; like the model keys,
  a process of the run may not change them.
- settings.TRAINING_KEYS are the run's recipe. A resumed trainer keeps the run's unless
  its flags give a new value, which then holds from the step it resumes at.

`read` gives those settings as a flat {key: value}, also from the files of older
versions: a flat object of the keys, or, before that file existed, the record
each trainer wrote in <log_root>/train/config.json. No TensorFlow here.
"""
import json
import os
import re
import time
import typing
import uuid

from resnet_cifar import config as config_lib
from resnet_cifar import datasets
from resnet_cifar import guards
from resnet_cifar import settings as settings_lib
from resnet_cifar.errors import FlagError, RunError

FILE_NAME = 'config.json'
# The trainer's lock (guards.RunLock): one trainer per run.
LOCK_FILE = 'trainer.lock'
# Eval's lock: one eval per run, since it keeps the run's best/ and eval results.
EVAL_LOCK_FILE = 'eval.lock'
_LEGACY_RECORD = os.path.join('train', 'config.json')
# The key of config.json that records which training records a run holds out (datasets.split_record).
SPLIT_RECORD = 'validation_split'


class SettingsError(RunError):
    """A settings file that cannot be read, or flags that differ from the run's; one line."""


def path(log_root):
    return os.path.join(log_root, FILE_NAME)


def read(log_root):
    """(settings {key: value} of settings.KEYS, the file they come from), or (None, None) when the
    run has none yet.

    A file of an older version may lack keys added since: those are left out, and
    the flags give them; except the keys of settings.OLD_DEFAULTS (each setting's old_default),
    which take the values such a run trained with (a piecewise schedule, no warmup, no
    batch scaling, no regularizers, no preset, no validation split). Raises SettingsError
    naming the file when it exists but is not a settings file, or holds a value of the
    wrong kind.
    """
    settings_path = path(log_root)
    settings = _load(settings_path)
    if settings is None:
        settings_path = os.path.join(log_root, _LEGACY_RECORD)
        settings = _legacy(settings_path)
        if settings is None:
            return None, None
    settings = _flat(settings_path, settings)
    if 'dataset' not in settings:
        raise SettingsError('%s is not a run settings file: it has no "dataset"' % settings_path)
    settings = {key: settings[key] for key in settings_lib.KEYS if key in settings}
    _check_kinds(settings_path, settings)
    _check_limits(settings_path, settings)
    return dict(settings_lib.OLD_DEFAULTS, **settings), settings_path


def load_config(log_root):
    """The RunConfig saved in log_root's config.json; SettingsError when there is none or it is bad."""
    settings_path = path(log_root)
    saved = _load(settings_path)
    if saved is None or 'data' not in saved:
        raise SettingsError('%s: no RunConfig saved there (written by this version\'s trainer)' % settings_path)
    _flat(settings_path, saved)  # its sections are objects
    for note in ('written', RUN_ID, RUN_ID_FROM_STEP, SPLIT_RECORD):
        saved.pop(note, None)
    try:
        return config_lib.RunConfig.from_dict(saved)
    except FlagError as e:
        raise _limit_error(settings_path, e, saved) from None
    except (TypeError, ValueError) as e:
        raise SettingsError('%s: %s' % (settings_path, e)) from None


def validation_split(log_root):
    """The record of the run's validation split (datasets.split_record) in its config.json, or
    None: no file, a run without a split, or one written before splits were recorded. SettingsError,
    naming the file and the part, for a record whose values are not of the kinds split_record writes."""
    saved = _load(path(log_root))
    record = (saved or {}).get(SPLIT_RECORD)
    if record is None:
        return None
    problem = _split_record_problem(record)
    if problem:
        raise SettingsError('%s: "%s" is not a record of the run\'s validation split (%s); restore it, or '
                            'delete the key to record the split again' % (path(log_root), SPLIT_RECORD, problem))
    return record


def _split_record_problem(record):
    """What is wrong with a record of a validation split read from a file, or None."""
    if not isinstance(record, dict):
        return 'expected an object'
    if not (_is_a(record.get('validation_size'), int) and record['validation_size'] >= 0):
        return '"validation_size" is %s; expected a number of records' % _shown(record.get('validation_size'))
    shapes = {'files': (str, int), 'held_out': (str, int, int, str)}
    for key, kinds in shapes.items():
        entries = record.get(key)
        if not isinstance(entries, list):
            return '"%s" is %s; expected a list' % (key, _shown(entries))
        for entry in entries:
            if not (isinstance(entry, list) and len(entry) == len(kinds)
                    and all(_is_a(value, kind) and (kind is str or value >= 0)
                            for value, kind in zip(entry, kinds))):
                return '"%s" holds %s; expected [%s]' % (key, _shown(entry), 'file, record count' if key == 'files'
                                                         else 'file, first record, end record, sha256')
    return None


def check_pinned_split(config, checked):
    """DataError naming the training file that would move the validation split recorded in the
    run's config.json (a file grown, shrunk, replaced, reordered, added or gone: the records held
    out would not be those the run was validated on); SettingsError for a damaged record. Nothing
    to check for a run without a split, or without the record (written by an older version).

    checked: [(training file, number of records)] of datasets.check_files, in the flags' order."""
    if not config.data.validation_size:
        return
    record = validation_split(config.log_root)
    error = record and datasets.split_moved_error(config.data.dataset, checked, record, path(config.log_root))
    if error:
        raise error


def train_data_path(log_root):
    """The training records the run's config.json names, or None (no file, or an older one)."""
    try:
        saved = _load(path(log_root))
    except SettingsError:
        return None
    data = (saved or {}).get('data')
    return data.get('train_data_path') if isinstance(data, dict) else None


def _flat(settings_path, saved):
    """{key: value} of a settings file: a serialized RunConfig (sections), or a flat object."""
    if not isinstance(saved.get('data'), dict):
        return saved
    for section in set(settings_lib.SETTING_SECTIONS.values()):
        if section in saved and not isinstance(saved[section], dict):
            raise SettingsError('%s: "%s" is %s; expected an object of its settings'
                                % (settings_path, section, _shown(saved[section])))
    return {key: saved[section][key] for key, section in settings_lib.SETTING_SECTIONS.items()
            if key in saved.get(section, {})}


def _check_kinds(settings_path, values):
    """SettingsError for a value that is not of its setting's kind or outside its choices (the
    checks of settings.py, as the flags have them)."""
    for key, value in values.items():
        try:
            settings_lib.checked(settings_lib.setting_of_key(key), value)
        except settings_lib.BadValue as e:
            raise SettingsError('%s: "%s" is %s; expected %s' % (settings_path, key, _shown(value), e.expected))
    schedule = values.get('lr_boundaries'), values.get('lr_values')
    if None not in schedule and len(schedule[1]) != len(schedule[0]) + 1:
        raise SettingsError('%s: expected one more of "lr_values" than of "lr_boundaries"' % settings_path)


def _check_limits(settings_path, settings):
    """SettingsError for a value the flags would refuse: the RunConfig sections (config.py) check
    the values of the file as they check the flags', with the same limits."""
    sections = {}
    for key, value in settings.items():
        sections.setdefault(settings_lib.SETTING_SECTIONS[key], {})[key] = value
    schedule = sections.get('schedule', {})
    if 'lr_boundaries' not in schedule or 'lr_values' not in schedule:  # an older file: the flags give them
        for key in ('lr_schedule', 'lr_boundaries', 'lr_values'):
            schedule.pop(key, None)
    kinds = typing.get_type_hints(config_lib.RunConfig)
    try:
        for section, values in sections.items():
            kinds[section](**values)
    except FlagError as e:
        raise _limit_error(settings_path, e, settings) from None


def _limit_error(settings_path, error, saved):
    """The SettingsError of a config.FlagError raised for a value of the file `settings_path`;
    `saved` is the file's object (sections), or the run settings read flat from it. A run setting
    is named by its key, any other field by its section too ("eval.batch_size")."""
    key, section = getattr(error, 'setting', None), getattr(error, 'section', None)
    run_setting = settings_lib.SETTING_SECTIONS.get(key) == section
    values = saved[section] if isinstance(saved.get(section), dict) else saved if run_setting else {}
    if key in values:
        name = key if run_setting else '%s.%s' % (section, key)
        return SettingsError('%s: "%s" is %s; expected %s' % (settings_path, name, _shown(values[key]), error.expected))
    text = str(error).replace('--lr_boundaries/--lr_values:', '"lr_boundaries" and "lr_values":')
    return SettingsError('%s: %s' % (settings_path, text))


def _shown(value):
    """A value of the file as JSON, cut short: one line of a message."""
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + '...'


def _is_a(value, kind):
    """isinstance, except that a bool is no number."""
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def _load(file_path):
    """The JSON object of a settings file, or None when there is none; SettingsError, naming the
    file, for anything else: not a regular file (a FIFO would block open() for ever), not UTF-8,
    not JSON, nested too deeply to parse, not an object."""
    try:
        with guards.open_regular(file_path, SettingsError, 'of JSON settings', encoding='utf-8') as f:
            settings = json.load(f)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise SettingsError('cannot read %s: %s' % (file_path, e.strerror or e)) from None
    except UnicodeDecodeError as e:
        raise SettingsError('%s is not UTF-8 text (byte %d): restore it, or delete it to take the settings '
                            'from the flags' % (file_path, e.start)) from None
    except RecursionError:
        raise SettingsError('%s is not valid JSON (nested too deeply): restore it, or delete it to take the '
                            'settings from the flags' % file_path) from None
    except ValueError as e:
        raise SettingsError('%s is not valid JSON (%s): restore it, or delete it to take the settings '
                            'from the flags' % (file_path, e)) from None
    if not isinstance(settings, dict):
        raise SettingsError('%s is not a run settings file: expected a JSON object' % file_path)
    return settings


def _legacy(record_path):
    """The settings in the record of a trainer older than the settings file, or None."""
    try:
        record = _load(record_path)
    except SettingsError:
        return None  # a record is not the run's settings: without it the flags decide
    if record is None:
        return None
    if isinstance(record.get('run_config'), dict):  # this version's record
        return record['run_config']
    known = dict(record.get('config', {}), **record.get('hparams', {}))
    return known if 'dataset' in known else None


# The run's id in config.json, and the global step at which the run got it: 0 for a run started
# by this version, the step it resumed at for a run of an older version, which had none.
RUN_ID, RUN_ID_FROM_STEP = 'run_id', 'run_id_from_step'


def new_run_id():
    """A fresh run id: 32 hex digits."""
    return uuid.uuid4().hex


def identity(log_root):
    """(run id, the step from which the run has it) of log_root's config.json, or (None, 0) when
    it names none (no file, a file of an older version, or one that cannot be read). SettingsError,
    naming the file, for a run id or step that no trainer writes (eval builds paths from the id)."""
    try:
        saved = _load(path(log_root)) or {}
    except SettingsError:
        saved = {}
    run_id, from_step = saved.get(RUN_ID), saved.get(RUN_ID_FROM_STEP, 0)
    if run_id is None:
        return None, 0
    problem = run_identity_problem(run_id, from_step)
    if problem:
        raise SettingsError('%s: %s; restore it, or delete "%s" and "%s"' % (path(log_root), problem, RUN_ID,
                                                                           RUN_ID_FROM_STEP))
    return run_id, from_step


def run_identity_problem(run_id, step, step_key=RUN_ID_FROM_STEP):
    """What is wrong with a run id (None, or hex digits as new_run_id gives) and a step read from a
    file, or None."""
    if run_id is not None and not (isinstance(run_id, str) and re.fullmatch('[0-9a-f]{1,64}', run_id)):
        return '"%s" is %s; expected a run id of hex digits' % (RUN_ID, _shown(run_id))
    if not (_is_a(step, int) and step >= 0):
        return '"%s" is %s; expected a step (an integer)' % (step_key, _shown(step))
    return None


def write(config, run_id=None, run_id_from_step=0, split=None):
    """Writes config.json of config.log_root: the serialized RunConfig, the run's id (a new one
    when None), and the record of the run's validation split (datasets.split_record) when there
    is one, in one step."""
    record = dict(config.to_dict(), written={'by': 'resnet_main.py --mode=train',
                                             'time': time.strftime('%Y-%m-%d %H:%M:%S')})
    record[RUN_ID], record[RUN_ID_FROM_STEP] = run_id or new_run_id(), run_id_from_step
    if split is not None:
        record[SPLIT_RECORD] = split
    guards.replace_file(path(config.log_root), json.dumps(record, indent=2, sort_keys=True) + '\n')


def settings_of(config):
    """{key: value} of settings.KEYS in a RunConfig (lists for the schedule, as read() gives them)."""
    values = {key: config_lib.setting(config, key) for key in settings_lib.KEYS}
    return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}


def write_record(directory, config, hps):
    """Writes this process's RunConfig and HParams to <directory>/config.json, so results trace
    to settings. Returns the path, or None when `directory` is the log root itself, whose
    config.json is the run's settings file, not to be overwritten.
    """
    if os.path.realpath(directory) == os.path.realpath(config.log_root):
        return None
    import tensorflow as tf  # its version goes in the record; the caller has imported it already
    os.makedirs(directory, exist_ok=True)
    record = {'run_config': config.to_dict(), 'hparams': hps._asdict(), 'tensorflow': tf.__version__,
              'time': time.strftime('%Y-%m-%d %H:%M:%S')}
    record_path = os.path.join(directory, FILE_NAME)
    guards.replace_file(record_path, json.dumps(record, indent=2, sort_keys=True, default=str))
    return record_path


def as_flag(key, value):
    """How a setting is given on the command line: '--width=2', '--nouse_bottleneck', '--lr_values=0.1,0.01'."""
    key = settings_lib.flag_of_key(key)
    if key == 'preset' and not value:
        return 'no --preset'
    if isinstance(value, bool):
        return '--%s%s' % ('' if value else 'no', key)
    if isinstance(value, (list, tuple)):
        value = ','.join('%g' % v if isinstance(v, float) else str(v) for v in value)
    elif isinstance(value, float):
        value = '%g' % value
    return '--%s=%s' % (key, value)


def differences(log_root, saved, source, given):
    """Raises SettingsError naming each model or split flag in `given` whose value is not the run's.

    Args:
      log_root: the run directory, for the message.
      saved, source: the run's settings and their file (read()).
      given: {key: value} of the settings the user gave as flags; a run's preset, like its
        model, cannot change (its recipe flags can, one by one).
    """
    differ = [key for key in settings_lib.FIXED_KEYS
              if key in given and key in saved and given[key] != saved[key]]
    if differ:
        raise SettingsError('%s: the run in %s has %s (%s); leave these flags out to use the run\'s'
                            % (' '.join(as_flag(k, given[k]) for k in differ), log_root,
                               ' '.join(as_flag(k, saved[k]) for k in differ), source))
