"""What every training script of the project shares: log, folders, display, results, plot.

A run of model M under `log_dir` keeps everything in `<log_dir>/<M>/`:

    log.tsv                  one row per training step (LogWriter); test columns on eval rows only
    events.out.tfevents.*    the same scalars for TensorBoard (ScalarWriter)
    checkpoints/             ckpt-<step>.index/.data-*/.json (experiments.checkpoints)
    results.json             the summary of a finished run (summarize, write_json)

and `plot_curves` draws every model found in `log_dir` on one figure. experiments.loop runs the
training itself.

Resuming runs the same command again: the newest usable checkpoint is restored, the log drops
its rows past the checkpoint's step (and a partial last line, if a kill cut one), and TensorBoard
is told to forget its events past it too. A resumed run thus leaves the same files as one that
never stopped.
"""

import glob
import json
import math
import os
import shutil
import signal
import tempfile
import time

from absl import flags, logging
import numpy as np

# No TensorFlow at import: the Keras 3 script (keras_mnist_phased_lstm.py --keras 3) uses this
# module without the TF 1.x parts; ScalarWriter imports them when a TF 1.x script writes events.

__all__ = [
    "CHECKPOINT_DIR", "EXIT_DIVERGED", "LOG_COLUMNS", "LOG_NAME", "RESULTS_NAME", "LogWriter", "Progress",
    "RunError", "ScalarWriter", "StopSignals", "check_log", "check_resume_settings",
    "check_writable_dir", "check_writable_run", "clear_run", "describe_run_files", "find_logs",
    "format_duration", "plot_curves", "read_log", "remove_temporary_files",
    "require_finite_flags", "run_files", "smooth", "summarize", "truncate_log",
    "write_atomically", "write_json",
]

LOG_NAME = "log.tsv"
RESULTS_NAME = "results.json"
CHECKPOINT_DIR = "checkpoints"
LOG_COLUMNS = ("step", "train_loss", "train_accuracy", "seconds_per_step", "test_loss",
               "test_accuracy")

_EVENTS_GLOB = "events.out.tfevents.*"
# The exit status of a diverged run: neither success nor a crash (1) nor a signal (128 + n).
EXIT_DIVERGED = 3


class RunError(Exception):
    """A problem with the run's folder or settings that the user must fix; the message says how."""


def write_atomically(path, write, mode="w"):
    """Writes a file through a temporary file in the same folder, then renames it over path.

    A reader, or a run killed midway, never sees a half-written file.

    Args:
      path: the file to write.
      write: called with the open temporary file.
      mode: "w" for text, "wb" for bytes.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=folder)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600.
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path, obj):
    """Writes obj as indented JSON, atomically."""
    write_atomically(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=False) + "\n"))


def check_writable_dir(path, what="log folder", flag="--log_dir"):
    """Creates a folder if needed and checks that files can be created in it.

    Args:
      path: the folder.
      what: what the folder is, for the message.
      flag: the setting that chooses it, for the message.

    Returns:
      The folder as an absolute path.

    Raises:
      RunError: the folder cannot be created or written to; the message names it.
    """
    path = os.path.abspath(os.path.expanduser(path))
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise RunError(
            f"cannot write to the {what} {path} ({error.strerror or error}). Make it writable, "
            f"or pass another {flag}.") from None
    return path


def check_writable_run(run_dir, flag="--log_dir"):
    """Checks, before any training, every folder and file a run will write to.

    That is the run's folder, its checkpoint folder, and the log (appended to, so the file
    itself must be writable).

    Args:
      run_dir: the run's folder; created if needed.
      flag: the setting that chose it, for the messages.

    Raises:
      RunError: one of them cannot be written; the message names it.
    """
    check_writable_dir(run_dir, "run folder", flag)
    check_writable_dir(os.path.join(run_dir, CHECKPOINT_DIR), "checkpoint folder", flag)
    log_path = os.path.join(run_dir, LOG_NAME)
    if os.path.exists(log_path) and not os.access(log_path, os.W_OK):
        raise RunError(f"cannot write to the log {log_path} (read-only). Make it writable, or "
                       f"pass another {flag}.")


def run_files(run_dir):
    """What a run wrote in run_dir (log, results, checkpoints, TensorBoard events): what --fresh
    deletes. Anything else in the folder is not a run's.

    Args:
      run_dir: the run's folder, `<log_dir>/<model>`. It need not exist.

    Returns:
      The paths, those that exist.
    """
    paths = [os.path.join(run_dir, name) for name in (LOG_NAME, RESULTS_NAME)]
    paths += sorted(glob.glob(os.path.join(glob.escape(run_dir), _EVENTS_GLOB)))
    paths.append(os.path.join(run_dir, CHECKPOINT_DIR))
    return [p for p in paths if os.path.exists(p)]


def describe_run_files(run_dir):
    """A short account of run_files(run_dir) for messages, e.g. "log.tsv (8 rows), ..."."""
    parts = []
    for path in run_files(run_dir):
        name = os.path.basename(path)
        if name == LOG_NAME:
            try:
                with open(path, "rb") as f:
                    rows = max(f.read().count(b"\n") - 1, 0)
                name += f" ({rows} rows)"
            except OSError:
                pass
        elif os.path.isdir(path):
            name += "/ (all of it)"
        parts.append(name)
    return f"{run_dir}: " + ", ".join(parts) if parts else f"nothing in {run_dir}"


def clear_run(run_dir):
    """Deletes what a run wrote in run_dir (run_files); anything else is left alone.

    Args:
      run_dir: the run's folder, `<log_dir>/<model>`. It need not exist.

    Returns:
      The paths removed.
    """
    removed = run_files(run_dir)
    for path in removed:
        if os.path.isdir(path):
            # A whole tree: damaged checkpoints set aside, a save cut short (ckpt-<step>_temp).
            shutil.rmtree(path)
        else:
            os.remove(path)
    return removed


# ---------------------------------------------------------------------------------------------
# The TSV log.

def _format_cell(value):
    if value is None:
        return ""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return format(float(value), ".7g")  # float32's precision.


def _header(columns):
    return "\t".join(columns)


_DAMAGED_LOG_ADVICE = ("Fix or delete the line; or move the log away, and the run resumes "
                       "with a log that starts after its checkpoint; or pass --fresh to delete "
                       "the whole run and start afresh.")


def _read_lines(path):
    """The log's complete lines and its partial last line ("" if none).

    Raises:
      RunError: the file is not UTF-8 text.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except UnicodeDecodeError as error:
        raise RunError(f"{path} is damaged: byte {error.start} is not text. "
                       + _DAMAGED_LOG_ADVICE) from None
    partial = lines.pop()  # "" when the file ends with a newline.
    return lines, partial


def _parse_row(path, number, line, width):
    """A complete row's cells as floats (NaN for empty ones), its step first.

    Raises:
      RunError: the row has not `width` cells, or a cell is not a number, or the step is not a
        positive integer.
    """
    cells = line.split("\t")
    try:
        if len(cells) != width:
            raise ValueError(f"{len(cells)} cells, expected {width}")
        values = [float(cell) if cell else math.nan for cell in cells]
        if not (values[0] >= 1 and values[0] == int(values[0])):
            raise ValueError(f"no step in {line[:60]!r}")
    except ValueError as error:
        raise RunError(f"{path}, line {number} is damaged ({error}). "
                       + _DAMAGED_LOG_ADVICE) from None
    return values


def check_log(path):
    """Checks that a log reads (text, a header, complete rows of numbers), changing nothing.

    A missing log passes. The header's columns are checked later, by truncate_log.

    Args:
      path: the log file.

    Raises:
      RunError: the file or a complete row is damaged; the message says where and what to do.
    """
    if not os.path.exists(path):
        return
    lines, _ = _read_lines(path)
    width = len(lines[0].split("\t")) if lines else 0
    if width < 2:
        raise RunError(f"{path} has no header: it is damaged, or not a log of this project. "
                       + _DAMAGED_LOG_ADVICE)
    for number, line in enumerate(lines[1:], start=2):
        _parse_row(path, number, line, width)


def remove_temporary_files(folder):
    """Removes what write_atomically leaves when killed (`.<name>.<random>.tmp`).

    Args:
      folder: the folder; it need not exist.

    Returns:
      The paths removed.
    """
    paths = glob.glob(os.path.join(glob.escape(folder), ".*.tmp"))
    for path in paths:
        os.remove(path)
    return paths


def truncate_log(path, last_step, columns=LOG_COLUMNS):
    """Makes a log hold only rows with step <= last_step, e.g. those of a restored checkpoint.

    Rows are written one line at a time, so a run killed midway leaves at most one partial last
    line (no trailing newline); it is dropped too. A missing file is created with the header.
    Every row is checked, so that a damaged log is found before training, not after it.

    Args:
      path: the log file.
      last_step: the last step to keep; 0 keeps none.
      columns: the expected header.

    Returns:
      The number of rows kept.

    Raises:
      RunError: the file is not text, does not start with the header, or has a damaged row.
    """
    header = _header(columns)
    if not os.path.exists(path):
        write_atomically(path, lambda f: f.write(header + "\n"))
        return 0
    lines, partial = _read_lines(path)
    if not lines or lines[0] != header:
        raise RunError(
            f"{path} does not start with the header {header!r}, so it is not a log of this "
            "script, or it is damaged. Move it away, and the run resumes with a log that "
            "starts after its checkpoint; or pass --fresh to delete the whole run.")
    kept = []
    for number, line in enumerate(lines[1:], start=2):
        step = int(_parse_row(path, number, line, len(columns))[0])
        if step <= last_step:
            kept.append((step, line))
    dropped = len(lines) - 1 - len(kept)
    if dropped or partial:
        logging.info("%s: dropped %d row(s) past step %d%s.", path, dropped, last_step,
                     " and a partial last line" if partial else "")
        body = "".join(line + "\n" for _, line in kept)
        write_atomically(path, lambda f: f.write(header + "\n" + body))
    steps = [step for step, _ in kept]
    if steps != list(range(1, last_step + 1)):
        logging.warning("%s has %d row(s) up to step %d, not one per step; the plot and results "
                        "use what is there.", path, len(steps), last_step)
    return len(kept)


class LogWriter:
    """Appends one TSV row per training step; resumes by dropping rows past the restored step.

    Each row is written with one write() call and flushed, so a kill leaves at most a partial last
    line, which the next `truncate_log` drops.

    Args:
      path: the log file; created with its header if missing.
      last_step: the step training resumes after (0 for a fresh run). Rows past it are dropped.
      columns: the column names, "step" first.

    Raises:
      RunError: from truncate_log.
    """

    def __init__(self, path, last_step, columns=LOG_COLUMNS):
        self.path = path
        self.columns = tuple(columns)
        truncate_log(path, last_step, self.columns)
        self._file = open(path, "a", encoding="utf-8")

    def write(self, row):
        """Appends a row.

        Args:
          row: a dict from column name to value; missing columns are left empty.

        Raises:
          ValueError: for a name that is not a column.
        """
        unknown = set(row) - set(self.columns)
        if unknown:
            raise ValueError(f"not columns of {self.path}: {sorted(unknown)}")
        self._file.write("\t".join(_format_cell(row.get(c)) for c in self.columns) + "\n")
        self._file.flush()

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def read_log(path, columns=LOG_COLUMNS):
    """Reads a log written by LogWriter.

    Args:
      path: the log file.
      columns: the columns to return; each must be in the file's header.

    Returns:
      A dict from column name to a float64 array [rows]; empty cells are NaN. A partial last line
      is ignored.

    Raises:
      RunError: the header lacks a column, or the file or a complete row is damaged.
    """
    lines, _ = _read_lines(path)
    header = lines[0].split("\t") if lines else []
    missing = [c for c in columns if c not in header]
    if missing:
        raise RunError(f"{path}: the header lacks the column(s) {missing}.")
    index = [header.index(c) for c in columns]
    values = []
    for number, line in enumerate(lines[1:], start=2):
        cells = _parse_row(path, number, line, len(header))
        values.append([cells[i] for i in index])
    table = np.array(values, dtype=np.float64).reshape(-1, len(columns))
    return {c: table[:, i] for i, c in enumerate(columns)}


# ---------------------------------------------------------------------------------------------
# TensorBoard.

class ScalarWriter:
    """Writes scalars for TensorBoard as Summary protos built from Python values (no graph ops).

    Create it inside a graph context (tf.compat.v1.summary.FileWriter refuses eager mode).

    Args:
      logdir: the run's folder.
      first_step: the first step this segment writes. A SessionLog START at that step makes
        TensorBoard drop the events of an interrupted segment from that step on, as the TSV log
        drops its rows.
    """

    def __init__(self, logdir, first_step):
        from phased_lstm import tf  # pylint: disable=import-outside-toplevel
        self._tf = tf
        self._writer = tf.compat.v1.summary.FileWriter(logdir)
        self._writer.add_session_log(
            tf.compat.v1.SessionLog(status=tf.compat.v1.SessionLog.START), first_step)

    def scalars(self, step, values):
        """Writes {tag: value} at step; None values are skipped."""
        tf = self._tf
        summary = tf.compat.v1.Summary(value=[
            tf.compat.v1.Summary.Value(tag=tag, simple_value=float(value))
            for tag, value in values.items() if value is not None])
        self._writer.add_summary(summary, step)

    def flush(self):
        self._writer.flush()

    def close(self):
        self._writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


# ---------------------------------------------------------------------------------------------
# Resuming.

def check_resume_settings(saved, current, keys, where, unrecorded=None):
    """Checks that a run resumes with the settings it was started with.

    Args:
      saved: the settings saved with the checkpoint.
      current: this command's settings.
      keys: the settings that must match (model shape, data order, optimiser, ...).
      where: the run, for the message, e.g. "runs/PhasedLSTMCell at step 500".
      unrecorded: {key: value} for settings added after checkpoints began to record theirs: the
        value that a checkpoint which does not record the key was trained with. A key missing
        from both `saved` and `unrecorded` matches nothing.

    Raises:
      RunError: some differ; the message lists them and suggests --fresh.
    """
    unrecorded = unrecorded or {}
    saved = {k: saved[k] if k in saved else unrecorded.get(k) for k in keys}
    differ = [f"--{k}={saved[k]!r} (this command: {current[k]!r})"
              for k in keys if saved[k] != current[k]]
    if differ:
        raise RunError(
            f"cannot resume {where}: it was trained with " + ", ".join(differ) + ". Pass the "
            "same values to resume it, or --fresh to delete it and start afresh.")


def require_finite_flags(names, flag_values=None):
    """Makes these float flags refuse NaN and infinities, with a message naming the flag.

    Register it before a flag's other validators: absl runs them in order of registration, and
    a bound such as `v > 0` would pass inf, or name the wrong problem for NaN.

    Args:
      names: the flags' names.
      flag_values: the FlagValues holding them; absl's global FLAGS by default.
    """
    flag_values = flags.FLAGS if flag_values is None else flag_values
    for name in names:
        def check(value, name=name):
            if value is not None and not math.isfinite(value):
                raise flags.ValidationError(f"--{name} must be a finite number; got {value}")
            return True
        flags.register_validator(name, check, flag_values=flag_values)


# ---------------------------------------------------------------------------------------------
# Interruptions.

class StopSignals:
    """Turns SIGTERM and SIGINT (Ctrl-C) into a request to stop at the next step boundary.

    A context manager around the training loop, which checks `requested` once per step and then
    checkpoints and exits. A second Ctrl-C raises KeyboardInterrupt at once, for a stuck step.
    The previous handlers are restored on exit.

    Args:
      signals: the signals to catch.
    """

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
        self.signals = tuple(signals)
        self.received = None
        self._previous = {}

    def _handle(self, signum, frame):
        del frame  # unused
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.received is None:
            self.received = signum

    @property
    def requested(self):
        """Whether a signal was received."""
        return self.received is not None

    @property
    def name(self):
        """The received signal's name, e.g. "SIGTERM"; None if none was."""
        return None if self.received is None else signal.Signals(self.received).name

    def __enter__(self):
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


# ---------------------------------------------------------------------------------------------
# Progress display.

def format_duration(seconds):
    """Formats seconds as H:MM:SS (or "?" when unknown)."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(max(seconds, 0.0)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Logs a progress line every `every_steps` steps or `every_secs` seconds.

    The line holds the step, the loss and accuracy of that step's batch, the training speed
    since the previous line (training steps only, evaluations left out), and the time left at
    this segment's average pace so far (evaluations included).

    Args:
      total_steps: the step training ends at.
      first_step: the step this segment starts after (0 for a fresh run).
      every_steps, every_secs: report when either has passed since the last report.
      clock: returns seconds; time.monotonic by default (tests pass their own).
    """

    def __init__(self, total_steps, first_step, every_steps=20, every_secs=10.0,
                 clock=time.monotonic):
        self.total_steps = total_steps
        self.every_steps = every_steps
        self.every_secs = every_secs
        self._clock = clock
        self._start_step = self._last_step = first_step
        self._start_time = self._last_time = clock()
        self._step_seconds = 0.0  # Summed over the steps since the last report.

    def update(self, step, loss, accuracy, seconds):
        """Records a step and reports it if due (and always the first and last step).

        Args:
          step: the step just taken.
          loss, accuracy: its batch's.
          seconds: how long the training step took.

        Returns:
          The line logged, or None.
        """
        now = self._clock()
        self._step_seconds += seconds
        if not (step - self._last_step >= self.every_steps
                or now - self._last_time >= self.every_secs
                or step in (self._start_step + 1, self.total_steps)):
            return None
        speed = (step - self._last_step) / max(self._step_seconds, 1e-9)
        pace = (now - self._start_time) / (step - self._start_step)
        line = (f"step {step}/{self.total_steps}  loss {loss:.4f}  accuracy {accuracy:.3f}  "
                f"{speed:.2f} steps/s  ETA {format_duration((self.total_steps - step) * pace)}")
        logging.info("%s", line)
        self._last_step, self._last_time, self._step_seconds = step, now, 0.0
        return line


# ---------------------------------------------------------------------------------------------
# Results.

def _number(value):
    """A float for JSON, None for NaN."""
    return None if value is None or math.isnan(value) else float(value)


def summarize(log, milestones=(1000, 2000)):
    """The headline numbers of a run, from its whole log (every resumed segment).

    Args:
      log: a dict from read_log.
      milestones: steps whose test accuracy is reported when they were evaluated.

    Returns:
      A JSON-able dict: steps, final_train_loss, final_test_loss, final_test_accuracy (of the
      last evaluation), best_test_accuracy and best_test_accuracy_step, test_accuracy_at_step
      ({"1000": ..., ...} for the evaluated milestones), median_seconds_per_step. Numbers that
      do not exist yet (no row, no evaluation) are None.
    """
    steps = log["step"].astype(np.int64)
    tested = ~np.isnan(log["test_accuracy"])
    test_steps, test_accuracy = steps[tested], log["test_accuracy"][tested]
    test_loss = log["test_loss"][tested]
    best = int(np.argmax(test_accuracy)) if test_steps.size else None
    return {
        "steps": int(steps[-1]) if steps.size else 0,
        "final_train_loss": _number(log["train_loss"][-1]) if steps.size else None,
        "final_test_loss": _number(test_loss[-1]) if test_steps.size else None,
        "final_test_accuracy": _number(test_accuracy[-1]) if test_steps.size else None,
        "best_test_accuracy": None if best is None else _number(test_accuracy[best]),
        "best_test_accuracy_step": None if best is None else int(test_steps[best]),
        "test_accuracy_at_step": {str(m): _number(a) for m, a in zip(test_steps, test_accuracy)
                                  if m in milestones},
        "median_seconds_per_step": (_number(np.nanmedian(log["seconds_per_step"]))
                                    if steps.size else None),
    }


# ---------------------------------------------------------------------------------------------
# The plot.

def find_logs(log_dir):
    """Returns {run name: log path} for every `<log_dir>/<name>/log.tsv`, sorted by name."""
    paths = sorted(glob.glob(os.path.join(glob.escape(log_dir), "*", LOG_NAME)))
    return {os.path.basename(os.path.dirname(p)): p for p in paths}


def smooth(values, span):
    """Exponential moving average with TensorBoard's start-up correction (no bias to 0).

    Args:
      values: float array [n].
      span: the averaging length in samples, >= 1 (1: no smoothing).

    Returns:
      float array [n].
    """
    weight = 1.0 - 1.0 / max(span, 1.0)
    out = np.empty(len(values))
    average = 0.0
    for i, value in enumerate(values):
        average = weight * average + (1.0 - weight) * value
        out[i] = average / (1.0 - weight ** (i + 1))
    return out


def plot_curves(log_dir, path, title, chance=None):
    """Draws the curves of every run in log_dir on one figure and saves it as a PNG.

    Left: training accuracy (per batch, faint; smoothed, bold) and test accuracy (markers).
    Right: training loss (per batch, faint; smoothed, bold). One colour per run.

    Args:
      log_dir: the folder holding `<run>/log.tsv`.
      path: the PNG to write (atomically).
      title: the figure's title.
      chance: accuracy of guessing, drawn as a dotted line; None for none.

    Returns:
      The names of the runs drawn.

    Raises:
      RunError: log_dir holds no log with at least one row.
    """
    logs = {name: read_log(p) for name, p in find_logs(log_dir).items()}
    logs = {name: log for name, log in logs.items() if log["step"].size}
    if not logs:
        raise RunError(f"nothing to plot: no {os.path.join(log_dir, '<model>', LOG_NAME)} with "
                       "any rows. Train a model first, or pass the --log_dir that holds them.")
    # Imported here: only plotting needs matplotlib. Figure + Agg canvas, not pyplot, so no
    # GUI backend or global figure state is involved.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(13, 5.8), layout="constrained")
    FigureCanvasAgg(figure)
    accuracy_axes, loss_axes = figure.subplots(1, 2)
    for i, (name, log) in enumerate(logs.items()):
        color = f"C{i % 10}"
        steps = log["step"]
        span = min(max(len(steps) / 50, 1), 100)
        accuracy_axes.plot(steps, log["train_accuracy"], color=color, lw=0.5, alpha=0.25)
        accuracy_axes.plot(steps, smooth(log["train_accuracy"], span), color=color, lw=1.8,
                           label=f"{name} train (smoothed)")
        tested = ~np.isnan(log["test_accuracy"])
        if tested.any():
            accuracy_axes.plot(steps[tested], log["test_accuracy"][tested], color=color, lw=0.8,
                               ls="--", marker="o", ms=4,
                               label=f"{name} test (last {log['test_accuracy'][tested][-1]:.1%})")
        loss_axes.plot(steps, log["train_loss"], color=color, lw=0.5, alpha=0.25)
        loss_axes.plot(steps, smooth(log["train_loss"], span), color=color, lw=1.8)
    if chance is not None:
        accuracy_axes.axhline(chance, color="0.5", lw=1, ls=":", label=f"chance ({chance:.0%})")
    accuracy_axes.set(title="Accuracy (faint: per training batch)", xlabel="training step",
                      ylabel="accuracy", ylim=(0, 1.02))
    loss_axes.set(title="Training loss (faint: per batch)", xlabel="training step",
                  ylabel="cross-entropy loss")
    for axes in (accuracy_axes, loss_axes):
        axes.grid(alpha=0.3)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    # One legend for both panels (same colours), below them where it hides no curve; two rows,
    # so that each run's train and test entries share a column.
    handles, labels = accuracy_axes.get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=(len(labels) + 1) // 2,
                  fontsize="small", frameon=False)
    figure.suptitle(title)
    write_atomically(path, lambda f: figure.savefig(f, format="png", dpi=110), mode="wb")
    return list(logs)
