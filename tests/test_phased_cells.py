"""What PhasedLSTMCell and PhasedGRUCell promise alike, each against its own NumPy reference.

Each test runs once per cell. What only one cell has (peepholes, the LSTM's packed weights and
checkpoints, the GRU's equality with GRUCell) stays in test_phased_lstm_cell.py and
test_phased_gru_cell.py.
"""

import dataclasses
from typing import Callable

import numpy as np
import pytest

import numpy_reference as ref
import numpy_reference_gru as gru_ref
from phased_lstm import MIN_PERIOD, MIN_RATIO_ON, PhasedGRUCell, PhasedLSTMCell, tf
from tf_helpers import cell_variables, load_params

BATCH, STEPS, INPUT_SIZE, UNITS = 5, 30, 3, 6


@dataclasses.dataclass(frozen=True)
class Cell:
    """One cell and its reference."""
    make: Callable  # (num_units, **kwargs) -> the cell
    param_names: tuple  # its variables' TF 1.x names (the reference's keys)
    random_params: Callable  # rng -> {name: float64 array}
    step: Callable  # the reference's step
    reference_kwargs: dict
    state_size: int  # how many [batch, units] arrays make its state

    def reference(self, params, times, x, leak=0.001, sequence_length=None):
        """(outputs, the state's arrays) of the float64 reference."""
        zeros = np.zeros((x.shape[0], params["period"].shape[0]))
        return ref.run_sequence(self.step, params, times, x, (zeros,) * self.state_size,
                                sequence_length, leak=leak, **self.reference_kwargs)


# The LSTM with peepholes: every weight of the cell in use.
CELLS = {
    "PhasedLSTMCell": Cell(
        lambda n, **kw: PhasedLSTMCell(n, use_peepholes=True, **kw), ref.PARAM_NAMES,
        lambda rng: ref.random_phased_lstm_params(rng, INPUT_SIZE, UNITS, True),
        ref.phased_lstm_step, {"use_peepholes": True}, 2),
    "PhasedGRUCell": Cell(
        PhasedGRUCell, gru_ref.GRU_PARAM_NAMES,
        lambda rng: gru_ref.random_phased_gru_params(rng, INPUT_SIZE, UNITS),
        gru_ref.phased_gru_step, {}, 1),
}
TIMING = ("period", "phase", "ratio_on")


@pytest.fixture(params=sorted(CELLS))
def cell(request):
    return CELLS[request.param]


def _inputs(rng, start=0.0, batch=BATCH, steps=STEPS):
    return ref.random_times(rng, batch, steps, start), rng.normal(size=(batch, steps, INPUT_SIZE))


def _run_dynamic(cell, params, times, x, time_dtype=tf.float32, dtype=tf.float32,
                 sequence_length=None, leak=0.001, feed_leak=None):
    """(outputs, the final state's arrays) under dynamic_rnn with the weights `params`."""
    with tf.Graph().as_default():
        leak_t = tf.compat.v1.placeholder_with_default(tf.constant(leak, dtype), [])
        tf_cell = cell.make(UNITS, leak=leak_t, dtype=dtype)
        outputs, state = tf.compat.v1.nn.dynamic_rnn(
            tf_cell, (tf.constant(times, time_dtype), tf.constant(x, dtype)), dtype=dtype,
            sequence_length=sequence_length)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            load_params(sess, tf_cell, params, cell.param_names)
            feed = {} if feed_leak is None else {leak_t: feed_leak}
            outputs, state = sess.run((outputs, state), feed)
    return outputs, tf.nest.flatten(state)


def test_float64_cell_matches_reference_tightly(cell):
    rng = np.random.default_rng(1)
    params = cell.random_params(rng)
    times, x = _inputs(rng)
    outputs, _ = _run_dynamic(cell, params, times, x, tf.float64, tf.float64)
    np.testing.assert_allclose(outputs, cell.reference(params, times, x)[0], atol=1e-12, rtol=0)


def test_leak_placeholder_fed_zero_evaluates_without_leak(cell):
    rng = np.random.default_rng(2)
    params = cell.random_params(rng)
    times, x = _inputs(rng)
    with_leak, _ = _run_dynamic(cell, params, times, x, leak=0.001)
    without, _ = _run_dynamic(cell, params, times, x, leak=0.001, feed_leak=0.0)
    np.testing.assert_allclose(with_leak, cell.reference(params, times, x, 0.001)[0], atol=2e-5)
    np.testing.assert_allclose(without, cell.reference(params, times, x, 0.0)[0], atol=2e-5)
    assert np.abs(with_leak - without).max() > 1e-6


def test_float64_time_keeps_the_phase_of_large_timestamps(cell):
    rng = np.random.default_rng(3)
    params = cell.random_params(rng)
    times, x = _inputs(rng, start=1e7)
    want, _ = cell.reference(params, times, x)
    outputs64, _ = _run_dynamic(cell, params, times, x, time_dtype=tf.float64)
    np.testing.assert_allclose(outputs64, want, atol=2e-5, rtol=1e-5)
    # float32 cannot hold these timestamps (spacing 1.0 at 1e7): the same run goes wrong.
    outputs32, _ = _run_dynamic(cell, params, times, x, time_dtype=tf.float32)
    assert np.abs(outputs32 - want).max() > 1e-2


def test_dtype_follows_the_features_not_the_time(cell):
    with tf.Graph().as_default():
        tf_cell = cell.make(3)
        outputs, _ = tf.compat.v1.nn.dynamic_rnn(
            tf_cell, (tf.zeros([2, 4, 1], tf.float64), tf.zeros([2, 4, 1])), dtype=tf.float32)
    assert outputs.dtype == tf.float32
    assert {v.dtype.base_dtype for v in tf_cell.weights} == {tf.float32}


def test_sequence_length_leaves_padded_steps_unchanged(cell):
    rng = np.random.default_rng(4)
    params = cell.random_params(rng)
    times, x = _inputs(rng)
    lengths = np.array([STEPS, 17, 1, 9, 30])
    outputs, state = _run_dynamic(cell, params, times, x, sequence_length=lengths)
    want_outputs, want_state = cell.reference(params, times, x, sequence_length=lengths)
    np.testing.assert_allclose(outputs, want_outputs, atol=2e-5)
    for got, want in zip(state, want_state):
        np.testing.assert_allclose(got, want, atol=2e-5)
    for b, length in enumerate(lengths):
        _, alone = _run_dynamic(cell, params, times[b:b + 1, :length], x[b:b + 1, :length])
        for got, want in zip(state, alone):
            np.testing.assert_allclose(got[b], want[0], atol=1e-6)
        np.testing.assert_array_equal(outputs[b, length:], 0.0)


def test_static_rnn_matches_dynamic_rnn(cell):
    rng = np.random.default_rng(7)
    times, x = _inputs(rng, steps=8)
    with tf.Graph().as_default():
        tf_cell = cell.make(UNITS)
        time_t, x_t = tf.constant(times, tf.float32), tf.constant(x, tf.float32)
        dynamic, _ = tf.compat.v1.nn.dynamic_rnn(tf_cell, (time_t, x_t), dtype=tf.float32)
        static, _ = tf.compat.v1.nn.static_rnn(
            tf_cell, list(zip(tf.unstack(time_t, axis=1), tf.unstack(x_t, axis=1))),
            dtype=tf.float32)
        # Shared, not duplicated.
        assert len(tf.compat.v1.global_variables()) == len(cell.param_names)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            dynamic, static = sess.run((dynamic, tf.stack(static, axis=1)))
    np.testing.assert_allclose(dynamic, static, atol=1e-6)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_timing_parameters_stay_valid_when_training_drives_them_to_zero(cell, optimizer):
    rng = np.random.default_rng(9)
    times, x = _inputs(rng)
    with tf.Graph().as_default():
        tf_cell = cell.make(UNITS, period_init_min=0.5, period_init_max=2.0, ratio_on=0.05)
        outputs, _ = tf.compat.v1.nn.dynamic_rnn(
            tf_cell, (tf.constant(times, tf.float32), tf.constant(x, tf.float32)),
            dtype=tf.float32)
        gate = tf_cell.time_gate
        # A loss whose gradient pushes period and ratio_on below zero at every step.
        loss = tf.reduce_mean(outputs) + 100.0 * tf.reduce_sum(gate.period + gate.ratio_on)
        train = {"sgd": tf.compat.v1.train.GradientDescentOptimizer(10.0),
                 "adam": tf.compat.v1.train.AdamOptimizer(1.0)}[optimizer].minimize(loss)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            smallest_period = np.inf
            for _ in range(20):
                _, loss_value = sess.run((train, loss))
                period, ratio_on, out = sess.run((gate.period, gate.ratio_on, outputs))
                assert np.isfinite(loss_value) and np.isfinite(out).all()
                assert period.min() >= MIN_PERIOD
                assert MIN_RATIO_ON <= ratio_on.min() and ratio_on.max() <= 1.0
                smallest_period = min(smallest_period, period.min())
    # The optimiser did reach the bounds: the projection, not luck, kept them valid.
    assert smallest_period == pytest.approx(MIN_PERIOD, abs=1e-9)
    assert ratio_on.min() == pytest.approx(MIN_RATIO_ON, abs=1e-9)


def test_hand_set_invalid_timing_gives_finite_outputs(cell):
    rng = np.random.default_rng(10)
    params = cell.random_params(rng)
    params["period"][:3] = [0.0, -1.0, 1e-9]
    params["ratio_on"][:3] = [0.0, -0.5, 3.0]
    times, x = _inputs(rng)
    outputs, state = _run_dynamic(cell, params, times, x)
    assert np.isfinite(outputs).all() and all(np.isfinite(s).all() for s in state)


def test_trainable_flags_freeze_the_timing(cell):
    with tf.Graph().as_default():
        tf_cell = cell.make(3, trainable_ratio_on=False, trainable_period=False,
                            trainable_phase=False)
        tf.compat.v1.nn.dynamic_rnn(tf_cell, (tf.zeros([1, 2, 1]), tf.zeros([1, 2, 1])),
                                    dtype=tf.float32)
        trainable = {v.ref() for v in tf.compat.v1.trainable_variables()}
        variables = cell_variables(tf_cell, cell.param_names)
    assert set(variables) == set(cell.param_names)
    assert {name for name, v in variables.items() if v.ref() in trainable} == (
        set(cell.param_names) - set(TIMING))


# -- Bad inputs and arguments --------------------------------------------------------------------


def _call(cell, time_shape, features_shape, time_dtype=tf.float32):
    with tf.Graph().as_default():
        tf_cell = cell.make(4)
        inputs = (tf.zeros(time_shape, time_dtype), tf.zeros(features_shape))
        tf_cell(inputs, tf_cell.zero_state(2, tf.float32))


@pytest.mark.parametrize("shape", [[2, 2], [2, 1, 1], [2, 4, 1]])
def test_time_must_be_batch_by_one_or_by_units(cell, shape):
    with pytest.raises(ValueError, match=r"time must have shape \[batch, 1\] \(one timestamp per "
                       r"example\) or \[batch, 4\] \(one per unit\); got shape"):
        _call(cell, shape, [2, 3])


def test_features_must_be_rank_two(cell):
    with pytest.raises(ValueError, match=r"features must have rank 2"):
        _call(cell, [2, 1], [2, 3, 1])


@pytest.mark.parametrize("dtype", [tf.bool, tf.string])
def test_time_must_be_numbers(cell, dtype):
    with pytest.raises(TypeError, match=r"time must be numbers: a floating tensor .* or an "
                       rf"integer one .*; got dtype {dtype.name}"):
        _call(cell, [2, 1], [2, 3], dtype)


def test_inputs_must_be_a_time_features_pair(cell):
    message = r"expects inputs as a tuple \(time \[batch, 1\], features"
    with tf.Graph().as_default():
        tf_cell = cell.make(4)
        with pytest.raises(TypeError, match=message):
            tf_cell(tf.zeros([2, 3]), tf_cell.zero_state(2, tf.float32))
        with pytest.raises(TypeError, match=message):
            tf_cell.build(tf.TensorShape([2, 3]))


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_units=0), r"num_units must be an integer >= 1; got 0"),
    (dict(num_units=4.0), r"num_units must be an integer >= 1; got 4.0"),
    (dict(num_units=4, ratio_on=0.0), r"ratio_on must be in \(0, 1\]; got 0.0"),
    (dict(num_units=4, ratio_on=1.5), r"ratio_on must be in \(0, 1\]; got 1.5"),
    (dict(num_units=4, period_init_min=0.0), r"period_init_min must be > 0"),
    (dict(num_units=4, period_init_min=10.0, period_init_max=5.0),
     r"period_init_max must be >= period_init_min \(10.0\); got 5.0"),
    (dict(num_units=4, leak=-0.1), r"leak must be >= 0"),
    (dict(num_units=4, mod_gradient="floor"),
     r"mod_gradient must be one of \('tf1', 'exact'\); got 'floor'"),
])
def test_bad_constructor_arguments(cell, kwargs, message):
    kwargs = dict(kwargs)
    with pytest.raises(ValueError, match=message):
        cell.make(kwargs.pop("num_units"), **kwargs)
