"""Runs the Keras 3 PhasedLSTM's fused JAX path (phased_lstm.jax_ffi) in a JAX subprocess.

    KERAS_BACKEND=jax python tests/keras3_jax_fused_helpers.py MODE result.npz [case.npz]

MODE:
  compare: the layer through the fused kernel and through Keras' loop (PHASED_LSTM_FUSED=0 when
    traced), under jax.jit: outputs, final states and the gradient of the input and every
    weight, with and without peepholes and a mask, in float32, and in float64 where
    JAX_ENABLE_X64=1. Keys "<case>/<path>/<name>", and "<case>/<path>/ffi" (whether the jitted
    function's jaxpr calls the kernel); path "fused", "loop", and with a mask "fused_nan" (the
    fused path with NaN padding at the masked steps); without a mask "<case>/numpy/output" and
    "<case>/numpy/c", numpy_reference's float64 steps with the layer's weights.
  sequence: jax_ffi.fused_sequence's gradients (float64; JAX_ENABLE_X64=1) for the case in a
    third argument (`sequence`), with gate_gradient_clip and without, k per example and shared.
  fit: one epoch of model.fit, SGD, for two models with the same initial weights, fused and
    Keras' loop: their weights after it, and how often the fused function was traced.
  fit_data_parallel: the same under keras.distribution.DataParallel over every device (the
    test forces two CPU devices with XLA_FLAGS), and the number of devices.
  fallback: what the layer does where the kernel cannot be built (PHASED_LSTM_CXX and
    PHASED_LSTM_KERNEL_CACHE set by the test): JSON with the failure, the outputs' agreement
    with Keras' loop, and whether TensorFlow was imported.
"""

import json
import os
import sys
from unittest import mock

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import keras  # noqa: E402

import numpy_reference as ref  # noqa: E402

from phased_lstm import jax_ffi  # noqa: E402
from phased_lstm.keras3 import PhasedLSTM  # noqa: E402

BATCH, STEPS, INPUT_SIZE, UNITS = 5, 9, 2, 4
FFI_TARGET = "phased_lstm_forward"


def _fused(on):
    return mock.patch.dict(os.environ, {"PHASED_LSTM_FUSED": "1" if on else "0"})


def _inputs(rng, dtype, masked):
    x = rng.normal(size=(BATCH, STEPS, INPUT_SIZE)).astype(dtype)
    times = np.cumsum(rng.uniform(0.5, 3.0, size=(BATCH, STEPS)), axis=1).astype(dtype)
    mask = None
    if masked:
        mask = rng.uniform(size=(BATCH, STEPS)) > 0.3
        mask[0] = False  # an example with no step at all
        mask[1, 6:] = False  # a short one
        x[~mask] = 1e3  # padding that must not reach the state
    return x, times, mask


def _layer_step(layer, times, mask):
    """jit(value_and_grad) of a loss of every output of the layer, of (weights, x)."""
    def loss(weights, x):
        (output, h, c), _ = layer.stateless_call(weights, [], [x, times], mask=mask,
                                                 training=True)
        total = (output ** 2).sum() + (c * 3.0).sum() + h.sum()
        return total, (output, h, c)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))


def compare():
    results = {}
    dtypes = ["float32"] + (["float64"] if jax.config.jax_enable_x64 else [])
    for dtype in dtypes:
        for peep in (False, True):
            for masked in (False, True):
                rng = np.random.default_rng(7)
                x, times, mask = _inputs(rng, dtype, masked)
                layer = PhasedLSTM(UNITS, use_peepholes=peep, return_sequences=True,
                                   return_state=True, ratio_on=0.5, period_init_max=10.0,
                                   dtype=dtype)
                layer([np.zeros_like(x), times])
                weights = [v.value for v in layer.trainable_variables]
                case = f"{dtype}-peep{int(peep)}-mask{int(masked)}"
                if not masked:
                    params = {name: np.asarray(value, np.float64)
                              for name, value in layer.cell.get_tf1_weights().items()}
                    c = h = np.zeros((BATCH, UNITS))
                    outputs = []
                    for s in range(STEPS):
                        c, h = ref.phased_lstm_step(params, times[:, s, None].astype(np.float64),
                                                    x[:, s].astype(np.float64), c, h, peep,
                                                    layer.cell.leak)
                        outputs.append(h)
                    results[f"{case}/numpy/output"] = np.stack(outputs, axis=1)
                    results[f"{case}/numpy/c"] = c
                paths = [("fused", True, x), ("loop", False, x)]
                if masked:  # Keras' loop runs the cell on the padding: NaN gradients there
                    paths.append(("fused_nan", True, np.where(mask[:, :, None], x, np.nan)))
                for name, on, x_in in paths:
                    with _fused(on):
                        step = _layer_step(layer, times, mask)
                        jaxpr = str(jax.make_jaxpr(step)(weights, x_in))
                        (_, (output, h, c)), (d_weights, d_x) = step(weights, x_in)
                    path = f"{case}/{name}"
                    results[f"{path}/ffi"] = FFI_TARGET in jaxpr
                    for name, value in [("output", output), ("h", h), ("c", c), ("x", d_x)] + [
                            (v.name, g) for v, g in zip(layer.trainable_variables, d_weights)]:
                        results[f"{path}/{name}"] = np.asarray(value)
    return results


def packed(params, input_size):
    """jax_ffi's kernel, bias and peepholes from TF 1.x variables (numpy_reference's dict)."""
    rows = input_size + params["new_input/bias"].size
    kernel = np.concatenate([params["mask_gates/kernel"][:rows],
                             params["output_gate/kernel"][:rows], params["new_input/kernel"]], 1)
    bias = np.concatenate([params["mask_gates/bias"], params["output_gate/bias"],
                           params["new_input/bias"]])
    return kernel, bias, params["mask_gates/kernel"][rows:], params["output_gate/kernel"][rows:]


def sequence():
    """Gradients of sum(h * out_weights) through fused_sequence from a zero state, for the case
    the test passes in case.npz: numpy_reference's parameters (with peepholes) and "x",
    "k" and "out_weights", batch-major."""
    with np.load(sys.argv[3]) as case:
        case = dict(case)
    x, k, out_weights = (np.transpose(case[n], (1, 0, 2)) for n in ("x", "k", "out_weights"))
    kernel, bias, w_c_if, w_c_o = packed(case, x.shape[2])
    zeros = np.zeros((x.shape[1], bias.size // 4))
    results = {}

    def loss(x, k, kernel, bias, w_c_if, w_c_o, clip):
        h, _, _ = jax_ffi.fused_sequence(x, k, zeros, zeros, kernel, bias, w_c_if, w_c_o,
                                         gate_gradient_clip=clip)
        return (h * out_weights).sum()

    for clip in (None, 0.5):
        grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4, 5)), static_argnums=6)(
            x, k, kernel, bias, w_c_if, w_c_o, clip)
        for name, grad in zip(("x", "k", "kernel", "bias", "w_c_if", "w_c_o"), grads):
            results[f"clip{clip}/{name}"] = np.asarray(grad)
    # The forward-only handler (no gradient asked) against the saving one (under vjp).
    args = (x, k, zeros, zeros, kernel, bias, w_c_if, w_c_o)
    for name, outputs in (("forward_only", jax_ffi.fused_sequence(*args)),
                          ("forward", jax.vjp(jax_ffi.fused_sequence, *args)[0])):
        for output, value in zip(("h", "c_final", "h_final"), outputs):
            results[f"{name}/{output}"] = np.asarray(value)
    # Under jax.vmap (over a leading axis of two copies) each copy gets its own result.
    mapped = jax.vmap(lambda x: jax_ffi.fused_sequence(x, *args[1:])[0])(np.stack([x, 2 * x]))
    results["vmap/h"] = np.asarray(mapped)
    results["vmap/h_of_2x"] = np.asarray(jax_ffi.fused_sequence(2 * x, *args[1:])[0])
    # A result declared with the wrong shape is refused, not written out of bounds.
    steps, batch, units = x.shape[0], x.shape[1], zeros.shape[1]
    wrong = [jax.ShapeDtypeStruct(shape, x.dtype)
             for shape in ((steps, batch, units + 1), (batch, units), (batch, units))]
    try:
        jax.ffi.ffi_call("phased_lstm_forward_only", wrong)(
            *args, use_peepholes=True, threads=np.int64(1))[0].block_until_ready()
        results["wrong_result_refused"] = np.array(False)
    except Exception as error:  # pylint: disable=broad-except  (XlaRuntimeError)
        results["wrong_result_refused"] = np.array("PhasedLstm: result 0" in str(error))
    # k shared by the batch: its gradient is the sum of the per-example ones.
    shared = k[:, :1]
    for name, k_in in (("shared", shared), ("broadcast", np.repeat(shared, k.shape[1], 1))):
        results[f"{name}/k"] = np.asarray(jax.grad(loss, argnums=1)(
            x, k_in, kernel, bias, w_c_if, w_c_o, None))
    return results


def fit(data_parallel=False):
    if data_parallel:
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=jax.devices()))
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(64, 12, 1)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    models, weights = {}, None
    for on in (True, False):
        keras.utils.set_random_seed(0)
        with _fused(on):
            model = keras.Sequential([keras.Input((12, 1)), PhasedLSTM(6, ratio_on=0.5),
                                      keras.layers.Dense(3)])
        model.compile(keras.optimizers.SGD(0.5),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        if weights is None:
            weights = model.get_weights()
        model.set_weights(weights)
        models[on] = model
    traced = []
    with mock.patch.object(jax_ffi, "fused_sequence",
                           side_effect=lambda *a, **k: traced.append(1) or original(*a, **k)):
        with _fused(True):
            models[True].fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    with _fused(False):
        models[False].fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    results = {"traced": np.array(len(traced)),
               "jit": np.array(bool(models[True].jit_compile)),
               "devices": np.array(len(jax.devices()))}
    for on in (True, False):
        for i, w in enumerate(models[on].get_weights()):
            results[f"{'fused' if on else 'loop'}/{i}"] = w
    return results


original = jax_ffi.fused_sequence


def fallback():
    rng = np.random.default_rng(1)
    x, times, _ = _inputs(rng, "float32", False)
    layer = PhasedLSTM(UNITS, return_sequences=True)
    first = np.asarray(layer([x, times]))
    with _fused(False):
        loop = np.asarray(layer([x, times]))
    failure = jax_ffi.LIBRARY.failure()
    return {"available": jax_ffi.fused_kernel_available(),
            "failure": f"{type(failure).__name__}: {failure}",
            "attempts": [a.outcome for a in getattr(failure, "attempts", ())],
            "same_as_loop": bool(np.array_equal(first, loop)),
            "tensorflow_imported": "tensorflow" in sys.modules}


def main(argv):
    mode, path = argv[1], argv[2]
    if mode == "fallback":
        with open(path, "w") as f:
            json.dump(fallback(), f)
        return
    np.savez(path, **{"compare": compare, "sequence": sequence, "fit": fit,
                      "fit_data_parallel": lambda: fit(data_parallel=True)}[mode]())


if __name__ == "__main__":
    main(sys.argv)
