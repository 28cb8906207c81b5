"""PhasedMultiRNNCell: every phased layer of a stack sees the timestamps."""

import numpy as np

import numpy_reference as ref
from phased_lstm import PhasedLSTMCell, PhasedMultiRNNCell, rnn_cell, tf
from tf_helpers import load_params

BATCH, STEPS, INPUT_SIZE, UNITS = 5, 30, 3, 6


def _inputs(rng):
    return ref.random_times(rng, BATCH, STEPS), rng.normal(size=(BATCH, STEPS, INPUT_SIZE))


class PhasedMultiRNNCellTest(tf.test.TestCase):

    def test_stacked_layers_all_receive_the_timestamps(self):
        rng = np.random.default_rng(8)
        times, x = _inputs(rng)
        lower = ref.random_phased_lstm_params(rng, INPUT_SIZE, UNITS, False)
        upper = ref.random_phased_lstm_params(rng, UNITS, 4, True)
        with tf.Graph().as_default():
            cells = [PhasedLSTMCell(UNITS), PhasedLSTMCell(4, use_peepholes=True)]
            outputs, _ = tf.compat.v1.nn.dynamic_rnn(
                PhasedMultiRNNCell(cells),
                (tf.constant(times, tf.float32), tf.constant(x, tf.float32)), dtype=tf.float32)
            names = [v.name for v in tf.compat.v1.global_variables()]
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                load_params(sess, cells[0], lower)
                load_params(sess, cells[1], upper)
                outputs = sess.run(outputs)
        self.assertLen(names, 18)
        self.assertIn("rnn/phased_multi_rnn_cell/cell_1/phased_lstm_cell/period:0", names)
        zeros = np.zeros((BATCH, UNITS))
        hidden, _ = ref.run_sequence(ref.phased_lstm_step, lower, times, x, (zeros, zeros),
                                     use_peepholes=False, leak=0.001)
        want, _ = ref.run_sequence(ref.phased_lstm_step, upper, times, hidden,
                                   (np.zeros((BATCH, 4)),) * 2, use_peepholes=True, leak=0.001)
        self.assertAllClose(outputs, want, atol=3e-5)

    def test_a_plain_cell_on_top_gets_the_features_alone(self):
        rng = np.random.default_rng(3)
        times, x = _inputs(rng)
        with tf.Graph().as_default():
            phased = PhasedLSTMCell(UNITS)
            top = rnn_cell.BasicRNNCell(2)
            time_t, x_t = tf.constant(times, tf.float32), tf.constant(x, tf.float32)
            stacked, _ = tf.compat.v1.nn.dynamic_rnn(PhasedMultiRNNCell([phased, top]),
                                                      (time_t, x_t), dtype=tf.float32)
            # The same two layers run one after the other, sharing the stack's variables.
            with tf.compat.v1.variable_scope("rnn/phased_multi_rnn_cell", reuse=True):
                with tf.compat.v1.variable_scope("cell_0"):
                    hidden, _ = tf.compat.v1.nn.dynamic_rnn(phased, (time_t, x_t),
                                                            dtype=tf.float32)
                with tf.compat.v1.variable_scope("cell_1"):
                    separate, _ = tf.compat.v1.nn.dynamic_rnn(top, hidden, dtype=tf.float32)
            self.assertEqual(top.weights[0].shape.as_list(), [UNITS + 2, 2])  # [h_below, h]
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                stacked, separate = sess.run((stacked, separate))
        self.assertAllClose(stacked, separate, atol=1e-6)

    def test_integer_and_per_unit_time_reach_every_layer(self):
        # As TF 1.x's cell took them: integer time, and time per unit where the phased layers
        # share their number of units.
        rng = np.random.default_rng(9)
        times, x = _inputs(rng)
        lower = ref.random_phased_lstm_params(rng, INPUT_SIZE, UNITS, False)
        upper = ref.random_phased_lstm_params(rng, UNITS, UNITS, True)
        integer = np.round(times * 3)
        per_unit = times + rng.uniform(0, 10, (1, 1, UNITS))
        for times, dtype in ((integer, tf.int32), (per_unit, tf.float64)):
            with tf.Graph().as_default():
                cells = [PhasedLSTMCell(UNITS), PhasedLSTMCell(UNITS, use_peepholes=True)]
                outputs, _ = tf.compat.v1.nn.dynamic_rnn(
                    PhasedMultiRNNCell(cells),
                    (tf.constant(times, dtype), tf.constant(x, tf.float32)), dtype=tf.float32)
                with tf.compat.v1.Session() as sess:
                    sess.run(tf.compat.v1.global_variables_initializer())
                    load_params(sess, cells[0], lower)
                    load_params(sess, cells[1], upper)
                    outputs = sess.run(outputs)
            zeros = np.zeros((BATCH, UNITS))
            hidden, _ = ref.run_sequence(ref.phased_lstm_step, lower, times, x, (zeros, zeros),
                                         use_peepholes=False, leak=0.001)
            want, _ = ref.run_sequence(ref.phased_lstm_step, upper, times, hidden,
                                       (zeros, zeros), use_peepholes=True, leak=0.001)
            self.assertAllClose(outputs, want, atol=3e-5)

    def test_per_unit_time_needs_layers_of_one_size(self):
        with tf.Graph().as_default():
            stack = PhasedMultiRNNCell([PhasedLSTMCell(UNITS), PhasedLSTMCell(4)])
            with self.assertRaisesRegex(ValueError, r"time must have shape \[batch, 1\] "
                                        r"\(one timestamp per example\); got shape"):
                tf.compat.v1.nn.dynamic_rnn(stack, (tf.zeros([2, 3, UNITS]), tf.zeros([2, 3, 1])),
                                            dtype=tf.float32)

    def test_an_empty_stack_is_refused(self):
        with self.assertRaises(ValueError):
            PhasedMultiRNNCell([])
