"""The suite itself: tests run in empty working directories of their own and leave the checkout
alone (conftest.py), so they pass in a checkout where the README's quick start has left its run
in runs/digits, and a test that writes into the checkout fails.

Each test runs pytest in a copy of the checkout (without .git, and with the `tiny_run` fixture
planted where the quick start leaves its run) and reads back its summary line."""
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from processes import REPO, copy_run, snapshot

IGNORED = ('.git', 'runs', '__pycache__', '.pytest_cache')


def checkout_with_a_quick_start_run(tiny_run, destination):
    """A copy of the checkout whose runs/digits holds a finished digits run, as after the quick
    start: --validation_size=0 and checkpoints, in the place of the default --log_root."""
    checkout = str(destination)
    shutil.copytree(REPO, checkout, ignore=lambda folder, names: [
        name for name in names if name in IGNORED or name.endswith('.egg-info')
        or os.path.exists(os.path.join(folder, name, 'pyvenv.cfg'))])  # a virtualenv in the clone
    copy_run(tiny_run, os.path.join(checkout, 'runs', 'digits'))
    return checkout


def files_but_caches(checkout):
    """snapshot() of the checkout without Python's __pycache__ directories."""
    return {path: stat for path, stat in snapshot(checkout).items() if '__pycache__' not in path}


def run_pytest(checkout, basetemp, *args):
    """pytest in one process, started in `checkout` with its own code first on the path."""
    env = dict(os.environ, PYTHONPATH=checkout, COLUMNS='400')  # summary lines in full
    return subprocess.run([sys.executable, '-m', 'pytest', '-q', '-n', '0', '--basetemp=' + str(basetemp)]
                          + list(args), cwd=checkout, env=env, capture_output=True, text=True, timeout=170)


# The tests that resolve digits flags in this process without a --log_root, so with the default
# runs/digits (relative to the working directory), and test_resolve.py's others of that kind.
DEFAULT_LOG_ROOT_TESTS = ['tests/test_cpu.py', 'tests/test_staging.py::test_stage_input_defaults_to_on_for_gpus_only',
                          'tests/test_reliability.py::test_more_bad_flags_exit_2'] + [
    'tests/test_resolve.py::test_' + name for name in (
        'flags_not_given_come_from_the_run', 'a_resumed_trainer_keeps_the_run_recipe_and_takes_explicit_changes',
        'a_new_run_in_a_directory_without_checkpoints_takes_its_flags', 'a_bad_settings_file_is_one_error_naming_it',
        'a_frozen_run_stays_frozen_when_resumed_without_the_flag', 'keys_a_settings_file_lacks_come_from_the_flags',
        'no_held_out_score_on_the_default_test_set_of_a_run_on_other_data',
        'a_validation_size_that_leaves_nothing_to_train_on_is_a_flag_error',
        'eval_takes_the_validation_split_and_its_records_from_the_run',
        'a_run_older_than_the_split_may_not_gain_one_when_resumed')]


@pytest.mark.timeout(200)
def test_the_tests_pass_in_a_checkout_that_holds_the_quick_starts_run(tiny_run, tmp_path):
    """The quick start, then the tests: test_resolve.py resolved flags with the default
    --log_root, found the quick start's run and exited 1 (the run's --validation_size=0), not 2."""
    checkout = checkout_with_a_quick_start_run(tiny_run, tmp_path / 'checkout')
    before = files_but_caches(checkout)
    done = run_pytest(checkout, tmp_path / 'basetemp', *DEFAULT_LOG_ROOT_TESTS)
    summary = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0 and re.search(r'^\d+ passed', summary), done.stdout[-4000:] + done.stderr[-2000:]
    assert int(summary.split()[0]) >= 20, summary
    assert files_but_caches(checkout) == before


STRAY_TESTS = textwrap.dedent('''\
    import os
    import processes

    def test_writes_into_the_checkout():
        with open(os.path.join(processes.REPO, 'stray.txt'), 'w') as f:
            f.write('left behind')

    def test_sees_no_run_in_its_working_directory():
        assert not os.path.exists(os.path.join('runs', 'digits'))
        os.makedirs(os.path.join('runs', 'digits'))  # lands in the test's own directory
    ''')


@pytest.mark.timeout(120)
def test_a_test_that_leaves_a_file_in_the_checkout_fails(tiny_run, tmp_path):
    checkout = checkout_with_a_quick_start_run(tiny_run, tmp_path / 'checkout')
    with open(os.path.join(checkout, 'tests', 'test_strays.py'), 'w') as f:
        f.write(STRAY_TESTS)
    done = run_pytest(checkout, tmp_path / 'basetemp', 'tests/test_strays.py', '-rf')
    assert done.returncode == 1, done.stdout[-4000:] + done.stderr[-2000:]
    failed = [line for line in done.stdout.splitlines() if line.startswith('FAILED')]
    assert len(failed) == 1, done.stdout[-4000:]
    assert 'test_writes_into_the_checkout' in failed[0] and 'stray.txt' in failed[0], failed[0]
    assert done.stdout.strip().splitlines()[-1].startswith('1 failed, 1 passed'), done.stdout[-2000:]
    assert sorted(os.listdir(os.path.join(checkout, 'runs'))) == ['digits']
