"""export.py: a SavedModel that plain TensorFlow 2 loads and calls, and that scores as eval does."""
import glob
import json
import os
import subprocess
import sys

import pytest

import processes
from resnet_cifar import evaluation
from resnet_cifar import export

# Plain TensorFlow 2 and numpy, none of this project's code: how a user serves the model.
SERVE = '''
import json, sys
import numpy as np, tensorflow as tf
export_dir, data_path = sys.argv[1:3]
records = np.fromfile(data_path, np.uint8).reshape(-1, 3073)
labels = records[:, 0].astype(np.int64)
images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
model = tf.saved_model.load(export_dir)
out = model.signatures['serving_default'](images=tf.constant(images))
features = model.signatures['features'](images=tf.constant(images[:5]))['features']
print(json.dumps({'precision': float(np.mean(out['classes'].numpy() == labels)),
                  'probability_sums': out['probabilities'].numpy().sum(axis=1).tolist(),
                  'features': list(features.shape), 'project_code': 'resnet_cifar' in sys.modules}))
'''


@pytest.mark.timeout(180)
def test_the_export_serves_in_plain_tensorflow_and_scores_as_eval_does(tiny_run, tmp_path):
    export_dir = str(tmp_path / 'served')
    config = processes.resolve(['--mode=export', '--log_root=' + tiny_run, '--export_dir=' + export_dir])
    assert config.model.num_residual_units == 1  # the network comes from the run's config.json
    checkpoint = export.export_saved_model(config)
    assert checkpoint == os.path.join(tiny_run, 'model.ckpt-60')
    assert sorted(os.listdir(str(tmp_path))) == ['served']  # no staging directory left beside it

    test_path = config.data.eval_data_path
    served = subprocess.run([sys.executable, '-c', SERVE, export_dir, test_path], capture_output=True, text=True,
                            timeout=150, cwd=str(tmp_path))
    assert served.returncode == 0, served.stderr[-3000:]
    result = json.loads(served.stdout.strip().splitlines()[-1])
    assert not result['project_code'] and result['features'] == [5, 64]
    assert result['probability_sums'] == pytest.approx([1.0] * 300, abs=1e-5)
    # The same weights (the moving averages) and the same standardization as eval: the same score.
    eval_config = processes.resolve(['--mode=eval', '--log_root=' + tiny_run, '--eval_once'])
    score = evaluation.EvalGraph(eval_config.hparams(), eval_config).score(checkpoint)
    assert score.num_images == 300 and result['precision'] == pytest.approx(score.precision, abs=1e-9)
    assert score.precision > 0.3  # a trained network, not chance (0.1)


@pytest.mark.timeout(60)
def test_an_export_dir_that_is_not_new_is_refused_and_left_alone(tiny_run, tmp_path, capsys):
    taken = tmp_path / 'taken'
    taken.mkdir()
    (taken / 'keep.txt').write_text('mine')
    code, err = processes.main_exit(['--mode=export', '--log_root=' + tiny_run, '--export_dir=' + str(taken)], capsys)
    processes.assert_one_line_error(code, err, 2, '--export_dir=%s: exists and is not empty' % taken)
    assert os.listdir(str(taken)) == ['keep.txt']
    code, err = processes.main_exit(['--mode=export', '--log_root=' + tiny_run], capsys)
    processes.assert_one_line_error(code, err, 2, '--mode=export needs --export_dir')
    code, err = processes.main_exit(['--mode=export', '--log_root=' + str(tmp_path / 'none'),
                                     '--export_dir=' + str(tmp_path / 'new')], capsys)
    processes.assert_one_line_error(code, err, 1, "no checkpoint at '%s'" % (tmp_path / 'none'))
    assert not os.path.exists(str(tmp_path / 'new'))


def _copy_with_split(tiny_run, tmp_path, validation_size):
    """A copy of the tiny run (checkpoints 40 and 60) whose config.json says it holds out the last
    `validation_size` training records (0: none), as a run trained with --validation_size does."""
    run_dir = processes.copy_run(tiny_run, tmp_path / 'run')
    settings_path = os.path.join(run_dir, 'config.json')
    with open(settings_path) as f:
        settings = json.load(f)
    settings['data']['validation_size'] = validation_size
    with open(settings_path, 'w') as f:
        json.dump(settings, f)
    return run_dir


def _run_with_best_at_40(tiny_run, tmp_path, validation_size):
    """_copy_with_split's run whose best/ holds step 40, kept as eval keeps it."""
    from resnet_cifar import best
    run_dir = _copy_with_split(tiny_run, tmp_path, validation_size)
    config = processes.resolve(['--mode=eval', '--log_root=' + run_dir])
    assert config.data.validation_size == validation_size
    scored_on = evaluation.checkpoint_records(config).describe()
    assert best.keep(run_dir, os.path.join(run_dir, 'model.ckpt-40'),
                     {'step': 40, 'precision': 0.9, 'scored_on': scored_on}) is None
    return run_dir


def _export(run_dir, export_dir):
    """(checkpoint exported, the log lines that say which and why, the global step in the export)."""
    import tensorflow as tf
    config = processes.resolve(['--mode=export', '--log_root=' + run_dir, '--export_dir=' + export_dir])
    with processes.AbslRecords() as log:
        checkpoint = export.export_saved_model(config)
    said = [m for m in log.messages if m.startswith('exporting ')]
    return checkpoint, said, int(tf.train.load_variable(os.path.join(export_dir, 'variables', 'variables'),
                                                        'global_step'))


@pytest.mark.timeout(120)
def test_without_a_validation_split_export_takes_the_final_checkpoint_not_the_test_chosen_best(tiny_run, tmp_path):
    run_dir = _run_with_best_at_40(tiny_run, tmp_path, validation_size=0)
    checkpoint, said, step = _export(run_dir, str(tmp_path / 'served'))
    assert (checkpoint, step) == (os.path.join(run_dir, 'model.ckpt-60'), 60)
    assert said == ["exporting model.ckpt-60, the run's latest checkpoint: without a validation split, "
                    'best/model.ckpt-40 was chosen on the test set'], said
    # With the run's own checkpoints gone, best/ is all there is: taken, and the line says what it is.
    for name in glob.glob(os.path.join(run_dir, 'model.ckpt-*')):
        os.remove(name)
    config = processes.resolve(['--mode=export', '--log_root=' + run_dir, '--export_dir=' + str(tmp_path / 'x')])
    assert export.choose_checkpoint(config) == (
        os.path.join(run_dir, 'best', 'model.ckpt-40'),
        "the run's only checkpoint left: without a validation split it was chosen on the test set, an optimistic choice")


@pytest.mark.timeout(120)
def test_with_a_validation_split_export_takes_the_best_checkpoint_and_says_why(tiny_run, tmp_path):
    run_dir = _run_with_best_at_40(tiny_run, tmp_path, validation_size=300)
    checkpoint, said, step = _export(run_dir, str(tmp_path / 'served'))
    assert (checkpoint, step) == (os.path.join(run_dir, 'best', 'model.ckpt-40'), 40)
    assert said == ['exporting best/model.ckpt-40, chosen on 300 validation records'], said


def _is_training_op(op_type):
    """True for an op of training, summaries or input queues, none of which serving needs."""
    return (op_type == 'L2Loss' or 'SoftmaxCrossEntropyWithLogits' in op_type or 'Summary' in op_type
            or op_type.endswith('Grad') or op_type.startswith(
                ('Apply', 'ResourceApply', 'SparseApply', 'ResourceSparseApply', 'AssignAdd', 'AssignSub',
                 'Queue', 'FIFOQueue', 'RandomShuffleQueue', 'PaddingFIFOQueue', 'FixedLengthRecordReader',
                 'ReaderRead')))


@pytest.mark.timeout(120)
def test_the_saved_model_holds_the_inference_graph_only(tiny_run, tmp_path):
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import saved_model_pb2
    export_dir = str(tmp_path / 'served')
    export.export_saved_model(processes.resolve(['--mode=export', '--log_root=' + tiny_run,
                                                 '--export_dir=' + export_dir]))
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, 'saved_model.pb'), 'rb') as f:
        saved.ParseFromString(f.read())
    assert len(saved.meta_graphs) == 1
    graph = saved.meta_graphs[0].graph_def
    nodes = list(graph.node) + [node for function in graph.library.function for node in function.node_def]
    op_types = {node.op for node in nodes}
    assert {'Conv2D', 'FusedBatchNormV3', 'Softmax', 'ArgMax'} <= op_types  # the network is there
    assert sorted(t for t in op_types if _is_training_op(t)) == []
    # Nothing of the cost, the learning-rate schedule or the training scalars either.
    assert [node.name for node in nodes if node.name.split('/')[0] in (
        'costs', 'learning_rate', 'effective_learning_rate', 'precision', 'step_value')] == []
    signatures = saved.meta_graphs[0].signature_def
    assert sorted(signatures) == ['features', 'serving_default']
    for name, outputs in (('serving_default', ['classes', 'probabilities']), ('features', ['features'])):
        assert sorted(signatures[name].outputs) == outputs
        assert signatures[name].inputs['images'].dtype == types_pb2.DT_UINT8


def _same_weights_at_step(source, target, step):
    """Writes checkpoint `target` with every value of checkpoint `source` but global_step = `step`."""
    import tensorflow as tf
    values = processes.read_checkpoint(source)
    values['global_step'] = values['global_step'].dtype.type(step)
    with tf.Graph().as_default():
        variables = {name: tf.compat.v1.Variable(value, name='v%d' % i)
                     for i, (name, value) in enumerate(sorted(values.items()))}
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver(variables).save(session, target, write_meta_graph=False, write_state=False)


@pytest.mark.timeout(180)
def test_eval_breaks_a_tie_for_the_later_checkpoint_and_export_takes_it(tiny_run, tmp_path):
    """Checkpoints 40 and 60 hold the same weights: they score the same on the validation records,
    and the later one, which trained longer, is the best eval keeps and export takes."""
    from resnet_cifar import best
    run_dir = _copy_with_split(tiny_run, tmp_path, validation_size=300)
    _same_weights_at_step(os.path.join(run_dir, 'model.ckpt-60'), os.path.join(run_dir, 'model.ckpt-40'), 40)
    done = processes.run('--mode=eval', '--log_root=' + run_dir, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.load(open(os.path.join(run_dir, 'eval', 'results.json')))
    assert [e['step'] for e in results['checkpoints']] == [40, 60]
    assert results['checkpoints'][0]['precision'] == results['checkpoints'][1]['precision']
    assert results['best']['step'] == 60 and best.info(run_dir)['step'] == 60
    assert best.path(run_dir) == os.path.join(run_dir, 'best', 'model.ckpt-60')
    checkpoint, said, step = _export(run_dir, str(tmp_path / 'served'))
    assert (checkpoint, step) == (best.path(run_dir), 60)
