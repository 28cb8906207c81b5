"""Phased LSTM for Keras 3, on any backend (TensorFlow, JAX, PyTorch).

    from phased_lstm.keras3 import PhasedLSTM, PhasedLSTMCell

Written with `keras.layers` and `keras.ops` only; it never imports tf-keras, imports TensorFlow
only on the TensorFlow backend (for the fused kernel), and sets no environment variable.
`PhasedLSTMCell` is a cell that `keras.layers.RNN` runs, so
return_sequences, return_state, stateful, go_backwards, initial_state, masking, unroll and
`Bidirectional` are Keras' own; `PhasedLSTM` is `keras.layers.RNN` over that cell, taking the
features alone (the timestamps are then the step index) or `[features, times]`. As the TF 1.x
fast path does, `PhasedLSTM` computes the time gate for all steps before the loop (it depends on
the times alone), so the recurrence carries neither the gate's work nor its gradient. On the
TensorFlow backend it runs the recurrence in the fused C++ kernel (`phased_lstm.fused_rnn`)
where `phased_lstm_rnn` would, as `keras.layers.LSTM` picks cuDNN when it can; on the JAX
backend (CPU) the same C++ runs as XLA custom calls (`phased_lstm.jax_ffi`), under `jax.jit`
too. TensorFlow is imported only on its backend, and the weights and saved files are the same
on every path.

The equations, initialisers, variables and guarantees are those of the TF 1.x cell
(`phased_lstm.PhasedLSTMCell`); the time gate is the same function (`phased_lstm.gate_math`).
Neil, Pfeiffer, Liu, "Phased LSTM: Accelerating Recurrent Network Training for Long or
Event-based Sequences", NIPS 2016, https://arxiv.org/abs/1610.09513.

Importing this module registers the classes for Keras serialization (package "phased_lstm"),
so `keras.saving.load_model` restores `.keras` files without custom_objects.
"""

import functools
import math
import numbers

import keras
from keras import ops

from phased_lstm import gate_math, kernel_build
from phased_lstm.gate_math import MIN_PERIOD, MIN_RATIO_ON  # noqa: F401  (re-exported)

if int(keras.__version__.split(".")[0]) < 3:
    raise ImportError(f"phased_lstm.keras3 needs Keras 3; found keras {keras.__version__}. "
                      "With Keras 2 (tf-keras) use phased_lstm.keras_layer.PhasedLSTM.")

_PACKAGE = "phased_lstm"
_DEFAULTS = gate_math.DEFAULT_TIMING  # the timing settings' defaults (TF 1.x's)

# The Keras 3 weight of each TF 1.x variable (Keras 3 names cannot contain "/").
TF1_VARIABLE_NAMES = {
    "mask_gates/kernel": "mask_gates_kernel", "mask_gates/bias": "mask_gates_bias",
    "new_input/kernel": "new_input_kernel", "new_input/bias": "new_input_bias",
    "output_gate/kernel": "output_gate_kernel", "output_gate/bias": "output_gate_bias",
    "period": "period", "phase": "phase", "ratio_on": "ratio_on",
}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ExpUniform(keras.initializers.Initializer):
    """Draws exp(U(ln low, ln high)): log-uniform on [low, high] (the TF 1.x period init).

    Args:
      low: smallest value, > 0.
      high: largest value, >= low.
      seed: a Python int, a `keras.random.SeedGenerator`, or None.
    """

    def __init__(self, low, high, seed=None):
        self.low, self.high = float(low), float(high)
        self.seed = seed
        self._seed_generator = (seed if isinstance(seed, keras.random.SeedGenerator)
                                else keras.random.SeedGenerator(seed))

    def __call__(self, shape, dtype=None):
        return ops.exp(keras.random.uniform(shape, math.log(self.low), math.log(self.high),
                                            dtype=dtype, seed=self._seed_generator))

    def get_config(self):
        seed = self.seed if isinstance(self.seed, int) or self.seed is None else None
        return {"low": self.low, "high": self.high, "seed": seed}


class _Valid(keras.constraints.Constraint):
    """A user's constraint (or none), then the projection onto valid periods or open ratios."""

    def __init__(self, project, user_constraint):
        self.project, self.user_constraint = project, user_constraint

    def __call__(self, w):
        if self.user_constraint is not None:
            w = self.user_constraint(w)
        return self.project(ops, w)


NON_FINITE_TIME = "PhasedLSTM: every timestamp must be finite (NaN or inf found)"


def _finite_times(times):
    """The timestamps, checked: a NaN or infinite one would make every later output NaN.

    Raised at once where the values are known: eager TensorFlow, PyTorch, JAX outside `jit`.
    In a `tf.function` an Assert fails the step when it runs (InvalidArgumentError), as in the
    TF 1.x cells. Where nothing can be raised (JAX under `jit`, TensorFlow under XLA, which drops
    the Assert) the NaN flows into the outputs and the loss, as with any bad input in Keras:
    `keras.callbacks.TerminateOnNaN` (or a check of the loss) stops training there.

    Raises:
      ValueError: for a NaN or infinite timestamp whose value is known here.
    """
    all_finite = ops.all(ops.isfinite(times))
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        if not tf.executing_eagerly():
            with tf.control_dependencies([tf.debugging.Assert(all_finite, [NON_FINITE_TIME])]):
                return tf.identity(times)
    elif backend == "jax":
        import jax  # pylint: disable=import-outside-toplevel

        try:  # concrete outside jit, also under jax.grad
            all_finite = bool(all_finite)
        except jax.errors.ConcretizationTypeError:  # under jit: no value to test
            return times
    elif backend == "torch" and all_finite.device.type == "meta":  # Keras' shape inference
        return times
    if not bool(ops.convert_to_numpy(all_finite)):
        raise ValueError(NON_FINITE_TIME)
    return times


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PhasedLSTMCell(keras.layers.Layer):
    """Phased LSTM cell (Neil, Pfeiffer, Liu, NIPS 2016) for `keras.layers.RNN`.

    An LSTM step whose result is kept only in proportion to a time gate k that opens during a
    learned fraction `ratio_on` of a learned period, at a learned phase:

        c_t = k_t * c~_t + (1 - k_t) * c_{t-1},    h_t = k_t * h~_t + (1 - k_t) * h_{t-1}

    where (c~_t, h~_t) is the plain LSTM step (input, forget and output gates sigmoid, candidate
    tanh) and, per unit, phi = ((t - s) mod tau) / tau, k = 2 phi / r_on while phi < r_on / 2,
    2 - 2 phi / r_on while phi < r_on, and leak * phi otherwise.

    Each step's input is the features followed by the timestamp, [batch, input_size + 1]:

        rnn = keras.layers.RNN(PhasedLSTMCell(32))        # inputs [batch, steps, input_size + 1]

    One timestamp per step, shared by the units: for one per unit, give `PhasedLSTM` times
    [batch, steps, units]. The time keeps its dtype: run the RNN over a float64 sequence
    (features and times) and the phase is computed in float64 (timestamps far beyond float32's
    2**24), the rest in the cell's dtype. `PhasedLSTM` takes `[features, times]` and does
    better: it computes the gate for all steps before the loop and runs its own cell over
    [features, k] (`time_gate`).

    Weights (one-to-one with the TF 1.x cell's variables, `TF1_VARIABLE_NAMES`; see
    `get_tf1_weights` and `set_tf1_weights`): `mask_gates_kernel`
    [input_size + units (+ units), 2 * units] (input gate, then forget gate), `mask_gates_bias`
    [2 * units], `new_input_kernel` [input_size + units, units], `new_input_bias` [units],
    `output_gate_kernel` [input_size + units (+ units), units], `output_gate_bias` [units],
    `period`, `phase`, `ratio_on` [units]. Kernel rows are [x, h], then with peepholes c_{t-1}
    (mask gates) or c~_t (output gate).

    State: [h, c], each [batch, units] (Keras LSTM's order); output: h.

    Args:
      units: number of units, >= 1.
      use_peepholes: whether the input and forget gates see c_{t-1} and the output gate c~_t.
      leak, inference_leak, ratio_on, trainable_ratio_on, period_init_min, period_init_max,
        trainable_period, trainable_phase, mod_gradient: the timing, with TF 1.x's defaults;
        documented and checked once, by `phased_lstm.gate_math.GateTiming`. Numbers, which
        the config holds.
      period_initializer, phase_initializer, ratio_on_initializer: Keras initializers replacing
        the defaults (`ExpUniform(period_init_min, period_init_max)`, U(0, initial period),
        constant `ratio_on`).
      kernel_initializer, bias_initializer: of the three kernels and biases (default
        "glorot_uniform" and "zeros", as the TF 1.x cell).
      kernel_regularizer, bias_regularizer, period_regularizer, phase_regularizer,
        ratio_on_regularizer: Keras regularizers.
      kernel_constraint, bias_constraint, period_constraint, phase_constraint,
        ratio_on_constraint: Keras constraints, applied by the optimiser after each update.
        Periods are then projected onto >= MIN_PERIOD and open ratios onto
        [MIN_RATIO_ON, 1], whatever the user's constraint; the gate also clips them, so that a
        hand-set invalid value cannot produce NaN.
      gate_in_inputs: what each step's input ends with: False (default) the timestamp,
        [batch, input_size + 1]; True the time gate k already computed for the step,
        [batch, input_size + units] (how `PhasedLSTM` runs the cell: `time_gate` for all steps
        before the loop). Recorded in the config; configs without it mean False.
      **kwargs: Keras layer arguments (name, dtype, ...).

    Raises:
      ValueError: for units not an integer >= 1, invalid timing settings (`GateTiming`: a
        negative leak, ratio_on outside (0, 1], period_init_min <= 0, period_init_max <
        period_init_min, an unknown mod_gradient, NaN and infinities) or ones that are not
        numbers; when built, for inputs whose last dimension is unknown or 0;
        when called, for a NaN or infinite timestamp (as `PhasedLSTM`).
    """

    def __init__(self, units, use_peepholes=False, leak=_DEFAULTS.leak,
                 inference_leak=_DEFAULTS.inference_leak, ratio_on=_DEFAULTS.ratio_on,
                 trainable_ratio_on=_DEFAULTS.trainable_ratio_on,
                 period_init_min=_DEFAULTS.period_init_min,
                 period_init_max=_DEFAULTS.period_init_max,
                 trainable_period=_DEFAULTS.trainable_period,
                 trainable_phase=_DEFAULTS.trainable_phase,
                 period_initializer=None, phase_initializer=None, ratio_on_initializer=None,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, period_regularizer=None,
                 phase_regularizer=None, ratio_on_regularizer=None, kernel_constraint=None,
                 bias_constraint=None, period_constraint=None, phase_constraint=None,
                 ratio_on_constraint=None, mod_gradient=_DEFAULTS.mod_gradient,
                 gate_in_inputs=False, **kwargs):
        # The time must reach call() in its own dtype (float64 for large timestamps).
        kwargs["autocast"] = False
        super().__init__(**kwargs)
        if isinstance(units, bool) or not (isinstance(units, numbers.Integral) and units >= 1):
            raise ValueError(f"units must be an integer >= 1; got {units!r}")
        self.timing = gate_math.GateTiming(
            leak=leak, inference_leak=inference_leak, ratio_on=ratio_on,
            trainable_ratio_on=trainable_ratio_on, period_init_min=period_init_min,
            period_init_max=period_init_max, trainable_period=trainable_period,
            trainable_phase=trainable_phase, mod_gradient=mod_gradient).numbers_only()
        self.units = int(units)
        self.use_peepholes = bool(use_peepholes)
        get_init, get_reg, get_con = (keras.initializers.get, keras.regularizers.get,
                                      keras.constraints.get)
        self.period_initializer = get_init(period_initializer)
        self.phase_initializer = get_init(phase_initializer)
        self.ratio_on_initializer = get_init(ratio_on_initializer)
        self.kernel_initializer = get_init(kernel_initializer)
        self.bias_initializer = get_init(bias_initializer)
        self.kernel_regularizer, self.bias_regularizer = (get_reg(kernel_regularizer),
                                                          get_reg(bias_regularizer))
        self.period_regularizer = get_reg(period_regularizer)
        self.phase_regularizer = get_reg(phase_regularizer)
        self.ratio_on_regularizer = get_reg(ratio_on_regularizer)
        self.kernel_constraint, self.bias_constraint = (get_con(kernel_constraint),
                                                        get_con(bias_constraint))
        self.period_constraint = get_con(period_constraint)
        self.phase_constraint = get_con(phase_constraint)
        self.ratio_on_constraint = get_con(ratio_on_constraint)
        self.state_size = [self.units, self.units]
        self.output_size = self.units
        self.gate_in_inputs = bool(gate_in_inputs)

    # The timing's settings, read from the one GateTiming (ratio_on is the weight).
    leak = property(lambda self: self.timing.leak)
    inference_leak = property(lambda self: self.timing.inference_leak)
    ratio_on_init = property(lambda self: self.timing.ratio_on)
    trainable_ratio_on = property(lambda self: self.timing.trainable_ratio_on)
    period_init_min = property(lambda self: self.timing.period_init_min)
    period_init_max = property(lambda self: self.timing.period_init_max)
    trainable_period = property(lambda self: self.timing.trainable_period)
    trainable_phase = property(lambda self: self.timing.trainable_phase)
    mod_gradient = property(lambda self: self.timing.mod_gradient)

    def _extra_columns(self):
        return self.units if self.gate_in_inputs else 1

    def build(self, input_shape):
        """Creates the weights for steps of [batch, input_size + 1] (features, then time), or
        [batch, input_size + units] (features, then k) with `gate_in_inputs`."""
        extra = self._extra_columns()
        if input_shape[-1] is None or input_shape[-1] < extra:
            raise ValueError(
                f"PhasedLSTMCell's step input is [batch, input_size + {extra}] (the features, "
                f"then {'k' if self.gate_in_inputs else 'the timestamp'}) with a known last "
                f"dimension; got shape {tuple(input_shape)}")
        input_size, n = input_shape[-1] - extra, self.units
        peep = n if self.use_peepholes else 0

        def kernel(name, rows, columns):
            return self.add_weight(shape=(rows, columns), name=name,
                                   initializer=self.kernel_initializer,
                                   regularizer=self.kernel_regularizer,
                                   constraint=self.kernel_constraint)

        def bias(name, size):
            return self.add_weight(shape=(size,), name=name, initializer=self.bias_initializer,
                                   regularizer=self.bias_regularizer,
                                   constraint=self.bias_constraint)

        self.mask_gates_kernel = kernel("mask_gates_kernel", input_size + n + peep, 2 * n)
        self.mask_gates_bias = bias("mask_gates_bias", 2 * n)
        self.new_input_kernel = kernel("new_input_kernel", input_size + n, n)
        self.new_input_bias = bias("new_input_bias", n)
        self.output_gate_kernel = kernel("output_gate_kernel", input_size + n + peep, n)
        self.output_gate_bias = bias("output_gate_bias", n)

        # As TF 1.x: each unit's phase starts at a uniform point of its own initial period, so
        # the initial periods are drawn first and kept for the phase initializer.
        period_initializer = self.period_initializer or ExpUniform(self.period_init_min,
                                                                   self.period_init_max)
        initial_period = period_initializer((n,), dtype=self.variable_dtype)
        self.period = self.add_weight(
            shape=(n,), name="period", initializer=lambda shape, dtype=None: initial_period,
            regularizer=self.period_regularizer, trainable=self.trainable_period,
            constraint=_Valid(gate_math.valid_period, self.period_constraint))
        phase_initializer = self.phase_initializer or (
            lambda shape, dtype=None: keras.random.uniform(shape, dtype=dtype) * initial_period)
        self.phase = self.add_weight(
            shape=(n,), name="phase", initializer=phase_initializer,
            regularizer=self.phase_regularizer, trainable=self.trainable_phase,
            constraint=self.phase_constraint)
        self.ratio_on = self.add_weight(
            shape=(n,), name="ratio_on",
            initializer=self.ratio_on_initializer or keras.initializers.Constant(
                self.ratio_on_init),
            regularizer=self.ratio_on_regularizer, trainable=self.trainable_ratio_on,
            constraint=_Valid(gate_math.valid_ratio_on, self.ratio_on_constraint))

    def _leak(self, training):
        """The closed gate's slope: `leak` while training, `inference_leak` otherwise."""
        inference_leak = self.leak if self.inference_leak is None else self.inference_leak
        if inference_leak == self.leak:
            return self.leak
        if training is None or isinstance(training, bool):
            return self.leak if training else inference_leak
        return ops.where(ops.cast(training, "bool"), self.leak, inference_leak)

    def time_gate(self, time, training=None):
        """k [..., units] in the cell's dtype for timestamps [..., 1] (any float dtype).

        Raises:
          ValueError: for a NaN or infinite timestamp, where the values are known (see
            `_finite_times`).
        """
        time = _finite_times(time)
        return gate_math.time_gate(ops, time, self.period, self.phase, self.ratio_on,
                                   self._leak(training), self.compute_dtype, self.mod_gradient)

    def forward_only_gate(self, time, training=None, live=None):
        """time_gate's k, time-major, from the fused gate kernel (TensorFlow backend only):
        the same values, no gradient (`fused_rnn.fused_time_gate`).

        Args:
          time: timestamps [batch or 1, steps, 1], float32 or float64.
          training: whether the training leak applies.
          live: optional bool [batch, steps], False at masked steps: k is 0 there.

        Returns:
          k [steps, batch (or 1 without live, for shared times), units] in the cell's dtype.

        Raises:
          ValueError: as time_gate.
        """
        from phased_lstm import fused_rnn  # pylint: disable=import-outside-toplevel

        time = _finite_times(time)
        parameters = gate_math.fused_gate_parameters(
            ops, self.period, self.phase, self.ratio_on, self._leak(training),
            keras.backend.standardize_dtype(time.dtype), self.compute_dtype)
        return fused_rnn.fused_time_gate(time, *parameters, live=live)

    def call(self, inputs, states, training=None):
        """One step.

        Args:
          inputs: [batch, input_size + 1]: the features, then the timestamp (any float dtype;
            the phase is computed in it).
            With `gate_in_inputs`, [batch, input_size + units]: the features, then k.
          states: [h, c], each [batch, units].
          training: whether the training leak applies.

        Returns:
          (h, [h, c]), each [batch, units].
        """
        # An LSTM step of its own (docs/library.md lists them): keras.ops, for every backend.
        h_prev, c_prev = states
        extra = self._extra_columns()
        x = ops.cast(inputs[:, :-extra], self.compute_dtype)
        x_h = ops.concatenate([x, h_prev], axis=-1)
        mask_in = ops.concatenate([x_h, c_prev], axis=-1) if self.use_peepholes else x_h
        mask_gates = ops.sigmoid(ops.matmul(mask_in, self.mask_gates_kernel)
                                 + self.mask_gates_bias)
        input_gate, forget_gate = mask_gates[:, :self.units], mask_gates[:, self.units:]
        new_input = ops.tanh(ops.matmul(x_h, self.new_input_kernel) + self.new_input_bias)
        c_lstm = forget_gate * c_prev + input_gate * new_input
        out_in = ops.concatenate([x_h, c_lstm], axis=-1) if self.use_peepholes else x_h
        output_gate = ops.sigmoid(ops.matmul(out_in, self.output_gate_kernel)
                                  + self.output_gate_bias)
        h_lstm = output_gate * ops.tanh(c_lstm)

        if self.gate_in_inputs:
            k = ops.cast(inputs[:, -extra:], self.compute_dtype)
        else:
            k = self.time_gate(inputs[:, -1:], training)
        c = k * c_lstm + (1.0 - k) * c_prev
        h = k * h_lstm + (1.0 - k) * h_prev
        return h, [h, c]

    def get_tf1_weights(self):
        """The weights as NumPy arrays keyed by the TF 1.x cell's variable names."""
        return {tf1: ops.convert_to_numpy(getattr(self, name))
                for tf1, name in TF1_VARIABLE_NAMES.items()}

    def set_tf1_weights(self, values):
        """Assigns {TF 1.x variable name: array} (e.g. read from a TF 1.x checkpoint).

        Raises:
          ValueError: if the cell is not built, a name is missing or unknown, or a shape
            differs.
        """
        if not self.built:
            raise ValueError("build the cell (or call it once) before setting its weights")
        if set(values) != set(TF1_VARIABLE_NAMES):
            raise ValueError(f"expected the TF 1.x variables {sorted(TF1_VARIABLE_NAMES)}; got "
                             f"{sorted(values)}")
        for tf1, name in TF1_VARIABLE_NAMES.items():
            variable = getattr(self, name)
            if tuple(ops.shape(values[tf1])) != tuple(variable.shape):
                raise ValueError(f"{tf1} must have shape {tuple(variable.shape)}; got "
                                 f"{tuple(ops.shape(values[tf1]))}")
            variable.assign(ops.cast(values[tf1], variable.dtype))

    def get_config(self):
        ser_init, ser_reg, ser_con = (keras.initializers.serialize, keras.regularizers.serialize,
                                      keras.constraints.serialize)
        config = {"units": self.units, "use_peepholes": self.use_peepholes,
                  **self.timing.settings(), "gate_in_inputs": self.gate_in_inputs}
        for name in ("period", "phase", "ratio_on", "kernel", "bias"):
            initializer = getattr(self, f"{name}_initializer")
            config[f"{name}_initializer"] = None if initializer is None else ser_init(
                initializer)
            config[f"{name}_regularizer"] = ser_reg(getattr(self, f"{name}_regularizer"))
            config[f"{name}_constraint"] = ser_con(getattr(self, f"{name}_constraint"))
        return {**super().get_config(), **config}


_CELL_ARGUMENTS = (
    "use_peepholes", "leak", "inference_leak", "ratio_on", "trainable_ratio_on",
    "period_init_min", "period_init_max", "trainable_period", "trainable_phase",
    "period_initializer", "phase_initializer", "ratio_on_initializer", "kernel_initializer",
    "bias_initializer", "kernel_regularizer", "bias_regularizer", "period_regularizer",
    "phase_regularizer", "ratio_on_regularizer", "kernel_constraint", "bias_constraint",
    "period_constraint", "phase_constraint", "ratio_on_constraint", "mod_gradient")


def _is_shape(value):
    return isinstance(value, (tuple, list)) and all(
        isinstance(d, (numbers.Integral, type(None))) for d in value)


def _split(inputs):
    """(features, times or None) from PhasedLSTM's inputs, or from their shapes."""
    if isinstance(inputs, (list, tuple)) and not _is_shape(inputs):
        if len(inputs) == 1:
            return inputs[0], None
        if len(inputs) != 2:
            raise ValueError("PhasedLSTM takes features [batch, steps, input_size] or a list "
                             f"[features, times]; got a list of {len(inputs)} inputs")
        return inputs[0], inputs[1]
    return inputs, None


def _check_shapes(features_shape, times_shape, units):
    features_shape = tuple(features_shape)
    if len(features_shape) != 3 or features_shape[-1] is None:
        raise ValueError("PhasedLSTM's features must have shape [batch, steps, input_size] with "
                         f"a known input_size; got shape {features_shape}")
    if times_shape is not None:
        times_shape = tuple(times_shape)
        if (len(times_shape) not in (2, 3)
                or (len(times_shape) == 3 and times_shape[-1] not in (1, units))
                or any(a is not None and b is not None and a != b
                       for a, b in zip(times_shape[:2], features_shape[:2]))):
            raise ValueError("PhasedLSTM's times must have shape [batch, steps, 1] or "
                             f"[batch, steps], or [batch, steps, {units}] (one per unit), "
                             f"matching features {features_shape}; got shape {times_shape}")
    return features_shape


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PhasedLSTM(keras.layers.RNN):
    """Phased LSTM layer (Neil, Pfeiffer, Liu, NIPS 2016): `keras.layers.RNN` over the cell.

        model = keras.Sequential([keras.Input((784, 1)), PhasedLSTM(32),
                                  keras.layers.Dense(10, activation="softmax")])

    Inputs, either:
      - features [batch, steps, input_size]: the timestamp of step n is n (0, 1, 2, ...), as in
        the Keras seed (fferroni/PhasedLSTM-Keras); or
      - a list [features, times], times [batch, steps, 1] or [batch, steps]: one timestamp per
        example and step; or [batch, steps, units]: one per unit. float64 times keep the phase
        of timestamps beyond 2**24 (on JAX only with `jax.config.update("jax_enable_x64",
        True)`; without it JAX has no float64 and the times are float32). Integer times are
        taken as float64 where the backend has it. `fit`, `evaluate` and `predict` cast float64
        NumPy arrays to float32: pass float64 backend tensors, or a tf.data.Dataset on
        TensorFlow.

    Masking (a `Masking` layer, `mask_zero` embeddings, or `mask` [batch, steps]): a masked step
    leaves the state unchanged, as in every Keras RNN. With `go_backwards` (and in
    `Bidirectional`) every step keeps its own timestamp. With `stateful`, give the times: the
    implicit step index restarts at 0 with every batch.

    Outputs: h of the last step [batch, units], or of every step [batch, steps, units] with
    `return_sequences`; with `return_state`, [output, h, c] (Keras LSTM's order).

    Args:
      units: number of units, >= 1.
      use_peepholes, leak, inference_leak, ratio_on, trainable_ratio_on, period_init_min,
        period_init_max, trainable_period, trainable_phase, period_initializer,
        phase_initializer, ratio_on_initializer, kernel_initializer, bias_initializer,
        kernel_regularizer, bias_regularizer, period_regularizer, phase_regularizer,
        ratio_on_regularizer, kernel_constraint, bias_constraint, period_constraint,
        phase_constraint, ratio_on_constraint, mod_gradient: the cell's (`PhasedLSTMCell`;
        the timing's are `phased_lstm.gate_math.GateTiming`'s, with its defaults).
      alpha: the Keras seed's name for `leak`; give one of the two (leak None: the default).
      return_sequences, return_state, go_backwards, stateful, unroll, zero_output_for_mask:
        `keras.layers.RNN`'s.
      **kwargs: Keras layer arguments (name, dtype, ...).

    Raises:
      ValueError: for both `leak` and `alpha`, or the cell's invalid settings (NaN and
        infinities included); when called, for features that are not
        [batch, steps, input_size] with a known input_size, times whose shape does not match,
        a list of more than two inputs, or a NaN or infinite timestamp (masked steps' too).
        In a `tf.function` a bad timestamp fails the step (InvalidArgumentError); under
        `jax.jit` or XLA nothing can be raised, and the example's outputs from that step on
        are NaN, as for any bad input in Keras (`keras.callbacks.TerminateOnNaN` stops `fit`).
      TypeError: when called, for times that are not numbers.
    """

    def __init__(self, units, use_peepholes=False, leak=None,
                 inference_leak=_DEFAULTS.inference_leak, ratio_on=_DEFAULTS.ratio_on,
                 trainable_ratio_on=_DEFAULTS.trainable_ratio_on,
                 period_init_min=_DEFAULTS.period_init_min,
                 period_init_max=_DEFAULTS.period_init_max,
                 trainable_period=_DEFAULTS.trainable_period,
                 trainable_phase=_DEFAULTS.trainable_phase, period_initializer=None,
                 phase_initializer=None, ratio_on_initializer=None,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, period_regularizer=None,
                 phase_regularizer=None, ratio_on_regularizer=None, kernel_constraint=None,
                 bias_constraint=None, period_constraint=None, phase_constraint=None,
                 ratio_on_constraint=None, mod_gradient=_DEFAULTS.mod_gradient, alpha=None,
                 return_sequences=False, return_state=False, go_backwards=False,
                 stateful=False, unroll=False, zero_output_for_mask=False, **kwargs):
        # The cell builds the timing (`GateTiming`): the layer's is `self.cell.timing`.
        cell = PhasedLSTMCell(
            units, use_peepholes=use_peepholes, leak=gate_math.leak_or_alpha(leak, alpha),
            inference_leak=inference_leak,
            ratio_on=ratio_on, trainable_ratio_on=trainable_ratio_on,
            period_init_min=period_init_min, period_init_max=period_init_max,
            trainable_period=trainable_period, trainable_phase=trainable_phase,
            period_initializer=period_initializer, phase_initializer=phase_initializer,
            ratio_on_initializer=ratio_on_initializer, kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer, kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer, period_regularizer=period_regularizer,
            phase_regularizer=phase_regularizer, ratio_on_regularizer=ratio_on_regularizer,
            kernel_constraint=kernel_constraint, bias_constraint=bias_constraint,
            period_constraint=period_constraint, phase_constraint=phase_constraint,
            ratio_on_constraint=ratio_on_constraint, mod_gradient=mod_gradient,
            # The gate depends on the times alone: call() computes it for every step at once,
            # in the times' dtype, and the loop reads it beside the features (like
            # phased_lstm_rnn), so that the recurrence carries no gate work nor its gradient.
            gate_in_inputs=True, dtype=kwargs.get("dtype"),
            trainable=kwargs.get("trainable", True),
            name="phased_lstm_cell")
        # Times keep their dtype (float64); the features are cast in call.
        kwargs["autocast"] = False
        super().__init__(cell, return_sequences=return_sequences, return_state=return_state,
                         go_backwards=go_backwards, stateful=stateful, unroll=unroll,
                         zero_output_for_mask=zero_output_for_mask, **kwargs)
        # As keras.layers.LSTM does for cuDNN: XLA cannot compile the fused kernel (a
        # TensorFlow custom op), so a layer that may run it asks its model not to jit_compile.
        # Decided here, before any model is compiled (on a CPU-only machine Keras does not
        # jit_compile by default anyway). JAX's kernel is an XLA custom call: jit is fine.
        if self._fused_kernel_wanted() and keras.backend.backend() == "tensorflow":
            self.supports_jit = False

    @property
    def units(self):
        return self.cell.units

    def _sequence_shape(self, sequences_shape):
        """The shape of the sequence the RNN runs over: features, then the gate k."""
        features_shape = _check_shapes(*(None if s is None else tuple(s)
                                         for s in _split(sequences_shape)), self.units)
        return features_shape[:2] + (features_shape[2] + self.units,)

    def build(self, sequences_shape, initial_state_shape=None):
        super().build(self._sequence_shape(sequences_shape), initial_state_shape)

    def _fused_kernel_wanted(self):
        """Whether call would take the fused kernel if it builds: the TensorFlow backend with
        no GPU visible, or the JAX backend on the CPU; a float32 or float64 layer that neither
        unrolls nor goes backwards, and PHASED_LSTM_FUSED not 0. Decided without building the
        kernel."""
        backend = keras.backend.backend()
        if backend not in ("tensorflow", "jax") or self.unroll or self.go_backwards:
            return False
        if self.compute_dtype not in ("float32", "float64"):
            return False
        if kernel_build.disabled():
            return False
        if backend == "jax":
            import jax  # pylint: disable=import-outside-toplevel
            return jax.default_backend() == "cpu"
        from phased_lstm import fused_rnn  # pylint: disable=import-outside-toplevel
        return fused_rnn.kernel_device_reason("") is None

    def _fused_kernel_may_run(self):
        """_fused_kernel_wanted, and the backend's kernel was built and loaded."""
        if not self._fused_kernel_wanted():
            return False
        if keras.backend.backend() == "jax":
            from phased_lstm import jax_ffi  # pylint: disable=import-outside-toplevel
            return jax_ffi.fused_kernel_available()
        from phased_lstm import fused_rnn  # pylint: disable=import-outside-toplevel
        return fused_rnn.fused_kernel_available()

    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        return super().compute_output_shape(self._sequence_shape(sequences_shape),
                                            initial_state_shape)

    def compute_mask(self, inputs, mask):
        if isinstance(mask, (list, tuple)):
            mask = mask[0] if mask else None
        return super().compute_mask(inputs, mask)

    def _time_dtype(self, times):
        if times is None:  # the step index: exact in float32 up to 2**24 steps
            return "float64" if self.compute_dtype == "float64" else "float32"
        dtype = keras.backend.standardize_dtype(times.dtype)
        if dtype == "bool" or not (dtype.startswith("float") or dtype.startswith("int")
                                   or dtype.startswith("uint") or dtype == "bfloat16"):
            raise TypeError(f"PhasedLSTM's times must be numbers; got dtype {dtype}")
        if not dtype.startswith("float") and dtype != "bfloat16":
            return "float64" if _backend_has_float64() else "float32"
        return dtype

    def _features_and_times(self, inputs):
        """(features [batch, steps, input_size] in the layer's dtype, times [batch or 1, steps,
        1] in the dtype the phase is computed in).

        The gate k is computed from the times for all steps at once, the phase in the times'
        dtype (float64 keeps it for large timestamps), then cast to the layer's dtype. The
        implicit step index is shared by the batch, so its gate is computed once, [1, steps,
        units].
        """
        features, times = _split(inputs)
        features = ops.cast(ops.convert_to_tensor(features), self.compute_dtype)
        _check_shapes(features.shape, None if times is None else ops.shape(times), self.units)
        time_dtype = self._time_dtype(None if times is None else ops.convert_to_tensor(times))
        if times is None:
            times = ops.arange(ops.shape(features)[1], dtype=time_dtype)[None, :, None]
        else:
            times = ops.cast(times, time_dtype)
            if len(times.shape) == 2:
                times = times[:, :, None]
        return features, times

    def call(self, sequences, initial_state=None, mask=None, training=False):
        """Runs the cell over the sequences.

        Args:
          sequences: features [batch, steps, input_size], or [features, times].
          initial_state: optional [h, c], each [batch, units].
          mask: optional [batch, steps] bools (for a list input, the features' mask is used).
          training: whether the training leak applies (see `inference_leak`). False or None
            (Keras' inference) also runs the fused kernel's forward-only op (TensorFlow
            backend), which saves nothing for a gradient, where no gradient tape is recording
            (`fused_rnn.keras_forward_only`): the same results.

        Returns:
          The output, or [output, h, c] with return_state.
        """
        if isinstance(mask, (list, tuple)):
            mask = mask[0] if mask else None
        features, times = self._features_and_times(sequences)
        if self._runs_fused_kernel(features, mask, initial_state):
            return self._fused_call(features, times, initial_state, mask, training)
        k = self.cell.time_gate(times, training)
        # Keras' loop reads the gate beside the features at each step.
        shape = ops.shape(features)
        k = ops.broadcast_to(k, (shape[0], shape[1], self.units))
        return super().call(ops.concatenate([features, k], axis=-1),
                            initial_state=initial_state, mask=mask, training=training)

    def _runs_fused_kernel(self, features, mask, initial_state):
        """Whether call runs the fused kernel: where it may (`_fused_kernel_may_run`), the
        recurrence is on the CPU (as phased_lstm_rnn decides), the layer is not stateful, and
        a mask comes with neither zero_output_for_mask nor an initial state (Keras' loop then
        outputs zeros, not the initial h, at the masked steps before an example's first)."""
        if self.stateful:
            return False
        if mask is not None and (self.zero_output_for_mask or initial_state is not None):
            return False
        if not self._fused_kernel_may_run():
            return False
        if keras.backend.backend() == "jax":  # _fused_kernel_wanted: JAX runs on the CPU
            return True
        from phased_lstm import fused_rnn  # pylint: disable=import-outside-toplevel
        return fused_rnn.kernel_device_reason(features.device) is None

    def _fused_call(self, features, times, initial_state, mask, training):
        """call's result from the fused kernel: on TensorFlow the op (`phased_lstm.fused_rnn`),
        at inference (`fused_rnn.keras_forward_only(training)`) its forward-only op, after the
        fused gate kernel's k where that kernel is available (the same values); on JAX the same
        C++ as XLA custom calls (`phased_lstm.jax_ffi`).

        A mask is folded into the gate, as in phased_lstm_rnn: k = 0 at a masked step keeps
        the state and repeats the last output, which is what Keras' loop does there (from a
        zero state). Masked steps' features and gates are zeroed first, so that NaN padding
        cannot reach the state.
        """
        live = None if mask is None else ops.cast(mask, "bool")
        k = None
        if keras.backend.backend() == "jax":
            from phased_lstm import jax_ffi  # pylint: disable=import-outside-toplevel
            run = jax_ffi.fused_sequence  # its forward-only handler runs where no gradient is
        else:
            from phased_lstm import fused_rnn  # pylint: disable=import-outside-toplevel
            forward_only = fused_rnn.keras_forward_only(training)
            run = functools.partial(fused_rnn.fused_sequence, forward_only=forward_only)
            if forward_only and fused_rnn.TIME_GATE.available():
                k = self.cell.forward_only_gate(times, training, live)  # time-major
        if k is None:  # by keras.ops: XLA fuses it on JAX; differentiable for the timing weights
            k = ops.transpose(self.cell.time_gate(times, training), [1, 0, 2])
            if live is not None:
                k = ops.where(ops.transpose(live)[:, :, None], k, ops.zeros_like(k))
        if live is not None:
            features = ops.where(live[:, :, None], features, ops.zeros_like(features))
        h_seq, c, h = run(ops.transpose(features, [1, 0, 2]), k,
                          *self._kernel_state(features, initial_state), *self._kernel_weights())
        output = ops.transpose(h_seq, [1, 0, 2]) if self.return_sequences else h
        return (output, h, c) if self.return_state else output  # as RNN.call

    def _kernel_state(self, features, initial_state):
        """(c0, h0) for the fused kernels, each [batch, units]: zeros without initial_state."""
        if initial_state is None:
            zeros = ops.zeros((ops.shape(features)[0], self.units), self.compute_dtype)
            initial_state = [zeros, zeros]
        h0, c0 = (ops.cast(state, self.compute_dtype) for state in initial_state)
        return c0, h0

    def _kernel_weights(self):
        """The cell's weights in the fused kernels' layout: (kernel [x, h] x columns
        [i, f, o, j], bias [4 units]), then with peepholes (w_c_if, w_c_o), the peephole rows."""
        cell = self.cell
        rows = cell.new_input_kernel.shape[0]  # input_size + units: the [x, h] rows
        kernel = ops.concatenate([cell.mask_gates_kernel[:rows], cell.output_gate_kernel[:rows],
                                  cell.new_input_kernel], axis=1)
        bias = ops.concatenate([cell.mask_gates_bias, cell.output_gate_bias,
                                cell.new_input_bias], axis=0)
        peepholes = ((cell.mask_gates_kernel[rows:], cell.output_gate_kernel[rows:])
                     if cell.use_peepholes else ())
        return (kernel, bias, *peepholes)

    def get_config(self):
        config = {"units": self.units}
        cell_config = self.cell.get_config()
        config.update({name: cell_config[name] for name in _CELL_ARGUMENTS})
        base_config = super().get_config()
        del base_config["cell"]
        return {**base_config, **config}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _backend_has_float64():
    """Whether float64 tensors exist: always, except on JAX without jax_enable_x64."""
    if keras.backend.backend() != "jax":
        return True
    import jax  # pylint: disable=import-outside-toplevel

    return bool(jax.config.jax_enable_x64)


__all__ = ["PhasedLSTM", "PhasedLSTMCell", "ExpUniform", "TF1_VARIABLE_NAMES", "MIN_PERIOD",
           "MIN_RATIO_ON"]
