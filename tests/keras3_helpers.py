"""Runs the Keras 3 PhasedLSTM on the current Keras backend: outputs and gradients as NumPy.

Used in the test process (TensorFlow backend) and as a script in subprocesses with another
KERAS_BACKEND:

    KERAS_BACKEND=jax python tests/keras3_helpers.py case.npz result.npz

case.npz holds the TF 1.x variables (keys as numpy_reference.PARAM_NAMES), "times"
[batch, steps, 1], "x" [batch, steps, input_size], "r_out" and "r_c" (the loss weights), and
the settings "peep", "mod_gradient", "training", "inference_leak" (NaN: None). The loss is
sum(outputs * r_out) + sum(c * r_c); the result holds "outputs", "h", "c", "loss" and the
gradient of the loss for every TF 1.x variable ("grad/<name>") and for x ("grad/x").

    KERAS_BACKEND=jax python tests/keras3_helpers.py --refusals

prints, as JSON, what the layer and the cell do with NaN and infinite settings and timestamps
(`refusals`).
"""

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
from keras import ops  # noqa: E402

from phased_lstm.keras3 import TF1_VARIABLE_NAMES, PhasedLSTM, PhasedLSTMCell  # noqa: E402,E501

SETTINGS = ("peep", "mod_gradient", "training", "inference_leak")


def run_case(case):
    """Runs one case (a dict as case.npz holds it); returns the result dict."""
    params = {name: np.asarray(case[name]) for name in TF1_VARIABLE_NAMES}
    x, r_out, r_c = (np.asarray(case[k], np.float32) for k in ("x", "r_out", "r_c"))
    times = np.asarray(case["times"])
    inference_leak = float(case["inference_leak"])
    layer = PhasedLSTM(r_c.shape[-1], use_peepholes=bool(case["peep"]),
                       mod_gradient=str(case["mod_gradient"]), return_sequences=True,
                       return_state=True,
                       inference_leak=None if np.isnan(inference_leak) else inference_leak)
    layer.build([x.shape, times.shape])
    layer.cell.set_tf1_weights(params)
    training = bool(case["training"])
    backend = keras.backend.backend()
    names = list(TF1_VARIABLE_NAMES)
    variables = [getattr(layer.cell, TF1_VARIABLE_NAMES[name]) for name in names]
    # The times keep their dtype (float64 where the backend has it).
    times_t = ops.convert_to_tensor(times)

    def loss_of(outputs, c):
        return (ops.sum(outputs * ops.convert_to_tensor(r_out))
                + ops.sum(c * ops.convert_to_tensor(r_c)))

    if backend == "tensorflow":
        import tensorflow as tf

        x_t = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x_t)
            outputs, h, c = layer([x_t, times_t], training=training)
            loss = loss_of(outputs, c)
        grads = tape.gradient(loss, [v.value for v in variables] + [x_t])
    elif backend == "jax":
        import jax

        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]
        index = {id(v): i for i, v in enumerate(layer.trainable_variables)}

        def forward(trainable, x_in):
            (outputs, h, c), _ = layer.stateless_call(trainable, non_trainable, [x_in, times_t],
                                                      training=training)
            return loss_of(outputs, c), (outputs, h, c)

        (loss, (outputs, h, c)), (d_vars, d_x) = jax.value_and_grad(
            forward, argnums=(0, 1), has_aux=True)(trainable, ops.convert_to_tensor(x))
        grads = [d_vars[index[id(v)]] for v in variables] + [d_x]
    elif backend == "torch":
        import torch

        x_t = torch.tensor(x, requires_grad=True)
        outputs, h, c = layer([x_t, times_t], training=training)
        loss = loss_of(outputs, c)
        torch_vars = [v.value for v in variables]
        grads = torch.autograd.grad(loss, torch_vars + [x_t])
    else:
        raise ValueError(f"unsupported backend {backend}")
    result = {"outputs": outputs, "h": h, "c": c, "loss": loss}
    result.update({f"grad/{name}": g for name, g in zip(names + ["x"], grads)})
    result = {k: ops.convert_to_numpy(v) for k, v in result.items()}
    result["time_dtype"] = np.array(keras.backend.standardize_dtype(times_t.dtype))
    result["backend"] = np.array(backend)
    return result


TIMING_ARGUMENTS = ("leak", "inference_leak", "alpha", "ratio_on", "period_init_min",
                    "period_init_max")
NON_FINITE = ("nan", "inf", "-inf")
# One bad timestamp: example 0, step 2 of 5.
BAD_EXAMPLE, BAD_STEP, STEPS = 0, 2, 5


def _error_of(run):
    """'<type>: <message>' of what run() raises, or None."""
    try:
        run()
    except Exception as error:  # pylint: disable=broad-except  (the test reads type and text)
        return f"{type(error).__name__}: {error}"
    return None


def _times(bad):
    times = np.arange(2 * STEPS, dtype=np.float32).reshape(2, STEPS)
    times[BAD_EXAMPLE, BAD_STEP] = float(bad)
    return times


def _nan_steps(outputs):
    """[batch][steps]: whether any unit's output is NaN there."""
    return np.isnan(ops.convert_to_numpy(outputs)).any(axis=-1).tolist()


def _compiled(bad):
    """{name: NaN steps, or the error} of the layer run where the backend compiles it."""
    x = np.ones((2, STEPS, 1), np.float32)
    good = _times(0.0)
    backend = keras.backend.backend()
    results = {}
    if backend == "tensorflow":
        import tensorflow as tf

        for name, jit in (("tf.function", False), ("XLA", True)):
            # unroll: Keras' loop, which XLA compiles (the fused kernel it cannot).
            layer = PhasedLSTM(3, return_sequences=True, unroll=jit)
            layer([x, good])  # variables made outside the compiled function

            def run(layer=layer, jit=jit):  # bound now: the loop moves on
                step = tf.function(lambda a, b: layer([a, b]), jit_compile=jit)
                return step(x, _times(bad))
            outputs = []
            results[name] = _error_of(lambda: outputs.append(run())) or _nan_steps(outputs[0])
    elif backend == "jax":
        import jax

        layer = PhasedLSTM(3, return_sequences=True)
        layer([x, good])
        step = jax.jit(lambda trainable, non_trainable, a, b: layer.stateless_call(
            trainable, non_trainable, [a, b])[0])
        results["jax.jit"] = _nan_steps(step([v.value for v in layer.trainable_variables],
                                             [v.value for v in layer.non_trainable_variables],
                                             x, _times(bad)))
    return results


def refusals():
    """What the Keras 3 layer and cell do with non-finite settings and timestamps, on the
    current backend: {case: '<error type>: <message>', None (nothing raised), or the NaN
    steps of a compiled run}."""
    results = {}
    for name in TIMING_ARGUMENTS:
        for value in NON_FINITE:
            results[f"PhasedLSTM({name}={value})"] = _error_of(
                lambda: PhasedLSTM(4, **{name: float(value)}))
            if name != "alpha":
                results[f"PhasedLSTMCell({name}={value})"] = _error_of(
                    lambda: PhasedLSTMCell(4, **{name: float(value)}))
    x = np.ones((2, STEPS, 1), np.float32)
    for bad in ("nan", "inf", "-inf", "0"):
        times = _times(bad)
        results[f"PhasedLSTM times {bad}"] = _error_of(
            lambda: PhasedLSTM(3)([x, times]))
        # The cell alone, in Keras' RNN: the timestamp is the step input's last column.
        outputs = []
        results[f"RNN(PhasedLSTMCell) times {bad}"] = _error_of(
            lambda: outputs.append(keras.layers.RNN(PhasedLSTMCell(3), return_sequences=True)(
                np.concatenate([x, times[:, :, None]], axis=-1)))) or _nan_steps(outputs[0])
        results.update({f"{name} times {bad}": outcome
                        for name, outcome in _compiled(bad).items()})
    return results


def main(argv):
    if argv[1:] == ["--refusals"]:
        print(json.dumps(refusals()))
        return
    with np.load(argv[1]) as case:
        case = dict(case)
    np.savez(argv[2], **run_case(case))


if __name__ == "__main__":
    main(sys.argv)
