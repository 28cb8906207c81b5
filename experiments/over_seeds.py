"""Results over seeds: mean ± std of runs that differ only in their seed, as a table and a plot.

One training run is an anecdote; what a reader compares is the spread over seeds. This module
reads the logs of runs laid out as

    <root>/<configuration>/seed<k>/<model>/log.tsv

(what `mnist_phased_lstm.py --seed k --log_dir <root>/<configuration>/seed<k>` writes), and gives,
for each (configuration, model), the test accuracy at chosen steps and the training accuracy
(mean over the 100 batches up to the step) as mean ± std over the seeds that reached the step.

    python -m experiments.over_seeds --root runs_seeds --steps 500,1000,2000

prints the Markdown table and draws `<root>/over_seeds.png`: test accuracy, mean with a band of
± one std, and the smoothed training accuracy of each seed, faint.
"""

import collections
import glob
import os
import re

from absl import app, flags
import numpy as np

from experiments import training

__all__ = ["collect", "mean_std", "format_stat", "summarize", "markdown_table", "plot",
           "new_axes", "finish_figure"]

# Training accuracy at step s: the mean over the batches (s - TRAIN_WINDOW, s].
TRAIN_WINDOW = 100


def collect(root):
    """Finds the runs under root.

    Args:
      root: the folder holding `<configuration>/seed<k>/<model>/log.tsv`.

    Returns:
      {(configuration, model): {seed: log dict (training.read_log)}}, sorted.
    """
    runs = collections.defaultdict(dict)
    pattern = os.path.join(glob.escape(root), "*", "seed*", "*", training.LOG_NAME)
    for path in sorted(glob.glob(pattern)):
        model_dir = os.path.dirname(path)
        seed_dir = os.path.dirname(model_dir)
        match = re.fullmatch(r"seed(\d+)", os.path.basename(seed_dir))
        if match is None:
            continue
        key = (os.path.basename(os.path.dirname(seed_dir)), os.path.basename(model_dir))
        runs[key][int(match.group(1))] = training.read_log(path)
    return dict(sorted(runs.items()))


def _at_step(log, step):
    """(test accuracy at step or None, mean training accuracy of the window up to step or None)."""
    steps = log["step"]
    test = None
    tested = np.flatnonzero((steps == step) & ~np.isnan(log["test_accuracy"]))
    if tested.size:
        test = float(log["test_accuracy"][tested[-1]])
    window = (steps > step - TRAIN_WINDOW) & (steps <= step)
    train = float(np.mean(log["train_accuracy"][window])) if window.sum() == TRAIN_WINDOW else None
    return test, train


def mean_std(values):
    """(mean, sample std with ddof=1 (0 for one value), count) of the values that are not None;
    None if there are none. Every table of results over seeds uses it."""
    values = np.array([v for v in values if v is not None], dtype=np.float64)
    if not values.size:
        return None
    std = float(np.std(values, ddof=1)) if values.size > 1 else 0.0
    return float(np.mean(values)), std, int(values.size)


def summarize(runs, steps):
    """Mean ± std over seeds at each step.

    Args:
      runs: from collect.
      steps: the training steps to report.

    Returns:
      {(configuration, model): {"seeds": [...], "test": {step: (mean, std, n) or None},
       "train": {step: (mean, std, n) or None}}}.
    """
    summary = {}
    for key, logs in runs.items():
        at = {step: [_at_step(log, step) for log in logs.values()] for step in steps}
        summary[key] = {
            "seeds": sorted(logs),
            "test": {step: mean_std([t for t, _ in at[step]]) for step in steps},
            "train": {step: mean_std([t for _, t in at[step]]) for step in steps},
        }
    return summary


def format_stat(stat):
    """A mean_std result as a table cell, "mean ± std (n)"; "" for None."""
    if stat is None:
        return ""
    mean, std, n = stat
    return f"{mean:.3f} ± {std:.3f} ({n})"


def new_axes():
    """(figure, axes) of the figures over seeds; finish_figure writes them."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 5.5), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots()


def finish_figure(figure, axes, path, title, xlabel):
    """Labels, grid and legend of a figure over seeds; writes it to path as a PNG."""
    axes.set(title=title, xlabel=xlabel, ylabel="accuracy", ylim=(0, 1.02))
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="lower right")
    training.write_atomically(path, lambda f: figure.savefig(f, format="png", dpi=110), mode="wb")


def markdown_table(summary, steps):
    """The summary as a Markdown table: one row per (configuration, model)."""
    header = (["configuration", "model", "seeds"] + [f"test accuracy at {s:,}" for s in steps]
              + [f"training accuracy at {s:,}" for s in steps])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (configuration, model), row in summary.items():
        cells = ([configuration, model, ", ".join(map(str, row["seeds"]))]
                 + [format_stat(row["test"][s]) for s in steps] + [format_stat(row["train"][s]) for s in steps])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nmean ± std (number of seeds that reached the step)\n"


def plot(runs, path, title):
    """Test accuracy over seeds (mean, ± std band) and each seed's smoothed training accuracy."""
    figure, axes = new_axes()
    for i, ((configuration, model), logs) in enumerate(runs.items()):
        color = f"C{i % 10}"
        tested_steps = sorted(set.intersection(*(
            set(log["step"][~np.isnan(log["test_accuracy"])].astype(int)) for log in logs.values())))
        if tested_steps:
            accuracy = np.array([[_at_step(log, s)[0] for s in tested_steps]
                                 for log in logs.values()])
            mean = accuracy.mean(axis=0)
            std = accuracy.std(axis=0, ddof=1) if len(logs) > 1 else np.zeros_like(mean)
            axes.plot(tested_steps, mean, color=color, marker="o", ms=4, lw=1.8,
                      label=f"{model} ({configuration}), test, {len(logs)} seeds")
            axes.fill_between(tested_steps, mean - std, mean + std, color=color, alpha=0.2)
        for log in logs.values():
            span = min(max(len(log["step"]) / 50, 1), 100)
            axes.plot(log["step"], training.smooth(log["train_accuracy"], span), color=color,
                      lw=0.6, alpha=0.35)
    finish_figure(figure, axes, path, title, "training step")


FLAGS = flags.FLAGS


def main(argv):
    del argv  # unused
    runs = collect(FLAGS.root)
    if not runs:
        raise app.UsageError(f"no <configuration>/seed<k>/<model>/{training.LOG_NAME} under "
                             f"{FLAGS.root}")
    steps = [int(s) for s in FLAGS.steps]
    print(markdown_table(summarize(runs, steps), steps))
    path = os.path.join(FLAGS.root, "over_seeds.png")
    plot(runs, path, FLAGS.title)
    print(f"Plotted to {path}")


def define_flags():
    """The command line's flags (defined only when run as a script: importers keep theirs)."""
    flags.DEFINE_string("root", "runs_seeds", "Folder of <configuration>/seed<k>/<model>/log.tsv.")
    flags.DEFINE_list("steps", ["500", "1000", "2000"], "Training steps to report.")
    flags.DEFINE_string("title", "Sequential MNIST over seeds: test accuracy (band: ± std), "
                        "training accuracy (faint)", "The plot's title.")


if __name__ == "__main__":
    define_flags()
    app.run(main)
