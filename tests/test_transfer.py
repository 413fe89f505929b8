"""transfer.py: finding another run's checkpoint, checking that it fits this network, and what
counts as the network's own variables."""
import os

import pytest
import tensorflow as tf

import resnet_model
import synthetic
from resnet_cifar import train_step
from resnet_cifar import transfer
from resnet_cifar.errors import CheckpointError


def save_network(directory, hps, mode='train'):
    """A checkpoint of a freshly initialized network (train mode: with optimizer slots and shadows)."""
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3])
        labels = tf.compat.v1.placeholder(tf.float32, [None, hps.num_classes])
        resnet_model.ResNet(hps, images, labels, mode).build_graph()
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            return tf.compat.v1.train.Saver().save(session, os.path.join(str(directory), 'model.ckpt'),
                                                   global_step=7)


def network_of(hps):
    """(graph, the network's variables) of an eval-mode network built in a new graph."""
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3])
        labels = tf.compat.v1.placeholder(tf.float32, [None, hps.num_classes])
        resnet_model.ResNet(hps, images, labels, 'eval').build_graph()
        return graph, transfer.network_variables(tf.compat.v1.global_variables())


@pytest.mark.timeout(60)
def test_the_network_variables_leave_out_bookkeeping():
    with tf.Graph().as_default():
        hps = synthetic.tiny_hps()
        images = tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3])
        labels = tf.compat.v1.placeholder(tf.float32, [None, 10])
        resnet_model.ResNet(hps, images, labels, 'train').build_graph()
        everything = tf.compat.v1.global_variables()
        names = [v.op.name for v in transfer.network_variables(everything)]
    assert 'global_step' not in names and 'learning_rate' not in names
    assert not any(name.endswith(('/Momentum', train_step.SHADOW_SUFFIX)) for name in names)
    assert 'unit_1_0/conv1/weights' in names and 'unit_1_0/bn1/moving_mean' in names
    assert [n for n in names if n.startswith('logit/')] == ['logit/weights', 'logit/biases']
    assert len(names) < len(everything)


@pytest.mark.timeout(60)
def test_a_checkpoint_of_another_network_is_one_line_naming_the_first_differences(tmp_path):
    checkpoint = save_network(tmp_path, synthetic.tiny_hps(num_residual_units=2))
    _, deeper_lacking = network_of(synthetic.tiny_hps(num_residual_units=1))
    with pytest.raises(CheckpointError) as error:
        transfer.check_architecture(checkpoint, deeper_lacking)
    message = str(error.value)
    assert '\n' not in message and message.startswith('checkpoint %s does not match this network' % checkpoint)
    assert 'the checkpoint has unit_1_1/bn1/beta [16], which this network lacks' in message
    assert '--num_residual_units, --width and --use_bottleneck' in message and 'more' in message

    _, wider = network_of(synthetic.tiny_hps(num_residual_units=2, width=2))
    with pytest.raises(CheckpointError, match=r'unit_1_0/conv1/weights is \[3, 3, 16, 32\] here but '
                                              r'\[3, 3, 16, 16\] in the checkpoint'):
        transfer.check_architecture(checkpoint, wider)
    # Other classes: only the fully connected layer differs, which a transfer does not restore.
    _, five_classes = network_of(synthetic.tiny_hps(num_residual_units=2, num_classes=5))
    transfer.check_architecture(checkpoint, five_classes)
    with pytest.raises(CheckpointError, match='--dataset and --label_mode: the number of classes'):
        transfer.check_architecture(checkpoint, five_classes, ignore=lambda v: False)


@pytest.mark.timeout(60)
def test_resuming_needs_the_slots_and_shadows_of_the_run(tmp_path):
    hps = synthetic.tiny_hps()
    without_shadows = save_network(tmp_path / 'a', hps._replace(moving_average_decay=0.0))
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3])
        labels = tf.compat.v1.placeholder(tf.float32, [None, 10])
        resnet_model.ResNet(hps, images, labels, 'train').build_graph()
        with pytest.raises(CheckpointError, match=r'has no .*ExponentialMovingAverage .*--moving_average_decay'):
            transfer.check_resumable(without_shadows, tf.compat.v1.global_variables())
        transfer.check_resumable(save_network(tmp_path / 'b', hps), tf.compat.v1.global_variables())


def test_find_checkpoint_takes_a_prefix_a_file_or_a_directory(tmp_path):
    with pytest.raises(CheckpointError, match='no checkpoint in directory'):
        transfer.find_checkpoint(str(tmp_path))
    prefix = save_network(tmp_path, synthetic.tiny_hps(), mode='eval')
    assert prefix == os.path.join(str(tmp_path), 'model.ckpt-7')
    assert transfer.find_checkpoint(str(tmp_path)) == prefix
    assert transfer.find_checkpoint(prefix + '.index') == prefix
    assert transfer.find_checkpoint(prefix + '.data-00000-of-00001') == prefix
    with pytest.raises(CheckpointError, match=r"no checkpoint at '.*model.ckpt-8': expected a directory"):
        transfer.find_checkpoint(os.path.join(str(tmp_path), 'model.ckpt-8'))
