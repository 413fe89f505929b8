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

import cifar_input
import guards
import loss_scaling
import resnet_model
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
    """Writes the run's flags, HParams and settings as JSON, so results trace to settings."""
    os.makedirs(directory, exist_ok=True)
    record = {'hparams': hps._asdict(), 'config': config, 'flags': flag_values or {},
              'tensorflow': tf.__version__, 'time': time.strftime('%Y-%m-%d %H:%M:%S')}
    path = os.path.join(directory, 'config.json')
    with open(path, 'w') as f:
        json.dump(record, f, indent=2, sort_keys=True, default=str)
    return path


def write_scalars(directory, step, scalars):
    """Appends scalar summaries {tag: value} at `step` to the event file of `directory`."""
    with tf.Graph().as_default():  # FileWriter refuses to be created eagerly
        writer = tf.compat.v1.summary.FileWriterCache.get(directory)
    summary = tf.compat.v1.Summary(value=[
        tf.compat.v1.Summary.Value(tag=tag, simple_value=float(value)) for tag, value in scalars.items()])
    writer.add_summary(summary, step)
    writer.flush()


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
    session.run that would dequeue another batch.
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
        writer = tf.compat.v1.summary.FileWriterCache.get(self._summary_dir)
        writer.add_summary(r['summaries'], step)
        write_scalars(self._summary_dir, step, {'examples_per_sec': examples_per_sec,
                                                'global_step/sec': steps_per_sec})


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


def train(hps, config, flag_values=None):
    """Trains until config['train_steps'], resuming from config['log_root'].

    A new run (no checkpoint in log_root yet) with config['init_checkpoint']
    starts from that run's weights, all but the fully connected layer; with
    config['freeze_restored_layers'] only that layer trains.
    SIGTERM or SIGINT ends the run after the current step with a checkpoint of that
    step (run the same command to resume); a second signal exits at once.

    Raises:
      transfer.CheckpointError: the init checkpoint is missing or of another architecture.
      TrainingError: the loss became NaN or Inf, or a checkpoint could not be saved,
        or the session failed; the message names the step and the last checkpoint,
        which is kept.
      cifar_input.DataError: bad data files, found before the graph runs, or a bad
        record found by the reader threads.
    """
    with guards.StopSignals(first_message='%s: saving a checkpoint after this step, then stopping; '
                            'send it again to exit at once') as stop_signals:
        _train(hps, config, flag_values, stop_signals)


def _train(hps, config, flag_values, stop_signals):
    cifar_input.check_files(config['dataset'], config['train_data_path'])
    done = checkpoint_step(config['log_root'])
    if done is not None and done >= config['train_steps']:
        # Without this, MonitoredTrainingSession would run one more step before stopping.
        logging.info('nothing to train: the latest checkpoint in %s is at step %d, train_steps is %d',
                     config['log_root'], done, config['train_steps'])
        return
    os.makedirs(config['log_root'], exist_ok=True)
    write_config(config['train_dir'], hps, config, flag_values)
    with tf.Graph().as_default():
        model = build_train_graph(hps, config)
        num_params = resnet_model.count_params(tf.compat.v1.trainable_variables())
        logging.info('ResNet: %d trainable parameters, %.1f MFLOPs forward per image',
                     num_params, forward_flops_per_image(hps) / 1e6)
        scaffold = tf.compat.v1.train.Scaffold(
            saver=tf.compat.v1.train.Saver(max_to_keep=config['keep_checkpoint_max']),
            init_fn=transfer.warm_start_fn(model, config.get('init_checkpoint'), config['log_root']))
        saves = SaveTracker()
        stop_hook = StopOnSignalHook(model, stop_signals)
        run_error = None
        hooks = [
            tf.compat.v1.train.StopAtStepHook(last_step=config['train_steps']),
            LearningRateHook(model, config['lr_boundaries'], config['lr_values'], hps.min_lrn_rate),
            NanLossHook(model),
            ProgressHook(model, hps.batch_size, config['train_steps'], config['log_every_n_steps'],
                         config['train_dir']),
            stop_hook,
            # After the NaN check: MonitoredTrainingSession would put its own saver first.
            tf.compat.v1.train.CheckpointSaverHook(
                config['log_root'], save_secs=config.get('save_checkpoints_secs'),
                save_steps=config.get('save_checkpoints_steps'), scaffold=scaffold,
                listeners=[FiniteVariablesCheck(), saves]),
        ]
        if model.loss_scale is not None:
            hooks.insert(hooks.index(stop_hook), LossScaleHook(model))
        if staging.put_ops():
            hooks.append(staging.StagingHook(staging.put_ops()))
        try:
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
        except NanLossError as e:
            raise TrainingError('%s; the last good checkpoint, %s, is kept'
                                % (e, last_checkpoint(config))) from None
        except (TrainingError, cifar_input.DataError):
            raise
        except Exception as e:
            if saves.saving is not None:
                raise TrainingError('cannot save checkpoint %d in %s: %s; the last checkpoint, %s, is kept'
                                    % (saves.saving, config['log_root'], guards.error_line(e),
                                       last_checkpoint(config))) from e
            if cifar_input.is_bad_record_error(e):
                # The input pipeline's label check fails in a reader thread.
                raise cifar_input.data_error(e) from e
            if isinstance(e, (tf.errors.OpError, OSError)):
                at_step = '' if stop_hook.step is None else 'at step %d: ' % stop_hook.step
                raise TrainingError('%s%s; the last checkpoint, %s, is kept'
                                    % (at_step, guards.error_line(e), last_checkpoint(config))) from e
            raise
    if stop_hook.stopped_at is not None:
        logging.warning('stopped by %s at step %d; checkpoint %s saved; run the same command to resume',
                        stop_signals.signal_name, stop_hook.stopped_at, last_checkpoint(config))
        return
    logging.info('training done at step %d; checkpoints in %s', config['train_steps'], config['log_root'])


def checkpoint_step(log_root):
    """The global step of the newest checkpoint in log_root, or None (none, or unreadable)."""
    if not os.path.isdir(log_root):
        return None
    try:
        path = tf.train.latest_checkpoint(log_root)
        return None if path is None else int(tf.train.load_variable(path, 'global_step'))
    except (tf.errors.OpError, OSError, ValueError):
        return None


def last_checkpoint(config):
    """The newest checkpoint path in config['log_root'], or 'none yet'."""
    try:
        return tf.train.latest_checkpoint(config['log_root']) or 'none yet'
    except (tf.errors.OpError, OSError):
        return 'unknown (%s is unreadable)' % config['log_root']
