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

import functools
import json
import math
import os
import signal
import sys
import warnings

from absl import app, flags, logging
import numpy as np

from phased_lstm import PhasedGRUCell, PhasedLSTMCell, PhasedRNNCell, rnn_cell, tf
from experiments import loop, mnist_data, training
from phased_lstm import fused_rnn
from phased_lstm.event_rnn import event_driven_phased_lstm
from phased_lstm.fast_rnn import describe_path, phased_gru_rnn, phased_lstm_rnn

NUM_PIXELS = 28 * 28
NUM_CLASSES = 10
PLOT_NAME = "mnist_curves.png"
# Test accuracies reported in results.json when these steps were evaluated.
MILESTONES = (1000, 2000)

FLAGS = flags.FLAGS


def _timing(leak):
    """The phased cells' time-gate settings, from the flags."""
    return dict(leak=leak, ratio_on=FLAGS.ratio_on, period_init_min=FLAGS.period_init_min,
                period_init_max=FLAGS.period_init_max, mod_gradient=FLAGS.mod_gradient)


# name: makes the cell from the flags and the leak tensor (which only phased cells use). A cell
# whose input is (time, features) derives from PhasedRNNCell; run_rnn feeds it the timestamps.
MODELS = {
    "BasicLSTMCell": lambda leak: rnn_cell.BasicLSTMCell(FLAGS.num_units),
    "LSTMCell": lambda leak: rnn_cell.LSTMCell(FLAGS.num_units, use_peepholes=FLAGS.peepholes),
    "PhasedLSTMCell": lambda leak: PhasedLSTMCell(FLAGS.num_units, use_peepholes=FLAGS.peepholes,
                                                  **_timing(leak)),
    "PhasedGRUCell": lambda leak: PhasedGRUCell(FLAGS.num_units, **_timing(leak)),
}

flags.DEFINE_enum("model", "PhasedLSTMCell", list(MODELS), "The recurrent cell.", short_name="m")
flags.DEFINE_integer("steps", 10000, "Train until this step; a larger value than a finished "
                     "run's continues it.", lower_bound=1)
flags.DEFINE_integer("batch_size", 256, "Training images per step.", lower_bound=1)
flags.DEFINE_integer("num_units", 32, "Units of the recurrent layer.", lower_bound=1)
flags.DEFINE_float("learning_rate", 1e-3, "Adam's learning rate, > 0.")
flags.DEFINE_integer("lr_half_life", 0, "If > 0, Adam's learning rate halves every this many "
                     "steps: learning_rate * 0.5 ** (step / lr_half_life). 0: constant, as the "
                     "seeds.", lower_bound=0)
flags.DEFINE_integer("seed", 0, "Seeds the initial weights and the order of the training "
                     "batches (epoch e shuffles with seed + e).", lower_bound=0,
                     upper_bound=2**31 - 1)
flags.DEFINE_integer("eval_every", 500, "Evaluate on the whole test set every this many steps "
                     "(and at the last step).", lower_bound=1)
flags.DEFINE_integer("eval_batch_size", 1000, "Test images per evaluation batch (memory only; "
                     "the result is the same).", lower_bound=1)
# absl.logging defines --log_dir for log files, which it only writes when asked (this script does
# not); the name is taken over for the runs' folder.
delattr(FLAGS, "log_dir")
flags.DEFINE_string("log_dir", "runs/", "Folder of the runs: <log_dir>/<model>/ holds log.tsv, "
                    "TensorBoard events, checkpoints/ and results.json; <log_dir>/" + PLOT_NAME
                    + " the curves.")
flags.DEFINE_string("data_dir", mnist_data.default_data_dir(), "Folder of mnist.npz; MNIST is "
                    "downloaded there (and checked against its sha256) when missing.")
flags.DEFINE_float("checkpoint_every_secs", 300.0, "Save a checkpoint this often (also on "
                   "Ctrl-C, SIGTERM and at the end); 0: after every step.", lower_bound=0.0)
flags.DEFINE_bool("fresh", False, "Delete this model's log, checkpoints and results in log_dir "
                  "and start afresh, instead of resuming.")
flags.DEFINE_bool("plot_only", False, "Do not train: redraw <log_dir>/" + PLOT_NAME + " from "
                  "the logs in log_dir.")
# The Phased LSTM's own settings.
flags.DEFINE_float("ratio_on", 0.05, "Phased cells: initial open ratio r_on, in (0, 1].")
flags.DEFINE_float("period_init_min", 1.0, "Phased cells (> 0): periods start log-uniform in "
                   "[period_init_min, period_init_max] (in steps; pixel n is at time n).")
flags.DEFINE_float("period_init_max", 1000.0, "Phased cells: see period_init_min.")
flags.DEFINE_bool("peepholes", False, "PhasedLSTMCell and LSTMCell: peephole connections from "
                  "the cell state to the gates.")
flags.DEFINE_float("leak", 0.001, "Phased cells: slope alpha of the closed time gate while "
                   "training (evaluation uses 0, as the paper).", lower_bound=0.0)
flags.DEFINE_enum("mod_gradient", "tf1", ["tf1", "exact"], "Phased cells: how the time gate's "
                  "(t - s) mod period is differentiated: tf1, TF 1.x's rule (the period gets no "
                  "gradient through the wrap), or exact (the mod's own derivative, as runs of "
                  "this repository made before the rule was added).")
flags.DEFINE_bool("event_driven_eval", False, "PhasedLSTMCell without peepholes: evaluate with "
                  "the event-driven path, which computes only the units whose time gate is open "
                  "(same results, less work; see benchmarks/event_driven.py).")
# One flag for a whole published configuration; flags given on the command line still win.
PRESETS = {
    # philipperemy/tensorflow-phased-lstm's cell: peepholes, r_on 0.05, tau ~ exp(U(0, 6)).
    "seed_repo": dict(peepholes=True, ratio_on=0.05, period_init_min=1.0,
                      period_init_max=math.exp(6.0)),
}
flags.DEFINE_enum("preset", None, list(PRESETS), "Phased cells: a published configuration. "
                  "seed_repo: the seed repository's cell (--peepholes, --ratio_on 0.05, periods "
                  "log-uniform in [1, e^6]); flags given explicitly override it.")

# First: absl runs validators in order, and the bounds below would let inf through.
training.require_finite_flags(["learning_rate", "checkpoint_every_secs", "ratio_on",
                               "period_init_min", "period_init_max", "leak"])
flags.register_validator("learning_rate", lambda v: v > 0, "--learning_rate must be > 0.")
flags.register_validator("ratio_on", lambda v: 0 < v <= 1, "--ratio_on must be in (0, 1].")
flags.register_validator("period_init_min", lambda v: v > 0, "--period_init_min must be > 0.")
flags.register_multi_flags_validator(
    ["period_init_min", "period_init_max"],
    lambda f: f["period_init_max"] >= f["period_init_min"],
    "--period_init_max must be >= --period_init_min.")
flags.register_multi_flags_validator(
    ["event_driven_eval", "model", "peepholes"],
    lambda f: not f["event_driven_eval"] or (f["model"] == "PhasedLSTMCell" and not f["peepholes"]),
    "--event_driven_eval needs -m PhasedLSTMCell without --peepholes.")
flags.register_multi_flags_validator(
    ["fresh", "plot_only"], lambda f: not (f["fresh"] and f["plot_only"]),
    "--fresh deletes a run and --plot_only trains none; pass one of them.")

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


def apply_preset():
    """Sets the flags of --preset that the command line did not give."""
    for name, value in PRESETS.get(FLAGS.preset, {}).items():
        if not FLAGS[name].present:
            FLAGS[name].value = value


def settings():
    """Every flag of this script as {name: value}."""
    names = [f.name for f in FLAGS.get_key_flags_for_module(sys.modules[__name__])]
    return {name: FLAGS[name].value for name in sorted(names)}


# ---------------------------------------------------------------------------------------------
# Data.

def to_sequences(images):
    """Turns images into pixel sequences.

    Args:
      images: uint8 [n, 28, 28].

    Returns:
      float32 [n, 784, 1] in [0, 1], row by row.
    """
    return (images.reshape(-1, NUM_PIXELS, 1) / np.float32(255.0)).astype(np.float32)


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
      leak: the phased cells' leak, float32 [] with default --leak; fed 0 to evaluate.
      loss: mean cross-entropy, [].
      accuracy: fraction of correct predictions, [].
      eval_loss, eval_accuracy: the same for evaluation: for the phased cells, those of an
        evaluation tower on the same variables whose recurrence keeps nothing for a gradient
        (the same numbers; with --event_driven_eval, the event-driven path's); for the
        others, the same tensors.
      global_step: int64 [], the number of training steps taken; saved in checkpoints.
      learning_rate: float32 [], Adam's learning rate at global_step.
      train_op: one Adam step on the batch; increments global_step.
    """

    def __init__(self, model_name):
        self.pixels = tf.compat.v1.placeholder(tf.float32, [None, NUM_PIXELS, 1], name="pixels")
        self.labels = tf.compat.v1.placeholder(tf.int64, [None], name="labels")
        self.leak = tf.compat.v1.placeholder_with_default(FLAGS.leak, [], name="leak")
        # Pixel n arrives at time n.
        time = tf.constant(np.arange(NUM_PIXELS, dtype=np.float32).reshape(1, NUM_PIXELS, 1))

        cell = MODELS[model_name](self.leak)
        outputs = run_rnn(cell, time, self.pixels)  # [batch, 784, units]
        head = tf.compat.v1.layers.Dense(NUM_CLASSES, name="logits")
        self.loss, self.accuracy = self._loss_and_accuracy(head(outputs[:, -1]))
        self.eval_loss, self.eval_accuracy = self.loss, self.accuracy
        if FLAGS.event_driven_eval:
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
        self.learning_rate = tf.constant(FLAGS.learning_rate, tf.float32)
        if FLAGS.lr_half_life > 0:
            # A function of the step alone, so a resumed run continues the same schedule.
            self.learning_rate = tf.compat.v1.train.exponential_decay(
                FLAGS.learning_rate, self.global_step, FLAGS.lr_half_life, 0.5)
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
    total_loss = total_correct = 0.0
    for start in range(0, len(labels), batch_size):
        feed = {model.pixels: pixels[start:start + batch_size],
                model.labels: labels[start:start + batch_size], model.leak: 0.0}
        loss, accuracy = sess.run([model.eval_loss, model.eval_accuracy], feed)
        n = len(feed[model.labels])
        total_loss += float(loss) * n
        total_correct += round(float(accuracy) * n)
    return total_loss / len(labels), total_correct / len(labels)


# ---------------------------------------------------------------------------------------------
# Training.

def plot(log_dir):
    """Redraws <log_dir>/mnist_curves.png from every run's log."""
    path = os.path.join(log_dir, PLOT_NAME)
    names = training.plot_curves(
        log_dir, path, f"Sequential MNIST: {NUM_PIXELS} steps, one pixel per step",
        chance=1.0 / NUM_CLASSES)
    logging.info("Plotted %s to %s.", ", ".join(names), path)


def train(log_dir):
    """Trains (or resumes) FLAGS.model, evaluates, logs, checkpoints and writes results.json.

    Returns:
      The exit status: 0 when training reached --steps, 128 + the signal's number when a signal
      stopped it (after a checkpoint), loop.EXIT_DIVERGED when the loss stopped being finite.

    Raises:
      training.RunError, mnist_data.MnistDataError: a problem the message explains.
    """
    run = loop.Run(os.path.join(log_dir, FLAGS.model), total_steps=FLAGS.steps, seed=FLAGS.seed,
                   settings=settings(), must_match=resume_must_match(FLAGS.model),
                   checkpoint_every_secs=FLAGS.checkpoint_every_secs,
                   unrecorded=RESUME_UNRECORDED)
    # Before spending time on data and graph: the folder, its checkpoints and their settings.
    resume = loop.prepare(run, fresh=FLAGS.fresh)

    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    logging.info("TensorFlow %s, %s.", tf.__version__,
                 f"GPUs: {', '.join(gpus)}" if gpus else "no GPU: training on the CPU")
    x_train, y_train, x_test, y_test = mnist_data.load_mnist(FLAGS.data_dir)
    if FLAGS.batch_size > len(x_train):
        raise training.RunError(f"--batch_size={FLAGS.batch_size} is larger than the training "
                                f"set ({len(x_train)} images).")
    y_train, y_test = y_train.astype(np.int64), y_test.astype(np.int64)
    test_pixels = to_sequences(x_test)  # [10000, 784, 1]; training batches are made per step.

    def feed(model, step):
        batch = batch_indices(FLAGS.seed, step, len(x_train), FLAGS.batch_size)
        return {model.pixels: to_sequences(x_train[batch]), model.labels: y_train[batch]}

    def evaluate_test_set(sess, model, step):
        if step % FLAGS.eval_every == 0 or step == FLAGS.steps:
            return evaluate(sess, model, test_pixels, y_test, FLAGS.eval_batch_size)
        return None

    def results(log):
        return {"model": FLAGS.model, **training.summarize(log, MILESTONES)}

    task = loop.Task(name=FLAGS.model, build=lambda: Model(FLAGS.model), feed=feed,
                     evaluate=evaluate_test_set, results=results,
                     where=lambda step, total: f"step {step} of {total}")
    with training.StopSignals() as stop:
        outcome = loop.train(task, run, resume, stop)
    if outcome.status == "finished":
        with open(run.results_path, encoding="utf-8") as f:
            summary = json.load(f)
        logging.info("%s: final test accuracy %s, best %s at step %s.", FLAGS.model,
                     summary.get("final_test_accuracy"), summary.get("best_test_accuracy"),
                     summary.get("best_test_accuracy_step"))
    if training.find_logs(log_dir) and outcome.step > 0:
        plot(log_dir)
    return loop.exit_status(outcome)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    # The TF 1.x API is this script's choice; its deprecation notices are noise here.
    tf.get_logger().setLevel("ERROR")
    warnings.filterwarnings("ignore", message=r"`tf\.\S+` is deprecated", category=UserWarning)
    apply_preset()
    try:
        log_dir = training.check_writable_dir(FLAGS.log_dir)
        if FLAGS.plot_only:
            plot(log_dir)
            return 0
        return train(log_dir)
    except (training.RunError, mnist_data.MnistDataError) as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        logging.warning("Interrupted; no new checkpoint. Run the same command again to resume "
                        "from the last one.")
        return 128 + signal.SIGINT


if __name__ == "__main__":
    __doc__ += (f"\nPhasedLSTMCell's recurrence here: {fused_rnn.cached_description()}."
                f"\nPhasedGRUCell's recurrence here: {fused_rnn.GRU.cached_description()}.\n")
    app.run(main)
