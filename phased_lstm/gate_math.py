"""The Phased LSTM time gate as one backend-neutral formula, for every implementation.

The TF 1.x `TimeGate` (TensorFlow ops) and the Keras 3 cell (`keras.ops`, so any Keras backend)
both compute the gate with `time_gate` below; they pass the namespace of ops it runs on. This
module imports no framework: an `ops` namespace is anything with `cast`, `maximum`, `clip`,
`mod` (floor mod: the result has the divisor's sign), `stop_gradient`, `where` and
`convert_to_tensor` with `keras.ops`' meanings. `keras.ops` is one; `time_gate.TF_OPS` is
TensorFlow's.

    phi = ((t - s) mod tau) / tau
    k   = 2 phi / r_on          if phi < r_on / 2      (opening)
        = 2 - 2 phi / r_on      if phi < r_on          (closing)
        = leak * phi            otherwise              (closed)

(Neil, Pfeiffer, Liu, "Phased LSTM", NIPS 2016, https://arxiv.org/abs/1610.09513.)

`GateTiming` is the timing settings every cell and layer takes: their defaults and checks.
"""

import dataclasses
import math
import numbers

MIN_PERIOD = 1e-3
MIN_RATIO_ON = 1e-3

# How the gradient flows through (t - s) mod tau, with x = t - s:
#   "tf1":   TF 1.x's rule: d mod / dx = 1 and d mod / d tau = 0 (the wrap is treated as a
#            constant), so tau is learned only through phi = mod / tau.
#   "exact": the mod's own derivative: d mod / d tau = -floor(x / tau) (floormod's gradient in
#            TensorFlow, PyTorch's fmod), hundreds of times larger for t in the hundreds.
MOD_GRADIENTS = ("tf1", "exact")


def check_mod_gradient(mod_gradient):
    """Returns `mod_gradient` if it names a rule of MOD_GRADIENTS; raises ValueError otherwise."""
    if mod_gradient not in MOD_GRADIENTS:
        raise ValueError(f"mod_gradient must be one of {MOD_GRADIENTS}; got {mod_gradient!r}")
    return mod_gradient


def check_timing(leak=None, ratio_on=None, period_init_min=None, period_init_max=None,
                 inference_leak=None):
    """Refuses timing arguments that are numbers out of their range: one check for every cell.

    Arguments that are None, or tensors (checked where their value is known), pass.

    Raises:
      ValueError: for a NaN or infinite number, a negative leak or inference_leak, ratio_on
        outside (0, 1], period_init_min <= 0, or period_init_max < period_init_min.
    """
    named = {"leak": leak, "inference_leak": inference_leak, "ratio_on": ratio_on,
             "period_init_min": period_init_min, "period_init_max": period_init_max}
    number = {name: isinstance(value, numbers.Real) and not isinstance(value, bool)
              for name, value in named.items()}
    for name, value in named.items():
        if number[name] and not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number; got {value}")
    for name in ("leak", "inference_leak"):
        if number[name] and not named[name] >= 0.0:
            raise ValueError(f"{name} must be >= 0; got {named[name]}")
    if number["ratio_on"] and not 0.0 < ratio_on <= 1.0:
        raise ValueError(f"ratio_on must be in (0, 1]; got {ratio_on}")
    if number["period_init_min"] and not period_init_min > 0.0:
        raise ValueError(f"period_init_min must be > 0; got {period_init_min}")
    if (number["period_init_min"] and number["period_init_max"]
            and not period_init_max >= period_init_min):
        raise ValueError(f"period_init_max must be >= period_init_min ({period_init_min}); "
                         f"got {period_init_max}")


@dataclasses.dataclass(frozen=True)
class GateTiming:
    """A cell's timing settings, their defaults and their checks: one description for all.

    Every front end builds one from its arguments and reads its timing from it: the TF 1.x
    `PhasedLSTMCell` and `PhasedGRUCell` (through `TimeGate`), the tf-keras `PhasedLSTM`, and
    the Keras 3 `PhasedLSTMCell` and `PhasedLSTM`. The defaults are TF 1.x's
    (`tf.contrib.rnn.PhasedLSTMCell`): `DEFAULT_TIMING` holds them, and each signature takes
    its defaults from it. No front end departs from them: the Keras layers' `leak=None` means
    `DEFAULT_TIMING.leak` unless `alpha` (the Keras seed's name for it) is given
    (`leak_or_alpha`), and the Keras seed's own settings (ratio_on=0.05, uniform periods and
    phases) are a recipe in docs/library.md, not a default, so that every layer starts as the
    TF 1.x cell does.

    Args:
      leak: alpha, the closed gate's slope (k = leak * phi), >= 0. The TF 1.x cells also take a
        scalar float tensor, e.g. `tf.compat.v1.placeholder_with_default(0.001, [])` fed 0 to
        evaluate without leak, as the paper does.
      ratio_on: the initial open ratio r_on, in (0, 1].
      trainable_ratio_on: whether r_on is learned.
      period_init_min, period_init_max: the default period initialiser draws
        exp(U(ln period_init_min, ln period_init_max)); 0 < period_init_min <= period_init_max.
      trainable_period, trainable_phase: whether the periods tau and phases s are learned.
      mod_gradient: how (t - s) mod tau is differentiated: "tf1" (TF 1.x's rule: tau gets no
        gradient through the wrap) or "exact" (floormod's own derivative, as PyTorch's fmod);
        see MOD_GRADIENTS.
      inference_leak: the slope when not training (the Keras layers' `training=False`); None:
        `leak`, as the TF 1.x cells (which have no such argument) and the Keras seed; 0.0: the
        paper's evaluation, where a closed unit keeps its state exactly.

    Numbers are checked here and kept as Python floats. Anything else passes unchecked: a
    tensor (a TF 1.x cell's leak, or its ratio_on or period bound of a value known only when
    run) is checked where its value is known (`time_gate`'s initialisers); the Keras layers,
    whose configs hold the settings, take numbers only (`numbers_only`).

    Raises:
      ValueError: for an unknown mod_gradient, or a number out of range (see `check_timing`).
    """

    # The numbers may also be tensors (TF 1.x cells): no annotation promises a float.
    leak: object = 0.001
    ratio_on: object = 0.1
    trainable_ratio_on: bool = True
    period_init_min: object = 1.0
    period_init_max: object = 1000.0
    trainable_period: bool = True
    trainable_phase: bool = True
    mod_gradient: str = "tf1"
    inference_leak: object = None  # or a float

    NUMBERS = ("leak", "ratio_on", "period_init_min", "period_init_max", "inference_leak")

    def __post_init__(self):
        check_mod_gradient(self.mod_gradient)
        check_timing(**{name: getattr(self, name) for name in self.NUMBERS})
        for name in self.NUMBERS:
            value = getattr(self, name)
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                object.__setattr__(self, name, float(value))  # frozen: only here

    def numbers_only(self):
        """Returns self if every number setting is a number (inference_leak may be None).

        Raises:
          ValueError: naming the first setting that is not (a bool, a string, a tensor).
        """
        for name in self.NUMBERS:
            value = getattr(self, name)
            if not isinstance(value, float) and not (name == "inference_leak" and value is None):
                kind = "a number >= 0" if name.endswith("leak") else "a number"
                raise ValueError(f"{name} must be {kind}; got {value!r}")
        return self

    def settings(self):
        """{name: value} of every setting: the Keras layers' config keys for their timing."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


DEFAULT_TIMING = GateTiming()


def leak_or_alpha(leak, alpha):
    """A Keras layer's leak, given as `leak` or `alpha` (the Keras seed's name), or neither.

    Returns:
      The one given, or DEFAULT_TIMING.leak.

    Raises:
      ValueError: if both are given.
    """
    if leak is not None and alpha is not None:
        raise ValueError(f"give leak or alpha (its Keras seed name), not both; got leak={leak} "
                         f"and alpha={alpha}")
    if leak is None and alpha is None:
        return DEFAULT_TIMING.leak
    return alpha if leak is None else leak


def valid_period(ops, period):
    """Projects periods onto [MIN_PERIOD, inf)."""
    return ops.maximum(period, MIN_PERIOD)


def valid_ratio_on(ops, ratio_on):
    """Projects open ratios onto [MIN_RATIO_ON, 1]."""
    return ops.clip(ratio_on, MIN_RATIO_ON, 1.0)


def cycle_mod(ops, x, period, mod_gradient="tf1"):
    """floormod(x, period), differentiated by TF 1.x's rule or exactly (see MOD_GRADIENTS).

    Returns:
      The floor mod's value exactly (TF 1.x's `stop_gradient(mod - x) + x` rounds it).
    """
    wrapped = ops.mod(x, period)
    if mod_gradient == "tf1":
        # x - stop_gradient(x) is exactly 0: only x's own gradient passes (d/dx = 1, d/dtau = 0).
        return ops.stop_gradient(wrapped) + (x - ops.stop_gradient(x))
    check_mod_gradient(mod_gradient)
    return wrapped


def cycle_fraction(ops, time, period, phase, mod_gradient="tf1"):
    """phi = ((t - s) mod tau) / tau, in the time's dtype.

    Args:
      ops: the namespace of ops (see the module docstring).
      time: timestamps [..., 1]; float64 keeps the phase of timestamps far beyond 2**24.
      period: tau [num_units] (any dtype: cast to the time's); clipped to >= MIN_PERIOD.
      phase: s [num_units].
      mod_gradient: "tf1" or "exact" (see MOD_GRADIENTS).

    Returns:
      phi [..., num_units] in [0, 1), in the time's dtype.
    """
    period = ops.cast(valid_period(ops, period), time.dtype)
    return cycle_mod(ops, time - ops.cast(phase, time.dtype), period, mod_gradient) / period


def gate_from_cycle(ops, cycle, ratio_on, leak):
    """k from phi (already in the gate's dtype), the open ratios and the leak.

    Args:
      ops: the namespace of ops.
      cycle: phi [..., num_units].
      ratio_on: r_on [num_units], clipped to [MIN_RATIO_ON, 1].
      leak: alpha, a Python float or a scalar tensor of the gate's dtype.

    Returns:
      k [..., num_units] in [0, 1].
    """
    ratio_on = valid_ratio_on(ops, ops.cast(ratio_on, cycle.dtype))
    rising = 2.0 * cycle / ratio_on
    return ops.where(cycle < 0.5 * ratio_on, rising,
                     ops.where(cycle < ratio_on, 2.0 - rising, leak * cycle))


def time_gate(ops, time, period, phase, ratio_on, leak, dtype, mod_gradient="tf1"):
    """The time gate k (see the module docstring).

    Args:
      ops: the namespace of ops.
      time: timestamps [..., 1]; the phase is computed in their dtype.
      period, phase, ratio_on: tau, s, r_on [num_units].
      leak: alpha, a Python float >= 0 or a scalar tensor (cast to `dtype`).
      dtype: the gate's dtype (the cell's).
      mod_gradient: "tf1" (TF 1.x's gradient) or "exact".

    Returns:
      k [..., num_units] of `dtype`.
    """
    cycle = ops.cast(cycle_fraction(ops, time, period, phase, mod_gradient), dtype)
    if not isinstance(leak, (int, float)):
        leak = ops.cast(leak, dtype)
    return gate_from_cycle(ops, cycle, ratio_on, leak)


def fused_gate_parameters(ops, period, phase, ratio_on, leak, time_dtype, dtype):
    """The timing parameters as `time_gate` uses them, for the fused gate kernel.

    `fused_rnn.fused_time_gate` computes the gate in one kernel from these: the same values
    as time_gate's ops, which clip and cast them on the way (cycle_fraction, gate_from_cycle).

    Args:
      ops: the namespace of ops.
      period, phase, ratio_on: tau, s, r_on [num_units].
      leak: alpha, a Python number or a scalar tensor.
      time_dtype: the timestamps' dtype, in which the phase is computed.
      dtype: the gate's dtype.

    Returns:
      (period >= MIN_PERIOD and phase, both of time_dtype; ratio_on in [MIN_RATIO_ON, 1] and
      leak, a scalar tensor, both of dtype).
    """
    # A Python number straight to dtype, as `leak * cycle` converts it (a cast would round it
    # to float32 first).
    leak = (ops.convert_to_tensor(leak, dtype) if isinstance(leak, (int, float))
            else ops.cast(leak, dtype))
    return (ops.cast(valid_period(ops, period), time_dtype), ops.cast(phase, time_dtype),
            valid_ratio_on(ops, ops.cast(ratio_on, dtype)), leak)


def check_gate_gradient_clip(value):
    """The per-step gate gradient clip (`phased_lstm.gate_gradient`) as a float > 0, or None
    for None or 0 (no clipping).

    Raises:
      ValueError: for a negative, non-finite or non-numeric value.
    """
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value < 0):
        raise ValueError("gate_gradient_clip must be a finite number > 0, or None or 0 for no "
                         f"clipping; got {value!r}")
    return float(value) or None
