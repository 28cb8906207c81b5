"""Tests of freq_gradient_norms.py, the frequency task's gradient diagnostic.

Like freq_phased_lstm.py's tests, the script runs as a subprocess (its absl flags would clash
with the other scripts' in this process).
"""

import os
import sys

import pytest

from script_helpers import ROOT, check_no_traceback, check_ok, run
from test_freq_phased_lstm import TINY  # the frequency script's smallest run

SCRIPT = os.path.join(ROOT, "freq_gradient_norms.py")
FREQ = os.path.join(ROOT, "freq_phased_lstm.py")


def run_diagnostic(*args):
    return run([sys.executable, SCRIPT, *args])


def table_rows(stdout):
    """{name: (median, 90th pct, max, max / median)} from the printed table."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] not in ("gradient norm of", "---"):
            rows[cells[0]] = tuple(float(c) for c in cells[1:])
    return rows


# The global gradient norm of batch 0 two ways: as freq_gradient_norms computes it, and as the
# central difference of the loss along the normalised gradient (which is that norm when the
# gradient is right). The LSTM: along a Phased LSTM's periods the loss curves too sharply for a
# difference quotient (TF 1.x's rule leaves out the wrap term on purpose; with the exact rule the
# quotient is 0.4, 4.7 and 8.5 at steps 1e-2, 1e-3 and 1e-4 where the derivative is 10.2).
DIRECTIONAL_DERIVATIVE = """
import sys
import numpy as np
from absl import flags
import freq_gradient_norms as diag
import freq_phased_lstm as freq
from experiments import frequency_data
from phased_lstm import tf
flags.FLAGS(["x", "--num_units=6", "--model=LSTMCell", "--sampling=async"])
batch = frequency_data.make_batch(np.random.default_rng([0, 2, 0]), 8, "async")
with tf.Graph().as_default():
    tf.compat.v1.set_random_seed(0)
    model = freq.Model("LSTMCell")
    variables = tf.compat.v1.trainable_variables()
    grads = tf.gradients(model.loss, variables)
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        feed = model.feed(batch)
        norm = diag.gradient_norms(sess, model, [batch])["global"][0]
        weights, gradient = sess.run(variables), sess.run(grads, feed)
        total = np.sqrt(sum(np.sum(np.square(g.astype(np.float64))) for g in gradient))
        eps = 1e-3
        losses = []
        for sign in (1, -1):
            for v, w, g in zip(variables, weights, gradient):
                v.load(w + sign * eps * g / total, sess)
            losses.append(sess.run(model.loss, feed))
print(norm, (losses[0] - losses[1]) / (2 * eps))
"""


def test_global_norm_is_the_losss_slope_along_the_gradient():
    proc = run(DIRECTIONAL_DERIVATIVE)
    check_ok(proc)
    norm, slope = (float(x) for x in proc.stdout.split()[-2:])
    assert norm > 0
    assert slope == pytest.approx(norm, rel=1e-2)


def test_a_trained_run_is_rebuilt_from_its_checkpoints_settings(tmp_path):
    log_dir = str(tmp_path / "runs")
    check_ok(run([sys.executable, FREQ, "--sampling=standard", "--epochs=1", "--seeds=1",
                  f"--log_dir={log_dir}", *TINY]))
    # No --num_units (default 110): the checkpoint's 4 units must be used.
    proc = run_diagnostic(f"--log_dir={log_dir}", "--sampling=standard", "--batches=3")
    check_ok(proc)
    assert "ckpt-2" in proc.stdout
    rows = table_rows(proc.stdout)
    assert {"global", "logits/kernel", "rnn/phased_lstm_cell/ratio_on"} <= set(rows)
    for median, pct90, maximum, ratio in rows.values():
        assert 0 <= median <= pct90 <= maximum
        assert ratio == pytest.approx(maximum / median, rel=0.05, abs=0.05)
    assert "r_on: min" in proc.stdout and "period (ms): min" in proc.stdout


def test_a_preset_run_is_rebuilt_with_its_gate_gradient_clip(tmp_path):
    log_dir = str(tmp_path / "runs")
    check_ok(run([sys.executable, FREQ, "--preset=authors", "--sampling=async", "--epochs=1",
                  "--seeds=1", f"--log_dir={log_dir}", *TINY]))
    # Without --preset: the checkpoint's settings, not the flags' defaults, shape the gradient.
    proc = run_diagnostic(f"--log_dir={log_dir}", "--sampling=async", "--batches=2")
    check_ok(proc)
    assert "--gate_gradient_clip 10.0:" in proc.stdout
    assert "does not record" not in proc.stderr
    unclipped = table_rows(proc.stdout)
    # Given on the command line, the clip replaces the run's; a tiny one shrinks the gradient.
    proc = run_diagnostic(f"--log_dir={log_dir}", "--sampling=async", "--batches=2",
                          "--gate_gradient_clip=1e-6")
    check_ok(proc)
    assert "--gate_gradient_clip 1e-06:" in proc.stdout and "trained with 10.0" in proc.stderr
    clipped = table_rows(proc.stdout)
    assert clipped["rnn/phased_lstm_cell/new_input/kernel"][2] < (
        0.1 * unclipped["rnn/phased_lstm_cell/new_input/kernel"][2])
    assert clipped["logits/kernel"] == unclipped["logits/kernel"]  # outside the recurrence


@pytest.mark.parametrize("args, message", [
    ([], "no usable checkpoint in"),
    (["--sampling=all"], "--sampling must name one sampling"),
])
def test_bad_requests_get_a_clear_error(tmp_path, args, message):
    proc = run_diagnostic(f"--log_dir={tmp_path}", "--sampling=high_res", *args)
    assert proc.returncode != 0
    assert message in proc.stderr
    check_no_traceback(proc)
