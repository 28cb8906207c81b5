"""Frequency discrimination: Phased LSTM against LSTM on sine waves sampled three ways.

Reproduces the first experiment of Neil, Pfeiffer and Liu, "Phased LSTM" (NIPS 2016, Fig. 3):
tell sine waves whose period lies in [5, 6] ms from others, sampled every 1 ms (`standard`),
every 0.1 ms (`high_res`, up to 1,250 steps) or at irregular times (`async`). `--sampling
two_sines` runs the paper's second task (Fig. 4a): the sum of two sines at 100 to 999 irregular
times, class 1 when their periods lie in [5, 6] and [13, 15] ms. The data are drawn afresh for
every batch (experiments/frequency_data.py has the details). The Phased LSTM
gets the amplitude as its input and the time in ms as its timestamp; the LSTM gets
[amplitude, time] as two input features. Sequences are padded; padded steps change nothing
(sequence_length).

The defaults are the paper's settings: 110 units with peepholes, timing init tau ~ exp(U(1, 3))
ms, s ~ U(0, 100), r_on 0.05, leak 0.001 while training and 0 at validation, Adam 1e-3,
batch 32, 157 batches per epoch, 70 epochs, 5 seeds, accuracy on fresh validation data
(2,000 sequences, their own seed stream) after every epoch.

    python freq_phased_lstm.py --sampling high_res -m PhasedLSTMCell
    python freq_phased_lstm.py --sampling all -m LSTMCell --seeds 5
    python freq_phased_lstm.py --quick --sampling async -m PhasedLSTMCell --seeds 1
    python freq_phased_lstm.py --plot_only
    python freq_phased_lstm.py --preset authors --sampling high_res -m PhasedLSTMCell --seeds 3

--preset authors trains as the authors' public code does (per-step gate-gradient clipping,
their gate biases and head; see the flags' help) in its own folder, runs_freq_authors/.

--quick changes only --epochs (per sampling: standard 60, high_res 5, async 60, two_sines 5) and
--val_size (500), each unless given on the command line; how long that takes, and on which
machine: QUICK_NOTE (docs/results_frequency.md). It keeps the paper's epoch of 157 batches of
32, so that its epochs compare with the paper's 70 and a quick run continues to them when run
again without --quick.

Each run (one sampling, one model, one seed) writes `<log_dir>/<sampling>/<model>/seed<k>/`:
log.tsv (one row per training batch, with `step` the batch number and `epoch` its epoch; the
columns test_loss and test_accuracy hold the validation on fresh data, on each epoch's last
batch), TensorBoard events, checkpoints/ and results.json. After every run the script redraws
`<log_dir>/<sampling>/<model>/curves.png` (every seed's training curves), the figure
`<log_dir>/frequency_curves.png` (validation accuracy per epoch, one panel per sampling) and
the table `<log_dir>/results.md` (mean ± sample std over seeds of the last validation accuracy,
beside the paper's). Running the same command again resumes from the last checkpoint and skips the
finished runs; Ctrl-C or SIGTERM checkpoints and stops.
"""

import dataclasses
import glob
import math
import os
import re
from typing import Optional

from absl import app, flags, logging
import numpy as np

from phased_lstm import PhasedLSTMCell, tf
from experiments import frequency_data, loop, over_seeds, script_main, training
from experiments.gate_clipped_lstm import GateClippedLSTMCell
from phased_lstm import fused_rnn
from phased_lstm.fast_rnn import describe_path, phased_lstm_rnn

SAMPLINGS = frequency_data.SAMPLINGS
# The three samplings of the first task, and the second task (two sines, asynchronous).
CONDITIONS = frequency_data.CONDITIONS
SAMPLING_TITLES = {"standard": "standard (1 ms)", "high_res": "high resolution (0.1 ms)",
                   "async": "asynchronous", "two_sines": "two sines (Fig. 4a), asynchronous"}
MODEL_TITLES = {"PhasedLSTMCell": "Phased LSTM", "LSTMCell": "LSTM"}
NUM_CLASSES = 2
PLOT_NAME = "frequency_curves.png"
RESULTS_TABLE_NAME = "results.md"
RUN_PLOT_NAME = "curves.png"
# training.LOG_COLUMNS with the epoch of each batch; test_* hold the validation.
LOG_COLUMNS = ("step", "epoch") + training.LOG_COLUMNS[1:]
# The rng streams of a seed, np.random.default_rng([seed, stream, index]): training,
# validation, and freq_gradient_norms.py's batches that no run trains on.
TRAIN_STREAM, VALIDATION_STREAM, DIAGNOSTIC_STREAM = 0, 1, 2
# The paper's Fig. 3 table: accuracy (%) after 70 epochs, mean and std over 5 seeds.
PAPER = {
    ("standard", "PhasedLSTMCell"): (99.18, 0.23), ("standard", "LSTMCell"): (99.02, 0.62),
    ("high_res", "PhasedLSTMCell"): (99.49, 0.20), ("high_res", "LSTMCell"): (51.72, 0.71),
    ("async", "PhasedLSTMCell"): (98.28, 0.15), ("async", "LSTMCell"): (63.20, 13.54),
}
# --quick: values of these flags unless given on the command line; epochs per sampling.
QUICK = {"epochs": {"standard": 60, "high_res": 5, "async": 60, "two_sines": 5},
         "val_size": 500}
QUICK_NOTE = """\
--quick's epochs, why they were chosen and how long they take, with the machine they were
measured on: docs/results_frequency.md, "How long --quick takes".
"""


@dataclasses.dataclass(frozen=True)
class FrequencyConfig:
    """One run's settings: one field per flag, and the run's seed.

    Read once in main() from the flags (configs_from_flags: one config per sampling and seed
    of the command), or from the settings that a run recorded (from_settings). `sampling` is
    one of CONDITIONS (the command's --sampling all is one run per sampling) and `seed` the
    run's (the command's --seeds gives 0 .. seeds-1); epochs and val_size have --quick's values
    where it chose them. The defaults are the flags', the paper's settings. A run saves them,
    as its settings, with each checkpoint and in results.json (`settings()`); resuming compares
    RESUME_MUST_MATCH of them. The flags' help says what each one means.
    """
    sampling: str = "standard"
    seed: int = 0
    model: str = "PhasedLSTMCell"
    epochs: int = 70
    batches_per_epoch: int = 157
    batch_size: int = 32
    seeds: int = 5
    val_size: int = 2000
    eval_batch_size: int = 500
    num_units: int = 110
    learning_rate: float = 1e-3
    clip_norm: float = 0.0
    gate_gradient_clip: float = 0.0
    gate_biases: str = "tf"
    head: str = "linear"
    preset: Optional[str] = None
    quick: bool = False
    log_dir: str = "runs_freq/"
    checkpoint_every_secs: float = 300.0
    fresh: bool = False
    plot_only: bool = False
    ratio_on: float = 0.05
    trainable_ratio_on: bool = True
    period_init_min: float = math.e
    period_init_max: float = math.e ** 3
    phase_init_max: float = 100.0
    peepholes: bool = True
    mod_gradient: str = "tf1"
    leak: float = 0.001

    def settings(self):
        """The settings a run records: {name: value}, sorted by name (JSON-able)."""
        return dict(sorted(dataclasses.asdict(self).items()))

    @classmethod
    def from_settings(cls, settings, unrecorded=None):
        """The config of a run from the settings it recorded (a checkpoint's or results.json's).

        Args:
          settings: {name: value}; names that are no field are ignored.
          unrecorded: {name: value} for settings older runs did not record: the value they ran
            with (RESUME_UNRECORDED by default). Fields in neither keep their defaults.

        Returns:
          (the FrequencyConfig, the names of the fields that kept their defaults).
        """
        unrecorded = RESUME_UNRECORDED if unrecorded is None else unrecorded
        known = {**unrecorded, **settings}
        names = [field.name for field in dataclasses.fields(cls)]
        return (cls(**{name: known[name] for name in names if name in known}),
                [name for name in names if name not in known])


# name: makes the cell from a FrequencyConfig and the leak tensor (which only the Phased LSTM
# uses). TensorFlow's LSTMCell adds a forget bias of 1 to the gate; the authors' biases start at 0.
MODELS = {
    "PhasedLSTMCell": lambda config, leak: PhasedLSTMCell(
        config.num_units, use_peepholes=config.peepholes, leak=leak, ratio_on=config.ratio_on,
        trainable_ratio_on=config.trainable_ratio_on, period_init_min=config.period_init_min,
        period_init_max=config.period_init_max, mod_gradient=config.mod_gradient,
        phase_initializer=tf.compat.v1.random_uniform_initializer(0.0, config.phase_init_max),
        gate_gradient_clip=config.gate_gradient_clip),
    "LSTMCell": lambda config, leak: GateClippedLSTMCell(
        config.num_units, config.gate_gradient_clip, use_peepholes=config.peepholes,
        forget_bias=1.0 if config.gate_biases == "tf" else 0.0),
}
# --gate_biases authors: the authors' input gate bias (their forget, output and cell biases
# start at 0).
AUTHORS_INPUT_GATE_BIAS = -0.1
# Lasagne's leaky_rectify, the authors' head: max(x, 0.01 x).
AUTHORS_HEAD_LEAKINESS = 0.01
# One flag for a whole published configuration; flags given on the command line still win.
PRESETS = {
    # The authors' public code (dannyneil/public_plstm, freq_task.py): per-step gate-gradient
    # clipping at 10, their gate biases and head, validation on 500 sequences.
    "authors": dict(gate_gradient_clip=10.0, gate_biases="authors", head="leaky_relu",
                    val_size=500, log_dir="runs_freq_authors/"),
}
FLOAT_FLAGS = ("learning_rate", "checkpoint_every_secs", "ratio_on", "period_init_min",
               "period_init_max", "phase_init_max", "leak", "clip_norm", "gate_gradient_clip")


def define_flags(flag_values):
    """Defines this script's flags (one per FrequencyConfig field but seed) and validators.

    Called on absl's FLAGS when the script runs (and by freq_gradient_norms.py); importing the
    script defines nothing, so that other scripts and tests can import it (with a FlagValues of
    their own to parse).

    Args:
      flag_values: the FlagValues to define them in.
    """
    default = FrequencyConfig()
    fv = dict(flag_values=flag_values)
    flags.DEFINE_enum("sampling", default.sampling, list(CONDITIONS) + ["all"], "How the sine "
                      "waves are sampled: standard (every 1 ms), high_res (every 0.1 ms), async "
                      "(at random times); all: the three in turn.", **fv)
    flags.DEFINE_enum("model", default.model, list(MODELS), "The recurrent cell.",
                      short_name="m", **fv)
    flags.DEFINE_integer("epochs", default.epochs, "Train each run until this epoch; a larger "
                         "value than a finished run's continues it. --quick: per sampling, see "
                         "--quick.", lower_bound=1, **fv)
    flags.DEFINE_integer("batches_per_epoch", default.batches_per_epoch, "Training batches of "
                         "fresh data per epoch; the validation follows each epoch.",
                         lower_bound=1, **fv)
    flags.DEFINE_integer("batch_size", default.batch_size, "Training sequences per batch (half "
                         "of them from the [5, 6] ms band).", lower_bound=1, **fv)
    flags.DEFINE_integer("seeds", default.seeds, "Train seeds 0 .. seeds-1 in turn, each its own "
                         "run <log_dir>/<sampling>/<model>/seed<k>/. A seed sets the initial "
                         "weights and the data.", lower_bound=1, **fv)
    flags.DEFINE_integer("val_size", default.val_size, "Fresh validation sequences after each "
                         "epoch (their own seed stream). --quick: 500.", lower_bound=1, **fv)
    flags.DEFINE_integer("eval_batch_size", default.eval_batch_size, "Validation sequences per "
                         "batch (memory only; the result is the same).", lower_bound=1, **fv)
    flags.DEFINE_integer("num_units", default.num_units, "Units of the recurrent layer.",
                         lower_bound=1, **fv)
    flags.DEFINE_float("learning_rate", default.learning_rate, "Adam's learning rate, > 0.", **fv)
    flags.DEFINE_float("clip_norm", default.clip_norm, "If > 0, scale each batch's gradients "
                       "down to this global norm at most before Adam's step "
                       "(tf.clip_by_global_norm); 0: no clipping, as the paper.",
                       lower_bound=0.0, **fv)
    flags.DEFINE_float("gate_gradient_clip", default.gate_gradient_clip, "Both models: if > 0, "
                       "clip the gradient of the gates' pre-activations element-wise to [-v, v] "
                       "inside every step, as the authors' code (its --grad_clip, 10); 0: no "
                       "clipping.", lower_bound=0.0, **fv)
    flags.DEFINE_enum("gate_biases", default.gate_biases, ["tf", "authors"], "Both models' "
                      "initial gate biases. tf: TensorFlow's cells (all 0, and LSTMCell adds a "
                      "forget bias of 1.0); authors: input gate -0.1, the others 0, no forget "
                      "bias added.", **fv)
    flags.DEFINE_enum("head", default.head, ["linear", "leaky_relu"], "The output layer before "
                      "the softmax: linear, or 2 units with a leaky rectifier (slope 0.01), as "
                      "the authors' code.", **fv)
    flags.DEFINE_enum("preset", default.preset, list(PRESETS), "authors: train as the paper's "
                      "authors' code does: --gate_gradient_clip 10, --gate_biases authors, "
                      "--head leaky_relu, --val_size 500, --log_dir runs_freq_authors/; flags "
                      "given explicitly override it.", **fv)
    flags.DEFINE_bool("quick", default.quick, "A shorter run: --epochs " + ", ".join(
        f"{s} {e}" for s, e in QUICK["epochs"].items()) + f" and --val_size {QUICK['val_size']} "
        "unless given; nothing else changes. How long it takes, and on which machine: "
        "docs/results_frequency.md (QUICK_NOTE in the script).", **fv)
    script_main.take_over_log_dir(flag_values)
    flags.DEFINE_string("log_dir", default.log_dir, "Folder of the runs: <log_dir>/<sampling>/"
                        "<model>/seed<k>/ holds log.tsv, TensorBoard events, checkpoints/ and "
                        f"results.json; <log_dir>/{PLOT_NAME} and <log_dir>/"
                        f"{RESULTS_TABLE_NAME} the summary.", **fv)
    flags.DEFINE_float("checkpoint_every_secs", default.checkpoint_every_secs, "Save a "
                       "checkpoint this often (also on Ctrl-C, SIGTERM and at the end of a run); "
                       "0: after every batch.", lower_bound=0.0, **fv)
    flags.DEFINE_bool("fresh", default.fresh, "Delete the log, checkpoints and results of each "
                      "run this command trains and start it afresh, instead of resuming.", **fv)
    flags.DEFINE_bool("plot_only", default.plot_only, f"Do not train: redraw <log_dir>/"
                      f"{PLOT_NAME}, <log_dir>/{RESULTS_TABLE_NAME} and each <log_dir>/"
                      f"<sampling>/<model>/{RUN_PLOT_NAME} from the logs in log_dir.", **fv)
    # The Phased LSTM's own settings (the paper's frequency task).
    flags.DEFINE_float("ratio_on", default.ratio_on, "PhasedLSTMCell: initial open ratio r_on, "
                       "in (0, 1].", **fv)
    flags.DEFINE_bool("trainable_ratio_on", default.trainable_ratio_on, "PhasedLSTMCell: "
                      "whether r_on is learned.", **fv)
    flags.DEFINE_float("period_init_min", default.period_init_min, "PhasedLSTMCell (> 0): "
                       "periods start log-uniform in [period_init_min, period_init_max] ms; e "
                       "and e**3 give the paper's tau ~ exp(U(1, 3)).", **fv)
    flags.DEFINE_float("period_init_max", default.period_init_max, "PhasedLSTMCell: see "
                       "period_init_min.", **fv)
    flags.DEFINE_float("phase_init_max", default.phase_init_max, "PhasedLSTMCell: phases s "
                       "start U(0, phase_init_max) ms.", lower_bound=0.0, **fv)
    flags.DEFINE_bool("peepholes", default.peepholes, "Peephole connections from the cell state "
                      "to the gates (both models).", **fv)
    flags.DEFINE_enum("mod_gradient", default.mod_gradient, ["tf1", "exact"], "PhasedLSTMCell: "
                      "how the time gate's (t - s) mod period is differentiated: tf1, TF 1.x's "
                      "rule (the period gets no gradient through the wrap), or exact (the mod's "
                      "own derivative, as runs of this repository made before the rule was "
                      "added).", **fv)
    flags.DEFINE_float("leak", default.leak, "PhasedLSTMCell: slope alpha of the closed time "
                       "gate while training (validation uses 0, as the paper).", lower_bound=0.0,
                       **fv)

    script_main.require_timing_flags(flag_values, FLOAT_FLAGS)
    script_main.refuse_fresh_with_plot_only(flag_values, "runs")


def config_from_flags(flag_values, sampling, seed):
    """The FrequencyConfig of one run of the parsed flags' command.

    --preset's values count where the command line gave none, and then --quick's.

    Args:
      flag_values: the parsed flags (define_flags).
      sampling: the run's sampling, one of CONDITIONS.
      seed: the run's seed.

    Returns:
      A FrequencyConfig.
    """
    names = [field.name for field in dataclasses.fields(FrequencyConfig) if field.name != "seed"]
    values = script_main.flag_dict(flag_values, names, PRESETS)
    if values["quick"]:
        for name, quick in QUICK.items():
            if not flag_values[name].present:
                values[name] = quick[sampling] if isinstance(quick, dict) else quick
    return FrequencyConfig(**values | {"sampling": sampling, "seed": seed})


def configs_from_flags(flag_values):
    """The FrequencyConfig of every run of the parsed flags' command, in the order they train:
    each sampling of --sampling, and in it each seed of --seeds."""
    sampling = flag_values["sampling"].value
    samplings = SAMPLINGS if sampling == "all" else (sampling,)
    return tuple(config_from_flags(flag_values, s, seed) for s in samplings
                 for seed in range(flag_values["seeds"].value))


# Resuming with other values would not continue the same run: they shape the model, the data
# or the optimisation. The rest (epochs, val_size, folders, ...) may change.
RESUME_MUST_MATCH = ("sampling", "model", "seed", "num_units", "peepholes", "ratio_on",
                     "trainable_ratio_on", "period_init_min", "period_init_max",
                     "phase_init_max", "leak", "learning_rate", "clip_norm", "batch_size",
                     "batches_per_epoch", "gate_gradient_clip", "gate_biases", "head")
# Flags added after checkpoints began to record their settings: the value that a checkpoint
# without them trained with (the time gate's mod had its exact derivative until --mod_gradient).
RESUME_UNRECORDED = {"clip_norm": 0.0, "mod_gradient": "exact", "gate_gradient_clip": 0.0,
                     "gate_biases": "tf", "head": "linear"}


def resume_must_match(model):
    """RESUME_MUST_MATCH, and --mod_gradient for the Phased LSTM (the LSTM has no time gate)."""
    return RESUME_MUST_MATCH + (("mod_gradient",) if model == "PhasedLSTMCell" else ())


def authors_gate_biases(getter, name, *args, **kwargs):
    """A variable_scope custom getter that starts the gates' biases as the authors' code: the
    input gate's at AUTHORS_INPUT_GATE_BIAS, the rest at 0 (the cells' own default)."""
    shape = kwargs.get("shape", args[0] if args else None)
    if name.endswith("/mask_gates/bias"):  # PhasedLSTMCell: [input, forget]
        n = shape[0] // 2
        kwargs["initializer"] = tf.compat.v1.constant_initializer(
            [AUTHORS_INPUT_GATE_BIAS] * n + [0.0] * n)
    elif name.endswith("/lstm_cell/bias"):  # LSTMCell: [input, new input, forget, output]
        n = shape[0] // 4
        kwargs["initializer"] = tf.compat.v1.constant_initializer(
            [AUTHORS_INPUT_GATE_BIAS] * n + [0.0] * (3 * n))
    return getter(name, *args, **kwargs)


def run_dir(log_dir, sampling, model, seed):
    return os.path.join(log_dir, sampling, model, f"seed{seed}")


# ---------------------------------------------------------------------------------------------
# Data.

def check_finite(data, what):
    """Raises training.RunError unless the times and values of a make_batch set are finite
    (a NaN or infinite timestamp would make every later output NaN)."""
    for name in ("times", "values"):
        if not np.isfinite(data[name]).all():
            raise training.RunError(f"the {what} hold a NaN or infinite {name[:-1]}; the data "
                                    "generator is broken (experiments/frequency_data.py).")
    return data


def training_batch(seed, step, batch_size, sampling):
    """The training batch of a step: a function of (seed, step) only, so resuming changes
    nothing, and the same signals for every model and sampling."""
    rng = np.random.default_rng([seed, TRAIN_STREAM, step])
    return check_finite(frequency_data.make_batch(rng, batch_size, sampling),
                        f"training batch of step {step}")


def validation_data(seed, epoch, size, sampling):
    """Fresh validation sequences after an epoch, from the seed's validation stream."""
    rng = np.random.default_rng([seed, VALIDATION_STREAM, epoch])
    return check_finite(frequency_data.make_batch(rng, size, sampling),
                        f"validation data of epoch {epoch}")


# ---------------------------------------------------------------------------------------------
# Model.

def last_output(cell, times, values, lengths, forward_only=False):
    """Runs the recurrent layer; returns each sequence's output at its last real step.

    Args:
      cell: a PhasedLSTMCell (gets the times as timestamps) or another RNNCell (gets
        [value, time] as two features).
      times: float32 [batch, steps, 1], in ms; padded steps arbitrary.
      values: float32 [batch, steps, 1].
      lengths: int32 [batch], real steps of each sequence.
      forward_only: for the validation tower of a PhasedLSTMCell built before:
        phased_lstm_rnn's forward_only (the fused kernel's evaluation op; no gradient).

    Returns:
      float32 [batch, num_units].
    """
    if isinstance(cell, PhasedLSTMCell):
        # The whole-sequence path; past its length a sequence's gate is 0, so its state stays.
        _, state = phased_lstm_rnn(cell, times, values, sequence_length=lengths,
                                   forward_only=forward_only)
        if not forward_only:  # the validation tower's path is the same, logged once
            logging.info("%s.", describe_path(cell))
    else:
        inputs = tf.concat([values, times], axis=2)
        _, state = tf.compat.v1.nn.dynamic_rnn(cell, inputs, sequence_length=lengths,
                                               dtype=tf.float32)
    return state.h


class Model:
    """The training graph's inputs and outputs.

    Attributes:
      values, times: placeholders float32 [batch, steps, 1].
      lengths: placeholder int32 [batch].
      labels: placeholder int64 [batch].
      leak: the Phased LSTM's leak, float32 [] with default config.leak; fed 0 to validate.
      cell: the recurrent cell (a PhasedLSTMCell or a GateClippedLSTMCell).
      loss: mean cross-entropy, [].
      accuracy: fraction of correct predictions, [].
      eval_loss, eval_accuracy: the same for validation: for the Phased LSTM, those of a
        validation tower on the same variables whose recurrence keeps nothing for a gradient
        (the same numbers); for the LSTM, the same tensors.
      global_step: int64 [], the number of training batches taken; saved in checkpoints.
      train_op: one Adam step on the batch; increments global_step.
    """

    def __init__(self, config):
        """Builds the graph in the default graph.

        Args:
          config: a FrequencyConfig; its model, cell settings, head and optimisation.
        """
        self._head = config.head
        self.values = tf.compat.v1.placeholder(tf.float32, [None, None, 1], name="values")
        self.times = tf.compat.v1.placeholder(tf.float32, [None, None, 1], name="times")
        self.lengths = tf.compat.v1.placeholder(tf.int32, [None], name="lengths")
        self.labels = tf.compat.v1.placeholder(tf.int64, [None], name="labels")
        self.leak = tf.compat.v1.placeholder_with_default(config.leak, [], name="leak")

        self.cell = cell = MODELS[config.model](config, self.leak)
        getter = authors_gate_biases if config.gate_biases == "authors" else None
        with tf.compat.v1.variable_scope(tf.compat.v1.get_variable_scope(),
                                         custom_getter=getter):
            last = last_output(cell, self.times, self.values, self.lengths)
        self.loss, self.accuracy = self._loss_and_accuracy(last)
        self.eval_loss, self.eval_accuracy = self.loss, self.accuracy
        if isinstance(cell, PhasedLSTMCell):
            # Same variables, same numbers bit for bit; the fused kernel's evaluation op writes
            # no activations for a gradient, which validating on the training tensors would.
            eval_last = last_output(cell, self.times, self.values, self.lengths,
                                    forward_only=True)
            self.eval_loss, self.eval_accuracy = self._loss_and_accuracy(eval_last, reuse=True)

        self.global_step = tf.compat.v1.train.get_or_create_global_step()
        optimizer = tf.compat.v1.train.AdamOptimizer(config.learning_rate)
        grads, variables = zip(*optimizer.compute_gradients(self.loss))
        if config.clip_norm > 0:
            grads, _ = tf.clip_by_global_norm(grads, config.clip_norm)
        self.train_op = optimizer.apply_gradients(zip(grads, variables),
                                                  global_step=self.global_step)

    def _loss_and_accuracy(self, last, reuse=None):
        """The head (variables "logits/", reused by a second tower) and its loss and accuracy."""
        logits = tf.compat.v1.layers.dense(last, NUM_CLASSES, name="logits", reuse=reuse)
        if self._head == "leaky_relu":
            logits = tf.nn.leaky_relu(logits, alpha=AUTHORS_HEAD_LEAKINESS)
        loss = tf.reduce_mean(tf.compat.v1.nn.sparse_softmax_cross_entropy_with_logits(
            labels=self.labels, logits=logits))
        correct = tf.equal(tf.argmax(logits, axis=1), self.labels)
        return loss, tf.reduce_mean(tf.cast(correct, tf.float32))

    def feed(self, data, rows=slice(None)):
        """The feed of a batch from make_batch (or some of its rows, trimmed to their longest)."""
        lengths = data["lengths"][rows]
        steps = int(lengths.max())
        return {self.values: data["values"][rows, :steps], self.times: data["times"][rows, :steps],
                self.lengths: lengths, self.labels: data["labels"][rows].astype(np.int64)}


def evaluate(sess, model, data, batch_size):
    """Loss and accuracy on a set from make_batch, in batches, without the leak.

    Returns:
      (mean loss, accuracy) over the set, as floats.
    """
    return script_main.evaluate(sess, model, lambda rows: model.feed(data, rows),
                                len(data["labels"]), batch_size)


# ---------------------------------------------------------------------------------------------
# Results: table and figure.

def _seed_number(path):
    match = re.fullmatch(r"seed(\d+)", os.path.basename(os.path.dirname(path)))
    return int(match.group(1)) if match else None


def read_validations(log_dir):
    """The validation curves of every run in log_dir.

    Returns:
      {(sampling, model): {seed: (epochs [n], validation accuracies [n])}}, only for runs
      with at least one validation, seeds in order.
    """
    curves = {}
    for sampling in CONDITIONS:
        for model in MODELS:
            pattern = os.path.join(glob.escape(log_dir), sampling, model, "seed*",
                                   training.LOG_NAME)
            paths = sorted((p for p in glob.glob(pattern) if _seed_number(p) is not None),
                           key=_seed_number)
            for path in paths:
                log = training.read_log(path, ("epoch", "test_accuracy"))
                validated = ~np.isnan(log["test_accuracy"])
                if validated.any():
                    curves.setdefault((sampling, model), {})[_seed_number(path)] = (
                        log["epoch"][validated].astype(int), log["test_accuracy"][validated])
    return curves


def _range_text(values):
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"


def results_table(curves):
    """The markdown of results.md from read_validations' curves."""
    lines = [
        "# Frequency discrimination: Phased LSTM against LSTM",
        "",
        "Accuracy (%) on fresh validation data after the last epoch trained (each seed's last "
        "validation), mean ± sample std over seeds (ddof=1; 0 for one seed), beside the "
        "paper's (Neil et al. 2016, Fig. 3: after 70 epochs, 5 seeds). Epochs: the last epoch "
        "validated, as a range when the seeds differ. Chance: "
        f"{100 * frequency_data.chance_accuracy():.2f}% (always answering class 1; two sines: "
        f"{100 * frequency_data.chance_accuracy('two_sines'):.2f}%). The paper gives no table "
        "for the two sines, only curves (Fig. 4a).",
        "",
        "| sampling | model | ours, % | epochs | seeds | paper, % |",
        "|---|---|---|---|---|---|",
    ]
    for sampling in CONDITIONS:
        for model in MODELS:
            runs = curves.get((sampling, model))
            if sampling not in SAMPLINGS and not runs:
                continue
            paper = ("{:.2f} ± {:.2f}".format(*PAPER[(sampling, model)])
                     if (sampling, model) in PAPER else "no table")
            if runs:
                mean, std, _ = over_seeds.mean_std(
                    [100 * float(accuracy[-1]) for _, accuracy in runs.values()])
                ours = f"{mean:.2f} ± {std:.2f}"
                epochs = _range_text([int(epoch[-1]) for epoch, _ in runs.values()])
                seeds = str(len(runs))
            else:
                ours, epochs, seeds = "not run", "", "0"
            lines.append(f"| {SAMPLING_TITLES[sampling]} | {MODEL_TITLES[model]} | {ours} | "
                         f"{epochs} | {seeds} | {paper} |")
    return "\n".join(lines) + "\n"


def plot_summary(log_dir, curves):
    """Draws validation accuracy per epoch: one panel per sampling, one colour per model."""
    # Imported here: only plotting needs matplotlib. Figure + Agg canvas, not pyplot.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    # A panel per sampling that has runs (plot() only draws when one has).
    samplings = [s for s in CONDITIONS if any(curves.get((s, m)) for m in MODELS)]
    figure = Figure(figsize=(5 * len(samplings), 6.2), layout="constrained")
    FigureCanvasAgg(figure)
    panels = np.atleast_1d(figure.subplots(1, len(samplings), sharey=True))
    for axes, sampling in zip(panels, samplings):
        chance = frequency_data.chance_accuracy(sampling)
        for i, model in enumerate(MODELS):
            color = f"C{i}"
            runs = curves.get((sampling, model), {})
            for epochs, accuracy in runs.values():
                axes.plot(epochs, accuracy, color=color, lw=0.7, alpha=0.35)
            if runs:
                all_epochs = np.unique(np.concatenate([e for e, _ in runs.values()]))
                # Mean and sample std over the seeds that reached each epoch.
                mean, std, _ = np.array([
                    over_seeds.mean_std([a[e == epoch][0] for e, a in runs.values()
                                         if epoch in e]) for epoch in all_epochs]).T
                final = np.mean([a[-1] for _, a in runs.values()])
                axes.plot(all_epochs, mean, color=color, lw=2, marker="o" if len(mean) < 20
                          else None, ms=3, label=f"{MODEL_TITLES[model]}: mean ± std of "
                          f"{len(runs)} seed(s), last {final:.1%}")
                axes.fill_between(all_epochs, mean - std, mean + std, color=color, alpha=0.2)
            if (sampling, model) not in PAPER:
                continue
            paper_mean = PAPER[(sampling, model)][0] / 100
            axes.axhline(paper_mean, color=color, lw=1, ls="--",
                         label=f"{MODEL_TITLES[model]}, paper (70 epochs): {paper_mean:.1%}")
        axes.axhline(chance, color="0.5", lw=1, ls=":", label=f"chance ({chance:.0%})")
        axes.set(title=SAMPLING_TITLES[sampling], xlabel="epoch", ylim=(0.4, 1.01))
        axes.set_xlim(left=0)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        # Below the panel: curves may lie anywhere from chance to 100%.
        axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize="small",
                    frameon=False)
    panels[0].set_ylabel("validation accuracy (fresh data, leak 0)")
    questions = [] if samplings == [frequency_data.TWO_SINES] else [
        "Frequency discrimination: is the sine's period in [5, 6] ms?"]
    if frequency_data.TWO_SINES in samplings:
        questions.append("Two sines: are their periods in [5, 6] and [13, 15] ms?")
    figure.suptitle("\n".join(questions + ["(band: ± std over seeds; faint: one seed each)"]))
    path = os.path.join(log_dir, PLOT_NAME)
    training.write_atomically(path, lambda f: figure.savefig(f, format="png", dpi=110),
                               mode="wb")
    return path


def plot(log_dir):
    """Redraws the figure, the table and each (sampling, model)'s per-seed training curves.

    Returns:
      The table's markdown.

    Raises:
      training.RunError: log_dir holds no run with a validation.
    """
    for sampling in CONDITIONS:
        for model in MODELS:
            folder = os.path.join(log_dir, sampling, model)
            logs = [p for p in training.find_logs(folder).values() if _seed_number(p) is not None]
            if any(training.read_log(p, ("step",))["step"].size for p in logs):
                training.plot_curves(
                    folder, os.path.join(folder, RUN_PLOT_NAME),
                    f"Frequency discrimination, {SAMPLING_TITLES[sampling]}: "
                    f"{MODEL_TITLES[model]}, each seed (test = validation on fresh data)",
                    chance=frequency_data.chance_accuracy(sampling))
    curves = read_validations(log_dir)
    if not curves:
        wanted = os.path.join(log_dir, "<sampling>", "<model>", "seed<k>", training.LOG_NAME)
        raise training.RunError(
            f"nothing to plot: no {wanted} with a validation. Train a model for an epoch "
            "first, or pass the --log_dir that holds the runs.")
    table_path = os.path.join(log_dir, RESULTS_TABLE_NAME)
    table = results_table(curves)
    training.write_atomically(table_path, lambda f: f.write(table))
    path = plot_summary(log_dir, curves)
    logging.info("Plotted %s to %s and tabulated them in %s.",
                 ", ".join(f"{s}/{m} ({len(r)} seed(s))" for (s, m), r in curves.items()),
                 path, table_path)
    return table


# ---------------------------------------------------------------------------------------------
# Training.

def make_run(log_dir, config):
    """The loop.Run of one run (a FrequencyConfig)."""
    return loop.Run(run_dir(log_dir, config.sampling, config.model, config.seed),
                    total_steps=config.epochs * config.batches_per_epoch, seed=config.seed,
                    settings=config.settings(), must_match=resume_must_match(config.model),
                    checkpoint_every_secs=config.checkpoint_every_secs,
                    unrecorded=RESUME_UNRECORDED)


def make_task(config):
    """The loop.Task of one run (a FrequencyConfig): its data, model, validation and results."""
    sampling, seed, batches_per_epoch = config.sampling, config.seed, config.batches_per_epoch

    def epoch_of(step):
        return (step - 1) // batches_per_epoch + 1

    def validate(sess, model, step):
        if step % batches_per_epoch:
            return None
        return evaluate(sess, model, validation_data(seed, epoch_of(step), config.val_size,
                                                     sampling), config.eval_batch_size)

    def results(log):
        summary = training.summarize(log, milestones=())
        del summary["test_accuracy_at_step"]
        validated = ~np.isnan(log["test_accuracy"])
        return {"sampling": sampling, "model": config.model, "seed": seed,
                "epochs": summary["steps"] // batches_per_epoch,
                "final_validation_accuracy": summary["final_test_accuracy"],
                "validation_accuracy_per_epoch": {
                    str(int(e)): float(a) for e, a in zip(log["epoch"][validated],
                                                          log["test_accuracy"][validated])},
                **summary}

    clipped = (f"--clip_norm={config.clip_norm:g}" if config.clip_norm
               else "--clip_norm=0: not clipped")
    return loop.Task(
        name=f"{sampling}/{config.model}/seed{seed}", build=lambda: Model(config),
        feed=lambda model, step: model.feed(training_batch(seed, step, config.batch_size,
                                                           sampling)),
        evaluate=validate, results=results, row=lambda step: {"epoch": epoch_of(step)},
        columns=LOG_COLUMNS, eval_tag="validation",
        where=lambda step, total: f"epoch {step // batches_per_epoch} of {config.epochs}, "
                                  f"batch {step} of {total}",
        divergence_advice=script_main.divergence_advice(
            config.learning_rate, f"gradients too large for a step ({clipped}), the time "
            "gate's settings (--leak, --period_init_min, --period_init_max, --ratio_on, "
            "--phase_init_max)",
            "a lower --learning_rate, a --clip_norm (or other settings)"))


def train_all(log_dir, configs):
    """Trains the runs of these FrequencyConfigs in turn; returns the exit status."""
    fresh = configs[0].fresh
    if not fresh:
        # Every run's folder and checkpoint, before any work, so that a problem shows at once.
        for config in configs:
            loop.prepare(make_run(log_dir, config))
    script_main.log_devices()
    if configs[0].quick:
        per_sampling = {config.sampling: config for config in configs}
        logging.info("--quick: %s", ", ".join(
            f"{s}: {c.epochs} epochs of {c.batches_per_epoch} batches, validation on "
            f"{c.val_size}" for s, c in per_sampling.items()))
    table, status = None, 0
    with training.StopSignals() as stop:
        for number, config in enumerate(configs, start=1):
            if stop.requested:
                logging.info("Stopped by %s before run %d of %d. Run the same command again "
                             "to go on.", stop.name, number, len(configs))
                break
            logging.info("Run %d of %d: %s, %s, seed %d.", number, len(configs),
                         config.sampling, config.model, config.seed)
            run = make_run(log_dir, config)
            outcome = loop.train(make_task(config), run, loop.prepare(run, fresh=fresh), stop)
            if outcome.status == "finished":
                summary = script_main.read_results(run)
                logging.info("%s/%s/seed%d: final validation accuracy %s after %s epochs.",
                             config.sampling, config.model, config.seed,
                             summary.get("final_validation_accuracy"), summary.get("epochs"))
            if read_validations(log_dir):
                table = plot(log_dir)
            else:
                logging.info("No validation in %s yet: nothing to plot.", log_dir)
            status = loop.exit_status(outcome)
            if outcome.status == "diverged":
                logging.error("The runs after this one were not started.")
            if outcome.status != "finished":
                break
    if table:
        logging.info("%s", table)
    return status


def main(argv, flag_values=flags.FLAGS):
    """Trains every run of the parsed flags, or with --plot_only draws; returns the exit status.

    Args:
      argv: app.run's argv (no arguments past the program's name).
      flag_values: the parsed flags (define_flags); absl's FLAGS when the script runs.
    """
    configs = configs_from_flags(flag_values)
    command = configs[0]  # log_dir and plot_only: the command's, the same in every run

    def work():
        log_dir = training.check_writable_dir(command.log_dir)
        if command.plot_only:
            logging.info("%s", plot(log_dir))
            return 0
        return train_all(log_dir, configs)

    return script_main.run_main(argv, work)


if __name__ == "__main__":
    __doc__ += f"\nPhasedLSTMCell's recurrence here: {fused_rnn.cached_description()}.\n"
    define_flags(flags.FLAGS)
    app.run(main)
