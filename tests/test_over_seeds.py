"""Tests of experiments.over_seeds: mean ± std over seeds from the runs' logs."""

import os

import numpy as np
import pytest

from experiments import over_seeds, training


def _write_run(root, configuration, seed, model, steps, test_at, train_of_step):
    run_dir = os.path.join(root, configuration, f"seed{seed}", model)
    os.makedirs(run_dir)
    with training.LogWriter(os.path.join(run_dir, training.LOG_NAME), last_step=0) as log:
        for step in range(1, steps + 1):
            row = {"step": step, "train_loss": 1.0, "train_accuracy": train_of_step(step),
                   "seconds_per_step": 0.1}
            if step in test_at:
                row["test_loss"], row["test_accuracy"] = 1.0, test_at[step]
            log.write(row)


def test_mean_and_sample_std_over_the_seeds_that_reached_each_step(tmp_path):
    root = str(tmp_path)
    for seed, (at_500, at_1000) in enumerate([(0.5, 0.8), (0.7, 0.9), (0.9, None)]):
        steps = 1000 if at_1000 is not None else 600
        test_at = {500: at_500, **({1000: at_1000} if at_1000 is not None else {})}
        # Training accuracy seed / 10 + step / 10000: its window mean is known exactly.
        _write_run(root, "default", seed, "PhasedLSTMCell", steps, test_at,
                   lambda step, seed=seed: seed / 10 + step / 10000)
    _write_run(root, "seed_repo", 0, "PhasedLSTMCell", 500, {500: 0.6}, lambda step: 0.5)
    runs = over_seeds.collect(root)
    assert list(runs) == [("default", "PhasedLSTMCell"), ("seed_repo", "PhasedLSTMCell")]
    summary = over_seeds.summarize(runs, [500, 1000])
    row = summary[("default", "PhasedLSTMCell")]
    assert row["seeds"] == [0, 1, 2]
    mean, std, n = row["test"][500]
    assert (n, mean) == (3, pytest.approx(0.7)) and std == pytest.approx(0.2)
    mean, std, n = row["test"][1000]
    assert (n, mean) == (2, pytest.approx(0.85)) and std == pytest.approx(np.sqrt(0.005))
    # Window (400, 500]: mean step 450.5, so seed k's mean is k / 10 + 0.04505.
    mean, std, n = row["train"][500]
    assert n == 3 and mean == pytest.approx(0.1 + 0.04505) and std == pytest.approx(0.1)
    assert summary[("seed_repo", "PhasedLSTMCell")]["test"][1000] is None
    assert summary[("seed_repo", "PhasedLSTMCell")]["test"][500] == (0.6, 0.0, 1)
    table = over_seeds.markdown_table(summary, [500, 1000])
    assert "| default | PhasedLSTMCell | 0, 1, 2 | 0.700 ± 0.200 (3) | 0.850 ± 0.071 (2) |" in table
    path = os.path.join(root, "over_seeds.png")
    over_seeds.plot(runs, path, "title")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_folders_that_are_not_seeds_are_ignored(tmp_path):
    root = str(tmp_path)
    _write_run(root, "default", 0, "BasicLSTMCell", 10, {10: 0.3}, lambda step: 0.2)
    os.makedirs(os.path.join(root, "default", "notaseed", "BasicLSTMCell"))
    with open(os.path.join(root, "default", "notaseed", "BasicLSTMCell", training.LOG_NAME),
              "w") as f:
        f.write("garbage\n")
    assert list(over_seeds.collect(root)) == [("default", "BasicLSTMCell")]
