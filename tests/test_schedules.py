"""schedules: each kind's graph rate and Python rate agree at every boundary, with and without
warmup; its defaults, check messages and description."""
import subprocess
import sys
import types

import pytest
import tensorflow as tf

from resnet_cifar import schedules
from resnet_cifar import settings
from resnet_cifar.config import Schedule
from resnet_cifar.errors import FlagError

# For each kind: (boundaries, values) as config.json holds them, warmup steps.
EXAMPLES = [
    ('piecewise', (5, 9, 20), (0.4, 0.04, 0.004, 0.0004), 0),
    ('piecewise', (5, 9, 20), (0.4, 0.04, 0.004, 0.0004), 3),
    ('piecewise', (), (0.25,), 4),
    ('cosine', (30,), (0.2, 0.001), 0),
    ('cosine', (30,), (0.2, 0.001), 7),
    ('cosine', (8,), (0.5, 0.3), 7),  # the cosine one step long
]


def edges(boundaries, warmup_steps):
    """Step 0, each boundary and the end of the warmup -1/0/+1, and steps past the end."""
    points = {0, 1, 1000, 10 ** 7}
    for point in tuple(boundaries) + ((warmup_steps,) if warmup_steps else ()):
        points.update(step for step in (point - 1, point, point + 1) if step >= 0)
    return sorted(points)


def test_every_kind_has_an_example_with_and_without_warmup():
    assert {(kind, warmup > 0) for kind, _, _, warmup in EXAMPLES} == {
        (kind, with_warmup) for kind in schedules.KINDS for with_warmup in (False, True)}


@pytest.mark.timeout(60)
@pytest.mark.parametrize('kind, boundaries, values, warmup', EXAMPLES)
@pytest.mark.parametrize('min_rate', [0.0, 0.003])
def test_the_graph_and_python_agree_at_every_boundary(kind, boundaries, values, warmup, min_rate):
    rate = schedules.learning_rate(kind, boundaries, values, warmup, min_rate)
    steps = edges(boundaries, warmup)
    with tf.Graph().as_default():
        step = tf.compat.v1.placeholder(tf.int64, [])
        unfloored, floored = rate.in_graph(step)
        assert (unfloored.op.name, floored.op.name) == ('learning_rate', 'effective_learning_rate')
        with tf.compat.v1.Session() as session:
            in_graph = [session.run(floored, {step: at}) for at in steps]
            raw = [session.run(unfloored, {step: at}) for at in steps]
    in_python = [rate.rate_at(at) for at in steps]
    assert in_graph == pytest.approx(in_python, rel=1e-6), list(zip(steps, in_graph, in_python))
    assert min(in_python) >= min_rate and raw == pytest.approx(
        [schedules.LearningRate(rate.shape, warmup).rate_at(at) for at in steps], rel=1e-6)
    # The warmup's first and last steps, and the rate past the end, are what the kind says.
    first = rate.shape.rate(0)
    if warmup:
        assert rate.rate_at(0) == pytest.approx(max(first / warmup, min_rate))
        assert rate.rate_at(warmup - 1) == pytest.approx(max(rate.shape.rate(warmup - 1), min_rate))
    assert rate.rate_at(10 ** 7) == pytest.approx(max(values[-1], min_rate))


def test_piecewise_and_cosine_have_named_fields_and_keep_the_lists_of_config_json():
    piecewise = schedules.learning_rate('piecewise', [10, 20], [0.1, 0.01, 0.001]).shape
    assert (piecewise.boundaries, piecewise.rates) == ((10, 20), (0.1, 0.01, 0.001))
    cosine = schedules.learning_rate('cosine', [100], [0.2, 0.002], warmup_steps=10).shape
    assert (cosine.start_step, cosine.end_step, cosine.start_rate, cosine.final_rate) == (10, 100, 0.2, 0.002)
    assert cosine.lists() == ((100,), (0.2, 0.002)) and piecewise.lists() == ((10, 20), (0.1, 0.01, 0.001))


def test_the_default_boundaries_and_rates_of_each_kind():
    assert schedules.default_boundaries('piecewise', 80000) == [40000, 60000, 80000]
    assert schedules.default_boundaries('cosine', 1875) == [1875]
    assert schedules.default_rates('piecewise', 0.1, 3) == pytest.approx([0.1, 0.01, 0.001, 0.0001])
    assert schedules.default_rates('cosine', 0.2, 1) == pytest.approx([0.2, 0.0002])
    for kind in schedules.KINDS:  # the defaults make a schedule the check accepts
        boundaries = schedules.default_boundaries(kind, 1000)
        assert schedules.problem(kind, boundaries, schedules.default_rates(kind, 0.1, len(boundaries))) is None


def test_the_flags_help_says_the_defaults_of_each_kind_from_its_own_help():
    """--lr_schedule, --lr_boundaries and --lr_values are joined from each kind's help pieces,
    and what they say of the defaults is what the kind's defaults give."""
    helps = {s.name: s.help_text() for s in settings.SETTINGS}
    for kind in schedules.KINDS:
        assert '%s: ' % kind in helps['lr_schedule']
        assert ' for %s' % kind in helps['lr_boundaries']
        rates = schedules.default_rates(kind, 1.0, len(schedules.default_boundaries(kind, 80000)))
        assert '--lrn_rate times %s for %s' % (', '.join('%g' % r for r in rates), kind) in helps['lr_values']
    classic = ','.join(map(str, schedules.default_boundaries('piecewise', 80000)))
    assert '(%s classic) for piecewise' % classic in helps['lr_boundaries']
    assert helps['lr_values'].endswith(' for %s.' % schedules.KINDS[-1])  # the whole text: tests/fixtures/flags.json


def test_a_recipe_object_gives_its_schedule():
    """config.Schedule and resnet_model.HParams pass themselves (for_recipe, recipe_problem);
    an HParams's empty lr_values mean its lrn_rate at every step."""
    recipe = Schedule(lr_schedule='cosine', lr_boundaries=(100,), lr_values=(0.2, 0.002), warmup_steps=10,
                      min_lrn_rate=0.01)
    assert schedules.for_recipe(recipe) == schedules.learning_rate('cosine', [100], [0.2, 0.002], 10, 0.01)
    late = types.SimpleNamespace(**dict(vars(recipe), warmup_steps=100))
    assert schedules.recipe_problem(late) == 'the cosine must end after the warmup (100 steps), got 100'
    constant = types.SimpleNamespace(lr_schedule='piecewise', lr_boundaries=(), lr_values=(), lrn_rate=0.3,
                                     warmup_steps=0, min_lrn_rate=0.0)
    assert schedules.for_recipe(constant).rate_at(10 ** 6) == 0.3


@pytest.mark.parametrize('kind, boundaries, values, warmup, message', [
    ('cosine', (10, 20), (0.1, 0.01, 0.001), 0, 'a cosine schedule has one boundary, the step where it ends, '
                                                 'got 10,20'),
    ('cosine', (), (0.1,), 0, 'a cosine schedule has one boundary, the step where it ends, got none'),
    ('cosine', (10,), (0.1, 0.01), 10, 'the cosine must end after the warmup (10 steps), got 10'),
    ('piecewise', (10,), (0.1,), 0, 'expected one more learning rate than boundaries, got 1 rates and 1 boundaries'),
    ('piecewise', (0, 10), (0.1, 0.1, 0.1), 0, 'boundaries must be positive steps, got 0,10'),
    ('piecewise', (10, 10), (0.1, 0.1, 0.1), 0, 'boundaries must increase, got 10,10'),
    ('cosine', (10,), (0.1, -1.0), 0, 'learning rates must be positive numbers, got 0.1,-1'),
])
def test_each_check_says_what_is_wrong_in_one_line(kind, boundaries, values, warmup, message):
    assert schedules.problem(kind, boundaries, values, warmup) == message
    with pytest.raises(ValueError, match='^%s$' % message.replace('(', r'\(').replace(')', r'\)')):
        schedules.learning_rate(kind, boundaries, values, warmup)
    with pytest.raises(FlagError) as error:
        Schedule(lr_schedule=kind, lr_boundaries=boundaries, lr_values=values, warmup_steps=warmup)
    assert str(error.value) == '--lr_boundaries/--lr_values: ' + message


def test_each_kind_describes_itself_as_training_logs_it():
    assert Schedule().describe() == ('0.1 until step 40000, 0.01 until step 60000, 0.001 until step 80000, '
                                     'then 0.0001; never below 0.0001')
    assert Schedule(lr_schedule='cosine', lr_boundaries=(1875,), lr_values=(0.2, 0.0002),
                    warmup_steps=125).describe() == (
        'linear warmup over steps 0 to 124, then cosine from 0.2 at step 125 to 0.0002 at step 1875, then '
        '0.0002; never below 0.0001')
    # No boundaries (--lr_boundaries= --lr_values=0.05): one rate, said as such, with no stray comma.
    assert Schedule(lr_boundaries=(), lr_values=(0.05,), warmup_steps=10).describe() == (
        'linear warmup over steps 0 to 9, then constant 0.05; never below 0.0001')


def test_an_unknown_kind_is_a_problem_not_a_key_error():
    assert schedules.problem('no_such_kind', (10,), (0.1, 0.01)) == (
        "unknown schedule 'no_such_kind'; expected one of %s" % ', '.join(schedules.KINDS))
    assert 'piecewise, cosine' in ', '.join(schedules.KINDS)
    with pytest.raises(ValueError, match="^unknown schedule 'no_such_kind'"):
        schedules.learning_rate('no_such_kind', (10,), (0.1, 0.01))


@pytest.mark.timeout(60)
def test_schedules_and_config_load_without_tensorflow():
    code = ('import sys; from resnet_cifar import config, schedules; '
            'schedules.learning_rate("cosine", [10], [0.1, 0.01]).rate_at(3); '
            'assert "tensorflow" not in sys.modules, "tensorflow imported"')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=50)
    assert result.returncode == 0, result.stderr
