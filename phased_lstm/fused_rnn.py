"""The fused Phased LSTM sequence op: one C++ kernel for the recurrence, one for its gradient.

`phased_lstm_rnn` computes the time gate k for all steps in TensorFlow, then runs the
recurrence. TensorFlow's while loop launches and synchronises a hundred or more tiny kernels per
time step; the op `PhasedLSTMSequence` (kernels/phased_lstm_sequence.cc) runs all steps in one
kernel, and `PhasedLSTMSequenceGrad` their gradient, as TensorFlow's LSTMBlockFusedCell does for
the LSTM, with or without the TF 1.x cell's full-matrix peepholes. The gradient is registered
with `tf.RegisterGradient`, so `tf.gradients`, `GradientTape` and `tf.function` differentiate
it; k's own gradient (and through it the timing variables') is TensorFlow's, from the gate's ops.

The op is compiled from its source on first use, against the installed TensorFlow, and cached
(`phased_lstm.op_library`: where and how). Where it cannot be (no compiler, a failed build or
load), `fused_kernel_available()` is False, one warning says why and where the compiler's log
is, and `phased_lstm_rnn` uses its pure-TensorFlow path: same results, slower.

Environment:
  PHASED_LSTM_FUSED: "0" never builds nor uses the op (the pure-TensorFlow path runs).
"""

import os
import threading

from absl import logging

from phased_lstm import op_library
from phased_lstm.legacy_tf import tf

FUSED_ENV = "PHASED_LSTM_FUSED"
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels",
                      "phased_lstm_sequence.cc")
DTYPES = (tf.float32, tf.float64)

_lock = threading.Lock()
_library = None  # the loaded op module once loading succeeded
_failure = None  # why it did not, once it was tried


def _disabled():
    return os.environ.get(FUSED_ENV, "").strip().lower() in ("0", "false", "no", "off")


def _load():
    """The op module, or None; tries to build and load it once per process."""
    global _library, _failure
    if _disabled():
        return None
    with _lock:
        if _library is None and _failure is None:
            try:
                _library = op_library.load(SOURCE)
                logging.info("Phased LSTM: the fused sequence kernel is available to "
                             "phased_lstm_rnn.")
            except op_library.BuildError as error:
                _failure = str(error)
                where = f"; compiler log: {error.log_path}" if error.log_path else ""
                logging.warning(
                    "Phased LSTM: the fused sequence kernel is not available (%s%s); "
                    "phased_lstm_rnn uses its pure-TensorFlow path (same results, slower).",
                    _failure, where)
    return _library


def fused_kernel_available():
    """Whether `phased_lstm_rnn` runs the fused kernel (building it on first call if needed).

    Returns False when PHASED_LSTM_FUSED=0 or when the kernel could not be built or loaded (a
    warning says why, once per process). Dtypes other than float32 and float64 use the
    pure-TensorFlow path whatever this says.
    """
    return _load() is not None


def fused_sequence(inputs, k, c0, h0, kernel, bias, w_c_if=None, w_c_o=None):
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

    Returns:
      (h of every step [steps, batch, units], final c, final h).

    Raises:
      RuntimeError: if the kernel is not available (see `fused_kernel_available`).
      ValueError: if only one of w_c_if and w_c_o is given.
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
        inputs, k, c0, h0, kernel, bias, w_c_if, w_c_o, use_peepholes=use_peepholes)
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
                                              use_peepholes=use_peepholes)
    if not use_peepholes:  # the [0, 0] placeholders get no gradient
        return list(grads[:6]) + [None, None]
    return list(grads)
