"""Shared test set-up: quiet, fast TensorFlow, tests kept out of the checkout, and the session's
finished tiny run."""
import os

# Must be set before the first TensorFlow import: oneDNN nearly doubles CPU speed here.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest  # noqa: E402

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Subprocesses import this checkout's code whatever their working directory (a `python -c` or a
# script would otherwise find an installed copy, or nothing).
os.environ['PYTHONPATH'] = os.pathsep.join(
    [CHECKOUT] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p and p != CHECKOUT])

# Workers for pytest.ini's `-n auto`: most tests start TensorFlow subprocesses of their
# own, so more workers than cores only makes each test slower and closer to its timeout.
MAX_WORKERS = 4


@pytest.hookimpl(optionalhook=True)  # known only where pytest-xdist is loaded
def pytest_xdist_auto_num_workers(config):
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))

# Session fixtures that train: the first test of a worker to ask for one builds it inside its
# own time limit, so such a test gets this much more (seconds), whatever its marker says; a
# loaded machine (load 13 on 2 cores was seen) makes a build several times slower.
TRAINING_FIXTURES = ('tiny_run', 'learnable', 'diverged')
TRAINING_FIXTURE_SECS = 240


# The files that take longest, longest first (the seconds of their tests among the 60 slowest of a
# loaded run of 2026-12-07: about 660, 650, 450, 250, 200, 160, 120, 120, 115). `--dist loadfile`
# hands whole files to the workers in collection order (see pytest_configure), so these start first:
# a file of several minutes begun near the end would finish alone on one core while the other
# workers sit idle (xdist's own order, most tests first, started test_cluster.py and
# test_reliability.py eleventh and twelfth).
LONGEST_FILES = ('test_cluster.py', 'test_resnet_main.py', 'test_reliability.py', 'test_resolve.py',
                 'test_quiet.py', 'test_hostile_inputs.py', 'test_features.py', 'test_run_identity.py',
                 'test_mixed_precision.py')


def pytest_configure(config):
    # pytest-xdist 3.8 sorts the files by their number of tests unless told not to
    # (--no-loadscope-reorder, which older versions do not know: they keep collection order).
    if getattr(config.option, 'loadscopereorder', None):
        config.option.loadscopereorder = False


def run_order(item):
    """Where an item comes in the run: the files of LONGEST_FILES in their order, each with its
    tests of the longest time limit first, then the other files as collected. (xdist hands a
    worker its next file while the last two tests of its current one run: a long one there held
    the next file back behind it.)"""
    name = item.path.name
    if name not in LONGEST_FILES:
        return len(LONGEST_FILES), 0
    marker = item.get_closest_marker('timeout')
    return LONGEST_FILES.index(name), -(marker.args[0] if marker and marker.args else 0)


def pytest_collection_modifyitems(config, items):
    for item in items:
        marker = item.get_closest_marker('timeout')
        if marker and marker.args and set(TRAINING_FIXTURES) & set(getattr(item, 'fixturenames', ())):
            item.add_marker(pytest.mark.timeout(marker.args[0] + TRAINING_FIXTURE_SECS), append=False)
    items.sort(key=run_order)  # stable: tests of the same rank keep their order


# The run of the `tiny_run` fixture: 60 steps, a checkpoint every 20, the newest 2 kept.
TINY_RUN_ARGS = ['--mode=train', '--dataset=digits', '--num_residual_units=1', '--batch_size=32',
                 '--nolr_batch_scaling', '--train_steps=60', '--save_checkpoints_steps=20', '--keep_checkpoint_max=2',
                 '--log_every_n_steps=20', '--noeval_after_training']


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory):
    """A finished run of ResNet-8 on the bundled digits (checkpoints 40 and 60), trained by
    resnet_main's main() with an absolute --log_root, in this process (a TensorFlow start fewer
    per worker than a subprocess; the code is the same). Tests copy it; none changes it."""
    import processes
    log_root = str(tmp_path_factory.mktemp('tiny_run') / 'run')
    assert processes.main_status(TINY_RUN_ARGS + ['--log_root=' + log_root]) == 0
    assert processes.checkpoint_steps(log_root) == [40, 60], os.listdir(log_root)
    return log_root


@pytest.fixture(scope='session')
def learnable(tmp_path_factory):
    """(train.bin, test.bin): 1,000 and 200 synthetic CIFAR-10 records whose class only their
    spatial pattern tells (synthetic.learnable_images). Tests read them; none changes them."""
    import synthetic
    return synthetic.write_learnable_dataset(tmp_path_factory.mktemp('learnable'), num_train=1000, num_test=200)


@pytest.fixture(scope='session')
def diverged(learnable, tmp_path_factory):
    """A run whose learning rate jumps to 1e6 at step 12: (log_root, TrainingError message).
    Tests copy it; none changes it."""
    import processes
    from resnet_cifar import training
    train_path, _ = learnable
    log_root = str(tmp_path_factory.mktemp('diverged') / 'run')
    config = processes.resolve(['--mode=train', '--dataset=cifar10', '--train_data_path=' + train_path,
                                '--log_root=' + log_root, '--train_steps=40', '--save_checkpoints_steps=5',
                                '--keep_checkpoint_max=20', '--lr_boundaries=12', '--lr_values=0.1,1e6',
                                '--log_every_n_steps=100', '--num_residual_units=1', '--batch_size=32',
                                '--nolr_batch_scaling', '--noeval_after_training'])
    with pytest.raises(training.TrainingError) as error:
        training.train(config)
    return log_root, str(error.value)


# ---------------------------------------------------------------- tests keep out of the checkout

# What Python and pytest may write in the checkout; anything else a test leaves there fails it.
IGNORED_DIRS = ('.git', '__pycache__', '.pytest_cache')


def checkout_files(checkout=CHECKOUT):
    """{path relative to the checkout: (size, mtime_ns)} of its files, without IGNORED_DIRS,
    *.egg-info, virtualenvs (a .venv in the clone: thousands of files) and *.pyc. About 100 files: 1 to 6 ms (2026-12-07, idle to load 16)."""
    found = {}
    for folder, dirs, files in os.walk(checkout):
        dirs[:] = [d for d in dirs if d not in IGNORED_DIRS and not d.endswith('.egg-info')
                   and not os.path.exists(os.path.join(folder, d, 'pyvenv.cfg'))]  # a virtualenv
        for name in files:
            if not name.endswith('.pyc'):
                path = os.path.join(folder, name)
                stat = os.lstat(path)
                found[os.path.relpath(path, checkout)] = (stat.st_size, stat.st_mtime_ns)
    return found


def checkout_changes(before, after):
    """Paths that appeared or went away, and files of the bundled data/ that changed. (Other
    edits are left alone: someone may be editing the code while the tests run.)"""
    changed = [p for p in before.keys() & after.keys()
               if p.startswith('data' + os.sep) and before[p] != after[p]]
    return sorted(set(before) ^ set(after)) + sorted(changed)


@pytest.fixture(scope='session', autouse=True)
def session_working_directory(tmp_path_factory):
    """The session's fixtures run in an empty directory of their own: a relative path (the
    default --log_root=runs/<dataset>) lands there, never in the checkout."""
    started_in = os.getcwd()
    os.chdir(tmp_path_factory.mktemp('session_cwd'))
    yield
    os.chdir(started_in)


@pytest.fixture(autouse=True)
def own_working_directory(tmp_path_factory, monkeypatch):
    """Each test, and every subprocess it starts, runs in an empty directory of its own."""
    monkeypatch.chdir(tmp_path_factory.mktemp('cwd'))


GUARD = pytest.StashKey()


class CheckoutGuard(object):
    """The checkout's files when the session started, and after the last test checked."""

    def __init__(self):
        self.files = checkout_files()

    def check(self):
        """The changes since the last check (checkout_changes); they become the new state."""
        now = checkout_files()
        changes = checkout_changes(self.files, now)
        self.files = now
        return changes


def pytest_sessionstart(session):
    session.config.stash[GUARD] = CheckoutGuard()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Fails a test that leaves a file in the checkout (its setup included: a session fixture
    is built for the first test that asks for it) or changes the working directory, whether
    or not the test itself passed."""
    working_directory = os.getcwd()
    try:
        return (yield)
    finally:
        changes = item.config.stash[GUARD].check()
        if changes:
            pytest.fail('the test left files in the checkout %s (or a test beside it on another worker '
                        'did): %s' % (CHECKOUT, ', '.join(changes)), pytrace=False)
        if os.getcwd() != working_directory:
            pytest.fail('the test changed the working directory to %s' % os.getcwd(), pytrace=False)
