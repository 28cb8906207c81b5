"""phased_lstm_rnn: a PhasedLSTMCell over whole sequences, faster than the cell under dynamic_rnn.

`dynamic_rnn(cell, (time, inputs))` runs the cell's whole step, time gate included, inside its
loop, and autodiff then computes and sums every weight gradient step by step. Here:

- The time gate depends only on the timestamps and the timing parameters: it is computed for all
  steps at once, before the loop.
- Where the fused kernel is available (`fused_rnn`: a C++ op compiled on first use), the whole
  recurrence runs in one kernel and its gradient in another, with or without the TF 1.x cell's
  full-matrix peepholes. Elsewhere (or with fused=False) a TensorFlow while loop runs it: the
  reference path, and the fallback (same results, slower).
- In that loop without peepholes (the default), each step keeps one [batch, input_size + units]
  x [input_size + units, 4 units] product and the LSTM's element-wise operations, and its
  gradient is written by hand: the backward loop carries only the gradients of c and h, and the
  kernels', bias's and inputs' gradients are then one product over all steps each.
- In that loop with peepholes, the loop body is differentiated by autodiff.

Padding is folded into the gate: past an example's sequence_length its k is 0, which carries
the state unchanged, exactly what dynamic_rnn's copy-through does.

With forward_only=True (evaluation), where the recurrence runs its fused forward-only op, the
gate is computed by the fused gate kernel too (`TimeGate.forward_only`: the same values in one
pass instead of a dozen TensorFlow ops over [batch, steps, units]; no gradient), where that
kernel is available (`fused_rnn.TIME_GATE`), else by TensorFlow as in training.

The function uses the cell's own variables, so one checkpoint serves both paths.

`phased_gru_rnn` does the same for a PhasedGRUCell: the gate for all steps first, then its own
fused kernel (`fused_rnn.GRU`) where it can run, else the cell's GRU step in a TensorFlow while
loop, differentiated by autodiff (the reference path).
"""

from phased_lstm import fused_rnn, op_library
from phased_lstm.fused_rnn import fused_kernel_available
from phased_lstm.gate_gradient import clip_gradient
from phased_lstm.legacy_tf import rnn_cell, tf
from phased_lstm.phased_gru_cell import PhasedGRUCell
from phased_lstm.phased_lstm_cell import PhasedLSTMCell
from phased_lstm.time_gate import check_time


def check_sequence_inputs(time, inputs, num_units):
    """Checks a sequence path's inputs; returns (time, inputs) as tensors.

    Args:
      time: [batch, steps, 1], [batch, steps, num_units] (one timestamp per unit), or either
        with a batch of 1 when the batch shares its timestamps; floating or integer (taken as
        float64).
      inputs: [batch, steps, input_size] with a known input_size.
      num_units: the cell's units.

    Returns:
      (time as a floating tensor, inputs as a tensor).

    Raises:
      TypeError: if time holds neither floating point nor integer numbers.
      ValueError: for other shapes, or a different number of steps.
    """
    time = check_time(time, "batch or 1, steps", num_units)
    inputs = tf.convert_to_tensor(inputs)
    if inputs.shape.rank not in (None, 3):
        raise ValueError(
            f"inputs must have shape [batch, steps, input_size]; got shape {inputs.shape}")
    if inputs.shape.rank == 3 and inputs.shape[-1] is None:
        raise ValueError(f"inputs' last dimension must be known; got shape {inputs.shape}")
    if None not in (time.shape.rank, inputs.shape.rank):
        if time.shape[1] not in (None, inputs.shape[1]) and inputs.shape[1] is not None:
            raise ValueError(
                f"time and inputs must have the same number of steps; got time {time.shape} "
                f"and inputs {inputs.shape}")
    return time, inputs


def phased_lstm_rnn(cell, time, inputs, sequence_length=None, initial_state=None, scope=None,
                    fused=None, leak=None, forward_only=False):
    """Runs `cell` over sequences; the same results as `dynamic_rnn(cell, (time, inputs))`.

    Args:
      cell: a PhasedLSTMCell. Built here if it is not yet, under the variable scope `scope`
        (default "rnn", as dynamic_rnn), so that variable names match dynamic_rnn's.
      time: timestamps [batch, steps, 1], or [1, steps, 1] shared by the whole batch; or
        [batch or 1, steps, num_units], one per unit. float32, float64 for large timestamps, or
        integers (taken as float64).
      inputs: features [batch, steps, input_size].
      sequence_length: optional int [batch]; steps past it leave the state unchanged and
        output zeros.
      initial_state: optional LSTMStateTuple(c, h), each [batch, num_units]; default zeros.
      scope: variable scope for building the cell; default "rnn".
      fused: whether the recurrence runs in the fused kernel: None (default) where it can
        (float32 or float64, `fused_kernel_available()`; peepholes or not); False never (the
        pure-TensorFlow loop); True always (an error where it cannot).
      leak: the closed time gate's slope, a float or a scalar tensor; None: the cell's `leak`.
      forward_only: True for evaluation: the fused kernel then runs its forward-only op, which
        gives the same results bit for bit without writing every step's activations for a
        gradient (as `forward_only` in TF 1.x's seq2seq models: no backward pass will be
        built), after the fused gate kernel's time gate (`TimeGate.forward_only`, where it
        could be built; the same values). A gradient through them raises
        `fused_rnn.ForwardOnlyGradientError`. Where the fused kernel does not run, the
        TensorFlow loop runs as with False. It does not change the leak (pass leak=0.0 for the
        paper's evaluation).

    Returns:
      (outputs [batch, steps, num_units], LSTMStateTuple(c, h) at each example's last step).

    Raises:
      TypeError: if cell is not a PhasedLSTMCell or time holds neither floats nor integers.
      ValueError: if time or inputs do not have the shapes above, or fused is True where the
        fused kernel cannot run.
    """
    if not isinstance(cell, PhasedLSTMCell):
        raise TypeError(f"phased_lstm_rnn runs a PhasedLSTMCell; got {type(cell).__name__}")
    time, inputs = check_sequence_inputs(time, inputs, cell.output_size)
    with tf.compat.v1.variable_scope(scope or "rnn"):
        inputs, k, live = _gated_sequence(cell, time, inputs, sequence_length, leak,
                                          forward_only, fused, fused_rnn.LSTM)
        dtype, steps = cell.dtype, tf.shape(inputs)[0]
        if initial_state is None:
            initial_state = cell.zero_state(tf.shape(inputs)[1], dtype)
        # k's device: where the recurrence is placed (or assigned, in graph mode).
        if _use_fused(dtype, fused, k.device):
            peepholes = cell.peephole_weights() if cell.use_peepholes else ()
            h_seq, c, h = fused_rnn.fused_sequence(
                inputs, k, *initial_state, *cell.packed_weights(), *peepholes,
                gate_gradient_clip=cell.gate_gradient_clip, forward_only=forward_only)
        elif cell.use_peepholes:
            h_seq, (c, h) = _loop(_peephole_step(cell), inputs, k, initial_state,
                                  steps)
        else:
            h_seq, c, h = _sequence_without_peepholes(cell, inputs, k, initial_state)
        return _batch_major_outputs(cell, h_seq, inputs, live), rnn_cell.LSTMStateTuple(c, h)


def phased_gru_rnn(cell, time, inputs, sequence_length=None, initial_state=None, scope=None,
                   fused=None, leak=None, forward_only=False):
    """Runs a PhasedGRUCell over sequences; the same results as `dynamic_rnn(cell, (time,
    inputs))`.

    The time gate is computed for all steps first, then the recurrence runs in the Phased GRU's
    fused kernel (`fused_rnn.GRU`) where it can, else in a TensorFlow while loop over the cell's
    GRU step (`PhasedGRUCell.gru_step`, differentiated by autodiff). Both use the cell's own
    variables, so one checkpoint serves both paths and dynamic_rnn.

    Args:
      cell: a PhasedGRUCell. Built here if it is not yet, under the variable scope `scope`
        (default "rnn", as dynamic_rnn), so that variable names match dynamic_rnn's.
      time: timestamps [batch, steps, 1], or [1, steps, 1] shared by the whole batch; or
        [batch or 1, steps, num_units], one per unit. float32, float64 for large timestamps, or
        integers (taken as float64).
      inputs: features [batch, steps, input_size].
      sequence_length: optional int [batch]; steps past it leave the state unchanged and
        output zeros.
      initial_state: optional h [batch, num_units]; default zeros.
      scope: variable scope for building the cell; default "rnn".
      fused: whether the recurrence runs in the fused kernel: None (default) where it can
        (float32 or float64, `fused_rnn.fused_gru_kernel_available()`, on the CPU); False never
        (the TensorFlow loop); True always (an error where it cannot).
      leak: the closed time gate's slope, a float or a scalar tensor; None: the cell's `leak`.
      forward_only: True for evaluation: the fused kernel runs its forward-only op after the
        fused gate kernel (see phased_lstm_rnn); where it does not run, the TensorFlow loop
        runs as with False.

    Returns:
      (outputs [batch, steps, num_units], h [batch, num_units] at each example's last step).

    Raises:
      TypeError: if cell is not a PhasedGRUCell or time holds neither floats nor integers.
      ValueError: if time or inputs do not have the shapes above, or fused is True where the
        fused kernel cannot run.
    """
    if not isinstance(cell, PhasedGRUCell):
        raise TypeError(f"phased_gru_rnn runs a PhasedGRUCell; got {type(cell).__name__}")
    time, inputs = check_sequence_inputs(time, inputs, cell.output_size)
    with tf.compat.v1.variable_scope(scope or "rnn"):
        inputs, k, live = _gated_sequence(cell, time, inputs, sequence_length, leak,
                                          forward_only, fused, fused_rnn.GRU)
        dtype = cell.dtype
        if initial_state is None:
            initial_state = cell.zero_state(tf.shape(inputs)[1], dtype)
        if _use_fused(dtype, fused, k.device, fused_rnn.GRU):
            h_seq, h = fused_rnn.fused_gru_sequence(inputs, k, initial_state,
                                                    *cell.packed_weights(),
                                                    forward_only=forward_only)
        else:
            h_seq, (h,) = _loop(_gru_step(cell), inputs, k, (initial_state,),
                                tf.shape(inputs)[0])
        return _batch_major_outputs(cell, h_seq, inputs, live), h


def _gated_sequence(cell, time, inputs, sequence_length, leak, forward_only, fused, library):
    """Builds the cell and computes its time gate for every step, padding folded in.

    Args:
      cell: a phased cell, built here (under the caller's variable scope) if it is not yet.
      time, inputs: checked by `check_sequence_inputs`; inputs [batch, steps, input_size].
      sequence_length: optional int [batch].
      leak: the gate's leak, or None for the cell's.
      forward_only, fused: the sequence function's. Where the recurrence runs its fused
        forward-only op, the fused gate kernel computes k if it is available.
      library: the recurrence's fused kernel library.

    Returns:
      (inputs time-major [steps, batch, input_size] in the cell's dtype, k [steps, batch or 1,
      units] with k = 0 past each example's length, live [batch, steps] or None without
      sequence_length).
    """
    cell.build_for(inputs.shape[-1], inputs.dtype)  # dynamic_rnn's variable names
    dtype = cell.dtype
    inputs = tf.cast(inputs, dtype)
    steps = tf.shape(inputs)[1]
    live = None
    if sequence_length is not None:
        live = tf.sequence_mask(sequence_length, steps, dtype=dtype)
    # The recurrence's own test, made before k exists: the same device scope places both.
    if (forward_only and _why_not_fused(dtype, fused, None, library) is None
            and fused_rnn.TIME_GATE.available()):
        mask = None if sequence_length is None else tf.sequence_mask(sequence_length, steps)
        k = cell.time_gate.forward_only(time, dtype, leak, mask)
    else:
        k = tf.transpose(cell.time_gate(time, dtype, leak), [1, 0, 2])  # [steps, batch or 1, n]
        if live is not None:
            k = k * tf.transpose(live)[:, :, None]
    return tf.transpose(inputs, [1, 0, 2]), k, live


def _batch_major_outputs(cell, h_seq, inputs, live):
    """h of every step as dynamic_rnn's outputs: [batch, steps, units], zero past each length.

    Args:
      h_seq: [steps, batch, units]; inputs: the time-major inputs (for the static shape); live:
        [batch, steps] or None.
    """
    outputs = tf.transpose(h_seq, [1, 0, 2])
    # Static [batch, steps, units], as dynamic_rnn gives (inputs is time-major here).
    outputs.set_shape([inputs.shape[1], inputs.shape[0], cell.output_size])
    if live is not None:
        outputs = outputs * live[:, :, None]
    return outputs


def runs_fused_kernel(cell, device=None):
    """Whether `phased_lstm_rnn(cell, ...)` (or `phased_gru_rnn` for a PhasedGRUCell) runs its
    fused kernel (by default, for a built cell).

    True for float32 and float64 cells (a PhasedLSTMCell with or without peepholes) where the
    cell's kernel could be built and loaded (`fused_kernel_available()`, or
    `fused_rnn.fused_gru_kernel_available()`) and the recurrence runs on the CPU.

    Args:
      cell: a PhasedLSTMCell or a PhasedGRUCell.
      device: where the recurrence is placed, as a device string; default what the device
        scope in force gives new ops ("" in graph mode without one: TensorFlow's placement).
    """
    return _why_not_fused(cell.dtype, None, device, _library_of(cell)) is None


def describe_path(cell, device=None):
    """One line for logs: which path `phased_lstm_rnn(cell, ...)` (or `phased_gru_rnn`) runs,
    and why (see runs_fused_kernel for the arguments)."""
    library = _library_of(cell)
    why_not = _why_not_fused(cell.dtype, None, device, library)
    if why_not is None:
        rung = library.loaded_build().rung
        return (f"{library.function} runs the fused kernel ({rung.name} build: "
                f"{' '.join(rung.arch_flags) or 'no -march'})")
    return (f"{library.function} runs its TensorFlow loop (slower than the fused kernel): "
            f"{why_not}")


def _library_of(cell):
    """The fused kernel's library for the cell's sequence function."""
    return fused_rnn.GRU if isinstance(cell, PhasedGRUCell) else fused_rnn.LSTM


def _current_device():
    """The device that the current device scope gives new ops ("" where none chose one)."""
    if tf.executing_eagerly():
        return tf.constant(0.0).device  # where eager float ops run now (int32 stays on the CPU)
    graph = tf.compat.v1.get_default_graph()
    if graph.finalized:  # no probe can be added: TensorFlow's placement decides
        return ""
    # A no-op carries the device stack's choice; it is never run.
    return tf.no_op(name="phased_lstm_device_probe").device


def _why_not_fused(dtype, fused, device, library=fused_rnn.LSTM):
    """Why the recurrence does not run in the library's fused kernel, or None where it does
    (see phased_lstm_rnn's `fused`; device None: the current one)."""
    if fused is False:
        return "fused=False"
    dtype = tf.as_dtype(dtype)
    if dtype.base_dtype not in fused_rnn.DTYPES:
        return f"its dtype is {dtype.name}, not float32 or float64"
    if fused_rnn.disabled():
        return f"{fused_rnn.FUSED_ENV}=0 turns the fused kernel off"
    if not library.available():  # the warning logged then says why in full
        return ("the fused kernel could not be built here (see the warning logged; "
                f"`{op_library.REBUILD_COMMAND} --status` says why)")
    if fused is None:  # fused=True is the user's choice of the CPU kernel, wherever it runs
        return fused_rnn.kernel_device_reason(_current_device() if device is None else device)
    return None


def _use_fused(dtype, fused, device, library=fused_rnn.LSTM):
    """Whether the recurrence runs in the library's fused kernel; raises ValueError where
    fused=True asks for it and it cannot run."""
    why_not = _why_not_fused(dtype, fused, device, library)
    if fused and why_not:
        raise ValueError(f"fused=True, but the fused kernel cannot run this cell: {why_not}")
    return why_not is None


def _loop(step, inputs, k, initial_state, steps):
    """Runs `step` over time-major inputs; returns (h of every step, final state).

    The state is a tuple of tensors whose last is h ((c, h), or (h,) for the GRU).
    A while loop rather than tf.scan: scan would also stack c at every step, which costs a
    write forward and a read backward per step for a sequence nobody uses.
    """
    inputs_ta = tf.TensorArray(inputs.dtype, size=steps).unstack(inputs)
    k_ta = tf.TensorArray(k.dtype, size=steps).unstack(k)
    outputs_ta = tf.TensorArray(inputs.dtype, size=steps)

    def body(t, state, outputs_ta):
        state = tuple(step(state, (inputs_ta.read(t), k_ta.read(t))))
        return t + 1, state, outputs_ta.write(t, state[-1])

    _, state, outputs_ta = tf.while_loop(
        lambda t, *_: t < steps, body, (0, tuple(initial_state), outputs_ta),
        parallel_iterations=32)
    return outputs_ta.stack(), state


def _gru_step(cell):
    """Loop body of phased_gru_rnn's TensorFlow path: the cell's GRU step, then the gate k."""

    def step(state, x_and_k):
        (h_prev,), (x, k) = state, x_and_k
        return (h_prev + k * (cell.gru_step(x, h_prev) - h_prev),)

    return step


def _gate(c_prev, h_prev, c_lstm, h_lstm, k):
    """k * new + (1 - k) * old for c and h, one multiply each."""
    return c_prev + k * (c_lstm - c_prev), h_prev + k * (h_lstm - h_prev)


def _sequence_without_peepholes(cell, inputs, k, initial_state):
    """The recurrence without peepholes, with a gradient written for the whole sequence.

    Autodiff of a while loop computes, at every step, the weight gradients and sums them, and
    carries every saved activation as a loop variable of its own. Here the forward loop saves
    what the backward needs in one packed write per step; the backward loop computes only what
    must be sequential (the gradients of c and h, and of the gates' pre-activations, dz), and
    the kernels', bias's and inputs' gradients are then one product over all steps each.

    Args:
      cell: a built PhasedLSTMCell without peepholes.
      inputs: [steps, batch, input_size], time-major.
      k: the time gate, [steps, batch or 1, units].
      initial_state: (c, h), each [batch, units].

    Returns:
      (h of every step [steps, batch, units], final c, final h).
    """
    n, input_size = cell.output_size, inputs.shape[-1]
    kernel, bias = cell.packed_weights()
    clip = cell.gate_gradient_clip
    k_shared = k.shape[1] == 1
    if not k_shared:  # one k per example (or unknown): make it exactly [steps, batch, units]
        k = tf.broadcast_to(k, tf.concat([tf.shape(inputs)[:2], [n]], 0))
    steps = tf.shape(inputs)[0]

    def stack_of(tensor):
        # Read again by the backward loop (and, eagerly, by each gradient computation).
        return tf.TensorArray(tensor.dtype, size=steps, clear_after_read=False).unstack(tensor)

    def empty():
        return tf.TensorArray(inputs.dtype, size=steps)

    @tf.custom_gradient
    def sequence(inputs, k, c0, h0, kernel, bias):
        w_x, w_h = kernel[:input_size], kernel[input_size:]
        inputs_ta, k_ta = stack_of(inputs), stack_of(k)
        # What the backward needs of a step is packed in one write, [8, batch, units]: a loop
        # variable costs a few control-flow kernels per step, and each TensorArray one more;
        # stacking on a new first axis copies whole blocks (a concat on axis 1 copies by row).

        def forward(t, c_prev, h_prev, h_ta, saved_ta):
            # An LSTM step of its own (docs/library.md lists them): it saves, packed, what the
            # hand-written gradient below reads.
            # [x, h] @ kernel per step, as BasicLSTMCell: a product of the inputs for all steps
            # before the loop would be a [steps, batch, 4 units] tensor to write and read back.
            z = tf.nn.bias_add(tf.concat([inputs_ta.read(t), h_prev], axis=1) @ kernel, bias)
            sigmoid_in, j_in = tf.split(z, [3 * n, n], axis=1)
            sigmoids, j = tf.sigmoid(sigmoid_in), tf.tanh(j_in)
            i, f, o = tf.split(sigmoids, 3, axis=1)
            c_lstm = f * c_prev + i * j
            tanh_c = tf.tanh(c_lstm)
            c_step = c_lstm - c_prev  # c~ - c_prev: what the gate lets through
            h_step = o * tanh_c - h_prev
            k_t = k_ta.read(t)
            c, h = c_prev + k_t * c_step, h_prev + k_t * h_step
            saved = tf.stack([i, f, o, j, tanh_c, c_step, h_step, c_prev])  # c_step = c~ - c_prev
            return t + 1, c, h, h_ta.write(t, h), saved_ta.write(t, saved)

        _, c, h, h_ta, saved_ta = tf.while_loop(
            lambda t, *_: t < steps, forward, (0, c0, h0, empty(), empty()),
            parallel_iterations=32)
        h_seq = h_ta.stack()
        h_prev_seq = tf.concat([h0[None], h_seq[:-1]], axis=0)  # the h each step started from

        def grad(d_h_seq, d_c, d_h):
            d_h_seq_ta = stack_of(d_h_seq)

            def backward(t, dc, dh, dz_ta, dk_ta):
                i, f, o, j, tanh_c, c_step, h_step, c_prev = tf.unstack(saved_ta.read(t))
                k_t = k_ta.read(t)
                dh = dh + d_h_seq_ta.read(t)
                # c = c_prev + k (c~ - c_prev),  h = h_prev + k (h~ - h_prev)
                dk = dc * c_step + dh * h_step
                d_h_lstm = k_t * dh
                d_c_lstm = k_t * dc + tf.raw_ops.TanhGrad(y=tanh_c, dy=d_h_lstm * o)
                dz = tf.concat([tf.raw_ops.SigmoidGrad(y=i, dy=d_c_lstm * j),
                                tf.raw_ops.SigmoidGrad(y=f, dy=d_c_lstm * c_prev),
                                tf.raw_ops.SigmoidGrad(y=o, dy=d_h_lstm * tanh_c),
                                tf.raw_ops.TanhGrad(y=j, dy=d_c_lstm * i)], axis=1)
                if clip is not None:  # the cell's gate_gradient_clip
                    dz = tf.clip_by_value(dz, -clip, clip)
                closed = 1.0 - k_t
                dc_prev = closed * dc + d_c_lstm * f
                dh_prev = closed * dh + tf.matmul(dz, w_h, transpose_b=True)
                return t - 1, dc_prev, dh_prev, dz_ta.write(t, dz), dk_ta.write(t, dk)

            _, dc0, dh0, dz_ta, dk_ta = tf.while_loop(
                lambda t, *_: t >= 0, backward, (steps - 1, d_c, d_h, empty(), empty()),
                parallel_iterations=32)
            dz = tf.reshape(dz_ta.stack(), [-1, 4 * n])
            x_h = tf.reshape(tf.concat([inputs, h_prev_seq], axis=2), [-1, input_size + n])
            d_inputs = tf.reshape(tf.matmul(dz, w_x, transpose_b=True), tf.shape(inputs))
            dk = dk_ta.stack()
            if k_shared:
                dk = tf.reduce_sum(dk, axis=1, keepdims=True)
            return (d_inputs, dk, dc0, dh0, tf.matmul(x_h, dz, transpose_a=True),
                    tf.reduce_sum(dz, axis=0))

        return (h_seq, c, h), grad

    return sequence(inputs, k, *initial_state, kernel, bias)


def _peephole_step(cell):
    """Loop body with the TF 1.x cell's full-matrix peepholes (c_{t-1} for i and f, c~ for o).

    The pure-TensorFlow path for peephole cells (fused=False, or no kernel), differentiated by
    autodiff; the fused kernel computes the same recurrence.
    """
    n = cell.output_size
    w_xh, bias = cell.packed_weights()  # columns [i, f, o, j]
    w_c_mask, w_c_out = cell.peephole_weights()

    def step(state, x_and_k):
        # An LSTM step of its own (docs/library.md lists them): weights packed once outside the
        # loop; the cell's own step here measured slower.
        (c_prev, h_prev), (x, k) = state, x_and_k
        z = clip_gradient(tf.concat([x, h_prev], 1) @ w_xh + bias, cell.gate_gradient_clip)
        i_f, o, j = tf.split(z, [2 * n, n, n], axis=1)
        i, f = tf.split(tf.sigmoid(i_f + c_prev @ w_c_mask), 2, axis=1)
        c_lstm = f * c_prev + i * tf.tanh(j)
        h_lstm = tf.sigmoid(o + c_lstm @ w_c_out) * tf.tanh(c_lstm)
        return _gate(c_prev, h_prev, c_lstm, h_lstm, k)

    return step
