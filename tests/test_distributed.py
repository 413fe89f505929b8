"""distributed.py in this process: the cluster spec, a worker's session config and device
function, the listening warning, a server that cannot start, and PsWatch's probes against real
sockets on 127.0.0.1. Whole clusters of subprocesses are in test_cluster.py."""
import os
import signal
import socket
import time

import pytest
import tensorflow as tf

from resnet_cifar import distributed, guards
from resnet_cifar.cluster import Cluster, ClusterError

PS = ('127.0.0.1:2220', '127.0.0.1:2221')
WORKERS = ('127.0.0.1:2230', '127.0.0.1:2231')


def worker(task_index=1, ps_hosts=PS, timeout_secs=120):
    return Cluster(job_name='worker', task_index=task_index, ps_hosts=ps_hosts, worker_hosts=WORKERS,
                   timeout_secs=timeout_secs)


@pytest.mark.timeout(30)
def test_cluster_spec_and_a_workers_session_config():
    cluster = worker(timeout_secs=45)
    assert distributed.cluster_spec(cluster).as_dict() == {'ps': list(PS), 'worker': list(WORKERS)}
    config = distributed.session_config(cluster, num_cpu_devices=2)
    # Only the ps tasks and itself: a worker does not wait for the other workers to come up.
    assert list(config.device_filters) == ['/job:ps', '/job:worker/task:1']
    assert config.operation_timeout_in_ms == 45000
    assert config.allow_soft_placement and config.device_count['CPU'] == 2


@pytest.mark.timeout(30)
def test_device_function_spreads_variables_over_the_ps_tasks_by_bytes_and_keeps_ops_on_the_worker():
    with tf.Graph().as_default():
        with tf.compat.v1.device(distributed.device_function(worker())):
            big = tf.compat.v1.get_variable('big', [1000])  # 4000 bytes on ps 0
            small = [tf.compat.v1.get_variable('small_%d' % i, [10]) for i in range(3)]  # 40 bytes each: ps 1
            total = big[0] + sum(v[0] for v in small)
        ps0, ps1 = '/job:ps/task:0/device:CPU:0', '/job:ps/task:1/device:CPU:0'
        assert big.device == ps0 and [v.device for v in small] == [ps1] * 3
        assert distributed.variable_placement([big] + small) == {ps0: 1, ps1: 3}
        assert total.device == '/job:worker/task:1'


@pytest.mark.timeout(30)
def test_the_listening_warning_names_the_task_and_its_port():
    line = distributed.listening_warning(Cluster(job_name='ps', task_index=1, ps_hosts=PS, worker_hosts=WORKERS))
    assert line.startswith('ps 1 listens on all interfaces, port 2221: anyone who can reach it can run')
    assert len(line.splitlines()) == 1


@pytest.mark.timeout(60)
def test_a_server_on_a_taken_port_is_a_cluster_error_naming_its_address():
    taken = socket.socket()
    taken.bind(('0.0.0.0', 0))  # the server binds every interface (see the module docstring)
    taken.listen(1)
    try:
        address = '127.0.0.1:%d' % taken.getsockname()[1]
        cluster = Cluster(job_name='ps', task_index=0, ps_hosts=[address], worker_hosts=['127.0.0.1:1'])
        with pytest.raises(ClusterError) as error:
            distributed.start_server(cluster)
    finally:
        taken.close()
    message = str(error.value)
    assert message.startswith('ps 0: cannot serve at %s: ' % address) and '\n' not in message, message


@pytest.mark.timeout(60)
def test_after_a_stop_signal_a_worker_ends_only_when_the_ps_refused_two_probes_in_a_row():
    """One connect can miss PsWatch's 1 s on a loaded machine (a lost SYN is sent again after
    1 s), and a healthy chief must not then exit without its checkpoint (review finding 4).
    PsWatch in this process against a real socket on 127.0.0.1; the test makes its probes."""
    ps = socket.socket()
    ps.bind(('127.0.0.1', 0))  # bound and not listening: it refuses connections
    address = '127.0.0.1:%d' % ps.getsockname()[1]
    cluster = Cluster(job_name='worker', task_index=0, ps_hosts=[address], worker_hosts=['127.0.0.1:1'])
    try:
        with guards.StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            deadline = time.monotonic() + 10
            while not stop.requested and time.monotonic() < deadline:
                time.sleep(0.01)
            assert stop.requested
            watch = distributed.PsWatch(cluster, stop)  # not entered: no thread, the test probes
            down_since = {}
            assert watch.probe(down_since) is None  # one refused probe
            ps.listen(8)
            assert watch.probe(down_since) is None  # it takes one: the count starts over
            ps.close()
            assert watch.probe(down_since) is None  # refused once more, once in a row
            message = watch.probe(down_since)  # twice in a row
    finally:
        ps.close()
    assert message is not None and message.startswith('worker 0: SIGTERM, and ps 0 at %s takes no connection'
                                                       % address), message


@pytest.mark.timeout(60)
def test_without_a_stop_signal_a_ps_is_given_the_timeout():
    """Refused probes alone end the worker only once the ps took none for cluster.timeout_secs."""
    ps = socket.socket()
    ps.bind(('127.0.0.1', 0))
    address = '127.0.0.1:%d' % ps.getsockname()[1]
    cluster = Cluster(job_name='worker', task_index=0, ps_hosts=[address], worker_hosts=['127.0.0.1:1'],
                      timeout_secs=30)
    try:
        with guards.StopSignals() as stop:
            watch = distributed.PsWatch(cluster, stop)
            down_since = {}
            assert [watch.probe(down_since) for _ in range(3)] == [None] * 3  # refused, within the timeout
            since, missed = down_since[0]
            down_since[0] = since - 31, missed  # as if the first refusal were 31 s ago
            message = watch.probe(down_since)
    finally:
        ps.close()
    assert message is not None and message.startswith(
        'worker 0: ps 0 at %s took no connection for 30 seconds (--cluster_timeout_secs): ' % address), message
