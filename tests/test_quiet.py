"""resnet_cifar.quiet (a quiet start) and resnet_main.py's grouped --help, in real subprocesses
of resnet_main.py and of small drivers (flag_help's own API: test_flag_help.py)."""
import os
import re
import subprocess
import sys
import textwrap

import pytest

import resnet_main
from processes import MAIN
from resnet_cifar import quiet

# The noise of issue "Noise before the first useful line", by where it comes from.
NOISE = [
    'absl::InitializeLog',  # absl's banner, before TensorFlow initialises its log
    'port.cc',  # oneDNN custom operations are on
    'cudart_stub.cc',  # Could not find cuda drivers
    'cuInit',  # the CUDA platform on a machine without a driver
    'DT_UINT8',  # oneDNN's uint8 transpose
    'is deprecated and will be removed',  # TensorFlow's deprecation notices
    'INFO:tensorflow:',
]
CPP_LINE = re.compile(r'^[IWEF]\d{4} [0-9:.]+\s+\d+ \S+\.(?:cc|cpp|h):\d+\] ', re.M)

# Imports TensorFlow the quiet way, then makes TensorFlow log a deprecation notice.
IMPORT_DRIVER = textwrap.dedent("""\
    import sys
    from resnet_cifar import quiet
    quiet.prepare(uses_gpu=False)
    tf = quiet.import_tensorflow()
    tf.compat.v1.disable_eager_execution()
    tf.compat.v1.train.string_input_producer(['a', 'b'])
    with tf.compat.v1.Session() as session:
        session.run(tf.constant(1) + 1)
    sys.stderr.write('driver done\\n')
    """)

# resnet_main.py as `python resnet_main.py` runs it, saying at exit whether TensorFlow was imported.
MAIN_DRIVER = textwrap.dedent("""\
    import atexit, runpy, sys
    atexit.register(lambda: sys.stderr.write('tensorflow imported: %%s\\n' %% ('tensorflow' in sys.modules)))
    sys.argv = [%(main)r] + sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name='__main__')
    """) % {'main': MAIN}


def child_env(**settings):
    """The environment with the quiet module's variables unset, then `settings`."""
    env = dict(os.environ)
    for name in ('TF_CPP_MIN_LOG_LEVEL', 'TF_ENABLED_DEVICE_TYPES', 'TF_CPP_MAX_VLOG_LEVEL'):
        env.pop(name, None)
    env.update(settings)
    return env


def run_python(code, *args, env=None, timeout=240):
    return subprocess.run([sys.executable, '-c', code] + list(args), capture_output=True, text=True,
                          env=env if env is not None else child_env(), timeout=timeout)


def noise_in(text):
    return [n for n in NOISE if n in text] + CPP_LINE.findall(text)


# ---------------------------------------------------------------- quiet: whole runs

@pytest.mark.timeout(240)
def test_digits_training_start_has_no_noise_before_the_first_progress_line(tmp_path):
    done = subprocess.run([sys.executable, MAIN, '--dataset=digits', '--num_residual_units=1', '--batch_size=32',
                           '--train_steps=20', '--log_every_n_steps=10', '--log_root=%s' % (tmp_path / 'run')],
                          capture_output=True, text=True, env=child_env(), timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]
    first_progress = re.search(r'^.*step 10/20 .*$', done.stderr, re.M)
    assert first_progress, done.stderr[-3000:]
    before = done.stderr[:first_progress.start()]
    assert noise_in(before) == [], before
    # What comes before is the project's own lines (the model's size, the schedule).
    assert [line for line in before.splitlines() if not re.match(r'^I\d{4} [0-9:.]+ +\d+ \w+\.py:\d+\] ', line)] == []
    assert noise_in(done.stderr) == [], done.stderr
    # The run ends with the number the quick start promises.
    assert re.search(r'^held-out precision 0\.\d{4} on 300 images of .*test_batch.bin \(step 20, loss',
                     done.stdout, re.M), done.stdout


def test_the_quiet_import_drops_the_noise():
    done = run_python(IMPORT_DRIVER)
    assert done.returncode == 0, done.stderr
    assert done.stderr == 'driver done\n'


def test_a_users_level_0_brings_tensorflows_lines_back():
    done = run_python(IMPORT_DRIVER, env=child_env(TF_CPP_MIN_LOG_LEVEL='0'))
    assert done.returncode == 0, done.stderr
    for line in ('absl::InitializeLog', 'port.cc', 'is deprecated and will be removed'):
        assert line in done.stderr, (line, done.stderr)


def test_a_users_own_settings_win():
    code = textwrap.dedent("""\
        import logging, os, sys
        from resnet_cifar import quiet
        print(quiet.prepare(uses_gpu=False), os.environ['TF_CPP_MIN_LOG_LEVEL'],
              os.environ['TF_ENABLED_DEVICE_TYPES'], 'tensorflow' in sys.modules)
        """)
    assert run_python(code).stdout.split() == ['2', '2', 'CPU', 'False']
    mine = run_python(code, env=child_env(TF_CPP_MIN_LOG_LEVEL='1', TF_ENABLED_DEVICE_TYPES='CPU,GPU'))
    assert mine.stdout.split() == ['1', '1', 'CPU,GPU', 'False']
    gpu = run_python(code.replace('uses_gpu=False', 'uses_gpu=True').replace(
        "os.environ['TF_ENABLED_DEVICE_TYPES']", "os.environ.get('TF_ENABLED_DEVICE_TYPES')"))
    assert gpu.stdout.split() == ['2', '2', 'None', 'False']


def test_a_real_tensorflow_error_still_comes_through():
    code = IMPORT_DRIVER.replace("session.run(tf.constant(1) + 1)",
                                 "session.run(tf.io.read_file('/nonexistent/quiet-test-file'))")
    done = run_python(code)
    assert done.returncode == 1
    assert 'NotFoundError' in done.stderr and '/nonexistent/quiet-test-file' in done.stderr, done.stderr
    assert 'Traceback' in done.stderr
    assert 'is deprecated' not in done.stderr and 'absl::InitializeLog' not in done.stderr


# ---------------------------------------------------------------- quiet: the stderr filter

FILTER_DRIVER = textwrap.dedent("""\
    import os, sys
    from resnet_cifar import quiet
    with quiet.stderr_filter(int(sys.argv[1])):
        os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n')
        os.write(2, b'I0000 00:00:1796144376.998181    5920 port.cc:153] oneDNN custom operations are on.\\n')
        os.write(2, b'W0000 00:00:1796144376.998181    5920 some.cc:1] a warning\\n')
        os.write(2, b'E0000 00:00:1796144376.998181    5920 some.cc:2] a real error\\n')
        os.write(2, b'F0000 00:00:1796144376.998181    5920 some.cc:3] a fatal\\n')
        sys.stderr.write('a Python line\\n')
        os.write(2, b'partial ')
        os.write(2, b'line, then no newline')
    sys.stderr.write('|after\\n')
    if len(sys.argv) > 2:
        with quiet.stderr_filter(2):
            raise ImportError('a failed import stays visible')
    """)


@pytest.mark.parametrize('level, kept', [
    (0, ['absl::InitializeLog', 'port.cc', 'a warning', 'a real error', 'a fatal']),
    (1, ['a warning', 'a real error', 'a fatal']),
    (2, ['a real error', 'a fatal']),
    (3, ['a fatal']),
])
def test_the_filter_drops_only_cpp_lines_below_the_level(level, kept):
    done = run_python(FILTER_DRIVER, str(level))
    assert done.returncode == 0, done.stderr
    for text in ('absl::InitializeLog', 'port.cc', 'a warning', 'a real error', 'a fatal'):
        assert (text in done.stderr) == (text in kept), (level, text, done.stderr)
    assert 'a Python line\npartial line, then no newline|after\n' in done.stderr


def test_a_fatal_line_before_an_abort_still_comes_out():
    """The filter is a child process: what TensorFlow writes just before it aborts (while the
    main thread may hold the GIL) is not lost with the process."""
    code = textwrap.dedent("""\
        import os
        from resnet_cifar import quiet
        with quiet.stderr_filter(2):
            os.write(2, b'I0000 00:00:1796144376.998181    5920 port.cc:153] dropped\\n')
            os.write(2, b'F0000 00:00:1796144376.998181    5920 cpu_feature_guard.cc:1] fatal before abort\\n')
            os.abort()
        """)
    done = run_python(code, timeout=60)
    assert done.returncode == -6  # SIGABRT
    assert 'fatal before abort' in done.stderr and 'dropped' not in done.stderr, done.stderr


def test_an_exception_inside_the_filter_is_shown():
    done = run_python(FILTER_DRIVER, '2', 'raise')
    assert done.returncode == 1
    assert 'ImportError: a failed import stays visible' in done.stderr, done.stderr


def test_keep_line():
    assert not quiet.keep_line(b'I0000 00:00:1796144376.999197    5920 cudart_stub.cc:31] Could not\n', 1)
    assert quiet.keep_line(b'E0000 00:00:1796144380.498417    5920 cuda_platform.cc:52] failed\n', 2)
    assert not quiet.keep_line(b'E0000 00:00:1796144380.498417    5920 cuda_platform.cc:52] failed\n', 3)
    assert quiet.keep_line(b'I1201 16:59:41.328614 140432625126272 training.py:467] ResNet\n', 0)
    assert quiet.keep_line(b'Traceback (most recent call last):\n', 3)


# ---------------------------------------------------------------- grouped help

@pytest.mark.parametrize('arg', ['--help', '-h'])
def test_grouped_help_exits_0_without_tensorflow(arg):
    done = run_python(MAIN_DRIVER, arg, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == 'tensorflow imported: False\n'
    compact = resnet_main.COMPACT_GROUPS
    titles = [title + (' (--help=%s)' % title.split()[0].lower() if title in compact else '')
              for title, _ in resnet_main.FLAG_GROUPS]
    positions = [done.stdout.index('\n%s:\n' % title) for title in titles]
    assert positions == sorted(positions)
    assert '  --dataset=cifar10 {cifar10,cifar100,digits} Dataset:' in done.stdout
    assert 'python resnet_main.py --dataset=digits' in done.stdout
    # A line per flag, except in the compact groups, which name their flags.
    flag_lines = [line for line in done.stdout.splitlines() if re.match(r'  --\w+=', line)]
    assert len(flag_lines) == sum(len(names) for title, names in resnet_main.FLAG_GROUPS if title not in compact)
    named = set(re.findall(r'--(\w+)', done.stdout))
    assert all(name in named for title, names in resnet_main.FLAG_GROUPS if title in compact for name in names)
    assert len(done.stdout.splitlines()) < 90


def test_help_topic_helpfull_and_a_flag_typo():
    group = run_python(MAIN_DRIVER, '--help=Transfer', timeout=60)
    assert group.returncode == 0
    assert group.stdout.startswith('--checkpoint_path=\n    Extract and export modes: the checkpoint')
    assert '--freeze_restored_layers=false\n' in group.stdout and '--num_gpus' not in group.stdout
    bad = run_python(MAIN_DRIVER, '--help=nonsense', timeout=60)
    assert bad.returncode == 2 and 'error: --help=nonsense: no such group or flag' in bad.stderr
    full = run_python(MAIN_DRIVER, '--helpfull', timeout=60)
    assert full.returncode == 0 and 'tensorflow imported: False' in full.stderr
    for name in ('--dataset', '--compute_dtype', '--helpfull', '--verbosity'):
        assert name in full.stdout
    typo = run_python(MAIN_DRIVER, '--datset=digits', timeout=60)
    assert typo.returncode == 2 and typo.stderr.splitlines() == [
        'error: Unknown command line flag \'datset\'. Did you mean: dataset ?', 'tensorflow imported: False']
    value = run_python(MAIN_DRIVER, '--batch_size=0', timeout=60)
    assert value.returncode == 2 and value.stderr.splitlines() == [
        'error: --batch_size=0: expected a positive integer', 'tensorflow imported: False']


def test_helpfull_lists_our_flags_first_under_the_main_module():
    """absl's --helpfull lists the main module's flags first, then other modules' alphabetically;
    ours are defined by settings.define_flags, and were listed as resnet_cifar.settings', after
    absl.app's and absl.logging's."""
    full = run_python(MAIN_DRIVER, '--helpfull', timeout=60)
    assert full.returncode == 0, full.stderr
    headings = re.findall(r'^(\S+):$', full.stdout.split('\nflags:\n', 1)[1], re.M)
    assert headings[0] == MAIN, headings
    ours = full.stdout.split('\n%s:\n' % MAIN, 1)[1].split('\n\n')[0]
    listed = re.findall(r'^  --(?:\[no\])?(\w+):', ours, re.M)
    assert listed == sorted(name for _, names in resnet_main.FLAG_GROUPS for name in names)


@pytest.mark.timeout(120)
def test_the_import_leaves_keras_out_and_tf_keras_still_loads_when_asked():
    """TensorFlow imports Keras's optimizers at its own import, only to register them for Keras
    SavedModels; that took 2 of the 5 seconds of every start here. The quiet import skips it."""
    driver = textwrap.dedent("""\
        import sys
        from resnet_cifar import quiet
        quiet.prepare(uses_gpu=False)
        tf = quiet.import_tensorflow()
        print('keras imported:', 'keras' in sys.modules)
        print('optimizer:', type(tf.keras.optimizers.SGD(0.1)).__name__)
        """)
    done = subprocess.run([sys.executable, '-c', driver], capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ['keras imported: False', 'optimizer: SGD']


@pytest.mark.timeout(60)
def test_main_run_in_the_test_process_leaves_its_environment_and_log_level_behind(monkeypatch):
    """tests/processes.main_status runs resnet_main in a pytest worker (the tiny_run fixture
    does): what main() sets for TensorFlow must not reach the worker's later subprocesses,
    whose own start-up is the subject of tests such as the launcher's no-cuInit check."""
    from absl import logging
    import processes
    monkeypatch.delenv('TF_ENABLED_DEVICE_TYPES', raising=False)
    monkeypatch.delenv('TF_CPP_MIN_LOG_LEVEL', raising=False)
    logging.set_verbosity(logging.WARNING)
    before = dict(os.environ)
    assert processes.main_status(['--batch_size=0']) == 2  # a flag error, after quiet.prepare()
    assert dict(os.environ) == before
    assert logging.get_verbosity() == logging.WARNING
