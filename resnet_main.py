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

from resnet_cifar import flag_help  # noqa: E402
from resnet_cifar import quiet  # noqa: E402
from resnet_cifar import settings  # noqa: E402

FLAGS = flags.FLAGS

# Every flag, its help and its --help group are declared once, in resnet_cifar/settings.py
# (docs/flags.md has the same groups). They are this module's, as absl names it (the script's path
# when run), so that --helpfull lists them first.
settings.define_flags(flags, module_name=sys.argv[0] if __name__ == '__main__' else __name__)
FLAG_GROUPS = settings.FLAG_GROUPS
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
