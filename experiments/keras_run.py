"""A Keras training run that survives a kill, can be watched, and spreads over replicas.

What keras_mnist_phased_lstm.py needs around `model.fit`, built from Keras's and TensorFlow's
own tools. A run of model M under `save_dir` keeps everything in `<save_dir>/<M>/`:

    settings.json     the command's settings; a resumed run must share those that shape it
    backup/           keras.callbacks.BackupAndRestore: the last finished epoch (weights,
                      optimiser, epoch); kept until results.json is written
    log.csv           keras.callbacks.CSVLogger: one row per epoch (train and test metrics)
    tensorboard/      keras.callbacks.TensorBoard: train/ and validation/ event files
    best.keras        keras.callbacks.ModelCheckpoint: the model of the best test accuracy
    model.keras       the model after its last epoch
    results.json      the summary of a finished run; a run with one trains nothing again

A second worker of a multi-worker run writes its own files in `<save_dir>/<M>/worker<k>/`
(only the chief's count); tf-keras's BackupAndRestore shares the chief's backup/ by itself.

The TF 1.x scripts' rules hold (experiments/loop.py): bad folders and settings are refused
before any work, nothing is deleted without --fresh, a run that diverges stops with exit status
loop.EXIT_DIVERGED and keeps the last good backup and best model.
"""

import contextlib
import dataclasses
import glob
import inspect
import json
import math
import os
import shutil
import time

import numpy as np

from experiments import training

__all__ = [
    "BACKUP_DIR", "BEST_MODEL", "CSV_LOG", "FINAL_MODEL", "RESULTS", "SETTINGS", "TENSORBOARD_DIR",
    "Diverged", "ModelRun", "Replicas", "check_batch_split", "make_callbacks", "parse_tf_config",
    "plot_curves", "prepare", "read_csv_log", "read_json", "replicas", "summarize", "finish",
]

SETTINGS = "settings.json"
BACKUP_DIR = "backup"
CSV_LOG = "log.csv"
TENSORBOARD_DIR = "tensorboard"
BEST_MODEL = "best.keras"
FINAL_MODEL = "model.keras"
RESULTS = "results.json"
_RUN_FILES = (SETTINGS, BACKUP_DIR, CSV_LOG, TENSORBOARD_DIR, BEST_MODEL, FINAL_MODEL, RESULTS)


class Diverged(Exception):
    """Training met a NaN or infinite loss or metric; the message says where and what to try."""


# ---------------------------------------------------------------------------------------------
# Replicas: tf.distribute on TensorFlow, keras.distribution on JAX.

@dataclasses.dataclass(frozen=True)
class Replicas:
    """How a run is spread, and this process's part in it.

    Attributes:
      strategy: the tf.distribute strategy (TensorFlow backend), else None.
      count: replicas that share each global batch.
      workers: processes taking part (TF_CONFIG's workers and chief; 1 without it).
      worker_index: this process's place among them (0: the chief, which writes the run's files).
      description: for the start-up line, e.g. "MultiWorkerMirroredStrategy, 2 workers".
    """
    strategy: object
    count: int
    workers: int
    worker_index: int
    description: str

    @property
    def is_chief(self):
        return self.worker_index == 0

    def scope(self):
        """The context to build and compile the model in."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()


def parse_tf_config(text):
    """Reads TF_CONFIG (tf.distribute's cluster description).

    Args:
      text: the variable's value; "" or None for none.

    Returns:
      None without a cluster, else (workers, worker_index): the processes of the cluster (chief
      and workers) and this one's place, the chief (or worker 0 without one) first.

    Raises:
      training.RunError: not JSON, or no cluster / task that tf.distribute could use.
    """
    if not text:
        return None
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        chiefs, workers = list(cluster.get("chief", [])), list(cluster.get("worker", []))
        kind, index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise training.RunError(
            f"TF_CONFIG is not a cluster description ({error.__class__.__name__}: {error}). It "
            'must be JSON such as {"cluster": {"worker": ["host1:port", "host2:port"]}, "task": '
            '{"type": "worker", "index": 0}}; unset it to train on this machine alone.') from None
    members = {"chief": chiefs, "worker": workers}
    if kind not in members or not 0 <= index < len(members[kind]):
        raise training.RunError(
            f"TF_CONFIG's task {task} is not in its cluster ({len(chiefs)} chief, "
            f"{len(workers)} worker address(es)): set task.type to 'chief' or 'worker' and "
            "task.index to this process's place in that list.")
    place = index if kind == "chief" else len(chiefs) + index
    return len(chiefs) + len(workers), place


def replicas(backend, environ, keras_3=False):
    """Chooses how to spread training, from the environment and the local devices.

    TensorFlow backend: TF_CONFIG -> MultiWorkerMirroredStrategy (which waits for every worker of
    the cluster before training); else MirroredStrategy when there are several local GPUs; else
    none. JAX: keras.distribution.DataParallel over the local devices when there are several
    (it is set here, globally, as Keras requires). PyTorch: none.

    Create it before any other TensorFlow work: MultiWorkerMirroredStrategy must come first.

    Args:
      backend: "tensorflow", "jax" or "torch".
      environ: the environment (os.environ).
      keras_3: whether Keras 3 trains (else tf-keras).

    Returns:
      A Replicas.

    Raises:
      training.RunError: TF_CONFIG is bad, set for another backend than TensorFlow, or set for
        Keras 3.
    """
    cluster = parse_tf_config(environ.get("TF_CONFIG", ""))
    if cluster is not None and backend != "tensorflow":
        raise training.RunError(
            f"TF_CONFIG is set, but the Keras backend is {backend}: multi-worker training runs "
            "on TensorFlow (KERAS_BACKEND=tensorflow). Unset TF_CONFIG to train on this "
            "machine's devices.")
    if cluster is not None and keras_3:
        # Keras 3.15's fit fails under MultiWorkerMirroredStrategy ("Attempt to convert a
        # value (PerReplica...)", keras-team/keras#20585), for keras.layers.LSTM too.
        raise training.RunError(
            "TF_CONFIG is set, but Keras 3 cannot train under MultiWorkerMirroredStrategy (its "
            "fit fails on the distributed batches: keras-team/keras#20585). Train the workers "
            "with tf-keras (--keras tf_keras), or unset TF_CONFIG.")
    if backend == "tensorflow":
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        if cluster is not None:
            workers, index = cluster
            # Said first: the strategy waits here, without a word, until every worker is up.
            print(f"TF_CONFIG: worker {index} of {workers}; waiting for the others to "
                  "connect.", flush=True)
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
            return Replicas(strategy, strategy.num_replicas_in_sync, workers, index,
                            f"MultiWorkerMirroredStrategy, {workers} workers (this one: "
                            f"{index}), {strategy.num_replicas_in_sync} replicas")
        gpus = tf.config.list_logical_devices("GPU")
        if len(gpus) > 1:
            strategy = tf.distribute.MirroredStrategy()
            return Replicas(strategy, strategy.num_replicas_in_sync, 1, 0,
                            f"MirroredStrategy over {strategy.num_replicas_in_sync} GPUs")
        return Replicas(None, 1, 1, 0, "one device")
    if backend == "jax":
        import keras  # pylint: disable=import-outside-toplevel
        devices = keras.distribution.list_devices()
        if len(devices) > 1:
            keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
            return Replicas(None, len(devices), 1, 0,
                            f"keras.distribution.DataParallel over {len(devices)} devices")
    return Replicas(None, 1, 1, 0, "one device")


def check_batch_split(count, batch_size, sizes):
    """Checks that every batch splits evenly across the replicas (JAX's DataParallel needs it).

    Args:
      count: the replicas.
      batch_size: the global batch.
      sizes: {what: number of samples} of the data sets, e.g. {"training": 60000}.

    Raises:
      training.RunError: a batch (a full one, or the last of a data set) does not split.
    """
    if count == 1:
        return
    for what, size in sizes.items():
        last = size % batch_size
        for batch in (min(batch_size, size), last):
            if batch % count:
                raise training.RunError(
                    f"the {what} data's batches of {batch} images do not split across "
                    f"{count} replicas: choose --batch_size and the sample counts so that every "
                    f"batch, the last one included ({size} % {batch_size} = {last}), is a "
                    f"multiple of {count}.")


# ---------------------------------------------------------------------------------------------
# The run's folder.

@dataclasses.dataclass(frozen=True)
class ModelRun:
    """One model's run folder and the files in it.

    Attributes:
      model_dir: `<save_dir>/<model>`, where the chief writes.
      write_dir: where this process writes its own files: model_dir for the chief,
        `<model_dir>/worker<k>` for another worker.
      backup_dir: BackupAndRestore's folder.
    """
    model_dir: str
    write_dir: str
    backup_dir: str

    @classmethod
    def create(cls, model_dir, worker_index=0, shared_backup=True):
        """The ModelRun of a model folder, for this worker.

        Args:
          model_dir: `<save_dir>/<model>`.
          worker_index: this process's place among the workers.
          shared_backup: whether the BackupAndRestore of this Keras shares the chief's folder
            between workers (tf-keras's does); otherwise each worker keeps its own.
        """
        write_dir = model_dir if worker_index == 0 else os.path.join(model_dir,
                                                                     f"worker{worker_index}")
        backup_dir = os.path.join(model_dir if shared_backup else write_dir, BACKUP_DIR)
        return cls(model_dir, write_dir, backup_dir)

    def path(self, name):
        """A file of this worker's, e.g. path(CSV_LOG)."""
        return os.path.join(self.write_dir, name)


def _describe(write_dir):
    present = [name for name in _RUN_FILES if os.path.exists(os.path.join(write_dir, name))]
    return f"{write_dir}: " + ", ".join(present) if present else f"nothing in {write_dir}"


def prepare(run, settings, must_match, epochs, fresh=False, flag="--save_dir"):
    """Checks a model's folder before any work and says what to do with it.

    Args:
      run: the ModelRun.
      settings: this command's settings (JSON-able dict).
      must_match: the settings that shape the model, data or optimisation: a run resumes only
        with the same values.
      epochs: the epochs this command trains to.
      fresh: first delete what a run wrote in the folder (and nothing else).
      flag: the setting that chose the folder, for messages.

    Returns:
      "train" (from scratch, or BackupAndRestore resumes from backup/) or "finished" (its
      results.json says it trained for at least `epochs` epochs: nothing to do).

    Raises:
      training.RunError: a folder cannot be written; the run was started with other settings;
        it holds a log but no backup to resume from; or it finished fewer epochs than asked
        (each message says what to do).
    """
    if fresh:
        others = [os.path.basename(p) for p in glob.glob(os.path.join(glob.escape(run.write_dir),
                                                                    "worker[0-9]*"))]
        for name in _RUN_FILES + tuple(others):
            path = os.path.join(run.write_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    training.check_writable_dir(run.write_dir, "run folder", flag)
    training.remove_temporary_files(run.write_dir)
    settings_path = run.path(SETTINGS)
    if os.path.exists(settings_path):
        with open(settings_path, encoding="utf-8") as f:
            saved = json.load(f)
        training.check_resume_settings(saved, settings, must_match, run.write_dir)
    results = read_json(run.path(RESULTS))
    if results is not None and not os.path.exists(run.backup_dir):
        done = results.get("epochs", 0)
        if done >= epochs:
            return "finished"
        raise training.RunError(
            f"{run.write_dir} finished {done} epoch(s) already; this command asks for {epochs}. "
            f"Training it further is not supported: pass --fresh to train it again from scratch "
            f"(it deletes {_describe(run.write_dir)}), or use another {flag}.")
    if os.path.exists(run.path(CSV_LOG)) and not os.path.exists(run.backup_dir):
        if read_csv_log(run.path(CSV_LOG))["epoch"].size:
            raise training.RunError(
                f"cannot resume {run.write_dir}: its {CSV_LOG} has rows but there is no "
                f"{BACKUP_DIR}/ to resume from. Nothing was changed. Pass --fresh to train it "
                f"from scratch (it deletes {_describe(run.write_dir)}), or use another {flag}.")
    training.write_json(settings_path, settings)
    return "train"


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# Callbacks.

def _stop_on_non_finite(keras):
    """A callback class for this Keras: TerminateOnNaN that raises Diverged at once.

    Keras's TerminateOnNaN (and tf-keras's) stops at the end of the batch, but the epoch's end
    still runs, and BackupAndRestore would then save the NaN weights that the same command
    resumes from. Raising skips every later callback of the batch and the epoch; placed first, it
    also checks the epoch's test metrics before they are logged or saved.
    """

    class StopOnNonFinite(keras.callbacks.Callback):
        """Raises Diverged on a NaN or infinite training loss, or test loss or accuracy."""

        def __init__(self, advice):
            super().__init__()
            self.advice = advice
            self.epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                raise Diverged(f"the training loss is {float(loss)} at batch {batch + 1} of "
                               f"epoch {self.epoch + 1}. " + self.advice)

        def on_epoch_end(self, epoch, logs=None):
            for name, value in (logs or {}).items():
                if np.ndim(value) == 0 and not math.isfinite(float(value)):
                    raise Diverged(f"{name} is {float(value)} after epoch {epoch + 1}. "
                                   + self.advice)

    return StopOnNonFinite


def _epoch_seconds(keras):
    """A callback class for this Keras that adds each epoch's duration to its logs, so that
    CSVLogger and TensorBoard record it as `epoch_seconds`."""

    class EpochSeconds(keras.callbacks.Callback):
        """Times each epoch (training and the test-set evaluation)."""

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["epoch_seconds"] = time.perf_counter() - self.start

    return EpochSeconds


def divergence_advice(run, learning_rate):
    """What a diverged run keeps and what to try, for the Diverged message."""
    return (f"Nothing of that epoch was logged or saved: {run.backup_dir} keeps the last "
            f"finished epoch and {run.path(BEST_MODEL)} the best model so far (if any). Likely "
            f"causes: a learning rate too high (--learning_rate={learning_rate:g}) or the time "
            "gate's settings (--leak, --period_init_min, --period_init_max, --ratio_on). Try a "
            "lower --learning_rate in another --save_dir, or with --fresh, which deletes this "
            "run; the same command resumes from the backup and is likely to diverge again.")


def make_callbacks(keras, run, advice, monitor="val_accuracy"):
    """The run's callbacks, in the order they must run at each epoch's end.

    The divergence check first (nothing non-finite gets logged or saved), the epoch's duration
    (added to the logs), the CSV log, TensorBoard and the best model next, BackupAndRestore
    last: a kill between the log's row and the backup makes the resumed run train that epoch
    again and log it twice, and read_csv_log keeps the later row; the other order would lose
    the row.

    Args:
      keras: the Keras module (tf.keras or keras).
      run: the ModelRun.
      advice: the end of a divergence message (divergence_advice).
      monitor: the metric that chooses the best model (higher is better).

    Returns:
      The list of callbacks.
    """
    backup_args = {"delete_checkpoint": False}  # finish() deletes it after results.json.
    if "double_checkpoint" in inspect.signature(keras.callbacks.BackupAndRestore).parameters:
        backup_args["double_checkpoint"] = True  # Keras 3: a kill mid-save keeps the previous.
    return [
        _stop_on_non_finite(keras)(advice),
        _epoch_seconds(keras)(),
        keras.callbacks.CSVLogger(run.path(CSV_LOG), append=True),
        keras.callbacks.TensorBoard(run.path(TENSORBOARD_DIR), write_graph=False),
        keras.callbacks.ModelCheckpoint(run.path(BEST_MODEL), monitor=monitor, mode="max",
                                        save_best_only=True),
        keras.callbacks.BackupAndRestore(run.backup_dir, **backup_args),
    ]


def finish(run, results):
    """Writes results.json, then deletes the backup that it replaces (in that order: a kill in
    between leaves a finished run, never one with neither)."""
    training.write_json(run.path(RESULTS), results)
    if os.path.exists(run.backup_dir) and run.backup_dir.startswith(run.write_dir):
        shutil.rmtree(run.backup_dir)


# ---------------------------------------------------------------------------------------------
# The log, results and plot.

def read_csv_log(path):
    """Reads CSVLogger's log: {column: float64 array}, one row per epoch, in order.

    An epoch logged twice (trained again after a kill before its backup) keeps its later row.

    Args:
      path: the log.

    Returns:
      A dict with "epoch" (0-based, as Keras logs it) and each metric column.

    Raises:
      training.RunError: the file has no "epoch" column or a row that is not numbers.
    """
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    if not lines:
        return {"epoch": np.zeros(0)}
    header = lines[0].split(",")
    if "epoch" not in header:
        raise training.RunError(f"{path} has no 'epoch' column: it is not a Keras CSV log. Move "
                                "it away, or pass --fresh.")
    rows = {}
    for number, line in enumerate(lines[1:], start=2):
        try:
            values = [float(cell) for cell in line.split(",")]
            if len(values) != len(header):
                raise ValueError(f"{len(values)} cells, expected {len(header)}")
        except ValueError as error:
            raise training.RunError(f"{path}, line {number} is damaged ({error}). Fix or "
                                    "delete it, or pass --fresh.") from None
        rows[int(values[header.index("epoch")])] = values
    table = np.array([rows[e] for e in sorted(rows)], dtype=np.float64).reshape(-1, len(header))
    return {name: table[:, i] for i, name in enumerate(header)}


def summarize(log):
    """The headline numbers of a run from its log (read_csv_log)."""
    def last(name):
        return float(log[name][-1]) if name in log and log[name].size else None

    best = (int(np.argmax(log["val_accuracy"])) if "val_accuracy" in log
            and log["val_accuracy"].size else None)
    return {
        "epochs": int(log["epoch"][-1]) + 1 if log["epoch"].size else 0,
        "final_train_accuracy": last("accuracy"),
        "final_train_loss": last("loss"),
        "final_test_accuracy": last("val_accuracy"),
        "final_test_loss": last("val_loss"),
        "best_test_accuracy": None if best is None else float(log["val_accuracy"][best]),
        "best_test_accuracy_epoch": None if best is None else best + 1,
    }


def plot_curves(logs, path, title):
    """Draws the models' curves per epoch on one figure (accuracy left, loss right).

    Args:
      logs: {model name: read_csv_log(...)}; models without rows are left out.
      path: the PNG to write (atomically).
      title: the figure's title.

    Returns:
      The names of the models drawn.
    """
    logs = {name: log for name, log in logs.items() if log["epoch"].size}
    if not logs:
        return []
    # Imported here: only plotting needs matplotlib. Figure + Agg canvas, not pyplot.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(12, 5), layout="constrained")
    FigureCanvasAgg(figure)
    accuracy_axes, loss_axes = figure.subplots(1, 2)
    for i, (name, log) in enumerate(logs.items()):
        color, epochs = f"C{i % 10}", log["epoch"] + 1
        for axes, metric in ((accuracy_axes, "accuracy"), (loss_axes, "loss")):
            axes.plot(epochs, log[metric], color=color, marker="o", ms=3, label=f"{name} train")
            if f"val_{metric}" in log:
                axes.plot(epochs, log[f"val_{metric}"], color=color, ls="--", marker="s", ms=3,
                          label=f"{name} test")
    accuracy_axes.axhline(0.1, color="0.5", lw=1, ls=":", label="chance (10%)")
    accuracy_axes.set(title="Accuracy", xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02))
    loss_axes.set(title="Loss", xlabel="epoch", ylabel="cross-entropy loss")
    for axes in (accuracy_axes, loss_axes):
        axes.grid(alpha=0.3)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    accuracy_axes.legend(fontsize="small")
    figure.suptitle(title)
    training.write_atomically(path, lambda f: figure.savefig(f, format="png", dpi=110), mode="wb")
    return list(logs)
