"""A real full disk for tests: a small tmpfs mounted for one test, and a file that fills it.

Mounting needs root (or CAP_SYS_ADMIN); where it is not permitted, `small_disk` skips the
test with the reason.
"""
import contextlib
import errno
import os
import subprocess

import pytest

PAGE = 4096  # tmpfs gives out space in pages


@contextlib.contextmanager
def small_disk(mount_point, size='16m'):
    """Mounts a tmpfs of `size` at `mount_point` (made if need be) while active; unmounts it
    after, whatever happened."""
    os.makedirs(mount_point, exist_ok=True)
    try:
        done = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=' + size, 'tmpfs', mount_point],
                              capture_output=True, text=True, timeout=30)
    except OSError as e:
        pytest.skip('cannot run mount (%s): a full disk needs a small tmpfs' % e)
    if done.returncode != 0:
        pytest.skip('mounting a tmpfs is not permitted here (%s): a full disk needs one'
                    % (done.stderr.strip() or 'exit %d' % done.returncode))
    try:
        yield mount_point
    finally:
        if subprocess.run(['umount', mount_point], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(['umount', '-l', mount_point], capture_output=True, timeout=30)


def free_bytes(directory):
    stats = os.statvfs(directory)
    return stats.f_bavail * stats.f_frsize


def fill(directory):
    """Writes `directory`/filler until the file system is full; returns the filler's path."""
    path = os.path.join(directory, 'filler')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for chunk in (b'\0' * (1 << 20), b'\0' * PAGE, b'\0'):
            try:
                while True:
                    os.write(fd, chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)
    assert free_bytes(directory) == 0
    return path


def leave_free(filler, pages):
    """Shortens the filler so that `pages` pages of its file system are free (none before)."""
    size = os.path.getsize(filler)
    used = -(-size // PAGE)
    os.truncate(filler, (used - pages) * PAGE)
    assert free_bytes(os.path.dirname(filler)) == pages * PAGE, (free_bytes(os.path.dirname(filler)), pages)
