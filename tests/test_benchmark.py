"""scripts/benchmark.py runs end to end with tiny settings and reports every figure."""
import functools
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Sane bounds of each rate on any CPU or GPU this runs on, loaded or not: a rate outside them
# is a timing or counting bug (seconds for milliseconds, steps for images, a zero division).
RATE_BOUNDS = {
    'train_images_per_sec_synthetic': (1, 1e5),  # ResNet-8 training: ~74 MFLOPs an image
    'train_images_per_sec': (1, 1e5),
    'eval_images_per_sec': (1, 1e6),
    'input_images_per_sec': (10, 1e8),  # 3 KB records: 1e8/s would be 300 GB/s
    'matmul_gflops': (0.01, 1e6),
    'train_gflops': (1e-4, 1e6),
}


@functools.lru_cache()
def forward_flops(width=1):
    """The forward FLOPs per image of the benchmark's network, as training counts them."""
    import resnet_model
    from resnet_cifar import training
    fields = dict(batch_size=8, num_classes=10, min_lrn_rate=0.0001, lrn_rate=0.1, num_residual_units=1,
                  width=width, use_bottleneck=False, weight_decay_rate=0.0002, relu_leakiness=0.1,
                  optimizer='mom')
    return training.forward_flops_per_image(resnet_model.HParams(**fields))


def assert_plausible(result):
    """Every rate reported is finite and within RATE_BOUNDS, and the derived figures agree
    with the rates they come from."""
    for key, (low, high) in RATE_BOUNDS.items():
        if key in result:
            assert math.isfinite(result[key]) and low < result[key] < high, (key, result[key])
    assert result['matmul_dtype'] == result['compute_dtype']
    if result['matmul_dtype'] == 'float32':
        assert result['matmul_gflops'] == max(result['matmul_gflops_numpy'], result['matmul_gflops_tensorflow'])
    else:  # like with like: numpy has no bfloat16 or float16 matmul
        assert result['matmul_gflops'] == result['matmul_gflops_tensorflow']
    assert result['matmul_gflops_float32'] >= result['matmul_gflops_numpy']
    assert result['train_gflops'] == pytest.approx(
        result['train_images_per_sec_synthetic'] * result['train_flops_per_image'] / 1e9)
    assert result['efficiency'] == pytest.approx(result['train_gflops'] / result['matmul_gflops'])
    if 'train_images_per_sec' in result:
        assert result['real_over_synthetic'] == pytest.approx(
            result['train_images_per_sec'] / result['train_images_per_sec_synthetic'])
    assert result['cpu_count'] == os.cpu_count() and result['device'] == 'cpu'
    assert (result['windows'], result['steps_per_window']) == (2, 2)

KEYS = ('train_images_per_sec_synthetic', 'train_images_per_sec', 'input_images_per_sec',
        'eval_images_per_sec', 'matmul_gflops', 'train_gflops', 'train_flops_per_image', 'efficiency',
        'depth', 'batch_size', 'input_threads', 'stage_input', 'data_format', 'compute_dtype', 'onednn', 'xla',
        'tensorflow', 'device', 'compute_dtype_choice', 'cpu', 'breakdown_top_ops_ms', 'breakdown_stages_ms',
        'breakdown_sum_ms', 'traced_step_ms', 'step_ms_synthetic', 'torch_peer', 'matmul_dtype',
        'matmul_gflops_float32', 'relu_leakiness')


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
    assert result['depth'] == 8 and result['batch_size'] == 8 and result['width'] == 1
    from resnet_cifar import cpu
    auto = cpu.auto_compute_dtype('train', False, cpu.cpu_flags())
    assert (result['data_format'], result['compute_dtype'], result['compute_dtype_choice']) == ('NHWC',) + auto
    assert 'PyTorch peer' not in proc.stdout or 'torch_train_images_per_sec' in result
    # The traced step's op times add up to about the measured step (ops may overlap on two
    # threads, and tracing costs a little): not a tenth of it, not three times it.
    assert 0.5 < result['breakdown_sum_ms'] / result['step_ms_synthetic'] < 3, result
    assert sum(result['breakdown_stages_ms'].values()) == pytest.approx(result['breakdown_sum_ms'])
    assert result['breakdown_stages_ms']['backward'] > result['breakdown_stages_ms']['forward'] > 0
    top = result['breakdown_top_ops_ms']
    assert len(top) == 10 and any('Conv2D' in op for op in top) and sum(top.values()) <= result['breakdown_sum_ms']
    assert result['step_ms_synthetic'] == pytest.approx(8000.0 / result['train_images_per_sec_synthetic'])
    assert result['onednn'] is True and result['xla'] is False and result['stage_input'] is False
    assert_plausible(result)
    # The forward pass alone costs about a third of a training step, and the windows of both are
    # interleaved (a load hits both): eval must be the faster, by far (about 4x here).
    assert result['eval_images_per_sec'] > 1.5 * result['train_images_per_sec_synthetic'], result
    assert result['input_over_train'] == pytest.approx(
        result['input_images_per_sec'] / result['train_images_per_sec'])
    # A training step costs about 3x the forward pass (25 MFLOPs per image for ResNet-8).
    assert 2.5 < result['train_flops_per_image'] / forward_flops() < 3.5, result['train_flops_per_image']


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
    assert 'input_images_per_sec' not in result and 'eval_images_per_sec' not in result  # skipped
    assert_plausible(result)
    # Width 2 has about 4x the convolution work of ResNet-8; training about 3x the forward pass.
    assert 2.5 < result['train_flops_per_image'] / forward_flops(width=2) < 3.5, result['train_flops_per_image']


@pytest.mark.timeout(60)
def test_benchmark_rejects_nchw_on_cpu_without_onednn():
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'scripts', 'benchmark.py'),
                           '--data_format=NCHW', '--onednn=off'], capture_output=True, text=True, timeout=50)
    assert proc.returncode == 2
    assert 'NCHW' in proc.stderr.strip().splitlines()[-1]


@pytest.mark.timeout(120)
def test_the_pytorch_peer_is_skipped_cleanly_without_pytorch():
    """PyTorch is no dependency: where it cannot be imported, the run says so and goes on."""
    try:
        import torch  # noqa: F401
        pytest.skip('PyTorch is importable here: the peer runs')
    except ImportError:
        pass
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, 'scripts', 'benchmark.py'), '--num_residual_units=1', '--batch_size=8',
         '--warmup_steps=1', '--steps=1', '--windows=1', '--matmul_size=64', '--skip=real,input,eval,breakdown'],
        capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result['torch_peer'] == "PyTorch is not importable here (No module named 'torch')"
    assert 'torch_train_images_per_sec' not in result
    assert "peer: PyTorch is not importable here" in proc.stdout


@pytest.mark.timeout(120)
def test_the_stage_breakdown_counts_the_batch_norm_statistics_as_update():
    import processes
    import resnet_model
    import tensorflow as tf
    benchmark = processes.load_script('benchmark')
    hps = resnet_model.HParams(batch_size=4, num_classes=10, min_lrn_rate=0.0001, lrn_rate=0.1,
                               num_residual_units=1, use_bottleneck=False, weight_decay_rate=0.0002,
                               relu_leakiness=0.1, optimizer='mom')
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [4, 32, 32, 3])
        labels = tf.compat.v1.placeholder(tf.float32, [4, 10])
        model = resnet_model.ResNet(hps, images, labels, 'train')
        model.build_graph()
        assert len(model.step.bn_update_ops) == 2 * 7  # mean and variance of 7 batch norms
        for update in model.step.bn_update_ops:
            delta = update.op.inputs[1].op  # (moving - batch value) * (1 - decay)
            for op in (update.op, delta, delta.inputs[0].op):
                assert benchmark.stage_of(op.name) == 'update', op.name


@pytest.mark.timeout(10)
@pytest.mark.parametrize('dtype, peak', [('float32', 30.0), ('bfloat16', 120.0), ('float16', 5.0)])
def test_efficiency_is_against_the_peak_of_the_dtype_trained_in(dtype, peak):
    """Issue 30: a bfloat16 run divided by the float32 peak printed 0.96 where its own dtype's
    peak gives about 0.4."""
    import processes
    benchmark = processes.load_script('benchmark')
    timed = {'matmul_flops_numpy': 25e9, 'matmul_flops_tensorflow_float32': 30e9, 'other': 1.0}
    if dtype != 'float32':
        timed['matmul_flops_tensorflow'] = peak * 1e9
    figures = benchmark.matmul_peak(timed, dtype)
    assert figures['matmul_gflops'] == pytest.approx(peak) and figures['matmul_dtype'] == dtype
    assert figures['matmul_gflops_float32'] == pytest.approx(30.0)
    assert figures['matmul_gflops_numpy'] == pytest.approx(25.0)
    assert figures['matmul_gflops_tensorflow'] == pytest.approx(30.0 if dtype == 'float32' else peak)
    assert timed == {'other': 1.0}


@pytest.mark.timeout(60)
@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_the_matmul_peak_runs_in_the_dtype_asked_for(dtype):
    import processes
    import tensorflow as tf
    benchmark = processes.load_script('benchmark')
    args = benchmark.parse_args(['--matmul_size=64', '--compute_dtype=' + dtype])
    bench = benchmark.Bench(args, tf, None, None, None)
    _, session_step, flops = bench.matmul(dtype)
    assert flops == 2.0 * 64 ** 3
    with session_step as run_step:
        matmuls = [op for op in run_step.session.graph.get_operations() if op.type == 'MatMul']
        assert [op.get_attr('T') for op in matmuls] == [tf.as_dtype(dtype)]
        assert np.isfinite(run_step())


@pytest.mark.timeout(60)
@pytest.mark.parametrize('leakiness, leaky_count', [(0.0, 0), (0.2, 6)])
def test_the_benchmark_times_the_network_of_its_relu_leakiness(leakiness, leaky_count):
    """ResNet-8 has 7 activations: two in each of its 3 units, all leaky unless the slope is 0,
    and the last one, always a plain ReLU."""
    import processes
    import resnet_model
    import tensorflow as tf
    benchmark = processes.load_script('benchmark')
    args = benchmark.parse_args(['--num_residual_units=1', '--batch_size=2', '--compute_dtype=float32',
                                 '--relu_leakiness=%g' % leakiness])
    bench = benchmark.Bench(args, tf, None, resnet_model, None)
    graph, _ = bench.synthetic_graph()
    leaky = [op for op in graph.get_operations() if op.type == 'LeakyRelu']
    assert (len(leaky), len([op for op in graph.get_operations() if op.type == 'Relu'])) == (leaky_count,
                                                                                           7 - leaky_count)
    assert {op.get_attr('alpha') for op in leaky} <= {np.float32(leakiness)}


@pytest.mark.timeout(30)
def test_a_relu_leakiness_out_of_range_is_a_usage_error():
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'scripts', 'benchmark.py'), '--relu_leakiness=1'],
                          capture_output=True, text=True, timeout=25)
    assert proc.returncode == 2
    assert '--relu_leakiness=1: expected a number from 0 up to (not including) 1' in proc.stderr
