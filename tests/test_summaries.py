"""summaries.py: input-image and histogram summaries of a tiny ResNet, scalars written from
Python and read back from the event file, the one-line write error, and a failing writer
thread's own report silenced only while asked. A full disk is in test_full_disk.py."""
import logging
import threading

import numpy as np
import pytest
import tensorflow as tf

import resnet_model
import synthetic
from processes import read_scalars
from resnet_cifar import summaries


@pytest.mark.timeout(60)
def test_images_and_histograms_of_a_tiny_resnet_under_their_tags():
    images = np.random.RandomState(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
    labels = np.eye(10, dtype=np.float32)[[0, 1, 2, 3]]
    with tf.Graph().as_default():
        model = resnet_model.ResNet(synthetic.tiny_hps(batch_size=4), tf.constant(images), tf.constant(labels),
                                    'train')
        model.build_graph()
        summaries.add_input_images(tf.constant(images), max_images=2)
        merged = summaries.add_histograms(model)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            values = tf.compat.v1.Summary.FromString(session.run(merged)).value
    by_kind = {}
    for value in values:
        by_kind.setdefault(value.WhichOneof('value'), set()).add(value.tag)
    assert by_kind['image'] == {'input_images/image/0', 'input_images/image/1'}
    histograms = by_kind['histo']
    trainable = {'weights/' + v for v in ('init/conv/weights', 'unit_1_0/conv1/weights', 'logit/weights')}
    assert trainable <= histograms, sorted(histograms)
    assert {'activations/unit_1_0', 'activations/unit_2_0', 'activations/unit_3_0'} <= histograms
    assert not any(tag.startswith('histograms/') for tag in histograms)  # the tags are exact
    assert by_kind['simple_value'], by_kind  # the model's own scalars are in the merge too


@pytest.mark.timeout(60)
def test_scalars_written_from_python_read_back_at_their_steps(tmp_path):
    directory = str(tmp_path / 'eval')
    summaries.write_scalars(directory, 100, {'Precision': 0.5, 'loss': 1.25})
    summaries.write_scalars(directory, 200, {'Precision': 0.75})
    assert read_scalars(directory) == {'Precision': {100: 0.5, 200: 0.75}, 'loss': {100: 1.25}}


@pytest.mark.timeout(10)
def test_the_write_error_line_names_the_directory_and_the_cause():
    line = summaries.write_error_line('/runs/a/train', OSError(28, 'No space left on device'))
    assert line.startswith('cannot write summaries to /runs/a/train: ') and 'No space left on device' in line
    assert '\n' not in line


def raise_in_thread(name):
    def fail():
        raise IndexError('the writer failed')
    thread = threading.Thread(target=fail, name=name)
    thread.start()
    thread.join()


@pytest.mark.timeout(30)
def test_only_the_writer_threads_own_report_is_silenced_and_only_while_asked(monkeypatch, caplog):
    reported = []  # the threads whose exceptions reached the hook in place before (Python's would print them)

    def recording_hook(args):
        reported.append(args.thread.name)
    monkeypatch.setattr(threading, 'excepthook', recording_hook)
    with summaries.writer_errors_reported_once():
        raise_in_thread('EventLoggerThread')
        raise_in_thread('another thread')
        tf.get_logger().error('EventFileWriter writer thread error: the writer failed')
        tf.get_logger().error('something else')
    assert reported == ['another thread']
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == ['something else']
    assert threading.excepthook is recording_hook

    caplog.clear()
    raise_in_thread('EventLoggerThread')  # reported again once the block is over
    tf.get_logger().error('EventFileWriter writer thread error: later')
    assert reported == ['another thread', 'EventLoggerThread']
    assert [r.getMessage() for r in caplog.records] == ['EventFileWriter writer thread error: later']
