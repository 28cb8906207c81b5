"""PhasedRNNCell: the base of every cell whose input is (time, features)."""

from phased_lstm.legacy_tf import LayerRNNCell, tf
from phased_lstm.time_gate import check_time


def check_phased_inputs(inputs, name):
    """Unpacks and checks a phased cell's input tuple.

    Args:
      inputs: a tuple (time [batch, 1], features [batch, input_size]).
      name: the cell's class name, for the messages.

    Returns:
      (time, features) as tensors.

    Raises:
      TypeError: if inputs is not a pair, or time is not floating point.
      ValueError: if time is not [batch, 1] or features is not rank 2.
    """
    if not isinstance(inputs, (tuple, list)) or len(inputs) != 2:
        raise TypeError(
            f"{name} expects inputs as a tuple (time [batch, 1], features [batch, input_size]); "
            f"got {type(inputs).__name__}")
    time, features = (tf.convert_to_tensor(t) for t in inputs)
    check_time(time, "[batch, 1] (one timestamp per example)")
    if time.shape.rank not in (None, 2):
        raise ValueError(f"time must have shape [batch, 1]; got shape {time.shape}")
    if features.shape.rank not in (None, 2):
        raise ValueError(
            f"features must have rank 2, [batch, input_size]; got shape {features.shape}")
    return time, features


class PhasedRNNCell(LayerRNNCell):
    """An RNNCell whose input is (time [batch, 1], features [batch, input_size]).

    Subclasses set `self.time_gate` (a `TimeGate`) and implement `build` and `call`. This class
    checks the inputs before anything is built, and takes the cell's dtype from the features:
    the base layer would take it from the first input, the time, which may be float64.
    """

    def __call__(self, inputs, state, scope=None, *args, **kwargs):
        time, features = check_phased_inputs(inputs, type(self).__name__)
        if not self.built and self._dtype_policy.compute_dtype is None:
            self._set_dtype_policy(features.dtype.base_dtype.name)
        return super().__call__((time, features), state, scope, *args, **kwargs)
