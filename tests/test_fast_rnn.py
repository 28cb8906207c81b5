"""phased_lstm_rnn against dynamic_rnn over the same PhasedLSTMCell, and the NumPy reference."""

from unittest import mock

import numpy as np

import numpy_reference as ref
from phased_lstm import PhasedLSTMCell, tf
from phased_lstm.fast_rnn import (describe_path, fused_kernel_available, phased_lstm_rnn,
                                   runs_fused_kernel)
from tf_helpers import load_params, variable_gradients

BATCH, STEPS, INPUT_SIZE, UNITS = 4, 25, 3, 5


class PhasedLSTMRnnTest(tf.test.TestCase):

    def _both_paths(self, peep, times, x, sequence_length=None, time_dtype=tf.float32,
                    initial_state=None, fused=None):
        """Outputs, final states and gradients of every variable and the inputs, both ways.

        `fused` is phased_lstm_rnn's: None runs the fused kernel where it is available.
        """
        rng = np.random.default_rng(0)
        params = ref.random_phased_lstm_params(rng, INPUT_SIZE, UNITS, peep)
        weights = rng.normal(size=(BATCH, x.shape[1], UNITS))
        results = []
        for fast in (False, True):
            with tf.Graph().as_default():
                cell = PhasedLSTMCell(UNITS, use_peepholes=peep)
                time_t = tf.constant(times, time_dtype)
                x_t = tf.constant(x, tf.float32)
                state = None if initial_state is None else tf.compat.v1.nn.rnn_cell.LSTMStateTuple(
                    *(tf.constant(s, tf.float32) for s in initial_state))
                if fast:
                    outputs, (c, h) = phased_lstm_rnn(cell, time_t, x_t, sequence_length,
                                                      initial_state=state, fused=fused)
                    self.assertEqual(outputs.shape.as_list(), [BATCH, x.shape[1], UNITS])
                else:
                    outputs, (c, h) = tf.compat.v1.nn.dynamic_rnn(
                        cell, (time_t, x_t), sequence_length, initial_state=state,
                        dtype=tf.float32)
                loss = tf.reduce_sum(outputs * weights) + tf.reduce_sum(c * c) + tf.reduce_sum(h)
                names = [v.name for v in cell.weights]
                grads = tf.gradients(loss, cell.weights + [x_t])
                with tf.compat.v1.Session() as sess:
                    sess.run(tf.compat.v1.global_variables_initializer())
                    load_params(sess, cell, params)
                    results.append((names,) + sess.run((outputs, c, h, grads)))
        return results, params

    def _assert_same(self, results):
        (names_d, out_d, c_d, h_d, g_d), (names_f, out_f, c_f, h_f, g_f) = results
        self.assertEqual(names_d, names_f)  # the same variables: one checkpoint serves both
        self.assertAllClose(out_f, out_d, atol=1e-5, rtol=1e-5)
        self.assertAllClose(c_f, c_d, atol=1e-5, rtol=1e-5)
        self.assertAllClose(h_f, h_d, atol=1e-5, rtol=1e-5)
        for name, want, got in zip(names_d + ["inputs"], g_d, g_f):
            self.assertAllClose(got, want, atol=1e-4, rtol=1e-4, msg=name)

    def test_matches_dynamic_rnn_with_per_sample_times_and_sequence_length(self):
        rng = np.random.default_rng(1)
        times, x = ref.random_times(rng, BATCH, STEPS), rng.normal(size=(BATCH, STEPS, INPUT_SIZE))
        for peep in (False, True):
            results, params = self._both_paths(peep, times, x, sequence_length=[STEPS, 11, 1, 20])
            self._assert_same(results)
            want, _ = ref.run_sequence(ref.phased_lstm_step, params, times, x,
                                       (np.zeros((BATCH, UNITS)),) * 2, [STEPS, 11, 1, 20],
                                       use_peepholes=peep, leak=0.001)
            self.assertAllClose(results[1][1], want, atol=2e-5)

    def test_matches_dynamic_rnn_with_initial_state_and_float64_time(self):
        rng = np.random.default_rng(2)
        times = ref.random_times(rng, BATCH, STEPS, start=1e7)
        x = rng.normal(size=(BATCH, STEPS, INPUT_SIZE))
        state = tuple(rng.normal(size=(BATCH, UNITS)) for _ in range(2))
        results, _ = self._both_paths(True, times, x, time_dtype=tf.float64, initial_state=state)
        self._assert_same(results)

    def test_shared_timestamps_broadcast_over_the_batch(self):
        rng = np.random.default_rng(3)
        x = rng.normal(size=(BATCH, STEPS, INPUT_SIZE)).astype(np.float32)
        shared = np.arange(STEPS, dtype=np.float32)[None, :, None]
        with tf.Graph().as_default():
            cell = PhasedLSTMCell(UNITS, period_init_max=30.0, ratio_on=0.3)
            once, _ = phased_lstm_rnn(cell, shared, x)
            tiled, _ = phased_lstm_rnn(cell, np.tile(shared, (BATCH, 1, 1)), x)
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                once, tiled = sess.run((once, tiled))
        self.assertAllClose(once, tiled, atol=1e-7)

    def test_integer_and_per_unit_time_match_dynamic_rnn_on_both_recurrences(self):
        # TF 1.x's cell ran on integer time and on time [batch, num_units]; the fast path takes
        # both, with and without the fused kernel (which takes the gate k computed from them).
        rng = np.random.default_rng(4)
        times = ref.random_times(rng, BATCH, STEPS)
        x = rng.normal(size=(BATCH, STEPS, INPUT_SIZE))
        cases = [(np.round(times * 3), tf.int32), (np.round(times * 3), tf.int64),
                 (times + rng.uniform(0, 10, (1, 1, UNITS)), tf.float64)]
        for fused in (None, False):
            for case_times, time_dtype in cases:
                for peep in (False, True):
                    results, _ = self._both_paths(peep, case_times, x, [STEPS, 11, 1, 20],
                                                  time_dtype=time_dtype, fused=fused)
                    self._assert_same(results)

    def test_per_unit_time_shared_by_the_batch(self):
        rng = np.random.default_rng(5)
        x = rng.normal(size=(BATCH, STEPS, INPUT_SIZE)).astype(np.float32)
        shared = (np.arange(STEPS, dtype=np.float32)[None, :, None]
                  + rng.uniform(0, 10, (1, 1, UNITS)).astype(np.float32))  # [1, steps, units]
        with tf.Graph().as_default():
            cell = PhasedLSTMCell(UNITS, period_init_max=30.0, ratio_on=0.3)
            outputs = [phased_lstm_rnn(cell, t, x, fused=fused)[0]
                       for t in (shared, np.tile(shared, (BATCH, 1, 1))) for fused in (None, False)]
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                outputs = sess.run(outputs)
        for got in outputs[1:]:
            self.assertAllClose(got, outputs[0], atol=1e-6)

    def test_gradients_follow_tf1_rule_and_exact_on_request(self):
        # Every variable's and the inputs' gradients against the NumPy reference's finite
        # differences (float64), with and without peepholes, per-sample times.
        rng = np.random.default_rng(7)
        steps = 10
        times = ref.random_times(rng, BATCH, steps)
        x = rng.normal(size=(BATCH, steps, INPUT_SIZE))
        weights = rng.normal(size=(BATCH, steps, UNITS))
        for peep in (False, True):
            params = ref.random_phased_lstm_params(rng, INPUT_SIZE, UNITS, peep)
            for mod_gradient in ("tf1", "exact"):
                with tf.Graph().as_default():
                    cell = PhasedLSTMCell(UNITS, use_peepholes=peep, dtype=tf.float64,
                                          mod_gradient=mod_gradient)
                    outputs, (c, h) = phased_lstm_rnn(cell, tf.constant(times), tf.constant(x))
                    loss = tf.reduce_sum(outputs * weights) + tf.reduce_sum(c * c)
                    analytic = variable_gradients(cell, loss, params)
                zeros = np.zeros((BATCH, UNITS))
                numeric = ref.gradient_reference(
                    ref.phased_lstm_step, params, times, x, (zeros, zeros),
                    lambda out, state: np.sum(out * weights) + np.sum(state[0] ** 2),
                    mod_gradient, use_peepholes=peep, leak=0.001)
                for key in ref.PARAM_NAMES:
                    self.assertAllClose(analytic[key], numeric[key], rtol=1e-5, atol=1e-7,
                                        msg=f"{key}, peepholes {peep}, {mod_gradient}")

    def test_runs_fused_kernel_says_which_path_a_cell_takes(self):
        with tf.Graph().as_default():
            plain, peepholes = PhasedLSTMCell(UNITS), PhasedLSTMCell(UNITS, use_peepholes=True)
            for cell in (plain, peepholes):
                cell.build_for(INPUT_SIZE, tf.float32)
            # The fused kernel has the TF 1.x cell's full-matrix peepholes too.
            self.assertEqual(runs_fused_kernel(plain), fused_kernel_available())
            self.assertEqual(runs_fused_kernel(peepholes), fused_kernel_available())
            float16 = PhasedLSTMCell(UNITS, dtype=tf.float16)
            float16.build_for(INPUT_SIZE, tf.float16)
            self.assertFalse(runs_fused_kernel(float16))

    def test_a_recurrence_placed_on_a_gpu_runs_the_tensorflow_loop(self):
        def graph_ops(device, gpus, fused=None):
            with mock.patch.object(tf.config, "get_visible_devices", return_value=gpus), \
                    tf.Graph().as_default() as graph, tf.device(device):
                cell = PhasedLSTMCell(UNITS)
                phased_lstm_rnn(cell, tf.zeros([1, 5, 1]), tf.zeros([2, 5, INPUT_SIZE]),
                                fused=fused)
                runs = runs_fused_kernel(cell)
                description = describe_path(cell)
            return {op.type for op in graph.get_operations()}, runs, description

        gpu = [tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")]
        fused = fused_kernel_available()
        # No device scope: TensorFlow places the loop on the GPU when one is visible.
        for device, gpus, want_fused in ((None, [], fused), (None, gpu, False),
                                         ("/cpu:0", gpu, fused), ("/gpu:0", [], False)):
            ops, runs, description = graph_ops(device, gpus)
            where = f"device {device}, GPUs {gpus}"
            self.assertEqual("PhasedLSTMSequence" in ops, want_fused, msg=where)
            self.assertEqual(runs, want_fused, msg=where)
            self.assertEqual("fused kernel (" in description, want_fused, msg=description)
            if fused and not want_fused:
                self.assertIn("the fused kernel runs on the CPU only", description)
        if fused:  # fused=True is the user's explicit choice, wherever the graph is placed
            self.assertIn("PhasedLSTMSequence", graph_ops("/gpu:0", gpu, fused=True)[0])

    def test_bad_inputs(self):
        with tf.Graph().as_default():
            cell = PhasedLSTMCell(UNITS)
            x = tf.zeros([2, 7, 1])
            cases = [
                ((tf.zeros([2, 7]), x), ValueError,
                 r"time must have shape \[batch or 1, steps, 1\] \(one timestamp per example\) "
                 rf"or \[batch or 1, steps, {UNITS}\] \(one per unit\); got shape \(2, 7\)"),
                ((tf.zeros([2, 7, 2]), x), ValueError, r"time must have shape"),
                ((tf.zeros([2, 7, 1], tf.bool), x), TypeError, r"time must be numbers.*bool"),
                ((tf.zeros([2, 7, 1]), tf.zeros([2, 7])), ValueError,
                 r"inputs must have shape \[batch, steps, input_size\]"),
                ((tf.zeros([2, 6, 1]), x), ValueError, r"same number of steps"),
            ]
            for (time, inputs), error, message in cases:
                with self.assertRaisesRegex(error, message):
                    phased_lstm_rnn(cell, time, inputs)
            with self.assertRaisesRegex(TypeError, r"runs a PhasedLSTMCell; got BasicLSTMCell"):
                phased_lstm_rnn(tf.compat.v1.nn.rnn_cell.BasicLSTMCell(3), tf.zeros([2, 7, 1]), x)


if __name__ == "__main__":
    tf.test.main()
