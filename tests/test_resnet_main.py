"""resnet_main.py end to end: real subprocesses, real checkpoints, real event files. Where a test
is about a score and not the process, eval runs main() in this process (no TensorFlow start)."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

import processes
from processes import TINY, eval_precisions, read_scalars, run_main
from resnet_cifar.config import Schedule

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(REPO, 'resnet_main.py')


@pytest.mark.timeout(400)
def test_train_then_eval_once_learns(learnable, tmp_path, capsys):
    train_path, test_path = learnable
    log_root = str(tmp_path / 'run')
    # The learnable images score 0.99 or more after 25 steps (seeds 2 and 3, 2026-12-07).
    train = run_main('--mode=train', '--dataset=cifar10', '--train_data_path=' + train_path,
                     '--log_root=' + log_root, '--train_steps=100', '--random_seed=1', *TINY)
    assert 'step 100/100' in train.stderr
    config = json.load(open(os.path.join(log_root, 'train', 'config.json')))
    assert config['hparams']['num_residual_units'] == 1
    assert config['run_config']['schedule']['train_steps'] == 100

    out = processes.main_stdout(['--mode=eval', '--dataset=cifar10', '--eval_data_path=' + test_path,
                                '--log_root=' + log_root, '--eval_once', '--num_residual_units=1'], capsys)
    scores = eval_precisions(out)
    assert len(scores) == 1, out
    step, precision = scores[0]
    assert step == 100
    assert precision >= 0.9, out
    assert '(200 images' in out  # the whole eval set, exactly once

    # --eval_batch_count scores only that many batches.
    out = processes.main_stdout(['--mode=eval', '--dataset=cifar10', '--eval_data_path=' + test_path,
                                '--log_root=' + log_root, '--eval_once', '--num_residual_units=1',
                                '--eval_batch_count=1', '--batch_size=64'], capsys)
    assert '(64 images' in out, out


@pytest.mark.timeout(400)
def test_train_and_eval_side_by_side(learnable, tmp_path):
    train_path, test_path = learnable
    log_root = str(tmp_path / 'run')
    # Eval starts first: log_root does not exist yet, and it waits.
    evaluator = processes.Process(['--mode=eval', '--dataset=cifar10', '--eval_data_path=' + test_path,
                                '--log_root=' + log_root, '--train_steps=60', '--eval_interval_secs=1',
                                '--num_residual_units=1'])
    try:
        # Training starts once eval says it waits (a fixed sleep let a slow eval start late).
        evaluator.wait_for('waiting for the first checkpoint in ' + re.escape(log_root), timeout=120)
        run_main('--mode=train', '--dataset=cifar10', '--train_data_path=' + train_path,
                 '--log_root=' + log_root, '--train_steps=60', '--save_checkpoints_steps=20', *TINY)
        assert evaluator.wait(180) == 0, evaluator.stderr[-3000:]  # it ends after scoring step 60
        stdout = evaluator.proc.stdout.read()  # a few lines: the pipe never filled
    finally:
        evaluator.kill()
    scores = eval_precisions(stdout)
    steps = [step for step, _ in scores]
    assert steps == [0, 20, 40, 60], stdout  # every checkpoint, oldest first, once

    train_scalars = read_scalars(os.path.join(log_root, 'train'))
    for tag in ('total_loss', 'cross_entropy', 'precision', 'learning_rate', 'examples_per_sec'):
        assert tag in train_scalars, sorted(train_scalars)
    assert 60 in train_scalars['examples_per_sec']
    assert any('queue' in tag for tag in train_scalars), sorted(train_scalars)

    eval_scalars = read_scalars(os.path.join(log_root, 'eval'))
    assert sorted(eval_scalars['Precision']) == sorted(steps)
    for step, precision in scores:
        assert eval_scalars['Precision'][step] == pytest.approx(precision, abs=1e-4)
    best = [eval_scalars['Best Precision'][s] for s in sorted(steps)]
    assert best == sorted(best)
    assert best[-1] == pytest.approx(max(p for _, p in scores), abs=1e-4)
    assert set(eval_scalars['loss']) == set(steps)


@pytest.mark.timeout(400)
def test_resume_continues_step_and_schedule(learnable, tmp_path):
    train_path, _ = learnable
    log_root = str(tmp_path / 'run')
    schedule = ['--lr_boundaries=30,60', '--lr_values=0.1,0.02,0.004']
    # The first part in this process, the resumed one in a process of its own.
    assert processes.main_status(['--mode=train', '--dataset=cifar10', '--train_data_path=' + train_path,
                                  '--log_root=' + log_root, '--train_steps=40', *(TINY + schedule)]) == 0
    assert processes.latest_step(log_root) == 40
    second = run_main('--mode=train', '--dataset=cifar10', '--train_data_path=' + train_path,
                      '--log_root=' + log_root, '--train_steps=80', *(TINY + schedule))
    logged = [(int(m.group(1)), float(m.group(2))) for m in
              re.finditer(r'step (\d+)/80 .*?, lr ([0-9.e-]+),', second.stderr)]
    steps = [s for s, _ in logged]
    assert steps == [50, 60, 70, 80], second.stderr[-3000:]
    for step, lr in logged:
        # The line at step s describes the step that ran at global step s - 1.
        assert lr == pytest.approx(processes.learning_rate_at(step - 1, [30, 60], [0.1, 0.02, 0.004], 1e-4))
    import tensorflow as tf
    assert tf.train.load_variable(tf.train.latest_checkpoint(log_root), 'global_step') == 80
    lr_summaries = read_scalars(os.path.join(log_root, 'train'))['learning_rate']
    assert lr_summaries[70] == pytest.approx(0.004)


def test_learning_rate_schedule():
    boundaries, values = [40000, 60000, 80000], [0.1, 0.01, 0.001, 0.0001]
    rate = lambda step: processes.learning_rate_at(step, boundaries, values, 0.0001)
    assert rate(0) == 0.1
    assert rate(39999) == 0.1
    assert rate(40000) == 0.01
    assert rate(60000) == 0.001
    assert rate(90000) == 0.0001
    assert processes.learning_rate_at(10, [5], [0.1, 1e-6], 1e-4) == 1e-4  # the floor
    with pytest.raises(ValueError, match='increase'):
        Schedule(lr_boundaries=[10, 5], lr_values=[0.1, 0.01, 0.001])
    with pytest.raises(ValueError, match='one more'):
        Schedule(lr_boundaries=[10], lr_values=[0.1])


FLAG_ERRORS = [
    (['--batch_size=0'], '--batch_size=0'),
    (['--train_steps=-5'], '--train_steps=-5'),
    (['--lr_boundaries=100,50'], 'increase'),
    (['--lr_boundaries=100', '--lr_values=0.1'], 'one more'),
    (['--lr_values=0.1,abc', '--lr_boundaries=10'], '--lr_values'),
    (['--lr_values=0.1,nan', '--lr_boundaries=10'], '--lr_values=0.1,nan: expected a list of finite numbers'),
    (['--lr_values=inf,0.1', '--lr_boundaries=10'], '--lr_values=inf,0.1: expected a list of finite numbers'),
    (['--mode=predict'], 'mode'),
    (['--dataset=imagenet'], 'dataset'),
    (['--optimizer=adam'], 'optimizer'),
    (['--train_steps=ten'], 'train_steps'),
    (['--relu_leakiness=1.5'], '--relu_leakiness'),
    (['--moving_average_decay=1'], '--moving_average_decay'),
    (['--num_gpus=64'], '--num_gpus=64'),
    (['--image_size=64'], '--image_size=64'),
    (['--label_mode=coarse'], 'coarse'),
    (['--log_root=' + MAIN], 'not a directory'),
    (['stray_argument'], 'stray_argument'),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize('args, expected', FLAG_ERRORS)
def test_flag_errors_exit_2_with_one_line(args, expected, capsys):
    code, err = processes.main_exit(args, capsys)
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith('error: ') and expected in err, err


@pytest.mark.timeout(120)
@pytest.mark.parametrize('args', [['--mode=predict'], ['--batch_size=-1']])
def test_flag_errors_in_a_real_process(args):
    proc = run_main(*args, check=False, timeout=100)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr


@pytest.mark.timeout(120)
def test_missing_data_names_the_download_command(tmp_path):
    """The default CIFAR-10 run without the data names the command that downloads it. It runs a
    copy of the program without data/, so that the data is certainly missing: with the data
    present the same command would start an 80k-step run."""
    program = str(tmp_path / 'program')
    shutil.copytree(REPO, program, ignore=lambda folder, names: [
        name for name in names if name in ('.git', 'tests', 'runs')
        or (name == 'data' and os.path.samefile(folder, REPO))])
    assert not os.path.exists(os.path.join(program, 'data'))
    proc = subprocess.run([sys.executable, os.path.join(program, 'resnet_main.py'), '--mode=train',
                           '--dataset=cifar10', '--log_root=' + str(tmp_path / 'run')],
                          capture_output=True, text=True, timeout=100, cwd=program)
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
    assert len(lines) == 1 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert os.path.join(program, 'data', 'cifar-10-batches-bin', 'data_batch_*.bin') in lines[0]
    assert lines[0].endswith('get it with: python scripts/download_cifar.py --dataset=cifar10'), lines[0]
    assert not os.path.exists(os.path.join(program, 'data'))  # nothing was downloaded or made


@pytest.mark.timeout(300)
def test_bundled_digits_sample_trains_to_stated_precision(tmp_path, capsys):
    """The README states the sample's precision, and that training ends with it; a short run
    already gets most of the way. Short runs save every tenth of the run, by steps."""
    log_root = str(tmp_path / 'digits')
    train = run_main('--mode=train', '--dataset=digits', '--log_root=' + log_root, '--train_steps=300',
                     '--num_residual_units=1', '--batch_size=32', '--nolr_batch_scaling', '--log_every_n_steps=100')
    held_out = re.findall(r'^held-out precision (0\.\d+|1\.0000) on 300 images of \S+test_batch\.bin '
                          r'\(step 300, loss [\d.]+\)$', train.stdout, re.M)
    assert len(held_out) == 1 and float(held_out[0]) >= 0.95, train.stdout
    # The same checkpoint and images as eval scores: the same number.
    out = processes.main_stdout(['--mode=eval', '--log_root=' + log_root, '--eval_once'], capsys)
    (step, precision), = eval_precisions(out)
    assert (step, '%.4f' % precision) == (300, held_out[0]), out
    assert processes.checkpoint_steps(log_root) == [0, 100, 200, 300]


@pytest.mark.timeout(60)
def test_data_format_defaults_to_nhwc_on_the_cpu(capsys, monkeypatch, tmp_path):
    config = processes.resolve(['--log_root=' + str(tmp_path / 'run')])
    assert config.devices.device == '/cpu:0' and config.model.data_format == 'NHWC'
    assert config.hparams().data_format == 'NHWC'
    code, err = processes.main_exit(['--data_format=NCHW', '--compute_dtype=float16'], capsys)
    assert code == 2 and err.startswith('error: --data_format=NCHW: float16') and 'NHWC' in err, err
    monkeypatch.setenv('TF_ENABLE_ONEDNN_OPTS', '0')
    code, err = processes.main_exit(['--data_format=NCHW'], capsys)
    assert code == 2 and err.startswith('error: --data_format=NCHW:') and 'NHWC' in err, err


@pytest.mark.timeout(400)
def test_nchw_checkpoints_score_in_nhwc(learnable, tmp_path, capsys):
    # The GPU layout trained on the CPU (through oneDNN); eval in the CPU layout reads it and
    # scores it as training's own held-out eval in NCHW did. 50 NCHW steps: each costs several
    # NHWC ones on the CPU, and the learnable images score 0.99 after 25 (2026-12-07).
    train_path, test_path = learnable
    log_root = str(tmp_path / 'run')
    train = run_main('--mode=train', '--dataset=cifar10', '--train_data_path=' + train_path,
                     '--eval_data_path=' + test_path, '--log_root=' + log_root, '--train_steps=50',
                     '--random_seed=2', '--data_format=NCHW', *(TINY + ['--eval_after_training']))
    assert 'step 50/50' in train.stderr
    config = json.load(open(os.path.join(log_root, 'train', 'config.json')))
    assert config['hparams']['data_format'] == 'NCHW'
    [nchw] = re.findall(r'^held-out precision ([0-9.]+) on 200 images .*\(step 50,', train.stdout, re.M)
    out = processes.main_stdout(['--mode=eval', '--dataset=cifar10', '--eval_data_path=' + test_path,
                                '--log_root=' + log_root, '--eval_once', '--num_residual_units=1'], capsys)
    [(step, precision)] = eval_precisions(out)
    assert step == 50 and precision >= 0.8, out
    # The same predictions: at most one of the 200 images may flip between the layouts' round-offs.
    assert precision == pytest.approx(float(nchw), abs=0.0051), (nchw, out)
