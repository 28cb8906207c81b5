"""Tests of experiments.training.files: the run folder (writable checks, what a run wrote,
--fresh, temporary files)."""

import os

import pytest

from experiments import training
from experiments.training import RunError
from training_helpers import fake_log, write_text


def test_check_writable_dir_creates_the_folder(tmp_path):
    path = training.check_writable_dir(os.path.join(tmp_path, "a", "b"))
    assert os.path.isdir(path) and os.path.isabs(path)
    assert os.listdir(path) == []


def test_check_writable_dir_names_a_folder_it_cannot_create(tmp_path):
    blocker = os.path.join(tmp_path, "file")
    write_text(blocker, "")
    with pytest.raises(RunError, match=f"cannot write to the log folder {blocker}/runs"):
        training.check_writable_dir(os.path.join(blocker, "runs"))


def test_clear_run_deletes_what_a_run_wrote_and_nothing_else(tmp_path):
    fake_log(tmp_path, [1])
    for name in ("results.json", "events.out.tfevents.1.host", "notes.txt"):
        write_text(os.path.join(tmp_path, name), "")
    os.makedirs(os.path.join(tmp_path, "checkpoints"))
    write_text(os.path.join(tmp_path, "checkpoints", "ckpt-1.index"), "")
    os.makedirs(os.path.join(tmp_path, "checkpoints", "ckpt-2_temp"))
    assert len(training.clear_run(tmp_path)) == 4
    assert os.listdir(tmp_path) == ["notes.txt"]
    assert training.clear_run(os.path.join(tmp_path, "missing")) == []


def test_run_files_and_what_fresh_would_delete(tmp_path):
    fake_log(tmp_path, range(1, 6))
    write_text(os.path.join(tmp_path, "results.json"), "{}")
    write_text(os.path.join(tmp_path, "notes.txt"), "")
    os.makedirs(os.path.join(tmp_path, "checkpoints", "damaged"))
    assert [os.path.basename(p) for p in training.run_files(str(tmp_path))] == [
        "log.tsv", "results.json", "checkpoints"]
    assert training.describe_run_files(str(tmp_path)) == (
        f"{tmp_path}: log.tsv (5 rows), results.json, checkpoints/ (all of it)")


def test_remove_temporary_files(tmp_path):
    for name in (".results.json.abc.tmp", ".log.tsv.x.tmp", "keep.tmp", "log.tsv"):
        write_text(os.path.join(tmp_path, name), "")
    assert len(training.remove_temporary_files(str(tmp_path))) == 2
    assert sorted(os.listdir(tmp_path)) == ["keep.tmp", "log.tsv"]


def test_check_writable_run_names_the_checkpoint_folder(tmp_path):
    write_text(os.path.join(tmp_path, "checkpoints"), "")
    with pytest.raises(RunError, match="cannot write to the checkpoint folder"):
        training.check_writable_run(str(tmp_path))
