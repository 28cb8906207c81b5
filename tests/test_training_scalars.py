"""Tests of experiments.training.scalars: TensorBoard scalars."""

import os

import numpy as np

from phased_lstm import tf
from experiments import training


def test_scalar_writer_writes_scalars_and_a_restart_marker(tmp_path):
    with tf.Graph().as_default():
        writer = training.ScalarWriter(str(tmp_path), first_step=5)
        writer.scalars(5, {"train/loss": 1.5, "test/loss": None})
        writer.scalars(6, {"train/loss": np.float32(1.25), "test/loss": 0.5})
        writer.close()
    (events_file,) = os.listdir(tmp_path)
    starts, scalars = [], []
    for event in tf.compat.v1.train.summary_iterator(os.path.join(tmp_path, events_file)):
        if event.HasField("session_log"):
            starts.append((event.step, event.session_log.status))
        for value in event.summary.value:
            scalars.append((event.step, value.tag, value.simple_value))
    assert starts == [(5, tf.compat.v1.SessionLog.START)]
    assert scalars == [(5, "train/loss", 1.5), (6, "train/loss", 1.25), (6, "test/loss", 0.5)]
