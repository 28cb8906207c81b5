"""Data of the frequency-discrimination task (Phased LSTM paper, Fig. 3): numpy only.

Each sequence samples a sine wave x(t) = sin(2 pi t / T - phi) in a window of time; the task is
to tell whether its period T lies in [5, 6] ms (docs/experiments.md, "Frequency discrimination"):

- duration ~ U(15, 125) ms, the window [start, start + duration) with start ~ U(0, 125 - duration)
  ms, so that every window ends by 125 ms; phi ~ U(0, duration).
- The first half of a batch (batch_size // 2 sequences) draws T ~ U(5, 6) ms: class 1. The rest
  draws T log-uniform on [1, 100] ms and is labelled 1 when 5 <= T <= 6, 0 otherwise; a
  fraction ln(6/5) / ln(100) = 4% of them, so about 52% of all labels are 1 (`chance_accuracy`).
- Samplings of the same signals (the same rng draws give the same T, phi and window in each):

  `standard`  one sample every 1 ms from the window's start: the grid points start + k in the
              half-open window, ceil(duration) of them, 15-125 steps.
  `high_res`  every 0.1 ms: ceil(10 duration) samples, 150-1,250 steps.
  `async`     floor(duration) times drawn uniformly in the window and sorted: 15-124 steps, the
              notes' range. The notes give the range but no rule for the count; floor(duration)
              keeps the standard grid's mean rate (one sample per ms of window), is the standard
              grid's count or one less, and is exactly the notes' 15-124.

Timestamps are absolute times in ms (the window's start included), float32 (exact to about
1e-5 ms below 125 ms). Sequences are padded with zeros to the batch's longest one; `lengths`
says how many steps of each are real.
"""

import math

import numpy as np

__all__ = ["SAMPLINGS", "MIN_DURATION", "MAX_DURATION", "ON_PERIOD", "OFF_PERIOD",
           "chance_accuracy", "max_steps", "make_batch"]

SAMPLINGS = ("standard", "high_res", "async")
MIN_DURATION, MAX_DURATION = 15.0, 125.0  # ms; also the end of every window.
ON_PERIOD = (5.0, 6.0)  # ms: the class-1 band.
OFF_PERIOD = (1.0, 100.0)  # ms: the log-uniform half's range.
# Grid samplings: samples per ms.
_SAMPLES_PER_MS = {"standard": 1, "high_res": 10}


def chance_accuracy():
    """The accuracy of always answering class 1: the expected fraction of class-1 labels."""
    in_band = math.log(ON_PERIOD[1] / ON_PERIOD[0]) / math.log(OFF_PERIOD[1] / OFF_PERIOD[0])
    return 0.5 + 0.5 * in_band


def max_steps(sampling):
    """The most steps a sequence of this sampling can have (125, 1250 or 124)."""
    _check_sampling(sampling)
    if sampling == "async":
        return int(MAX_DURATION) - 1
    return int(MAX_DURATION) * _SAMPLES_PER_MS[sampling]


def _check_sampling(sampling):
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}; got {sampling!r}")


def _grid_count(durations, per_ms):
    # The grid points start + k / per_ms with k / per_ms < duration. Rounded first, so that a
    # product like 15.3 * 10 = 153.00000000000003 does not count one point too many.
    return np.ceil(np.round(durations * per_ms, 9)).astype(np.int64)


def make_batch(rng, batch_size, sampling):
    """Draws a batch of sequences; deterministic given the state of rng.

    Args:
      rng: a numpy Generator, e.g. np.random.default_rng([seed, stream, index]).
      batch_size: sequences, >= 1. The first batch_size // 2 are drawn from the class-1 band.
      sampling: "standard", "high_res" or "async".

    Returns:
      A dict of arrays, padded to the batch's longest sequence (steps):
        values   float32 [batch, steps, 1]  x(t) at the sample times; 0 past the length.
        times    float32 [batch, steps, 1]  the sample times in ms; 0 past the length.
        lengths  int32 [batch]              real steps of each sequence.
        labels   int32 [batch]              1 when 5 <= T <= 6 ms, else 0.
        periods  float64 [batch]            T in ms.
        phases   float64 [batch]            phi.
        starts, durations  float64 [batch]  the window [start, start + duration) in ms.

    Raises:
      ValueError: for an unknown sampling or batch_size < 1.
    """
    _check_sampling(sampling)
    if not (isinstance(batch_size, (int, np.integer)) and batch_size >= 1):
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    n_on = batch_size // 2
    # The signals: drawn the same way whatever the sampling.
    periods = np.concatenate([
        rng.uniform(*ON_PERIOD, size=n_on),
        np.exp(rng.uniform(math.log(OFF_PERIOD[0]), math.log(OFF_PERIOD[1]),
                           size=batch_size - n_on))])
    labels = ((periods >= ON_PERIOD[0]) & (periods <= ON_PERIOD[1])).astype(np.int32)
    durations = rng.uniform(MIN_DURATION, MAX_DURATION, size=batch_size)
    starts = rng.uniform(0.0, MAX_DURATION - durations)
    phases = rng.uniform(0.0, durations)

    # The sample times, relative to each window's start.
    if sampling == "async":
        lengths = np.floor(durations).astype(np.int64)
        offsets = [np.sort(rng.uniform(0.0, d, size=n)) for d, n in zip(durations, lengths)]
    else:
        per_ms = _SAMPLES_PER_MS[sampling]
        lengths = _grid_count(durations, per_ms)
        offsets = [np.arange(n) / per_ms for n in lengths]

    steps = int(lengths.max())
    values = np.zeros((batch_size, steps, 1), np.float32)
    times = np.zeros((batch_size, steps, 1), np.float32)
    for i, offset in enumerate(offsets):
        t = starts[i] + offset  # float64: the values are computed before rounding the times.
        times[i, :len(t), 0] = t
        values[i, :len(t), 0] = np.sin(2.0 * np.pi * t / periods[i] - phases[i])
    return {"values": values, "times": times, "lengths": lengths.astype(np.int32),
            "labels": labels, "periods": periods, "phases": phases, "starts": starts,
            "durations": durations}
