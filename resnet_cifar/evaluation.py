"""Eval beside training: score every new checkpoint on the whole eval set, once.

`evaluate(config)` watches config.log_root for checkpoints and scores every one
on the eval records, in file order, exactly once per checkpoint, oldest first (so
the curves have no holes when training saves faster than eval scores), using the
moving-average shadows of the weights when the checkpoint has them. It writes
`Precision`, `Best Precision` and `loss` (and `Precision@5` for CIFAR-100) at the
checkpoint's global step to config.eval_dir and prints one line per checkpoint.
`score_after_training(config)` scores a finished run's last checkpoint once.
"""
import collections
import dataclasses
import errno
import hashlib
import json
import os
import time

import numpy as np
import tensorflow as tf
from absl import logging

import cifar_input
import resnet_model
from resnet_cifar import best
from resnet_cifar import checkpoints
from resnet_cifar import devices
from resnet_cifar import guards
from resnet_cifar import progress
from resnet_cifar import run_files
from resnet_cifar import summaries
from resnet_cifar import train_step
from resnet_cifar import transfer
from resnet_cifar.errors import CheckpointError, DataError, Error, RunError

# precision_at_5: top-5 precision, or None where it is not computed (datasets.DatasetInfo.top_5);
# confusion: int64 [num_classes, num_classes], images of class i (row) taken for class j (column).
Score = collections.namedtuple('Score', ['step', 'precision', 'loss', 'num_images', 'seconds',
                                         'precision_at_5', 'confusion'], defaults=(None, None))


class Records(collections.namedtuple('Records', ['kind', 'data_path', 'validation_size'])):
    """Records to score: kind 'test' (every record of data_path), or 'validation' (the last
    validation_size records of the training data_path, held out of training)."""

    def describe(self):
        if self.kind == 'validation':
            return 'validation records: the last %d of %s' % (self.validation_size, self.data_path)
        return self.data_path

    def check(self, dataset):
        """(files checked [(file, records)], the number of records to score); DataError for bad files."""
        checked = cifar_input.check_files(dataset, self.data_path)
        return checked, self.validation_size or sum(n for _, n in checked)


def test_records(config):
    return Records('test', config.data.eval_data_path, 0)


def checkpoint_records(config):
    """What each checkpoint is scored on: the validation records when the run holds some out."""
    if config.data.validation_size:
        return Records('validation', config.data.train_data_path, config.data.validation_size)
    return test_records(config)

class EvalGraph(object):
    """The eval-mode ResNet over a one-pass, in-order input queue, built once.

    Queues live in the session, so each checkpoint gets a fresh session and with it
    a fresh pass over the eval records.
    """

    def __init__(self, hps, config, records=None):
        """records: a Records; default: test_records(config), the eval records."""
        records = records or test_records(config)
        self.graph = tf.Graph()
        with self.graph.as_default():
            with tf.compat.v1.device('/cpu:0'):
                images, labels = cifar_input.build_input(
                    config.data.dataset, records.data_path, hps.batch_size, 'eval', num_epochs=1,
                    label_mode=config.data.label_mode, validation_size=records.validation_size,
                    validation=records.kind == 'validation')
            with tf.compat.v1.device(config.devices.device):
                logits = self._logits(hps, images, labels, config.eval.flip)
            classes, predicted = tf.argmax(labels, 1), tf.argmax(logits, 1)
            self.fetches = {
                'confusion': tf.math.confusion_matrix(classes, predicted, num_classes=hps.num_classes,
                                                      dtype=tf.int64),
                'loss': tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits)),
            }
            if cifar_input.dataset_info(config.data.dataset).top_5:
                in_top_5 = tf.nn.in_top_k(targets=classes, predictions=logits, k=5)
                self.fetches['correct_at_5'] = tf.reduce_sum(tf.cast(in_top_5, tf.int64))
            self.network = transfer.network_variables(tf.compat.v1.global_variables())
            self.raw_saver = tf.compat.v1.train.Saver()
            self.shadow_saver = tf.compat.v1.train.Saver(self.model.step.variables_to_restore())
            self.local_init = tf.compat.v1.local_variables_initializer()

    def _logits(self, hps, images, labels, flip):
        """The eval-mode network's logits [batch, num_classes]; with `flip`, the mean of the logits
        of each image and of its left-right mirror (one network run on both)."""
        if not flip:
            self.model = resnet_model.ResNet(hps, images, labels, 'eval')
            self.model.build_graph()
            return self.model.logits
        batch = tf.shape(images)[0]
        both = tf.concat([images, tf.image.flip_left_right(images)], 0)
        self.model = resnet_model.ResNet(hps, both, tf.concat([labels, labels], 0), 'eval')
        self.model.build_graph()
        return (self.model.logits[:batch] + self.model.logits[batch:]) / 2.0

    def score(self, checkpoint_path, use_moving_average=True, max_batches=0, progress=None):
        """Scores one checkpoint on the eval records; returns a Score.

        progress: a progress.EvalProgress whose lines are logged as batches go by, or None.

        Raises:
          UnreadableCheckpoint: the checkpoint vanished or is corrupt; the caller skips it.
          transfer.CheckpointError: the checkpoint is of another network than this one.
          cifar_input.DataError: a bad record (for example a label out of range).
        """
        start = time.time()
        self._check_architecture(checkpoint_path)
        with tf.compat.v1.Session(graph=self.graph, config=devices.session_config()) as session:
            self._restore(session, checkpoint_path, use_moving_average)
            step = int(session.run(self.model.step.global_step))
            session.run(self.local_init)
            batches = correct_at_5 = 0
            confusion = np.zeros(self.fetches['confusion'].shape.as_list(), np.int64)
            loss_sum = 0.0
            with cifar_input.running_queues(session) as coord:
                while not coord.should_stop() and not (max_batches and batches >= max_batches):
                    result = session.run(self.fetches)
                    batches += 1
                    confusion += result['confusion']
                    count = int(confusion.sum())
                    loss_sum += float(result['loss']) * int(result['confusion'].sum())
                    correct_at_5 += int(result.get('correct_at_5', 0))
                    if progress is not None:
                        line = progress.line(step, batches, count, time.time() - start)
                        if line:
                            logging.info(line)
        count = int(confusion.sum())
        if count == 0:
            raise DataError('no eval records were read from %s' % checkpoint_path)
        precision_at_5 = correct_at_5 / count if 'correct_at_5' in self.fetches else None
        return Score(step, int(np.trace(confusion)) / count, loss_sum / count, count, time.time() - start,
                     precision_at_5, confusion)

    def _check_architecture(self, checkpoint_path):
        """CheckpointError for a checkpoint of another network; UnreadableCheckpoint for one
        that is gone or whose index cannot be read (also when rotation deletes it meanwhile)."""
        try:
            transfer.check_architecture(checkpoint_path, self.network, ignore=lambda v: False)
        except transfer.CheckpointError:
            if checkpoints.missing_file(checkpoint_path) is None and _index_readable(checkpoint_path):
                raise
            raise UnreadableCheckpoint('%s: %s' % (checkpoint_path, checkpoints.problem(checkpoint_path)
                                                   or 'its index cannot be read')) from None

    def _restore(self, session, checkpoint_path, use_moving_average):
        """Loads the shadows when wanted and present, else the raw weights."""
        try:
            has_shadows = any(name.endswith(train_step.SHADOW_SUFFIX)
                              for name, _ in tf.train.list_variables(checkpoint_path))
            saver = self.shadow_saver if (use_moving_average and has_shadows) else self.raw_saver
            saver.restore(session, checkpoint_path)
        except (tf.errors.OpError, ValueError) as e:
            raise UnreadableCheckpoint('%s: %s' % (checkpoint_path, checkpoints.problem(checkpoint_path)
                                                   or guards.error_line(e))) from None


def _index_readable(checkpoint_path):
    try:
        transfer.checkpoint_shapes(checkpoint_path)
        return True
    except transfer.CheckpointError:
        return False


class UnreadableCheckpoint(Exception):
    """A checkpoint removed between listing and loading, or a partial or corrupt one."""


class Results(object):
    """<eval_dir>/results.json: every checkpoint scored, the best of them, the latest one in
    detail (per-class precision, confusion matrix, class names), and with a validation split
    the test score of the best; rewritten in one step after each score, kept across restarts.

    Without a validation split the best is chosen on the eval records themselves, so as a
    final figure it is optimistic.
    """
    FILE_NAME = 'results.json'

    def __init__(self, eval_dir, records, class_names=None, run=(None, 0)):
        """run: (run id, the step from which the run has it), run_files.identity(); the entries of
        another run are dropped."""
        self.path = os.path.join(eval_dir, self.FILE_NAME)
        self.records = records
        self.class_names = class_names
        self.run_id = run[0]
        self.checkpoints, self.latest, self.test = [], None, None
        try:
            with guards.open_regular(self.path, RunError, 'of JSON scores') as f:
                saved = json.load(f)
            _check_results(saved)
            if saved.get('scored_on', records.describe()) == records.describe():
                of_this_run = lambda entry: entry and is_of_the_run(saved.get('run_id'), entry['step'], run)
                self.checkpoints = [e for e in saved['checkpoints'] if of_this_run(e)]
                self.latest, self.test = [e if of_this_run(e) else None for e in (saved.get('latest'),
                                                                                   saved.get('test'))]
                _log_dropped(self.path, saved.get('run_id'), len(saved['checkpoints']) - len(self.checkpoints))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
            logging.warning('starting %s afresh: it cannot be read (%s)', self.path, str(e).splitlines()[0])

    @property
    def best(self):
        """The entry of the best checkpoint, or None; of equals the later, which trained longer."""
        return max(self.checkpoints, key=lambda e: (e['precision'], e['step'])) if self.checkpoints else None

    def add(self, score):
        """Records `score` (a Score with its confusion matrix) and rewrites the file."""
        entry = _entry(score)
        self.checkpoints = sorted([e for e in self.checkpoints if e['step'] != score.step] + [entry],
                                  key=lambda e: e['step'])
        self.latest = dict(entry, **_detail(score, self.class_names))
        self.write()

    def add_test(self, score, checkpoint, class_names, checkpoint_fingerprint):
        """Records the test score of the best checkpoint (its name and fingerprint()) and rewrites the file."""
        self.test = dict(_entry(score), checkpoint=checkpoint, fingerprint=checkpoint_fingerprint,
                         chosen_on=self.records.describe(), **_detail(score, class_names))
        self.write()

    def write(self):
        """Rewrites the file in one step."""
        validation = self.records.kind == 'validation'
        guards.replace_file(self.path, json.dumps({
            'run_id': self.run_id, 'scored_on': self.records.describe(), 'checkpoints': self.checkpoints,
            'best': self.best,
            'latest': self.latest, 'test': self.test,
            'best_is_chosen_on': (self.records.describe() + ', held out of training' if validation
                                  else 'the eval records themselves: an optimistic figure')}, indent=1))


def _check_results(saved):
    """ValueError saying what in results.json (its object `saved`) is not as eval writes it."""
    entries = saved['checkpoints']
    if not isinstance(entries, list):
        raise ValueError('"checkpoints" is not a list')
    for entry in entries + [saved.get('latest'), saved.get('test')]:
        if entry is not None and not (isinstance(entry, dict) and _is_int(entry.get('step'))
                                      and _is_number(entry.get('precision'))):
            raise ValueError('a checkpoint entry is %s; expected its "step" and "precision" as numbers'
                             % json.dumps(entry)[:80])


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _entry(score):
    entry = {'step': score.step, 'precision': score.precision, 'loss': score.loss, 'images': score.num_images}
    if score.precision_at_5 is not None:
        entry['precision_at_5'] = score.precision_at_5
    return entry


def _detail(score, class_names):
    """Per-class precision (None for a class without images), the confusion matrix, the class names."""
    per_class = [int(score.confusion[c, c]) / int(row.sum()) if row.sum() else None
                 for c, row in enumerate(score.confusion)]
    return {'per_class_precision': per_class, 'confusion_matrix': score.confusion.tolist(),
            'class_names': class_names}


def is_of_the_run(recorded_id, step, run):
    """True when a record of `recorded_id` (None: written before runs had ids) about the checkpoint
    at `step` is of the run `run` ((run id, the step from which the run has it)): the same id, or
    no id on either side, or no id on the record and a step before the run of an older version got
    its id."""
    run_id, from_step = run
    if recorded_id is None and run_id is not None:
        return step is not None and 0 < from_step and step <= from_step
    return recorded_id == run_id


def _log_dropped(path, recorded_id, count):
    if count:
        logging.warning('%s: %d checkpoint(s) scored there are of another run (%s): not this run\'s, '
                        'they are scored afresh or dropped', path, count, recorded_id or 'one without an id')


_fingerprints = {}


def fingerprint(checkpoint_path):
    """What tells this checkpoint from another one saved under the same name (a run started over):
    the SHA-256 of its small index file, which holds every tensor's checksum; None when unreadable."""
    index = checkpoint_path + '.index'
    try:
        stat = os.stat(index)
        key = (index, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if key not in _fingerprints:
            with open(index, 'rb') as f:
                _fingerprints[key] = hashlib.sha256(f.read()).hexdigest()[:32]
        return _fingerprints[key]
    except OSError:
        return None


class EvalState(object):
    """Which checkpoints of the run were scored and the best precision, kept in eval_dir across
    restarts. A checkpoint is known by its step and fingerprint(), not by its name, and the state
    by the run's id: a run started over in the same directory is scored afresh.

    Skipped checkpoints are remembered in this process only, with their index
    file's time: a checkpoint written again under the same name (a trainer that
    resumed before it) is tried again.
    """

    def __init__(self, eval_dir, run=(None, 0)):
        """run: (run id, the step from which the run has it), run_files.identity()."""
        self._path = os.path.join(eval_dir, 'eval_state.json')
        self.run_id = run[0]
        self.scored = {}  # {(step, fingerprint, or None for a record of an older version): step}
        self.best_precision = 0.0
        self._skipped = {}
        if os.path.exists(self._path):
            try:
                with guards.open_regular(self._path, RunError, 'of JSON') as f:
                    saved = json.load(f)
                self._adopt(saved, run)
            except (OSError, ValueError, TypeError, AttributeError, KeyError) as e:
                logging.warning('ignoring unreadable %s (%s): checkpoints may be scored again',
                                self._path, str(e).splitlines()[0])
                self.scored, self.best_precision = {}, 0.0

    def _adopt(self, saved, run):
        """Takes the records of `saved` (the file's object) that are of `run`."""
        recorded_id = saved.get('run_id')
        entries = [(e['step'], e['checkpoint']) for e in saved.get('checkpoints', [])]
        # Before runs had ids: {name: step}.
        entries += [(step, None) for name, step in dict(saved.get('scored', {})).items() if step is not None]
        for step, mark in entries:
            if not (_is_int(step) and (mark is None or isinstance(mark, str))):
                raise ValueError('a checkpoint is listed as step %s, %s; expected a step and a fingerprint'
                                 % (json.dumps(step), json.dumps(mark)))
        if not _is_number(saved.get('best_precision', 0.0)):
            raise ValueError('"best_precision" is %s; expected a number' % json.dumps(saved['best_precision']))
        self.scored = {entry: entry[0] for entry in entries if is_of_the_run(recorded_id, entry[0], run)}
        if self.scored:
            self.best_precision = float(saved.get('best_precision', 0.0))
        _log_dropped(self._path, recorded_id, len(entries) - len(self.scored))

    def record(self, checkpoint_path, score, checkpoint_fingerprint):
        step = step_in_name(checkpoint_path)
        self.scored[step, checkpoint_fingerprint] = step
        self.best_precision = max(self.best_precision, score.precision)
        self.write()

    def write(self):
        """Rewrites the file in one step."""
        guards.replace_file(self._path, json.dumps({
            'run_id': self.run_id, 'best_precision': self.best_precision,
            'checkpoints': [{'step': step, 'checkpoint': mark} for step, mark in sorted(
                self.scored, key=lambda e: (e[0], e[1] or ''))]}, indent=1))

    def skip(self, checkpoint_path):
        self._skipped[os.path.basename(checkpoint_path)] = _index_time(checkpoint_path)

    def is_recorded(self, checkpoint_path):
        """True when this very checkpoint (its step and fingerprint) was scored for this run."""
        step = step_in_name(checkpoint_path)
        return (step, None) in self.scored or (step, fingerprint(checkpoint_path)) in self.scored

    def is_scored(self, checkpoint_path):
        """True when scored, or skipped and not written again since."""
        name = os.path.basename(checkpoint_path)
        return self.is_recorded(checkpoint_path) or (name in self._skipped
                                                     and self._skipped[name] == _index_time(checkpoint_path))


def _index_time(checkpoint_path):
    try:
        return os.stat(checkpoint_path + '.index').st_mtime_ns
    except OSError:
        return None


def step_in_name(checkpoint_path):
    """The global step a checkpoint's name ends with ('model.ckpt-1200' -> 1200), or -1."""
    step = checkpoints.step_of(checkpoint_path)
    return -1 if step is None else step


def run_train_steps(config):
    """Where the run ends: the run's own train_steps, read again each time when eval took it
    from the run (a trainer extending the run moves it), else config.schedule.train_steps."""
    if 'train_steps' not in config.taken_from_run:
        return config.schedule.train_steps
    try:
        saved, _ = run_files.read(config.log_root)
    except run_files.SettingsError:
        saved = None
    return (saved or {}).get('train_steps', config.schedule.train_steps)


def trainer_starting(log_root):
    """True while a live trainer holds the run's lock but has not written the run's settings yet
    (it may be about to extend the run)."""
    lock = os.path.join(log_root, run_files.LOCK_FILE)
    if guards.live_holder(lock) is None:
        return False
    try:
        settings_time = os.stat(run_files.path(log_root)).st_mtime_ns
    except OSError:
        return True
    return os.stat(lock).st_mtime_ns > settings_time


def run_started(log_root):
    """True once log_root has a checkpoint: its trainer has written the run's settings then."""
    return checkpoints.latest(log_root) is not None


def wait_for_run(log_root, interval_secs):
    """Waits until run_started(log_root); False when a stop signal came first."""
    try:
        with guards.StopSignals(raise_at_once=True, first_message='%s: stopping eval'):
            # Once the handlers are in: a signal sent on this line stops the wait.
            logging.info('waiting for the first checkpoint in %s', log_root)
            while not run_started(log_root):
                time.sleep(interval_secs)
    except guards.Stopped as e:
        logging.warning('eval stopped by %s', e.signal_name)
        return False
    return True


def evaluate(config):
    """Scores checkpoints until the one at the run's train_steps (or one, with config.eval.once).

    Each checkpoint is scored on checkpoint_records(config): the validation records when
    the run holds some out, else the eval records. The best one is kept in
    <log_root>/best/ (best.py). With a validation split, the test records are scored
    once at the end, on the best checkpoint.
    A checkpoint that cannot be restored (rotated away, damaged) is skipped with a
    warning that says why, and the newest older one not scored yet is scored instead.
    SIGTERM or SIGINT stops it at once (a score in progress is dropped); it returns normally.
    One eval per run: it holds <log_root>/eval.lock while it runs.

    Raises:
      guards.LockedError: another eval is using the run.
      errors.CheckpointError: a checkpoint of another network (other model flags), or,
        with eval.once, no checkpoint that restores.
      errors.DataError: bad eval records, or records that changed since the start.
      summaries.SummaryWriteError: the eval event file cannot be written.
      errors.RunError: another file it writes cannot be (results.json, eval_state.json, best/);
        it names the file.
      OSError: the lock file cannot be written; it names the file.
    """
    checked, _ = checkpoint_records(config).check(config.data.dataset)
    if config.data.validation_size:
        test_records(config).check(config.data.dataset)
        run_files.check_pinned_split(config, checked)
    os.makedirs(config.eval_dir, exist_ok=True)
    with guards.RunLock(os.path.join(config.log_root, run_files.EVAL_LOCK_FILE), 'eval',
                        '--log_root=%s' % config.log_root,
                        'it keeps best/ and eval/results.json: wait for it, or stop it first'):
        best.remove_holding_folders(config.log_root)  # left by an eval that was killed
        try:
            with guards.StopSignals(raise_at_once=True, first_message='%s: stopping eval'):
                scorer = _Scorer(config)
                if config.eval.once:
                    _score_once(scorer, config.log_root)
                else:
                    _follow_training(scorer, config)
                scorer.score_test()
        except guards.Stopped as e:
            logging.warning('eval stopped by %s', e.signal_name)
        except OSError as e:  # a file it writes (a full disk, a read-only one): the error names it
            raise write_error(e) from None
        finally:
            best.remove_holding_folders(config.log_root)


def write_error(error):
    """The RunError for an OSError that stopped eval, naming the file, with advice by its errno."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = 'free space and run it again'
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        advice = ('check its permissions, or whether its file system is read-only (or give another '
                  '--log_root), and run it again')
    else:
        advice = 'fix it and run it again'
    return RunError('%s; eval stopped, best/ and the scores written before are kept: %s'
                    % (guards.error_line(error), advice))


def score_after_training(config):
    """Scores the run's last checkpoint once on checkpoint_records(config) (the eval records,
    or the validation records) and prints its held-out precision. The run is trained and saved
    by then: when the score cannot be had (no records, a bad one, a stop signal), a warning says
    why. Returns the Score or None."""
    records = checkpoint_records(config)
    try:
        with guards.StopSignals(raise_at_once=True, first_message='%s: skipping the held-out score'):
            score = _score_last_checkpoint(config, records)
    except guards.Stopped as e:
        logging.warning('no held-out precision: stopped by %s; the run is saved', e.signal_name)
        return None
    except (Error, UnreadableCheckpoint, tf.errors.OpError) as e:
        logging.warning('no held-out precision: %s', guards.error_line(e))
        return None
    print('%s precision %.4f on %s (step %d, loss %.4f)'
          % ('validation' if records.kind == 'validation' else 'held-out', score.precision,
             '%d images of %s' % (score.num_images, records.data_path) if records.kind == 'test'
             else '%d images (%s)' % (score.num_images, records.describe()), score.step, score.loss), flush=True)
    return score


def _score_last_checkpoint(config, records):
    records.check(config.data.dataset)
    path = checkpoints.latest(config.log_root)
    if path is None:
        raise CheckpointError('no checkpoint in %s' % config.log_root)
    # On this machine alone, also after training in a cluster.
    eval_config = dataclasses.replace(config, mode='eval', cluster=type(config.cluster)())
    if config.compute_dtype_choice:  # eval scores in float32 unless asked otherwise
        eval_config = dataclasses.replace(eval_config, model=dataclasses.replace(config.model, compute_dtype='float32'))
    return EvalGraph(eval_config.hparams(), eval_config, records).score(
        path, config.eval.use_moving_average, config.eval.batch_count)


class _Scorer(object):
    """Scores a checkpoint, or the newest older one that restores; reports each score and keeps
    the best checkpoint; scores the best on the test records when the run has a validation split."""

    def __init__(self, config):
        self.config = config
        self.hps = config.hparams()
        self.records = checkpoint_records(config)
        self.checked, num_records = self.records.check(config.data.dataset)
        run_files.write_record(config.eval_dir, config, self.hps)
        self.expected = num_records if not config.eval.batch_count else min(
            num_records, config.eval.batch_count * self.hps.batch_size)
        logging.info('eval: %d of %d records per checkpoint (%s)', self.expected, num_records,
                     self.records.describe())
        self.evaluator = EvalGraph(self.hps, config, self.records)
        self.progress = progress.EvalProgress(self.expected, self.hps.batch_size)
        self.run = run_files.identity(config.log_root)
        self.state = EvalState(config.eval_dir, self.run)
        self.results = Results(config.eval_dir, self.records, self._class_names(self.records), self.run)
        _set_aside_best_of_another_run(config.log_root, self.run)
        if self.records.kind == 'validation':
            logging.info('the best checkpoint is chosen on the validation records and kept in %s; the test '
                         'records, %s, are scored once, on it, at the end', best.directory(config.log_root),
                         config.data.eval_data_path)
        else:
            logging.info("results in %s; 'Best Precision' is the best on these eval records themselves, "
                         'an optimistic figure', self.results.path)

    def follow_the_run(self):
        """Reads the run's identity again (eval follows training): a run of an older version that a
        trainer resumes gets its id from the step it resumes at, and what was scored is relabelled
        as that run's; another run (started over) is scored afresh, as at a start."""
        now = run_files.identity(self.config.log_root)
        if now == self.run or now[0] is None:  # a run never loses its id (config.json being replaced)
            return
        if self.run == (None, 0) and now[1] > 0:
            logging.info('the run in %s got the id %s at step %d: the scores so far are its own',
                         self.config.log_root, now[0], now[1])
            self.run = now
            self.state.run_id = self.results.run_id = now[0]
            self.state.write()
            self.results.write()
            _label_best(self.config.log_root, now[0])
            return
        logging.warning('%s holds another run now (id %s, was %s): it is scored afresh',
                        self.config.log_root, now[0], self.run[0] or 'none')
        self.run = now
        self.state = EvalState(self.config.eval_dir, now)
        self.results = Results(self.config.eval_dir, self.records, self.results.class_names, now)
        _set_aside_best_of_another_run(self.config.log_root, now)

    def _class_names(self, records):
        return cifar_input.label_names(self.config.data.dataset, records.data_path, self.config.data.label_mode)

    def not_scored_up_to(self, latest):
        """The checkpoints on disk up to `latest` (the newest one the trainer finished), oldest
        first, that were not scored or skipped yet."""
        if latest is None:
            return []
        whole = [p for step, p in checkpoints.on_disk(self.config.log_root) if step <= step_in_name(latest)]
        # The latest one may lack a file: it is tried too, and skipped with the reason.
        candidates = whole if latest in whole else whole + [latest]
        return [p for p in candidates if not self.state.is_scored(p)]

    def score_or_skip(self, path):
        """Scores `path` and reports it (True), or skips it with a warning saying why (False)."""
        error = cifar_input.changed_file_error(self.config.data.dataset, self.checked)
        if error is not None:
            raise error
        # Held in best/ while it is scored: rotation cannot take it away, and it can become the best.
        held = best.hold(self.config.log_root, path)
        if held is None:
            return self._skip(path, '%s: %s' % (path, checkpoints.problem(path) or 'its files went'))
        checkpoint_fingerprint = fingerprint(held)  # of the files scored, whatever the name holds later
        try:
            try:
                score = self.evaluator.score(held, self.config.eval.use_moving_average,
                                             self.config.eval.batch_count, self.progress)
            except UnreadableCheckpoint as e:
                return self._skip(path, str(e).replace(held, path))
            except CheckpointError as e:  # of another network: name the run's checkpoint, not the held link
                raise CheckpointError(str(e).replace(held, path)) from None
            if score.num_images != self.expected:
                raise DataError('read %d of the %d records of %s: the files changed'
                                % (score.num_images, self.expected, self.records.describe()))
            self._report(path, score, held, checkpoint_fingerprint)
            return True
        finally:
            best.release(held)  # nothing left to release once promoted

    def _skip(self, path, reason):
        logging.warning('skipping checkpoint %s', reason)
        self.state.skip(path)
        return False

    def score_newest_readable(self, path):
        """Scores `path`, or else the newest older checkpoint not scored yet that restores
        (eval_once). False when none of them restores (each is skipped with a warning)."""
        older = [p for step, p in reversed(checkpoints.on_disk(self.config.log_root))
                 if step < step_in_name(path) and not self.state.is_scored(p)]
        return any(self.score_or_skip(candidate) for candidate in [path] + older)

    def _report(self, path, score, held, checkpoint_fingerprint):
        # In this order, so that a stop between two of them leaves the checkpoint unscored (and
        # scored again after a restart), never scored but missing from results.json or best/.
        self.results.add(score)
        if self.results.best['step'] == score.step:
            best.promote(self.config.log_root, held, {
                'step': score.step, 'precision': score.precision, 'scored_on': self.records.describe(),
                'run_id': self.run[0]})
        self.state.record(path, score, checkpoint_fingerprint)
        scalars = {'Precision': score.precision, 'Best Precision': self.state.best_precision, 'loss': score.loss}
        top_5 = ''
        if score.precision_at_5 is not None:
            scalars['Precision@5'] = score.precision_at_5
            top_5 = ', precision@5 %.4f' % score.precision_at_5
        summaries.write_scalars(self.config.eval_dir, score.step, scalars)
        print('step %d: %sprecision %.4f, best precision %.4f%s, loss %.4f (%d images, %.1f s)'
              % (score.step, 'validation ' if self.records.kind == 'validation' else '', score.precision,
                 self.state.best_precision, top_5, score.loss, score.num_images, score.seconds), flush=True)

    def score_test(self):
        """With a validation split: scores the kept best checkpoint on the test records, once
        (again only when the best changed), and reports it apart from the validation scores."""
        if self.records.kind != 'validation':
            return
        path = best.path(self.config.log_root)
        kept = best.info(self.config.log_root) or {}
        if path is None:
            logging.warning('no test score: no best checkpoint kept in %s', best.directory(self.config.log_root))
            return
        test = self.results.test
        if test and (test.get('checkpoint'), test.get('fingerprint')) == (os.path.basename(path), fingerprint(path)):
            logging.info('the test score of the best checkpoint, step %d, is in %s already',
                         self.results.test['step'], self.results.path)
            return
        records = test_records(self.config)
        _, count = records.check(self.config.data.dataset)
        logging.info('scoring the best checkpoint, %s, on the test records, %s', path, records.data_path)
        score = EvalGraph(self.hps, self.config, records).score(
            path, self.config.eval.use_moving_average, self.config.eval.batch_count,
            progress.EvalProgress(count, self.hps.batch_size))
        self.results.add_test(score, os.path.basename(path), self._class_names(records), fingerprint(path))
        summaries.write_scalars(self.config.eval_dir, score.step, {'Test Precision': score.precision})
        print('test precision %.4f on %d images of %s (the best checkpoint, step %d, chosen on validation '
              'precision %.4f)' % (score.precision, score.num_images, records.data_path, score.step,
                                   kept.get('precision', float('nan'))), flush=True)


def _label_best(log_root, run_id):
    """Writes `run_id` into best/best.json when it names no run: the best of a run of an older
    version, which got its id while eval followed it."""
    kept = best.info(log_root)
    if best.path(log_root) is not None and isinstance(kept, dict) and kept.get('run_id') is None:
        guards.replace_file(os.path.join(best.directory(log_root), best.INFO_FILE),
                            json.dumps(dict(kept, run_id=run_id), indent=1))


def _best_info_problem(kept):
    """What in best.json (its value `kept`) is not as eval writes it, or None."""
    if not isinstance(kept, dict):
        return 'expected a JSON object'
    if not _is_number(kept.get('precision')):
        return '"precision" is %s; expected a number' % json.dumps(kept.get('precision'))[:80]
    return run_files.run_identity_problem(kept.get('run_id'), kept.get('step'), 'step')


def _set_aside_best_of_another_run(log_root, run):
    """Moves a best/ that eval kept for another run than `run` to best.of-another-run-<id>/, so
    that its figures are never taken for this run's; one warning says where."""
    kept = best.info(log_root)
    if best.path(log_root) is None or kept is None:
        return
    problem = _best_info_problem(kept)
    if problem:
        raise run_files.SettingsError('%s: %s; restore it, or move %s away' % (
            os.path.join(best.directory(log_root), best.INFO_FILE), problem, best.directory(log_root)))
    if is_of_the_run(kept.get('run_id'), kept['step'], run):
        return
    aside = '%s.of-another-run-%s' % (best.directory(log_root), (kept.get('run_id') or 'without-id')[:8])
    while os.path.exists(aside):
        aside += '~'
    os.replace(best.directory(log_root), aside)
    logging.warning('%s held the best checkpoint of another run (step %s); it is moved to %s',
                    best.directory(log_root), kept.get('step'), aside)


def _score_once(scorer, log_root):
    path = checkpoints.latest(log_root)
    if path is None:
        raise CheckpointError('no checkpoint in %s to evaluate: train first' % log_root)
    if not scorer.score_newest_readable(path):
        raise CheckpointError('cannot evaluate: no checkpoint in %s restores (see the warnings)' % log_root)


def _follow_training(scorer, config):
    """Scores every checkpoint not scored yet, oldest first, until the one at the run's
    train_steps is scored: when training saves faster than eval scores, eval falls behind
    rather than leaving holes in the curves (rotation may delete one meanwhile: it is skipped)."""
    log_root = config.log_root
    waiting_logged = scored_here = False
    while True:
        scorer.follow_the_run()
        path = checkpoints.latest(log_root)
        pending = scorer.not_scored_up_to(path)
        if pending:
            scored_here = scorer.score_or_skip(pending[0]) or scored_here
            waiting_logged = False
            continue
        train_steps = run_train_steps(config)
        if path and step_in_name(path) >= train_steps and not trainer_starting(log_root):
            # Training is over: no later checkpoint will come to wait for.
            if not scorer.state.is_recorded(path):
                logging.warning('the last checkpoint, %s, cannot be restored; eval done', path)
            elif scored_here:
                logging.info('scored the checkpoint at --train_steps=%d; eval done', train_steps)
            else:  # a rerun on a finished run (the launcher's command again)
                logging.info('the checkpoint at --train_steps=%d is already scored; eval done', train_steps)
            return
        if not waiting_logged:
            logging.info('waiting for a new checkpoint in %s', log_root)
            waiting_logged = True
        time.sleep(config.eval.interval_secs)
