"""Event-driven Phased LSTM inference: only the open units are computed at each step.

At evaluation the leak is 0 (the paper's practice), so a unit whose time gate is closed
(k = 0) keeps c and h exactly: its gates need not be computed at all. With r_on = 0.05 a unit is
open about 5% of the time, the paper's "5% of the computes".

At each step this path computes the gates of the units open for at least one example of the
batch (the union of the open sets), each example with its own k:
- With one timestamp sequence shared by the batch (MNIST, regular sampling) the union is the
  open set itself, and the step's products shrink to the open units' rows.
- With per-sample timestamps the union grows with the batch (asynchronous times open different
  units for different examples); the result is still exact, since an example whose unit is
  closed gets k = 0 and keeps its state, but the saving shrinks towards dense. Grouping examples
  by open set would not help with random times: nearly every example has its own.

The state is kept unit-major ([units, batch]) inside the loop, so that the open units' rows are
gathered and scattered as contiguous memory.

Peepholes (TF 1.x's are full matrices) make every output gate depend on every unit's candidate
cell state, closed units included, so a cell with peepholes is refused here: evaluate it with
`phased_lstm_rnn` and a leak of 0.
"""

from phased_lstm.legacy_tf import rnn_cell, tf
from phased_lstm.phased_lstm_cell import PhasedLSTMCell
from phased_lstm.fast_rnn import check_sequence_inputs


def open_units(cell, time, sequence_length=None, steps=None):
    """The units to compute at each step: open (k > 0, leak 0) for at least one example.

    Args:
      cell: a built PhasedLSTMCell.
      time: [batch or 1, steps, 1 or units] timestamps.
      sequence_length: optional int [batch]: no unit is open for an example past its length.
      steps: number of steps, needed only with sequence_length.

    Returns:
      (k [steps, batch or 1, units] with leak 0, counts [steps] of units to compute,
       order [steps, units]: each step's units to compute first, in increasing order).
    """
    k = tf.transpose(cell.time_gate(time, cell.dtype, leak=0.0), [1, 0, 2])
    if sequence_length is not None:
        live = tf.sequence_mask(sequence_length, steps, dtype=cell.dtype)
        k = k * tf.transpose(live)[:, :, None]
    is_open = tf.reduce_any(k > 0.0, axis=1)  # [steps, units]
    counts = tf.reduce_sum(tf.cast(is_open, tf.int32), axis=1)
    order = tf.argsort(tf.cast(~is_open, tf.int32), axis=1, stable=True)
    return k, counts, order


def gated_lstm_step(kernel_rows, bias, x_h, c_prev, h_prev, k):
    """One gated LSTM step, unit-major, for the units whose rows are given.

    Args:
      kernel_rows: [4 m, input_size + units], the m units' rows of the packed kernel transposed
        (row g * m + u: gate g of [i, f, o, j] of unit u).
      bias: [4 m, 1].
      x_h: [input_size + units, batch], the inputs and every unit's h.
      c_prev, h_prev: [m, batch], the m units' state.
      k: [m, batch or 1], their time gate.

    Returns:
      (c, h), each [m, batch].
    """
    # An LSTM step of its own (docs/library.md lists them): unit-major, for the open units only.
    z = kernel_rows @ x_h + bias
    i, f, o, j = tf.split(z, 4, axis=0)
    c_lstm = tf.sigmoid(f) * c_prev + tf.sigmoid(i) * tf.tanh(j)
    h_lstm = tf.sigmoid(o) * tf.tanh(c_lstm)
    return c_prev + k * (c_lstm - c_prev), h_prev + k * (h_lstm - h_prev)


def unit_major_weights(cell):
    """The cell's packed kernel and bias, unit-major: ([4 units, input_size + units],
    [4 units, 1])."""
    kernel, bias = cell.packed_weights()
    return tf.transpose(kernel), bias[:, None]


def event_driven_phased_lstm(cell, time, inputs, initial_state=None, sequence_length=None,
                             return_sequences=False):
    """Leak-0 inference computing only the open units; equal to the dense path with leak 0.

    Args:
      cell: a PhasedLSTMCell without peepholes (built here if needed, as phased_lstm_rnn does).
      time: [batch, steps, 1] or [1, steps, 1] timestamps, or [batch or 1, steps, num_units]
        (one per unit: the open sets are then per unit and example as well); float32, float64
        or integers (taken as float64).
      inputs: [batch, steps, input_size].
      initial_state: optional LSTMStateTuple(c, h), each [batch, num_units]; default zeros.
      sequence_length: optional int [batch]; the state is carried unchanged past it.
      return_sequences: also return h at every step, [batch, steps, num_units] (zeros past
        sequence_length, as dynamic_rnn).

    Returns:
      LSTMStateTuple(c, h) after the last step, or (outputs, state) with return_sequences.

    Raises:
      TypeError: if cell is not a PhasedLSTMCell, or time holds neither floats nor integers.
      ValueError: if the cell has peepholes, or time or inputs have the wrong shapes.
    """
    if not isinstance(cell, PhasedLSTMCell):
        raise TypeError(
            f"event_driven_phased_lstm runs a PhasedLSTMCell; got {type(cell).__name__}")
    if cell.use_peepholes:
        raise ValueError(
            "event-driven inference needs a cell without peepholes: TF 1.x's full-matrix "
            "peepholes make every output gate read every unit's candidate state; evaluate this "
            "cell with phased_lstm_rnn and leak 0 instead")
    time, inputs = check_sequence_inputs(time, inputs, cell.output_size)
    with tf.compat.v1.variable_scope("rnn"):
        cell.build_for(inputs.shape[-1], inputs.dtype)
        batch, steps = tf.shape(inputs)[0], tf.shape(inputs)[1]
        dtype, n = cell.dtype, cell.output_size
        inputs = tf.cast(inputs, dtype)
        k, counts, order = open_units(cell, time, sequence_length, steps)
        k_units = tf.transpose(k, [0, 2, 1])  # [steps, units, batch or 1]
        kernel_rows, bias = unit_major_weights(cell)
        inputs_units = tf.transpose(inputs, [1, 2, 0])  # [steps, input_size, batch]

        if initial_state is None:
            initial_state = cell.zero_state(batch, dtype)
        c0, h0 = (tf.transpose(s) for s in initial_state)  # [units, batch]

        def step(t, c, h, outputs_ta):
            x_h = tf.concat([inputs_units[t], h], axis=0)  # [input_size + n, batch]: every unit
            units = order[t, :counts[t]]
            rows = tf.concat([units + g * n for g in range(4)], axis=0)
            c_open, h_open = gated_lstm_step(
                tf.gather(kernel_rows, rows), tf.gather(bias, rows), x_h,
                tf.gather(c, units), tf.gather(h, units), tf.gather(k_units[t], units))
            where = units[:, None]
            c = tf.tensor_scatter_nd_update(c, where, c_open)
            h = tf.tensor_scatter_nd_update(h, where, h_open)
            if return_sequences:
                outputs_ta = outputs_ta.write(t, h)
            return t + 1, c, h, outputs_ta

        outputs_ta = tf.TensorArray(dtype, size=steps if return_sequences else 0)
        _, c, h, outputs_ta = tf.while_loop(
            lambda t, *_: t < steps, step, (0, c0, h0, outputs_ta), parallel_iterations=1)
        state = rnn_cell.LSTMStateTuple(tf.transpose(c), tf.transpose(h))
        if not return_sequences:
            return state
        outputs = tf.transpose(outputs_ta.stack(), [2, 0, 1])
        outputs.set_shape(inputs.shape[:2].concatenate([n]))
        if sequence_length is not None:
            outputs = outputs * tf.sequence_mask(sequence_length, steps, dtype=dtype)[:, :, None]
        return outputs, state
