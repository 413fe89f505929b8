"""Training examples/sec of one device against N data-parallel towers.

Both graphs train the same ResNet on one synthetic global batch held in memory
(a constant on the CPU, so no decoding is timed): first the one-device graph
that --num_gpus=0/1 runs, then towers.TowerModel with N towers, each on its own
share of the batch. Each warms up, then times several windows of train steps;
the script prints each window's rate, the medians, and a final JSON line:

  python scripts/benchmark_towers.py [--num_towers=2] [--tower_device=cpu|gpu]
      [--variable_device=cpu|gpu] [--batch_size=128] [--num_residual_units=5]
      [--windows=5] [--steps_per_window=10] [--split_gpu]

--tower_device=cpu puts the towers on N logical CPU devices, which share the
same cores: it checks the code path, not scaling. --split_gpu splits the first
GPU into --num_towers logical GPUs (for a machine with one GPU); both graphs
then run on that split configuration.
"""
import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np
import tensorflow as tf

import resnet_model
from resnet_cifar import settings
from resnet_cifar import towers
from resnet_cifar import devices


def synthetic_batch(batch_size, num_classes, seed=0):
    """(images float32 [batch, 32, 32, 3], one-hot labels float32 [batch, num_classes]) as numpy."""
    rng = np.random.RandomState(seed)
    images = rng.normal(0.0, 1.0, size=(batch_size, 32, 32, 3)).astype(np.float32)
    return images, np.eye(num_classes, dtype=np.float32)[rng.randint(0, num_classes, size=batch_size)]


def build(hps, num_towers, tower_device, variable_device):
    """The train graph in the default graph; returns its train op."""
    images, labels = synthetic_batch(hps.batch_size, hps.num_classes)
    with tf.compat.v1.device('/cpu:0'):
        images, labels = tf.constant(images), tf.constant(labels)
    if num_towers == 1:
        with tf.compat.v1.device('/gpu:0' if tower_device == 'gpu' else '/cpu:0'):
            model = resnet_model.ResNet(hps, images, labels, 'train')
            model.build_graph()
        return model.train_op
    share = hps.batch_size // num_towers
    with tf.compat.v1.device('/cpu:0'):
        batches = [(images[i * share:(i + 1) * share], labels[i * share:(i + 1) * share])
                   for i in range(num_towers)]
    return towers.TowerModel(hps, batches, towers.tower_devices(num_towers, tower_device),
                             variable_device).train_op


def measure(hps, num_towers, args, session_config):
    """Examples/sec (global batch) of each timed window."""
    rates = []
    with tf.Graph().as_default():
        train_op = build(hps, num_towers, args.tower_device, '/%s:0' % args.variable_device)
        with tf.compat.v1.Session(config=session_config) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            for _ in range(args.warmup_steps):
                session.run(train_op)
            for _ in range(args.windows):
                start = time.perf_counter()
                for _ in range(args.steps_per_window):
                    session.run(train_op)
                rate = hps.batch_size * args.steps_per_window / (time.perf_counter() - start)
                print('%d tower(s): window %.1f examples/s' % (num_towers, rate), flush=True)
                rates.append(rate)
    return rates


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--num_towers', type=int, default=2)
    parser.add_argument('--tower_device', choices=settings.TOWER_DEVICES, default='cpu')
    parser.add_argument('--variable_device', choices=['cpu', 'gpu'], default='cpu')
    parser.add_argument('--batch_size', type=int, default=128, help='global batch, split over the towers')
    parser.add_argument('--num_residual_units', type=int, default=5)
    parser.add_argument('--windows', type=int, default=5)
    parser.add_argument('--steps_per_window', type=int, default=10)
    parser.add_argument('--warmup_steps', type=int, default=5)
    parser.add_argument('--split_gpu', action='store_true',
                        help='split the first GPU into --num_towers logical GPUs')
    parser.add_argument('--split_gpu_memory_mb', type=int, default=8192,
                        help='memory of each logical GPU with --split_gpu')
    args = parser.parse_args(argv)
    if args.num_towers < 2:
        parser.error('--num_towers=%d: expected 2 or more' % args.num_towers)
    if args.batch_size % args.num_towers:
        parser.error('--batch_size=%d: not divisible by --num_towers=%d' % (args.batch_size, args.num_towers))

    hps = resnet_model.HParams(batch_size=args.batch_size, num_classes=10, min_lrn_rate=0.0001, lrn_rate=0.1,
                               num_residual_units=args.num_residual_units, use_bottleneck=False,
                               weight_decay_rate=0.0002, relu_leakiness=0.1, optimizer='mom')
    config_one = devices.session_config()
    config_towers = devices.session_config(args.num_towers if args.tower_device == 'cpu' else 1)
    if args.split_gpu:
        for config in (config_one, config_towers):
            config.gpu_options.experimental.virtual_devices.add(
                memory_limit_mb=[args.split_gpu_memory_mb] * args.num_towers)
    one = measure(hps, 1, args, config_one)
    many = measure(hps, args.num_towers, args, config_towers)
    median_one, median_many = statistics.median(one), statistics.median(many)
    print('median: 1 tower %.1f examples/s, %d towers %.1f examples/s (x%.2f); %d windows of %d steps '
          'of %d images, ResNet-%d, %s towers'
          % (median_one, args.num_towers, median_many, median_many / median_one, args.windows,
             args.steps_per_window, args.batch_size, 6 * args.num_residual_units + 2, args.tower_device))
    print(json.dumps({'metric': 'train_examples_per_sec', 'median_1_tower': round(median_one, 1),
                      'median_n_towers': round(median_many, 1), 'num_towers': args.num_towers,
                      'tower_device': args.tower_device, 'variable_device': args.variable_device,
                      'split_gpu': args.split_gpu, 'batch_size': args.batch_size,
                      'num_residual_units': args.num_residual_units,
                      'windows_1_tower': [round(r, 1) for r in one],
                      'windows_n_towers': [round(r, 1) for r in many], 'cpu_count': os.cpu_count()}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
