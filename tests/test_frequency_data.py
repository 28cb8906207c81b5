"""Tests of experiments/frequency_data.py, the frequency-discrimination data."""

import math

import numpy as np
import pytest

from experiments import frequency_data as fd

SAMPLINGS = ("standard", "high_res", "async")
# float32 times near 125 ms are exact to ~1e-5 ms.
TIME_ATOL = 2e-5


def batch(sampling, size=200, seed=0):
    return fd.make_batch(np.random.default_rng(seed), size, sampling)


@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_shapes_and_dtypes(sampling):
    b = batch(sampling, size=10)
    steps = b["values"].shape[1]
    assert b["values"].shape == b["times"].shape == (10, steps, 1)
    assert b["values"].dtype == b["times"].dtype == np.float32
    assert b["lengths"].shape == b["labels"].shape == (10,)
    assert b["lengths"].dtype == b["labels"].dtype == np.int32
    for key in ("periods", "phases", "starts", "durations"):
        assert b[key].shape == (10,) and b[key].dtype == np.float64
    # Padded to the longest sequence of the batch, no further.
    assert steps == b["lengths"].max()


@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_period_ranges_per_half(sampling):
    b = batch(sampling, size=2000)
    on, rest = b["periods"][:1000], b["periods"][1000:]
    assert on.min() >= 5.0 and on.max() <= 6.0
    assert rest.min() >= 1.0 and rest.max() <= 100.0
    # Log-uniform: ln T uniform on [0, ln 100], so its mean is ln(100) / 2 and a quarter of
    # them lie below 100 ** 0.25 = 3.16 ms.
    assert np.log(rest).mean() == pytest.approx(math.log(100) / 2, abs=0.1)
    assert np.mean(rest < 100 ** 0.25) == pytest.approx(0.25, abs=0.04)
    assert rest.max() > 50 and rest.min() < 1.5  # Spans the range.


@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_labels_agree_with_periods_and_classes_balance(sampling):
    b = batch(sampling, size=4000, seed=3)
    np.testing.assert_array_equal(b["labels"], (b["periods"] >= 5) & (b["periods"] <= 6))
    assert (b["labels"][:2000] == 1).all()  # Exactly half class 1 by construction ...
    positives = b["labels"][2000:].mean()  # ... plus the log-uniform half's own, ln 1.2 / ln 100.
    assert positives == pytest.approx(math.log(1.2) / math.log(100), abs=0.015)
    assert 0 < positives < 0.1
    assert fd.chance_accuracy() == pytest.approx(0.5 + 0.5 * math.log(1.2) / math.log(100))
    assert 0.519 < fd.chance_accuracy() < 0.521


def test_odd_batch_puts_the_extra_sequence_in_the_log_uniform_half():
    b = batch("standard", size=5)
    assert (b["labels"][:2] == 1).all()
    assert (b["periods"][:2] >= 5).all() and (b["periods"][:2] <= 6).all()
    b = batch("standard", size=1)
    assert b["values"].shape[0] == 1


@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_windows_durations_and_phases(sampling):
    b = batch(sampling, size=2000)
    d, s = b["durations"], b["starts"]
    assert d.min() >= 15 and d.max() <= 125
    assert d.min() < 17 and d.max() > 123
    assert s.min() >= 0 and (s + d).max() <= 125
    assert (b["phases"] >= 0).all() and (b["phases"] <= d).all()
    # phi ~ U(0, duration): phi / duration is uniform on [0, 1].
    assert np.mean(b["phases"] / d) == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("sampling, spacing, lo, hi", [("standard", 1.0, 15, 125),
                                                       ("high_res", 0.1, 150, 1250)])
def test_grid_samplings(sampling, spacing, lo, hi):
    b = batch(sampling, size=500)
    lengths = b["lengths"]
    assert lengths.min() >= lo and lengths.max() <= hi
    assert lengths.min() < lo + 0.05 * (hi - lo) and lengths.max() > hi - 0.05 * (hi - lo)
    assert hi == fd.max_steps(sampling)
    for i in range(len(lengths)):
        n, t = lengths[i], b["times"][i, :lengths[i], 0].astype(np.float64)
        start, duration = b["starts"][i], b["durations"][i]
        # Every grid point start + k * spacing of the half-open window, and no other.
        assert n == math.ceil(round(duration / spacing, 6))
        np.testing.assert_allclose(t, start + np.arange(n) * spacing, atol=TIME_ATOL, rtol=0)
        np.testing.assert_allclose(np.diff(t), spacing, atol=2 * TIME_ATOL, rtol=0)
        assert t[-1] < start + duration + TIME_ATOL
        assert t[-1] + spacing >= start + duration - TIME_ATOL


def test_async_sampling():
    b = batch("async", size=500)
    lengths = b["lengths"]
    assert lengths.min() >= 15 and lengths.max() <= 124 == fd.max_steps("async")
    assert lengths.min() <= 20 and lengths.max() >= 119
    np.testing.assert_array_equal(lengths, np.floor(b["durations"]))
    gaps = []
    for i in range(len(lengths)):
        t = b["times"][i, :lengths[i], 0].astype(np.float64)
        start, end = b["starts"][i], b["starts"][i] + b["durations"][i]
        assert (np.diff(t) >= 0).all()  # sorted
        assert t[0] >= start - TIME_ATOL and t[-1] <= end + TIME_ATOL
        gaps.append(np.diff(t))
    gaps = np.concatenate(gaps)
    # Irregular: not a grid.
    assert gaps.std() > 0.5 and gaps.min() < 0.01 and gaps.max() > 4


@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_values_are_the_sine_at_the_times(sampling):
    b = batch(sampling, size=40)
    for i in range(40):
        n = b["lengths"][i]
        t = b["times"][i, :n, 0].astype(np.float64)
        expected = np.sin(2 * np.pi * t / b["periods"][i] - b["phases"][i])
        # float32 times: the phase 2 pi t / T is off by at most 2 pi 1e-5 / 1 ms.
        np.testing.assert_allclose(b["values"][i, :n, 0], expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_padding_is_zero_past_each_length(sampling):
    b = batch(sampling, size=30)
    steps = b["values"].shape[1]
    assert len(set(b["lengths"].tolist())) > 1  # something is padded
    for i in range(30):
        n = b["lengths"][i]
        assert (b["values"][i, n:] == 0).all() and (b["times"][i, n:] == 0).all()
        # Real steps have real times: all after 0 except perhaps a window starting at 0.
        assert (b["times"][i, 1:n] > 0).all()
        assert n <= steps


@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_deterministic_given_the_seed(sampling):
    first, second, other = batch(sampling, 16, 7), batch(sampling, 16, 7), batch(sampling, 16, 8)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    assert not np.array_equal(first["periods"], other["periods"])


def test_the_samplings_share_the_signals():
    batches = {s: batch(s, 16, 5) for s in SAMPLINGS}
    for key in ("periods", "labels", "phases", "starts", "durations"):
        np.testing.assert_array_equal(batches["standard"][key], batches["high_res"][key])
        np.testing.assert_array_equal(batches["standard"][key], batches["async"][key])
    # The 0.1 ms grid holds the 1 ms grid: every tenth sample.
    std, high = batches["standard"], batches["high_res"]
    i = 0
    n = std["lengths"][i]
    np.testing.assert_allclose(high["times"][i, :10 * n:10, 0], std["times"][i, :n, 0],
                               atol=TIME_ATOL)
    np.testing.assert_allclose(high["values"][i, :10 * n:10, 0], std["values"][i, :n, 0],
                               atol=1e-4)


@pytest.mark.parametrize("args, error", [
    (("standard", 0), "batch_size must be"),
    (("sometimes", 4), "sampling must be one of standard, high_res, async"),
])
def test_bad_arguments(args, error):
    sampling, size = args
    with pytest.raises(ValueError, match=error):
        fd.make_batch(np.random.default_rng(0), size, sampling)



def test_two_sines_follow_the_second_tasks_definition():
    b = batch(fd.TWO_SINES, size=4000, seed=5)
    steps = b["values"].shape[1]
    assert b["values"].shape == b["times"].shape == (4000, steps, 1) and steps == b["lengths"].max()
    assert b["periods"].shape == b["phases"].shape == (4000, 2)
    assert b["lengths"].min() >= 100 and b["lengths"].max() <= 999 == fd.max_steps(fd.TWO_SINES)
    # The first half draws both periods in their bands; the rest each log-uniform on [1, 100].
    first, second = b["periods"][:2000].T
    assert first.min() >= 5 and first.max() <= 6 and second.min() >= 13 and second.max() <= 15
    assert b["periods"][2000:].min() >= 1 and b["periods"][2000:].max() <= 100
    in_bands = ((b["periods"][:, 0] >= 5) & (b["periods"][:, 0] <= 6)
                & (b["periods"][:, 1] >= 13) & (b["periods"][:, 1] <= 15))
    np.testing.assert_array_equal(b["labels"], in_bands)
    assert fd.chance_accuracy(fd.TWO_SINES) == pytest.approx(
        0.5 + 0.5 * math.log(1.2) * math.log(15 / 13) / math.log(100) ** 2)
    # Windows inside [0, 100] ms of 1 to 100 ms; sorted times inside them; the signal is the
    # sum of both sines; zeros past each length.
    assert b["durations"].min() >= 1 and b["durations"].max() <= 100
    assert (b["starts"] >= 0).all() and (b["starts"] + b["durations"] <= 100).all()
    for i in range(0, 4000, 397):
        n = b["lengths"][i]
        t = b["times"][i, :n, 0].astype(np.float64)
        assert (np.diff(t) >= 0).all()
        assert t[0] >= b["starts"][i] - TIME_ATOL
        assert t[-1] <= b["starts"][i] + b["durations"][i] + TIME_ATOL
        want = sum(np.sin(2 * np.pi * t / b["periods"][i, k] - b["phases"][i, k]) for k in (0, 1))
        np.testing.assert_allclose(b["values"][i, :n, 0], want, atol=1e-3)
        assert not b["values"][i, n:].any() and not b["times"][i, n:].any()


def test_unknown_sampling_is_refused_everywhere():
    for function in (lambda s: batch(s, size=2), fd.max_steps, fd.chance_accuracy):
        with pytest.raises(ValueError, match="sampling must be one of standard, high_res, "
                                             "async, two_sines; got 'hi_res'"):
            function("hi_res")
