"""The published CIFAR figures this suite is compared with: one table, with sources. No TensorFlow.

Every figure is a top-1 error in percent on the dataset's test set, as its source prints
it. scripts/reproduce.py prints them beside ours and takes them from here only; a figure
added here shows in its table. `quoted` marks a figure taken from a README rather than a
paper's table (the classic TF suite's "about 92.5% precision", as 7.5% error). Checked on
2026-12-07: He et al. 2016a's Table 6 against the paper; the figures of He et al. 2016b and of
Zagoruyko and Komodakis against issue 29's list, their table numbers not yet against the PDFs
(no internet here).

Names of models: 'ResNet-D' for a ResNet of depth D (6n+2 layers with n plain residual units
per stage, 9n+2 with bottleneck units), 'WRN-D-K' for a wide one (depth 6n+4, widened K
times), as model_name() gives them for a preset.
"""
import dataclasses

HE_2016A = ('He, Zhang, Ren and Sun 2016, "Deep Residual Learning for Image Recognition", CVPR '
            '(arXiv:1512.03385)')
HE_2016B = ('He, Zhang, Ren and Sun 2016, "Identity Mappings in Deep Residual Networks", ECCV '
            '(arXiv:1603.05027)')
ZAGORUYKO_2016 = ('Zagoruyko and Komodakis 2016, "Wide Residual Networks", BMVC (arXiv:1605.07146)')
CLASSIC_TF_README = 'the classic TensorFlow ResNet suite\'s README (tensorflow/models, research/resnet)'

SHORT_NAMES = {HE_2016A: 'He et al. 2016a', HE_2016B: 'He et al. 2016b', ZAGORUYKO_2016: 'Zagoruyko and Komodakis 2016',
               CLASSIC_TF_README: 'the classic TensorFlow suite'}


@dataclasses.dataclass(frozen=True)
class Figure:
    """One published test error: `error` in percent, the model and dataset it is for, where it
    is printed (`source`, `table`), what to know when comparing (`note`), and whether it is
    quoted from a README rather than a paper's table."""
    model: str
    dataset: str
    error: float
    source: str
    table: str
    note: str = ''
    quoted: bool = False

    @property
    def short_cite(self):
        """The source in a few words, and the table: 'He et al. 2016a, Table 6'."""
        return '%s, %s%s' % (SHORT_NAMES[self.source], self.table, ' (quoted)' if self.quoted else '')

    @property
    def cite(self):
        """Where the figure is printed, in one line: the source and the table."""
        return '%s, %s%s' % (self.source, self.table, ' (quoted)' if self.quoted else '')


_ORIGINAL = 'original (post-activation) ResNet; this suite trains pre-activation units'
FIGURES = (
    Figure('ResNet-20', 'cifar10', 8.75, HE_2016A, 'Table 6', _ORIGINAL),
    Figure('ResNet-32', 'cifar10', 7.51, HE_2016A, 'Table 6', _ORIGINAL),
    Figure('ResNet-44', 'cifar10', 7.17, HE_2016A, 'Table 6', _ORIGINAL),
    Figure('ResNet-56', 'cifar10', 6.97, HE_2016A, 'Table 6', _ORIGINAL),
    Figure('ResNet-110', 'cifar10', 6.43, HE_2016A, 'Table 6',
           'best of 5 runs; their mean and std: 6.61 +- 0.16; ' + _ORIGINAL),
    Figure('ResNet-164', 'cifar10', 5.46, HE_2016B, 'Table 3', 'pre-activation, bottleneck units'),
    Figure('ResNet-164', 'cifar100', 24.33, HE_2016B, 'Table 3', 'pre-activation, bottleneck units'),
    Figure('ResNet-1001', 'cifar10', 4.92, HE_2016B, 'Table 3', 'pre-activation, bottleneck units'),
    Figure('ResNet-1001', 'cifar100', 22.71, HE_2016B, 'Table 3', 'pre-activation, bottleneck units'),
    Figure('WRN-28-10', 'cifar10', 4.00, ZAGORUYKO_2016, 'Table 5', 'no dropout'),
    Figure('WRN-28-10', 'cifar100', 19.25, ZAGORUYKO_2016, 'Table 5', 'no dropout'),
    Figure('ResNet-32', 'cifar10', 7.5, CLASSIC_TF_README, 'README',
           '"about 92.5% precision" after about 80k steps, eval on half the test set', quoted=True),
)


def figures_for(model, dataset):
    """The published figures of `model` on `dataset`, papers first, then quoted ones."""
    found = [f for f in FIGURES if f.model == model and f.dataset == dataset]
    return sorted(found, key=lambda f: f.quoted)


def model_name(flags):
    """The model's name as the papers give it ('ResNet-32', 'WRN-28-10') from flag values:
    num_residual_units (n), width (K, default 1) and use_bottleneck (default False)."""
    units = flags['num_residual_units']
    width = flags.get('width', 1)
    if width > 1:
        return 'WRN-%d-%d' % (6 * units + 4, width)
    return 'ResNet-%d' % ((9 if flags.get('use_bottleneck') else 6) * units + 2)
