"""scripts/multi_seed.py: one configuration, several seeds, the mean and spread of what it reaches."""
import json
import os
import re
import statistics
import signal
import subprocess
import sys

import pytest

from processes import REPO, checkpoint_steps

SCRIPT = os.path.join(REPO, 'scripts', 'multi_seed.py')


def multi_seed(*args, timeout=400):
    return subprocess.run([sys.executable, SCRIPT] + list(args), capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.timeout(420)
def test_two_seeds_give_a_table_and_a_json_of_means_and_spreads(tmp_path):
    out = str(tmp_path / 'report.json')
    done = multi_seed('--seeds=3,4', '--parallel=2', '--target=0.3', '--log_root=' + str(tmp_path / 'runs'),
                      '--out=' + out, '--', '--dataset=digits', '--num_residual_units=1', '--batch_size=32',
                      '--nolr_batch_scaling', '--train_steps=40', '--save_checkpoints_steps=10',
                      '--validation_size=200')
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.load(open(out))
    runs = report['runs']
    assert [r['seed'] for r in runs] == [3, 4]
    for r in runs:
        assert os.path.isdir(r['log_root']) and r['log_root'].endswith('seed-%d' % r['seed'])
        results = json.load(open(os.path.join(r['log_root'], 'eval', 'results.json')))
        # The test score of the checkpoint chosen on validation, as eval recorded it.
        assert (r['test_precision'], r['test_step']) == (results['test']['precision'], results['test']['step'])
        assert 'validation' in r['chosen_on']
        reached = [e['step'] for e in results['checkpoints'] if e['precision'] >= 0.3]
        assert r['target_step'] == (reached[0] if reached else None)
        assert r['seconds_to_target'] is None or 0 < r['seconds_to_target'] < r['train_seconds']
        assert r['images_per_sec'] > 0
    precisions = [r['test_precision'] for r in runs]
    summary = report['summary']['test_precision']
    assert summary == {'mean': pytest.approx(statistics.mean(precisions)),
                       'std': pytest.approx(statistics.stdev(precisions)), 'n': 2}
    # The table: a row per seed, then the mean and the std, with the same figures.
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line.strip()}
    assert rows['3'][1] == '%.4f' % precisions[0] and rows['4'][1] == '%.4f' % precisions[1]
    assert rows['mean'][1] == '%.4f' % summary['mean'] and rows['std'][1] == '%.4f' % summary['std']
    assert re.search(r'^\[seed 4 train\] ', done.stdout, re.M)  # each process's log, prefixed
    assert 'wrote %s' % out in done.stdout


@pytest.mark.timeout(60)
@pytest.mark.parametrize('args, expected', [
    (['--seeds=1,x'], '--seeds=1,x: expected comma-separated integers'),
    (['--seeds=1,1'], '--seeds=1,1: expected distinct integers'),
    (['--target=2'], '--target=2: expected a precision in (0, 1]'),
    (['--', '--random_seed=5'], '--random_seed=5: multi_seed.py sets it for each seed; leave it out'),
    # absl also takes a flag's value as the next argument, and one dash.
    (['--', '--log_root', 'elsewhere', '--batch_size=0'],
     '--log_root: multi_seed.py sets it for each seed; leave it out'),
    (['--', '-mode=eval', '--batch_size=0'], '-mode=eval: multi_seed.py sets it for each seed; leave it out'),
])
def test_bad_options_are_one_line(args, expected):
    done = multi_seed(*args)
    assert done.returncode == 2 and done.stderr == 'error: %s\n' % expected


@pytest.mark.timeout(120)
def test_a_failing_seed_is_one_line_naming_it(tmp_path):
    done = multi_seed('--seeds=7', '--log_root=' + str(tmp_path), '--', '--dataset=digits', '--batch_size=0')
    assert done.returncode == 1
    assert done.stderr == 'error: seed 7: train failed (exit 2): error: --batch_size=0: expected a positive integer\n'
    assert not os.path.exists(str(tmp_path / 'multi_seed.json'))


@pytest.mark.timeout(60)
def test_a_seed_directory_that_is_not_empty_is_refused(tmp_path):
    """A finished run there would be scored again with a new start time: negative times. Seed 7's
    directory is checked before seed 6 trains, not after."""
    (tmp_path / 'seed-7').mkdir()
    (tmp_path / 'seed-7' / 'checkpoint').write_text('')
    done = multi_seed('--seeds=6,7', '--log_root=' + str(tmp_path), '--', '--dataset=digits')
    assert done.returncode == 1
    assert done.stderr == ('error: seed 7: %s is not empty; its times would be wrong: choose another '
                           '--log_root or delete it\n' % (tmp_path / 'seed-7'))
    assert not (tmp_path / 'seed-6').exists()


@pytest.mark.timeout(300)
def test_ctrl_c_after_a_seed_finished_keeps_its_figures(tmp_path):
    """Started with SIGINT ignored, as a job started with `&` by a shell without job control is (the
    suite run so): the script still takes Ctrl-C. (Issue 27: it then ran both seeds to the end,
    exit 0.) Seed 6 gets the signal while it starts or once it trains; either way it ends, with
    one line or with a checkpoint that the last line names."""
    out = str(tmp_path / 'report.json')
    proc = subprocess.Popen(['/bin/sh', '-c', 'trap "" INT; exec "$@"', 'sh', sys.executable, SCRIPT,
                             '--seeds=5,6', '--log_root=' + str(tmp_path), '--out=' + out,
                             '--', '--dataset=digits', '--num_residual_units=1', '--batch_size=32',
                             '--nolr_batch_scaling', '--train_steps=30', '--save_checkpoints_steps=10'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # seed 5 is trained and scored before seed 6 starts
            if line.startswith('[seed 6 train]'):
                break
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1, stderr[-3000:]
    assert re.fullmatch(r'error: stopped by Ctrl-C(; seed 6: training stopped at step \d+; checkpoint \S+ saved)?'
                        r'; the finished seeds are in %s' % re.escape(out), stderr.splitlines()[-1]), stderr[-3000:]
    report = json.load(open(out))
    assert [r['seed'] for r in report['runs']] == [5] and report['seeds'] == [5, 6]
    assert report['failed'] == 'stopped by Ctrl-C'
    results = json.load(open(os.path.join(str(tmp_path / 'seed-5'), 'eval', 'results.json')))
    assert report['runs'][0]['test_precision'] == results['latest']['precision']
    rows = {line.split()[0]: line.split() for line in stdout.splitlines() if line.strip()}
    assert rows['5'][1] == '%.4f' % results['latest']['precision'] and '6' not in rows


@pytest.mark.timeout(300)
def test_ctrl_c_in_a_terminal_ends_the_running_seed_with_a_checkpoint(tmp_path):
    """A terminal's Ctrl-C goes to the whole process group. The training seed saves a checkpoint
    of the step it stopped at, and the report names it. (Issue 26: the trainer got the terminal's
    SIGINT, then the script's SIGTERM as a second signal, and exited without saving.) The log root
    holds a space: the checkpoint's path is read from the trainer's line all the same."""
    log_root = tmp_path / 'multi seed runs'
    proc = subprocess.Popen([sys.executable, SCRIPT, '--seeds=8,9', '--log_root=' + str(log_root),
                             '--', '--dataset=digits', '--num_residual_units=1', '--batch_size=32',
                             '--nolr_batch_scaling', '--train_steps=100000', '--save_checkpoints_steps=100000',
                             '--log_every_n_steps=1'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own group, as a terminal's foreground job has
    try:
        for line in proc.stdout:
            if re.match(r'\[seed 8 train\] .*step 3/100000', line):
                break
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 1, stderr[-3000:]
    stopped = re.fullmatch(r'error: stopped by Ctrl-C; seed 8: training stopped at step (\d+); checkpoint (.+) saved',
                           stderr.splitlines()[-1])
    assert stopped, stderr[-3000:]
    step, checkpoint = int(stopped.group(1)), stopped.group(2)
    assert step >= 3 and checkpoint == str(log_root / 'seed-8' / ('model.ckpt-%d' % step))
    assert checkpoint_steps(str(log_root / 'seed-8'))[-1] == step
    assert re.search(r'^\[seed 8 train\] .*SIGINT: saving a checkpoint after this step', stdout, re.M)
    assert not (log_root / 'seed-9').exists()
