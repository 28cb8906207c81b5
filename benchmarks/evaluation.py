"""Times the scripts' evaluation passes, Phased LSTM against LSTM, and prints a table per task.

    python -m benchmarks.evaluation                      # both tasks, 3 passes per row
    python -m benchmarks.evaluation --tasks freq --repeats 5 --json results.json

Each task runs in its own subprocess (one task's graphs, memory and thread pools do not weigh on
the other's timings), which builds the script's own `Model` from the script's default config, as
a run without flags would, and times whole evaluation passes:

- mnist: mnist_phased_lstm.py's test-set pass, 10,000 images in batches of 1,000 (its
  --eval_batch_size), 784 steps, 32 units: PhasedLSTMCell against BasicLSTMCell. The images are
  random pixels (the pass's cost does not depend on them, and MNIST need not be downloaded).
- freq: freq_phased_lstm.py's validation, 500 fresh high_res sequences in one batch (padded to
  the longest, up to 1,216 steps), 110 units with peepholes: PhasedLSTMCell against the
  script's LSTMCell under dynamic_rnn.

Rows, each a pass over the same data:
- "LSTM, as the script evaluates": the training graph's loss and accuracy tensors.
- "LSTM, graph without a gradient": the same model built without its optimizer, i.e. what an
  evaluation tower would give the LSTM (the scripts do not build one for it).
- "Phased LSTM, training tensors (before)": how the scripts evaluated the Phased LSTM before
  its evaluation tower: the fused kernel's training forward, which writes every step's c and
  gates for a gradient.
- "Phased LSTM, evaluation tower (after)": `Model.eval_loss` and `eval_accuracy`, what the
  scripts run now: the forward-only op. The table says whether its numbers equal the
  training tensors' (they must, bit for bit).

The passes are interleaved (one pass of every row per round, after a warm-up pass) so that the
machine's drift hits every row alike; ratios compare rows of one task. Beside wall time, the
process's CPU time over the pass (all threads): on a machine whose cores other jobs keep busy,
the work a pass costs is clearer in it than in wall time, which then measures mostly the
scheduler. Memory: the MiB that the kernels of one traced batch allocate (TF 1.x step stats),
deterministic.
"""

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time as clock

from absl import app, flags
import numpy as np

from benchmarks import machine

# Subprocesses run the benchmarks as modules from the repository's root, as the user does.
REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = ("mnist", "freq")

FLAGS = flags.FLAGS
flags.DEFINE_list("tasks", list(TASKS), "Tasks to time, each in a subprocess.")
flags.DEFINE_integer("repeats", 3, "Timed passes per row.", lower_bound=1)
flags.DEFINE_integer("mnist_images", 10000, "Test images of the mnist pass.", lower_bound=1)
flags.DEFINE_integer("freq_sequences", 500, "Validation sequences of the freq pass.",
                     lower_bound=1)
flags.DEFINE_string("json", None, "Also write the results to this JSON file.")
flags.DEFINE_string("_task", None, "Internal: time one task in this process, print JSON.")

LSTM_SCRIPT, LSTM_BARE = "LSTM, as the script evaluates", "LSTM, graph without a gradient"
BEFORE, AFTER = ("Phased LSTM, training tensors (before)",
                 "Phased LSTM, evaluation tower (after)")


class Row:
    """One way to evaluate: a session, the (loss, accuracy) tensors and how to feed a batch."""

    def __init__(self, session, fetches, feeds):
        self.session, self.fetches, self.feeds = session, fetches, feeds

    def run_pass(self):
        """(wall seconds, CPU seconds of all threads, [(loss, accuracy) per batch]) of one
        whole pass."""
        start, start_cpu = clock.perf_counter(), clock.process_time()
        values = [self.session.run(self.fetches, feed) for feed in self.feeds]
        return clock.perf_counter() - start, clock.process_time() - start_cpu, values

    def allocated_mib(self):
        """MiB that the kernels of one traced batch allocate (the first batch)."""
        tf = _tf()
        options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
        metadata = tf.compat.v1.RunMetadata()
        self.session.run(self.fetches, self.feeds[0], options=options, run_metadata=metadata)
        return sum(memory.total_bytes for device in metadata.step_stats.dev_stats
                   for node in device.node_stats for memory in node.memory) / 2.0**20


def _tf():
    from phased_lstm import tf  # pylint: disable=import-outside-toplevel
    return tf


def _script(task):
    """The task's script module and its default config (a run without flags)."""
    if task == "mnist":
        import mnist_phased_lstm as script  # pylint: disable=import-outside-toplevel
        return script, script.MnistConfig()
    import freq_phased_lstm as script  # pylint: disable=import-outside-toplevel
    return script, script.FrequencyConfig(sampling="high_res")


def _graph_rows(script, config, lstm_name, data_feeds):
    """The four rows of a task: two models' training graphs, and the LSTM without optimizer."""
    tf = _tf()
    rows = {}
    for name, model_name in ((LSTM_SCRIPT, lstm_name), (BEFORE, "PhasedLSTMCell"),
                             (LSTM_BARE, lstm_name)):
        graph = tf.Graph()
        with graph.as_default():
            tf.compat.v1.set_random_seed(0)
            if name == LSTM_BARE:
                model = _model_without_optimizer(script, config, lstm_name)
            else:
                model = script.Model(dataclasses.replace(config, model=model_name))
            session = tf.compat.v1.Session(graph=graph)
            session.run(tf.compat.v1.global_variables_initializer())
        feeds = data_feeds(model)
        rows[name] = Row(session, [model.loss, model.accuracy], feeds)
        if name == BEFORE:  # the same session and variables: the evaluation tower
            rows[AFTER] = Row(session, [model.eval_loss, model.eval_accuracy], feeds)
    return rows


def _model_without_optimizer(script, config, lstm_name):
    """The script's Model's loss and accuracy, built without the optimizer (no gradient)."""
    tf = _tf()
    cls = script.Model
    # Model.__init__ ends with the optimizer; building with a stand-in optimizer class that
    # builds nothing keeps every tensor before it exactly as the script makes it.

    class NoOptimizer:
        def __init__(self, *args, **kwargs):
            pass

        def minimize(self, *args, **kwargs):
            return tf.no_op()

        def compute_gradients(self, loss):
            return [(None, v) for v in tf.compat.v1.trainable_variables()]

        def apply_gradients(self, *args, **kwargs):
            return tf.no_op()

    original = tf.compat.v1.train.AdamOptimizer
    tf.compat.v1.train.AdamOptimizer = NoOptimizer
    try:
        return cls(dataclasses.replace(config, model=lstm_name))
    finally:
        tf.compat.v1.train.AdamOptimizer = original


def _mnist():
    script, config = _script("mnist")
    rng = np.random.default_rng(0)
    images, batch = FLAGS.mnist_images, config.eval_batch_size
    pixels = rng.random((images, script.NUM_PIXELS, 1), dtype=np.float32)
    labels = rng.integers(0, script.NUM_CLASSES, images).astype(np.int64)

    def data_feeds(model):
        return [{model.pixels: pixels[start:start + batch],
                 model.labels: labels[start:start + batch], model.leak: 0.0}
                for start in range(0, images, batch)]

    settings = dict(images=images, batch=batch, steps=script.NUM_PIXELS,
                    units=config.num_units, peepholes=config.peepholes, lstm="BasicLSTMCell")
    return settings, _graph_rows(script, config, "BasicLSTMCell", data_feeds)


def _freq():
    script, config = _script("freq")
    size, batch = FLAGS.freq_sequences, config.eval_batch_size
    data = script.validation_data(0, 1, size, "high_res")

    def data_feeds(model):
        return [model.feed(data, slice(start, min(start + batch, size))) | {model.leak: 0.0}
                for start in range(0, size, batch)]

    settings = dict(sequences=size, batch=batch, sampling="high_res",
                    longest=int(data["lengths"].max()), units=config.num_units,
                    peepholes=config.peepholes, lstm="LSTMCell")
    return settings, _graph_rows(script, config, "LSTMCell", data_feeds)


def time_task(task):
    """Times the task's rows in this process; returns its results as a dict."""
    settings, rows = (_mnist if task == "mnist" else _freq)()
    for row in rows.values():
        row.run_pass()  # warm-up: graph optimisation, first allocations
    seconds = {name: [] for name in rows}
    cpu_seconds = {name: [] for name in rows}
    values = {}
    for _ in range(FLAGS.repeats):
        for name, row in rows.items():
            elapsed, cpu, values[name] = row.run_pass()
            seconds[name].append(elapsed)
            cpu_seconds[name].append(cpu)
    results = []
    for name, row in rows.items():
        results.append({"row": name, "median_s": statistics.median(seconds[name]),
                        "min_s": min(seconds[name]), "max_s": max(seconds[name]),
                        "median_cpu_s": statistics.median(cpu_seconds[name]),
                        "allocated_mib_per_batch": row.allocated_mib()})
    same = values[AFTER] == values[BEFORE]  # bit for bit, batch by batch
    return {"task": task, "settings": settings, "machine": machine.describe(),
            "load_average": os.getloadavg(), "after_equals_before": same, "rows": results}


def _run_task(task):
    args = [sys.executable, "-m", "benchmarks.evaluation", f"--_task={task}",
            f"--repeats={FLAGS.repeats}", f"--mnist_images={FLAGS.mnist_images}",
            f"--freq_sequences={FLAGS.freq_sequences}"]
    result = subprocess.run(args, capture_output=True, text=True, cwd=REPOSITORY_ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"{task}: {result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _print_table(report):
    rows = {row["row"]: row for row in report["rows"]}
    base = rows[LSTM_SCRIPT]
    print(f"\n{report['task']}: {report['settings']}\n{report['machine']}; load average "
          f"{', '.join(f'{x:.1f}' for x in report['load_average'])} at the end; "
          f"{FLAGS.repeats} interleaved passes per row after one warm-up\n")
    print("| evaluation pass | median s | min | max | vs LSTM as the script | CPU s (median) | "
          "vs LSTM as the script | allocated MiB per batch | vs LSTM as the script |")
    print("|---" * 9 + "|")
    for name, row in rows.items():
        print(f"| {name} | {row['median_s']:.2f} | {row['min_s']:.2f} | {row['max_s']:.2f} | "
              f"{row['median_s'] / base['median_s']:.2f}x | {row['median_cpu_s']:.2f} | "
              f"{row['median_cpu_s'] / base['median_cpu_s']:.2f}x | "
              f"{row['allocated_mib_per_batch']:.0f} | "
              f"{row['allocated_mib_per_batch'] / base['allocated_mib_per_batch']:.2f}x |")
    print(f"\nEvaluation tower's loss and accuracy equal the training tensors' bit for bit: "
          f"{report['after_equals_before']}")


def main(argv):
    del argv
    if FLAGS._task:
        print(json.dumps(time_task(FLAGS._task)))
        return
    unknown = [task for task in FLAGS.tasks if task not in TASKS]
    if unknown:
        raise app.UsageError(f"unknown tasks {unknown}; choose from {list(TASKS)}")
    reports = []
    for task in FLAGS.tasks:
        reports.append(_run_task(task))
        _print_table(reports[-1])
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(reports, f, indent=2)


if __name__ == "__main__":
    app.run(main)
