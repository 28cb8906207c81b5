"""TimeGate and its helpers against the float64 NumPy reference (docs/equations.md)."""

import math

import numpy as np

import numpy_reference as ref
from phased_lstm import MIN_PERIOD, MIN_RATIO_ON, TimeGate, exp_uniform_initializer, tf
from phased_lstm import gate_math, time_gate

UNITS = 7


def _timing(rng):
    params = ref.random_phased_lstm_params(rng, 1, UNITS, False)
    return {key: params[key] for key in ("period", "phase", "ratio_on")}


class TimeGateTest(tf.test.TestCase):

    def _gate(self, timing, times, leak=0.001, mod_gradient="tf1"):
        """Builds a float64 TimeGate holding `timing`; returns (k, its variables, session)."""
        gate = TimeGate(UNITS, leak, 0.1, True, 1.0, 1000.0, True, True, None, None, None,
                        mod_gradient)

        def add_weight(name, shape, dtype, initializer, trainable, constraint=None):
            del initializer, trainable, constraint
            return tf.compat.v1.get_variable(name, initializer=timing[name].astype(np.float64),
                                             dtype=dtype)

        gate.build(add_weight, tf.float64)
        k = gate(tf.constant(times, tf.float64), tf.float64)
        sess = tf.compat.v1.Session()
        sess.run(tf.compat.v1.global_variables_initializer())
        return k, {"period": gate.period, "phase": gate.phase, "ratio_on": gate.ratio_on}, sess

    def test_gate_matches_the_reference_in_every_region(self):
        rng = np.random.default_rng(0)
        timing = _timing(rng)
        times = ref.random_times(rng, 4, 50)
        for leak in (0.001, 0.0):
            with tf.Graph().as_default():
                k, _, sess = self._gate(timing, times, leak)
                got = sess.run(k)
            want = ref.time_gate(times, timing["period"], timing["phase"], timing["ratio_on"],
                                 leak)
            self.assertAllClose(got, want, atol=1e-12)
            # The data reach the opening and closing ramps and the closed region.
            phi = np.mod(times - timing["phase"], timing["period"]) / timing["period"]
            self.assertTrue((phi < timing["ratio_on"] / 2).any())
            self.assertTrue(((phi >= timing["ratio_on"] / 2) & (phi < timing["ratio_on"])).any())
            self.assertTrue((phi >= timing["ratio_on"]).any())
        self.assertTrue((got[phi >= timing["ratio_on"]] == 0.0).all())  # leak 0: closed is closed.

    def test_both_mod_gradients_match_finite_differences_of_the_reference(self):
        rng = np.random.default_rng(1)
        timing = _timing(rng)
        times = ref.random_times(rng, 3, 40, start=100.0)  # Many periods elapsed.
        weights = rng.normal(size=(3, 40, UNITS))
        for mod_gradient in ("tf1", "exact"):
            with tf.Graph().as_default():
                k, variables, sess = self._gate(timing, times, mod_gradient=mod_gradient)
                loss = tf.reduce_sum(k * weights)
                grads = sess.run(dict(zip(variables, tf.gradients(loss, list(variables.values())))))
            wraps = (timing["period"], timing["phase"]) if mod_gradient == "tf1" else None

            def reference_loss(p, wraps=wraps):
                return np.sum(weights * ref.time_gate(times, p["period"], p["phase"],
                                                      p["ratio_on"], 0.001, wraps))

            want = ref.numeric_gradients(reference_loss, timing, list(timing))
            for key in timing:
                self.assertAllClose(grads[key], want[key], rtol=1e-5, atol=1e-5, msg=key)
            if mod_gradient == "tf1":
                tf1_period_grad = grads["period"]
        # The exact rule adds -floor(x / tau) to d mod / d tau: a different gradient here.
        self.assertGreater(np.abs(grads["period"] - tf1_period_grad).max(), 1.0)

    def test_cycle_mod_values_and_derivatives(self):
        x = np.array([-7.5, -0.25, 0.0, 3.0, 250.0, 1e7 + 0.5])
        period = np.array([2.0, 3.0, 2.5, 7.0, 3.0, 4.0])
        with tf.Graph().as_default(), self.session() as sess:
            x_t, period_t = tf.constant(x), tf.constant(period)
            for rule, d_period in (("tf1", np.zeros(6)), ("exact", -np.floor(x / period))):
                mod = gate_math.cycle_mod(time_gate.TF_OPS, x_t, period_t, rule)
                grads = tf.gradients(mod, [x_t, period_t], unconnected_gradients="zero")
                value, (dx, dp) = sess.run((mod, grads))
                self.assertAllEqual(value, np.mod(x, period))  # Exact, not rounded.
                self.assertAllEqual(dx, np.ones(6))
                self.assertAllEqual(dp, d_period)
        with self.assertRaisesRegex(ValueError, "mod_gradient must be one of"):
            time_gate.check_mod_gradient("pytorch")

    def test_invalid_timing_is_clipped_to_the_valid_range(self):
        rng = np.random.default_rng(2)
        timing = _timing(rng)
        times = ref.random_times(rng, 2, 30)
        bad = dict(timing, period=timing["period"].copy(), ratio_on=timing["ratio_on"].copy())
        bad["period"][:3] = [0.0, -5.0, 1e-9]
        bad["ratio_on"][3:6] = [0.0, -0.5, 3.0]
        clipped = dict(bad, period=np.maximum(bad["period"], MIN_PERIOD),
                       ratio_on=np.clip(bad["ratio_on"], MIN_RATIO_ON, 1.0))
        with tf.Graph().as_default():
            k, variables, sess = self._gate(bad, times)
            got = sess.run(k)
            projected = sess.run({"period": time_gate.project_period(variables["period"]),
                                  "ratio_on": time_gate.project_ratio_on(variables["ratio_on"])})
        self.assertTrue(np.isfinite(got).all())
        self.assertAllClose(got, ref.time_gate(times, clipped["period"], clipped["phase"],
                                               clipped["ratio_on"], 0.001), atol=1e-9)
        self.assertAllEqual(projected["period"], clipped["period"])
        self.assertAllEqual(projected["ratio_on"], clipped["ratio_on"])

    def test_exp_uniform_initializer_is_log_uniform_on_its_range(self):
        with tf.Graph().as_default(), self.session() as sess:
            tf.compat.v1.set_random_seed(0)
            values = sess.run(exp_uniform_initializer(2.0, 1000.0)([20000], tf.float64))
        self.assertGreaterEqual(values.min(), 2.0)
        self.assertLessEqual(values.max(), 1000.0)
        logs = np.log(values)
        # U(ln 2, ln 1000): mean at the middle of the log range, a tenth in each tenth of it.
        self.assertAllClose(logs.mean(), (math.log(2.0) + math.log(1000.0)) / 2, atol=0.05)
        counts, _ = np.histogram(logs, bins=10, range=(math.log(2.0), math.log(1000.0)))
        self.assertAllClose(counts / values.size, np.full(10, 0.1), atol=0.015)


class IntegerAndPerUnitTimeTest(tf.test.TestCase):
    """TF 1.x's cell took integer time and time [batch, num_units]; so does the gate."""

    def test_integer_time_is_cast_to_float64_exactly(self):
        big = 2**53 - 1  # float64 holds it; float32 would round it to 2**53
        for dtype, values in ((tf.int32, [0, -7, 2**31 - 1]), (tf.int64, [3, big]),
                              (tf.uint8, [0, 255])):
            time = time_gate.float_time(tf.constant(values, dtype))
            self.assertEqual(time.dtype, tf.float64)
            self.assertAllEqual(time.numpy().astype(np.int64), np.array(values, np.int64))
        for dtype in (tf.float32, tf.float64, tf.float16):  # floating time keeps its dtype
            self.assertEqual(time_gate.float_time(tf.zeros([2], dtype)).dtype, dtype)
        for bad in (tf.zeros([2], tf.bool), tf.constant(["1"])):
            with self.assertRaisesRegex(TypeError, rf"time must be numbers.*{bad.dtype.name}"):
                time_gate.float_time(bad)

    def test_integer_time_gives_the_float_gate_and_timing_gradients(self):
        # The gate of integer timestamps equals the reference at the same float times, and its
        # gradients reach the timing variables (TF 1.x cast them to int: none did).
        rng = np.random.default_rng(3)
        timing = _timing(rng)
        times = np.round(ref.random_times(rng, 3, 40, start=100.0) * 3)
        weights = rng.normal(size=(3, 40, UNITS))
        with tf.Graph().as_default():
            gate = TimeGate(UNITS, 0.001, 0.1, True, 1.0, 1000.0, True, True, None, None, None)
            gate.build(lambda name, **kwargs: tf.Variable(timing[name], name=name), tf.float64)
            variables = [gate.period, gate.phase, gate.ratio_on]
            k_int = gate(tf.constant(times, tf.int32), tf.float64)
            grads = tf.gradients(tf.reduce_sum(k_int * weights), variables)
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                k_int, grads = sess.run((k_int, grads))
        self.assertAllClose(k_int, ref.time_gate(times, timing["period"], timing["phase"],
                                                 timing["ratio_on"], 0.001), atol=1e-12)

        def reference_loss(p):
            return np.sum(weights * ref.time_gate(times, p["period"], p["phase"], p["ratio_on"],
                                                  0.001, (timing["period"], timing["phase"])))

        want = ref.numeric_gradients(reference_loss, timing, list(timing))
        for key, got in zip(("period", "phase", "ratio_on"), grads):
            self.assertAllClose(got, want[key], rtol=1e-5, atol=1e-5, msg=key)
            self.assertGreater(np.abs(got).max(), 1e-3, msg=key)

    def test_time_per_unit_gives_each_unit_its_own_timestamp(self):
        rng = np.random.default_rng(4)
        timing = _timing(rng)
        per_unit = rng.uniform(0, 50, (3, 20, UNITS))
        with tf.Graph().as_default():
            gate = TimeGate(UNITS, 0.001, 0.1, True, 1.0, 1000.0, True, True, None, None, None)
            gate.build(lambda name, **kwargs: tf.Variable(timing[name], name=name), tf.float64)
            k = gate(tf.constant(per_unit), tf.float64)
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                k = sess.run(k)
        for unit in range(UNITS):  # unit u's gate is its own gate at its own times
            alone = ref.time_gate(per_unit[..., unit:unit + 1], timing["period"][unit],
                                  timing["phase"][unit], timing["ratio_on"][unit], 0.001)
            self.assertAllClose(k[..., unit:unit + 1], alone, atol=1e-12, msg=unit)

    def test_check_time_takes_one_or_num_units_timestamps(self):
        for shape, num_units in (([2, 1], 4), ([2, 4], 4), ([None, None], 4), ([2, 1], None)):
            with tf.Graph().as_default():
                time = tf.compat.v1.placeholder(tf.int32, shape)
                self.assertEqual(time_gate.check_time(time, "batch", num_units).dtype, tf.float64)
        for shape, num_units in (([2, 3], 4), ([2, 4], None), ([2], 4), ([2, 1, 1], 4)):
            with self.assertRaisesRegex(ValueError, r"time must have shape \[batch, 1\]"):
                time_gate.check_time(tf.zeros(shape), "batch", num_units)
        with self.assertRaisesRegex(
                ValueError, r"\[batch, steps, 1\] \(one timestamp per example\) or "
                r"\[batch, steps, 4\] \(one per unit\); got shape \(2, 3, 2\)"):
            time_gate.check_time(tf.zeros([2, 3, 2]), "batch, steps", 4)


class TensorArgumentsTest(tf.test.TestCase):
    """TF 1.x documented period_init_min/max and ratio_on as "float or scalar float Tensor"."""

    def test_tensors_of_known_value_are_folded_and_checked_at_once(self):
        with tf.Graph().as_default():
            self.assertEqual(time_gate.scalar_argument("b", tf.constant(2.5)), 2.5)
            self.assertEqual(time_gate.scalar_argument("b", tf.constant(3, tf.int64)), 3.0)
            self.assertEqual(time_gate.scalar_argument("b", np.float32(4.0)), 4.0)
            with self.assertRaisesRegex(ValueError, "b must be a finite number; got nan"):
                time_gate.scalar_argument("b", tf.constant(np.nan))
            with self.assertRaisesRegex(ValueError, r"b must be a number or a scalar tensor "
                                        r"\(shape \[\]\); got shape \(2,\)"):
                time_gate.scalar_argument("b", tf.constant([1.0, 2.0]))
            with self.assertRaisesRegex(ValueError, r"scalar tensor \(shape \[\]\); got shape "
                                        r"<unknown>"):
                time_gate.scalar_argument("b", tf.compat.v1.placeholder(tf.float32))
            with self.assertRaisesRegex(TypeError, "b must be a number or a scalar float "
                                        "tensor; got dtype string"):
                time_gate.scalar_argument("b", tf.constant("1"))
            with self.assertRaisesRegex(TypeError, "got dtype bool"):
                time_gate.scalar_argument("b", True)
            placeholder = tf.compat.v1.placeholder(tf.float32, [])
            self.assertIs(time_gate.scalar_argument("b", placeholder), placeholder)
        self.assertEqual(time_gate.scalar_argument("b", tf.constant(7.0)), 7.0)  # eager

    def _draw(self, low, high, feed, dtype=tf.float64):
        initializer = exp_uniform_initializer(low, high, ("period_init_min", "period_init_max"))
        values = initializer([5000], dtype)
        with tf.compat.v1.Session() as sess:
            return sess.run(values, feed)

    def test_placeholder_bounds_draw_log_uniform_between_the_fed_values(self):
        with tf.Graph().as_default():
            tf.compat.v1.set_random_seed(0)
            low = tf.compat.v1.placeholder(tf.float32, [])
            high = tf.compat.v1.placeholder(tf.float64, [])
            values = self._draw(low, high, {low: 2.0, high: 50.0})
            mixed = self._draw(low, 8.0, {low: 3.0}, tf.float32)
        self.assertBetween(values.min(), 2.0, 2.2)
        self.assertBetween(values.max(), 45.0, 50.0)
        self.assertAllClose(np.log(values).mean(), (math.log(2.0) + math.log(50.0)) / 2,
                            atol=0.05)
        self.assertEqual(mixed.dtype, np.float32)
        self.assertGreaterEqual(mixed.min(), 3.0 * (1 - 1e-6))
        self.assertLessEqual(mixed.max(), 8.0 * (1 + 1e-6))

    def test_placeholder_bounds_are_checked_when_the_initializer_runs(self):
        cases = [({"low": 0.0, "high": 5.0}, "period_init_min must be > 0"),
                 ({"low": -1.0, "high": 5.0}, "period_init_min must be > 0"),
                 ({"low": 6.0, "high": 5.0}, "period_init_max must be >= period_init_min"),
                 ({"low": np.nan, "high": 5.0}, "period_init_min must be a finite number"),
                 ({"low": 1.0, "high": np.inf}, "period_init_max must be a finite number")]
        for feed, message in cases:
            with tf.Graph().as_default():
                low = tf.compat.v1.placeholder(tf.float32, [])
                high = tf.compat.v1.placeholder(tf.float32, [])
                with self.assertRaisesRegex(tf.errors.InvalidArgumentError, message):
                    self._draw(low, high, {low: feed["low"], high: feed["high"]})

    def test_numbers_beside_a_placeholder_are_still_checked_in_python(self):
        with tf.Graph().as_default():
            high = tf.compat.v1.placeholder(tf.float32, [])
            with self.assertRaisesRegex(ValueError, "period_init_min must be > 0; got 0.0"):
                TimeGate(UNITS, 0.001, 0.1, True, 0.0, high, True, True, None, None, None)
            with self.assertRaisesRegex(ValueError, "period_init_min must be a finite number"):
                TimeGate(UNITS, 0.001, 0.1, True, np.inf, high, True, True, None, None, None)
            with self.assertRaisesRegex(ValueError, r"period_init_max must be >= period_init_min "
                                        r"\(10.0\); got 5.0"):
                TimeGate(UNITS, 0.001, 0.1, True, tf.constant(10.0), tf.constant(5.0), True,
                         True, None, None, None)

    def _ratio_on(self, ratio_on, feed=None):
        """The ratio_on variable a TimeGate made with `ratio_on` starts at."""
        gate = TimeGate(UNITS, 0.001, ratio_on, True, 1.0, 1000.0, True, True, None, None, None)
        gate.build(lambda name, shape, dtype, initializer, **kwargs: tf.Variable(
            initializer(shape, dtype), name=name), tf.float32)
        with tf.compat.v1.Session() as sess:
            return sess.run(gate.ratio_on.initial_value, feed)

    def test_ratio_on_may_be_a_scalar_tensor(self):
        with tf.Graph().as_default():
            self.assertAllClose(self._ratio_on(tf.constant(0.25, tf.float64)),
                                np.full(UNITS, 0.25))
            with self.assertRaisesRegex(ValueError, r"ratio_on must be in \(0, 1\]; got 1.5"):
                TimeGate(UNITS, 0.001, tf.constant(1.5), True, 1.0, 1000.0, True, True, None,
                         None, None)
            fed = tf.compat.v1.placeholder(tf.float32, [])
            self.assertAllClose(self._ratio_on(fed, {fed: 0.05}), np.full(UNITS, 0.05))
            for value in (0.0, -0.5, 1.5, np.nan):
                with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                            r"ratio_on must be in \(0, 1\]; got"):
                    self._ratio_on(fed, {fed: value})
