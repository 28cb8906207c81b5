"""Event-driven against dense Phased LSTM inference (leak 0): multiply-adds and wall time.

    python benchmarks/event_driven.py
    python benchmarks/event_driven.py --units 32,256,1024 --ratios 0.05,0.1 --repeats 3
    python benchmarks/event_driven.py --mnist_checkpoint runs/PhasedLSTMCell/checkpoints

For each number of units and open ratio: one model (MNIST-like: 784 steps of one input, the
timestamp of step n is n, periods log-uniform on [1, 1000], as the TF 1.x cell starts), the same
inputs through `event_driven_phased_lstm` (only the open units), through the same loop with
every unit (dense: the fair baseline, the same kernels doing all the work) and through
`phased_lstm_rnn` (the training path's forward, which also stores what its backward needs),
timed interleaved in one process. The speed-up is dense over event-driven.

Multiply-adds count the gate products, batch x (input_size + units) x 4 units per step for
dense, and the same with only the open units' gate rows for event-driven; the element-wise
work is proportional to them.

With --mnist_checkpoint, it also reports the open fraction of a trained MNIST model, from its
trained periods, phases and open ratios.
"""

import os
import statistics
import sys
import time as clock

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from phased_lstm import PhasedLSTMCell, tf  # noqa: E402
from phased_lstm.event_rnn import event_driven_phased_lstm, open_units  # noqa: E402
from phased_lstm.fast_rnn import phased_lstm_rnn  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("units", ["32", "256", "1024"], "Numbers of units.")
flags.DEFINE_list("ratios", ["0.05", "0.1"], "Open ratios r_on.")
flags.DEFINE_integer("batch_size", 256, "Examples per inference.", lower_bound=1)
flags.DEFINE_integer("length", 784, "Time steps.", lower_bound=1)
flags.DEFINE_integer("repeats", 3, "Timed runs of each path.", lower_bound=1)
flags.DEFINE_string("mnist_checkpoint", None,
                    "A checkpoint (file prefix or folder) of mnist_phased_lstm.py's Phased LSTM.")


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
        _, dense = event_driven_phased_lstm(cell, time, pixels, every_unit=True)
        _, sparse = event_driven_phased_lstm(cell, time, pixels)
        _, counts, _ = open_units(cell, time)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            counts = sess.run(counts)
            # Warm-up, and the equality check against the training path's forward.
            training_h, dense_h, sparse_h = sess.run((training_path, dense, sparse))
            seconds = {"training_path": [], "dense": [], "sparse": []}
            fetches = {"training_path": training_path, "dense": dense, "sparse": sparse}
            for _ in range(FLAGS.repeats):
                for name, fetch in fetches.items():
                    start = clock.perf_counter()
                    sess.run(fetch)
                    seconds[name].append(clock.perf_counter() - start)
    median = {name: statistics.median(times) for name, times in seconds.items()}
    mac_fraction = counts.sum() / (units * length)  # the batch and row width cancel
    return {"units": units, "ratio_on": ratio_on, "open_fraction": mac_fraction,
            "mac_vs_ratio_on": mac_fraction / ratio_on, "training_path_s": median["training_path"],
            "dense_s": median["dense"], "sparse_s": median["sparse"],
            "speedup": median["dense"] / median["sparse"],
            "max_abs_difference": float(max(np.abs(training_h - sparse_h).max(),
                                            np.abs(dense_h - sparse_h).max()))}


def trained_open_fraction(checkpoint, length):
    """Open fraction (k > 0 with leak 0) of a trained MNIST model over steps 0..length-1."""
    if os.path.isdir(checkpoint):
        checkpoint = tf.train.latest_checkpoint(checkpoint)
    names = {name.split("/")[-1]: name for name, _ in tf.train.list_variables(checkpoint)
             if name.split("/")[-1] in ("period", "phase", "ratio_on")}
    value = {key: tf.train.load_variable(checkpoint, name) for key, name in names.items()}
    period = np.maximum(value["period"], 1e-3)
    ratio_on = np.clip(value["ratio_on"], 1e-3, 1.0)
    time = np.arange(length)[:, None]
    phi = np.mod(time - value["phase"], period) / period
    is_open = (phi < ratio_on) & (phi > 0)
    return is_open.mean(), ratio_on.mean(), len(period)


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
        fraction, mean_ratio, units = trained_open_fraction(FLAGS.mnist_checkpoint, FLAGS.length)
        print(f"\nTrained MNIST model ({FLAGS.mnist_checkpoint}, {units} units): open fraction "
              f"{fraction:.3f} over {FLAGS.length} steps; mean trained r_on {mean_ratio:.3f}")


if __name__ == "__main__":
    app.run(main)
