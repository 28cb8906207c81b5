"""Tests of freq_gradient_norms.py, the frequency task's gradient diagnostic.

Its functions run in this process (run_gradient_norms over a run folder, gradient_norms over a
config); one test runs the command, as a user does, and reads what it prints.
"""

import dataclasses
import json
import logging
import os

from absl import app
import numpy as np
import pytest

import freq_gradient_norms as diag
import freq_phased_lstm as freq
from experiments import frequency_data
from phased_lstm import tf
from script_helpers import check_ok, run_main, run_script
from test_freq_phased_lstm import TINY  # the frequency script's smallest run


def table_rows(stdout):
    """{name: (median, 90th pct, max, max / median)} from the printed table."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] not in ("gradient norm of", "---"):
            rows[cells[0]] = tuple(float(c) for c in cells[1:])
    return rows


def train(log_dir, *args):
    """Trains one tiny frequency run of one epoch in this process."""
    assert run_main(freq, "--epochs=1", "--seeds=1", f"--log_dir={log_dir}", *TINY, *args) == 0


def test_global_norm_is_the_losss_slope_along_the_gradient():
    # The global gradient norm of batch 0 two ways: as norms_per_batch computes it, and as the
    # central difference of the loss along the normalised gradient (which is that norm when the
    # gradient is right). The LSTM: along a Phased LSTM's periods the loss curves too sharply
    # for a difference quotient (TF 1.x's rule leaves out the wrap term on purpose; with the
    # exact rule the quotient is 0.4, 4.7 and 8.5 at steps 1e-2, 1e-3 and 1e-4 where the
    # derivative is 10.2).
    batch = frequency_data.make_batch(np.random.default_rng([0, 2, 0]), 8, "async")
    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(0)
        model = freq.Model(freq.FrequencyConfig(sampling="async", model="LSTMCell",
                                                num_units=6))
        variables = tf.compat.v1.trainable_variables()
        grads = tf.gradients(model.loss, variables)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            feed = model.feed(batch)
            norm = diag.norms_per_batch(sess, model, [batch])["global"][0]
            weights, gradient = sess.run(variables), sess.run(grads, feed)
            total = np.sqrt(sum(np.sum(np.square(g.astype(np.float64))) for g in gradient))
            eps = 1e-3
            losses = []
            for sign in (1, -1):
                for v, w, g in zip(variables, weights, gradient):
                    v.load(w + sign * eps * g / total, sess)
                losses.append(sess.run(model.loss, feed))
    slope = (losses[0] - losses[1]) / (2 * eps)
    assert norm > 0
    assert slope == pytest.approx(norm, rel=1e-2)


def test_a_trained_run_is_rebuilt_from_its_checkpoints_settings(tmp_path):
    log_dir = str(tmp_path / "runs")
    train(log_dir, "--sampling=standard")
    # The default config has 110 units: the checkpoint's 4 must be used.
    found = diag.run_gradient_norms(freq.run_dir(log_dir, "standard", "PhasedLSTMCell", 0),
                                    batches=3, batch_size=5)
    assert found.checkpoint.endswith("ckpt-2") and found.config.num_units == 4
    assert (found.data_sampling, found.batch_size) == ("standard", 5)
    assert {"global", "logits/kernel", "rnn/phased_lstm_cell/ratio_on"} <= set(found.norms)
    assert all(norms.shape == (3,) and (norms >= 0).all() for norms in found.norms.values())
    # The global norm is the root of the variables' squared norms, batch by batch.
    per_variable = [v for name, v in found.norms.items() if name != "global"]
    np.testing.assert_allclose(found.norms["global"],
                               np.sqrt(np.sum(np.square(per_variable), axis=0)), rtol=1e-6)
    assert "r_on: min" in found.timing and "period (ms): min" in found.timing
    # The same weights and batches from the command's config give the same norms.
    again = diag.gradient_norms(found.config, 3, 5, checkpoint=found.checkpoint)
    for name, norms in found.norms.items():
        np.testing.assert_array_equal(again.norms[name], norms)


def test_settings_a_checkpoint_lacks_are_those_it_trained_with(tmp_path, caplog):
    # A checkpoint from before --mod_gradient trained with the mod's exact derivative: its
    # config says so (RESUME_UNRECORDED), where the flag's default is tf1.
    log_dir = str(tmp_path / "runs")
    train(log_dir, "--sampling=async")
    run_dir = freq.run_dir(log_dir, "async", "PhasedLSTMCell", 0)
    sidecar = os.path.join(run_dir, "checkpoints", "ckpt-2.json")
    with open(sidecar, encoding="utf-8") as f:
        saved = json.load(f)
    del saved["settings"]["mod_gradient"], saved["settings"]["num_units"]
    with open(sidecar, "w", encoding="utf-8") as f:
        json.dump(saved, f)
    with caplog.at_level(logging.WARNING, logger="absl"):
        config, _ = diag.checkpoint_config(run_dir)
    assert config.mod_gradient == "exact" and config.num_units == 110
    assert "does not record --num_units; using 110" in caplog.text
    assert "--mod_gradient" not in caplog.text


def test_a_preset_run_is_rebuilt_with_its_gate_gradient_clip(tmp_path):
    log_dir = str(tmp_path / "runs")
    train(log_dir, "--preset=authors", "--sampling=async")
    # The command, without --preset: the checkpoint's settings, not the flags' defaults, shape
    # the gradient.
    proc = run_script("freq_gradient_norms.py", f"--log_dir={log_dir}", "--sampling=async",
                      "--batches=2")
    check_ok(proc)
    assert "--gate_gradient_clip 10.0:" in proc.stdout and "ckpt-2" in proc.stdout
    assert "does not record" not in proc.stderr
    unclipped = table_rows(proc.stdout)
    for median, pct90, maximum, ratio in unclipped.values():
        assert 0 <= median <= pct90 <= maximum
        assert ratio == pytest.approx(maximum / median, rel=0.05, abs=0.05)
    # Given on the command line, the clip replaces the run's; a tiny one shrinks the gradient.
    run_dir = freq.run_dir(log_dir, "async", "PhasedLSTMCell", 0)
    clipped = diag.run_gradient_norms(run_dir, batches=2,
                                      what_if={"gate_gradient_clip": 1e-6})
    assert clipped.config.gate_gradient_clip == 1e-6
    assert "--gate_gradient_clip 1e-06:" in diag.report(clipped)
    kernel = "rnn/phased_lstm_cell/new_input/kernel"
    assert clipped.norms[kernel].max() < 0.1 * unclipped[kernel][2]
    # Outside the recurrence the clip changes nothing (the table rounds to 3 digits).
    assert table_rows(diag.report(clipped))["logits/kernel"] == unclipped["logits/kernel"]


def test_only_what_if_settings_replace_the_runs(tmp_path):
    with pytest.raises(ValueError, match="only .*gate_gradient_clip"):
        diag.checkpoint_config(str(tmp_path), what_if={"num_units": 3})


def test_at_init_builds_the_commands_model():
    found = diag.gradient_norms(freq.FrequencyConfig(sampling="async", num_units=3), 2, 4)
    assert found.checkpoint is None and found.norms["global"].shape == (2,)
    assert "fresh weights" in diag.report(found)
    assert dataclasses.asdict(found.config)["num_units"] == 3


@pytest.mark.parametrize("args, message", [
    ([], "no usable checkpoint in"),
    (["--sampling=all"], "--sampling must name one sampling"),
])
def test_bad_requests_get_a_clear_error(tmp_path, args, message):
    try:
        error = run_main((freq, diag), f"--log_dir={tmp_path}", "--sampling=high_res", *args)
    except app.UsageError as usage:
        error = str(usage)
    assert message in error
