"""GateTiming: the one description of a cell's timing, and every front end's use of it.

- Each front end's signature takes its timing defaults from `DEFAULT_TIMING` (pinned here, so
  that they cannot drift apart again), and the TF 1.x cell keeps tf.contrib's signature.
- Each builds a GateTiming from its arguments and reads its timing from it.
- The Keras layers' configs keep their keys: a config written before GateTiming still loads and
  round-trips.
- What GateTiming keeps: numbers as floats, tensors untouched (checked where their value is
  known), frozen.

Its refusals, front end by front end, are in test_refusals.py.
"""

import dataclasses
import inspect

import numpy as np
import pytest

from phased_lstm import PhasedGRUCell, PhasedLSTMCell, TimeGate, tf
from phased_lstm import keras_layer
from phased_lstm.gate_math import DEFAULT_TIMING, GateTiming, leak_or_alpha

try:  # after tf-keras: Keras 3 beside it, as in test_keras3.py
    import keras

    from phased_lstm import keras3
except ImportError:  # Keras 2 alone: the other front ends are still checked
    keras3 = None

needs_keras3 = pytest.mark.skipif(keras3 is None, reason="Keras 3 is not installed")
SETTINGS = tuple(field.name for field in dataclasses.fields(GateTiming))

# name: (class, how to reach its GateTiming, the settings it does not take).
FRONT_ENDS = {
    "PhasedLSTMCell": (PhasedLSTMCell, lambda cell: cell.timing, {"inference_leak"}),
    "PhasedGRUCell": (PhasedGRUCell, lambda cell: cell.timing, {"inference_leak"}),
    "keras_layer.PhasedLSTM": (keras_layer.PhasedLSTM, lambda layer: layer.timing, set()),
}
if keras3 is not None:
    FRONT_ENDS.update({
        "keras3.PhasedLSTMCell": (keras3.PhasedLSTMCell, lambda cell: cell.timing, set()),
        "keras3.PhasedLSTM": (keras3.PhasedLSTM, lambda layer: layer.cell.timing, set())})
# The Keras layers' leak is None by default: the default, unless alpha (the Keras seed's name
# for it) is given.
LEAK_OR_ALPHA = {"keras_layer.PhasedLSTM", "keras3.PhasedLSTM"}

# TF 1.x's tf.contrib.rnn.PhasedLSTMCell.__init__ (r1.15), whose drop-in PhasedLSTMCell is.
TF1_SIGNATURE = (("num_units", inspect.Parameter.empty), ("use_peepholes", False),
                 ("leak", 0.001), ("ratio_on", 0.1), ("trainable_ratio_on", True),
                 ("period_init_min", 1.0), ("period_init_max", 1000.0), ("reuse", None))


@pytest.mark.parametrize("front_end", sorted(FRONT_ENDS))
def test_signature_defaults_are_gate_timings(front_end):
    cls, _, not_taken = FRONT_ENDS[front_end]
    parameters = inspect.signature(cls.__init__).parameters
    assert {name for name in SETTINGS if name not in parameters} == not_taken
    for name in SETTINGS:
        if name in not_taken:
            continue
        default = parameters[name].default
        if name == "leak" and front_end in LEAK_OR_ALPHA:
            assert default is None and parameters["alpha"].default is None
            default = leak_or_alpha(None, None)
        wanted = getattr(DEFAULT_TIMING, name)
        assert (default, type(default)) == (wanted, type(wanted)), name


@pytest.mark.parametrize("front_end", sorted(FRONT_ENDS))
def test_front_ends_read_their_timing_from_one_gate_timing(front_end):
    cls, timing_of, _ = FRONT_ENDS[front_end]
    assert timing_of(cls(4)) == DEFAULT_TIMING
    settings = dict(leak=0.01, ratio_on=0.25, trainable_ratio_on=False, period_init_min=2.0,
                    period_init_max=8.0, trainable_period=False, trainable_phase=False,
                    mod_gradient="exact", inference_leak=0.0)
    if front_end.startswith("Phased"):
        del settings["inference_leak"]
    made = cls(4, **settings)
    assert timing_of(made) == GateTiming(**settings)
    if front_end.startswith("Phased"):  # the TF 1.x cells' gate reads it too
        assert made.time_gate.timing is made.timing
        assert (made.time_gate.leak, made.time_gate.mod_gradient) == (0.01, "exact")


def test_tf1_cell_keeps_tf_contribs_signature():
    parameters = list(inspect.signature(PhasedLSTMCell.__init__).parameters.values())[1:]
    first = parameters[:len(TF1_SIGNATURE)]
    assert tuple((p.name, p.default) for p in first) == TF1_SIGNATURE
    assert all(p.kind == p.POSITIONAL_OR_KEYWORD for p in first)
    assert all(p.kind == p.KEYWORD_ONLY for p in parameters[len(TF1_SIGNATURE):])


def test_leak_or_alpha():
    assert leak_or_alpha(None, None) == DEFAULT_TIMING.leak == 0.001
    assert leak_or_alpha(0.5, None) == 0.5 and leak_or_alpha(None, 0.25) == 0.25
    with pytest.raises(ValueError, match="give leak or alpha"):
        leak_or_alpha(0.5, 0.25)


def test_numbers_are_kept_as_floats():
    timing = GateTiming(leak=0, ratio_on=np.float32(0.5), period_init_min=np.int64(2),
                        period_init_max=10, inference_leak=np.float64(0.0))
    assert all(type(getattr(timing, name)) is float for name in GateTiming.NUMBERS)
    assert (timing.period_init_min, timing.period_init_max, timing.ratio_on) == (2.0, 10.0, 0.5)
    assert timing.numbers_only() is timing


def test_tensors_pass_and_are_kept_as_they_are():
    with tf.Graph().as_default():
        leak = tf.compat.v1.placeholder_with_default(0.001, [])
        high = tf.compat.v1.placeholder(tf.float32, [])
        timing = GateTiming(leak=leak, period_init_max=high)
        assert timing.leak is leak and timing.period_init_max is high
        with pytest.raises(ValueError, match="leak must be a number >= 0; got <tf.Tensor"):
            timing.numbers_only()
        with pytest.raises(ValueError, match="period_init_max must be a number; got <tf.Tensor"):
            dataclasses.replace(timing, leak=0.001).numbers_only()
        # A TF 1.x cell folds a tensor of known value to its float, checked at once ...
        assert PhasedLSTMCell(4, ratio_on=tf.constant(0.25)).timing.ratio_on == 0.25
        with pytest.raises(ValueError, match=r"ratio_on must be in \(0, 1\]; got 1.5"):
            PhasedLSTMCell(4, ratio_on=tf.constant(1.5))
        # ... and keeps one known only when run, which its initialiser checks.
        cell = PhasedLSTMCell(4, period_init_max=high)
        assert cell.timing.period_init_max is high


def test_gate_timing_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_TIMING.leak = 0.0  # every default signature reads it


def test_time_gate_from_timing_is_its_constructor_on_the_same_settings():
    timing = GateTiming(leak=0.01, ratio_on=0.2, mod_gradient="exact")
    gate = TimeGate.from_timing(3, timing)
    assert gate.timing is timing and gate.num_units == 3
    same = TimeGate(3, 0.01, 0.2, True, 1.0, 1000.0, True, True, None, None, None, "exact")
    assert same.timing == timing


# -- Configs written before GateTiming (by main at 97689d3): their layer's own keys ------------

OLD_TIMING = {"leak": 0.01, "inference_leak": 0.0, "ratio_on": 0.2, "trainable_ratio_on": False,
              "period_init_min": 2.0, "period_init_max": 50.0, "trainable_period": True,
              "trainable_phase": False, "mod_gradient": "exact"}
OLD_TF_KERAS_CONFIG = {
    "units": 3, "use_peepholes": True, "return_sequences": True, "return_state": False,
    **OLD_TIMING, "period_initializer": None, "phase_initializer": None,
    "ratio_on_initializer": None, "period_regularizer": None, "phase_regularizer": None,
    "ratio_on_regularizer": None, "kernel_regularizer": None, "bias_regularizer": None,
    "period_constraint": None, "phase_constraint": None, "ratio_on_constraint": None,
    "activity_regularizer": None}
# Keras 3's initializer configs vary with its version: the defaults' keys, without their values.
OLD_KERAS3_KEYS = {
    "units", "use_peepholes", *OLD_TIMING, *(f"{name}_{kind}" for name in (
        "period", "phase", "ratio_on", "kernel", "bias")
        for kind in ("initializer", "regularizer", "constraint"))}


def _own_keys(config, base_config):
    return set(config) - set(base_config)


def test_a_tf_keras_config_from_before_round_trips():
    layer = keras_layer.PhasedLSTM.from_config(dict(OLD_TF_KERAS_CONFIG, name="old"))
    config = layer.get_config()
    base = keras_layer.keras.layers.Layer(name="base").get_config()
    assert _own_keys(config, base) == set(OLD_TF_KERAS_CONFIG)
    assert {key: config[key] for key in OLD_TF_KERAS_CONFIG} == OLD_TF_KERAS_CONFIG
    assert layer.timing == GateTiming(**OLD_TIMING)
    assert layer.cell.timing == GateTiming(**dict(OLD_TIMING, inference_leak=None))


@needs_keras3
def test_a_keras3_config_from_before_round_trips():
    old = {"units": 3, "use_peepholes": True, **OLD_TIMING, "return_sequences": True}
    layer = keras3.PhasedLSTM.from_config(dict(old, name="old"))
    config = layer.get_config()
    base = keras.layers.RNN(keras3.PhasedLSTMCell(3), name="base").get_config()
    del base["cell"]
    assert _own_keys(config, base) == OLD_KERAS3_KEYS
    assert {key: config[key] for key in old} == old
    assert keras3.PhasedLSTM.from_config(config).get_config() == config
    assert layer.cell.timing == GateTiming(**OLD_TIMING)
    # The cell's config: the same keys, and gate_in_inputs.
    cell = keras3.PhasedLSTMCell.from_config(
        {key: value for key, value in old.items() if key != "return_sequences"})
    cell_config = cell.get_config()
    cell_base = keras.layers.Layer(name="base").get_config()
    assert _own_keys(cell_config, cell_base) == OLD_KERAS3_KEYS | {"gate_in_inputs"}
    assert {key: cell_config[key] for key in OLD_TIMING} == OLD_TIMING
