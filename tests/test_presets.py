"""presets.py: each preset's recipe is well formed and documented, and apply() fills in only the
flags not given. How resolve.py turns a preset into a schedule is in test_recipes.py."""
import os

import pytest

from processes import REPO
from resnet_cifar import presets

# A few flags as the command line gives them, none given.
DEFAULTS = {'preset': '', 'num_residual_units': 5, 'train_steps': 80000, 'train_epochs': 0.0, 'width': 1,
            'optimizer': 'mom', 'weight_decay_rate': 0.0002, 'lr_schedule': 'piecewise', 'lrn_rate': 0.1}


@pytest.mark.timeout(10)
@pytest.mark.parametrize('name', presets.NAMES)
def test_each_preset_is_a_whole_recipe(name):
    preset = presets.PRESETS[name]
    assert set(preset.flags) <= set(DEFAULTS) | {'label_smoothing'}, sorted(preset.flags)
    assert len(set(preset.flags) & set(presets.LENGTH_FLAGS)) == 1  # says how long, one way
    if preset.boundaries is not None:
        assert list(preset.boundaries) == sorted(preset.boundaries) and 0 < preset.boundaries[0]
        assert preset.boundaries[-1] <= 1  # fractions of the run
    if preset.rates is not None:
        assert preset.boundaries is not None and len(preset.rates) == len(preset.boundaries) + 1
        assert all(rate > 0 for rate in preset.rates)
    assert 0 <= preset.warmup < 1 and preset.summary


@pytest.mark.timeout(10)
def test_the_recipes_page_tables_every_preset():
    with open(os.path.join(REPO, 'docs', 'recipes.md')) as f:
        page = f.read()
    assert [name for name in presets.NAMES if '| `%s` |' % name not in page] == []


@pytest.mark.timeout(10)
def test_no_preset_leaves_the_values_as_they_are():
    for name in ('', None):
        values = dict(DEFAULTS, preset=name)
        assert presets.apply(values, set()) == (values, None)


@pytest.mark.timeout(10)
def test_a_preset_fills_the_flags_not_given_and_a_given_flag_wins():
    values = dict(DEFAULTS, preset='wrn28_10', width=4, optimizer='mom')
    out, preset = presets.apply(values, {'preset', 'width'})
    assert preset is presets.PRESETS['wrn28_10']
    assert (out['num_residual_units'], out['width'], out['optimizer'], out['weight_decay_rate']) == (
        4, 4, 'nesterov', 0.0005)  # --width=4 given: a WRN-28-4
    assert out['train_epochs'] == 200 and values['optimizer'] == 'mom'  # the input is not changed


@pytest.mark.timeout(10)
@pytest.mark.parametrize('given', ['train_steps', 'train_epochs'])
def test_giving_either_length_flag_replaces_the_presets_length(given):
    value = 500 if given == 'train_steps' else 3.0
    values = dict(DEFAULTS, preset='fast_cifar', **{given: value})
    out, _ = presets.apply(values, {'preset', given})
    assert out[given] == value
    assert out['train_epochs'] == (3.0 if given == 'train_epochs' else DEFAULTS['train_epochs'])  # not the 30
    assert out['lr_schedule'] == 'cosine' and out['label_smoothing'] == 0.1
