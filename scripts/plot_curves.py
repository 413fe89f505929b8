"""Train loss and eval precision against step, from the event files, into a PNG.

  python scripts/plot_curves.py runs/cifar10 curves.png [--confusion=confusion.png]

For headless servers where TensorBoard is out of reach. Reads every event file
under LOG_ROOT (each directory is a run: train, eval, ...) and draws two panels:
loss (train total_loss and cross_entropy, eval loss, which is cross-entropy; log scale) and
precision (train batch precision, eval Precision and Precision@5). With
--confusion, also the confusion matrix of eval's final evaluation (from
<eval_dir>/results.json): the test score of the best checkpoint when the run has a
validation split, else the last checkpoint eval scored. Needs matplotlib: pip install matplotlib, or the
project's 'plot' extra.
"""
import argparse
import os
import sys

# (tag, line style) per panel; 'cost' is the total loss of runs from before it was renamed.
LOSS_TAGS = (('total_loss', '-'), ('cost', '-'), ('cross_entropy', '--'), ('loss', '-'))
PRECISION_TAGS = (('precision', '-'), ('Precision', '-'), ('Precision@5', '--'))
FIGURE_INCHES = (12, 4.5)
DPI = 100


class PlotError(Exception):
    """Nothing to plot or no way to plot it; the message says which and what to do."""


def event_files(log_root):
    """{run: [event file paths]}, run being the directory relative to log_root ('.' for itself)."""
    runs = {}
    for directory, _, names in sorted(os.walk(log_root)):
        paths = sorted(os.path.join(directory, n) for n in names if '.tfevents.' in n)
        if paths:
            runs[os.path.relpath(directory, log_root)] = paths
    return runs


def read_scalars(log_root):
    """{run: {tag: [(step, value)] sorted by step}} of every scalar under log_root.

    A step logged twice (a resumed run) keeps its last value. A file cut short
    (training still writing it) gives what was read before the cut.
    """
    import tensorflow as tf
    result = {}
    for run, paths in event_files(log_root).items():
        series = {}
        for path in paths:
            try:
                for event in tf.compat.v1.train.summary_iterator(path):
                    for value in event.summary.value:
                        if value.HasField('simple_value'):
                            series.setdefault(value.tag, {})[event.step] = value.simple_value
            except tf.errors.DataLossError:
                pass
        if series:
            result[run] = {tag: sorted(points.items()) for tag, points in series.items()}
    return result


def require_matplotlib():
    """The matplotlib module, set to draw without a display; PlotError when it is missing."""
    try:
        import matplotlib
    except ImportError:
        raise PlotError("matplotlib is not installed: pip install matplotlib "
                        "(or pip install -e '.[plot]')") from None
    matplotlib.use('Agg')
    return matplotlib


def curves_figure(scalars, title=None):
    """The matplotlib figure of the loss and precision panels of `scalars` (as read_scalars
    returns); PlotError when it holds neither."""
    require_matplotlib()
    import matplotlib.pyplot as plt

    figure, (loss_axes, precision_axes) = plt.subplots(1, 2, figsize=FIGURE_INCHES, dpi=DPI)
    drawn = 0
    for axes, tags, label in ((loss_axes, LOSS_TAGS, 'loss'), (precision_axes, PRECISION_TAGS, 'precision')):
        for run in sorted(scalars):
            for tag, style in tags:
                points = scalars[run].get(tag)
                if points:
                    steps, values = zip(*points)
                    axes.plot(steps, values, style, marker='.' if len(points) < 30 else None,
                              label='%s %s' % (run, tag))
                    drawn += 1
        axes.set_xlabel('global step')
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
        if axes.lines:
            axes.legend(fontsize='small')
    if not drawn:
        plt.close(figure)
        raise PlotError('no loss or precision scalars in the event files (tags %s)'
                        % ', '.join(t for t, _ in LOSS_TAGS + PRECISION_TAGS))
    precision_axes.set_ylim(*padded_limits([v for line in precision_axes.lines for v in line.get_ydata()]))
    losses = [value for line in loss_axes.lines for value in line.get_ydata()]
    if losses and min(losses) > 0:
        # A log scale: the untrained step-0 eval loss (about 2.3 for 10 classes) would otherwise
        # flatten the curves of a short run that ends near 0.05.
        loss_axes.set_yscale('log')
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def padded_limits(values, margin=0.08, least_margin=0.005):
    """(bottom, top) of an axis that shows `values` with `margin` of their span (at least
    `least_margin`) free at each end: a run at 0.99 stands clear of the frame."""
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    pad = max(margin * (high - low), least_margin)
    return low - pad, high + pad


def text_colour(background):
    """'white' on a dark background colour (RGBA), 'black' on a light one."""
    red, green, blue = background[:3]
    return 'white' if 0.2126 * red + 0.7152 * green + 0.0722 * blue < 0.5 else 'black'


def save(figure, out_path):
    """Writes `figure` to the PNG out_path (its directory made if missing) and closes it."""
    import matplotlib.pyplot as plt
    try:
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        figure.savefig(out_path, format='png')
    finally:
        plt.close(figure)


def plot(scalars, out_path, title=None):
    """Draws the loss and precision panels of `scalars` (as read_scalars returns) into out_path."""
    save(curves_figure(scalars, title), out_path)


def confusion_figure(results_path):
    """The matplotlib figure of the confusion matrix of results.json's final evaluation: its test
    score (a run with a validation split), else its latest checkpoint's."""
    import json
    require_matplotlib()
    import matplotlib.pyplot as plt
    try:
        with open(results_path) as f:
            results = json.load(f)
        final = results.get('test') or results['latest']
        confusion, names = final['confusion_matrix'], final.get('class_names')
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PlotError('%s: no confusion matrix to draw (%s); run eval first' % (results_path, e)) from None
    size = len(confusion)
    figure, axes = plt.subplots(figsize=(max(5, size * 0.5), max(4, size * 0.45)), dpi=DPI)
    image = axes.imshow(confusion, cmap='Blues')
    figure.colorbar(image, ax=axes, label='images')
    if size <= 20:  # readable labels and counts
        labels = names or [str(c) for c in range(size)]
        axes.set_xticks(range(size), labels, rotation=90)
        axes.set_yticks(range(size), labels)
        for row in range(size):
            for column in range(size):
                count = confusion[row][column]
                axes.text(column, row, count, ha='center', va='center', fontsize='x-small',
                          color=text_colour(image.cmap(image.norm(count))))
    axes.set_xlabel('taken for')
    axes.set_ylabel('true class')
    axes.set_title('%sstep %d: precision %.4f' % ('test, ' if results.get('test') else '', final['step'],
                                                  final['precision']))
    figure.tight_layout()
    return figure


def plot_confusion(results_path, out_path):
    """Draws the confusion matrix of results.json's final evaluation into out_path."""
    save(confusion_figure(results_path), out_path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('log_root', help='directory of the runs (for example runs/cifar10)')
    parser.add_argument('out_png', help='the PNG to write')
    parser.add_argument('--confusion', metavar='PNG',
                        help='also draw the confusion matrix of eval\'s final evaluation into PNG')
    parser.add_argument('--eval_dir', help='where eval wrote results.json (default: LOG_ROOT/eval)')
    args = parser.parse_args(argv)
    if not os.path.isdir(args.log_root):
        sys.stderr.write('error: LOG_ROOT %s: not a directory\n' % args.log_root)
        return 2
    try:
        require_matplotlib()  # before the slow part
        if not event_files(args.log_root):
            raise PlotError('no event files under %s: train first' % args.log_root)
        from resnet_cifar import quiet  # TensorFlow without its start-up noise, as resnet_main.py
        quiet.prepare(uses_gpu=False)
        quiet.import_tensorflow()
        scalars = read_scalars(args.log_root)
        if not scalars:
            raise PlotError('no scalars in the event files under %s' % args.log_root)
        plot(scalars, args.out_png, title=args.log_root)
        if args.confusion:
            plot_confusion(os.path.join(args.eval_dir or os.path.join(args.log_root, 'eval'), 'results.json'),
                           args.confusion)
    except PlotError as e:
        sys.stderr.write('error: %s\n' % e)
        return 1
    except OSError as e:
        sys.stderr.write('error: OUT_PNG %s: %s\n' % (args.out_png, e.strerror or e))
        return 1
    print('wrote %s (%s)' % (args.out_png, ', '.join(sorted(scalars))))
    if args.confusion:
        print('wrote %s' % args.confusion)
    return 0


if __name__ == '__main__':
    sys.exit(main())
