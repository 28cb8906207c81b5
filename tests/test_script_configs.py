"""The TF 1.x scripts' configs: both scripts in one process, and what their runs record.

mnist_phased_lstm.py and freq_phased_lstm.py define flags of the same names (--model,
--batch_size, ...). Importing them defines none: each builds its Model from a config, and its
flags are defined by a function, on absl's FLAGS when it runs, or here on a FlagValues of each
script's own. Their configs are what runs record as their settings, which resuming compares:
the same command must record what it recorded before the configs, or older runs would not
resume.
"""

import dataclasses

from absl import flags
import numpy as np
import pytest

import freq_gradient_norms
import freq_phased_lstm
import mnist_phased_lstm
from phased_lstm import tf
from script_helpers import parse_flags

# What the code before the configs (commit 5db8fd8) recorded in a checkpoint's sidecar for
# these commands (plus --data_dir and --log_dir).
MNIST_COMMAND = ["-m", "PhasedLSTMCell", "--steps=3", "--batch_size=16", "--num_units=4",
                 "--eval_every=3", "--eval_batch_size=128", "--preset=seed_repo",
                 "--ratio_on=0.1"]
MNIST_RECORDED = {
    "batch_size": 16, "checkpoint_every_secs": 300.0, "data_dir": "/tmp/data",
    "eval_batch_size": 128, "eval_every": 3, "event_driven_eval": False, "fresh": False,
    "leak": 0.001, "learning_rate": 0.001, "log_dir": "/tmp/mnist", "lr_half_life": 0,
    "mod_gradient": "tf1", "model": "PhasedLSTMCell", "num_units": 4, "peepholes": True,
    "period_init_max": 403.4287934927351, "period_init_min": 1.0, "plot_only": False,
    "preset": "seed_repo", "ratio_on": 0.1, "seed": 0, "steps": 3}
FREQ_COMMAND = ["--sampling=async", "--epochs=1", "--seeds=1", "--batches_per_epoch=2",
                "--batch_size=4", "--num_units=4", "--val_size=10", "--eval_batch_size=4",
                "--preset=authors", "--quick"]
FREQ_RECORDED = {
    "batch_size": 4, "batches_per_epoch": 2, "checkpoint_every_secs": 300.0, "clip_norm": 0.0,
    "epochs": 1, "eval_batch_size": 4, "fresh": False, "gate_biases": "authors",
    "gate_gradient_clip": 10.0, "head": "leaky_relu", "leak": 0.001, "learning_rate": 0.001,
    "log_dir": "/tmp/freq", "mod_gradient": "tf1", "model": "PhasedLSTMCell", "num_units": 4,
    "peepholes": True, "period_init_max": 20.085536923187664,
    "period_init_min": 2.718281828459045, "phase_init_max": 100.0, "plot_only": False,
    "preset": "authors", "quick": True, "ratio_on": 0.05, "sampling": "async", "seeds": 1,
    "trainable_ratio_on": True, "val_size": 10, "seed": 0}


def test_importing_the_scripts_defines_no_flag():
    for name in ("model", "num_units", "sampling", "seeds", "at_init"):
        assert name not in flags.FLAGS


def test_both_scripts_parse_their_flags_in_one_process():
    mnist = parse_flags(mnist_phased_lstm, "-m", "LSTMCell", "--num_units=7")
    freq = parse_flags(freq_phased_lstm, "-m", "LSTMCell", "--num_units=9", "--seeds=1")
    assert mnist_phased_lstm.config_from_flags(mnist).num_units == 7
    (config,) = freq_phased_lstm.configs_from_flags(freq)
    assert (config.model, config.num_units) == ("LSTMCell", 9)
    # The diagnostic's flags beside the frequency script's, as its command defines them.
    both = parse_flags((freq_phased_lstm, freq_gradient_norms), "--seed=2", "--at_init")
    assert both.seed == 2 and both.at_init and both.num_units == 110


@pytest.mark.parametrize("module", [mnist_phased_lstm, freq_phased_lstm])
def test_every_flag_is_a_config_field_with_the_flags_default(module):
    config_class = {mnist_phased_lstm: mnist_phased_lstm.MnistConfig,
                    freq_phased_lstm: freq_phased_lstm.FrequencyConfig}[module]
    flag_values = parse_flags(module)
    default = config_class()
    names = {f.name for f in flag_values.get_key_flags_for_module(module)}
    fields = {f.name for f in dataclasses.fields(config_class)}
    assert names == fields - {"seed"} if module is freq_phased_lstm else names == fields
    for name in names:
        assert flag_values[name].default == getattr(default, name), name


def test_each_model_builds_from_a_config_in_one_process():
    # Both scripts' models, each in its graph, from configs alone: no flags parsed.
    built = {}
    for name, config, inputs in (
            ("mnist", mnist_phased_lstm.MnistConfig(num_units=3), "pixels"),
            ("freq", freq_phased_lstm.FrequencyConfig(num_units=5), "values")):
        module = mnist_phased_lstm if name == "mnist" else freq_phased_lstm
        with tf.Graph().as_default():
            model = module.Model(config)
            shapes = {v.op.name: v.shape.as_list() for v in tf.compat.v1.trainable_variables()}
        assert getattr(model, inputs) is not None
        built[name] = shapes
    # The config's units shape the cell: 3 and 5 units, peepholes (freq) or not (mnist).
    assert built["mnist"]["rnn/phased_lstm_cell/period"] == [3]
    assert built["freq"]["rnn/phased_lstm_cell/period"] == [5]
    assert built["mnist"]["logits/kernel"] == [3, 10] and built["freq"]["logits/kernel"] == [5, 2]
    # The gates read [input, h] (mnist, no peepholes) or [input, h, c] (freq, peepholes).
    assert built["mnist"]["rnn/phased_lstm_cell/mask_gates/kernel"] == [1 + 3, 2 * 3]
    assert built["freq"]["rnn/phased_lstm_cell/mask_gates/kernel"] == [1 + 5 + 5, 2 * 5]


def test_a_command_records_what_it_recorded_before_the_configs():
    mnist = mnist_phased_lstm.config_from_flags(parse_flags(
        mnist_phased_lstm, *MNIST_COMMAND, "--data_dir=/tmp/data", "--log_dir=/tmp/mnist"))
    assert mnist.settings() == MNIST_RECORDED
    (freq,) = freq_phased_lstm.configs_from_flags(parse_flags(
        freq_phased_lstm, *FREQ_COMMAND, "--log_dir=/tmp/freq"))
    assert freq.settings() == FREQ_RECORDED


def test_a_runs_recorded_settings_give_back_its_config():
    config, defaulted = freq_phased_lstm.FrequencyConfig.from_settings(FREQ_RECORDED)
    assert defaulted == [] and config.settings() == FREQ_RECORDED
    # Settings older runs did not record: the values they trained with.
    old = {k: v for k, v in FREQ_RECORDED.items() if k not in ("mod_gradient", "head")}
    config, defaulted = freq_phased_lstm.FrequencyConfig.from_settings(old)
    assert (config.mod_gradient, config.head, defaulted) == ("exact", "linear", [])


def test_the_configs_are_frozen():
    config = mnist_phased_lstm.MnistConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.num_units = 3  # type: ignore[misc]
    assert np.isclose(freq_phased_lstm.FrequencyConfig().period_init_max, np.e ** 3)
