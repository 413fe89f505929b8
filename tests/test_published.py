"""resnet_cifar/published.py: the published figures, their sources, and the models' names."""
import dataclasses

import pytest

from resnet_cifar import presets
from resnet_cifar import published

# The figures as issue 29 lists them (checked against the papers' tables): model, dataset, error.
ISSUE_29 = {
    ('ResNet-20', 'cifar10'): 8.75, ('ResNet-32', 'cifar10'): 7.51, ('ResNet-44', 'cifar10'): 7.17,
    ('ResNet-56', 'cifar10'): 6.97, ('ResNet-110', 'cifar10'): 6.43,
    ('ResNet-164', 'cifar10'): 5.46, ('ResNet-164', 'cifar100'): 24.33,
    ('ResNet-1001', 'cifar10'): 4.92, ('ResNet-1001', 'cifar100'): 22.71,
    ('WRN-28-10', 'cifar10'): 4.00, ('WRN-28-10', 'cifar100'): 19.25,
}


@pytest.mark.timeout(30)
def test_the_papers_figures_are_the_issues_list():
    papers = {(f.model, f.dataset): f.error for f in published.FIGURES if not f.quoted}
    assert papers == ISSUE_29
    assert len([f for f in published.FIGURES if not f.quoted]) == len(ISSUE_29)  # no model twice


@pytest.mark.timeout(30)
def test_every_figure_has_a_source_and_a_table_and_is_frozen():
    for figure in published.FIGURES:
        assert figure.source in (published.HE_2016A, published.HE_2016B, published.ZAGORUYKO_2016,
                                 published.CLASSIC_TF_README)
        assert figure.table and 0 < figure.error < 100
        assert figure.cite.startswith(figure.source)
    with pytest.raises(dataclasses.FrozenInstanceError):
        published.FIGURES[0].error = 1.0


@pytest.mark.timeout(30)
def test_the_classic_readme_figure_is_quoted_and_comes_after_the_paper():
    quoted = [f for f in published.FIGURES if f.quoted]
    assert [(f.model, f.dataset, f.error, f.source) for f in quoted] == [
        ('ResNet-32', 'cifar10', 7.5, published.CLASSIC_TF_README)]
    assert quoted[0].cite.endswith('(quoted)')
    assert [f.error for f in published.figures_for('ResNet-32', 'cifar10')] == [7.51, 7.5]
    assert published.figures_for('ResNet-32', 'cifar100') == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize('flags, name', [
    ({'num_residual_units': 5}, 'ResNet-32'),
    ({'num_residual_units': 18, 'width': 1}, 'ResNet-110'),
    ({'num_residual_units': 18, 'use_bottleneck': True}, 'ResNet-164'),
    ({'num_residual_units': 111, 'use_bottleneck': True}, 'ResNet-1001'),
    ({'num_residual_units': 4, 'width': 10}, 'WRN-28-10'),
])
def test_model_names_follow_the_papers_depths(flags, name):
    assert published.model_name(flags) == name


@pytest.mark.timeout(30)
def test_the_presets_name_models_with_published_figures():
    names = {name: published.model_name(p.flags) for name, p in presets.PRESETS.items()}
    assert names['resnet32_classic'] == 'ResNet-32' and names['resnet110'] == 'ResNet-110'
    assert names['wrn28_10'] == 'WRN-28-10' and names['fast_cifar'] == 'ResNet-20'
    for name in ('resnet32_classic', 'resnet110', 'wrn28_10'):
        assert published.figures_for(names[name], 'cifar10'), name
