"""phased_lstm_rnn: a PhasedLSTMCell over whole sequences, at the cost of a plain LSTM.

`dynamic_rnn(cell, (time, inputs))` runs the cell's whole step, time gate included, inside its
loop: three matrix products on [x, h(, c)] and about thirty element-wise operations per step.
But the time gate depends only on the timestamps and the timing parameters, and the input's
share of every gate only on the inputs, so both are computed for all steps at once, before the
loop. What stays in the loop is one [batch, units] x [units, 4 units] product with h (plus the
peephole products), the LSTM's element-wise operations, and the gating.

Padding is folded into the gate as well: past an example's sequence_length its k is 0, which
carries the state unchanged, exactly what dynamic_rnn's copy-through does.

The function uses the cell's own variables, so one checkpoint serves both paths.
"""

from phased_lstm.legacy_tf import rnn_cell, tf
from phased_lstm.phased_lstm_cell import PhasedLSTMCell
from phased_lstm.time_gate import check_time


def _lstm_block_cell_grad(op, *grads):
    """Gradient of TensorFlow's fused LSTMBlockCell op (registered by tf.contrib in TF 1.x).

    LSTMBlockCellGrad returns the gradient of the gates' pre-activations, [batch, 4 units];
    the products below carry it to the op's inputs: xh = [x, h_prev] times the kernel w.
    """
    x, cs_prev, h_prev, w, wci, wcf, wco, b = op.inputs
    i, cs, f, o, ci, co, _ = op.outputs
    cs_grad, h_grad = grads[1], grads[6]
    cs_grad = tf.zeros_like(cs) if cs_grad is None else cs_grad
    h_grad = tf.zeros_like(cs) if h_grad is None else h_grad
    cs_prev_grad, gates_grad, wci_grad, wcf_grad, wco_grad = tf.raw_ops.LSTMBlockCellGrad(
        x=x, cs_prev=cs_prev, h_prev=h_prev, w=w, wci=wci, wcf=wcf, wco=wco, b=b, i=i, cs=cs,
        f=f, o=o, ci=ci, co=co, cs_grad=cs_grad, h_grad=h_grad,
        use_peephole=op.get_attr("use_peephole"))
    xh_grad = tf.matmul(gates_grad, w, transpose_b=True)
    x_grad, h_prev_grad = tf.split(xh_grad, [tf.shape(x)[1], tf.shape(h_prev)[1]], axis=1)
    w_grad = tf.matmul(tf.concat([x, h_prev], 1), gates_grad, transpose_a=True)
    return (x_grad, cs_prev_grad, h_prev_grad, w_grad, wci_grad, wcf_grad, wco_grad,
            tf.reduce_sum(gates_grad, 0))


try:
    tf.RegisterGradient("LSTMBlockCell")(_lstm_block_cell_grad)
except KeyError:  # a TensorFlow that registers it itself
    pass


def _check_sequence_inputs(time, inputs):
    expected_time = "[batch, steps, 1] (or [1, steps, 1] when the batch shares its timestamps)"
    check_time(time, expected_time)
    if time.shape.rank not in (None, 3):
        raise ValueError(f"time must have shape {expected_time}; got shape {time.shape}")
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


def phased_lstm_rnn(cell, time, inputs, sequence_length=None, initial_state=None, scope=None):
    """Runs `cell` over sequences; the same results as `dynamic_rnn(cell, (time, inputs))`.

    Args:
      cell: a PhasedLSTMCell. Built here if it is not yet, under the variable scope `scope`
        (default "rnn", as dynamic_rnn), so that variable names match dynamic_rnn's.
      time: timestamps [batch, steps, 1], or [1, steps, 1] shared by the whole batch; float32,
        or float64 for large timestamps.
      inputs: features [batch, steps, input_size].
      sequence_length: optional int [batch]; steps past it leave the state unchanged and
        output zeros.
      initial_state: optional LSTMStateTuple(c, h), each [batch, num_units]; default zeros.
      scope: variable scope for building the cell; default "rnn".

    Returns:
      (outputs [batch, steps, num_units], LSTMStateTuple(c, h) at each example's last step).

    Raises:
      TypeError: if cell is not a PhasedLSTMCell or time is not floating point.
      ValueError: if time or inputs do not have the shapes above.
    """
    if not isinstance(cell, PhasedLSTMCell):
        raise TypeError(f"phased_lstm_rnn runs a PhasedLSTMCell; got {type(cell).__name__}")
    time = tf.convert_to_tensor(time)
    inputs = tf.convert_to_tensor(inputs)
    _check_sequence_inputs(time, inputs)
    with tf.compat.v1.variable_scope(scope or "rnn"):
        batch = tf.shape(inputs)[0]
        if not cell.built:
            # Building through a (never run) first step gives the variables dynamic_rnn's names.
            cell((time[:, 0], inputs[:, 0]), cell.zero_state(batch, inputs.dtype))
        dtype = cell.dtype
        inputs = tf.cast(inputs, dtype)
        input_size = inputs.shape[-1]

        steps = tf.shape(inputs)[1]
        k = tf.transpose(cell.time_gate(time, dtype), [1, 0, 2])  # [steps, batch or 1, n]
        if sequence_length is not None:
            live = tf.sequence_mask(sequence_length, steps, dtype=dtype)  # [batch, steps]
            k = k * tf.transpose(live)[:, :, None]
        if initial_state is None:
            initial_state = cell.zero_state(batch, dtype)
        step = (_peephole_step if cell.use_peepholes else _fused_step)(cell, input_size)
        h_seq, (c, h) = _loop(step, tf.transpose(inputs, [1, 0, 2]), k, initial_state, steps)
        outputs = tf.transpose(h_seq, [1, 0, 2])
        if sequence_length is not None:
            outputs = outputs * live[:, :, None]
        return outputs, rnn_cell.LSTMStateTuple(c, h)


def _loop(step, inputs, k, initial_state, steps):
    """Runs `step` over time-major inputs; returns (h of every step, final (c, h)).

    A while loop rather than tf.scan: scan would also stack c at every step, which costs a
    write forward and a read backward per step for a sequence nobody uses.
    """
    inputs_ta = tf.TensorArray(inputs.dtype, size=steps).unstack(inputs)
    k_ta = tf.TensorArray(k.dtype, size=steps).unstack(k)
    outputs_ta = tf.TensorArray(inputs.dtype, size=steps)

    def body(t, c, h, outputs_ta):
        c, h = step((c, h), (inputs_ta.read(t), k_ta.read(t)))
        return t + 1, c, h, outputs_ta.write(t, h)

    _, c, h, outputs_ta = tf.while_loop(
        lambda t, *_: t < steps, body, (0,) + tuple(initial_state) + (outputs_ta,),
        parallel_iterations=32)
    return outputs_ta.stack(), (c, h)


def _gate(c_prev, h_prev, c_lstm, h_lstm, k):
    """k * new + (1 - k) * old for c and h, one multiply each."""
    return c_prev + k * (c_lstm - c_prev), h_prev + k * (h_lstm - h_prev)


def _fused_step(cell, input_size):
    """Loop body without peepholes: TensorFlow's fused LSTMBlockCell op, then the time gate."""
    n = cell.output_size
    # LSTMBlockCell's columns are [i, j, f, o] (input, new input, forget, output gates).
    input_gate, forget_gate = tf.split(cell.mask_gates_kernel, 2, axis=1)
    kernel = tf.concat([input_gate, cell.new_input_kernel, forget_gate,
                        cell.output_gate_kernel], axis=1)
    input_bias, forget_bias = tf.split(cell.mask_gates_bias, 2)
    bias = tf.concat([input_bias, cell.new_input_bias, forget_bias, cell.output_gate_bias], 0)
    no_peephole = tf.zeros([n], cell.dtype)

    def step(state, x_and_k):
        (c_prev, h_prev), (x, k) = state, x_and_k
        _, c_lstm, _, _, _, _, h_lstm = tf.raw_ops.LSTMBlockCell(
            x=x, cs_prev=c_prev, h_prev=h_prev, w=kernel, wci=no_peephole, wcf=no_peephole,
            wco=no_peephole, b=bias, forget_bias=0.0, cell_clip=-1.0, use_peephole=False)
        return _gate(c_prev, h_prev, c_lstm, h_lstm, k)

    return step


def _peephole_step(cell, input_size):
    """Loop body with the TF 1.x cell's full-matrix peepholes (c_{t-1} for i and f, c~ for o)."""
    n = cell.output_size
    x_rows, h_rows = slice(0, input_size), slice(input_size, input_size + n)
    c_rows = slice(input_size + n, input_size + 2 * n)
    mask_kernel, out_kernel = cell.mask_gates_kernel, cell.output_gate_kernel
    # Columns [i, f, o, j]: the three sigmoid gates side by side, then the new input.
    w_xh = tf.concat([tf.concat([mask_kernel[rows], out_kernel[rows],
                                 cell.new_input_kernel[rows]], axis=1)
                      for rows in (x_rows, h_rows)], axis=0)
    bias = tf.concat([cell.mask_gates_bias, cell.output_gate_bias, cell.new_input_bias], 0)
    w_c_mask, w_c_out = mask_kernel[c_rows], out_kernel[c_rows]

    def step(state, x_and_k):
        (c_prev, h_prev), (x, k) = state, x_and_k
        z = tf.concat([x, h_prev], 1) @ w_xh + bias
        i_f, o, j = tf.split(z, [2 * n, n, n], axis=1)
        i, f = tf.split(tf.sigmoid(i_f + c_prev @ w_c_mask), 2, axis=1)
        c_lstm = f * c_prev + i * tf.tanh(j)
        h_lstm = tf.sigmoid(o + c_lstm @ w_c_out) * tf.tanh(c_lstm)
        return _gate(c_prev, h_prev, c_lstm, h_lstm, k)

    return step
