"""A run's folder and files: atomic writes, what a run wrote, and the checks before writing.

A run of model M under `log_dir` keeps everything in `<log_dir>/<M>/` (see the package's
docstring); the names of its files are defined here.
"""

import glob
import json
import os
import shutil
import tempfile

LOG_NAME = "log.tsv"
RESULTS_NAME = "results.json"
CHECKPOINT_DIR = "checkpoints"

_EVENTS_GLOB = "events.out.tfevents.*"


class RunError(Exception):
    """A problem with the run's folder or settings that the user must fix; the message says how."""


def write_atomically(path, write, mode="w"):
    """Writes a file through a temporary file in the same folder, then renames it over path.

    A reader, or a run killed midway, never sees a half-written file.

    Args:
      path: the file to write.
      write: called with the open temporary file.
      mode: "w" for text, "wb" for bytes.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=folder)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600.
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path, obj):
    """Writes obj as indented JSON, atomically."""
    write_atomically(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=False) + "\n"))


def check_writable_dir(path, what="log folder", flag="--log_dir"):
    """Creates a folder if needed and checks that files can be created in it.

    Args:
      path: the folder.
      what: what the folder is, for the message.
      flag: the setting that chooses it, for the message.

    Returns:
      The folder as an absolute path.

    Raises:
      RunError: the folder cannot be created or written to; the message names it.
    """
    path = os.path.abspath(os.path.expanduser(path))
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise RunError(
            f"cannot write to the {what} {path} ({error.strerror or error}). Make it writable, "
            f"or pass another {flag}.") from None
    return path


def check_writable_run(run_dir, flag="--log_dir"):
    """Checks, before any training, every folder and file a run will write to.

    That is the run's folder, its checkpoint folder, and the log (appended to, so the file
    itself must be writable).

    Args:
      run_dir: the run's folder; created if needed.
      flag: the setting that chose it, for the messages.

    Raises:
      RunError: one of them cannot be written; the message names it.
    """
    check_writable_dir(run_dir, "run folder", flag)
    check_writable_dir(os.path.join(run_dir, CHECKPOINT_DIR), "checkpoint folder", flag)
    log_path = os.path.join(run_dir, LOG_NAME)
    if os.path.exists(log_path) and not os.access(log_path, os.W_OK):
        raise RunError(f"cannot write to the log {log_path} (read-only). Make it writable, or "
                       f"pass another {flag}.")


def run_files(run_dir):
    """What a run wrote in run_dir (log, results, checkpoints, TensorBoard events): what --fresh
    deletes. Anything else in the folder is not a run's.

    Args:
      run_dir: the run's folder, `<log_dir>/<model>`. It need not exist.

    Returns:
      The paths, those that exist.
    """
    paths = [os.path.join(run_dir, name) for name in (LOG_NAME, RESULTS_NAME)]
    paths += sorted(glob.glob(os.path.join(glob.escape(run_dir), _EVENTS_GLOB)))
    paths.append(os.path.join(run_dir, CHECKPOINT_DIR))
    return [p for p in paths if os.path.exists(p)]


def describe_run_files(run_dir):
    """A short account of run_files(run_dir) for messages, e.g. "log.tsv (8 rows), ..."."""
    parts = []
    for path in run_files(run_dir):
        name = os.path.basename(path)
        if name == LOG_NAME:
            try:
                with open(path, "rb") as f:
                    rows = max(f.read().count(b"\n") - 1, 0)
                name += f" ({rows} rows)"
            except OSError:
                pass
        elif os.path.isdir(path):
            name += "/ (all of it)"
        parts.append(name)
    return f"{run_dir}: " + ", ".join(parts) if parts else f"nothing in {run_dir}"


def clear_run(run_dir):
    """Deletes what a run wrote in run_dir (run_files); anything else is left alone.

    Args:
      run_dir: the run's folder, `<log_dir>/<model>`. It need not exist.

    Returns:
      The paths removed.
    """
    removed = run_files(run_dir)
    for path in removed:
        if os.path.isdir(path):
            # A whole tree: damaged checkpoints set aside, a save cut short (ckpt-<step>_temp).
            shutil.rmtree(path)
        else:
            os.remove(path)
    return removed


def remove_temporary_files(folder):
    """Removes what write_atomically leaves when killed (`.<name>.<random>.tmp`).

    Args:
      folder: the folder; it need not exist.

    Returns:
      The paths removed.
    """
    paths = glob.glob(os.path.join(glob.escape(folder), ".*.tmp"))
    for path in paths:
        os.remove(path)
    return paths
