"""The Keras 3 PhasedLSTM (phased_lstm.keras3) against the TF 1.x cell, on each Keras backend.

The test process runs Keras 3 on the TensorFlow backend (beside the TF 1.x cell and tf-keras);
the JAX and PyTorch backends, the issue's snippet and fresh-process loading each run in a
subprocess.
"""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import numpy_reference as ref
from phased_lstm import PhasedLSTMCell as TF1PhasedLSTMCell
from phased_lstm import tf
from tf_helpers import cell_variables, load_params

import keras  # noqa: E402  (Keras 3, whatever tf.keras means in this process)
from keras import ops  # noqa: E402

from phased_lstm import gate_math, keras3  # noqa: E402
from phased_lstm.keras3 import TF1_VARIABLE_NAMES, PhasedLSTM, PhasedLSTMCell  # noqa: E402
import keras3_helpers  # noqa: E402

BATCH, STEPS, INPUT_SIZE, UNITS = 3, 9, 2, 4
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPERS = os.path.join(ROOT, "tests", "keras3_helpers.py")
ON_TF = keras.backend.backend() == "tensorflow"
needs_tf_backend = pytest.mark.skipif(not ON_TF, reason="the test process's Keras backend is "
                                      f"{keras.backend.backend()}, not tensorflow")


def _case(seed, peep=False, mod_gradient="tf1", training=True, inference_leak=None, start=0.0,
          time_dtype=np.float32):
    rng = np.random.default_rng(seed)
    case = ref.random_phased_lstm_params(rng, INPUT_SIZE, UNITS, peep)
    case = {k: v.astype(np.float32) for k, v in case.items()}
    case.update(
        times=ref.random_times(rng, BATCH, STEPS, start).astype(time_dtype),
        x=rng.normal(size=(BATCH, STEPS, INPUT_SIZE)).astype(np.float32),
        r_out=rng.normal(size=(BATCH, STEPS, UNITS)).astype(np.float32),
        r_c=rng.normal(size=(BATCH, UNITS)).astype(np.float32),
        peep=np.array(peep), mod_gradient=np.array(mod_gradient), training=np.array(training),
        inference_leak=np.array(np.nan if inference_leak is None else inference_leak))
    return case


def _tf1_results(case, leak=0.001):
    """The same loss through the TF 1.x cell under dynamic_rnn, in a graph."""
    with tf.Graph().as_default():
        x = tf.constant(case["x"])
        cell = TF1PhasedLSTMCell(UNITS, use_peepholes=bool(case["peep"]), leak=leak,
                                 mod_gradient=str(case["mod_gradient"]))
        outputs, (c, h) = tf.compat.v1.nn.dynamic_rnn(
            cell, (tf.constant(case["times"]), x), dtype=tf.float32)
        loss = tf.reduce_sum(outputs * case["r_out"]) + tf.reduce_sum(c * case["r_c"])
        variables = cell_variables(cell)
        names = list(TF1_VARIABLE_NAMES)
        grads = tf.gradients(loss, [variables[n] for n in names] + [x])
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            load_params(sess, cell, case)
            values = sess.run({"outputs": outputs, "h": h, "c": c, "loss": loss,
                               **{f"grad/{n}": g for n, g in zip(names + ["x"], grads)}})
    return values


def _assert_results_equal(got, want, atol=2e-5, rtol=1e-4, keys=None):
    for key in keys or [k for k in want if k not in ("backend", "time_dtype")]:
        np.testing.assert_allclose(got[key], want[key], atol=atol, rtol=rtol, err_msg=key)


def _subprocess(code_or_args, backend="tensorflow", python=None, extra_env=None, timeout=600):
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=os.pathsep.join([ROOT] + sys.path),
               TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_USE_LEGACY_KERAS", None)  # a fresh user's process
    env.update(extra_env or {})
    args = code_or_args if isinstance(code_or_args, list) else ["-c", code_or_args]
    result = subprocess.run([python or sys.executable] + args, capture_output=True, text=True,
                            timeout=timeout, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def _run_on_backend(case, backend, python=None, extra_env=None):
    with tempfile.TemporaryDirectory() as directory:
        case_path, result_path = (os.path.join(directory, n) for n in ("case.npz", "out.npz"))
        np.savez(case_path, **case)
        _subprocess([HELPERS, case_path, result_path], backend, python, extra_env)
        with np.load(result_path) as result:
            return dict(result)


# -- The shared gate formula ---------------------------------------------------------------------


@needs_tf_backend
@pytest.mark.parametrize("mod_gradient", gate_math.MOD_GRADIENTS)
def test_gate_gradient_rules_match_their_closed_forms(mod_gradient):
    """d k / d tau: TF 1.x's rule drops the wrap's -floor(x / tau); "exact" keeps it."""
    rng = np.random.default_rng(0)
    period = rng.uniform(2.0, 20.0, UNITS).astype(np.float32)
    phase = rng.uniform(0.0, 5.0, UNITS).astype(np.float32)
    ratio_on = rng.uniform(0.3, 0.9, UNITS).astype(np.float32)
    time = rng.uniform(0.0, 300.0, (64, 1)).astype(np.float32)
    tau = tf.Variable(period)
    with tf.GradientTape() as tape:
        k = gate_math.time_gate(ops, tf.constant(time), tau, phase, ratio_on, 0.01, "float32",
                                mod_gradient)
        total = tf.reduce_sum(k)
    got = tape.gradient(total, tau).numpy()
    x = time.astype(np.float64) - phase
    phi = np.mod(x, period) / period
    dk_dphi = np.where(phi < ratio_on / 2, 2 / ratio_on,
                       np.where(phi < ratio_on, -2 / ratio_on, 0.01))
    dmod_dtau = 0.0 if mod_gradient == "tf1" else -np.floor(x / period)
    want = (dk_dphi * (dmod_dtau * period - np.mod(x, period)) / period ** 2).sum(axis=0)
    np.testing.assert_allclose(k.numpy(), ref.time_gate(time, period, phase, ratio_on, 0.01),
                               atol=1e-5)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)


def test_unknown_mod_gradient_is_refused():
    with pytest.raises(ValueError, match=r"mod_gradient must be one of \('tf1', 'exact'\)"):
        PhasedLSTMCell(3, mod_gradient="floor")


# -- Equality with the TF 1.x cell on the same weights -------------------------------------------


@needs_tf_backend
@pytest.mark.parametrize("peep", [False, True])
@pytest.mark.parametrize("mod_gradient", gate_math.MOD_GRADIENTS)
def test_tensorflow_backend_matches_tf1_cell_outputs_and_gradients(peep, mod_gradient):
    case = _case(1, peep=peep, mod_gradient=mod_gradient)
    got = keras3_helpers.run_case(case)
    _assert_results_equal(got, _tf1_results(case))
    assert str(got["time_dtype"]) == "float32"


def test_default_mod_gradient_is_tf1s_rule():
    assert PhasedLSTMCell(2).mod_gradient == "tf1"
    assert PhasedLSTM(2).cell.mod_gradient == "tf1"


@needs_tf_backend
def test_the_two_gradient_rules_differ_only_in_the_period():
    tf1 = keras3_helpers.run_case(_case(2, mod_gradient="tf1"))
    exact = keras3_helpers.run_case(_case(2, mod_gradient="exact"))
    for key in tf1:
        if key != "grad/period":
            np.testing.assert_array_equal(tf1[key], exact[key], err_msg=key)
    assert np.abs(tf1["grad/period"] - exact["grad/period"]).max() > 1e-3


@needs_tf_backend
@pytest.mark.parametrize("training, inference_leak, tf1_leak", [
    (True, 0.0, 0.001), (False, 0.0, 0.0), (False, None, 0.001), (False, 0.05, 0.05)])
def test_leak_applies_while_training_and_inference_leak_otherwise(training, inference_leak,
                                                                  tf1_leak):
    case = _case(3, training=training, inference_leak=inference_leak)
    _assert_results_equal(keras3_helpers.run_case(case), _tf1_results(case, leak=tf1_leak),
                          keys=["outputs", "h", "c"])


@needs_tf_backend
def test_float64_times_keep_the_phase_of_large_timestamps():
    case = _case(4, start=1e7, time_dtype=np.float64)
    got = keras3_helpers.run_case(case)
    assert str(got["time_dtype"]) == "float64"
    params = {k: case[k].astype(np.float64) for k in TF1_VARIABLE_NAMES}
    c = h = np.zeros((BATCH, UNITS))
    for s in range(STEPS):
        c, h = ref.phased_lstm_step(params, case["times"][:, s], case["x"][:, s], c, h, False,
                                    0.001)
    np.testing.assert_allclose(got["h"], h, atol=2e-5)
    # float32 times cannot: their spacing at 1e7 is 1.0.
    float32 = keras3_helpers.run_case(dict(case, times=case["times"].astype(np.float32)))
    assert np.abs(float32["h"] - h).max() > 1e-2


def test_weights_map_one_to_one_onto_the_tf1_variables():
    cell = PhasedLSTMCell(UNITS, use_peepholes=True)
    cell.build((None, INPUT_SIZE + 1))
    shapes = {name: tuple(getattr(cell, keras3_name).shape)
              for name, keras3_name in TF1_VARIABLE_NAMES.items()}
    n, d = UNITS, INPUT_SIZE
    assert shapes == {"mask_gates/kernel": (d + 2 * n, 2 * n), "mask_gates/bias": (2 * n,),
                      "new_input/kernel": (d + n, n), "new_input/bias": (n,),
                      "output_gate/kernel": (d + 2 * n, n), "output_gate/bias": (n,),
                      "period": (n,), "phase": (n,), "ratio_on": (n,)}
    assert len(cell.weights) == 9
    values = ref.random_phased_lstm_params(np.random.default_rng(5), d, n, True)
    cell.set_tf1_weights(values)
    for name, value in cell.get_tf1_weights().items():
        np.testing.assert_allclose(value, values[name], rtol=1e-6, err_msg=name)
    with pytest.raises(ValueError, match=r"period must have shape \(4,\)"):
        cell.set_tf1_weights(dict(values, period=np.ones(3)))
    with pytest.raises(ValueError, match=r"expected the TF 1.x variables"):
        cell.set_tf1_weights({"period": np.ones(4)})


# -- What Keras' RNN brings ----------------------------------------------------------------------


def _built_layer(seed, units=UNITS, **kwargs):
    layer = PhasedLSTM(units, **kwargs)
    layer.build([(None, STEPS, INPUT_SIZE), (None, STEPS, 1)])
    params = ref.random_phased_lstm_params(np.random.default_rng(seed), INPUT_SIZE, units,
                                           kwargs.get("use_peepholes", False))
    layer.cell.set_tf1_weights(params)
    return layer, params


def _numpy_run(params, times, x, mask=None, leak=0.001):
    c = h = np.zeros((x.shape[0], UNITS))
    outputs = []
    for s in range(x.shape[1]):
        new_c, new_h = ref.phased_lstm_step(params, times[:, s], x[:, s], c, h, False, leak)
        live = True if mask is None else mask[:, s, None]
        c, h = np.where(live, new_c, c), np.where(live, new_h, h)
        outputs.append(h)
    return np.stack(outputs, axis=1), h, c


def test_implicit_times_are_the_step_index():
    layer, params = _built_layer(6, return_sequences=True)
    x = np.random.default_rng(6).normal(size=(BATCH, STEPS, INPUT_SIZE)).astype(np.float32)
    index = np.broadcast_to(np.arange(STEPS, dtype=np.float32), (BATCH, STEPS))
    implicit = ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(implicit, ops.convert_to_numpy(layer([x, index])), atol=1e-7)
    np.testing.assert_allclose(implicit, _numpy_run(params, index[:, :, None], x)[0], atol=2e-5)
    # Integer times are taken as exact float times.
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer([x, index.astype(np.int32)])), implicit, atol=1e-7)


def test_times_per_unit():
    # [batch, steps, units], one timestamp per unit, as TF 1.x's cell took them.
    rng = np.random.default_rng(14)
    layer, params = _built_layer(14, return_sequences=True)
    x = rng.normal(size=(BATCH, STEPS, INPUT_SIZE)).astype(np.float32)
    times = ref.random_times(rng, BATCH, STEPS) + rng.uniform(0, 10, (1, 1, UNITS))
    got = ops.convert_to_numpy(layer([x, times.astype(np.float32)]))
    np.testing.assert_allclose(got, _numpy_run(params, times.astype(np.float32), x)[0],
                               atol=2e-5)


def test_masked_steps_leave_the_state_unchanged():
    rng = np.random.default_rng(7)
    layer, params = _built_layer(7, return_sequences=True, return_state=True)
    times = ref.random_times(rng, BATCH, STEPS).astype(np.float32)
    x = rng.normal(size=(BATCH, STEPS, INPUT_SIZE)).astype(np.float32)
    mask = np.ones((BATCH, STEPS), bool)
    mask[0, 3:5] = False
    mask[2, 6:] = False
    outputs, h, c = (ops.convert_to_numpy(t) for t in layer([x, times], mask=mask))
    want_outputs, want_h, want_c = _numpy_run(params, times, x, mask)
    np.testing.assert_allclose(outputs, want_outputs, atol=2e-5)
    np.testing.assert_allclose(h, want_h, atol=2e-5)
    np.testing.assert_allclose(c, want_c, atol=2e-5)
    # Through a Masking layer in a functional model, with times.
    features, time_input = keras.Input((STEPS, INPUT_SIZE)), keras.Input((STEPS,))
    masked = keras.layers.Masking(0.0)(features)
    model = keras.Model([features, time_input], layer([masked, time_input])[1])
    zeroed = x * mask[:, :, None]
    np.testing.assert_allclose(ops.convert_to_numpy(model([zeroed, times[:, :, 0]])),
                               _numpy_run(params, times, zeroed, mask)[1], atol=2e-5)


def test_go_backwards_and_bidirectional_keep_each_steps_timestamp():
    rng = np.random.default_rng(8)
    forward, params = _built_layer(8)
    backward, _ = _built_layer(8, go_backwards=True)
    times = ref.random_times(rng, BATCH, STEPS).astype(np.float32)
    x = rng.normal(size=(BATCH, STEPS, INPUT_SIZE)).astype(np.float32)
    want = _numpy_run(params, times[:, ::-1], x[:, ::-1])[1]
    np.testing.assert_allclose(ops.convert_to_numpy(backward([x, times])), want, atol=2e-5)
    both = keras.layers.Bidirectional(PhasedLSTM(UNITS), merge_mode="concat")
    both.build((None, STEPS, INPUT_SIZE))
    both.forward_layer.cell.set_tf1_weights(params)
    both.backward_layer.cell.set_tf1_weights(params)
    index = np.broadcast_to(np.arange(STEPS, dtype=np.float32)[:, None], (BATCH, STEPS, 1))
    got = ops.convert_to_numpy(both(x))
    np.testing.assert_allclose(got[:, :UNITS], _numpy_run(params, index, x)[1], atol=2e-5)
    np.testing.assert_allclose(got[:, UNITS:],
                               _numpy_run(params, index[:, ::-1], x[:, ::-1])[1], atol=2e-5)


def test_initial_state_and_stateful_continue_a_sequence():
    rng = np.random.default_rng(9)
    layer, params = _built_layer(9, return_state=True)
    times = ref.random_times(rng, BATCH, STEPS).astype(np.float32)
    x = rng.normal(size=(BATCH, STEPS, INPUT_SIZE)).astype(np.float32)
    _, want_h, want_c = _numpy_run(params, times, x)
    half = STEPS // 2
    _, h, c = layer([x[:, :half], times[:, :half]])
    _, h, c = layer([x[:, half:], times[:, half:]], initial_state=[h, c])
    np.testing.assert_allclose(ops.convert_to_numpy(h), want_h, atol=2e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(c), want_c, atol=2e-5)
    stateful = PhasedLSTM(UNITS, stateful=True)
    stateful.build([(BATCH, half, INPUT_SIZE), (BATCH, half, 1)])
    stateful.cell.set_tf1_weights(params)
    stateful([x[:, :half], times[:, :half]])
    np.testing.assert_allclose(ops.convert_to_numpy(stateful([x[:, half:], times[:, half:]])),
                               want_h, atol=2e-5)


# -- Validity, initialisation, errors ------------------------------------------------------------


def test_training_cannot_make_periods_or_open_ratios_invalid():
    rng = np.random.default_rng(10)
    # Penalties that pull periods and open ratios below 0 in one step of SGD with a large rate;
    # a user's constraint (NonNeg) alone would leave a period of 0.
    layer = PhasedLSTM(UNITS, period_init_min=2.0, period_init_max=4.0,
                       period_regularizer=keras.regularizers.L1(1e3),
                       ratio_on_regularizer=keras.regularizers.L1(1e3),
                       period_constraint=keras.constraints.NonNeg())
    model = keras.Sequential([keras.Input((STEPS, INPUT_SIZE)), layer, keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(10.0), "mse")
    x = rng.normal(size=(8, STEPS, INPUT_SIZE)).astype(np.float32)
    model.fit(x, np.zeros((8, 1), np.float32), epochs=2, verbose=0)
    period, ratio_on = (ops.convert_to_numpy(v) for v in (layer.cell.period, layer.cell.ratio_on))
    np.testing.assert_allclose(period, gate_math.MIN_PERIOD, rtol=1e-6)
    np.testing.assert_allclose(ratio_on, gate_math.MIN_RATIO_ON, rtol=1e-6)
    assert np.all(np.isfinite(model.predict(x, verbose=0)))


def test_hand_set_invalid_timing_gives_finite_outputs():
    layer, params = _built_layer(11)
    layer.cell.set_tf1_weights(dict(params, period=np.zeros(UNITS), ratio_on=-np.ones(UNITS)))
    x = np.ones((BATCH, STEPS, INPUT_SIZE), np.float32)
    assert np.all(np.isfinite(ops.convert_to_numpy(layer(x))))


def test_default_initialisers_are_tf1s():
    keras.utils.set_random_seed(0)
    cell = PhasedLSTMCell(2000)
    cell.build((None, 2))
    period, phase, ratio_on = (ops.convert_to_numpy(v)
                               for v in (cell.period, cell.phase, cell.ratio_on))
    assert 1.0 <= period.min() and period.max() <= 1000.0
    # log-uniform: about half of the periods below sqrt(1000).
    assert 0.45 < np.mean(period < np.sqrt(1000.0)) < 0.55
    assert np.all((0 <= phase) & (phase < period)) and 0.4 < np.mean(phase / period) < 0.6
    np.testing.assert_array_equal(ratio_on, np.float32(0.1))
    for name in ("mask_gates_bias", "new_input_bias", "output_gate_bias"):
        np.testing.assert_array_equal(ops.convert_to_numpy(getattr(cell, name)), 0.0)
    seed = PhasedLSTMCell(3, ratio_on=0.05, period_initializer=keras.initializers.RandomUniform(
        10.0, 100.0), phase_initializer=keras.initializers.RandomUniform(0.0, 1000.0))
    seed.build((None, 2))
    assert np.all((10.0 <= ops.convert_to_numpy(seed.period))
                  & (ops.convert_to_numpy(seed.period) <= 100.0))
    np.testing.assert_allclose(ops.convert_to_numpy(seed.ratio_on), 0.05)


def test_trainable_flags_freeze_the_timing():
    cell = PhasedLSTMCell(2, trainable_period=False, trainable_phase=False,
                          trainable_ratio_on=False)
    cell.build((None, 3))
    frozen = {v.name for v in cell.non_trainable_weights}
    assert frozen == {"period", "phase", "ratio_on"}


@pytest.mark.parametrize("kwargs, message", [
    (dict(units=0), r"units must be an integer >= 1; got 0"),
    (dict(units=2.5), r"units must be an integer >= 1; got 2.5"),
    (dict(units=4, leak=-0.1), r"leak must be >= 0; got -0.1"),
    (dict(units=4, inference_leak="0"), r"inference_leak must be a number >= 0"),
    (dict(units=4, ratio_on=1.5), r"ratio_on must be in \(0, 1\]; got 1.5"),
    (dict(units=4, period_init_min=0.0), r"period_init_min must be > 0"),
    (dict(units=4, period_init_min=10.0, period_init_max=5.0),
     r"period_init_max must be >= period_init_min"),
    (dict(units=4, leak=0.1, alpha=0.1), r"give leak or alpha"),
])
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PhasedLSTM(**kwargs)


@pytest.mark.parametrize("inputs, error, message", [
    (np.zeros((2, STEPS), np.float32), ValueError, r"features must have shape \[batch, steps"),
    ([np.zeros((2, STEPS, 2), np.float32), np.zeros((2, STEPS - 1, 1), np.float32)],
     ValueError, r"times must have shape"),
    ([np.zeros((2, STEPS, 2), np.float32), np.zeros((2, STEPS, 2), np.float32)],
     ValueError, rf"times must have shape .* or \[batch, steps, {UNITS}\] \(one per unit\)"),
    ([np.zeros((2, STEPS, 2), np.float32), np.zeros((2, STEPS, 1), bool)],
     TypeError, r"times must be numbers; got dtype bool"),
    ([np.zeros((2, STEPS, 2), np.float32)] * 3, ValueError, r"got a list of 3 inputs"),
])
def test_bad_inputs(inputs, error, message):
    with pytest.raises(error, match=message):
        PhasedLSTM(UNITS)(inputs)


def test_cell_refuses_steps_without_a_time_column():
    with pytest.raises(ValueError, match=r"\[batch, input_size \+ 1\]"):
        keras.layers.RNN(PhasedLSTMCell(2))(np.zeros((2, 3, 0), np.float32))


def test_alpha_is_the_keras_seeds_name_for_leak():
    assert PhasedLSTM(2, alpha=0.01).cell.leak == 0.01


# -- Serialization -------------------------------------------------------------------------------


def _seed_model():
    model = keras.Sequential([keras.Input((STEPS, 1)), PhasedLSTM(6, ratio_on=0.3),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile("rmsprop", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_config_round_trips_every_setting():
    layer = PhasedLSTM(3, use_peepholes=True, leak=0.01, inference_leak=0.0, ratio_on=0.2,
                       period_init_min=2.0, period_init_max=50.0, trainable_phase=False,
                       period_initializer=keras.initializers.RandomUniform(2.0, 20.0),
                       period_regularizer="l2", phase_constraint="non_neg",
                       mod_gradient="exact", return_sequences=True, go_backwards=True)
    config = layer.get_config()
    again = PhasedLSTM.from_config(config)
    assert again.get_config() == config
    assert again.cell.mod_gradient == "exact" and again.go_backwards and again.cell.use_peepholes
    # The layer always runs its cell on the gate: not a setting of the layer.
    assert "gate_in_inputs" not in config and again.cell.gate_in_inputs


def test_gate_in_inputs_cell_is_the_timestamp_cell_fed_its_gate():
    rng = np.random.default_rng(21)
    features = rng.normal(size=(BATCH, STEPS, INPUT_SIZE)).astype(np.float32)
    times = np.cumsum(rng.uniform(0.5, 3.0, size=(BATCH, STEPS, 1)), axis=1).astype(np.float32)
    from_times = keras.layers.RNN(PhasedLSTMCell(UNITS, ratio_on=0.5, period_init_max=10.0),
                                  return_sequences=True)
    want = from_times(np.concatenate([features, times], axis=-1))
    cell = from_times.cell
    from_gate = keras.layers.RNN(PhasedLSTMCell.from_config(
        {**cell.get_config(), "gate_in_inputs": True}), return_sequences=True)
    k = cell.time_gate(times, training=False)
    from_gate.build((BATCH, STEPS, INPUT_SIZE + UNITS))
    from_gate.set_weights(from_times.get_weights())
    got = from_gate(ops.concatenate([features, k], axis=-1))
    np.testing.assert_allclose(ops.convert_to_numpy(got), ops.convert_to_numpy(want),
                               rtol=1e-6, atol=1e-6)
    assert from_gate.cell.get_config()["gate_in_inputs"] is True
    with pytest.raises(ValueError, match=r"input_size \+ 4\] \(the features, then k\)"):
        keras.layers.RNN(PhasedLSTMCell(UNITS, gate_in_inputs=True))(
            np.zeros((2, 3, 2), np.float32))


def _drop_key(config, key):
    """config (nested dicts and lists) without `key` anywhere."""
    if isinstance(config, dict):
        return {k: _drop_key(v, key) for k, v in config.items() if k != key}
    if isinstance(config, list):
        return [_drop_key(v, key) for v in config]
    return config


def test_keras_files_saved_without_gate_in_inputs_still_load():
    """A .keras file as the code before `gate_in_inputs` wrote it: its config has no such key."""
    import zipfile

    rng = np.random.default_rng(22)
    x = rng.uniform(size=(4, STEPS, 2)).astype(np.float32)
    models = {
        "cell": keras.Sequential([keras.Input((STEPS, 2)),
                                  keras.layers.RNN(PhasedLSTMCell(3, ratio_on=0.4))]),
        "layer": keras.Sequential([keras.Input((STEPS, 1)), PhasedLSTM(3, ratio_on=0.4)]),
    }
    with tempfile.TemporaryDirectory() as directory:
        for name, model in models.items():
            x_in = x if name == "cell" else x[..., :1]
            saved, old = (os.path.join(directory, f"{name}{n}.keras") for n in ("", "_old"))
            model.save(saved)
            with zipfile.ZipFile(saved) as source, zipfile.ZipFile(old, "w") as target:
                for item in source.infolist():
                    data = source.read(item.filename)
                    if item.filename == "config.json":
                        config = json.loads(data)
                        data = json.dumps(_drop_key(config, "gate_in_inputs"))
                        assert ("gate_in_inputs" in json.dumps(config)) == (name == "cell")
                    target.writestr(item, data)
            loaded = keras.saving.load_model(old)
            np.testing.assert_allclose(loaded.predict(x_in, verbose=0),
                                       model.predict(x_in, verbose=0), rtol=1e-6, atol=1e-6)
            assert loaded.layers[0].cell.gate_in_inputs == (name == "layer")


def test_saved_model_loads_in_fresh_processes_without_custom_objects():
    """Saved here (TensorFlow backend); loaded by a fresh process on TensorFlow and on JAX."""
    rng = np.random.default_rng(12)
    x = rng.uniform(size=(16, STEPS, 1)).astype(np.float32)
    labels = rng.integers(0, 3, 16)
    model = _seed_model()
    model.fit(x, labels, epochs=1, batch_size=8, verbose=0)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.keras")
        model.save(path)
        np.save(os.path.join(directory, "x.npy"), x)
        np.save(os.path.join(directory, "want.npy"), model.predict(x, verbose=0))
        code = (
            "import sys, numpy as np, keras\n"
            "import phased_lstm\n"
            "d = sys.argv[1]\n"
            "model = keras.saving.load_model(d + '/model.keras')\n"
            "got = model.predict(np.load(d + '/x.npy'), verbose=0)\n"
            "print(type(model.layers[0]).__module__,\n"
            "      np.abs(got - np.load(d + '/want.npy')).max())\n")
        for backend in ("tensorflow", "jax"):
            out = _subprocess(["-c", code, directory], backend).split()
            assert out[-2] == "phased_lstm.keras3", (backend, out)
            assert float(out[-1]) < 1e-5, (backend, out)


# -- Other backends and processes ----------------------------------------------------------------


JAX_MISSING = importlib.util.find_spec("jax") is None
needs_jax = pytest.mark.skipif(JAX_MISSING, reason="jax is not installed")


@needs_jax
@pytest.mark.parametrize("peep", [False, True])
def test_jax_backend_matches_tf1_cell_outputs_and_gradients(peep):
    for mod_gradient in gate_math.MOD_GRADIENTS:
        case = _case(13, peep=peep, mod_gradient=mod_gradient)
        got = _run_on_backend(case, "jax")
        assert str(got["backend"]) == "jax"
        _assert_results_equal(got, _tf1_results(case))


@needs_jax
def test_jax_float64_times_need_x64():
    case = _case(15, start=1e7, time_dtype=np.float64)
    with_x64 = _run_on_backend(case, "jax", extra_env={"JAX_ENABLE_X64": "1"})
    assert str(with_x64["time_dtype"]) == "float64"
    _assert_results_equal(with_x64, keras3_helpers.run_case(case), keys=["outputs", "h", "c"])
    without = _run_on_backend(case, "jax", extra_env={"JAX_ENABLE_X64": "0"})
    assert str(without["time_dtype"]) == "float32"


def _torch_python():
    """An interpreter with torch: this one, or PHASED_LSTM_TORCH_PYTHON (a venv with keras and
    torch, e.g. one without TensorFlow)."""
    if importlib.util.find_spec("torch") is not None:
        return sys.executable
    return os.environ.get("PHASED_LSTM_TORCH_PYTHON")


needs_torch = pytest.mark.skipif(_torch_python() is None, reason="torch is not installed (set "
                                 "PHASED_LSTM_TORCH_PYTHON to a Python that has keras and torch)")


@needs_torch
@pytest.mark.parametrize("peep", [False, True])
def test_torch_backend_matches_tf1_cell_outputs_and_gradients(peep):
    for mod_gradient in gate_math.MOD_GRADIENTS:
        case = _case(16, peep=peep, mod_gradient=mod_gradient)
        got = _run_on_backend(case, "torch", python=_torch_python())
        assert str(got["backend"]) == "torch"
        _assert_results_equal(got, _tf1_results(case))


# What the layer and the cell do with NaN and infinite settings and timestamps (as the TF 1.x
# cells refuse them), on each backend: keras3_helpers.refusals, outcomes shortened here.
NAN_FROM_THE_BAD_STEP = [[False, False, True, True, True], [False] * 5]  # example 0, step 2 on
NO_NAN = [[False] * 5] * 2
REFUSED = "ValueError: bad timestamp"


def _outcome(result):
    """What refusals() saw, in short: the error type for the timestamps' message, or what ran."""
    if result is None:
        return "ran"
    if isinstance(result, list):
        return {str(NAN_FROM_THE_BAD_STEP): "NaN from the bad step on",
                str(NO_NAN): "no NaN"}.get(str(result), str(result))
    if keras3.NON_FINITE_TIME in result:
        return f"{result.split(':')[0]}: bad timestamp"
    return result


def _expected_refusals(backend):
    want = {}
    for name in keras3_helpers.TIMING_ARGUMENTS:
        for value in keras3_helpers.NON_FINITE:
            message = f"ValueError: {name.replace('alpha', 'leak')} must be a finite number; " \
                      f"got {float(value)}"
            want[f"PhasedLSTM({name}={value})"] = message
            if name != "alpha":
                want[f"PhasedLSTMCell({name}={value})"] = message
    compiled = {"tensorflow": {"tf.function": "InvalidArgumentError: bad timestamp",
                               "XLA": "NaN from the bad step on"},  # XLA drops the Assert
                "jax": {"jax.jit": "NaN from the bad step on"}, "torch": {}}[backend]
    for bad in ("nan", "inf", "-inf"):
        want[f"PhasedLSTM times {bad}"] = REFUSED
        # Keras' RNN on JAX runs the cell in lax.scan (traced): nothing to raise there.
        want[f"RNN(PhasedLSTMCell) times {bad}"] = (
            "NaN from the bad step on" if backend == "jax" else REFUSED)
        want.update({f"{name} times {bad}": outcome for name, outcome in compiled.items()})
    # A finite timestamp in the same place runs everywhere.
    want.update({"PhasedLSTM times 0": "ran", "RNN(PhasedLSTMCell) times 0": "no NaN"})
    want.update({f"{name} times 0": "no NaN" for name in compiled})
    return want


@pytest.mark.parametrize("backend", [
    pytest.param("tensorflow", marks=needs_tf_backend), pytest.param("jax", marks=needs_jax),
    pytest.param("torch", marks=needs_torch)])
def test_non_finite_settings_and_timestamps_are_refused_on_each_backend(backend):
    if backend == "tensorflow":
        got = keras3_helpers.refusals()
    else:
        out = _subprocess([HELPERS, "--refusals"], backend,
                          _torch_python() if backend == "torch" else None)
        got = json.loads(out.strip().splitlines()[-1])
    assert {case: _outcome(result) for case, result in got.items()} == \
        _expected_refusals(backend)


def test_phased_lstm_name_is_refused_with_both_imports_named():
    out = _subprocess(
        "import sys, phased_lstm\n"
        "try:\n"
        "    phased_lstm.PhasedLSTM\n"
        "except AttributeError as error:\n"
        "    print(error)\n"
        "print('PhasedLSTM' in dir(phased_lstm), 'tensorflow' in sys.modules)\n")
    message, listed_and_loaded = out.strip().splitlines()
    assert "from phased_lstm.keras_layer import PhasedLSTM" in message, message
    assert "from phased_lstm.keras3 import PhasedLSTM" in message, message
    assert listed_and_loaded.split() == ["False", "False"], out  # nothing heavy loaded


def test_issue_snippet_keras3_first_then_phased_lstm():
    out = _subprocess(
        "import tensorflow as tf\n"
        "import keras\n"
        "tf.keras.Sequential([tf.keras.layers.Dense(3)])   # any use of Keras 3 first\n"
        "import phased_lstm\n"
        "import numpy as np\n"
        "from phased_lstm.keras3 import PhasedLSTM\n"
        "model = keras.Sequential([keras.Input((10, 1)), PhasedLSTM(8)])\n"
        "print(model(np.ones((2, 10, 1), np.float32)).shape)\n"
        "tf.keras.Sequential([tf.keras.Input((10, 1)), PhasedLSTM(8)])\n"
        "# The TF 1.x cells still work, and tf.keras is still Keras 3.\n"
        "with tf.Graph().as_default():\n"
        "    out, _ = tf.compat.v1.nn.dynamic_rnn(phased_lstm.PhasedLSTMCell(2),\n"
        "        (tf.zeros([1, 3, 1]), tf.zeros([1, 3, 1])), dtype=tf.float32)\n"
        "tf.keras.Sequential([tf.keras.Input((10, 1)), PhasedLSTM(8)])\n"
        "import os\n"
        "print(tf.keras.layers.Layer is keras.layers.Layer,\n"
        "      os.environ.get('TF_USE_LEGACY_KERAS'))\n")
    assert out.split() == ["(2,", "8)", "True", "None"], out


def test_keras3_layer_then_tf1_cells_both_work():
    # Keras 3 imported and used (not through tf.keras), then the TF 1.x parts: the Keras 3
    # model keeps working and the cells run. tf.keras was unused, so it becomes tf-keras.
    out = _subprocess(
        "import keras, numpy as np\n"
        "import phased_lstm\n"
        "from phased_lstm.keras3 import PhasedLSTM\n"
        "model = keras.Sequential([keras.Input((10, 1)), PhasedLSTM(8)])\n"
        "print(model(np.ones((2, 10, 1), np.float32)).shape)\n"
        "from phased_lstm import PhasedLSTMCell, tf   # the TF 1.x parts afterwards\n"
        "with tf.Graph().as_default():\n"
        "    out, _ = tf.compat.v1.nn.dynamic_rnn(PhasedLSTMCell(2),\n"
        "        (tf.zeros([1, 3, 1]), tf.zeros([1, 3, 1])), dtype=tf.float32)\n"
        "print(model(np.ones((2, 10, 1), np.float32)).shape, out.shape)\n"
        "print(tf.keras.__name__.split('.')[0])\n")
    assert out.split() == ["(2,", "8)", "(2,", "8)", "(1,", "3,", "2)", "tf_keras"], out


@pytest.mark.parametrize("legacy, want", [("0", "keras"), ("1", "tf_keras")])
def test_tf_use_legacy_keras_set_by_the_user_wins(legacy, want):
    out = _subprocess(
        "import os\n"
        "from phased_lstm import PhasedLSTMCell, tf\n"
        "with tf.Graph().as_default():\n"
        "    out, _ = tf.compat.v1.nn.dynamic_rnn(PhasedLSTMCell(2),\n"
        "        (tf.zeros([1, 3, 1]), tf.zeros([1, 3, 1])), dtype=tf.float32)\n"
        "print(out.shape, tf.keras.__name__.split('.')[0], os.environ['TF_USE_LEGACY_KERAS'])\n",
        extra_env={"TF_USE_LEGACY_KERAS": legacy})
    assert out.split() == ["(1,", "3,", "2)", want, legacy], out


def test_keras3_on_jax_imports_neither_tensorflow_nor_tf_keras():
    if JAX_MISSING:
        pytest.skip("jax is not installed")
    out = _subprocess(
        "import sys, numpy as np, keras, phased_lstm\n"
        "from phased_lstm.keras3 import PhasedLSTM\n"
        "model = keras.Sequential([keras.Input((5, 1)), PhasedLSTM(3)])\n"
        "model(np.ones((2, 5, 1), np.float32))\n"
        "print(keras.config.backend(), 'tensorflow' in sys.modules, 'tf_keras' in sys.modules,\n"
        "      'TF_USE_LEGACY_KERAS' in __import__('os').environ)\n", "jax")
    assert out.split() == ["jax", "False", "False", "False"], out


def test_tf1_users_first_keep_tf_keras_and_can_use_keras3_beside_it():
    out = _subprocess(
        "import phased_lstm\n"
        "from phased_lstm import tf\n"
        "from phased_lstm.keras_layer import PhasedLSTM\n"
        "print(tf.keras.__name__.split('.')[0])\n"
        "tf.keras.Sequential([PhasedLSTM(4, input_shape=(5, 1))])\n"
        "import keras, numpy as np\n"
        "from phased_lstm.keras3 import PhasedLSTM as Keras3PhasedLSTM\n"
        "model = keras.Sequential([keras.Input((5, 1)), Keras3PhasedLSTM(4)])\n"
        "print(model(np.ones((1, 5, 1), np.float32)).shape)\n")
    assert out.split() == ["tf_keras", "(1,", "4)"], out


# The fused kernel on the TensorFlow backend (PhasedLSTM._fused_call), against Keras' own loop
# over the same cell (PHASED_LSTM_FUSED=0 when the function is traced).

def _traced_step(layer, inputs, mask=None, fused=True, initial_state=None):
    """(outputs, gradients of x and every weight, the traced op types) of one tf.function."""
    from unittest import mock

    x, times = (tf.constant(v) for v in inputs)

    @tf.function
    def step(x, times):
        with tf.GradientTape() as tape:
            tape.watch(x)
            output, h, c = layer([x, times], mask=mask, training=True,
                                 initial_state=initial_state)
            loss = tf.reduce_sum(output ** 2) + tf.reduce_sum(c * 3.0) + tf.reduce_sum(h)
        return (output, h, c), tape.gradient(loss, [x] + layer.trainable_weights)

    with mock.patch.dict(os.environ, {"PHASED_LSTM_FUSED": "1" if fused else "0"}):
        concrete = step.get_concrete_function(x, times)
        values = tf.nest.map_structure(np.asarray, concrete(x, times))
    return values, {op.type for op in concrete.graph.get_operations()}


def _require_fused_kernel():
    from test_fused_rnn import _require_kernel

    class _Case:  # _require_kernel's test interface: skipTest and fail
        skipTest = staticmethod(pytest.skip)
        fail = staticmethod(pytest.fail)
    _require_kernel(_Case)


@needs_tf_backend
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("peep", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_fused_kernel_matches_keras_loop(dtype, peep, masked):
    _require_fused_kernel()
    rng = np.random.default_rng(7)
    inputs = (rng.normal(size=(BATCH, STEPS, INPUT_SIZE)).astype(dtype),
              np.cumsum(rng.uniform(0.5, 3.0, size=(BATCH, STEPS)), axis=1))
    mask = None
    if masked:
        live = rng.uniform(size=(BATCH, STEPS)) > 0.3
        live[0] = False  # an example with no step at all
        mask = tf.constant(live)
        inputs[0][~live] = 1e3  # padding that must not reach the state
    layer = PhasedLSTM(UNITS, use_peepholes=peep, return_sequences=True, return_state=True,
                       ratio_on=0.5, period_init_max=10.0, dtype=dtype)
    layer(list(inputs))
    (fused, fused_grads), fused_ops = _traced_step(layer, inputs, mask, fused=True)
    (loop, loop_grads), loop_ops = _traced_step(layer, inputs, mask, fused=False)
    assert "PhasedLSTMSequence" in fused_ops and "PhasedLSTMSequence" not in loop_ops
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else dict(rtol=1e-10,
                                                                            atol=1e-12)
    for name, a, b in zip(["output", "h", "c"], fused, loop):
        np.testing.assert_allclose(a, b, err_msg=name, **tolerance)
    names = ["x"] + [w.name for w in layer.trainable_weights]
    for name, a, b in zip(names, fused_grads, loop_grads):
        np.testing.assert_allclose(a, b, err_msg=f"gradient of {name}", **tolerance)
    if masked:  # NaN padding: Keras' loop computes the cell on it (NaN gradients), the kernel not
        inputs[0][~live] = np.nan
        (nan_padded, nan_grads), _ = _traced_step(layer, inputs, mask, fused=True)
        for name, a, b in zip(["output", "h", "c"] + names, [*nan_padded, *nan_grads],
                              [*fused, *fused_grads]):
            np.testing.assert_allclose(a, b, err_msg=f"NaN padding: {name}", **tolerance)


@needs_tf_backend
def test_fused_kernel_runs_exactly_where_it_can():
    from unittest import mock

    _require_fused_kernel()
    rng = np.random.default_rng(8)
    inputs = (rng.normal(size=(BATCH, STEPS, INPUT_SIZE)).astype(np.float32),
              np.cumsum(rng.uniform(0.5, 3.0, size=(BATCH, STEPS)), axis=1))
    mask = tf.constant(rng.uniform(size=(BATCH, STEPS)) > 0.3)

    def runs_fused(mask=None, initial_state=None, **kwargs):
        layer = PhasedLSTM(UNITS, return_sequences=True, return_state=True, **kwargs)
        layer(list(inputs))
        _, ops_seen = _traced_step(layer, inputs, mask, initial_state=initial_state)
        return "PhasedLSTMSequence" in ops_seen, layer.supports_jit

    assert runs_fused() == (True, False)  # XLA cannot compile the op: no jit for its model
    assert runs_fused(mask) == (True, False)
    assert runs_fused(go_backwards=True) == (False, True)
    assert runs_fused(unroll=True) == (False, True)
    assert runs_fused(mask, zero_output_for_mask=True)[0] is False
    state = [tf.ones([BATCH, UNITS])] * 2
    assert runs_fused(initial_state=state)[0] is True
    assert runs_fused(mask, initial_state=state)[0] is False  # Keras' outputs before the first
    gpu = [tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")]
    with mock.patch.object(tf.config, "get_visible_devices", return_value=gpu):
        assert runs_fused()[0] is False  # the recurrence would run on the GPU: Keras' loop


@needs_tf_backend
@pytest.mark.parametrize("peep", [False, True])
def test_inference_runs_the_forward_only_op_with_the_training_results(peep):
    # training False or None (Keras' inference) without a tape: the forward-only op, whose
    # results are the training op's bit for bit; with a tape recording, the training op.
    from phased_lstm import fused_rnn

    _require_fused_kernel()
    rng = np.random.default_rng(9)
    inputs = [tf.constant(rng.normal(size=(BATCH, STEPS, INPUT_SIZE)).astype(np.float32)),
              tf.constant(np.cumsum(rng.uniform(0.5, 3.0, size=(BATCH, STEPS)), axis=1))]
    layer = PhasedLSTM(UNITS, use_peepholes=peep, return_sequences=True, return_state=True,
                       ratio_on=0.5, period_init_max=10.0)
    layer(inputs)

    def traced(training):
        concrete = tf.function(lambda: layer(inputs, training=training)).get_concrete_function()
        return ([np.asarray(t) for t in concrete()],
                {op.type for op in concrete.graph.get_operations()})

    want, training_ops = traced(True)
    assert "PhasedLSTMSequence" in training_ops
    assert "PhasedLSTMSequenceInference" not in training_ops
    assert "PhasedTimeGate" not in training_ops
    for training in (False, None):
        got, ops_seen = traced(training)
        assert "PhasedLSTMSequenceInference" in ops_seen
        assert "PhasedLSTMSequence" not in ops_seen
        # The gate from the fused gate kernel where it builds: the same values.
        assert ("PhasedTimeGate" in ops_seen) == fused_rnn.TIME_GATE.available()
        for name, a, b in zip(["output", "h", "c"], got, want):
            np.testing.assert_array_equal(a, b, err_msg=f"{name}, training={training}")
    # A mask, folded into the gate (the fused gate kernel's live rows): the same results too.
    mask = tf.constant(rng.uniform(size=(BATCH, STEPS)) > 0.3)
    masked = [tf.function(lambda: layer(inputs, mask=mask, training=training))()
              for training in (True, False)]
    for name, a, b in zip(["output", "h", "c"], *masked):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a), err_msg=f"masked {name}")
    # Eagerly too, and through Keras' predict.
    np.testing.assert_array_equal(np.asarray(layer(inputs)[0]), want[0])
    symbolic = [keras.Input((STEPS, INPUT_SIZE)), keras.Input((STEPS,), dtype="float64")]
    model = keras.Model(symbolic, layer(symbolic)[0])
    # (predict's data adapter casts the float64 times to float32: equal up to their rounding.)
    np.testing.assert_allclose(model.predict([np.asarray(t) for t in inputs], verbose=0),
                               want[0], rtol=1e-5, atol=1e-6)

    # A tape recording while the layer runs with training=None: the training op, gradients.
    @tf.function
    def gradients():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(inputs)[0])
        return tape.gradient(loss, layer.trainable_weights)

    grads = gradients()
    assert all(g is not None for g in grads)
    assert "PhasedLSTMSequenceInference" not in {
        op.type for op in gradients.get_concrete_function().graph.get_operations()}
    assert fused_rnn.keras_forward_only(None) and not fused_rnn.keras_forward_only(True)
