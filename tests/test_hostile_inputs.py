"""Inputs a careless user or an attacker hands a run: a training file that moves a run's
validation split, record and settings files that are FIFOs or sockets, a hand-edited config.json.
Each is one line naming the file and what was expected, before anything is read or written."""
import errno
import json
import os
import shutil
import socket

import pytest

import processes
import synthetic
from processes import TINY, assert_one_line_error, checkpoint_steps, copy_run
from resnet_cifar import datasets
from resnet_cifar import evaluation
from resnet_cifar import run_files
from resnet_cifar.config import Data, Model, RunConfig
from resnet_cifar.errors import DataError

# A split run: 600 synthetic CIFAR-10 records, the last 300 held out.
SPLIT_RUN = TINY + ['--dataset=cifar10', '--validation_size=300', '--save_checkpoints_steps=2',
                    '--log_every_n_steps=1']


@pytest.fixture(scope='module')
def split_run(tmp_path_factory):
    """(log_root, train.bin, test.bin) of a run trained to step 4 with --validation_size=300.
    Tests copy it (copy_split_run); none changes it."""
    base = tmp_path_factory.mktemp('split_run')
    train_path = synthetic.write_records(base / 'train.bin', synthetic.random_images(600, seed=3),
                                         [i % 10 for i in range(600)])
    test_path = synthetic.write_records(base / 'test.bin', synthetic.random_images(50, seed=4),
                                        [i % 10 for i in range(50)])
    log_root = str(base / 'run')
    train_in_process(*SPLIT_RUN, '--train_steps=4', '--train_data_path=' + train_path,
                     '--eval_data_path=' + test_path, '--log_root=' + log_root)
    assert checkpoint_steps(log_root)[-1] == 4
    return log_root, train_path, test_path


def train_in_process(*flags):
    """resnet_main.py's training, in this process: no TensorFlow start (a few seconds) of its own."""
    from resnet_cifar import training
    training.train(processes.resolve(['--mode=train', *flags]))


def copy_split_run(split_run, tmp_path):
    log_root, train_path, test_path = split_run
    new_train = shutil.copy(train_path, str(tmp_path / 'train.bin'))
    new_test = shutil.copy(test_path, str(tmp_path / 'test.bin'))
    new_log_root = copy_run(log_root, tmp_path / 'run')
    settings = json.load(open(run_files.path(new_log_root)))
    settings['data']['train_data_path'] = new_train  # the run's own files, as if trained on these
    settings['data']['eval_data_path'] = new_test
    if 'validation_split' in settings:
        settings['validation_split'] = json.loads(json.dumps(settings['validation_split']).replace(
            json.dumps(train_path)[1:-1], json.dumps(new_train)[1:-1]))
    open(run_files.path(new_log_root), 'w').write(json.dumps(settings))
    return new_log_root, new_train, new_test


def without_lock(snapshot):
    """A run directory's snapshot without the trainer's lock file, which every start takes."""
    return {name: stat for name, stat in snapshot.items() if name != run_files.LOCK_FILE}


def append_records(path, n, seed=5):
    with open(path, 'ab') as f:
        f.write(synthetic.encode_records(synthetic.random_images(n, seed=seed), [1] * n))


@pytest.mark.timeout(120)
def test_a_grown_training_file_is_one_line_on_resume_and_in_eval(split_run, tmp_path, capsys):
    log_root, train_path, test_path = copy_split_run(split_run, tmp_path)
    append_records(train_path, 300)
    before, steps = processes.snapshot(log_root), checkpoint_steps(log_root)
    with processes.AbslRecords() as records:  # in this process: a traceback would come out of main
        code, err = processes.main_exit(SPLIT_RUN + ['--mode=train', '--train_steps=6', '--train_data_path=' + train_path,
                                                     '--eval_data_path=' + test_path, '--log_root=' + log_root], capsys)
    line = assert_one_line_error(code, err, 1, train_path, 'validation split', '900 records', '600')
    assert not any(message.startswith('step 5') for message in records.messages), line
    assert without_lock(processes.snapshot(log_root)) == without_lock(before), line
    assert checkpoint_steps(log_root) == steps
    code, err = processes.main_exit(['--mode=eval', '--eval_once', '--log_root=' + log_root,
                                     '--eval_data_path=' + test_path], capsys)
    assert_one_line_error(code, err, 1, train_path, 'validation split')
    assert not os.path.exists(os.path.join(log_root, 'best', 'best.json'))


@pytest.mark.timeout(120)
def test_a_run_without_the_split_record_resumes_and_gains_one(split_run, tmp_path):
    log_root, train_path, test_path = copy_split_run(split_run, tmp_path)
    settings = json.load(open(run_files.path(log_root)))
    settings.pop('validation_split', None)  # as an older version wrote it
    open(run_files.path(log_root), 'w').write(json.dumps(settings))
    train_in_process(*SPLIT_RUN, '--train_steps=6', '--train_data_path=' + train_path,
                     '--eval_data_path=' + test_path, '--log_root=' + log_root)
    assert checkpoint_steps(log_root)[-1] == 6
    pinned = json.load(open(run_files.path(log_root)))['validation_split']
    assert pinned['validation_size'] == 300 and [f[1] for f in pinned['files']] == [600]


def four_files(tmp_path):
    """Four files of 10, 20, 30 and 40 records; returns the checked list."""
    paths = []
    for i, n in enumerate((10, 20, 30, 40)):
        paths.append(synthetic.write_records(tmp_path / ('b%d.bin' % i), synthetic.random_images(n, seed=i),
                                             [i] * n))
    return datasets.check_files('cifar10', ','.join(paths)), paths


def test_the_split_record_names_the_file_that_moved_it(tmp_path):
    checked, paths = four_files(tmp_path)
    record = datasets.split_record('cifar10', checked, 50)  # the last 40 records and 10 of b2
    assert datasets.split_moved_error('cifar10', checked, record) is None
    # The same records in other files (moved, renamed): the split holds.
    moved = [(shutil.copy(p, str(tmp_path / ('moved%d.bin' % i))), n) for i, (p, n) in enumerate(checked)]
    assert datasets.split_moved_error('cifar10', moved, record) is None
    # Reordered: another file is last.
    error = datasets.split_moved_error('cifar10', [checked[i] for i in (0, 1, 3, 2)], record)
    assert isinstance(error, DataError) and paths[3] in str(error) and 'validation split' in str(error)
    # A file left out, or one more.
    assert paths[3] in str(datasets.split_moved_error('cifar10', checked[:3], record))
    extra = synthetic.write_records(tmp_path / 'extra.bin', synthetic.random_images(5), [0] * 5)
    assert extra in str(datasets.split_moved_error('cifar10', checked + [(extra, 5)], record))
    # Same size, other held-out records: replaced.
    with open(paths[2], 'r+b') as f:
        f.seek(25 * 3073)
        f.write(b'\x07' * 3073)
    error = datasets.split_moved_error('cifar10', checked, record)
    assert paths[2] in str(error) and 'replaced' in str(error) and '\n' not in str(error)
    # Shrunk.
    os.truncate(paths[1], 10 * 3073)
    error = datasets.split_moved_error('cifar10', datasets.check_files('cifar10', ','.join(paths)), record)
    assert paths[1] in str(error) and '10 records' in str(error) and '20' in str(error)


# ---------------------------------------------------------------- not regular files

def make_socket(path):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    return server


def test_a_socket_or_device_as_record_file_is_named_before_any_read(tmp_path):
    server = make_socket(tmp_path / 'data.bin')
    try:
        with pytest.raises(DataError, match=r"'.*data\.bin' is a socket; expected a regular file of records"):
            datasets.check_files('cifar10', str(tmp_path / 'data.bin'))
    finally:
        server.close()
    with pytest.raises(DataError, match=r"'/dev/zero' is a character device; expected a regular file"):
        datasets.check_files('cifar10', '/dev/zero')


@pytest.mark.timeout(300)  # with the tiny_run fixture, on a loaded machine too
def test_a_fifo_as_training_or_eval_data_is_one_line_not_a_hang(tiny_run, tmp_path):
    fifo = str(tmp_path / 'data_batch_1.bin')
    os.mkfifo(fifo)
    trained = processes.run(*processes.TINY_DIGITS, '--mode=train', '--train_steps=4',
                            '--train_data_path=' + fifo, '--log_root=' + str(tmp_path / 'run'), timeout=60)
    assert_one_line_error(trained.returncode, trained.stderr, 1, fifo, 'is a FIFO; expected a regular file')
    log_root = copy_run(tiny_run, tmp_path / 'copy')
    scored = processes.run('--mode=eval', '--eval_once', '--log_root=' + log_root, '--eval_data_path=' + fifo,
                           timeout=60)
    assert_one_line_error(scored.returncode, scored.stderr, 1, fifo, 'is a FIFO')


@pytest.mark.timeout(300)  # with the tiny_run fixture, on a loaded machine too
def test_a_fifo_or_socket_as_config_json_is_one_line_not_a_hang(tiny_run, tmp_path):
    log_root = copy_run(tiny_run, tmp_path / 'run')
    os.remove(run_files.path(log_root))
    os.mkfifo(run_files.path(log_root))
    scored = processes.run('--mode=eval', '--eval_once', '--log_root=' + log_root, timeout=60)
    assert_one_line_error(scored.returncode, scored.stderr, 1, run_files.path(log_root),
                          'is a FIFO; expected a regular file')
    os.remove(run_files.path(log_root))
    server = make_socket(run_files.path(log_root))
    try:
        with pytest.raises(run_files.SettingsError, match='config.json is a socket; expected a regular file'):
            run_files.read(log_root)
    finally:
        server.close()


# ---------------------------------------------------------------- a hand-edited config.json

def write_run(log_root):
    """A run directory: a serialized RunConfig and an (empty) checkpoint at step 50."""
    run_files.write(RunConfig(log_root=str(log_root), data=Data(dataset='digits'), model=Model(num_residual_units=1)))
    for suffix in ('.index', '.data-00000-of-00001'):
        open(os.path.join(str(log_root), 'model.ckpt-50' + suffix), 'w').close()
    return json.load(open(run_files.path(str(log_root))))


def edit(section, key, value):
    def change(saved):
        saved[section][key] = value
        return json.dumps(saved)
    return change


@pytest.mark.parametrize('change, expected', [
    (edit('model', 'num_residual_units', 10 ** 9), '"num_residual_units" is 1000000000; expected a positive '
                                                   'integer up to'),
    (edit('model', 'width', 0), '"width" is 0; expected a positive integer'),
    (edit('schedule', 'batch_size', -5), '"batch_size" is -5; expected a positive integer'),
    (edit('data', 'validation_size', -1), '"validation_size" is -1; expected 0 or more'),
    (edit('schedule', 'train_steps', 2 ** 70), '"train_steps" is %d; expected an integer below 2^63' % 2 ** 70),
    (edit('model', 'relu_leakiness', 3.0), '"relu_leakiness" is 3.0; expected a value in [0, 1)'),
    (edit('schedule', 'lr_boundaries', [20, 10, 30]), '"lr_boundaries" and "lr_values": boundaries must increase'),
    (edit('schedule', 'cutout_size', 99), '"cutout_size" is 99; expected 0 (none) to 32 pixels'),
    (lambda saved: json.dumps(dict(saved, model=[1, 2])), '"model" is [1, 2]; expected an object'),
    (lambda saved: '[' * 100000 + ']' * 100000, 'is not valid JSON'),
    (lambda saved: '"digits"', 'expected a JSON object'),
])
def test_a_hand_edited_config_json_is_one_line_naming_it_the_key_and_the_value(tmp_path, capsys, change, expected):
    saved = write_run(tmp_path)
    with open(run_files.path(str(tmp_path)), 'w') as f:
        f.write(change(saved))
    code, err = processes.main_exit(['--mode=eval', '--eval_once', '--log_root=' + str(tmp_path)], capsys)
    line = assert_one_line_error(code, err, 1, run_files.path(str(tmp_path)), expected)
    assert '.held-by-' not in line


def test_invalid_utf8_in_config_json_is_one_line_naming_it(tmp_path, capsys):
    write_run(tmp_path)
    with open(run_files.path(str(tmp_path)), 'wb') as f:
        f.write(b'{"data": {"dataset": "digits\xff"}}')
    code, err = processes.main_exit(['--mode=eval', '--eval_once', '--log_root=' + str(tmp_path)], capsys)
    assert_one_line_error(code, err, 1, run_files.path(str(tmp_path)), 'not UTF-8')


@pytest.mark.parametrize('mode, saved_change, expected', [
    ('--mode=train', lambda saved: dict(saved, model=[1, 2]), '"model" is [1, 2]; expected an object'),
    ('--mode=eval', lambda saved: dict(saved, model=[1, 2]), '"model" is [1, 2]; expected an object'),
    ('--mode=train', lambda saved: dict(saved, schedule=dict(saved['schedule'], batch_size=-5)), '"batch_size" is -5'),
])
@pytest.mark.timeout(120)
def test_resnet_main_on_a_hand_edited_config_json_exits_with_one_line(tiny_run, tmp_path, mode, saved_change,
                                                                      expected):
    log_root = copy_run(tiny_run, tmp_path / 'run')
    saved = json.load(open(run_files.path(log_root)))
    open(run_files.path(log_root), 'w').write(json.dumps(saved_change(saved)))
    before = processes.snapshot(log_root)
    done = processes.run(mode, '--eval_once', '--log_root=' + log_root, '--train_steps=80', timeout=120)
    line = assert_one_line_error(done.returncode, done.stderr, 1, run_files.path(log_root), expected)
    assert '.held-by-' not in line and without_lock(processes.snapshot(log_root)) == without_lock(before)


def test_the_flags_have_the_same_limits(tmp_path, capsys):
    code, err = processes.main_exit(['--mode=train', '--dataset=digits', '--num_residual_units=1000000000',
                                     '--log_root=' + str(tmp_path / 'run')], capsys)
    assert_one_line_error(code, err, 2, '--num_residual_units=1000000000: expected a positive integer up to')


# ---------------------------------------------------------------- FIFOs in place of the run's own files

@pytest.mark.parametrize('mode, name', [
    ('--mode=eval', 'checkpoint'),
    ('--mode=train', 'checkpoint'),
    ('--mode=eval', os.path.join('eval', 'results.json')),
    ('--mode=eval', os.path.join('eval', 'eval_state.json')),
    ('--mode=eval', os.path.join('best', 'best.json')),
])
@pytest.mark.timeout(150)
def test_a_fifo_in_place_of_a_file_of_the_run_is_one_line_not_a_hang(tiny_run, tmp_path, mode, name):
    log_root = copy_run(tiny_run, tmp_path / 'run')
    fifo = os.path.join(log_root, name)
    os.makedirs(os.path.dirname(fifo), exist_ok=True)
    if os.path.exists(fifo):
        os.remove(fifo)
    os.mkfifo(fifo)
    done = processes.run(mode, '--eval_once', '--train_steps=80', '--log_root=' + log_root, timeout=60)
    assert_one_line_error(done.returncode, done.stderr, 1, fifo, 'is a FIFO; expected a regular file')
    assert checkpoint_steps(log_root) == [40, 60]


def test_a_fifo_as_features_file_is_named_as_a_fifo_not_as_missing(tmp_path):
    from resnet_cifar import features
    fifo = str(tmp_path / 'features.npz')
    os.mkfifo(fifo)
    with pytest.raises(features.FeaturesError, match=r"'.*features\.npz' is a FIFO; expected a regular file"):
        features.load_features(fifo)
    with pytest.raises(features.FeaturesError, match='does not exist: write it with --mode=extract'):
        features.load_features(str(tmp_path / 'missing.npz'))


@pytest.mark.parametrize('number, advice', [
    (errno.ENOSPC, 'free space'), (errno.EDQUOT, 'free space'),
    (errno.EACCES, 'permissions'), (errno.EPERM, 'permissions'), (errno.EROFS, 'read-only'),
    (errno.EIO, 'fix it and run it again'),
])
def test_eval_advice_on_a_write_error_follows_its_errno(tmp_path, number, advice):
    path = str(tmp_path / 'eval' / 'results.json')
    line = str(evaluation.write_error(OSError(number, os.strerror(number), path)))
    assert path in line and os.strerror(number) in line and advice in line and '\n' not in line, line
    assert number in (errno.ENOSPC, errno.EDQUOT) or 'free space' not in line, line


def _keep_best(log_root, **info):
    """best/ holding the run's checkpoint 60, with `info` as its best.json."""
    from resnet_cifar import best
    assert best.keep(log_root, os.path.join(log_root, 'model.ckpt-60'), dict({'precision': 0.5}, **info)) is None


@pytest.mark.parametrize('info, from_step, expected', [
    ({'step': 60, 'run_id': 123}, 0, '"run_id" is 123'),
    ({'step': 60, 'run_id': 'ab/../../../x'}, 0, '"run_id" is "ab/../../../x"'),
    ({'step': '60'}, 40, '"step" is "60"'),
    ({'step': 60, 'precision': 'high'}, 40, '"precision" is "high"'),
], ids=['run-id-a-number', 'run-id-with-a-slash', 'step-a-string', 'precision-a-string'])
@pytest.mark.timeout(120)
def test_a_hand_edited_best_json_is_one_line_naming_it(tiny_run, tmp_path, capsys, info, from_step, expected):
    """On the old code: a TypeError traceback (a number as run_id, a string as step), or a rename
    of best/ to a path built from the run_id ('free space and run it again')."""
    log_root = copy_run(tiny_run, tmp_path / 'run')
    settings = json.load(open(run_files.path(log_root)))
    settings['run_id_from_step'] = from_step
    open(run_files.path(log_root), 'w').write(json.dumps(settings))
    _keep_best(log_root, **info)
    before = processes.snapshot(os.path.join(log_root, 'best'))
    code, err = processes.main_exit(['--mode=eval', '--eval_once', '--log_root=' + log_root], capsys)
    assert_one_line_error(code, err, 1, os.path.join(log_root, 'best', 'best.json'), expected)
    assert processes.snapshot(os.path.join(log_root, 'best')) == before
    assert [name for name in os.listdir(log_root) if name.startswith('best')] == ['best']


@pytest.mark.parametrize('run_id', [123, '../../x'])
@pytest.mark.timeout(120)
def test_a_hand_edited_run_id_in_config_json_is_one_line(tiny_run, tmp_path, capsys, run_id):
    """On the old code eval took the run for one without an id and went on (exit 0)."""
    log_root = copy_run(tiny_run, tmp_path / 'run')
    settings = json.load(open(run_files.path(log_root)))
    settings['run_id'] = run_id
    open(run_files.path(log_root), 'w').write(json.dumps(settings))
    code, err = processes.main_exit(['--mode=eval', '--eval_once', '--log_root=' + log_root], capsys)
    assert_one_line_error(code, err, 1, run_files.path(log_root), '"run_id" is %s'
                          % json.dumps(run_id))


@pytest.mark.parametrize('file_name, bad', [
    ('eval_state.json', lambda run_id, scored_on: {'run_id': run_id, 'best_precision': 0.5,
                                                   'checkpoints': [{'step': 40, 'checkpoint': 5}]}),
    ('eval_state.json', lambda run_id, scored_on: {'run_id': run_id, 'best_precision': 0.5,
                                                   'checkpoints': [{'step': '40', 'checkpoint': 'ab'}]}),
    ('results.json', lambda run_id, scored_on: {'run_id': run_id, 'scored_on': scored_on, 'checkpoints': [
        {'step': 20, 'precision': '0.9', 'loss': 1.0, 'images': 10}]}),
    ('results.json', lambda run_id, scored_on: {'run_id': run_id, 'scored_on': scored_on, 'checkpoints': [
        {'step': '20', 'precision': 0.9, 'loss': 1.0, 'images': 10}]}),
], ids=['state-checkpoint-a-number', 'state-step-a-string', 'results-precision-a-string',
        'results-step-a-string'])
@pytest.mark.timeout(120)
def test_a_hand_edited_eval_file_is_started_afresh_with_a_warning(tiny_run, tmp_path, capsys, file_name, bad):
    """Eval's own records: a warning and a fresh start, as for one that cannot be read. On the old
    code a TypeError traceback once the first checkpoint was scored."""
    log_root = copy_run(tiny_run, tmp_path / 'run')
    run_id = json.load(open(run_files.path(log_root)))['run_id']
    config = processes.resolve(['--mode=eval', '--log_root=' + log_root])
    from resnet_cifar import evaluation
    os.makedirs(os.path.join(log_root, 'eval'), exist_ok=True)
    with open(os.path.join(log_root, 'eval', file_name), 'w') as f:
        json.dump(bad(run_id, evaluation.checkpoint_records(config).describe()), f)
    capsys.readouterr()
    with processes.AbslRecords() as records:  # in this process: an exception would come out of main
        assert processes.main_status(['--mode=eval', '--log_root=' + log_root]) == 0
    logged, out = '\n'.join(records.messages), capsys.readouterr().out
    warning = 'checkpoints may be scored again' if file_name == 'eval_state.json' else 'afresh'
    assert os.path.join(log_root, 'eval', file_name) in logged and warning in logged, logged[-3000:]
    assert [step for step, _ in processes.eval_precisions(out)] == [40, 60], out


@pytest.mark.parametrize('mode, record_change, expected', [
    ('--mode=eval', lambda record: dict(record, files=[['a.bin']]), '"files"'),
    ('--mode=eval', lambda record: dict(record, held_out=[entry[:3] for entry in record['held_out']]),
     '"held_out"'),
    ('--mode=train', lambda record: dict(record, files=[[f[0], str(f[1])] for f in record['files']]), '"files"'),
], ids=['eval-file-without-count', 'eval-held-out-short', 'train-count-a-string'])
@pytest.mark.timeout(120)
def test_a_hand_edited_split_record_is_one_line(split_run, tmp_path, capsys, mode, record_change, expected):
    """On the old code an IndexError, ValueError or TypeError traceback from datasets.split_moved_error."""
    log_root, train_path, test_path = copy_split_run(split_run, tmp_path)
    settings = json.load(open(run_files.path(log_root)))
    settings['validation_split'] = record_change(settings['validation_split'])
    open(run_files.path(log_root), 'w').write(json.dumps(settings))
    before = processes.snapshot(log_root)
    code, err = processes.main_exit((SPLIT_RUN if mode == '--mode=train' else []) + [
        mode, '--eval_once', '--train_steps=6', '--train_data_path=' + train_path, '--eval_data_path=' + test_path,
        '--log_root=' + log_root], capsys)
    assert_one_line_error(code, err, 1, run_files.path(log_root), 'validation_split', expected)
    assert without_lock(processes.snapshot(log_root)) == without_lock(before)
