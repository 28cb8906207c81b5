"""PhasedLSTM: a Keras layer (tf-keras, `tf.keras` under TF_USE_LEGACY_KERAS) over a PhasedLSTMCell.

The layer owns a `PhasedLSTMCell` and runs it over whole sequences; it has no equations of its
own, so its variables are the cell's (names, layouts, checkpoints) and its results are the
cell's under `dynamic_rnn`:

- without a mask, through `phased_lstm.fast_rnn.phased_lstm_rnn` (the cell's time gate for all
  steps at once and a hand-written gradient for the whole sequence);
- with a Keras mask, through tf-keras's own RNN loop (`keras.backend.rnn`, what
  `keras.layers.RNN` runs), stepping `PhasedLSTMCell.call`: masks may skip any step, not only a
  padded end, and a skipped step leaves the state as it was.

Both run in eager mode (`fit` traces them with tf.function) and in TF 1.x graphs.

Importing this module registers the layer for Keras serialization ("phased_lstm>PhasedLSTM"), so
`tf.keras.models.load_model` restores models saved as .keras or .h5 without custom_objects.
"""

import numbers

from phased_lstm.fast_rnn import phased_lstm_rnn
from phased_lstm.fused_rnn import keras_forward_only
from phased_lstm.gate_math import DEFAULT_TIMING, GateTiming, leak_or_alpha
from phased_lstm.legacy_tf import rnn_cell, tf
from phased_lstm.phased_lstm_cell import PhasedLSTMCell
from phased_lstm.time_gate import float_time, scalar_argument

# legacy_tf has checked that tf_keras is installed and matches TensorFlow. Taken directly, not as
# tf.keras, which is Keras 3 if it was touched before TF_USE_LEGACY_KERAS was set.
import tf_keras as keras  # noqa: E402  pylint: disable=g-bad-import-order

_TIMING_VARIABLES = ("period", "phase", "ratio_on")


def _v1_initializer(initializer):
    """A Keras initializer callable as TF 1.x's get_variable calls it (with partition_info)."""
    if initializer is None:
        return None

    def initialize(shape, dtype=None, partition_info=None):
        del partition_info  # Keras initializers reject it; variables here are never partitioned
        return initializer(shape, dtype=dtype)

    return initialize


def _config_number(name, value):
    """A timing setting as a float: a number, or a tensor of known value (the config holds it).

    Raises:
      ValueError: for a tensor whose value is known only when run (a placeholder), which a
        saved config could not hold, and for the values `scalar_argument` refuses.
    """
    bound = scalar_argument(name, value)
    if tf.is_tensor(bound):
        raise ValueError(f"PhasedLSTM's {name} must be a number or a tensor of known value (the "
                         f"layer's config holds it); got a tensor known only when run: {bound}")
    return bound


@keras.utils.register_keras_serializable(package="phased_lstm")
class PhasedLSTM(keras.layers.Layer):
    """Phased LSTM layer (Neil, Pfeiffer, Liu, NIPS 2016) for tf.keras, over a `PhasedLSTMCell`.

    Usable in `Sequential` and functional models; the Keras 2.0 seed's use carries over:

        model = tf.keras.Sequential([PhasedLSTM(32, input_shape=(784, 1)),
                                     tf.keras.layers.Dense(10, activation="softmax")])

    Inputs, either:
      - features [batch, steps, input_size]: the timestamp of step n is n (0, 1, 2, ...), as in
        the Keras seed; or
      - a list [features, times] with times [batch, steps, 1] or [batch, steps], one timestamp
        per example and step, or [batch, steps, units], one per unit (float32; float64 keeps
        the phase of timestamps beyond 2**24; integer times are taken as float64). Keras'
        `fit`, `evaluate` and `predict` cast float64 NumPy arrays to float32: give them float64
        tensors or a tf.data.Dataset.

    Masking (a `Masking` layer, `mask_zero` embeddings, or `mask=` [batch, steps] of bools): a
    masked step leaves the state unchanged, as `sequence_length` does for `dynamic_rnn`, and its
    output repeats the previous one (zeros before the first unmasked step), as Keras RNNs do.

    Outputs: h of the last step [batch, units], or of every step [batch, steps, units] with
    `return_sequences`; with `return_state`, the list [output, h, c] (Keras LSTM's order).

    Variables: the cell's (see `PhasedLSTMCell`), created under the variable scope
    `<layer name>/phased_lstm_cell/`.

    Args:
      units: number of units, >= 1.
      use_peepholes: the cell's peephole connections.
      leak, inference_leak, ratio_on, trainable_ratio_on, period_init_min, period_init_max,
        trainable_period, trainable_phase, mod_gradient: the timing, documented and checked
        once, by `phased_lstm.gate_math.GateTiming` (TF 1.x's defaults; leak None: the
        default, unless `alpha` is given). Numbers, which the config holds (a tensor of known
        value is taken as its value). inference_leak applies outside training (`predict`,
        `evaluate`, `training=False`).
      period_initializer, phase_initializer, ratio_on_initializer: Keras initializers (names,
        configs or objects) replacing the cell's defaults (log-uniform periods on
        [period_init_min, period_init_max], phases U(0, initial period), constant `ratio_on`).
        The Keras seed's: RandomUniform(10, 100), RandomUniform(0, 1000) and ratio_on=0.05.
      period_regularizer, phase_regularizer, ratio_on_regularizer: Keras regularizers of the
        timing variables.
      period_constraint, phase_constraint, ratio_on_constraint: Keras constraints of the timing
        variables, applied by the optimiser after each update; periods and open ratios are then
        still projected onto their valid ranges.
      kernel_regularizer, bias_regularizer: Keras regularizers applied to each of the cell's
        kernels (whose rows hold the input, recurrent and peephole weights together) and
        biases.
      return_sequences: whether to return the output of every step.
      return_state: whether to also return the final h and c.
      alpha: the Keras seed's name for `leak`; give one of the two.
      **kwargs: Keras layer arguments (name, dtype, input_shape, activity_regularizer, ...).

    Raises:
      ValueError: for units not an integer >= 1, both `leak` and `alpha`, invalid timing
        settings (`GateTiming`) or ones that are not numbers; when called, for inputs that are
        not [batch, steps, input_size] with a known input_size, or times whose shape does not
        match.
      TypeError: when called, for times that are not numbers.
    """

    def __init__(self, units, use_peepholes=False, leak=None,
                 inference_leak=DEFAULT_TIMING.inference_leak, ratio_on=DEFAULT_TIMING.ratio_on,
                 trainable_ratio_on=DEFAULT_TIMING.trainable_ratio_on,
                 period_init_min=DEFAULT_TIMING.period_init_min,
                 period_init_max=DEFAULT_TIMING.period_init_max,
                 trainable_period=DEFAULT_TIMING.trainable_period,
                 trainable_phase=DEFAULT_TIMING.trainable_phase, period_initializer=None,
                 phase_initializer=None, ratio_on_initializer=None, period_regularizer=None,
                 phase_regularizer=None, ratio_on_regularizer=None, period_constraint=None,
                 phase_constraint=None, ratio_on_constraint=None, kernel_regularizer=None,
                 bias_regularizer=None, return_sequences=False, return_state=False, alpha=None,
                 mod_gradient=DEFAULT_TIMING.mod_gradient, **kwargs):
        # The times must reach the cell in their own dtype (float64 for large timestamps):
        # Keras would cast every floating input to the layer's dtype. Features are cast in call.
        kwargs["autocast"] = False
        super().__init__(**kwargs)
        if not (isinstance(units, numbers.Integral) and units >= 1):
            raise ValueError(f"units must be an integer >= 1; got {units!r}")
        self.units = int(units)
        self.use_peepholes = use_peepholes
        self.timing = GateTiming(
            leak=leak_or_alpha(leak, alpha), inference_leak=inference_leak,
            ratio_on=_config_number("ratio_on", ratio_on), trainable_ratio_on=trainable_ratio_on,
            period_init_min=_config_number("period_init_min", period_init_min),
            period_init_max=_config_number("period_init_max", period_init_max),
            trainable_period=trainable_period, trainable_phase=trainable_phase,
            mod_gradient=mod_gradient).numbers_only()
        self.return_sequences = return_sequences
        self.return_state = return_state
        self.supports_masking = True
        self._initializers = {
            "period": keras.initializers.get(period_initializer),
            "phase": keras.initializers.get(phase_initializer),
            "ratio_on": keras.initializers.get(ratio_on_initializer)}
        self._regularizers = {
            "period": keras.regularizers.get(period_regularizer),
            "phase": keras.regularizers.get(phase_regularizer),
            "ratio_on": keras.regularizers.get(ratio_on_regularizer),
            "kernel": keras.regularizers.get(kernel_regularizer),
            "bias": keras.regularizers.get(bias_regularizer)}
        self._constraints = {
            "period": keras.constraints.get(period_constraint),
            "phase": keras.constraints.get(phase_constraint),
            "ratio_on": keras.constraints.get(ratio_on_constraint)}

        # The cell's timing is the layer's but for inference_leak, which the layer applies
        # itself (`_leak`, given to the cell's steps). The cell projects the periods and open
        # ratios onto their valid ranges after the user's constraints.
        cell_timing = dict(self.timing.settings(), **{
            f"{name}_initializer": _v1_initializer(self._initializers[name])
            for name in _TIMING_VARIABLES}, **{
            f"{name}_constraint": self._constraints[name] for name in _TIMING_VARIABLES})
        del cell_timing["inference_leak"]
        self.cell = PhasedLSTMCell(self.units, use_peepholes=use_peepholes, dtype=self.dtype,
                                   **cell_timing)

    @property
    def leak(self):
        """The closed gate's slope while training (a float)."""
        return self.timing.leak

    @property
    def inference_leak(self):
        """The slope outside training (a float), or None: `leak`."""
        return self.timing.inference_leak

    # -- Inputs --------------------------------------------------------------------------------

    @staticmethod
    def _split(inputs):
        """(features, times or None) from the layer's inputs, or from their shapes."""
        # A shape given as a tuple of ints is one input; a list of shapes or tensors is several.
        if isinstance(inputs, (list, tuple)) and not all(
                isinstance(d, (numbers.Integral, type(None))) for d in inputs):
            if len(inputs) == 1:
                return inputs[0], None
            if len(inputs) != 2:
                raise ValueError("PhasedLSTM takes features [batch, steps, input_size] or a list "
                                 f"[features, times]; got a list of {len(inputs)} inputs")
            return inputs[0], inputs[1]
        return inputs, None

    def _check_shapes(self, features_shape, times_shape):
        features_shape = tf.TensorShape(features_shape)
        if features_shape.rank != 3 or features_shape[-1] is None:
            raise ValueError("PhasedLSTM's features must have shape [batch, steps, input_size] "
                             f"with a known input_size; got shape {features_shape}")
        if times_shape is not None:
            times_shape = tf.TensorShape(times_shape)
            if (times_shape.rank not in (2, 3)
                    or (times_shape.rank == 3 and times_shape[-1] not in (1, self.units))
                    or not times_shape[:2].is_compatible_with(features_shape[:2])):
                raise ValueError(
                    "PhasedLSTM's times must have shape [batch, steps, 1] or [batch, steps], "
                    f"or [batch, steps, {self.units}] (one per unit), matching features "
                    f"{features_shape}; got shape {times_shape}")
        return features_shape

    def build(self, input_shape):
        features_shape = self._check_shapes(*self._split(input_shape))
        cell_input_shape = (tf.TensorShape([None, 1]), tf.TensorShape([None, features_shape[-1]]))
        # As dynamic_rnn would name them, under the layer's name rather than "rnn".
        with tf.compat.v1.variable_scope(self.name):
            self.cell.build(cell_input_shape)
        cell = self.cell
        penalised = {
            "period": [cell.time_gate.period], "phase": [cell.time_gate.phase],
            "ratio_on": [cell.time_gate.ratio_on],
            "kernel": [cell.mask_gates_kernel, cell.new_input_kernel, cell.output_gate_kernel],
            "bias": [cell.mask_gates_bias, cell.new_input_bias, cell.output_gate_bias]}
        for name, variables in penalised.items():
            regularizer = self._regularizers[name]
            if regularizer is not None:
                for variable in variables:
                    self.add_loss(lambda r=regularizer, v=variable: r(v))
        super().build(input_shape)

    def _times(self, features, times):
        """Timestamps [batch or 1, steps, 1 or units] in their own floating dtype."""
        if times is None:  # the step index, shared by the batch
            return tf.range(tf.shape(features)[1], dtype=tf.float32)[None, :, None]
        times = float_time(times, "PhasedLSTM's times")  # integers: float64, exact to 2**53
        return times[:, :, None] if times.shape.rank == 2 else times

    def _leak(self, training):
        """The time gate's slope: a float, or a tensor when `training` is one."""
        if self.inference_leak is None or self.inference_leak == self.leak:
            return self.leak
        if tf.is_tensor(training):
            return tf.where(tf.cast(training, tf.bool), self.leak, self.inference_leak)
        return self.leak if training else self.inference_leak  # None: Keras' default, inference

    # -- Running the cell ----------------------------------------------------------------------

    def call(self, inputs, mask=None, training=None):
        """Runs the cell over the sequences.

        Args:
          inputs: features [batch, steps, input_size], or [features, times].
          mask: optional [batch, steps] bools (for a list input, the features' mask is used).
          training: whether the training leak applies (see `inference_leak`). False or None
            (Keras' inference) also runs the fused kernel's forward-only op, which saves
            nothing for a gradient, where no gradient tape is recording
            (`fused_rnn.keras_forward_only`): the same results.

        Returns:
          The output, or [output, h, c] with return_state (see the class docstring).
        """
        features, times = self._split(inputs)
        self._check_shapes(features.shape, None if times is None else times.shape)
        features = tf.cast(features, self.cell.dtype)
        times = self._times(features, times)
        mask = self._features_mask(mask)

        leak = self._leak(training)
        # phased_lstm_rnn's gradient reads its time gate twice from a TensorArray, which
        # eager TensorArrays forbid; eagerly its loop would run step by step anyway.
        if mask is None and not tf.executing_eagerly():
            outputs, (c, h) = phased_lstm_rnn(self.cell, times, features, leak=leak,
                                              forward_only=keras_forward_only(training))
            # Its transposes lose the static steps and batch, which Keras shows and checks.
            outputs.set_shape(features.shape[:2].concatenate([self.units]))
            for state in (c, h):
                state.set_shape([features.shape[0], self.units])
            output = outputs if self.return_sequences else h
        else:
            output, c, h = self._run_keras_loop(features, times, mask, leak)
        return [output, h, c] if self.return_state else output

    def _run_keras_loop(self, features, times, mask, leak):
        """tf-keras's RNN loop over the cell's own step; returns (output, c, h)."""
        shape = tf.shape(features)
        times = tf.broadcast_to(times, tf.stack([shape[0], shape[1], tf.shape(times)[2]]))
        initial_state = list(self.cell.zero_state(shape[0], features.dtype))

        def step(step_inputs, states):
            # The cell's call, not __call__: inputs were checked and the cell is built.
            output, state = self.cell.call(step_inputs, rnn_cell.LSTMStateTuple(*states), leak)
            return output, list(state)

        last_output, outputs, (c, h) = keras.backend.rnn(
            step, (times, features), initial_state, mask=mask, input_length=features.shape[1],
            return_all_outputs=self.return_sequences)
        return (outputs if self.return_sequences else last_output), c, h

    @staticmethod
    def _features_mask(mask):
        if isinstance(mask, (list, tuple)):
            mask = mask[0] if mask else None
        return mask

    def compute_mask(self, inputs, mask=None):
        mask = self._features_mask(mask)
        output_mask = mask if self.return_sequences else None
        return [output_mask, None, None] if self.return_state else output_mask

    def compute_output_shape(self, input_shape):
        features_shape = self._check_shapes(*self._split(input_shape))
        batch, steps = features_shape[0], features_shape[1]
        output = tf.TensorShape(
            [batch, steps, self.units] if self.return_sequences else [batch, self.units])
        if self.return_state:
            return [output, tf.TensorShape([batch, self.units]),
                    tf.TensorShape([batch, self.units])]
        return output

    # -- Serialization -------------------------------------------------------------------------

    def get_config(self):
        config = dict(
            units=self.units, use_peepholes=self.use_peepholes,
            return_sequences=self.return_sequences, return_state=self.return_state,
            **self.timing.settings())
        for name in _TIMING_VARIABLES:
            config[f"{name}_initializer"] = keras.initializers.serialize(self._initializers[name])
        for name, regularizer in self._regularizers.items():
            config[f"{name}_regularizer"] = keras.regularizers.serialize(regularizer)
        for name, constraint in self._constraints.items():
            config[f"{name}_constraint"] = keras.constraints.serialize(constraint)
        config["activity_regularizer"] = keras.regularizers.serialize(self.activity_regularizer)
        return dict(super().get_config(), **config)
