"""Mixed precision: 16-bit graphs with float32 variables, dynamic loss scaling (float16),
towers, and checkpoints that move between float32 and float16 runs."""
import os

import numpy as np
import pytest
import tensorflow as tf

from resnet_cifar import evaluation
from resnet_cifar import devices
import resnet_model
import synthetic
from resnet_cifar import towers
from resnet_cifar import training
from processes import TINY, eval_precisions, read_scalars, run_main
import processes

BATCH = 8


def fixed_batch(n, seed=0):
    """(images float32 [n, 32, 32, 3] standardized-like noise, one-hot labels float32 [n, 10])."""
    rng = np.random.RandomState(seed)
    images = rng.normal(0.0, 1.0, size=(n, 32, 32, 3)).astype(np.float32)
    return images, np.eye(10, dtype=np.float32)[rng.randint(0, 10, size=n)]


def build_train_model(compute_dtype, images=None, is_frozen=None):
    """A tiny train-mode ResNet on a constant batch (or on the `images` tensor) in the default graph."""
    batch_images, labels = fixed_batch(BATCH)
    images = tf.constant(batch_images) if images is None else images
    hps = synthetic.tiny_hps(compute_dtype=compute_dtype, batch_size=BATCH)
    model = resnet_model.ResNet(hps, images, tf.constant(labels), 'train')
    model.build_graph(is_frozen=is_frozen)
    return model


def initialize(session):
    session.run([tf.compat.v1.global_variables_initializer(), tf.compat.v1.local_variables_initializer()])


def weights_and_slots(session):
    """{name: value} of the trainable variables and their momentum slots."""
    variables = [v for v in tf.compat.v1.global_variables()
                 if v.trainable or v.op.name.endswith('/Momentum')]
    return dict(zip([v.op.name for v in variables], session.run(variables)))


def changed(before, after):
    return sorted(name for name in before if not np.array_equal(before[name], after[name]))


def scale_state(session, model):
    """(loss scale, finite steps in a row, global step)."""
    return tuple(session.run([model.step.loss_scale.scale, model.step.loss_scale.good_steps, model.step.global_step]))


def graph_variables():
    return {v.op.name: (v.dtype.base_dtype.name, v.shape.as_list()) for v in tf.compat.v1.global_variables()}


def checkpoint_dtypes(path):
    return {name: dtype.name for name, dtype in
            tf.compat.v1.train.NewCheckpointReader(path).get_variable_to_dtype_map().items()}


# ---------------------------------------------------------------- the graph

@pytest.mark.timeout(60)
@pytest.mark.parametrize('compute_dtype', ['float16', 'bfloat16'])
def test_16_bit_graph_keeps_float32_variables_and_a_float32_head(compute_dtype):
    with tf.Graph().as_default():
        build_train_model('float32')
        reference = graph_variables()
    with tf.Graph().as_default() as graph:
        model = build_train_model(compute_dtype)
        # The same variables, all float32: checkpoints do not depend on the compute dtype.
        assert graph_variables() == reference
        local = sorted(v.op.name for v in tf.compat.v1.local_variables())
        if compute_dtype == 'float16':
            assert local == ['loss_scale', 'loss_scale_good_steps', 'loss_scale_skipped_in_a_row']
            assert model.step.loss_scale is not None
        else:
            assert local == [] and model.step.loss_scale is None
        dtype = tf.as_dtype(compute_dtype)
        forward = [op for op in graph.get_operations() if not op.name.startswith('gradients')]
        convs = [op for op in forward if op.type == 'Conv2D']
        norms = [op for op in forward if op.type == 'FusedBatchNormV3']
        assert len(convs) == 7 and len(norms) == 7
        assert all(op.get_attr('T') == dtype for op in convs + norms)
        assert all(op.get_attr('U') == tf.float32 for op in norms)  # gamma, beta, moments
        for tensor in (model.features, model.logits, model.cost, model.weight_decay, model.precision):
            assert tensor.dtype == tf.float32, tensor
        with tf.compat.v1.Session() as session:
            initialize(session)
            costs = [session.run([model.train_op, model.cost])[1] for _ in range(4)]
            tags = {v.tag for v in tf.compat.v1.Summary.FromString(session.run(model.summaries)).value}
        assert np.all(np.isfinite(costs)) and costs[-1] < costs[0], costs
        assert ('loss_scale' in tags) == (compute_dtype == 'float16'), tags


# ---------------------------------------------------------------- loss scaling

@pytest.mark.timeout(60)
def test_overflow_skips_the_update_halves_the_scale_and_counts_the_step():
    with tf.Graph().as_default():
        model = build_train_model('float16')
        with tf.compat.v1.Session() as session:
            initialize(session)
            assert scale_state(session, model) == (2.0 ** 15, 0, 0)
            start = weights_and_slots(session)
            session.run(model.train_op)  # a finite step: every weight moves, the momentum slots fill
            assert scale_state(session, model) == (2.0 ** 15, 1, 1)
            before = weights_and_slots(session)
            assert changed(start, before) == sorted(start)

            # Scaled by 1e38, the backward pass overflows float16 while the cost stays finite.
            model.step.loss_scale.scale.load(1e38, session)
            _, cost = session.run([model.train_op, model.cost])
            assert np.isfinite(cost)
            assert changed(before, weights_and_slots(session)) == []
            scale, good_steps, step = scale_state(session, model)
            assert scale == pytest.approx(5e37, rel=1e-6) and (good_steps, step) == (0, 2)


def overflowing_images_model(**kwargs):
    """A float16 model whose images default to a finite batch; feed `model.fed_images` 1e5s
    (beyond float16's 65504) to overflow even at loss scale 1."""
    images, _ = fixed_batch(BATCH)
    fed = tf.compat.v1.placeholder_with_default(images, [BATCH, 32, 32, 3])
    model = build_train_model('float16', images=fed, **kwargs)
    model.fed_images = fed
    return model, np.full_like(images, 1e5)


@pytest.mark.timeout(60)
def test_frozen_variables_keep_working_with_loss_scaling():
    """Only the fully connected layer trains, so its gradients are the ones checked. They are
    made non-finite through the labels: oneDNN's float16 kernels (AVX512-FP16 CPUs) turn the
    NaN activations of huge images into zero features, which leaves the head's gradients finite."""
    batch_images, batch_labels = fixed_batch(BATCH)
    with tf.Graph().as_default():
        labels = tf.compat.v1.placeholder_with_default(batch_labels, [BATCH, 10])
        hps = synthetic.tiny_hps(compute_dtype='float16', batch_size=BATCH)
        model = resnet_model.ResNet(hps, tf.constant(batch_images), labels, 'train')
        model.build_graph(is_frozen=lambda v: not v.op.name.startswith('logit/'))
        with tf.compat.v1.Session() as session:
            initialize(session)
            start = weights_and_slots(session)
            session.run(model.train_op)
            before = weights_and_slots(session)
            assert changed(start, before) == ['logit/biases', 'logit/biases/Momentum',
                                              'logit/weights', 'logit/weights/Momentum']
            session.run(model.train_op, feed_dict={labels: np.full_like(batch_labels, np.inf)})
            assert changed(before, weights_and_slots(session)) == []
            assert scale_state(session, model) == (2.0 ** 14, 0, 2)


@pytest.mark.timeout(90)
def test_training_stops_when_every_step_overflows_at_scale_1():
    with tf.Graph().as_default():
        model, huge = overflowing_images_model()
        hook = training.LossScaleHook(model, max_skipped=3)
        with tf.compat.v1.train.SingularMonitoredSession(hooks=[hook]) as session:
            session.run(model.train_op)  # finite: the counter stays 0
            raw = session.raw_session()
            assert raw.run(model.step.loss_scale.skipped_in_a_row) == 0
            model.step.loss_scale.scale.load(2.0, raw)
            session.run(model.train_op, feed_dict={model.fed_images: huge})  # skipped, scale 1
            session.run(model.train_op, feed_dict={model.fed_images: huge})  # skipped at scale 1
            assert raw.run([model.step.loss_scale.scale, model.step.loss_scale.skipped_in_a_row]) == [1.0, 2]
            with pytest.raises(training.StuckLossScaleError,
                               match='overflow even at loss scale 1: the 3 steps up to step 3 were all'):
                session.run(model.train_op, feed_dict={model.fed_images: huge})


@pytest.mark.timeout(90)
def test_float16_towers_share_one_scale_checked_on_the_averaged_gradients():
    images, labels = fixed_batch(2 * BATCH)
    with tf.Graph().as_default():
        halves = [(tf.constant(images[i::2]), tf.constant(labels[i::2])) for i in range(2)]
        hps = synthetic.tiny_hps(compute_dtype='float16', batch_size=2 * BATCH)
        model = towers.TowerModel(hps, halves, towers.tower_devices(2, 'cpu'), '/cpu:0')
        assert sorted(v.op.name for v in tf.compat.v1.local_variables()) == [
            'loss_scale', 'loss_scale_good_steps', 'loss_scale_skipped_in_a_row']
        with tf.compat.v1.Session(config=devices.session_config(2)) as session:
            initialize(session)
            before = weights_and_slots(session)
            session.run(model.train_op)
            assert scale_state(session, model) == (2.0 ** 15, 1, 1)
            after = weights_and_slots(session)
            assert len(changed(before, after)) == len(before)

            model.step.loss_scale.scale.load(1e38, session)
            session.run(model.train_op)
            assert changed(after, weights_and_slots(session)) == []
            scale, good_steps, step = scale_state(session, model)
            assert scale == pytest.approx(5e37, rel=1e-6) and (good_steps, step) == (0, 2)


# ---------------------------------------------------------------- real runs and checkpoints

@pytest.mark.timeout(240)
def test_float16_trains_on_and_checkpoints_move_between_float16_and_float32(learnable, tmp_path):
    """float16 on the CPU runs on TensorFlow's generic kernels, about 70 times slower than float32
    here: the network learns in float32, then float16 steps train it on, and each precision
    resumes the other's checkpoint."""
    train_path, test_path = learnable
    log_root = str(tmp_path / 'run')
    common = ['--dataset=cifar10', '--log_root=' + log_root, '--random_seed=1', '--lr_boundaries=100',
              '--lr_values=0.1,0.01'] + TINY

    def train(steps, compute_dtype):
        config = processes.resolve(['--mode=train', '--train_data_path=' + train_path, '--train_steps=%d' % steps,
                                    '--compute_dtype=' + compute_dtype] + common)
        training.train(config)
        path = tf.train.latest_checkpoint(log_root)
        assert tf.train.load_variable(path, 'global_step') == steps
        return path

    def score(path, compute_dtype):
        config = processes.resolve(['--mode=eval', '--eval_data_path=' + test_path,
                                    '--compute_dtype=' + compute_dtype] + common)
        return evaluation.EvalGraph(config.hparams(), config).score(path)

    learned = train(60, 'float32')
    assert score(learned, 'float32').precision >= 0.8  # chance is 0.1
    # float32 -> float16 -> float32: each run resumes the other's checkpoint.
    resumed_in_float16 = train(64, 'float16')  # 4 float16 steps: each is slow on the CPU
    as_float32, as_float16 = score(resumed_in_float16, 'float32'), score(resumed_in_float16, 'float16')
    assert as_float32.step == 64 and as_float32.num_images == 200
    assert as_float32.precision >= 0.8, as_float32  # the float16 steps did not wreck it
    assert as_float16.precision == pytest.approx(as_float32.precision, abs=0.02)
    assert as_float16.loss == pytest.approx(as_float32.loss, rel=0.05, abs=0.01)
    before, after = read_checkpoint(learned), read_checkpoint(resumed_in_float16)
    assert not np.allclose(before['init/conv/weights'], after['init/conv/weights'])  # they trained
    resumed_in_float32 = train(66, 'float32')
    dtypes = checkpoint_dtypes(learned)
    assert dtypes == checkpoint_dtypes(resumed_in_float16) == checkpoint_dtypes(resumed_in_float32)
    assert not any(name.startswith('loss_scale') for name in dtypes)
    assert {dtype for name, dtype in dtypes.items() if name != 'global_step'} == {'float32'}
    assert score(resumed_in_float32, 'float32').precision >= 0.8


def read_checkpoint(path):
    reader = tf.train.load_checkpoint(path)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


@pytest.mark.timeout(240)
def test_float16_run_end_to_end_scored_by_a_float32_eval(learnable, tmp_path, capsys):
    train_path, test_path = learnable
    log_root = str(tmp_path / 'run')
    run_main('--mode=train', '--dataset=cifar10', '--train_data_path=' + train_path, '--log_root=' + log_root,
             '--train_steps=4', '--compute_dtype=float16', *(TINY[:2] + ['--log_every_n_steps=2', '--noeval_after_training']))
    loss_scales = read_scalars(os.path.join(log_root, 'train'))['loss_scale']
    assert sorted(loss_scales) == [2, 4]
    assert all(value >= 1 and np.log2(value) == int(np.log2(value)) for value in loss_scales.values())

    out = processes.main_stdout(['--mode=eval', '--dataset=cifar10', '--eval_data_path=' + test_path,
                                 '--log_root=' + log_root, '--eval_once', '--num_residual_units=1'],
                                capsys)  # the default float32 scores it, in this process
    assert [step for step, _ in eval_precisions(out)] == [4], out
    assert '(200 images' in out


@pytest.mark.timeout(30)
def test_unknown_compute_dtype_is_a_one_line_flag_error(capsys):
    code, err = processes.main_exit(['--compute_dtype=float64'], capsys)
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith('error: ') and '--compute_dtype' in err, err


# ---------------------------------------------------------------- --compute_dtype=auto

@pytest.mark.timeout(300)
def test_auto_follows_the_cpu_flags_into_the_graph_config_json_resumes_and_eval(monkeypatch, tmp_path):
    """With a CPU flag list that has bfloat16 instructions, auto (the default) trains in bfloat16,
    says so, and records it; the run resumes in float32 and back; eval in auto scores in float32."""
    from resnet_cifar import cpu, run_files
    cpuinfo = tmp_path / 'cpuinfo'
    monkeypatch.setattr(cpu, 'CPUINFO', str(cpuinfo))
    log_root = str(tmp_path / 'run')
    common = ['--dataset=digits', '--log_root=' + log_root] + TINY

    def config_for(*flags, cpu_flags='fpu avx512f avx512_bf16'):
        cpuinfo.write_text('processor\t: 0\nflags\t\t: %s\n' % cpu_flags)
        return processes.resolve(list(flags) + common)

    assert config_for('--mode=train', cpu_flags='fpu avx512f').model.compute_dtype == 'float32'
    config = config_for('--mode=train', '--train_steps=6')
    assert (config.model.compute_dtype, config.compute_dtype_choice.split(',')[0]) == (
        'bfloat16', 'auto: this CPU has bfloat16 instructions')
    with tf.Graph().as_default() as graph:
        training.build_train_graph(config)
        convs = [op for op in graph.get_operations() if op.type == 'Conv2D' and 'gradients' not in op.name]
        assert convs and all(op.get_attr('T') == tf.bfloat16 for op in convs)
    with processes.AbslRecords() as records:
        training.train(config)
    assert ('compute dtype bfloat16 (auto: this CPU has bfloat16 instructions, avx512_bf16; '
            '--compute_dtype=float32 for float32)') in records.messages
    assert run_files.load_config(log_root).model.compute_dtype == 'bfloat16'

    # bfloat16 -> float32 -> auto (bfloat16) again, each resuming the other's checkpoint.
    training.train(config_for('--mode=train', '--train_steps=9', '--compute_dtype=float32'))
    assert run_files.load_config(log_root).model.compute_dtype == 'float32'
    training.train(config_for('--mode=train', '--train_steps=12'))
    assert run_files.load_config(log_root).model.compute_dtype == 'bfloat16'
    assert tf.train.load_variable(tf.train.latest_checkpoint(log_root), 'global_step') == 12

    eval_config = config_for('--mode=eval')
    assert eval_config.model.compute_dtype == 'float32'
    evaluator = evaluation.EvalGraph(eval_config.hparams(), eval_config)
    convs = [op for op in evaluator.graph.get_operations() if op.type == 'Conv2D']
    assert convs and all(op.get_attr('T') == tf.float32 for op in convs)
    score = evaluator.score(tf.train.latest_checkpoint(log_root))
    assert (score.step, score.num_images) == (12, 300) and np.isfinite(score.loss)
