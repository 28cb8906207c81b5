"""PhasedRNNCell, the base of the phased cells: its input contract, dtype and time gate."""

import numpy as np

import numpy_reference as ref
from phased_lstm import PhasedRNNCell, tf
from phased_lstm.phased_cell import check_phased_inputs

UNITS = 5


class GateOnlyCell(PhasedRNNCell):
    """The smallest phased cell: its output and state are the time gate k."""

    def __init__(self, num_units, **timing):
        timing = dict(leak=0.001, ratio_on=0.1, trainable_ratio_on=True, period_init_min=1.0,
                      period_init_max=1000.0, trainable_period=True, trainable_phase=True,
                      period_initializer=None, phase_initializer=None, ratio_on_initializer=None,
                      **timing)
        super().__init__(num_units, **timing)

    @property
    def state_size(self):
        return self._num_units

    @property
    def output_size(self):
        return self._num_units

    def build(self, inputs_shape):
        self.input_size = self._input_size(inputs_shape)
        self.time_gate.build(self.add_weight, self.dtype)
        self.built = True

    def call(self, inputs, state):
        k = self.time_gate(inputs[0], self.dtype)
        return k, k


class PhasedRNNCellTest(tf.test.TestCase):

    def test_dtype_follows_the_features_and_the_gate_is_the_reference(self):
        rng = np.random.default_rng(0)
        times = ref.random_times(rng, 3, 20, start=1e7)  # Needs float64 to keep the phase.
        with tf.Graph().as_default():
            cell = GateOnlyCell(UNITS)
            outputs, _ = tf.compat.v1.nn.dynamic_rnn(
                cell, (tf.constant(times, tf.float64), tf.zeros([3, 20, 2])), dtype=tf.float32)
            self.assertEqual(outputs.dtype, tf.float32)
            self.assertEqual(cell.input_size, 2)
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                got, timing = sess.run((outputs, (cell.time_gate.period, cell.time_gate.phase,
                                                  cell.time_gate.ratio_on)))
        want = ref.time_gate(times, *(v.astype(np.float64) for v in timing), 0.001)
        self.assertAllClose(got, want, atol=1e-6)

    def test_inputs_are_a_time_features_pair(self):
        with tf.Graph().as_default():
            time, features = check_phased_inputs([np.zeros((2, 1)), np.ones((2, 3))], "C")
            self.assertEqual(features.shape.as_list(), [2, 3])
            for bad in (tf.zeros([2, 3]), (tf.zeros([2, 1]),), (1, 2, 3)):
                with self.assertRaisesRegex(TypeError, r"C expects inputs as a tuple \(time"):
                    check_phased_inputs(bad, "C")
            cell = GateOnlyCell(UNITS)
            with self.assertRaisesRegex(ValueError, "features' last dimension must be known"):
                cell._input_size(([None, 1], [None, None]))  # pylint: disable=protected-access
