"""The fused time-gate kernel (PhasedTimeGate) against TensorFlow's gate, and its fallback.

The forward-only sequence paths compute k with it, so its values must be TensorFlow's bit for
bit (an evaluation on them gives the training graph's numbers): every dtype pair, timestamps
per example, shared and per unit, padding, negative phases and times, times many periods on
(float32 quotients beyond 2**24, where the kernel takes TensorFlow's fmod form), and both
leaks. Like test_fused_rnn.py, these fail where a compiler is present and the kernel does not
build; the fallback test runs everywhere a kernel of the recurrence builds.
"""

import os
import subprocess
import sys
import textwrap
from unittest import mock

import numpy as np

import numpy_reference as ref
from file_helpers import temp_dir, write
from phased_lstm import PhasedGRUCell, PhasedLSTMCell, fused_rnn, op_library, tf
from phased_lstm.fast_rnn import phased_gru_rnn, phased_lstm_rnn
from test_forward_only import _require_gru_kernel
from test_fused_rnn import _require_kernel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DTYPES = (tf.float32, tf.float64)
UNITS = 9


def require_time_gate_kernel(test):
    """Skips or fails as `_require_kernel` does, for the time gate's library."""
    if fused_rnn.TIME_GATE.available():
        return
    _require_kernel(test)  # skips where there is no compiler or PHASED_LSTM_FUSED=0
    test.fail(f"the time gate's kernel did not build: {fused_rnn.TIME_GATE.failure()}")


def _timing(rng):
    """Periods (two below MIN_PERIOD, which the gate clips), phases (some negative) and open
    ratios (two outside [MIN_RATIO_ON, 1]) for UNITS units."""
    period = np.concatenate([[1e-5, 1e-3, 0.37, 1.0], 10.0 ** rng.uniform(-2, 3, UNITS - 4)])
    phase = rng.uniform(-600.0, 600.0, UNITS)
    ratio_on = np.concatenate([[0.0, 1.5, 1.0], rng.uniform(0.01, 0.5, UNITS - 3)])
    return period, phase, ratio_on


def _times(rng, batch, steps, last, period, phase):
    """Timestamps [batch, steps, last]: negative and positive, on and next to a wrap, and far
    beyond (up to 1e7 periods of 1 ms)."""
    shape = (batch, steps, last)
    times = rng.uniform(-5000.0, 5000.0, shape)
    times[:, ::3] = rng.uniform(1e6, 1e7, shape)[:, ::3]
    # The unit whose wraps a timestamp is placed on: its own where time is per unit.
    unit = (np.broadcast_to(np.arange(UNITS), shape) if last == UNITS
            else rng.integers(0, UNITS, shape))
    on_wrap = phase[unit] + rng.integers(-50, 50, shape) * period[unit]  # x = n periods
    times[:, 1::3] = on_wrap[:, 1::3]
    times[:, 2::6] = np.nextafter(phase[unit], -np.inf)[:, 2::6]  # x just below 0
    return times


def _gate_cell(period, phase, ratio_on, dtype, leak):
    cell = PhasedLSTMCell(
        UNITS, leak=leak, dtype=dtype,
        period_initializer=tf.compat.v1.constant_initializer(period),
        phase_initializer=tf.compat.v1.constant_initializer(phase),
        ratio_on_initializer=tf.compat.v1.constant_initializer(ratio_on))
    cell.build_for(1, dtype)
    return cell


class FusedTimeGateTest(tf.test.TestCase):

    def test_the_kernel_gives_tensorflows_gate_bit_for_bit(self):
        require_time_gate_kernel(self)
        rng = np.random.default_rng(0)
        period, phase, ratio_on = _timing(rng)
        batch, steps = 6, 30
        lengths = np.array([30, 0, 7, 29, 1, 35])
        for time_dtype in DTYPES:
            for dtype in DTYPES:
                with tf.Graph().as_default():
                    leak = tf.compat.v1.placeholder_with_default(tf.constant(0.001, dtype), [])
                    cell = _gate_cell(period, phase, ratio_on, dtype, leak)
                    pairs = {}
                    for layout, shape in (("per example", (batch, steps, 1)),
                                          ("shared", (1, steps, 1)),
                                          ("per unit", (batch, steps, UNITS))):
                        time = tf.constant(_times(rng, *shape, period, phase), time_dtype)
                        for padded in (False, True):
                            for gate_leak in (None, 0.0, 0.25):  # None: the cell's tensor
                                want = tf.transpose(cell.time_gate(time, dtype, gate_leak),
                                                    [1, 0, 2])
                                live = None
                                if padded:
                                    live = tf.sequence_mask(lengths, steps)
                                    want *= tf.cast(tf.transpose(live), dtype)[:, :, None]
                                got = cell.time_gate.forward_only(time, dtype, gate_leak, live)
                                pairs[layout, padded, gate_leak] = (want, got)
                    with tf.compat.v1.Session() as sess:
                        sess.run(tf.compat.v1.global_variables_initializer())
                        for cell_leak in (0.001, 0.0):
                            values = sess.run(pairs, {leak: cell_leak})
                            for case, (want, got) in values.items():
                                msg = (f"{case}, time {time_dtype.name}, gate {dtype.name}, "
                                       f"cell leak {cell_leak}")
                                self.assertEqual(got.dtype, dtype.as_numpy_dtype, msg=msg)
                                self.assertEqual(got.shape, want.shape, msg=msg)
                                self.assertAllEqual(got, want, msg=msg)

    def test_the_kernel_follows_the_numpy_equations(self):
        # An independent reference (np.mod, float64) where the timing is valid.
        require_time_gate_kernel(self)
        rng = np.random.default_rng(1)
        period = 10.0 ** rng.uniform(0, 3, UNITS)
        phase = rng.uniform(-100.0, 100.0, UNITS)
        ratio_on = rng.uniform(0.01, 0.5, UNITS)
        times = np.cumsum(rng.uniform(0.0, 50.0, (4, 20, 1)), axis=1) - 300.0
        with tf.Graph().as_default():
            cell = _gate_cell(period, phase, ratio_on, tf.float64, 0.001)
            k = cell.time_gate.forward_only(times, tf.float64)
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                k = sess.run(k)
        want = ref.time_gate(times, period, phase, ratio_on, 0.001)
        self.assertAllClose(k, want.transpose(1, 0, 2), rtol=1e-12, atol=1e-12)

    def test_the_forward_only_paths_run_it_and_training_does_not(self):
        require_time_gate_kernel(self)
        _require_gru_kernel(self)
        rng = np.random.default_rng(2)
        time = np.cumsum(rng.uniform(0.1, 3.0, (4, 6, 1)), axis=1)
        x = rng.normal(size=(4, 6, 2)).astype(np.float32)
        lengths = [6, 0, 3, 5]
        for make, run in ((lambda: PhasedLSTMCell(3, use_peepholes=True), phased_lstm_rnn),
                          (lambda: PhasedGRUCell(3), phased_gru_rnn)):
            for forward_only, fused in ((True, None), (False, None), (True, False)):
                with tf.Graph().as_default() as graph:
                    run(make(), time, x, lengths, fused=fused, forward_only=forward_only)
                    ops = {op.type for op in graph.get_operations()}
                case = f"{run.__name__}, forward_only {forward_only}, fused {fused}"
                uses_kernel = forward_only and fused is None
                self.assertEqual("PhasedTimeGate" in ops, uses_kernel, msg=case)
                self.assertEqual("FloorMod" in ops, not uses_kernel, msg=case)

    def test_with_the_fused_kernels_off_tensorflow_computes_the_gate(self):
        with mock.patch.dict(os.environ, {fused_rnn.FUSED_ENV: "0"}):
            with tf.Graph().as_default() as graph:
                phased_lstm_rnn(PhasedLSTMCell(3), np.zeros([1, 5, 1], np.float32),
                                np.ones([2, 5, 1], np.float32), forward_only=True)
            ops = {op.type for op in graph.get_operations()}
        self.assertNotIn("PhasedTimeGate", ops)
        self.assertIn("FloorMod", ops)

    def test_a_gradient_through_it_raises(self):
        require_time_gate_kernel(self)
        with tf.Graph().as_default():
            cell = _gate_cell(*_timing(np.random.default_rng(3)), tf.float32, 0.001)
            k = cell.time_gate.forward_only(np.ones([2, 4, 1], np.float32), tf.float32)
            with self.assertRaisesRegex(fused_rnn.ForwardOnlyGradientError,
                                        r"PhasedTimeGate.*forward_only=False"):
                tf.gradients(tf.reduce_sum(k), [cell.time_gate.period])

    def test_bad_input_is_refused(self):
        require_time_gate_kernel(self)
        cell = _gate_cell(*_timing(np.random.default_rng(4)), tf.float64, 0.001)
        gate = cell.time_gate
        time = np.ones([2, 4, 1])
        for bad in (np.nan, np.inf):
            time[1, 2, 0] = bad
            with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                        "every timestamp must be finite"):
                gate.forward_only(time, tf.float64)
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "live must be"):
            gate.forward_only(np.ones([2, 4, 1]), tf.float64, live=tf.ones([3, 4], tf.bool))
        with self.assertRaisesRegex((ValueError, tf.errors.InvalidArgumentError),
                                    "1 or units|Dimension"):
            gate.forward_only(np.ones([2, 4, 2]), tf.float64)


# A compiler that "builds" the Phased LSTM's library by copying this process's build and fails
# on the time gate's: the recurrence's forward-only op runs, after TensorFlow's gate.
_FALLBACK_SCRIPT = textwrap.dedent("""
    import numpy as np
    from phased_lstm import PhasedLSTMCell, fused_rnn, tf
    from phased_lstm.fast_rnn import phased_lstm_rnn

    rng = np.random.default_rng(0)
    time = np.cumsum(rng.uniform(0.1, 3.0, (5, 8, 1)), axis=1).astype(np.float32)
    x, lengths = rng.normal(size=(5, 8, 2)).astype(np.float32), [8, 0, 3, 8, 1]
    with tf.Graph().as_default() as graph:
        cell = PhasedLSTMCell(4, use_peepholes=True)
        runs = [phased_lstm_rnn(cell, time, x, lengths, forward_only=forward_only)
                for forward_only in (False, True)]
        ops = {op.type for op in graph.get_operations()}
        assert "PhasedLSTMSequenceInference" in ops and "PhasedTimeGate" not in ops, ops
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            (want, _), (got, _) = sess.run(runs)
    assert np.array_equal(want, got), abs(want - got).max()
    print("time gate available", fused_rnn.TIME_GATE.available(), flush=True)
""")


class FallbackTest(tf.test.TestCase):

    def test_a_failed_build_warns_once_and_tensorflow_computes_the_gate(self):
        _require_kernel(self)
        folder = temp_dir(self)
        compiler = write(os.path.join(folder, "c++"), textwrap.dedent(f"""\
            #!/bin/sh
            for word; do
              case "$word" in *phased_time_gate.cc) exit 1;; esac
            done
            while [ $# -gt 0 ]; do [ "$1" = -o ] && out="$2"; shift; done
            cp "{fused_rnn.LSTM.loaded_build().path}" "$out"
            """))
        os.chmod(compiler, 0o755)
        env = {name: value for name, value in os.environ.items()
               if name not in (fused_rnn.FUSED_ENV, op_library.CXX_ENV, op_library.CACHE_DIR_ENV)}
        env.update(PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "tests")]),
                   TF_CPP_MIN_LOG_LEVEL="2", PHASED_LSTM_CXX=compiler,
                   PHASED_LSTM_KERNEL_CACHE=os.path.join(folder, "cache"))
        result = subprocess.run([sys.executable, "-c", _FALLBACK_SCRIPT], env=env,
                                capture_output=True, text=True, timeout=600)
        self.assertEqual(result.returncode, 0, msg=result.stderr[-3000:])
        self.assertIn("time gate available False", result.stdout)
        warnings = [line for line in result.stderr.splitlines() if "is not available" in line]
        self.assertLen(warnings, 1, msg=warnings)
        self.assertIn("Phased time gate: the fused time-gate kernel is not available",
                      warnings[0])
        self.assertIn("failed (exit status 1)", warnings[0])
        self.assertIn(op_library.REBUILD_COMMAND, warnings[0])


if __name__ == "__main__":
    tf.test.main()
