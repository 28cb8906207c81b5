"""The progress line: step, loss, accuracy, speed and time left, every few steps or seconds."""

import math
import time

from absl import logging


def format_duration(seconds):
    """Formats seconds as H:MM:SS (or "?" when unknown)."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(max(seconds, 0.0)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Logs a progress line every `every_steps` steps or `every_secs` seconds.

    The line holds the step, the loss and accuracy of that step's batch, the training speed
    since the previous line (training steps only, evaluations left out), and the time left at
    this segment's average pace so far (evaluations included).

    Args:
      total_steps: the step training ends at.
      first_step: the step this segment starts after (0 for a fresh run).
      every_steps, every_secs: report when either has passed since the last report.
      clock: returns seconds; time.monotonic by default (tests pass their own).
    """

    def __init__(self, total_steps, first_step, every_steps=20, every_secs=10.0,
                 clock=time.monotonic):
        self.total_steps = total_steps
        self.every_steps = every_steps
        self.every_secs = every_secs
        self._clock = clock
        self._start_step = self._last_step = first_step
        self._start_time = self._last_time = clock()
        self._step_seconds = 0.0  # Summed over the steps since the last report.

    def update(self, step, loss, accuracy, seconds):
        """Records a step and reports it if due (and always the first and last step).

        Args:
          step: the step just taken.
          loss, accuracy: its batch's.
          seconds: how long the training step took.

        Returns:
          The line logged, or None.
        """
        now = self._clock()
        self._step_seconds += seconds
        if not (step - self._last_step >= self.every_steps
                or now - self._last_time >= self.every_secs
                or step in (self._start_step + 1, self.total_steps)):
            return None
        speed = (step - self._last_step) / max(self._step_seconds, 1e-9)
        pace = (now - self._start_time) / (step - self._start_step)
        line = (f"step {step}/{self.total_steps}  loss {loss:.4f}  accuracy {accuracy:.3f}  "
                f"{speed:.2f} steps/s  ETA {format_duration((self.total_steps - step) * pace)}")
        logging.info("%s", line)
        self._last_step, self._last_time, self._step_seconds = step, now, 0.0
        return line
