"""Running the repository's scripts as a user runs them: a subprocess from the repository root.

Shared by the tests of the scripts (their absl flags would clash in one process, and a
subprocess is what a user runs).
"""

import os
import subprocess
import sys

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


def check_no_traceback(proc):
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


def check_ok(proc):
    """The process exited 0 without a traceback (a caught error still prints one)."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_no_traceback(proc)
