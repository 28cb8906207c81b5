"""Tests of mnist_phased_lstm.py on a tiny fake MNIST (tests/fake_mnist.py).

The script runs as a subprocess, as a user runs it. Each start costs seconds (TensorFlow), so one
module-scoped fixture makes every training run once, in two groups side by side, and the tests
share them:

- `trained`: one log_dir with PhasedLSTMCell (8 steps, uninterrupted), BasicLSTMCell (4 steps)
  and LSTMCell (3 steps, with --peepholes and --fresh over an older run's files).
- `resumed`: PhasedLSTMCell with the same settings in another log_dir, trained in three pieces:
  --steps 3, then --steps 1000 stopped by SIGTERM after a few steps, then --steps 8.

Errors raised before training, and the script's functions, are checked in this process: main()
with flags of its own (script_helpers.run_main), the flag parser, Model built from a
MnistConfig."""

import concurrent.futures
import dataclasses
import glob
import json
import os
import shutil
import signal
import subprocess
import time
import types
from unittest import mock

from absl import flags
import numpy as np
import pytest

import fake_mnist
import mnist_phased_lstm as script
from fake_mnist import write_fake_mnist
from phased_lstm import fused_rnn, tf
from experiments import mnist_data, training
from script_helpers import PNG_MAGIC, ROOT, TIMEOUT_S, check_ok, count_rows, parse_flags, run
import script_helpers

SCRIPT = os.path.join(ROOT, "mnist_phased_lstm.py")
SMALL = ["--batch_size=16", "--num_units=4", "--eval_every=3", "--eval_batch_size=128"]


def command(*args):
    return fake_mnist.command(SCRIPT, *args)


def run_script(*args):
    """Runs the script to its end; returns the CompletedProcess (text output)."""
    return run(command(*args))


def read_log(log_dir, model):
    return training.read_log(os.path.join(log_dir, model, "log.tsv"))


@pytest.fixture(autouse=True)
def accept_fake_mnist(monkeypatch):
    """In-process runs read the fake MNIST too (subprocesses: `command`)."""
    fake_mnist.accept_fake_mnist(monkeypatch.setattr)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_fake_mnist(tmp_path_factory.mktemp("data"))


def train_models(log_dir, data_dir):
    """The `trained` group: one run of each model in one log_dir."""
    common = [*SMALL, f"--data_dir={data_dir}", f"--log_dir={log_dir}"]
    # An older LSTMCell run that --fresh must delete: rows up to 50, a checkpoint of another shape.
    old = os.path.join(log_dir, "LSTMCell")
    os.makedirs(os.path.join(old, "checkpoints"))
    with open(os.path.join(old, "log.tsv"), "w", encoding="utf-8") as f:
        f.write("\t".join(training.LOG_COLUMNS) + "\n")
        f.writelines(f"{s}\t2.3\t0.1\t0.1\t\t\n" for s in range(1, 51))
    with open(os.path.join(old, "checkpoints", "checkpoint"), "w", encoding="utf-8") as f:
        f.write('model_checkpoint_path: "ckpt-50"\n')
    procs = {
        "PhasedLSTMCell": run_script("-m", "PhasedLSTMCell", "--steps=8", *common),
        "BasicLSTMCell": run_script("-m", "BasicLSTMCell", "--steps=4", *common),
        "LSTMCell": run_script("--model=LSTMCell", "--steps=3", "--peepholes", "--fresh",
                               *common),
    }
    return types.SimpleNamespace(log_dir=log_dir, procs=procs)


def train_in_pieces(log_dir, data_dir):
    """The `resumed` group: PhasedLSTMCell to step 3, then SIGTERM'd, then to step 8."""
    common = ["-m", "PhasedLSTMCell", *SMALL, f"--data_dir={data_dir}", f"--log_dir={log_dir}"]
    log_path = os.path.join(log_dir, "PhasedLSTMCell", "log.tsv")
    checkpoints = os.path.join(log_dir, "PhasedLSTMCell", "checkpoints")

    first = run_script("--steps=3", *common)
    check_ok(first)
    # Many steps, stopped by SIGTERM once two steps past the resume point are logged.
    process = subprocess.Popen(command("--steps=1000", *common), cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + TIMEOUT_S
    while count_rows(log_path) < 5 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=TIMEOUT_S)
    stopped = types.SimpleNamespace(returncode=process.returncode, stderr=stderr,
                                    rows=count_rows(log_path),
                                    checkpoints=sorted(os.listdir(checkpoints)))
    last = run_script("--steps=8", *common)
    return types.SimpleNamespace(log_dir=log_dir, first=first, stopped=stopped, last=last)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    """Makes both groups of runs, side by side: much of a run's time is single-threaded start-up."""
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        trained = pool.submit(train_models, str(tmp_path_factory.mktemp("trained")), data_dir)
        resumed = pool.submit(train_in_pieces, str(tmp_path_factory.mktemp("resumed")), data_dir)
        return types.SimpleNamespace(trained=trained.result(), resumed=resumed.result())


@pytest.fixture
def trained(runs):
    return runs.trained


@pytest.fixture
def resumed(runs):
    return runs.resumed


def run_main(*args):
    """Runs main() in this process with these flags; returns its status or SystemExit's code."""
    return script_helpers.run_main(script, *args)


def config(**values):
    """The MnistConfig of the defaults with these values."""
    return script.MnistConfig(**values)


# ---------------------------------------------------------------------------------------------
# Training runs.

@pytest.mark.parametrize("model", ["PhasedLSTMCell", "BasicLSTMCell", "LSTMCell"])
def test_each_model_trains_and_evaluates(trained, model):
    check_ok(trained.procs[model])
    log = read_log(trained.log_dir, model)
    assert np.isfinite(log["train_loss"]).all()
    assert ((log["train_accuracy"] >= 0) & (log["train_accuracy"] <= 1)).all()
    assert (log["seconds_per_step"] > 0).all()
    assert "final test accuracy" in trained.procs[model].stderr


def test_log_has_one_row_per_step_and_test_columns_on_eval_rows(trained):
    with open(os.path.join(trained.log_dir, "PhasedLSTMCell", "log.tsv"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0].split("\t") == ["step", "train_loss", "train_accuracy", "seconds_per_step",
                                    "test_loss", "test_accuracy"]
    rows = [line.split("\t") for line in lines[1:]]
    assert [int(r[0]) for r in rows] == list(range(1, 9))
    assert all(len(r) == 6 for r in rows)
    # Every --eval_every=3 steps and at the last step.
    assert [int(r[0]) for r in rows if r[4] and r[5]] == [3, 6, 8]
    assert all(r[4] == r[5] == "" for r in rows if int(r[0]) not in (3, 6, 8))
    log = read_log(trained.log_dir, "BasicLSTMCell")
    np.testing.assert_array_equal(log["step"], [1, 2, 3, 4])
    np.testing.assert_array_equal(log["step"][~np.isnan(log["test_accuracy"])], [3, 4])


def test_results_json(trained):
    with open(os.path.join(trained.log_dir, "PhasedLSTMCell", "results.json"),
              encoding="utf-8") as f:
        results = json.load(f)
    log = read_log(trained.log_dir, "PhasedLSTMCell")
    tested = ~np.isnan(log["test_accuracy"])
    assert results["model"] == "PhasedLSTMCell" and results["steps"] == 8
    assert results["final_test_accuracy"] == pytest.approx(log["test_accuracy"][7])
    assert results["final_test_loss"] == pytest.approx(log["test_loss"][7])
    assert results["best_test_accuracy"] == pytest.approx(log["test_accuracy"][tested].max())
    assert results["best_test_accuracy_step"] in (3, 6, 8)
    assert results["test_accuracy_at_step"] == {}  # Steps 1000 and 2000 were not reached.
    assert results["median_seconds_per_step"] == pytest.approx(
        np.median(log["seconds_per_step"]))
    assert 0 < results["wall_time_s"] < TIMEOUT_S
    settings = results["settings"]
    # Every flag, by name: the keys resume compares, as runs recorded them before MnistConfig.
    flag_names = {f.name for f in parse_flags(script).get_key_flags_for_module(script)}
    assert set(settings) == flag_names
    assert settings == dataclasses.asdict(config(
        model="PhasedLSTMCell", steps=8, batch_size=16, num_units=4, eval_every=3,
        eval_batch_size=128, data_dir=settings["data_dir"], log_dir=trained.log_dir))


def test_tensorboard_events(trained):
    run_dir = os.path.join(trained.log_dir, "BasicLSTMCell")
    (events,) = [n for n in os.listdir(run_dir) if n.startswith("events.out.tfevents.")]
    tags = {}
    for event in tf.compat.v1.train.summary_iterator(os.path.join(run_dir, events)):
        for value in event.summary.value:
            tags.setdefault(value.tag, []).append(event.step)
    assert tags == {"train/loss": [1, 2, 3, 4], "train/accuracy": [1, 2, 3, 4],
                    "test/loss": [3, 4], "test/accuracy": [3, 4]}


def test_plot_shows_every_model_trained_so_far(trained):
    assert "Plotted BasicLSTMCell, LSTMCell, PhasedLSTMCell to" in trained.procs["LSTMCell"].stderr
    with open(os.path.join(trained.log_dir, "mnist_curves.png"), "rb") as f:
        assert f.read(8) == PNG_MAGIC


def test_fresh_deletes_the_older_run(trained):
    log = read_log(trained.log_dir, "LSTMCell")
    np.testing.assert_array_equal(log["step"], [1, 2, 3])
    checkpoints = os.path.join(trained.log_dir, "LSTMCell", "checkpoints")
    assert "ckpt-3.index" in os.listdir(checkpoints)
    with open(os.path.join(checkpoints, "checkpoint"), encoding="utf-8") as f:
        assert "ckpt-50" not in f.read()
    with open(os.path.join(trained.log_dir, "LSTMCell", "results.json"), encoding="utf-8") as f:
        assert json.load(f)["settings"]["peepholes"] is True


# ---------------------------------------------------------------------------------------------
# Interruptions and resuming.

def test_sigterm_checkpoints_and_exits_cleanly(resumed):
    stopped = resumed.stopped
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    assert "Resuming PhasedLSTMCell" in stopped.stderr and "(step 3 of 1000)" in stopped.stderr
    assert f"Stopped by SIGTERM at step {stopped.rows} of 1000" in stopped.stderr
    assert "Run the same command again to resume" in stopped.stderr
    assert 5 <= stopped.rows < 8, "stopped too late for the rest of the test; slow it down"
    assert f"ckpt-{stopped.rows}.index" in stopped.checkpoints
    assert f"ckpt-{stopped.rows}.json" in stopped.checkpoints


def test_resumed_log_has_every_step_once(resumed):
    check_ok(resumed.last)
    assert f"(step {resumed.stopped.rows} of 8)" in resumed.last.stderr
    log = read_log(resumed.log_dir, "PhasedLSTMCell")
    np.testing.assert_array_equal(log["step"], range(1, 9))


def test_resumed_run_matches_an_uninterrupted_one(trained, resumed):
    check_ok(resumed.last)
    interrupted = read_log(resumed.log_dir, "PhasedLSTMCell")
    uninterrupted = read_log(trained.log_dir, "PhasedLSTMCell")
    np.testing.assert_allclose(interrupted["train_loss"], uninterrupted["train_loss"], rtol=1e-4)
    np.testing.assert_allclose(interrupted["train_accuracy"], uninterrupted["train_accuracy"])
    np.testing.assert_allclose(interrupted["test_loss"], uninterrupted["test_loss"], rtol=1e-4)
    with open(os.path.join(resumed.log_dir, "PhasedLSTMCell", "results.json"),
              encoding="utf-8") as f:
        results = json.load(f)
    assert results["steps"] == 8 and results["settings"]["steps"] == 8
    assert results["final_test_accuracy"] == pytest.approx(uninterrupted["test_accuracy"][7])


def test_wall_time_adds_up_over_the_segments(resumed):
    def wall_time(name):
        path = os.path.join(resumed.log_dir, "PhasedLSTMCell", name)
        with open(path, encoding="utf-8") as f:
            return json.load(f)["wall_time_s"]

    first, stopped = wall_time("checkpoints/ckpt-3.json"), wall_time(
        f"checkpoints/ckpt-{resumed.stopped.rows}.json")
    assert 0 < first < stopped < wall_time("checkpoints/ckpt-8.json")
    assert wall_time("results.json") >= wall_time("checkpoints/ckpt-8.json")


def test_resuming_with_other_model_settings_is_an_error(resumed, data_dir):
    message = run_main("-m", "PhasedLSTMCell", *SMALL, "--num_units=5", "--steps=9",
                       f"--data_dir={data_dir}", f"--log_dir={resumed.log_dir}")
    assert "cannot resume" in message and "--num_units=4 (this command: 5)" in message
    assert "--fresh" in message
    message = run_main("-m", "PhasedLSTMCell", *SMALL, "--lr_half_life=5", "--steps=9",
                       f"--data_dir={data_dir}", f"--log_dir={resumed.log_dir}")
    assert "cannot resume" in message and "--lr_half_life=0 (this command: 5)" in message


def test_a_checkpoint_from_before_mod_gradient_resumes_only_with_the_exact_rule(
        resumed, data_dir, tmp_path):
    # Such a checkpoint's sidecar has no mod_gradient: it trained with the mod's exact derivative.
    log_dir = os.path.join(tmp_path, "runs")
    shutil.copytree(resumed.log_dir, log_dir)
    for path in glob.glob(os.path.join(log_dir, "PhasedLSTMCell", "checkpoints", "*.json")):
        with open(path, encoding="utf-8") as f:
            sidecar = json.load(f)
        del sidecar["settings"]["mod_gradient"]
        with open(path, "w", encoding="utf-8") as f:
            json.dump(sidecar, f)
    message = run_main("-m", "PhasedLSTMCell", *SMALL, "--steps=9", f"--data_dir={data_dir}",
                       f"--log_dir={log_dir}")
    assert "cannot resume" in message
    assert "--mod_gradient='exact' (this command: 'tf1')" in message
    assert run_main("-m", "PhasedLSTMCell", *SMALL, "--steps=9", "--mod_gradient=exact",
                    f"--data_dir={data_dir}", f"--log_dir={log_dir}") == 0
    assert read_log(log_dir, "PhasedLSTMCell")["step"][-1] == 9


# ---------------------------------------------------------------------------------------------
# Errors.

def test_unknown_model_lists_the_choices(tmp_path):
    proc = run_script("-m", "GRUCell", f"--log_dir={tmp_path}")
    assert proc.returncode != 0
    assert "BasicLSTMCell|LSTMCell|PhasedLSTMCell" in proc.stderr
    assert os.listdir(tmp_path) == []


def test_corrupt_data_file_is_a_clear_error(tmp_path):
    data = os.path.join(tmp_path, "data")
    os.makedirs(data)
    with open(os.path.join(data, "mnist.npz"), "wb") as f:
        f.write(b"PK\x03\x04 not really a zip")
    message = run_main(f"--data_dir={data}", f"--log_dir={tmp_path}/runs")
    assert message.startswith(f"error: {data}/mnist.npz is not a valid .npz file")


@pytest.mark.parametrize("args, message", [
    (["--steps=0"], "--steps=0: 0 is not a positive integer"),
    (["--batch_size=0"], "--batch_size=0"),
    (["--num_units=0"], "--num_units=0"),
    (["--learning_rate=0"], "--learning_rate must be > 0"),
    (["--ratio_on=1.5"], r"--ratio_on must be in \(0, 1\]"),
    (["--period_init_min=10", "--period_init_max=5"], "--period_init_max must be >="),
    (["--fresh", "--plot_only"], "pass one of them"),
    (["-m", "GRUCell"],
     "value should be one of <BasicLSTMCell|LSTMCell|PhasedLSTMCell|PhasedGRUCell>"),
    (["-m", "BasicLSTMCell", "--event_driven_eval"], "needs -m PhasedLSTMCell without"),
    (["--peepholes", "--event_driven_eval"], "needs -m PhasedLSTMCell without --peepholes"),
])
def test_bad_flags_are_refused(args, message):
    with pytest.raises(flags.IllegalFlagValueError, match=message):
        parse_flags(script, *args)


def test_unwritable_log_dir_is_refused_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    message = run_main(f"--log_dir={blocker}/runs", f"--data_dir={tmp_path}/no_data")
    assert message.startswith(f"error: cannot write to the log folder {blocker}/runs")


def test_missing_data_that_cannot_be_fetched_is_a_clear_error(tmp_path):
    message = run_main(f"--data_dir={tmp_path}/data", f"--log_dir={tmp_path}/runs")
    assert f"{tmp_path}/data/mnist.npz does not exist and every source failed" in message
    assert "the tests never download MNIST" in message
    assert not os.path.exists(f"{tmp_path}/data")


def test_batch_larger_than_the_training_set(tmp_path, data_dir):
    message = run_main(*SMALL, "--batch_size=1024", f"--data_dir={data_dir}",
                       f"--log_dir={tmp_path}")
    assert "--batch_size=1024 is larger than the training set (512 images)" in message


def test_plot_only_without_logs(tmp_path):
    message = run_main("--plot_only", f"--log_dir={tmp_path}")
    assert message.startswith("error: nothing to plot")


def test_plot_only_redraws_the_plot(trained):
    path = os.path.join(trained.log_dir, "mnist_curves.png")
    os.remove(path)
    assert run_main("--plot_only", f"--log_dir={trained.log_dir}") == 0
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC


# ---------------------------------------------------------------------------------------------
# The script's functions.

def test_flags_help_lists_the_settings_and_no_test_switch():
    flag_values = parse_flags(script)
    help_text = flag_values.module_help(script)
    for name in ("--steps", "--ratio_on", "--checkpoint_every_secs", "--[no]plot_only",
                 "--log_dir"):
        assert name in help_text
    assert "-m,--model" in help_text
    assert "unverified_data" not in flag_values  # tests use tests/fake_mnist.py instead
    assert set(script.MODELS) == set(flag_values["model"].parser.enum_values)


def test_the_flags_defaults_are_the_configs():
    flag_values = parse_flags(script)
    names = [f.name for f in flag_values.get_key_flags_for_module(script)]
    assert sorted(names) == sorted(f.name for f in dataclasses.fields(script.MnistConfig))
    assert script.config_from_flags(flag_values) == script.MnistConfig()
    assert script.config_from_flags(parse_flags(script, "-m", "LSTMCell", "--steps=7")) == (
        config(model="LSTMCell", steps=7))


def test_to_sequences_reads_rows_one_pixel_per_step():
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28).astype(np.uint8)
    pixels = mnist_data.to_sequences(images)
    assert pixels.shape == (2, 784, 1) and pixels.dtype == np.float32
    np.testing.assert_allclose(pixels[0, 28 + 2, 0], images[0, 1, 2] / 255.0)
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0


def test_batches_depend_only_on_seed_and_step():
    n, size = 100, 30  # 3 whole batches per epoch; the last 10 images of an epoch are dropped.
    first_epoch = [script.batch_indices(0, s, n, size) for s in (1, 2, 3)]
    assert all(b.shape == (size,) for b in first_epoch)
    assert len(set(np.concatenate(first_epoch))) == 90  # No image twice in an epoch.
    np.testing.assert_array_equal(
        np.concatenate(first_epoch), np.random.RandomState(0).permutation(n)[:90])
    np.testing.assert_array_equal(script.batch_indices(0, 4, n, size),
                                  np.random.RandomState(1).permutation(n)[:30])
    np.testing.assert_array_equal(script.batch_indices(0, 2, n, size), first_epoch[1])
    assert not np.array_equal(script.batch_indices(1, 1, n, size), first_epoch[0])


@pytest.mark.parametrize("model", sorted(script.MODELS))
def test_run_rnn_gives_every_step_output(model):
    with tf.Graph().as_default():
        leak = tf.compat.v1.placeholder_with_default(0.5, [])
        time = tf.constant(np.arange(784, dtype=np.float32).reshape(1, 784, 1))
        pixels = tf.constant(np.random.default_rng(0).random((2, 784, 1), dtype=np.float32))
        outputs = script.run_rnn(script.MODELS[model](config(num_units=3), leak), time, pixels)
        assert outputs.shape.as_list() == [2, 784, 3]
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            leaky, closed = (sess.run(outputs, {leak: value}) for value in (0.5, 0.0))
    # Only the phased cells' gates have a leak.
    assert np.array_equal(leaky, closed) == (not model.startswith("Phased"))


@pytest.mark.parametrize("model", ["PhasedLSTMCell", "PhasedGRUCell"])
def test_the_phased_cells_run_their_sequence_function_and_log_the_path(model):
    function = {"PhasedLSTMCell": "phased_lstm_rnn", "PhasedGRUCell": "phased_gru_rnn"}[model]
    library = {"PhasedLSTMCell": fused_rnn.LSTM, "PhasedGRUCell": fused_rnn.GRU}[model]
    with tf.Graph().as_default() as graph, mock.patch.object(script.logging, "info") as info:
        script.run_rnn(script.MODELS[model](config(num_units=3), 0.001), tf.zeros([1, 784, 1]),
                       tf.zeros([2, 784, 1]))
    ops = {op.type for op in graph.get_operations()}
    fused_op = {"PhasedLSTMCell": "PhasedLSTMSequence", "PhasedGRUCell": "PhasedGRUSequence"}
    assert (fused_op[model] in ops) == library.available()
    logged = [call.args[1] for call in info.call_args_list if call.args[0] == "%s."]
    assert len(logged) == 1 and logged[0].startswith(f"{function} runs "), logged
    assert ("fused kernel (" in logged[0]) == library.available()


def test_a_phased_gru_checkpoint_from_dynamic_rnn_restores(tmp_path):
    # -m PhasedGRUCell ran under dynamic_rnn before phased_gru_rnn: its checkpoints (Adam's slots
    # included) restore into the script's graph now, and give the same loss.
    def dynamic_rnn_run_rnn(cell, time, pixels, forward_only=False):
        del forward_only  # dynamic_rnn has no forward-only path
        time = tf.tile(time, [tf.shape(pixels)[0], 1, 1])
        return tf.compat.v1.nn.dynamic_rnn(cell, (time, pixels), dtype=tf.float32)[0]

    rng = np.random.default_rng(0)
    prefix = str(tmp_path / "ckpt")
    losses = []
    for run_rnn in (dynamic_rnn_run_rnn, script.run_rnn):
        with tf.Graph().as_default(), mock.patch.object(script, "run_rnn", run_rnn):
            tf.compat.v1.set_random_seed(len(losses))
            model = script.Model(config(model="PhasedGRUCell", num_units=3))
            feed = {model.pixels: rng.random((4, 784, 1), dtype=np.float32),
                    model.labels: np.arange(4)}
            rng = np.random.default_rng(0)  # the same feed for both graphs
            with tf.compat.v1.Session() as sess:
                saver = tf.compat.v1.train.Saver()
                if losses:
                    saver.restore(sess, prefix)
                else:
                    sess.run(tf.compat.v1.global_variables_initializer())
                    sess.run(model.train_op, feed)  # Adam's slots hold values too
                    saver.save(sess, prefix)
                losses.append(sess.run(model.loss, feed))
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


@pytest.mark.parametrize("preset", [None, "seed_repo"])
@pytest.mark.parametrize("rule", ["tf1", "exact"])
def test_mod_gradient_and_preset_reach_the_phased_cells(rule, preset):
    args = [f"--mod_gradient={rule}"]
    args += [f"--preset={preset}", "--ratio_on=0.2"] if preset else []
    built = script.config_from_flags(parse_flags(script, *args))
    for model in ("PhasedLSTMCell", "PhasedGRUCell"):
        cell = script.MODELS[model](built, 0.0)
        assert cell.time_gate.mod_gradient == rule
    if preset:  # its settings, except the one the command line gave
        assert built.peepholes and built.ratio_on == 0.2
        assert built.period_init_max == pytest.approx(np.exp(6.0))


@pytest.mark.parametrize("half_life", [0, 40])
def test_learning_rate_halves_every_half_life(half_life):
    with tf.Graph().as_default():
        model = script.Model(config(model="BasicLSTMCell", num_units=3, learning_rate=0.01,
                                    lr_half_life=half_life))
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            rates = []
            for step in (0, 10, 40, 100):
                model.global_step.load(step, sess)
                rates.append(sess.run(model.learning_rate))
    expected = [0.01 * (0.5 ** (s / half_life) if half_life else 1.0) for s in (0, 10, 40, 100)]
    assert rates == pytest.approx(expected, rel=1e-6)


def test_evaluate_weighs_a_ragged_last_batch():
    rng = np.random.default_rng(0)
    pixels = rng.random((10, 784, 1), dtype=np.float32)
    labels = rng.integers(0, 10, 10)
    with tf.Graph().as_default():
        model = script.Model(config(model="BasicLSTMCell", num_units=3))
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            whole = script.evaluate(sess, model, pixels, labels, batch_size=10)
            ragged = script.evaluate(sess, model, pixels, labels, batch_size=4)
    assert ragged[0] == pytest.approx(whole[0], rel=1e-5)
    assert ragged[1] == whole[1]


def test_event_driven_evaluation_equals_the_dense_one():
    rng = np.random.default_rng(0)
    with tf.Graph().as_default():
        model = script.Model(config(num_units=4, event_driven_eval=True))
        assert model.eval_loss is not model.loss  # a second, event-driven evaluation graph
        feed = {model.pixels: rng.random((8, 784, 1), dtype=np.float32),
                model.labels: rng.integers(0, 10, 8), model.leak: 0.0}
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            dense = sess.run([model.loss, model.accuracy], feed)
            event = sess.run([model.eval_loss, model.eval_accuracy], feed)
    np.testing.assert_allclose(event, dense, rtol=1e-5)


@pytest.mark.parametrize("model", ["PhasedLSTMCell", "PhasedGRUCell"])
def test_the_evaluation_tower_gives_the_training_graphs_numbers(model):
    # The phased cells evaluate on a second tower (the fused kernels' forward-only ops) over the
    # same variables: after a training step, the same loss and accuracy bit for bit as the
    # training graph's tensors, which the script evaluated before.
    library = {"PhasedLSTMCell": fused_rnn.LSTM, "PhasedGRUCell": fused_rnn.GRU}[model]
    inference_op = {"PhasedLSTMCell": "PhasedLSTMSequenceInference",
                    "PhasedGRUCell": "PhasedGRUSequenceInference"}[model]
    rng = np.random.default_rng(0)
    pixels = rng.random((12, 784, 1), dtype=np.float32)
    labels = rng.integers(0, 10, 12)
    with tf.Graph().as_default() as graph:
        tf.compat.v1.set_random_seed(0)
        built = script.Model(config(model=model, num_units=4))
        assert built.eval_loss is not built.loss
        assert (inference_op in {op.type for op in graph.get_operations()}) == library.available()
        names = [v.op.name for v in tf.compat.v1.global_variables()]
        assert not any("_1/" in name for name in names), names  # no second copy of a weight
        training_tensors = types.SimpleNamespace(pixels=built.pixels, labels=built.labels,
                                                 leak=built.leak, eval_loss=built.loss,
                                                 eval_accuracy=built.accuracy)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            sess.run(built.train_op, {built.pixels: pixels[:4], built.labels: labels[:4]})
            tower = script.evaluate(sess, built, pixels, labels, batch_size=5)
            before = script.evaluate(sess, training_tensors, pixels, labels, batch_size=5)
    assert tower == before


def test_the_lstms_evaluate_on_their_training_tensors():
    with tf.Graph().as_default():
        built = script.Model(config(model="BasicLSTMCell", num_units=3))
    assert built.eval_loss is built.loss and built.eval_accuracy is built.accuracy
