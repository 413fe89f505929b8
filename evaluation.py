"""Eval beside training: score every new checkpoint on the whole eval set, once.

`evaluate(hps, config)` watches config['log_root'] for checkpoints and scores each
new one on the eval records, in file order, exactly once per checkpoint, using the
moving-average shadows of the weights when the checkpoint has them. It writes
`Precision`, `Best Precision` and `loss` (and `Precision@5` for CIFAR-100) at the
checkpoint's global step to config['eval_dir'] and prints one line per checkpoint.
"""
import collections
import json
import os
import re
import time

import tensorflow as tf
from absl import logging

import cifar_input
import eval_progress
import guards
import resnet_model
import training

# precision_at_5: top-5 precision, or None where it is not computed (see TOP_5_DATASETS).
Score = collections.namedtuple('Score', ['step', 'precision', 'loss', 'num_images', 'seconds',
                                         'precision_at_5'], defaults=(None,))

# Top-5 precision says something only with many classes.
TOP_5_DATASETS = ('cifar100',)

SHADOW_SUFFIX = '/ExponentialMovingAverage'


class EvalGraph(object):
    """The eval-mode ResNet over a one-pass, in-order input queue, built once.

    Queues live in the session, so each checkpoint gets a fresh session and with it
    a fresh pass over the eval records.
    """

    def __init__(self, hps, config):
        self.graph = tf.Graph()
        with self.graph.as_default():
            with tf.compat.v1.device('/cpu:0'):
                images, labels = cifar_input.build_input(
                    config['dataset'], config['eval_data_path'], hps.batch_size, 'eval',
                    num_epochs=1, label_mode=config.get('label_mode', 'fine'))
            with tf.compat.v1.device(config.get('device', '/cpu:0')):
                self.model = resnet_model.ResNet(hps, images, labels, 'eval')
                self.model.build_graph()
            correct = tf.equal(tf.argmax(self.model.logits, 1), tf.argmax(labels, 1))
            self.fetches = {
                'correct': tf.reduce_sum(tf.cast(correct, tf.int64)),
                'count': tf.shape(labels)[0],
                'loss': self.model.cross_entropy,
            }
            if config['dataset'] in TOP_5_DATASETS:
                in_top_5 = tf.nn.in_top_k(targets=tf.argmax(labels, 1), predictions=self.model.logits, k=5)
                self.fetches['correct_at_5'] = tf.reduce_sum(tf.cast(in_top_5, tf.int64))
            self.raw_saver = tf.compat.v1.train.Saver()
            self.shadow_saver = tf.compat.v1.train.Saver(self.model.variables_to_restore())
            self.local_init = tf.compat.v1.local_variables_initializer()

    def score(self, checkpoint_path, use_moving_average=True, max_batches=0, progress=None):
        """Scores one checkpoint on the eval records; returns a Score.

        progress: an eval_progress.EvalProgress whose lines are logged as batches go by, or None.

        Raises:
          UnreadableCheckpoint: the checkpoint vanished or is corrupt; the caller skips it.
          cifar_input.DataError: a bad record (for example a label out of range).
        """
        start = time.time()
        with tf.compat.v1.Session(graph=self.graph, config=training.session_config()) as session:
            self._restore(session, checkpoint_path, use_moving_average)
            step = int(session.run(self.model.global_step))
            session.run(self.local_init)
            batches = correct = correct_at_5 = count = 0
            loss_sum = 0.0
            with cifar_input.running_queues(session) as coord:
                while not coord.should_stop() and not (max_batches and batches >= max_batches):
                    result = session.run(self.fetches)
                    batches += 1
                    correct += int(result['correct'])
                    count += int(result['count'])
                    loss_sum += float(result['loss']) * int(result['count'])
                    correct_at_5 += int(result.get('correct_at_5', 0))
                    if progress is not None:
                        line = progress.line(step, batches, count, time.time() - start)
                        if line:
                            logging.info(line)
        if count == 0:
            raise cifar_input.DataError('no eval records were read from %s' % checkpoint_path)
        precision_at_5 = correct_at_5 / count if 'correct_at_5' in self.fetches else None
        return Score(step, correct / count, loss_sum / count, count, time.time() - start, precision_at_5)

    def _restore(self, session, checkpoint_path, use_moving_average):
        """Loads the shadows when wanted and present, else the raw weights."""
        try:
            has_shadows = any(name.endswith(SHADOW_SUFFIX)
                              for name, _ in tf.train.list_variables(checkpoint_path))
            saver = self.shadow_saver if (use_moving_average and has_shadows) else self.raw_saver
            saver.restore(session, checkpoint_path)
        except (tf.errors.OpError, ValueError) as e:
            raise UnreadableCheckpoint('%s: %s' % (checkpoint_path, str(e).strip().splitlines()[0])) from None


class UnreadableCheckpoint(Exception):
    """A checkpoint removed between listing and loading, or a partial or corrupt one."""


class EvalState(object):
    """Which checkpoints were scored and the best precision, kept in eval_dir across restarts."""

    def __init__(self, eval_dir):
        self._path = os.path.join(eval_dir, 'eval_state.json')
        self.scored = {}
        self.best_precision = 0.0
        if os.path.exists(self._path):
            try:
                with open(self._path) as f:
                    saved = json.load(f)
                self.scored = dict(saved.get('scored', {}))
                self.best_precision = float(saved.get('best_precision', 0.0))
            except (OSError, ValueError, TypeError, AttributeError) as e:
                logging.warning('ignoring unreadable %s (%s): checkpoints may be scored again',
                                self._path, str(e).splitlines()[0])
                self.scored, self.best_precision = {}, 0.0

    def record(self, checkpoint_path, score):
        self.scored[os.path.basename(checkpoint_path)] = score.step
        self.best_precision = max(self.best_precision, score.precision)
        tmp = self._path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump({'scored': self.scored, 'best_precision': self.best_precision}, f, indent=1)
        os.replace(tmp, self._path)

    def is_scored(self, checkpoint_path):
        return os.path.basename(checkpoint_path) in self.scored


def latest_checkpoint(log_root):
    """The newest checkpoint path in log_root, or None (also when log_root does not exist yet)."""
    if not os.path.isdir(log_root):
        return None
    return tf.train.latest_checkpoint(log_root)


def new_checkpoints(log_root, state, interval_secs):
    """Yields each new checkpoint path of log_root, sleeping between looks (no busy loop)."""
    waiting_logged = False
    while True:
        path = latest_checkpoint(log_root)
        if path and not state.is_scored(path):
            waiting_logged = False
            yield path
            continue
        if not waiting_logged:
            logging.info('waiting for a new checkpoint in %s', log_root)
            waiting_logged = True
        time.sleep(interval_secs)


def step_in_name(checkpoint_path):
    """The global step a checkpoint's name ends with ('model.ckpt-1200' -> 1200), or -1."""
    found = re.search(r'-(\d+)$', checkpoint_path)
    return int(found.group(1)) if found else -1


def final_step_scored(log_root, state, train_steps):
    """True when the latest checkpoint was scored and is at (or past) train_steps."""
    path = latest_checkpoint(log_root)
    return bool(path) and state.is_scored(path) and (state.scored[os.path.basename(path)] or 0) >= train_steps


def evaluate(hps, config, flag_values=None):
    """Scores checkpoints until the one at config['train_steps'] (or one, with eval_once).

    SIGTERM or SIGINT stops it at once (a score in progress is dropped); it returns normally.
    """
    try:
        with guards.StopSignals(raise_at_once=True, first_message='%s: stopping eval'):
            _evaluate(hps, config, flag_values)
    except guards.Stopped as e:
        logging.warning('eval stopped by %s', e.signal_name)


def _evaluate(hps, config, flag_values):
    num_records = cifar_input.count_records(config['dataset'], config['eval_data_path'])
    os.makedirs(config['eval_dir'], exist_ok=True)
    training.write_config(config['eval_dir'], hps, config, flag_values)
    expected = num_records if not config['eval_batch_count'] else min(
        num_records, config['eval_batch_count'] * hps.batch_size)
    logging.info('eval: %d of %d records of %s per checkpoint', expected, num_records,
                 config['eval_data_path'])
    evaluator = EvalGraph(hps, config)
    progress = eval_progress.EvalProgress(expected, hps.batch_size)
    state = EvalState(config['eval_dir'])
    if config['eval_once']:
        path = latest_checkpoint(config['log_root'])
        if path is None:
            raise training.TrainingError('no checkpoint in %s to evaluate: train first' % config['log_root'])
        checkpoints = [path]
    else:
        if final_step_scored(config['log_root'], state, config['train_steps']):
            # A rerun on a finished run (the launcher's command again): nothing will come.
            logging.info('the checkpoint at --train_steps=%d is already scored; eval done', config['train_steps'])
            return
        checkpoints = new_checkpoints(config['log_root'], state, config['eval_interval_secs'])
    for path in checkpoints:
        try:
            score = evaluator.score(path, config['eval_use_moving_average'], config['eval_batch_count'],
                                    progress)
        except UnreadableCheckpoint as e:
            if config['eval_once']:
                raise training.TrainingError('cannot evaluate checkpoint %s' % e) from None
            logging.warning('skipping checkpoint %s', e)
            state.scored[os.path.basename(path)] = None
            if step_in_name(path) >= config['train_steps']:
                # Training is over: no later checkpoint will come to wait for.
                logging.warning('the last checkpoint, at --train_steps=%d, is unreadable; eval done',
                                config['train_steps'])
                break
            continue
        state.record(path, score)
        scalars = {'Precision': score.precision, 'Best Precision': state.best_precision, 'loss': score.loss}
        top_5 = ''
        if score.precision_at_5 is not None:
            scalars['Precision@5'] = score.precision_at_5
            top_5 = ', precision@5 %.4f' % score.precision_at_5
        training.write_scalars(config['eval_dir'], score.step, scalars)
        print('step %d: precision %.4f, best precision %.4f%s, loss %.4f (%d images, %.1f s)'
              % (score.step, score.precision, state.best_precision, top_5, score.loss, score.num_images,
                 score.seconds), flush=True)
        if score.step >= config['train_steps']:
            logging.info('scored the checkpoint at --train_steps=%d; eval done', config['train_steps'])
            break
