"""progress.py: durations as h:mm:ss, and when eval reports its progress through a large set."""
import pytest

from resnet_cifar import progress


@pytest.mark.timeout(10)
@pytest.mark.parametrize('seconds, text', [
    (0, '0:00:00'), (59.4, '0:00:59'), (59.6, '0:01:00'), (3723, '1:02:03'), (86400 + 61, '24:01:01'),
])
def test_durations_are_hours_minutes_seconds_rounded_to_the_second(seconds, text):
    assert progress.format_duration(seconds) == text


@pytest.mark.timeout(10)
def test_eval_progress_every_tenth_of_a_large_set_only():
    eval_progress = progress.EvalProgress(10000, 100)
    assert (eval_progress.total_batches, eval_progress.every_n_batches) == (100, 10)
    lines = {b: eval_progress.line(80000, b, b * 100, b * 0.5) for b in range(1, 101)}
    assert sorted(b for b, line in lines.items() if line) == list(range(10, 100, 10))
    assert lines[30] == ('eval of step 80000: batch 30/100 (30%), 3000/10000 images, '
                         '200.0 images/sec, ETA 0:00:35')
    small = progress.EvalProgress(300, 100)  # the digits sample: 3 batches
    assert small.every_n_batches == 0
    assert not any(small.line(1, b, b * 100, 1.0) for b in range(1, 4))
    ragged = progress.EvalProgress(2050, 100)  # 21 batches, the last one partial
    assert (ragged.total_batches, ragged.every_n_batches) == (21, 3)


@pytest.mark.timeout(10)
def test_the_smallest_set_with_progress_lines_and_other_line_counts():
    """MIN_BATCHES batches is the smallest set with lines; lines_per_pass sets their spacing."""
    at_threshold = progress.EvalProgress(progress.MIN_BATCHES * 50, 50)
    assert at_threshold.every_n_batches == 2  # 20 batches, a line every 2
    below = progress.EvalProgress((progress.MIN_BATCHES - 1) * 50, 50)
    assert below.every_n_batches == 0 and below.line(1, 2, 100, 1.0) is None
    quarters = progress.EvalProgress(10000, 100, lines_per_pass=4)
    assert [b for b in range(1, 101) if quarters.line(1, b, b * 100, 1.0)] == [25, 50, 75]


@pytest.mark.timeout(10)
def test_a_line_at_the_very_start_does_not_divide_by_zero():
    line = progress.EvalProgress(10000, 100).line(5, 10, 1000, 0.0)
    assert line.startswith('eval of step 5: batch 10/100 (10%), 1000/10000 images, ') and 'ETA 0:00:00' in line
