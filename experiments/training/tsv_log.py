"""The TSV log: one row per training step, cut back to a checkpoint's step when a run resumes.

Rows are written one line at a time and flushed, so a kill leaves at most a partial last line,
which the next `truncate_log` drops; every complete row is checked before training starts.
"""

import math
import os

from absl import logging
import numpy as np

from experiments.training.files import RunError, write_atomically

LOG_COLUMNS = ("step", "train_loss", "train_accuracy", "seconds_per_step", "test_loss",
               "test_accuracy")


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
