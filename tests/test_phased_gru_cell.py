"""PhasedGRUCell against a float64 NumPy reference, finite differences and its contract.

What it promises as PhasedLSTMCell does is tested once for both in test_phased_cells.py.
"""

import warnings

import numpy as np

import numpy_reference as ref
import numpy_reference_gru as gru_ref
from phased_lstm import PhasedLSTMCell, PhasedMultiRNNCell, tf
from phased_lstm.phased_gru_cell import PhasedGRUCell
from tf_helpers import cell_variables, load_params

BATCH, STEPS, INPUT_SIZE, UNITS = 5, 30, 3, 6


def _inputs(rng, start=0.0, batch=BATCH, steps=STEPS):
    return ref.random_times(rng, batch, steps, start), rng.normal(size=(batch, steps, INPUT_SIZE))


def _reference(params, times, x, leak=0.001, sequence_length=None):
    zeros = np.zeros((x.shape[0], params["candidate/bias"].shape[0]))
    return ref.run_sequence(gru_ref.phased_gru_step, params, times, x, (zeros,), sequence_length,
                            leak=leak)


def gru_variables(cell):
    """The cell's variables keyed by their names ("gates/kernel", "period", ...)."""
    return cell_variables(cell, gru_ref.GRU_PARAM_NAMES)


def load_gru_params(sess, cell, params):
    """Assigns NumPy values to the cell's variables (no constraint is applied)."""
    load_params(sess, cell, params, gru_ref.GRU_PARAM_NAMES)


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

if __name__ == "__main__":
    tf.test.main()
