"""Event-driven (open units only) inference against dense inference with leak 0."""

import numpy as np

import numpy_reference as ref
from phased_lstm import PhasedLSTMCell, tf
from phased_lstm.event_rnn import event_driven_phased_lstm, open_units
from phased_lstm.fast_rnn import phased_lstm_rnn
from tf_helpers import load_params


class EventDrivenTest(tf.test.TestCase):

    def _sparse_and_dense(self, params, units, times, x, sequence_length=None, state=None,
                          time_dtype=tf.float32, **cell_kwargs):
        with tf.Graph().as_default():
            cell = PhasedLSTMCell(units, leak=0.0, **cell_kwargs)
            time_t, x_t = tf.constant(times, time_dtype), tf.constant(x, tf.float32)
            if state is not None:
                state = tf.compat.v1.nn.rnn_cell.LSTMStateTuple(
                    *(tf.constant(s, tf.float32) for s in state))
            dense = phased_lstm_rnn(cell, time_t, x_t, sequence_length, initial_state=state)
            sparse = event_driven_phased_lstm(cell, time_t, x_t, state, sequence_length,
                                              return_sequences=True)
            _, counts, _ = open_units(cell, time_t, sequence_length, x.shape[1])
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                if params is not None:
                    load_params(sess, cell, params)
                return sess.run((dense, sparse, counts))

    def _assert_equal_paths(self, dense, sparse):
        (dense_out, (dense_c, dense_h)), (sparse_out, (sparse_c, sparse_h)) = dense, sparse
        self.assertAllClose(sparse_out, dense_out, atol=1e-5, rtol=1e-5)
        self.assertAllClose(sparse_c, dense_c, atol=1e-5, rtol=1e-5)
        self.assertAllClose(sparse_h, dense_h, atol=1e-5, rtol=1e-5)

    def test_random_models_with_shared_and_per_sample_times(self):
        rng = np.random.default_rng(0)
        batch, steps, units = 6, 40, 8
        params = ref.random_phased_lstm_params(rng, 2, units, False)
        params["ratio_on"] = np.full(units, 0.2)
        x = rng.normal(size=(batch, steps, 2))
        shared = np.arange(steps, dtype=np.float64)[None, :, None] * 0.7
        per_sample = ref.random_times(rng, batch, steps)
        state = tuple(rng.normal(size=(batch, units)) for _ in range(2))
        for times in (shared, per_sample):
            dense, sparse, counts = self._sparse_and_dense(params, units, times, x, state=state)
            self._assert_equal_paths(dense, sparse)
            self.assertLess(counts.mean(), units)  # some units were skipped
        dense, sparse, _ = self._sparse_and_dense(params, units, per_sample, x,
                                                  sequence_length=[40, 3, 17, 1, 39, 40])
        self._assert_equal_paths(dense, sparse)

    def test_integer_and_per_unit_time(self):
        # TF 1.x's cell took both. Per unit, each unit opens at its own times: the open set of a
        # step is still the units open for some example, and the result still exact.
        rng = np.random.default_rng(2)
        batch, steps, units = 5, 40, 8
        params = ref.random_phased_lstm_params(rng, 2, units, False)
        params["ratio_on"] = np.full(units, 0.2)
        x = rng.normal(size=(batch, steps, 2))
        times = ref.random_times(rng, batch, steps)
        cases = [(np.round(times * 3), tf.int32),
                 (times + rng.uniform(0, 20, (1, 1, units)), tf.float64),
                 (np.arange(steps)[None, :, None] + rng.uniform(0, 20, (1, 1, units)),
                  tf.float64)]  # per unit, shared by the batch
        for case_times, dtype in cases:
            dense, sparse, counts = self._sparse_and_dense(params, units, case_times, x,
                                                           sequence_length=[40, 3, 17, 1, 39],
                                                           time_dtype=dtype)
            self._assert_equal_paths(dense, sparse)
            self.assertLess(counts.mean(), units)
        want, _ = ref.run_sequence(ref.phased_lstm_step, params, cases[1][0], x,
                                   (np.zeros((batch, units)),) * 2, [40, 3, 17, 1, 39],
                                   use_peepholes=False, leak=0.0)
        dense, sparse, _ = self._sparse_and_dense(params, units, cases[1][0], x,
                                                  sequence_length=[40, 3, 17, 1, 39],
                                                  time_dtype=tf.float64)
        self.assertAllClose(sparse[0], want, atol=2e-5)

    def test_time_of_another_last_dimension_is_refused(self):
        with tf.Graph().as_default():
            cell = PhasedLSTMCell(4)
            with self.assertRaisesRegex(ValueError, r"\[batch or 1, steps, 1\] \(one timestamp "
                                        r"per example\) or \[batch or 1, steps, 4\] \(one per "
                                        r"unit\); got shape \(2, 3, 3\)"):
                event_driven_phased_lstm(cell, tf.zeros([2, 3, 3]), tf.zeros([2, 3, 1]))

    def test_mnist_shaped_model_with_mnist_initialisation(self):
        rng = np.random.default_rng(1)
        x = rng.uniform(size=(16, 784, 1))
        times = np.arange(784, dtype=np.float32)[None, :, None]
        dense, sparse, counts = self._sparse_and_dense(None, 32, times, x, ratio_on=0.05)
        self._assert_equal_paths(dense, sparse)
        # With r_on = 0.05 about 5% of the units are open at a step (k > 0 on the open ramp).
        self.assertBetween(counts.mean() / 32, 0.02, 0.09)

    def test_peepholes_are_refused_with_the_alternative(self):
        with tf.Graph().as_default():
            cell = PhasedLSTMCell(4, use_peepholes=True)
            with self.assertRaisesRegex(ValueError, r"without peepholes.*phased_lstm_rnn"):
                event_driven_phased_lstm(cell, tf.zeros([1, 3, 1]), tf.zeros([2, 3, 1]))


if __name__ == "__main__":
    tf.test.main()
