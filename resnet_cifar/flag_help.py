"""A short, grouped --help for absl flags, without TensorFlow.

absl's --help lists every flag alphabetically (160 lines for resnet_main) and
exits with status 1. `handle_help_args`, called before absl parses the command
line, answers instead:

  -h, -?, --help, --helpshort   one line per flag, in groups, a digits example; exit 0
  --help=TOPIC                  the flags of the group whose title has TOPIC (or the
                                flag named TOPIC), with their whole help; exit 0
  --helpfull                    absl's full list, every flag of every module; exit 0

Anything else is left to absl.
"""
import os
import re
import shutil
import sys
import textwrap

SHORT_HELP_ARGS = ('-h', '-?', '--help', '-help', '--helpshort', '-helpshort')
FULL_HELP_ARGS = ('--helpfull', '-helpfull')


def first_sentence(text):
    """The help text up to its first '. ' (or all of it), on one line."""
    text = ' '.join((text or '').split())
    text = re.sub(r'^<[^>]*>: ', '', text)  # absl's enum prefix; the choices are shown beside the name
    match = re.search(r'\.(\s|$)', text)
    return text[:match.start() + 1] if match else text


def first_sentence_free(text):
    """The whole help text on one line, without absl's enum prefix."""
    return re.sub(r'^<[^>]*>: ', '', ' '.join((text or '').split()))


def _value(flag):
    if flag.default is None:
        return ''
    if isinstance(flag.default, bool):
        return 'true' if flag.default else 'false'
    return flag.default_as_str.strip("'") if flag.default_as_str else str(flag.default)


def _choices(flag):
    values = getattr(getattr(flag, 'parser', None), 'enum_values', None)
    return '{%s}' % ','.join(values) if values else ''


def flag_line(flag, width):
    """'  --name=default  First sentence of the help.', cut after a word to fit `width` columns
    (with '...'); --help=TOPIC shows the rest."""
    name = '--%s=%s' % (flag.name, _value(flag))
    choices = _choices(flag)
    if choices:
        name += ' ' + choices
    head = '  %-30s ' % name
    sentence = first_sentence(flag.help)
    if len(head) + len(sentence) <= width:
        return head + sentence
    # Cut between two words, never inside one (the first word stays whole however long).
    room = max(0, width - len(head) - 3)
    words = sentence[:room + 1].rsplit(' ', 1)[0] if ' ' in sentence[:room + 1] else sentence.split(' ', 1)[0]
    return head + words.rstrip() + '...'


def grouped_help(flag_values, groups, usage='', example='', width=None, compact=()):
    """The short help: `usage`, then each group's flags one a line, then `example`. The groups
    titled in `compact` list only their flags' names (--help=TOPIC shows them in full)."""
    width = width or max(60, min(120, shutil.get_terminal_size((100, 24)).columns))
    parts = [usage.strip()] if usage else []
    for title, names in groups:
        if title in compact:
            listed = textwrap.fill(' '.join('--' + name for name in names), width, initial_indent='  ',
                                   subsequent_indent='  ', break_on_hyphens=False)
            parts.append('%s (--help=%s):\n%s' % (title, title.split()[0].lower(), listed))
            continue
        parts.append('%s:\n%s' % (title, '\n'.join(flag_line(flag_values[name], width) for name in names)))
    if example:
        parts.append(example.rstrip())
    parts.append('--help=TOPIC shows a group (e.g. --help=transfer) or a flag in full; '
                 '--helpfull lists every flag.')
    return '\n\n'.join(parts) + '\n'


def topic_help(flag_values, groups, topic):
    """The whole help of the flags of the group whose title has `topic`, or of the flag `topic`."""
    topic = topic.strip().lstrip('-').lower()
    if topic in flag_values:
        flags = [flag_values[topic]]
    else:
        flags = [flag_values[name] for title, names in groups if topic in title.lower() for name in names]
    if not flags:
        return None
    return '\n\n'.join('--%s=%s%s\n    %s' % (f.name, _value(f), ' ' + _choices(f) if _choices(f) else '',
                                            first_sentence_free(f.help))
                       for f in flags) + '\n'


def handle_help_args(argv, flag_values, groups, usage='', example='', stdout=None, compact=()):
    """Answers -h/--help/--help=TOPIC/--helpfull in `argv` and exits 0; returns otherwise.

    Call before absl parses `argv`, before TensorFlow is imported. Only the
    arguments before a '--' count.
    """
    stdout = stdout or sys.stdout
    args = argv[1:argv.index('--')] if '--' in argv else argv[1:]
    for arg in args:
        if arg in FULL_HELP_ARGS:
            from absl import app
            app.define_help_flags()
            stdout.write(_full_help(flag_values, usage))
            _exit(stdout, 0)
        if arg in SHORT_HELP_ARGS:
            stdout.write(grouped_help(flag_values, groups, usage, example, compact=compact))
            _exit(stdout, 0)
        if arg.startswith(('--help=', '-help=')):
            topic = arg.split('=', 1)[1]
            text = topic_help(flag_values, groups, topic)
            if text is None:
                sys.stderr.write('error: --help=%s: no such group or flag; groups: %s\n'
                                 % (topic, ', '.join(title.lower() for title, _ in groups)))
                _exit(stdout, 2)
            stdout.write(text)
            _exit(stdout, 0)


def _full_help(flag_values, usage):
    text = flag_values.get_help(include_special_flags=True)
    return (usage.strip() + '\n\n' if usage else '') + 'flags:\n' + text + '\n'


def _exit(stdout, status):
    try:
        stdout.flush()
    except BrokenPipeError:  # `--help | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), stdout.fileno())
    sys.exit(status)
