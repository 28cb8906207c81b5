"""Fake run logs for the tests of experiments.training."""

import os

from experiments import training

HEADER = "\t".join(training.LOG_COLUMNS) + "\n"


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
