"""Where a process sits in a parameter-server cluster: the Cluster section of a RunConfig.

No TensorFlow here: resolve.py builds the Cluster from the cluster flags
(--job_name, --task_index, --ps_hosts, --worker_hosts) or, when none of them is
given, from the TF_CONFIG environment variable that cluster managers set:

  {"cluster": {"ps": ["h0:2222"], "chief": ["h1:2222"], "worker": ["h2:2222"]},
   "task": {"type": "worker", "index": 0}}

TF_CONFIG's "chief" task (if any) is worker 0 and its "worker" tasks follow, so
the task above is worker 1. Every problem is an errors.FlagError with a one-line
message naming the flag (or TF_CONFIG) and what was expected. distributed.py runs
the cluster on TensorFlow's runtime.
"""
import json
import socket
import time

from resnet_cifar import settings
from resnet_cifar.errors import FlagError, RunError

JOB_NAMES = ('ps', 'worker')
TF_CONFIG = 'TF_CONFIG'
# The fields that place this process in a cluster: TF_CONFIG gives them when no flag of theirs does.
TASK_FIELDS = ('job_name', 'task_index', 'ps_hosts', 'worker_hosts')


class ClusterError(RunError):
    """A cluster task that cannot start or reach the others; names the task and its address."""


@settings.section('cluster')
class Cluster:
    """This process's task in a cluster of parameter servers (ps) and workers; job_name '' is one machine.

    The fields are the cluster settings of settings.py (job_name, task_index, ps_hosts,
    worker_hosts, sync_replicas, timeout_secs: how long to wait for a ps task or the chief),
    then `source`: 'flags' or 'TF_CONFIG', what the error messages name. Addresses are
    'host:port'. Worker 0 is the chief: it initializes the variables, restores and writes the
    checkpoints and writes the summaries.
    """
    source: str = 'flags'

    def __post_init__(self):
        if not isinstance(self.source, str):
            raise FlagError('Cluster.source=%r: expected flags or TF_CONFIG' % (self.source,))
        settings.check_fields(self, 'cluster')
        if not self.job_name:
            self._check_one_machine()
            return
        if self.job_name not in JOB_NAMES:
            raise FlagError('%s=%s: expected ps or worker' % (self._name('job_name'), self.job_name))
        for name in ('ps_hosts', 'worker_hosts'):
            self._check_hosts(name)
        hosts = self.hosts(self.job_name)
        if not 0 <= self.task_index < len(hosts):
            raise FlagError('%s=%d: outside the cluster: %s has %d %s task%s (0 to %d)'
                            % (self._name('task_index'), self.task_index, self._name(self.job_name + '_hosts'),
                               len(hosts), self.job_name, 's' if len(hosts) > 1 else '', len(hosts) - 1))
        repeated = sorted({a for a in self.ps_hosts + self.worker_hosts
                           if (self.ps_hosts + self.worker_hosts).count(a) > 1})
        if repeated:
            raise FlagError('%s: %s is the address of two tasks; each task needs its own port'
                            % (self._name('hosts'), repeated[0]))

    def _check_one_machine(self):
        if self.ps_hosts or self.worker_hosts or self.task_index:
            raise FlagError('--ps_hosts, --worker_hosts and --task_index need --job_name=ps or --job_name=worker')
        if self.sync_replicas:
            raise FlagError('--sync_replicas: needs a cluster (--job_name, --task_index, --ps_hosts, '
                            '--worker_hosts, or TF_CONFIG)')

    def _check_hosts(self, name):
        hosts = getattr(self, name)
        if not hosts:
            raise FlagError('%s: empty; expected comma-separated host:port addresses, at least one'
                            % self._name(name))
        for address in hosts:
            problem = address_problem(address)
            if problem:
                raise FlagError('%s=%s: %s; expected comma-separated host:port addresses'
                                % (self._name(name), ','.join(hosts), problem))

    def _name(self, field):
        """How the user gave `field`: a flag, or a part of TF_CONFIG."""
        if self.source == TF_CONFIG:
            return {'job_name': 'TF_CONFIG task type', 'task_index': 'TF_CONFIG task index',
                    'ps_hosts': 'TF_CONFIG cluster ps', 'worker_hosts': 'TF_CONFIG cluster chief+worker',
                    'hosts': 'TF_CONFIG cluster'}.get(field, '--' + field)
        return {'hosts': '--ps_hosts/--worker_hosts'}.get(field, '--' + field)

    @property
    def is_distributed(self):
        return bool(self.job_name)

    @property
    def is_chief(self):
        """True for worker 0 and for a one-machine run."""
        return self.job_name != 'ps' and self.task_index == 0

    @property
    def num_workers(self):
        return len(self.worker_hosts)

    def hosts(self, job_name):
        return self.ps_hosts if job_name == 'ps' else self.worker_hosts

    def address(self, job_name=None, task_index=None):
        """The host:port of a task; by default this process's."""
        job_name = job_name or self.job_name
        return self.hosts(job_name)[self.task_index if task_index is None else task_index]

    def task_name(self, job_name=None, task_index=None):
        """'worker 1', 'ps 0': how messages name a task; by default this process's."""
        return '%s %d' % (job_name or self.job_name, self.task_index if task_index is None else task_index)

    def hosts_hint(self, job_name):
        """What to check when a task of `job_name` cannot be reached."""
        return 'check TF_CONFIG' if self.source == TF_CONFIG else 'check --%s_hosts' % job_name


def address_problem(address):
    """What is wrong with a 'host:port' address, or None."""
    host, colon, port = address.rpartition(':')
    if not colon or not host or any(c.isspace() for c in address):
        return '%r is not host:port' % address
    if not port.isdigit() or not 0 < int(port) < 65536:
        return '%r has no port number from 1 to 65535' % address
    return None


def split_hosts(flag, text):
    """['h:1', 'h:2'] of '--flag=h:1,h:2'; FlagError for an empty entry."""
    if not text:
        return ()
    hosts = [h.strip() for h in text.split(',')]
    if not all(hosts):
        raise FlagError('--%s=%s: an empty address; expected comma-separated host:port addresses' % (flag, text))
    return tuple(hosts)


def from_values(values, given, environ):
    """The Cluster of the flag values (a dict), else of environ's TF_CONFIG, else one machine.

    values: every flag's value; given: the names of the flags on the command line;
    environ: the environment (os.environ). TF_CONFIG only applies to train mode: an
    eval process beside a cluster may have one, and ignores it.
    """
    fields = settings.section_values('cluster', values)
    for name in ('ps_hosts', 'worker_hosts'):
        fields[name] = split_hosts(name, values[name])
    task_flags = [s.name for s in settings.of_section('cluster') if s.field in TASK_FIELDS]
    if any(name in given for name in task_flags) or values['mode'] != 'train' or not environ.get(TF_CONFIG):
        return Cluster(**fields)
    return from_tf_config(environ[TF_CONFIG], **{k: v for k, v in fields.items() if k not in TASK_FIELDS})


def from_tf_config(text, **common):
    """The Cluster of a TF_CONFIG JSON text; `common` are the other Cluster fields."""
    try:
        spec = json.loads(text)
    except ValueError as e:
        raise FlagError('TF_CONFIG: not JSON (%s); expected {"cluster": {...}, "task": {...}}' % e) from None
    cluster, task = (spec.get('cluster'), spec.get('task')) if isinstance(spec, dict) else (None, None)
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise FlagError('TF_CONFIG: expected {"cluster": {"ps": [...], "worker": [...]}, '
                        '"task": {"type": ..., "index": ...}}')
    jobs = {}
    for job in ('ps', 'chief', 'worker'):
        hosts = cluster.get(job, [])
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            raise FlagError('TF_CONFIG cluster %s: expected a list of "host:port" strings' % job)
        jobs[job] = tuple(hosts)
    kind, index = task.get('type'), task.get('index', 0)
    if not isinstance(index, int) or isinstance(index, bool):
        raise FlagError('TF_CONFIG task index=%r: expected an integer' % (index,))
    if kind not in ('ps', 'chief', 'worker'):
        raise FlagError('TF_CONFIG task type=%s: expected ps, worker or chief (an evaluator runs '
                        '--mode=eval, which ignores TF_CONFIG)' % kind)
    if kind == 'worker':
        index += len(jobs['chief'])
    return Cluster(job_name='ps' if kind == 'ps' else 'worker', task_index=index, ps_hosts=jobs['ps'],
                   worker_hosts=jobs['chief'] + jobs['worker'], source=TF_CONFIG, **common)


def unreachable(address, timeout=1.0):
    """Why 'host:port' takes no TCP connection within `timeout` seconds ('connection refused'),
    or None when it takes one."""
    host, _, port = address.rpartition(':')
    try:
        with socket.create_connection((host.strip('[]'), int(port)), timeout=timeout):
            return None
    except OSError as e:
        return (e.strerror or str(e) or type(e).__name__).lower()


def wait_for_address(cluster, job_name, task_index, deadline, why=''):
    """Returns once the task's address takes a TCP connection; ClusterError naming the task and
    its address when `deadline` (time.monotonic()) passes first."""
    address = cluster.address(job_name, task_index)
    while True:
        reason = unreachable(address)
        if reason is None:
            return
        if time.monotonic() >= deadline:
            raise ClusterError('%s: cannot reach %s at %s within %d seconds (--cluster_timeout_secs): %s%s; '
                               'start it, or %s' % (cluster.task_name(), cluster.task_name(job_name, task_index),
                                                   address, cluster.timeout_secs, reason, why,
                                                   cluster.hosts_hint(job_name)))
        time.sleep(0.2)
