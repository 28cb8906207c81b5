"""A run's checkpoints: saved so that a kill never leaves a good run without one, and found by
reading them back rather than by trusting an index.

A checkpoint of step N is `ckpt-N.index`, `ckpt-N.data-*` (TensorFlow's V2 format) and the
sidecar `ckpt-N.json` (the settings and wall time that the graph does not hold). The folder's
`checkpoint` file (TensorFlow's state file) is written for tools that read it
(`tf.train.latest_checkpoint`) but never read here: checkpoints are found by listing the files.

- `find_usable` verifies the newest checkpoint by reading every tensor back and checking that
  each is finite; when it is damaged (truncated, bytes flipped, files missing) it goes on to the
  next older one and reports which files it skipped and why.
- `Checkpointer.save` writes a checkpoint, reads it back, and only then deletes the oldest ones
  beyond `max_to_keep`, so a failed save never pushes out a good checkpoint.
- `tidy` removes what an interrupted save or deletion leaves behind.
- `set_aside` moves a damaged checkpoint's files into `checkpoints/damaged/`, so that nothing a
  user might want to inspect is deleted.
"""

import collections
import glob
import json
import os
import re
import shutil
import time

from absl import logging
import numpy as np

from phased_lstm import tf
from experiments.training import RunError, write_atomically, write_json

__all__ = ["DAMAGED_DIR", "Checkpointer", "Skipped", "Usable", "checkpoint_files",
           "find_usable", "set_aside", "tidy", "verify"]

PREFIX = "ckpt"
DAMAGED_DIR = "damaged"
_STATE_FILE = "checkpoint"
# ckpt-<step>.index, ckpt-<step>.data-00000-of-00001, ckpt-<step>.json
_FILE = re.compile(rf"{PREFIX}-(\d+)\.(index|data-\d+-of-\d+|json)")
# Saver writes ckpt-<step>_temp/ and then merges it into ckpt-<step>.*.
_TEMP_DIR = re.compile(rf"{PREFIX}-(\d+)_temp")

Usable = collections.namedtuple("Usable", "prefix step metadata")
Usable.__doc__ = """A checkpoint that reads back: its path prefix, step and sidecar ({} when the
sidecar is missing or unreadable)."""
Skipped = collections.namedtuple("Skipped", "step files reason")
Skipped.__doc__ = """A newer checkpoint passed over: its step, its files and why."""


def checkpoint_files(directory):
    """The checkpoint files in a folder, by step.

    Args:
      directory: the checkpoint folder; it need not exist.

    Returns:
      {step: sorted list of paths}, only for files named as checkpoints (`ckpt-N.*`).
    """
    steps = collections.defaultdict(list)
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            match = _FILE.fullmatch(name)
            if match:
                steps[int(match.group(1))].append(os.path.join(directory, name))
    return {step: sorted(paths) for step, paths in sorted(steps.items())}


def _first_line(error):
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def verify(prefix):
    """Reads a checkpoint back completely.

    Args:
      prefix: the checkpoint's path prefix, e.g. `.../ckpt-500`.

    Returns:
      None when every tensor reads back (TensorFlow checks each one's checksum) and every
      floating tensor is finite; otherwise the reason, a short sentence.
    """
    if not os.path.exists(prefix + ".index"):
        return "its .index file is missing"
    if not glob.glob(glob.escape(prefix) + ".data-*"):
        return "its .data file is missing"
    try:
        reader = tf.compat.v1.train.NewCheckpointReader(prefix)
        for name in sorted(reader.get_variable_to_shape_map()):
            value = np.asarray(reader.get_tensor(name))
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                return f"its variable {name} holds NaN or infinite values"
    # Whatever stops it reading back makes it unusable: TensorFlow raises DataLossError,
    # OutOfRangeError, ... for damaged files, and other errors for files that are not even that.
    except Exception as error:  # pylint: disable=broad-except
        return f"it does not read back ({type(error).__name__}: {_first_line(error)})"
    return None


def _read_sidecar(prefix):
    try:
        with open(prefix + ".json", encoding="utf-8") as f:
            metadata = json.load(f)
        if not isinstance(metadata, dict):
            raise ValueError("not a JSON object")
        return metadata
    except (OSError, ValueError) as error:  # UnicodeDecodeError is a ValueError.
        logging.warning("Checkpoint %s has no readable settings file %s.json (%s); its settings "
                        "cannot be checked and its wall time counts from 0.", prefix, prefix,
                        _first_line(error))
        return {}


def tidy(directory):
    """Removes what an interrupted save or deletion left in a checkpoint folder.

    That is: Saver's `ckpt-N_temp/` folders and a partial `ckpt-N.data-*` beside one (a save cut
    short), temporary files of atomic writes, sidecars without their checkpoint, and data files
    without an index older than the newest indexed checkpoint (a deletion cut short). A data
    file without an index newer than that is left alone: it may be a damaged checkpoint, which
    `find_usable` reports.

    Args:
      directory: the checkpoint folder; it need not exist.

    Returns:
      The paths removed.
    """
    if not os.path.isdir(directory):
        return []
    removed, interrupted_saves = [], set()
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        match = _TEMP_DIR.fullmatch(name)
        if match and os.path.isdir(path):
            interrupted_saves.add(int(match.group(1)))
            shutil.rmtree(path)
            removed.append(path)
        elif ((name.startswith(".") and name.endswith(".tmp"))
              or name.startswith(_STATE_FILE + ".tmp")):
            os.remove(path)  # write_atomically's and TensorFlow's own temporary files.
            removed.append(path)
    files = checkpoint_files(directory)
    indexed = [step for step, paths in files.items() if any(p.endswith(".index") for p in paths)]
    newest = max(indexed, default=-1)
    for step, paths in files.items():
        if step in indexed:
            continue
        data_only = any(".data-" in p for p in paths)
        if not data_only or step < newest or step in interrupted_saves:
            for path in paths:
                os.remove(path)
                removed.append(path)
    if removed:
        logging.info("Tidied what an interrupted save or deletion left in %s: %s.", directory,
                     ", ".join(os.path.basename(p) for p in removed))
    return removed


def find_usable(directory):
    """Finds the newest checkpoint that reads back completely.

    Args:
      directory: the checkpoint folder (tidied first, see `tidy`); it need not exist.

    Returns:
      (usable, skipped): the newest `Usable` checkpoint, or None; and the `Skipped` ones newer
      than it (all of them when none is usable), newest first.
    """
    skipped = []
    for step, paths in sorted(checkpoint_files(directory).items(), reverse=True):
        if all(p.endswith(".json") for p in paths):
            continue  # A sidecar alone: its save never began; tidy removes it.
        prefix = os.path.join(directory, f"{PREFIX}-{step}")
        reason = verify(prefix)
        if reason is None:
            return Usable(prefix, step, _read_sidecar(prefix)), skipped
        skipped.append(Skipped(step, paths, reason))
    return None, skipped


def describe_skipped(skipped):
    """One line per skipped checkpoint, for messages."""
    return "; ".join(f"{', '.join(os.path.basename(p) for p in s.files)}: {s.reason}"
                     for s in skipped)


def set_aside(directory, skipped):
    """Moves skipped (damaged) checkpoints' files into `<directory>/damaged/`.

    A file of the same name already there is not overwritten: the new one gets a suffix.

    Args:
      directory: the checkpoint folder.
      skipped: `Skipped` checkpoints from find_usable.

    Returns:
      The new paths.
    """
    moved = []
    if not skipped:
        return moved
    target = os.path.join(directory, DAMAGED_DIR)
    os.makedirs(target, exist_ok=True)
    for entry in skipped:
        for path in entry.files:
            destination = os.path.join(target, os.path.basename(path))
            number = 1
            while os.path.exists(destination):
                destination = os.path.join(target, f"{os.path.basename(path)}.{number}")
                number += 1
            os.replace(path, destination)
            moved.append(destination)
    return moved


class Checkpointer:
    """Saves and restores every global variable of the default graph.

    Create it after the graph is built. Each save writes the sidecar, the checkpoint and
    TensorFlow's state file, reads the checkpoint back, and then deletes the oldest checkpoints
    beyond `max_to_keep` (the index first, so that a deletion cut short leaves no checkpoint
    that looks whole).

    Args:
      directory: the checkpoint folder; created if needed.
      every_secs: `due()` turns true this long after the last save (or creation).
      max_to_keep: how many checkpoints to keep, >= 1.
    """

    def __init__(self, directory, every_secs, max_to_keep=3):
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.every_secs = every_secs
        self.max_to_keep = max_to_keep
        self._variables = tf.compat.v1.global_variables()
        self._saver = tf.compat.v1.train.Saver(self._variables, max_to_keep=None)
        self._last_save = time.monotonic()
        self.last_saved_step = None

    def due(self):
        """Whether every_secs have passed since the last save."""
        return time.monotonic() - self._last_save >= self.every_secs

    def restore(self, sess, prefix):
        """Restores a checkpoint into the session.

        Raises:
          RunError: the checkpoint does not hold exactly this graph's variables and shapes (it
            was saved by another model or settings).
        """
        try:
            saved = dict(tf.compat.v1.train.list_variables(prefix))
        except (tf.errors.OpError, ValueError) as error:
            raise RunError(f"cannot read checkpoint {prefix} ({_first_line(error)}).") from None
        wanted = {v.op.name: v.shape.as_list() for v in self._variables}
        # Checked here: resource variables would silently take a value of another shape.
        problems = [f"{name} is {shape} here, {saved[name]} there" for name, shape
                    in wanted.items() if name in saved and saved[name] != shape]
        problems += [f"{name} is missing there" for name in wanted if name not in saved]
        problems += [f"{name} is unknown here" for name in saved if name not in wanted]
        if problems:
            more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
            raise RunError(
                f"cannot restore {prefix} into this model ({'; '.join(problems[:3])}{more}). "
                "It was saved by another model or settings; pass --fresh to delete it and "
                "start afresh.")
        self._saver.restore(sess, prefix)

    def save(self, sess, step, metadata):
        """Saves a checkpoint and its sidecar, checks it, and deletes the oldest beyond
        max_to_keep.

        Args:
          sess: the session.
          step: the global step, used in the file name (the variable itself is saved too).
          metadata: a JSON-able dict saved as `ckpt-<step>.json`.

        Returns:
          The checkpoint's path prefix.

        Raises:
          RunError: the checkpoint just written does not read back (the older ones are kept).
        """
        prefix = os.path.join(self.directory, f"{PREFIX}-{step}")
        # The sidecar first: a kill between the two leaves a sidecar alone, which tidy removes.
        write_json(prefix + ".json", dict(metadata, step=step))
        self._saver.save(sess, os.path.join(self.directory, PREFIX), global_step=step,
                         write_meta_graph=False, write_state=False)
        reason = verify(prefix)
        if reason is not None:
            raise RunError(f"the checkpoint just written, {prefix}, is unusable: {reason}. The "
                           "older checkpoints are kept. Check the disk (space, errors) and run "
                           "the same command again.")
        self._keep_newest()
        self._last_save = time.monotonic()
        self.last_saved_step = step
        return prefix

    def _keep_newest(self):
        files = checkpoint_files(self.directory)
        indexed = [step for step, paths in files.items()
                   if any(p.endswith(".index") for p in paths)]
        kept = indexed[-self.max_to_keep:]
        # TensorFlow's state file, for the tools that read it; relative paths, so that the
        # folder can be moved.
        state = "".join([f'model_checkpoint_path: "{PREFIX}-{kept[-1]}"\n'] + [
            f'all_model_checkpoint_paths: "{PREFIX}-{step}"\n' for step in kept])
        write_atomically(os.path.join(self.directory, _STATE_FILE), lambda f: f.write(state))
        for step in indexed[:-self.max_to_keep]:
            for path in sorted(files[step], key=lambda p: not p.endswith(".index")):
                os.remove(path)
