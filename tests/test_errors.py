"""errors.py: the error classes, their exit statuses, that every error class the library lets out
is one of them, and how resnet_main.py reports them (one `error:` line, the class's status)."""
import importlib
import inspect
import os
import pkgutil

import pytest

import processes
import resnet_cifar
from resnet_cifar import errors

# Exception classes the library raises and catches itself: none reaches resnet_main.py.
CAUGHT_INSIDE = {
    'training.NanLossError',         # becomes a TrainingError naming the last good checkpoint
    'training.StuckLossScaleError',  # a NanLossError
    'evaluation.UnreadableCheckpoint',  # eval skips the checkpoint with a warning
    'guards.Stopped',                # a stop signal: the mode saves and returns
}


@pytest.mark.timeout(10)
@pytest.mark.parametrize('error_class, status, builtin', [
    (errors.Error, 1, Exception),
    (errors.FlagError, 2, ValueError),
    (errors.DataError, 1, ValueError),
    (errors.CheckpointError, 1, RuntimeError),
    (errors.RunError, 1, RuntimeError),
])
def test_each_error_class_has_its_exit_status_and_builtin_base(error_class, status, builtin):
    assert error_class.exit_status == status
    assert issubclass(error_class, errors.Error) and issubclass(error_class, builtin)
    assert str(error_class('--flag=1: expected 2')) == '--flag=1: expected 2'


@pytest.mark.timeout(120)
def test_every_exception_class_of_the_library_is_an_error_or_caught_inside():
    found = set()
    for module_info in pkgutil.iter_modules(resnet_cifar.__path__):
        module = importlib.import_module('resnet_cifar.' + module_info.name)
        for name, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__
                    and not name.startswith('_')):
                found.add((module_info.name + '.' + name, value))
    assert {'training.TrainingError', 'cluster.ClusterError'} <= {name for name, _ in found}
    strays = sorted(name for name, value in found if not issubclass(value, errors.Error) and name not in CAUGHT_INSIDE)
    assert strays == [], 'exception classes that resnet_main.py would show as a traceback'
    assert CAUGHT_INSIDE <= {name for name, _ in found}, 'CAUGHT_INSIDE names a class that is gone'


@pytest.mark.timeout(120)
@pytest.mark.parametrize('kind', ['flag', 'data'])
def test_resnet_main_prints_one_error_line_and_exits_with_the_classs_status(kind, tmp_path, capsys):
    missing = str(tmp_path / 'missing.bin')
    if kind == 'flag':
        args, status, fragment = ['--mode=train', '--dataset=digits', '--batch_size=0'], 2, '--batch_size'
    else:
        args, status, fragment = ['--mode=eval', '--eval_once', '--dataset=cifar10', '--eval_data_path=' + missing,
                                  '--log_root=' + str(tmp_path / 'run')], 1, missing
    code, err = processes.main_exit(args, capsys)
    assert code == status
    assert len(err.splitlines()) == 1 and err.startswith('error: ') and fragment in err, err
    assert not os.path.exists(str(tmp_path / 'run'))
