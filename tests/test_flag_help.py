"""resnet_cifar.flag_help, called directly: the grouped --help, --help=TOPIC, --helpfull and their
exit statuses, on real absl flags (a small FlagValues of its own, and resnet_main's). The same
answers from a real `python resnet_main.py --help` (and that it never imports TensorFlow) are
tested in test_quiet.py."""
import io

import pytest
from absl import flags as absl_flags

import resnet_main
from resnet_cifar import flag_help

USAGE = 'usage: demo.py [--flag=value ...]'
EXAMPLE = 'example:\n  python demo.py --mode=eval'


@pytest.fixture
def demo_flags():
    """A FlagValues of four flags in two groups: (flag_values, groups)."""
    values = absl_flags.FlagValues()
    absl_flags.DEFINE_string('data_path', None, 'Where the records are. A glob is fine.', flag_values=values)
    absl_flags.DEFINE_integer('batch_size', 128, 'Images per step.', flag_values=values)
    absl_flags.DEFINE_enum('mode', 'train', ['train', 'eval'],
                           'train: fit the model; eval: score each new checkpoint of the run as training saves '
                           'it, on the held-out images.', flag_values=values)
    absl_flags.DEFINE_bool('verbose_steps', False, 'Log every step.', flag_values=values)
    groups = [('Data', ['data_path', 'batch_size']), ('Run mode and logging', ['mode', 'verbose_steps'])]
    return values, groups


def answer(argv, values, groups, **kwargs):
    """handle_help_args on `argv`: (exit status or None if it returned, what it wrote to stdout)."""
    out = io.StringIO()
    try:
        flag_help.handle_help_args(argv, values, groups, usage=USAGE, example=EXAMPLE, stdout=out, **kwargs)
    except SystemExit as e:
        return e.code, out.getvalue()
    return None, out.getvalue()


def test_first_sentence():
    assert flag_help.first_sentence('Image side in pixels. CIFAR images are 32x32.') == 'Image side in pixels.'
    assert flag_help.first_sentence('<a|b>: a: one; b: two') == 'a: one; b: two'
    assert flag_help.first_sentence('Slope, in [0, 1).') == 'Slope, in [0, 1).'
    assert flag_help.first_sentence('Width (k=10 with n=4 is WRN-28-10).') == 'Width (k=10 with n=4 is WRN-28-10).'
    assert flag_help.first_sentence(None) == ''
    assert flag_help.first_sentence_free('<a|b>: a: one.  b:\n two.') == 'a: one. b: two.'


def test_flag_line_shows_the_default_and_choices_and_the_first_sentence(demo_flags):
    values, _ = demo_flags
    assert flag_help.flag_line(values['batch_size'], 100) == '  %-30s Images per step.' % '--batch_size=128'
    assert flag_help.flag_line(values['data_path'], 100) == '  %-30s Where the records are.' % '--data_path='
    assert flag_help.flag_line(values['verbose_steps'], 100).startswith('  --verbose_steps=false ')
    line = flag_help.flag_line(values['mode'], 200)
    assert line.startswith('  --mode=train {train,eval}') and line.endswith('on the held-out images.'), line
    assert '<train|eval>' not in line


@pytest.mark.parametrize('width', [50, 60, 61, 62, 63, 64, 65, 70, 80])
def test_flag_line_cuts_a_long_sentence_between_two_words(demo_flags, width):
    """Issue 27: `eval: score eac...` was cut inside 'each'. The line keeps whole words, ends with
    '...' and fits the width."""
    values, _ = demo_flags
    sentence = flag_help.first_sentence(values['mode'].help)
    line = flag_help.flag_line(values['mode'], width)
    head = '  %-30s ' % '--mode=train {train,eval}'
    assert line.startswith(head) and line.endswith('...') and len(line) <= width, (width, line)
    shown = line[len(head):-3]
    assert sentence.startswith(shown) and sentence[len(shown)] == ' ', (width, shown)


def test_flag_line_keeps_a_first_word_longer_than_the_room_whole(demo_flags):
    values, _ = demo_flags
    assert flag_help.flag_line(values['mode'], 20) == '  %-30s train:...' % '--mode=train {train,eval}'


def test_grouped_help_has_the_usage_each_group_in_order_and_the_example(demo_flags):
    values, groups = demo_flags
    text = flag_help.grouped_help(values, groups, USAGE, EXAMPLE, width=100)
    parts = text.split('\n\n')
    assert parts[0] == USAGE and parts[-2] == EXAMPLE
    assert parts[1].splitlines() == ['Data:', flag_help.flag_line(values['data_path'], 100),
                                     flag_help.flag_line(values['batch_size'], 100)]
    assert parts[2].splitlines()[0] == 'Run mode and logging:'
    assert parts[-1].startswith('--help=TOPIC shows a group') and text.endswith('\n')


def test_a_compact_group_lists_only_its_flags_names(demo_flags):
    values, groups = demo_flags
    text = flag_help.grouped_help(values, groups, width=100, compact=('Run mode and logging',))
    assert 'Run mode and logging (--help=run):\n  --mode --verbose_steps\n' in text
    assert 'Log every step' not in text and 'Images per step.' in text


def test_topic_help_gives_a_group_or_a_flag_in_full(demo_flags):
    values, groups = demo_flags
    run = flag_help.topic_help(values, groups, 'RUN')
    assert run.startswith('--mode=train {train,eval}\n    train: fit the model; eval: score each new checkpoint')
    assert '\n\n--verbose_steps=false\n    Log every step.\n' in run and '--batch_size' not in run
    assert flag_help.topic_help(values, groups, '--data_path') == (
        '--data_path=\n    Where the records are. A glob is fine.\n')
    assert flag_help.topic_help(values, groups, 'nonsense') is None


@pytest.mark.parametrize('arg', ['--help', '-h', '-?', '--helpshort'])
def test_short_help_args_print_the_grouped_help_and_exit_0(demo_flags, arg):
    values, groups = demo_flags
    status, out = answer(['demo.py', '--batch_size=3', arg], values, groups)
    assert status == 0 and out == flag_help.grouped_help(values, groups, USAGE, EXAMPLE)


def test_a_topic_exits_0_and_an_unknown_one_exits_2_naming_the_groups(demo_flags, capsys):
    values, groups = demo_flags
    assert answer(['demo.py', '--help=data'], values, groups) == (0, flag_help.topic_help(values, groups, 'data'))
    status, out = answer(['demo.py', '--help=nonsense'], values, groups)
    assert status == 2 and out == ''
    assert capsys.readouterr().err == ('error: --help=nonsense: no such group or flag; groups: data, '
                                       'run mode and logging\n')


def test_helpfull_lists_every_flag_and_exits_0(demo_flags):
    values, groups = demo_flags
    status, out = answer(['demo.py', '--helpfull'], values, groups)
    assert status == 0 and out.startswith(USAGE + '\n\nflags:\n')
    for name in ('--data_path', '--batch_size', '--mode', '--[no]verbose_steps'):
        assert name in out


def test_other_arguments_and_those_after_a_double_dash_are_left_to_absl(demo_flags):
    values, groups = demo_flags
    assert answer(['demo.py', '--mode=eval', '--batch_size=3'], values, groups) == (None, '')
    assert answer(['demo.py', '--mode=eval', '--', '--help'], values, groups) == (None, '')
    assert answer(['demo.py', '--helpx'], values, groups) == (None, '')


def test_resnet_mains_helpfull_lists_its_flags():
    status, out = answer(['resnet_main.py', '--helpfull'], resnet_main.FLAGS, resnet_main.FLAG_GROUPS)
    assert status == 0
    for flag in ('--train_steps', '--lr_boundaries', '--eval_batch_count', '--moving_average_decay',
                 '--num_gpus', '--log_root', '--compute_dtype', '--helpfull'):
        assert flag in out


@pytest.mark.parametrize('width', [60, 80, 100, 120])
def test_resnet_mains_grouped_help_never_cuts_a_word(width):
    """A description too long for its line ends at a word, with '...'; --help=TOPIC has the rest."""
    text = flag_help.grouped_help(resnet_main.FLAGS, resnet_main.FLAG_GROUPS, width=width,
                                  compact=resnet_main.COMPACT_GROUPS)
    cut = 0
    for title, names in resnet_main.FLAG_GROUPS:
        if title in resnet_main.COMPACT_GROUPS:
            continue
        for name in names:
            line = next(line for line in text.splitlines() if line.startswith('  --%s=' % name))
            sentence = flag_help.first_sentence(resnet_main.FLAGS[name].help)
            if not line.endswith('...') or sentence.endswith('...'):
                assert line.endswith(' ' + sentence) or not sentence, line
                continue
            cut += 1
            shown = next(k for k in range(len(sentence), 0, -1) if line[:-3].endswith(sentence[:k]))
            assert sentence[shown] == ' ', (line, sentence)  # the cut is between two words
            assert len(line) <= width or ' ' not in sentence[:shown], line
    assert cut > 0 or width == 120
