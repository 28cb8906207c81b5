"""The Phased LSTM time gate k_t, shared by every phased cell and by the fast sequence path.

The gate depends only on the timestamp and on three learned parameters per unit (Neil, Pfeiffer,
Liu, "Phased LSTM", NIPS 2016, https://arxiv.org/abs/1610.09513, eq. 6-7):

    phi = ((t - s) mod tau) / tau
    k   = 2 phi / r_on          if phi < r_on / 2      (opening)
        = 2 - 2 phi / r_on      if phi < r_on          (closing)
        = leak * phi            otherwise              (closed)

`TimeGate` owns the three variables (`period` tau, `phase` s, `ratio_on` r_on, named as in the
TF 1.x cell) and computes k for any number of leading time dimensions.

Validity: tau and r_on are divisors. The variables carry a constraint that projects them back
onto period >= MIN_PERIOD and MIN_RATIO_ON <= ratio_on <= 1 after every optimiser update (every
`tf.compat.v1.train.Optimizer` and Keras optimiser applies `Variable.constraint`), and the gate
clips them to the same ranges, which changes nothing for valid values and keeps a hand-set or
restored invalid value from producing NaN.

Gradient of the mod (`mod_gradient`). mod(x, tau) = x - tau * floor(x / tau) with x = t - s has
the exact derivatives d/dx = 1 and d/dtau = -floor(x / tau), the second one growing with the
number of periods elapsed (hundreds on 784-step MNIST). TF 1.x's PhasedLSTMCell computed the mod
as `stop_gradient(mod(x, tau) - x) + x`: d/dx = 1 and d/dtau = 0, so the period learns only
through phi = mod / tau. That rule, "tf1", is the default on every path (the cells, the fast and
event-driven paths and the Keras layer all compute k here); "exact" keeps floormod's own
derivative, which is also what PyTorch's fmod gives (as in the paper authors' PyTorch code).
"""

import math
import numbers
import types

from phased_lstm import fused_rnn, gate_math
# Re-exported: the TF 1.x API's names for them.
from phased_lstm.gate_math import (MIN_PERIOD, MIN_RATIO_ON, MOD_GRADIENTS,  # noqa: F401
                                   check_mod_gradient)
from phased_lstm.legacy_tf import tf

# TensorFlow's ops under the names gate_math uses (keras.ops' names): the gate's formula exists
# once, in gate_math, for this TF 1.x gate and for the Keras 3 cell.
TF_OPS = types.SimpleNamespace(cast=tf.cast, maximum=tf.maximum, clip=tf.clip_by_value,
                               mod=tf.math.floormod, stop_gradient=tf.stop_gradient,
                               where=tf.where, convert_to_tensor=tf.convert_to_tensor)


def valid_period(period):
    """Projects periods onto [MIN_PERIOD, inf)."""
    return gate_math.valid_period(TF_OPS, period)


def valid_ratio_on(ratio_on):
    """Projects open ratios onto [MIN_RATIO_ON, 1]."""
    return gate_math.valid_ratio_on(TF_OPS, ratio_on)


# The variables' constraints. An optimiser calls `variable.assign(constraint(variable))` after
# its update; a variable created inside dynamic_rnn has a caching device, and converting it to
# a tensor would give the value cached before the update, undoing it. read_value() reads anew.
def project_period(variable):
    """Constraint of `period`: valid_period of its current value."""
    return valid_period(variable.read_value())


def project_ratio_on(variable):
    """Constraint of `ratio_on`: valid_ratio_on of its current value."""
    return valid_ratio_on(variable.read_value())


def check_finite_number(name, value):
    """Raises ValueError if value is a Python or NumPy number that is NaN or infinite.

    Tensors (e.g. a leak placeholder) are not numbers here and pass.

    Args:
      name: the argument's name, for the message.
      value: the argument.
    """
    if isinstance(value, numbers.Real) and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value}")


def check_finite_time(time):
    """Returns the timestamps, with a check that fails the step if one is NaN or infinite.

    A reduction and an Assert beside the gate's own work (once per sequence on the fast path).
    tf.debugging.check_numerics would say the same at a cost that showed in a training step
    (docs/speed.md, "Where the time goes").

    Raises:
      tf.errors.InvalidArgumentError: when run (at once when eager), for a NaN or infinite
        timestamp.
    """
    finite = tf.reduce_all(tf.math.is_finite(time))
    message = "Phased LSTM time gate: every timestamp must be finite (NaN or inf found)"
    with tf.control_dependencies([tf.debugging.Assert(finite, [message])]):
        return tf.identity(time)


def float_time(time, name="time"):
    """Returns the timestamps as a floating tensor: integer timestamps are cast to float64.

    TF 1.x's cell took integer time by casting the period and phase to the time's integer
    dtype: truncated timing, and no gradient to them. Casting the time instead keeps both.
    float64 holds every integer up to 2**53 exactly (every int32, and int64 timestamps up to
    that), where float32 stops at 2**24 (4.7 hours of milliseconds); the gate is computed in
    the time's dtype and only then cast to the cell's, so this costs the gate alone.

    Args:
      time: the timestamps: a tensor, or anything convertible to one.
      name: what to call them in the message.

    Returns:
      time, float32 or float64 (floating time keeps its dtype).

    Raises:
      TypeError: if time holds neither floating point nor integer numbers (bool, string).
    """
    time = tf.convert_to_tensor(time)
    if time.dtype.is_integer:
        return tf.cast(time, tf.float64)
    if not time.dtype.is_floating:
        raise TypeError(
            f"{name} must be numbers: a floating tensor (float32, or float64 for large "
            f"timestamps) or an integer one (taken as float64); got dtype {time.dtype.name}")
    return time


def check_time(time, leading="batch", num_units=None):
    """Returns the timestamps as a floating tensor, after checking their shape.

    The time of a step is [batch, 1], one timestamp per example, or [batch, num_units], one per
    unit (TF 1.x's cell broadcast any time against its [num_units] phase and period; these
    are the two shapes that give one timestamp to each unit of each example).

    Args:
      time: the timestamps (see `float_time` for the dtypes taken).
      leading: the dimensions before the last, for the message: "batch" for one step,
        "batch, steps" for sequences. The time's rank must be their number plus one.
      num_units: the units of the cell the time is for, or None where per-unit time is not
        taken (only [..., 1]).

    Returns:
      time as a floating tensor (integers cast to float64).

    Raises:
      TypeError: if time holds neither floating point nor integer numbers.
      ValueError: if its rank or last dimension does not match.
    """
    time = float_time(time)
    expected = f"[{leading}, 1] (one timestamp per example)"
    if num_units is not None and num_units != 1:
        expected += f" or [{leading}, {num_units}] (one per unit)"
    rank = leading.count(",") + 2
    if time.shape.rank is not None and (time.shape.rank != rank
                                        or time.shape[-1] not in (1, num_units, None)):
        raise ValueError(f"time must have shape {expected}; got shape {time.shape}")
    return time


def scalar_argument(name, value):
    """A number argument as a Python float where its value is known, else as a scalar tensor.

    TF 1.x's cell documented its period bounds and open ratio as "float or scalar float
    Tensor". A number, or a tensor whose value is known when the graph is built (a constant, an
    eager tensor), is folded to a float, which the caller checks at once in Python; any other
    tensor (a placeholder, a variable's value in a graph) is returned for the caller to check
    in the graph (the period bounds: `exp_uniform_initializer`) or to refuse.

    Args:
      name: the argument's name, for the messages.
      value: a real number, or a scalar tensor of real numbers (or anything convertible to one).

    Returns:
      A Python float, or a scalar tensor (the unknown-value case).

    Raises:
      TypeError: for a tensor that does not hold real numbers (bool, string, complex).
      ValueError: for a tensor whose static shape is not [] (a placeholder needs shape []), or
        a NaN or infinite number.
    """
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        check_finite_number(name, value)
        return float(value)
    tensor = tf.convert_to_tensor(value)
    if not (tensor.dtype.is_floating or tensor.dtype.is_integer):
        raise TypeError(f"{name} must be a number or a scalar float tensor; got dtype "
                        f"{tensor.dtype.name}")
    # A static scalar: a shape check in the graph would race its consumers (log, fill).
    if tensor.shape.rank != 0:
        raise ValueError(f"{name} must be a number or a scalar tensor (shape []); got shape "
                         f"{tensor.shape}")
    static = tf.get_static_value(tensor)
    if static is None:
        return tensor
    return scalar_argument(name, float(static))


def _as_float64(bound):
    # A Python float converted directly: tf.cast would first make it a float32 tensor.
    return tf.cast(bound, tf.float64) if tf.is_tensor(bound) else tf.constant(bound, tf.float64)


def _checked_log_bounds(low, high, names):
    """(ln low, ln high) as float64 tensors, behind in-graph checks of the bounds.

    For bounds whose value is known only when the graph runs: the checks that
    `exp_uniform_initializer` makes in Python for numbers, made when the initialiser runs.

    Raises:
      tf.errors.InvalidArgumentError: when run, for a bound that is not finite, low <= 0 or
        high < low.
    """
    (low_name, high_name), low, high = names, _as_float64(low), _as_float64(high)
    checks = [tf.debugging.Assert(tf.math.is_finite(bound),
                                  [f"{name} must be a finite number; got", bound])
              for name, bound in ((low_name, low), (high_name, high))]
    with tf.control_dependencies(checks):
        checks = [tf.debugging.assert_positive(low, message=f"{low_name} must be > 0"),
                  tf.debugging.assert_greater_equal(
                      high, low, message=f"{high_name} must be >= {low_name}")]
    with tf.control_dependencies(checks):
        return tf.math.log(low), tf.math.log(high)


def exp_uniform_initializer(low, high, names=("low", "high")):
    """Initialiser drawing exp(U(ln low, ln high)): log-uniform on [low, high].

    Args:
      low: smallest value, > 0: a number or a scalar tensor.
      high: largest value, >= low: a number or a scalar tensor.
      names: the two bounds' names in the messages (e.g. the cell's "period_init_min" and
        "period_init_max").

    Returns:
      An initialiser callable `(shape, dtype=None, partition_info=None) -> Tensor`.

    Raises:
      ValueError: for a NaN or infinite bound, low <= 0 or high < low, where the bounds are
        numbers or tensors of known value (see `scalar_argument`).
      TypeError: for a tensor bound that does not hold real numbers.
      tf.errors.InvalidArgumentError: when the initialiser runs, for the same faults in bounds
        whose value was unknown when the graph was built (placeholders, say).
    """
    low, high = scalar_argument(names[0], low), scalar_argument(names[1], high)
    known = isinstance(low, float) and isinstance(high, float)
    if known and not 0 < low <= high:
        raise ValueError(f"exp_uniform_initializer needs 0 < {names[0]} <= {names[1]}; got "
                         f"{low}, {high}")

    def initializer(shape, dtype=tf.float32, partition_info=None):
        del partition_info  # unused; part of the TF 1.x initialiser signature
        if known:  # Python floats, which random.uniform converts to dtype exactly
            log_low, log_high = math.log(low), math.log(high)
        else:
            log_low, log_high = (tf.cast(bound, dtype)
                                 for bound in _checked_log_bounds(low, high, names))
        return tf.exp(tf.random.uniform(shape, log_low, log_high, dtype=dtype))

    return initializer


def ratio_on_initializer(ratio_on):
    """Initialiser filling the open ratios with `ratio_on`, a float or a scalar tensor.

    A float is a constant (checked in (0, 1] by `TimeGate`); a tensor whose value is known only
    when run is checked then.

    Raises:
      tf.errors.InvalidArgumentError: when the initialiser runs, for a tensor ratio_on outside
        (0, 1] (NaN included).
    """
    if not tf.is_tensor(ratio_on):
        return tf.compat.v1.constant_initializer(ratio_on)

    def initializer(shape, dtype=tf.float32, partition_info=None):
        del partition_info
        value = _as_float64(ratio_on)
        in_range = tf.debugging.Assert((value > 0.0) & (value <= 1.0),
                                       ["ratio_on must be in (0, 1]; got", value])
        with tf.control_dependencies([in_range]):
            return tf.fill(shape, tf.cast(value, dtype))

    return initializer


def tf_gate_timing(**settings):
    """The `GateTiming` of a TF 1.x cell's timing arguments (GateTiming's names).

    ratio_on and the period bounds may be numbers or scalar tensors, as TF 1.x documented them:
    a tensor whose value is known when the graph is built is folded to a float and checked
    here (`scalar_argument`); one known only when run is checked by its variable's initialiser.

    Raises:
      ValueError, TypeError: as GateTiming and `scalar_argument`.
    """
    for name in ("ratio_on", "period_init_min", "period_init_max"):
        if name in settings:
            settings[name] = scalar_argument(name, settings[name])
    return gate_math.GateTiming(**settings)


class TimeGate:
    """Timing parameters of a phased layer and the gate k they define.

    Args:
      num_units: number of units, each with its own period, phase and open ratio.
      leak, ratio_on, trainable_ratio_on, period_init_min, period_init_max, trainable_period,
        trainable_phase, mod_gradient: the timing (`gate_math.GateTiming` documents and checks
        them; here as a TF 1.x cell takes them, see `tf_gate_timing`). `from_timing` takes a
        GateTiming instead.
      period_initializer: overrides the default period initialiser.
      phase_initializer: overrides the default phase initialiser, U(0, initial period).
      ratio_on_initializer: overrides the constant initialiser `ratio_on`.
      period_constraint, phase_constraint, ratio_on_constraint: optional callables applied to
        the variable's value after each optimiser update (Keras constraints, say); periods and
        open ratios are then still projected onto their valid ranges.

    Raises:
      ValueError: for a NaN or infinite number, ratio_on outside (0, 1], period_init_min <= 0,
        period_init_max < period_init_min, a negative Python leak, an unknown mod_gradient, or
        a period bound or ratio_on that is a tensor but not a scalar.
      TypeError: for a period bound or ratio_on that is a tensor of other than real numbers.
    """

    def __init__(self, num_units, leak, ratio_on, trainable_ratio_on, period_init_min,
                 period_init_max, trainable_period, trainable_phase, period_initializer,
                 phase_initializer, ratio_on_initializer, mod_gradient="tf1",
                 period_constraint=None, phase_constraint=None, ratio_on_constraint=None):
        timing = tf_gate_timing(
            leak=leak, ratio_on=ratio_on, trainable_ratio_on=trainable_ratio_on,
            period_init_min=period_init_min, period_init_max=period_init_max,
            trainable_period=trainable_period, trainable_phase=trainable_phase,
            mod_gradient=mod_gradient)
        self._set_up(num_units, timing, period_initializer, phase_initializer,
                     ratio_on_initializer, period_constraint, phase_constraint,
                     ratio_on_constraint)

    @classmethod
    def from_timing(cls, num_units, timing, period_initializer=None, phase_initializer=None,
                    ratio_on_initializer=None, period_constraint=None, phase_constraint=None,
                    ratio_on_constraint=None):
        """A TimeGate of a `gate_math.GateTiming` (its inference_leak unused: no training flag
        reaches a TF 1.x cell); the other arguments as the constructor's."""
        gate = cls.__new__(cls)
        gate._set_up(num_units, timing, period_initializer, phase_initializer,
                     ratio_on_initializer, period_constraint, phase_constraint,
                     ratio_on_constraint)
        return gate

    def _set_up(self, num_units, timing, period_initializer, phase_initializer,
                ratio_on_initializer, period_constraint, phase_constraint, ratio_on_constraint):
        self.num_units = num_units
        self.timing = timing
        self._period_initializer = period_initializer or exp_uniform_initializer(
            timing.period_init_min, timing.period_init_max,
            ("period_init_min", "period_init_max"))
        self._phase_initializer = phase_initializer
        self._ratio_on_initializer = ratio_on_initializer
        self._constraints = {"period": period_constraint, "phase": phase_constraint,
                             "ratio_on": ratio_on_constraint}
        self.period = self.phase = self.ratio_on = None

    @property
    def leak(self):
        """The closed gate's slope: a float, or a scalar tensor."""
        return self.timing.leak

    @property
    def mod_gradient(self):
        return self.timing.mod_gradient

    def _constraint(self, name, valid=None):
        """The variable's constraint: the user's (if any), then the projection `valid`."""
        user = self._constraints[name]
        if user is None:
            return {valid_period: project_period, valid_ratio_on: project_ratio_on}.get(valid)

        def constraint(variable):
            value = user(variable.read_value())  # read_value(): see project_period
            return value if valid is None else valid(value)

        return constraint

    def build(self, add_weight, dtype):
        """Creates `period`, `phase` and `ratio_on` with `add_weight` (a layer's method)."""
        shape = [self.num_units]
        self.period = add_weight(
            "period", shape=shape, dtype=dtype, initializer=self._period_initializer,
            trainable=self.timing.trainable_period,
            constraint=self._constraint("period", valid_period))
        phase_initializer = self._phase_initializer
        if phase_initializer is None:
            # As TF 1.x: each unit starts at a uniform point of its own initial period.
            try:
                period_init = self.period.initial_value
            except RuntimeError:  # eager variables keep no initial_value: it is their value now
                period_init = self.period.read_value()

            def phase_initializer(shape, dtype=dtype, partition_info=None):
                del partition_info
                return tf.random.uniform(shape, dtype=dtype) * period_init

        self.phase = add_weight(
            "phase", shape=shape, dtype=dtype, initializer=phase_initializer,
            trainable=self.timing.trainable_phase, constraint=self._constraint("phase"))
        self.ratio_on = add_weight(
            "ratio_on", shape=shape, dtype=dtype,
            initializer=(self._ratio_on_initializer
                         or ratio_on_initializer(self.timing.ratio_on)),
            trainable=self.timing.trainable_ratio_on,
            constraint=self._constraint("ratio_on", valid_ratio_on))

    def __call__(self, time, dtype, leak=None):
        """Computes the gate.

        Args:
          time: timestamps [..., 1], or [..., num_units] (one per unit); float32 or float64
            (integers are taken as float64). The phase is computed in this dtype, so float64
            keeps it exact for timestamps far beyond float32's 2**24.
          dtype: dtype of the returned gate (the cell's).
          leak: overrides the gate's leak (e.g. 0 for event-driven inference).

        Returns:
          k, shape [..., num_units], in [0, 1].

        Raises:
          tf.errors.InvalidArgumentError: when run, for a NaN or infinite timestamp (which would
            make every later output NaN).
        """
        time = check_finite_time(float_time(time))
        leak = self.leak if leak is None else leak
        return gate_math.time_gate(TF_OPS, time, self.period, self.phase, self.ratio_on, leak,
                                   dtype, self.mod_gradient)

    def forward_only(self, time, dtype, leak=None, live=None):
        """The gate of every step, time-major, from the fused kernel: for evaluation.

        The values of `__call__` (transposed to [steps, batch, units]) bit for bit, in one
        kernel (`fused_rnn.fused_time_gate`), with no gradient: a gradient through it raises
        `fused_rnn.ForwardOnlyGradientError`. Only where `fused_rnn.TIME_GATE.available()`.

        Args:
          time: timestamps [batch or 1, steps, 1 or num_units], float32 or float64.
          dtype: dtype of the returned gate (the cell's).
          leak: overrides the gate's leak.
          live: optional bool [batch, steps], False at padded steps: k is 0 there.

        Returns:
          k [steps, batch, num_units] ([steps, 1, num_units] for time shared by the batch and
          no live), in [0, 1].

        Raises:
          tf.errors.InvalidArgumentError: when run, for a NaN or infinite timestamp.
        """
        time = float_time(time)
        leak = self.leak if leak is None else leak
        parameters = gate_math.fused_gate_parameters(
            TF_OPS, self.period, self.phase, self.ratio_on, leak, time.dtype, dtype)
        return fused_rnn.fused_time_gate(time, *parameters, live=live)
