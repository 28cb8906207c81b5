"""Tests of experiments.training.tsv_log: the TSV log: write, read, check, cut back to a step."""

import os
import re

import numpy as np
import pytest

from experiments import training
from experiments.training import RunError, LOG_COLUMNS
from training_helpers import HEADER, fake_log, read_text, rows_text, write_text


def test_truncate_log_drops_rows_past_the_step_and_a_partial_last_line(tmp_path):
    path = fake_log(tmp_path, range(1, 7))
    with open(path, "a", encoding="utf-8") as f:
        f.write("7\t2.2\t0.")  # A kill in the middle of a row.
    assert training.truncate_log(path, 4) == 4
    assert read_text(path) == HEADER + rows_text(range(1, 5))


def test_truncate_log_drops_only_a_partial_line_when_every_row_is_kept(tmp_path):
    path = fake_log(tmp_path, range(1, 4))
    with open(path, "a", encoding="utf-8") as f:
        f.write("4\t2.2")
    assert training.truncate_log(path, 10) == 3
    assert read_text(path) == HEADER + rows_text(range(1, 4))


def test_truncate_log_to_step_0_keeps_the_header_only(tmp_path):
    path = fake_log(tmp_path, range(1, 4))
    assert training.truncate_log(path, 0) == 0
    assert read_text(path) == HEADER


def test_truncate_log_creates_a_missing_log_with_its_header(tmp_path):
    path = os.path.join(tmp_path, "log.tsv")
    assert training.truncate_log(path, 5) == 0
    assert read_text(path) == HEADER
    assert os.listdir(tmp_path) == ["log.tsv"]  # No temporary file left behind.


def test_truncate_log_refuses_a_file_that_is_not_a_log(tmp_path):
    path = os.path.join(tmp_path, "log.tsv")
    write_text(path, "epoch\tloss\n1\t2.0\n")
    with pytest.raises(RunError, match="does not start with the header.*--fresh"):
        training.truncate_log(path, 1)
    assert read_text(path) == "epoch\tloss\n1\t2.0\n"


def test_log_writer_resumes_after_the_restored_step(tmp_path):
    path = fake_log(tmp_path, range(1, 6))
    with open(path, "a", encoding="utf-8") as f:
        f.write("6\t")
    with training.LogWriter(path, last_step=3) as log:
        log.write({"step": 4, "train_loss": 1.25, "train_accuracy": 0.5,
                   "seconds_per_step": 0.125})
        log.write({"step": 5, "train_loss": np.float32(1.0), "train_accuracy": 0.75,
                   "seconds_per_step": 0.25, "test_loss": 0.5, "test_accuracy": 0.875})
    assert read_text(path) == (HEADER + rows_text(range(1, 4))
                               + "4\t1.25\t0.5\t0.125\t\t\n5\t1\t0.75\t0.25\t0.5\t0.875\n")


def test_log_writer_rejects_an_unknown_column(tmp_path):
    with training.LogWriter(os.path.join(tmp_path, "log.tsv"), last_step=0) as log:
        with pytest.raises(ValueError, match="lr"):
            log.write({"step": 1, "lr": 0.1})


def test_read_log_gives_nan_for_blank_cells_and_ignores_a_partial_line(tmp_path):
    path = fake_log(tmp_path, range(1, 5))
    with open(path, "a", encoding="utf-8") as f:
        f.write("5\t1.0\t0.5")
    log = training.read_log(path)
    assert set(log) == set(LOG_COLUMNS)
    np.testing.assert_array_equal(log["step"], [1, 2, 3, 4])
    np.testing.assert_allclose(log["train_loss"], [2.3, 1.15, 0.7667, 0.575])
    assert np.isnan(log["test_accuracy"][[0, 1, 3]]).all()
    assert log["test_accuracy"][2] == pytest.approx(0.3)


def test_read_log_reports_a_malformed_row(tmp_path):
    path = fake_log(tmp_path, range(1, 3))
    with open(path, "a", encoding="utf-8") as f:
        f.write("3\tnot a number\t0\t0\t\t\n4\t1\t0\t0\t\t\n")
    with pytest.raises(RunError, match="line 4"):
        training.read_log(path)


@pytest.mark.parametrize("text, where", [
    (HEADER + "1\t2.3\t0.1\t0.5\t\t\n2\t2.2\n", "line 3 is damaged (2 cells, expected 6)"),
    (HEADER + "1\t2.3\t0.1\t0.5\t\t\nx\t2.2\t0.1\t0.5\t\t\n", "line 3 is damaged"),
    (HEADER + "1\t2.3\tzero\t0.5\t\t\n", "line 2 is damaged"),
])
def test_a_damaged_row_is_found_before_training_and_nothing_changes(tmp_path, text, where):
    path = os.path.join(tmp_path, "log.tsv")
    write_text(path, text)
    for check in (training.check_log, lambda p: training.truncate_log(p, 0)):
        with pytest.raises(RunError, match=re.escape(where)) as error:
            check(path)
        assert "--fresh" in str(error.value) and "move the log away" in str(error.value)
    assert read_text(path) == text


def test_a_log_that_is_not_text_is_a_clear_error(tmp_path):
    path = os.path.join(tmp_path, "log.tsv")
    with open(path, "wb") as f:
        f.write(HEADER.encode() + b"1\t2.3\xff\n")
    for check in (training.check_log, training.read_log):
        with pytest.raises(RunError, match=r"is damaged: byte \d+ is not text"):
            check(path)


def test_check_log_accepts_a_missing_log_and_a_partial_last_line(tmp_path):
    training.check_log(os.path.join(tmp_path, "log.tsv"))
    path = fake_log(tmp_path, range(1, 4))
    with open(path, "a", encoding="utf-8") as f:
        f.write("4\t2.")
    training.check_log(path)
