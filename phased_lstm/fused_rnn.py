"""The fused sequence ops: one C++ kernel for the recurrence, one for its gradient, per cell.

`phased_lstm_rnn` computes the time gate k for all steps in TensorFlow, then runs the
recurrence. TensorFlow's while loop launches and synchronises a hundred or more tiny kernels per
time step; the op `PhasedLSTMSequence` (kernels/phased_lstm_sequence.cc) runs all steps in one
kernel, and `PhasedLSTMSequenceGrad` their gradient, as TensorFlow's LSTMBlockFusedCell does for
the LSTM, with or without the TF 1.x cell's full-matrix peepholes. `phased_gru_rnn` does the same
for PhasedGRUCell with `PhasedGRUSequence` and `PhasedGRUSequenceGrad`
(kernels/phased_gru_sequence.cc). The gradients are registered with `tf.RegisterGradient`, so
`tf.gradients`, `GradientTape` and `tf.function` differentiate them; k's own gradient (and
through it the timing variables') is TensorFlow's, from the gate's ops.

For evaluation, `PhasedLSTMSequenceInference` and `PhasedGRUSequenceInference` (forward_only=True
here) run the same forward, with the same results bit for bit, without writing every step's
activations for a gradient; a gradient through them raises `ForwardOnlyGradientError`. Before
them, the sequence functions compute the time gate with `PhasedTimeGate`
(kernels/phased_time_gate.cc, its own library `TIME_GATE`: `fused_time_gate`), TensorFlow's gate
bit for bit in one pass instead of a dozen element-wise ops, where it is available; it has no
gradient either.

Each op library is compiled from its source on first use, against the installed TensorFlow, and
cached, trying builds down a ladder of instruction sets until one works (`phased_lstm.op_library`:
where and how); `KernelLibrary` holds one library's state (`LSTM`, `GRU`, `TIME_GATE`). Where
none can be built (no compiler, failed builds or loads), `fused_kernel_available()` (the
LSTM's), `fused_gru_kernel_available()` or `TIME_GATE.available()` is False, one warning says
why and where the compiler's log is, and the sequence function uses its pure-TensorFlow path
(for the gate: TensorFlow's gate ops): same results, slower. The failure is
remembered, so later processes take that path at once; `python -m phased_lstm.build` builds
again.

The kernels run on the CPU. Where the recurrence is placed on a GPU, the sequence functions take
the TensorFlow path, which TensorFlow runs on the GPU (`kernel_device_reason`).

Environment:
  PHASED_LSTM_FUSED: "0" never builds nor uses the ops (the pure-TensorFlow paths run).
"""

import os

from phased_lstm import op_library
from phased_lstm.gate_gradient import check_gate_gradient_clip
from phased_lstm.kernel_build import FUSED_ENV, KERNELS, KernelLibrary, disabled  # noqa: F401
# Plain TensorFlow, not legacy_tf: the Keras 3 layer uses this module on the TensorFlow backend
# and must not select tf-keras (nothing here needs the TF 1.x cells).
import tensorflow as tf

SOURCE = os.path.join(KERNELS, "phased_lstm_sequence.cc")
GRU_SOURCE = os.path.join(KERNELS, "phased_gru_sequence.cc")
TIME_GATE_SOURCE = os.path.join(KERNELS, "phased_time_gate.cc")
DTYPES = (tf.float32, tf.float64)


LSTM = KernelLibrary(SOURCE, op_library.TENSORFLOW, "Phased LSTM", "phased_lstm_rnn")
GRU = KernelLibrary(GRU_SOURCE, op_library.TENSORFLOW, "Phased GRU", "phased_gru_rnn")
# The evaluation gate of both cells: used with their forward-only ops (see fused_time_gate).
TIME_GATE = KernelLibrary(TIME_GATE_SOURCE, op_library.TENSORFLOW, "Phased time gate",
                          "the forward-only time gate", "fused time-gate kernel",
                          "TensorFlow gate ops")
LIBRARIES = (LSTM, GRU, TIME_GATE)


def _load(rebuild=False):
    """The Phased LSTM op module, or None (see KernelLibrary.load)."""
    return LSTM.load(rebuild)


def unavailable_message(error):
    """One line: why the Phased LSTM kernel is unavailable, what runs instead, and how to
    retry."""
    return LSTM.unavailable_message(error)


def fused_kernel_available():
    """Whether `phased_lstm_rnn` can run the fused kernel (building it on first call if needed).

    Returns False when PHASED_LSTM_FUSED=0 or when the kernel could not be built or loaded (a
    warning says why, once per process). Dtypes other than float32 and float64, and recurrences
    placed on a GPU, use the pure-TensorFlow path whatever this says.
    """
    return LSTM.available()


def fused_gru_kernel_available():
    """Whether `phased_gru_rnn` can run its fused kernel: `fused_kernel_available` for the
    Phased GRU's library."""
    return GRU.available()


def load_failure():
    """Why the Phased LSTM kernel is unavailable in this process (an op_library.LadderError,
    or the OSError of a cache that could not be used), or None."""
    return LSTM.failure()


def loaded_build():
    """The Phased LSTM library's op_library.Loaded in this process, or None."""
    return LSTM.loaded_build()


def rebuild():
    """Forgets the Phased LSTM kernel's cached builds and failures, builds again and loads;
    returns (Loaded or None, the LadderError or None)."""
    return LSTM.rebuild()


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
    return LSTM.cached_description()


class ForwardOnlyGradientError(LookupError):
    """A gradient was asked of a forward-only (inference) op, which keeps nothing for one.

    A LookupError, as TensorFlow's own error for an op without a gradient.
    """


def _forward_only_gradient(op, *unused_grads):
    """The gradient of the inference ops: refused, so that it can never be zeros."""
    del unused_grads
    function = {"PhasedGRUSequenceInference": "phased_gru_rnn",
                "PhasedTimeGate": "phased_lstm_rnn and phased_gru_rnn"}.get(op.type,
                                                                          "phased_lstm_rnn")
    raise ForwardOnlyGradientError(
        f"{op.type} was built for evaluation (forward_only=True) and keeps no activations "
        "for a gradient; build the recurrence with forward_only=False (the default of "
        f"{function} and the fused sequence functions; for the Keras layers, call them with "
        "training=True) to differentiate it.")


tf.RegisterGradient("PhasedLSTMSequenceInference")(_forward_only_gradient)
tf.RegisterGradient("PhasedGRUSequenceInference")(_forward_only_gradient)
tf.RegisterGradient("PhasedTimeGate")(_forward_only_gradient)


def keras_forward_only(training):
    """Whether a Keras layer's call with `training` runs the fused kernel's forward-only op.

    True for Keras' inference (`training` False or None: predict, evaluate, a plain call),
    eagerly or in a tf.function, where no gradient tape is recording: custom training loops
    often call a model without training=True, and their gradients must work. False while a
    TF 1.x graph is built (outside any tf.function), where a gradient may be asked of the graph
    later (`minimize`) and nothing says it will not: there, phased_lstm_rnn's forward_only is
    the explicit choice. (A tf.function traced without a tape and later called under one raises
    ForwardOnlyGradientError, which says to pass training=True.)

    Args:
      training: the layer call's `training`: a Python or NumPy bool, None, or a tensor (whose
        value is not known when the graph is built: False here).
    """
    if tf.is_tensor(training) or (training is not None and bool(training)):
        return False
    if not tf.compat.v1.executing_eagerly_outside_functions():  # a TF 1.x graph
        return False
    return not _tape_may_record()


def _tape_may_record():
    """Whether a gradient tape is recording here (True where TensorFlow cannot say)."""
    try:  # TensorFlow's own test, not public: TF 2.13 on in record, before in tape
        from tensorflow.python.eager import record  # pylint: disable=import-outside-toplevel
        return bool(record.could_possibly_record())
    except (ImportError, AttributeError):
        try:
            from tensorflow.python.eager import tape  # pylint: disable=import-outside-toplevel
            return bool(tape.could_possibly_record())
        except (ImportError, AttributeError):
            return True


def fused_sequence(inputs, k, c0, h0, kernel, bias, w_c_if=None, w_c_o=None,
                   gate_gradient_clip=None, forward_only=False):
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
      forward_only: if True, run the evaluation op `PhasedLSTMSequenceInference`: the same
        results bit for bit, without saving every step's c and gates [steps, batch, 5 units]
        for a gradient. A gradient through it raises ForwardOnlyGradientError.

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
                           f"{LSTM.failure() or FUSED_ENV + '=0'}")
    use_peepholes = w_c_if is not None
    if not use_peepholes:  # the op's convention: [0, 0] matrices, never read
        w_c_if = w_c_o = tf.zeros([0, 0], tf.convert_to_tensor(kernel).dtype)
    clip = check_gate_gradient_clip(gate_gradient_clip) or 0.0
    if forward_only:  # the clip acts on a gradient only; there is none here
        return tuple(library.phased_lstm_sequence_inference(
            inputs, k, c0, h0, kernel, bias, w_c_if, w_c_o, use_peepholes=use_peepholes))
    h, c_final, h_final, _, _ = library.phased_lstm_sequence(
        inputs, k, c0, h0, kernel, bias, w_c_if, w_c_o, use_peepholes=use_peepholes,
        gate_gradient_clip=clip)
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


def fused_gru_sequence(inputs, k, h0, kernel, bias, forward_only=False):
    """The Phased GRU recurrence over a whole sequence, in one kernel.

    Args:
      inputs: [steps, batch, input_size], time-major; float32 or float64.
      k: the time gate, [steps, batch, units], or [steps, 1, units] when shared by the batch.
      h0: the initial state, [batch, units].
      kernel: [input_size + units, 3 units], rows [x, h], columns [r, u, c]: PhasedGRUCell's
        gates/kernel (reset, update) beside its candidate/kernel (whose h rows multiply r h);
        `PhasedGRUCell.packed_weights`.
      bias: [3 units], the same columns.
      forward_only: if True, run the evaluation op `PhasedGRUSequenceInference`: the same
        results bit for bit, without saving every step's gates [steps, batch, 3 units] for a
        gradient. A gradient through it raises ForwardOnlyGradientError.

    Returns:
      (h of every step [steps, batch, units], final h [batch, units]).

    Raises:
      RuntimeError: if the kernel is not available (see `fused_gru_kernel_available`).
    """
    library = GRU.load()
    if library is None:
        raise RuntimeError("the fused Phased GRU kernel is not available: "
                           f"{GRU.failure() or FUSED_ENV + '=0'}")
    if forward_only:
        return tuple(library.phased_gru_sequence_inference(inputs, k, h0, kernel, bias))
    h, h_final, _ = library.phased_gru_sequence(inputs, k, h0, kernel, bias)
    return h, h_final


@tf.RegisterGradient("PhasedGRUSequence")
def _phased_gru_sequence_grad(op, d_h, d_h_final, unused_d_gates):
    """Gradients of x, k, h0, kernel and bias; the saved gates are internal."""
    del unused_d_gates
    x, k, h0, kernel, _ = op.inputs
    h, _, gates = op.outputs
    # An output nobody differentiated may come as None.
    d_h = tf.zeros_like(h) if d_h is None else d_h
    d_h_final = tf.zeros_like(h0) if d_h_final is None else d_h_final
    return list(GRU.load().phased_gru_sequence_grad(x, k, h0, kernel, h, gates, d_h, d_h_final))


def fused_time_gate(time, period, phase, ratio_on, leak, live=None):
    """The time gate k of every step, time-major, in one kernel (`PhasedTimeGate`).

    TensorFlow's gate (`gate_math.time_gate`) bit for bit, for evaluation: a gradient through
    it raises ForwardOnlyGradientError. The timing parameters come already valid and cast, as
    `gate_math.fused_gate_parameters` makes them.

    Args:
      time: timestamps [batch or 1, steps, 1 or units], float32 or float64, all finite.
      period: tau [units] in the time's dtype, >= MIN_PERIOD.
      phase: s [units] in the time's dtype.
      ratio_on: r_on [units] in the gate's dtype, in [MIN_RATIO_ON, 1].
      leak: the closed gate's slope, a scalar of the gate's dtype.
      live: optional bool [batch, steps]: False at padded steps, where k is 0.

    Returns:
      k [steps, batch, units] in ratio_on's dtype; [steps, 1, units] when time has a batch of
      1 and there is no live.

    Raises:
      RuntimeError: if the kernel is not available (`TIME_GATE.available()`).
      tf.errors.InvalidArgumentError: when run, for a NaN or infinite timestamp or shapes that
        do not match.
    """
    library = TIME_GATE.load()
    if library is None:
        raise RuntimeError("the fused time-gate kernel is not available: "
                           f"{TIME_GATE.failure() or FUSED_ENV + '=0'}")
    use_live = live is not None
    if not use_live:  # the op's convention: a [0, 0] mask, never read
        live = tf.zeros([0, 0], tf.bool)
    return library.phased_time_gate(time, period, phase, ratio_on, leak, live,
                                    use_live=use_live)
