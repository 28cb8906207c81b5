"""Float64 NumPy implementation of the Phased GRU step, for the tests.

Written from the equations (TF 1.x GRUCell's step, then the Phased LSTM time gate of
docs/equations.md), independently of the package. Parameters are a dict keyed by the variable
names: "gates/kernel", "gates/bias", "candidate/kernel", "candidate/bias", "period", "phase",
"ratio_on". Runs over sequences with `numpy_reference.run_sequence`.
"""

import numpy as np

from numpy_reference import sigmoid, time_gate

GRU_PARAM_NAMES = ("gates/kernel", "gates/bias", "candidate/kernel", "candidate/bias", "period",
                   "phase", "ratio_on")


def phased_gru_step(p, t, x, h, leak, wraps_from=None):
    """One step for a batch: t [b, 1], x [b, d], h [b, n]. Returns (h,)."""
    gates = sigmoid(np.concatenate([x, h], axis=1) @ p["gates/kernel"] + p["gates/bias"])
    r, u = np.split(gates, 2, axis=1)
    c = np.tanh(np.concatenate([x, r * h], axis=1) @ p["candidate/kernel"] + p["candidate/bias"])
    h_gru = u * h + (1 - u) * c
    k = time_gate(t, p["period"], p["phase"], p["ratio_on"], leak, wraps_from)
    return (k * h_gru + (1 - k) * h,)


def random_phased_gru_params(rng, input_size, num_units, period_range=(2., 20.)):
    """Random weights and timing parameters, float32-representable (see numpy_reference)."""
    n = num_units
    period = np.exp(rng.uniform(*np.log(period_range), n))
    params = {
        "gates/kernel": rng.normal(0, 0.5, (input_size + n, 2 * n)),
        "gates/bias": rng.normal(0, 0.5, 2 * n),
        "candidate/kernel": rng.normal(0, 0.5, (input_size + n, n)),
        "candidate/bias": rng.normal(0, 0.5, n),
        "period": period,
        "phase": rng.uniform(0, 1, n) * period,
        "ratio_on": rng.uniform(0.1, 0.5, n),
    }
    return {key: value.astype(np.float32).astype(np.float64) for key, value in params.items()}
