"""Phased LSTM for TensorFlow 2 through its TF 1.x API, and for Keras 3 on any backend.

Two ways in (README, "Which import serves whom"):

- TF 1.x graphs, sessions, RNNCell and the tf-keras layer:
  `from phased_lstm import PhasedLSTMCell, tf` (and `phased_lstm.keras_layer.PhasedLSTM`).
- Keras 3 (TensorFlow, JAX or PyTorch backend): `from phased_lstm.keras3 import PhasedLSTM`.

Importing this package loads nothing heavy and sets nothing: the TF 1.x names below are loaded
on first use (PEP 562), and only then does `phased_lstm.legacy_tf` import TensorFlow and, if
`tf.keras` is not in use yet, select tf-keras for it (and the tf-keras layer is registered for
`load_model`). A Keras 3 or JAX user who never touches them gets neither TensorFlow nor tf-keras
from this package.

If Keras 3 is already imported, this also imports `phased_lstm.keras3`, which registers its
layers for `keras.saving.load_model` (importing `phased_lstm.keras3` does so in any order).
"""

import importlib
import os
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

__all__ = ["PhasedLSTMCell", "PhasedGRUCell", "PhasedLSTM", "PhasedMultiRNNCell", "PhasedRNNCell",
           "TimeGate", "exp_uniform_initializer", "MIN_PERIOD", "MIN_RATIO_ON", "rnn_cell"]


def _tf_keras_resolved():
    """The Keras that `tf.keras` already means: "keras_3", "tf_keras", or None if unused yet."""
    tensorflow = sys.modules.get("tensorflow")
    loader = None if tensorflow is None else tensorflow.__dict__.get("keras")
    if loader is None:
        return None
    # TensorFlow's lazy loader answers these without loading anything.
    if not getattr(loader, "_tfll_initialized", True):
        return None
    version = getattr(loader, "_tfll_keras_version", None)
    if version is None:
        version = "tf_keras" if loader.__name__.startswith("tf_keras") else "keras_3"
    return "keras_3" if version == "keras_3" else "tf_keras"


# Set when `phased_lstm.PhasedLSTM` was resolved to the Keras 3 layer before tf.keras was used:
# the TF 1.x parts then leave tf.keras to Keras 3 (legacy_tf), so that the layer still fits it.
_chose_keras3 = False


def _keras3_wanted():
    """Whether `phased_lstm.PhasedLSTM` should be the Keras 3 layer (see __getattr__)."""
    global _chose_keras3
    resolved = _tf_keras_resolved()
    if resolved is not None:
        return resolved == "keras_3"
    legacy = os.environ.get("TF_USE_LEGACY_KERAS")
    if legacy in ("1", "true", "True"):
        return False
    keras = sys.modules.get("keras")
    keras3_imported = keras is not None and hasattr(keras, "config")
    backend = (keras.config.backend() if keras3_imported
               else os.environ.get("KERAS_BACKEND", "tensorflow"))
    if legacy in ("0", "false", "False") or keras3_imported or backend != "tensorflow":
        _chose_keras3 = True
    return _chose_keras3


def _leave_tf_keras_alone():
    """Whether legacy_tf must not set TF_USE_LEGACY_KERAS: tf.keras is in use, or Keras 3 was
    chosen for phased_lstm.PhasedLSTM."""
    return _chose_keras3 or _tf_keras_resolved() is not None


def __getattr__(name):
    """Loads the TF 1.x names on first use; `PhasedLSTM` is the layer that fits `tf.keras`.

    `phased_lstm.PhasedLSTM` always fits `tf.keras`. It is the tf-keras layer
    (`phased_lstm.keras_layer.PhasedLSTM`) when `tf.keras` already means tf-keras or
    TF_USE_LEGACY_KERAS is set, and when nothing has chosen a Keras yet (this package imported
    first, as before); `tf.keras` then means tf-keras. It is the Keras 3 layer
    (`phased_lstm.keras3.PhasedLSTM`) when `tf.keras` already means Keras 3, or Keras 3 is
    already imported (by the user, or by `import tensorflow`), or TF_USE_LEGACY_KERAS is false,
    or Keras' backend is not TensorFlow; the TF 1.x parts then leave `tf.keras` to Keras 3.
    Import either module directly to choose for yourself.
    """
    if name == "PhasedLSTM":
        module = "phased_lstm.keras3" if _keras3_wanted() else "phased_lstm.keras_layer"
        return importlib.import_module(module).PhasedLSTM
    if name in _TF1_NAMES:
        value = getattr(importlib.import_module(_TF1_NAMES[name]), name)
        # With the TF 1.x parts comes the tf-keras layer's registration for load_model.
        importlib.import_module("phased_lstm.keras_layer")
        globals()[name] = value
        return value
    raise AttributeError(f"module 'phased_lstm' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_TF1_NAMES) | {"PhasedLSTM"})


if "keras" in sys.modules and hasattr(sys.modules["keras"], "saving"):
    try:
        from phased_lstm import keras3  # noqa: F401  (registers the Keras 3 layers)
    except ImportError:  # Keras 2 as `keras`: only the TF 1.x / tf-keras parts apply
        pass
