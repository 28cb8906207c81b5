"""Sequential MNIST: Phased LSTM against LSTM on images read one pixel per step.

Reproduces the MNIST result of Neil, Pfeiffer and Liu, "Phased LSTM" (NIPS 2016): 28 x 28 images
fed as 784-step sequences of one pixel, classified from the last output. With 32 units a Phased
LSTM learns the task and a plain LSTM does not.

    python mnist_phased_lstm.py -m PhasedLSTMCell
    python mnist_phased_lstm.py -m BasicLSTMCell
    python mnist_phased_lstm.py --plot_only

Each run writes `<log_dir>/<model>/` (log.tsv, TensorBoard events, checkpoints/, results.json)
and redraws `<log_dir>/mnist_curves.png` with every model trained so far. Running the same
command again resumes from the last checkpoint; Ctrl-C or SIGTERM checkpoints and stops.
"""

import dataclasses
import functools
import math
import os
from typing import Optional

from absl import app, flags, logging
import numpy as np

from phased_lstm import PhasedGRUCell, PhasedLSTMCell, PhasedRNNCell, rnn_cell, tf
from experiments import loop, mnist_data, script_main, training
from phased_lstm import fused_rnn
from phased_lstm.event_rnn import event_driven_phased_lstm
from phased_lstm.fast_rnn import describe_path, phased_gru_rnn, phased_lstm_rnn

NUM_PIXELS = mnist_data.NUM_PIXELS
NUM_CLASSES = 10
PLOT_NAME = "mnist_curves.png"
# Test accuracies reported in results.json when these steps were evaluated.
MILESTONES = (1000, 2000)


@dataclasses.dataclass(frozen=True)
class MnistConfig:
    """A command's settings: one field per flag, read once in main() (config_from_flags).

    The defaults are the flags' (and the seeds'). A run saves them, as its settings, with each
    checkpoint and in results.json (`settings()`); resuming compares RESUME_MUST_MATCH of them.
    The flags' help says what each one means.
    """
    model: str = "PhasedLSTMCell"
    steps: int = 10000
    batch_size: int = 256
    num_units: int = 32
    learning_rate: float = 1e-3
    lr_half_life: int = 0
    seed: int = 0
    eval_every: int = 500
    eval_batch_size: int = 1000
    log_dir: str = "runs/"
    data_dir: str = dataclasses.field(default_factory=mnist_data.default_data_dir)
    checkpoint_every_secs: float = 300.0
    fresh: bool = False
    plot_only: bool = False
    ratio_on: float = 0.05
    period_init_min: float = 1.0
    period_init_max: float = 1000.0
    peepholes: bool = False
    leak: float = 0.001
    mod_gradient: str = "tf1"
    event_driven_eval: bool = False
    preset: Optional[str] = None

    def settings(self):
        """The settings a run records: {flag name: value}, sorted by name (JSON-able)."""
        return dict(sorted(dataclasses.asdict(self).items()))

    def timing(self, leak):
        """The phased cells' time-gate arguments; `leak` is the leak tensor."""
        return dict(leak=leak, ratio_on=self.ratio_on, period_init_min=self.period_init_min,
                    period_init_max=self.period_init_max, mod_gradient=self.mod_gradient)


# name: makes the cell from a MnistConfig and the leak tensor (which only phased cells use). A
# cell whose input is (time, features) derives from PhasedRNNCell; run_rnn feeds it the
# timestamps.
MODELS = {
    "BasicLSTMCell": lambda config, leak: rnn_cell.BasicLSTMCell(config.num_units),
    "LSTMCell": lambda config, leak: rnn_cell.LSTMCell(config.num_units,
                                                       use_peepholes=config.peepholes),
    "PhasedLSTMCell": lambda config, leak: PhasedLSTMCell(
        config.num_units, use_peepholes=config.peepholes, **config.timing(leak)),
    "PhasedGRUCell": lambda config, leak: PhasedGRUCell(config.num_units, **config.timing(leak)),
}
# One flag for a whole published configuration; flags given on the command line still win.
PRESETS = {
    # philipperemy/tensorflow-phased-lstm's cell: peepholes, r_on 0.05, tau ~ exp(U(0, 6)).
    "seed_repo": dict(peepholes=True, ratio_on=0.05, period_init_min=1.0,
                      period_init_max=math.exp(6.0)),
}
FLOAT_FLAGS = ("learning_rate", "checkpoint_every_secs", "ratio_on", "period_init_min",
               "period_init_max", "leak")


def define_flags(flag_values):
    """Defines this script's flags (one per MnistConfig field) and their validators.

    Called on absl's FLAGS when the script runs; importing the script defines nothing, so that
    other scripts and tests can import it (with a FlagValues of their own to parse).

    Args:
      flag_values: the FlagValues to define them in.
    """
    default = MnistConfig()
    fv = dict(flag_values=flag_values)
    flags.DEFINE_enum("model", default.model, list(MODELS), "The recurrent cell.",
                      short_name="m", **fv)
    flags.DEFINE_integer("steps", default.steps, "Train until this step; a larger value than a "
                         "finished run's continues it.", lower_bound=1, **fv)
    flags.DEFINE_integer("batch_size", default.batch_size, "Training images per step.",
                         lower_bound=1, **fv)
    flags.DEFINE_integer("num_units", default.num_units, "Units of the recurrent layer.",
                         lower_bound=1, **fv)
    flags.DEFINE_float("learning_rate", default.learning_rate, "Adam's learning rate, > 0.", **fv)
    flags.DEFINE_integer("lr_half_life", default.lr_half_life, "If > 0, Adam's learning rate "
                         "halves every this many steps: learning_rate * 0.5 ** (step / "
                         "lr_half_life). 0: constant, as the seeds.", lower_bound=0, **fv)
    flags.DEFINE_integer("seed", default.seed, "Seeds the initial weights and the order of the "
                         "training batches (epoch e shuffles with seed + e).", lower_bound=0,
                         upper_bound=2**31 - 1, **fv)
    flags.DEFINE_integer("eval_every", default.eval_every, "Evaluate on the whole test set every "
                         "this many steps (and at the last step).", lower_bound=1, **fv)
    flags.DEFINE_integer("eval_batch_size", default.eval_batch_size, "Test images per "
                         "evaluation batch (memory only; the result is the same).",
                         lower_bound=1, **fv)
    script_main.take_over_log_dir(flag_values)
    flags.DEFINE_string("log_dir", default.log_dir, "Folder of the runs: <log_dir>/<model>/ "
                        "holds log.tsv, TensorBoard events, checkpoints/ and results.json; "
                        f"<log_dir>/{PLOT_NAME} the curves.", **fv)
    flags.DEFINE_string("data_dir", default.data_dir, "Folder of mnist.npz; MNIST is downloaded "
                        "there (and checked against its sha256) when missing.", **fv)
    flags.DEFINE_float("checkpoint_every_secs", default.checkpoint_every_secs, "Save a "
                       "checkpoint this often (also on Ctrl-C, SIGTERM and at the end); 0: "
                       "after every step.", lower_bound=0.0, **fv)
    flags.DEFINE_bool("fresh", default.fresh, "Delete this model's log, checkpoints and results "
                      "in log_dir and start afresh, instead of resuming.", **fv)
    flags.DEFINE_bool("plot_only", default.plot_only, f"Do not train: redraw <log_dir>/"
                      f"{PLOT_NAME} from the logs in log_dir.", **fv)
    # The Phased LSTM's own settings.
    flags.DEFINE_float("ratio_on", default.ratio_on, "Phased cells: initial open ratio r_on, in "
                       "(0, 1].", **fv)
    flags.DEFINE_float("period_init_min", default.period_init_min, "Phased cells (> 0): periods "
                       "start log-uniform in [period_init_min, period_init_max] (in steps; "
                       "pixel n is at time n).", **fv)
    flags.DEFINE_float("period_init_max", default.period_init_max, "Phased cells: see "
                       "period_init_min.", **fv)
    flags.DEFINE_bool("peepholes", default.peepholes, "PhasedLSTMCell and LSTMCell: peephole "
                      "connections from the cell state to the gates.", **fv)
    flags.DEFINE_float("leak", default.leak, "Phased cells: slope alpha of the closed time gate "
                       "while training (evaluation uses 0, as the paper).", lower_bound=0.0,
                       **fv)
    flags.DEFINE_enum("mod_gradient", default.mod_gradient, ["tf1", "exact"], "Phased cells: "
                      "how the time gate's (t - s) mod period is differentiated: tf1, TF 1.x's "
                      "rule (the period gets no gradient through the wrap), or exact (the mod's "
                      "own derivative, as runs of this repository made before the rule was "
                      "added).", **fv)
    flags.DEFINE_bool("event_driven_eval", default.event_driven_eval, "PhasedLSTMCell without "
                      "peepholes: evaluate with the event-driven path, which computes only the "
                      "units whose time gate is open (same results, less work; see "
                      "benchmarks/event_driven.py).", **fv)
    flags.DEFINE_enum("preset", default.preset, list(PRESETS), "Phased cells: a published "
                      "configuration. seed_repo: the seed repository's cell (--peepholes, "
                      "--ratio_on 0.05, periods log-uniform in [1, e^6]); flags given "
                      "explicitly override it.", **fv)

    script_main.require_timing_flags(flag_values, FLOAT_FLAGS)
    flags.register_multi_flags_validator(
        ["event_driven_eval", "model", "peepholes"],
        lambda f: not f["event_driven_eval"] or (f["model"] == "PhasedLSTMCell"
                                                 and not f["peepholes"]),
        "--event_driven_eval needs -m PhasedLSTMCell without --peepholes.", **fv)
    script_main.refuse_fresh_with_plot_only(flag_values, "a run")


def config_from_flags(flag_values):
    """The MnistConfig of parsed flags, with --preset's values where the command gave none."""
    names = [field.name for field in dataclasses.fields(MnistConfig)]
    return MnistConfig(**script_main.flag_dict(flag_values, names, PRESETS))


# Resuming with other values would not continue the same run: they shape the model, the data
# order or the optimisation. The rest (steps, eval_every, folders, ...) may change.
RESUME_MUST_MATCH = ("model", "num_units", "peepholes", "ratio_on", "period_init_min",
                     "period_init_max", "leak", "learning_rate", "lr_half_life", "batch_size",
                     "seed")
# Flags added after checkpoints began to record their settings: the value that a checkpoint
# without them trained with (the time gate's mod had its exact derivative until --mod_gradient).
RESUME_UNRECORDED = {"lr_half_life": 0, "mod_gradient": "exact"}


def resume_must_match(model):
    """RESUME_MUST_MATCH, and --mod_gradient for the cells with a time gate."""
    return RESUME_MUST_MATCH + (("mod_gradient",) if model.startswith("Phased") else ())


# ---------------------------------------------------------------------------------------------
# Data.

@functools.lru_cache(maxsize=2)
def _epoch_order(seed, epoch, num_examples):
    return np.random.RandomState(seed + epoch).permutation(num_examples)


def batch_indices(seed, step, num_examples, batch_size):
    """The training images of a step; a function of (seed, step) only, so resuming changes nothing.

    Step s (from 1) takes batch (s - 1) mod B of epoch (s - 1) // B, where B is the number of
    whole batches in an epoch (the ragged end is dropped) and epoch e is the permutation of
    RandomState(seed + e).

    Args:
      seed: the run's seed.
      step: the training step, >= 1.
      num_examples: the training set's size, >= batch_size.
      batch_size: images per batch.

    Returns:
      int [batch_size], indices into the training set.
    """
    epoch, batch = divmod(step - 1, num_examples // batch_size)
    return _epoch_order(seed, epoch, num_examples)[batch * batch_size:(batch + 1) * batch_size]


# ---------------------------------------------------------------------------------------------
# Model.

def run_rnn(cell, time, pixels, forward_only=False):
    """Runs the recurrent layer over the sequences: the one place that chooses how.

    Args:
      cell: an RNNCell; a PhasedRNNCell also gets the timestamps.
      time: float32 [1, 784, 1], each step's timestamp, shared by the batch.
      pixels: float32 [batch, 784, 1].
      forward_only: for an evaluation tower of a phased cell built before: its sequence
        function's forward_only (the fused kernel's evaluation op; no gradient through it).

    Returns:
      outputs, float32 [batch, 784, cell.output_size].
    """
    if isinstance(cell, (PhasedLSTMCell, PhasedGRUCell)):
        # The whole-sequence paths: same variables and results as dynamic_rnn, faster, and
        # fastest with the fused kernels (benchmarks/train_step.py).
        sequence = phased_lstm_rnn if isinstance(cell, PhasedLSTMCell) else phased_gru_rnn
        outputs, _ = sequence(cell, time, pixels, forward_only=forward_only)
        if not forward_only:  # the evaluation tower's path is the same, logged once
            logging.info("%s.", describe_path(cell))
    elif isinstance(cell, PhasedRNNCell):
        # dynamic_rnn wants every input at full batch size.
        time = tf.tile(time, [tf.shape(pixels)[0], 1, 1])
        outputs, _ = tf.compat.v1.nn.dynamic_rnn(cell, (time, pixels), dtype=tf.float32)
    else:
        outputs, _ = tf.compat.v1.nn.dynamic_rnn(cell, pixels, dtype=tf.float32)
    return outputs


class Model:
    """The training graph's inputs and outputs.

    Attributes:
      pixels: placeholder float32 [batch, 784, 1].
      labels: placeholder int64 [batch].
      leak: the phased cells' leak, float32 [] with default config.leak; fed 0 to evaluate.
      loss: mean cross-entropy, [].
      accuracy: fraction of correct predictions, [].
      eval_loss, eval_accuracy: the same for evaluation: for the phased cells, those of an
        evaluation tower on the same variables whose recurrence keeps nothing for a gradient
        (the same numbers; with config.event_driven_eval, the event-driven path's); for the
        others, the same tensors.
      global_step: int64 [], the number of training steps taken; saved in checkpoints.
      learning_rate: float32 [], Adam's learning rate at global_step.
      train_op: one Adam step on the batch; increments global_step.
    """

    def __init__(self, config):
        """Builds the graph in the default graph.

        Args:
          config: a MnistConfig; its model, cell settings and optimisation.
        """
        self.pixels = tf.compat.v1.placeholder(tf.float32, [None, NUM_PIXELS, 1], name="pixels")
        self.labels = tf.compat.v1.placeholder(tf.int64, [None], name="labels")
        self.leak = tf.compat.v1.placeholder_with_default(config.leak, [], name="leak")
        # Pixel n arrives at time n.
        time = tf.constant(np.arange(NUM_PIXELS, dtype=np.float32).reshape(1, NUM_PIXELS, 1))

        cell = MODELS[config.model](config, self.leak)
        outputs = run_rnn(cell, time, self.pixels)  # [batch, 784, units]
        head = tf.compat.v1.layers.Dense(NUM_CLASSES, name="logits")
        self.loss, self.accuracy = self._loss_and_accuracy(head(outputs[:, -1]))
        self.eval_loss, self.eval_accuracy = self.loss, self.accuracy
        if config.event_driven_eval:
            # Same variables, leak 0, only the open units computed: equal up to float rounding.
            _, last_h = event_driven_phased_lstm(cell, time, self.pixels)
            self.eval_loss, self.eval_accuracy = self._loss_and_accuracy(head(last_h))
        elif isinstance(cell, (PhasedLSTMCell, PhasedGRUCell)):
            # Same variables, same numbers bit for bit; the fused kernel's evaluation op writes
            # no activations for a gradient, which evaluating the training tensors would.
            eval_outputs = run_rnn(cell, time, self.pixels, forward_only=True)
            self.eval_loss, self.eval_accuracy = self._loss_and_accuracy(
                head(eval_outputs[:, -1]))

        self.global_step = tf.compat.v1.train.get_or_create_global_step()
        self.learning_rate = tf.constant(config.learning_rate, tf.float32)
        if config.lr_half_life > 0:
            # A function of the step alone, so a resumed run continues the same schedule.
            self.learning_rate = tf.compat.v1.train.exponential_decay(
                config.learning_rate, self.global_step, config.lr_half_life, 0.5)
        optimizer = tf.compat.v1.train.AdamOptimizer(self.learning_rate)
        self.train_op = optimizer.minimize(self.loss, global_step=self.global_step)

    def _loss_and_accuracy(self, logits):
        loss = tf.reduce_mean(tf.compat.v1.nn.sparse_softmax_cross_entropy_with_logits(
            labels=self.labels, logits=logits))
        correct = tf.equal(tf.argmax(logits, axis=1), self.labels)
        return loss, tf.reduce_mean(tf.cast(correct, tf.float32))


def evaluate(sess, model, pixels, labels, batch_size):
    """Loss and accuracy on a whole set, in batches, without the leak.

    Args:
      sess: the session.
      model: the Model.
      pixels: float32 [n, 784, 1].
      labels: int64 [n].
      batch_size: images per batch.

    Returns:
      (mean loss, accuracy) over the n images, as floats.
    """
    return script_main.evaluate(
        sess, model, lambda rows: {model.pixels: pixels[rows], model.labels: labels[rows]},
        len(labels), batch_size)


# ---------------------------------------------------------------------------------------------
# Training.

def plot(log_dir):
    """Redraws <log_dir>/mnist_curves.png from every run's log."""
    path = os.path.join(log_dir, PLOT_NAME)
    names = training.plot_curves(
        log_dir, path, f"Sequential MNIST: {NUM_PIXELS} steps, one pixel per step",
        chance=1.0 / NUM_CLASSES)
    logging.info("Plotted %s to %s.", ", ".join(names), path)


def train(config, log_dir):
    """Trains (or resumes) config.model, evaluates, logs, checkpoints and writes results.json.

    Args:
      config: the MnistConfig.
      log_dir: config.log_dir, checked writable.

    Returns:
      The exit status: 0 when training reached config.steps, 128 + the signal's number when a
      signal stopped it (after a checkpoint), loop.EXIT_DIVERGED when the loss stopped being
      finite.

    Raises:
      training.RunError, mnist_data.MnistDataError: a problem the message explains.
    """
    run = loop.Run(os.path.join(log_dir, config.model), total_steps=config.steps,
                   seed=config.seed, settings=config.settings(),
                   must_match=resume_must_match(config.model),
                   checkpoint_every_secs=config.checkpoint_every_secs,
                   unrecorded=RESUME_UNRECORDED)
    # Before spending time on data and graph: the folder, its checkpoints and their settings.
    resume = loop.prepare(run, fresh=config.fresh)

    script_main.log_devices()
    x_train, y_train, x_test, y_test = mnist_data.load_mnist(config.data_dir)
    if config.batch_size > len(x_train):
        raise training.RunError(f"--batch_size={config.batch_size} is larger than the training "
                                f"set ({len(x_train)} images).")
    y_train, y_test = y_train.astype(np.int64), y_test.astype(np.int64)
    # [10000, 784, 1]; training batches are made per step.
    test_pixels = mnist_data.to_sequences(x_test)

    def feed(model, step):
        batch = batch_indices(config.seed, step, len(x_train), config.batch_size)
        return {model.pixels: mnist_data.to_sequences(x_train[batch]),
                model.labels: y_train[batch]}

    def evaluate_test_set(sess, model, step):
        if step % config.eval_every == 0 or step == config.steps:
            return evaluate(sess, model, test_pixels, y_test, config.eval_batch_size)
        return None

    def results(log):
        return {"model": config.model, **training.summarize(log, MILESTONES)}

    task = loop.Task(
        name=config.model, build=lambda: Model(config), feed=feed, evaluate=evaluate_test_set,
        results=results, where=lambda step, total: f"step {step} of {total}",
        divergence_advice=script_main.divergence_advice(
            config.learning_rate, "the time gate's settings (--leak, --period_init_min, "
            "--period_init_max, --ratio_on), or inputs of a large scale",
            "a lower --learning_rate (or other settings)"))
    with training.StopSignals() as stop:
        outcome = loop.train(task, run, resume, stop)
    if outcome.status == "finished":
        summary = script_main.read_results(run)
        logging.info("%s: final test accuracy %s, best %s at step %s.", config.model,
                     summary.get("final_test_accuracy"), summary.get("best_test_accuracy"),
                     summary.get("best_test_accuracy_step"))
    if training.find_logs(log_dir) and outcome.step > 0:
        plot(log_dir)
    return loop.exit_status(outcome)


def main(argv, flag_values=flags.FLAGS):
    """Trains, or with --plot_only draws, as the parsed flags say; returns the exit status.

    Args:
      argv: app.run's argv (no arguments past the program's name).
      flag_values: the parsed flags (define_flags); absl's FLAGS when the script runs.
    """
    config = config_from_flags(flag_values)

    def work():
        log_dir = training.check_writable_dir(config.log_dir)
        if config.plot_only:
            plot(log_dir)
            return 0
        return train(config, log_dir)

    return script_main.run_main(argv, work, errors=(mnist_data.MnistDataError,))


if __name__ == "__main__":
    __doc__ += (f"\nPhasedLSTMCell's recurrence here: {fused_rnn.cached_description()}."
                f"\nPhasedGRUCell's recurrence here: {fused_rnn.GRU.cached_description()}.\n")
    define_flags(flags.FLAGS)
    app.run(main)
