"""PhasedMultiRNNCell: stacked layers that all see the timestamps."""

from phased_lstm.legacy_tf import rnn_cell, tf
from phased_lstm.phased_cell import PhasedRNNCell, check_phased_inputs


class PhasedMultiRNNCell(rnn_cell.MultiRNNCell):
    """A stack of cells in which every phased layer gets the timestamps.

    `MultiRNNCell` feeds each layer the output of the one below, so a phased upper layer would
    lose its time input. This cell takes (time [batch, 1], features [batch, input_size]) and
    gives every phased layer (time, output of the layer below); other cells (e.g. an LSTMCell
    on top) get the features alone. Variables are named `cell_<i>/...`, as in MultiRNNCell.

    Args:
      cells: list of RNNCells, bottom first; at least one.

    Raises:
      ValueError: if cells is empty.
    """

    def __init__(self, cells):
        super().__init__(cells, state_is_tuple=True)

    def call(self, inputs, state):
        """One step of every layer.

        Args:
          inputs: (time [batch, 1], features [batch, input_size]); the time may be
            [batch, num_units] where every phased layer has num_units units.
          state: tuple of the layers' states.

        Returns:
          (output of the top layer, tuple of the layers' new states).
        """
        # Per-unit time [batch, n] can serve only layers that all have n units; each phased
        # layer checks its own time again.
        sizes = {cell.output_size for cell in self._cells if isinstance(cell, PhasedRNNCell)}
        time, layer_input = check_phased_inputs(inputs, type(self).__name__,
                                                sizes.pop() if len(sizes) == 1 else None)
        new_states = []
        for i, cell in enumerate(self._cells):
            with tf.compat.v1.variable_scope(f"cell_{i}"):
                cell_input = (time, layer_input) if isinstance(cell, PhasedRNNCell) else layer_input
                layer_input, new_state = cell(cell_input, state[i])
            new_states.append(new_state)
        return layer_input, tuple(new_states)
