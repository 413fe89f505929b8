"""Event files: training summaries beyond the model's scalars (input images and
histograms), scalars written from Python, and what happens when an event file
cannot be written.

Both summary kinds only add summary ops to the graph's SUMMARIES collection;
training fetches the merged summaries together with the train op every
--log_every_n_steps, so the images and histograms describe the very batch and
weights of that step.

TensorFlow's event-file writer writes in a thread of its own. When that fails (a
full disk), the thread logs an error, prints its traceback and dies; the error
comes out again from the next write or flush. `writer_errors_reported_once`
silences the thread's own report, so the caller can say it in one line
(`write_error_line`).
"""
import contextlib
import logging as std_logging
import threading

import tensorflow as tf

import resnet_model
from resnet_cifar import guards
from resnet_cifar.errors import RunError

INPUT_IMAGES_TAG = 'input_images'


def add_input_images(images, max_images=3):
    """An image summary of the first `max_images` of a batch, as the model sees them.

    images: float32 [batch, 32, 32, 3], augmented and standardized per image.
    TensorBoard shows them under 'input_images/image/0', '/1', ...; it maps each
    image's values to 0..255 (0 -> mid-grey when there are negative values).
    """
    return tf.compat.v1.summary.image(INPUT_IMAGES_TAG, images, max_outputs=max_images)


def add_histograms(model):
    """Histograms of every trainable variable and of every residual unit's output.

    Tags: 'weights/<variable name>' (for example 'weights/unit_1_0/conv1/weights')
    and 'activations/<unit scope>' (for example 'activations/unit_2_0').
    With towers, the activations are the first tower's. Call after
    model.build_graph(); returns the merge of all the graph's summaries,
    to use in place of model.summaries.
    """
    graph = model.step.global_step.graph
    with graph.as_default(), tf.name_scope('histograms'):
        for variable in graph.get_collection(tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES):
            _histogram('weights/' + variable.op.name, variable)
        for activation in graph.get_collection(resnet_model.ACTIVATIONS_COLLECTION):
            scope = activation.op.name.rsplit('/', 1)[0]
            if scope.startswith('tower_'):  # several towers: the first one's, under one-device tags
                if not scope.startswith('tower_0/'):
                    continue
                scope = scope.split('/', 1)[1]
            _histogram('activations/' + scope, activation)
        return tf.compat.v1.summary.merge_all()


def _histogram(tag, values):
    """A histogram summary whose tag is `tag` exactly (no name-scope prefix or suffix)."""
    summary = tf.raw_ops.HistogramSummary(tag=tag, values=values)
    tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.SUMMARIES, summary)
    return summary


class SummaryWriteError(RunError):
    """An event file that cannot be written; the message names the directory and the cause."""


def write_scalars(directory, step, scalars):
    """Appends scalar summaries {tag: value} at `step` to the event file of `directory`.

    Raises SummaryWriteError when the event file cannot be written.
    """
    with tf.Graph().as_default():  # FileWriter refuses to be created eagerly
        writer = tf.compat.v1.summary.FileWriterCache.get(directory)
    summary = tf.compat.v1.Summary(value=[
        tf.compat.v1.Summary.Value(tag=tag, simple_value=float(value)) for tag, value in scalars.items()])
    try:
        writer.add_summary(summary, step)
        writer.flush()
    except Exception as e:  # the writer thread's error: IndexError, OSError or an OpError
        raise SummaryWriteError(write_error_line(directory, e)) from e


def write_error_line(directory, error):
    """'cannot write summaries to DIR: <cause>' for an error out of an event-file writer."""
    return 'cannot write summaries to %s: %s' % (directory, guards.error_line(error))


_WRITER_THREAD = 'EventLoggerThread'
# In the name of every event file, so in the message of every error writing one.
EVENT_FILE_MARK = 'tfevents'


class _WriterThreadError(std_logging.Filter):
    def filter(self, record):
        return not record.getMessage().startswith('EventFileWriter writer thread error')


@contextlib.contextmanager
def writer_errors_reported_once():
    """While active, a failing event-file writer thread prints neither a log line nor a
    traceback; its error still comes out of the next write or flush."""
    previous_hook = threading.excepthook
    log_filter = _WriterThreadError()

    def hook(args):
        if args.thread is None or args.thread.name != _WRITER_THREAD:
            previous_hook(args)

    threading.excepthook = hook
    tf.get_logger().addFilter(log_filter)
    try:
        yield
    finally:
        tf.get_logger().removeFilter(log_filter)
        threading.excepthook = previous_hook
