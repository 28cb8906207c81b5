"""Checks before training: a resumed run's settings against its checkpoint's, and finite flags."""

import math

from absl import flags

from experiments.training.files import RunError


def check_resume_settings(saved, current, keys, where, unrecorded=None):
    """Checks that a run resumes with the settings it was started with.

    Args:
      saved: the settings saved with the checkpoint.
      current: this command's settings.
      keys: the settings that must match (model shape, data order, optimiser, ...).
      where: the run, for the message, e.g. "runs/PhasedLSTMCell at step 500".
      unrecorded: {key: value} for settings added after checkpoints began to record theirs: the
        value that a checkpoint which does not record the key was trained with. A key missing
        from both `saved` and `unrecorded` matches nothing.

    Raises:
      RunError: some differ; the message lists them and suggests --fresh.
    """
    unrecorded = unrecorded or {}
    saved = {k: saved[k] if k in saved else unrecorded.get(k) for k in keys}
    differ = [f"--{k}={saved[k]!r} (this command: {current[k]!r})"
              for k in keys if saved[k] != current[k]]
    if differ:
        raise RunError(
            f"cannot resume {where}: it was trained with " + ", ".join(differ) + ". Pass the "
            "same values to resume it, or --fresh to delete it and start afresh.")


def require_finite_flags(names, flag_values=None):
    """Makes these float flags refuse NaN and infinities, with a message naming the flag.

    Register it before a flag's other validators: absl runs them in order of registration, and
    a bound such as `v > 0` would pass inf, or name the wrong problem for NaN.

    Args:
      names: the flags' names.
      flag_values: the FlagValues holding them; absl's global FLAGS by default.
    """
    flag_values = flags.FLAGS if flag_values is None else flag_values
    for name in names:
        def check(value, name=name):
            if value is not None and not math.isfinite(value):
                raise flags.ValidationError(f"--{name} must be a finite number; got {value}")
            return True
        flags.register_validator(name, check, flag_values=flag_values)
