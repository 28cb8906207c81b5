"""GateClippedLSTMCell: LSTMCell's forward and variables, and gradients clipped per step as a
hand-written NumPy back-propagation."""

import numpy as np

import numpy_reference as ref
from experiments.gate_clipped_lstm import GateClippedLSTMCell
from phased_lstm import rnn_cell, tf

BATCH, STEPS, INPUT_SIZE, UNITS, CLIP = 3, 10, 2, 4, 0.0625


def _run(cell, x, kernel, bias, diagonals, out_weights):
    """Outputs, and the gradients of sum(outputs * out_weights) for kernel, bias and x."""
    with tf.Graph().as_default():
        x_t = tf.constant(x)
        outputs, _ = tf.compat.v1.nn.dynamic_rnn(cell, x_t, dtype=tf.float64)
        names = [v.name for v in cell.weights]
        loss = tf.reduce_sum(outputs * out_weights)
        grads = tf.gradients(loss, [cell._kernel, cell._bias, x_t])
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            cell._kernel.load(kernel, sess)
            cell._bias.load(bias, sess)
            for variable, value in zip((cell._w_i_diag, cell._w_f_diag, cell._w_o_diag),
                                       diagonals):
                variable.load(value, sess)
            return names, *sess.run((outputs, grads))


class GateClippedLSTMCellTest(tf.test.TestCase):

    def setUp(self):
        rng = np.random.default_rng(3)
        self.x = rng.normal(size=(BATCH, STEPS, INPUT_SIZE))
        self.kernel = rng.normal(0, 0.5, (INPUT_SIZE + UNITS, 4 * UNITS))
        self.bias = rng.normal(0, 0.5, 4 * UNITS)
        self.diagonals = rng.normal(0, 0.5, (3, UNITS))
        self.out_weights = rng.normal(size=(BATCH, STEPS, UNITS))

    def _reference(self, clip):
        """The NumPy back-propagation of the Phased LSTM with its gate always open (k = 1): an
        LSTM whose peephole matrices are the diagonal ones, in its [i, f], j, o layout."""
        i, j, f, o = np.split(self.kernel, 4, axis=1)
        b_i, b_j, b_f, b_o = np.split(self.bias, 4)
        w_i, w_f, w_o = self.diagonals
        params = {"mask_gates/kernel": np.concatenate([
                      np.concatenate([i, f], 1), np.concatenate([np.diag(w_i), np.diag(w_f)], 1)]),
                  "mask_gates/bias": np.concatenate([b_i, b_f]),
                  "new_input/kernel": j, "new_input/bias": b_j,
                  "output_gate/kernel": np.concatenate([o, np.diag(w_o)]),
                  "output_gate/bias": b_o}
        grads = ref.clipped_weight_gradients(params, None, self.x, self.out_weights, True, 0.0,
                                             clip, k=1.0)
        rows = INPUT_SIZE + UNITS
        d_i, d_f = np.split(grads["mask_gates/kernel"][:rows], 2, axis=1)
        db_i, db_f = np.split(grads["mask_gates/bias"], 2)
        d_kernel = np.concatenate([d_i, grads["new_input/kernel"], d_f,
                                   grads["output_gate/kernel"][:rows]], axis=1)
        d_bias = np.concatenate([db_i, grads["new_input/bias"], db_f, grads["output_gate/bias"]])
        return d_kernel, d_bias, grads["inputs"]

    def test_clipped_gradients_match_the_hand_written_reference(self):
        cell = GateClippedLSTMCell(UNITS, gate_gradient_clip=CLIP, use_peepholes=True,
                                   forget_bias=0.0)
        _, _, grads = _run(cell, self.x, self.kernel, self.bias, self.diagonals,
                           self.out_weights)
        want = self._reference(CLIP)
        for name, got, expected in zip(("kernel", "bias", "inputs"), grads, want):
            self.assertAllClose(got, expected, atol=1e-10, rtol=1e-9, msg=name)
        unclipped = self._reference(None)
        self.assertGreater(np.abs(want[0] - unclipped[0]).max(), 1e-3)  # the clip mattered

    def test_forward_and_variables_are_lstm_cells_and_a_huge_clip_changes_nothing(self):
        runs = [_run(cell, self.x, self.kernel, self.bias, self.diagonals, self.out_weights)
                for cell in (rnn_cell.LSTMCell(UNITS, use_peepholes=True),
                             GateClippedLSTMCell(UNITS, 1e30, use_peepholes=True),
                             GateClippedLSTMCell(UNITS, None, use_peepholes=True))]
        names, outputs, grads = runs[0]
        for other_names, other_outputs, other_grads in runs[1:]:
            self.assertEqual(other_names, names)
            self.assertAllClose(other_outputs, outputs, atol=1e-12, rtol=1e-12)
            for got, want in zip(other_grads, grads):
                self.assertAllClose(got, want, atol=1e-12, rtol=1e-12)

    def test_refusals(self):
        with self.assertRaisesRegex(ValueError, "gate_gradient_clip must be a finite"):
            GateClippedLSTMCell(UNITS, gate_gradient_clip=float("nan"))
        with self.assertRaisesRegex(ValueError, "does not support cell_clip, num_proj"):
            GateClippedLSTMCell(UNITS, 1.0, num_proj=2, cell_clip=3.0)


if __name__ == "__main__":
    tf.test.main()
