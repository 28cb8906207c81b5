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

`two_sines`, the paper's second task (Fig. 4a), sums two sines at irregular times; class 1 when
the first period lies in [5, 6] ms and the second in [13, 15] ms (`_two_sines_batch`).

Timestamps are absolute times in ms (the window's start included), float32 (exact to about
1e-5 ms below 125 ms). Sequences are padded with zeros to the batch's longest one; `lengths`
says how many steps of each are real.
"""

import math

import numpy as np

__all__ = ["SAMPLINGS", "TWO_SINES", "CONDITIONS", "MIN_DURATION", "MAX_DURATION", "ON_PERIOD",
           "OFF_PERIOD", "chance_accuracy", "max_steps", "make_batch"]

SAMPLINGS = ("standard", "high_res", "async")
# The paper's second task (Fig. 4a), always asynchronous: see _two_sines_batch.
TWO_SINES = "two_sines"
CONDITIONS = SAMPLINGS + (TWO_SINES,)
MIN_DURATION, MAX_DURATION = 15.0, 125.0  # ms; also the end of every window.
ON_PERIOD = (5.0, 6.0)  # ms: the class-1 band.
OFF_PERIOD = (1.0, 100.0)  # ms: the log-uniform half's range.
# Grid samplings: samples per ms.
_SAMPLES_PER_MS = {"standard": 1, "high_res": 10}
# The second task: the second sine's class-1 band, the windows and the number of samples.
SECOND_ON_PERIOD = (13.0, 15.0)  # ms
TWO_SINES_DURATION = (1.0, 100.0)  # ms; also the end of every window
TWO_SINES_POINTS = (100, 1000)  # samples per sequence: 100 to 999


def _in_band(band):
    """The fraction of the log-uniform half's periods that fall in band."""
    return math.log(band[1] / band[0]) / math.log(OFF_PERIOD[1] / OFF_PERIOD[0])


def chance_accuracy(sampling="standard"):
    """The accuracy of always answering class 1: the expected fraction of class-1 labels (for
    two_sines, both periods must fall in their bands)."""
    _check_sampling(sampling)
    if sampling == TWO_SINES:
        return 0.5 + 0.5 * _in_band(ON_PERIOD) * _in_band(SECOND_ON_PERIOD)
    return 0.5 + 0.5 * _in_band(ON_PERIOD)


def max_steps(sampling):
    """The most steps a sequence of this sampling can have (125, 1250, 124 or 999)."""
    _check_sampling(sampling)
    if sampling == TWO_SINES:
        return TWO_SINES_POINTS[1] - 1
    if sampling == "async":
        return int(MAX_DURATION) - 1
    return int(MAX_DURATION) * _SAMPLES_PER_MS[sampling]


def _check_sampling(sampling):
    if sampling not in CONDITIONS:
        raise ValueError(f"sampling must be one of {', '.join(CONDITIONS)}; got {sampling!r}")


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

    For sampling "two_sines" see _two_sines_batch (periods and phases are then [batch, 2]).

    Raises:
      ValueError: for an unknown sampling or batch_size < 1.
    """
    _check_sampling(sampling)
    if not (isinstance(batch_size, (int, np.integer)) and batch_size >= 1):
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    if sampling == TWO_SINES:
        return _two_sines_batch(rng, batch_size)
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


def _log_uniform_periods(rng, size):
    return np.exp(rng.uniform(math.log(OFF_PERIOD[0]), math.log(OFF_PERIOD[1]), size=size))


def _two_sines_batch(rng, batch_size):
    """The paper's second task (Fig. 4a): x(t) = sin(2 pi t / T1 - phi1) + sin(2 pi t / T2 -
    phi2), class 1 when T1 lies in [5, 6] ms and T2 in [13, 15] ms.

    As the authors' code (their "task2"): the first batch_size // 2 sequences draw both periods
    from their bands (class 1), the rest draw each log-uniform on [1, 100] ms; duration
    ~ U(1, 100) ms, the window [start, start + duration) with start ~ U(0, 100 - duration);
    phi1, phi2 ~ U(0, duration); 100 to 999 sample times (U(100, 1000) rounded down) drawn
    uniformly in the window and sorted. (Their code writes sin(t / T - phi), without the
    2 pi of the paper's sine and of their first task; this follows the paper.)

    Returns:
      make_batch's dict, with periods and phases [batch, 2].
    """
    n_on = batch_size // 2
    periods = np.stack([
        np.concatenate([rng.uniform(*band, size=n_on),
                        _log_uniform_periods(rng, batch_size - n_on)])
        for band in (ON_PERIOD, SECOND_ON_PERIOD)], axis=1)
    labels = np.all([(periods[:, i] >= band[0]) & (periods[:, i] <= band[1])
                     for i, band in enumerate((ON_PERIOD, SECOND_ON_PERIOD))],
                    axis=0).astype(np.int32)
    durations = rng.uniform(*TWO_SINES_DURATION, size=batch_size)
    starts = rng.uniform(0.0, TWO_SINES_DURATION[1] - durations)
    phases = rng.uniform(0.0, durations[:, None], size=(batch_size, 2))
    lengths = np.floor(rng.uniform(*TWO_SINES_POINTS, size=batch_size)).astype(np.int64)
    steps = int(lengths.max())
    values = np.zeros((batch_size, steps, 1), np.float32)
    times = np.zeros((batch_size, steps, 1), np.float32)
    for i, n in enumerate(lengths):
        t = starts[i] + np.sort(rng.uniform(0.0, durations[i], size=n))
        times[i, :n, 0] = t
        values[i, :n, 0] = np.sin(2.0 * np.pi * t[:, None] / periods[i] - phases[i]).sum(axis=1)
    return {"values": values, "times": times, "lengths": lengths.astype(np.int32),
            "labels": labels, "periods": periods, "phases": phases, "starts": starts,
            "durations": durations}
