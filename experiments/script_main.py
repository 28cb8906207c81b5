"""What the TF 1.x training scripts share around their own work: flags, main(), evaluation.

mnist_phased_lstm.py and freq_phased_lstm.py define their flags with a function (called from
their `__main__` guard on absl's FLAGS, or by a test on a FlagValues of its own), read them once
into a config in main(), and leave the rest to their own code and to experiments.loop. What
they have in common is written here once:

- flags: the shared validators, taking over absl.logging's --log_dir, reading the flags with
  --preset applied (`flag_dict`);
- main(): the arguments check, the TF 1.x API's quiet mode, and how errors end the command
  (`run_main`: "error: ..." and status 1, or 128 + SIGINT after Ctrl-C);
- a run: the start-up log of the devices, evaluation over a set in batches, the text of the
  divergence advice, results.json read back.

No TensorFlow at import: keras_mnist_phased_lstm.py (whose --keras 3 never loads the TF 1.x
parts) shares the validators; the functions that need TensorFlow import it when called.
"""

import json
import signal
import sys
import warnings

from absl import app, flags, logging

from experiments import training

__all__ = ["divergence_advice", "evaluate", "flag_dict", "log_devices", "read_results",
           "refuse_fresh_with_plot_only", "require_timing_flags", "run_main",
           "take_over_log_dir"]


# ---------------------------------------------------------------------------------------------
# Flags.

def require_timing_flags(flag_values, finite):
    """Registers the validators that the scripts' shared flags need.

    Every float flag in `finite` refuses NaN and infinities (registered first: absl runs
    validators in order, and the bounds below would let inf through); --learning_rate must be
    > 0, --ratio_on in (0, 1], --period_init_min > 0 and --period_init_max >= it.

    Args:
      flag_values: the FlagValues that holds the flags.
      finite: the names of the float flags to check for NaN and infinities.
    """
    training.require_finite_flags(finite, flag_values)
    flags.register_validator("learning_rate", lambda v: v > 0, "--learning_rate must be > 0.",
                             flag_values=flag_values)
    flags.register_validator("ratio_on", lambda v: 0 < v <= 1, "--ratio_on must be in (0, 1].",
                             flag_values=flag_values)
    flags.register_validator("period_init_min", lambda v: v > 0,
                             "--period_init_min must be > 0.", flag_values=flag_values)
    flags.register_multi_flags_validator(
        ["period_init_min", "period_init_max"],
        lambda f: f["period_init_max"] >= f["period_init_min"],
        "--period_init_max must be >= --period_init_min.", flag_values=flag_values)


def refuse_fresh_with_plot_only(flag_values, deletes):
    """--fresh and --plot_only together are an error: `deletes` is what --fresh deletes."""
    flags.register_multi_flags_validator(
        ["fresh", "plot_only"], lambda f: not (f["fresh"] and f["plot_only"]),
        f"--fresh deletes {deletes} and --plot_only trains none; pass one of them.",
        flag_values=flag_values)


def take_over_log_dir(flag_values):
    """Removes absl.logging's --log_dir, so that a script can define its own.

    absl.logging defines --log_dir on absl's FLAGS for log files, which it only writes when
    asked (the scripts do not); the scripts take the name over for their runs' folder. A
    FlagValues of a test's own has no such flag.
    """
    if "log_dir" in flag_values:
        delattr(flag_values, "log_dir")


def flag_dict(flag_values, names, presets):
    """Reads flags, with --preset's values for those the command line did not give.

    Args:
      flag_values: the parsed FlagValues; it holds --preset.
      names: the flags to read.
      presets: {preset name: {flag name: value}}.

    Returns:
      {name: value} for every name, in the order of `names`.
    """
    preset = presets.get(flag_values["preset"].value, {})
    return {name: preset[name] if name in preset and not flag_values[name].present
            else flag_values[name].value for name in names}


# ---------------------------------------------------------------------------------------------
# main().

def run_main(argv, work, errors=(), resumable=True):
    """The shared part of a script's main(): checks argv, quiets the TF 1.x API, runs `work`.

    Args:
      argv: app.run's argv; arguments past the program's name are a UsageError.
      work: () -> the exit status; the script's own work.
      errors: exception classes whose message says all (besides training.RunError): printed as
        "error: <message>", exit status 1, no traceback.
      resumable: whether the command trains runs that the same command resumes: then a
        KeyboardInterrupt (a second Ctrl-C in a step, or one outside training) is logged with
        that advice and gives 128 + SIGINT; otherwise it propagates.

    Returns:
      The exit status of `work`, or 128 + SIGINT.

    Raises:
      app.UsageError: unexpected arguments.
      SystemExit: one of `errors`, with its message.
    """
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from phased_lstm import tf  # pylint: disable=import-outside-toplevel
    # The TF 1.x API is the scripts' choice; its deprecation notices are noise here.
    tf.get_logger().setLevel("ERROR")
    warnings.filterwarnings("ignore", message=r"`tf\.\S+` is deprecated", category=UserWarning)
    try:
        return work()
    except (training.RunError, *errors) as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        if not resumable:
            raise
        logging.warning("Interrupted; no new checkpoint. Run the same command again to resume "
                        "from the last one.")
        return 128 + signal.SIGINT


# ---------------------------------------------------------------------------------------------
# A run.

def log_devices():
    """Logs TensorFlow's version and the GPUs it found (or that it trains on the CPU)."""
    from phased_lstm import tf  # pylint: disable=import-outside-toplevel
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    logging.info("TensorFlow %s, %s.", tf.__version__,
                 f"GPUs: {', '.join(gpus)}" if gpus else "no GPU: training on the CPU")


def evaluate(sess, model, feed, size, batch_size):
    """Loss and accuracy on a whole set, in batches, without the leak.

    Args:
      sess: the session.
      model: has `leak` (fed 0), `eval_loss` and `eval_accuracy` (means over a batch, []).
      feed: slice -> the feed dict of those rows of the set (labels included).
      size: the set's number of examples.
      batch_size: examples per batch; the last batch may be smaller, and weighs its size.

    Returns:
      (mean loss, accuracy) over the set, as floats.
    """
    total_loss = total_correct = 0.0
    for start in range(0, size, batch_size):
        rows = slice(start, min(start + batch_size, size))
        loss, accuracy = sess.run([model.eval_loss, model.eval_accuracy],
                                  feed(rows) | {model.leak: 0.0})
        n = rows.stop - rows.start
        total_loss += float(loss) * n
        total_correct += round(float(accuracy) * n)
    return total_loss / size, total_correct / size


def divergence_advice(learning_rate, causes, remedies):
    """The advice a script's loop.Task gives when a run diverges.

    Args:
      learning_rate: the run's --learning_rate.
      causes: the task's likely causes besides the learning rate, e.g. its timing flags.
      remedies: what to try, e.g. "a lower --learning_rate".

    Returns:
      "Likely causes: ... What to try: ...", naming the script's flags.
    """
    return (f"Likely causes: a learning rate too high (--learning_rate={learning_rate:g}), "
            f"{causes}. What to try: {remedies} in another --log_dir, or with --fresh, which "
            "deletes this run.")


def read_results(run):
    """The results.json of a loop.Run that finished, as a dict."""
    with open(run.results_path, encoding="utf-8") as f:
        return json.load(f)
