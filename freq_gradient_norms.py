"""Gradient norms of the frequency task's models: how heavy their tail is, per variable.

A diagnostic for the high-resolution runs' swings (docs/results_frequency.md, "Why: a
heavy tail of gradient norms"). It rebuilds a run of freq_phased_lstm.py from the settings its checkpoint recorded,
restores the newest usable checkpoint (or keeps fresh weights with --at_init), computes the
loss's gradient on --batches training batches that no run trains on (the same generator, its
own seed stream) and prints, for the global norm and for each variable's norm, the median,
the 90th percentile, the max and max / median over the batches. A max / median in the tens
means that a few batches give steps unlike the rest. It also prints the learned timing (the
Phased LSTM's open ratios and periods).

    python freq_gradient_norms.py --log_dir runs_freq --sampling high_res --seed 0
    python freq_gradient_norms.py --log_dir runs_freq --sampling high_res --seed 0 \\
        --data_sampling standard
    python freq_gradient_norms.py --sampling high_res --at_init
    python freq_gradient_norms.py --log_dir runs_freq_authors --sampling high_res --seed 1 \
        --gate_gradient_clip 0.01

--gate_gradient_clip given on the command line replaces the run's own (the same weights'
gradient with another per-step clip); the other model settings always come from the checkpoint.

Without a checkpoint (--at_init) the model is built from this command's flags, which are
freq_phased_lstm.py's (--num_units, --peepholes, --mod_gradient, ...).
"""

import sys
import warnings

from absl import app, flags, logging
import numpy as np

import freq_phased_lstm as freq
from experiments import checkpoints, frequency_data, training
from phased_lstm import tf

# The checkpoint's settings that shape the model and its gradient; they replace the flags.
MODEL_SETTINGS = ("model", "num_units", "peepholes", "ratio_on", "trainable_ratio_on",
                  "period_init_min", "period_init_max", "phase_init_max", "leak", "mod_gradient",
                  "gate_gradient_clip", "gate_biases", "head")
# Settings that change the gradient but not the variables: given on the command line, they win
# over the checkpoint's, to ask what the same weights' gradient would be with another value.
WHAT_IF_SETTINGS = ("gate_gradient_clip",)
QUANTILES = (("median", 50), ("90th pct", 90), ("max", 100))

flags.DEFINE_integer("seed", 0, "The run's seed: <log_dir>/<sampling>/<model>/seed<k>.",
                     lower_bound=0)
flags.DEFINE_integer("batches", 40, "Batches to compute the gradient on.", lower_bound=1)
flags.DEFINE_bool("at_init", False, "Fresh weights (seeded by --seed) instead of a checkpoint.")
flags.DEFINE_enum("data_sampling", None, list(frequency_data.CONDITIONS), "The batches' "
                  "sampling; default: the run's --sampling.")
FLAGS = flags.FLAGS


def gradient_norms(sess, model, batches):
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
    """A row per entry of gradient_norms: its quantiles and max / median."""
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


def _restore_settings(run_dir):
    """The run's newest usable checkpoint prefix; sets the flags in MODEL_SETTINGS from it."""
    usable, skipped = checkpoints.find_usable(f"{run_dir}/checkpoints")
    if usable is None:
        detail = f" (skipped: {checkpoints.describe_skipped(skipped)})" if skipped else ""
        raise training.RunError(f"no usable checkpoint in {run_dir}/checkpoints{detail}; train "
                                "the run first, or pass --at_init for fresh weights.")
    saved = usable.metadata.get("settings", {})
    for name in MODEL_SETTINGS:
        if name in WHAT_IF_SETTINGS and FLAGS[name].present:
            logging.info("--%s %r from the command line (the run trained with %r).", name,
                         FLAGS[name].value, saved.get(name))
        elif name in saved:
            FLAGS[name].value = saved[name]
        else:
            logging.warning("%s does not record --%s; using %r.", usable.prefix, name,
                            FLAGS[name].value)
    return usable.prefix


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    tf.get_logger().setLevel("ERROR")
    warnings.filterwarnings("ignore", message=r"`tf\.\S+` is deprecated", category=UserWarning)
    if FLAGS.sampling == "all":
        raise app.UsageError("--sampling must name one sampling: "
                             + ", ".join(frequency_data.CONDITIONS))
    freq.apply_preset()  # --preset authors: its log_dir and, with --at_init, its model
    try:
        run_dir = freq.run_dir(FLAGS.log_dir, FLAGS.sampling, FLAGS.model, FLAGS.seed)
        prefix = None if FLAGS.at_init else _restore_settings(run_dir)
        data_sampling = FLAGS.data_sampling or FLAGS.sampling
        batches = [frequency_data.make_batch(
            np.random.default_rng([FLAGS.seed, freq.DIAGNOSTIC_STREAM, i]), FLAGS.batch_size,
            data_sampling) for i in range(FLAGS.batches)]
        with tf.Graph().as_default():
            tf.compat.v1.set_random_seed(FLAGS.seed)
            model = freq.Model(FLAGS.model)
            with tf.compat.v1.Session() as sess:
                if prefix is None:
                    sess.run(tf.compat.v1.global_variables_initializer())
                else:
                    tf.compat.v1.train.Saver().restore(sess, prefix)
                norms = gradient_norms(sess, model, batches)
                timing = timing_summary(sess)
    except training.RunError as error:
        sys.exit(f"error: {error}")
    weights = "fresh weights" if prefix is None else prefix
    print(f"{FLAGS.model} ({weights}), {FLAGS.batches} batches of {FLAGS.batch_size}, "
          f"{data_sampling} sampling, --mod_gradient {FLAGS.mod_gradient}, "
          f"--gate_gradient_clip {FLAGS.gate_gradient_clip}:\n")
    print(markdown_table(norms))
    if timing:
        print("\n" + timing)
    return 0


if __name__ == "__main__":
    app.run(main)
