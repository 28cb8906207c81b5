"""PhasedLSTMCell against the float64 NumPy reference, finite differences and its contract.

What it promises as PhasedGRUCell does is tested once for both in test_phased_cells.py.
"""

import math
import subprocess
import sys

import numpy as np

import numpy_reference as ref
from phased_lstm import PhasedLSTMCell, tf
from tf_helpers import load_params, variable_gradients

BATCH, STEPS, INPUT_SIZE, UNITS = 5, 30, 3, 6


def _inputs(rng, start=0.0, batch=BATCH, steps=STEPS):
    return ref.random_times(rng, batch, steps, start), rng.normal(size=(batch, steps, INPUT_SIZE))


def _reference(params, times, x, peep, leak=0.001, sequence_length=None):
    zeros = np.zeros((x.shape[0], params["output_gate/bias"].shape[0]))
    return ref.run_sequence(ref.phased_lstm_step, params, times, x, (zeros, zeros),
                            sequence_length, use_peepholes=peep, leak=leak)


class PhasedLSTMCellTest(tf.test.TestCase):

    def _run_dynamic(self, params, times, x, peep, time_dtype=tf.float32, dtype=tf.float32,
                     sequence_length=None, leak=0.001, feed_leak=None):
        with tf.Graph().as_default():
            leak_t = tf.compat.v1.placeholder_with_default(tf.constant(leak, dtype), [])
            cell = PhasedLSTMCell(UNITS, use_peepholes=peep, leak=leak_t, dtype=dtype)
            outputs, state = tf.compat.v1.nn.dynamic_rnn(
                cell, (tf.constant(times, time_dtype), tf.constant(x, dtype)), dtype=dtype,
                sequence_length=sequence_length)
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                load_params(sess, cell, params)
                feed = {} if feed_leak is None else {leak_t: feed_leak}
                return sess.run((outputs, state), feed)

    def test_matches_numpy_reference_with_per_sample_times(self):
        rng = np.random.default_rng(0)
        worst = 0.0
        for peep in (False, True):
            params = ref.random_phased_lstm_params(rng, INPUT_SIZE, UNITS, peep)
            times, x = _inputs(rng)
            outputs, (c, h) = self._run_dynamic(params, times, x, peep)
            want_outputs, (want_c, want_h) = _reference(params, times, x, peep)
            self.assertAllClose(outputs, want_outputs, atol=2e-5, rtol=1e-5)
            self.assertAllClose(c, want_c, atol=2e-5, rtol=1e-5)
            self.assertAllClose(h, want_h, atol=2e-5, rtol=1e-5)
            worst = max(worst, np.abs(outputs - want_outputs).max(), np.abs(c - want_c).max())
        print(f"largest deviation from the NumPy reference (float32 cell): {worst:.2e}")

    def _gradients_against_reference(self, use_peepholes, mod_gradient, time_dtype=tf.float64):
        """Every variable's gradient under dynamic_rnn against the NumPy reference's.

        With an integer time_dtype the timestamps are whole numbers fed as integers.
        """
        rng = np.random.default_rng(5)
        steps = 12
        params = ref.random_phased_lstm_params(rng, INPUT_SIZE, UNITS, use_peepholes)
        times, x = _inputs(rng, steps=steps)
        if time_dtype.is_integer:
            times = np.round(times * 3)
        weights = rng.normal(size=(BATCH, steps, UNITS))
        with tf.Graph().as_default():
            cell = PhasedLSTMCell(UNITS, use_peepholes=use_peepholes, dtype=tf.float64,
                                  mod_gradient=mod_gradient)
            outputs, (c, _) = tf.compat.v1.nn.dynamic_rnn(
                cell, (tf.constant(times, time_dtype), tf.constant(x)), dtype=tf.float64)
            loss = tf.reduce_sum(outputs * weights) + tf.reduce_sum(c)
            analytic = variable_gradients(cell, loss, params)
        zeros = np.zeros((BATCH, UNITS))
        numeric = ref.gradient_reference(
            ref.phased_lstm_step, params, times, x, (zeros, zeros),
            lambda out, state: np.sum(out * weights) + np.sum(state[0]), mod_gradient,
            use_peepholes=use_peepholes, leak=0.001)
        self.assertCountEqual(analytic, ref.PARAM_NAMES)
        for key in ref.PARAM_NAMES:
            self.assertAllClose(analytic[key], numeric[key], rtol=1e-5, atol=1e-7, msg=key)
        return analytic

    def test_gradients_follow_tf1_rule_by_default(self):
        for peep in (False, True):
            tf1 = self._gradients_against_reference(peep, "tf1")
            exact = self._gradients_against_reference(peep, "exact")
            # The rules differ only in the period's gradient, and by far there (many wraps).
            for key in ref.PARAM_NAMES:
                if key != "period":
                    self.assertAllClose(tf1[key], exact[key], rtol=1e-9, atol=1e-12, msg=key)
            self.assertGreater(np.abs(tf1["period"] - exact["period"]).max(),
                               10 * np.abs(tf1["period"]).max())
        self.assertEqual(PhasedLSTMCell(4).time_gate.mod_gradient, "tf1")

    def test_integer_time_matches_the_reference_with_its_gradients(self):
        # Cast to float64, integer time keeps the timing exact and its gradients (TF 1.x
        # truncated the period and phase to integers and cut their gradients).
        for dtype in (tf.int32, tf.int64):
            for peep in (False, True):
                self._gradients_against_reference(peep, "tf1", time_dtype=dtype)

    def test_variable_names_and_shapes_are_those_of_tf1(self):
        for peep, gate_rows in ((False, INPUT_SIZE + UNITS), (True, INPUT_SIZE + 2 * UNITS)):
            with tf.Graph().as_default():
                cell = PhasedLSTMCell(UNITS, use_peepholes=peep)
                tf.compat.v1.nn.dynamic_rnn(cell, (tf.zeros([2, 4, 1]), tf.zeros([2, 4, INPUT_SIZE])),
                                            dtype=tf.float32)
                shapes = {v.name: v.shape.as_list() for v in tf.compat.v1.global_variables()}
            prefix = "rnn/phased_lstm_cell/"
            self.assertEqual(shapes, {
                prefix + "mask_gates/kernel:0": [gate_rows, 2 * UNITS],
                prefix + "mask_gates/bias:0": [2 * UNITS],
                prefix + "new_input/kernel:0": [INPUT_SIZE + UNITS, UNITS],
                prefix + "new_input/bias:0": [UNITS],
                prefix + "output_gate/kernel:0": [gate_rows, UNITS],
                prefix + "output_gate/bias:0": [UNITS],
                prefix + "period:0": [UNITS],
                prefix + "phase:0": [UNITS],
                prefix + "ratio_on:0": [UNITS],
            })

    def test_build_for_creates_the_variables_dynamic_rnn_would(self):
        for dtype in (tf.float32, tf.float64):
            with tf.Graph().as_default():
                cell = PhasedLSTMCell(UNITS, use_peepholes=True)
                with tf.compat.v1.variable_scope("rnn"):
                    cell.build_for(INPUT_SIZE, dtype)
                built = {v.name: v.shape.as_list() for v in cell.weights}
                self.assertEqual(cell.dtype, dtype.name)
                # dynamic_rnn then reuses them: no variable is added.
                tf.compat.v1.nn.dynamic_rnn(cell, (tf.zeros([2, 4, 1]),
                                                   tf.zeros([2, 4, INPUT_SIZE], dtype)), dtype=dtype)
                self.assertLen(tf.compat.v1.global_variables(), len(built))
            with tf.Graph().as_default():
                other = PhasedLSTMCell(UNITS, use_peepholes=True)
                tf.compat.v1.nn.dynamic_rnn(other, (tf.zeros([2, 4, 1]),
                                                    tf.zeros([2, 4, INPUT_SIZE], dtype)), dtype=dtype)
                self.assertEqual({v.name: v.shape.as_list() for v in other.weights}, built)

    def test_packed_weights_put_the_gates_side_by_side(self):
        rng = np.random.default_rng(8)
        params = ref.random_phased_lstm_params(rng, INPUT_SIZE, UNITS, True)
        with tf.Graph().as_default():
            cell = PhasedLSTMCell(UNITS, use_peepholes=True)
            cell.build_for(INPUT_SIZE, tf.float32)
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                load_params(sess, cell, params)
                (kernel, bias), (c_to_if, c_to_o) = sess.run(
                    (cell.packed_weights(), cell.peephole_weights()))
        rows = INPUT_SIZE + UNITS
        mask, out = params["mask_gates/kernel"], params["output_gate/kernel"]
        self.assertAllClose(kernel, np.concatenate(
            [mask[:rows], out[:rows], params["new_input/kernel"]], axis=1))  # [i, f, o, j]
        self.assertAllClose(bias, np.concatenate(
            [params["mask_gates/bias"], params["output_gate/bias"], params["new_input/bias"]]))
        self.assertAllClose(c_to_if, mask[rows:])
        self.assertAllClose(c_to_o, out[rows:])
        with tf.Graph().as_default():
            cell = PhasedLSTMCell(UNITS)
            cell.build_for(INPUT_SIZE, tf.float32)
            with self.assertRaisesRegex(ValueError, "no peepholes"):
                cell.peephole_weights()

    def test_restores_a_checkpoint_written_with_tf1_variable_names(self):
        rng = np.random.default_rng(6)
        params = ref.random_phased_lstm_params(rng, INPUT_SIZE, UNITS, True)
        path = self.get_temp_dir() + "/tf1"
        with tf.Graph().as_default():  # the layout TF 1.x's contrib cell wrote
            for key, value in params.items():
                tf.compat.v1.get_variable("rnn/phased_lstm_cell/" + key,
                                          initializer=value.astype(np.float32))
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                tf.compat.v1.train.Saver().save(sess, path)
        times, x = _inputs(rng)
        with tf.Graph().as_default():
            cell = PhasedLSTMCell(UNITS, use_peepholes=True)
            outputs, _ = tf.compat.v1.nn.dynamic_rnn(
                cell, (tf.constant(times, tf.float32), tf.constant(x, tf.float32)),
                dtype=tf.float32)
            with tf.compat.v1.Session() as sess:
                tf.compat.v1.train.Saver().restore(sess, path)
                restored = sess.run(outputs)
        self.assertAllClose(restored, _reference(params, times, x, True)[0], atol=2e-5)

    def test_initialisers_build_each_known_variant(self):
        n = 4000
        uniform = tf.compat.v1.random_uniform_initializer
        variants = {  # name: (cell, log-period range, phase upper bound or None (= period), r_on)
            "tf1": (PhasedLSTMCell(n), (0.0, math.log(1000.0)), None, 0.1),
            "seed_repo": (PhasedLSTMCell(n, use_peepholes=True, ratio_on=0.05,
                                         period_init_max=math.exp(6.0)), (0.0, 6.0), None, 0.05),
            "keras_seed": (PhasedLSTMCell(n, ratio_on=0.05, period_initializer=uniform(10., 100.),
                                          phase_initializer=uniform(0., 1000.)),
                           (math.log(10.), math.log(100.)), 1000.0, 0.05),
            "authors_frequency": (PhasedLSTMCell(n, use_peepholes=True, ratio_on=0.05,
                                                 period_init_min=math.e,
                                                 period_init_max=math.exp(3.0),
                                                 phase_initializer=uniform(0., 100.)),
                                  (1.0, 3.0), 100.0, 0.05),
        }
        for name, (cell, (log_low, log_high), phase_max, ratio_on) in variants.items():
            with tf.Graph().as_default():
                tf.compat.v1.set_random_seed(0)  # the bounds below hold for any seed but a rare few
                tf.compat.v1.nn.dynamic_rnn(cell, (tf.zeros([1, 1, 1]), tf.zeros([1, 1, 1])),
                                            dtype=tf.float32)
                with tf.compat.v1.Session() as sess:
                    sess.run(tf.compat.v1.global_variables_initializer())
                    period, phase, r_on = sess.run(
                        (cell.time_gate.period, cell.time_gate.phase, cell.time_gate.ratio_on))
            log_period = np.log(period)
            self.assertAllInRange(log_period, log_low - 1e-5, log_high + 1e-5)
            spread = log_high - log_low
            self.assertLess(log_period.min(), log_low + 0.01 * spread, msg=name)
            self.assertGreater(log_period.max(), log_high - 0.01 * spread, msg=name)
            self.assertAllGreaterEqual(phase, 0.0)
            # Each unit's phase is uniform on [0, its period) or on [0, phase_max): with 4,000
            # units, the largest fraction is below 0.99 with probability 0.99^4000 ~ 3e-18.
            fraction = phase / (period if phase_max is None else phase_max)
            self.assertAllInRange(fraction, 0.0, 1.0, open_upper_bound=True)
            self.assertGreater(fraction.max(), 0.99, msg=name)
            self.assertNear(fraction.mean(), 0.5, 0.05, msg=name)
            self.assertAllClose(r_on, np.full(n, ratio_on))
            if name != "keras_seed":  # that one is uniform, the others log-uniform
                self.assertNear(log_period.mean(), (log_low + log_high) / 2, 0.05 * spread, name)

    def test_trains_under_dynamic_rnn(self):
        rng = np.random.default_rng(11)
        x = rng.normal(size=(64, 20, 1)).astype(np.float32)
        labels = (x.sum(axis=(1, 2)) > 0).astype(np.int32)
        times = np.tile(np.arange(20, dtype=np.float32)[None, :, None], (64, 1, 1))
        with tf.Graph().as_default():
            tf.compat.v1.set_random_seed(0)
            outputs, _ = tf.compat.v1.nn.dynamic_rnn(
                PhasedLSTMCell(16, period_init_max=20.0, ratio_on=0.5), (times, x),
                dtype=tf.float32)
            logits = tf.compat.v1.layers.dense(outputs[:, -1], 2)
            loss = tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, logits)
            train = tf.compat.v1.train.AdamOptimizer(1e-2).minimize(loss)
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                first = sess.run(loss)
                for _ in range(150):
                    sess.run(train)
                last = sess.run(loss)
        self.assertLess(last, 0.5 * first)


class TF1InputsTest(tf.test.TestCase):
    """Inputs TF 1.x's cell ran on: integer time, time per unit, tensor period bounds."""

    def test_integer_time_as_a_seq2seq_script_feeds_it(self):
        # The call, eagerly: tf.range as the time, as TF 1.x ran it.
        cell = PhasedLSTMCell(4, period_init_max=3.0, ratio_on=0.5)
        state = cell.zero_state(3, tf.float32)
        features = tf.ones([3, 2])
        output, (c, h) = cell((tf.expand_dims(tf.range(1, 4), 1), features), state)
        want, _ = cell((tf.constant([[1.0], [2.0], [3.0]], tf.float64), features), state)
        self.assertEqual(output.dtype, tf.float32)
        self.assertAllEqual(output, want)
        self.assertGreater(np.abs(output).max(), 1e-3)

    def test_integer_time_under_static_rnn_and_the_multi_cell(self):
        rng = np.random.default_rng(12)
        params = ref.random_phased_lstm_params(rng, INPUT_SIZE, UNITS, False)
        times, x = _inputs(rng, steps=6)
        times = np.round(times * 3)
        want = _reference(params, times, x, False)[0]
        with tf.Graph().as_default():
            cell = PhasedLSTMCell(UNITS)
            steps = [(tf.constant(times[:, s], tf.int32), tf.constant(x[:, s], tf.float32))
                     for s in range(6)]
            outputs, _ = tf.compat.v1.nn.static_rnn(cell, steps, dtype=tf.float32)
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                load_params(sess, cell, params)
                outputs = sess.run(outputs)
        self.assertAllClose(np.stack(outputs, axis=1), want, atol=2e-5, rtol=1e-5)

    def test_time_per_unit_matches_the_reference(self):
        rng = np.random.default_rng(13)
        for peep in (False, True):
            params = ref.random_phased_lstm_params(rng, INPUT_SIZE, UNITS, peep)
            times, x = _inputs(rng)
            per_unit = times + rng.uniform(0, 10, (1, 1, UNITS))  # each unit its own offset
            outputs, (c, h) = self._run(params, per_unit, x, peep)
            want_outputs, (want_c, want_h) = _reference(params, per_unit, x, peep)
            self.assertAllClose(outputs, want_outputs, atol=2e-5, rtol=1e-5)
            self.assertAllClose(c, want_c, atol=2e-5, rtol=1e-5)
            # Not what one timestamp per example gives: the offsets matter.
            self.assertGreater(np.abs(outputs - _reference(params, times, x, peep)[0]).max(),
                               1e-3)

    def _run(self, params, times, x, peep):
        with tf.Graph().as_default():
            cell = PhasedLSTMCell(UNITS, use_peepholes=peep)
            result = tf.compat.v1.nn.dynamic_rnn(
                cell, (tf.constant(times, tf.float64), tf.constant(x, tf.float32)),
                dtype=tf.float32)
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                load_params(sess, cell, params)
                return sess.run(result)

    def test_timing_arguments_may_be_scalar_tensors_in_a_graph(self):
        # TF 1.x's docstring: period_init_min, period_init_max and ratio_on are each a "float or
        # scalar float Tensor". A constant is checked at once; a placeholder when the
        # initialisers run.
        with tf.Graph().as_default():
            tf.compat.v1.set_random_seed(1)
            low = tf.compat.v1.placeholder_with_default(tf.constant(5.0), [])
            ratio_on = tf.compat.v1.placeholder_with_default(tf.constant(0.2), [])
            cells = [PhasedLSTMCell(500, period_init_min=tf.constant(2.0),
                                    period_init_max=tf.constant(4.0),
                                    ratio_on=tf.constant(0.3)),
                     PhasedLSTMCell(500, period_init_min=low, period_init_max=tf.constant(9.0),
                                    ratio_on=ratio_on)]
            for i, cell in enumerate(cells):
                tf.compat.v1.nn.dynamic_rnn(cell, (tf.zeros([1, 2, 1]), tf.zeros([1, 2, 1])),
                                            dtype=tf.float32, scope=f"rnn{i}")
            timing = [(cell.time_gate.period, cell.time_gate.ratio_on) for cell in cells]
            init = tf.compat.v1.global_variables_initializer()
            with tf.compat.v1.Session() as sess:
                sess.run(init)
                (constant, constant_ratio), (fed, fed_ratio) = sess.run(timing)
                sess.run(init, {low: 3.0, ratio_on: 0.05})
                lower, lower_ratio = sess.run(timing[1])
                with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                            "period_init_max must be >= period_init_min"):
                    sess.run(init, {low: 10.0})
                with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                            r"ratio_on must be in \(0, 1\]"):
                    sess.run(init, {ratio_on: 0.0})
            with self.assertRaisesRegex(ValueError, "period_init_min must be > 0; got 0.0"):
                PhasedLSTMCell(4, period_init_min=tf.constant(0.0))
            with self.assertRaisesRegex(ValueError, r"ratio_on must be in \(0, 1\]; got 2.0"):
                PhasedLSTMCell(4, ratio_on=tf.constant(2.0))
        self.assertAllInRange(constant, 2.0, 4.0 * (1 + 1e-6))
        self.assertAllInRange(fed, 5.0, 9.0 * (1 + 1e-6))
        self.assertLess(lower.min(), 5.0)  # the fed bound, not the default, was used
        self.assertAllClose(constant_ratio, np.full(500, 0.3))
        self.assertAllClose(fed_ratio, np.full(500, 0.2))
        self.assertAllClose(lower_ratio, np.full(500, 0.05))


def _python(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)


class ImportOrderTest(tf.test.TestCase):

    def test_works_after_tensorflow_and_keras3_were_imported_first(self):
        result = _python(
            "import os; os.environ.pop('TF_USE_LEGACY_KERAS', None)\n"
            "import tensorflow as tf; tf.keras.layers.Dense  # binds tf.keras to Keras 3\n"
            "import phased_lstm\n"
            "with tf.Graph().as_default():\n"
            "    out, _ = tf.compat.v1.nn.dynamic_rnn(phased_lstm.PhasedLSTMCell(2),\n"
            "        (tf.zeros([1, 3, 1]), tf.zeros([1, 3, 1])), dtype=tf.float32)\n"
            "    print('shape', out.shape)\n")
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        self.assertIn("shape (1, 3, 2)", result.stdout)

    def test_missing_tf_keras_names_the_install_command(self):
        # `import phased_lstm` alone loads no TF 1.x part (a Keras 3 user needs no tf-keras).
        result = _python("import sys; sys.modules['tf_keras'] = None\n"
                         "from phased_lstm import PhasedLSTMCell\n")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("pip install 'tf-keras~=", result.stderr)


if __name__ == "__main__":
    tf.test.main()
