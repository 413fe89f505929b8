"""The accuracy table in one command: presets x datasets x seeds, each a run, beside the published figures.

  python scripts/reproduce.py --table=classic --seeds=1,2,3 --out=runs/reproduce
  python scripts/reproduce.py --presets=resnet110 --datasets=cifar10 --seeds=1,2,3,4,5 -- --data_format=NCHW
  python scripts/reproduce.py --table=classic --out=runs/reproduce --report     # the table so far
  python scripts/reproduce.py --table=classic --dry_run                         # the plan and its time

Each cell (preset, dataset, seed) is one run, OUT/<preset>/<dataset>/seed-<S>, trained and then
scored as scripts/multi_seed.py does it (train, then eval of every checkpoint kept): with a
validation split (--validation_size, default 5000 records held out of training) eval chooses
the best checkpoint on it and scores the test set once, on that one. Its figures are written to
OUT/<preset>/<dataset>/seed-<S>.json when the cell is done; a cell with that file is never
trained again. Running the same command again resumes the grid: unfinished runs resume from
their checkpoints, failed cells are tried again. Every flag after `--` goes to every run.

Devices: on a machine with GPUs (CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`; or --gpus=0,1,...)
one run per GPU at a time, each run seeing only its own (CUDA_VISIBLE_DEVICES); --gpus_per_run=K
gives each run K GPUs as K towers (--num_gpus=K). Without GPUs, --parallel=N runs at a time
(they share the cores). A failing cell is reported and the others go on. Ctrl-C or SIGTERM
stops every running cell (training saves a checkpoint of its step), as in multi_seed.py.

The table (printed, OUT/table.md, OUT/table.json, and OUT/table.png when matplotlib is
installed): per preset and dataset the mean and sample std of the test error over the seeds
finished, how many finished, the published figures (resnet_cifar/published.py) and the
difference, images/s; seeds not finished are named with their state. Exit status 0 when every
cell is finished, 1 when one failed or was stopped, 2 for a bad option (an --out that is a file
or cannot be written in), 130 for a Ctrl-C before the runs start or in --report or --dry_run.
"""
import argparse
import collections
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import multi_seed  # noqa: E402  (scripts/multi_seed.py: one run per seed, its stop signals)

from resnet_cifar import datasets  # noqa: E402  (no TensorFlow in these)
from resnet_cifar import presets  # noqa: E402
from resnet_cifar import published  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARK = os.path.join(REPO, 'scripts', 'benchmark.py')
# The named grids: the presets whose recipe is the published one (fast_cifar is a ResNet-20
# trained 30 epochs with another recipe: not He et al.'s).
TABLES = {'classic': ('resnet32_classic', 'resnet110', 'wrn28_10')}
DEFAULT_OUT = os.path.join('runs', 'reproduce')
# Flags every cell gets unless given after `--`: a validation split to choose the best checkpoint
# on, and checkpoints kept for eval to choose from (multi_seed.py would keep all: WRN-28-10's
# are 0.4 GB each).
CELL_DEFAULTS = (('validation_size', 5000), ('keep_checkpoint_max', 10))
# The grid sets these for each cell.
GRID_FLAGS = ('mode', 'log_root', 'train_dir', 'eval_dir', 'random_seed', 'preset', 'dataset')
# Training records of a download, for an estimate before the files are there.
DOWNLOAD_TRAIN_RECORDS = {'cifar10': 50000, 'cifar100': 50000}

Cell = collections.namedtuple('Cell', ['preset', 'dataset', 'seed'])


class _Parser(argparse.ArgumentParser):
    """A bad option is one line on stderr and exit status 2, without the usage text."""

    def error(self, message):
        self.exit(2, 'error: %s\n' % message)


def parse_args(argv):
    """(options, the flags after `--`); a bad option exits 2 with one line."""
    parser = _Parser(description=__doc__.split('\n\n')[0], usage='%(prog)s [options] -- [resnet_main.py flags]')
    parser.add_argument('--presets', default='', help='comma-separated presets (resnet_cifar/presets.py)')
    parser.add_argument('--table', default='', help='a named grid of presets: %s' % ', '.join(TABLES))
    parser.add_argument('--datasets', default='cifar10,cifar100', help='comma-separated datasets')
    parser.add_argument('--seeds', default='1,2,3', help='comma-separated random seeds (default 1,2,3)')
    parser.add_argument('--out', default=DEFAULT_OUT, help='the grid\'s directory (default %s)' % DEFAULT_OUT)
    parser.add_argument('--parallel', type=int, default=None,
                        help='runs at a time (default: one per GPU, or 1 without GPUs)')
    parser.add_argument('--gpus', default='auto', help='GPU ids to use, comma-separated; "none" for none; '
                        'auto: CUDA_VISIBLE_DEVICES, else nvidia-smi -L')
    parser.add_argument('--gpus_per_run', type=int, default=1, help='GPUs (towers) per run (default 1)')
    parser.add_argument('--report', action='store_true', help='print the table of the grid so far; train nothing')
    parser.add_argument('--dry_run', action='store_true', help='print the grid, its commands and a time estimate')
    parser.add_argument('--estimate_steps', type=int, default=3, help='steps timed per preset for --dry_run')
    parser.add_argument('--estimate_batch', type=int, default=32, help='batch the --dry_run timing uses')
    if '--' in argv:
        own, main_flags = argv[:argv.index('--')], argv[argv.index('--') + 1:]
    else:
        own, main_flags = argv, []
    options = parser.parse_args(own)
    options.presets = _names(parser, options, main_flags)
    options.datasets = _listed(parser, '--datasets', options.datasets, datasets.dataset_names())
    options.seeds = multi_seed.parse_seeds(parser, options.seeds)
    for name in ('parallel', 'gpus_per_run', 'estimate_steps', 'estimate_batch'):
        if getattr(options, name) is not None and getattr(options, name) < 1:
            parser.error('--%s=%d: expected 1 or more' % (name, getattr(options, name)))
    for flag in main_flags:
        if re.match(r'--?(%s)(=|$)' % '|'.join(GRID_FLAGS), flag):
            parser.error('%s: reproduce.py sets it for each cell; leave it out' % flag)
    return options, main_flags


def _names(parser, options, main_flags):
    """The presets of --presets or --table (exactly one of them)."""
    if bool(options.presets) == bool(options.table):
        parser.error('give --presets=a,b,... or --table=NAME (%s), one of them' % ', '.join(TABLES))
    if options.table:
        if options.table not in TABLES:
            parser.error('--table=%s: expected one of %s' % (options.table, ', '.join(TABLES)))
        return list(TABLES[options.table])
    return _listed(parser, '--presets', options.presets, presets.NAMES)


def _listed(parser, flag, value, known):
    names = [name.strip() for name in value.split(',') if name.strip()]
    for name in names:
        if name not in known:
            parser.error('%s=%s: %r is none of %s' % (flag, value, name, ', '.join(known)))
    if not names or len(set(names)) != len(names):
        parser.error('%s=%s: expected distinct names' % (flag, value))
    return names


def _given(main_flags, name):
    """Whether a flag `name` is among the flags after `--`."""
    return any(re.match(r'--?(no)?%s(=|$)' % name, flag) for flag in main_flags)


def _flag_value(main_flags, name):
    """The value of --name=VALUE after `--` (the last one), or None."""
    values = [flag.split('=', 1)[1] for flag in main_flags if re.match(r'--?%s=' % name, flag)]
    return values[-1] if values else None


# Devices.

def visible_gpus(spec, environ, nvidia_smi=shutil.which('nvidia-smi')):
    """The GPU ids the grid may use: `spec` ('auto', 'none' or '0,1,...'); 'auto' takes
    CUDA_VISIBLE_DEVICES from `environ` when set, else one id per line of `nvidia-smi -L`."""
    if spec == 'none':
        return []
    if spec != 'auto':
        return [gpu.strip() for gpu in spec.split(',') if gpu.strip()]
    if 'CUDA_VISIBLE_DEVICES' in environ:
        return [gpu.strip() for gpu in environ['CUDA_VISIBLE_DEVICES'].split(',')
                if gpu.strip() and not gpu.strip().startswith('-')]
    if not nvidia_smi:
        return []
    try:
        listing = subprocess.run([nvidia_smi, '-L'], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(l for l in listing.splitlines() if l.startswith('GPU '))]


def device_slots(gpus, gpus_per_run, parallel):
    """The devices of each run slot: [None] * parallel without GPUs (parallel default 1), else
    the GPUs in groups of gpus_per_run ('0', '1' or '0,1', ...), at most `parallel` of them.
    ValueError when there are fewer GPUs than one run takes."""
    if not gpus:
        return [None] * (parallel or 1)
    if len(gpus) < gpus_per_run:
        raise ValueError('--gpus_per_run=%d: only %d GPU(s) visible (%s)' % (gpus_per_run, len(gpus), ','.join(gpus)))
    groups = [','.join(gpus[i:i + gpus_per_run]) for i in range(0, len(gpus) - gpus_per_run + 1, gpus_per_run)]
    return groups[:parallel] if parallel else groups


def cell_env(devices, environ):
    """The environment of a run on `devices` (a slot of device_slots): CUDA_VISIBLE_DEVICES set
    to its GPUs, or `environ` as it is on a CPU slot (None)."""
    env = dict(environ)
    if devices is not None:
        env['CUDA_VISIBLE_DEVICES'] = devices
    return env


# Cells and their files.

def cells_of(options):
    return [Cell(p, d, s) for p in options.presets for d in options.datasets for s in options.seeds]


def cell_log_root(out, cell):
    """multi_seed's log root of a cell: its run is <this>/seed-<S>."""
    return os.path.join(out, cell.preset, cell.dataset)


def run_dir(out, cell):
    return os.path.join(cell_log_root(out, cell), 'seed-%d' % cell.seed)


def result_path(out, cell):
    return run_dir(out, cell) + '.json'


def failure_path(out, cell):
    return run_dir(out, cell) + '.failed'


def flags_path(out, cell):
    """The cell's flags, written when it starts (its seed-S.json has them once it is finished)."""
    return run_dir(out, cell) + '.flags.json'


def cell_flags(cell, main_flags, gpus_per_run=1):
    """resnet_main.py flags of a cell, but for --mode, --log_root and --random_seed (multi_seed's)."""
    flags = ['--preset=' + cell.preset, '--dataset=' + cell.dataset]
    flags += ['--%s=%d' % (name, value) for name, value in CELL_DEFAULTS if not _given(main_flags, name)]
    if gpus_per_run > 1 and not _given(main_flags, 'num_gpus'):
        flags.append('--num_gpus=%d' % gpus_per_run)
    return flags + list(main_flags)


def finished_result(out, cell):
    """The figures of a finished cell (its seed-S.json, whole and with a test precision), or None."""
    try:
        with open(result_path(out, cell)) as f:
            result = json.load(f)
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) and isinstance(result.get('test_precision'), float) else None


def _write_json(path, value):
    """Writes `value` to `path` whole or not at all (a temporary file, then renamed)."""
    with open(path + '.tmp', 'w') as f:
        json.dump(value, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + '.tmp', path)


def cell_state(out, cell):
    """('finished', result) | ('failed', message) | ('unfinished', latest checkpoint step) |
    ('not started', None)."""
    result = finished_result(out, cell)
    if result:
        return 'finished', result
    try:
        with open(failure_path(out, cell)) as f:
            return 'failed', f.read().strip()
    except OSError:
        pass
    steps = [int(m.group(1)) for m in (re.search(r'model\.ckpt-(\d+)\.index$', p) for p in
                                       glob.glob(os.path.join(glob.escape(run_dir(out, cell)), 'model.ckpt-*.index')))
             if m]
    if steps or os.path.isdir(run_dir(out, cell)):
        return 'unfinished', max(steps) if steps else None
    return 'not started', None


# Running the grid.

def run_cell(out, cell, main_flags, devices, gpus_per_run):
    """Trains and scores one cell (multi_seed.run_seed) and writes its seed-S.json; returns it."""
    flags = cell_flags(cell, main_flags, gpus_per_run)
    os.makedirs(cell_log_root(out, cell), exist_ok=True)
    _write_json(flags_path(out, cell), flags)
    if os.path.exists(failure_path(out, cell)):  # tried again: no longer failed while it runs
        os.remove(failure_path(out, cell))
    result = multi_seed.run_seed(cell.seed, cell_log_root(out, cell), flags, None, True,
                                 env=cell_env(devices, os.environ), name='%s %s seed %d' % cell)
    result.update(preset=cell.preset, dataset=cell.dataset, cuda_visible_devices=devices, cell_flags=flags,
                  test_error=100.0 * (1.0 - result['test_precision']))
    _write_json(result_path(out, cell), result)
    return result


def recorded_flags(out, cell):
    """(the flags a cell was trained or started with, the file that says so), or (None, None)
    for a cell never started (or started before its flags were recorded)."""
    result = finished_result(out, cell)
    if result:
        return result.get('cell_flags') or ['unknown'], result_path(out, cell)
    try:
        with open(flags_path(out, cell)) as f:
            flags = json.load(f)
    except (OSError, ValueError):
        return None, None
    return (flags, flags_path(out, cell)) if isinstance(flags, list) else (None, None)


def changed_flags_problem(options, main_flags):
    """Why the grid cannot go on in options.out (a finished or started cell's flags are not
    these: its row would mix two recipes), or None."""
    for cell in cells_of(options):
        recorded, path = recorded_flags(options.out, cell)
        flags = cell_flags(cell, main_flags, options.gpus_per_run)
        if recorded is not None and recorded != flags:
            return ('%s was %s with other flags (%s, now %s): give the same flags, or another --out'
                    % (path, 'started' if path == flags_path(options.out, cell) else 'trained',
                       ' '.join(recorded), ' '.join(flags)))
    return None


def _record_failure(out, cell, message):
    """Writes a cell's seed-S.failed (its error line); its folder may not exist yet (a run refused
    before resnet_main.py made it). A failure to write it is said, not raised."""
    try:
        os.makedirs(cell_log_root(out, cell), exist_ok=True)
        with open(failure_path(out, cell), 'w') as f:
            f.write(message + '\n')
    except OSError as e:
        print('[grid] %s: cannot record its failure: %s' % (_describe(cell), e), flush=True)


def _describe(cell):
    return '%s on %s, seed %d' % cell


def _take_cells(out, pending, lock, main_flags, devices, gpus_per_run, failures):
    """One slot's loop: runs cells from `pending` until none is left or a stop signal came."""
    while True:
        with lock:
            if not pending or multi_seed.stopping():
                return
            cell = pending.pop(0)
        where = ' (CUDA_VISIBLE_DEVICES=%s)' % devices if devices is not None else ''
        print('[grid] %s: starting%s' % (_describe(cell), where), flush=True)
        try:
            result = run_cell(out, cell, main_flags, devices, gpus_per_run)
        except Exception as e:  # noqa: B902 (any failure ends this cell, not the grid)
            message = str(e) if isinstance(e, multi_seed.SeedRunError) else '%s: %s' % (type(e).__name__, e)
            if not multi_seed.stopping():  # a stop is no failure: the cell resumes next time
                _record_failure(out, cell, message)
                with lock:
                    failures.append('%s: %s' % (_describe(cell), message))
            print('[grid] %s: %s' % (_describe(cell), message), flush=True)
            continue
        print('[grid] %s: test error %.2f%%' % (_describe(cell), result['test_error']), flush=True)


def run_grid(options, main_flags, slots):
    """Runs every unfinished cell, one per slot at a time. Returns the failures' lines."""
    cells = cells_of(options)
    pending = [cell for cell in cells if finished_result(options.out, cell) is None]
    print('[grid] %d cells, %d finished already, %d to run on %d slot(s)'
          % (len(cells), len(cells) - len(pending), len(pending), len(slots)), flush=True)
    failures, lock = [], threading.Lock()
    threads = [threading.Thread(target=_take_cells, daemon=True,
                                args=(options.out, pending, lock, main_flags, devices, options.gpus_per_run,
                                      failures)) for devices in slots[:len(pending)]]
    for thread in threads:
        thread.start()
    for thread in threads:  # a stop signal ends the runs' processes (multi_seed), then these threads
        while thread.is_alive():
            thread.join(0.5)
    return failures


# The table.

def model_of(preset, main_flags):
    """The model's name ('ResNet-32') of a preset's runs, with the flags that change it (the flags
    after `--`, or a cell's recorded flags)."""
    flags = dict(presets.PRESETS[preset].flags)
    for name in ('num_residual_units', 'width'):
        if _flag_value(main_flags, name) is not None:
            flags[name] = int(_flag_value(main_flags, name))
    if _given(main_flags, 'use_bottleneck'):
        flags['use_bottleneck'] = not any(re.match(r'--?nouse_bottleneck$|--?use_bottleneck=(false|0)$', f, re.I)
                                          for f in main_flags if 'use_bottleneck' in f)
    return published.model_name(flags)


def table_rows(options, main_flags):
    """One dict per (preset, dataset), from the cells' files: its seeds' states, the mean and sample
    std of the test error in % over the finished ones, images/s, the published figures."""
    rows = []
    for preset in options.presets:
        model = model_of(preset, _preset_flags(options, preset, main_flags))
        for dataset in options.datasets:
            cells = [Cell(preset, dataset, seed) for seed in options.seeds]
            states = [(cell, cell_state(options.out, cell)) for cell in cells]
            finished = [value for _, (state, value) in states if state == 'finished']
            error = multi_seed.summarize(finished, 'test_error')
            figures = published.figures_for(model, dataset)
            rows.append({
                'preset': preset, 'dataset': dataset, 'model': model,
                'seeds': options.seeds, 'seeds_finished': len(finished),
                'test_error': error, 'images_per_sec': multi_seed.summarize(finished, 'images_per_sec'),
                'published': [dict(error=f.error, source=f.source, table=f.table, note=f.note, quoted=f.quoted,
                                   cite=f.short_cite) for f in figures],
                'difference': (error['mean'] - figures[0].error) if figures and error['mean'] is not None else None,
                'cells': [_cell_entry(options.out, cell, state, value) for cell, (state, value) in states],
            })
    return rows


def _preset_flags(options, preset, main_flags):
    """The flags a preset's cells were trained with (the first cell's that recorded them), else
    `main_flags`: a --report without the grid's flags names the model its cells trained."""
    for dataset in options.datasets:
        for seed in options.seeds:
            recorded, _ = recorded_flags(options.out, Cell(preset, dataset, seed))
            if recorded is not None and recorded != ['unknown']:
                return recorded
    return main_flags


def _cell_entry(out, cell, state, value):
    entry = {'seed': cell.seed, 'state': state, 'log_root': run_dir(out, cell)}
    if state == 'finished':
        entry.update(test_error=value['test_error'], test_precision=value['test_precision'],
                     test_step=value['test_step'], images_per_sec=value['images_per_sec'])
    elif state == 'failed':
        entry['error'] = value
    elif state == 'unfinished':
        entry['latest_checkpoint_step'] = value
    return entry


def _fmt(value, fmt):
    return '-' if value is None else fmt % value


def markdown(rows):
    """The table as markdown: a line per (preset, dataset)."""
    lines = ['| preset | model | dataset | test error % (mean ± std) | seeds | published % | difference '
             '| images/s | seeds not finished |', '|' + ' --- |' * 9]
    for row in rows:
        error = row['test_error']
        ours = '-' if error['mean'] is None else '%.2f ± %s' % (error['mean'], _fmt(error['std'], '%.2f'))
        figures = '; '.join('%.2f (%s)' % (f['error'], f['cite']) for f in row['published']) or '-'
        others = '; '.join(_not_finished(c) for c in row['cells'] if c['state'] != 'finished') or '-'
        lines.append('| %s | %s | %s | %s | %d/%d | %s | %s | %s | %s |' % (
            row['preset'], row['model'], row['dataset'], ours, row['seeds_finished'], len(row['seeds']), figures,
            _fmt(row['difference'], '%+.2f'), _fmt(row['images_per_sec']['mean'], '%.0f'), others))
    notes = dict.fromkeys('- %s on %s, %.2f (%s): %s' % (row['model'], row['dataset'], f['error'], f['cite'], f['note'])
                          for row in rows for f in row['published'] if f['note'])
    if notes:
        lines += ['', 'Top-1 test error in %; the difference is our mean minus the first published figure. '
                  'The published figures:'] + list(notes)
    return '\n'.join(lines) + '\n'


def _not_finished(cell):
    if cell['state'] == 'failed':
        return 'seed %d failed: %s' % (cell['seed'], cell['error'].replace('|', '/'))
    if cell['state'] == 'unfinished':
        return 'seed %d unfinished (%s)' % (cell['seed'], 'no checkpoint' if cell['latest_checkpoint_step'] is None
                                            else 'step %d' % cell['latest_checkpoint_step'])
    return 'seed %d not started' % cell['seed']


def write_table(options, main_flags):
    """Prints the table and writes OUT/table.md, OUT/table.json and OUT/table.png. Returns the rows."""
    rows = table_rows(options, main_flags)
    text = markdown(rows)
    os.makedirs(options.out, exist_ok=True)
    with open(os.path.join(options.out, 'table.md'), 'w') as f:
        f.write(text)
    _write_json(os.path.join(options.out, 'table.json'),
                {'rows': rows, 'resnet_main_flags': main_flags, 'seeds': options.seeds,
                 'error_is': 'top-1 test error in %, 100 * (1 - test precision); std is the sample std'})
    print(text, end='')
    plot(rows, os.path.join(options.out, 'table.png'))
    return rows


def _depth(model):
    return int(re.match(r'(?:ResNet|WRN)-(\d+)', model).group(1))


def plot(rows, path):
    """Error against depth, ours with error bars beside the published points, a panel per
    dataset; skipped with one line when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        print('[grid] no %s: matplotlib is not installed (pip install matplotlib)' % path)
        return
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    names = list(dict.fromkeys(row['dataset'] for row in rows))
    figure, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for axis, dataset in zip(axes[0], names):
        ours = [r for r in rows if r['dataset'] == dataset and r['test_error']['mean'] is not None]
        axis.errorbar([_depth(r['model']) for r in ours], [r['test_error']['mean'] for r in ours],
                      yerr=[r['test_error']['std'] or 0 for r in ours], fmt='o', capsize=4, label='ours (mean ± std)')
        for r in ours:
            axis.annotate('%s (%d/%d)' % (r['preset'], r['seeds_finished'], len(r['seeds'])),
                          (_depth(r['model']), r['test_error']['mean']), fontsize=7, color='C0')
        papers = [f for f in published.FIGURES if f.dataset == dataset]
        axis.plot([_depth(f.model) for f in papers], [f.error for f in papers], 'x', label='published')
        for f in papers:
            axis.annotate(f.model, (_depth(f.model), f.error), fontsize=7)
        axis.set(xscale='log', xlabel='depth', ylabel='test error %', title=dataset)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    print('[grid] wrote %s' % path)


# --dry_run: the plan and an estimate of its time.

def cell_steps(cell, main_flags, batch_size):
    """Training steps of a cell: --train_steps, else the preset's, else its epochs over the
    training records (less the validation split); None when they cannot be counted."""
    steps = _flag_value(main_flags, 'train_steps')
    epochs = _flag_value(main_flags, 'train_epochs')
    if steps is None and epochs is None:
        steps, epochs = presets.PRESETS[cell.preset].flags.get('train_steps'), \
            presets.PRESETS[cell.preset].flags.get('train_epochs')
    if steps is not None:
        return int(steps)
    path = _flag_value(main_flags, 'train_data_path') or datasets.dataset_info(cell.dataset).default_train_path
    try:
        records = datasets.count_records(cell.dataset, path)
    except Exception:  # noqa: B902 (not downloaded yet: a download's count)
        records = DOWNLOAD_TRAIN_RECORDS.get(cell.dataset)
    if records is None:
        return None
    validation = _flag_value(main_flags, 'validation_size')
    held_out = int(validation) if validation is not None else dict(CELL_DEFAULTS)['validation_size']
    return int(float(epochs) * (records - held_out) / batch_size)


def measure_rate(preset, main_flags, on_gpu, steps, batch_size):
    """(training images/s of the preset's network on this machine from `steps` timed steps of
    scripts/benchmark.py on in-memory data at `batch_size`, or None; what went wrong or '')."""
    flags = dict(presets.PRESETS[preset].flags)
    args = [sys.executable, BENCHMARK, '--skip=real,input,eval,breakdown,torch', '--warmup_steps=1',
            '--steps=%d' % steps, '--windows=1', '--matmul_size=64', '--batch_size=%d' % batch_size,
            '--num_residual_units=%s' % (_flag_value(main_flags, 'num_residual_units') or flags['num_residual_units']),
            '--width=%s' % (_flag_value(main_flags, 'width') or flags.get('width', 1)),
            '--device=%s' % ('gpu' if on_gpu else 'cpu')]
    if _flag_value(main_flags, 'compute_dtype'):
        args.append('--compute_dtype=' + _flag_value(main_flags, 'compute_dtype'))
    done = subprocess.run(args, capture_output=True, text=True)
    try:
        return float(json.loads(done.stdout.strip().splitlines()[-1])['train_images_per_sec_synthetic']), ''
    except (ValueError, KeyError, IndexError):
        lines = (done.stderr or done.stdout).strip().splitlines()
        return None, 'benchmark.py failed (exit %d): %s' % (done.returncode, lines[-1] if lines else '')


def dry_run(options, main_flags, slots):
    """Prints the grid, each cell's commands and state, and the estimated time of what is left."""
    cells = cells_of(options)
    gpus = [s for s in slots if s is not None]
    print('grid: %d preset(s) x %d dataset(s) x %d seed(s) = %d cells in %s, %d at a time on %s'
          % (len(options.presets), len(options.datasets), len(options.seeds), len(cells), options.out, len(slots),
             'GPUs ' + ' | '.join(gpus) + ' (CUDA_VISIBLE_DEVICES of each slot)' if gpus else 'the CPU'))
    for cell in cells:
        state, value = cell_state(options.out, cell)
        print('%s: %s%s' % (_describe(cell), state, '' if value is None or state == 'finished' else ' (%s)' % value))
        train_args, eval_args = multi_seed.seed_commands(cell.seed, cell_log_root(options.out, cell),
                                                         cell_flags(cell, main_flags, options.gpus_per_run))
        for role, args in (('train', train_args), ('eval', eval_args)):
            print('  %s: %s' % (role, shlex.join([sys.executable, multi_seed.MAIN] + args)))
    _print_estimate(options, main_flags, cells, gpus)


def _print_estimate(options, main_flags, cells, gpus):
    batch_size = int(_flag_value(main_flags, 'batch_size') or 128)
    left = [cell for cell in cells if finished_result(options.out, cell) is None]
    total, unknown = 0.0, []
    print('ESTIMATE (not measured on a real run): training images/s from %d steps of scripts/benchmark.py at '
          'batch %d on in-memory data, on this machine; eval not counted' % (options.estimate_steps,
                                                                             options.estimate_batch))
    for preset in options.presets:
        rate, problem = measure_rate(preset, main_flags, bool(gpus), options.estimate_steps, options.estimate_batch)
        mine = [cell for cell in left if cell.preset == preset]
        steps = [cell_steps(cell, main_flags, batch_size) for cell in mine]
        if rate is None or None in steps:
            unknown.append(preset)
            print('  %s: no estimate: %s' % (preset, problem or 'its steps cannot be counted'))
            continue
        seconds = sum(steps) * batch_size / rate
        total += seconds
        print('  %s (%s): %s images/s; %d cell(s) left, %d steps of %d images: %.1f hours of one %s'
              % (preset, model_of(preset, main_flags), '%.0f' % rate if rate >= 10 else '%.2g' % rate, len(mine),
                 sum(steps), batch_size, seconds / 3600, 'GPU' if gpus else 'CPU (this machine\'s cores)'))
    wall, device_seconds = wall_and_device_seconds(total, len(gpus), options.gpus_per_run)
    towers = ' (assuming runs of %d GPUs as towers are no faster than on one)' % options.gpus_per_run \
        if gpus and options.gpus_per_run > 1 else ''
    print('  total: %.1f %s-hours; about %.1f hours of wall time%s%s (ESTIMATE)'
          % (device_seconds / 3600, 'GPU' if gpus else 'CPU', wall / 3600, towers,
             ' without ' + ', '.join(unknown) if unknown else ''))


def wall_and_device_seconds(total, gpu_slots, gpus_per_run):
    """(wall seconds, GPU- or CPU-seconds) of runs taking `total` seconds in all at one run's
    measured rate: on GPUs the slots run side by side and each run holds gpus_per_run GPUs (no
    speed-up from towers assumed); on a CPU (no GPU slots) the runs share its cores."""
    if not gpu_slots:
        return total, total
    return total / gpu_slots, total * gpus_per_run


def out_problem(out):
    """Why the grid cannot write in `out` (a file, or a directory it may not write in), or None."""
    if os.path.exists(out) and not os.path.isdir(out):
        return '--out=%s: exists and is not a directory' % out
    existing = os.path.abspath(out)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        return '--out=%s: cannot write in %s' % (out, existing)
    return None


def main(argv=None):
    """Runs (or reports, or plans) the grid; see the module's docstring for the exit status. A
    Ctrl-C before the stop signals are handled (or in --report, --dry_run) is one line, exit 130."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print('error: interrupted', file=sys.stderr)
        return 130


def _main(argv):
    options, main_flags = parse_args(sys.argv[1:] if argv is None else argv)
    problem = out_problem(options.out)
    if problem:
        print('error: %s' % problem, file=sys.stderr)
        return 2
    if options.report:
        write_table(options, main_flags)
        return 0
    try:
        slots = device_slots(visible_gpus(options.gpus, os.environ), options.gpus_per_run, options.parallel)
    except ValueError as e:
        print('error: %s' % e, file=sys.stderr)
        return 2
    if options.dry_run:
        dry_run(options, main_flags, slots)
        return 0
    problem = changed_flags_problem(options, main_flags)
    if problem:
        print('error: %s' % problem, file=sys.stderr)
        return 2
    multi_seed.handle_stop_signals()
    failures = run_grid(options, main_flags, slots)
    rows = write_table(options, main_flags)
    left = sum(1 for row in rows for cell in row['cells'] if cell['state'] != 'finished')
    table_md = os.path.join(options.out, 'table.md')
    if multi_seed.stopping():
        print('error: stopped by a signal; %d cell(s) not finished: the same command resumes them; the table is in %s'
              % (left, table_md), file=sys.stderr)
        return 1
    if failures:
        print('error: %d cell(s) failed, the first: %s; the table is in %s' % (len(failures), failures[0], table_md),
              file=sys.stderr)
        return 1
    if left:  # a slot that ended without a failure of its cell: never expected, never hidden
        print('error: %d cell(s) not finished; the table is in %s' % (left, table_md), file=sys.stderr)
        return 1
    print('[grid] every cell finished; wrote %s and table.json' % table_md)
    return 0


if __name__ == '__main__':
    sys.exit(main())
