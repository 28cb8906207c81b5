"""TF 1.x's own test of tf.contrib.rnn.PhasedLSTMCell, run against this cell.

RNNCellTest.testPhasedLSTMCell (tensorflow/contrib/rnn/python/kernel_tests/rnn_cell_test.py,
TensorFlow r1.12 to r1.15): one step of a 2-unit cell whose kernels are all 0.5 (the variable
scope's initializer), from a zero state, at times 1, 2, 3 with features all 1, 2, 3, checked
against the c and h below, which the test wrote down from TF 1.x's run. The test is reproduced
here step by step with the public TF 1.x API; its expected numbers are TF 1.x's, unchanged.

Those numbers also depend on the period and phase the cell drew at random, and TF 2 draws them
differently. TF 1.x's test case set the graph seed 87654321 (TensorFlow's DEFAULT_GRAPH_SEED),
and an op without a seed of its own got the number of ops already in the graph as its op seed:
56 for the period's uniform draw and 66 for the phase's, in that test's graph under TF 1.12 to
1.15. `tf1_draws` draws them again with those seeds, as TF 1.x's initialisers did:
period = exp(U(ln 1, ln 1000)) (`_random_exp_initializer(1., 1000.)`) and
phase = U(0, 1) * period (`random_uniform_initializer(0., period.initial_value)`). The test
then sets the cell's period and phase to them after the variables' initialisation. With TF 2's
own draws the numbers cannot be reproduced by any cell; with TF 1.x's they are, as written.
"""

import numpy as np

from phased_lstm import PhasedLSTMCell, rnn_cell, tf
from phased_lstm.fast_rnn import phased_lstm_rnn

TF1_GRAPH_SEED = 87654321
TF1_PERIOD_OP_SEED, TF1_PHASE_OP_SEED = 56, 66

NUM_UNITS, BATCH_SIZE, INPUT_SIZE = 2, 3, 4
TIMES = np.array([[1.0], [2.0], [3.0]])
FEATURES = np.array([[1.0] * INPUT_SIZE, [2.0] * INPUT_SIZE, [3.0] * INPUT_SIZE])
# TF 1.x's expected state, from its test (r1.12 to r1.15).
TF1_EXPECTED_C = np.array([[0.00072015, 0.00036633], [0.00083481, 0.00047266],
                           [0.00085111, 0.00053054]], dtype=np.float32)
TF1_EXPECTED_H = np.array([[0.0005159, 0.00026243], [0.00062958, 0.00035646],
                           [0.00064732, 0.00040351]], dtype=np.float32)


def tf1_draws():
    """(period, phase), each [NUM_UNITS] float32: what TF 1.x's cell drew in its test."""
    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(TF1_GRAPH_SEED)
        period = tf.exp(tf.random.uniform([NUM_UNITS], tf.math.log(1.0), tf.math.log(1000.0),
                                          seed=TF1_PERIOD_OP_SEED))
        phase = tf.random.uniform([NUM_UNITS], seed=TF1_PHASE_OP_SEED) * period
        with tf.compat.v1.Session() as sess:
            return sess.run((period, phase))


def set_tf1_timing(cell):
    """Ops that give the cell's period and phase TF 1.x's draws."""
    period, phase = tf1_draws()
    return [cell.time_gate.period.assign(period), cell.time_gate.phase.assign(phase)]


class TF1PhasedLSTMCellTest(tf.test.TestCase):

    def test_phased_lstm_cell(self):
        # TF 1.x's test, as it was written; only the period and phase are set to TF 1.x's draws.
        with tf.Graph().as_default(), self.session() as sess:
            with tf.compat.v1.variable_scope(
                    "root", initializer=tf.compat.v1.constant_initializer(0.5)):
                t = tf.zeros([BATCH_SIZE, 1], dtype=tf.float64)
                x = tf.zeros([BATCH_SIZE, INPUT_SIZE])
                c0 = tf.zeros([BATCH_SIZE, 2])
                h0 = tf.zeros([BATCH_SIZE, 2])
                state0 = rnn_cell.LSTMStateTuple(c0, h0)
                cell = PhasedLSTMCell(num_units=NUM_UNITS)
                output, state = cell((t, x), state0)
                sess.run([tf.compat.v1.global_variables_initializer()])
                sess.run(set_tf1_timing(cell))
                res = sess.run([output, state], {t.name: TIMES, x.name: FEATURES})
                self.assertEqual(len(res), 2)
                self.assertAllClose(res[0], res[1].h)
                self.assertAllClose(res[1].c, TF1_EXPECTED_C)
                self.assertAllClose(res[1].h, TF1_EXPECTED_H)

    def test_every_path_and_integer_time_give_tf1s_numbers(self):
        # The same step under dynamic_rnn and phased_lstm_rnn (fused kernel where available,
        # and TensorFlow's loop), and with the times fed as integers: cast to float64 they are
        # the same times (TF 1.x instead truncated the period and phase to integers).
        paths = ["cell with int32 time", "dynamic_rnn", "fast", "fast, no kernel"]
        for path in paths:
            with tf.Graph().as_default(), self.session() as sess:
                with tf.compat.v1.variable_scope(
                        "root", initializer=tf.compat.v1.constant_initializer(0.5)):
                    cell = PhasedLSTMCell(NUM_UNITS)
                    x = tf.constant(FEATURES, tf.float32)
                    if path == "cell with int32 time":
                        _, (c, h) = cell((tf.constant(TIMES, tf.int32), x),
                                         cell.zero_state(BATCH_SIZE, tf.float32))
                    elif path == "dynamic_rnn":
                        _, (c, h) = tf.compat.v1.nn.dynamic_rnn(
                            cell, (tf.constant(TIMES[:, None]), x[:, None]), dtype=tf.float32)
                    else:
                        _, (c, h) = phased_lstm_rnn(cell, TIMES[:, None], x[:, None],
                                                    fused=None if path == "fast" else False)
                    sess.run(tf.compat.v1.global_variables_initializer())
                    sess.run(set_tf1_timing(cell))
                    c, h = sess.run((c, h))
            self.assertAllClose(c, TF1_EXPECTED_C, msg=path)
            self.assertAllClose(h, TF1_EXPECTED_H, msg=path)

    def test_tf2s_own_draws_do_not_give_tf1s_numbers(self):
        # Why the draws are set: the numbers depend on them, and without TF 1.x's the same
        # test fails, whatever the cell.
        with tf.Graph().as_default(), self.session() as sess:
            tf.compat.v1.set_random_seed(TF1_GRAPH_SEED)
            with tf.compat.v1.variable_scope(
                    "root", initializer=tf.compat.v1.constant_initializer(0.5)):
                cell = PhasedLSTMCell(NUM_UNITS)
                _, (c, _) = cell((tf.constant(TIMES), tf.constant(FEATURES, tf.float32)),
                                 cell.zero_state(BATCH_SIZE, tf.float32))
                sess.run(tf.compat.v1.global_variables_initializer())
                c = sess.run(c)
        self.assertNotAllClose(c, TF1_EXPECTED_C)


if __name__ == "__main__":
    tf.test.main()
