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


def resolve(args):
    """(hps, config) of resnet_main for `args`, as the program would build them; flags reset after."""
    import resnet_main
    f = resnet_main.FLAGS
    f.unparse_flags()
    try:
        f(['resnet_main.py'] + list(args))
        config = resnet_main.resolve_config(f)
        return resnet_main.build_hparams(config), config
    finally:
        f.unparse_flags()
