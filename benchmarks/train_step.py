"""Times one sequential-MNIST training step of each model, in one process, and prints a table.

    python -m benchmarks.train_step                      # batch 256, 784 steps, 32 units
    python -m benchmarks.train_step --repeats 30 --json results.json

Each model is the MNIST script's graph (a recurrent layer over [batch, length, 1] pixels, a dense
softmax head on the last output, Adam) in its own graph and session. The steps are timed
interleaved (one step of every model per round, after warm-up), so that the machine's drift
hits every model alike; the table reports each model's median against BasicLSTMCell's.

Keras 3 rows (`--keras3_backends`, default tensorflow and jax): the Keras 3 PhasedLSTM
(`phased_lstm.keras3`) and keras.layers.LSTM in the same Sequential model, trained with
`train_on_batch` (jit_compile "auto": XLA), timed interleaved in one subprocess per backend by
benchmarks/keras3_train_step.py. Their ratio to keras.layers.LSTM is from within that
subprocess; their ratio to BasicLSTMCell compares across processes.

Peak memory is measured apart, one model per fresh subprocess, Keras 3 rows included
(benchmarks.step_memory): the growth of the process's peak resident set (VmHWM) over a few
training steps, above what it held after a first step, i.e. the memory the training step itself
needs. It varies between runs with what malloc kept from the first step (docs/speed.md, "Where
the time goes"), so the TF 1.x rows also give the bytes that the kernels of one traced step
allocate (TF 1.x step stats): deterministic, and an upper bound of the step's peak tensor
memory.

    python -m benchmarks.train_step --scaling            # the models at other units and lengths

The Phased GRU's rows (`PhasedGRUCell`: under dynamic_rnn, and phased_gru_rnn's TF loop and
fused kernel) time the same step with PhasedGRUCell as the recurrent layer, e.g. its fused
kernel beside BasicLSTMCell:

    python -m benchmarks.train_step --keras3_backends "" \\
        --models "BasicLSTMCell (dynamic_rnn),PhasedGRUCell (phased_gru_rnn: fused kernel)"

`--peepholes` gives PhasedLSTMCell and LSTMCell their peepholes (the TF 1.x cell's full
matrices; the frequency task's setting), e.g. the fused kernel against the TF loop at that task's
size (110 units, batch 32, 122 to 1,216 steps), in one process:

    TF_LOOP="PhasedLSTMCell (phased_lstm_rnn: TF loop)"
    FUSED="PhasedLSTMCell (phased_lstm_rnn: fused kernel)"
    python -m benchmarks.train_step --peepholes --scaling --batch_size 32 \\
        --scaling_sizes 110x122,110x1216 \\
        --scaling_models "BasicLSTMCell (dynamic_rnn),$TF_LOOP,$FUSED"

`--profile` prints where one traced step's kernel time goes (TF 1.x step stats); what it
showed, and the kernel variants tried without gain, are in docs/speed.md ("Where the time goes"),
with their machine.
"""

import collections
import json
import os
import statistics
import subprocess
import sys
import time as clock

import numpy as np
from absl import app, flags

from benchmarks import machine, step_memory
from phased_lstm import PhasedGRUCell, PhasedLSTMCell, fused_rnn, rnn_cell, tf
from phased_lstm.fast_rnn import phased_gru_rnn, phased_lstm_rnn

# Subprocesses run the benchmarks as modules from the repository's root, as the user does.
REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 256, "Examples per training step.", lower_bound=1)
flags.DEFINE_integer("length", 784, "Time steps per sequence (784 = 28 x 28 pixels).",
                     lower_bound=1)
flags.DEFINE_integer("num_units", 32, "Units of the recurrent layer.", lower_bound=1)
flags.DEFINE_integer("repeats", 20, "Timed steps per model.", lower_bound=1)
flags.DEFINE_integer("warmup", 3, "Untimed steps per model first.", lower_bound=0)
flags.DEFINE_list("models", None, "Models to run; default all of MODELS.")
flags.DEFINE_bool("peepholes", False, "PhasedLSTMCell and LSTMCell with peephole connections "
                  "(the Keras models and BasicLSTMCell have none).")
flags.DEFINE_bool("memory", True, "Also measure peak memory (one subprocess per model).")
flags.DEFINE_string("json", None, "Also write the results to this JSON file.")
flags.DEFINE_bool("profile", False, "Instead of timing: trace one step of each model with the "
                  "TF 1.x step stats and print its kernel count and the op types that take the "
                  "most time.")
flags.DEFINE_bool("scaling", False, "Instead of the table at one size: time the models of "
                  "--scaling_models at every size of --scaling_sizes (no memory), each against "
                  "BasicLSTMCell at the same size.")
flags.DEFINE_list("scaling_sizes", ["32x100", "128x100", "512x100", "32x784", "32x2000"],
                  "UNITSxLENGTH sizes for --scaling (batch --batch_size).")
flags.DEFINE_list("scaling_models", None, "Models for --scaling; default BasicLSTMCell, the Keras "
                  "LSTM layer and phased_lstm_rnn's two paths.")
flags.DEFINE_string("_memory_of", None, "Internal: measure one model's memory and print it.")
flags.DEFINE_list("keras3_backends", ["tensorflow", "jax"], "Also time the Keras 3 PhasedLSTM "
                  "and keras.layers.LSTM on these Keras backends, each in a subprocess "
                  "(keras3_train_step.py); empty to skip. A backend that is not installed is "
                  "skipped.")


def _dynamic(make_cell, with_time):
    def build(time, pixels):
        cell = make_cell()
        # dynamic_rnn wants every input with the full batch dimension.
        time = tf.tile(time, [tf.shape(pixels)[0], 1, 1])
        outputs, _ = tf.compat.v1.nn.dynamic_rnn(
            cell, (time, pixels) if with_time else pixels, dtype=tf.float32)
        return outputs[:, -1]
    return build


def _keras_lstm(time, pixels):
    del time
    return tf.keras.layers.LSTM(FLAGS.num_units)(pixels)


def _phased_cell():
    return PhasedLSTMCell(FLAGS.num_units, use_peepholes=FLAGS.peepholes)


def _fast_phased(fused):
    def build(time, pixels):
        outputs, _ = phased_lstm_rnn(_phased_cell(), time, pixels, fused=fused)
        return outputs[:, -1]
    return build


def _gru_cell():
    return PhasedGRUCell(FLAGS.num_units)


def _fast_gru(fused):
    def build(time, pixels):
        outputs, _ = phased_gru_rnn(_gru_cell(), time, pixels, fused=fused)
        return outputs[:, -1]
    return build


FUSED = "PhasedLSTMCell (phased_lstm_rnn: fused kernel)"
GRU_FUSED = "PhasedGRUCell (phased_gru_rnn: fused kernel)"
# Each fused row: the library whose kernel it runs.
FUSED_ROWS = {FUSED: fused_rnn.LSTM, GRU_FUSED: fused_rnn.GRU}

# name: builds the last output [batch, units] from time [1, length, 1] and pixels.
MODELS = {
    "BasicLSTMCell (dynamic_rnn)": _dynamic(lambda: rnn_cell.BasicLSTMCell(FLAGS.num_units),
                                            False),
    "LSTMCell (dynamic_rnn)": _dynamic(
        lambda: rnn_cell.LSTMCell(FLAGS.num_units, use_peepholes=FLAGS.peepholes), False),
    "Keras LSTM layer": _keras_lstm,
    "PhasedLSTMCell (dynamic_rnn)": _dynamic(_phased_cell, True),
    "PhasedLSTMCell (phased_lstm_rnn: TF loop)": _fast_phased(False),
    FUSED: _fast_phased(True),
    "PhasedGRUCell (dynamic_rnn)": _dynamic(_gru_cell, True),
    "PhasedGRUCell (phased_gru_rnn: TF loop)": _fast_gru(False),
    GRU_FUSED: _fast_gru(True),
}
BASELINE = "BasicLSTMCell (dynamic_rnn)"
SCALING_MODELS = [BASELINE, "Keras LSTM layer", "PhasedLSTMCell (phased_lstm_rnn: TF loop)", FUSED,
                  GRU_FUSED]


def build_training_step(name):
    """Builds the model `name` in a new graph; returns (session, train_op)."""
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(0)
        rng = np.random.default_rng(0)
        batch, length = FLAGS.batch_size, FLAGS.length
        pixels = tf.constant(rng.uniform(size=(batch, length, 1)), tf.float32)
        labels = tf.constant(rng.integers(0, 10, batch), tf.int32)
        # One timestamp sequence for the whole batch, as in MNIST (step n at time n).
        time = tf.constant(np.arange(length, dtype=np.float32)[None, :, None])
        # Fed through a placeholder as in training, so constant folding cannot skip work.
        pixels_in = tf.compat.v1.placeholder_with_default(pixels, pixels.shape)
        logits = tf.compat.v1.layers.dense(MODELS[name](time, pixels_in), 10)
        loss = tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, logits)
        train_op = tf.compat.v1.train.AdamOptimizer(1e-3).minimize(loss)
        session = tf.compat.v1.Session(graph=graph)
        session.run(tf.compat.v1.global_variables_initializer())
    return session, train_op


def profile(name, session, train_op, top=8):
    """Prints where one traced training step of `name` spends its time, by op type."""
    options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
    metadata = tf.compat.v1.RunMetadata()
    start = clock.perf_counter()
    session.run(train_op, options=options, run_metadata=metadata)
    wall = clock.perf_counter() - start
    micros, runs = collections.Counter(), collections.Counter()
    for device in metadata.step_stats.dev_stats:
        for node in device.node_stats:
            # timeline_label reads "name = OpType(inputs)".
            op_type = node.timeline_label.split("(")[0].split("=")[-1].strip() or node.node_name
            micros[op_type] += node.all_end_rel_micros
            runs[op_type] += 1
    total = sum(micros.values())
    print(f"\n{name}: {sum(runs.values())} kernel runs ({sum(runs.values()) / FLAGS.length:.0f} "
          f"per time step), {total / 1e3:.0f} ms of kernel time in a {wall:.2f} s traced step")
    for op_type, op_micros in micros.most_common(top):
        print(f"  {op_type:24s} {100 * op_micros / total:5.1f}%  {runs[op_type]:7d} runs  "
              f"{op_micros / runs[op_type]:8.1f} us per run")


def allocated_mib(session, train_op):
    """MiB that the kernels of one traced training step allocate, summed over the step.

    Deterministic, unlike the resident set (which depends on what malloc kept or returned):
    an upper bound of the step's peak tensor memory, near it where most activations live until
    the backward pass.
    """
    options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
    metadata = tf.compat.v1.RunMetadata()
    session.run(train_op, options=options, run_metadata=metadata)
    return sum(memory.total_bytes for device in metadata.step_stats.dev_stats
               for node in device.node_stats for memory in node.memory) / 2.0**20


def measure_memory(name):
    """Peak RSS growth (MiB) of a few training steps of `name`, in a fresh subprocess."""
    args = [sys.executable, "-m", "benchmarks.train_step", f"--_memory_of={name}",
            f"--batch_size={FLAGS.batch_size}", f"--length={FLAGS.length}",
            f"--num_units={FLAGS.num_units}", f"--peepholes={FLAGS.peepholes}"]
    result = subprocess.run(args, capture_output=True, text=True, check=True, cwd=REPOSITORY_ROOT)
    return float(result.stdout.strip().splitlines()[-1])


def _memory_of(name):
    session, train_op = build_training_step(name)
    print(step_memory.growth_mib(lambda: session.run(train_op)))


def keras3_rows(backend):
    """Rows of keras3_train_step.py run with KERAS_BACKEND=backend (None if not installed).

    Its models (PhasedLSTM and keras.layers.LSTM, both Keras 3; on TensorFlow also PhasedLSTM
    in Keras' loop, without the fused kernel) are timed interleaved in
    their own process; this process's models ran before it, so ratios across the two are less
    exact than those within one.
    """
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend, backend)
    probe = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True)
    if probe.returncode != 0:
        print(f"Keras 3 on {backend}: not installed, skipped")
        return None
    env = dict(os.environ, KERAS_BACKEND=backend)
    env.pop("TF_USE_LEGACY_KERAS", None)
    args = [sys.executable, "-m", "benchmarks.keras3_train_step",
            f"--batch_size={FLAGS.batch_size}", f"--length={FLAGS.length}", f"--num_units={FLAGS.num_units}",
            f"--repeats={FLAGS.repeats}", f"--warmup={max(FLAGS.warmup, 1)}"]
    result = subprocess.run(args, capture_output=True, text=True, check=True, env=env,
                            cwd=REPOSITORY_ROOT)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    names = {"PhasedLSTM": f"PhasedLSTM (Keras 3, {backend}: fused kernel)",
             "PhasedLSTM (Keras loop)": f"PhasedLSTM (Keras 3, {backend}: Keras' loop)",
             "LSTM": f"keras.layers.LSTM (Keras 3, {backend})"}
    if report["fused_build"] in ("not available", "none on this backend"):
        names["PhasedLSTM"] = f"PhasedLSTM (Keras 3, {backend}: Keras' loop)"
    rows = []
    for row in report["rows"]:
        # Each model's memory in a process of its own, as measure_memory does for the others.
        peak = None
        if FLAGS.memory:
            measured = subprocess.run(args + [f"--memory_of={row['model']}"], capture_output=True,
                                      text=True, check=True, env=env, cwd=REPOSITORY_ROOT)
            peak = float(measured.stdout.strip().splitlines()[-1])
        rows.append(dict(row, model=names[row["model"]], backend=backend, peak_memory_mib=peak,
                         fused_build=report["fused_build"]))
    return rows


def _check_models(names):
    """Refuses unknown models; returns names less the fused rows whose kernel cannot run,
    saying why (never silently the slower path under a fused row's name)."""
    unknown = [name for name in names if name not in MODELS]
    if unknown:
        raise app.UsageError(f"unknown models {unknown}; choose from {list(MODELS)}")
    for row, library in FUSED_ROWS.items():
        if row in names and not library.available():
            why = (f"{fused_rnn.FUSED_ENV}=0 turns the fused kernel off" if fused_rnn.disabled()
                   else library.unavailable_message(library.failure()))
            print(f"No row '{row}': {why}", flush=True)
            names = [name for name in names if name != row]
    return names


def time_steps(steps):
    """Seconds of FLAGS.repeats training steps of each (session, train_op), interleaved."""
    for session, train_op in steps.values():
        for _ in range(FLAGS.warmup):
            session.run(train_op)
    seconds = {name: [] for name in steps}
    for _ in range(FLAGS.repeats):
        for name, (session, train_op) in steps.items():
            start = clock.perf_counter()
            session.run(train_op)
            seconds[name].append(clock.perf_counter() - start)
    return seconds


def scaling():
    """Prints each model's median step against BasicLSTMCell's, at each of --scaling_sizes."""
    names = _check_models(FLAGS.scaling_models or SCALING_MODELS)
    if BASELINE not in names:
        raise app.UsageError(f"--scaling_models must include {BASELINE}")
    results = []
    for size in FLAGS.scaling_sizes:
        units, length = (int(part) for part in size.split("x"))
        # The model builders read the size from the flags.
        FLAGS.num_units, FLAGS.length = units, length
        steps = {name: build_training_step(name) for name in names}
        seconds = time_steps(steps)
        for session, _ in steps.values():
            session.close()
        medians = {name: statistics.median(seconds[name]) for name in names}
        results.append({"units": units, "length": length, "median_s": medians})
        print(f"units {units}, length {length}: " + ", ".join(
            f"{name} {medians[name]:.3f} s" for name in names), flush=True)
    print(f"\nbatch {FLAGS.batch_size}, {FLAGS.repeats} interleaved steps per model after "
          f"{FLAGS.warmup} warm-up, peepholes {FLAGS.peepholes}, {machine.describe()}, "
          f"TensorFlow {tf.__version__}\n")
    others = [name for name in names if name != BASELINE]
    print("| units | length | BasicLSTMCell s/step | " + " | ".join(
        f"{name} vs BasicLSTMCell" for name in others) + " |")
    print("|---" * (3 + len(others)) + "|")
    for row in results:
        base = row["median_s"][BASELINE]
        print(f"| {row['units']} | {row['length']} | {base:.3f} | " + " | ".join(
            f"{row['median_s'][name] / base:.2f}x" for name in others) + " |")
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump({"settings": {"batch_size": FLAGS.batch_size, "repeats": FLAGS.repeats,
                                    "peepholes": FLAGS.peepholes, "cpu_count": os.cpu_count(),
                                    "tensorflow": tf.__version__},
                       "scaling": results}, f, indent=2)


def main(argv):
    del argv
    if FLAGS._memory_of:
        _memory_of(FLAGS._memory_of)
        return
    if FLAGS.scaling:
        scaling()
        return
    names = _check_models(FLAGS.models or list(MODELS))
    steps = {name: build_training_step(name) for name in names}
    if FLAGS.profile:
        for name, (session, train_op) in steps.items():
            for _ in range(FLAGS.warmup):
                session.run(train_op)
            profile(name, session, train_op)
        return
    seconds = time_steps(steps)
    allocated = {name: allocated_mib(*steps[name]) for name in names}
    memory = {name: measure_memory(name) for name in names} if FLAGS.memory else {}

    base = statistics.median(seconds[BASELINE]) if BASELINE in seconds else None
    base_memory = memory.get(BASELINE)
    rows = []
    keras3 = [row for backend in FLAGS.keras3_backends for row in (keras3_rows(backend) or [])]
    for name in names:
        median = statistics.median(seconds[name])
        rows.append({
            "model": name, "median_s": median, "min_s": min(seconds[name]),
            "max_s": max(seconds[name]), "examples_per_s": FLAGS.batch_size / median,
            "ratio_to_basic_lstm": median / base if base else None,
            "peak_memory_mib": memory.get(name),
            "memory_ratio_to_basic_lstm": (memory[name] / base_memory
                                           if memory and base_memory else None),
            "allocated_mib": allocated[name],
            "allocated_ratio_to_basic_lstm": (allocated[name] / allocated[BASELINE]
                                              if BASELINE in allocated else None),
        })
    for row in keras3:
        peak = row["peak_memory_mib"]
        rows.append(dict(row, examples_per_s=FLAGS.batch_size / row["median_s"],
                         ratio_to_basic_lstm=row["median_s"] / base if base else None,
                         memory_ratio_to_basic_lstm=(peak / base_memory
                                                     if peak is not None and base_memory
                                                     else None),
                         allocated_mib=None, allocated_ratio_to_basic_lstm=None))
    print(f"\nbatch {FLAGS.batch_size}, length {FLAGS.length}, units {FLAGS.num_units}, "
          f"peepholes {FLAGS.peepholes}, {FLAGS.repeats} interleaved steps per model after "
          f"{FLAGS.warmup} warm-up, {machine.describe()}\n")
    header = ("| model | median s/step | min | max | examples/s | vs BasicLSTMCell "
              "| peak step memory MiB | memory vs BasicLSTMCell | allocated MiB/step "
              "| allocated vs BasicLSTMCell |")
    print(header)
    print("|---" * 10 + "|")
    for row in rows:
        print(f"| {row['model']} | {row['median_s']:.3f} | {row['min_s']:.3f} | "
              f"{row['max_s']:.3f} | {row['examples_per_s']:.0f} | "
              f"{_fmt(row['ratio_to_basic_lstm'], '{:.2f}x')} | "
              f"{_fmt(row['peak_memory_mib'], '{:.0f}')} | "
              f"{_fmt(row['memory_ratio_to_basic_lstm'], '{:.2f}x')} | "
              f"{_fmt(row['allocated_mib'], '{:.0f}')} | "
              f"{_fmt(row['allocated_ratio_to_basic_lstm'], '{:.2f}x')} |")
    if keras3:
        print("\nKeras 3 rows: timed in a subprocess per backend (their 'vs BasicLSTMCell' "
              "compares across processes). Within each subprocess, interleaved:")
        for row in keras3:
            print(f"  {row['model']}: {row['ratio_to_keras3_lstm']:.2f}x keras.layers.LSTM on "
                  f"{row['backend']} (first step, compiling: {row['first_step_s']:.1f} s; "
                  f"fused kernel: {row['fused_build']})")
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump({"settings": {"batch_size": FLAGS.batch_size, "length": FLAGS.length,
                                    "num_units": FLAGS.num_units, "repeats": FLAGS.repeats,
                                    "peepholes": FLAGS.peepholes,
                                    "cpu_count": os.cpu_count(),
                                    "tensorflow": tf.__version__},
                       "rows": rows}, f, indent=2)


def _fmt(value, pattern):
    return "n/a" if value is None else pattern.format(value)


if __name__ == "__main__":
    app.run(main)
