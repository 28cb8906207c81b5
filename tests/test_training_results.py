"""Tests of experiments.training.results: results.json's summary and the curves' figure."""

import json
import os

import numpy as np
import pytest

from experiments import training
from experiments.training import RunError
from training_helpers import fake_log


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_summarize():
    log = {
        "step": np.arange(1.0, 2501.0),
        "train_loss": np.linspace(2.3, 0.1, 2500),
        "train_accuracy": np.linspace(0.1, 0.9, 2500),
        "seconds_per_step": np.r_[5.0, np.full(2499, 0.5)],
        "test_loss": np.full(2500, np.nan),
        "test_accuracy": np.full(2500, np.nan),
    }
    for step, accuracy in ((500, 0.3), (1000, 0.6), (1500, 0.8), (2000, 0.7), (2500, 0.75)):
        log["test_accuracy"][step - 1] = accuracy
        log["test_loss"][step - 1] = 1 - accuracy
    assert training.summarize(log) == {
        "steps": 2500,
        "final_train_loss": pytest.approx(0.1),
        "final_test_loss": pytest.approx(0.25),
        "final_test_accuracy": 0.75,
        "best_test_accuracy": 0.8,
        "best_test_accuracy_step": 1500,
        "test_accuracy_at_step": {"1000": 0.6, "2000": 0.7},
        "median_seconds_per_step": 0.5,
    }


def test_summarize_before_any_evaluation_is_json_safe(tmp_path):
    summary = training.summarize(training.read_log(fake_log(tmp_path, [1, 2], eval_every=5)))
    assert summary["steps"] == 2
    assert summary["final_test_accuracy"] is None and summary["best_test_accuracy_step"] is None
    assert summary["test_accuracy_at_step"] == {}
    path = os.path.join(tmp_path, "results.json")
    training.write_json(path, summary)
    with open(path, encoding="utf-8") as f:
        assert json.load(f) == summary
    assert sorted(os.listdir(tmp_path)) == ["log.tsv", "results.json"]


def test_smooth():
    np.testing.assert_allclose(training.smooth(np.full(50, 0.3), 10), 0.3)
    values = np.random.default_rng(0).normal(size=20)
    np.testing.assert_allclose(training.smooth(values, 1), values)
    assert training.smooth(values, 5)[0] == pytest.approx(values[0])
    assert np.std(training.smooth(values, 5)[5:]) < np.std(values[5:])


def test_plot_curves_draws_every_log_in_the_folder(tmp_path):
    fake_log(os.path.join(tmp_path, "PhasedLSTMCell"), range(1, 301), eval_every=50)
    fake_log(os.path.join(tmp_path, "BasicLSTMCell"), range(1, 151), eval_every=50)
    fake_log(os.path.join(tmp_path, "Empty"), [])  # A run killed before its first row.
    os.makedirs(os.path.join(tmp_path, "no_log"))
    assert list(training.find_logs(tmp_path)) == ["BasicLSTMCell", "Empty", "PhasedLSTMCell"]
    path = os.path.join(tmp_path, "curves.png")
    assert training.plot_curves(tmp_path, path, "Test", chance=0.1) == ["BasicLSTMCell",
                                                                        "PhasedLSTMCell"]
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    assert os.path.getsize(path) > 20_000
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_plot_curves_without_logs_is_a_clear_error(tmp_path):
    with pytest.raises(RunError, match="nothing to plot"):
        training.plot_curves(tmp_path, os.path.join(tmp_path, "curves.png"), "Test")
    assert os.listdir(tmp_path) == []
