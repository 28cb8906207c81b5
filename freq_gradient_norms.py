"""Gradient norms of the frequency task's models: how heavy their tail is, per variable.

A diagnostic for the high-resolution runs' swings (docs/results_frequency.md, "Why: a
heavy tail of gradient norms"). It rebuilds a run of freq_phased_lstm.py from the settings its
checkpoint recorded, restores the newest usable checkpoint (or keeps fresh weights with
--at_init), computes the loss's gradient on --batches training batches that no run trains on
(the same generator, its own seed stream) and prints, for the global norm and for each
variable's norm, the median, the 90th percentile, the max and max / median over the batches. A
max / median in the tens means that a few batches give steps unlike the rest. It also prints
the learned timing (the Phased LSTM's open ratios and periods).

    python freq_gradient_norms.py --log_dir runs_freq --sampling high_res --seed 0
    python freq_gradient_norms.py --log_dir runs_freq --sampling high_res --seed 0 \\
        --data_sampling standard
    python freq_gradient_norms.py --sampling high_res --at_init
    python freq_gradient_norms.py --log_dir runs_freq_authors --sampling high_res --seed 1 \\
        --gate_gradient_clip 0.01

--gate_gradient_clip given on the command line replaces the run's own (the same weights'
gradient with another per-step clip); the other model settings always come from the checkpoint.

Without a checkpoint (--at_init) the model is built from this command's flags, which are
freq_phased_lstm.py's (--num_units, --peepholes, --mod_gradient, ...).

From Python, `run_gradient_norms(run_dir, ...)` does the same over a run folder and returns the
numbers (`Diagnosis`); `report` gives the text this command prints.
"""

import dataclasses
from typing import Optional

from absl import app, flags, logging
import numpy as np

import freq_phased_lstm as freq
from experiments import checkpoints, frequency_data, script_main, training
from phased_lstm import tf

# Settings that change the gradient but not the variables: given on the command line, they win
# over the checkpoint's, to ask what the same weights' gradient would be with another value.
WHAT_IF_SETTINGS = ("gate_gradient_clip",)
QUANTILES = (("median", 50), ("90th pct", 90), ("max", 100))


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """What gradient_norms found.

    Attributes:
      config: the freq_phased_lstm.FrequencyConfig the model was built from.
      checkpoint: the checkpoint prefix restored; None: fresh weights.
      data_sampling: the batches' sampling.
      batch_size: sequences per batch.
      norms: {name: float64 [batches]}, "global" and each trainable variable's gradient norm
        (norms_per_batch).
      timing: the learned timing as text (timing_summary; "" for an LSTM).
    """
    config: freq.FrequencyConfig
    checkpoint: Optional[str]
    data_sampling: str
    batch_size: int
    norms: dict
    timing: str


def define_flags(flag_values):
    """Defines this command's own flags; freq_phased_lstm.define_flags defines the rest."""
    fv = dict(flag_values=flag_values)
    flags.DEFINE_integer("seed", 0, "The run's seed: <log_dir>/<sampling>/<model>/seed<k>.",
                         lower_bound=0, **fv)
    flags.DEFINE_integer("batches", 40, "Batches to compute the gradient on.", lower_bound=1,
                         **fv)
    flags.DEFINE_bool("at_init", False, "Fresh weights (seeded by --seed) instead of a "
                      "checkpoint.", **fv)
    flags.DEFINE_enum("data_sampling", None, list(frequency_data.CONDITIONS), "The batches' "
                      "sampling; default: the run's --sampling.", **fv)


def norms_per_batch(sess, model, batches):
    """Each variable's gradient norm and the global norm, batch by batch.

    Args:
      sess: a session holding the model's weights.
      model: a freq_phased_lstm.Model.
      batches: a list of frequency_data.make_batch dicts.

    Returns:
      {name: float64 [len(batches)]}: "global" and each trainable variable's name (no ":0").
    """
    variables = tf.compat.v1.trainable_variables()
    grads = tf.gradients(model.loss, variables)
    norms = {"global": []} | {v.op.name: [] for v in variables}
    for batch in batches:
        values = sess.run(grads, model.feed(batch))
        per_variable = [float(np.linalg.norm(np.asarray(g, np.float64))) for g in values]
        norms["global"].append(float(np.sqrt(np.sum(np.square(per_variable)))))
        for v, norm in zip(variables, per_variable):
            norms[v.op.name].append(norm)
    return {name: np.array(values) for name, values in norms.items()}


def markdown_table(norms):
    """A row per entry of norms_per_batch: its quantiles and max / median."""
    lines = ["| gradient norm of | " + " | ".join(q for q, _ in QUANTILES) + " | max / median |",
             "|---" * (len(QUANTILES) + 2) + "|"]
    for name, values in norms.items():
        quantiles = [np.percentile(values, p) for _, p in QUANTILES]
        ratio = quantiles[-1] / quantiles[0] if quantiles[0] > 0 else float("inf")
        lines.append(f"| {name} | " + " | ".join(f"{q:.3g}" for q in quantiles)
                     + f" | {ratio:.1f} |")
    return "\n".join(lines)


def timing_summary(sess):
    """The learned open ratios and periods of a Phased LSTM, as text ('' for an LSTM)."""
    lines = []
    for suffix, name in (("ratio_on", "r_on"), ("period", "period (ms)")):
        found = [v for v in tf.compat.v1.global_variables() if v.op.name.endswith(suffix)]
        for variable in found:
            values = sess.run(variable)
            lines.append(f"{name}: min {values.min():.4g}, median {np.median(values):.4g}, "
                         f"max {values.max():.4g}")
            if suffix == "ratio_on":
                lines.append(f"  units with r_on < 0.005: {np.sum(values < 0.005)}, < 0.02: "
                             f"{np.sum(values < 0.02)}, of {values.size}")
    return "\n".join(lines)


def checkpoint_config(run_dir, what_if=None):
    """The config a run trained with, from its newest usable checkpoint's settings.

    Args:
      run_dir: the run's folder, <log_dir>/<sampling>/<model>/seed<k>.
      what_if: {name: value} of WHAT_IF_SETTINGS that replace the run's own.

    Returns:
      (the freq_phased_lstm.FrequencyConfig, the checkpoint's prefix).

    Raises:
      training.RunError: the run has no usable checkpoint.
      ValueError: what_if names a setting that would change the variables.
    """
    what_if = what_if or {}
    if set(what_if) - set(WHAT_IF_SETTINGS):
        raise ValueError(f"only {WHAT_IF_SETTINGS} can replace a run's settings; got "
                         f"{sorted(what_if)}")
    usable, skipped = checkpoints.find_usable(f"{run_dir}/checkpoints")
    if usable is None:
        detail = f" (skipped: {checkpoints.describe_skipped(skipped)})" if skipped else ""
        raise training.RunError(f"no usable checkpoint in {run_dir}/checkpoints{detail}; train "
                                "the run first, or pass --at_init for fresh weights.")
    saved = usable.metadata.get("settings", {})
    config, defaulted = freq.FrequencyConfig.from_settings(saved)
    # What shapes the model, its gradient or the batches; others are no news.
    for name in set(defaulted) & set(freq.resume_must_match(config.model)):
        logging.warning("%s does not record --%s; using %r.", usable.prefix, name,
                        getattr(config, name))
    for name, value in what_if.items():
        logging.info("--%s %r from the command line (the run trained with %r).", name, value,
                     getattr(config, name))
    return dataclasses.replace(config, **what_if), usable.prefix


def gradient_norms(config, batches, batch_size, data_sampling=None, checkpoint=None):
    """The gradient norms of a frequency model on batches that no run trains on.

    Args:
      config: the freq_phased_lstm.FrequencyConfig to build the model from; its seed seeds
        the fresh weights and the batches (the seed's diagnostic stream).
      batches: the number of batches.
      batch_size: sequences per batch.
      data_sampling: the batches' sampling; default: config.sampling.
      checkpoint: a checkpoint prefix to restore; None: fresh weights.

    Returns:
      A Diagnosis.
    """
    data_sampling = data_sampling or config.sampling
    data = [frequency_data.make_batch(
        np.random.default_rng([config.seed, freq.DIAGNOSTIC_STREAM, i]), batch_size,
        data_sampling) for i in range(batches)]
    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(config.seed)
        model = freq.Model(config)
        with tf.compat.v1.Session() as sess:
            if checkpoint is None:
                sess.run(tf.compat.v1.global_variables_initializer())
            else:
                tf.compat.v1.train.Saver().restore(sess, checkpoint)
            norms = norms_per_batch(sess, model, data)
            timing = timing_summary(sess)
    return Diagnosis(config, checkpoint, data_sampling, batch_size, norms, timing)


def run_gradient_norms(run_dir, batches=40, batch_size=32, data_sampling=None, what_if=None):
    """gradient_norms of a trained run: its newest usable checkpoint, its settings.

    Args:
      run_dir: the run's folder, <log_dir>/<sampling>/<model>/seed<k>.
      batches, batch_size, data_sampling: as gradient_norms.
      what_if: as checkpoint_config.

    Returns:
      A Diagnosis.

    Raises:
      training.RunError: the run has no usable checkpoint.
    """
    config, prefix = checkpoint_config(run_dir, what_if)
    return gradient_norms(config, batches, batch_size, data_sampling, prefix)


def report(diagnosis):
    """The text this command prints: what was measured, the table, the learned timing."""
    config = diagnosis.config
    weights = diagnosis.checkpoint or "fresh weights"
    text = (f"{config.model} ({weights}), {len(diagnosis.norms['global'])} batches of "
            f"{diagnosis.batch_size}, {diagnosis.data_sampling} sampling, --mod_gradient "
            f"{config.mod_gradient}, --gate_gradient_clip {config.gate_gradient_clip}:\n\n"
            + markdown_table(diagnosis.norms))
    return text + ("\n\n" + diagnosis.timing if diagnosis.timing else "")


def main(argv, flag_values=flags.FLAGS):
    """Prints the gradient norms of the run the parsed flags name; returns the exit status."""
    sampling = flag_values["sampling"].value
    if sampling == "all":
        raise app.UsageError("--sampling must name one sampling: "
                             + ", ".join(frequency_data.CONDITIONS))
    seed = flag_values["seed"].value
    # The command's flags, --preset applied: its log_dir and, with --at_init, its model.
    command = freq.config_from_flags(flag_values, sampling, seed)
    options = dict(batches=flag_values["batches"].value, batch_size=command.batch_size,
                   data_sampling=flag_values["data_sampling"].value)

    def work():
        if flag_values["at_init"].value:
            diagnosis = gradient_norms(command, **options)
        else:
            what_if = {name: getattr(command, name) for name in WHAT_IF_SETTINGS
                       if flag_values[name].present}
            diagnosis = run_gradient_norms(
                freq.run_dir(command.log_dir, sampling, command.model, seed),
                what_if=what_if, **options)
        print(report(diagnosis))
        return 0

    return script_main.run_main(argv, work, resumable=False)


if __name__ == "__main__":
    freq.define_flags(flags.FLAGS)
    define_flags(flags.FLAGS)
    app.run(main)
