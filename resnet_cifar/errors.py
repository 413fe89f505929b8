"""The errors a user sees: one line naming the file, flag or value and what was expected.

resnet_main.py prints `error: <message>` for any `Error` and exits with its
`exit_status`: 2 for a flag that cannot work, 1 for everything else.
"""


class Error(Exception):
    """Base of every error the suite reports in one line."""
    exit_status = 1


class FlagError(Error, ValueError):
    """A flag value (or RunConfig field) that cannot work; the message names the flag."""
    exit_status = 2


class DataError(Error, ValueError):
    """Record files that are missing, malformed or changed; names the file."""


class CheckpointError(Error, RuntimeError):
    """A checkpoint that is missing, unreadable, or of another architecture."""


class RunError(Error, RuntimeError):
    """A run that cannot go on (a NaN loss, a full disk, a locked or inconsistent run
    directory); says why and what was kept."""
