"""Tests of freq_phased_lstm.py, the frequency-discrimination script, on tiny sizes.

The training runs are subprocesses, as a user runs the script (app.run, signals, exit
statuses). Each start costs seconds (TensorFlow), so one module-scoped fixture makes every
training run once, in groups side by side:

- `trained`: one log_dir with PhasedLSTMCell in every sampling (3 epochs of 2 batches, seed 0)
  and LSTMCell in every sampling (1 epoch, seeds 0 and 1).
- `resumed`: PhasedLSTMCell, high_res, the same settings in another log_dir, trained in three
  pieces: --epochs 1, then --epochs 1000 stopped by SIGTERM after a batch, then --epochs 3.
- `padded`: both models in every sampling for 1 epoch with --eval_batch_size 10 (the whole
  validation set in one batch, padded to its longest sequence, where `trained` validates in
  batches of 4, each padded to its own longest), and --fresh over an older run's files.

The rest runs in this process: main() with flags of its own (script_helpers.run_main), the flag
parser, Model built from a FrequencyConfig.
"""

import concurrent.futures
import dataclasses
import functools
import logging
import os
import signal
import subprocess
import time
import types

from absl import flags
import numpy as np
import pytest

import freq_phased_lstm as script
from phased_lstm import fused_rnn, tf
from experiments import training
from script_helpers import (PNG_MAGIC, ROOT, TIMEOUT_S, check_ok, count_rows, parse_flags,
                            read_json, read_text, script_command)
import script_helpers

SAMPLINGS = ("standard", "high_res", "async")
TINY = ["--batches_per_epoch=2", "--batch_size=4", "--num_units=4", "--val_size=10",
        "--eval_batch_size=4"]
HEADER = ["step", "epoch", "train_loss", "train_accuracy", "seconds_per_step", "test_loss",
          "test_accuracy"]
command = functools.partial(script_command, "freq_phased_lstm.py")
run_script = functools.partial(script_helpers.run_script, "freq_phased_lstm.py")
run_main = functools.partial(script_helpers.run_main, script)


def run_path(log_dir, sampling, model, seed, name=training.LOG_NAME):
    return os.path.join(log_dir, sampling, model, f"seed{seed}", name)


def read_log(log_dir, sampling, model, seed=0):
    return training.read_log(run_path(log_dir, sampling, model, seed), HEADER)


def train_models(log_dir):
    common = [*TINY, f"--log_dir={log_dir}", "--sampling=all"]
    procs = {
        "PhasedLSTMCell": run_script("-m", "PhasedLSTMCell", "--epochs=3", "--seeds=1", *common),
        "LSTMCell": run_script("--model=LSTMCell", "--epochs=1", "--seeds=2", *common),
    }
    return types.SimpleNamespace(log_dir=log_dir, procs=procs)


def train_in_pieces(log_dir):
    common = ["-m", "PhasedLSTMCell", "--sampling=high_res", "--seeds=1", *TINY,
              f"--log_dir={log_dir}"]
    log_path = run_path(log_dir, "high_res", "PhasedLSTMCell", 0)
    checkpoints = os.path.join(os.path.dirname(log_path), "checkpoints")
    first = run_script("--epochs=1", *common)
    check_ok(first)
    # Stopped by SIGTERM once a batch past the resume point is logged (high_res batches of
    # 1,250 steps take long enough that it stops before the end of epoch 3).
    process = subprocess.Popen(command("--epochs=1000", *common), cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + TIMEOUT_S
    while count_rows(log_path) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=TIMEOUT_S)
    stopped = types.SimpleNamespace(returncode=process.returncode, stderr=stderr,
                                    rows=count_rows(log_path),
                                    checkpoints=sorted(os.listdir(checkpoints)))
    last = run_script("--epochs=3", *common)
    again = run_script("--epochs=3", *common)
    return types.SimpleNamespace(log_dir=log_dir, first=first, stopped=stopped, last=last,
                                 again=again)


def train_padded(log_dir):
    # An older run that --fresh must delete: 50 rows and a checkpoint of another shape.
    old = os.path.dirname(run_path(log_dir, "standard", "LSTMCell", 0))
    os.makedirs(os.path.join(old, "checkpoints"))
    with open(os.path.join(old, training.LOG_NAME), "w", encoding="utf-8") as f:
        f.write("\t".join(HEADER) + "\n")
        f.writelines(f"{s}\t{s}\t0.7\t0.5\t0.1\t0.7\t0.5\n" for s in range(1, 51))
    with open(os.path.join(old, "checkpoints", "checkpoint"), "w", encoding="utf-8") as f:
        f.write('model_checkpoint_path: "ckpt-50"\n')
    common = [*TINY, "--eval_batch_size=10", "--epochs=1", "--seeds=1", "--sampling=all",
              "--fresh", f"--log_dir={log_dir}"]
    procs = {model: run_script("-m", model, *common) for model in ("PhasedLSTMCell", "LSTMCell")}
    return types.SimpleNamespace(log_dir=log_dir, procs=procs)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Makes the groups of runs, two side by side: much of a run's time is single-threaded
    start-up."""
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        trained = pool.submit(train_models, str(tmp_path_factory.mktemp("trained")))
        resumed = pool.submit(train_in_pieces, str(tmp_path_factory.mktemp("resumed")))
        padded = pool.submit(train_padded, str(tmp_path_factory.mktemp("padded")))
        return types.SimpleNamespace(trained=trained.result(), resumed=resumed.result(),
                                     padded=padded.result())


@pytest.fixture
def trained(runs):
    return runs.trained


@pytest.fixture
def resumed(runs):
    return runs.resumed


# ---------------------------------------------------------------------------------------------
# Training runs.

@pytest.mark.parametrize("model", ["PhasedLSTMCell", "LSTMCell"])
def test_each_model_trains_in_each_sampling(trained, model):
    check_ok(trained.procs[model])
    stderr = trained.procs[model].stderr
    seeds = {"PhasedLSTMCell": [0], "LSTMCell": [0, 1]}[model]
    for sampling in SAMPLINGS:
        for seed in seeds:
            log = read_log(trained.log_dir, sampling, model, seed)
            assert np.isfinite(log["train_loss"]).all()
            assert ((log["train_accuracy"] >= 0) & (log["train_accuracy"] <= 1)).all()
            assert (log["seconds_per_step"] > 0).all()
            assert f"{sampling}/{model}/seed{seed}: final validation accuracy" in stderr
    assert f"Run {3 * len(seeds)} of {3 * len(seeds)}: async, {model}, seed {seeds[-1]}." in stderr


def test_log_has_one_row_per_batch_and_validation_per_epoch(trained):
    path = run_path(trained.log_dir, "async", "PhasedLSTMCell", 0)
    lines = read_text(path).splitlines()
    assert lines[0].split("\t") == HEADER
    rows = [line.split("\t") for line in lines[1:]]
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [int(r[1]) for r in rows] == [1, 1, 2, 2, 3, 3]
    # Validation (test_* columns) on the last batch of each epoch only.
    assert [int(r[0]) for r in rows if r[5] and r[6]] == [2, 4, 6]
    assert all(r[5] == r[6] == "" for r in rows if int(r[0]) % 2)
    # val_size=10: accuracies are multiples of 0.1.
    accuracy = read_log(trained.log_dir, "async", "PhasedLSTMCell")["test_accuracy"][1::2]
    np.testing.assert_allclose(accuracy * 10, np.round(accuracy * 10), atol=1e-6)
    log = read_log(trained.log_dir, "high_res", "LSTMCell", seed=1)
    np.testing.assert_array_equal(log["step"], [1, 2])
    np.testing.assert_array_equal(log["epoch"], [1, 1])


def test_results_json(trained):
    results = read_json(run_path(trained.log_dir, "standard", "PhasedLSTMCell", 0,
                                 training.RESULTS_NAME))
    log = read_log(trained.log_dir, "standard", "PhasedLSTMCell")
    assert (results["sampling"], results["model"], results["seed"]) == (
        "standard", "PhasedLSTMCell", 0)
    assert results["epochs"] == 3 and results["steps"] == 6
    assert results["final_validation_accuracy"] == pytest.approx(log["test_accuracy"][5])
    assert results["final_test_accuracy"] == results["final_validation_accuracy"]
    assert results["validation_accuracy_per_epoch"] == pytest.approx(
        {"1": log["test_accuracy"][1], "2": log["test_accuracy"][3],
         "3": log["test_accuracy"][5]})
    assert 0 < results["wall_time_s"] < TIMEOUT_S
    settings = results["settings"]
    expected = {
        "sampling": "standard",  # this run's, not the command's "all"
        "model": "PhasedLSTMCell", "seed": 0, "seeds": 1, "epochs": 3, "batches_per_epoch": 2,
        "batch_size": 4, "num_units": 4, "val_size": 10, "eval_batch_size": 4, "quick": False,
        "peepholes": True, "ratio_on": 0.05, "trainable_ratio_on": True, "leak": 0.001,
        "learning_rate": 0.001, "phase_init_max": 100.0, "log_dir": trained.log_dir}
    assert {key: settings[key] for key in expected} == expected
    # tau ~ exp(U(1, 3)): the paper's timing initialisation by default.
    assert settings["period_init_min"] == pytest.approx(np.e)
    assert settings["period_init_max"] == pytest.approx(np.e ** 3)
    other = read_json(run_path(trained.log_dir, "async", "LSTMCell", 1, training.RESULTS_NAME))
    assert other["seed"] == 1 and other["epochs"] == 1 and other["settings"]["seed"] == 1


def test_seeds_differ(trained):
    # The first batch's loss is that of the initial weights and data, which the seed sets.
    first = [read_log(trained.log_dir, "standard", "LSTMCell", seed)["train_loss"][0]
             for seed in (0, 1)]
    assert first[0] != first[1]


def test_tensorboard_events(trained):
    folder = os.path.dirname(run_path(trained.log_dir, "standard", "PhasedLSTMCell", 0))
    (events,) = [n for n in os.listdir(folder) if n.startswith("events.out.tfevents.")]
    tags = {}
    for event in tf.compat.v1.train.summary_iterator(os.path.join(folder, events)):
        for value in event.summary.value:
            tags.setdefault(value.tag, []).append(event.step)
    assert tags == {"train/loss": [1, 2, 3, 4, 5, 6], "train/accuracy": [1, 2, 3, 4, 5, 6],
                    "validation/loss": [2, 4, 6], "validation/accuracy": [2, 4, 6]}


def table_rows(table):
    """{(sampling, model): [ours, epochs, seeds, paper]} from results.md's markdown."""
    rows = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] not in ("sampling", "---"):
            rows[tuple(cells[:2])] = cells[2:]
    return rows


def test_results_table_and_figures(trained):
    table = read_text(os.path.join(trained.log_dir, "results.md"))
    rows = table_rows(table)
    assert len(rows) == 6
    assert rows[("standard (1 ms)", "Phased LSTM")][1:] == ["3", "1", "99.18 ± 0.23"]
    assert rows[("high resolution (0.1 ms)", "LSTM")][1:] == ["1", "2", "51.72 ± 0.71"]
    assert rows[("asynchronous", "Phased LSTM")][1:] == ["3", "1", "98.28 ± 0.15"]
    assert rows[("asynchronous", "LSTM")][1:] == ["1", "2", "63.20 ± 13.54"]
    # Ours: mean ± sample std (ddof=1) of each seed's last validation accuracy.
    last = [read_log(trained.log_dir, "async", "LSTMCell", seed)["test_accuracy"][-1]
            for seed in (0, 1)]
    assert rows[("asynchronous", "LSTM")][0] == (
        f"{100 * np.mean(last):.2f} ± {100 * np.std(last, ddof=1):.2f}")
    assert "Chance: 51.98%" in table
    for path in [os.path.join(trained.log_dir, "frequency_curves.png")] + [
            os.path.join(trained.log_dir, s, m, "curves.png")
            for s in SAMPLINGS for m in ("PhasedLSTMCell", "LSTMCell")]:
        with open(path, "rb") as f:
            assert f.read(8) == PNG_MAGIC, path
    assert "async/LSTMCell (2 seed(s))" in trained.procs["LSTMCell"].stderr


@pytest.mark.parametrize("model", ["PhasedLSTMCell", "LSTMCell"])
def test_padded_steps_change_nothing(trained, runs, model):
    # The same runs validated in batches padded differently give the same validation.
    padded = runs.padded
    check_ok(padded.procs[model])
    for sampling in SAMPLINGS:
        one_batch = read_log(padded.log_dir, sampling, model)
        in_batches = read_log(trained.log_dir, sampling, model)
        np.testing.assert_allclose(one_batch["train_loss"], in_batches["train_loss"][:2],
                                   rtol=1e-5)
        np.testing.assert_allclose(one_batch["test_loss"][1], in_batches["test_loss"][1],
                                   rtol=1e-5)
        assert one_batch["test_accuracy"][1] == in_batches["test_accuracy"][1]


def test_fresh_deletes_the_older_run(runs):
    padded = runs.padded
    assert "--fresh: deleted" in padded.procs["LSTMCell"].stderr
    log = read_log(padded.log_dir, "standard", "LSTMCell")
    np.testing.assert_array_equal(log["step"], [1, 2])
    checkpoints = os.path.join(padded.log_dir, "standard", "LSTMCell", "seed0", "checkpoints")
    assert "ckpt-2.index" in os.listdir(checkpoints)
    assert "ckpt-50" not in read_text(os.path.join(checkpoints, "checkpoint"))


# ---------------------------------------------------------------------------------------------
# Interruptions and resuming.

def test_sigterm_checkpoints_and_exits_cleanly(resumed):
    stopped = resumed.stopped
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    assert "Resuming high_res/PhasedLSTMCell/seed0" in stopped.stderr
    assert "(epoch 1 of 1000, batch 2 of 2000)" in stopped.stderr
    assert (f"Stopped by SIGTERM at epoch {stopped.rows // 2} of 1000, batch {stopped.rows} of "
            "2000") in stopped.stderr
    assert 3 <= stopped.rows < 6, "stopped too late for the rest of the test; slow it down"
    assert f"ckpt-{stopped.rows}.index" in stopped.checkpoints
    assert f"ckpt-{stopped.rows}.json" in stopped.checkpoints


def test_resumed_run_matches_an_uninterrupted_one(trained, resumed):
    check_ok(resumed.last)
    assert f"(epoch {resumed.stopped.rows // 2} of 3, batch {resumed.stopped.rows} of 6)" in (
        resumed.last.stderr)
    interrupted = read_log(resumed.log_dir, "high_res", "PhasedLSTMCell")
    uninterrupted = read_log(trained.log_dir, "high_res", "PhasedLSTMCell")
    np.testing.assert_array_equal(interrupted["step"], range(1, 7))
    np.testing.assert_allclose(interrupted["train_loss"], uninterrupted["train_loss"], rtol=1e-4)
    np.testing.assert_allclose(interrupted["train_accuracy"], uninterrupted["train_accuracy"])
    np.testing.assert_allclose(interrupted["test_loss"], uninterrupted["test_loss"], rtol=1e-4)
    np.testing.assert_allclose(interrupted["test_accuracy"], uninterrupted["test_accuracy"])
    results = read_json(run_path(resumed.log_dir, "high_res", "PhasedLSTMCell", 0,
                                 training.RESULTS_NAME))
    assert results["epochs"] == 3 and results["settings"]["epochs"] == 3
    first = read_json(os.path.join(os.path.dirname(run_path(
        resumed.log_dir, "high_res", "PhasedLSTMCell", 0)), "checkpoints", "ckpt-2.json"))
    assert 0 < first["wall_time_s"] < results["wall_time_s"]


def test_a_finished_run_is_not_trained_again(resumed):
    check_ok(resumed.again)
    assert ("is already trained to epoch 3 of 3, batch 6 of 6; nothing to do, and its "
            "results.json is kept") in resumed.again.stderr
    log = read_log(resumed.log_dir, "high_res", "PhasedLSTMCell")
    np.testing.assert_array_equal(log["step"], range(1, 7))


def test_resuming_with_other_model_settings_is_an_error(resumed):
    message = run_main("-m", "PhasedLSTMCell", "--sampling=high_res", "--seeds=1", *TINY,
                       "--num_units=5", "--epochs=4", f"--log_dir={resumed.log_dir}")
    assert "cannot resume" in message and "--num_units=4 (this command: 5)" in message
    assert "--fresh" in message
    message = run_main("-m", "PhasedLSTMCell", "--sampling=high_res", "--seeds=1", *TINY,
                       "--clip_norm=1", "--epochs=4", f"--log_dir={resumed.log_dir}")
    assert "--clip_norm=0.0 (this command: 1.0)" in message
    log = read_log(resumed.log_dir, "high_res", "PhasedLSTMCell")
    np.testing.assert_array_equal(log["step"], range(1, 7))


def test_an_error_exits_with_status_1_and_no_traceback(resumed):
    proc = run_script("-m", "PhasedLSTMCell", "--sampling=high_res", "--seeds=1", *TINY,
                      "--num_units=5", "--epochs=4", f"--log_dir={resumed.log_dir}")
    assert proc.returncode == 1
    assert "error: cannot resume" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------
# --quick, --plot_only and errors.

def test_quick_sets_epochs_and_validation_unless_given(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="absl"):
        status = run_main("--quick", "--epochs=1", "--sampling=async", "--seeds=1",
                          "--batches_per_epoch=1", "--batch_size=4", "--num_units=4",
                          f"--log_dir={tmp_path}")
    assert status == 0
    assert "--quick: async: 1 epochs of 1 batches, validation on 500" in caplog.text
    settings = read_json(run_path(str(tmp_path), "async", "PhasedLSTMCell", 0,
                                  training.RESULTS_NAME))["settings"]
    assert settings["quick"] is True
    assert (settings["epochs"], settings["batches_per_epoch"], settings["val_size"]) == (1, 1, 500)


def test_quick_picks_each_samplings_epochs():
    configs = script.configs_from_flags(parse_flags(script, "--quick", "--sampling=all",
                                                    "--seeds=2"))
    assert [(c.sampling, c.seed, c.epochs, c.val_size) for c in configs] == [
        ("standard", 0, 60, 500), ("standard", 1, 60, 500), ("high_res", 0, 5, 500),
        ("high_res", 1, 5, 500), ("async", 0, 60, 500), ("async", 1, 60, 500)]
    assert all(c.quick and c.seeds == 2 for c in configs)
    (given,) = script.configs_from_flags(parse_flags(script, "--quick", "--val_size=7",
                                                        "--seeds=1"))
    assert (given.epochs, given.val_size) == (60, 7)


def test_help_documents_quick_and_the_choices():
    proc = run_script("--helpshort")  # absl exits with status 1 after the help
    help_text = " ".join(proc.stdout.split())  # absl wraps the lines
    for text in ("--quick", "standard 60, high_res 5, async 60", "--val_size 500",
                 "<standard|high_res|async|two_sines|all>", "<PhasedLSTMCell|LSTMCell>",
                 "--seeds", "--plot_only", "runs_freq/", "--preset", "runs_freq_authors/"):
        assert text in help_text, text


def fake_run(log_dir, sampling, model, seed, accuracies, batches_per_epoch=2):
    """Writes a log whose epochs end with these validation accuracies."""
    folder = os.path.dirname(run_path(log_dir, sampling, model, seed))
    os.makedirs(folder, exist_ok=True)
    lines = ["\t".join(HEADER)]
    for step in range(1, batches_per_epoch * len(accuracies) + 1):
        epoch = (step - 1) // batches_per_epoch + 1
        test = (f"0.5\t{accuracies[epoch - 1]}" if step % batches_per_epoch == 0 else "\t")
        lines.append(f"{step}\t{epoch}\t0.6\t0.7\t0.01\t{test}")
    with open(os.path.join(folder, training.LOG_NAME), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def plot_only(log_dir, caplog):
    """main() with --plot_only in this process; returns its exit status and log."""
    with caplog.at_level(logging.INFO, logger="absl"):
        status = run_main("--plot_only", f"--log_dir={log_dir}")
    return status, caplog.text


def test_plot_only_tabulates_the_logs(tmp_path, caplog):
    log_dir = str(tmp_path)
    fake_run(log_dir, "standard", "PhasedLSTMCell", 0, [0.8, 0.99])
    fake_run(log_dir, "standard", "PhasedLSTMCell", 1, [0.9, 0.97])
    fake_run(log_dir, "async", "LSTMCell", 0, [0.5, 0.55, 0.6])
    fake_run(log_dir, "async", "LSTMCell", 2, [0.5, 0.7])  # seeds need not be consecutive
    fake_run(log_dir, "high_res", "LSTMCell", 0, [])  # no validation yet: left out
    os.makedirs(os.path.join(log_dir, "async", "LSTMCell", "notaseed"))
    status, log = plot_only(log_dir, caplog)
    assert status == 0
    table = read_text(os.path.join(log_dir, "results.md"))
    assert "| standard (1 ms) | Phased LSTM | 98.00 ± 1.41 | 2 | 2 | 99.18 ± 0.23 |" in table  # ddof=1
    assert "| asynchronous | LSTM | 65.00 ± 7.07 | 2-3 | 2 | 63.20 ± 13.54 |" in table
    assert "| high resolution (0.1 ms) | LSTM | not run |  | 0 | 51.72 ± 0.71 |" in table
    assert "| asynchronous | Phased LSTM | not run |  | 0 | 98.28 ± 0.15 |" in table
    assert table in log  # also printed
    for path in ("frequency_curves.png", "standard/PhasedLSTMCell/curves.png",
                 "async/LSTMCell/curves.png"):
        with open(os.path.join(log_dir, path), "rb") as f:
            assert f.read(8) == PNG_MAGIC, path
    with open(os.path.join(log_dir, "frequency_curves.png"), "rb") as f:
        width = int.from_bytes(f.read(24)[16:20], "big")  # the PNG header's width
    assert width == 2 * 5 * 110  # a panel (5 inches at 110 dpi) for standard and for async


def test_plot_only_adds_the_two_sines_row_and_panel(tmp_path, caplog):
    log_dir = str(tmp_path)
    fake_run(log_dir, "two_sines", "PhasedLSTMCell", 0, [0.6, 0.9])
    fake_run(log_dir, "two_sines", "PhasedLSTMCell", 1, [0.7, 0.8])
    fake_run(log_dir, "standard", "LSTMCell", 0, [0.9])
    assert plot_only(log_dir, caplog)[0] == 0
    table = read_text(os.path.join(log_dir, "results.md"))
    assert ("| two sines (Fig. 4a), asynchronous | Phased LSTM | 85.00 ± 7.07 | 2 | 2 | "
            "no table |") in table
    assert "two sines (Fig. 4a), asynchronous | LSTM" not in table  # not run: no row
    assert "| high resolution (0.1 ms) | LSTM | not run |" in table  # the first task's rows stay
    with open(os.path.join(log_dir, "frequency_curves.png"), "rb") as f:
        width = int.from_bytes(f.read(24)[16:20], "big")
    assert width == 2 * 5 * 110  # standard and two sines


def preset_model(*args):
    """Builds each model's training graph with the flags given; returns what the preset changes."""
    config = script.config_from_flags(parse_flags(script, "--num_units=3", *args), "standard", 0)
    out = {"flags": {name: getattr(config, name) for name in
                     ("gate_gradient_clip", "gate_biases", "head", "val_size", "log_dir")}}
    for name in script.MODELS:
        with tf.Graph().as_default():
            model = script.Model(dataclasses.replace(config, model=name))
            ops = tf.compat.v1.get_default_graph().get_operations()
            fused = [op.get_attr("gate_gradient_clip") for op in ops
                     if op.type == "PhasedLSTMSequence"]
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                biases = {v.op.name: sess.run(v).tolist()
                          for v in tf.compat.v1.trainable_variables()
                          if v.op.name.endswith("bias") and not v.op.name.startswith("logits")}
        out[name] = {"biases": biases, "fused_clip": fused, "clip": model.cell.gate_gradient_clip,
                     "leaky_relu": any(op.type == "LeakyRelu" for op in ops),
                     "forget_bias": getattr(model.cell, "_forget_bias", None)}
    return out


def test_preset_authors_sets_clipping_biases_and_head_unless_given():
    default = preset_model()
    assert default["flags"] == {"gate_gradient_clip": 0.0, "gate_biases": "tf",
                                "head": "linear", "val_size": 2000, "log_dir": "runs_freq/"}
    assert default["PhasedLSTMCell"] == {
        "biases": {f"rnn/phased_lstm_cell/{gate}/bias": [0.0] * n
                   for gate, n in (("mask_gates", 6), ("new_input", 3), ("output_gate", 3))},
        "fused_clip": [0.0], "clip": None, "leaky_relu": False, "forget_bias": None}
    assert default["LSTMCell"] == {"biases": {"rnn/lstm_cell/bias": [0.0] * 12},
                                   "fused_clip": [], "clip": None, "leaky_relu": False,
                                   "forget_bias": 1.0}  # TensorFlow's LSTMCell adds 1

    authors = preset_model("--preset=authors")
    assert authors["flags"] == {"gate_gradient_clip": 10.0, "gate_biases": "authors",
                                "head": "leaky_relu", "val_size": 500,
                                "log_dir": "runs_freq_authors/"}
    plstm, lstm = authors["PhasedLSTMCell"], authors["LSTMCell"]
    assert plstm["biases"]["rnn/phased_lstm_cell/mask_gates/bias"] == pytest.approx(
        [-0.1] * 3 + [0.0] * 3)  # input gate, forget gate
    assert plstm["biases"]["rnn/phased_lstm_cell/output_gate/bias"] == [0.0] * 3
    assert plstm["fused_clip"] == [10.0] and plstm["clip"] == 10.0 and plstm["leaky_relu"]
    assert lstm["biases"]["rnn/lstm_cell/bias"] == pytest.approx([-0.1] * 3 + [0.0] * 9)
    assert lstm["clip"] == 10.0 and lstm["leaky_relu"] and lstm["forget_bias"] == 0.0

    overridden = preset_model("--preset=authors", "--gate_gradient_clip=0", "--head=linear")
    assert overridden["flags"]["gate_biases"] == "authors"
    assert overridden["PhasedLSTMCell"]["fused_clip"] == [0.0]
    assert overridden["LSTMCell"]["clip"] is None and not overridden["LSTMCell"]["leaky_relu"]


def test_plot_only_without_logs(tmp_path):
    proc = run_script("--plot_only", f"--log_dir={tmp_path}")
    assert proc.returncode == 1 and "error: nothing to plot" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--sampling=sometimes"],
     "value should be one of <standard|high_res|async|two_sines|all>"),
    (["--gate_gradient_clip=inf"], "--gate_gradient_clip must be a finite number"),
    (["--gate_gradient_clip=-1"], "--gate_gradient_clip=-1: -1.0 is not a non-negative"),
    (["-m", "GRUCell"], "value should be one of <PhasedLSTMCell|LSTMCell>"),
    (["--seeds=0"], "--seeds=0: 0 is not a positive integer"),
    (["--fresh", "--plot_only"], "pass one of them"),
])
def test_bad_flags_are_refused(args, message):
    with pytest.raises(flags.IllegalFlagValueError) as error:
        parse_flags(script, *args)
    assert message in str(error.value)


def test_bad_flags_stop_the_command_before_any_work(tmp_path):
    proc = run_script("-m", "GRUCell", f"--log_dir={tmp_path}/runs")
    assert proc.returncode != 0
    assert "value should be one of <PhasedLSTMCell|LSTMCell>" in proc.stderr
    assert not os.path.exists(f"{tmp_path}/runs")


def adam_gradient_norm(clip_norm):
    """The global norm of the gradient Adam was given in one step from fresh weights: Adam's
    first moment m after one step is (1 - beta1) times that gradient."""
    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(0)
        model = script.Model(script.FrequencyConfig(num_units=8, clip_norm=clip_norm))
        first_moments = [v for v in tf.compat.v1.global_variables()
                         if v.name.endswith("/Adam:0")]
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            sess.run(model.train_op, model.feed(script.training_batch(0, 1, 8, "high_res")))
            moments = sess.run(first_moments)
    return np.sqrt(sum(np.sum(m.astype(np.float64) ** 2) for m in moments)) / (1 - 0.9)


@pytest.mark.parametrize("clip_norm", [1e-4, 1e-3])
def test_clip_norm_bounds_the_gradient_adam_is_given(clip_norm):
    unclipped = adam_gradient_norm(0.0)
    assert unclipped > 10 * clip_norm  # so that clipping has work to do
    assert adam_gradient_norm(clip_norm) == pytest.approx(clip_norm, rel=1e-4)


@pytest.mark.parametrize("preset", [None, "authors"])
def test_validation_tower_gives_the_training_graphs_numbers(preset):
    # Validates each model on the training graph's tensors and on Model.eval_loss/eval_accuracy
    # (the Phased LSTM's validation tower), after a training step moved the weights off their
    # start.
    args = ["--num_units=6"] + ([f"--preset={preset}"] if preset else [])
    config = script.config_from_flags(parse_flags(script, *args), "standard", 0)
    data = script.validation_data(0, 1, 40, "standard")
    available = fused_rnn.fused_kernel_available()
    for name in script.MODELS:
        with tf.Graph().as_default() as graph:
            tf.compat.v1.set_random_seed(0)
            model = script.Model(dataclasses.replace(config, model=name))
            ops = {op.type for op in graph.get_operations()}
            names = [v.op.name for v in tf.compat.v1.global_variables()]
            training_tensors = types.SimpleNamespace(feed=model.feed, leak=model.leak,
                                                     eval_loss=model.loss,
                                                     eval_accuracy=model.accuracy)
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                sess.run(model.train_op, model.feed(script.training_batch(0, 1, 8, "standard")))
                validation = script.evaluate(sess, model, data, 16)
                on_training_tensors = script.evaluate(sess, training_tensors, data, 16)
        if name == "PhasedLSTMCell":
            # The Phased LSTM's tower: the forward-only op where the kernel runs, on the same
            # variables (no second copy), with the same numbers bit for bit.
            assert model.eval_loss is not model.loss
            assert ("PhasedLSTMSequenceInference" in ops) == available
            assert ("PhasedLSTMSequence" in ops) == available
            assert not any("_1/" in n for n in names), names
        else:  # The LSTM validates on its training tensors, as before.
            assert model.eval_loss is model.loss
        assert validation == on_training_tensors
