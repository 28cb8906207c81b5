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

One module per concern; the scripts use the names below as `training.X`:

    files      the run folder: atomic writes, what a run wrote, writable checks, --fresh
    tsv_log    the TSV log: write, read, check, cut back to a step
    scalars    TensorBoard scalars
    checks     resume settings against the checkpoint's; finite float flags
    signals    SIGTERM and Ctrl-C as a stop request; the exit status of a diverged run
    progress   the progress line
    results    results.json's summary and the curves' figure

No TensorFlow at import: the Keras 3 script (keras_mnist_phased_lstm.py --keras 3) uses this
package without the TF 1.x parts.
"""

from experiments.training.checks import check_resume_settings, require_finite_flags
from experiments.training.files import (CHECKPOINT_DIR, LOG_NAME, RESULTS_NAME, RunError,
                                        check_writable_dir, check_writable_run, clear_run,
                                        describe_run_files, remove_temporary_files, run_files,
                                        write_atomically, write_json)
from experiments.training.progress import Progress, format_duration
from experiments.training.results import find_logs, plot_curves, smooth, summarize
from experiments.training.scalars import ScalarWriter
from experiments.training.signals import EXIT_DIVERGED, StopSignals
from experiments.training.tsv_log import (LOG_COLUMNS, LogWriter, check_log, read_log,
                                          truncate_log)

__all__ = [
    "CHECKPOINT_DIR", "EXIT_DIVERGED", "LOG_COLUMNS", "LOG_NAME", "RESULTS_NAME", "LogWriter",
    "Progress", "RunError", "ScalarWriter", "StopSignals", "check_log", "check_resume_settings",
    "check_writable_dir", "check_writable_run", "clear_run", "describe_run_files", "find_logs",
    "format_duration", "plot_curves", "read_log", "remove_temporary_files",
    "require_finite_flags", "run_files", "smooth", "summarize", "truncate_log",
    "write_atomically", "write_json",
]
