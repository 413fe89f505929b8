#!/usr/bin/env python3
"""Measures how fast this suite trains a ResNet, and how that compares to the hardware.

    python scripts/benchmark.py                      # ResNet-32, batch 128, under 3 minutes
    python scripts/benchmark.py --xla --intra_threads=2

One process, one run: every figure is the median of several timed windows
taken after warm-up, and the windows of the figures take turns (synthetic,
real, eval, matmul, synthetic, ...), so a load that comes and goes on a shared
machine touches every figure alike and the ratios between them are fair. Before
each timed window of the real pipeline, untimed steps take the batches its
queue gathered while the other figures ran. The input pipeline alone is timed
first, on its own.
It prints a table, then one JSON object as the last line:

  train_images_per_sec_synthetic  training steps fed from in-memory tensors (the ceiling)
  train_images_per_sec            the train op fed by the real queue pipeline (50,000 records)
  input_images_per_sec            the train-mode input pipeline alone
  eval_images_per_sec             eval-mode forward passes
  matmul_gflops, matmul_dtype     the peak in the dtype trained in (compute_dtype): for float32 the
                                  better of a matmul through numpy and TensorFlow, for bfloat16 and
                                  float16 TensorFlow's (numpy has neither); matmul_gflops_float32 is
                                  the float32 peak (numpy's or TensorFlow's) beside it
  train_flops_per_image           forward plus backward, counted from the graph by TF's profiler
  train_gflops, efficiency        train_flops_per_image * rate, and its share of matmul_gflops
                                  (like with like: a bfloat16 run against the bfloat16 peak)
  relu_leakiness                  the network's leaky-ReLU slope (0: plain ReLU), the peer's too
  compute_dtype, compute_dtype_choice   the dtype timed, and why (auto picks it from the CPU flags)
  breakdown_top_ops_ms            a traced in-memory training step: ms per op type, the top 10
  breakdown_stages_ms             the same by stage: forward, backward, update
  breakdown_sum_ms, traced_step_ms   all traced op time summed, and the traced step's wall time
                                  (--inter_threads=1 runs one op at a time: then the sum is the step)
  torch_train_images_per_sec      when PyTorch is importable: the same network's training step in
                                  PyTorch (scripts/torch_resnet.py), timed in turns with the others;
                                  torch_peer says which PyTorch, or why the peer was skipped
  torch_breakdown_top_ops_ms, torch_breakdown_sum_ms   the peer's step by op (its own CPU time,
                                  torch.profiler), the top 10, and all summed; or
                                  torch_breakdown_error, why the profiler failed
"""
import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time

from resnet_cifar import cpu  # no TensorFlow in it

# Batches a full train queue gives before its readers must keep up: cifar_input's
# shuffle queue holds 16 batches and keeps half of them.
READY_BATCHES = 8


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--num_residual_units', type=int, default=5, help='n: depth 6n+2 (5 = ResNet-32)')
    parser.add_argument('--width', type=int, default=1, help='k: filters times k (n=4, k=10 is WRN-28-10)')
    parser.add_argument('--batch_size', type=int, default=128)
    parser.add_argument('--eval_batch_size', type=int, default=100)
    parser.add_argument('--warmup_steps', type=int, default=5)
    parser.add_argument('--steps', type=int, default=8, help='steps per timed window')
    parser.add_argument('--windows', type=int, default=9, help='timed windows; the median is reported')
    parser.add_argument('--num_records', type=int, default=50000, help='records in the real-pipeline file')
    parser.add_argument('--device', choices=['cpu', 'gpu'], default='cpu')
    parser.add_argument('--data_format', choices=['NHWC', 'NCHW'], default=None,
                        help='default: NHWC on cpu, NCHW on gpu')
    parser.add_argument('--compute_dtype', choices=['auto', 'float32', 'float16', 'bfloat16'], default='auto',
                        help='precision of convolutions and batch norm, as resnet_main.py --compute_dtype '
                             '(auto: bfloat16 on CPUs with bfloat16 instructions, else float32)')
    parser.add_argument('--stage_input', choices=['on', 'off'], default=None,
                        help='the real pipeline through a staging area on the device (staging.py); '
                             'default: on for gpu, off for cpu, as in resnet_main.py')
    parser.add_argument('--xla', action='store_true', help='session-level XLA JIT compilation')
    parser.add_argument('--onednn', choices=['on', 'off'], default='on',
                        help='TF_ENABLE_ONEDNN_OPTS, set before TensorFlow is imported')
    parser.add_argument('--intra_threads', type=int, default=0, help='0 = TensorFlow chooses')
    parser.add_argument('--inter_threads', type=int, default=0, help='0 = TensorFlow chooses')
    parser.add_argument('--input_threads', type=int, default=None, help='reader threads; default per cifar_input')
    parser.add_argument('--matmul_size', type=int, default=2048)
    parser.add_argument('--relu_leakiness', type=float, default=0.1,
                        help="the leaky ReLU's slope for negative inputs, in this suite and the PyTorch "
                             'peer alike (0: plain ReLU, the network of He et al.)')
    parser.add_argument('--skip', default='',
                        help='comma-separated parts to skip: synthetic,real,input,eval,breakdown,torch')
    args = parser.parse_args(argv)
    args.compute_dtype, args.compute_dtype_choice = (
        cpu.auto_compute_dtype('train', args.device == 'gpu', cpu.cpu_flags(), args.onednn == 'on')
        if args.compute_dtype == 'auto'
        else (args.compute_dtype, 'asked for'))
    for name in ('num_residual_units', 'width', 'batch_size', 'eval_batch_size', 'steps', 'windows', 'num_records',
                 'matmul_size'):
        if getattr(args, name) < 1:
            parser.error('--%s=%d: expected a positive integer' % (name, getattr(args, name)))
    if not 0 <= args.relu_leakiness < 1:
        parser.error('--relu_leakiness=%g: expected a number from 0 up to (not including) 1' % args.relu_leakiness)
    if args.input_threads is not None and args.input_threads < 1:
        parser.error('--input_threads=%d: expected a positive integer' % args.input_threads)
    for name in ('intra_threads', 'inter_threads'):
        if getattr(args, name) < 0:
            parser.error('--%s=%d: expected 0 (TensorFlow chooses) or more' % (name, getattr(args, name)))
    args.stage_input = (args.device == 'gpu') if args.stage_input is None else args.stage_input == 'on'
    if args.data_format is None:
        args.data_format = 'NCHW' if args.device == 'gpu' else 'NHWC'
    if args.device == 'cpu' and args.data_format == 'NCHW' and args.onednn == 'off':
        parser.error('--data_format=NCHW: on the CPU only oneDNN has NCHW kernels; drop --onednn=off')
    if args.device == 'cpu' and args.data_format == 'NCHW' and args.compute_dtype == 'float16':
        parser.error('--data_format=NCHW: float16 on the CPU runs on generic kernels that pool NHWC only')
    return args


def interleaved_medians(run_steps, warmup_steps, steps, windows):
    """{name: median items/s} of several measurements whose windows take turns.

    run_steps: {name: (run_step, items_per_step)} or (run_step, items_per_step,
    settle_steps). Each run_step is called warmup_steps times first; then each
    of `windows` rounds, every run_step in turn makes settle_steps untimed calls
    and `steps` timed ones. A queue-fed step settles: while the other figures
    ran, its queue filled up for free, and the untimed calls take those batches
    so that a slow input shows in the timed ones.
    """
    run_steps = {name: tuple(spec) + (0,) * (3 - len(spec)) for name, spec in run_steps.items()}
    for run_step, _, _ in run_steps.values():
        for _ in range(warmup_steps):
            run_step()
    rates = {name: [] for name in run_steps}
    for _ in range(windows):
        for name, (run_step, items_per_step, settle_steps) in run_steps.items():
            for _ in range(settle_steps):
                run_step()
            start = time.perf_counter()
            for _ in range(steps):
                run_step()
            rates[name].append(steps * items_per_step / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in rates.items()}


class Bench(object):
    """Builds each measured graph in its own tf.Graph and times it."""

    def __init__(self, args, tf, cifar_input, resnet_model, staging):
        self.args, self.tf, self.cifar_input, self.resnet_model = args, tf, cifar_input, resnet_model
        self.staging = staging
        self.device = '/gpu:0' if args.device == 'gpu' else '/cpu:0'

    def session_config(self):
        tf = self.tf
        config = tf.compat.v1.ConfigProto(allow_soft_placement=True,
                                          intra_op_parallelism_threads=self.args.intra_threads,
                                          inter_op_parallelism_threads=self.args.inter_threads)
        if self.args.xla:
            config.graph_options.optimizer_options.global_jit_level = tf.compat.v1.OptimizerOptions.ON_1
        return config

    def hparams(self, batch_size):
        return self.resnet_model.HParams(
            batch_size=batch_size, num_classes=10, min_lrn_rate=0.0001, lrn_rate=0.1,
            num_residual_units=self.args.num_residual_units, width=self.args.width, use_bottleneck=False,
            weight_decay_rate=0.0002, relu_leakiness=self.args.relu_leakiness, optimizer='mom',
            data_format=self.args.data_format, compute_dtype=self.args.compute_dtype)

    def in_memory_batch(self, batch_size):
        """Random images and one-hot labels held in variables on the device."""
        tf = self.tf
        images = tf.Variable(tf.random.normal([batch_size, 32, 32, 3]), trainable=False)
        labels = tf.Variable(tf.one_hot(tf.random.uniform([batch_size], 0, 10, tf.int32), 10),
                             trainable=False)
        return images.read_value(), labels.read_value()

    @contextlib.contextmanager
    def session_step(self, graph, fetch, with_queues=False, prime=None):
        """Yields run_step(), one session.run(fetch) in an initialized session of `graph`
        (run_step.session is that session).

        with_queues starts the queue runners (stopped through a Coordinator on
        exit); `prime` runs once after they start.
        """
        tf = self.tf
        with graph.as_default():
            init = [tf.compat.v1.global_variables_initializer(), tf.compat.v1.local_variables_initializer()]
        with tf.compat.v1.Session(graph=graph, config=self.session_config()) as session:
            session.run(init)
            coord = tf.compat.v1.train.Coordinator()
            threads = tf.compat.v1.train.start_queue_runners(session, coord=coord) if with_queues else []
            try:
                if prime is not None:
                    session.run(prime)
                run_step = lambda: session.run(fetch)  # noqa: E731
                run_step.session = session
                yield run_step
            finally:
                coord.request_stop()
                coord.join(threads, stop_grace_period_secs=10)

    def synthetic_graph(self):
        tf, batch = self.tf, self.args.batch_size
        graph = tf.Graph()
        with graph.as_default(), tf.compat.v1.device(self.device):
            model = self.resnet_model.ResNet(self.hparams(batch), *self.in_memory_batch(batch), 'train')
            model.build_graph()
        return graph, model.train_op

    def train_synthetic(self):
        """A session_step of training from in-memory tensors."""
        return self.session_step(*self.synthetic_graph())

    def step_breakdown(self, traced_steps=3):
        """Where a training step from in-memory input spends its time, from TensorFlow's step trace.

        Returns ({op type: ms per step}, {stage: ms per step}, traced wall ms per step): each op's
        time from its start to its end on its thread, summed over its type and over the stage its
        name puts it in (forward, backward: the gradients, update: optimizer, moving averages and
        batch-norm statistics). Ops run on several threads at once, so the sums can exceed the
        wall time of the step; tracing itself slows the step a little.
        """
        tf = self.tf
        graph, train_op = self.synthetic_graph()
        by_type, by_stage, wall = {}, {}, 0.0
        options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
        with self.session_step(graph, train_op) as run_step:
            for _ in range(self.args.warmup_steps):
                run_step()
            for _ in range(traced_steps):
                metadata = tf.compat.v1.RunMetadata()
                run_step.session.run(train_op, options=options, run_metadata=metadata)
                wall += _add_op_times(metadata.step_stats, by_type, by_stage)
        per_step = lambda times: {k: v / traced_steps for k, v in times.items()}  # noqa: E731
        return per_step(by_type), per_step(by_stage), wall / traced_steps

    def train_flops_per_image(self):
        """Forward plus backward FLOPs per image, counted by TF's profiler.

        Counted on an NHWC float32 graph of the same network: the profiler misses
        NCHW gradient shapes, and the arithmetic is the same in every layout and dtype.
        """
        tf, batch = self.tf, self.args.batch_size
        hps = self.hparams(batch)._replace(data_format='NHWC', compute_dtype='float32')
        graph = tf.Graph()
        with graph.as_default():
            images = tf.compat.v1.placeholder(tf.float32, [batch, 32, 32, 3])
            labels = tf.compat.v1.placeholder(tf.float32, [batch, 10])
            self.resnet_model.ResNet(hps, images, labels, 'train').build_graph()
            options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
            options['output'] = 'none'
            return tf.compat.v1.profiler.profile(graph, options=options).total_float_ops / batch

    def train_real(self, data_path):
        tf, batch = self.tf, self.args.batch_size
        graph = tf.Graph()
        with graph.as_default():
            with tf.compat.v1.device('/cpu:0'):
                images, labels = self.cifar_input.build_input('cifar10', data_path, batch, 'train',
                                                              num_threads=self.args.input_threads)
                if self.args.stage_input:
                    images, labels = self.staging.stage(images, labels, self.device)
            with tf.compat.v1.device(self.device):
                model = self.resnet_model.ResNet(self.hparams(batch), images, labels, 'train')
                model.build_graph()
            put_ops = self.staging.put_ops() or None
        return self.session_step(graph, [model.train_op, put_ops or []], with_queues=True, prime=put_ops)

    def input_only(self, data_path):
        tf, batch = self.tf, self.args.batch_size
        graph = tf.Graph()
        with graph.as_default(), tf.compat.v1.device('/cpu:0'):
            images, labels = self.cifar_input.build_input('cifar10', data_path, batch, 'train',
                                                          num_threads=self.args.input_threads)
            fetch = tf.group(images, labels)
        return self.session_step(graph, fetch, with_queues=True)

    def eval_forward(self):
        tf, batch = self.tf, self.args.eval_batch_size
        graph = tf.Graph()
        with graph.as_default(), tf.compat.v1.device(self.device):
            model = self.resnet_model.ResNet(self.hparams(batch), *self.in_memory_batch(batch), 'eval')
            model.build_graph()
        return self.session_step(graph, model.logits.op)

    def matmul(self, dtype='float32'):
        """(numpy float32 run_step, TensorFlow session_step in `dtype`, FLOPs per step) of an
        n x n matmul (n = --matmul_size)."""
        import numpy as np
        tf, n = self.tf, self.args.matmul_size
        a = np.random.rand(n, n).astype(np.float32)
        b = np.random.rand(n, n).astype(np.float32)
        graph = tf.Graph()
        with graph.as_default(), tf.compat.v1.device(self.device):
            # Variables, not constants, which grappler would fold; cast once, when initialized.
            a_in, b_in = (tf.Variable(tf.cast(value, dtype), trainable=False) for value in (a, b))
            product = tf.matmul(a_in, b_in)
            fetch = tf.reduce_sum(tf.cast(product[0, :1], tf.float32))  # a scalar, not n*n numbers
        return (lambda: a @ b), self.session_step(graph, fetch), 2.0 * n ** 3


def _add_op_times(step_stats, by_type, by_stage):
    """Adds each traced op's milliseconds to its type and its stage; returns the step's wall ms."""
    starts, ends = [], []
    for device in step_stats.dev_stats:
        if 'stream:' in device.device:  # a GPU's streams repeat the ops of its device entry
            continue
        for node in device.node_stats:
            if node.node_name in ('_SOURCE', '_SINK'):
                continue
            label = node.timeline_label.split(' = ', 1)
            op_type = label[1].split('(', 1)[0] if len(label) == 2 else node.node_name.split(':')[0]
            ms = node.all_end_rel_micros / 1000.0
            by_type[op_type] = by_type.get(op_type, 0.0) + ms
            stage = stage_of(node.node_name)
            by_stage[stage] = by_stage.get(stage, 0.0) + ms
            starts.append(node.all_start_micros)
            ends.append(node.all_start_micros + node.all_end_rel_micros)
    return (max(ends) - min(starts)) / 1000.0 if starts else 0.0


def stage_of(node_name):
    name = node_name.lower()
    if name.startswith('gradients'):
        return 'backward'
    if any(part in name for part in ('apply_gradients', 'momentum', 'exponentialmovingaverage', 'train_op',
                                     'assignsub', 'global_step', 'moving_mean', 'moving_variance',
                                     'moving_statistics')):
        return 'update'
    return 'forward'


def torch_peer(args):
    """(run_step, '') of the same network's training step in PyTorch, or (None, why not)."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'torch_resnet.py')
    spec = importlib.util.spec_from_file_location('torch_resnet', path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as e:
        return None, 'PyTorch is not importable here (%s)' % e
    except Exception as e:  # a broken installation must not end the benchmark
        return None, 'PyTorch failed to load (%s)' % str(e).splitlines()[0]
    if args.device != 'cpu' or args.width < 1:
        return None, 'the peer runs on the CPU only'
    step = module.train_step(args.num_residual_units, args.width, args.batch_size, args.compute_dtype,
                             args.intra_threads or os.cpu_count(), leakiness=args.relu_leakiness)
    step.op_breakdown = lambda: module.op_breakdown(step)
    return step, 'PyTorch %s, eager, channels_last' % module.version()


def write_random_records(directory, num_records):
    import numpy as np
    path = os.path.join(directory, 'benchmark.bin')
    rng = np.random.RandomState(0)
    records = rng.randint(0, 256, size=(num_records, 3073), dtype=np.uint8)
    records[:, 0] %= 10
    records.tofile(path)
    return path


def main(argv=None):
    args = parse_args(argv)
    os.environ['TF_ENABLE_ONEDNN_OPTS'] = '1' if args.onednn == 'on' else '0'
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    if args.device == 'cpu':
        os.environ['CUDA_VISIBLE_DEVICES'] = ''
    import tensorflow as tf
    tf.get_logger().setLevel('ERROR')
    import cifar_input
    import resnet_model
    from resnet_cifar import staging

    bench = Bench(args, tf, cifar_input, resnet_model, staging)
    skip = set(filter(None, args.skip.split(',')))
    batch = args.batch_size
    with tempfile.TemporaryDirectory() as directory, contextlib.ExitStack() as sessions:
        numpy_matmul, tf_matmul, matmul_flops = bench.matmul('float32')
        dtype_matmul = None if args.compute_dtype == 'float32' else bench.matmul(args.compute_dtype)[1]
        results = {}
        if not {'real', 'input'} <= skip:
            data_path = write_random_records(directory, args.num_records)
        if 'input' not in skip:
            # On its own: between its turns its queue would fill up, and the next
            # window would time dequeues of ready batches instead of the readers.
            with bench.input_only(data_path) as run_input:
                results.update(interleaved_medians({'input_images_per_sec': (run_input, batch)},
                                                   args.warmup_steps, args.steps, args.windows))
        run_steps = {}
        if 'synthetic' not in skip:
            run_steps['train_images_per_sec_synthetic'] = (sessions.enter_context(bench.train_synthetic()), batch)
        if 'real' not in skip:
            run_steps['train_images_per_sec'] = (sessions.enter_context(bench.train_real(data_path)), batch,
                                                 READY_BATCHES)
        if 'eval' not in skip:
            run_steps['eval_images_per_sec'] = (sessions.enter_context(bench.eval_forward()),
                                                args.eval_batch_size)
        if 'torch' not in skip:
            torch_step, results['torch_peer'] = torch_peer(args)
            if torch_step is not None:
                run_steps['torch_train_images_per_sec'] = (torch_step, batch)
        run_steps['matmul_flops_numpy'] = (numpy_matmul, matmul_flops)
        run_steps['matmul_flops_tensorflow_float32'] = (sessions.enter_context(tf_matmul), matmul_flops)
        if dtype_matmul is not None:
            run_steps['matmul_flops_tensorflow'] = (sessions.enter_context(dtype_matmul), matmul_flops)
        results.update(interleaved_medians(run_steps, args.warmup_steps, args.steps, args.windows))
    if 'breakdown' not in skip:
        by_type, by_stage, traced_ms = bench.step_breakdown()
        top = sorted(by_type.items(), key=lambda item: -item[1])[:10]
        results.update({'breakdown_top_ops_ms': dict(top), 'breakdown_stages_ms': by_stage,
                        'breakdown_sum_ms': sum(by_type.values()), 'traced_step_ms': traced_ms})
        if 'torch_train_images_per_sec' in results:
            try:
                torch_ops = torch_step.op_breakdown()
            except Exception as e:  # an older or broken PyTorch must not lose the figures above
                results['torch_breakdown_error'] = str(e).splitlines()[0] if str(e) else type(e).__name__
            else:
                results['torch_breakdown_top_ops_ms'] = dict(sorted(torch_ops.items(),
                                                                    key=lambda item: -item[1])[:10])
                results['torch_breakdown_sum_ms'] = sum(torch_ops.values())
    if 'torch_train_images_per_sec' in results and 'train_images_per_sec_synthetic' in results:
        results['torch_over_synthetic'] = (results['torch_train_images_per_sec']
                                           / results['train_images_per_sec_synthetic'])
    results.update(matmul_peak(results, args.compute_dtype))
    if 'synthetic' not in skip:
        results['train_flops_per_image'] = bench.train_flops_per_image()
        results['train_gflops'] = results['train_images_per_sec_synthetic'] * results['train_flops_per_image'] / 1e9
        results['efficiency'] = results['train_gflops'] / results['matmul_gflops']
    if 'train_images_per_sec_synthetic' in results:
        results['step_ms_synthetic'] = 1000.0 * args.batch_size / results['train_images_per_sec_synthetic']
    if 'train_images_per_sec' in results and 'train_images_per_sec_synthetic' in results:
        results['real_over_synthetic'] = (results['train_images_per_sec']
                                          / results['train_images_per_sec_synthetic'])
    if 'input_images_per_sec' in results and 'train_images_per_sec' in results:
        results['input_over_train'] = results['input_images_per_sec'] / results['train_images_per_sec']
    results.update({
        'depth': 6 * args.num_residual_units + 2, 'width': args.width, 'batch_size': args.batch_size,
        'data_format': args.data_format, 'compute_dtype': args.compute_dtype,
        'compute_dtype_choice': args.compute_dtype_choice, 'cpu': cpu.describe(),
        'relu_leakiness': args.relu_leakiness,
        'onednn': args.onednn == 'on', 'xla': args.xla,
        'intra_threads': args.intra_threads, 'inter_threads': args.inter_threads,
        'input_threads': args.input_threads, 'stage_input': args.stage_input, 'tensorflow': tf.__version__,
        'device': args.device,
        'cpu_count': os.cpu_count(), 'windows': args.windows, 'steps_per_window': args.steps,
    })
    print_table(results)
    print(json.dumps(results, sort_keys=True))
    return 0


def matmul_peak(results, dtype):
    """The matmul figures in GFLOP/s from the timed FLOP rates in `results` (which it empties of
    them): matmul_gflops is the peak in `dtype`, the dtype the network trained in."""
    gflops = {key.replace('flops', 'gflops'): results.pop(key) / 1e9
              for key in ('matmul_flops_numpy', 'matmul_flops_tensorflow_float32', 'matmul_flops_tensorflow')
              if key in results}
    gflops['matmul_gflops_float32'] = max(gflops['matmul_gflops_numpy'], gflops['matmul_gflops_tensorflow_float32'])
    gflops.setdefault('matmul_gflops_tensorflow', gflops.pop('matmul_gflops_tensorflow_float32'))
    gflops.pop('matmul_gflops_tensorflow_float32', None)
    gflops['matmul_gflops'] = gflops['matmul_gflops_float32'] if dtype == 'float32' else gflops[
        'matmul_gflops_tensorflow']
    gflops['matmul_dtype'] = dtype
    return gflops


def print_table(results):
    rows = [('train, in-memory input', 'train_images_per_sec_synthetic', 'images/s'),
            ('train, real queue input', 'train_images_per_sec', 'images/s'),
            ('input pipeline alone', 'input_images_per_sec', 'images/s'),
            ('eval forward', 'eval_images_per_sec', 'images/s'),
            ('matmul, numpy', 'matmul_gflops_numpy', 'GFLOP/s'),
            ('matmul, TensorFlow, %s' % results['matmul_dtype'], 'matmul_gflops_tensorflow', 'GFLOP/s'),
            ('matmul peak, float32', 'matmul_gflops_float32', 'GFLOP/s'),
            ('train FLOPs per image', 'train_flops_per_image', 'FLOP'),
            ('train throughput', 'train_gflops', 'GFLOP/s'),
            ('efficiency, of the %s peak' % results['matmul_dtype'], 'efficiency', ''),
            ('real / in-memory train rate', 'real_over_synthetic', ''),
            ('input / real train rate', 'input_over_train', ''),
            ('PyTorch peer, in-memory input', 'torch_train_images_per_sec', 'images/s'),
            ('PyTorch / this suite, in-memory', 'torch_over_synthetic', ''),
            ('step, in-memory input', 'step_ms_synthetic', 'ms'),
            ('traced step (wall)', 'traced_step_ms', 'ms'),
            ('traced op time, summed', 'breakdown_sum_ms', 'ms'),
            ('PyTorch op time, summed', 'torch_breakdown_sum_ms', 'ms')]
    name = 'ResNet-%d' % results['depth'] if results['width'] == 1 else 'WRN-%d-%d' % (
        results['depth'], results['width'])
    print('%s, batch %d, %s, %s (%s), oneDNN %s, XLA %s; %s' % (
        name, results['batch_size'], results['data_format'], results['compute_dtype'],
        results['compute_dtype_choice'], 'on' if results['onednn'] else 'off', 'on' if results['xla'] else 'off',
        results['cpu']))
    if 'torch_peer' in results:
        print('  peer: %s' % results['torch_peer'])
    if 'torch_breakdown_error' in results:
        print('  peer breakdown skipped: %s' % results['torch_breakdown_error'])
    for label, key, unit in rows:
        if key in results:
            value = results[key]
            text = ('%.3g' % value) if value >= 1e6 or value < 10 else ('%.1f' % value)
            print('  %-30s %12s %s' % (label, text, unit))
    for title, key in (('time per step by op type (top 10)', 'breakdown_top_ops_ms'),
                       ('time per step by stage', 'breakdown_stages_ms'),
                       ('PyTorch peer, time per step by op (top 10)', 'torch_breakdown_top_ops_ms')):
        if key in results:
            print('  %s:' % title)
            for op, ms in sorted(results[key].items(), key=lambda item: -item[1]):
                print('    %-28s %9.1f ms' % (op, ms))


if __name__ == '__main__':
    sys.exit(main())
