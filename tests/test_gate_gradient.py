"""Per-step clipping of the gates' gradient: the cell and every path of phased_lstm_rnn against
a NumPy back-propagation that clips by hand."""

import numpy as np

import numpy_reference as ref
from phased_lstm import PhasedLSTMCell, tf
from phased_lstm.fast_rnn import phased_lstm_rnn
from phased_lstm.fused_rnn import fused_sequence
from phased_lstm.gate_gradient import check_gate_gradient_clip, clip_gradient
from tf_helpers import cell_variables, load_params

BATCH, STEPS, INPUT_SIZE, UNITS, LEAK = 3, 12, 2, 4, 0.001
# Small enough that many steps' gradients exceed it (checked below), so the clip matters; a
# power of 2, as the fused op's float attribute holds it in float32.
CLIP = 0.0625
# (description, phased_lstm_rnn's fused argument or "dynamic_rnn" for the cell's own step).
PATHS = (("cell under dynamic_rnn", "dynamic_rnn"), ("fused kernel", True),
         ("TensorFlow loop", False))
KERNELS_AND_BIASES = ref.PARAM_NAMES[:6]


class CheckTest(tf.test.TestCase):

    def test_off_values_and_refusals(self):
        self.assertIsNone(check_gate_gradient_clip(None))
        self.assertIsNone(check_gate_gradient_clip(0))
        self.assertEqual(check_gate_gradient_clip(10), 10.0)
        for bad in (-1.0, float("inf"), float("nan"), "10", True):
            with self.assertRaisesRegex(ValueError, "gate_gradient_clip must be a finite"):
                check_gate_gradient_clip(bad)
        with self.assertRaisesRegex(ValueError, "gate_gradient_clip must be a finite"):
            PhasedLSTMCell(UNITS, gate_gradient_clip=-10.0)

    def test_clip_gradient_is_identity_forward_and_clips_backward(self):
        x = tf.constant([[-3.0, 0.5, 2.0]])
        upstream = tf.constant([[4.0, -0.25, -7.0]])
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = clip_gradient(x, 1.0)
            loss = tf.reduce_sum(y * upstream)
        self.assertAllEqual(y, x)
        self.assertAllEqual(tape.gradient(loss, x), [[1.0, -0.25, -1.0]])
        self.assertIs(clip_gradient(x, None), x)


class ClippedGradientTest(tf.test.TestCase):

    def _gradients(self, path, use_peepholes, clip):
        """d loss / d (every variable by TF 1.x name, "inputs"), float64, on one path."""
        rng = np.random.default_rng(7)
        params = ref.random_phased_lstm_params(rng, INPUT_SIZE, UNITS, use_peepholes)
        times = ref.random_times(rng, BATCH, STEPS)
        x = rng.normal(size=(BATCH, STEPS, INPUT_SIZE))
        out_weights = rng.normal(size=(BATCH, STEPS, UNITS))
        with tf.Graph().as_default():
            cell = PhasedLSTMCell(UNITS, use_peepholes=use_peepholes, leak=LEAK,
                                  gate_gradient_clip=clip)
            times_t, x_t = tf.constant(times), tf.constant(x)
            if path == "dynamic_rnn":
                outputs, _ = tf.compat.v1.nn.dynamic_rnn(cell, (times_t, x_t), dtype=tf.float64)
            else:
                outputs, _ = phased_lstm_rnn(cell, times_t, x_t, fused=path)
            loss = tf.reduce_sum(outputs * out_weights)
            variables = cell_variables(cell)
            grads = dict(zip(list(variables) + ["inputs"],
                             tf.gradients(loss, list(variables.values()) + [x_t])))
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                load_params(sess, cell, params)
                got = sess.run(grads)
        want = ref.clipped_weight_gradients(params, times, x, out_weights, use_peepholes, LEAK,
                                            clip)
        unclipped = ref.clipped_weight_gradients(params, times, x, out_weights, use_peepholes,
                                                 LEAK, None)
        return got, want, unclipped

    def test_every_path_clips_as_the_hand_written_reference(self):
        for use_peepholes in (False, True):
            for description, path in PATHS:
                got, want, unclipped = self._gradients(path, use_peepholes, CLIP)
                for name in KERNELS_AND_BIASES + ("inputs",):
                    self.assertAllClose(got[name], want[name], atol=1e-10, rtol=1e-9,
                                        msg=f"{description}, peepholes {use_peepholes}: {name}")
                # The clip was active: the reference's clipped gradients differ from unclipped.
                self.assertGreater(np.abs(want["mask_gates/kernel"]
                                          - unclipped["mask_gates/kernel"]).max(), 1e-3)

    def test_the_reference_without_clipping_is_tensorflows_gradient(self):
        for use_peepholes in (False, True):
            got, _, unclipped = self._gradients("dynamic_rnn", use_peepholes, None)
            for name in KERNELS_AND_BIASES + ("inputs",):
                self.assertAllClose(got[name], unclipped[name], atol=1e-10, rtol=1e-9, msg=name)

    def test_a_huge_clip_changes_no_gradient_on_any_path(self):
        for use_peepholes in (False, True):
            for description, path in PATHS:
                huge, _, _ = self._gradients(path, use_peepholes, 1e30)
                none, _, _ = self._gradients(path, use_peepholes, None)
                self.assertEqual(set(huge), set(none))
                for name in none:  # the timing variables too
                    self.assertAllClose(huge[name], none[name], atol=1e-12, rtol=1e-12,
                                        msg=f"{description}, peepholes {use_peepholes}: {name}")

    def test_fused_sequence_refuses_a_negative_clip(self):
        with tf.Graph().as_default():
            zeros = tf.zeros([STEPS, BATCH, UNITS])
            with self.assertRaisesRegex(ValueError, "gate_gradient_clip must be a finite"):
                fused_sequence(tf.zeros([STEPS, BATCH, 1]), zeros, zeros[0], zeros[0],
                               tf.zeros([1 + UNITS, 4 * UNITS]), tf.zeros([4 * UNITS]),
                               gate_gradient_clip=-1.0)


if __name__ == "__main__":
    tf.test.main()
