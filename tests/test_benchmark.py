"""scripts/benchmark.py runs end to end with tiny settings and reports every figure."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

KEYS = ('train_images_per_sec_synthetic', 'train_images_per_sec', 'input_images_per_sec',
        'eval_images_per_sec', 'matmul_gflops', 'train_gflops', 'train_flops_per_image', 'efficiency',
        'depth', 'batch_size', 'input_threads', 'stage_input', 'data_format', 'compute_dtype', 'onednn', 'xla', 'tensorflow', 'device')


@pytest.mark.timeout(180)
def test_benchmark_prints_json_with_every_key():
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, 'scripts', 'benchmark.py'), '--num_residual_units=1',
         '--batch_size=8', '--eval_batch_size=8', '--warmup_steps=1', '--steps=2', '--windows=2',
         '--num_records=500', '--matmul_size=128'],
        capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert 'train, in-memory input' in proc.stdout
    result = json.loads(lines[-1])
    for key in KEYS:
        assert key in result, key
    assert result['depth'] == 8 and result['batch_size'] == 8
    for key in KEYS[:8]:
        assert result[key] > 0, key
    # A ResNet-8 training step costs roughly 3x its forward pass: tens of MFLOPs per image.
    assert 1e7 < result['train_flops_per_image'] < 1e9
    assert result['efficiency'] == pytest.approx(result['train_gflops'] / result['matmul_gflops'])


@pytest.mark.timeout(180)
def test_benchmark_nchw_wide_and_staged():
    # The profiler misses NCHW gradient shapes; the benchmark counts on the NHWC twin.
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, 'scripts', 'benchmark.py'), '--num_residual_units=1',
         '--width=2', '--data_format=NCHW', '--compute_dtype=bfloat16', '--batch_size=8', '--warmup_steps=1', '--steps=2',
         '--windows=2', '--matmul_size=128', '--num_records=500', '--stage_input=on',
         '--skip=input,eval'],
        capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'WRN-8-2, batch 8, NCHW, bfloat16' in proc.stdout
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result['data_format'] == 'NCHW' and result['width'] == 2
    assert result['compute_dtype'] == 'bfloat16'
    assert result['stage_input'] is True
    assert result['train_images_per_sec_synthetic'] > 0 and result['train_images_per_sec'] > 0
    # Width 2 has about 4x the convolution work of ResNet-8's tens of MFLOPs.
    assert 1e8 < result['train_flops_per_image'] < 2e9


@pytest.mark.timeout(60)
def test_benchmark_rejects_nchw_on_cpu_without_onednn():
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'scripts', 'benchmark.py'),
                           '--data_format=NCHW', '--onednn=off'], capture_output=True, text=True, timeout=50)
    assert proc.returncode == 2
    assert 'NCHW' in proc.stderr.strip().splitlines()[-1]
