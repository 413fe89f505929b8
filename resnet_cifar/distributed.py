"""Parameter-server training on TensorFlow's own distributed runtime (docs/distributed.md).

A cluster (cluster.Cluster) has ps tasks, which hold the variables, and workers,
which each read their own input and run the training graph; worker 0 is the chief.
Each task runs a tf.compat.v1.train.Server. Workers build the graph under
`device_function`: replica_device_setter spreads the variables over the ps tasks
(greedily by size), every other op stays on the worker. training.py runs the
session with MonitoredTrainingSession(master=server.target, is_chief=...).

Asynchronous by default: every worker step applies its own gradient and adds one
to the global step. `SyncReplicas` instead aggregates one gradient per worker
into each update (SyncReplicasOptimizer); the chief's queue runner applies it,
adds one to the global step, moves the batch-norm statistics once toward the mean
of the workers' batch moments, and updates the moving averages.

A ps task serves until the chief says training is done: each worker that reaches
the last step puts its index into a "done" queue on every ps task
(`signal_done`); `run_ps` returns once the chief's index is there and every other
worker's too, or --cluster_timeout_secs after the chief's (a worker that was
killed never says it).

TensorFlow's server listens on every interface of its machine whatever host the
cluster spec names (grpc_server_lib.cc binds "0.0.0.0:<port>"), and anyone who
reaches the port can run ops in the task: `start_server` says so in one line.

A worker's ps tasks are watched while it trains (`PsWatch`): one that takes no
connection for --cluster_timeout_secs, or at a stop signal, ends the worker with
one line naming its address; TensorFlow would wait for it forever.
"""
import os
import threading
import time

import tensorflow as tf
from absl import logging

from resnet_cifar import devices
from resnet_cifar import guards
from resnet_cifar.cluster import ClusterError, unreachable, wait_for_address
from resnet_cifar.errors import Error

# The queue on each ps task that workers put their index into when they are done.
DONE_QUEUE = 'training_done'
_DONE_CAPACITY = 1000


def cluster_spec(cluster):
    """The tf.train.ClusterSpec of a cluster.Cluster: jobs 'ps' and 'worker'."""
    return tf.train.ClusterSpec({'ps': list(cluster.ps_hosts), 'worker': list(cluster.worker_hosts)})


def start_server(cluster, num_cpu_devices=1):
    """This task's started tf.compat.v1.train.Server; ClusterError naming the address if it cannot start.

    num_cpu_devices: logical CPU devices of this task (towers on the CPU).
    """
    try:
        server = tf.compat.v1.train.Server(cluster_spec(cluster), job_name=cluster.job_name,
                                           task_index=cluster.task_index,
                                           config=devices.session_config(num_cpu_devices), start=True)
    except (tf.errors.OpError, ValueError) as e:
        raise ClusterError('%s: cannot serve at %s: %s' % (cluster.task_name(), cluster.address(),
                                                           guards.error_line(e))) from None
    logging.info('%s serving at %s (%s)', cluster.task_name(), cluster.address(), server.target)
    logging.warning(listening_warning(cluster))
    return server


def listening_warning(cluster):
    """The one line a task logs once it listens: on every interface, open to whoever reaches it."""
    port = cluster.address().rpartition(':')[2]
    return ('%s listens on all interfaces, port %s: anyone who can reach it can run TensorFlow ops as this '
            'user (read and write files); keep the cluster on a private network or behind a firewall that '
            'admits only the cluster\'s hosts' % (cluster.task_name(), port))


def session_config(cluster, num_cpu_devices=1):
    """A worker's session config: soft placement, only the ps tasks and itself to talk to, and
    cluster.timeout_secs as TensorFlow's operation timeout (a step waiting on a ps task that died
    waits on regardless: PsWatch ends it)."""
    config = devices.session_config(num_cpu_devices)
    config.device_filters.extend(['/job:ps', '/job:worker/task:%d' % cluster.task_index])
    config.operation_timeout_in_ms = cluster.timeout_secs * 1000
    return config


def device_function(cluster):
    """The device function of a worker's graph: variables round the ps tasks (greedily by
    byte size, on their CPU), every other op on this worker (its device as given, e.g. /cpu:1)."""
    setter = tf.compat.v1.train.replica_device_setter(
        cluster=cluster_spec(cluster), worker_device='/job:worker/task:%d' % cluster.task_index,
        ps_strategy=_LeastLoadedTask(len(cluster.ps_hosts)))

    def place(op):
        spec = tf.DeviceSpec.from_string(setter(op))
        if spec.job == 'ps':
            spec = spec.replace(device_type='CPU', device_index=0)
        return spec.to_string()
    return place


class _LeastLoadedTask(object):
    """A ps strategy: each new variable goes to the ps task holding the fewest bytes so far."""

    def __init__(self, num_tasks):
        self._loads = [0] * num_tasks

    def __call__(self, op):
        task = self._loads.index(min(self._loads))
        try:
            shape = tf.TensorShape(op.get_attr('shape'))
            size = (shape.num_elements() or 1) * tf.as_dtype(op.get_attr('dtype')).size
        except ValueError:  # an op without a shape (a queue, a table)
            size = 1
        self._loads[task] += size
        return task


def variable_placement(variables):
    """{device: number of variables} of `variables`, e.g. {'/job:ps/task:0/device:CPU:0': 40}."""
    counts = {}
    for v in variables:
        counts[v.device] = counts.get(v.device, 0) + 1
    return counts


def wait_for_ps_tasks(cluster):
    """Returns once every ps task takes connections; ClusterError naming the first that did not
    within cluster.timeout_secs."""
    deadline = time.monotonic() + cluster.timeout_secs
    for index in range(len(cluster.ps_hosts)):
        wait_for_address(cluster, 'ps', index, deadline)


def wait_for_chief(cluster, target, config):
    """A non-chief worker's wait for the chief to initialize (or restore) the variables, in the
    default graph; returns the global step then. ClusterError naming the chief after
    cluster.timeout_secs."""
    uninitialized = tf.compat.v1.report_uninitialized_variables(tf.compat.v1.global_variables())
    global_step = tf.compat.v1.train.get_global_step()
    deadline = time.monotonic() + cluster.timeout_secs
    logging.info('%s: waiting for the chief (worker 0 at %s) to initialize the variables',
                 cluster.task_name(), cluster.address('worker', 0))
    with tf.compat.v1.Session(target, config=config) as session:
        while len(session.run(uninitialized)):
            if time.monotonic() >= deadline:
                raise ClusterError('%s: the chief, worker 0 at %s, did not initialize the variables within %d '
                                   'seconds (--cluster_timeout_secs); start it, or %s'
                                   % (cluster.task_name(), cluster.address('worker', 0), cluster.timeout_secs,
                                      cluster.hosts_hint('worker')))
            time.sleep(0.2)
        return int(session.run(global_step))


class PsWatch(object):
    """Context manager: while it is active, a thread ends this worker when a ps task is gone.

    A training step whose ps task died waits for it forever inside TensorFlow, past every
    timeout TensorFlow offers (TF 2.21: ConfigProto.operation_timeout_in_ms and
    RunOptions.timeout_in_ms both let the step wait on), and a stop signal only asks for the end
    of that step. So every PROBE_SECS the thread tries a TCP connection to each ps task; when
    one took none for cluster.timeout_secs, or took none twice in a row once a stop signal
    (stop_signals.requested) is seen, the process prints one `error:` line naming the task and
    its address and exits with status 1 (errors.RunError's) at once: the main thread is blocked
    in TensorFlow and cannot be unwound. A ps task that is back in time (restarted on its
    address) is forgotten. `kept()` says what survives, e.g. the chief's last checkpoint.
    """
    PROBE_SECS = 1.0

    def __init__(self, cluster, stop_signals, kept=lambda: ''):
        self._cluster = cluster
        self._stop_signals = stop_signals
        self._kept = kept
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name='ps-watch', daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, traceback):
        """Ends the thread; an error out of the block while a ps task takes no connection becomes
        the ClusterError naming it (TensorFlow's own timeout sometimes ends the step first)."""
        self._done.set()
        self._thread.join(5)
        if not isinstance(exc, Exception):
            return False
        # TrainingError's message says what is kept, as _line does: the session's own error instead.
        cause = exc.__cause__ if isinstance(exc, Error) and exc.__cause__ is not None else exc
        for index, address in enumerate(self._cluster.ps_hosts):
            reason = unreachable(address)
            if reason is not None:
                raise ClusterError(self._line('%s: ps %d at %s takes no connection (%s), and the step waiting on '
                                              'it ended: %s; stopping' % (self._cluster.task_name(), index, address,
                                                                          reason, guards.error_line(cause)))) from exc
        return False

    def _watch(self):
        down = {}
        while not self._done.wait(self.PROBE_SECS):
            message = self.probe(down)
            if message is not None and not self._done.is_set():
                self._exit(message)

    def probe(self, down):
        """One connection attempt to each ps task; the reason to end this worker, or None.
        `down` maps the index of a ps task that took none to (the time.monotonic() since when,
        the attempts it missed in a row); updated. After a stop signal two missed attempts in a
        row end the worker: one can miss its 1 s on a loaded machine (a lost SYN is sent again
        after 1 s), and a healthy chief would exit without its checkpoint."""
        for index, address in enumerate(self._cluster.ps_hosts):
            reason = unreachable(address)
            if reason is None:
                down.pop(index, None)
                continue
            since, missed = down.get(index, (time.monotonic(), 0))
            down[index] = since, missed + 1
            if self._stop_signals.requested and missed + 1 >= 2:
                return ('%s: %s, and ps %d at %s takes no connection (%s): stopping now, without a '
                        'checkpoint of this step' % (self._cluster.task_name(), self._stop_signals.signal_name,
                                                     index, address, reason))
            if time.monotonic() - since >= self._cluster.timeout_secs:
                return ('%s: ps %d at %s took no connection for %d seconds (--cluster_timeout_secs): %s; '
                        'stopping' % (self._cluster.task_name(), index, address, self._cluster.timeout_secs,
                                      reason))
        return None

    def _line(self, message):
        kept = self._kept()
        return '%s%s; restart the ps task, then the workers' % (message, '; ' + kept if kept else '')

    def _exit(self, message):
        os.write(2, ('error: %s\n' % self._line(message)).encode())
        os._exit(ClusterError.exit_status)


def _done_queue(ps_index):
    """The "done" queue on ps task `ps_index`, as every task declares it (one shared queue per ps task)."""
    with tf.compat.v1.device('/job:ps/task:%d/device:CPU:0' % ps_index):
        return tf.queue.FIFOQueue(_DONE_CAPACITY, tf.int32, shapes=[], shared_name=DONE_QUEUE,
                                  name='%s_%d' % (DONE_QUEUE, ps_index))


def signal_done(cluster, target):
    """A worker's word to every ps task that it reached the last step (its index into their done queues)."""
    deadline = time.monotonic() + min(cluster.timeout_secs, 10)
    reachable = []
    for index in range(len(cluster.ps_hosts)):
        try:
            wait_for_address(cluster, 'ps', index, deadline)
            reachable.append(index)
        except ClusterError as e:
            logging.warning('%s; it was not told that training is done', e)
    if not reachable:
        return
    with tf.Graph().as_default():
        enqueues = [_done_queue(index).enqueue(cluster.task_index) for index in reachable]
        config = tf.compat.v1.ConfigProto(device_filters=['/job:ps', '/job:worker/task:%d' % cluster.task_index])
        try:
            with tf.compat.v1.Session(target, config=config) as session:
                session.run(enqueues, options=tf.compat.v1.RunOptions(timeout_in_ms=10000))
        except tf.errors.OpError as e:
            logging.warning('%s: could not tell the ps tasks that training is done: %s',
                            cluster.task_name(), guards.error_line(e))
            return
    logging.info('%s: told %d ps task(s) that training is done', cluster.task_name(), len(reachable))


def run_ps(config):
    """A ps task: serves the variables until the chief (and every other worker, or
    --cluster_timeout_secs after the chief) says training is done."""
    cluster = config.cluster
    server = start_server(cluster)
    logging.info('%s: serving the variables of %d worker(s) until the chief says training is done',
                 cluster.task_name(), cluster.num_workers)
    with tf.Graph().as_default():
        dequeue = _done_queue(cluster.task_index).dequeue()
        session_config = tf.compat.v1.ConfigProto(device_filters=['/job:ps/task:%d' % cluster.task_index])
        with tf.compat.v1.Session(server.target, config=session_config) as session:
            _wait_for_done(session, dequeue, cluster)


def _wait_for_done(session, dequeue, cluster):
    done, chief_done_at = set(), None
    while True:
        try:  # a second at a time, so that SIGINT is seen
            done.add(int(session.run(dequeue, options=tf.compat.v1.RunOptions(timeout_in_ms=1000))))
        except tf.errors.DeadlineExceededError:
            pass
        if chief_done_at is None and 0 in done:
            chief_done_at = time.monotonic()
            logging.info('%s: the chief says training is done', cluster.task_name())
        if len(done) == cluster.num_workers:
            logging.info('%s: every worker is done; exiting', cluster.task_name())
            return
        if chief_done_at is not None and time.monotonic() - chief_done_at > cluster.timeout_secs:
            missing = sorted(set(range(cluster.num_workers)) - done)
            logging.warning('%s: no word from worker(s) %s %d seconds after the chief was done; exiting',
                            cluster.task_name(), ','.join(map(str, missing)), cluster.timeout_secs)
            return


class _SyncStepOptimizer(object):
    """The optimizer the chief's update of SyncReplicasOptimizer runs: the model's own
    optimizer on the trainable variables, and one move of each batch-norm moving statistic
    toward its aggregated "gradient", which is the mean over workers of its batch value.
    step: the train_step.TrainStep of this worker's graph."""

    def __init__(self, step, moving):
        self._step = step
        self._optimizer = step.make_optimizer()
        self._moving = {v.ref() for v in moving}
        self.bn_update_ops = []

    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        grads_and_vars = list(grads_and_vars)
        trained = [(g, v) for g, v in grads_and_vars if v.ref() not in self._moving]
        moments = [(v, g) for g, v in grads_and_vars if v.ref() in self._moving]
        self.bn_update_ops = self._step.moving_statistics_updates(moments)
        step = self._optimizer.apply_gradients(trained, global_step=global_step, name='apply_gradients')
        return tf.group(step, *self.bn_update_ops, name=name or 'sync_update')

    def __getattr__(self, name):  # get_slot, get_slot_names, variables, compute_gradients
        return getattr(self._optimizer, name)


class SyncReplicas(object):
    """Synchronous training: every update averages one gradient of each of num_workers workers.

    `build_train_op` goes to ResNet.build_graph or towers.TowerModel (as TrainStep.make_train_op's); then
    `hooks(is_chief)` are the session hooks of this worker.
    """

    def __init__(self, num_workers):
        self.num_workers = num_workers
        self.optimizer = None
        self._release = None

    def build_train_op(self, step, grads_and_vars, moments):
        """A worker's train op: its gradients and batch moments into the accumulators, then wait
        for the aggregated update (the chief's queue runner applies it). step: the TrainStep."""
        trainable = [v for _, v in grads_and_vars]
        inner = _SyncStepOptimizer(step, [moving for moving, _ in moments])
        self.optimizer = tf.compat.v1.train.SyncReplicasOptimizer(
            inner, replicas_to_aggregate=self.num_workers, total_num_replicas=self.num_workers,
            variable_averages=step.ema, variables_to_average=trainable if step.ema is not None else None)
        pairs = list(grads_and_vars) + [(value, moving) for moving, value in moments]
        train_op = self.optimizer.apply_gradients(pairs, global_step=step.global_step)
        step.bn_update_ops = inner.bn_update_ops
        # At the chief's end: a token for every worker, so none waits for an update that never comes.
        self._release = self.optimizer.get_init_tokens_op(self.num_workers)
        return train_op

    def hooks(self, is_chief):
        """The other workers: SyncReplicasOptimizer's own hook; the chief: _SyncChiefHook."""
        if is_chief:
            return [_SyncChiefHook(self.optimizer, self._release)]
        return [self.optimizer.make_session_run_hook(False)]


class _SyncChiefHook(tf.compat.v1.train.SessionRunHook):
    """The chief's side of synchronous training, as SyncReplicasOptimizer's hook does it
    (init ops, first tokens, then the aggregated updates in a thread), with two changes at
    the end: a token for every worker, so that none waits for an update that never comes,
    and an update thread that ends with the session instead of holding its close up for
    the coordinator's grace period (it waits for gradients that no longer come)."""

    def __init__(self, optimizer, release_op):
        self._optimizer = optimizer
        self._release_op = release_op
        self._thread = None

    def begin(self):
        self._init_ops = [self._optimizer.chief_init_op, self._optimizer.get_init_tokens_op()]
        self._update_op = self._optimizer.get_chief_queue_runner().enqueue_ops[0]

    def after_create_session(self, session, coord):
        uninitialized = session.run(self._optimizer.ready_for_local_init_op)
        if len(uninitialized):
            raise RuntimeError('variables not initialized for synchronous training: %s'
                               % ', '.join(v.decode() for v in uninitialized[:3]))
        for op in self._init_ops:
            session.run(op)
        self._thread = threading.Thread(target=self._apply_updates, args=(session, coord),
                                        name='sync_replicas_updates', daemon=True)
        self._thread.start()

    def _apply_updates(self, session, coord):
        while not coord.should_stop():
            try:
                session.run(self._update_op)
            except (tf.errors.CancelledError, tf.errors.OutOfRangeError, RuntimeError):
                return  # the session is closing or closed
            except Exception as e:  # an update that failed: the run stops with its error
                coord.request_stop(e)
                return

    def end(self, session):
        session.run(self._release_op)
