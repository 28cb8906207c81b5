"""A run's results: the summary of its log (results.json) and the curves of every run (PNG)."""

import glob
import math
import os

import numpy as np

from experiments.training.files import LOG_NAME, RunError, write_atomically
from experiments.training.tsv_log import read_log


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
