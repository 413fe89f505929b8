"""Parameter-server training (distributed.py, cluster.py, scripts/launch_local_cluster.py): real
ps and worker processes of resnet_main.py on 127.0.0.1, every one bounded in time and killed at
the end; each cluster run is shared by the assertions about it."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import processes
from processes import REPO, TINY, Process, assert_one_line_error, latest_step, read_checkpoint
from resnet_cifar.cluster import Cluster, from_tf_config

LAUNCHER = os.path.join(REPO, 'scripts', 'launch_local_cluster.py')
launcher = processes.load_script('launch_local_cluster')


def cluster_flags(ps_ports, worker_ports):
    return ['--ps_hosts=' + ','.join('127.0.0.1:%d' % p for p in ps_ports),
            '--worker_hosts=' + ','.join('127.0.0.1:%d' % p for p in worker_ports)]


def task(job, index, flags):
    return Process(['--job_name=' + job, '--task_index=%d' % index] + flags)


def ran_steps(stderr, name):
    """The train steps a worker says it ran ('worker 1 ran 23 train steps')."""
    found = re.search(r'%s ran (\d+) train steps' % name, stderr)
    assert found, stderr[-3000:]
    return int(found.group(1))


def kill_all(tasks):
    for t in tasks:
        t.kill()


def start_launcher(args):
    """scripts/launch_local_cluster.py with `args`; its output (all tasks') on stdout."""
    return subprocess.Popen([sys.executable, LAUNCHER] + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def kill_launcher(proc):
    """Kills the launcher if it still runs (its finally kills its tasks only when it can run)."""
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def run_data(learnable, log_root):
    train_path, test_path = learnable
    return ['--mode=train', '--dataset=cifar10', '--train_data_path=' + train_path,
            '--eval_data_path=' + test_path, '--log_root=' + log_root] + TINY


# ------------------------------------------------------------------ asynchronous, by the launcher

@pytest.fixture(scope='module')
def async_run(learnable, tmp_path_factory):
    """1 ps + 2 asynchronous workers started by the launcher, each placed by TF_CONFIG: (log_root, output)."""
    log_root = str(tmp_path_factory.mktemp('async') / 'run')
    proc = start_launcher(['--ps=1', '--workers=2', '--tf_config', '--'] + run_data(learnable, log_root)
                          + ['--train_steps=50', '--save_checkpoints_steps=25'])
    try:
        output, _ = proc.communicate(timeout=240)
    finally:
        kill_launcher(proc)
    assert proc.returncode == 0, output[-5000:]
    return log_root, output


@pytest.mark.timeout(420)
def test_async_workers_both_train_to_the_last_step_and_eval_scores_the_checkpoint(async_run, learnable, capsys):
    log_root, output = async_run
    lines = {name: '\n'.join(line for line in output.splitlines() if line.startswith('[%s] ' % name))
             for name in ('ps 0', 'worker 0', 'worker 1')}
    steps = {name: ran_steps(lines[name], name) for name in ('worker 0', 'worker 1')}
    assert all(count > 0 for count in steps.values()), steps
    for name in ('worker 0', 'worker 1'):
        assert re.search(r'step \d+/50 ', lines[name]), lines[name][-3000:]  # progress lines of its own
    # Asynchronous: every worker step is one global step. A worker sees the last step only after
    # a run that read it, so the other worker's steps already under way may go a few steps past it.
    assert 50 <= latest_step(log_root) <= sum(steps.values()) <= 56, (latest_step(log_root), steps)
    assert 'ps 0: every worker is done; exiting' in lines['ps 0']
    assert '[launcher] workers exited with 0, 0' in output
    # Only the chief writes the run's files.
    assert 'config.json' in os.listdir(log_root) and os.path.isdir(os.path.join(log_root, 'train'))
    scored = processes.main_stdout(['--mode=eval', '--log_root=' + log_root, '--eval_once',
                                    '--eval_data_path=' + learnable[1]], capsys)  # in this process
    [(step, precision)] = processes.eval_precisions(scored)
    # Eval names the global step stored in the checkpoint, which may be a step past its file's
    # name: the other worker's step can land between the chief's read of the step and its save.
    import tensorflow as tf
    stored = int(tf.train.load_variable(tf.train.latest_checkpoint(log_root), 'global_step'))
    assert step == stored and latest_step(log_root) <= stored <= latest_step(log_root) + 1, (step, stored)
    assert precision > 0.3, scored  # chance is 0.1


@pytest.mark.timeout(420)
def test_tf_config_gives_the_same_cluster_as_the_flags(async_run):
    flags = processes.resolve(['--job_name=worker', '--task_index=2', '--ps_hosts=h0:1',
                               '--worker_hosts=h1:1,h2:1,h3:1', '--sync_replicas']).cluster
    spec = {'cluster': {'ps': ['h0:1'], 'chief': ['h1:1'], 'worker': ['h2:1', 'h3:1']},
            'task': {'type': 'worker', 'index': 1}}
    tf_config = from_tf_config(json.dumps(spec), sync_replicas=True, timeout_secs=120)
    assert tf_config == Cluster(**dict(flags.__dict__, source='TF_CONFIG'))
    chief = from_tf_config(json.dumps(dict(spec, task={'type': 'chief', 'index': 0})))
    assert chief.job_name == 'worker' and chief.task_index == 0 and chief.is_chief
    # The launcher's tasks took their places from TF_CONFIG alone, and formed one cluster.
    _, output = async_run
    served = dict(re.findall(r'\[(\S+ \d)\] .*serving at (127\.0\.0\.1:\d+)', output))
    started = dict(re.findall(r'\[launcher\] (\S+ \d): pid \d+ at (127\.0\.0\.1:\d+)', output))
    assert served == started and len(served) == 3, output[-3000:]


# ------------------------------------------------------------------ synchronous, 2 ps, towers

@pytest.fixture(scope='module')
def sync_run(learnable, tmp_path_factory):
    """2 ps + 2 synchronous workers of 2 CPU towers each, by the flags: (log_root, {task: stderr})."""
    log_root = str(tmp_path_factory.mktemp('sync') / 'run')
    ports = launcher.free_ports(4)
    flags = (run_data(learnable, log_root) + cluster_flags(ports[:2], ports[2:])
             + ['--train_steps=30', '--save_checkpoints_steps=30', '--sync_replicas',
                '--num_gpus=2', '--tower_device=cpu'])
    tasks = {'ps 0': task('ps', 0, flags), 'ps 1': task('ps', 1, flags),
             'worker 1': task('worker', 1, flags), 'worker 0': task('worker', 0, flags)}
    try:
        codes = {name: t.wait(240) for name, t in tasks.items()}
    finally:
        kill_all(tasks.values())
    logs = {name: t.stderr for name, t in tasks.items()}
    assert codes == dict.fromkeys(tasks, 0), {name: logs[name][-3000:] for name in tasks if codes[name]}
    return log_root, logs


@pytest.mark.timeout(420)
def test_sync_replicas_count_one_global_step_per_aggregated_update(sync_run):
    log_root, logs = sync_run
    assert latest_step(log_root) == 30
    ran = [ran_steps(logs['worker %d' % i], 'worker %d' % i) for i in (0, 1)]
    # Each update aggregates 2 gradients: the workers ran 2 steps per global step, plus at most the
    # steps of the 2 first tokens and the 2 the chief hands out at the end.
    assert 2 * 30 <= sum(ran) <= 2 * 30 + 4, ran
    values = read_checkpoint(os.path.join(log_root, 'model.ckpt-30'))
    shadows = [name for name in values if name.endswith('/ExponentialMovingAverage')]
    assert shadows and all(not np.array_equal(values[s], values[s.rsplit('/', 1)[0]]) for s in shadows)
    # The batch-norm statistics moved (the chief applies the mean of the workers' batch moments).
    assert not np.array_equal(values['unit_1_0/bn1/moving_mean'], np.zeros_like(values['unit_1_0/bn1/moving_mean']))


@pytest.mark.timeout(420)
def test_two_ps_tasks_hold_the_variables_between_them(sync_run):
    _, logs = sync_run
    found = re.search(r'worker 0: variables on the ps tasks: (.*)', logs['worker 0'])
    assert found, logs['worker 0'][-3000:]
    counts = dict(re.findall(r'/job:ps/task:(\d)/device:CPU:0: (\d+)', found.group(1)))
    assert set(counts) == {'0', '1'} and all(int(c) > 5 for c in counts.values()), found.group(0)
    assert 'worker' not in found.group(1)  # no variable stays on a worker
    for name in ('ps 0', 'ps 1'):
        assert '%s: every worker is done; exiting' % name in logs[name]


# ------------------------------------------------------------------ killed workers

@pytest.mark.timeout(420)
def test_a_killed_worker_leaves_the_others_going_and_a_restarted_chief_resumes(learnable, tmp_path):
    log_root = str(tmp_path / 'run')
    ports = launcher.free_ports(3)
    flags = (run_data(learnable, log_root) + cluster_flags(ports[:1], ports[1:])
             + ['--train_steps=150', '--save_checkpoints_steps=10', '--batch_size=16', '--cluster_timeout_secs=60'])
    ps, chief, other = task('ps', 0, flags), task('worker', 0, flags), task('worker', 1, flags)
    restarted = None
    try:
        other.wait_for(r'step \d+/150', 180)
        other.proc.kill()
        at_kill = latest_step(log_root) or 0
        deadline = time.time() + 120  # the chief saves checkpoints on its own
        while (latest_step(log_root) or 0) < at_kill + 10:
            assert chief.proc.poll() is None and time.time() < deadline, chief.stderr[-3000:]
            time.sleep(0.05)
        chief.proc.kill()
        chief.wait(30)
        kept = latest_step(log_root)
        assert kept < 150, 'the chief finished before it was killed'
        restarted = task('worker', 0, flags)
        assert restarted.wait(180) == 0, restarted.stderr[-3000:]
    finally:
        kill_all([ps, chief, other] + ([restarted] if restarted else []))
    assert 'resuming from %s at step %d' % (os.path.join(log_root, 'model.ckpt-%d' % kept), kept) in restarted.stderr
    assert latest_step(log_root) >= 150


# ------------------------------------------------------------------ the launcher stops everything

@pytest.mark.timeout(180)
def test_ctrl_c_to_the_launcher_stops_every_task(learnable, tmp_path):
    proc = start_launcher(['--ps=1', '--workers=1', '--stop_secs=30', '--']
                          + run_data(learnable, str(tmp_path / 'run')) + processes.LONG_RUN)
    lines = []
    try:
        for line in proc.stdout:  # bounded by the test's timeout mark
            lines.append(line)
            if re.match(r'\[worker 0\] .*step \d+/100000', line):
                break
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=90)
    finally:
        kill_launcher(proc)
    output = ''.join(lines) + rest
    assert proc.returncode == 1 and 'SIGINT: stopping every task' in output, output[-3000:]
    pids = [int(p) for p in re.findall(r'\[launcher\] \S+ \d: pid (\d+)', output)]
    assert len(pids) == 2
    for pid in pids:
        assert not os.path.exists('/proc/%d' % pid) or 'Z' in open('/proc/%d/stat' % pid).read().split()[2]
    assert '[launcher] worker 0 exited with 0' in output  # SIGTERM: it saved and stopped cleanly


# ------------------------------------------------------------------ clear errors, never a hang

@pytest.mark.timeout(60)
@pytest.mark.parametrize('flags, env, fragments', [
    (['--job_name=boss', '--ps_hosts=127.0.0.1:1', '--worker_hosts=127.0.0.1:2'], {},
     ['--job_name=boss: expected ps or worker']),
    (['--job_name=worker', '--task_index=2', '--ps_hosts=127.0.0.1:1', '--worker_hosts=127.0.0.1:2,127.0.0.1:3'],
     {}, ['--task_index=2: outside the cluster', '2 worker tasks (0 to 1)']),
    (['--job_name=worker', '--ps_hosts=127.0.0.1', '--worker_hosts=127.0.0.1:2'], {},
     ['--ps_hosts=127.0.0.1:', "'127.0.0.1' is not host:port"]),
    (['--job_name=worker', '--ps_hosts=127.0.0.1:1,,h:3', '--worker_hosts=127.0.0.1:2'], {},
     ['--ps_hosts=127.0.0.1:1,,h:3: an empty address']),
    ([], {'TF_CONFIG': json.dumps({'cluster': {'ps': ['h:1'], 'worker': ['h:2']}, 'task': {'type': 'worker',
                                                                                          'index': 3}})},
     ['TF_CONFIG task index=3: outside the cluster']),
    ([], {'TF_CONFIG': '{not json'}, ['TF_CONFIG: not JSON']),
])
def test_bad_cluster_settings_are_one_line_flag_errors(flags, env, fragments, tmp_path, capsys, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, err = processes.main_exit_status(['--log_root=' + str(tmp_path)] + flags, capsys)
    assert_one_line_error(code, err, 2, *fragments)


@pytest.mark.timeout(120)
def test_an_unreachable_ps_is_a_timeout_naming_its_address(learnable, tmp_path):
    ps_port, worker_port = launcher.free_ports(2)
    started = time.time()
    worker = task('worker', 0, run_data(learnable, str(tmp_path / 'run')) + cluster_flags([ps_port], [worker_port])
                  + ['--cluster_timeout_secs=3'])
    code = worker.wait(90)
    assert_one_line_error(code, worker.stderr, 1, 'worker 0: cannot reach ps 0 at 127.0.0.1:%d within 3 seconds'
                          % ps_port, '--ps_hosts')
    assert time.time() - started < 80


@pytest.mark.timeout(300)
def test_a_worker_that_would_train_on_the_validation_records_stops_with_one_line(learnable, tmp_path):
    """Worker 1 starts before the chief wrote the run's settings and is not told --validation_size:
    it would train on the records the run holds out. Once the chief is up, it stops instead."""
    log_root = str(tmp_path / 'run')
    ports = launcher.free_ports(3)
    flags = (run_data(learnable, log_root) + cluster_flags(ports[:1], ports[1:])
             + ['--train_steps=20', '--save_checkpoints_steps=10', '--cluster_timeout_secs=120'])
    ps = task('ps', 0, flags)
    worker, chief = task('worker', 1, flags), None
    try:
        worker.wait_for(r'waiting for the chief', 120)  # resolved without config.json
        assert not os.path.exists(os.path.join(log_root, 'config.json'))
        chief = task('worker', 0, flags + ['--validation_size=200'])
        code = worker.wait(150)
    finally:
        kill_all([ps, worker] + ([chief] if chief else []))
    assert_one_line_error(code, worker.stderr, 1, 'worker 1:', 'holds out the last 200 training records',
                          'this worker none', '--validation_size=200')
    assert 'worker 1 ran' not in worker.stderr  # not one step on them


# ------------------------------------------------------------------ a ps that dies

def start_ps_and_workers(flags):
    """ps 0 and workers 0 and 1 of `flags`, once both workers log training steps: (ps, workers)."""
    ps = task('ps', 0, flags)
    workers = [task('worker', 0, flags), task('worker', 1, flags)]
    try:
        for worker in workers:
            worker.wait_for(r'step \d+/100000', 240)
    except BaseException:
        kill_all([ps] + workers)
        raise
    return ps, workers


@pytest.mark.timeout(400)
def test_workers_whose_only_ps_was_killed_stop_within_the_timeout_naming_it(learnable, tmp_path):
    log_root = str(tmp_path / 'run')
    ports = launcher.free_ports(3)
    flags = (run_data(learnable, log_root) + cluster_flags(ports[:1], ports[1:]) + processes.LONG_RUN
             + ['--log_every_n_steps=1', '--cluster_timeout_secs=10'])
    ps, workers = start_ps_and_workers(flags)
    try:
        ps.proc.kill()
        ps.wait(30)
        killed_at = time.time()
        codes = [worker.wait(90) for worker in workers]
        took = time.time() - killed_at
    finally:
        kill_all([ps] + workers)
    for name, code, worker in zip(('worker 0', 'worker 1'), codes, workers):
        # The watch's line ('took no connection for 10 seconds'), or TensorFlow's timeout that sometimes
        # ends the step first ('takes no connection ..., and the step waiting on it ended: ...').
        line = assert_one_line_error(code, worker.stderr, 1, name + ': ps 0 at 127.0.0.1:%d' % ports[0],
                                     'connection refused', 'restart the ps task')
        assert ('the last checkpoint' in line) == (name == 'worker 0'), line  # only the chief writes them
    # They wait about the timeout for the ps to come back (a restarted ps is one; TensorFlow's own
    # timeout counts from the start of the step under way), then stop: within the timeout, one step
    # (a few seconds at most here) and a margin for a loaded machine.
    assert 10 / 2 <= took < 10 + 30, took


@pytest.mark.timeout(300)
def test_sigterm_ends_a_worker_blocked_on_a_dead_ps_promptly(learnable, tmp_path):
    log_root = str(tmp_path / 'run')
    ports = launcher.free_ports(3)
    flags = (run_data(learnable, log_root) + cluster_flags(ports[:1], ports[1:]) + processes.LONG_RUN
             + ['--log_every_n_steps=1', '--cluster_timeout_secs=600'])
    ps, workers = start_ps_and_workers(flags)
    try:
        ps.proc.kill()
        ps.wait(30)
        signalled_at = time.time()
        for worker in workers:
            worker.proc.send_signal(signal.SIGTERM)
        codes = [worker.wait(60) for worker in workers]
        took = time.time() - signalled_at
    finally:
        kill_all([ps] + workers)
    for name, code, worker in zip(('worker 0', 'worker 1'), codes, workers):
        assert_one_line_error(code, worker.stderr, 1, name + ': SIGTERM', 'ps 0 at 127.0.0.1:%d' % ports[0])
    assert took < 20, took  # not the 600 s of --cluster_timeout_secs



@pytest.mark.timeout(400)
def test_a_ps_restarted_on_its_address_within_the_timeout_is_taken_back(learnable, tmp_path):
    """The watch gives a killed ps the timeout to come back: restarted, training goes on to the end."""
    log_root = str(tmp_path / 'run')
    ports = launcher.free_ports(3)
    flags = (run_data(learnable, log_root) + cluster_flags(ports[:1], ports[1:])
             + ['--train_steps=150', '--save_checkpoints_steps=10', '--batch_size=16', '--cluster_timeout_secs=60'])
    ps = task('ps', 0, flags)
    workers, restarted = [task('worker', 0, flags), task('worker', 1, flags)], None
    try:
        for worker in workers:
            worker.wait_for(r'step \d+/150', 240)
        ps.proc.kill()
        ps.wait(30)
        restarted = task('ps', 0, flags)
        codes = [worker.wait(240) for worker in workers]
    finally:
        kill_all([ps] + workers + ([restarted] if restarted else []))
    assert codes == [0, 0], [w.stderr[-3000:] for w in workers]
    assert latest_step(log_root) >= 150
    assert 'ps 0: every worker is done' in restarted.stderr, restarted.stderr[-3000:]  # they ended on it


# ------------------------------------------------------------------ who can reach a task's port

def listening_addresses(port):
    """The local addresses of the TCP sockets that listen on `port`, from /proc/net/tcp and tcp6
    (hex, as the kernel writes them: '00000000' is 0.0.0.0, '0100007F' is 127.0.0.1)."""
    found = []
    for table in ('/proc/net/tcp', '/proc/net/tcp6'):
        try:
            with open(table) as f:
                rows = [line.split() for line in f.readlines()[1:]]
        except OSError:
            continue
        found += [row[1].rsplit(':', 1)[0] for row in rows
                  if int(row[1].rsplit(':', 1)[1], 16) == port and row[3] == '0A']  # 0A: LISTEN
    return found


OPEN_PORT_WARNING = (r'(ps|worker) (\d) listens on all interfaces, port (\d+): anyone who can reach it can run '
                     r'TensorFlow ops as this user \(read and write files\); keep the cluster on a private '
                     r"network or behind a firewall that admits only the cluster's hosts")


@pytest.mark.timeout(420)
def test_every_launcher_task_says_once_that_its_port_is_open_to_all_and_the_docs_say_it(async_run):
    """TensorFlow 2.21's server binds 0.0.0.0 whatever host the cluster names, so each task says so."""
    _, output = async_run
    warned = re.findall(r'\[(\S+ \d)\] .*' + OPEN_PORT_WARNING, output)
    started = dict(re.findall(r'\[launcher\] (\S+ \d): pid \d+ at 127\.0\.0\.1:(\d+)', output))
    assert all(task == '%s %s' % (job, index) for task, job, index, _ in warned), warned
    assert sorted((task, port) for task, _, _, port in warned) == sorted(started.items()), output[-3000:]
    for page in ('README.md', os.path.join('docs', 'distributed.md')):
        text = ' '.join(open(os.path.join(REPO, page), encoding='utf-8').read().split())
        assert 'listens on all interfaces' in text and 'firewall that admits only the cluster' in text, page
        assert 'read and write files' in text, page


@pytest.mark.timeout(180)
def test_an_unreachable_chief_is_a_timeout_and_a_ps_named_at_127_0_0_1_listens_on_every_address(
        learnable, tmp_path):
    """A worker whose chief never comes stops after --cluster_timeout_secs naming the chief's address.
    And what the ps's warning line says is so: a ps of a cluster on 127.0.0.1 listens on the wildcard
    address, read from the kernel's socket table (no connection to any other address is made).
    Should TensorFlow one day bind only the host the cluster names, this fails: then bind it so,
    and test that instead. (One ps serves both, a TensorFlow start fewer.)"""
    ports = launcher.free_ports(3)
    flags = run_data(learnable, str(tmp_path / 'run')) + cluster_flags(ports[:1], ports[1:]) + [
        '--cluster_timeout_secs=3']
    ps = task('ps', 0, flags)
    try:
        ps.wait_for('serving the variables', 60)
        listening = listening_addresses(ports[0]) if os.path.exists('/proc/net/tcp') else None
        worker = task('worker', 1, flags)
        code = worker.wait(90)
    finally:
        ps.kill()
    assert_one_line_error(code, worker.stderr, 1, 'worker 1: the chief, worker 0 at 127.0.0.1:%d, did not '
                          'initialize the variables within 3 seconds' % ports[1])
    found = re.search(OPEN_PORT_WARNING, ps.stderr)
    assert found and found.group(1, 2, 3) == ('ps', '0', str(ports[0])), ps.stderr[-3000:]
    if listening is None:
        pytest.skip('no /proc/net/tcp to read the listening address from')
    assert listening and all(set(address) == {'0'} for address in listening), listening  # 0.0.0.0 or ::
