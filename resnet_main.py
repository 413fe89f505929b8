"""Trains and evaluates a ResNet on CIFAR-10/100 binary files: the command line.

  python resnet_main.py --mode=train --dataset=cifar10 --log_root=/tmp/resnet
  python resnet_main.py --mode=eval  --dataset=cifar10 --log_root=/tmp/resnet
  tensorboard --logdir=/tmp/resnet
  python resnet_main.py --mode=extract --extract_data_path=... --features_path=train.npz
  python resnet_main.py --mode=finetune --train_features=train.npz --eval_features=test.npz
  python resnet_main.py --job_name=ps|worker --task_index=0 --ps_hosts=h0:2222 --worker_hosts=h1:2222,h2:2222

Flags -> one RunConfig (resnet_cifar/resolve.py) -> the mode's function. Train mode
writes checkpoints to --log_root and summaries to --train_dir; eval mode, run as a
second process beside training, scores every new checkpoint on the whole eval set
and writes its summaries to --eval_dir. Only this module reads flags.
"""
import os
import signal
import sys

_STARTING_PID = os.getpid()


def _interrupted_while_starting(signum, frame):
    """SIGINT before the mode runs: one line, exit 130. Nothing is written before then, so the
    process can end at once; no exception is raised that library code could swallow."""
    if os.getpid() == _STARTING_PID:  # not in the child that filters TensorFlow's stderr (quiet.py)
        os.write(2, b'error: interrupted by SIGINT while starting; nothing was written\n')
        os._exit(130)


def _mark(stage):
    """With RESNET_CIFAR_TRACE_START=1, a line 'start: STAGE' on stderr (the tests send signals there)."""
    if os.environ.get('RESNET_CIFAR_TRACE_START') == '1':
        os.write(2, ('start: %s\n' % stage).encode())


if __name__ == '__main__':
    # Also when SIGINT came ignored from the parent (a job started with `&` by a shell without job
    # control): Python then leaves it ignored, and a Ctrl-C was lost until training began.
    signal.signal(signal.SIGINT, _interrupted_while_starting)
    _mark('python')

# Before the first TensorFlow import: oneDNN nearly doubles CPU training speed on
# processors where TensorFlow leaves it off. The user's own setting wins.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')

from absl import app  # noqa: E402 (after the SIGINT handler)
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

from resnet_cifar import config  # noqa: E402
from resnet_cifar import datasets  # noqa: E402
from resnet_cifar import flag_help  # noqa: E402
from resnet_cifar import presets  # noqa: E402
from resnet_cifar import quiet  # noqa: E402
from resnet_cifar import schedules  # noqa: E402

FLAGS = flags.FLAGS

# Data.
flags.DEFINE_enum('dataset', 'cifar10', list(datasets.dataset_names()),
                  'Dataset: cifar10, cifar100, or digits (the bundled sample in data/digits-bin).')
flags.DEFINE_enum('mode', 'train', list(config.MODES),
                  'train: run the training loop; eval: score each new checkpoint in --log_root; '
                  'extract: save the bottleneck features of --extract_data_path; '
                  'finetune: train a new softmax layer on saved features; '
                  'export: write a SavedModel of a checkpoint to --export_dir.')
flags.DEFINE_string('train_data_path', None,
                    'Glob pattern(s), comma-separated, of the training record files. '
                    'Default: where the download script puts --dataset.')
flags.DEFINE_string('eval_data_path', None,
                    'Glob pattern(s), comma-separated, of the eval record files. '
                    'Default: where the download script puts --dataset.')
flags.DEFINE_enum('label_mode', 'fine', ['fine', 'coarse'],
                  'CIFAR-100 only: train on the 100 fine or the 20 coarse labels.')
flags.DEFINE_integer('validation_size', 0,
                     'Hold the last N training records out of training (files in --train_data_path order, '
                     'nothing copied); eval then scores each checkpoint on them, chooses the best on them, '
                     'and scores the test set once, on the best. 0: no validation split.')
flags.DEFINE_integer('image_size', 32, 'Image side in pixels. CIFAR images are 32x32; only 32 is supported.')
flags.DEFINE_integer('num_input_threads', None,
                     'Reader threads of the training input queue. Default: one per CPU core, at least 2.')
flags.DEFINE_integer('cutout_size', 0,
                     'Cutout: each training image gets a random SxS square zeroed (after standardization, '
                     'clipped at the borders). 0: none.')

# Where things go.
flags.DEFINE_string('log_root', None,
                    'Directory of the checkpoints, shared by train and eval. Default: runs/<dataset>.')
flags.DEFINE_string('train_dir', None, 'Directory of the training event files. Default: <log_root>/train.')
flags.DEFINE_string('eval_dir', None, 'Directory of the eval event files. Default: <log_root>/eval.')

# Model.
flags.DEFINE_integer('num_residual_units', None,
                     'Residual units per stage: depth is 6n+2 plain, 9n+2 bottleneck '
                     '(5 = ResNet-32). Default: 5, or 2 for digits.')
flags.DEFINE_boolean('use_bottleneck', False, 'Bottleneck (1x1, 3x3, 1x1) units instead of plain ones.')
flags.DEFINE_integer('width', 1, 'Width multiplier k of the filters (k=10 with n=4 is WRN-28-10).')
flags.DEFINE_enum('data_format', None, list(config.DATA_FORMATS),
                  'Layout of the activations: NCHW (channels first) is faster on GPUs, NHWC on CPUs. '
                  'Default: NCHW when training on GPUs, NHWC on the CPU. Input images are NHWC either way, '
                  'and checkpoints do not depend on it.')
flags.DEFINE_float('relu_leakiness', 0.1, 'Slope of the leaky ReLU for negative inputs, in [0, 1).')

# Optimisation.
flags.DEFINE_enum('preset', None, list(presets.NAMES),
                  'A whole training recipe (docs/recipes.md): resnet32_classic, resnet110, wrn28_10 or '
                  'fast_cifar. Flags given with it override its values.')
flags.DEFINE_integer('train_steps', None,
                     'Training ends at this global step. Default: 80000 (the classic recipe), 1000 for digits.')
flags.DEFINE_float('train_epochs', None,
                   'The run\'s length in passes over the training records (those not held out), instead of '
                   '--train_steps; --lr_boundaries and --lr_warmup then count epochs too.')
flags.DEFINE_integer('batch_size', None, 'Images per step. Default: 128 in train mode, 100 in eval mode.')
flags.DEFINE_enum('optimizer', 'mom', list(config.OPTIMIZERS),
                  'mom: momentum 0.9; nesterov: Nesterov momentum 0.9; sgd: plain gradient descent.')
flags.DEFINE_float('weight_decay_rate', 0.0002, 'L2 weight decay on convolution and fully connected weights.')
flags.DEFINE_float('lrn_rate', 0.1, 'Initial learning rate at batch 128; the default schedule divides it by 10 '
                   'at each boundary.')
flags.DEFINE_float('min_lrn_rate', 0.0001, 'Floor of the learning rate.')
flags.DEFINE_enum('lr_schedule', 'piecewise', list(schedules.KINDS), schedules.FLAG_HELP)
flags.DEFINE_string('lr_boundaries', None,
                    'Comma-separated global steps (epochs with --train_epochs) where the learning rate changes. '
                    'Default: 50%, 75% and 100% of --train_steps (40000,60000,80000 classic); cosine: the end.')
flags.DEFINE_string('lr_values', None,
                    'Comma-separated learning rates at batch 128, one more than --lr_boundaries. '
                    'Default: --lrn_rate times 1, 0.1, 0.01, 0.001; cosine: 1, 0.001.')
flags.DEFINE_float('lr_warmup', 0,
                   'Linear warmup over the first K steps (epochs with --train_epochs): the rate of step s < K '
                   'is multiplied by (s + 1) / K. 0: none.')
flags.DEFINE_boolean('lr_batch_scaling', True,
                     'The learning rates are for batch 128: run them times --batch_size / 128 (the linear '
                     'scaling rule, so that other batches and more towers keep the recipe).')
flags.DEFINE_float('label_smoothing', 0.0,
                   'Label smoothing epsilon: training targets are (1 - eps) * one-hot + eps / classes. 0: none.')
flags.DEFINE_float('mixup_alpha', 0.0,
                   'Mixup: each training image and its label are mixed with another of its batch, weights '
                   'drawn from Beta(alpha, alpha). 0: none.')
flags.DEFINE_float('moving_average_decay', 0.999,
                   'Decay of the exponential moving average of the weights that eval uses; 0 turns it off.')
flags.DEFINE_integer('random_seed', None, 'Seed of the graph and the input shuffling; with '
                     '--num_input_threads=1, CPU runs repeat step for step.')

# Checkpoints and logging.
flags.DEFINE_integer('save_checkpoints_steps', None,
                     'Save a checkpoint every N steps (instead of seconds). Default: runs of at most '
                     '10000 steps save every tenth of the run (at least 100 steps apart).')
flags.DEFINE_integer('save_checkpoints_secs', 120, 'Save a checkpoint every N seconds (runs of more than '
                     '10000 steps, unless --save_checkpoints_steps is given).')
flags.DEFINE_integer('keep_checkpoint_max', 5, 'How many recent checkpoints to keep in --log_root.')
flags.DEFINE_integer('log_every_n_steps', 100, 'Log a progress line and write summaries every N steps.')
flags.DEFINE_boolean('summary_histograms', False,
                     'Also write histograms of the weights and of each residual unit\'s output '
                     'with the summaries (larger event files).')

# Eval.
flags.DEFINE_integer('eval_batch_count', 0, 'Eval batches per checkpoint; 0 scores the whole eval set.')
flags.DEFINE_boolean('eval_once', False, 'Score the latest checkpoint once, then exit (with --validation_size: '
                     'then score the best checkpoint on the test records).')
flags.DEFINE_integer('eval_interval_secs', 10, 'Seconds between looks for a new checkpoint in eval mode.')
flags.DEFINE_boolean('eval_after_training', True,
                     'Train mode: once training is done, score the last checkpoint on the eval records '
                     '(when they are there) and print the held-out precision.')
flags.DEFINE_boolean('eval_flip', False,
                     'Eval: average the logits of each image and of its left-right mirror (test-time '
                     'augmentation; twice the work per image).')
flags.DEFINE_boolean('eval_use_moving_average', True,
                     'Score the moving-average shadows of the weights when the checkpoint has them; '
                     'false scores the raw weights.')

# Transfer: bottleneck features, fine-tuning, starting from another run.
flags.DEFINE_string('checkpoint_path', None,
                    'Extract and export modes: the checkpoint (a prefix such as runs/x/model.ckpt-300, or '
                    'a directory) to use. Default: the latest in --log_root (export: with a validation split '
                    'the best one eval kept in --log_root/best, else the latest).')
flags.DEFINE_string('extract_data_path', None,
                    'Extract mode: glob pattern(s), comma-separated, of the records to run, once, in file order.')
flags.DEFINE_string('features_path', None, 'Extract mode: the .npz file to write the features and labels to.')
flags.DEFINE_string('train_features', None, 'Finetune mode: the features .npz to train the new layer on.')
flags.DEFINE_string('eval_features', None, 'Finetune mode: the features .npz to score the new layer on.')
flags.DEFINE_integer('finetune_epochs', 30, 'Finetune mode: passes over the train features.')
flags.DEFINE_integer('finetune_batch_size', 128, 'Finetune mode: features per step.')
flags.DEFINE_float('finetune_lrn_rate', 0.1, 'Finetune mode: learning rate of the new layer (momentum 0.9).')
flags.DEFINE_string('init_checkpoint', None,
                    'Train mode: start a new run from this checkpoint (prefix or directory) of another '
                    'run: every layer but the fully connected one, whose classes may differ. Ignored '
                    'once --log_root has its own checkpoint.')
flags.DEFINE_string('export_dir', None,
                    'Export mode: the new directory of the SavedModel (uint8 images in, class probabilities '
                    'and bottleneck features out) of --checkpoint_path, else with a validation split the best '
                    'checkpoint eval kept in --log_root/best, else the latest of --log_root.')
flags.DEFINE_boolean('freeze_restored_layers', False,
                     'Train mode with --init_checkpoint: train only the new fully connected layer; '
                     'the restored weights stay as they are (batch-norm statistics still adapt).')

# Devices.
flags.DEFINE_integer('num_gpus', 0,
                     'GPUs to use: 0 runs on the CPU, 1 on the first GPU, N > 1 trains N data-parallel '
                     'towers (each takes --batch_size/N images; eval always uses one device).')
flags.DEFINE_enum('tower_device', 'gpu', ['gpu', 'cpu'],
                  'With --num_gpus: gpu places tower i on GPU i; cpu on logical CPU device i '
                  '(the same towers without GPUs, for testing).')
flags.DEFINE_enum('variable_device', 'cpu', ['cpu', 'gpu'],
                  'With --num_gpus > 1: where the shared variables live, the CPU or the first GPU.')
flags.DEFINE_boolean('stage_input', None,
                     'Train mode: copy the next batch onto the training device(s) while the current step '
                     'runs (a staging area; each step trains on the batch staged by the step before). '
                     'Default: on when training on GPU(s), off on the CPU.')
flags.DEFINE_enum('compute_dtype', 'auto', ['auto'] + list(config.COMPUTE_DTYPES),
                  'Precision of the convolutions and batch norm: auto (training in bfloat16 on CPUs with '
                  'bfloat16 instructions, AVX512_BF16 or AMX, else float32; eval, extract and export in '
                  'float32), float32, or mixed precision: float16 (with dynamic loss scaling; slow on '
                  'CPUs) or bfloat16. Variables and checkpoints stay float32 either way.')

# A cluster: parameter servers and workers (docs/distributed.md).
flags.DEFINE_string('job_name', None,
                    'This task\'s job in a cluster: ps (serves the variables) or worker (trains; worker 0 is '
                    'the chief). Default: one machine, or the task of TF_CONFIG when it is set.')
flags.DEFINE_integer('task_index', 0, 'This task\'s index in its job (--ps_hosts or --worker_hosts).')
flags.DEFINE_string('ps_hosts', None, 'Comma-separated host:port of the parameter servers, the same for every task.')
flags.DEFINE_string('worker_hosts', None, 'Comma-separated host:port of the workers, the same for every task; '
                    'the first is the chief.')
flags.DEFINE_boolean('sync_replicas', False,
                     'With a cluster: each update averages one gradient of every worker (SyncReplicasOptimizer); '
                     'the global step counts updates. Default: asynchronous, every worker step is an update.')
flags.DEFINE_integer('cluster_timeout_secs', 120,
                     'With a cluster: how long a task waits for a ps task or the chief before it gives up '
                     'with an error naming the address.')


# --help: the flags in these groups (docs/flags.md has the same ones), then the example.
FLAG_GROUPS = [
    ('Run', ['mode', 'dataset', 'log_root', 'train_dir', 'eval_dir']),
    ('Data', ['train_data_path', 'eval_data_path', 'validation_size', 'label_mode', 'image_size',
              'num_input_threads', 'cutout_size']),
    ('Model', ['num_residual_units', 'use_bottleneck', 'width', 'data_format', 'relu_leakiness']),
    ('Training schedule', ['preset', 'train_steps', 'train_epochs', 'batch_size', 'optimizer', 'weight_decay_rate',
                           'lrn_rate', 'min_lrn_rate', 'lr_schedule', 'lr_boundaries', 'lr_values', 'lr_warmup',
                           'lr_batch_scaling', 'label_smoothing', 'mixup_alpha', 'moving_average_decay',
                           'random_seed']),
    ('Checkpoints and logging', ['save_checkpoints_steps', 'save_checkpoints_secs', 'keep_checkpoint_max',
                                 'log_every_n_steps', 'summary_histograms']),
    ('Eval', ['eval_batch_count', 'eval_once', 'eval_interval_secs', 'eval_use_moving_average',
              'eval_after_training', 'eval_flip']),
    ('Transfer and export', ['checkpoint_path', 'extract_data_path', 'features_path', 'train_features',
                             'eval_features', 'finetune_epochs', 'finetune_batch_size', 'finetune_lrn_rate',
                             'init_checkpoint', 'freeze_restored_layers', 'export_dir']),
    ('Devices and precision', ['num_gpus', 'tower_device', 'variable_device', 'stage_input', 'compute_dtype']),
    ('Cluster', ['job_name', 'task_index', 'ps_hosts', 'worker_hosts', 'sync_replicas', 'cluster_timeout_secs']),
]
# Groups the short --help lists by name only: few users need them.
COMPACT_GROUPS = ('Transfer and export', 'Cluster')
EXAMPLE = """\
Example, the bundled digits sample (a few minutes on a CPU):
  python resnet_main.py --dataset=digits            # trains, then prints its held-out precision
  python resnet_main.py --mode=eval --dataset=digits --eval_once
  tensorboard --logdir=runs/digits"""


def fail(message, exit_code):
    """Prints a one-line error to stderr and exits; --verbosity=1 or more adds the stack trace."""
    if sys.exc_info()[0] is not None and logging.get_verbosity() >= logging.DEBUG:
        import traceback
        traceback.print_exc()
    sys.stderr.write('error: %s\n' % message.strip().splitlines()[0])
    sys.stderr.flush()
    sys.exit(exit_code)


def parse_flags(argv):
    """absl flag parsing with a one-line error and exit code 2 on a bad flag."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        fail(str(e), 2)


def configure():
    """The RunConfig of the flags and the run's settings; exits with one line when they cannot work."""
    from resnet_cifar import errors, resolve
    given = {name for name in FLAGS if FLAGS[name].present}
    try:
        return resolve.run_config(FLAGS.flag_values_dict(), given)
    except errors.Error as e:
        fail(str(e), e.exit_status)


def main(argv):
    _mark('main')
    try:
        run(argv)
    except KeyboardInterrupt:  # a stop signal before or outside the modes' own handling
        fail('interrupted by SIGINT', 130)


def run(argv):
    if len(argv) > 1:
        fail('unexpected arguments %s; flags look like --name=value' % ' '.join(argv[1:]), 2)
    try:
        quiet.prepare(uses_gpu=FLAGS.num_gpus > 0 and FLAGS.tower_device == 'gpu')
        run_config = configure()
        _mark('tensorflow')
        # After absl set up logging, so that TensorFlow's records go through absl's handler.
        tf = quiet.import_tensorflow()
        import cifar_input
        from resnet_cifar import distributed, errors, evaluation, export, features, guards, training
        _mark('imported')
        # From here a Ctrl-C is a KeyboardInterrupt (main's one line, exit 130) until the mode's own
        # handling (training: guards.StopSignals, before its first write) takes it over.
        if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    except KeyboardInterrupt:  # run in-process (tests), without the start-up handler
        fail('interrupted by SIGINT while starting; nothing was written', 130)
    try:
        if (run_config.mode == 'eval' and not run_config.eval.once
                and not evaluation.run_started(run_config.log_root)):
            # Started before training: the model settings come with the run's first trainer.
            # The eval files can be checked now if --dataset says how to read them.
            if FLAGS['dataset'].present:
                cifar_input.check_files(run_config.data.dataset, run_config.data.eval_data_path)
            if not evaluation.wait_for_run(run_config.log_root, run_config.eval.interval_secs):
                return
            FLAGS.log_root = run_config.log_root  # the directory resolved at the start, whatever links do since
            run_config = configure()
        mode = {'train': training.train, 'eval': evaluation.evaluate,
                'extract': features.extract_features, 'finetune': features.finetune,
                'export': export.export_saved_model}[run_config.mode]
        if run_config.cluster.job_name == 'ps':
            mode = distributed.run_ps
        mode(run_config)
    except errors.Error as e:
        fail(str(e), e.exit_status)
    except (OSError, tf.errors.OpError) as e:
        fail(guards.error_line(e), 1)


if __name__ == '__main__':
    _mark('flags')
    flag_help.handle_help_args(sys.argv, FLAGS, FLAG_GROUPS, example=EXAMPLE, compact=COMPACT_GROUPS,
                               usage='usage: python resnet_main.py [--flag=value ...]\n\n' + __doc__.split('\n\n')[0])
    app.run(main, flags_parser=parse_flags)
