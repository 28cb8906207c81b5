"""Event-driven against dense Phased LSTM inference (leak 0): multiply-adds and wall time.

    python -m benchmarks.event_driven            # from the repository's root
    python -m benchmarks.event_driven --units 32,256,1024 --ratios 0.05,0.1 --repeats 3
    python -m benchmarks.event_driven --mnist_checkpoint runs/PhasedLSTMCell/checkpoints

For each number of units and open ratio: one model (MNIST-like: 784 steps of one input, the
timestamp of step n is n, periods log-uniform on [1, 1000], as the TF 1.x cell starts), the same
inputs through `event_driven_phased_lstm` (only the open units), through the same loop with
every unit (dense: the fair baseline, the same kernels doing all the work) and through
`phased_lstm_rnn` (the training path's forward, which also stores what its backward needs),
timed interleaved in one process. The speed-up is dense over event-driven.

Multiply-adds count the gate products, batch x (input_size + units) x 4 units per step for
dense, and the same with only the open units' gate rows for event-driven; the element-wise
work is proportional to them.

With --mnist_checkpoint, it also restores a trained MNIST model (trained periods, phases and open
ratios, not the initial ones), reports its open fraction, and runs MNIST test images through its
dense and event-driven inference: accuracy of each, largest logit difference, wall time.
"""

import os
import statistics
import time as clock

import numpy as np
from absl import app, flags

from experiments import mnist_data
from phased_lstm import PhasedLSTMCell, tf
from phased_lstm.event_rnn import (event_driven_phased_lstm, gated_lstm_step, open_units,
                                   unit_major_weights)
from phased_lstm.fast_rnn import phased_lstm_rnn

FLAGS = flags.FLAGS
flags.DEFINE_list("units", ["32", "256", "1024"], "Numbers of units.")
flags.DEFINE_list("ratios", ["0.05", "0.1"], "Open ratios r_on.")
flags.DEFINE_integer("batch_size", 256, "Examples per inference.", lower_bound=1)
flags.DEFINE_integer("length", 784, "Time steps.", lower_bound=1)
flags.DEFINE_integer("repeats", 3, "Timed runs of each path.", lower_bound=1)
flags.DEFINE_string("mnist_checkpoint", None,
                    "A checkpoint (file prefix or folder) of mnist_phased_lstm.py's Phased LSTM: "
                    "also report its open fraction and both paths on MNIST test images.")
flags.DEFINE_integer("mnist_images", 1000, "With --mnist_checkpoint: test images to infer.",
                     lower_bound=1)


def dense_unit_major(cell, time, inputs):
    """The baseline: event_driven_phased_lstm's loop computing every unit, without gathers.

    The same unit-major step and weights as the event-driven path, so that the comparison
    measures only the skipped units (a dense pass has no index work to do).

    Returns:
      h after the last step, [batch, units].
    """
    k, _, _ = open_units(cell, time)  # [steps, batch or 1, units], leak 0
    k_units = tf.transpose(k, [0, 2, 1])
    kernel_rows, bias = unit_major_weights(cell)
    inputs_units = tf.transpose(inputs, [1, 2, 0])  # [steps, input_size, batch]
    c0 = h0 = tf.zeros([cell.output_size, tf.shape(inputs)[0]], cell.dtype)

    def step(t, c, h):
        x_h = tf.concat([inputs_units[t], h], axis=0)
        return (t + 1,) + gated_lstm_step(kernel_rows, bias, x_h, c, h, k_units[t])

    _, _, h = tf.while_loop(lambda t, *_: t < tf.shape(inputs)[1], step, (0, c0, h0),
                            parallel_iterations=1)
    return tf.transpose(h)


def time_interleaved(sess, fetches):
    """Runs each fetch FLAGS.repeats times, interleaved; returns {name: median seconds}."""
    seconds = {name: [] for name in fetches}
    for _ in range(FLAGS.repeats):
        for name, fetch in fetches.items():
            start = clock.perf_counter()
            sess.run(fetch)
            seconds[name].append(clock.perf_counter() - start)
    return {name: statistics.median(times) for name, times in seconds.items()}


def compare(units, ratio_on):
    """Builds one model, runs both paths; returns the table row."""
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(0)
        rng = np.random.default_rng(0)
        batch, length = FLAGS.batch_size, FLAGS.length
        pixels = tf.constant(rng.uniform(size=(batch, length, 1)), tf.float32)
        time = tf.constant(np.arange(length, dtype=np.float32)[None, :, None])
        cell = PhasedLSTMCell(units, leak=0.0, ratio_on=ratio_on)
        _, (_, training_path) = phased_lstm_rnn(cell, time, pixels)
        dense = dense_unit_major(cell, time, pixels)
        _, sparse = event_driven_phased_lstm(cell, time, pixels)
        _, counts, _ = open_units(cell, time)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            counts = sess.run(counts)
            # Warm-up, and the equality check against the training path's forward.
            training_h, dense_h, sparse_h = sess.run((training_path, dense, sparse))
            median = time_interleaved(
                sess, {"training_path": training_path, "dense": dense, "sparse": sparse})
    mac_fraction = counts.sum() / (units * length)  # the batch and row width cancel
    return {"units": units, "ratio_on": ratio_on, "open_fraction": mac_fraction,
            "mac_vs_ratio_on": mac_fraction / ratio_on, "training_path_s": median["training_path"],
            "dense_s": median["dense"], "sparse_s": median["sparse"],
            "speedup": median["dense"] / median["sparse"],
            "max_abs_difference": float(max(np.abs(training_h - sparse_h).max(),
                                            np.abs(dense_h - sparse_h).max()))}


def trained_mnist_model(checkpoint, num_images):
    """The trained MNIST model's open fraction, and its inference paths on MNIST test images.

    Rebuilds mnist_phased_lstm.py's graph names (the cell under "rnn", the head "logits"), restores
    the cell and head from `checkpoint` (a file prefix or a folder), and runs the first
    `num_images` test images through `phased_lstm_rnn` (leak 0), the dense loop and the
    event-driven one. Accuracies and logits compare phased_lstm_rnn with event-driven.

    Returns:
      A dict: units, mean trained r_on, open fraction over the 784 steps, the accuracy of
      phased_lstm_rnn and of event-driven, the largest logit difference between them, and the
      three paths' wall times (median of the repeats).
    """
    if os.path.isdir(checkpoint):
        checkpoint = tf.train.latest_checkpoint(checkpoint)
    if not checkpoint:
        raise app.UsageError("--mnist_checkpoint: no checkpoint there; train with "
                             "mnist_phased_lstm.py -m PhasedLSTMCell first")
    units = dict(tf.train.list_variables(checkpoint))["rnn/phased_lstm_cell/period"][0]
    _, _, x_test, y_test = mnist_data.load_mnist()
    pixels_np = (x_test[:num_images].reshape(-1, 784, 1) / np.float32(255.0)).astype(np.float32)
    with tf.Graph().as_default():
        pixels = tf.constant(pixels_np)
        time = tf.constant(np.arange(784, dtype=np.float32)[None, :, None])
        cell = PhasedLSTMCell(units, leak=0.0)
        head = tf.compat.v1.layers.Dense(10, name="logits")
        outputs, _ = phased_lstm_rnn(cell, time, pixels)
        training_path = head(outputs[:, -1])
        dense = head(dense_unit_major(cell, time, pixels))
        sparse = head(event_driven_phased_lstm(cell, time, pixels).h)
        _, counts, _ = open_units(cell, time)
        saver = tf.compat.v1.train.Saver(cell.weights + head.weights)
        with tf.compat.v1.Session() as sess:
            saver.restore(sess, checkpoint)
            counts, ratio_on = sess.run((counts, cell.time_gate.ratio_on))
            training_logits, sparse_logits = sess.run((training_path, sparse))
            seconds = time_interleaved(
                sess, {"training_path": training_path, "dense": dense, "sparse": sparse})
    labels = y_test[:num_images]
    return {"units": units, "mean_ratio_on": float(ratio_on.mean()),
            "open_fraction": counts.sum() / (units * 784),
            "training_path_accuracy": float((training_logits.argmax(1) == labels).mean()),
            "sparse_accuracy": float((sparse_logits.argmax(1) == labels).mean()),
            "max_logit_difference": float(np.abs(training_logits - sparse_logits).max()),
            **{f"{name}_s": median for name, median in seconds.items()}}


def main(argv):
    del argv
    rows = [compare(int(units), float(ratio)) for units in FLAGS.units for ratio in FLAGS.ratios]
    print(f"\nbatch {FLAGS.batch_size}, {FLAGS.length} steps, {FLAGS.repeats} timed runs per "
          f"path (median), {os.cpu_count()} CPU cores, TensorFlow {tf.__version__}\n")
    print("| units | r_on | multiply-adds vs dense | vs r_on x dense | phased_lstm_rnn s | "
          "dense s | event-driven s | speed-up vs dense | max abs difference |")
    print("|---" * 9 + "|")
    for r in rows:
        print(f"| {r['units']} | {r['ratio_on']} | {r['open_fraction']:.3f} | "
              f"{r['mac_vs_ratio_on']:.2f}x | {r['training_path_s']:.3f} | {r['dense_s']:.3f} | "
              f"{r['sparse_s']:.3f} | {r['speedup']:.2f}x | {r['max_abs_difference']:.1e} |")
    if FLAGS.mnist_checkpoint:
        m = trained_mnist_model(FLAGS.mnist_checkpoint, FLAGS.mnist_images)
        print(f"\nTrained MNIST model ({FLAGS.mnist_checkpoint}, {m['units']} units, mean "
              f"trained r_on {m['mean_ratio_on']:.3f}): open fraction {m['open_fraction']:.3f} "
              f"over 784 steps. On the first {FLAGS.mnist_images} test images: accuracy "
              f"{m['training_path_accuracy']:.4f} phased_lstm_rnn, {m['sparse_accuracy']:.4f} "
              f"event-driven; "
              f"largest logit difference {m['max_logit_difference']:.1e}; "
              f"{m['training_path_s']:.3f} s phased_lstm_rnn, {m['dense_s']:.3f} s dense, "
              f"{m['sparse_s']:.3f} s event-driven ({m['dense_s'] / m['sparse_s']:.2f}x "
              f"faster than dense).")


if __name__ == "__main__":
    app.run(main)
