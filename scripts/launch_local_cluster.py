"""Runs a parameter-server cluster on this machine: ps tasks and workers of resnet_main.py.

  python scripts/launch_local_cluster.py --ps=1 --workers=2 -- --dataset=digits --train_steps=500

Every task gets a free port on 127.0.0.1 and the flags after `--` (the training
flags, the same for every task) plus its cluster flags (--job_name, --task_index,
--ps_hosts, --worker_hosts), or with --tf_config the TF_CONFIG variable a cluster
manager would set instead. Their output comes out here, each line prefixed with
its task ('[worker 1] ...'). The launcher ends when every worker has ended: the ps
tasks then exit by themselves (the chief tells them training is done), or are
stopped after --ps_grace_secs. Ctrl-C (or SIGTERM) stops every task, the workers
first (a worker saves a checkpoint after its current step), then the ps tasks:
SIGTERM, then SIGKILL after --stop_secs. Exit status: 0 when every worker exited 0, else 1.

The tasks are named at 127.0.0.1, but TensorFlow's servers listen on every interface
(each task says so in one line; docs/distributed.md): run the launcher where other
machines cannot reach its ports.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(REPO, 'resnet_main.py')
CLUSTER_FLAGS = ('--job_name', '--task_index', '--ps_hosts', '--worker_hosts')


def free_ports(count):
    """`count` distinct TCP ports that are free on 127.0.0.1 now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(('127.0.0.1', 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def task_args(job, index, ps_hosts, worker_hosts, tf_config):
    """(extra flags, extra environment) that make a process task `index` of `job`."""
    if tf_config:
        spec = {'cluster': {'ps': ps_hosts, 'worker': worker_hosts}, 'task': {'type': job, 'index': index}}
        return [], {'TF_CONFIG': json.dumps(spec)}
    return ['--job_name=' + job, '--task_index=%d' % index, '--ps_hosts=' + ','.join(ps_hosts),
            '--worker_hosts=' + ','.join(worker_hosts)], {}


class Task(object):
    """One resnet_main.py process whose output lines are printed with a prefix."""

    def __init__(self, name, args, env, out_lock):
        self.name = name
        self.proc = subprocess.Popen([sys.executable, MAIN] + args, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, cwd=REPO,
                                     env=dict(os.environ, **env), start_new_session=True)
        self._lock = out_lock
        self._reader = threading.Thread(target=self._stream, daemon=True)
        self._reader.start()

    def _stream(self):
        for line in self.proc.stdout:
            say('[%s] %s' % (self.name, line.rstrip('\n')), self._lock)

    def stop(self, sig):
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def finish(self, timeout):
        """Waits at most `timeout` seconds for the exit, then kills; returns the exit status."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(signal.SIGKILL)
            self.proc.wait()
        self._reader.join(5)
        return self.proc.returncode


def say(line, lock):
    with lock:
        sys.stdout.write(line + '\n')
        sys.stdout.flush()


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     usage='%(prog)s [--ps=1] [--workers=2] [--tf_config] -- TRAINING_FLAGS')
    parser.add_argument('--ps', type=int, default=1, help='parameter-server tasks (default 1)')
    parser.add_argument('--workers', type=int, default=2, help='worker tasks; worker 0 is the chief (default 2)')
    parser.add_argument('--tf_config', action='store_true',
                        help='give each task its place by TF_CONFIG, as a cluster manager does, not by flags')
    parser.add_argument('--ps_grace_secs', type=float, default=30,
                        help='once every worker ended, how long the ps tasks may take to exit (default 30)')
    parser.add_argument('--stop_secs', type=float, default=30,
                        help='after SIGTERM, how long a task may take to exit before SIGKILL (default 30)')
    args, training_flags = parser.parse_known_args(argv)
    if training_flags[:1] == ['--']:
        training_flags = training_flags[1:]
    if args.ps < 1 or args.workers < 1:
        parser.error('--ps and --workers: expected 1 or more')
    given = [f for f in training_flags if f.split('=')[0] in CLUSTER_FLAGS]
    if given:
        parser.error('%s: the launcher gives each task its cluster flags' % given[0])
    return args, training_flags


def main(argv):
    args, training_flags = parse_args(argv)
    lock = threading.Lock()
    ports = free_ports(args.ps + args.workers)
    ps_hosts = ['127.0.0.1:%d' % p for p in ports[:args.ps]]
    worker_hosts = ['127.0.0.1:%d' % p for p in ports[args.ps:]]
    ps_tasks, workers = [], []
    stopping = []

    def on_signal(signum, frame):
        stopping.append(signum)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for job, hosts, tasks in (('ps', ps_hosts, ps_tasks), ('worker', worker_hosts, workers)):
            for index, host in enumerate(hosts):
                extra, env = task_args(job, index, ps_hosts, worker_hosts, args.tf_config)
                task = Task('%s %d' % (job, index), training_flags + extra, env, lock)
                tasks.append(task)
                say('[launcher] %s: pid %d at %s' % (task.name, task.proc.pid, host), lock)
        while not stopping and any(w.proc.poll() is None for w in workers):
            time.sleep(0.1)
        if stopping:
            say('[launcher] %s: stopping every task' % signal.Signals(stopping[0]).name, lock)
            # The workers first: the chief's last checkpoint needs the ps tasks.
            stop_all(workers, args.stop_secs, lock)
            return stop_all(ps_tasks, args.stop_secs, lock)
        deadline = time.monotonic() + args.ps_grace_secs
        while any(p.proc.poll() is None for p in ps_tasks) and time.monotonic() < deadline and not stopping:
            time.sleep(0.1)
        stop_all(ps_tasks, args.stop_secs, lock)
        codes = [w.finish(0) for w in workers]
        say('[launcher] workers exited with %s' % ', '.join(map(str, codes)), lock)
        return 0 if all(code == 0 for code in codes) else 1
    finally:
        for task in workers + ps_tasks:  # whatever happened above, no task outlives the launcher
            task.stop(signal.SIGKILL)
            task.finish(10)


def stop_all(tasks, stop_secs, lock):
    """SIGTERM to every live task, then SIGKILL to those still alive after stop_secs; returns 1."""
    for task in tasks:
        task.stop(signal.SIGTERM)
    deadline = time.monotonic() + stop_secs
    for task in tasks:
        code = task.finish(max(0.0, deadline - time.monotonic()))
        say('[launcher] %s exited with %s' % (task.name, code), lock)
    return 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
