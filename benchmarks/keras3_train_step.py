"""Times one sequential-MNIST training step of the Keras 3 PhasedLSTM and keras.layers.LSTM.

Runs on the Keras backend that KERAS_BACKEND selects, both models in one process, timed
interleaved after warm-up (the same protocol as train_step.py), and prints one JSON object:

    KERAS_BACKEND=jax python -m benchmarks.keras3_train_step --repeats 20

Each model is what a Keras 3 user writes: Sequential([Input((length, 1)), recurrent layer,
Dense(10)]), compiled with Adam 1e-3 and sparse softmax cross-entropy (jit_compile "auto":
XLA on TensorFlow and JAX), one `train_on_batch` per step. The Phased LSTM's timestamps are the
step index. train_step.py runs this once per backend and adds the rows to its table.

On TensorFlow the PhasedLSTM runs the fused kernel where it can (phased_lstm.fused_rnn), on JAX
the same C++ as XLA custom calls (phased_lstm.jax_ffi); "PhasedLSTM (Keras loop)" is the same
layer traced with PHASED_LSTM_FUSED=0, Keras' own loop.
"""

import contextlib
import json
import os
import statistics
import time as clock
from unittest import mock

import numpy as np
from absl import app, flags

import keras

from benchmarks import step_memory
from phased_lstm.keras3 import PhasedLSTM

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 256, "Examples per training step.", lower_bound=1)
flags.DEFINE_integer("length", 784, "Time steps per sequence.", lower_bound=1)
flags.DEFINE_integer("num_units", 32, "Units of the recurrent layer.", lower_bound=1)
flags.DEFINE_integer("repeats", 20, "Timed steps per model.", lower_bound=1)
flags.DEFINE_integer("warmup", 3, "Untimed steps per model first (the first compiles).",
                     lower_bound=1)
flags.DEFINE_string("memory_of", None, "Instead of timing: measure one model's step memory "
                    "(benchmarks.step_memory, in this process alone) and print it in MiB.")

MODELS = {
    "PhasedLSTM": lambda units: PhasedLSTM(units),
    "LSTM": lambda units: keras.layers.LSTM(units),
}
if keras.backend.backend() in ("tensorflow", "jax"):  # the backends with a fused kernel
    MODELS["PhasedLSTM (Keras loop)"] = MODELS["PhasedLSTM"]


def _path(name):
    """The context a model is built and traced in: the Keras loop row turns the kernel off."""
    if name.endswith("(Keras loop)"):
        return mock.patch.dict(os.environ, {"PHASED_LSTM_FUSED": "0"})
    return contextlib.nullcontext()


def build(name):
    with _path(name):
        model = keras.Sequential([keras.Input((FLAGS.length, 1)), MODELS[name](FLAGS.num_units),
                                  keras.layers.Dense(10)])
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def fused_build():
    """Which build of the fused kernel this backend's PhasedLSTM runs, or why none."""
    backend = keras.backend.backend()
    # Imported here: each module loads its framework's kernel library.
    if backend == "tensorflow":
        from phased_lstm import fused_rnn  # pylint: disable=import-outside-toplevel
        library = fused_rnn.LSTM
    elif backend == "jax":
        from phased_lstm import jax_ffi  # pylint: disable=import-outside-toplevel
        library = jax_ffi.LIBRARY
    else:
        return "none on this backend"
    if not library.available():
        return "not available"
    return f"{library.loaded_build().rung.name} build"


def main(argv):
    del argv
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    pixels = rng.uniform(size=(FLAGS.batch_size, FLAGS.length, 1)).astype(np.float32)
    labels = rng.integers(0, 10, FLAGS.batch_size).astype(np.int32)
    if FLAGS.memory_of:
        if FLAGS.memory_of not in MODELS:
            raise app.UsageError(f"unknown model {FLAGS.memory_of!r}; choose from {list(MODELS)}")
        model = build(FLAGS.memory_of)
        with _path(FLAGS.memory_of):  # the first step traces the model
            print(step_memory.growth_mib(lambda: model.train_on_batch(pixels, labels)))
        return
    models = {name: build(name) for name in MODELS}
    compile_s = {}
    for name, model in models.items():
        start = clock.perf_counter()
        with _path(name):  # the first step traces the model
            model.train_on_batch(pixels, labels)
        compile_s[name] = clock.perf_counter() - start
        for _ in range(FLAGS.warmup - 1):
            model.train_on_batch(pixels, labels)
    seconds = {name: [] for name in models}
    for _ in range(FLAGS.repeats):
        for name, model in models.items():
            start = clock.perf_counter()
            model.train_on_batch(pixels, labels)
            seconds[name].append(clock.perf_counter() - start)
    lstm = statistics.median(seconds["LSTM"])
    rows = [{"model": name, "median_s": statistics.median(s), "min_s": min(s), "max_s": max(s),
             "first_step_s": compile_s[name],
             "ratio_to_keras3_lstm": statistics.median(s) / lstm}
            for name, s in seconds.items()]
    print(json.dumps({"backend": keras.backend.backend(), "keras": keras.__version__,
                      "fused_build": fused_build(), "rows": rows}))


if __name__ == "__main__":
    app.run(main)
