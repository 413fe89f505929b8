"""Two recipes at the same step budget, several seeds each: the held-out precision they reach.

  python scripts/benchmark_recipes.py                       # fast_cifar vs the classic schedule on digits
  python scripts/benchmark_recipes.py --steps=400 --seeds=1,2,3 --log_root=runs/recipes

Each recipe is a preset trained for --steps steps on the bundled digits, with the
digits network (ResNet-14, --num_residual_units=2) for both, so that only the recipe
differs: the classic piecewise schedule (resnet32_classic: 0.1, divided by 10 at 50%,
75% and 100% of the run) against fast_cifar (a warmup, a cosine from 0.2, Nesterov
momentum, label smoothing). scripts/multi_seed.py trains and scores every seed; this
prints the mean and sample standard deviation of each recipe's final held-out
precision (300 test images), and the difference. Not a test: it takes minutes.
"""
import argparse
import json
import os
import sys

import multi_seed  # scripts/multi_seed.py: Python puts a script's own directory first on sys.path

RECIPES = (('classic', ['--preset=resnet32_classic']), ('fast_cifar', ['--preset=fast_cifar']))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--steps', type=int, default=400, help='training steps of every run (default 400)')
    parser.add_argument('--seeds', default='1,2,3', help='comma-separated seeds (default 1,2,3)')
    parser.add_argument('--log_root', default=os.path.join('runs', 'recipes'),
                        help='each recipe\'s runs go in LOG_ROOT/<recipe>/seed-S')
    parser.add_argument('--parallel', type=int, default=1, help='seeds trained at a time (default 1)')
    return parser.parse_args(argv)


def recipe_flags(recipe_flags, steps):
    """resnet_main.py flags of one recipe's runs on the digits."""
    return ['--dataset=digits', '--num_residual_units=2', '--train_steps=%d' % steps,
            '--log_every_n_steps=100'] + recipe_flags


def run_recipe(name, flags, options):
    """Runs multi_seed.py for one recipe; returns its JSON report. SystemExit when it fails."""
    log_root = os.path.join(options.log_root, name)
    out = os.path.join(log_root, 'multi_seed.json')
    status = multi_seed.main(['--seeds=' + options.seeds, '--parallel=%d' % options.parallel,
                              '--log_root=' + log_root, '--out=' + out, '--'] + recipe_flags(flags, options.steps))
    if status != 0:
        raise SystemExit('error: the %s runs failed' % name)
    with open(out) as f:
        return json.load(f)


def summary_lines(reports, steps):
    """One line per recipe: the mean and std of its final held-out precision, per-seed values."""
    lines = ['recipe       held-out precision at step %d (mean +- std over seeds; per seed)' % steps]
    for name, report in reports.items():
        test = report['summary']['test_precision']
        per_seed = ', '.join('%.4f' % run['test_precision'] for run in report['runs'])
        lines.append('%-12s %.4f +- %.4f  (%s)' % (name, test['mean'], test['std'] or 0.0, per_seed))
    means = [report['summary']['test_precision']['mean'] for report in reports.values()]
    lines.append('fast_cifar - classic: %+.4f' % (means[1] - means[0]))
    return lines


def main(argv=None):
    options = parse_args(sys.argv[1:] if argv is None else argv)
    reports = {name: run_recipe(name, flags, options) for name, flags in RECIPES}
    print('\n'.join(summary_lines(reports, options.steps)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
