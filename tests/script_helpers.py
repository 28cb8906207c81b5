"""Running the repository's scripts: as a user runs them (a subprocess from the repository
root), or their main() in this process with flags of its own.

Shared by the tests of the scripts. A subprocess tests the command line itself (app.run, the
`__main__` guard, signals, exit statuses); in-process calls (`parse_flags`, `run_main`) skip
TensorFlow's start-up for everything else.
"""

import json
import os
import subprocess
import sys

from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 300  # a hang fails the test instead of stalling CI
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(command, env=None, timeout=TIMEOUT_S):
    """Runs `command` (a list) from the repository root to its end.

    Args:
      command: the argument list; a str is taken as Python code for `python -c`.
      env: variables set on top of this process's environment; None unsets one.
      timeout: seconds before the process is killed and the test fails.

    Returns:
      The CompletedProcess (text output).
    """
    if isinstance(command, str):
        command = [sys.executable, "-c", command]
    if env is not None:
        env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=env, check=False)


def script_command(name, *args):
    """The command that runs the repository's script `name` (e.g. "freq_phased_lstm.py")."""
    return [sys.executable, os.path.join(ROOT, name), *args]


def run_script(name, *args):
    """Runs the repository's script `name` with these arguments to its end (run)."""
    return run(script_command(name, *args))


def check_no_traceback(proc):
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


def check_ok(proc):
    """The process exited 0 without a traceback (a caught error still prints one)."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_no_traceback(proc)


def parse_flags(modules, *args):
    """A FlagValues of its own holding the flags of script modules, parsed.

    Args:
      modules: a script module (with define_flags), or a tuple of them; the last names the
        program.
      *args: the command line's arguments.

    Returns:
      The parsed FlagValues.

    Raises:
      flags.Error: the arguments are refused (absl's message).
    """
    modules = modules if isinstance(modules, tuple) else (modules,)
    flag_values = flags.FlagValues()
    for module in modules:
        module.define_flags(flag_values)
    flag_values([f"{modules[-1].__name__}.py", *args])
    return flag_values


def run_main(modules, *args):
    """Runs a script's main() here, as `python <script> *args` would run it.

    Args:
      modules: as parse_flags; the last one's main() runs.
      *args: the command line's arguments.

    Returns:
      main()'s exit status, or SystemExit's code (for an error, the message).
    """
    modules = modules if isinstance(modules, tuple) else (modules,)
    flag_values = parse_flags(modules, *args)
    try:
        return modules[-1].main([f"{modules[-1].__name__}.py"], flag_values)
    except SystemExit as exit_:
        return exit_.code


def count_rows(path):
    """The rows of a log.tsv (0 when it does not exist)."""
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as f:
        return max(f.read().count("\n") - 1, 0)


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()
