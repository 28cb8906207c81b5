"""The fused Phased LSTM sequence op: one C++ kernel for the recurrence, one for its gradient.

`phased_lstm_rnn` computes the time gate k for all steps in TensorFlow, then runs the
recurrence. TensorFlow's while loop launches and synchronises a hundred or more tiny kernels per
time step; the op `PhasedLSTMSequence` (kernels/phased_lstm_sequence.cc) runs all steps in one
kernel, and `PhasedLSTMSequenceGrad` their gradient, as TensorFlow's LSTMBlockFusedCell does for
the LSTM, with or without the TF 1.x cell's full-matrix peepholes. The gradient is registered
with `tf.RegisterGradient`, so `tf.gradients`, `GradientTape` and `tf.function` differentiate
it; k's own gradient (and through it the timing variables') is TensorFlow's, from the gate's ops.

The op is compiled from its source on first use, against the installed TensorFlow, and cached,
trying builds down a ladder of instruction sets until one works (`phased_lstm.op_library`: where
and how). Where none can be (no compiler, failed builds or loads), `fused_kernel_available()` is
False, one warning says why and where the compiler's log is, and `phased_lstm_rnn` uses its
pure-TensorFlow path: same results, slower. The failure is remembered, so later processes take
that path at once; `python -m phased_lstm.build` builds again.

The kernel runs on the CPU. Where the recurrence is placed on a GPU, `phased_lstm_rnn` takes the
TensorFlow path, which TensorFlow runs on the GPU (`kernel_device_reason`).

Environment:
  PHASED_LSTM_FUSED: "0" never builds nor uses the op (the pure-TensorFlow path runs).
"""

import os
import threading

from absl import logging

from phased_lstm import op_library
from phased_lstm.gate_gradient import check_gate_gradient_clip
# Plain TensorFlow, not legacy_tf: the Keras 3 layer uses this module on the TensorFlow backend
# and must not select tf-keras (nothing here needs the TF 1.x cells).
import tensorflow as tf

FUSED_ENV = "PHASED_LSTM_FUSED"
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels",
                      "phased_lstm_sequence.cc")
DTYPES = (tf.float32, tf.float64)

_lock = threading.Lock()
_loaded = None  # the op_library.Loaded once loading succeeded
_failure = None  # why it failed (see load_failure), once it did


def disabled():
    """Whether PHASED_LSTM_FUSED turns the fused kernel off."""
    return os.environ.get(FUSED_ENV, "").strip().lower() in ("0", "false", "no", "off")


def _load(rebuild=False):
    """The op module, or None; tries to build and load it once per process (or again if
    rebuild)."""
    global _loaded, _failure
    if disabled() and not rebuild:
        return None
    with _lock:
        if rebuild and _loaded is not None:
            # TensorFlow cannot register the same ops twice in one process.
            raise RuntimeError("the fused kernel is already loaded in this process; rebuild it "
                               f"in a new one: {op_library.REBUILD_COMMAND}")
        if rebuild or (_loaded is None and _failure is None):
            _loaded = _failure = None
            try:
                _loaded = op_library.load(SOURCE, rebuild=rebuild)
                logging.info("Phased LSTM: the fused sequence kernel is available to "
                             "phased_lstm_rnn (%s build, %s).", _loaded.rung.name,
                             " ".join(_loaded.rung.arch_flags) or "no -march")
            except (op_library.BuildError, OSError) as error:  # OSError: the cache's lock
                _failure = error
                logging.warning("Phased LSTM: %s", unavailable_message(error))
    return _loaded.module if _loaded is not None else None


def unavailable_message(error):
    """One line: why the kernel is unavailable, what runs instead, and how to retry."""
    log_path = getattr(error, "log_path", None)
    where = f"; compiler log: {log_path}" if log_path else ""
    return (f"the fused sequence kernel is not available: {error}{where}. phased_lstm_rnn uses "
            "its pure-TensorFlow path (same results, slower); after fixing the cause, "
            f"`{op_library.REBUILD_COMMAND}` builds again.")


def fused_kernel_available():
    """Whether `phased_lstm_rnn` can run the fused kernel (building it on first call if needed).

    Returns False when PHASED_LSTM_FUSED=0 or when the kernel could not be built or loaded (a
    warning says why, once per process). Dtypes other than float32 and float64, and recurrences
    placed on a GPU, use the pure-TensorFlow path whatever this says.
    """
    return _load() is not None


def load_failure():
    """Why the kernel is unavailable in this process (an op_library.LadderError, or the OSError
    of a cache that could not be used), or None."""
    _load()
    return _failure


def loaded_build():
    """The op_library.Loaded of this process (its rung, path and attempts), or None."""
    _load()
    return _loaded


def rebuild():
    """Forgets the cached builds and failures, builds again and loads; returns (Loaded or None,
    the LadderError or None)."""
    _load(rebuild=True)
    return _loaded, _failure


def kernel_device_reason(device):
    """Why the fused (CPU) kernel should not run at `device`, or None where it should.

    Args:
      device: the device an op of the recurrence was placed on or assigned to ("" when no
        device scope chose one, in graph mode).

    Returns:
      None when the recurrence runs on the CPU: the device names the CPU, or names none and no
      GPU is visible. Otherwise a reason: the kernel would run on the CPU between copies from
      and to the GPU, so the TensorFlow path runs there.
    """
    spec = tf.DeviceSpec.from_string(device or "")
    device_type = (spec.device_type or "").upper()
    if device_type == "CPU":
        return None
    if not device_type and not tf.config.get_visible_devices("GPU"):
        return None
    return (f"the recurrence is placed on {device or 'a GPU (default placement)'} and the "
            "fused kernel runs on the CPU only")


def cached_description():
    """Which path phased_lstm_rnn runs, from the cache alone: compiles and loads nothing (for
    --help)."""
    if disabled():
        return f"the TensorFlow loop ({FUSED_ENV}=0 turns the fused kernel off)"
    state, rung = op_library.cached_status(SOURCE)
    if state == "cached":
        return f"the fused kernel ({rung.name} build, cached)"
    if state == "not built":
        return ("the fused kernel, compiled on first use (about a minute; "
                f"`{op_library.REBUILD_COMMAND}` builds it now)")
    return ("the TensorFlow loop, slower: every build of the fused kernel failed on this machine "
            f"(`{op_library.REBUILD_COMMAND}` says why and builds again)")


def fused_sequence(inputs, k, c0, h0, kernel, bias, w_c_if=None, w_c_o=None,
                   gate_gradient_clip=None):
    """The recurrence over a whole sequence, in one kernel; with peepholes if w_c_if and w_c_o.

    Args:
      inputs: [steps, batch, input_size], time-major; float32 or float64.
      k: the time gate, [steps, batch, units], or [steps, 1, units] when shared by the batch.
      c0, h0: the initial state, each [batch, units].
      kernel: [input_size + units, 4 units], rows [x, h], columns [i, f, o, j].
      bias: [4 units].
      w_c_if, w_c_o: the TF 1.x cell's full-matrix peepholes (`PhasedLSTMCell.peephole_weights`),
        both or neither: c_{t-1} -> [i, f] [units, 2 units] and c~ -> o [units, units], where
        c~ = f c_{t-1} + i j is the LSTM's new cell before the time gate mixes it.
      gate_gradient_clip: None, or a float > 0 that clips each step's gradient of
        [x_t, h_{t-1}] kernel + bias element-wise (`phased_lstm.gate_gradient`).

    Returns:
      (h of every step [steps, batch, units], final c, final h).

    Raises:
      RuntimeError: if the kernel is not available (see `fused_kernel_available`).
      ValueError: if only one of w_c_if and w_c_o is given, or gate_gradient_clip is negative
        or not finite.
    """
    if (w_c_if is None) != (w_c_o is None):
        raise ValueError("fused_sequence takes both peephole matrices (w_c_if and w_c_o) or "
                         "neither")
    library = _load()
    if library is None:
        raise RuntimeError("the fused Phased LSTM kernel is not available: "
                           f"{_failure or FUSED_ENV + '=0'}")
    use_peepholes = w_c_if is not None
    if not use_peepholes:  # the op's convention: [0, 0] matrices, never read
        w_c_if = w_c_o = tf.zeros([0, 0], tf.convert_to_tensor(kernel).dtype)
    h, c_final, h_final, _, _ = library.phased_lstm_sequence(
        inputs, k, c0, h0, kernel, bias, w_c_if, w_c_o, use_peepholes=use_peepholes,
        gate_gradient_clip=check_gate_gradient_clip(gate_gradient_clip) or 0.0)
    return h, c_final, h_final


@tf.RegisterGradient("PhasedLSTMSequence")
def _phased_lstm_sequence_grad(op, d_h, d_c_final, d_h_final, unused_d_c, unused_d_gates):
    """Gradients of x, k, c0, h0, kernel, bias and the peepholes; c and gates are internal."""
    del unused_d_c, unused_d_gates
    x, k, c0, h0, kernel, _, w_c_if, w_c_o = op.inputs
    h, _, _, c, gates = op.outputs
    use_peepholes = op.get_attr("use_peepholes")
    # An output nobody differentiated may come as None.
    d_h = tf.zeros_like(h) if d_h is None else d_h
    d_c_final = tf.zeros_like(c0) if d_c_final is None else d_c_final
    d_h_final = tf.zeros_like(h0) if d_h_final is None else d_h_final
    grads = _load().phased_lstm_sequence_grad(x, k, c0, h0, kernel, w_c_if, w_c_o, h, c, gates,
                                              d_h, d_c_final, d_h_final,
                                              use_peepholes=use_peepholes,
                                              gate_gradient_clip=op.get_attr(
                                                  "gate_gradient_clip"))
    if not use_peepholes:  # the [0, 0] placeholders get no gradient
        return list(grads[:6]) + [None, None]
    return list(grads)
