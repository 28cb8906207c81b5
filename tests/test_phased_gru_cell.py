"""PhasedGRUCell against a float64 NumPy reference, finite differences and its contract."""

import warnings

import numpy as np

import numpy_reference as ref
import numpy_reference_gru as gru_ref
from phased_lstm import MIN_PERIOD, MIN_RATIO_ON, PhasedLSTMCell, PhasedMultiRNNCell, tf
from phased_lstm.phased_gru_cell import PhasedGRUCell
from tf_helpers import load_params

BATCH, STEPS, INPUT_SIZE, UNITS = 5, 30, 3, 6


def _inputs(rng, start=0.0, batch=BATCH, steps=STEPS):
    return ref.random_times(rng, batch, steps, start), rng.normal(size=(batch, steps, INPUT_SIZE))


def _reference(params, times, x, leak=0.001, sequence_length=None):
    zeros = np.zeros((x.shape[0], params["candidate/bias"].shape[0]))
    return ref.run_sequence(gru_ref.phased_gru_step, params, times, x, (zeros,), sequence_length,
                            leak=leak)


def gru_variables(cell):
    """The cell's variables keyed by their names ("gates/kernel", "period", ...)."""
    found = {}
    for variable in cell.weights:
        name = variable.name.split(":")[0]
        for key in gru_ref.GRU_PARAM_NAMES:
            if name == key or name.endswith("/" + key):
                found[key] = variable
    return found


def load_gru_params(sess, cell, params):
    """Assigns NumPy values to the cell's variables (no constraint is applied)."""
    for key, variable in gru_variables(cell).items():
        variable.load(np.asarray(params[key], variable.dtype.as_numpy_dtype), sess)


class PhasedGRUCellTest(tf.test.TestCase):

    def _run_dynamic(self, params, times, x, time_dtype=tf.float32, dtype=tf.float32,
                     sequence_length=None, leak=0.001, feed_leak=None):
        with tf.Graph().as_default():
            leak_t = tf.compat.v1.placeholder_with_default(tf.constant(leak, dtype), [])
            cell = PhasedGRUCell(UNITS, leak=leak_t, dtype=dtype)
            outputs, state = tf.compat.v1.nn.dynamic_rnn(
                cell, (tf.constant(times, time_dtype), tf.constant(x, dtype)), dtype=dtype,
                sequence_length=sequence_length)
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                load_gru_params(sess, cell, params)
                feed = {} if feed_leak is None else {leak_t: feed_leak}
                return sess.run((outputs, state), feed)

    def test_matches_numpy_reference_with_per_sample_times(self):
        rng = np.random.default_rng(0)
        params = gru_ref.random_phased_gru_params(rng, INPUT_SIZE, UNITS)
        times, x = _inputs(rng)
        outputs, h = self._run_dynamic(params, times, x)
        want_outputs, (want_h,) = _reference(params, times, x)
        self.assertAllClose(outputs, want_outputs, atol=2e-5, rtol=1e-5)
        self.assertAllClose(h, want_h, atol=2e-5, rtol=1e-5)
        # The gate did close and open: some units kept their state at some steps, others not.
        change = np.abs(np.diff(want_outputs, axis=1))
        self.assertGreater((change < 1e-3).mean(), 0.2)
        self.assertGreater((change > 1e-2).mean(), 0.05)
        print(f"largest deviation from the NumPy reference (float32 cell): "
              f"{np.abs(outputs - want_outputs).max():.2e}")

    def test_float64_cell_matches_reference_tightly(self):
        rng = np.random.default_rng(1)
        params = gru_ref.random_phased_gru_params(rng, INPUT_SIZE, UNITS)
        times, x = _inputs(rng)
        outputs, _ = self._run_dynamic(params, times, x, tf.float64, tf.float64)
        self.assertAllClose(outputs, _reference(params, times, x)[0], atol=1e-12, rtol=0)

    def test_leak_placeholder_fed_zero_evaluates_without_leak(self):
        rng = np.random.default_rng(2)
        params = gru_ref.random_phased_gru_params(rng, INPUT_SIZE, UNITS)
        times, x = _inputs(rng)
        with_leak, _ = self._run_dynamic(params, times, x, leak=0.001)
        without, _ = self._run_dynamic(params, times, x, leak=0.001, feed_leak=0.0)
        self.assertAllClose(with_leak, _reference(params, times, x, 0.001)[0], atol=2e-5)
        self.assertAllClose(without, _reference(params, times, x, 0.0)[0], atol=2e-5)
        self.assertGreater(np.abs(with_leak - without).max(), 1e-6)

    def test_float64_time_keeps_the_phase_of_large_timestamps(self):
        rng = np.random.default_rng(3)
        params = gru_ref.random_phased_gru_params(rng, INPUT_SIZE, UNITS)
        times, x = _inputs(rng, start=1e7)
        want, _ = _reference(params, times, x)
        outputs64, _ = self._run_dynamic(params, times, x, time_dtype=tf.float64)
        self.assertAllClose(outputs64, want, atol=2e-5, rtol=1e-5)
        # float32 cannot hold these timestamps (spacing 1.0 at 1e7): the same run goes wrong.
        outputs32, _ = self._run_dynamic(params, times, x, time_dtype=tf.float32)
        self.assertGreater(np.abs(outputs32 - want).max(), 1e-2)

    def test_dtype_follows_the_features_not_the_time(self):
        with tf.Graph().as_default():
            cell = PhasedGRUCell(3)
            outputs, _ = tf.compat.v1.nn.dynamic_rnn(
                cell, (tf.zeros([2, 4, 1], tf.float64), tf.zeros([2, 4, 1])), dtype=tf.float32)
        self.assertEqual(outputs.dtype, tf.float32)
        self.assertEqual({v.dtype.base_dtype for v in cell.weights}, {tf.float32})

    def test_sequence_length_leaves_padded_steps_unchanged(self):
        rng = np.random.default_rng(4)
        params = gru_ref.random_phased_gru_params(rng, INPUT_SIZE, UNITS)
        times, x = _inputs(rng)
        lengths = np.array([STEPS, 17, 1, 9, 30])
        outputs, h = self._run_dynamic(params, times, x, sequence_length=lengths)
        self.assertAllClose(outputs, _reference(params, times, x, sequence_length=lengths)[0],
                            atol=2e-5)
        for b, length in enumerate(lengths):
            _, h_alone = self._run_dynamic(params, times[b:b + 1, :length], x[b:b + 1, :length])
            self.assertAllClose(h[b], h_alone[0], atol=1e-6)
            self.assertAllEqual(outputs[b, length:], np.zeros_like(outputs[b, length:]))

    def _gradients_against_reference(self, mod_gradient, time_dtype=tf.float64):
        """Every variable's gradient under dynamic_rnn against the NumPy reference's.

        With an integer time_dtype the timestamps are whole numbers fed as integers.
        """
        rng = np.random.default_rng(5)
        steps = 12
        params = gru_ref.random_phased_gru_params(rng, INPUT_SIZE, UNITS)
        times, x = _inputs(rng, steps=steps)
        if time_dtype.is_integer:
            times = np.round(times * 3)
        weights = rng.normal(size=(BATCH, steps, UNITS))
        with tf.Graph().as_default():
            cell = PhasedGRUCell(UNITS, dtype=tf.float64, mod_gradient=mod_gradient)
            outputs, h = tf.compat.v1.nn.dynamic_rnn(
                cell, (tf.constant(times, time_dtype), tf.constant(x)), dtype=tf.float64)
            loss = tf.reduce_sum(outputs * weights) + tf.reduce_sum(h * h)
            variables = gru_variables(cell)
            self.assertLen(variables, len(gru_ref.GRU_PARAM_NAMES))
            grads = dict(zip(variables, tf.gradients(loss, list(variables.values()))))
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                load_gru_params(sess, cell, params)
                analytic = sess.run(grads)
        numeric = ref.gradient_reference(
            gru_ref.phased_gru_step, params, times, x, (np.zeros((BATCH, UNITS)),),
            lambda out, state: np.sum(out * weights) + np.sum(state[0] ** 2), mod_gradient,
            leak=0.001)
        for key in gru_ref.GRU_PARAM_NAMES:
            self.assertGreater(np.abs(analytic[key]).max(), 1e-6, msg=key)
            self.assertAllClose(analytic[key], numeric[key], rtol=1e-5, atol=1e-7, msg=key)
        return analytic

    def test_gradients_follow_tf1_rule_by_default_and_exact_on_request(self):
        tf1 = self._gradients_against_reference("tf1")
        exact = self._gradients_against_reference("exact")
        # They differ only in the period's gradient, by more than its size under TF 1.x's rule.
        self.assertGreater(np.abs(tf1["period"] - exact["period"]).max(),
                           np.abs(tf1["period"]).max())
        self.assertEqual(PhasedGRUCell(4).time_gate.mod_gradient, "tf1")

    def test_integer_time_matches_the_reference_with_its_gradients(self):
        # TF 1.x-style integer time, cast to float64: exact timing, and the timing variables
        # keep their gradients.
        self._gradients_against_reference("tf1", time_dtype=tf.int32)

    def test_time_per_unit_matches_the_reference(self):
        rng = np.random.default_rng(9)
        params = gru_ref.random_phased_gru_params(rng, INPUT_SIZE, UNITS)
        times, x = _inputs(rng)
        per_unit = times + rng.uniform(0, 10, (1, 1, UNITS))
        outputs, h = self._run_dynamic(params, per_unit, x, time_dtype=tf.float64)
        want_outputs, (want_h,) = _reference(params, per_unit, x)
        self.assertAllClose(outputs, want_outputs, atol=2e-5, rtol=1e-5)
        self.assertAllClose(h, want_h, atol=2e-5, rtol=1e-5)
        self.assertGreater(np.abs(outputs - _reference(params, times, x)[0]).max(), 1e-3)

    def test_period_bounds_may_be_scalar_tensors_in_a_graph(self):
        with tf.Graph().as_default():
            low = tf.compat.v1.placeholder(tf.float32, [])
            cell = PhasedGRUCell(300, period_init_min=low, period_init_max=tf.constant(6.0))
            tf.compat.v1.nn.dynamic_rnn(cell, (tf.zeros([1, 2, 1]), tf.zeros([1, 2, 1])),
                                        dtype=tf.float32)
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer(), {low: 4.0})
                period = sess.run(cell.time_gate.period)
                with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                            "period_init_min must be > 0"):
                    sess.run(tf.compat.v1.global_variables_initializer(), {low: 0.0})
        self.assertAllInRange(period, 4.0 * (1 - 1e-6), 6.0 * (1 + 1e-6))

    def test_variable_names_shapes_and_initial_biases(self):
        with tf.Graph().as_default():
            cell = PhasedGRUCell(UNITS)
            tf.compat.v1.nn.dynamic_rnn(cell, (tf.zeros([2, 4, 1]), tf.zeros([2, 4, INPUT_SIZE])),
                                        dtype=tf.float32)
            variables = tf.compat.v1.global_variables()
            shapes = {v.name: v.shape.as_list() for v in variables}
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                values = sess.run({v.name: v for v in variables})
        prefix = "rnn/phased_gru_cell/"
        self.assertEqual(shapes, {
            prefix + "gates/kernel:0": [INPUT_SIZE + UNITS, 2 * UNITS],
            prefix + "gates/bias:0": [2 * UNITS],
            prefix + "candidate/kernel:0": [INPUT_SIZE + UNITS, UNITS],
            prefix + "candidate/bias:0": [UNITS],
            prefix + "period:0": [UNITS],
            prefix + "phase:0": [UNITS],
            prefix + "ratio_on:0": [UNITS],
        })
        self.assertAllEqual(values[prefix + "gates/bias:0"], np.ones(2 * UNITS))
        self.assertAllEqual(values[prefix + "candidate/bias:0"], np.zeros(UNITS))
        self.assertAllClose(values[prefix + "ratio_on:0"], np.full(UNITS, 0.1))
        period, phase = values[prefix + "period:0"], values[prefix + "phase:0"]
        self.assertAllInRange(period, 1.0, 1000.0)
        self.assertTrue(np.all((phase >= 0) & (phase < period)))

    def test_matches_tf_gru_cell_when_the_gate_is_always_open(self):
        # A period far longer than the sequence, phase 0 and ratio_on 1: k = 2 t / tau at step t,
        # so with t = tau / 2 at every step (times all equal), k = 1 and the cell is a GRU.
        rng = np.random.default_rng(6)
        _, x = _inputs(rng)
        with tf.Graph().as_default():
            cell = PhasedGRUCell(UNITS, ratio_on=1.0,
                                 period_initializer=tf.compat.v1.constant_initializer(100.0),
                                 phase_initializer=tf.compat.v1.zeros_initializer())
            x_t = tf.constant(x, tf.float32)
            phased, _ = tf.compat.v1.nn.dynamic_rnn(
                cell, (tf.fill([BATCH, STEPS, 1], 50.0), x_t), dtype=tf.float32, scope="phased")
            with warnings.catch_warnings():  # deprecated in favour of Keras', but TF 1.x's
                warnings.simplefilter("ignore")
                gru = tf.compat.v1.nn.rnn_cell.GRUCell(UNITS)
            plain, _ = tf.compat.v1.nn.dynamic_rnn(gru, x_t, dtype=tf.float32, scope="plain")
            copy = [tf.compat.v1.assign(a, b) for a, b in zip(gru.weights, cell.weights[:4])]
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                sess.run(copy)
                phased, plain = sess.run((phased, plain))
        self.assertEqual([w.name.split("/", 2)[-1] for w in gru.weights],
                         [w.name.split("/", 2)[-1] for w in cell.weights[:4]])
        self.assertAllClose(phased, plain, atol=1e-6)

    def test_stacked_with_a_phased_lstm_cell(self):
        rng = np.random.default_rng(7)
        times, x = _inputs(rng)
        lower = gru_ref.random_phased_gru_params(rng, INPUT_SIZE, UNITS)
        upper = ref.random_phased_lstm_params(rng, UNITS, 4, True)
        with tf.Graph().as_default():
            cells = [PhasedGRUCell(UNITS), PhasedLSTMCell(4, use_peepholes=True)]
            outputs, (h_gru, (c_lstm, h_lstm)) = tf.compat.v1.nn.dynamic_rnn(
                PhasedMultiRNNCell(cells),
                (tf.constant(times, tf.float32), tf.constant(x, tf.float32)), dtype=tf.float32)
            names = [v.name for v in tf.compat.v1.global_variables()]
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                load_gru_params(sess, cells[0], lower)
                load_params(sess, cells[1], upper)
                outputs, h_gru, c_lstm = sess.run((outputs, h_gru, c_lstm))
        self.assertLen(names, 7 + 9)
        self.assertIn("rnn/phased_multi_rnn_cell/cell_0/phased_gru_cell/period:0", names)
        self.assertIn("rnn/phased_multi_rnn_cell/cell_1/phased_lstm_cell/period:0", names)
        hidden, (want_h_gru,) = _reference(lower, times, x)
        want, (want_c, _) = ref.run_sequence(
            ref.phased_lstm_step, upper, times, hidden, (np.zeros((BATCH, 4)),) * 2,
            use_peepholes=True, leak=0.001)
        self.assertAllClose(h_gru, want_h_gru, atol=2e-5)
        self.assertAllClose(outputs, want, atol=3e-5)
        self.assertAllClose(c_lstm, want_c, atol=3e-5)

    def test_timing_parameters_stay_valid_when_training_drives_them_to_zero(self):
        rng = np.random.default_rng(8)
        times, x = _inputs(rng)
        with tf.Graph().as_default():
            cell = PhasedGRUCell(UNITS, period_init_min=0.5, period_init_max=2.0, ratio_on=0.05)
            outputs, _ = tf.compat.v1.nn.dynamic_rnn(
                cell, (tf.constant(times, tf.float32), tf.constant(x, tf.float32)),
                dtype=tf.float32)
            gate = cell.time_gate
            # A loss whose gradient pushes period and ratio_on below zero at every step.
            loss = tf.reduce_mean(outputs) + 100.0 * tf.reduce_sum(gate.period + gate.ratio_on)
            train = tf.compat.v1.train.GradientDescentOptimizer(10.0).minimize(loss)
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                smallest_period = np.inf
                for _ in range(10):
                    sess.run(train)
                    period, ratio_on, out = sess.run((gate.period, gate.ratio_on, outputs))
                    self.assertTrue(np.isfinite(out).all())
                    self.assertAllGreaterEqual(period, MIN_PERIOD)
                    self.assertAllInRange(ratio_on, MIN_RATIO_ON, 1.0)
                    smallest_period = min(smallest_period, period.min())
        # The optimiser did reach the bounds: the projection, not luck, kept them valid.
        self.assertNear(smallest_period, MIN_PERIOD, 1e-9)
        self.assertNear(ratio_on.min(), MIN_RATIO_ON, 1e-9)

    def test_hand_set_invalid_timing_gives_finite_outputs(self):
        rng = np.random.default_rng(9)
        params = gru_ref.random_phased_gru_params(rng, INPUT_SIZE, UNITS)
        params["period"][:3] = [0.0, -1.0, 1e-9]
        params["ratio_on"][:3] = [0.0, -0.5, 3.0]
        times, x = _inputs(rng)
        outputs, h = self._run_dynamic(params, times, x)
        self.assertTrue(np.isfinite(outputs).all() and np.isfinite(h).all())

    def test_trainable_flags_freeze_the_timing(self):
        with tf.Graph().as_default():
            cell = PhasedGRUCell(3, trainable_ratio_on=False, trainable_period=False,
                                 trainable_phase=False)
            tf.compat.v1.nn.dynamic_rnn(cell, (tf.zeros([1, 2, 1]), tf.zeros([1, 2, 1])),
                                        dtype=tf.float32)
            trainable = {v.name.split("/", 2)[-1] for v in tf.compat.v1.trainable_variables()}
            everything = {v.name.split("/")[-1] for v in tf.compat.v1.global_variables()}
        self.assertEqual(trainable, {"gates/kernel:0", "gates/bias:0", "candidate/kernel:0",
                                     "candidate/bias:0"})
        self.assertTrue({"period:0", "phase:0", "ratio_on:0"} <= everything)

    def test_static_rnn_matches_dynamic_rnn(self):
        rng = np.random.default_rng(10)
        times, x = _inputs(rng, steps=8)
        with tf.Graph().as_default():
            cell = PhasedGRUCell(UNITS)
            time_t, x_t = tf.constant(times, tf.float32), tf.constant(x, tf.float32)
            dynamic, _ = tf.compat.v1.nn.dynamic_rnn(cell, (time_t, x_t), dtype=tf.float32)
            static, _ = tf.compat.v1.nn.static_rnn(
                cell, list(zip(tf.unstack(time_t, axis=1), tf.unstack(x_t, axis=1))),
                dtype=tf.float32)
            self.assertLen(tf.compat.v1.global_variables(), 7)  # shared, not duplicated
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                dynamic, static = sess.run((dynamic, tf.stack(static, axis=1)))
        self.assertAllClose(dynamic, static, atol=1e-6)


class BadInputTest(tf.test.TestCase):

    def _call(self, time_shape, features_shape, time_dtype=tf.float32):
        with tf.Graph().as_default():
            cell = PhasedGRUCell(4)
            inputs = (tf.zeros(time_shape, time_dtype), tf.zeros(features_shape))
            cell(inputs, cell.zero_state(2, tf.float32))

    def test_time_must_be_batch_by_one_or_by_units(self):
        for shape in ([2, 2], [2, 1, 1], [2, 4, 1]):
            with self.assertRaisesRegex(
                    ValueError, r"time must have shape \[batch, 1\] \(one timestamp per example\) "
                    r"or \[batch, 4\] \(one per unit\); got shape"):
                self._call(shape, [2, 3])

    def test_features_must_be_rank_two(self):
        with self.assertRaisesRegex(ValueError, r"features must have rank 2"):
            self._call([2, 1], [2, 3, 1])

    def test_time_must_be_numbers(self):
        for dtype in (tf.bool, tf.string):
            with self.assertRaisesRegex(TypeError, r"time must be numbers: a floating tensor .* "
                                        rf"or an integer one .*; got dtype {dtype.name}"):
                self._call([2, 1], [2, 3], dtype)

    def test_inputs_must_be_a_time_features_pair(self):
        with tf.Graph().as_default():
            cell = PhasedGRUCell(4)
            with self.assertRaisesRegex(TypeError, r"PhasedGRUCell expects inputs as a tuple"):
                cell(tf.zeros([2, 3]), cell.zero_state(2, tf.float32))
            with self.assertRaisesRegex(TypeError, r"PhasedGRUCell expects inputs as a tuple"):
                cell.build(tf.TensorShape([2, 3]))

    def test_bad_constructor_arguments(self):
        cases = [
            (dict(num_units=0), r"num_units must be an integer >= 1; got 0"),
            (dict(num_units=4.0), r"num_units must be an integer >= 1; got 4.0"),
            (dict(num_units=4, ratio_on=0.0), r"ratio_on must be in \(0, 1\]; got 0.0"),
            (dict(num_units=4, ratio_on=1.5), r"ratio_on must be in \(0, 1\]; got 1.5"),
            (dict(num_units=4, period_init_min=0.0), r"period_init_min must be > 0"),
            (dict(num_units=4, period_init_min=10.0, period_init_max=5.0),
             r"period_init_max must be >= period_init_min \(10.0\); got 5.0"),
            (dict(num_units=4, leak=-0.1), r"leak must be >= 0"),
        ]
        for kwargs, message in cases:
            with self.assertRaisesRegex(ValueError, message):
                PhasedGRUCell(**kwargs)


if __name__ == "__main__":
    tf.test.main()
