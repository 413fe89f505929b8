"""Presets: a whole training recipe in one flag, --preset=NAME. No TensorFlow.

A preset is the flag values it stands for (`flags`), its piecewise rates as multiples
of --lrn_rate (`rates`, or None for the default tenfold steps or the cosine's), and
where its learning rate changes (`boundaries`) and how long it warms up (`warmup`) as
fractions of the run, so that a run made shorter or longer with --train_steps or
--train_epochs keeps the recipe's shape, and --lrn_rate scales its rates. A flag given
on the command line wins over the preset's value; so do --lr_values over `rates`,
--lr_boundaries over `boundaries` and --lr_warmup over `warmup`. resolve.py
applies them; docs/recipes.md tables each preset with its expected precision.

Every preset trains at the default batch of 128, which its rates are given for; with
--lr_batch_scaling (the default) another --batch_size scales them by batch / 128.
None sets --compute_dtype: the default decides it.
"""
import collections

Preset = collections.namedtuple('Preset', ['flags', 'rates', 'boundaries', 'warmup', 'summary'])

PRESETS = {
    # The classic suite's recipe, today's defaults: ResNet-32, 80k steps, 0.1 divided by 10 at
    # 50%, 75% and 100% of the run (the default boundaries).
    'resnet32_classic': Preset(
        flags={'num_residual_units': 5, 'train_steps': 80000, 'optimizer': 'mom', 'weight_decay_rate': 0.0002,
               'lr_schedule': 'piecewise', 'lrn_rate': 0.1},
        rates=None, boundaries=None, warmup=0.0,
        summary='ResNet-32, 80k steps, 0.1/0.01/0.001/0.0001 at 40k/60k/80k'),
    # He et al. 2016 (Deep Residual Learning, section 4.2): ResNet-110, 64k steps, weight decay
    # 1e-4, 0.01 for the first 400 steps to warm up, then 0.1, divided by 10 at 32k and 48k.
    'resnet110': Preset(
        flags={'num_residual_units': 18, 'train_steps': 64000, 'optimizer': 'mom', 'weight_decay_rate': 0.0001,
               'lr_schedule': 'piecewise', 'lrn_rate': 0.1},
        rates=(0.1, 1.0, 0.1, 0.01), boundaries=(400 / 64000, 0.5, 0.75), warmup=0.0,
        summary='ResNet-110, 64k steps, 0.01 for 400 steps, then 0.1/0.01/0.001 at 32k/48k'),
    # Zagoruyko and Komodakis 2016 (Wide Residual Networks): WRN-28-10, 200 epochs, Nesterov
    # momentum 0.9, weight decay 5e-4, 0.1 divided by 5 at epochs 60, 120 and 160.
    'wrn28_10': Preset(
        flags={'num_residual_units': 4, 'width': 10, 'train_epochs': 200, 'optimizer': 'nesterov',
               'weight_decay_rate': 0.0005, 'lr_schedule': 'piecewise', 'lrn_rate': 0.1},
        rates=(1.0, 0.2, 0.04, 0.008), boundaries=(60 / 200, 120 / 200, 160 / 200), warmup=0.0,
        summary='WRN-28-10, 200 epochs, 0.1/0.02/0.004/0.0008 at epochs 60/120/160, Nesterov'),
    # A short run: ResNet-20, 30 epochs, a 2-epoch linear warmup to 0.2, then a cosine to
    # 0.0002; Nesterov momentum, weight decay 5e-4, label smoothing 0.1.
    'fast_cifar': Preset(
        flags={'num_residual_units': 3, 'train_epochs': 30, 'optimizer': 'nesterov', 'weight_decay_rate': 0.0005,
               'lr_schedule': 'cosine', 'lrn_rate': 0.2, 'label_smoothing': 0.1},
        rates=None, boundaries=None, warmup=2 / 30,
        summary='ResNet-20, 30 epochs, 2-epoch warmup, cosine from 0.2, label smoothing 0.1, Nesterov'),
}
NAMES = tuple(PRESETS)
# Flags that say how long the run is; giving either replaces the preset's length.
LENGTH_FLAGS = ('train_steps', 'train_epochs')


def apply(values, given):
    """(flag values with the preset's for each flag not given, the Preset or None).

    values: {flag: value} of every flag; given: the names of the flags given. The preset
    is values['preset'] (None or '' for none).
    """
    name = values.get('preset')
    if not name:
        return values, None
    preset = PRESETS[name]
    out = dict(values)
    for flag, value in preset.flags.items():
        if flag in given or (flag in LENGTH_FLAGS and set(LENGTH_FLAGS) & set(given)):
            continue
        out[flag] = value
    return out, preset
