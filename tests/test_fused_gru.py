"""phased_gru_rnn and the fused Phased GRU op against PhasedGRUCell under dynamic_rnn.

The reference is the cell's own step under `dynamic_rnn(cell, (time, inputs))` (whose gradients
are TensorFlow's autodiff), the float64 NumPy reference of tests/numpy_reference_gru.py, and
finite differences. The fused kernel is built on first use and cached. Where a compiler is
present and the build fails, the fused tests fail with the compiler's log; they skip only where
there is no compiler or PHASED_LSTM_FUSED=0. The TensorFlow-loop tests run everywhere.
"""

import os
import shutil
import subprocess
import sys
import textwrap
from unittest import mock

import numpy as np

import numpy_reference as ref
import numpy_reference_gru as gru_ref
from phased_lstm import PhasedGRUCell, PhasedLSTMCell, fused_rnn, op_library, tf
from phased_lstm.fast_rnn import describe_path, phased_gru_rnn, runs_fused_kernel
from test_phased_gru_cell import load_gru_params

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (batch, steps, input_size, units): odd sizes, a batch split between two threads (37), one
# that is not (3), a single step, and more inputs than units.
SHAPES = [(37, 19, 3, 5), (3, 1, 1, 4), (9, 23, 7, 2)]


def _require_kernel(test):
    """Fails where the kernel should build and did not; skips only where it is turned off or
    there is no compiler at all (the TensorFlow-loop tests cover those machines)."""
    if fused_rnn.fused_gru_kernel_available():
        return
    if fused_rnn.disabled():
        test.skipTest(f"{fused_rnn.FUSED_ENV}=0 turns the fused kernels off")
    if shutil.which(op_library.compiler()[0]) is None:
        test.skipTest(f"no C++ compiler {op_library.compiler()[0]!r} to build the fused kernel")
    failure = fused_rnn.GRU.failure()
    log = ""
    if failure is not None and failure.log_path and os.path.exists(failure.log_path):
        with open(failure.log_path) as f:
            log = f.read()[-4000:]
    test.fail(f"a C++ compiler is here but the fused GRU kernel did not build: {failure}\n{log}")


def _run_paths(seed, batch, steps, input_size, units, dtype, shared_time, with_lengths,
               with_initial_state, leaks, mod_gradient="tf1", paths=("dynamic_rnn", True)):
    """Outputs, final h and the gradients of everything, for each path.

    paths: "dynamic_rnn" for `dynamic_rnn(cell, (time, inputs))`, else phased_gru_rnn's `fused`.

    Returns {(path, leak): (names, values)}: values are outputs, h, then the gradients of the
    cell's variables, the inputs, the time and (with_initial_state) h0, in the order of names.
    """
    rng = np.random.default_rng(seed)
    params = gru_ref.random_phased_gru_params(rng, input_size, units)
    times = ref.random_times(rng, 1 if shared_time else batch, steps)
    x = rng.normal(size=(batch, steps, input_size))
    lengths = rng.integers(0, steps + 1, batch) if with_lengths else None
    h0 = rng.normal(size=(batch, units))
    weights = rng.normal(size=(batch, steps, units))
    results = {}
    for path in paths:
        with tf.Graph().as_default():
            leak = tf.compat.v1.placeholder_with_default(tf.constant(0.001, dtype), [])
            cell = PhasedGRUCell(units, leak=leak, dtype=dtype, mod_gradient=mod_gradient)
            # float64 time for float32 cells too where the cell is float64: the gate is computed
            # in the time's dtype.
            time_t = tf.constant(times, tf.float64 if dtype == tf.float64 else tf.float32)
            x_t = tf.constant(x, dtype)
            initial = tf.constant(h0, dtype) if with_initial_state else None
            if path == "dynamic_rnn":  # which wants the time at full batch size
                time_in = tf.tile(time_t, [batch // time_t.shape[0], 1, 1])
                outputs, h = tf.compat.v1.nn.dynamic_rnn(
                    cell, (time_in, x_t), lengths, initial_state=initial, dtype=dtype)
            else:
                outputs, h = phased_gru_rnn(cell, time_t, x_t, lengths, initial_state=initial,
                                            fused=path)
            loss = tf.reduce_sum(outputs * weights) + tf.reduce_sum(tf.sin(h) * h)
            sources = cell.weights + [x_t, time_t] + ([initial] if with_initial_state else [])
            names = [v.name for v in cell.weights] + ["inputs", "time"] + (
                ["h0"] if with_initial_state else [])
            grads = tf.gradients(loss, sources)
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                load_gru_params(sess, cell, params)
                for value in leaks:
                    results[path, value] = names, sess.run([outputs, h] + grads, {leak: value})
    return results


class FusedGRUMatchesDynamicRnnTest(tf.test.TestCase):

    def _assert_paths_agree(self, results, path, leaks, tolerance):
        for leak in leaks:
            (names, want_values), (got_names, got_values) = (results["dynamic_rnn", leak],
                                                             results[path, leak])
            self.assertEqual(got_names, names)  # the same variables: one checkpoint serves both
            for name, want, got in zip(["outputs", "h"] + names, want_values, got_values):
                self.assertIsNotNone(got, msg=name)
                self.assertAllClose(got, want, atol=tolerance, rtol=tolerance,
                                    msg=f"{name}, leak {leak}, fused {path}")
        if len(leaks) > 1:  # the leak changes the results: each value is checked, not one twice
            self.assertNotAllClose(results[path, leaks[0]][1][0], results[path, leaks[1]][1][0])

    def test_fused_float32_and_float64_per_sample_and_shared_time(self):
        _require_kernel(self)
        for dtype, tolerance in ((tf.float32, 1e-4), (tf.float64, 1e-10)):
            for seed, shape in enumerate(SHAPES):
                for shared_time in (False, True):
                    with self.subTest(dtype=dtype.name, shape=shape, shared_time=shared_time):
                        results = _run_paths(seed, *shape, dtype, shared_time,
                                             with_lengths=seed % 2 == 0,
                                             with_initial_state=seed != 1, leaks=(0.0, 0.001))
                        self._assert_paths_agree(results, True, (0.0, 0.001), tolerance)

    def test_both_mod_gradient_rules(self):
        # The period's gradient differs between the rules; the fused path follows each.
        _require_kernel(self)
        periods = {}
        for mod_gradient in ("tf1", "exact"):
            with self.subTest(mod_gradient=mod_gradient):
                results = _run_paths(20, 11, 40, 2, 3, tf.float64, shared_time=False,
                                     with_lengths=True, with_initial_state=True, leaks=(0.001,),
                                     mod_gradient=mod_gradient)
                self._assert_paths_agree(results, True, (0.001,), 1e-10)
                names, values = results[True, 0.001]
                periods[mod_gradient] = values[2 + names.index("rnn/phased_gru_cell/period:0")]
        self.assertNotAllClose(periods["tf1"], periods["exact"])

    def test_the_tensorflow_loop_matches_too(self):
        # fused=False: phased_gru_rnn's reference path, on every machine.
        for dtype, tolerance in ((tf.float32, 1e-4), (tf.float64, 1e-10)):
            for shared_time in (False, True):
                with self.subTest(dtype=dtype.name, shared_time=shared_time):
                    results = _run_paths(3, *SHAPES[0], dtype, shared_time, with_lengths=True,
                                         with_initial_state=True, leaks=(0.0, 0.001),
                                         paths=("dynamic_rnn", False))
                    self._assert_paths_agree(results, False, (0.0, 0.001), tolerance)

    def test_matches_the_numpy_reference(self):
        rng = np.random.default_rng(11)
        batch, steps, input_size, units = 20, 30, 2, 7
        params = gru_ref.random_phased_gru_params(rng, input_size, units)
        times = ref.random_times(rng, batch, steps)
        x = rng.normal(size=(batch, steps, input_size))
        lengths = [steps, 5, 0, 17] * 5
        want, (want_h,) = ref.run_sequence(gru_ref.phased_gru_step, params, times, x,
                                           (np.zeros((batch, units)),), lengths, leak=0.001)
        for fused in ((True, False) if fused_rnn.fused_gru_kernel_available() else (False,)):
            with tf.Graph().as_default():
                cell = PhasedGRUCell(units, dtype=tf.float64)
                outputs, h = phased_gru_rnn(cell, tf.constant(times), tf.constant(x), lengths,
                                            fused=fused)
                with tf.compat.v1.Session() as sess:
                    sess.run(tf.compat.v1.global_variables_initializer())
                    load_gru_params(sess, cell, params)
                    outputs, h = sess.run((outputs, h))
            self.assertAllClose(outputs, want, atol=1e-12, msg=f"fused {fused}")
            self.assertAllClose(h, want_h, atol=1e-12, msg=f"fused {fused}")

    def test_gradients_of_the_timing_against_the_numpy_reference(self):
        # Every variable's gradient (the timing variables' through TensorFlow's gate) against
        # the NumPy reference's finite differences, under both rules.
        _require_kernel(self)
        rng = np.random.default_rng(7)
        batch, steps, input_size, units = 4, 10, 3, 5
        params = gru_ref.random_phased_gru_params(rng, input_size, units)
        times = ref.random_times(rng, batch, steps)
        x = rng.normal(size=(batch, steps, input_size))
        weights = rng.normal(size=(batch, steps, units))
        for mod_gradient in ("tf1", "exact"):
            with tf.Graph().as_default():
                cell = PhasedGRUCell(units, dtype=tf.float64, mod_gradient=mod_gradient)
                outputs, h = phased_gru_rnn(cell, tf.constant(times), tf.constant(x), fused=True)
                loss = tf.reduce_sum(outputs * weights) + tf.reduce_sum(h * h)
                variables = {key: v for v in cell.weights for key in gru_ref.GRU_PARAM_NAMES
                             if v.name.split(":")[0].endswith("/" + key)}
                grads = dict(zip(variables, tf.gradients(loss, list(variables.values()))))
                with tf.compat.v1.Session() as sess:
                    sess.run(tf.compat.v1.global_variables_initializer())
                    load_gru_params(sess, cell, params)
                    analytic = sess.run(grads)
            numeric = ref.gradient_reference(
                gru_ref.phased_gru_step, params, times, x, (np.zeros((batch, units)),),
                lambda out, state: np.sum(out * weights) + np.sum(state[0] ** 2), mod_gradient,
                leak=0.001)
            for key in gru_ref.GRU_PARAM_NAMES:
                self.assertAllClose(analytic[key], numeric[key], rtol=1e-5, atol=1e-7,
                                    msg=f"{key}, {mod_gradient}")

    def test_op_gradients_match_finite_differences(self):
        _require_kernel(self)
        rng = np.random.default_rng(6)
        batch, steps, input_size, units = 17, 6, 2, 3
        x = rng.normal(size=(steps, batch, input_size))
        h0 = rng.normal(size=(batch, units))
        kernel = rng.normal(size=(input_size + units, 3 * units))
        bias = rng.normal(size=(3 * units,))

        def loss(*args):
            h_seq, h = fused_rnn.fused_gru_sequence(*args)
            return tf.reduce_sum(tf.sin(h_seq)) + tf.reduce_sum(h * h)

        # k per example, then shared by the batch (dk summed over it).
        for k in (rng.uniform(size=(steps, batch, units)), rng.uniform(size=(steps, 1, units))):
            case = [x, k, h0, kernel, bias]
            theoretical, numerical = tf.test.compute_gradient(
                loss, [tf.constant(v) for v in case], delta=1e-5)
            self.assertLen(theoretical, len(case))
            for name, got, want in zip(["x", "k", "h0", "kernel", "bias"], theoretical,
                                       numerical):
                self.assertAllClose(got, want, atol=1e-6, rtol=1e-6,
                                    msg=f"{name}, k {k.shape}")

    def test_eager_tape_and_tf_function_give_the_graph_gradients(self):
        _require_kernel(self)
        rng = np.random.default_rng(5)
        batch, steps, input_size, units = 18, 9, 3, 4
        inputs = [tf.constant(rng.normal(size=(steps, batch, input_size))),
                  tf.constant(rng.uniform(size=(steps, 1, units))),
                  tf.constant(rng.normal(size=(batch, units))),
                  tf.constant(rng.normal(size=(input_size + units, 3 * units))),
                  tf.constant(rng.normal(size=(3 * units,)))]

        def loss_and_grads():
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                h_seq, h = fused_rnn.fused_gru_sequence(*inputs)
                loss = tf.reduce_sum(tf.tanh(h_seq)) + tf.reduce_sum(h * h)
            return [loss] + tape.gradient(loss, inputs)

        eager = loss_and_grads()
        traced = tf.function(loss_and_grads)()
        with tf.Graph().as_default():
            constants = [tf.constant(value.numpy()) for value in inputs]
            h_seq, h = fused_rnn.fused_gru_sequence(*constants)
            loss = tf.reduce_sum(tf.tanh(h_seq)) + tf.reduce_sum(h * h)
            with tf.compat.v1.Session() as sess:
                graph = sess.run([loss] + tf.gradients(loss, constants))
        for name, want, got_eager, got_traced in zip(
                ["loss", "x", "k", "h0", "kernel", "bias"], graph, eager, traced):
            self.assertIsNotNone(got_eager, msg=name)
            self.assertAllClose(got_eager, want, atol=1e-12, msg=name)
            self.assertAllClose(got_traced, want, atol=1e-12, msg=name)
        self.assertEqual(eager[2].shape, inputs[1].shape)  # dk summed over the shared batch

    def test_zero_steps_keep_the_initial_state(self):
        _require_kernel(self)
        h0 = tf.constant(np.arange(6.0).reshape(2, 3), tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(h0)
            h_seq, h = fused_rnn.fused_gru_sequence(tf.zeros([0, 2, 1]), tf.zeros([0, 1, 3]), h0,
                                                    tf.ones([4, 9]), tf.zeros([9]))
            loss = tf.reduce_sum(h * 3.0)
        self.assertEqual(h_seq.shape, (0, 2, 3))
        self.assertAllEqual(h, h0)
        self.assertAllEqual(tape.gradient(loss, h0), np.full((2, 3), 3.0))

    def test_bad_shapes_are_refused_by_the_op(self):
        _require_kernel(self)
        good = dict(inputs=tf.zeros([4, 2, 1]), k=tf.zeros([4, 1, 3]), h0=tf.zeros([2, 3]),
                    kernel=tf.zeros([4, 9]), bias=tf.zeros([9]))
        cases = [dict(k=tf.zeros([4, 3, 3])), dict(k=tf.zeros([5, 1, 3])),
                 dict(kernel=tf.zeros([5, 9])), dict(kernel=tf.zeros([4, 12])),
                 dict(h0=tf.zeros([3, 3])), dict(bias=tf.zeros([8])),
                 dict(inputs=tf.zeros([4, 2]))]
        for change in cases:
            with self.subTest(change=list(change)):
                with self.assertRaises((tf.errors.InvalidArgumentError, ValueError)):
                    fused_rnn.fused_gru_sequence(**dict(good, **change))
        # The kernel's own checks, where shapes are unknown until the op runs.
        library = fused_rnn.GRU.load()
        unknown = tf.TensorSpec(None, tf.float32)
        forward = tf.function(library.phased_gru_sequence, input_signature=[unknown] * 5)
        args = list(good.values())
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    r"PhasedGRUSequence: inconsistent shapes"):
            forward(*args[:3], tf.zeros([4, 12]), args[4])
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, r"bias must have shape"):
            forward(*args[:4], tf.zeros([8]))
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, r"PhasedGRUSequence expects"):
            forward(tf.zeros([4, 2]), *args[1:])


class PhasedGRURnnTest(tf.test.TestCase):

    def test_variables_and_checkpoints_are_dynamic_rnns(self):
        # A checkpoint written under dynamic_rnn restores into phased_gru_rnn's graph (both
        # paths), and gives the same outputs.
        rng = np.random.default_rng(2)
        times, x = ref.random_times(rng, 3, 12), rng.normal(size=(3, 12, 2)).astype(np.float32)
        prefix = os.path.join(self.get_temp_dir(), "ckpt")
        with tf.Graph().as_default():
            cell = PhasedGRUCell(4)
            want, _ = tf.compat.v1.nn.dynamic_rnn(cell, (times.astype(np.float32), x),
                                                  dtype=tf.float32)
            names = sorted(v.name for v in tf.compat.v1.global_variables())
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                want = sess.run(want)
                tf.compat.v1.train.Saver().save(sess, prefix)
        for fused in (None, False):
            with tf.Graph().as_default():
                outputs, _ = phased_gru_rnn(PhasedGRUCell(4), times.astype(np.float32), x,
                                            fused=fused)
                self.assertEqual(sorted(v.name for v in tf.compat.v1.global_variables()), names)
                with tf.compat.v1.Session() as sess:
                    tf.compat.v1.train.Saver().restore(sess, prefix)
                    self.assertAllClose(sess.run(outputs), want, atol=1e-5, msg=f"fused {fused}")

    def test_integer_and_per_unit_time(self):
        rng = np.random.default_rng(4)
        batch, steps, units = 4, 25, 5
        times = ref.random_times(rng, batch, steps)
        x = rng.normal(size=(batch, steps, 3))
        cases = [(np.round(times * 3), tf.int32),
                 (times + rng.uniform(0, 10, (1, 1, units)), tf.float64)]
        for case_times, time_dtype in cases:
            with tf.Graph().as_default():
                cell = PhasedGRUCell(units, period_init_max=30.0, ratio_on=0.3)
                time_t, x_t = tf.constant(case_times, time_dtype), tf.constant(x, tf.float32)
                want, _ = tf.compat.v1.nn.dynamic_rnn(cell, (time_t, x_t), dtype=tf.float32)
                got = [phased_gru_rnn(cell, time_t, x_t, fused=fused)[0]
                       for fused in (None, False)]
                with tf.compat.v1.Session() as sess:
                    sess.run(tf.compat.v1.global_variables_initializer())
                    want, got = sess.run((want, got))
            for outputs in got:
                self.assertAllClose(outputs, want, atol=1e-5, msg=time_dtype.name)

    def test_the_graph_runs_the_fused_op_exactly_when_available(self):
        with tf.Graph().as_default() as graph:
            cell = PhasedGRUCell(3)
            phased_gru_rnn(cell, tf.zeros([1, 5, 1]), tf.zeros([2, 5, 1]))
            ops = {op.type for op in graph.get_operations()}
            runs, description = runs_fused_kernel(cell), describe_path(cell)
        available = fused_rnn.fused_gru_kernel_available()
        self.assertEqual("PhasedGRUSequence" in ops, available)
        self.assertEqual("While" in ops or "StatelessWhile" in ops, not available)
        self.assertEqual(runs, available)
        self.assertTrue(description.startswith(
            "phased_gru_rnn runs the fused kernel (" if available
            else "phased_gru_rnn runs its TensorFlow loop"), msg=description)

    def test_a_recurrence_placed_on_a_gpu_runs_the_tensorflow_loop(self):
        gpu = [tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")]
        available = fused_rnn.fused_gru_kernel_available()
        for device, gpus, want_fused in ((None, [], available), (None, gpu, False),
                                         ("/cpu:0", gpu, available), ("/gpu:0", [], False)):
            with mock.patch.object(tf.config, "get_visible_devices", return_value=gpus), \
                    tf.Graph().as_default() as graph, tf.device(device):
                cell = PhasedGRUCell(3)
                phased_gru_rnn(cell, tf.zeros([1, 5, 1]), tf.zeros([2, 5, 1]))
                description = describe_path(cell)
            ops = {op.type for op in graph.get_operations()}
            self.assertEqual("PhasedGRUSequence" in ops, want_fused, msg=f"{device}, {gpus}")
            if available and not want_fused:
                self.assertIn("the fused kernel runs on the CPU only", description)

    def test_fused_true_refuses_what_the_kernel_cannot_run(self):
        with tf.Graph().as_default():
            with self.assertRaisesRegex(ValueError, r"fused=True.*float16"):
                phased_gru_rnn(PhasedGRUCell(3, dtype=tf.float16), np.zeros([1, 5, 1]),
                               tf.zeros([2, 5, 1], tf.float16), fused=True)

    def test_bad_inputs(self):
        with tf.Graph().as_default():
            x = tf.zeros([2, 7, 1])
            with self.assertRaisesRegex(TypeError, r"runs a PhasedGRUCell; got PhasedLSTMCell"):
                phased_gru_rnn(PhasedLSTMCell(3), tf.zeros([2, 7, 1]), x)
            cell = PhasedGRUCell(3)
            with self.assertRaisesRegex(ValueError, r"time must have shape"):
                phased_gru_rnn(cell, tf.zeros([2, 7]), x)
            with self.assertRaisesRegex(ValueError, r"same number of steps"):
                phased_gru_rnn(cell, tf.zeros([2, 6, 1]), x)
            with self.assertRaisesRegex(ValueError, r"inputs must have shape"):
                phased_gru_rnn(cell, tf.zeros([2, 7, 1]), tf.zeros([2, 7]))


# Run in a fresh process: which path runs is decided once per process.
_FALLBACK_SCRIPT = textwrap.dedent("""
    import numpy as np
    import numpy_reference as ref
    import numpy_reference_gru as gru_ref
    from phased_lstm import PhasedGRUCell, fused_rnn, tf
    from phased_lstm.fast_rnn import describe_path, phased_gru_rnn
    from test_phased_gru_cell import load_gru_params

    rng = np.random.default_rng(0)
    params = gru_ref.random_phased_gru_params(rng, 2, 4)
    times, x = ref.random_times(rng, 3, 8), rng.normal(size=(3, 8, 2))
    with tf.Graph().as_default() as graph:
        cell = PhasedGRUCell(4, dtype=tf.float64)
        outputs, _ = phased_gru_rnn(cell, tf.constant(times), tf.constant(x))
        grads = tf.gradients(tf.reduce_sum(outputs), cell.weights)
        assert "PhasedGRUSequence" not in {op.type for op in graph.get_operations()}
        print(describe_path(cell), flush=True)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            load_gru_params(sess, cell, params)
            outputs, grads = sess.run((outputs, grads))
    want, _ = ref.run_sequence(gru_ref.phased_gru_step, params, times, x, (np.zeros((3, 4)),),
                               leak=0.001)
    assert np.allclose(outputs, want, atol=1e-12), abs(outputs - want).max()
    assert all(np.all(np.isfinite(g)) for g in grads)
    print("available", fused_rnn.fused_gru_kernel_available(), flush=True)
""")


class FallbackTest(tf.test.TestCase):

    def _run(self, **environment):
        env = {name: value for name, value in os.environ.items()
               if name not in (fused_rnn.FUSED_ENV, op_library.CXX_ENV, op_library.CACHE_DIR_ENV)}
        env.update(PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "tests")]),
                   TF_CPP_MIN_LOG_LEVEL="2", **environment)
        result = subprocess.run([sys.executable, "-c", _FALLBACK_SCRIPT], env=env,
                                capture_output=True, text=True, timeout=600)
        self.assertEqual(result.returncode, 0, msg=result.stderr[-3000:])
        self.assertIn("available False", result.stdout)
        warnings = [line for line in result.stderr.splitlines()
                    if "fused sequence kernel is not available" in line]
        return result.stdout, warnings

    def test_environment_variable_forces_the_tensorflow_loop_without_building(self):
        cache = self.get_temp_dir()
        stdout, warnings = self._run(PHASED_LSTM_FUSED="0", PHASED_LSTM_KERNEL_CACHE=cache,
                                     PHASED_LSTM_CXX="/nonexistent/c++")
        self.assertEmpty(warnings)
        self.assertIn(f"phased_gru_rnn runs its TensorFlow loop (slower than the fused kernel): "
                      f"{fused_rnn.FUSED_ENV}=0", stdout)
        self.assertFalse([name for name in os.listdir(cache) if "phased_gru" in name])

    def test_failed_build_warns_once_and_runs_the_tensorflow_loop(self):
        cache = os.path.join(self.get_temp_dir(), "failed_build")
        stdout, warnings = self._run(PHASED_LSTM_CXX="/nonexistent/c++",
                                     PHASED_LSTM_KERNEL_CACHE=cache)
        self.assertLen(warnings, 1)
        self.assertIn("Phased GRU: the fused sequence kernel is not available", warnings[0])
        self.assertIn("/nonexistent/c++", warnings[0])
        self.assertIn("phased_gru_rnn uses its pure-TensorFlow path", warnings[0])
        self.assertIn(op_library.REBUILD_COMMAND, warnings[0])
        self.assertIn("phased_gru_rnn runs its TensorFlow loop", stdout)
        self.assertTrue([name for name in os.listdir(cache)
                         if name.startswith("phased_gru_sequence") and name.endswith(".failed")])


if __name__ == "__main__":
    tf.test.main()
