"""The fused sequence kernel against phased_lstm_rnn's pure-TensorFlow path, and the fallback.

The fused kernel is built on first use and cached, so only the first run of this module pays
for the build. Where a compiler is present and the build fails, the comparisons
fail with the compiler's log; they skip only where there is no compiler or PHASED_LSTM_FUSED=0.
The fallback tests run everywhere.
"""

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np

import numpy_reference as ref
from phased_lstm import PhasedLSTMCell, fused_rnn, op_library, tf
from phased_lstm.fast_rnn import fused_kernel_available, phased_lstm_rnn
from tf_helpers import load_params
from file_helpers import temp_dir, write

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LSTMStateTuple = tf.compat.v1.nn.rnn_cell.LSTMStateTuple

# (batch, steps, input_size, units): odd sizes, a batch split between two threads (37), one
# that is not (3), a single step, and more inputs than units.
SHAPES = [(37, 19, 3, 5), (3, 1, 1, 4), (9, 23, 7, 2)]


def _require_kernel(test):
    """Fails where the kernel should build and did not; skips only where it is turned off or
    there is no compiler at all (the fallback tests cover those machines)."""
    if fused_kernel_available():
        return
    if fused_rnn.disabled():
        test.skipTest(f"{fused_rnn.FUSED_ENV}=0 turns the fused kernel off")
    if shutil.which(op_library.compiler()[0]) is None:
        test.skipTest(f"no C++ compiler {op_library.compiler()[0]!r} to build the fused kernel")
    failure = fused_rnn.load_failure()
    log = ""
    if failure is not None and failure.log_path and os.path.exists(failure.log_path):
        with open(failure.log_path) as f:
            log = f.read()[-4000:]
    test.fail(f"a C++ compiler is here but the fused kernel did not build: {failure}\n{log}")


def _run_both(seed, batch, steps, input_size, units, dtype, shared_time, with_lengths,
              with_initial_state, leaks, peepholes=False, paths=(False, True)):
    """Loss, outputs, final state and gradients of everything, for fused and pure paths.

    paths: phased_lstm_rnn's `fused` values to run, and "dynamic_rnn" for
    `dynamic_rnn(cell, (time, inputs))`.

    Returns {(path, leak): (names, values)} where values are the fetched arrays.
    """
    rng = np.random.default_rng(seed)
    params = ref.random_phased_lstm_params(rng, input_size, units, peepholes)
    times = ref.random_times(rng, 1 if shared_time else batch, steps)
    x = rng.normal(size=(batch, steps, input_size))
    lengths = rng.integers(0, steps + 1, batch) if with_lengths else None
    state = [rng.normal(size=(batch, units)) for _ in range(2)]
    weights = rng.normal(size=(batch, steps, units))
    results = {}
    for fused in paths:
        with tf.Graph().as_default():
            leak = tf.compat.v1.placeholder_with_default(tf.constant(0.001, dtype), [])
            cell = PhasedLSTMCell(units, use_peepholes=peepholes, leak=leak, dtype=dtype)
            # float64 time for float32 cells too: the gate is computed in the time's dtype.
            time_t = tf.constant(times, tf.float64 if dtype == tf.float64 else tf.float32)
            x_t = tf.constant(x, dtype)
            initial = (LSTMStateTuple(*(tf.constant(s, dtype) for s in state))
                       if with_initial_state else None)
            if fused == "dynamic_rnn":  # which wants the time at full batch size
                time_in = tf.tile(time_t, [batch // time_t.shape[0], 1, 1])
                outputs, (c, h) = tf.compat.v1.nn.dynamic_rnn(
                    cell, (time_in, x_t), lengths, initial_state=initial, dtype=dtype)
            else:
                outputs, (c, h) = phased_lstm_rnn(cell, time_t, x_t, lengths,
                                                  initial_state=initial, fused=fused)
            loss = (tf.reduce_sum(outputs * weights) + tf.reduce_sum(c * c)
                    + tf.reduce_sum(tf.sin(h)))
            sources = cell.weights + [x_t, time_t] + (list(initial) if initial else [])
            names = [v.name for v in cell.weights] + ["inputs", "time"] + (
                ["c0", "h0"] if initial else [])
            grads = tf.gradients(loss, sources)
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                load_params(sess, cell, params)
                for value in leaks:
                    results[fused, value] = names, sess.run(
                        [outputs, c, h] + grads, {leak: value})
    return results


class FusedMatchesPureTensorFlowTest(tf.test.TestCase):

    def _assert_paths_agree(self, results, leaks, tolerance, reference=False):
        for leak in leaks:
            (names, pure), (names_fused, fused) = results[reference, leak], results[True, leak]
            self.assertEqual(names, names_fused)
            for name, want, got in zip(["outputs", "c", "h"] + names, pure, fused):
                self.assertIsNotNone(got, msg=name)
                self.assertAllClose(got, want, atol=tolerance, rtol=tolerance,
                                    msg=f"{name}, leak {leak}")
            # The leak changes the results: each value is checked, not one twice.
        if len(leaks) > 1:
            self.assertNotAllClose(results[True, leaks[0]][1][0], results[True, leaks[1]][1][0])

    def test_random_shapes_float32_and_float64(self):
        # With and without the TF 1.x cell's full-matrix peepholes, against phased_lstm_rnn's
        # TensorFlow loop.
        _require_kernel(self)
        for peepholes in (False, True):
            for dtype, tolerance in ((tf.float32, 2e-5), (tf.float64, 1e-10)):
                for seed, shape in enumerate(SHAPES):
                    for shared_time in (False, True):
                        with self.subTest(peepholes=peepholes, dtype=dtype.name, shape=shape,
                                          shared_time=shared_time):
                            results = _run_both(seed, *shape, dtype, shared_time,
                                                with_lengths=seed % 2 == 0,
                                                with_initial_state=True, leaks=(0.0, 0.001),
                                                peepholes=peepholes)
                            self._assert_paths_agree(results, (0.0, 0.001), tolerance)

    def test_peepholes_match_dynamic_rnn_float64(self):
        # Against the cell's own step under dynamic_rnn: every variable's gradient (the
        # peephole rows of mask_gates/kernel and output_gate/kernel, and the timing variables'),
        # the inputs', the time's and the initial state's.
        _require_kernel(self)
        for seed, shape in enumerate(SHAPES):
            for shared_time in (False, True):
                with self.subTest(shape=shape, shared_time=shared_time):
                    results = _run_both(10 + seed, *shape, tf.float64, shared_time,
                                        with_lengths=seed != 1, with_initial_state=True,
                                        leaks=(0.0, 0.001), peepholes=True,
                                        paths=("dynamic_rnn", True))
                    self._assert_paths_agree(results, (0.0, 0.001), 1e-10,
                                             reference="dynamic_rnn")

    def test_sequence_length_zero_initial_state_and_default_state(self):
        _require_kernel(self)
        for peepholes in (False, True):
            results = _run_both(7, 16, 12, 2, 6, tf.float64, shared_time=True,
                                with_lengths=True, with_initial_state=False, leaks=(0.001,),
                                peepholes=peepholes)
            self._assert_paths_agree(results, (0.001,), 1e-10)

    def test_matches_the_numpy_reference(self):
        _require_kernel(self)
        rng = np.random.default_rng(11)
        batch, steps, input_size, units = 20, 30, 2, 7
        times = ref.random_times(rng, batch, steps)
        x = rng.normal(size=(batch, steps, input_size))
        lengths = [steps, 5, 0, 17] * 5
        for peepholes in (False, True):
            params = ref.random_phased_lstm_params(rng, input_size, units, peepholes)
            with tf.Graph().as_default():
                cell = PhasedLSTMCell(units, use_peepholes=peepholes, dtype=tf.float64)
                outputs, (c, h) = phased_lstm_rnn(cell, tf.constant(times), tf.constant(x),
                                                  lengths, fused=True)
                with tf.compat.v1.Session() as sess:
                    sess.run(tf.compat.v1.global_variables_initializer())
                    load_params(sess, cell, params)
                    outputs, c, h = sess.run((outputs, c, h))
            want, (want_c, want_h) = ref.run_sequence(
                ref.phased_lstm_step, params, times, x, (np.zeros((batch, units)),) * 2,
                lengths, use_peepholes=peepholes, leak=0.001)
            self.assertAllClose(outputs, want, atol=1e-12, msg=f"peepholes {peepholes}")
            self.assertAllClose(c, want_c, atol=1e-12, msg=f"peepholes {peepholes}")
            self.assertAllClose(h, want_h, atol=1e-12, msg=f"peepholes {peepholes}")

    def test_eager_tape_and_tf_function_give_the_graph_gradients(self):
        _require_kernel(self)
        rng = np.random.default_rng(5)
        batch, steps, input_size, units = 18, 9, 3, 4
        x = tf.constant(rng.normal(size=(steps, batch, input_size)))
        k = tf.constant(rng.uniform(size=(steps, 1, units)))
        c0, h0 = (tf.constant(rng.normal(size=(batch, units))) for _ in range(2))
        kernel = tf.constant(rng.normal(size=(input_size + units, 4 * units)))
        bias = tf.constant(rng.normal(size=(4 * units,)))
        w_c_if = tf.constant(rng.normal(size=(units, 2 * units)))
        w_c_o = tf.constant(rng.normal(size=(units, units)))
        for inputs, names in (
                ([x, k, c0, h0, kernel, bias], []),
                ([x, k, c0, h0, kernel, bias, w_c_if, w_c_o], ["w_c_if", "w_c_o"])):
            with self.subTest(peepholes=bool(names)):
                self._check_eager_tape_and_tf_function(inputs, names)

    def _check_eager_tape_and_tf_function(self, inputs, peephole_names):
        def loss_and_grads(sequence):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                h_seq, c, h = sequence(*inputs)
                loss = tf.reduce_sum(tf.tanh(h_seq)) + tf.reduce_sum(c * h)
            return [loss] + tape.gradient(loss, inputs)

        eager = loss_and_grads(fused_rnn.fused_sequence)
        traced = tf.function(lambda: loss_and_grads(fused_rnn.fused_sequence))()
        with tf.Graph().as_default():
            placeholders = [tf.constant(value.numpy()) for value in inputs]
            h_seq, c, h = fused_rnn.fused_sequence(*placeholders)
            loss = tf.reduce_sum(tf.tanh(h_seq)) + tf.reduce_sum(c * h)
            with tf.compat.v1.Session() as sess:
                graph = sess.run([loss] + tf.gradients(loss, placeholders))
        names = ["loss", "x", "k", "c0", "h0", "kernel", "bias"] + peephole_names
        self.assertLen(graph, len(names))
        for name, want, got_eager, got_traced in zip(names, graph, eager, traced):
            self.assertIsNotNone(got_eager, msg=name)
            self.assertAllClose(got_eager, want, atol=1e-12, msg=name)
            self.assertAllClose(got_traced, want, atol=1e-12, msg=name)
        self.assertEqual(eager[2].shape, inputs[1].shape)  # dk summed over the shared batch

    def test_op_gradients_match_finite_differences(self):
        _require_kernel(self)
        rng = np.random.default_rng(6)
        batch, steps, input_size, units = 17, 6, 2, 3
        values = [rng.normal(size=(steps, batch, input_size)),
                  rng.uniform(size=(steps, batch, units)),
                  rng.normal(size=(batch, units)), rng.normal(size=(batch, units)),
                  rng.normal(size=(input_size + units, 4 * units)),
                  rng.normal(size=(4 * units,))]
        peepholes = [rng.normal(size=(units, 2 * units)), rng.normal(size=(units, units))]

        def loss(*args):
            h_seq, c, h = fused_rnn.fused_sequence(*args)
            return tf.reduce_sum(tf.sin(h_seq)) + tf.reduce_sum(c * c) + tf.reduce_sum(h)

        # The second case has peepholes, and k shared by the batch (dk summed over it).
        shared_k = [rng.uniform(size=(steps, 1, units))]
        for case in (values, values[:1] + shared_k + values[2:] + peepholes):
            theoretical, numerical = tf.test.compute_gradient(
                loss, [tf.constant(v) for v in case], delta=1e-5)
            self.assertLen(theoretical, len(case))
            for index, (got, want) in enumerate(zip(theoretical, numerical)):
                self.assertAllClose(got, want, atol=1e-6, rtol=1e-6,
                                    msg=f"input {index} of {len(case)}")

    def test_zero_steps_keep_the_initial_state(self):
        _require_kernel(self)
        c0 = tf.constant(np.arange(6.0).reshape(2, 3), tf.float32)
        h0 = -c0
        kernel = tf.ones([4, 12])
        for peepholes in ((), (tf.ones([3, 6]), tf.ones([3, 3]))):
            with tf.GradientTape() as tape:
                tape.watch([c0, h0, *peepholes])
                h_seq, c, h = fused_rnn.fused_sequence(tf.zeros([0, 2, 1]), tf.zeros([0, 1, 3]),
                                                       c0, h0, kernel, tf.zeros([12]), *peepholes)
                loss = tf.reduce_sum(c * 2.0) + tf.reduce_sum(h * 3.0)
            self.assertEqual(h_seq.shape, (0, 2, 3))
            self.assertAllEqual(c, c0)
            self.assertAllEqual(h, h0)
            d_c0, d_h0, *d_peepholes = tape.gradient(loss, [c0, h0, *peepholes])
            self.assertAllEqual(d_c0, np.full((2, 3), 2.0))
            self.assertAllEqual(d_h0, np.full((2, 3), 3.0))
            for d_peephole, peephole in zip(d_peepholes, peepholes):
                self.assertAllEqual(d_peephole, tf.zeros_like(peephole))

    def test_bad_shapes_are_refused_by_the_op(self):
        _require_kernel(self)
        good = dict(inputs=tf.zeros([4, 2, 1]), k=tf.zeros([4, 1, 3]), c0=tf.zeros([2, 3]),
                    h0=tf.zeros([2, 3]), kernel=tf.zeros([4, 12]), bias=tf.zeros([12]))
        peepholes = dict(w_c_if=tf.zeros([3, 6]), w_c_o=tf.zeros([3, 3]))
        cases = [dict(k=tf.zeros([4, 3, 3])), dict(kernel=tf.zeros([5, 12])),
                 dict(h0=tf.zeros([3, 3])), dict(bias=tf.zeros([11])),
                 dict(inputs=tf.zeros([4, 2])),
                 dict(peepholes, w_c_if=tf.zeros([3, 3])), dict(peepholes, w_c_o=tf.zeros([3, 6])),
                 dict(peepholes, w_c_if=tf.zeros([6, 3])),
                 dict(w_c_if=peepholes["w_c_if"]), dict(w_c_o=peepholes["w_c_o"])]  # only one
        for change in cases:
            with self.subTest(change=list(change)):
                args = dict(good, **change)
                with self.assertRaises((tf.errors.InvalidArgumentError, ValueError)):
                    fused_rnn.fused_sequence(**args)
        # The kernel's own checks, where shapes are unknown until run: without peepholes the
        # op's peephole inputs must be [0, 0], with them [units, 2 units] and [units, units].
        library = fused_rnn._load()
        unknown = tf.TensorSpec(None, tf.float32)
        forward = tf.function(library.phased_lstm_sequence, input_signature=[unknown] * 8)
        args = list(good.values()) + [tf.zeros([3, 6]), tf.zeros([3, 3])]
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, r"w_c_if must have shape"):
            forward(*args)  # use_peepholes false: the peephole inputs must be [0, 0]
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, r"w_c_o must have shape"):
            tf.function(lambda *a: library.phased_lstm_sequence(*a, use_peepholes=True),
                        input_signature=[unknown] * 8)(*args[:7], tf.zeros([3, 6]))

    def test_fused_true_refuses_what_the_kernel_cannot_run(self):
        time = np.zeros([1, 5, 1], np.float32)
        with tf.Graph().as_default():
            with self.assertRaisesRegex(ValueError, r"fused=True.*float16"):
                phased_lstm_rnn(PhasedLSTMCell(3, dtype=tf.float16), time,
                                tf.zeros([2, 5, 1], tf.float16), fused=True)

    def test_the_graph_runs_the_fused_op_exactly_when_available(self):
        for peepholes in (False, True):
            with tf.Graph().as_default() as graph:
                phased_lstm_rnn(PhasedLSTMCell(3, use_peepholes=peepholes), tf.zeros([1, 5, 1]),
                                tf.zeros([2, 5, 1]))
                ops = {op.type: op for op in graph.get_operations()}
            self.assertEqual("PhasedLSTMSequence" in ops, fused_kernel_available())
            self.assertEqual("While" in ops or "StatelessWhile" in ops,
                             not fused_kernel_available())
            if fused_kernel_available():
                op = ops["PhasedLSTMSequence"]
                self.assertEqual(op.get_attr("use_peepholes"), peepholes)


# Run in a fresh process: which path runs is decided once per process.
_FALLBACK_SCRIPT = textwrap.dedent("""
    import numpy as np
    import numpy_reference as ref
    from phased_lstm import PhasedLSTMCell, tf
    from phased_lstm.fast_rnn import fused_kernel_available, phased_lstm_rnn
    from tf_helpers import load_params

    rng = np.random.default_rng(0)
    params = ref.random_phased_lstm_params(rng, 2, 4, False)
    times, x = ref.random_times(rng, 3, 8), rng.normal(size=(3, 8, 2))
    with tf.Graph().as_default() as graph:
        cell = PhasedLSTMCell(4, dtype=tf.float64)
        outputs, _ = phased_lstm_rnn(cell, tf.constant(times), tf.constant(x))
        grads = tf.gradients(tf.reduce_sum(outputs), cell.weights)
        assert "PhasedLSTMSequence" not in {op.type for op in graph.get_operations()}
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            load_params(sess, cell, params)
            outputs, grads = sess.run((outputs, grads))
    want, _ = ref.run_sequence(ref.phased_lstm_step, params, times, x,
                               (np.zeros((3, 4)),) * 2, use_peepholes=False, leak=0.001)
    assert np.allclose(outputs, want, atol=1e-12), abs(outputs - want).max()
    assert all(np.all(np.isfinite(g)) for g in grads)
    print("available", fused_kernel_available(), flush=True)
""")


def _run_fallback_script(test, **environment):
    env = {name: value for name, value in os.environ.items()
           if name not in (fused_rnn.FUSED_ENV, op_library.CXX_ENV, op_library.CACHE_DIR_ENV)}
    env.update(PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "tests")]),
               TF_CPP_MIN_LOG_LEVEL="2", **environment)
    result = subprocess.run([sys.executable, "-c", _FALLBACK_SCRIPT], env=env,
                            capture_output=True, text=True, timeout=600)
    test.assertEqual(result.returncode, 0, msg=result.stderr[-3000:])
    test.assertIn("available False", result.stdout)
    return [line for line in result.stderr.splitlines()
            if "fused sequence kernel is not available" in line]


class FallbackTest(tf.test.TestCase):

    def test_failed_build_warns_once_and_runs_the_pure_path(self):
        cache = temp_dir(self)
        warnings = _run_fallback_script(self, PHASED_LSTM_CXX="/nonexistent/c++",
                                        PHASED_LSTM_KERNEL_CACHE=cache)
        self.assertLen(warnings, 1)
        self.assertIn("/nonexistent/c++", warnings[0])
        self.assertIn("pure-TensorFlow path", warnings[0])
        self.assertIn(op_library.REBUILD_COMMAND, warnings[0])
        log = [name for name in os.listdir(cache) if name.endswith(".log")]
        self.assertLen(log, 1)
        self.assertIn(os.path.join(cache, log[0]), warnings[0])
        self.assertFalse([name for name in os.listdir(cache) if name.endswith(".so")])

    def test_a_failed_build_is_remembered_by_the_next_process(self):
        cache, bin_dir = temp_dir(self), temp_dir(self)
        calls = os.path.join(bin_dir, "calls")
        # A compiler that runs and fails, as one meeting a broken header would; it counts calls.
        stub = write(os.path.join(bin_dir, "c++"), f"#!/bin/sh\necho x >> {calls}\nexit 1\n")
        os.chmod(stub, 0o755)
        environment = dict(PHASED_LSTM_CXX=stub, PHASED_LSTM_KERNEL_CACHE=cache)

        first = _run_fallback_script(self, **environment)
        self.assertLen(first, 1)
        self.assertIn("failed (exit status 1)", first[0])
        self.assertIn(op_library.REBUILD_COMMAND, first[0])
        with open(calls) as f:
            tried = len(f.readlines())
        self.assertLen(op_library.build_ladder(), tried)  # each rung once
        self.assertFalse([name for name in os.listdir(cache) if ".so" in name])

        second = _run_fallback_script(self, **environment)
        self.assertLen(second, 1)
        self.assertIn("failed on this machine before", second[0])
        with open(calls) as f:
            self.assertLen(f.readlines(), tried)  # the compiler was not called again

    def test_environment_variable_forces_the_pure_path_without_building(self):
        cache = temp_dir(self)
        warnings = _run_fallback_script(self, PHASED_LSTM_FUSED="0",
                                        PHASED_LSTM_KERNEL_CACHE=cache,
                                        PHASED_LSTM_CXX="/nonexistent/c++")
        self.assertEmpty(warnings)
        self.assertEmpty(os.listdir(cache))


if __name__ == "__main__":
    tf.test.main()
