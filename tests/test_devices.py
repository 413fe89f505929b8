"""devices.py: the session config (soft placement, logical CPU devices) and how many CPU devices
a run's session needs."""
import pytest
import tensorflow as tf

from processes import resolve
from resnet_cifar import devices


def cpu_devices(config):
    """The CPU device names a real session with `config` has."""
    with tf.Graph().as_default(), tf.compat.v1.Session(config=config) as session:
        return sorted(d.name.rsplit('device:', 1)[1] for d in session.list_devices() if d.device_type == 'CPU')


@pytest.mark.timeout(60)
def test_one_device_is_soft_placed_and_has_the_one_cpu():
    config = devices.session_config()
    assert config.allow_soft_placement and 'CPU' not in config.device_count
    assert cpu_devices(config) == ['CPU:0']


@pytest.mark.timeout(60)
def test_cpu_towers_get_that_many_logical_cpu_devices():
    config = devices.session_config(3)
    assert config.allow_soft_placement and config.device_count['CPU'] == 3
    assert cpu_devices(config) == ['CPU:0', 'CPU:1', 'CPU:2']
    with tf.Graph().as_default():
        with tf.device('/cpu:2'):
            on_third = tf.constant(1.0) * 2.0
        with tf.device('/gpu:0'):  # no GPU here: soft placement puts it on a CPU
            on_gpu = tf.constant(3.0) + 1.0
        with tf.compat.v1.Session(config=config) as session:
            assert session.run([on_third, on_gpu]) == [2.0, 4.0]


@pytest.mark.timeout(60)
@pytest.mark.parametrize('flags, expected', [
    (['--num_gpus=3', '--tower_device=cpu', '--batch_size=33'], 3),  # one per CPU tower
    (['--num_gpus=1', '--tower_device=cpu'], 1),  # one tower
    (['--mode=eval', '--num_gpus=3', '--tower_device=cpu'], 1),  # eval runs on one device
    ([], 1),
])
def test_a_run_needs_one_cpu_device_per_cpu_tower_else_one(flags, expected):
    assert devices.num_cpu_devices(resolve(['--dataset=digits'] + flags)) == expected
