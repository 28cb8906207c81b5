"""How a run stops: SIGTERM and Ctrl-C become a request to stop at a step boundary; the exit
status of a diverged run."""

import signal

# The exit status of a diverged run: neither success nor a crash (1) nor a signal (128 + n).
EXIT_DIVERGED = 3


class StopSignals:
    """Turns SIGTERM and SIGINT (Ctrl-C) into a request to stop at the next step boundary.

    A context manager around the training loop, which checks `requested` once per step and then
    checkpoints and exits. A second Ctrl-C raises KeyboardInterrupt at once, for a stuck step.
    The previous handlers are restored on exit.

    Args:
      signals: the signals to catch.
    """

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
        self.signals = tuple(signals)
        self.received = None
        self._previous = {}

    def _handle(self, signum, frame):
        del frame  # unused
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.received is None:
            self.received = signum

    @property
    def requested(self):
        """Whether a signal was received."""
        return self.received is not None

    @property
    def name(self):
        """The received signal's name, e.g. "SIGTERM"; None if none was."""
        return None if self.received is None else signal.Signals(self.received).name

    def __enter__(self):
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
