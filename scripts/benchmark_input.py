"""Images per second of the train-mode input pipeline alone.

Writes a 50,000-record random CIFAR-10 file in a temporary directory, builds
cifar_input.build_input in train mode, warms up (fills the shuffle queue),
then times several windows of dequeues and prints each window's rate, the
median, and a final JSON line:
  python scripts/benchmark_input.py [--batch_size=128] [--num_threads=N]
                                    [--windows=5] [--steps_per_window=50]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np
import tensorflow as tf

import cifar_input

tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)  # queue deprecation notices

NUM_RECORDS = 50000


def write_random_records(path, num_records, seed=0):
    """A CIFAR-10 record file of uniform-noise images and labels 0..9."""
    rng = np.random.RandomState(seed)
    records = rng.randint(0, 256, size=(num_records, 1 + cifar_input.IMAGE_BYTES), dtype=np.uint8)
    records[:, 0] %= 10
    records.tofile(path)


def measure(data_path, batch_size, num_threads, windows, steps_per_window):
    """Returns the images/s of each timed window."""
    rates = []
    with tf.Graph().as_default():
        images, labels = cifar_input.build_input('cifar10', data_path, batch_size, 'train',
                                                 num_threads=num_threads, seed=1)
        with tf.compat.v1.Session() as sess:
            coord = tf.compat.v1.train.Coordinator()
            threads = tf.compat.v1.train.start_queue_runners(sess, coord)
            try:
                for _ in range(steps_per_window):  # warm-up: fill the shuffle queue
                    sess.run([images.op, labels.op])
                for _ in range(windows):
                    start = time.perf_counter()
                    for _ in range(steps_per_window):
                        sess.run([images.op, labels.op])
                    rate = batch_size * steps_per_window / (time.perf_counter() - start)
                    print('window: %.0f images/s' % rate, flush=True)
                    rates.append(rate)
            finally:
                coord.request_stop()
                coord.join(threads)
    return rates


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch_size', type=int, default=128)
    parser.add_argument('--num_threads', type=int, default=None,
                        help='reader threads; default: cifar_input default, max(2, cpu count)')
    parser.add_argument('--windows', type=int, default=5)
    parser.add_argument('--steps_per_window', type=int, default=50)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data_path = os.path.join(tmp, 'data_batch_1.bin')
        write_random_records(data_path, NUM_RECORDS)
        rates = measure(data_path, args.batch_size, args.num_threads, args.windows, args.steps_per_window)
    median = statistics.median(rates)
    print('median: %.0f images/s over %d windows of %d batches of %d'
          % (median, args.windows, args.steps_per_window, args.batch_size))
    print(json.dumps({'metric': 'input_images_per_sec', 'median': round(median, 1),
                      'windows': [round(r, 1) for r in rates], 'batch_size': args.batch_size,
                      'num_threads': args.num_threads, 'cpu_count': os.cpu_count()}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
