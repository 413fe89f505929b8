"""Progress lines: durations as h:mm:ss, and how far eval is through a large eval set.

A full CIFAR test set is 100 batches of 100 images and takes a while on a CPU;
small sets (the digits sample: 3 batches) would only get noise, so they get none.
"""
import math


def format_duration(seconds):
    """'1:02:03' for 3723 seconds."""
    seconds = int(round(seconds))
    return '%d:%02d:%02d' % (seconds // 3600, seconds // 60 % 60, seconds % 60)


MIN_BATCHES = 20  # smaller eval sets get no progress lines
LINES_PER_PASS = 10


class EvalProgress(object):
    """Decides when to report and words the line.

    Args:
      num_images: images scored per checkpoint.
      batch_size: images per eval batch.
    Attributes:
      total_batches: batches per checkpoint (the last one may be partial).
      every_n_batches: report after every this many batches; 0 = never.
    """

    def __init__(self, num_images, batch_size, min_batches=MIN_BATCHES, lines_per_pass=LINES_PER_PASS):
        self.num_images = num_images
        self.total_batches = int(math.ceil(num_images / float(batch_size)))
        if self.total_batches < min_batches:
            self.every_n_batches = 0
        else:
            self.every_n_batches = int(math.ceil(self.total_batches / float(lines_per_pass)))

    def line(self, step, batches, images, seconds):
        """The progress line after `batches` batches (`images` images, `seconds` so far), or None.

        No line after the last batch: the per-checkpoint result line follows it.
        """
        if (not self.every_n_batches or batches % self.every_n_batches
                or batches >= self.total_batches):
            return None
        rate = images / max(seconds, 1e-9)
        eta = (self.num_images - images) / max(rate, 1e-9)
        return ('eval of step %d: batch %d/%d (%.0f%%), %d/%d images, %.1f images/sec, ETA %s'
                % (step, batches, self.total_batches, 100.0 * batches / self.total_batches,
                   images, self.num_images, rate, format_duration(eta)))

