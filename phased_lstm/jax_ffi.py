"""The fused Phased LSTM recurrence for JAX: the C++ kernel of the TensorFlow op, as XLA FFI.

`fused_sequence` runs the whole recurrence in one XLA custom call on the CPU, and its gradient
in another, through `jax.ffi.ffi_call` inside a `jax.custom_vjp`: it works under `jax.jit`,
`jax.grad` and Keras' jitted train step. The C++ is phased_lstm_core.h, the same step code as
the TensorFlow op `PhasedLSTMSequence` (`phased_lstm.fused_rnn`), behind the handlers of
kernels/phased_lstm_xla_ffi.cc. The time gate k is an input, computed (and differentiated) by
the caller, as for the TensorFlow op.

The library is compiled on first use and cached by `phased_lstm.kernel_build` (the same ladder
of builds, cache, locks and remembered failures as the TensorFlow ops), against JAX's FFI
headers (`jax.ffi.include_dir()`) and Eigen, found without importing TensorFlow: the `include`
folder of an installed TensorFlow wheel (located, not imported), else a system Eigen
(/usr/include/eigen3: apt's libeigen3-dev). Where neither is found, or no build works,
`LIBRARY.available()` is False, one warning says why, and the Keras 3 layer runs Keras' loop.
Loaded with ctypes; the handlers are registered with `jax.ffi.register_ffi_target` (CPU).

Environment: PHASED_LSTM_FUSED=0 turns the kernel off (`kernel_build.disabled`).
"""

import ctypes
import functools
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np

from phased_lstm import kernel_build
from phased_lstm.gate_math import check_gate_gradient_clip

SOURCE = os.path.join(kernel_build.KERNELS, "phased_lstm_xla_ffi.cc")
# The FFI target of each handler symbol of the library.
TARGETS = {"phased_lstm_forward": "PhasedLstmForward",
           "phased_lstm_forward_only": "PhasedLstmForwardOnly",
           "phased_lstm_grad": "PhasedLstmGrad"}
SYSTEM_EIGEN = ("/usr/include/eigen3", "/usr/local/include/eigen3")
DTYPES = ("float32", "float64")
# Under jax.vmap each handler runs once per mapped element (a loop over calls): correct, not
# batched.
VMAP_METHOD = "sequential"


def eigen_include_dir():
    """The folder holding Eigen/Core: TensorFlow's wheel's include folder (found with
    importlib, without importing TensorFlow), else a system eigen3; None if neither."""
    candidates = []
    spec = importlib.util.find_spec("tensorflow")
    if spec is not None:
        candidates += [os.path.join(folder, "include")
                       for folder in spec.submodule_search_locations or ()]
    candidates += SYSTEM_EIGEN
    for folder in candidates:
        if os.path.isfile(os.path.join(folder, "Eigen", "Core")):
            return folder
    return None


def _load_and_register(path):
    """Loads the built library with ctypes and registers its handlers with XLA (CPU)."""
    library = ctypes.cdll.LoadLibrary(path)
    for target, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)),
                                    platform="cpu")
    return library


def make_toolchain(eigen=None):
    """The kernel_build.Toolchain of the FFI library.

    Args:
      eigen: the folder holding Eigen/Core; default `eigen_include_dir()`.

    Returns:
      A Toolchain; with `missing` set where no Eigen was found.
    """
    eigen = eigen or eigen_include_dir()
    ffi_headers = jax.ffi.include_dir()
    flags = ["-pthread", f"-I{ffi_headers}"] + ([f"-I{eigen}"] if eigen else [])
    return kernel_build.Toolchain(
        name=f"JAX {jax.__version__}'s XLA FFI", flags=tuple(flags),
        identity=(jax.__version__, ffi_headers, eigen), load=_load_and_register,
        load_errors=(OSError, AttributeError),
        missing=None if eigen else (
            "no Eigen headers found (neither TensorFlow's include folder nor "
            f"{' or '.join(SYSTEM_EIGEN)}; apt's libeigen3-dev installs them)"))


LIBRARY = kernel_build.KernelLibrary(SOURCE, make_toolchain(), "Phased LSTM",
                                     "PhasedLSTM on JAX", fallback="Keras loop",
                                     instead="Keras' loop")


def fused_kernel_available():
    """Whether `fused_sequence` can run (building the library on first call if needed):
    False where PHASED_LSTM_FUSED=0 or the library could not be built or loaded (one warning
    says why)."""
    return LIBRARY.available()


def _threads():
    """The most blocks the batch is split into: the CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _forward(target, outputs, x, k, c0, h0, kernel, bias, w_c_if, w_c_o, use_peepholes):
    steps, batch, units = x.shape[0], x.shape[1], c0.shape[1]
    shapes = [(steps, batch, units), (batch, units), (batch, units), (steps, batch, units),
              (steps, batch, 4 * units)][:outputs]
    return jax.ffi.ffi_call(target, [jax.ShapeDtypeStruct(s, x.dtype) for s in shapes],
                            vmap_method=VMAP_METHOD)(
        x, k, c0, h0, kernel, bias, w_c_if, w_c_o, use_peepholes=use_peepholes,
        threads=np.int64(_threads()))


@functools.partial(jax.custom_vjp, nondiff_argnums=(8, 9))
def _sequence(x, k, c0, h0, kernel, bias, w_c_if, w_c_o, use_peepholes, clip):
    """(h, c_final, h_final) of the forward-only handler: nothing saved where no gradient is
    asked."""
    del clip  # the gradient's
    return tuple(_forward("phased_lstm_forward_only", 3, x, k, c0, h0, kernel, bias, w_c_if,
                          w_c_o, use_peepholes))


def _sequence_fwd(x, k, c0, h0, kernel, bias, w_c_if, w_c_o, use_peepholes, clip):
    del clip
    h, c_final, h_final, c, gates = _forward("phased_lstm_forward", 5, x, k, c0, h0, kernel,
                                             bias, w_c_if, w_c_o, use_peepholes)
    return (h, c_final, h_final), (x, k, c0, h0, kernel, bias, w_c_if, w_c_o, h, c, gates)


def _sequence_bwd(use_peepholes, clip, residuals, cotangents):
    x, k, c0, h0, kernel, bias, w_c_if, w_c_o, h, c, gates = residuals
    d_h, d_c_final, d_h_final = cotangents
    results = [x, k, c0, h0, kernel, bias, w_c_if, w_c_o]
    return tuple(jax.ffi.ffi_call(
        "phased_lstm_grad", [jax.ShapeDtypeStruct(r.shape, r.dtype) for r in results],
        vmap_method=VMAP_METHOD)(
            x, k, c0, h0, kernel, w_c_if, w_c_o, h, c, gates, d_h, d_c_final, d_h_final,
            use_peepholes=use_peepholes, gate_gradient_clip=np.float32(clip),
            threads=np.int64(_threads())))


_sequence.defvjp(_sequence_fwd, _sequence_bwd)


def fused_sequence(inputs, k, c0, h0, kernel, bias, w_c_if=None, w_c_o=None,
                   gate_gradient_clip=None):
    """The recurrence over a whole sequence, in one XLA custom call; differentiable.

    `phased_lstm.fused_rnn.fused_sequence` for JAX: the same arguments, layouts and results.
    Without a gradient (no `jax.grad` or `vjp` around it) it runs the forward-only handler,
    which saves nothing for one.

    Args:
      inputs: [steps, batch, input_size], time-major; float32 or float64 (with
        jax_enable_x64).
      k: the time gate, [steps, batch, units], or [steps, 1, units] when shared by the batch.
      c0, h0: the initial state, each [batch, units].
      kernel: [input_size + units, 4 units], rows [x, h], columns [i, f, o, j].
      bias: [4 units].
      w_c_if, w_c_o: the TF 1.x cell's full-matrix peepholes, both or neither:
        c_{t-1} -> [i, f] [units, 2 units] and c~ -> o [units, units].
      gate_gradient_clip: None, or a float > 0 that clips each step's gradient of
        [x_t, h_{t-1}] kernel + bias element-wise (`phased_lstm.gate_gradient`).

    Returns:
      (h of every step [steps, batch, units], final c, final h), in the inputs' dtype.

    Raises:
      RuntimeError: if the kernel is not available (see `fused_kernel_available`).
      ValueError: if only one of w_c_if and w_c_o is given, gate_gradient_clip is negative or
        not finite, or the dtype is not float32 or float64.
      TypeError: if the arguments do not share one dtype.
    """
    if (w_c_if is None) != (w_c_o is None):
        raise ValueError("fused_sequence takes both peephole matrices (w_c_if and w_c_o) or "
                         "neither")
    if LIBRARY.load() is None:
        raise RuntimeError("the fused Phased LSTM kernel is not available to JAX: "
                           f"{LIBRARY.failure() or kernel_build.FUSED_ENV + '=0'}")
    use_peepholes = w_c_if is not None
    arrays = [jnp.asarray(a) for a in (inputs, k, c0, h0, kernel, bias)]
    dtype = arrays[0].dtype
    if dtype.name not in DTYPES:
        raise ValueError(f"fused_sequence takes float32 or float64; got {dtype.name}")
    if not use_peepholes:  # the handlers' convention: [0, 0] matrices, never read
        w_c_if = w_c_o = jnp.zeros((0, 0), dtype)
    arrays += [jnp.asarray(w_c_if), jnp.asarray(w_c_o)]
    if any(a.dtype != dtype for a in arrays):
        raise TypeError("fused_sequence's arguments must share one dtype; got "
                        + ", ".join(a.dtype.name for a in arrays))
    clip = check_gate_gradient_clip(gate_gradient_clip) or 0.0
    return _sequence(*arrays, use_peepholes, float(clip))
