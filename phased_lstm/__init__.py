"""Phased LSTM for TensorFlow 2, through its TF 1.x API (graphs, sessions, RNNCell)."""

# legacy_tf must be imported before anything touches tf.keras.
from phased_lstm.legacy_tf import rnn_cell, tf  # noqa: F401
from phased_lstm.keras_layer import PhasedLSTM
from phased_lstm.multi_cell import PhasedMultiRNNCell
from phased_lstm.phased_cell import PhasedRNNCell
from phased_lstm.phased_gru_cell import PhasedGRUCell
from phased_lstm.phased_lstm_cell import PhasedLSTMCell
from phased_lstm.time_gate import MIN_PERIOD, MIN_RATIO_ON, TimeGate, exp_uniform_initializer

__all__ = ["PhasedLSTMCell", "PhasedGRUCell", "PhasedLSTM", "PhasedMultiRNNCell", "PhasedRNNCell",
           "TimeGate", "exp_uniform_initializer", "MIN_PERIOD", "MIN_RATIO_ON", "rnn_cell"]
