"""Structure of the built graph: strides, stage shapes and what each residual Add adds.

Parameter counts and the number of convolutions do not change when a stride moves to
another convolution, when a shortcut reads the wrong tensor or when the pool-and-pad
shortcut is replaced, so these tests read the graph itself: the Conv2D ops (named by
their weights variable, e.g. unit_2_0/conv1), their strides, the static shapes of the
unit outputs (ACTIVATIONS_COLLECTION) and the inputs of each unit's residual Add.
Tensors are traced through Cast and Identity ops, which mixed precision inserts.
"""
import numpy as np
import pytest
import tensorflow as tf

import resnet_model

# Ops that pass a tensor on unchanged apart from its dtype.
PASS_THROUGH = ('Cast', 'Identity')
ACTIVATIONS = ('Relu', 'LeakyRelu')
STAGE_STRIDES = (1, 2, 2)
STAGE_SIZES = (32, 16, 8)


def stage_filters(hps):
    base = (64, 128, 256) if hps.use_bottleneck else (16, 32, 64)
    return [f * hps.width for f in base]


# Each case: use_bottleneck, num_residual_units, data_format, compute_dtype, width, mode,
# relu_leakiness. Every combination of the first three, with the others varied.
CASES = [
    (False, 1, 'NHWC', 'float32', 1, 'eval', 0.1),
    (False, 1, 'NCHW', 'float32', 2, 'train', 0.0),
    (False, 2, 'NHWC', 'float16', 2, 'train', 0.1),
    (False, 2, 'NCHW', 'float32', 1, 'eval', 0.1),
    (True, 1, 'NHWC', 'float32', 1, 'train', 0.1),
    (True, 1, 'NCHW', 'bfloat16', 1, 'eval', 0.1),
    (True, 2, 'NHWC', 'float32', 1, 'eval', 0.0),
    (True, 2, 'NCHW', 'float16', 2, 'train', 0.1),
]


def case_id(case):
    bottleneck, n, data_format, dtype, width, mode, leak = case
    return '%s-n%d-%s-%s-k%d-%s%s' % ('bottleneck' if bottleneck else 'plain', n, data_format,
                                      dtype, width, mode, '-relu' if leak == 0 else '')


class Built:
    """A model's graph, with its Conv2D ops by weights scope and its units in order."""

    def __init__(self, case):
        bottleneck, n, data_format, dtype, width, mode, leak = case
        self.hps = resnet_model.HParams(
            batch_size=8, num_classes=10, min_lrn_rate=0.0001, lrn_rate=0.1,
            num_residual_units=n, use_bottleneck=bottleneck, weight_decay_rate=0.0002,
            relu_leakiness=leak, optimizer='mom', width=width, data_format=data_format,
            compute_dtype=dtype)
        self.graph = tf.Graph()
        with self.graph.as_default():
            images = tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3], name='images')
            labels = tf.compat.v1.placeholder(tf.float32, [None, 10], name='labels')
            self.model = resnet_model.ResNet(self.hps, images, labels, mode)
            self.model.build_graph()
        self.convs = {}
        for op in self.graph.get_operations():
            if op.type == 'Conv2D':
                scope = weights_scope(op)
                assert scope not in self.convs, 'two Conv2D ops read %s/weights' % scope
                self.convs[scope] = op
        # (name, output tensor) of every residual unit, in the order they are built.
        self.units = ['unit_%d_%d' % (stage, i) for stage in (1, 2, 3) for i in range(n)]
        self.outputs = self.graph.get_collection(resnet_model.ACTIVATIONS_COLLECTION)

    def nhwc(self, shape):
        """A static shape [N, ...] in the model's data format as [H, W, C]."""
        dims = tf.TensorShape(shape).as_list()[1:]
        return dims if self.hps.data_format == 'NHWC' else [dims[1], dims[2], dims[0]]

    def spatial(self, values):
        """The spatial pair of a 4-element attribute (strides, ksize) in the data format."""
        values = list(values)
        return values[1:3] if self.hps.data_format == 'NHWC' else values[2:4]

    def unit_input(self, index):
        """The op computing the input of unit `index`: the stem's conv or the unit before."""
        return self.convs['init/conv'] if index == 0 else source(self.outputs[index - 1])

    def activated(self, unit):
        """The op computing the unit's bn1 activation, which its conv1 reads."""
        return source(self.convs[unit + '/conv1'].inputs[0])


def source(tensor):
    """The op that computes `tensor`, looking through Cast and Identity ops."""
    op = tensor.op
    while op.type in PASS_THROUGH:
        op = op.inputs[0].op
    return op


def weights_scope(conv):
    """'unit_2_0/conv1' for the Conv2D op whose filter is the variable unit_2_0/conv1/weights."""
    op = source(conv.inputs[1])
    if op.type == 'ReadVariableOp':
        op = op.inputs[0].op
    assert op.type in ('VarHandleOp', 'VariableV2'), (conv.name, op.type)
    assert op.name.endswith('/weights'), op.name
    return op.name[:-len('/weights')]


def describe(op):
    return '%s (%s)' % (op.name, op.type)


@pytest.fixture(scope='module', params=CASES, ids=[case_id(c) for c in CASES])
def built(request):
    return Built(request.param)


@pytest.mark.timeout(120)
def test_exactly_the_downsampling_convolutions_have_stride_2(built):
    hps = built.hps
    strided = ('conv2', 'shortcut') if hps.use_bottleneck else ('conv1',)
    expected = {'init/conv': 1}
    for unit in built.units:
        names = ('conv1', 'conv2', 'conv3') if hps.use_bottleneck else ('conv1', 'conv2')
        if hps.use_bottleneck and unit.endswith('_0'):
            names += ('shortcut',)  # every stage's first unit changes the channel count
        for name in names:
            downsamples = unit in ('unit_2_0', 'unit_3_0') and name in strided
            expected[unit + '/' + name] = 2 if downsamples else 1
    found = {}
    for scope, conv in built.convs.items():
        height, width = built.spatial(conv.get_attr('strides'))
        assert height == width, (scope, conv.get_attr('strides'))
        assert conv.get_attr('data_format').decode() == hps.data_format, scope
        assert conv.get_attr('padding').decode() == 'SAME', scope
        found[scope] = height
    assert found == expected


@pytest.mark.timeout(120)
def test_every_unit_and_stage_has_its_output_shape(built):
    filters = stage_filters(built.hps)
    assert [source(t).name.split('/')[0] for t in built.outputs] == built.units
    expected, found = [], []
    for unit, output in zip(built.units, built.outputs):
        stage = int(unit.split('_')[1])
        expected.append([STAGE_SIZES[stage - 1]] * 2 + [filters[stage - 1]])
        found.append(built.nhwc(output.shape))
    assert found == expected
    assert built.nhwc(built.convs['init/conv'].outputs[0].shape) == [32, 32, 16]
    assert built.model.features.shape.as_list() == [None, filters[2]]
    assert built.model.logits.shape.as_list() == [None, 10]


def check_pool_and_pad(built, op, in_filters, out_filters, stride):
    """Follows the parameter-free shortcut back from `op`: a zero Pad of the channels if
    they grow, then a stride x stride average pool if the unit downsamples. Returns the op
    whose output the shortcut starts from."""
    if out_filters != in_filters:
        assert op.type == 'Pad', 'expected the channel zero-padding, got %s' % describe(op)
        paddings = tf.get_static_value(op.inputs[1])
        assert paddings is not None, 'Pad %s: paddings are not constant' % op.name
        extra = out_filters - in_filters
        channel_axis = 3 if built.hps.data_format == 'NHWC' else 1
        expected = np.zeros((4, 2), np.int64)
        expected[channel_axis] = [extra // 2, extra - extra // 2]
        np.testing.assert_array_equal(paddings, expected, err_msg=op.name)
        op = source(op.inputs[0])
    if stride != 1:
        assert op.type == 'AvgPool', 'expected the average pool, got %s' % describe(op)
        assert built.spatial(op.get_attr('ksize')) == [stride, stride], op.name
        assert built.spatial(op.get_attr('strides')) == [stride, stride], op.name
        assert op.get_attr('data_format').decode() == built.hps.data_format, op.name
        op = source(op.inputs[0])
    return op


@pytest.mark.timeout(120)
def test_each_residual_add_sums_the_branch_and_the_right_shortcut(built):
    hps = built.hps
    filters = stage_filters(hps)
    last_conv = 'conv3' if hps.use_bottleneck else 'conv2'
    in_filters = 16
    for index, (unit, output) in enumerate(zip(built.units, built.outputs)):
        stage, position = int(unit.split('_')[1]), int(unit.split('_')[2])
        out_filters = filters[stage - 1]
        stride = STAGE_STRIDES[stage - 1] if position == 0 else 1
        x = built.unit_input(index)

        # The unit's pre-activation reads the unit's input: bn1, then (leaky) ReLU.
        activated = built.activated(unit)
        assert activated.type in ACTIVATIONS, '%s: conv1 reads %s' % (unit, describe(activated))
        bn1 = source(activated.inputs[0])
        assert bn1.type.startswith('FusedBatchNorm') and bn1.name.startswith(unit + '/bn1/'), \
            '%s: the activation reads %s' % (unit, describe(bn1))
        assert source(bn1.inputs[0]) == x, '%s: bn1 reads %s, not the unit input %s' % (
            unit, describe(source(bn1.inputs[0])), describe(x))

        add = source(output)
        assert add.type in ('Add', 'AddV2'), '%s: output of %s' % (unit, describe(add))
        sides = [source(t) for t in add.inputs]
        branch = built.convs[unit + '/' + last_conv]
        assert sides.count(branch) == 1, '%s adds %s' % (unit, [describe(s) for s in sides])
        shortcut = sides[1 - sides.index(branch)]

        # unit_1_0 shares the stem's activation; every other unit's shortcut reads x.
        start = activated if index == 0 else x
        if hps.use_bottleneck and (stride != 1 or in_filters != out_filters):
            projection = built.convs[unit + '/shortcut']
            assert shortcut == projection, '%s: shortcut is %s, not %s' % (
                unit, describe(shortcut), describe(projection))
            reads = source(projection.inputs[0])
        elif stride != 1 or in_filters != out_filters:
            reads = check_pool_and_pad(built, shortcut, in_filters, out_filters, stride)
        else:
            assert unit + '/shortcut' not in built.convs
            reads = shortcut
        assert reads == start, '%s: the shortcut starts from %s, expected %s' % (
            unit, describe(reads), describe(start))
        in_filters = out_filters
