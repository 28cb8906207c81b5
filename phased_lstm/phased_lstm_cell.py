"""PhasedLSTMCell: a drop-in for TF 1.x's `tf.contrib.rnn.PhasedLSTMCell`."""

from phased_lstm.gate_gradient import check_gate_gradient_clip, clip_gradient
from phased_lstm.gate_math import DEFAULT_TIMING
from phased_lstm.legacy_tf import rnn_cell, tf
from phased_lstm.phased_cell import PhasedRNNCell
from phased_lstm.time_gate import tf_gate_timing


class PhasedLSTMCell(PhasedRNNCell):
    """Phased LSTM cell (Neil, Pfeiffer, Liu, NIPS 2016), with the TF 1.x cell's interface.

    An `RNNCell` (through LayerRNNCell, like TensorFlow's own cells), for `dynamic_rnn`,
    `static_rnn` and the other TF 1.x RNN functions.

    An LSTM step whose result is kept only in proportion to a time gate k that opens during a
    learned fraction `ratio_on` of a learned period, at a learned phase:

        c_t = k_t * c~_t + (1 - k_t) * c_{t-1},    h_t = k_t * h~_t + (1 - k_t) * h_{t-1}

    where (c~_t, h~_t) is the plain LSTM step. Variables (names and layouts of TF 1.x, so its
    checkpoints restore): `mask_gates/kernel` [input_size + num_units (+ num_units), 2 * num_units]
    (input gate, then forget gate), `mask_gates/bias`, `new_input/kernel`
    [input_size + num_units, num_units], `new_input/bias`, `output_gate/kernel`
    [input_size + num_units (+ num_units), num_units], `output_gate/bias`, and `period`, `phase`,
    `ratio_on` [num_units]. Kernel rows are [x, h], then c_{t-1} (mask gates) or c~_t (output
    gate) with peepholes.

    Inputs are a tuple (time [batch, 1], features [batch, input_size]); each example may have its
    own timestamps. The state is `LSTMStateTuple(c, h)`, each [batch, num_units]; the output is h.

    Args:
      num_units: number of units, >= 1.
      use_peepholes: whether the input and forget gates see c_{t-1} and the output gate c~_t.
      leak, ratio_on, trainable_ratio_on, period_init_min, period_init_max, trainable_period,
        trainable_phase, mod_gradient: the timing, with TF 1.x's defaults; documented and
        checked once, by `phased_lstm.gate_math.GateTiming`. As TF 1.x, leak may be a scalar
        float tensor (a placeholder fed 0 to evaluate without leak), and ratio_on and the
        period bounds scalar tensors.
      reuse: whether to reuse variables in an existing scope (TF 1.x semantics).
      period_initializer: replaces the log-uniform period initialiser.
      phase_initializer: replaces the default U(0, initial period).
      ratio_on_initializer: replaces the constant `ratio_on`.
      period_constraint, phase_constraint, ratio_on_constraint: optional callables applied to
        the timing variable's value after each optimiser update; periods and open ratios are
        then still projected onto their valid ranges.
      gate_gradient_clip: None (default, as TF 1.x) or a float > 0: in every step, the gradient
        of the gates' pre-activations [x, h] kernel + bias (before the peepholes are added) is
        clipped element-wise to [-gate_gradient_clip, gate_gradient_clip], as the paper's
        authors trained (`phased_lstm.gate_gradient`). The forward pass is unchanged.
      name: layer name; default "phased_lstm_cell".
      dtype: dtype of the variables and outputs; default: the features' dtype. The time may
        be float64 whatever this is.

    Raises:
      ValueError: for num_units < 1, invalid timing settings (see `GateTiming`) or a negative or
        non-finite gate_gradient_clip; when called, for time not [batch, 1] or features not
        rank 2.
      TypeError: when called, for inputs that are not a (time, features) pair or non-float time.
    """

    def __init__(self, num_units, use_peepholes=False, leak=DEFAULT_TIMING.leak,
                 ratio_on=DEFAULT_TIMING.ratio_on,
                 trainable_ratio_on=DEFAULT_TIMING.trainable_ratio_on,
                 period_init_min=DEFAULT_TIMING.period_init_min,
                 period_init_max=DEFAULT_TIMING.period_init_max, reuse=None, *,
                 trainable_period=DEFAULT_TIMING.trainable_period,
                 trainable_phase=DEFAULT_TIMING.trainable_phase, period_initializer=None,
                 phase_initializer=None, ratio_on_initializer=None,
                 mod_gradient=DEFAULT_TIMING.mod_gradient, period_constraint=None,
                 phase_constraint=None, ratio_on_constraint=None, gate_gradient_clip=None,
                 name=None, dtype=None):
        timing = tf_gate_timing(
            leak=leak, ratio_on=ratio_on, trainable_ratio_on=trainable_ratio_on,
            period_init_min=period_init_min, period_init_max=period_init_max,
            trainable_period=trainable_period, trainable_phase=trainable_phase,
            mod_gradient=mod_gradient)
        super().__init__(
            num_units, reuse, name, dtype, timing, period_initializer=period_initializer,
            phase_initializer=phase_initializer, ratio_on_initializer=ratio_on_initializer,
            period_constraint=period_constraint, phase_constraint=phase_constraint,
            ratio_on_constraint=ratio_on_constraint)
        self._use_peepholes = use_peepholes
        self._gate_gradient_clip = check_gate_gradient_clip(gate_gradient_clip)

    @property
    def state_size(self):
        return rnn_cell.LSTMStateTuple(self._num_units, self._num_units)

    @property
    def output_size(self):
        return self._num_units

    @property
    def use_peepholes(self):
        return self._use_peepholes

    @property
    def gate_gradient_clip(self):
        """The per-step clip of the gates' gradient (a float > 0), or None."""
        return self._gate_gradient_clip

    def build(self, inputs_shape):
        input_size = self._input_size(inputs_shape)
        n = self._num_units
        peep = n if self._use_peepholes else 0
        zeros = tf.compat.v1.zeros_initializer()
        self.mask_gates_kernel = self.add_weight(
            "mask_gates/kernel", shape=[input_size + n + peep, 2 * n])
        self.mask_gates_bias = self.add_weight("mask_gates/bias", shape=[2 * n], initializer=zeros)
        self.new_input_kernel = self.add_weight("new_input/kernel", shape=[input_size + n, n])
        self.new_input_bias = self.add_weight("new_input/bias", shape=[n], initializer=zeros)
        self.output_gate_kernel = self.add_weight(
            "output_gate/kernel", shape=[input_size + n + peep, n])
        self.output_gate_bias = self.add_weight("output_gate/bias", shape=[n], initializer=zeros)
        self.time_gate.build(self.add_weight, self.dtype)
        self.built = True

    def packed_weights(self):
        """The [x, h] rows of the three kernels side by side, for whole-sequence paths.

        Returns:
          (kernel [input_size + num_units, 4 num_units], bias [4 num_units]), columns [i, f, o, j]:
          the three sigmoid gates (input, forget, output), then the new input. Tensors read from
          the cell's variables, so gradients reach them. Peephole rows are in `peephole_weights`.
        """
        rows = self.new_input_kernel.shape[0]  # input_size + num_units
        kernel = tf.concat([self.mask_gates_kernel[:rows], self.output_gate_kernel[:rows],
                            self.new_input_kernel], axis=1)
        bias = tf.concat([self.mask_gates_bias, self.output_gate_bias, self.new_input_bias], 0)
        return kernel, bias

    def peephole_weights(self):
        """(c_{t-1} -> [i, f] [num_units, 2 num_units], c~_t -> o [num_units, num_units]).

        Raises:
          ValueError: the cell has no peepholes.
        """
        if not self._use_peepholes:
            raise ValueError("this PhasedLSTMCell has no peepholes (use_peepholes=False)")
        rows = self.new_input_kernel.shape[0]
        return self.mask_gates_kernel[rows:], self.output_gate_kernel[rows:]

    def call(self, inputs, state, leak=None):
        """One step.

        Args:
          inputs: (time [batch, 1], features [batch, input_size]).
          state: LSTMStateTuple(c [batch, num_units], h [batch, num_units]).
          leak: the closed gate's slope for this step; None: the cell's `leak`.

        Returns:
          (h, LSTMStateTuple(c, h)), each [batch, num_units].
        """
        # An LSTM step of its own (docs/library.md lists them): the TF 1.x drop-in's, on TF 1.x's
        # variables and products; every other path is tested against it.
        time, x = inputs
        c_prev, h_prev = state
        x_h = tf.concat([x, h_prev], 1)
        mask_gates = tf.sigmoid(self._pre_activation(
            x_h, self.mask_gates_kernel, self.mask_gates_bias, c_prev))
        input_gate, forget_gate = tf.split(mask_gates, 2, axis=1)
        new_input = tf.tanh(self._pre_activation(x_h, self.new_input_kernel,
                                                 self.new_input_bias))
        c_lstm = forget_gate * c_prev + input_gate * new_input
        output_gate = tf.sigmoid(self._pre_activation(
            x_h, self.output_gate_kernel, self.output_gate_bias, c_lstm))
        h_lstm = output_gate * tf.tanh(c_lstm)

        k = self.time_gate(time, c_lstm.dtype, leak)
        c = k * c_lstm + (1.0 - k) * c_prev
        h = k * h_lstm + (1.0 - k) * h_prev
        return h, rnn_cell.LSTMStateTuple(c, h)

    def _pre_activation(self, x_h, kernel, bias, peephole_input=None):
        """[x, h] kernel + bias, its gradient clipped when gate_gradient_clip is set, plus the
        peephole rows' product with peephole_input (c_{t-1} or c~_t) when the cell has them."""
        rows = self.new_input_kernel.shape[0]  # input_size + num_units
        if self._gate_gradient_clip is None:  # TF 1.x's one product over [x, h, c]
            if self._use_peepholes and peephole_input is not None:
                x_h = tf.concat([x_h, peephole_input], 1)
            return tf.matmul(x_h, kernel) + bias
        z = clip_gradient(tf.matmul(x_h, kernel[:rows]) + bias, self._gate_gradient_clip)
        if self._use_peepholes and peephole_input is not None:
            z += tf.matmul(peephole_input, kernel[rows:])
        return z
