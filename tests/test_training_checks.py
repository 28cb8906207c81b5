"""Tests of experiments.training.checks: resume settings against the checkpoint's; finite
float flags."""

import re

import pytest

from experiments import training
from experiments.training import RunError


def check_settings(saved, current):
    training.check_resume_settings(saved, current, ("num_units", "seed"),
                                   "runs/M from runs/M/checkpoints/ckpt-5")


def test_check_resume_settings_names_every_difference_and_suggests_fresh():
    check_settings({"num_units": 4, "seed": 0, "steps": 9}, {"num_units": 4, "seed": 0,
                                                             "steps": 20})
    with pytest.raises(RunError) as error:
        check_settings({"num_units": 4, "seed": 0}, {"num_units": 8, "seed": 1})
    message = str(error.value)
    assert "runs/M from runs/M/checkpoints/ckpt-5" in message and "--fresh" in message
    assert "--num_units=4 (this command: 8)" in message and "--seed=0 (this command: 1)" in message


def test_check_resume_settings_gives_unrecorded_settings_the_value_they_trained_with():
    def check(saved, current):
        training.check_resume_settings(saved, current, ("seed", "clip_norm"), "runs/M",
                                       unrecorded={"clip_norm": 0.0})

    check({"seed": 0}, {"seed": 0, "clip_norm": 0.0})  # saved before --clip_norm existed
    for saved, current, difference in [
            ({"seed": 0}, {"seed": 0, "clip_norm": 1.0}, "--clip_norm=0.0 (this command: 1.0)"),
            ({"seed": 0, "clip_norm": 1.0}, {"seed": 0, "clip_norm": 0.0},
             "--clip_norm=1.0 (this command: 0.0)"),
            ({"clip_norm": 0.0}, {"seed": 0, "clip_norm": 0.0}, "--seed=None (this command: 0)")]:
        with pytest.raises(RunError, match=re.escape(difference)):
            check(saved, current)


def test_require_finite_flags_names_the_flag():
    from absl import flags  # pylint: disable=import-outside-toplevel
    values = flags.FlagValues()
    flags.DEFINE_float("rate", 1.0, "", flag_values=values)
    flags.DEFINE_float("floor", 0.0, "", lower_bound=0.0, flag_values=values)
    training.require_finite_flags(["rate", "floor"], values)
    values(["prog", "--rate=2.5", "--floor=1"])
    for argument, message in (("--rate=nan", "--rate must be a finite number; got nan"),
                              ("--floor=inf", "--floor must be a finite number; got inf")):
        with pytest.raises(flags.IllegalFlagValueError, match=message):
            values(["prog", argument])
