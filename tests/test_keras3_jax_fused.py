"""The Keras 3 PhasedLSTM's fused path on JAX (phased_lstm.jax_ffi: the C++ kernel as XLA FFI).

Each test runs JAX in a subprocess (tests/keras3_jax_fused_helpers.py; the test process runs
Keras on the TensorFlow backend) and checks what it returns here: the fused path against Keras'
own loop over the same cell, the kernel's gradient against the hand-written NumPy
back-propagation (with the authors' per-step clipping), model.fit, and the fallback where the
library cannot be built.
"""

import json
import os
import tempfile

import numpy as np
import pytest

import numpy_reference as ref
from phased_lstm import kernel_build
from test_keras3 import JAX_MISSING, ROOT, _subprocess

HELPERS = os.path.join(ROOT, "tests", "keras3_jax_fused_helpers.py")
pytestmark = pytest.mark.skipif(JAX_MISSING, reason="jax is not installed")


def _run(mode, extra_env=None, case=None):
    """The helper's results for `mode`: a dict of arrays, or the JSON of mode "fallback"."""
    with tempfile.TemporaryDirectory() as folder:
        result = os.path.join(folder, "result")
        args = [HELPERS, mode, result]
        if case is not None:
            args.append(os.path.join(folder, "case.npz"))
            np.savez(args[-1], **case)
        _subprocess(args, "jax", extra_env=extra_env, timeout=1200)
        if mode == "fallback":
            with open(result) as f:
                return json.load(f)
        with np.load(result + ".npz") as values:
            return dict(values)


def _require_jax_kernel():
    """Skips where the FFI library cannot be built here (no compiler or Eigen); the fallback
    tests below cover that case."""
    out = _subprocess("from phased_lstm import jax_ffi\n"
                      "print(jax_ffi.fused_kernel_available())", "jax", timeout=1200)
    if out.split()[-1] != "True":
        pytest.skip("the XLA FFI library cannot be built on this machine")


@pytest.fixture(scope="module")
def compared():
    _require_jax_kernel()
    return _run("compare", {"JAX_ENABLE_X64": "1"})


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("peep", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_fused_path_matches_keras_loop(compared, dtype, peep, masked):
    case = f"{dtype}-peep{int(peep)}-mask{int(masked)}"
    assert compared[f"{case}/fused/ffi"] and not compared[f"{case}/loop/ffi"]
    names = sorted(key.split("/", 2)[2] for key in compared
                   if key.startswith(f"{case}/fused/") and not key.endswith("/ffi"))
    # The outputs, h, c, and the gradient of x and of every weight (timing ones included).
    assert {"output", "h", "c", "x", "period", "phase", "ratio_on", "new_input_kernel"} <= set(
        names)
    # float32 as the TensorFlow backend's fused test. float64 as well: Keras' loop is not
    # float64-exact on JAX (Keras 3.15's ops.tanh is off by ~1.6e-7 in float64), the kernel is
    # (against NumPy below).
    tolerance = dict(rtol=1e-5, atol=1e-5)
    if dtype == "float64" and not masked:
        for name in ("output", "c"):
            np.testing.assert_allclose(compared[f"{case}/fused/{name}"],
                                       compared[f"{case}/numpy/{name}"], rtol=1e-12,
                                       atol=1e-12, err_msg=f"{case}: {name} against NumPy")
    for name in names:
        fused, loop = compared[f"{case}/fused/{name}"], compared[f"{case}/loop/{name}"]
        assert fused.dtype == np.dtype(dtype), name
        np.testing.assert_allclose(fused, loop, err_msg=f"{case}: {name}", **tolerance)
        if masked:  # NaN padding at the masked steps changes nothing on the fused path
            np.testing.assert_array_equal(compared[f"{case}/fused_nan/{name}"], fused,
                                          err_msg=f"{case}, NaN padding: {name}")


def test_kernel_gradient_matches_the_numpy_back_propagation_with_and_without_clipping():
    _require_jax_kernel()
    rng = np.random.default_rng(3)
    batch, steps, input_size, units = 4, 6, 3, 5
    params = ref.random_phased_lstm_params(rng, input_size, units, use_peepholes=True)
    times = ref.random_times(rng, batch, steps)
    k = np.stack([ref.time_gate(times[:, s], params["period"], params["phase"],
                                params["ratio_on"], 0.001) for s in range(steps)], axis=1)
    case = dict(params, x=rng.normal(size=(batch, steps, input_size)), k=k,
                out_weights=5.0 * rng.normal(size=(batch, steps, units)))
    got = _run("sequence", {"JAX_ENABLE_X64": "1"}, case)
    rows = input_size + units
    for clip in (None, 0.5):
        want = ref.clipped_weight_gradients(params, times, case["x"], case["out_weights"], True,
                                            0.001, clip)
        kernel, bias = got[f"clip{clip}/kernel"], got[f"clip{clip}/bias"]
        as_tf1 = {
            "mask_gates/kernel": np.concatenate([kernel[:, :2 * units],
                                                 got[f"clip{clip}/w_c_if"]]),
            "output_gate/kernel": np.concatenate([kernel[:, 2 * units:3 * units],
                                                  got[f"clip{clip}/w_c_o"]]),
            "new_input/kernel": kernel[:, 3 * units:],
            "mask_gates/bias": bias[:2 * units], "output_gate/bias": bias[2 * units:3 * units],
            "new_input/bias": bias[3 * units:],
            "inputs": np.transpose(got[f"clip{clip}/x"], (1, 0, 2))}
        assert as_tf1["mask_gates/kernel"].shape == (rows + units, 2 * units)
        for name, value in as_tf1.items():
            np.testing.assert_allclose(value, want[name], rtol=1e-9, atol=1e-10,
                                       err_msg=f"clip {clip}: {name}")
    # The clip acted: the clipped gradient is not the unclipped one.
    assert np.abs(got["clip0.5/kernel"] - got["clipNone/kernel"]).max() > 1e-3
    # The forward-only handler gives the saving forward's outputs.
    for output in ("h", "c_final", "h_final"):
        np.testing.assert_allclose(got[f"forward_only/{output}"], got[f"forward/{output}"],
                                   rtol=1e-14, atol=1e-15, err_msg=output)
    assert got["wrong_result_refused"], "a result of the wrong shape was not refused"
    np.testing.assert_allclose(got["vmap/h"][0], got["forward_only/h"], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(got["vmap/h"][1], got["vmap/h_of_2x"], rtol=1e-14, atol=1e-15)
    # A k shared by the batch gets the sum of the gradients it would get per example.
    np.testing.assert_allclose(got["shared/k"][:, 0],
                               got["broadcast/k"].sum(axis=1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("data_parallel", [False, True])
def test_model_fit_trains_the_fused_layer_as_keras_loop_does(data_parallel):
    _require_jax_kernel()
    if data_parallel:  # the batch split over two CPU devices
        got = _run("fit_data_parallel",
                   {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
        assert got["devices"] == 2
    else:
        got = _run("fit")
    assert got["traced"] > 0  # the fused function was traced into the train step
    assert got["jit"]  # and the model jit-compiled it (XLA)
    count = len([key for key in got if key.startswith("fused/")])
    assert count == len([key for key in got if key.startswith("loop/")]) > 0
    for i in range(count):
        np.testing.assert_allclose(got[f"fused/{i}"], got[f"loop/{i}"], rtol=1e-4, atol=1e-5,
                                   err_msg=f"weight {i} after one epoch")


def test_a_library_that_cannot_build_leaves_keras_loop_and_is_remembered():
    with tempfile.TemporaryDirectory() as cache:
        env = {kernel_build.CXX_ENV: "false", kernel_build.CACHE_DIR_ENV: cache}
        first = _run("fallback", env)
        assert not first["available"] and first["same_as_loop"], first
        assert "LadderError" in first["failure"] and "the compiler" in first["failure"], first
        assert set(first["attempts"]) == {"failed"}, first
        assert not first["tensorflow_imported"]
        assert any(name.startswith("phased_lstm_xla_ffi-") and name.endswith(".failed")
                   for name in os.listdir(cache))
        again = _run("fallback", env)  # a later process does not call the compiler again
        assert set(again["attempts"]) == {"failed before"} and again["same_as_loop"], again


def test_without_eigen_no_build_is_tried():
    out = _subprocess(
        "from unittest import mock\n"
        "from phased_lstm import jax_ffi, kernel_build\n"
        "with mock.patch.object(jax_ffi, 'eigen_include_dir', return_value=None):\n"
        "    toolchain = jax_ffi.make_toolchain()\n"
        "with mock.patch.object(kernel_build.subprocess, 'run') as compiler:\n"
        "    try:\n"
        "        kernel_build.load(jax_ffi.SOURCE, toolchain)\n"
        "    except kernel_build.BuildError as error:\n"
        "        print(compiler.call_count, error)\n"
        "library = kernel_build.KernelLibrary(jax_ffi.SOURCE, toolchain, 'Phased LSTM',\n"
        "                                     'PhasedLSTM on JAX', fallback='Keras loop')\n"
        "print(kernel_build.cached_status(jax_ffi.SOURCE, toolchain)[0])\n"
        "print(library.cached_description())\n", "jax")
    lines = out.strip().splitlines()
    assert lines[-3].startswith("0 cannot build against JAX"), out
    assert "no Eigen headers found" in lines[-3] and "libeigen3-dev" in lines[-3], out
    # The cache's status (`python -m phased_lstm.build --status`) says no build can start.
    assert lines[-2] == "failed", out
    assert lines[-1].startswith("the Keras loop, slower: no Eigen headers found"), out
