"""Training summaries beyond the model's scalars: input images and histograms.

Both only add summary ops to the graph's SUMMARIES collection; training fetches
the merged summaries together with the train op every --log_every_n_steps, so
the images and histograms describe the very batch and weights of that step.
"""
import tensorflow as tf

import resnet_model

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
    graph = model.global_step.graph
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
