"""The training loop: input queue -> ResNet -> MonitoredTrainingSession.

`train(config)` takes one RunConfig (config.py). It resumes from the newest
checkpoint in config.log_root that restores, and, when training ends at
config.schedule.train_steps, scores the last checkpoint on the eval records.
"""
import contextlib
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
from resnet_cifar import distributed
from resnet_cifar import evaluation
from resnet_cifar import guards
from resnet_cifar import loss_scaling
from resnet_cifar import progress
from resnet_cifar import run_files
from resnet_cifar import staging
from resnet_cifar import summaries
from resnet_cifar import towers
from resnet_cifar import transfer
from resnet_cifar.errors import DataError, RunError


class TrainingError(RunError):
    """A run that cannot go on; the one-line message says why and what was kept."""


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


class _StepCountingHook(tf.compat.v1.train.SessionRunHook):
    """Knows the global step its process's train steps run at, read with each of them.

    Each run fetches model.step.step_value (the global step read by the train op itself,
    before its increment) beside the train op, so the count stays exact whether one
    trainer increments the global step or several workers of a cluster do; then the
    global step may jump between two runs of this process. After a run, `ran_at`
    is the step it ran at, `step` (= ran_at + 1) the step of the next one as far as
    this process knows, and `local_steps` the number of runs of this process.
    Subclasses add their own fetches with `fetches()` and read them in
    `run_values.results['own']` (absent when fetches() returned None).
    """

    def __init__(self, model):
        self._model = model
        self.step = self.ran_at = None
        self.local_steps = 0

    def fetches(self):
        """This hook's own fetches for the next run, or None."""
        return None

    def after_create_session(self, session, coord):
        self.step = int(session.run(self._model.step.global_step))

    def before_run(self, run_context):
        fetches = {'step': self._model.step.step_value}
        own = self.fetches()
        if own is not None:
            fetches['own'] = own
        return tf.compat.v1.train.SessionRunArgs(fetches)

    def after_run(self, run_context, run_values):
        self.ran_at = int(run_values.results['step'])
        self.step = self.ran_at + 1
        self.local_steps += 1


class NanLossError(Exception):
    def __init__(self, step, what='loss is'):
        super().__init__('%s NaN or Inf at step %d' % (what, step))
        self.step = step


class NanLossHook(_StepCountingHook):
    """Stops training when the loss stops being finite, naming the step.

    It must come before the checkpoint saver in the hook list, so that the weights
    of a diverged step are never saved.
    """

    def fetches(self):
        return self._model.cost

    def after_run(self, run_context, run_values):
        super().after_run(run_context, run_values)
        if not np.isfinite(run_values.results['own']):
            raise NanLossError(self.ran_at)


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
        self._fetches = [model.step.loss_scale.scale, model.step.loss_scale.skipped_in_a_row]
        self._max_skipped = max_skipped

    def after_run(self, run_context, run_values):
        super().after_run(run_context, run_values)
        # Read after the step: fetched with it, the values could predate its update.
        scale, skipped = run_context.session.run(self._fetches)
        if skipped >= self._max_skipped and scale <= loss_scaling.MIN_SCALE:
            raise StuckLossScaleError(self.ran_at, int(skipped))


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


class MonotonicTimer(object):
    """tf.compat.v1.train.SecondOrStepTimer's interface on time.monotonic(): a wall clock set back
    (by NTP or by hand) neither stops nor hurries saves. TensorFlow's timer reads time.time(): set
    back an hour, it saved nothing for an hour.

    Triggers at the first step, then once every_secs seconds or every_steps steps have passed.
    """

    def __init__(self, every_secs=None, every_steps=None):
        if (every_secs is None) == (every_steps is None):
            raise ValueError('give one of every_secs and every_steps')
        self._every_secs, self._every_steps = every_secs, every_steps
        self.reset()

    def reset(self):
        self._last_step = self._last_time = None

    def should_trigger_for_step(self, step):
        if self._last_step is None:
            return True
        if step == self._last_step:
            return False
        if self._every_secs is not None:
            now = time.monotonic()
            if now < self._last_time:  # only a faked clock goes back (libfaketime fakes this one too)
                self._last_time = now
            return now >= self._last_time + self._every_secs
        return step >= self._last_step + self._every_steps

    def update_last_triggered_step(self, step):
        """Records a trigger at `step`; returns (seconds, steps) since the last one, or (None, None)."""
        now = time.monotonic()
        elapsed = (None, None) if self._last_step is None else (now - self._last_time, step - self._last_step)
        self._last_time, self._last_step = now, step
        return elapsed

    def last_triggered_step(self):
        return self._last_step


class CheckpointSaverHook(tf.compat.v1.train.CheckpointSaverHook):
    """TensorFlow's CheckpointSaverHook with its timer on the monotonic clock (MonotonicTimer)."""

    def __init__(self, checkpoint_dir, save_secs=None, save_steps=None, **kwargs):
        super().__init__(checkpoint_dir, save_secs=save_secs, save_steps=save_steps, **kwargs)
        self._timer = MonotonicTimer(every_secs=save_secs, every_steps=save_steps)  # replaces TensorFlow's


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
        logging.info('saved checkpoint %d', self.last_saved)


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
                         'lrn_rate': model.step.effective_lrn_rate, 'summaries': model.summaries}
        self._batch_size = batch_size
        self._train_steps = train_steps
        self._every_n = every_n_steps
        self._summary_dir = summary_dir
        self._window_start = None
        self._last_logged = None
        self._writer = None
        self.write_error = None

    def after_create_session(self, session, coord):
        super().after_create_session(session, coord)
        self._window_start = (time.monotonic(), self.step, self.local_steps)
        self._last_logged = self.step

    def fetches(self):
        # The first run that may end at or past the next multiple of N (every N-th step
        # with one trainer; a cluster's other workers may also move the global step on).
        if (self.step + 1) // self._every_n > self._last_logged // self._every_n:
            return self._fetches
        return None

    def after_run(self, run_context, run_values):
        super().after_run(run_context, run_values)
        r = run_values.results.get('own')
        if r is None:
            return
        now, step, local_steps = time.monotonic(), self.step, self.local_steps
        self._last_logged = step
        start_time, start_step, start_local = self._window_start
        self._window_start = (now, step, local_steps)
        elapsed = max(now - start_time, 1e-9)
        steps_per_sec = (step - start_step) / elapsed  # global steps, of every worker
        examples_per_sec = (local_steps - start_local) / elapsed * self._batch_size  # this process's
        eta_secs = (self._train_steps - step) / max(steps_per_sec, 1e-9)
        logging.info('step %d/%d (%.1f%%): loss %.4f, precision %.4f, lr %g, %.1f examples/sec, ETA %s',
                     step, self._train_steps, 100.0 * step / self._train_steps, r['cost'],
                     r['precision'], r['lrn_rate'], examples_per_sec, progress.format_duration(eta_secs))
        if self.write_error is not None or self._summary_dir is None:
            return
        try:
            self._writer = tf.compat.v1.summary.FileWriterCache.get(self._summary_dir)
            self._writer.add_summary(r['summaries'], step)
            summaries.write_scalars(self._summary_dir, step, {'examples_per_sec': examples_per_sec,
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


def build_train_graph(config, build_train_op=None):
    """Input queue on the CPU, the ResNet on config.devices.device. Returns the model.

    With config.devices.stage_input, each batch is staged onto the device a step
    ahead (staging.py); _hooks then adds the StagingHook. With config.num_towers
    > 1, the towers of towers.py instead: a TowerModel. build_train_op: see
    train_step.TrainStep.make_train_op (distributed.SyncReplicas's for synchronous replicas).
    """
    if config.random_seed is not None:
        tf.compat.v1.set_random_seed(config.random_seed)
    hps = config.hparams()
    if config.num_towers > 1:
        model = towers.build_train_towers(hps, config, build_train_op)
    else:
        model = _build_one_device(hps, config, build_train_op)
    if config.checkpoints.summary_histograms:
        model.summaries = summaries.add_histograms(model)
    return model


def _build_one_device(hps, config, build_train_op=None):
    device = config.devices.device
    with tf.compat.v1.device('/cpu:0'):
        images, labels = cifar_input.build_input(
            config.data.dataset, config.data.train_data_path, hps.batch_size, 'train',
            num_threads=config.data.num_input_threads, label_mode=config.data.label_mode,
            seed=config.input_seed, validation_size=config.data.validation_size,
            cutout_size=config.schedule.cutout_size)
        if config.devices.stage_input:
            images, labels = staging.stage(images, labels, device)
        summaries.add_input_images(images)
    with tf.compat.v1.device(device):
        model = resnet_model.ResNet(hps, images, labels, 'train')
        # Frozen: every layer but the new fully connected one keeps its restored weights.
        model.build_graph(is_frozen=(lambda v: not transfer.is_new_layer(v))
                          if config.transfer.freeze_restored_layers else None, build_train_op=build_train_op)
    return model


def train(config):
    """Trains until config.schedule.train_steps, resuming from config.log_root.

    Only one trainer works on a run: a second one is refused (guards.LockedError).
    It resumes from the newest checkpoint of log_root that restores (see
    checkpoints.prepare_resume) and writes the run's settings (run_files.write). A
    new run (no checkpoint in log_root yet) with config.transfer.init_checkpoint
    starts from that run's weights, all but the fully connected layer; with
    freeze_restored_layers only that layer trains.
    SIGTERM or SIGINT ends the run after the current step with a checkpoint of that
    step (run the same command to resume); a second signal exits at once. So does
    a summary that cannot be written or a training file that changes, with an error.
    A run that reaches train_steps here ends with the held-out precision of its
    last checkpoint (config.eval.after_training).

    Raises:
      guards.LockedError: another trainer works on log_root.
      errors.CheckpointError: log_root has checkpoints, but none restores; the
        init checkpoint is missing or of another architecture, or the checkpoint
        to resume from is of another one.
      TrainingError: the loss became NaN or Inf, or a checkpoint or summary could
        not be saved, or the session failed; the message names the step and the
        last checkpoint, which is kept.
      errors.DataError: bad data files, found before the graph runs, or a bad
        record found by the reader threads, or a file that changed during training.
    """
    data_files = cifar_input.check_files(config.data.dataset, config.data.train_data_path)
    _log_choices(config, data_files)
    cluster = config.cluster
    server = None
    if cluster.is_distributed:
        server = distributed.start_server(cluster, devices.num_cpu_devices(config))
        distributed.wait_for_ps_tasks(cluster)
    if not cluster.is_chief:
        # Another worker of a cluster: the chief restores, saves and writes log_root.
        with _stop_signals() as stop_signals:
            finished = _train_with_signals(config, None, data_files, server, stop_signals)
    else:
        log_root = config.log_root
        _refuse_to_start_over_beside_best(log_root)
        # From before the first write: a signal from here on stops the run with a checkpoint (before,
        # it ends the process with nothing written).
        with _stop_signals() as stop_signals:
            os.makedirs(log_root, exist_ok=True)
            with guards.RunLock(os.path.join(log_root, run_files.LOCK_FILE), 'trainer', '--log_root=%s' % log_root):
                _refuse_to_start_over_beside_best(log_root)
                finished = _resume_or_start(config, data_files, server, stop_signals)
    if server is not None and finished is not False:
        distributed.signal_done(cluster, server.target)
    if finished and cluster.is_chief and config.eval.after_training:
        evaluation.score_after_training(config)


def _resume_or_start(config, data_files, server, stop_signals):
    """The chief's training, holding the run's lock: from the newest checkpoint of log_root that
    restores, or a new run; _train's result, or None when that checkpoint is at train_steps already."""
    resume_from = checkpoints.prepare_resume(config.log_root)
    if resume_from is not None:
        run_files.check_pinned_split(config, data_files)
    done = None if resume_from is None else int(tf.train.load_variable(resume_from, 'global_step'))
    if done is not None:
        logging.info('resuming from %s at step %d', resume_from, done)
    if done is not None and done >= config.schedule.train_steps:
        # Without this, MonitoredTrainingSession would run one more step before stopping.
        logging.info('nothing to train: the latest checkpoint in %s is at step %d, train_steps is %d',
                     config.log_root, done, config.schedule.train_steps)
        return None
    return _train_with_signals(config, resume_from, data_files, server, stop_signals,
                               _identity_of_the_run(config.log_root, done))


def _stop_signals():
    """guards.StopSignals for training: the first SIGTERM or SIGINT stops it after the current step."""
    return guards.StopSignals(first_message='%s: saving a checkpoint after this step, then stopping; '
                              'send it again to exit at once')


def _train_with_signals(config, resume_from, data_files, server, stop_signals, identity=None):
    """_train, stopping after the current step once `stop_signals` saw SIGTERM or SIGINT; in a
    cluster, at once with one line when a ps task is gone (distributed.PsWatch). identity: the
    chief's (run id, from step) for config.json (_identity_of_the_run)."""
    with _ps_watch(config, stop_signals, server), summaries.writer_errors_reported_once():
        return _train(config, resume_from, data_files, stop_signals, server, identity)


def _ps_watch(config, stop_signals, server):
    """A worker's distributed.PsWatch (the chief's names its last checkpoint); nothing on one machine."""
    if server is None:
        return contextlib.nullcontext()
    if not config.cluster.is_chief:
        return distributed.PsWatch(config.cluster, stop_signals)
    return distributed.PsWatch(config.cluster, stop_signals,
                               lambda: 'the last checkpoint, %s, is kept' % last_checkpoint(config))


class StartOverError(RunError):
    """A new run in a directory that holds an earlier run's best checkpoint; says how to go on."""


def _refuse_to_start_over_beside_best(log_root):
    """StartOverError when log_root has no checkpoint to resume from but holds the best checkpoint
    eval kept of an earlier run: a new run there would be scored beside that run's figures."""
    kept = best.path(log_root)
    if kept is None or checkpoints.latest(log_root) is not None:
        return
    raise StartOverError('%s has no checkpoint to resume from, but holds the best checkpoint of an earlier '
                         'run (step %s, in %s): to start over, move %s away or give another --log_root; to '
                         'resume that run, put the checkpoints back'
                         % (log_root, checkpoints.step_of(kept), best.directory(log_root), log_root))


def _identity_of_the_run(log_root, resumed_at):
    """(run id, the step it holds from) for config.json: a new run's is new; a resumed run keeps its
    own, and a run of an older version, which has none, gets one from the step it resumes at."""
    if resumed_at is None:
        return run_files.new_run_id(), 0
    run_id, from_step = run_files.identity(log_root)
    return (run_id, from_step) if run_id else (run_files.new_run_id(), resumed_at)


def _split_record(config, data_files):
    """The record of this run's validation split for its config.json, or None (no split)."""
    if not config.data.validation_size:
        return None
    return cifar_input.split_record(config.data.dataset, data_files, config.data.validation_size)


def _check_split_of_the_run(config, data_files):
    """A non-chief worker, once the chief wrote the run's settings: SettingsError when they hold out
    another number of training records than this worker would (it resolved its flags before the
    settings existed, and would train on records the run validates on). Nothing to check where
    this worker does not see log_root."""
    _wait_for_the_chief_s_settings(config)
    try:
        saved, path = run_files.read(config.log_root)
    except run_files.SettingsError:
        return  # the chief is the one that reports a damaged settings file
    held_out = (saved or {}).get('validation_size', config.data.validation_size)
    if held_out != config.data.validation_size:
        run_split = ('holds out the last %d training records for validation' % held_out if held_out
                     else 'holds out no training records')
        raise run_files.SettingsError('%s: the run %s (%s), this worker %s; give every worker --validation_size=%d'
                                      % (config.cluster.task_name(), run_split, path,
                                         config.data.validation_size or 'none', held_out))
    run_files.check_pinned_split(config, data_files)


def _wait_for_the_chief_s_settings(config, poll_secs=0.1):
    """A non-chief worker, once the variables are initialized: the chief writes config.json just
    after (_SettingsHook); waits for it up to cluster.timeout_secs while log_root's lock names a
    holder. No wait where this worker does not see the chief's log_root."""
    lock = os.path.join(config.log_root, run_files.LOCK_FILE)
    deadline = time.monotonic() + config.cluster.timeout_secs
    while not os.path.exists(run_files.path(config.log_root)) and time.monotonic() < deadline:
        try:
            if not os.path.getsize(lock):
                return  # emptied by a clean exit: no chief holds the run
        except OSError:
            return
        time.sleep(poll_secs)


def _log_choices(config, data_files):
    """The first lines: the compute dtype auto chose, and the records held out for validation."""
    if config.compute_dtype_choice:
        logging.info('compute dtype %s (%s)', config.model.compute_dtype, config.compute_dtype_choice)
    if config.data.validation_size:
        logging.info('training on %d records of %s; the last %d are held out for validation',
                     sum(n for _, n in data_files) - config.data.validation_size, config.data.train_data_path,
                     config.data.validation_size)


def _write_settings(config, hps, resume_from, identity, data_files):
    """The run's settings file (with identity, (run id, from step), and the record of its validation
    split), this start's record, and a log line for each change of the recipe."""
    run_files.write(config, *identity, split=_split_record(config, data_files))
    run_files.write_record(config.train_dir, config, hps)
    for change in config.changes_to_run if resume_from is not None else ():
        logging.warning('from step %d: %s', int(tf.train.load_variable(resume_from, 'global_step')), change)
    logging.info('learning rate: %s', config.schedule.describe())


class _SettingsHook(tf.compat.v1.train.SessionRunHook):
    """The chief's: writes the run's settings (`write`, once) when the session exists, its
    checkpoint or --init_checkpoint restored, so a start that fails leaves config.json as it was.
    It must come first: the checkpoint saver saves the start's step when the session is created."""

    def __init__(self, write):
        self._write = write
        self._written = False

    def after_create_session(self, session, coord):
        if self._written:
            return  # a session created again after a lost connection: written already
        try:
            self._write()
        except BaseException:
            coord.request_stop()  # the reader threads are running already
            raise
        self._written = True


class _StopCauses(object):
    """The hooks that can end a run early, and the one-line message of why it ended."""

    def __init__(self, model, config, data_files, stop_signals):
        self.signal = StopOnSignalHook(model, stop_signals)
        # In a cluster only the chief writes summaries; the other workers log their progress.
        self.summaries = ProgressHook(model, config.schedule.batch_size, config.schedule.train_steps,
                                      config.checkpoints.log_every_n_steps,
                                      config.train_dir if config.cluster.is_chief else None)
        self.data = DataFilesHook(config.data.dataset, data_files)

    def error_after_saving(self, checkpoint):
        """The error to raise once the session ended normally, or None."""
        if self.data.error is not None:
            return DataError('%s; checkpoint %s saved' % (self.data.error, checkpoint))
        if self.summaries.write_error is not None:
            return TrainingError('%s; checkpoint %s saved; free space and run the same command to resume'
                                 % (self.summaries.write_error, checkpoint))
        return None


def _train(config, resume_from, data_files, stop_signals, server=None, identity=None):
    """Builds the graph and runs the session; True when training reached train_steps.

    server: this worker's tf.compat.v1.train.Server in a cluster, else None. identity: the
    chief's (run id, the step it holds from), written to config.json once the start succeeded.
    """
    cluster = config.cluster
    with tf.Graph().as_default():
        sync = distributed.SyncReplicas(cluster.num_workers) if cluster.sync_replicas else None
        placement = distributed.device_function(cluster) if server else None
        with tf.compat.v1.device(placement) if placement else contextlib.nullcontext():
            model = build_train_graph(config, sync.build_train_op if sync else None)
        hps = model.hps
        logging.info('ResNet: %d trainable parameters, %.1f MFLOPs forward per image',
                     resnet_model.count_params(tf.compat.v1.trainable_variables()),
                     forward_flops_per_image(hps) / 1e6)
        if server:
            _log_placement(cluster)
        if resume_from is not None:
            # Before the settings are written: a run without them has only its checkpoint to say
            # what network it is.
            transfer.check_resumable(resume_from, tf.compat.v1.global_variables())
        if cluster.is_chief:
            scaffold = tf.compat.v1.train.Scaffold(
                saver=tf.compat.v1.train.Saver(max_to_keep=config.checkpoints.keep_max,
                                               save_relative_paths=True),
                init_fn=transfer.warm_start_fn(model, config.transfer.init_checkpoint, resume_from))
            first_hooks = [_SettingsHook(lambda: _write_settings(
                config, hps, resume_from, identity or (run_files.new_run_id(), 0), data_files))]
        else:
            scaffold, first_hooks = tf.compat.v1.train.Scaffold(), []
            step = distributed.wait_for_chief(cluster, server.target, _session_config(config))
            _check_split_of_the_run(config, data_files)
            if step >= config.schedule.train_steps:
                logging.info('nothing to train: the global step is %d, train_steps is %d',
                             step, config.schedule.train_steps)
                return True
        saves = SaveTracker()
        causes = _StopCauses(model, config, data_files, stop_signals)
        extra_hooks = sync.hooks(cluster.is_chief) if sync else []
        _run_and_explain(model, config, scaffold, saves, causes, server, extra_hooks, first_hooks)
    if server:
        logging.info('%s ran %d train steps', cluster.task_name(), causes.summaries.local_steps)
    if causes.signal.stopped_at is not None:
        logging.warning('stopped by %s at step %d; checkpoint %s saved; run the same command to resume',
                        stop_signals.signal_name, causes.signal.stopped_at, last_checkpoint(config))
        return False
    logging.info('training done at step %d; checkpoints in %s', config.schedule.train_steps, config.log_root)
    return True


def _log_placement(cluster):
    """One log line: how many variables each ps task holds."""
    placement = distributed.variable_placement(tf.compat.v1.global_variables())
    logging.info('%s: variables on the ps tasks: %s', cluster.task_name(),
                 ', '.join('%s: %d' % (device, count) for device, count in sorted(placement.items())))


def _session_config(config):
    """The session config: soft placement, CPU devices for towers; in a cluster, its device filters."""
    if config.cluster.is_distributed:
        return distributed.session_config(config.cluster, devices.num_cpu_devices(config))
    return devices.session_config(devices.num_cpu_devices(config))


def _run_and_explain(model, config, scaffold, saves, causes, server=None, extra_hooks=(), first_hooks=()):
    """Runs the session; every way it can fail comes out as one error (TrainingError, DataError).
    first_hooks run before those of _hooks, extra_hooks after them."""
    try:
        hooks = list(first_hooks) + _hooks(model, config, scaffold, saves, causes) + list(extra_hooks)
        _run_session(model, config, scaffold, hooks, server)
    except NanLossError as e:
        raise TrainingError('%s; the last good checkpoint, %s, is kept'
                            % (e, last_checkpoint(config))) from None
    except (TrainingError, DataError):
        raise
    except Exception as e:
        error = session_error(e, config, saves, causes.summaries.write_error, causes.signal.step)
        if error is None:
            raise
        raise error from e
    error = causes.error_after_saving(last_checkpoint(config))
    if error is None and config.cluster.is_chief:
        error = _flush_summaries(config, last_checkpoint(config))
    if error is not None:
        raise error


def _hooks(model, config, scaffold, saves, causes):
    """The session's hooks, in the order they must run; in a cluster only the chief saves."""
    hooks = [
        tf.compat.v1.train.StopAtStepHook(last_step=config.schedule.train_steps),
        NanLossHook(model),
        causes.summaries,
        causes.data,
        causes.signal,
    ]
    if config.cluster.is_chief:
        # After the NaN check: MonitoredTrainingSession would put its own saver first.
        hooks.append(CheckpointSaverHook(
            config.log_root, save_secs=config.checkpoints.save_secs,
            save_steps=config.checkpoints.save_steps, scaffold=scaffold,
            listeners=[FiniteVariablesCheck(), saves]))
    if model.step.loss_scale is not None:
        hooks.insert(hooks.index(causes.signal), LossScaleHook(model))
    if staging.put_ops():
        hooks.append(staging.StagingHook(staging.put_ops()))
    return hooks


def _run_session(model, config, scaffold, hooks, server=None):
    """Runs train steps until a hook stops the session; in a cluster, on `server` (is_chief: worker 0)."""
    run_error = None
    cluster = config.cluster
    with tf.compat.v1.train.MonitoredTrainingSession(
            master=server.target if server else '', is_chief=cluster.is_chief,
            checkpoint_dir=config.log_root if cluster.is_chief else None, scaffold=scaffold, hooks=hooks,
            save_checkpoint_secs=None, save_checkpoint_steps=None,
            # ProgressHook writes the summaries, at the same steps as its log line.
            save_summaries_steps=None, save_summaries_secs=None, log_step_count_steps=None,
            max_wait_secs=cluster.timeout_secs, config=_session_config(config)) as session:
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


def session_error(error, config, saves, summary_error=None, step=None):
    """The one-line error (TrainingError or DataError) of an exception out of the session, or
    None for one to raise as it is (a CheckpointError of --init_checkpoint, a bug).

    saves: the SaveTracker; summary_error: the one line of a summary write that failed
    before, or None; step: the global step of the next train step, or None.
    """
    if saves.saving is not None and summaries.EVENT_FILE_MARK in guards.error_line(error):
        # The saver writes a checkpoint event to log_root's event file after the checkpoint.
        latest = checkpoints.latest(config.log_root)
        kept = ('checkpoint %s saved' % latest if latest and checkpoints.step_of(latest) == saves.saving
                else 'the last checkpoint, %s, is kept' % (latest or 'none yet'))
        return TrainingError('%s; %s; free space and run the same command to resume'
                             % (summaries.write_error_line(config.log_root, error), kept))
    if saves.saving is not None:
        also = '' if summary_error is None else ' (after: %s)' % summary_error
        return TrainingError('cannot save checkpoint %d in %s: %s%s; the last checkpoint, %s, is kept'
                             % (saves.saving, config.log_root, guards.error_line(error), also,
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
        tf.compat.v1.summary.FileWriterCache.get(config.log_root).flush()
    except Exception as e:  # the writer thread's error: IndexError, OSError or an OpError
        return TrainingError('%s; checkpoint %s saved; free space and run the same command to resume'
                             % (summaries.write_error_line(config.log_root, e), checkpoint))
    return None


def last_checkpoint(config):
    """The newest checkpoint path in config.log_root, or 'none yet'."""
    return checkpoints.latest(config.log_root) or 'none yet'
