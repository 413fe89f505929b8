"""Shared test set-up: quiet, fast TensorFlow, and the session's finished tiny run."""
import os

# Must be set before the first TensorFlow import: oneDNN nearly doubles CPU speed here.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest  # noqa: E402

# Workers for pytest.ini's `-n auto`: most tests start TensorFlow subprocesses of their
# own, so more workers than cores only makes each test slower and closer to its timeout.
MAX_WORKERS = 4


@pytest.hookimpl(optionalhook=True)  # known only where pytest-xdist is loaded
def pytest_xdist_auto_num_workers(config):
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))

# The run of the `tiny_run` fixture: 60 steps, a checkpoint every 20, the newest 2 kept.
TINY_RUN_ARGS = ['--mode=train', '--dataset=digits', '--num_residual_units=1', '--batch_size=32',
                 '--nolr_batch_scaling', '--train_steps=60', '--save_checkpoints_steps=20', '--keep_checkpoint_max=2',
                 '--log_every_n_steps=20', '--noeval_after_training']


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory):
    """A finished run of ResNet-8 on the bundled digits (checkpoints 40 and 60), trained by
    resnet_main.py in a subprocess with an absolute --log_root. Tests copy it; none changes it."""
    import processes
    log_root = str(tmp_path_factory.mktemp('tiny_run') / 'run')
    done = processes.run(*(TINY_RUN_ARGS + ['--log_root=' + log_root]))
    assert done.returncode == 0, done.stderr[-3000:]
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
