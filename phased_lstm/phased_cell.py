"""PhasedRNNCell: the base of every cell whose input is (time, features)."""

import numbers

from phased_lstm.legacy_tf import LayerRNNCell, tf
from phased_lstm.time_gate import TimeGate, check_time


def check_phased_inputs(inputs, name, num_units=None):
    """Unpacks and checks a phased cell's input tuple.

    Args:
      inputs: a tuple (time [batch, 1] or [batch, num_units], features [batch, input_size]).
      name: the cell's class name, for the messages.
      num_units: the cell's units, for per-unit time; None: time must be [batch, 1].

    Returns:
      (time, features) as tensors; integer time cast to float64 (see `float_time`).

    Raises:
      TypeError: if inputs is not a pair, or time holds neither floats nor integers.
      ValueError: if time is not [batch, 1] (or [batch, num_units]) or features is not rank 2.
    """
    if not isinstance(inputs, (tuple, list)) or len(inputs) != 2:
        raise TypeError(
            f"{name} expects inputs as a tuple (time [batch, 1], features [batch, input_size]); "
            f"got {type(inputs).__name__}")
    time = check_time(inputs[0], "batch", num_units)
    features = tf.convert_to_tensor(inputs[1])
    if features.shape.rank not in (None, 2):
        raise ValueError(
            f"features must have rank 2, [batch, input_size]; got shape {features.shape}")
    return time, features


class PhasedRNNCell(LayerRNNCell):
    """An RNNCell whose input is (time [batch, 1], features [batch, input_size]).

    The time may also be [batch, num_units], one timestamp per unit, as TF 1.x's cell took it,
    and integer (it is then cast to float64: `time_gate.float_time`).

    Owns the time gate (`self.time_gate`, a `TimeGate` made from the timing arguments, which
    subclasses build in `build`) and checks the inputs before anything is built. It takes the
    cell's dtype from the features: the base layer would take it from the first input, the time,
    which may be float64. Subclasses implement `build` and `call`.

    Args:
      num_units: number of units, >= 1.
      reuse, name, dtype: as every TF 1.x RNNCell.
      timing: the cell's `gate_math.GateTiming` (`time_gate.tf_gate_timing` makes one from a
        TF 1.x cell's arguments); None: the timing settings are among `time_gate_arguments`.
      **time_gate_arguments: the TimeGate's other arguments (initialisers, constraints), or
        with timing None all of its arguments.

    Raises:
      ValueError: for num_units < 1 or invalid timing settings.
    """

    def __init__(self, num_units, reuse=None, name=None, dtype=None, timing=None,
                 **time_gate_arguments):
        super().__init__(_reuse=reuse, name=name, dtype=dtype)
        # numbers.Integral: NumPy integers too; bool is an int but no number of units.
        if not (isinstance(num_units, numbers.Integral) and not isinstance(num_units, bool)
                and num_units >= 1):
            raise ValueError(f"num_units must be an integer >= 1; got {num_units!r}")
        num_units = int(num_units)
        self._num_units = num_units
        self.time_gate = (TimeGate(num_units, **time_gate_arguments) if timing is None else
                          TimeGate.from_timing(num_units, timing, **time_gate_arguments))

    @property
    def timing(self):
        """The cell's `gate_math.GateTiming`: its timing settings, checked."""
        return self.time_gate.timing

    def __call__(self, inputs, state, scope=None, *args, **kwargs):
        time, features = check_phased_inputs(inputs, type(self).__name__, self._num_units)
        self._take_dtype(features.dtype)
        return super().__call__((time, features), state, scope, *args, **kwargs)

    def _take_dtype(self, features_dtype):
        if not self.built and self._dtype_policy.compute_dtype is None:
            self._set_dtype_policy(tf.as_dtype(features_dtype).base_dtype.name)

    def build_for(self, input_size, features_dtype):
        """Creates the variables, as the first call would, without running a step.

        Under the caller's variable scope (dynamic_rnn's "rnn", say) the variables get the names
        the first call there would give them. Does nothing if the cell is built.

        Args:
          input_size: the features' last dimension.
          features_dtype: the features' dtype, the cell's dtype unless it was given.
        """
        if self.built:
            return
        self._take_dtype(features_dtype)
        self.build((tf.TensorShape([None, 1]), tf.TensorShape([None, input_size])))

    def _input_size(self, inputs_shape):
        """The features' size, from build()'s (time shape, features shape)."""
        if not isinstance(inputs_shape, (tuple, list)) or len(inputs_shape) != 2:
            raise TypeError(
                f"{type(self).__name__} expects inputs as a tuple (time [batch, 1], "
                f"features [batch, input_size]); got shape {inputs_shape}")
        input_size = tf.TensorShape(inputs_shape[1])[-1]
        if input_size is None:
            raise ValueError(f"features' last dimension must be known; got {inputs_shape[1]}")
        return input_size
