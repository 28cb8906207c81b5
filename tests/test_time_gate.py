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
