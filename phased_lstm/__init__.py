"""Phased LSTM for TensorFlow 2 through its TF 1.x API, and for Keras 3 on any backend.

Two ways in (README, "Which import serves whom"), each a name that means one thing:

- TF 1.x graphs, sessions and RNNCell: `from phased_lstm import PhasedLSTMCell, tf`; the
  tf-keras layer: `from phased_lstm.keras_layer import PhasedLSTM`.
- Keras 3 (TensorFlow, JAX or PyTorch backend): `from phased_lstm.keras3 import PhasedLSTM`.

There is no `phased_lstm.PhasedLSTM`: two layers fit two Kerases, and the name would have to
guess which one the caller means. Accessing it raises an AttributeError that names both.

Importing this package loads nothing heavy and sets nothing: the TF 1.x names below are loaded
on first use (PEP 562), and only then does `phased_lstm.legacy_tf` import TensorFlow and, if
`tf.keras` is not in use yet, select tf-keras for it (and the tf-keras layer is registered for
`load_model`). A Keras 3 or JAX user who never touches them gets neither TensorFlow nor tf-keras
from this package.

If Keras 3 is already imported, this also imports `phased_lstm.keras3`, which registers its
layers for `keras.saving.load_model` (importing `phased_lstm.keras3` does so in any order).
"""

import importlib
import sys

from phased_lstm.gate_math import MIN_PERIOD, MIN_RATIO_ON

# name: the module that defines it (all TF 1.x / tf-keras, loaded on first use).
_TF1_NAMES = {
    "PhasedLSTMCell": "phased_lstm.phased_lstm_cell",
    "PhasedGRUCell": "phased_lstm.phased_gru_cell",
    "PhasedMultiRNNCell": "phased_lstm.multi_cell",
    "PhasedRNNCell": "phased_lstm.phased_cell",
    "TimeGate": "phased_lstm.time_gate",
    "exp_uniform_initializer": "phased_lstm.time_gate",
    "rnn_cell": "phased_lstm.legacy_tf",
    "tf": "phased_lstm.legacy_tf",
}

NO_PHASED_LSTM = (
    "module 'phased_lstm' has no attribute 'PhasedLSTM': import the layer for your Keras, "
    "`from phased_lstm.keras_layer import PhasedLSTM` (tf-keras, the TF 1.x cells' Keras) or "
    "`from phased_lstm.keras3 import PhasedLSTM` (Keras 3, any backend)")

__all__ = ["PhasedLSTMCell", "PhasedGRUCell", "PhasedMultiRNNCell", "PhasedRNNCell", "TimeGate",
           "exp_uniform_initializer", "MIN_PERIOD", "MIN_RATIO_ON", "rnn_cell", "tf"]


def __getattr__(name):
    """Loads the TF 1.x names on first use.

    Raises:
      AttributeError: for `PhasedLSTM` (naming the two modules that define it), and for any
        other name the package does not have.
    """
    if name == "PhasedLSTM":
        raise AttributeError(NO_PHASED_LSTM)
    if name in _TF1_NAMES:
        value = getattr(importlib.import_module(_TF1_NAMES[name]), name)
        # With the TF 1.x parts comes the tf-keras layer's registration for load_model.
        importlib.import_module("phased_lstm.keras_layer")
        globals()[name] = value
        return value
    raise AttributeError(f"module 'phased_lstm' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_TF1_NAMES))


if "keras" in sys.modules and hasattr(sys.modules["keras"], "saving"):
    try:
        from phased_lstm import keras3  # noqa: F401  (registers the Keras 3 layers)
    except ImportError:  # Keras 2 as `keras`: only the TF 1.x / tf-keras parts apply
        pass
