"""Learning-rate schedules: for each kind, side by side, its rate in the graph and in Python,
its default boundaries and rates, its check, its description and its --help text.

A run's schedule is the kind's shape (Piecewise, Cosine), then a linear warmup that
multiplies the rate of step s < warmup_steps by (s + 1) / warmup_steps, then the floor
min_rate; `LearningRate` applies the warmup and the floor to every kind, in the graph
(`in_graph`) and in Python (`rate_at`). Steps are global steps, rates are per step.

config.json keeps a schedule as two lists, `lr_boundaries` and `lr_values`; each kind
says what they mean (`from_lists`, `lists`). A recipe (config.Schedule, resnet_model.HParams)
holds them with lr_schedule, warmup_steps and min_lrn_rate; its users pass the recipe
(`recipe_problem`, `for_recipe`), so only this module reads those fields. A new kind is a
class here with the same methods and help pieces (HELP, BOUNDARIES_HELP, RATES_HELP: the
--help texts are joined from them), listed in _KIND_CLASSES. No TensorFlow at
import: the graph functions import it.
"""
import bisect
import dataclasses
import math
from typing import Tuple


def _tf():
    import tensorflow as tf  # only when a graph is built: config.py must load without it
    return tf


@dataclasses.dataclass(frozen=True)
class Piecewise:
    """rates[i] from boundaries[i-1] (inclusive) up to boundaries[i]; the last rate from the
    last boundary on. No boundaries: one constant rate."""
    boundaries: Tuple[int, ...]
    rates: Tuple[float, ...]

    HELP = 'piecewise: constant between --lr_boundaries'
    BOUNDARIES_HELP = '50%, 75% and 100% of --train_steps (40000,60000,80000 classic)'
    RATES_HELP = '--lrn_rate times 1, 0.1, 0.01, 0.001'

    @classmethod
    def from_lists(cls, boundaries, values, warmup_steps):
        return cls(tuple(boundaries), tuple(values))

    def lists(self):
        """(lr_boundaries, lr_values) as config.json holds them."""
        return self.boundaries, self.rates

    @staticmethod
    def problem(boundaries, values, warmup_steps):
        """What is wrong with these lists for this kind beyond what every kind needs, or None."""
        return None

    @staticmethod
    def default_boundaries(train_steps):
        """50%, 75% and 100% of the run."""
        return [train_steps // 2, train_steps * 3 // 4, train_steps]

    @staticmethod
    def default_rates(initial, num_boundaries):
        """`initial`, divided by 10 at each boundary."""
        return [initial / 10 ** i for i in range(num_boundaries + 1)]

    def rate(self, step):
        return self.rates[bisect.bisect_right(self.boundaries, step)]

    def graph_rate(self, step, step_number):
        """float64 tensor of rate(step); step: int64 scalar, step_number: it as float64."""
        tf = _tf()
        passed = tf.greater_equal(step, tf.constant(self.boundaries, tf.int64, shape=[len(self.boundaries)]))
        return tf.gather(tf.constant(self.rates, tf.float64), tf.reduce_sum(tf.cast(passed, tf.int32)))

    def describe(self):
        if not self.boundaries:
            return 'constant %g' % self.rates[0]
        spans = ['%g until step %d' % (rate, boundary) for rate, boundary in zip(self.rates, self.boundaries)]
        return '%s, then %g' % (', '.join(spans), self.rates[-1])


@dataclasses.dataclass(frozen=True)
class Cosine:
    """Half a cosine from start_rate at start_step (the end of the warmup) to final_rate at
    end_step, then final_rate (a run extended past end_step keeps it). In config.json:
    lr_boundaries (end_step,) and lr_values (start_rate, final_rate)."""
    start_step: int
    end_step: int
    start_rate: float
    final_rate: float

    HELP = ('cosine: half a cosine from the first of --lr_values to the second, ending at the one boundary '
            '(default: --train_steps), then the second')
    BOUNDARIES_HELP = 'the end'
    RATES_HELP = '--lrn_rate times 1, 0.001'

    @classmethod
    def from_lists(cls, boundaries, values, warmup_steps):
        (end_step,), (start_rate, final_rate) = boundaries, values
        return cls(warmup_steps, end_step, start_rate, final_rate)

    def lists(self):
        return (self.end_step,), (self.start_rate, self.final_rate)

    @staticmethod
    def problem(boundaries, values, warmup_steps):
        if len(boundaries) != 1:
            return ('a cosine schedule has one boundary, the step where it ends, got %s'
                    % (','.join(map(str, boundaries)) or 'none'))
        if warmup_steps >= boundaries[0]:
            return 'the cosine must end after the warmup (%d steps), got %d' % (warmup_steps, boundaries[0])
        return None

    @staticmethod
    def default_boundaries(train_steps):
        """The end of the run."""
        return [train_steps]

    @staticmethod
    def default_rates(initial, num_boundaries):
        """From `initial` to a thousandth of it."""
        return [initial, initial / 1000]

    def rate(self, step):
        progress = min(max(step - self.start_step, 0) / (self.end_step - self.start_step), 1.0)
        return self.final_rate + (self.start_rate - self.final_rate) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def graph_rate(self, step, step_number):
        tf = _tf()
        progress = tf.clip_by_value((step_number - self.start_step) / float(self.end_step - self.start_step),
                                    0.0, 1.0)
        return self.final_rate + (self.start_rate - self.final_rate) * 0.5 * (1.0 + tf.cos(math.pi * progress))

    def describe(self):
        return 'cosine from %g at step %d to %g at step %d, then %g' % (
            self.start_rate, self.start_step, self.final_rate, self.end_step, self.final_rate)


_KIND_CLASSES = {'piecewise': Piecewise, 'cosine': Cosine}
# The --lr_schedule values, as config.py, resolve.py, run_files.py and resnet_main.py take them.
KINDS = tuple(_KIND_CLASSES)
# --lr_schedule's help: each kind's line.
FLAG_HELP = '; '.join(kind.HELP for kind in _KIND_CLASSES.values()) + '.'
# The defaults of --lr_boundaries and --lr_values, said for each kind (ends of their help texts).
BOUNDARIES_HELP = 'Default: %s.' % '; '.join('%s for %s' % (kind.BOUNDARIES_HELP, name)
                                             for name, kind in _KIND_CLASSES.items())
RATES_HELP = 'Default: %s.' % '; '.join('%s for %s' % (kind.RATES_HELP, name) for name, kind in _KIND_CLASSES.items())


def default_boundaries(kind, train_steps):
    """The boundaries of a kind when --lr_boundaries is not given, for a run of train_steps."""
    return _KIND_CLASSES[kind].default_boundaries(train_steps)


def default_rates(kind, initial, num_boundaries):
    """The rates of a kind when --lr_values is not given, from the initial rate."""
    return _KIND_CLASSES[kind].default_rates(initial, num_boundaries)


def problem(kind, boundaries, values, warmup_steps=0):
    """What is wrong with a schedule of config.json's lists, one line, or None."""
    if kind not in _KIND_CLASSES:
        return 'unknown schedule %r; expected one of %s' % (kind, ', '.join(KINDS))
    found = _KIND_CLASSES[kind].problem(boundaries, values, warmup_steps)
    if found:
        return found
    if len(values) != len(boundaries) + 1:
        return ('expected one more learning rate than boundaries, got %d rates and %d boundaries'
                % (len(values), len(boundaries)))
    if any(b < 1 for b in boundaries):
        return 'boundaries must be positive steps, got %s' % ','.join(map(str, boundaries))
    if any(b2 <= b1 for b1, b2 in zip(boundaries, boundaries[1:])):
        return 'boundaries must increase, got %s' % ','.join(map(str, boundaries))
    if any(not math.isfinite(v) or v <= 0 for v in values):
        return 'learning rates must be positive numbers, got %s' % ','.join('%g' % v for v in values)
    return None


@dataclasses.dataclass(frozen=True)
class LearningRate:
    """A kind's shape, a linear warmup over the first warmup_steps steps, and a floor."""
    shape: object                        # Piecewise, Cosine, ...
    warmup_steps: int = 0
    min_rate: float = 0.0

    def rate_at(self, step):
        """The rate of the train step that runs at global step `step`, floored (a Python float)."""
        rate = self.shape.rate(step)
        if step < self.warmup_steps:
            rate *= (step + 1) / self.warmup_steps
        return max(rate, self.min_rate)

    def in_graph(self, step):
        """(rate 'learning_rate', floored rate 'effective_learning_rate'): float32 scalar tensors
        of the int64 scalar tensor `step`; computed in float64, as rate_at."""
        tf = _tf()
        with tf.name_scope('schedule'):
            step_number = tf.cast(step, tf.float64)
            rate = self.shape.graph_rate(step, step_number)
            if self.warmup_steps:
                rate *= tf.minimum((step_number + 1.0) / self.warmup_steps, 1.0)
        rate = tf.cast(rate, tf.float32, name='learning_rate')
        return rate, tf.maximum(rate, self.min_rate, name='effective_learning_rate')

    def describe(self):
        """'0.1 until step 40000, then 0.01; never below 0.0001', with the warmup first when there is one."""
        text = self.shape.describe()
        if self.warmup_steps:
            text = 'linear warmup over steps 0 to %d, then %s' % (self.warmup_steps - 1, text)
        return '%s; never below %g' % (text, self.min_rate)


def learning_rate(kind, boundaries, values, warmup_steps=0, min_rate=0.0):
    """The LearningRate of config.json's lists; ValueError (problem's text) when they make none."""
    found = problem(kind, boundaries, values, warmup_steps)
    if found:
        raise ValueError(found)
    return LearningRate(_KIND_CLASSES[kind].from_lists(boundaries, values, warmup_steps), warmup_steps, min_rate)


def recipe_problem(recipe):
    """problem() of a recipe: an object with the fields lr_schedule, lr_boundaries, lr_values and
    warmup_steps (config.Schedule, resnet_model.HParams)."""
    return problem(recipe.lr_schedule, recipe.lr_boundaries, recipe.lr_values, recipe.warmup_steps)


def for_recipe(recipe):
    """The LearningRate of a recipe (recipe_problem's fields, and the floor min_lrn_rate); empty
    lr_values (an HParams may leave them empty) mean its lrn_rate at every step."""
    return learning_rate(recipe.lr_schedule, recipe.lr_boundaries, recipe.lr_values or (recipe.lrn_rate,),
                         recipe.warmup_steps, recipe.min_lrn_rate)
