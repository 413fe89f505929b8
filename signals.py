"""Ctrl-C and SIGTERM ask the training loop to stop after its current step.

    with signals.stop_on_signals() as stop:
        while not stop.requested:
            ...  # one step

Inside the block the first SIGINT or SIGTERM only records itself; the loop sees
`stop.requested` between steps and leaves normally, so MonitoredTrainingSession
closes as it would at the last step and saves its final checkpoint. The first
signal also puts the previous handlers back, so a second one acts as it would
without this module (a second Ctrl-C raises KeyboardInterrupt at once).
"""
import contextlib
import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest(object):
    """Set by the first stop signal: `signal_name` ('SIGINT', 'SIGTERM') or None."""

    def __init__(self):
        self.signal_name = None

    @property
    def requested(self):
        return self.signal_name is not None


@contextlib.contextmanager
def stop_on_signals(signals=STOP_SIGNALS):
    """Yields a StopRequest that the first of `signals` sets; restores the handlers on exit.

    Outside the main thread Python cannot install handlers; the request then never
    gets set and signals act as usual.
    """
    request = StopRequest()
    previous = {}

    def restore():
        for signum, handler in previous.items():
            # None: a handler not installed from Python; the default is the closest.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        previous.clear()

    def handle(signum, frame):
        # Only record it: logging here could re-enter a lock the interrupted code holds.
        request.signal_name = signal.Signals(signum).name
        restore()

    if threading.current_thread() is threading.main_thread():
        for signum in signals:
            previous[signum] = signal.signal(signum, handle)
    try:
        yield request
    finally:
        restore()
