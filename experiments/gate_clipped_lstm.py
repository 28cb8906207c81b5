"""The LSTM baseline with the authors' per-step gate-gradient clipping.

The Phased LSTM authors trained their LSTM baseline, as their Phased LSTM, with Lasagne's
`grad_clipping`: inside every step the gradient of the gates' pre-activations is clipped
element-wise (`phased_lstm.gate_gradient`). TensorFlow's LSTMCell has no such hook, so this
cell repeats its step (the one LSTM step outside the package, for this reason alone) with the
clip inserted; without a clip it is LSTMCell itself.
"""

from phased_lstm import rnn_cell, tf
from phased_lstm.gate_gradient import check_gate_gradient_clip, clip_gradient


class GateClippedLSTMCell(rnn_cell.LSTMCell):
    """TF 1.x's LSTMCell (same variables, same forward), with per-step gate-gradient clipping.

    In every step the gradient of [x, h] kernel + bias, before the forget bias and the diagonal
    peepholes are added, is clipped element-wise to [-gate_gradient_clip, gate_gradient_clip]
    before it reaches the inputs, h_{t-1}, the kernel and the bias.

    Args:
      num_units: the LSTM's units.
      gate_gradient_clip: a float > 0; None or 0: no clipping (LSTMCell's own step).
      use_peepholes: LSTMCell's diagonal peepholes.
      forget_bias: added to the forget gate's pre-activation, as LSTMCell.
      name: the layer name; default "lstm_cell", LSTMCell's, so checkpoints interchange.
      **kwargs: LSTMCell's other arguments, except those that change its state or output
        (num_proj, cell_clip, state_is_tuple=False).

    Raises:
      ValueError: for a bad gate_gradient_clip or an unsupported LSTMCell argument.
    """

    def __init__(self, num_units, gate_gradient_clip=None, use_peepholes=False,
                 forget_bias=1.0, name="lstm_cell", **kwargs):
        unsupported = sorted(key for key in ("num_proj", "cell_clip", "proj_clip")
                             if kwargs.get(key) is not None)
        if kwargs.get("state_is_tuple") is False:
            unsupported.append("state_is_tuple=False")
        if unsupported:
            raise ValueError(f"GateClippedLSTMCell does not support {', '.join(unsupported)}")
        super().__init__(num_units, use_peepholes=use_peepholes, forget_bias=forget_bias,
                         name=name, **kwargs)
        self._gate_gradient_clip = check_gate_gradient_clip(gate_gradient_clip)

    @property
    def gate_gradient_clip(self):
        return self._gate_gradient_clip

    def call(self, inputs, state):
        if self._gate_gradient_clip is None:
            return super().call(inputs, state)
        # An LSTM step of its own (docs/library.md lists them): LSTMCell's, with the clip inserted.
        c_prev, h_prev = state
        z = tf.nn.bias_add(tf.matmul(tf.concat([inputs, h_prev], 1), self._kernel), self._bias)
        i, j, f, o = tf.split(clip_gradient(z, self._gate_gradient_clip), 4, axis=1)
        if self._use_peepholes:
            i += self._w_i_diag * c_prev
            f += self._w_f_diag * c_prev
        c = tf.sigmoid(f + self._forget_bias) * c_prev + tf.sigmoid(i) * self._activation(j)
        if self._use_peepholes:
            o += self._w_o_diag * c
        h = tf.sigmoid(o) * self._activation(c)
        return h, rnn_cell.LSTMStateTuple(c, h)

    def get_config(self):
        return {**super().get_config(), "gate_gradient_clip": self._gate_gradient_clip}
