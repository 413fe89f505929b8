"""The session's devices: soft placement, and logical CPU devices for towers without GPUs."""
import tensorflow as tf


def session_config(num_cpu_devices=1):
    """Soft placement; num_cpu_devices > 1 makes that many logical CPU devices (CPU towers)."""
    config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
    if num_cpu_devices > 1:
        config.device_count['CPU'] = num_cpu_devices
    return config


def num_cpu_devices(config):
    """Logical CPU devices the session of a RunConfig needs: one per tower for CPU towers, else 1."""
    if config.num_towers > 1 and config.devices.tower_device == 'cpu':
        return config.num_towers
    return 1
