"""The Keras script's runs over seeds: mean ± std per epoch, as a table and a plot.

Reads the runs laid out as

    <root>/seed<k>/<model>/log.csv

(what `keras_mnist_phased_lstm.py --seed k --save_dir <root>/seed<k>` writes: one CSVLogger row
per epoch) and gives, for each model, the training accuracy (Keras's mean over the epoch's
batches, what the Keras seed reported) and the test accuracy after chosen epochs, as mean ± std
over the seeds that reached the epoch (`over_seeds.mean_std`: sample std).

    python -m experiments.keras_over_seeds --root runs_keras_seed --epochs 1,5,10,20

prints the Markdown table and draws `<root>/keras_over_seeds.png`: each model's accuracies per
epoch, mean with a band of ± one std.
"""

import glob
import os
import re

from absl import app, flags
import numpy as np

from experiments import keras_run, over_seeds

__all__ = ["collect", "summarize", "markdown_table", "plot"]


def collect(root):
    """{model: {seed: log}} of the runs under root (logs as keras_run.read_csv_log gives)."""
    runs = {}
    pattern = os.path.join(glob.escape(root), "seed*", "*", keras_run.CSV_LOG)
    for path in sorted(glob.glob(pattern)):
        model_dir = os.path.dirname(path)
        match = re.fullmatch(r"seed(\d+)", os.path.basename(os.path.dirname(model_dir)))
        if match:
            runs.setdefault(os.path.basename(model_dir), {})[int(match.group(1))] = (
                keras_run.read_csv_log(path))
    return runs


def _at_epoch(log, column, epoch):
    """The column's value after `epoch` (1-based), or None if the run did not reach it."""
    rows = np.flatnonzero(log["epoch"] == epoch - 1)
    return float(log[column][rows[-1]]) if rows.size and column in log else None


def summarize(runs, epochs):
    """{model: {"seeds", "train": {epoch: (mean, std, n) or None}, "test": {...}}}."""
    return {model: {
        "seeds": sorted(logs),
        "train": {e: over_seeds.mean_std([_at_epoch(log, "accuracy", e) for log in logs.values()])
                  for e in epochs},
        "test": {e: over_seeds.mean_std([_at_epoch(log, "val_accuracy", e)
                                         for log in logs.values()]) for e in epochs},
    } for model, logs in runs.items()}


def markdown_table(summary, epochs):
    """The summary as a Markdown table, one row per model."""
    header = (["model", "seeds"] + [f"training accuracy after {e}" for e in epochs]
              + [f"test accuracy after {e}" for e in epochs])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, row in summary.items():
        cells = ([model, ", ".join(map(str, row["seeds"]))]
                 + [over_seeds.format_stat(row["train"][e]) for e in epochs]
                 + [over_seeds.format_stat(row["test"][e]) for e in epochs])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nmean ± std (number of seeds that reached the epoch)\n"


def plot(runs, path, title):
    """Each model's training (dashed) and test (solid) accuracy per epoch: mean, ± std band."""
    figure, axes = over_seeds.new_axes()
    for i, (model, logs) in enumerate(runs.items()):
        last = max(int(log["epoch"].max()) + 1 for log in logs.values() if log["epoch"].size)
        epochs = np.arange(1, last + 1)
        for column, style, what in (("accuracy", "--", "training"), ("val_accuracy", "-", "test")):
            stats = [over_seeds.mean_std([_at_epoch(log, column, e) for log in logs.values()])
                     for e in epochs]
            mean = np.array([s[0] if s else np.nan for s in stats])
            std = np.array([s[1] if s else np.nan for s in stats])
            axes.plot(epochs, mean, style, color=f"C{i % 10}", marker="o", ms=3,
                      label=f"{model}, {what} ({len(logs)} seeds)")
            axes.fill_between(epochs, mean - std, mean + std, color=f"C{i % 10}", alpha=0.15)
    over_seeds.finish_figure(figure, axes, path, title, "epoch")


FLAGS = flags.FLAGS


def main(argv):
    del argv  # unused
    runs = collect(FLAGS.root)
    if not runs:
        raise app.UsageError(f"no seed<k>/<model>/{keras_run.CSV_LOG} under {FLAGS.root}")
    epochs = [int(e) for e in FLAGS.epochs]
    print(markdown_table(summarize(runs, epochs), epochs))
    path = os.path.join(FLAGS.root, "keras_over_seeds.png")
    plot(runs, path, FLAGS.title)
    print(f"Plotted to {path}")


def define_flags():
    """The command line's flags (defined only when run as a script)."""
    flags.DEFINE_string("root", "runs_keras_seed", "Folder of seed<k>/<model>/log.csv.")
    flags.DEFINE_list("epochs", ["1", "5", "10", "20"], "Epochs to report (1-based).")
    flags.DEFINE_string("title", "Sequential MNIST with Keras over seeds (band: ± std)",
                        "The plot's title.")


if __name__ == "__main__":
    define_flags()
    app.run(main)
