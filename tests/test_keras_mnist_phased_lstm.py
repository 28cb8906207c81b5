"""Tests of keras_mnist_phased_lstm.py on a tiny fake MNIST (tests/fake_mnist.py), as a user runs
it: each run is a subprocess (the script's flags would clash with mnist_phased_lstm's in this
process). One module-scoped fixture starts every run, two at a time, and the tests share them:

- `reference`: both models, 3 epochs, uninterrupted; then the same command again.
- `killed`: PhasedLSTM with the same settings, SIGKILLed by an injected callback in the middle of
  epoch 2, then the same command again.
- `diverged`: NaN weights injected in the middle of epoch 2, then the same command again.
- `workers`: two processes from one TF_CONFIG on 127.0.0.1, one epoch; `alone`: one worker of a
  two-worker TF_CONFIG, started without its peer and killed after a while.
- `jax`: --keras 3 on JAX with two host devices (keras.distribution.DataParallel), and one;
  `killed_jax`: as `killed`, with --keras 3 on JAX.

The faults are injected into the real script through `fault_command`: a callback that Keras runs
first at each batch, added by wrapping experiments.keras_run.make_callbacks in the subprocess.
"""

import concurrent.futures
import importlib.util
import json
import os
import socket
import subprocess
import time
import types

import numpy as np
import pytest

import fake_mnist
from experiments import keras_run, loop
from script_helpers import PNG_MAGIC, ROOT, TIMEOUT_S, check_ok
import script_helpers

SCRIPT = os.path.join(ROOT, "keras_mnist_phased_lstm.py")
EPOCHS = 3
# 8 batches of 32 per epoch; 784 steps of 4 units: seconds per epoch.
SMALL = ["--train_samples=256", "--test_samples=128", "--batch_size=32", "--num_units=4"]
# One process against two workers (or two JAX devices) with the same global batch: the same
# batches, the gradients summed in another order. Measured: equal to the printed digits.
REPLICA_RTOL = 1e-5
HAS_JAX = importlib.util.find_spec("jax") is not None

FAULT = """
from experiments import keras_run as _keras_run
_make_callbacks = _keras_run.make_callbacks
def _with_fault(keras, run, advice, **kwargs):
    class Fault(keras.callbacks.Callback):
        epoch = 0
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
        def on_train_batch_begin(self, batch, logs=None):
            if (self.epoch, batch) == ({epoch}, {batch}):
                {action}
    return [Fault()] + _make_callbacks(keras, run, advice, **kwargs)
_keras_run.make_callbacks = _with_fault
"""
KILL = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
NAN_WEIGHTS = "self.model.set_weights([w * float('nan') for w in self.model.get_weights()])"


def command(*args):
    return fake_mnist.command(SCRIPT, *args)


def fault_command(action, epoch, batch, *args):
    """The script's command with `action` run at the start of batch `batch` of epoch `epoch`
    (0-based, as Keras counts them)."""
    cmd = command(*args)
    cmd[2] = (fake_mnist.PREAMBLE + FAULT.format(epoch=epoch, batch=batch, action=action)
              + cmd[2][len(fake_mnist.PREAMBLE):])
    return cmd


def run(cmd, env=None):
    return script_helpers.run(cmd, env={"PYTHONUNBUFFERED": "1", **(env or {})})


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def start_workers(save_dir, data_dir, ports, indices, stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE):
    return [subprocess.Popen(
        command(f"--save_dir={save_dir}", f"--data_dir={data_dir}", "--models=PhasedLSTM",
                "--epochs=1", *SMALL),
        cwd=ROOT, stdout=stdout, stderr=stderr, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "TF_CONFIG": tf_config(ports, i)})
        for i in indices]


def reference_runs(base, data_dir):
    args = [f"--save_dir={base}/reference", f"--data_dir={data_dir}", f"--epochs={EPOCHS}",
            *SMALL]
    return types.SimpleNamespace(first=run(command(*args)), again=run(command(*args)),
                                 save_dir=f"{base}/reference")


def killed_runs(base, data_dir, name="killed", extra=(), env=None):
    args = [f"--save_dir={base}/{name}", f"--data_dir={data_dir}", "--models=PhasedLSTM",
            f"--epochs={EPOCHS}", *SMALL, *extra]
    killed = run(fault_command(KILL, 1, 3, *args), env=env)
    log_after_kill = keras_run.read_csv_log(f"{base}/{name}/PhasedLSTM/log.csv")
    return types.SimpleNamespace(killed=killed, log_after_kill=log_after_kill,
                                 resumed=run(command(*args), env=env), save_dir=f"{base}/{name}")


def killed_jax_runs(base, data_dir):
    """The same kill with the Keras 3 layer on JAX (Keras 3's own BackupAndRestore)."""
    if not HAS_JAX:
        return None
    return killed_runs(base, data_dir, "killed_jax", ["--keras=3"], {"KERAS_BACKEND": "jax"})


def diverged_runs(base, data_dir):
    args = [f"--save_dir={base}/diverged", f"--data_dir={data_dir}", "--models=PhasedLSTM",
            f"--epochs={EPOCHS}", *SMALL]
    diverged = run(fault_command(NAN_WEIGHTS, 1, 2, *args))
    log_after = keras_run.read_csv_log(f"{base}/diverged/PhasedLSTM/log.csv")
    best_after = os.path.exists(f"{base}/diverged/PhasedLSTM/best.keras")
    return types.SimpleNamespace(diverged=diverged, log_after=log_after, best_after=best_after,
                                 resumed=run(command(*args)), save_dir=f"{base}/diverged")


def worker_runs(base, data_dir):
    procs = start_workers(f"{base}/workers", data_dir, free_ports(2), [0, 1])
    outputs = [p.communicate(timeout=TIMEOUT_S) for p in procs]
    return types.SimpleNamespace(procs=procs, outputs=outputs, save_dir=f"{base}/workers")


WAITING = "TF_CONFIG: worker 0 of 2; waiting for the others to connect."


def alone_run(base, data_dir, grace_s=15):
    """Worker 0 of two, without worker 1: waits for it, then is killed.

    Once the script says that it waits, the worker gets grace_s more to start training on its
    own (it must not), and is then killed.
    """
    os.makedirs(f"{base}/alone")
    out_path = f"{base}/alone/stdout"
    with open(out_path, "w", encoding="utf-8") as stdout:
        (proc,) = start_workers(f"{base}/alone", data_dir, free_ports(2), [0], stdout=stdout,
                                stderr=subprocess.STDOUT)
        deadline = time.time() + TIMEOUT_S
        while proc.poll() is None and time.time() < deadline:
            with open(out_path, encoding="utf-8") as f:
                if WAITING in f.read():
                    break
            time.sleep(0.5)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        still_running = proc.poll() is None
        proc.kill()
        proc.wait(timeout=60)
    with open(out_path, encoding="utf-8") as f:
        out = f.read()
    return types.SimpleNamespace(still_running=still_running, out=out, save_dir=f"{base}/alone")


def jax_runs(base, data_dir):
    results = {}
    if not HAS_JAX:
        return results
    for devices in (2, 1):
        save_dir = f"{base}/jax{devices}"
        results[devices] = types.SimpleNamespace(save_dir=save_dir, proc=run(
            command(f"--save_dir={save_dir}", f"--data_dir={data_dir}", "--keras=3",
                    "--models=PhasedLSTM", "--epochs=1", *SMALL),
            env={"KERAS_BACKEND": "jax",
                 "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}))
    return results


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("keras_runs"))
    data_dir = fake_mnist.write_fake_mnist(os.path.join(base, "data"))
    jobs = {"reference": reference_runs, "killed": killed_runs, "diverged": diverged_runs,
            "workers": worker_runs, "alone": alone_run, "jax": jax_runs,
            "killed_jax": killed_jax_runs}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = {name: pool.submit(job, base, data_dir) for name, job in jobs.items()}
        return types.SimpleNamespace(**{name: f.result() for name, f in futures.items()})


def log_of(save_dir, model="PhasedLSTM", worker=""):
    return keras_run.read_csv_log(os.path.join(save_dir, model, worker, keras_run.CSV_LOG))


def results_of(save_dir, model="PhasedLSTM"):
    with open(os.path.join(save_dir, model, keras_run.RESULTS), encoding="utf-8") as f:
        return json.load(f)


METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


# ---------------------------------------------------------------------------------------------
# An uninterrupted run, and the same command again.

def test_a_run_leaves_its_logs_models_curves_and_results(runs):
    check_ok(runs.reference.first)
    for model in ("PhasedLSTM", "LSTM"):
        folder = os.path.join(runs.reference.save_dir, model)
        log = log_of(runs.reference.save_dir, model)
        np.testing.assert_array_equal(log["epoch"], range(EPOCHS))
        assert np.all(np.isfinite(np.stack([log[m] for m in METRICS])))
        assert (log["epoch_seconds"] > 0).all()
        results = results_of(runs.reference.save_dir, model)
        assert results["epochs"] == EPOCHS
        assert results["best_test_accuracy"] == log["val_accuracy"].max()
        # best.keras, loaded back without custom_objects, scores what its epoch logged.
        assert results["best_model_test_accuracy"] == pytest.approx(
            results["best_test_accuracy"], abs=1e-6)
        for name in (keras_run.FINAL_MODEL, keras_run.BEST_MODEL, keras_run.SETTINGS):
            assert os.path.exists(os.path.join(folder, name)), name
        # BackupAndRestore's backup is gone once results.json is written.
        assert not os.path.exists(os.path.join(folder, keras_run.BACKUP_DIR))
        for split in ("train", "validation"):
            events = os.listdir(os.path.join(folder, keras_run.TENSORBOARD_DIR, split))
            assert any(e.startswith("events.out.tfevents.") for e in events), split
    with open(os.path.join(runs.reference.save_dir, "keras_curves.png"), "rb") as f:
        assert f.read(8) == PNG_MAGIC
    assert "Curves of LSTM, PhasedLSTM" in runs.reference.first.stdout


def test_tensorboard_events_hold_the_epoch_metrics(runs):
    from tensorboard.backend.event_processing import event_accumulator
    folder = os.path.join(runs.reference.save_dir, "PhasedLSTM", keras_run.TENSORBOARD_DIR)
    events = event_accumulator.EventAccumulator(os.path.join(folder, "validation"))
    events.Reload()
    tags = events.Tags()["tensors"] + events.Tags()["scalars"]
    assert "epoch_accuracy" in tags, tags


def test_a_finished_run_run_again_says_so_and_trains_nothing(runs):
    again = runs.reference.again
    check_ok(again)
    assert "PhasedLSTM: already trained" in again.stdout
    assert "LSTM: already trained" in again.stdout
    assert "Epoch 1/" not in again.stdout
    np.testing.assert_array_equal(log_of(runs.reference.save_dir)["epoch"], range(EPOCHS))


# ---------------------------------------------------------------------------------------------
# Killed in the middle of epoch 2, then the same command.

def test_the_kill_came_in_the_middle_of_epoch_2(runs):
    killed = runs.killed
    assert killed.killed.returncode == -9, killed.killed.stderr[-3000:]
    assert "Epoch 2/3" in killed.killed.stdout and "Epoch 3/3" not in killed.killed.stdout
    np.testing.assert_array_equal(killed.log_after_kill["epoch"], [0])


def test_the_same_command_resumes_at_epoch_2(runs):
    resumed = runs.killed.resumed
    check_ok(resumed)
    assert "Epoch 1/3" not in resumed.stdout
    assert "Epoch 2/3" in resumed.stdout and "Epoch 3/3" in resumed.stdout
    np.testing.assert_array_equal(log_of(runs.killed.save_dir)["epoch"], range(EPOCHS))
    assert results_of(runs.killed.save_dir)["epochs"] == EPOCHS


@pytest.mark.skipif(not HAS_JAX, reason="JAX is not installed (the jax extra)")
def test_keras_3_on_jax_resumes_at_epoch_2_too(runs):
    case = runs.killed_jax
    assert case.killed.returncode == -9, case.killed.stderr[-3000:]
    assert "Epoch 2/3" in case.killed.stdout and "Epoch 3/3" not in case.killed.stdout
    np.testing.assert_array_equal(case.log_after_kill["epoch"], [0])
    check_ok(case.resumed)
    assert "Keras 3 on jax" in case.resumed.stdout
    assert "Epoch 1/3" not in case.resumed.stdout and "Epoch 2/3" in case.resumed.stdout
    np.testing.assert_array_equal(log_of(case.save_dir)["epoch"], range(EPOCHS))
    assert results_of(case.save_dir)["epochs"] == EPOCHS


def test_the_resumed_run_ends_like_the_uninterrupted_one(runs):
    resumed, reference = log_of(runs.killed.save_dir), log_of(runs.reference.save_dir)
    # Epoch 1 ran before the kill, from the same seed: the same numbers.
    for metric in METRICS:
        assert resumed[metric][0] == pytest.approx(reference[metric][0], rel=1e-6), metric
    # Epochs 2 and 3 restart the shuffle where a new process starts it: other batches, so
    # close numbers, not equal ones (random pixels: loss near ln 10).
    for metric in ("loss", "val_loss"):
        np.testing.assert_allclose(resumed[metric], reference[metric], atol=0.02)
    assert np.isfinite(resumed["val_accuracy"]).all()


# ---------------------------------------------------------------------------------------------
# Diverged in the middle of epoch 2.

def test_a_diverged_run_stops_with_a_clear_message_and_exit_status_3(runs):
    proc = runs.diverged.diverged
    assert proc.returncode == loop.EXIT_DIVERGED, proc.stderr[-3000:]
    assert "error: PhasedLSTM: training diverged: the training loss is nan at batch 3 of " \
           "epoch 2" in proc.stderr
    assert "--learning_rate=0.001" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_diverged_run_keeps_the_last_good_epoch(runs):
    # Nothing of the diverged epoch was logged, the best model of epoch 1 is kept, and the
    # backup holds finite weights: the same command resumes at epoch 2 and ends finite.
    np.testing.assert_array_equal(runs.diverged.log_after["epoch"], [0])
    assert runs.diverged.best_after
    resumed = runs.diverged.resumed
    check_ok(resumed)
    assert "Epoch 1/3" not in resumed.stdout and "Epoch 2/3" in resumed.stdout
    log = log_of(runs.diverged.save_dir)
    np.testing.assert_array_equal(log["epoch"], range(EPOCHS))
    assert np.all(np.isfinite(np.stack([log[m] for m in METRICS])))


# ---------------------------------------------------------------------------------------------
# Replicas.

def test_two_workers_from_tf_config_train_together(runs):
    for proc, (out, err) in zip(runs.workers.procs, runs.workers.outputs):
        assert proc.returncode == 0, err[-3000:]
        assert "MultiWorkerMirroredStrategy, 2 workers" in out
        assert "Traceback" not in err
    # The chief writes the run's files; worker 1 its own, beside them.
    assert results_of(runs.workers.save_dir)["replicas"].startswith(
        "MultiWorkerMirroredStrategy, 2 workers (this one: 0), 2 replicas")
    assert os.path.exists(os.path.join(runs.workers.save_dir, "PhasedLSTM", "worker1",
                                       keras_run.CSV_LOG))


def test_two_workers_train_as_one_process_with_the_same_global_batch(runs):
    workers, single = log_of(runs.workers.save_dir), log_of(runs.reference.save_dir)
    other = log_of(runs.workers.save_dir, worker="worker1")
    for metric in METRICS:
        assert workers[metric][0] == pytest.approx(single[metric][0], rel=REPLICA_RTOL), metric
        assert other[metric][0] == pytest.approx(workers[metric][0], rel=REPLICA_RTOL), metric


def test_one_worker_alone_waits_for_its_peer(runs):
    alone = runs.alone
    assert WAITING in alone.out, alone.out[-3000:]
    assert alone.still_running, alone.out[-3000:]
    assert "MNIST:" not in alone.out and "Epoch 1/" not in alone.out
    assert not os.path.exists(os.path.join(alone.save_dir, "PhasedLSTM"))


@pytest.mark.skipif(not HAS_JAX, reason="JAX is not installed (the jax extra)")
def test_jax_data_parallel_on_two_devices_trains_as_one(runs):
    for devices, case in runs.jax.items():
        check_ok(case.proc)
    assert "keras.distribution.DataParallel over 2 devices" in runs.jax[2].proc.stdout
    assert "Keras 3 on jax, one device" in runs.jax[1].proc.stdout
    two, one = log_of(runs.jax[2].save_dir), log_of(runs.jax[1].save_dir)
    for metric in METRICS:
        assert two[metric][0] == pytest.approx(one[metric][0], rel=REPLICA_RTOL), metric


# ---------------------------------------------------------------------------------------------
# What --keras 3 loads.

# Printed when the script's process exits: which of the TF 1.x side's modules it loaded.
LOADED = """
import atexit
_TF1_SIDE = ("tf_keras", "phased_lstm.legacy_tf", "experiments.loop", "tensorflow")
atexit.register(lambda: print("loaded:", [m for m in _TF1_SIDE if m in sys.modules], flush=True))
"""


@pytest.mark.parametrize("backend", [
    "tensorflow", pytest.param("jax", marks=pytest.mark.skipif(not HAS_JAX,
                                                               reason="jax is not installed"))])
def test_keras_3_loads_neither_tf_keras_nor_the_tf1_parts(tmp_path, backend):
    data_dir = fake_mnist.write_fake_mnist(os.path.join(tmp_path, "data"), 64, 32)
    cmd = command(f"--save_dir={tmp_path}/run", f"--data_dir={data_dir}", "--keras=3",
                  "--models=PhasedLSTM", "--epochs=1", "--train_samples=64",
                  "--test_samples=32", "--batch_size=32", "--num_units=2")
    cmd[2] = fake_mnist.PREAMBLE + LOADED + cmd[2][len(fake_mnist.PREAMBLE):]
    # A user's fresh process: not this one's TF_USE_LEGACY_KERAS (set by the TF 1.x tests'
    # imports), with which TensorFlow itself would load tf-keras.
    proc = run(cmd, env={"KERAS_BACKEND": backend, "TF_USE_LEGACY_KERAS": None})
    check_ok(proc)
    assert "Keras 3 on " + backend in proc.stdout  # it trained, on that backend
    loaded = proc.stdout.strip().splitlines()[-1]
    # TensorFlow is Keras 3's own business: its backend, and its TensorBoard callback on JAX.
    assert loaded == "loaded: ['tensorflow']", loaded


# ---------------------------------------------------------------------------------------------
# Refusals before any work.

def test_bad_settings_are_refused_before_any_work(tmp_path):
    data_dir = fake_mnist.write_fake_mnist(os.path.join(tmp_path, "data"))
    blocked = os.path.join(tmp_path, "blocked")
    with open(blocked, "w", encoding="utf-8") as f:
        f.write("a file where the run folder goes")
    cases = [
        (["--save_dir=" + os.path.join(blocked, "run")], {}, "cannot write to the run folder"),
        (["--save_dir=" + str(tmp_path / "run")], {"TF_CONFIG": "{oops"},
         "TF_CONFIG is not a cluster description"),
        (["--learning_rate=nan"], {}, "--learning_rate must be a finite number"),
    ]
    for args, env, message in cases:
        proc = run(command(f"--data_dir={data_dir}", *SMALL, *args), env=env)
        assert proc.returncode != 0 and message in proc.stderr, (args, proc.stderr[-2000:])
        assert "Epoch 1/" not in proc.stdout and "Traceback" not in proc.stderr
