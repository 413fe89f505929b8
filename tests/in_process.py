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
