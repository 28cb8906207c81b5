"""The forward-only (evaluation) ops against the training forward, and their refused gradient.

PhasedLSTMSequenceInference and PhasedGRUSequenceInference run the training ops' forward
without saving activations; their outputs must be the training ops' bit for bit, so that an
evaluation on them gives the numbers an evaluation on the training graph gave. Like
test_fused_rnn.py, these fail where a compiler is present and the kernels do not build.
"""

import numpy as np

from phased_lstm import PhasedGRUCell, PhasedLSTMCell, fused_rnn, tf
from phased_lstm.fast_rnn import phased_gru_rnn, phased_lstm_rnn
from test_fused_rnn import _require_kernel

# (batch, steps, input_size, units): a batch split between threads (37, 50), one that is not
# (3), a single step, no steps, and units whose rows do not fill the allocator's alignment
# (where a scratch buffer placed otherwise than the output would round differently).
SHAPES = [(37, 19, 3, 5), (3, 1, 1, 4), (9, 23, 7, 2), (50, 7, 2, 33), (20, 0, 3, 5)]
DTYPES = (np.float32, np.float64)


def _require_gru_kernel(test):
    if not fused_rnn.fused_gru_kernel_available():
        _require_kernel(test)  # skips or fails as for the LSTM's library
        test.fail(f"the Phased GRU's kernel did not build: {fused_rnn.GRU.failure()}")


def _sequence_inputs(rng, batch, steps, input_size, units, dtype, shared_k, gates):
    """x, k, h0 and a kernel and bias of `gates` columns per unit."""
    return dict(
        inputs=rng.normal(size=(steps, batch, input_size)).astype(dtype),
        k=rng.uniform(size=(steps, 1 if shared_k else batch, units)).astype(dtype),
        h0=rng.normal(size=(batch, units)).astype(dtype),
        kernel=(0.5 * rng.normal(size=(input_size + units, gates * units))).astype(dtype),
        bias=rng.normal(size=(gates * units,)).astype(dtype))


def _ops_of(graph):
    return {op.type for op in graph.get_operations()}


class LSTMForwardOnlyTest(tf.test.TestCase):

    def test_the_op_equals_the_training_forward_bit_for_bit(self):
        _require_kernel(self)
        rng = np.random.default_rng(0)
        for shape in SHAPES:
            units = shape[3]
            for dtype in DTYPES:
                for shared_k in (False, True):
                    for peepholes in (False, True):
                        args = _sequence_inputs(rng, *shape, dtype, shared_k, gates=4)
                        args["c0"] = rng.normal(size=(shape[0], units)).astype(dtype)
                        if peepholes:
                            args["w_c_if"] = rng.normal(size=(units, 2 * units)).astype(dtype)
                            args["w_c_o"] = rng.normal(size=(units, units)).astype(dtype)
                        training = fused_rnn.fused_sequence(**args)
                        evaluation = fused_rnn.fused_sequence(**args, forward_only=True)
                        for name, want, got in zip(("h", "c_final", "h_final"), training,
                                                   evaluation):
                            self.assertEqual(got.dtype, want.dtype)
                            self.assertAllEqual(got, want, msg=(
                                f"{name}: shape {shape}, {dtype.__name__}, shared k "
                                f"{shared_k}, peepholes {peepholes}"))

    def test_the_op_saves_nothing_for_a_gradient(self):
        _require_kernel(self)
        with tf.Graph().as_default() as graph:
            args = _sequence_inputs(np.random.default_rng(1), 4, 3, 2, 5, np.float32, False, 4)
            fused_rnn.fused_sequence(c0=args["h0"], **args, forward_only=True)
        (op,) = [op for op in graph.get_operations() if op.type.startswith("PhasedLSTM")]
        self.assertEqual(op.type, "PhasedLSTMSequenceInference")
        self.assertEqual([tuple(output.shape) for output in op.outputs],
                         [(3, 4, 5), (4, 5), (4, 5)])

    def test_phased_lstm_rnn_forward_only_equals_training_in_a_session(self):
        # The same cell's variables, leak fed or not, lengths folded into the gate.
        _require_kernel(self)
        rng = np.random.default_rng(2)
        batch, steps, input_size, units = 24, 17, 2, 6
        time = np.cumsum(rng.uniform(0.1, 3.0, size=(batch, steps, 1)), axis=1)
        x = rng.normal(size=(batch, steps, input_size)).astype(np.float32)
        lengths = rng.integers(0, steps + 1, batch)
        for peepholes in (False, True):
            with tf.Graph().as_default() as graph:
                leak = tf.compat.v1.placeholder_with_default(0.001, [])
                cell = PhasedLSTMCell(units, use_peepholes=peepholes, leak=leak)
                outputs = {}
                for forward_only in (False, True):
                    out, (c, h) = phased_lstm_rnn(cell, time.astype(np.float32), x, lengths,
                                                  forward_only=forward_only)
                    outputs[forward_only] = (out, c, h)
                self.assertIn("PhasedLSTMSequenceInference", _ops_of(graph))
                self.assertLen(tf.compat.v1.trainable_variables(),
                               len(cell.trainable_variables))
                with tf.compat.v1.Session() as sess:
                    sess.run(tf.compat.v1.global_variables_initializer())
                    for leak_value in (0.0, 0.001):
                        want, got = sess.run([outputs[False], outputs[True]],
                                             {leak: leak_value})
                        for name, w, g in zip(("outputs", "c", "h"), want, got):
                            self.assertAllEqual(g, w, msg=f"{name}, peepholes {peepholes}")

    def test_without_the_kernel_the_tensorflow_loop_runs(self):
        with tf.Graph().as_default() as graph:
            cell = PhasedLSTMCell(3)
            out, _ = phased_lstm_rnn(cell, tf.zeros([1, 5, 1]), tf.ones([2, 5, 1]), fused=False,
                                     forward_only=True)
            ops = _ops_of(graph)
            self.assertNotIn("PhasedLSTMSequenceInference", ops)
            self.assertNotIn("PhasedLSTMSequence", ops)
            # The loop keeps its gradient, as without forward_only.
            self.assertNotIn(None, tf.gradients(tf.reduce_sum(out), cell.trainable_variables))

    def test_a_gradient_through_it_raises(self):
        _require_kernel(self)
        rng = np.random.default_rng(3)
        args = _sequence_inputs(rng, 9, 4, 2, 3, np.float64, False, 4)
        args["c0"] = args["h0"]
        message = r"PhasedLSTMSequenceInference.*forward_only=False"

        # Graph mode: tf.gradients, through phased_lstm_rnn as the scripts build it.
        with tf.Graph().as_default():
            cell = PhasedLSTMCell(3, dtype=tf.float64)
            _, (_, h) = phased_lstm_rnn(cell, rng.uniform(size=(1, 4, 1)),
                                        rng.normal(size=(9, 4, 2)), forward_only=True)
            with self.assertRaisesRegex(fused_rnn.ForwardOnlyGradientError, message):
                tf.gradients(tf.reduce_sum(h), cell.trainable_variables)

        # Eagerly, and from a tf.function called under a tape.
        tensors = {name: tf.constant(value) for name, value in args.items()}

        def loss():
            return tf.reduce_sum(fused_rnn.fused_sequence(**tensors, forward_only=True)[0])

        for run in (loss, tf.function(loss)):
            # A tf.function called under a tape builds its backward function at once, so the
            # error may come from the call.
            with self.assertRaisesRegex(fused_rnn.ForwardOnlyGradientError, message):
                with tf.GradientTape() as tape:
                    tape.watch(tensors["kernel"])
                    value = run()
                tape.gradient(value, tensors["kernel"])
        self.assertTrue(issubclass(fused_rnn.ForwardOnlyGradientError, LookupError))


class GRUForwardOnlyTest(tf.test.TestCase):

    def test_the_op_equals_the_training_forward_bit_for_bit(self):
        _require_gru_kernel(self)
        rng = np.random.default_rng(10)
        for shape in SHAPES:
            for dtype in DTYPES:
                for shared_k in (False, True):
                    args = _sequence_inputs(rng, *shape, dtype, shared_k, gates=3)
                    training = fused_rnn.fused_gru_sequence(**args)
                    evaluation = fused_rnn.fused_gru_sequence(**args, forward_only=True)
                    for name, want, got in zip(("h", "h_final"), training, evaluation):
                        self.assertEqual(got.dtype, want.dtype)
                        self.assertAllEqual(got, want, msg=(
                            f"{name}: shape {shape}, {dtype.__name__}, shared k {shared_k}"))

    def test_phased_gru_rnn_forward_only_equals_training_in_a_session(self):
        _require_gru_kernel(self)
        rng = np.random.default_rng(11)
        batch, steps, input_size, units = 21, 13, 3, 5
        time = np.cumsum(rng.uniform(0.1, 3.0, size=(1, steps, 1)), axis=1)
        x = rng.normal(size=(batch, steps, input_size))
        lengths = rng.integers(0, steps + 1, batch)
        with tf.Graph().as_default() as graph:
            cell = PhasedGRUCell(units, dtype=tf.float64)
            outputs = [phased_gru_rnn(cell, time, x, lengths, forward_only=forward_only)
                       for forward_only in (False, True)]
            self.assertIn("PhasedGRUSequenceInference", _ops_of(graph))
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                (want_out, want_h), (got_out, got_h) = sess.run(outputs)
        self.assertAllEqual(got_out, want_out)
        self.assertAllEqual(got_h, want_h)

    def test_a_gradient_through_it_raises(self):
        _require_gru_kernel(self)
        rng = np.random.default_rng(12)
        with tf.Graph().as_default():
            cell = PhasedGRUCell(3)
            _, h = phased_gru_rnn(cell, rng.uniform(size=(1, 4, 1)).astype(np.float32),
                                  rng.normal(size=(9, 4, 2)).astype(np.float32),
                                  forward_only=True)
            with self.assertRaisesRegex(fused_rnn.ForwardOnlyGradientError,
                                        r"PhasedGRUSequenceInference.*phased_gru_rnn"):
                tf.gradients(tf.reduce_sum(h), cell.trainable_variables)
        tensors = {name: tf.constant(value) for name, value in
                   _sequence_inputs(rng, 9, 4, 2, 3, np.float32, True, 3).items()}
        with tf.GradientTape() as tape:
            tape.watch(tensors["k"])
            h_seq, _ = fused_rnn.fused_gru_sequence(**tensors, forward_only=True)
        with self.assertRaisesRegex(fused_rnn.ForwardOnlyGradientError, "no activations"):
            tape.gradient(h_seq, tensors["k"])


if __name__ == "__main__":
    tf.test.main()
