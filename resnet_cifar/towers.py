"""Data-parallel training: N towers of the ResNet sharing one set of variables.

In-graph replication. Each tower gets its own share of the global batch (its
own dequeue, so no tower waits on another's decode) and builds the same ResNet
on its own device; the variables live once, on a parameter device. Each tower
computes its cost and gradients; `average_gradients` averages them and one
optimizer step applies the mean, followed by the moving-average (EMA) update,
exactly as with one device. The variables, optimizer slots and shadows have the
names of the one-device graph, so checkpoints move freely between 1 and N
towers and the one-device eval scores either.

Weight decay: every tower's cost includes the same weight-decay term, so the
averaged gradient is grad(mean cross-entropy) + grad(weight decay), as with one
device.

Batch norm: each tower normalizes with the moments of its own tower batch. The
moving statistics get ONE update per step, from the mean over towers of the
tower batch moments: the moving mean then moves toward the mean of the whole
global batch (towers have equal sizes), exactly as with one device; the moving
variance moves toward the mean of the towers' (unbiased) variances, which leaves
out the small spread between the tower means.
"""
import tensorflow as tf

import cifar_input
import resnet_model
from resnet_cifar import settings
from resnet_cifar import staging
from resnet_cifar import summaries
from resnet_cifar import train_step


# Ops that hold a variable; the device function sends these to the parameter device.
_VARIABLE_OPS = ('Variable', 'VariableV2', 'VarHandleOp')


def tower_devices(num_towers, tower_device):
    """['/gpu:0', '/gpu:1', ...] or ['/cpu:0', '/cpu:1', ...] (logical CPU devices)."""
    if tower_device not in settings.TOWER_DEVICES:
        raise ValueError('tower_device must be one of %s; got %r' % (', '.join(settings.TOWER_DEVICES), tower_device))
    return ['/%s:%d' % (tower_device, i) for i in range(num_towers)]


def average_gradients(tower_grads):
    """The mean over towers of each variable's gradient.

    Args:
      tower_grads: one list per tower of (gradient, variable) pairs; every tower
        lists the same variables in the same order. A gradient may be None (the
        variable does not affect the cost) only if it is None in every tower.
    Returns:
      [(mean gradient, variable)] in that order; the mean has the variable's
      shape. With one tower, its own pairs.
    Raises:
      ValueError: no towers, or towers that disagree on the variables.
    """
    if not tower_grads:
        raise ValueError('average_gradients: no towers')
    lengths = {len(pairs) for pairs in tower_grads}
    if len(lengths) != 1:
        raise ValueError('average_gradients: towers list different numbers of variables: %s'
                         % sorted(lengths))
    if len(tower_grads) == 1:
        return list(tower_grads[0])
    averaged = []
    for pairs in zip(*tower_grads):
        variable = pairs[0][1]
        if any(v is not variable for _, v in pairs):
            raise ValueError('average_gradients: towers disagree on the variable at position %d (%s)'
                             % (len(averaged), variable.name))
        grads = [g for g, _ in pairs]
        if all(g is None for g in grads):
            averaged.append((None, variable))
            continue
        if any(g is None for g in grads):
            raise ValueError('average_gradients: %s has a gradient in some towers only' % variable.name)
        grads = [tf.convert_to_tensor(g) for g in grads]  # IndexedSlices -> dense
        mean = tf.multiply(tf.add_n(grads), 1.0 / len(grads), name='mean_gradient')
        averaged.append((mean, variable))
    return averaged


def _device_function(tower_device, variable_device):
    """Places variables on variable_device and every other op on tower_device."""
    def place(op):
        return variable_device if op.type in _VARIABLE_OPS else tower_device
    return place


class TowerModel(object):
    """N ResNet towers and one train_step.TrainStep that trains them all.

    Args:
      hps: resnet_model.HParams; hps.batch_size is the global batch.
      tower_batches: one (images float32 [b, 32, 32, 3], labels float32 one-hot
        [b, num_classes]) per tower; b = hps.batch_size / N.
      devices: one device string per tower, e.g. tower_devices(N, 'gpu').
      variable_device: where the variables live, e.g. '/cpu:0' or '/gpu:0'.
      build_train_op: optional (TrainStep, averaged grads_and_vars, mean batch
        moments) -> train op; default TrainStep.build_train_op (distributed.py's for
        synchronous replicas).

    Attributes, over the whole global batch:
      step: the one train_step.TrainStep (global step, learning rate, moving averages,
        the one loss scale of all towers, checked on the averaged gradients, batch-norm
        updates), built on variable_device.
      cost (mean of the tower costs), cross_entropy (mean), weight_decay,
      precision (fraction of the global batch right), train_op (step.train_op), summaries
      (merge_all: the same tags as one ResNet), towers (the tower ResNets, whose
      ops live under name scopes tower_0, tower_1, ...), tower_grads (per tower
      [(gradient, variable)]), grads_and_vars (the averaged ones).
    """

    def __init__(self, hps, tower_batches, devices, variable_device, build_train_op=None):
        if len(tower_batches) != len(devices) or not devices:
            raise ValueError('TowerModel: %d tower batches for %d devices' % (len(tower_batches), len(devices)))
        self.hps = hps
        self.towers = [resnet_model.ResNet(hps, images, labels, 'train') for images, labels in tower_batches]
        with tf.compat.v1.device(variable_device):
            self.step = train_step.TrainStep(hps, 'train')
        self.tower_grads = self._build_towers(devices, variable_device)
        with tf.compat.v1.device(variable_device), tf.name_scope('towers'):
            self.cost = _mean([t.cost for t in self.towers], 'cost')
            self.cross_entropy = _mean([t.cross_entropy for t in self.towers], 'cross_entropy')
            self.weight_decay = self.towers[0].weight_decay
            self.precision = _mean([t.precision for t in self.towers], 'precision')
            self.grads_and_vars = average_gradients(self.tower_grads)
            mean_moments = self._mean_batch_moments()
        with tf.compat.v1.device(variable_device):
            self.train_op = self.step.make_train_op(self.grads_and_vars, mean_moments, build_train_op)
        train_step.add_scalar_summaries(self.cost, self.cross_entropy, self.weight_decay, self.precision,
                                        self.step)
        self.summaries = tf.compat.v1.summary.merge_all()

    def _build_towers(self, devices, variable_device):
        """Each tower's forward pass and gradients on its device; returns their [(gradient, variable)]."""
        tower_grads = []
        scope = tf.compat.v1.get_variable_scope()
        for i, (tower, device) in enumerate(zip(self.towers, devices)):
            # Tower 0 creates the variables, the others reuse them; name scopes only
            # prefix ops, so variable names match the one-device graph.
            with tf.compat.v1.variable_scope(scope, reuse=i > 0), \
                    tf.name_scope('tower_%d' % i), \
                    tf.compat.v1.device(_device_function(device, variable_device)):
                tower.build_forward()
                tower_grads.append(self.step.compute_gradients(tower.cost))
        return tower_grads

    def _mean_batch_moments(self):
        """[(moving mean or variance, mean over towers of the tower batch values)]."""
        return [(moments[0][0], _mean([value for _, value in moments], 'batch_moment'))
                for moments in zip(*[t.batch_moments for t in self.towers])]


def _mean(tensors, name):
    return tf.multiply(tf.add_n(tensors), 1.0 / len(tensors), name=name)


def build_train_towers(hps, config, build_train_op=None):
    """The training input queue on the CPU, one dequeue per tower; returns a TowerModel.

    config: the RunConfig; its num_towers, devices (tower_device, variable_device,
    stage_input: stage each tower's batch on its own device, staging.py) and data.
    """
    num_towers = config.num_towers
    if hps.batch_size % num_towers:
        raise ValueError('batch size %d is not divisible by %d towers' % (hps.batch_size, num_towers))
    with tf.compat.v1.device('/cpu:0'):
        input_queue = cifar_input.make_input_queue(
            config.data.dataset, config.data.train_data_path, hps.batch_size, 'train',
            num_threads=config.data.num_input_threads, label_mode=config.data.label_mode,
            seed=config.input_seed, validation_size=config.data.validation_size,
            cutout_size=config.schedule.cutout_size)
        tower_batches = [input_queue.dequeue(hps.batch_size // num_towers) for _ in range(num_towers)]
        devices = tower_devices(num_towers, config.devices.tower_device)
        if config.devices.stage_input:
            tower_batches = [staging.stage(images, labels, device)
                             for (images, labels), device in zip(tower_batches, devices)]
        summaries.add_input_images(tower_batches[0][0])
    return TowerModel(hps, tower_batches, devices, config.devices.variable_device_name, build_train_op)
