"""scripts/plot_curves.py: the curves and the confusion matrix it draws, its one-line errors, and
a run of it that prints only what it wrote."""
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from resnet_cifar import evaluation
from resnet_cifar import summaries
import processes

plot_curves = processes.load_script('plot_curves')

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def png_size(path):
    """(width, height) from the PNG header; checks the signature and the IHDR chunk."""
    with open(path, 'rb') as f:
        head = f.read(24)
    assert head[:8] == PNG_SIGNATURE, head[:8]
    assert head[12:16] == b'IHDR'
    return struct.unpack('>II', head[16:24])


@pytest.mark.timeout(60)
def test_plot_curves_draws_train_loss_and_eval_precision(tmp_path, capsys):
    log_root = str(tmp_path / 'run')
    for step in (100, 200, 300):
        summaries.write_scalars(os.path.join(log_root, 'train'), step, {
            'total_loss': 3.0 - step / 200.0, 'cross_entropy': 2.9 - step / 200.0, 'precision': step / 400.0})
    for step in (150, 300):
        summaries.write_scalars(os.path.join(log_root, 'eval'), step, {
            'Precision': step / 500.0, 'Best Precision': step / 500.0, 'loss': 2.0})
    summaries.write_scalars(os.path.join(log_root, 'eval'), 300, {'Precision': 0.7})  # logged again: last wins

    scalars = plot_curves.read_scalars(log_root)
    assert sorted(scalars) == ['eval', 'train']
    assert scalars['train']['total_loss'] == [(100, 2.5), (200, 2.0), (300, 1.5)]
    assert scalars['eval']['Precision'] == [(150, pytest.approx(0.3)), (300, pytest.approx(0.7))]

    out = str(tmp_path / 'plots' / 'curves.png')
    assert plot_curves.main([log_root, out]) == 0
    width, height = png_size(out)
    assert (width, height) == (plot_curves.FIGURE_INCHES[0] * plot_curves.DPI,
                               plot_curves.FIGURE_INCHES[1] * plot_curves.DPI)
    assert os.path.getsize(out) > 10000  # axes, lines and legends, not a blank image
    assert 'wrote ' + out in capsys.readouterr().out

    # The confusion matrix of eval's results.json, when asked; one line when there is none.
    confusion_png = str(tmp_path / 'plots' / 'confusion.png')
    assert plot_curves.main([log_root, out, '--confusion=' + confusion_png]) == 1
    assert 'results.json: no confusion matrix to draw' in capsys.readouterr().err
    results = evaluation.Results(os.path.join(log_root, 'eval'), evaluation.Records('test', 'test.bin', 0),
                                 ['cat', 'dog', 'eel'])
    results.add(evaluation.Score(300, 0.6, 1.0, 10, 1.0, confusion=np.array([[3, 1, 0], [1, 2, 1], [0, 1, 1]])))
    assert plot_curves.main([log_root, out, '--confusion=' + confusion_png]) == 0
    assert png_size(confusion_png)[0] >= 500 and os.path.getsize(confusion_png) > 10000


@pytest.mark.timeout(30)
def test_plot_curves_errors_are_one_line(tmp_path, capsys):
    assert plot_curves.main([str(tmp_path / 'missing'), str(tmp_path / 'a.png')]) == 2
    assert plot_curves.main([str(tmp_path), str(tmp_path / 'a.png')]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == ['error: LOG_ROOT %s: not a directory' % (tmp_path / 'missing'),
                   'error: no event files under %s: train first' % tmp_path]
    assert not os.path.exists(str(tmp_path / 'a.png'))


def luminance(rgba):
    """Relative brightness of a matplotlib colour, 0 (black) to 1 (white)."""
    from matplotlib import colors
    red, green, blue, _ = colors.to_rgba(rgba)
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


@pytest.mark.timeout(60)
def test_the_precision_panel_is_scaled_to_a_run_near_one():
    """A run at 0.99: its eval points stand clear of the panel's edges instead of lying on a
    0-to-1 frame, and the panel spans the values, not the whole unit range."""
    scalars = {'train': {'precision': [(100, 0.93), (200, 0.97), (300, 0.98)], 'total_loss': [(100, 0.5), (300, 0.1)]},
               'eval': {'Precision': [(150, 0.985), (300, 0.9933)], 'Precision@5': [(150, 1.0), (300, 1.0)]}}
    figure = plot_curves.curves_figure(scalars)
    try:
        precision_axes = figure.axes[1]
        bottom, top = precision_axes.get_ylim()
        span = top - bottom
        assert bottom < 0.93 - 0.02 * span and top > 1.0 + 0.02 * span, (bottom, top)
        assert span < 0.3, (bottom, top)
    finally:
        figure.clf()


@pytest.mark.timeout(60)
def test_confusion_counts_contrast_with_their_cells(tmp_path):
    results = evaluation.Results(str(tmp_path), evaluation.Records('test', 'test.bin', 0), ['cat', 'dog', 'eel'])
    results.add(evaluation.Score(300, 0.6, 1.0, 10, 1.0, confusion=np.array([[90, 1, 0], [5, 40, 3], [0, 20, 60]])))
    figure = plot_curves.confusion_figure(os.path.join(str(tmp_path), 'results.json'))
    try:
        axes = figure.axes[0]
        image = axes.images[0]
        texts = axes.texts
        assert len(texts) == 9
        for text in texts:
            column, row = text.get_position()
            cell = image.cmap(image.norm(image.get_array()[int(row)][int(column)]))
            assert abs(luminance(cell) - luminance(text.get_color())) > 0.4, (text.get_text(), cell, text.get_color())
    finally:
        figure.clf()


@pytest.mark.timeout(240)
def test_plot_curves_prints_only_what_it_wrote(tmp_path):
    """No TensorFlow start-up noise (absl's banner, oneDNN and CUDA lines, deprecation notices),
    with TF_CPP_MIN_LOG_LEVEL unset as in a user's shell."""
    log_root = str(tmp_path / 'run')
    for step in (100, 200):
        summaries.write_scalars(os.path.join(log_root, 'train'), step, {'total_loss': 1.0, 'precision': 0.5})
    out = str(tmp_path / 'curves.png')
    env = dict(os.environ)
    env.pop('TF_CPP_MIN_LOG_LEVEL', None)
    done = subprocess.run([sys.executable, os.path.join(processes.REPO, 'scripts', 'plot_curves.py'), log_root, out],
                          capture_output=True, text=True, env=env, timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == ''
    assert done.stdout == 'wrote %s (train)\n' % out
