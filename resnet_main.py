"""Trains and evaluates a ResNet on CIFAR-10/100 binary files.

  python resnet_main.py --mode=train --dataset=cifar10 --log_root=/tmp/resnet
  python resnet_main.py --mode=eval  --dataset=cifar10 --log_root=/tmp/resnet
  tensorboard --logdir=/tmp/resnet
  python resnet_main.py --mode=extract --extract_data_path=... --features_path=train.npz
  python resnet_main.py --mode=finetune --train_features=train.npz --eval_features=test.npz

Train mode writes checkpoints to --log_root and summaries to --train_dir; eval mode,
run as a second process beside training, scores every new checkpoint on the whole
eval set and writes its summaries to --eval_dir. Only this module reads flags.
"""
import math
import os
import sys

# Before the first TensorFlow import: oneDNN nearly doubles CPU training speed on
# processors where TensorFlow leaves it off. The user's own setting wins.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

try:  # TensorFlow takes seconds to import: a Ctrl-C then is one line, not a traceback.
    from absl import app
    from absl import flags
    from absl import logging

    import checkpoints
    import cifar_input
    import evaluation
    import features
    import guards
    import resnet_model
    import run_settings
    import summaries
    import training
    import transfer
except KeyboardInterrupt:
    sys.stderr.write('error: interrupted by SIGINT while starting; nothing was written\n')
    sys.exit(130)

FLAGS = flags.FLAGS

# Data.
flags.DEFINE_enum('dataset', 'cifar10', list(cifar_input.DATASET_NAMES),
                  'Dataset: cifar10, cifar100, or digits (the bundled sample in data/digits-bin).')
flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'extract', 'finetune'],
                  'train: run the training loop; eval: score each new checkpoint in --log_root; '
                  'extract: save the bottleneck features of --extract_data_path; '
                  'finetune: train a new softmax layer on saved features.')
flags.DEFINE_string('train_data_path', None,
                    'Glob pattern(s), comma-separated, of the training record files. '
                    'Default: where the download script puts --dataset.')
flags.DEFINE_string('eval_data_path', None,
                    'Glob pattern(s), comma-separated, of the eval record files. '
                    'Default: where the download script puts --dataset.')
flags.DEFINE_enum('label_mode', 'fine', ['fine', 'coarse'],
                  'CIFAR-100 only: train on the 100 fine or the 20 coarse labels.')
flags.DEFINE_integer('image_size', 32, 'Image side in pixels. CIFAR images are 32x32; only 32 is supported.')
flags.DEFINE_integer('num_input_threads', None,
                     'Reader threads of the training input queue. Default: one per CPU core, at least 2.')

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
flags.DEFINE_enum('data_format', None, list(resnet_model.DATA_FORMATS),
                  'Layout of the activations: NCHW (channels first) is faster on GPUs, NHWC on CPUs. '
                  'Default: NCHW when training on GPUs, NHWC on the CPU. Input images are NHWC either way, '
                  'and checkpoints do not depend on it.')
flags.DEFINE_float('relu_leakiness', 0.1, 'Slope of the leaky ReLU for negative inputs, in [0, 1).')

# Optimisation.
flags.DEFINE_integer('train_steps', None,
                     'Training ends at this global step. Default: 80000 (the classic recipe), 1000 for digits.')
flags.DEFINE_integer('batch_size', None, 'Images per step. Default: 128 in train mode, 100 in eval mode.')
flags.DEFINE_enum('optimizer', 'mom', ['mom', 'sgd'], 'mom: momentum 0.9; sgd: plain gradient descent.')
flags.DEFINE_float('weight_decay_rate', 0.0002, 'L2 weight decay on convolution and fully connected weights.')
flags.DEFINE_float('lrn_rate', 0.1, 'Initial learning rate; the default schedule divides it by 10 at each boundary.')
flags.DEFINE_float('min_lrn_rate', 0.0001, 'Floor of the learning rate.')
flags.DEFINE_string('lr_boundaries', None,
                    'Comma-separated global steps where the learning rate changes. '
                    'Default: 50%, 75% and 100% of --train_steps (40000,60000,80000 classic).')
flags.DEFINE_string('lr_values', None,
                    'Comma-separated learning rates, one more than --lr_boundaries. '
                    'Default: --lrn_rate times 1, 0.1, 0.01, 0.001.')
flags.DEFINE_float('moving_average_decay', 0.999,
                   'Decay of the exponential moving average of the weights that eval uses; 0 turns it off.')
flags.DEFINE_integer('random_seed', None, 'Seed of the graph and the input shuffling; with '
                     '--num_input_threads=1, CPU runs repeat step for step.')

# Checkpoints and logging.
flags.DEFINE_integer('save_checkpoints_steps', None, 'Save a checkpoint every N steps (instead of seconds).')
flags.DEFINE_integer('save_checkpoints_secs', 120, 'Save a checkpoint every N seconds.')
flags.DEFINE_integer('keep_checkpoint_max', 5, 'How many recent checkpoints to keep in --log_root.')
flags.DEFINE_integer('log_every_n_steps', 100, 'Log a progress line and write summaries every N steps.')
flags.DEFINE_boolean('summary_histograms', False,
                     'Also write histograms of the weights and of each residual unit\'s output '
                     'with the summaries (larger event files).')

# Eval.
flags.DEFINE_integer('eval_batch_count', 0, 'Eval batches per checkpoint; 0 scores the whole eval set.')
flags.DEFINE_boolean('eval_once', False, 'Score the latest checkpoint once, then exit.')
flags.DEFINE_integer('eval_interval_secs', 10, 'Seconds between looks for a new checkpoint in eval mode.')
flags.DEFINE_boolean('eval_use_moving_average', True,
                     'Score the moving-average shadows of the weights when the checkpoint has them; '
                     'false scores the raw weights.')

# Transfer: bottleneck features, fine-tuning, starting from another run.
flags.DEFINE_string('checkpoint_path', None,
                    'Extract mode: the checkpoint (a prefix such as runs/x/model.ckpt-300, or a '
                    'directory) to use. Default: the latest in --log_root.')
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
flags.DEFINE_enum('compute_dtype', 'float32', list(resnet_model.COMPUTE_DTYPES),
                  'Precision of the convolutions and batch norm (train, eval and extract): float32, or '
                  'mixed precision for GPUs, float16 (with dynamic loss scaling) or bfloat16; variables '
                  'and checkpoints stay float32 either way. On CPUs float16 is slow; bfloat16 may be '
                  'faster on CPUs with bfloat16 instructions (AVX512_BF16, AMX).')

DATASET_DEFAULTS = {
    'cifar10': {'train_steps': 80000, 'num_residual_units': 5},
    'cifar100': {'train_steps': 80000, 'num_residual_units': 5},
    'digits': {'train_steps': 1000, 'num_residual_units': 2},
}


class FlagError(ValueError):
    """A flag value that cannot work; the message names the flag."""


def parse_list(name, text, convert):
    """Parses a comma-separated flag value; FlagError naming the flag when malformed."""
    try:
        return [convert(item) for item in text.split(',') if item.strip()]
    except ValueError:
        raise FlagError('--%s=%s: expected comma-separated numbers' % (name, text)) from None


def resolve_config(f):
    """Checks the flags and returns the run's plain settings as a dict.

    The settings of run_settings.KEYS come from the flags for a new run; eval, a
    resumed trainer and extract take the ones their flags leave out from the run
    (resolve_settings).

    Args:
      f: the parsed absl flag values (FLAGS).
    Raises:
      FlagError: naming the flag and what was expected.
      run_settings.SettingsError: a model flag that differs from the run's, or a
        settings file that cannot be read.
    """
    log_root = f.log_root or os.path.join('runs', f.dataset)
    settings, changes, from_the_run = resolve_settings(f, log_root)
    check_numbers(f, settings)
    check_transfer_flags(f)
    devices = resolve_devices(f, settings['batch_size'])
    if f.mode == 'train' and settings['freeze_restored_layers'] and devices['num_towers'] > 1:
        raise FlagError('--freeze_restored_layers: not supported with --num_gpus > 1 towers yet; '
                        'train the new layer on one device')
    check_outputs(f, log_root)
    info = cifar_input.dataset_info(settings['dataset'])
    return dict(settings, **devices, **{
        'mode': f.mode,
        'settings_changes': changes,
        'from_the_run': from_the_run,
        'train_data_path': f.train_data_path or info.default_train_path,
        'eval_data_path': f.eval_data_path or info.default_eval_path,
        'num_input_threads': f.num_input_threads,
        'log_root': log_root,
        'train_dir': f.train_dir or os.path.join(log_root, 'train'),
        'eval_dir': f.eval_dir or os.path.join(log_root, 'eval'),
        'random_seed': f.random_seed,
        'save_checkpoints_steps': f.save_checkpoints_steps,
        'save_checkpoints_secs': None if f.save_checkpoints_steps else f.save_checkpoints_secs,
        'keep_checkpoint_max': f.keep_checkpoint_max,
        'log_every_n_steps': f.log_every_n_steps,
        'summary_histograms': f.summary_histograms,
        'eval_batch_count': f.eval_batch_count,
        'eval_once': f.eval_once,
        'eval_interval_secs': f.eval_interval_secs,
        'eval_use_moving_average': f.eval_use_moving_average,
        'checkpoint_path': f.checkpoint_path,
        'extract_data_path': f.extract_data_path,
        'features_path': f.features_path,
        'train_features': f.train_features,
        'eval_features': f.eval_features,
        'finetune_epochs': f.finetune_epochs,
        'finetune_batch_size': f.finetune_batch_size,
        'finetune_lrn_rate': f.finetune_lrn_rate,
        'init_checkpoint': f.init_checkpoint,
        'compute_dtype': f.compute_dtype,
    })


def flag_settings(f, dataset=None):
    """The settings of run_settings.KEYS as the flags and their defaults give them (a new run)."""
    dataset = dataset or f.dataset
    defaults = DATASET_DEFAULTS[dataset]
    train_steps = f.train_steps if f.train_steps is not None else defaults['train_steps']
    if f.lr_boundaries is None:
        boundaries = [train_steps // 2, train_steps * 3 // 4, train_steps]
    else:
        boundaries = parse_list('lr_boundaries', f.lr_boundaries, int)
    return {
        'dataset': dataset,
        'label_mode': f.label_mode,
        'num_residual_units': (f.num_residual_units if f.num_residual_units is not None
                               else defaults['num_residual_units']),
        'use_bottleneck': f.use_bottleneck,
        'width': f.width,
        'relu_leakiness': f.relu_leakiness,
        'batch_size': f.batch_size if f.batch_size is not None else (128 if f.mode == 'train' else 100),
        'optimizer': f.optimizer,
        'weight_decay_rate': f.weight_decay_rate,
        'moving_average_decay': f.moving_average_decay,
        'lr_boundaries': boundaries,
        'lr_values': (parse_list('lr_values', f.lr_values, float) if f.lr_values is not None
                      else default_rates(f.lrn_rate, len(boundaries))),
        'min_lrn_rate': f.min_lrn_rate,
        'train_steps': train_steps,
        'freeze_restored_layers': f.freeze_restored_layers,
    }


def default_rates(initial, num_boundaries):
    """The default learning rates: `initial`, divided by 10 at each boundary."""
    return [initial / 10 ** i for i in range(num_boundaries + 1)]


# The settings each mode takes from the run when its flags leave them out.
_FROM_THE_RUN = {
    'train': run_settings.KEYS,
    'eval': run_settings.MODEL_KEYS + ('train_steps',),
    # Extract's --dataset and --label_mode describe the records, not the network.
    'extract': run_settings.MODEL_KEYS[2:],
}


def resolve_settings(f, log_root):
    """(settings {key: value} of run_settings.KEYS, [changes to the run's recipe, as text],
    [the keys taken from the run]).

    Eval, extract and a trainer resuming a run (its log_root has a checkpoint)
    take each setting their flags leave out from the run's settings file; a model
    flag given with another value than the run's is a SettingsError.
    """
    run_dir = run_dir_of(f, log_root)
    saved, source = saved_settings(f.mode, run_dir)
    keys = [key for key in _FROM_THE_RUN[f.mode] if key in saved] if saved else ()
    dataset = saved['dataset'] if 'dataset' in keys and not f['dataset'].present else f.dataset
    settings = flag_settings(f, dataset)
    given = {key: settings[key] for key in keys if f[key].present}
    if saved:
        run_settings.differences(run_dir, saved, source, given)
        settings.update({key: saved[key] for key in keys if key not in given})
    if 'lr_boundaries' in keys and 'lr_values' in keys:
        settings['lr_boundaries'], settings['lr_values'] = resumed_schedule(f, saved)
    changes = ['%s instead of the run\'s %s' % (run_settings.as_flag(key, settings[key]),
                                                run_settings.as_flag(key, saved[key]))
               for key in run_settings.TRAINING_KEYS
               if key in keys and key != 'train_steps' and settings[key] != saved[key]]
    return settings, changes, [key for key in keys if key not in given]


def saved_settings(mode, run_dir):
    """(settings, their file) of the run in run_dir, or (None, None): a mode that takes none,
    or a run without a checkpoint yet (the settings of a new run come from its first trainer)."""
    if mode not in _FROM_THE_RUN or checkpoints.latest(run_dir) is None:
        return None, None
    return run_settings.read(run_dir)


def run_dir_of(f, log_root):
    """The run directory: --log_root, or in extract mode --checkpoint_path's (a directory or a prefix)."""
    path = (f.checkpoint_path if f.mode == 'extract' else None) or log_root
    return path if os.path.isdir(path) or path == log_root else os.path.dirname(path)


def resumed_schedule(f, saved):
    """(boundaries, rates) of a resumed run: the run's, with what the flags change.

    --train_steps moves only the end: the run's boundaries stay unless
    --lr_boundaries is given. --lr_values replaces the rates; --lrn_rate alone
    scales the run's rates so that the first is --lrn_rate. New boundaries of
    another count than the run's get the default rates from the run's first.
    """
    boundaries = (parse_list('lr_boundaries', f.lr_boundaries, int) if f['lr_boundaries'].present
                  else saved['lr_boundaries'])
    if f['lr_values'].present:
        return boundaries, parse_list('lr_values', f.lr_values, float)
    rates = saved['lr_values']
    scale = f.lrn_rate / rates[0] if f['lrn_rate'].present else 1.0
    if len(rates) != len(boundaries) + 1:
        return boundaries, default_rates(rates[0] * scale, len(boundaries))
    return boundaries, rates if scale == 1.0 else [rate * scale for rate in rates]


def check_numbers(f, settings):
    """FlagError unless every number and choice of the flags and settings can work."""
    for name in ('train_steps', 'batch_size', 'num_residual_units', 'width'):
        if settings[name] < 1:
            raise FlagError('--%s=%s: expected a positive integer' % (name, settings[name]))
    for name in ('log_every_n_steps', 'keep_checkpoint_max', 'eval_interval_secs'):
        if getattr(f, name) < 1:
            raise FlagError('--%s=%s: expected a positive integer' % (name, getattr(f, name)))
    for name in ('save_checkpoints_steps', 'save_checkpoints_secs', 'num_input_threads'):
        value = getattr(f, name)
        if value is not None and value < 1:
            raise FlagError('--%s=%s: expected a positive integer' % (name, value))
    if f.eval_batch_count < 0:
        raise FlagError('--eval_batch_count=%d: expected 0 (whole set) or more' % f.eval_batch_count)
    if f.image_size != 32:
        raise FlagError('--image_size=%d: CIFAR records hold 32x32 images; only 32 is supported'
                        % f.image_size)
    if settings['label_mode'] == 'coarse' and settings['dataset'] != 'cifar100':
        raise FlagError('--label_mode=coarse: only cifar100 has coarse labels, not %s' % settings['dataset'])
    if not (f.lrn_rate > 0 and math.isfinite(f.lrn_rate)):
        raise FlagError('--lrn_rate=%g: expected a positive learning rate' % f.lrn_rate)
    for name, low, high in [('min_lrn_rate', 0, None), ('moving_average_decay', 0, 1),
                            ('relu_leakiness', 0, 1), ('weight_decay_rate', 0, None)]:
        value = settings[name]
        if value < low or (high is not None and value >= high):
            expected = 'a value in [%g, %g)' % (low, high) if high is not None else '%g or more' % low
            raise FlagError('--%s=%g: expected %s' % (name, value, expected))
    try:
        training.check_schedule(settings['lr_boundaries'], settings['lr_values'])
    except ValueError as e:
        raise FlagError('--lr_boundaries/--lr_values: %s' % e) from None


def resolve_devices(f, batch_size):
    """{device, data_format, num_towers, tower_device, variable_device, stage_input}; FlagError."""
    if f.num_gpus < 0:
        raise FlagError('--num_gpus=%d: expected 0 (CPU) or more' % f.num_gpus)
    num_towers = f.num_gpus if f.num_gpus > 1 and f.mode == 'train' else 1
    if batch_size % num_towers:
        raise FlagError('--batch_size=%d: not divisible by --num_gpus=%d; each tower takes an equal '
                        'share of the batch' % (batch_size, f.num_gpus))
    if f.variable_device == 'gpu' and (f.num_gpus < 1 or f.tower_device == 'cpu'):
        raise FlagError('--variable_device=gpu: needs GPU towers (--num_gpus >= 1, --tower_device=gpu)')
    if f.num_gpus > 0 and f.tower_device == 'gpu':
        import tensorflow as tf
        visible = len(tf.config.list_physical_devices('GPU'))
        if f.num_gpus > visible:
            raise FlagError('--num_gpus=%d: TensorFlow sees %d GPU(s) on this machine'
                            % (f.num_gpus, visible))

    device = '/gpu:0' if f.num_gpus >= 1 and f.tower_device == 'gpu' else '/cpu:0'
    data_format = f.data_format or ('NCHW' if device.startswith('/gpu') else 'NHWC')
    if (data_format == 'NCHW' and device == '/cpu:0'
            and os.environ.get('TF_ENABLE_ONEDNN_OPTS') == '0'):
        raise FlagError('--data_format=NCHW: on the CPU only oneDNN runs NCHW, and TF_ENABLE_ONEDNN_OPTS=0 '
                        'turns it off; use NHWC')
    if data_format == 'NCHW' and device == '/cpu:0' and f.compute_dtype == 'float16':
        raise FlagError('--data_format=NCHW: float16 on the CPU runs on TensorFlow\'s generic kernels, '
                        'which pool NHWC only; use NHWC')
    return {
        'device': device,
        'data_format': data_format,
        'num_towers': num_towers,
        'tower_device': f.tower_device,
        'variable_device': '/%s:0' % f.variable_device,
        'stage_input': default_stage_input(f.num_gpus, f.tower_device) if f.stage_input is None
                       else bool(f.stage_input),
    }


def check_outputs(f, log_root):
    """FlagError naming the flag of an output directory that cannot be created or written."""
    written = {'train': ('log_root', 'train_dir'), 'eval': ('eval_dir',), 'finetune': ('log_root',),
               'extract': ('features_path',)}.get(f.mode, ())
    outputs = [('log_root', log_root), ('train_dir', f.train_dir or os.path.join(log_root, 'train')),
               ('eval_dir', f.eval_dir or os.path.join(log_root, 'eval'))]
    if f.mode == 'extract' and f.features_path:
        outputs.append(('features_path', os.path.dirname(os.path.abspath(f.features_path))))
    for name, path in outputs:
        problem = guards.output_dir_problem(path, writable=name in written)
        if problem:
            raise FlagError('--%s=%s: %s' % (name, path, problem))


def check_transfer_flags(f):
    """FlagError unless the flags of extract, finetune and --init_checkpoint fit the mode."""
    required = {'extract': ('extract_data_path', 'features_path'),
                'finetune': ('train_features', 'eval_features')}.get(f.mode, ())
    for name in required:
        if not getattr(f, name):
            raise FlagError('--mode=%s needs --%s' % (f.mode, name))
    if f.features_path and os.path.isdir(f.features_path):
        raise FlagError('--features_path=%s: is a directory; expected a file name such as features.npz'
                        % f.features_path)
    for name in ('finetune_epochs', 'finetune_batch_size'):
        if getattr(f, name) < 1:
            raise FlagError('--%s=%d: expected a positive integer' % (name, getattr(f, name)))
    if not (f.finetune_lrn_rate > 0 and math.isfinite(f.finetune_lrn_rate)):
        raise FlagError('--finetune_lrn_rate=%g: expected a positive learning rate' % f.finetune_lrn_rate)
    if f.mode == 'train' and f.freeze_restored_layers and not f.init_checkpoint:
        raise FlagError('--freeze_restored_layers: needs --init_checkpoint, the run to restore from')


def default_stage_input(num_gpus, tower_device):
    """--stage_input when not given: on for GPU training, off on the CPU (no copy to hide)."""
    return num_gpus >= 1 and tower_device == 'gpu'


def build_hparams(config):
    """The one HParams of the run, from the resolved config."""
    num_classes = cifar_input.num_classes(config['dataset'], config['label_mode'])
    try:
        return resnet_model.HParams(
            batch_size=config['batch_size'], num_classes=num_classes,
            min_lrn_rate=config['min_lrn_rate'], lrn_rate=config['lr_values'][0],
            num_residual_units=config['num_residual_units'], use_bottleneck=config['use_bottleneck'],
            weight_decay_rate=config['weight_decay_rate'], relu_leakiness=config['relu_leakiness'],
            optimizer=config['optimizer'], width=config['width'],
            moving_average_decay=config['moving_average_decay'], data_format=config['data_format'],
            compute_dtype=config['compute_dtype'])
    except ValueError as e:
        raise FlagError(str(e)) from None


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


def main(argv):
    try:
        run(argv)
    except KeyboardInterrupt:  # a stop signal before or outside the modes' own handling
        fail('interrupted by SIGINT', 130)


def run(argv):
    # absl's handler already prints TensorFlow's Python log records; don't print them twice.
    import tensorflow as tf
    tf.get_logger().propagate = False
    if len(argv) > 1:
        fail('unexpected arguments %s; flags look like --name=value' % ' '.join(argv[1:]), 2)
    hps, config = configure()
    if config['mode'] == 'eval' and not config['eval_once'] and not evaluation.run_started(config['log_root']):
        # Started before training: the model settings come with the run's first trainer. The
        # eval files can be checked now if --dataset says how to read them.
        if FLAGS['dataset'].present:
            try:
                cifar_input.check_files(config['dataset'], config['eval_data_path'])
            except cifar_input.DataError as e:
                fail(str(e), 1)
        if not evaluation.wait_for_run(config['log_root'], config['eval_interval_secs']):
            return
        hps, config = configure()
    mode = {'train': training.train, 'eval': evaluation.evaluate,
            'extract': features.extract_features, 'finetune': features.finetune}[config['mode']]
    try:
        mode(hps, config, flag_values=FLAGS.flag_values_dict())
    except (training.TrainingError, transfer.CheckpointError, checkpoints.CheckpointError,
            features.FeaturesError, cifar_input.DataError, guards.LockedError,
            run_settings.SettingsError, summaries.SummaryWriteError) as e:
        fail(str(e), 1)
    except (OSError, tf.errors.OpError) as e:
        fail(guards.error_line(e), 1)


def configure():
    """(hps, config) from FLAGS and the run's settings; exits with one line when they cannot work."""
    try:
        config = resolve_config(FLAGS)
        return build_hparams(config), config
    except (FlagError, cifar_input.DataError) as e:
        fail(str(e), 2)
    except run_settings.SettingsError as e:
        fail(str(e), 1)


if __name__ == '__main__':
    app.run(main, flags_parser=parse_flags)
