"""PhasedGRUCell: the Phased LSTM time gate on a GRU step."""

from phased_lstm.gate_math import DEFAULT_TIMING
from phased_lstm.legacy_tf import tf
from phased_lstm.phased_cell import PhasedRNNCell
from phased_lstm.time_gate import tf_gate_timing


class PhasedGRUCell(PhasedRNNCell):
    """Phased GRU cell: a GRU step kept in proportion to the Phased LSTM time gate.

    The paper (Neil, Pfeiffer, Liu, NIPS 2016) notes that its time gate extends to other gated
    cells. This cell is TF 1.x's `GRUCell` step followed by that gate:

        r, u = sigmoid([x_t, h_{t-1}] W_g + b_g)               (reset gate, then update gate)
        c    = tanh([x_t, r * h_{t-1}] W_c + b_c)
        h~_t = u * h_{t-1} + (1 - u) * c
        h_t  = k_t * h~_t + (1 - k_t) * h_{t-1}

    where k_t is the time gate of `PhasedLSTMCell` (the same `TimeGate`, timing parameters and
    validity guarantees). An `RNNCell` (through LayerRNNCell) for `dynamic_rnn`, `static_rnn`
    and `PhasedMultiRNNCell`.

    Variables (the names and layouts of TF 1.x's GRUCell, plus the timing): `gates/kernel`
    [input_size + num_units, 2 * num_units] (reset gate, then update gate), `gates/bias`
    [2 * num_units] (starts at 1.0, as in GRUCell), `candidate/kernel`
    [input_size + num_units, num_units], `candidate/bias` [num_units] (starts at 0), and `period`,
    `phase`, `ratio_on` [num_units]. Kernel rows are [x, h].

    Inputs are a tuple (time [batch, 1], features [batch, input_size]); each example may have its
    own timestamps. The state and the output are h [batch, num_units].

    Args:
      num_units: number of units, >= 1.
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
      name: layer name; default "phased_gru_cell".
      dtype: dtype of the variables and outputs; default: the features' dtype. The time may
        be float64 whatever this is.

    Raises:
      ValueError: for num_units < 1 or invalid timing settings (see `GateTiming`); when
        called, for time not [batch, 1] or features not rank 2.
      TypeError: when called, for inputs that are not a (time, features) pair or non-float time.
    """

    def __init__(self, num_units, leak=DEFAULT_TIMING.leak, ratio_on=DEFAULT_TIMING.ratio_on,
                 trainable_ratio_on=DEFAULT_TIMING.trainable_ratio_on,
                 period_init_min=DEFAULT_TIMING.period_init_min,
                 period_init_max=DEFAULT_TIMING.period_init_max, reuse=None, *,
                 trainable_period=DEFAULT_TIMING.trainable_period,
                 trainable_phase=DEFAULT_TIMING.trainable_phase, period_initializer=None,
                 phase_initializer=None, ratio_on_initializer=None,
                 mod_gradient=DEFAULT_TIMING.mod_gradient, period_constraint=None,
                 phase_constraint=None, ratio_on_constraint=None, name=None, dtype=None):
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

    @property
    def state_size(self):
        return self._num_units

    @property
    def output_size(self):
        return self._num_units

    def build(self, inputs_shape):
        input_size = self._input_size(inputs_shape)
        n = self._num_units
        self.gates_kernel = self.add_weight("gates/kernel", shape=[input_size + n, 2 * n])
        # As GRUCell: a bias of 1 starts r and u near 0.73, so h~ first mostly keeps h.
        self.gates_bias = self.add_weight(
            "gates/bias", shape=[2 * n], initializer=tf.compat.v1.constant_initializer(1.0))
        self.candidate_kernel = self.add_weight("candidate/kernel", shape=[input_size + n, n])
        self.candidate_bias = self.add_weight(
            "candidate/bias", shape=[n], initializer=tf.compat.v1.zeros_initializer())
        self.time_gate.build(self.add_weight, self.dtype)
        self.built = True

    def packed_weights(self):
        """The two kernels side by side, for whole-sequence paths (`phased_gru_rnn`'s kernel).

        Returns:
          (kernel [input_size + num_units, 3 num_units], bias [3 num_units]), columns [r, u, c]:
          the reset and update gates (`gates/kernel`), then the candidate (`candidate/kernel`,
          whose h rows multiply r * h). Tensors read from the cell's variables, so gradients
          reach them.
        """
        kernel = tf.concat([self.gates_kernel, self.candidate_kernel], axis=1)
        bias = tf.concat([self.gates_bias, self.candidate_bias], axis=0)
        return kernel, bias

    def gru_step(self, x, h_prev):
        """The GRU step before the time gate (the one place its equations are written in
        TensorFlow; the fused kernel computes the same).

        Args:
          x: features [batch, input_size].
          h_prev: [batch, num_units].

        Returns:
          h~, [batch, num_units].
        """
        gates = tf.sigmoid(
            tf.matmul(tf.concat([x, h_prev], 1), self.gates_kernel) + self.gates_bias)
        reset, update = tf.split(gates, 2, axis=1)
        candidate = tf.tanh(
            tf.matmul(tf.concat([x, reset * h_prev], 1), self.candidate_kernel)
            + self.candidate_bias)
        return update * h_prev + (1.0 - update) * candidate

    def call(self, inputs, state, leak=None):
        """One step.

        Args:
          inputs: (time [batch, 1], features [batch, input_size]).
          state: h [batch, num_units].
          leak: the closed gate's slope for this step; None: the cell's `leak`.

        Returns:
          (h, h), each [batch, num_units].
        """
        time, x = inputs
        h_prev = state
        h_gru = self.gru_step(x, h_prev)
        k = self.time_gate(time, h_gru.dtype, leak)
        h = k * h_gru + (1.0 - k) * h_prev
        return h, h
