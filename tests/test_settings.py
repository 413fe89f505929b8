"""settings.py: each setting declared once, and everything that derives from the declaration."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest

import processes
import resnet_main
from resnet_cifar import config as config_lib
from resnet_cifar import run_files
from resnet_cifar import settings
from resnet_cifar.errors import FlagError

FLAGS_FIXTURE = os.path.join(os.path.dirname(__file__), 'fixtures', 'flags.json')


def flag_table():
    """Each flag resnet_main.py defines, as --help and the command line see it: name, absl's type,
    default, enum choices, help text and --help group, in definition order."""
    group_of = {name: title for title, names in resnet_main.FLAG_GROUPS for name in names}
    return [{'name': flag.name, 'type': flag.flag_type(), 'default': flag.default,
             'choices': getattr(flag.parser, 'enum_values', None), 'help': flag.help,
             'group': group_of.get(flag.name)}
            for flag in resnet_main.FLAGS.flags_by_module_dict()['resnet_main']]


def write_flags_fixture():
    with open(FLAGS_FIXTURE, 'w') as f:
        json.dump(flag_table(), f, indent=1)
        f.write('\n')


def test_every_flag_is_as_the_golden_file_says():
    """Pins every flag (name, type, default, choices, help, group) to tests/fixtures/flags.json,
    so that a changed default or help shows here as a diff a reviewer must accept. After a
    deliberate change, regenerate the file and commit it with the change:
        PYTHONPATH=. python tests/test_settings.py --write-flags-fixture"""
    with open(FLAGS_FIXTURE) as f:
        golden = {flag['name']: flag for flag in json.load(f)}
    live = {flag['name']: flag for flag in flag_table()}
    differences = ['--%s: %s' % (name, 'new' if name not in golden else 'gone') for name in
                   sorted(set(golden) ^ set(live))]
    differences += ['--%s %s: %r in flags.json, now %r' % (name, key, golden[name][key], live[name][key])
                    for name in golden if name in live for key in golden[name] if golden[name][key] != live[name][key]]
    assert not differences, '\n'.join(differences)


def test_every_flag_has_one_declaration_and_one_group():
    names = [s.name for s in settings.FLAGS]
    assert len(names) == len(set(names))
    grouped = [name for _, group in settings.FLAG_GROUPS for name in group]
    assert sorted(grouped) == sorted(names)
    # A field a flag sets is named after it unless the declaration says otherwise.
    assert settings.flag_of_key('warmup_steps') == 'lr_warmup'
    assert settings.keys_of_flag('lr_warmup') == ('warmup_steps',)
    assert settings.keys_of_flag('train_epochs') == ('train_steps',)
    assert settings.keys_of_flag('eval_once') == ()


def test_run_settings_are_the_config_json_keys_of_each_section():
    assert set(settings.KEYS) == set(settings.SETTING_SECTIONS)
    assert settings.MODEL_KEYS[:2] == ('dataset', 'label_mode') and settings.SPLIT_KEYS == ('validation_size',)
    assert settings.FIXED_KEYS == settings.MODEL_KEYS + settings.SPLIT_KEYS + ('preset',)
    for key, section in settings.SETTING_SECTIONS.items():
        assert key in {field.name for field in dataclasses.fields(getattr(config_lib.RunConfig(), section))}


def test_config_json_keys_are_unique_in_each_section_and_flag_names_unique():
    """config.json keeps each section's fields by name, and run_files reads the run settings flat,
    by key: two settings of one field would overwrite each other."""
    for section in dict.fromkeys(s.section for s in settings.SETTINGS if s.section):
        fields = [s.field for s in settings.of_section(section)]
        assert len(fields) == len(set(fields)), section
    assert len(settings.KEYS) == len(set(settings.KEYS))
    names = [s.name for s in settings.FLAGS]
    assert len(names) == len(set(names))


def test_every_key_an_older_config_json_lacks_has_an_old_default():
    """A run written before the validation split resumes: each run setting its config.json lacks
    takes the setting's old_default, a value the setting accepts; no other setting has one."""
    with open(os.path.join(os.path.dirname(__file__), 'fixtures', 'config_before_validation_split.json')) as f:
        old = json.load(f)
    written = {key for value in old.values() if isinstance(value, dict) for key in value}
    missing = [key for key in settings.KEYS if key not in written]
    assert 'validation_size' in missing and 'warmup_steps' in missing
    assert sorted(settings.OLD_DEFAULTS) == sorted(missing)
    for key, value in settings.OLD_DEFAULTS.items():
        assert settings.checked(settings.setting_of_key(key), value) == value


def test_the_cluster_section_is_declared_in_settings(tmp_path):
    """cluster.Cluster's fields, defaults and checks are the cluster settings' (it adds `source`,
    where the values came from); its flags and TF_CONFIG give the same fields."""
    from resnet_cifar.cluster import Cluster
    defaults = {field.name: field.default for field in dataclasses.fields(Cluster)}
    assert defaults == dict({s.field: s.default for s in settings.of_section('cluster')}, source='flags')
    assert [s.name for s in settings.of_section('cluster')] == [
        'job_name', 'task_index', 'ps_hosts', 'worker_hosts', 'sync_replicas', 'cluster_timeout_secs']
    assert processes.resolve(['--log_root=%s' % tmp_path]).cluster == Cluster()
    given = processes.resolve(['--log_root=%s' % tmp_path, '--job_name=worker', '--ps_hosts=h:1',
                               '--worker_hosts=h:2,h:3', '--task_index=1', '--cluster_timeout_secs=7']).cluster
    assert (given.task_index, given.ps_hosts, given.worker_hosts, given.timeout_secs) == (
        1, ('h:1',), ('h:2', 'h:3'), 7)
    with pytest.raises(FlagError, match=r'^--cluster_timeout_secs=0: expected a positive number of seconds$'):
        Cluster(timeout_secs=0)
    with pytest.raises(FlagError, match=r'^--sync_replicas=1: expected true or false$'):
        Cluster(sync_replicas=1)


@pytest.mark.parametrize('name, value, message', [
    ('label_smoothing', 1.0, '--label_smoothing=1: expected a value in [0, 1)'),
    ('mixup_alpha', -0.5, '--mixup_alpha=-0.5: expected 0 or more'),
    ('num_residual_units', 201, '--num_residual_units=201: expected a positive integer up to 200'),
    ('optimizer', 'adam', '--optimizer=adam: expected one of mom, sgd, nesterov'),
    ('batch_size', True, '--batch_size=True: expected an integer below 2^63'),
    ('lr_values', 0.1, '--lr_values=0.1: expected a list of finite numbers'),
])
def test_a_check_says_what_was_expected_in_one_line(name, value, message):
    setting = next(s for s in settings.SETTINGS if s.name == name and s.section != 'eval')
    with pytest.raises(settings.BadValue) as info:
        settings.checked(setting, value)
    assert str(info.value) == message


def test_numpy_numbers_count_as_python_numbers():
    import numpy as np
    width = next(s for s in settings.SETTINGS if s.name == 'width')
    bottleneck = next(s for s in settings.SETTINGS if s.name == 'use_bottleneck')
    assert type(settings.checked(width, np.int64(3))) is int
    assert settings.checked(bottleneck, np.bool_(True)) is True
    with pytest.raises(settings.BadValue):
        settings.checked(width, np.bool_(True))


# ---------------------------------------------------------------------------- a new setting: one declaration

# Two throwaway settings, each one declaration added to a copy of settings.py: a recipe setting
# (a resumed trainer may change it) and a model setting (a run keeps it).
DECLARATIONS = '''\
    S('throwaway_rate', 0.0, 'A throwaway recipe setting of the tests. 0: none.', _SCHEDULE, 'schedule',
      check=in_range(0, 1), run='recipe', old_default=0.0),
    S('throwaway_units', 1, 'A throwaway model setting of the tests.', _MODEL, 'model', check=count(9),
      run='model', old_default=1),
'''

# Run in the copy: the flags, a new run's config.json, then runs that resume it.
SCRIPT = r'''
import json, os, shutil, sys
sys.argv = ['resnet_main.py']
import resnet_main
from resnet_cifar import errors, resolve as resolve_lib, run_files

log_root = os.environ['LOG_ROOT']
FLAGS = resnet_main.FLAGS
out = {'flag': [FLAGS['throwaway_rate'].help, FLAGS['throwaway_rate'].default, FLAGS['throwaway_units'].default]}


def resolve(*args):
    """The RunConfig of the flags `args` (the flags resnet_main.py defines), or its error's line."""
    FLAGS.unparse_flags()
    FLAGS(['resnet_main.py', '--log_root=' + log_root] + list(args))
    try:
        return resolve_lib.run_config(FLAGS.flag_values_dict(), {name for name in FLAGS if FLAGS[name].present})
    except errors.Error as e:
        return str(e)


out['bad flag'] = resolve('--throwaway_rate=1.5')
config = resolve('--dataset=digits', '--throwaway_rate=0.5', '--throwaway_units=3')
out['new run'] = [config.schedule.throwaway_rate, config.model.throwaway_units]
run_files.write(config)  # as the first trainer does, which then saves checkpoints: tiny_run's
for name in os.listdir(os.environ['TINY_RUN']):
    if name.startswith('model.ckpt-') or name == 'checkpoint':
        shutil.copy(os.path.join(os.environ['TINY_RUN'], name), log_root)
with open(run_files.path(log_root)) as f:
    saved = json.load(f)
out['config.json'] = [saved['schedule']['throwaway_rate'], saved['model']['throwaway_units']]
out['read'] = [run_files.read(log_root)[0][key] for key in ('throwaway_rate', 'throwaway_units')]
loaded = run_files.load_config(log_root)
out['loaded'] = [loaded.schedule.throwaway_rate, loaded.model.throwaway_units]
resumed = resolve('--dataset=digits')
out['resumed'] = [resumed.schedule.throwaway_rate, resumed.model.throwaway_units]
changed = resolve('--dataset=digits', '--throwaway_rate=0.25')
out['changed'] = [changed.schedule.throwaway_rate, list(changed.changes_to_run)]
out['refused'] = resolve('--dataset=digits', '--throwaway_units=4')
saved['schedule']['throwaway_rate'] = 2
with open(run_files.path(log_root), 'w') as f:
    json.dump(saved, f)
out['bad file'] = resolve('--dataset=digits')
for section, key in (('schedule', 'throwaway_rate'), ('model', 'throwaway_units')):
    del saved[section][key]
with open(run_files.path(log_root), 'w') as f:
    json.dump(saved, f)
older = resolve('--dataset=digits')
out['older run'] = [older.schedule.throwaway_rate, older.model.throwaway_units]
print(json.dumps(out))
'''


def copy_with_declarations(tmp_path):
    """A copy of the suite's code whose settings.py has DECLARATIONS, and no other change."""
    copy = tmp_path / 'code'
    shutil.copytree(os.path.join(processes.REPO, 'resnet_cifar'), copy / 'resnet_cifar',
                    ignore=shutil.ignore_patterns('__pycache__'))
    for name in ('resnet_main.py', 'resnet_model.py', 'cifar_input.py'):
        shutil.copy(os.path.join(processes.REPO, name), copy / name)
    path = copy / 'resnet_cifar' / 'settings.py'
    text = path.read_text()
    anchor = '    # Checkpoints and logging.\n'
    assert text.count(anchor) == 1
    path.write_text(text.replace(anchor, DECLARATIONS + anchor))
    return copy


@pytest.mark.timeout(300)  # the tiny_run fixture and two TensorFlow processes, on a loaded machine too
def test_a_new_setting_is_one_declaration(tmp_path, tiny_run):
    copy = copy_with_declarations(tmp_path)
    log_root = str(tmp_path / 'run')
    os.mkdir(log_root)  # as the trainer makes it
    env = dict(os.environ, PYTHONPATH=str(copy), LOG_ROOT=log_root, TINY_RUN=tiny_run)
    shown = subprocess.run([sys.executable, str(copy / 'resnet_main.py'), '--help=schedule'], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert '--throwaway_rate=0.0\n    A throwaway recipe setting of the tests. 0: none.' in shown.stdout
    done = subprocess.run([sys.executable, '-c', SCRIPT], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert out['flag'] == ['A throwaway recipe setting of the tests. 0: none.', 0.0, 1]
    assert out['bad flag'] == '--throwaway_rate=1.5: expected a value in [0, 1)'
    assert out['new run'] == out['config.json'] == out['read'] == out['loaded'] == out['resumed'] == [0.5, 3]
    assert out['changed'] == [0.25, ['--throwaway_rate=0.25 instead of the run\'s --throwaway_rate=0.5']]
    assert out['refused'].startswith('--throwaway_units=4: the run in %s has --throwaway_units=3' % log_root)
    assert out['bad file'] == '%s: "throwaway_rate" is 2; expected a value in [0, 1)' % run_files.path(log_root)
    assert out['older run'] == [0.0, 1]  # a config.json without them: the old defaults


if __name__ == '__main__':
    if sys.argv[1:] != ['--write-flags-fixture']:
        sys.exit('usage: PYTHONPATH=. python tests/test_settings.py --write-flags-fixture')
    write_flags_fixture()
