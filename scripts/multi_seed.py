"""One configuration trained with several seeds: the mean and spread of what it reaches.

  python scripts/multi_seed.py --seeds=1,2,3 --target=0.95 -- --dataset=digits --train_steps=400
  python scripts/multi_seed.py --seeds=1,2,3,4 --parallel=2 --out=runs/wrn.json -- --dataset=cifar10 ...

Every flag after `--` goes to resnet_main.py, to training and then to eval. Each
seed trains in its own run directory, <log_root>/seed-<S> (--log_root, default
runs/multi_seed), keeping every checkpoint; then eval scores each checkpoint
(on the validation records with --validation_size, else on the eval records).
Seeds run in sequence, or --parallel=N at a time (they then share the CPU, so
their images/s drop).

Per seed and as mean and sample standard deviation over the seeds it reports:
  test precision   the test score of the checkpoint eval chose on validation,
                   or without a validation split the final checkpoint's score
  time to target   seconds from the start of training to the first checkpoint
                   scoring --target or more (on what eval scores), and its step
  images/s         the median of training's progress lines (in a run shorter
                   than one progress interval: between its checkpoints)
as a table on stdout and as JSON in --out (default <log_root>/multi_seed.json).
A seed that fails (or Ctrl-C) stops the seeds not started yet; the report then
holds the seeds that finished, its JSON says what failed, and the exit status is 1.
Ctrl-C (or SIGTERM) is passed on once to the seeds' processes, which have their own
process group so that a terminal's Ctrl-C does not reach them twice: a training seed
saves a checkpoint of its step and stops, and the report names it; a second Ctrl-C
stops them at once.
State accuracy claims this way: a mean and spread over seeds, not one run.
"""
import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(REPO, 'resnet_main.py')
DEFAULT_LOG_ROOT = os.path.join('runs', 'multi_seed')
# Keep every checkpoint: time to target needs each one's score and the time it was written.
KEEP_ALL = '--keep_checkpoint_max=1000000'


class SeedRunError(Exception):
    """A training or eval process of one seed failed; the message names the seed and the cause."""


class SeedStopped(SeedRunError):
    """A stop signal ended a seed's training with a checkpoint of the step it stopped at."""

    def __init__(self, seed, step, checkpoint):
        super().__init__('seed %d: training stopped at step %d; checkpoint %s saved' % (seed, step, checkpoint))
        self.seed, self.step, self.checkpoint = seed, step, checkpoint


class _Parser(argparse.ArgumentParser):
    """A bad option is one line on stderr and exit status 2, without the usage text."""

    def error(self, message):
        self.exit(2, 'error: %s\n' % message)


def parse_args(argv):
    parser = _Parser(description=__doc__.split('\n\n')[0],
                                     usage='%(prog)s [options] -- [resnet_main.py flags]')
    parser.add_argument('--seeds', default='1,2,3', help='comma-separated random seeds (default 1,2,3)')
    parser.add_argument('--parallel', type=int, default=1, help='seeds run at a time (default 1)')
    parser.add_argument('--target', type=float, default=None,
                        help='precision in (0, 1] whose time to reach is reported (default: none)')
    parser.add_argument('--log_root', default=DEFAULT_LOG_ROOT, help='the seeds\' runs go in LOG_ROOT/seed-S')
    parser.add_argument('--out', default=None, help='the JSON file (default LOG_ROOT/multi_seed.json)')
    own, main_flags = _split_at_dashes(argv)
    options = parser.parse_args(own)
    options.seeds = parse_seeds(parser, options.seeds)
    if options.parallel < 1:
        parser.error('--parallel=%d: expected 1 or more' % options.parallel)
    if options.target is not None and not 0 < options.target <= 1:
        parser.error('--target=%g: expected a precision in (0, 1]' % options.target)
    for flag in main_flags:
        if re.match(r'--?(mode|log_root|random_seed)(=|$)', flag):  # absl: -flag, --flag value
            parser.error('%s: multi_seed.py sets it for each seed; leave it out' % flag)
    options.out = options.out or os.path.join(options.log_root, 'multi_seed.json')
    return options, main_flags


def _split_at_dashes(argv):
    if '--' in argv:
        at = argv.index('--')
        return argv[:at], argv[at + 1:]
    return argv, []


def parse_seeds(parser, text):
    """The distinct integer seeds of --seeds=`text` ('1,2,3'); parser.error (exit 2) otherwise."""
    try:
        seeds = [int(s) for s in text.split(',') if s.strip()]
    except ValueError:
        parser.error('--seeds=%s: expected comma-separated integers' % text)
    if not seeds or len(set(seeds)) != len(seeds):
        parser.error('--seeds=%s: expected distinct integers' % ','.join(map(str, seeds)))
    return seeds


def seed_commands(seed, log_root, main_flags):
    """(training's, eval's) resnet_main.py arguments for one seed, run in <log_root>/seed-<seed>."""
    keep = [] if any(f.startswith('--keep_checkpoint_max') for f in main_flags) else [KEEP_ALL]
    common = ['--log_root=' + _seed_dir(log_root, seed)] + main_flags
    return (['--mode=train', '--random_seed=%d' % seed, '--noeval_after_training'] + keep + common,
            ['--mode=eval'] + common)


def run_seed(seed, log_root, main_flags, target, prefix_output, env=None, name=None):
    """Trains and scores one seed; returns its result dict. Raises SeedRunError.

    env: the processes' environment (default: this one's), e.g. with the GPUs they may use;
    name: what the prefix of their output lines calls the seed (default 'seed S')."""
    run_dir = _seed_dir(log_root, seed)
    train_args, eval_args = seed_commands(seed, log_root, main_flags)
    start = time.time()
    train_output = _run(seed, 'train', train_args, prefix_output, env, name)
    train_seconds = time.time() - start
    stopped = re.search(r'stopped by SIG\w+ at step (\d+); checkpoint (.+?) saved; ', train_output)
    if stopped:
        raise SeedStopped(seed, int(stopped.group(1)), stopped.group(2))
    if re.search(r'stopped by SIG\w+ at step', train_output):
        raise SeedRunError('seed %d: training was stopped before its end' % seed)
    eval_output = _run(seed, 'eval', eval_args, prefix_output, env, name)
    if re.search(r'eval stopped by SIG\w+', eval_output):
        raise SeedRunError('seed %d: eval was stopped before its end' % seed)
    results = _read_json(os.path.join(run_dir, 'eval', 'results.json'), seed)
    final = results.get('test') or results.get('latest') or {}
    reached = _first_reaching(results.get('checkpoints', []), target)
    rates = [float(r) for r in re.findall(r'([0-9.]+) examples/sec', train_output)]
    if not rates:  # a run shorter than its progress interval
        rates = [_rate_between_checkpoints(run_dir, results.get('checkpoints', []))]
    return {
        'seed': seed, 'log_root': run_dir,
        'test_precision': final.get('precision'), 'test_step': final.get('step'),
        'chosen_on': results.get('best_is_chosen_on') if results.get('test') else 'the final checkpoint',
        'target_step': None if reached is None else reached['step'],
        'seconds_to_target': None if reached is None else _seconds_since(run_dir, reached['step'], start),
        'images_per_sec': statistics.median(rates) if None not in rates else None,
        'train_seconds': train_seconds,
    }


# The seeds' running processes, stopped on Ctrl-C; once stopping, no new one starts. Reentrant:
# the signal handler takes it in the main thread, and a second signal may come while it runs.
_CHILDREN, _CHILDREN_LOCK, _STOPPING = set(), threading.RLock(), threading.Event()
_STOP_SIGNALS = []  # the stop signals received, in order


def _run(seed, role, args, prefix_output, env=None, name=None):
    """resnet_main.py with args (in `env`, default this process's); returns its stderr (the log).
    SeedRunError when it fails."""
    with _CHILDREN_LOCK:
        if _STOPPING.is_set():
            raise SeedRunError('seed %d: stopped' % seed)
        # Its own session: a Ctrl-C in the terminal reaches this script only, which passes it on once.
        process = subprocess.Popen([sys.executable, MAIN] + args, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, cwd=os.getcwd(), env=env,
                                   start_new_session=True)
        _CHILDREN.add(process)
    try:
        return _output(seed, role, process, prefix_output, name)
    finally:
        with _CHILDREN_LOCK:
            _CHILDREN.discard(process)


def stopping():
    """Whether a stop signal came: no seed starts any more."""
    return _STOPPING.is_set()


def _on_stop_signal(signum, frame):
    """SIGINT, SIGTERM or SIGHUP: no seed starts any more, and each running process gets the signal
    (SIGTERM for SIGHUP): training saves a checkpoint and stops, eval stops; a second one
    passed on makes them exit at once."""
    with _CHILDREN_LOCK:
        _STOPPING.set()
        _STOP_SIGNALS.append(signum)
        for process in list(_CHILDREN):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)


def handle_stop_signals():
    """Installs _on_stop_signal, also over a SIGINT the parent ignored (a job started with `&` by a
    shell without job control). Only the main thread can; elsewhere (a test) nothing changes."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _on_stop_signal)


def _stop_failure(stopped_seeds):
    """The SeedRunError of a stop signal ('stopped by Ctrl-C' for SIGINT); its `stopped_seeds` are
    the SeedStopped of the seeds whose training it stopped with a checkpoint."""
    signum = _STOP_SIGNALS[0]
    failure = SeedRunError('stopped by %s' % ('Ctrl-C' if signum == signal.SIGINT else signal.Signals(signum).name))
    failure.stopped_seeds = stopped_seeds
    return failure


def _failure_line(failure):
    """The failure, and the checkpoints of the seeds a stop signal stopped, as one line."""
    return '; '.join([str(failure)] + [str(s) for s in getattr(failure, 'stopped_seeds', [])])


def _output(seed, role, process, prefix_output, name=None):
    lines = []
    for line in process.stdout:
        lines.append(line)
        if prefix_output:
            sys.stdout.write('[%s %s] %s' % (name or 'seed %d' % seed, role, line))
            sys.stdout.flush()
    if process.wait() != 0:
        errors = [line.strip() for line in lines if line.startswith('error:')] or [lines[-1].strip() if lines else '']
        raise SeedRunError('seed %d: %s failed (exit %d): %s' % (seed, role, process.returncode, errors[-1]))
    return ''.join(lines)


def _read_json(path, seed):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise SeedRunError('seed %d: cannot read %s: %s' % (seed, path, e)) from None


def _first_reaching(checkpoints, target):
    if target is None:
        return None
    return next((entry for entry in sorted(checkpoints, key=lambda e: e['step'])
                 if entry['precision'] >= target), None)


def _rate_between_checkpoints(run_dir, checkpoints):
    """Images/s from the first checkpoint after step 0 to the last (saving included), or None."""
    steps = sorted(e['step'] for e in checkpoints if e['step'] > 0)
    try:
        with open(os.path.join(run_dir, 'config.json')) as f:
            batch_size = json.load(f)['schedule']['batch_size']
        seconds = _checkpoint_time(run_dir, steps[-1]) - _checkpoint_time(run_dir, steps[0])
    except (OSError, ValueError, KeyError, IndexError):
        return None
    return (steps[-1] - steps[0]) * batch_size / seconds if seconds > 0 else None


def _seconds_since(run_dir, step, start):
    """Seconds from `start` to when the checkpoint of `step` was written, or None when it is gone."""
    try:
        return _checkpoint_time(run_dir, step) - start
    except OSError:
        return None


def _checkpoint_time(run_dir, step):
    """When the checkpoint of `step` was written (its index file's time)."""
    return os.path.getmtime(os.path.join(run_dir, 'model.ckpt-%d.index' % step))


def summarize(runs, key):
    """{'mean', 'std', 'n'} of runs' `key` where it is known; std is the sample standard deviation."""
    values = [run[key] for run in runs if run.get(key) is not None]
    return {'mean': statistics.mean(values) if values else None,
            'std': statistics.stdev(values) if len(values) > 1 else None, 'n': len(values)}


def table(runs, summary, target):
    """The per-seed rows and the mean and std, as text."""
    head = ['seed', 'test precision', 'step to %g' % target if target else 'step to target',
            'seconds to target', 'images/s', 'train seconds']
    rows = [[str(r['seed']), _fmt(r['test_precision'], '%.4f'), _fmt(r['target_step'], '%d'),
             _fmt(r['seconds_to_target'], '%.1f'), _fmt(r['images_per_sec'], '%.0f'),
             _fmt(r['train_seconds'], '%.1f')] for r in runs]
    for name, fmt in (('mean', '%.4f'), ('std', '%.4f')):
        rows.append([name, _fmt(summary['test_precision'][name], fmt), '',
                     _fmt(summary['seconds_to_target'][name], '%.1f'), _fmt(summary['images_per_sec'][name], '%.0f'),
                     _fmt(summary['train_seconds'][name], '%.1f')])
    widths = [max(len(row[i]) for row in [head] + rows) for i in range(len(head))]
    return '\n'.join('  '.join(cell.rjust(width) for cell, width in zip(row, widths)) for row in [head] + rows)


def _fmt(value, fmt):
    return '-' if value is None else fmt % value


def _seed_dir(log_root, seed):
    return os.path.join(log_root, 'seed-%d' % seed)


def _seed_dir_problem(log_root, seeds):
    """Why a seed's run directory cannot be used (it is not empty), or None."""
    for seed in seeds:
        run_dir = _seed_dir(log_root, seed)
        if os.path.isdir(run_dir) and os.listdir(run_dir):
            return SeedRunError('seed %d: %s is not empty; its times would be wrong: choose another --log_root '
                                'or delete it' % (seed, run_dir))
    return None


def run_all(options, main_flags):
    """Runs every seed, options.parallel at a time, until one fails.

    Returns (the finished runs in seed order, the SeedRunError that stopped the rest or None).
    """
    problem = _seed_dir_problem(options.log_root, options.seeds)  # before any seed spends hours
    if problem:
        return [], problem
    results, failures, lock = {}, [], threading.Lock()
    pending = list(options.seeds)
    prefix_output = options.parallel > 1 or len(options.seeds) > 1

    def worker():
        while True:
            with lock:
                if not pending or failures or _STOPPING.is_set():
                    return
                seed = pending.pop(0)
            try:
                result = run_seed(seed, options.log_root, main_flags, options.target, prefix_output)
            except Exception as e:  # noqa: B902 (any failure ends this seed, not the report)
                with lock:
                    failures.append(e if isinstance(e, SeedRunError) else SeedRunError('seed %d: %s' % (seed, e)))
                return
            with lock:
                results[seed] = result

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(options.parallel, len(options.seeds)))]
    for thread in threads:
        thread.start()
    for thread in threads:  # a stop signal ends the seeds' processes (_on_stop_signal), then these threads
        while thread.is_alive():
            thread.join(0.5)
    with lock:
        if _STOPPING.is_set():
            failures.insert(0, _stop_failure([f for f in failures if isinstance(f, SeedStopped)]))
        return [results[seed] for seed in options.seeds if seed in results], (failures[0] if failures else None)


def main(argv=None):
    """Runs the seeds; the report (JSON and table) holds every seed that finished, also when one
    failed or Ctrl-C stopped them: then it says so, and the exit status is 1."""
    options, main_flags = parse_args(sys.argv[1:] if argv is None else argv)
    handle_stop_signals()
    runs, failure = run_all(options, main_flags)
    if not runs:
        print('error: %s' % (_failure_line(failure) if failure else 'no seed finished'), file=sys.stderr)
        return 1
    summary = {key: summarize(runs, key)
               for key in ('test_precision', 'seconds_to_target', 'images_per_sec', 'train_seconds')}
    report = {'resnet_main_flags': main_flags, 'seeds': options.seeds, 'target': options.target,
              'parallel': options.parallel, 'runs': runs, 'summary': summary,
              'time': time.strftime('%Y-%m-%d %H:%M:%S')}
    if failure:
        report['failed'] = str(failure)
        report['stopped_with_a_checkpoint'] = [{'seed': s.seed, 'step': s.step, 'checkpoint': s.checkpoint}
                                               for s in getattr(failure, 'stopped_seeds', [])]
    os.makedirs(os.path.dirname(os.path.abspath(options.out)), exist_ok=True)
    with open(options.out, 'w') as f:
        json.dump(report, f, indent=1)
    print(table(runs, summary, options.target))
    if failure:
        print('error: %s; the finished seeds are in %s' % (_failure_line(failure), options.out), file=sys.stderr)
        return 1
    print('wrote %s' % options.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
