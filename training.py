"""The training loop: input queue -> ResNet -> MonitoredTrainingSession.

`train(hps, config)` takes one `resnet_model.HParams` and a dict of plain settings
(built by resnet_main.py from its flags): data paths, step counts, directories.
It resumes from the latest checkpoint in config['log_root'] when there is one.
"""
import bisect
import json
import math
import os
import time

import numpy as np
import tensorflow as tf
from absl import logging

import checkpoints
import cifar_input
import guards
import loss_scaling
import resnet_model
import run_settings
import staging
import towers
import transfer
import summaries


class TrainingError(RuntimeError):
    """A run that cannot go on; the one-line message says why and what was kept."""


def check_schedule(boundaries, values):
    """Raises ValueError unless `values` has one more entry than increasing `boundaries`."""
    if len(values) != len(boundaries) + 1:
        raise ValueError('expected one more learning rate than boundaries, got %d rates and %d boundaries'
                         % (len(values), len(boundaries)))
    if any(b < 1 for b in boundaries):
        raise ValueError('boundaries must be positive steps, got %s' % boundaries)
    if any(b2 <= b1 for b1, b2 in zip(boundaries, boundaries[1:])):
        raise ValueError('boundaries must increase, got %s' % ','.join(map(str, boundaries)))
    if any(not math.isfinite(v) or v <= 0 for v in values):
        raise ValueError('learning rates must be positive numbers, got %s' % ','.join(map(str, values)))


def learning_rate_at(step, boundaries, values, min_lrn_rate):
    """The learning rate of the step that runs at global step `step`.

    values[i] applies from boundaries[i-1] (inclusive) to boundaries[i]; the
    result is never below min_lrn_rate.
    """
    return max(values[bisect.bisect_right(boundaries, step)], min_lrn_rate)


def session_config(num_cpu_devices=1):
    """Soft placement; num_cpu_devices > 1 makes that many logical CPU devices (CPU towers)."""
    config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
    if num_cpu_devices > 1:
        config.device_count['CPU'] = num_cpu_devices
    return config


def forward_flops_per_image(hps):
    """Forward-pass floating-point operations for one image, counted by TF's profiler."""
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [1, 32, 32, 3])
        labels = tf.compat.v1.placeholder(tf.float32, [1, hps.num_classes])
        resnet_model.ResNet(hps, images, labels, 'eval').build_graph()
        options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        options['output'] = 'none'
        return tf.compat.v1.profiler.profile(graph, options=options).total_float_ops


def write_config(directory, hps, config, flag_values=None):
    """Writes the run's flags, HParams and settings as JSON, so results trace to settings.

    Returns the path, or None when `directory` is the log root itself, whose
    config.json is the run's settings file (run_settings), not to be overwritten.
    """
    if os.path.realpath(directory) == os.path.realpath(config['log_root']):
        return None
    os.makedirs(directory, exist_ok=True)
    record = {'hparams': hps._asdict(), 'config': config, 'flags': flag_values or {},
              'tensorflow': tf.__version__, 'time': time.strftime('%Y-%m-%d %H:%M:%S')}
    path = os.path.join(directory, 'config.json')
    guards.replace_file(path, json.dumps(record, indent=2, sort_keys=True, default=str))
    return path


def write_scalars(directory, step, scalars):
    """Appends scalar summaries {tag: value} at `step` to the event file of `directory`.

    Raises summaries.SummaryWriteError when the event file cannot be written.
    """
    with tf.Graph().as_default():  # FileWriter refuses to be created eagerly
        writer = tf.compat.v1.summary.FileWriterCache.get(directory)
    summary = tf.compat.v1.Summary(value=[
        tf.compat.v1.Summary.Value(tag=tag, simple_value=float(value)) for tag, value in scalars.items()])
    try:
        writer.add_summary(summary, step)
        writer.flush()
    except Exception as e:  # the writer thread's error: IndexError, OSError or an OpError
        raise summaries.SummaryWriteError(summaries.write_error_line(directory, e)) from e


class _StepCountingHook(tf.compat.v1.train.SessionRunHook):
    """Knows the global step of the next train step without an extra fetch.

    One trainer increments the global step once per run of the train op, so the
    value read when the session is created plus the number of runs is exact.
    """

    def __init__(self, model):
        self._model = model
        self.step = None

    def after_create_session(self, session, coord):
        self.step = int(session.run(self._model.global_step))

    def after_run(self, run_context, run_values):
        self.step += 1


class LearningRateHook(_StepCountingHook):
    """Sets the model's learning-rate variable from the schedule, only when it changes."""

    def __init__(self, model, boundaries, values, min_lrn_rate):
        super().__init__(model)
        self._rate_at = lambda step: learning_rate_at(step, boundaries, values, min_lrn_rate)
        self._current = None

    def after_create_session(self, session, coord):
        super().after_create_session(session, coord)
        self._set(session)

    def after_run(self, run_context, run_values):
        super().after_run(run_context, run_values)
        self._set(run_context.session)

    def _set(self, session):
        rate = self._rate_at(self.step)
        if rate != self._current:
            self._model.set_lrn_rate(session, rate)
            self._current = rate


class NanLossError(Exception):
    def __init__(self, step, what='loss is'):
        super().__init__('%s NaN or Inf at step %d' % (what, step))
        self.step = step


class NanLossHook(_StepCountingHook):
    """Stops training when the loss stops being finite, naming the step.

    It must come before the checkpoint saver in the hook list, so that the weights
    of a diverged step are never saved.
    """

    def before_run(self, run_context):
        return tf.compat.v1.train.SessionRunArgs(self._model.cost)

    def after_run(self, run_context, run_values):
        step = self.step
        super().after_run(run_context, run_values)
        if not np.isfinite(run_values.results):
            raise NanLossError(step)


class StuckLossScaleError(NanLossError):
    def __init__(self, step, skipped):
        Exception.__init__(self, 'float16 gradients overflow even at loss scale 1: the %d steps up to '
                           'step %d were all skipped; train in bfloat16 or float32' % (skipped, step))
        self.step = step


class LossScaleHook(_StepCountingHook):
    """Stops float16 training that no longer learns: every step overflowing at loss scale 1.

    Such steps are skipped with a finite loss, so NanLossHook never fires; after
    max_skipped of them in a row the run stops, naming the step.
    """

    def __init__(self, model, max_skipped=50):
        super().__init__(model)
        self._fetches = [model.loss_scale.scale, model.loss_scale.skipped_in_a_row]
        self._max_skipped = max_skipped

    def after_run(self, run_context, run_values):
        step = self.step
        super().after_run(run_context, run_values)
        # Read after the step: fetched with it, the values could predate its update.
        scale, skipped = run_context.session.run(self._fetches)
        if skipped >= self._max_skipped and scale <= loss_scaling.MIN_SCALE:
            raise StuckLossScaleError(step, int(skipped))


class FiniteVariablesCheck(tf.compat.v1.train.CheckpointSaverListener):
    """Refuses to save a checkpoint holding a NaN or Inf value.

    The loss can stay finite for a step whose update already overflowed a weight or a
    batch-norm moving variance; this check runs once per save, not per step.
    """

    def __init__(self):
        checks = [tf.reduce_all(tf.math.is_finite(v)) for v in tf.compat.v1.global_variables()
                  if v.dtype.base_dtype.is_floating]
        self._all_finite = tf.reduce_all(tf.stack(checks), name='variables_finite')

    def before_save(self, session, global_step_value):
        if not session.run(self._all_finite):
            raise NanLossError(int(global_step_value), 'the model variables are')


class StopOnSignalHook(_StepCountingHook):
    """Ends the run after the current step once a stop signal came (guards.StopSignals).

    The session then ends normally, so the checkpoint saver's end() saves the last step.
    """

    def __init__(self, model, stop_signals):
        super().__init__(model)
        self._stop_signals = stop_signals
        self.stopped_at = None

    def after_run(self, run_context, run_values):
        super().after_run(run_context, run_values)
        if self._stop_signals.requested and self.stopped_at is None:
            self.stopped_at = self.step
            run_context.request_stop()


class SaveTracker(tf.compat.v1.train.CheckpointSaverListener):
    """Knows whether a checkpoint save started and did not finish, and the last one saved."""

    def __init__(self):
        self.saving = None
        self.last_saved = None

    def before_save(self, session, global_step_value):
        self.saving = int(global_step_value)

    def after_save(self, session, global_step_value):
        self.saving = None
        self.last_saved = int(global_step_value)


class ProgressHook(_StepCountingHook):
    """Every N steps: a log line (step, loss, precision, learning rate, examples/sec, ETA)
    and the summaries of that same training step, plus examples/sec and global
    steps/sec, written to the train directory at the step count.

    The summaries are fetched with the train op they describe, never by an extra
    session.run that would dequeue another batch. When they cannot be written (a
    full disk), it asks the session to stop, so the last steps are saved, and keeps
    the error's one-line message in `write_error`.
    """

    def __init__(self, model, batch_size, train_steps, every_n_steps, summary_dir):
        super().__init__(model)
        self._fetches = {'cost': model.cost, 'precision': model.precision,
                         'lrn_rate': model.lrn_rate, 'summaries': model.summaries}
        self._batch_size = batch_size
        self._train_steps = train_steps
        self._every_n = every_n_steps
        self._summary_dir = summary_dir
        self._window_start = None
        self._writer = None
        self.write_error = None

    def after_create_session(self, session, coord):
        super().after_create_session(session, coord)
        self._window_start = (time.time(), self.step)

    def before_run(self, run_context):
        if (self.step + 1) % self._every_n == 0:
            return tf.compat.v1.train.SessionRunArgs(self._fetches)
        return None

    def after_run(self, run_context, run_values):
        super().after_run(run_context, run_values)
        if run_values.results is None:
            return
        now, step = time.time(), self.step
        start_time, start_step = self._window_start
        self._window_start = (now, step)
        steps_per_sec = (step - start_step) / max(now - start_time, 1e-9)
        examples_per_sec = steps_per_sec * self._batch_size
        eta_secs = (self._train_steps - step) / max(steps_per_sec, 1e-9)
        r = run_values.results
        logging.info('step %d/%d (%.1f%%): loss %.4f, precision %.4f, lr %g, %.1f examples/sec, ETA %s',
                     step, self._train_steps, 100.0 * step / self._train_steps, r['cost'],
                     r['precision'], r['lrn_rate'], examples_per_sec, format_duration(eta_secs))
        if self.write_error is not None:
            return
        try:
            self._writer = tf.compat.v1.summary.FileWriterCache.get(self._summary_dir)
            self._writer.add_summary(r['summaries'], step)
            write_scalars(self._summary_dir, step, {'examples_per_sec': examples_per_sec,
                                                    'global_step/sec': steps_per_sec})
        except summaries.SummaryWriteError as e:
            self.write_error = str(e)
            run_context.request_stop()
        except Exception as e:  # the writer thread's error: IndexError, OSError or an OpError
            self.write_error = summaries.write_error_line(self._summary_dir, e)
            run_context.request_stop()

    def end(self, session):
        """Writes out what is left; runs before the checkpoint saver's final save."""
        if self._writer is not None and self.write_error is None:
            try:
                self._writer.flush()
            except Exception as e:  # the writer thread's error: IndexError, OSError or an OpError
                self.write_error = summaries.write_error_line(self._summary_dir, e)


class DataFilesHook(tf.compat.v1.train.SessionRunHook):
    """Stops the run, with a checkpoint, once a training file changes under it.

    The reader threads would go on silently: they drop a partial record at the end
    of a file. Once a second at most, it compares the files' sizes with those that
    cifar_input.check_files found at the start; `error` is then the DataError.
    """

    def __init__(self, dataset, checked, every_secs=1.0):
        self._dataset = dataset
        self._checked = checked
        self._every_secs = every_secs
        self._next_look = 0.0
        self.error = None

    def after_run(self, run_context, run_values):
        now = time.monotonic()
        if self.error is not None or now < self._next_look:
            return
        self._next_look = now + self._every_secs
        self.error = cifar_input.changed_file_error(self._dataset, self._checked)
        if self.error is not None:
            run_context.request_stop()


def format_duration(seconds):
    seconds = int(round(seconds))
    return '%d:%02d:%02d' % (seconds // 3600, seconds // 60 % 60, seconds % 60)


def build_train_graph(hps, config):
    """Input queue on the CPU, the ResNet on config['device']. Returns the model.

    With config['stage_input'], each batch is staged onto the device a step ahead
    (staging.py); train() then adds the StagingHook.

    With config['num_towers'] > 1, the towers of towers.py instead: a TowerModel.
    """
    if config.get('random_seed') is not None:
        tf.compat.v1.set_random_seed(config['random_seed'])
    if config.get('num_towers', 1) > 1:
        model = towers.build_train_towers(hps, config)
    else:
        model = _build_one_device(hps, config)
    if config.get('summary_histograms'):
        model.summaries = summaries.add_histograms(model)
    return model


def _build_one_device(hps, config):
    with tf.compat.v1.device('/cpu:0'):
        images, labels = cifar_input.build_input(
            config['dataset'], config['train_data_path'], hps.batch_size, 'train',
            num_threads=config.get('num_input_threads'), label_mode=config.get('label_mode', 'fine'),
            seed=config.get('random_seed'))
        if config.get('stage_input'):
            images, labels = staging.stage(images, labels, config.get('device', '/cpu:0'))
        summaries.add_input_images(images)
    with tf.compat.v1.device(config.get('device', '/cpu:0')):
        model = resnet_model.ResNet(hps, images, labels, 'train')
        # Frozen: every layer but the new fully connected one keeps its restored weights.
        model.build_graph(is_frozen=(lambda v: not transfer.is_new_layer(v))
                          if config.get('freeze_restored_layers') else None)
    return model


LOCK_FILE = 'trainer.lock'


def train(hps, config, flag_values=None):
    """Trains until config['train_steps'], resuming from config['log_root'].

    Only one trainer works on a run: a second one is refused (guards.LockedError).
    It resumes from the newest checkpoint of log_root that restores (see
    checkpoints.prepare_resume) and writes the run's settings (run_settings). A
    new run (no checkpoint in log_root yet) with config['init_checkpoint']
    starts from that run's weights, all but the fully connected layer; with
    config['freeze_restored_layers'] only that layer trains.
    SIGTERM or SIGINT ends the run after the current step with a checkpoint of that
    step (run the same command to resume); a second signal exits at once. So does
    a summary that cannot be written or a training file that changes, with an error.

    Raises:
      guards.LockedError: another trainer works on log_root.
      checkpoints.CheckpointError: log_root has checkpoints, but none restores.
      transfer.CheckpointError: the init checkpoint is missing or of another
        architecture, or the checkpoint to resume from is of another one.
      TrainingError: the loss became NaN or Inf, or a checkpoint or summary could
        not be saved, or the session failed; the message names the step and the
        last checkpoint, which is kept.
      cifar_input.DataError: bad data files, found before the graph runs, or a bad
        record found by the reader threads, or a file that changed during training.
    """
    data_files = cifar_input.check_files(config['dataset'], config['train_data_path'])
    log_root = config['log_root']
    os.makedirs(log_root, exist_ok=True)
    with guards.RunLock(os.path.join(log_root, LOCK_FILE), 'trainer', '--log_root=%s' % log_root):
        resume_from = checkpoints.prepare_resume(log_root)
        done = None if resume_from is None else int(tf.train.load_variable(resume_from, 'global_step'))
        if done is not None and done >= config['train_steps']:
            # Without this, MonitoredTrainingSession would run one more step before stopping.
            logging.info('nothing to train: the latest checkpoint in %s is at step %d, train_steps is %d',
                         log_root, done, config['train_steps'])
            return
        with guards.StopSignals(first_message='%s: saving a checkpoint after this step, then stopping; '
                                'send it again to exit at once') as stop_signals:
            with summaries.writer_errors_reported_once():
                _train(hps, config, flag_values, resume_from, data_files, stop_signals)


def _write_settings(hps, config, flag_values, resume_from):
    """The run's settings file, this start's record, and a log line for each change of the recipe."""
    run_settings.write(config['log_root'], config)
    write_config(config['train_dir'], hps, config, flag_values)
    for change in config.get('settings_changes', ()):
        logging.warning('from step %d: %s', int(tf.train.load_variable(resume_from, 'global_step')), change)
    logging.info('learning rate: %s', describe_schedule(config['lr_boundaries'], config['lr_values'],
                                                        hps.min_lrn_rate))


def describe_schedule(boundaries, values, min_lrn_rate):
    """'0.1 until step 40000, 0.01 until step 60000, then 0.001; never below 0.0001'."""
    spans = ['%g until step %d' % (value, boundary) for value, boundary in zip(values, boundaries)]
    return '%s, then %g; never below %g' % (', '.join(spans), values[-1], min_lrn_rate)


class _StopCauses(object):
    """The hooks that can end a run early, and the one-line message of why it ended."""

    def __init__(self, model, config, data_files, stop_signals):
        self.signal = StopOnSignalHook(model, stop_signals)
        self.summaries = ProgressHook(model, config['batch_size'], config['train_steps'],
                                      config['log_every_n_steps'], config['train_dir'])
        self.data = DataFilesHook(config['dataset'], data_files)

    def error_after_saving(self, checkpoint):
        """The error to raise once the session ended normally, or None."""
        if self.data.error is not None:
            return cifar_input.DataError('%s; checkpoint %s saved' % (self.data.error, checkpoint))
        if self.summaries.write_error is not None:
            return TrainingError('%s; checkpoint %s saved; free space and run the same command to resume'
                                 % (self.summaries.write_error, checkpoint))
        return None


def _train(hps, config, flag_values, resume_from, data_files, stop_signals):
    with tf.Graph().as_default():
        model = build_train_graph(hps, config)
        num_params = resnet_model.count_params(tf.compat.v1.trainable_variables())
        logging.info('ResNet: %d trainable parameters, %.1f MFLOPs forward per image',
                     num_params, forward_flops_per_image(hps) / 1e6)
        if resume_from is not None:
            # Before the settings are written: a run without them has only its checkpoint to say
            # what network it is.
            transfer.check_resumable(resume_from, tf.compat.v1.global_variables())
        _write_settings(hps, config, flag_values, resume_from)
        scaffold = tf.compat.v1.train.Scaffold(
            saver=tf.compat.v1.train.Saver(max_to_keep=config['keep_checkpoint_max'], save_relative_paths=True),
            init_fn=transfer.warm_start_fn(model, config.get('init_checkpoint'), resume_from))
        saves = SaveTracker()
        causes = _StopCauses(model, config, data_files, stop_signals)
        try:
            _run_session(model, config, scaffold, _hooks(model, config, scaffold, saves, causes))
        except NanLossError as e:
            raise TrainingError('%s; the last good checkpoint, %s, is kept'
                                % (e, last_checkpoint(config))) from None
        except (TrainingError, cifar_input.DataError):
            raise
        except Exception as e:
            error = _session_error(e, config, saves, causes.summaries.write_error, causes.signal.step)
            if error is None:
                raise
            raise error from e
        error = causes.error_after_saving(last_checkpoint(config))
        if error is None:
            error = _flush_summaries(config, last_checkpoint(config))
        if error is not None:
            raise error
    if causes.signal.stopped_at is not None:
        logging.warning('stopped by %s at step %d; checkpoint %s saved; run the same command to resume',
                        stop_signals.signal_name, causes.signal.stopped_at, last_checkpoint(config))
        return
    logging.info('training done at step %d; checkpoints in %s', config['train_steps'], config['log_root'])


def _hooks(model, config, scaffold, saves, causes):
    """The session's hooks, in the order they must run."""
    hooks = [
        tf.compat.v1.train.StopAtStepHook(last_step=config['train_steps']),
        LearningRateHook(model, config['lr_boundaries'], config['lr_values'], config['min_lrn_rate']),
        NanLossHook(model),
        causes.summaries,
        causes.data,
        causes.signal,
        # After the NaN check: MonitoredTrainingSession would put its own saver first.
        tf.compat.v1.train.CheckpointSaverHook(
            config['log_root'], save_secs=config.get('save_checkpoints_secs'),
            save_steps=config.get('save_checkpoints_steps'), scaffold=scaffold,
            listeners=[FiniteVariablesCheck(), saves]),
    ]
    if model.loss_scale is not None:
        hooks.insert(hooks.index(causes.signal), LossScaleHook(model))
    if staging.put_ops():
        hooks.append(staging.StagingHook(staging.put_ops()))
    return hooks


def _run_session(model, config, scaffold, hooks):
    run_error = None
    with tf.compat.v1.train.MonitoredTrainingSession(
            checkpoint_dir=config['log_root'], scaffold=scaffold, hooks=hooks,
            save_checkpoint_secs=None, save_checkpoint_steps=None,
            # ProgressHook writes the summaries, at the same steps as its log line.
            save_summaries_steps=None, save_summaries_secs=None, log_step_count_steps=None,
            config=session_config(towers.num_cpu_devices(config))) as session:
        while not session.should_stop():
            try:
                session.run(model.train_op)
            except tf.errors.OutOfRangeError as e:
                run_error = e
                raise
    if run_error is not None:
        # The session ends quietly on an OutOfRangeError, which is also how TF
        # reports "File too large" from a checkpoint save; training has no input end.
        raise run_error


def _session_error(error, config, saves, summary_error=None, step=None):
    """The one-line error (TrainingError or DataError) of an exception out of the session, or
    None for one to raise as it is (a CheckpointError of --init_checkpoint, a bug).

    saves: the SaveTracker; summary_error: the one line of a summary write that failed
    before, or None; step: the global step of the next train step, or None.
    """
    if saves.saving is not None and summaries.EVENT_FILE_MARK in guards.error_line(error):
        # The saver writes a checkpoint event to log_root's event file after the checkpoint.
        latest = checkpoints.latest(config['log_root'])
        kept = ('checkpoint %s saved' % latest if latest and checkpoints.step_of(latest) == saves.saving
                else 'the last checkpoint, %s, is kept' % (latest or 'none yet'))
        return TrainingError('%s; %s; free space and run the same command to resume'
                             % (summaries.write_error_line(config['log_root'], error), kept))
    if saves.saving is not None:
        also = '' if summary_error is None else ' (after: %s)' % summary_error
        return TrainingError('cannot save checkpoint %d in %s: %s%s; the last checkpoint, %s, is kept'
                             % (saves.saving, config['log_root'], guards.error_line(error), also,
                                last_checkpoint(config)))
    if cifar_input.is_bad_record_error(error):
        # The input pipeline's label check fails in a reader thread.
        return cifar_input.data_error(error)
    if not isinstance(error, (tf.errors.OpError, OSError)):
        return None
    at_step = '' if step is None else 'at step %d: ' % step
    return TrainingError('%s%s; the last checkpoint, %s, is kept'
                         % (at_step, guards.error_line(error), last_checkpoint(config)))


def _flush_summaries(config, checkpoint):
    """Writes out the event file of log_root (graph, checkpoint events); a TrainingError if it cannot be."""
    try:
        tf.compat.v1.summary.FileWriterCache.get(config['log_root']).flush()
    except Exception as e:  # the writer thread's error: IndexError, OSError or an OpError
        return TrainingError('%s; checkpoint %s saved; free space and run the same command to resume'
                             % (summaries.write_error_line(config['log_root'], e), checkpoint))
    return None


def last_checkpoint(config):
    """The newest checkpoint path in config['log_root'], or 'none yet'."""
    return checkpoints.latest(config['log_root']) or 'none yet'
