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
        input_size, n = inputs.shape[-1], cell.output_size

        # Columns [i, f, o, j]: the three sigmoid gates side by side, then the new input.
        mask_kernel, out_kernel = cell.mask_gates_kernel, cell.output_gate_kernel
        x_rows, h_rows = slice(0, input_size), slice(input_size, input_size + n)
        w_x = tf.concat([mask_kernel[x_rows], out_kernel[x_rows],
                         cell.new_input_kernel[x_rows]], axis=1)
        w_h = tf.concat([mask_kernel[h_rows], out_kernel[h_rows],
                         cell.new_input_kernel[h_rows]], axis=1)
        bias = tf.concat([cell.mask_gates_bias, cell.output_gate_bias, cell.new_input_bias], 0)

        # Every step's input share of the gates in one product, then time-major for the loop.
        steps = tf.shape(inputs)[1]
        x_gates = tf.reshape(tf.reshape(inputs, [-1, input_size]) @ w_x + bias,
                             [batch, steps, 4 * n])
        x_gates = tf.transpose(x_gates, [1, 0, 2])
        k = tf.transpose(cell.time_gate(time, dtype), [1, 0, 2])  # [steps, batch or 1, n]
        if sequence_length is not None:
            live = tf.sequence_mask(sequence_length, steps, dtype=dtype)  # [batch, steps]
            k = k * tf.transpose(live)[:, :, None]

        if initial_state is None:
            initial_state = cell.zero_state(batch, dtype)
        c0, h0 = initial_state

        if cell.use_peepholes:
            c_rows = slice(input_size + n, input_size + 2 * n)
            w_c_mask, w_c_out = mask_kernel[c_rows], out_kernel[c_rows]

        def step(state, x_gates_and_k):
            c_prev, h_prev = state
            z, k_t = x_gates_and_k
            z = z + h_prev @ w_h
            if cell.use_peepholes:
                i_f, o_j = tf.split(z, [2 * n, 2 * n], axis=1)
                i, f = tf.split(tf.sigmoid(i_f + c_prev @ w_c_mask), 2, axis=1)
                o, j = tf.split(o_j, 2, axis=1)
                c_lstm = f * c_prev + i * tf.tanh(j)
                o = tf.sigmoid(o + c_lstm @ w_c_out)
            else:
                gates, j = tf.split(z, [3 * n, n], axis=1)
                i, f, o = tf.split(tf.sigmoid(gates), 3, axis=1)
                c_lstm = f * c_prev + i * tf.tanh(j)
            h_lstm = o * tf.tanh(c_lstm)
            # k * new + (1 - k) * old, in one multiply.
            return c_prev + k_t * (c_lstm - c_prev), h_prev + k_t * (h_lstm - h_prev)

        c_seq, h_seq = tf.scan(step, (x_gates, k), initializer=(c0, h0), parallel_iterations=32)
        outputs = tf.transpose(h_seq, [1, 0, 2])
        if sequence_length is not None:
            outputs = outputs * live[:, :, None]
        return outputs, rnn_cell.LSTMStateTuple(c_seq[-1], h_seq[-1])
