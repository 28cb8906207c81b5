"""Tests of experiments.training, the pieces every training script shares."""

import json
import os
import re
import signal

import numpy as np
import pytest

from phased_lstm import tf
from experiments import training
from experiments.training import LOG_COLUMNS, RunError

HEADER = "\t".join(LOG_COLUMNS) + "\n"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_text(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def read_text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def rows_text(steps, eval_every=3):
    """Log rows for these steps, test columns on every eval_every-th."""
    lines = []
    for s in steps:
        test = f"{2.0 / s:.4g}\t{min(0.1 * s, 1):.4g}" if s % eval_every == 0 else "\t"
        lines.append(f"{s}\t{2.3 / s:.4g}\t{min(0.05 * s, 1):.4g}\t0.5\t{test}\n")
    return "".join(lines)


def fake_log(folder, steps, eval_every=3):
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, training.LOG_NAME)
    write_text(path, HEADER + rows_text(steps, eval_every))
    return path


# ---------------------------------------------------------------------------------------------
# The TSV log.

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


# ---------------------------------------------------------------------------------------------
# Results.

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


# ---------------------------------------------------------------------------------------------
# Folders.

def test_check_writable_dir_creates_the_folder(tmp_path):
    path = training.check_writable_dir(os.path.join(tmp_path, "a", "b"))
    assert os.path.isdir(path) and os.path.isabs(path)
    assert os.listdir(path) == []


def test_check_writable_dir_names_a_folder_it_cannot_create(tmp_path):
    blocker = os.path.join(tmp_path, "file")
    write_text(blocker, "")
    with pytest.raises(RunError, match=f"cannot write to the log folder {blocker}/runs"):
        training.check_writable_dir(os.path.join(blocker, "runs"))


def test_clear_run_deletes_what_a_run_wrote_and_nothing_else(tmp_path):
    fake_log(tmp_path, [1])
    for name in ("results.json", "events.out.tfevents.1.host", "notes.txt"):
        write_text(os.path.join(tmp_path, name), "")
    os.makedirs(os.path.join(tmp_path, "checkpoints"))
    write_text(os.path.join(tmp_path, "checkpoints", "ckpt-1.index"), "")
    os.makedirs(os.path.join(tmp_path, "checkpoints", "ckpt-2_temp"))
    assert len(training.clear_run(tmp_path)) == 4
    assert os.listdir(tmp_path) == ["notes.txt"]
    assert training.clear_run(os.path.join(tmp_path, "missing")) == []


# ---------------------------------------------------------------------------------------------
# Resuming.

def check_settings(saved, current):
    training.check_resume_settings(saved, current, ("num_units", "seed"),
                                   "runs/M from runs/M/checkpoints/ckpt-5")


def test_check_resume_settings_names_every_difference_and_suggests_fresh():
    check_settings({"num_units": 4, "seed": 0, "steps": 9}, {"num_units": 4, "seed": 0,
                                                             "steps": 20})
    with pytest.raises(RunError) as error:
        check_settings({"num_units": 4, "seed": 0}, {"num_units": 8, "seed": 1})
    message = str(error.value)
    assert "runs/M from runs/M/checkpoints/ckpt-5" in message and "--fresh" in message
    assert "--num_units=4 (this command: 8)" in message and "--seed=0 (this command: 1)" in message


def test_check_resume_settings_gives_unrecorded_settings_the_value_they_trained_with():
    def check(saved, current):
        training.check_resume_settings(saved, current, ("seed", "clip_norm"), "runs/M",
                                       unrecorded={"clip_norm": 0.0})

    check({"seed": 0}, {"seed": 0, "clip_norm": 0.0})  # saved before --clip_norm existed
    for saved, current, difference in [
            ({"seed": 0}, {"seed": 0, "clip_norm": 1.0}, "--clip_norm=0.0 (this command: 1.0)"),
            ({"seed": 0, "clip_norm": 1.0}, {"seed": 0, "clip_norm": 0.0},
             "--clip_norm=1.0 (this command: 0.0)"),
            ({"clip_norm": 0.0}, {"seed": 0, "clip_norm": 0.0}, "--seed=None (this command: 0)")]:
        with pytest.raises(RunError, match=re.escape(difference)):
            check(saved, current)


# ---------------------------------------------------------------------------------------------
# TensorBoard.

def test_scalar_writer_writes_scalars_and_a_restart_marker(tmp_path):
    with tf.Graph().as_default():
        writer = training.ScalarWriter(str(tmp_path), first_step=5)
        writer.scalars(5, {"train/loss": 1.5, "test/loss": None})
        writer.scalars(6, {"train/loss": np.float32(1.25), "test/loss": 0.5})
        writer.close()
    (events_file,) = os.listdir(tmp_path)
    starts, scalars = [], []
    for event in tf.compat.v1.train.summary_iterator(os.path.join(tmp_path, events_file)):
        if event.HasField("session_log"):
            starts.append((event.step, event.session_log.status))
        for value in event.summary.value:
            scalars.append((event.step, value.tag, value.simple_value))
    assert starts == [(5, tf.compat.v1.SessionLog.START)]
    assert scalars == [(5, "train/loss", 1.5), (6, "train/loss", 1.25), (6, "test/loss", 0.5)]


# ---------------------------------------------------------------------------------------------
# Interruptions and progress.

def test_stop_signals_turn_sigterm_into_a_request():
    previous = signal.getsignal(signal.SIGTERM)
    with training.StopSignals() as stop:
        assert not stop.requested and stop.name is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.name == "SIGTERM"
        os.kill(os.getpid(), signal.SIGTERM)  # A second SIGTERM changes nothing.
        assert stop.received == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is previous


def test_a_second_ctrl_c_interrupts_at_once():
    previous = signal.getsignal(signal.SIGINT)
    with training.StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is previous


def test_format_duration():
    assert training.format_duration(0) == "0:00:00"
    assert training.format_duration(3725.4) == "1:02:05"
    assert training.format_duration(float("inf")) == "?"


def test_progress_reports_every_n_steps_or_seconds_and_the_ends():
    now = [100.0]
    progress = training.Progress(total_steps=110, first_step=10, every_steps=20, every_secs=10,
                                 clock=lambda: now[0])
    lines = {}
    for step in range(11, 111):
        seconds = 0.25 if step < 80 else 2.0  # Slower from step 80 on.
        now[0] += seconds + (1.0 if step == 50 else 0.0)  # An evaluation at step 50.
        line = progress.update(step, loss=step / 100, accuracy=0.5, seconds=seconds)
        if line:
            lines[step] = line
    # The first step; every 20 steps; every 10 s (5 steps at 2 s each); the last step.
    assert list(lines) == [11, 31, 51, 71, 83, 88, 93, 98, 103, 108, 110]
    # 20 steps in 5 s of training; 59 steps left at this segment's 41 steps in 11.25 s.
    assert lines[51] == "step 51/110  loss 0.5100  accuracy 0.500  4.00 steps/s  ETA 0:00:16"
    assert lines[110] == "step 110/110  loss 1.1000  accuracy 0.500  0.50 steps/s  ETA 0:00:00"


# ---------------------------------------------------------------------------------------------
# The plot.

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


# ---------------------------------------------------------------------------------------------
# Damaged logs, run files and flags.

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


def test_run_files_and_what_fresh_would_delete(tmp_path):
    fake_log(tmp_path, range(1, 6))
    write_text(os.path.join(tmp_path, "results.json"), "{}")
    write_text(os.path.join(tmp_path, "notes.txt"), "")
    os.makedirs(os.path.join(tmp_path, "checkpoints", "damaged"))
    assert [os.path.basename(p) for p in training.run_files(str(tmp_path))] == [
        "log.tsv", "results.json", "checkpoints"]
    assert training.describe_run_files(str(tmp_path)) == (
        f"{tmp_path}: log.tsv (5 rows), results.json, checkpoints/ (all of it)")


def test_remove_temporary_files(tmp_path):
    for name in (".results.json.abc.tmp", ".log.tsv.x.tmp", "keep.tmp", "log.tsv"):
        write_text(os.path.join(tmp_path, name), "")
    assert len(training.remove_temporary_files(str(tmp_path))) == 2
    assert sorted(os.listdir(tmp_path)) == ["keep.tmp", "log.tsv"]


def test_require_finite_flags_names_the_flag():
    from absl import flags  # pylint: disable=import-outside-toplevel
    values = flags.FlagValues()
    flags.DEFINE_float("rate", 1.0, "", flag_values=values)
    flags.DEFINE_float("floor", 0.0, "", lower_bound=0.0, flag_values=values)
    training.require_finite_flags(["rate", "floor"], values)
    values(["prog", "--rate=2.5", "--floor=1"])
    for argument, message in (("--rate=nan", "--rate must be a finite number; got nan"),
                              ("--floor=inf", "--floor must be a finite number; got inf")):
        with pytest.raises(flags.IllegalFlagValueError, match=message):
            values(["prog", argument])


def test_check_writable_run_names_the_checkpoint_folder(tmp_path):
    write_text(os.path.join(tmp_path, "checkpoints"), "")
    with pytest.raises(RunError, match="cannot write to the checkpoint folder"):
        training.check_writable_run(str(tmp_path))
