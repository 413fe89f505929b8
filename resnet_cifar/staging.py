"""A staging area on the training device: the next batch is copied there while a step runs.

The input queue lives on the CPU. Without staging, each train step first waits for
its batch to be dequeued and copied to the GPU. With `stage`, the step instead
reads a batch that already sits in a small buffer on the device (the "get"), and
the same session run dequeues the next batch and copies it into that buffer (the
"put"). Each step therefore trains on the batch put by the previous run: a lag of
exactly one step, with the batches in the input queue's order. `StagingHook` puts
the first batch once when the session starts, then adds every put op to each
run.

The buffer is TensorFlow's Stage/Unstage pair (a resource found through its
shared name on one device). It holds at most CAPACITY batches: one waiting to be
trained on, and one being copied in; a put into a full buffer waits.
"""
import tensorflow as tf

PUT_OPS_COLLECTION = 'staging_put_ops'

# Batches the buffer may hold: the one a step takes plus the one its put copies in.
CAPACITY = 2


def stage(images, labels, device, name='staging_area'):
    """Passes a batch through a staging buffer on `device`.

    Args:
      images: the dequeued images, float32 [batch, 32, 32, 3] (any dtype and
        shape work: they are kept).
      labels: the dequeued labels, float32 one-hot [batch, num_classes].
      device: where the buffer and the staged tensors live, e.g. '/gpu:0'.
      name: name scope of the ops; the buffer's shared name is the unique scope.
    Returns:
      (images, labels) taken from the buffer on `device`, with the dtypes and
      static shapes of the inputs. A run that evaluates them gets the batch of
      the previous put, so the buffer must hold one before the first such run
      (StagingHook primes it); evaluating them with an empty buffer blocks.
    The put op (dequeue the next batch, copy it into the buffer) goes into the
    graph collection PUT_OPS_COLLECTION (see put_ops).
    """
    values = [tf.convert_to_tensor(images), tf.convert_to_tensor(labels)]
    with tf.compat.v1.device(device), tf.compat.v1.name_scope(name) as scope:
        shared_name = scope.rstrip('/')
        put = tf.raw_ops.Stage(values=values, capacity=CAPACITY, shared_name=shared_name, name='put')
        staged = tf.raw_ops.Unstage(dtypes=[v.dtype for v in values], capacity=CAPACITY,
                                    shared_name=shared_name, name='get')
    for tensor, value in zip(staged, values):
        tensor.set_shape(value.shape)
    tf.compat.v1.add_to_collection(PUT_OPS_COLLECTION, put)
    return tuple(staged)


def put_ops(graph=None):
    """The put ops of every `stage` call in `graph` (default: the default graph)."""
    graph = graph or tf.compat.v1.get_default_graph()
    return graph.get_collection(PUT_OPS_COLLECTION)


def buffer_size(put_op):
    """A scalar int32 op: how many batches the buffer of `put_op` holds now."""
    with tf.compat.v1.device(put_op.device):
        return tf.raw_ops.StageSize(dtypes=[t.dtype for t in put_op.inputs], capacity=CAPACITY,
                                    shared_name=put_op.get_attr('shared_name'))


class StagingHook(tf.compat.v1.train.SessionRunHook):
    """Keeps one batch staged per buffer: a put at session start, then one with every run.

    Every run through the hooked session must take one batch from each buffer
    (evaluate the staged tensors, as the train op does); a run that did not would
    leave one more batch behind, and the next put would then wait on a full buffer.

    MonitoredSession starts the queue runners before after_create_session, so
    the first put finds the input queue filling.
    """

    def __init__(self, put_ops):
        self._put_ops = list(put_ops)

    def after_create_session(self, session, coord):
        try:
            session.run(self._put_ops)
        except tf.errors.OutOfRangeError:
            # The input queue closed: a reader thread's error says why, not 'queue closed'.
            coord.raise_requested_exception()
            raise

    def before_run(self, run_context):
        return tf.compat.v1.train.SessionRunArgs(self._put_ops)
