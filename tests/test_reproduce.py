"""scripts/reproduce.py: a grid of presets x datasets x seeds in real subprocesses on the bundled
digits, its table beside the published figures, resuming after SIGKILL, a failing cell, the GPU
slots, --dry_run, and the published figures kept in resnet_cifar/published.py only."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import processes
from processes import REPO, checkpoint_steps, snapshot
from resnet_cifar import published

SCRIPT = os.path.join(REPO, 'scripts', 'reproduce.py')
reproduce = processes.load_script('reproduce')
# ResNet-8 at batch 32 on the digits, a validation split the digits can give.
TINY = ['--num_residual_units=1', '--batch_size=32', '--nolr_batch_scaling', '--save_checkpoints_steps=10',
        '--validation_size=200']
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def grid(*args, timeout=400):
    return subprocess.run([sys.executable, SCRIPT] + list(args), capture_output=True, text=True, timeout=timeout)


def results_json(run_dir):
    with open(os.path.join(run_dir, 'eval', 'results.json')) as f:
        return json.load(f)


def rows_of(out):
    with open(os.path.join(out, 'table.json')) as f:
        return {(row['preset'], row['dataset']): row for row in json.load(f)['rows']}


@pytest.mark.timeout(420)
def test_a_two_preset_two_seed_grid_gives_the_table_of_its_runs(tmp_path):
    out = str(tmp_path / 'grid')
    done = grid('--presets=resnet32_classic,fast_cifar', '--datasets=digits', '--seeds=1,2', '--parallel=2',
                '--out=' + out, '--', *TINY, '--train_steps=20')
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert '[grid] 4 cells, 0 finished already, 4 to run on 2 slot(s)' in done.stdout
    rows = rows_of(out)
    assert list(rows) == [('resnet32_classic', 'digits'), ('fast_cifar', 'digits')]
    table_md = open(os.path.join(out, 'table.md')).read()
    assert table_md in done.stdout
    for (preset, dataset), row in rows.items():
        errors = []
        for cell, seed in zip(row['cells'], (1, 2)):
            run_dir = os.path.join(out, preset, dataset, 'seed-%d' % seed)
            results = results_json(run_dir)
            # The test score of the checkpoint chosen on validation, as eval wrote it.
            assert cell['state'] == 'finished' and cell['log_root'] == run_dir
            assert (cell['test_precision'], cell['test_step']) == (results['test']['precision'],
                                                                   results['test']['step'])
            assert cell['test_error'] == pytest.approx(100 * (1 - results['test']['precision']))
            errors.append(100 * (1 - results['test']['precision']))
        assert row['seeds_finished'] == 2 and row['model'] == 'ResNet-8' and row['published'] == []
        assert row['test_error'] == {'mean': pytest.approx(np.mean(errors)),
                                     'std': pytest.approx(np.std(errors, ddof=1)), 'n': 2}
        assert row['images_per_sec']['mean'] > 0
        line = [l for l in table_md.splitlines() if l.startswith('| %s |' % preset)][0]
        assert '| %.2f ± %.2f | 2/2 |' % (np.mean(errors), np.std(errors, ddof=1)) in line
    with open(os.path.join(out, 'table.png'), 'rb') as f:
        assert f.read(8) == PNG_SIGNATURE
    report = grid('--presets=resnet32_classic,fast_cifar', '--datasets=digits', '--seeds=1,2', '--out=' + out,
                  '--report', '--', *TINY, '--train_steps=20', timeout=120)
    assert report.returncode == 0 and table_md in report.stdout and ' train] ' not in report.stdout
    assert re.search(r'^\[fast_cifar digits seed 2 eval\] ', done.stdout, re.M)  # each run's lines, named


def _descendants(pid):
    """The process ids whose parent is `pid`, and theirs."""
    children = []
    for entry in os.listdir('/proc'):
        try:
            with open('/proc/%s/stat' % entry) as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            children.append(int(entry))
    return children + [grandchild for child in children for grandchild in _descendants(child)]


def _wait_for_files(proc, paths_ready, timeout):
    """Waits until paths_ready() is true (files written by the grid); fails if the grid ends first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if paths_ready():
            return
        assert proc.poll() is None, 'the grid ended (exit %s) before the event' % proc.returncode
        time.sleep(0.05)
    raise AssertionError('no event within %d s' % timeout)


@pytest.mark.timeout(420)
def test_a_grid_killed_with_sigkill_resumes_without_training_finished_cells_again(tmp_path):
    END = 160  # steps: a long window in which seed 2 is past its first checkpoint and not finished
    out = str(tmp_path / 'grid')
    args = [sys.executable, SCRIPT, '--presets=resnet32_classic', '--datasets=digits', '--seeds=1,2',
            '--parallel=1', '--out=' + out, '--', *TINY, '--train_steps=%d' % END, '--save_checkpoints_steps=20']
    seed_1, seed_2 = (os.path.join(out, 'resnet32_classic', 'digits', 'seed-%d' % s) for s in (1, 2))
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # The event: seed 1 is finished and seed 2 has a checkpoint of a step past 0 and not its last.
        _wait_for_files(proc, lambda: os.path.exists(seed_1 + '.json') and any(
            0 < step < END for step in checkpoint_steps(seed_2)), timeout=300)
        os.kill(proc.pid, signal.SIGSTOP)  # it starts no process while its children are listed
        for pid in _descendants(proc.pid):
            os.kill(pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    killed_at = checkpoint_steps(seed_2)[-1]
    assert not os.path.exists(seed_2 + '.json') and killed_at < END
    finished = snapshot(seed_1)
    finished_json = open(seed_1 + '.json').read()
    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert '[grid] 2 cells, 1 finished already, 1 to run on 1 slot(s)' in again.stdout
    assert snapshot(seed_1) == finished and open(seed_1 + '.json').read() == finished_json
    assert not re.search(r'^\[resnet32_classic digits seed 1 ', again.stdout, re.M)  # not started at all
    resumed = re.search(r'^\[resnet32_classic digits seed 2 train\] .*resuming from (\S+) at step (\d+)',
                        again.stdout, re.M)
    assert resumed and int(resumed.group(2)) == killed_at, again.stdout[-3000:]
    row = rows_of(out)[('resnet32_classic', 'digits')]
    assert row['seeds_finished'] == 2 and [c['state'] for c in row['cells']] == ['finished', 'finished']
    assert row['cells'][1]['test_step'] == results_json(seed_2)['test']['step']
    assert checkpoint_steps(seed_2)[-1] == END  # trained to its end after the resume


@pytest.mark.timeout(300)
def test_sigterm_stops_every_running_cell_with_a_checkpoint(tmp_path):
    """Two cells training side by side get the grid's SIGTERM: each saves a checkpoint of the step
    it stopped at; the table shows them unfinished at that step, and no cell counts as failed."""
    out = tmp_path / 'grid'
    proc = subprocess.Popen([sys.executable, SCRIPT, '--presets=resnet32_classic', '--datasets=digits',
                             '--seeds=1,2', '--parallel=2', '--out=' + str(out), '--', *TINY,
                             '--train_steps=100000', '--save_checkpoints_steps=100000', '--log_every_n_steps=1'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        training = set()
        for line in proc.stdout:
            found = re.match(r'\[resnet32_classic digits seed (\d) train\] .*step 3/100000', line)
            if found:
                training.add(found.group(1))
            if training == {'1', '2'}:
                break
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 1, stderr[-3000:]
    assert stderr.splitlines()[-1] == ('error: stopped by a signal; 2 cell(s) not finished: the same command '
                                       'resumes them; the table is in %s' % (out / 'table.md'))
    row = rows_of(str(out))[('resnet32_classic', 'digits')]
    for seed, cell in zip((1, 2), row['cells']):
        stopped = re.search(r'seed %d: training stopped at step (\d+); checkpoint (\S+) saved' % seed, stdout)
        assert stopped, stdout[-3000:]
        run_dir = str(out / 'resnet32_classic' / 'digits' / ('seed-%d' % seed))
        assert int(stopped.group(1)) >= 3 and checkpoint_steps(run_dir)[-1] == int(stopped.group(1))
        assert cell == {'seed': seed, 'state': 'unfinished', 'log_root': run_dir,
                        'latest_checkpoint_step': int(stopped.group(1))}
        assert not os.path.exists(run_dir + '.failed')
    # Other flags after `--` for the unfinished cells would resume them under another recipe: refused.
    stopped_grid = snapshot(str(out))
    changed = grid('--presets=resnet32_classic', '--datasets=digits', '--seeds=1,2', '--parallel=2',
                   '--out=' + str(out), '--', *TINY, '--train_steps=3', '--save_checkpoints_steps=100000',
                   '--log_every_n_steps=1', timeout=120)  # 3 steps: on the old code, a short eval
    assert changed.returncode == 2 and len(changed.stderr.splitlines()) == 1, changed.stderr[-3000:]
    assert changed.stderr.startswith('error: %s was started with other flags (' % (
        out / 'resnet32_classic' / 'digits' / 'seed-1.flags.json')), changed.stderr
    assert '--train_steps=100000' in changed.stderr and '--train_steps=3' in changed.stderr
    assert snapshot(str(out)) == stopped_grid


@pytest.mark.timeout(300)
def test_a_failing_cell_is_marked_and_the_others_finish_on_their_gpu_slots(tmp_path):
    """Seed 2's run directory is a file: its training refuses it in one line.
    Two GPU slots on this GPU-less machine: each cell's processes get their own
    CUDA_VISIBLE_DEVICES (TensorFlow on the CPU ignores it)."""
    out = tmp_path / 'grid'
    (out / 'resnet32_classic' / 'digits').mkdir(parents=True)
    (out / 'resnet32_classic' / 'digits' / 'seed-2').write_text('not a run directory')
    args = ['--presets=resnet32_classic', '--datasets=digits', '--seeds=1,2', '--gpus=0,1', '--out=' + str(out),
            '--', *TINY, '--train_steps=20']
    done = grid(*args)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    last = done.stderr.splitlines()[-1]
    assert last.startswith('error: 1 cell(s) failed, the first: resnet32_classic on digits, seed 2: seed 2: train '
                           'failed (exit ') and last.endswith('; the table is in %s' % (out / 'table.md')), last
    assert last.endswith('exists and is not a directory; the table is in %s' % (out / 'table.md')), last
    row = rows_of(str(out))[('resnet32_classic', 'digits')]
    assert [c['state'] for c in row['cells']] == ['finished', 'failed'] and row['seeds_finished'] == 1
    assert 'is not a directory' in row['cells'][1]['error'] and row['test_error']['n'] == 1
    assert row['test_error']['std'] is None
    line = [l for l in open(out / 'table.md').read().splitlines() if l.startswith('| resnet32_classic |')][0]
    assert '| 1/2 |' in line and '| seed 2 failed: seed 2: train failed' in line
    cell = json.load(open(str(out / 'resnet32_classic' / 'digits' / 'seed-1.json')))
    assert cell['cuda_visible_devices'] in ('0', '1')
    assert re.search(r'^\[grid\] resnet32_classic on digits, seed 1: starting \(CUDA_VISIBLE_DEVICES=[01]\)$',
                     done.stdout, re.M)
    report = grid(*(args[:-len(TINY) - 2] + ['--report']), timeout=120)
    assert report.returncode == 0 and '| seed 2 failed: seed 2: train failed' in report.stdout
    # Without the grid's flags, the report still names the model its cells trained (not the preset's).
    row = rows_of(str(out))[('resnet32_classic', 'digits')]
    assert row['model'] == 'ResNet-8' and row['published'] == [] and '| resnet32_classic | ResNet-8 |' in report.stdout
    # Other flags after `--` would mix runs of two recipes in one row: refused before anything runs.
    finished = snapshot(str(out))
    changed = grid(*(args[:-1] + ['--train_steps=30']), timeout=120)
    assert changed.returncode == 2 and changed.stderr.splitlines() == [
        'error: %s was trained with other flags (%s --train_steps=20, now %s --train_steps=30): give the same '
        'flags, or another --out' % (out / 'resnet32_classic' / 'digits' / 'seed-1.json', ' '.join(
            ['--preset=resnet32_classic', '--dataset=digits', '--keep_checkpoint_max=10'] + TINY),
            ' '.join(['--preset=resnet32_classic', '--dataset=digits', '--keep_checkpoint_max=10'] + TINY))]
    assert snapshot(str(out)) == finished


@pytest.mark.timeout(120)
def test_a_cell_refused_before_its_run_directory_exists_is_marked_failed(tmp_path):
    """A bad flag after `--`: resnet_main.py refuses it before it makes the run directory."""
    out = tmp_path / 'grid'
    done = grid('--presets=resnet32_classic', '--datasets=digits', '--seeds=3', '--out=' + str(out),
                '--', '--batch_size=0', timeout=120)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stderr.splitlines()[-1] == (
        'error: 1 cell(s) failed, the first: resnet32_classic on digits, seed 3: seed 3: train failed (exit 2): '
        'error: --batch_size=0: expected a positive integer; the table is in %s' % (out / 'table.md'))
    cell = rows_of(str(out))[('resnet32_classic', 'digits')]['cells'][0]
    assert cell['state'] == 'failed' and cell['error'].endswith('--batch_size=0: expected a positive integer')


@pytest.mark.timeout(30)
def test_gpu_slots_and_the_environment_of_a_cell():
    environ = {'PATH': '/bin', 'CUDA_VISIBLE_DEVICES': '2,3'}
    assert reproduce.visible_gpus('auto', environ) == ['2', '3']
    assert reproduce.visible_gpus('auto', {'CUDA_VISIBLE_DEVICES': '-1'}) == []
    assert reproduce.visible_gpus('auto', {}, nvidia_smi=None) == []
    assert reproduce.visible_gpus('none', environ) == [] and reproduce.visible_gpus('4,5', {}) == ['4', '5']
    assert reproduce.device_slots(['2', '3'], 1, None) == ['2', '3']
    assert reproduce.device_slots(['0', '1', '2', '3', '4'], 2, None) == ['0,1', '2,3']  # towers of 2
    assert reproduce.device_slots(['0', '1', '2'], 1, 2) == ['0', '1']
    assert reproduce.device_slots([], 1, None) == [None] and reproduce.device_slots([], 1, 3) == [None] * 3
    with pytest.raises(ValueError, match='--gpus_per_run=4: only 2 GPU'):
        reproduce.device_slots(['0', '1'], 4, None)
    assert reproduce.cell_env('3', environ) == {'PATH': '/bin', 'CUDA_VISIBLE_DEVICES': '3'}
    assert reproduce.cell_env(None, {'PATH': '/bin'}) == {'PATH': '/bin'}
    cell = reproduce.Cell('resnet110', 'cifar10', 2)
    assert reproduce.cell_flags(cell, ['--batch_size=64'], gpus_per_run=2) == [
        '--preset=resnet110', '--dataset=cifar10', '--validation_size=5000', '--keep_checkpoint_max=10',
        '--num_gpus=2', '--batch_size=64']
    assert reproduce.cell_flags(cell, ['--validation_size=0', '--num_gpus=4'], gpus_per_run=4) == [
        '--preset=resnet110', '--dataset=cifar10', '--keep_checkpoint_max=10', '--validation_size=0', '--num_gpus=4']


@pytest.mark.timeout(120)
def test_dry_run_prints_the_grid_its_commands_and_an_estimate(tmp_path):
    out = str(tmp_path / 'grid')
    done = grid('--presets=resnet32_classic', '--datasets=digits', '--seeds=1,2', '--gpus=none', '--dry_run',
                '--estimate_steps=1', '--estimate_batch=8', '--out=' + out, '--', *TINY, '--train_steps=40')
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == 'grid: 1 preset(s) x 1 dataset(s) x 2 seed(s) = 2 cells in %s, 1 at a time on the CPU' % out
    assert lines[1] == 'resnet32_classic on digits, seed 1: not started'
    train = lines[2]
    assert train.startswith('  train: ') and '--mode=train --random_seed=1' in train
    assert '--log_root=%s' % os.path.join(out, 'resnet32_classic', 'digits', 'seed-1') in train
    assert '--preset=resnet32_classic --dataset=digits --keep_checkpoint_max=10' in train
    assert lines[3].startswith('  eval: ') and '--mode=eval' in lines[3]
    assert lines[4] == 'resnet32_classic on digits, seed 2: not started'
    assert lines[7].startswith('ESTIMATE (not measured on a real run)')
    estimate = re.match(r'  resnet32_classic \(ResNet-8\): (\d+) images/s; 2 cell\(s\) left, 80 steps of 32 images',
                        lines[8])
    assert estimate and int(estimate.group(1)) > 0, lines[8]
    assert lines[9].startswith('  total: ') and lines[9].endswith('(ESTIMATE)')
    assert not os.path.exists(out)  # nothing trained, nothing written


@pytest.mark.timeout(60)
@pytest.mark.parametrize('args, expected', [
    ([], 'give --presets=a,b,... or --table=NAME (classic), one of them'),
    (['--table=classic', '--presets=resnet110'], 'give --presets=a,b,... or --table=NAME (classic), one of them'),
    (['--table=modern'], '--table=modern: expected one of classic'),
    (['--presets=resnet111'], "--presets=resnet111: 'resnet111' is none of "),
    (['--table=classic', '--datasets=cifar10,mnist'], "--datasets=cifar10,mnist: 'mnist' is none of "),
    (['--table=classic', '--seeds=1,1'], '--seeds=1,1: expected distinct integers'),
    (['--table=classic', '--parallel=0'], '--parallel=0: expected 1 or more'),
    (['--table=classic', '--', '--preset=wrn28_10'], '--preset=wrn28_10: reproduce.py sets it for each cell'),
    (['--table=classic', '--', '--eval_dir=/tmp/x'], '--eval_dir=/tmp/x: reproduce.py sets it for each cell'),
    (['--table=classic', '--', '--train_dir', '/tmp/x'], '--train_dir: reproduce.py sets it for each cell'),
])
def test_bad_options_are_one_line(args, expected):
    done = grid(*args, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith('error: ' + expected), done.stderr
    assert len(done.stderr.splitlines()) == 1


@pytest.mark.timeout(60)
def test_report_without_matplotlib_skips_the_png_in_one_line(tmp_path):
    """--report on a grid not started: every cell shows as such; with no importable matplotlib
    (a package of that name that fails to import, first on the path) no PNG and one line."""
    missing = tmp_path / 'no_matplotlib' / 'matplotlib'
    missing.mkdir(parents=True)
    (missing / '__init__.py').write_text('raise ImportError("no matplotlib here")\n')
    out = tmp_path / 'grid'
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(missing.parent), REPO]))
    done = subprocess.run([sys.executable, SCRIPT, '--table=classic', '--seeds=1,2', '--report', '--out=' + str(out)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert '[grid] no %s: matplotlib is not installed (pip install matplotlib)' % (out / 'table.png') in done.stdout
    assert not (out / 'table.png').exists()
    rows = rows_of(str(out))
    assert list(rows) == [(p, d) for p in ('resnet32_classic', 'resnet110', 'wrn28_10') for d in ('cifar10', 'cifar100')]
    assert [c['state'] for row in rows.values() for c in row['cells']] == ['not started'] * 12
    assert rows[('wrn28_10', 'cifar100')]['published'][0]['error'] == 19.25
    assert '| wrn28_10 | WRN-28-10 | cifar100 | - | 0/2 | 19.25 (Zagoruyko and Komodakis 2016, Table 5) | - | - ' \
           '| seed 1 not started; seed 2 not started |' in done.stdout


@pytest.mark.timeout(30)
def test_the_published_figures_are_in_published_py_only():
    """No figure or source of resnet_cifar/published.py is written again in the script."""
    text = open(SCRIPT).read()
    for figure in published.FIGURES:
        numbers = {'%.2f' % figure.error, '%g' % figure.error, '%g' % (100 - figure.error)}
        for number in (n for n in numbers if '.' in n):  # 7.51, 4.00, 92.5 (not the 4 of '4 GPUs')
            assert not re.search(r'(?<![\d.])%s(?![\d])' % re.escape(number), text), (number, figure)
        assert published.SHORT_NAMES[figure.source] not in text
    for name in ('He, Zhang', 'Zagoruyko', 'Table 6', 'arXiv'):
        assert name not in text


@pytest.mark.timeout(60)
def test_an_out_that_is_a_file_is_one_line_before_anything_runs(tmp_path):
    out = tmp_path / 'grid'
    out.write_text('not a directory')
    for mode in (['--report'], ['--dry_run'], []):
        done = grid('--presets=resnet32_classic', '--datasets=digits', '--seeds=1', '--out=' + str(out), *mode,
                    '--', *TINY, '--train_steps=20', timeout=60)
        assert done.returncode == 2 and done.stderr == 'error: --out=%s: exists and is not a directory\n' % out, \
            done.stderr[-3000:]
        assert done.stdout == '' and out.read_text() == 'not a directory'


@pytest.mark.timeout(30)
def test_the_wall_time_estimate_of_runs_on_several_gpus_each():
    """Slots run side by side; a run of K GPUs holds K of them (towers assumed no faster)."""
    assert reproduce.wall_and_device_seconds(3600.0, 2, 2) == (1800.0, 7200.0)
    assert reproduce.wall_and_device_seconds(3600.0, 4, 1) == (900.0, 3600.0)
    assert reproduce.wall_and_device_seconds(3600.0, 0, 1) == (3600.0, 3600.0)  # a CPU: the runs share it


@pytest.mark.timeout(60)
def test_ctrl_c_during_a_dry_run_is_one_line(tmp_path):
    """A Ctrl-C (SIGINT to its process group, as a terminal sends it) while --dry_run times a preset,
    before any stop signal is handled: no traceback."""
    proc = subprocess.Popen([sys.executable, SCRIPT, '--presets=resnet32_classic', '--datasets=digits', '--seeds=1',
                             '--gpus=none', '--dry_run', '--out=' + str(tmp_path / 'grid'), '--', *TINY],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for line in proc.stdout:
            if line.startswith('ESTIMATE'):  # printed just before benchmark.py starts
                break
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=50)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130 and stderr == 'error: interrupted\n', stderr[-3000:]
