"""The training loop every script shares: session, resume, steps, evaluation, checkpoints, results.

A script describes its task (`Task`: how to build the model, the feed of a step, when and how to
evaluate, the headline numbers of results.json) and a run (`Run`: its folder, length, seed and
settings); the loop does the rest, the same way for every task:

    run = loop.Run(run_dir, total_steps=..., seed=..., settings=..., must_match=(...),
                   checkpoint_every_secs=...)
    resume = loop.prepare(run, fresh=config.fresh)  # before loading data: errors come early
    with training.StopSignals() as stop:
        outcome = loop.train(task, run, resume, stop)
    return loop.exit_status(outcome)                # 0, 128 + signal, or EXIT_DIVERGED

What it guarantees:

- Resuming: from the newest checkpoint that reads back completely (experiments.checkpoints);
  newer damaged or incomplete ones are moved to checkpoints/damaged/ and named. The log drops
  its rows past the restored step (those steps are trained again). A log or checkpoint is never
  deleted without --fresh: a run folder with rows or checkpoints but nothing to resume from is
  an error that names the files and says what --fresh would delete.
- Divergence: a non-finite training loss stops the run at once (its row is not logged), and
  every save first checks that all variables are finite, so no checkpoint ever holds NaN and
  the last good one survives. results.json then says `diverged` and reports only what the
  last good checkpoint had logged. The exit status is EXIT_DIVERGED.
- A finished run that is run again trains nothing and keeps its results.json.
"""

import collections
import contextlib
import dataclasses
import json
import math
import os
import random
import time
from typing import Any, Callable, Optional

from absl import logging
import numpy as np

from phased_lstm import tf
from experiments import checkpoints, training

__all__ = ["EXIT_DIVERGED", "Outcome", "Resume", "Run", "Task", "exit_status", "prepare",
           "train"]

EXIT_DIVERGED = training.EXIT_DIVERGED  # shared with the Keras script, which needs no TF 1.x


@dataclasses.dataclass(frozen=True)
class Task:
    """What one script trains: the parts of a run that are the task's own.

    Attributes:
      name: the run, in messages, e.g. "PhasedLSTMCell" or "high_res/LSTMCell/seed0".
      build: builds the model in the default graph; returns an object with `loss`, `accuracy`
        (scalar tensors of the training batch), `train_op` and `global_step`.
      feed: (model, step) -> the feed dict of training step `step` (from 1).
      evaluate: (sess, model, step) -> (loss, accuracy) after step `step`, or None when that
        step is not evaluated.
      where: (step, total_steps) -> the position in words, e.g. "step 3 of 1000".
      results: (log) -> the task's headline numbers for results.json, from the log's rows (a
        dict of read_log).
      row: step -> extra log cells of that step (e.g. {"epoch": 2}).
      columns: the log's columns.
      eval_tag: the TensorBoard name of the evaluation ("test", "validation").
      divergence_advice: what the message of a diverged run says after what happened and what
        was kept: the task's likely causes and what to try, in the script's own terms (its
        flags).
    """
    name: str
    build: Callable[[], Any]
    feed: Callable[[Any, int], dict]
    evaluate: Callable[[Any, Any, int], Optional[tuple]]
    where: Callable[[int, int], str]
    results: Callable[[dict], dict]
    row: Callable[[int], dict] = lambda step: {}
    columns: tuple = training.LOG_COLUMNS
    eval_tag: str = "test"
    divergence_advice: str = ("Likely causes: a learning rate too high, or inputs of a large "
                              "scale.")


@dataclasses.dataclass(frozen=True)
class Run:
    """Where and how long a run trains.

    Attributes:
      run_dir: its folder (log, checkpoints, results, TensorBoard events).
      total_steps: train until this step.
      seed: seeds the initial weights (TensorFlow's, Python's and NumPy's generators).
      settings: every setting of the command, saved with each checkpoint and in results.json.
      must_match: the settings a resumed run must share with its checkpoint.
      checkpoint_every_secs: save this often (and at the end, and on a signal); 0: every step.
      flag: the setting that chose the folder, for messages.
      unrecorded: {setting: value} for the settings of must_match that older checkpoints do not
        record: the value they were trained with (training.check_resume_settings).
    """
    run_dir: str
    total_steps: int
    seed: int
    settings: dict
    must_match: tuple
    checkpoint_every_secs: float
    flag: str = "--log_dir"
    unrecorded: dict = dataclasses.field(default_factory=dict)

    @property
    def checkpoint_dir(self):
        return os.path.join(self.run_dir, training.CHECKPOINT_DIR)

    @property
    def log_path(self):
        return os.path.join(self.run_dir, training.LOG_NAME)

    @property
    def results_path(self):
        return os.path.join(self.run_dir, training.RESULTS_NAME)


Resume = collections.namedtuple("Resume", "checkpoint skipped")
Resume.__doc__ = """What prepare found: the checkpoints.Usable to resume from (None: start from
scratch) and the newer checkpoints.Skipped ones, which train sets aside."""

Outcome = collections.namedtuple("Outcome", "status step first_step wall_time_s message signal")
Outcome.__doc__ = """How train ended: status "finished", "stopped" (by `signal`) or "diverged"
(`message` says why and what to try); the last step taken and the step it resumed after."""


def _fresh_advice(run_dir):
    return f"--fresh deletes {training.describe_run_files(run_dir)}"


def prepare(run, fresh=False):
    """Checks a run's folder before any work and finds where to resume.

    With `fresh`, first deletes what the run wrote (training.clear_run). Then checks that the
    folders can be written, tidies what an interrupted save or deletion left, finds the newest
    usable checkpoint and checks its settings against the run's.

    Args:
      run: the Run.
      fresh: delete the run's files first.

    Returns:
      A Resume.

    Raises:
      training.RunError: a folder is not writable; the checkpoint was saved with other settings;
        or the folder holds a log with rows, a results.json or checkpoint files but no usable
        checkpoint (the message names the bad files and what --fresh would delete).
    """
    if fresh:
        removed = training.clear_run(run.run_dir)
        logging.info("--fresh: deleted %s.", ", ".join(removed) if removed else "nothing")
    training.check_writable_run(run.run_dir, run.flag)
    training.remove_temporary_files(run.run_dir)
    checkpoints.tidy(run.checkpoint_dir)
    training.check_log(run.log_path)
    usable, skipped = checkpoints.find_usable(run.checkpoint_dir)
    if usable is None:
        rows = _count_rows(run.log_path)
        bad = checkpoints.describe_skipped(skipped)
        left = [f"checkpoint files that do not read back ({bad})"] if skipped else []
        left += [f"a log of {rows} row(s)"] if rows else []
        left += ["results.json of a finished run"] if os.path.exists(run.results_path) else []
        if left:
            raise training.RunError(
                f"cannot resume {run.run_dir}: it holds " + " and ".join(left) + ", but no "
                "checkpoint to resume from. Nothing was changed. To train it again from "
                f"scratch, pass --fresh ({_fresh_advice(run.run_dir)}), or use another "
                f"{run.flag}.")
        return Resume(None, [])
    if "settings" in usable.metadata:  # Without its sidecar, restore still checks the shapes.
        training.check_resume_settings(usable.metadata["settings"], run.settings,
                                       run.must_match, f"{run.run_dir} from {usable.prefix}",
                                       unrecorded=run.unrecorded)
    return Resume(usable, skipped)


def _count_rows(path):
    if not os.path.exists(path):
        return 0
    with open(path, "rb") as f:
        return sum(1 for line in f.read().split(b"\n")[1:] if line)


def _divergence(task, step, what, last_saved):
    if last_saved:
        kept = (f"The last good checkpoint, of step {last_saved}, is kept; no checkpoint was "
                "written after it. ")
    else:
        kept = "No checkpoint of this run was written. "
    return (f"training diverged at step {step}: {what}. {kept}{task.divergence_advice} The same "
            "command resumes from the last good checkpoint, and with the same data and settings "
            "is likely to diverge again.")


def _finite_check(variables):
    """One op: whether every floating variable holds only finite values."""
    checks = [tf.reduce_all(tf.math.is_finite(v)) for v in variables
              if v.dtype.base_dtype.is_floating]
    return tf.reduce_all(tf.stack(checks)) if checks else tf.constant(True)


def train(task, run, resume, stop):
    """Trains (or resumes) one run to run.total_steps; logs, evaluates, checkpoints, and writes
    results.json when it finishes or diverges.

    Args:
      task: the Task.
      run: the Run.
      resume: prepare(run)'s Resume.
      stop: a training.StopSignals; a signal stops the run at the next step, after a checkpoint.

    Returns:
      An Outcome.

    Raises:
      training.RunError: a problem the message explains (the checkpoint does not fit the model,
        a checkpoint just written does not read back, a damaged log).
    """
    start_time = time.time()
    if resume.skipped:
        moved = checkpoints.set_aside(run.checkpoint_dir, resume.skipped)
        logging.warning(
            "Resuming from an older checkpoint, %s: the newer ones are unusable (%s). Their "
            "files were moved to %s.", resume.checkpoint.prefix,
            checkpoints.describe_skipped(resume.skipped),
            os.path.dirname(moved[0]) if moved else "nowhere")
    with contextlib.ExitStack() as stack:  # Closes the session, log and summaries whatever happens.
        stack.enter_context(tf.Graph().as_default())
        # All three seed the initial weights: tf-keras draws the op seeds of unseeded
        # initialisers from Python's and NumPy's global generators.
        tf.compat.v1.set_random_seed(run.seed)
        random.seed(run.seed)
        np.random.seed(run.seed)
        model = task.build()
        all_finite = _finite_check(tf.compat.v1.global_variables())
        checkpointer = checkpoints.Checkpointer(run.checkpoint_dir, run.checkpoint_every_secs)
        config = tf.compat.v1.ConfigProto()
        config.gpu_options.allow_growth = True  # Take GPU memory as needed, not all of it.
        sess = stack.enter_context(tf.compat.v1.Session(config=config))
        sess.run(tf.compat.v1.global_variables_initializer())

        step, wall_time_before = 0, 0.0
        if resume.checkpoint:
            checkpointer.restore(sess, resume.checkpoint.prefix)
            step = int(sess.run(model.global_step))
            wall_time_before = float(resume.checkpoint.metadata.get("wall_time_s", 0.0))
            logging.info("Resuming %s from %s (%s).", task.name, resume.checkpoint.prefix,
                         task.where(step, run.total_steps))
        else:
            logging.info("Training %s from scratch, to %s.", task.name,
                         task.where(run.total_steps, run.total_steps))
        first_step = step
        last_saved = step if resume.checkpoint else None

        def wall_time():
            return wall_time_before + (time.time() - start_time if step > first_step else 0.0)

        def save(step):
            path = checkpointer.save(sess, step, {"wall_time_s": wall_time(),
                                                  "settings": run.settings})
            logging.info("Saved checkpoint %s.", path)

        not_finite = ("a variable holds NaN or infinite values after the update, although the "
                      "loss was finite")
        log = stack.enter_context(training.LogWriter(run.log_path, last_step=step,
                                                     columns=task.columns))
        summaries = stack.enter_context(training.ScalarWriter(run.run_dir, first_step=step + 1))
        progress = training.Progress(run.total_steps, first_step=step)
        diverged = diverged_step = None
        while step < run.total_steps and not stop.requested:
            feed = task.feed(model, step + 1)
            step_start = time.perf_counter()
            _, loss, accuracy = sess.run([model.train_op, model.loss, model.accuracy], feed)
            seconds = time.perf_counter() - step_start
            row = {"step": step + 1, **task.row(step + 1), "train_loss": loss,
                   "train_accuracy": accuracy, "seconds_per_step": seconds}
            eval_start = time.perf_counter()
            evaluation = None
            if math.isfinite(loss):
                evaluation = task.evaluate(sess, model, step + 1)
            save_due = checkpointer.due() or step + 1 == run.total_steps
            # Checked before the row is written, so that a diverged step leaves no row: the
            # loss (of the batch before the update), the evaluation (after it), and before a
            # save every variable (one op, cheap beside the save).
            problem = None
            if not math.isfinite(loss):
                problem = f"the training loss is {loss}"
            elif evaluation is not None and not math.isfinite(evaluation[0]):
                problem = f"the {task.eval_tag} loss is {evaluation[0]}"
            elif save_due and not sess.run(all_finite):
                problem = not_finite
            if problem:
                diverged_step = step + 1
                diverged = _divergence(task, diverged_step, problem, last_saved)
                break
            step += 1
            if evaluation is not None:
                row["test_loss"], row["test_accuracy"] = evaluation
                logging.info("%s, %s: %s loss %.4f, accuracy %.4f (%.1f s)", task.name,
                             task.where(step, run.total_steps), task.eval_tag,
                             row["test_loss"], row["test_accuracy"],
                             time.perf_counter() - eval_start)
            log.write(row)
            summaries.scalars(step, {"train/loss": loss, "train/accuracy": accuracy,
                                     f"{task.eval_tag}/loss": row.get("test_loss"),
                                     f"{task.eval_tag}/accuracy": row.get("test_accuracy")})
            if evaluation is not None:
                summaries.flush()
            progress.update(step, loss, accuracy, seconds)
            if save_due:
                save(step)
                last_saved = step

        if not diverged and step > first_step and last_saved != step:
            # Stopped by a signal between saves: the last step's variables are checked too.
            if sess.run(all_finite):
                save(step)
                last_saved = step
            else:
                diverged_step = step
                diverged = _divergence(task, step, not_finite, last_saved)
        outcome_wall_time = wall_time()

    if diverged:
        logging.error("%s: %s", task.name, diverged)
        _write_results(task, run, last_saved or 0, outcome_wall_time,
                       {"step": diverged_step, "message": diverged,
                        "last_good_checkpoint_step": last_saved})
        return Outcome("diverged", step, first_step, outcome_wall_time, diverged, None)
    if step < run.total_steps:
        logging.info("Stopped by %s at %s (%s). Run the same command again to resume.",
                     stop.name, task.where(step, run.total_steps), task.name)
        return Outcome("stopped", step, first_step, outcome_wall_time, None, stop.received)
    if step == first_step and _readable_json(run.results_path):
        logging.info("%s is already trained to %s; nothing to do, and its results.json is kept. "
                     "Pass a larger number of steps to continue, or --fresh to start afresh.",
                     run.run_dir, task.where(step, run.total_steps))
    else:
        _write_results(task, run, step, outcome_wall_time, None)
    return Outcome("finished", step, first_step, outcome_wall_time, None, None)


def _readable_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            json.load(f)
        return True
    except (OSError, ValueError):
        return False


def _write_results(task, run, last_step, wall_time_s, diverged):
    """Writes results.json from the log's rows up to last_step (those of the model kept)."""
    log = training.read_log(run.log_path, task.columns)
    kept = log["step"] <= last_step
    results = {**task.results({name: values[kept] for name, values in log.items()}),
               "wall_time_s": wall_time_s,
               "tensorflow_version": tf.__version__,
               "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
               "settings": run.settings}
    if diverged:
        results = {"diverged": diverged, **results}
    training.write_json(run.results_path, results)
    if not diverged:
        logging.info("%s: wrote %s.", task.name, run.results_path)


def exit_status(outcome):
    """The command's exit status for an Outcome: 0, 128 + the signal, or EXIT_DIVERGED."""
    return {"finished": 0, "diverged": EXIT_DIVERGED}.get(outcome.status,
                                                         128 + (outcome.signal or 0))
