"""Float64 NumPy implementation of the Phased LSTM equations (docs/equations.md), for the tests.

Written from the equations, independently of the package. Parameters are a dict keyed by the
TF 1.x variable names: "mask_gates/kernel", "mask_gates/bias", "new_input/kernel",
"new_input/bias", "output_gate/kernel", "output_gate/bias", "period", "phase", "ratio_on".
"""

import numpy as np

PARAM_NAMES = ("mask_gates/kernel", "mask_gates/bias", "new_input/kernel", "new_input/bias",
               "output_gate/kernel", "output_gate/bias", "period", "phase", "ratio_on")


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def time_gate(t, period, phase, ratio_on, leak, wraps_from=None):
    """k for timestamps t [..., 1] and per-unit parameters [units].

    wraps_from: optional (period, phase) at which the number of whole periods elapsed is
      counted and then held fixed: mod(x, tau) = x - n tau with n tau a constant. Finite
      differences of the gate with the wraps held at the unperturbed parameters are then TF 1.x's
      gradient rule (d mod/dx = 1, d mod/dtau = 0); without it they are the exact derivative.
    """
    if wraps_from is None:
        phi = np.mod(t - phase, period) / period  # np.mod is a floor mod: phi in [0, 1)
    else:
        period_0, phase_0 = wraps_from
        wrapped = (t - phase_0) - np.mod(t - phase_0, period_0)  # n tau, a constant
        phi = (t - phase - wrapped) / period
    return np.where(phi < ratio_on / 2, 2 * phi / ratio_on,
                    np.where(phi < ratio_on, 2 - 2 * phi / ratio_on, leak * phi))


def lstm_gates(p, x, c, h, use_peepholes):
    """The plain LSTM step's activations for a batch: x [b, d], c and h [b, n].

    The NumPy reference's one LSTM step (independent of the package's, on purpose).

    Returns:
      (xh [b, d + n], i, f, j, c~, o), each but xh [b, n].
    """
    xh = np.concatenate([x, h], axis=1)
    mask_in = np.concatenate([xh, c], axis=1) if use_peepholes else xh
    gates = sigmoid(mask_in @ p["mask_gates/kernel"] + p["mask_gates/bias"])
    i, f = np.split(gates, 2, axis=1)
    j = np.tanh(xh @ p["new_input/kernel"] + p["new_input/bias"])
    c_lstm = f * c + i * j
    out_in = np.concatenate([xh, c_lstm], axis=1) if use_peepholes else xh
    o = sigmoid(out_in @ p["output_gate/kernel"] + p["output_gate/bias"])
    return xh, i, f, j, c_lstm, o


def phased_lstm_step(p, t, x, c, h, use_peepholes, leak, wraps_from=None):
    """One step for a batch: t [b, 1], x [b, d], c and h [b, n]. Returns (c, h)."""
    _, _, _, _, c_lstm, o = lstm_gates(p, x, c, h, use_peepholes)
    h_lstm = o * np.tanh(c_lstm)
    k = time_gate(t, p["period"], p["phase"], p["ratio_on"], leak, wraps_from)
    return k * c_lstm + (1 - k) * c, k * h_lstm + (1 - k) * h


def run_sequence(step, p, times, x, state, sequence_length=None, **kwargs):
    """Runs `step` over [b, T, ...] inputs as dynamic_rnn does.

    Past an example's sequence_length its state is carried unchanged and its output is 0.

    Returns:
      (outputs [b, T, n], final state tuple).
    """
    batch, steps = x.shape[:2]
    lengths = np.full(batch, steps) if sequence_length is None else np.asarray(sequence_length)
    outputs = []
    for s in range(steps):
        new_state = step(p, times[:, s], x[:, s], *state, **kwargs)
        live = (s < lengths)[:, None]
        state = tuple(np.where(live, new, old) for new, old in zip(new_state, state))
        outputs.append(np.where(live, state[-1], 0.0))
    return np.stack(outputs, axis=1), state


def numeric_gradients(loss, params, keys, eps=1e-6):
    """Central finite differences of loss(params) with respect to every entry of params[key].

    Args:
      loss: a function of a parameter dict returning a float.
      params: the parameters to differentiate at.
      keys: the entries of params to differentiate.
      eps: the step.

    Returns:
      {key: array of params[key]'s shape}.
    """
    grads = {}
    for key in keys:
        flat = params[key].reshape(-1)
        grad = np.empty_like(flat)
        for index in range(flat.size):
            losses = []
            for sign in (1, -1):
                bumped = flat.copy()
                bumped[index] += sign * eps
                losses.append(loss(dict(params, **{key: bumped.reshape(params[key].shape)})))
            grad[index] = (losses[0] - losses[1]) / (2 * eps)
        grads[key] = grad.reshape(params[key].shape)
    return grads


def gradient_reference(step, params, times, x, initial_state, loss_of_outputs, mod_gradient,
                       **kwargs):
    """Finite-difference gradients of a sequence loss under TF 1.x's rule or the exact one.

    Args:
      step: phased_lstm_step or a step of the same signature.
      params: the parameters (all of them are differentiated).
      times, x: [b, T, 1] and [b, T, d].
      initial_state: the step's state tuple at the start, e.g. (c, h).
      loss_of_outputs: (outputs [b, T, n], final state tuple) -> float.
      mod_gradient: "tf1" (the wraps held at params' period and phase) or "exact".
      **kwargs: the step's keyword arguments (use_peepholes, leak, ...).

    Returns:
      {name: gradient}.
    """
    if mod_gradient == "tf1":
        kwargs["wraps_from"] = (params["period"], params["phase"])

    def loss(p):
        return loss_of_outputs(*run_sequence(step, p, times, x, initial_state, **kwargs))

    return numeric_gradients(loss, params, list(params))


def random_phased_lstm_params(rng, input_size, num_units, use_peepholes, period_range=(2., 20.)):
    """Random weights and timing parameters; ratio_on large enough that gates open often.

    Values are float32-representable, so that the reference sees exactly what a float32
    variable stores (at t ~ 1e7 the period's float32 rounding alone moves the phase).
    """
    n, peep = num_units, num_units if use_peepholes else 0
    period = np.exp(rng.uniform(*np.log(period_range), n))
    params = {
        "mask_gates/kernel": rng.normal(0, 0.5, (input_size + n + peep, 2 * n)),
        "mask_gates/bias": rng.normal(0, 0.5, 2 * n),
        "new_input/kernel": rng.normal(0, 0.5, (input_size + n, n)),
        "new_input/bias": rng.normal(0, 0.5, n),
        "output_gate/kernel": rng.normal(0, 0.5, (input_size + n + peep, n)),
        "output_gate/bias": rng.normal(0, 0.5, n),
        "period": period,
        "phase": rng.uniform(0, 1, n) * period,
        "ratio_on": rng.uniform(0.1, 0.5, n),
    }
    return {key: value.astype(np.float32).astype(np.float64) for key, value in params.items()}


def random_times(rng, batch, steps, start=0.0):
    """Per-sample increasing timestamps [b, T, 1] with irregular gaps."""
    gaps = rng.uniform(0.1, 2.0, (batch, steps, 1))
    return start + rng.uniform(0, 5, (batch, 1, 1)) + np.cumsum(gaps, axis=1)


def clipped_weight_gradients(p, times, x, out_weights, use_peepholes, leak, clip, k=None):
    """Back-propagation through time written out by hand, with the authors' per-step clipping.

    The loss is sum(outputs * out_weights) over a sequence of full length from a zero state.
    In every step the gradient of the gates' pre-activations [x, h] kernel + bias is clipped
    element-wise to [-clip, clip] (None: not clipped) after the peepholes took theirs, as
    Theano's grad_clip on the Lasagne layers' `gates`. The time gate k is treated as data (its
    own parameters are not differentiated here); k, if given, replaces it (1: a plain LSTM).

    Returns:
      {name: gradient} for the three kernels and biases, and "inputs" [b, T, d].
    """
    batch, steps, d = x.shape
    n = p["new_input/bias"].size
    rows = d + n
    w_m, w_n, w_o = p["mask_gates/kernel"], p["new_input/kernel"], p["output_gate/kernel"]
    c, h = np.zeros((batch, n)), np.zeros((batch, n))
    saved = []
    for s in range(steps):  # forward, keeping what the backward needs
        xh, i, f, j, c_lstm, o = lstm_gates(p, x[:, s], c, h, use_peepholes)
        if k is None:
            k_s = time_gate(times[:, s], p["period"], p["phase"], p["ratio_on"], leak)
        else:
            k_s = k
        saved.append((xh, c, i, f, j, c_lstm, o, k_s))
        c = c + k_s * (c_lstm - c)
        h = h + k_s * (o * np.tanh(c_lstm) - h)

    grads = {key: np.zeros_like(p[key]) for key in PARAM_NAMES[:6]}
    grads["inputs"] = np.zeros_like(x)
    dc, dh = np.zeros((batch, n)), np.zeros((batch, n))
    for s in reversed(range(steps)):
        xh, c_prev, i, f, j, c_lstm, o, k_s = saved[s]
        dh = dh + out_weights[:, s]
        tanh_c = np.tanh(c_lstm)
        dh_lstm, dc_lstm = k_s * dh, k_s * dc
        dz_o = dh_lstm * tanh_c * o * (1 - o)
        dc_lstm = dc_lstm + dh_lstm * o * (1 - tanh_c ** 2)
        if use_peepholes:  # z_o += c~ w_c_o
            dc_lstm = dc_lstm + dz_o @ w_o[rows:].T
            grads["output_gate/kernel"][rows:] += c_lstm.T @ dz_o
        dz_if = np.concatenate([dc_lstm * j * i * (1 - i), dc_lstm * c_prev * f * (1 - f)], 1)
        dz_j = dc_lstm * i * (1 - j ** 2)
        dc_prev = (1 - k_s) * dc + dc_lstm * f
        if use_peepholes:  # [z_i, z_f] += c_prev w_c_if
            dc_prev = dc_prev + dz_if @ w_m[rows:].T
            grads["mask_gates/kernel"][rows:] += c_prev.T @ dz_if
        if clip is not None:
            dz_if, dz_j, dz_o = (np.clip(g, -clip, clip) for g in (dz_if, dz_j, dz_o))
        d_xh = np.zeros_like(xh)
        for name, dz, w in (("mask_gates", dz_if, w_m), ("new_input", dz_j, w_n),
                            ("output_gate", dz_o, w_o)):
            grads[name + "/kernel"][:rows] += xh.T @ dz
            grads[name + "/bias"] += dz.sum(axis=0)
            d_xh += dz @ w[:rows].T
        grads["inputs"][:, s] = d_xh[:, :d]
        dh = (1 - k_s) * dh + d_xh[:, d:]
        dc = dc_prev
    return grads
