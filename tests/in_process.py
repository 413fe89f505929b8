"""Runs resnet_main.py's main() in the test process, for flag errors that need no subprocess."""
import pytest


def main_exit(args, capsys):
    """(exit code, stderr) of resnet_main with `args`; the flags are reset afterwards."""
    import resnet_main
    resnet_main.FLAGS.unparse_flags()
    try:
        with pytest.raises(SystemExit) as exit_info:
            resnet_main.main(resnet_main.parse_flags(['resnet_main.py'] + list(args)))
    finally:
        resnet_main.FLAGS.unparse_flags()
    return exit_info.value.code, capsys.readouterr().err


def main_status(args):
    """The exit status of resnet_main's main() on `args` in this process (0 when it returns);
    the flags are reset afterwards. Output goes where it would (capsys can read it)."""
    import resnet_main
    resnet_main.FLAGS.unparse_flags()
    try:
        resnet_main.main(resnet_main.parse_flags(['resnet_main.py'] + list(args)))
        return 0
    except SystemExit as e:
        return e.code
    finally:
        resnet_main.FLAGS.unparse_flags()


def resolve(args):
    """The RunConfig resnet_main builds for `args`; the flags are reset afterwards."""
    import resnet_main
    f = resnet_main.FLAGS
    f.unparse_flags()
    try:
        f(['resnet_main.py'] + list(args))
        return resnet_main.configure()
    finally:
        f.unparse_flags()
