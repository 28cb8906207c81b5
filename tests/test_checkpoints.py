"""Tests of experiments.checkpoints: saving, reading back, tidying, setting damaged ones aside."""

import os

import numpy as np
import pytest

from phased_lstm import tf
from experiments import checkpoints
from experiments.training import RunError


def graph_with(size=3):
    graph = tf.Graph()
    with graph.as_default():
        weights = tf.compat.v1.get_variable("w", [size],
                                            initializer=tf.compat.v1.zeros_initializer())
        step = tf.compat.v1.train.get_or_create_global_step()
    return graph, weights, step


def save_steps(directory, steps, values=None, max_to_keep=3):
    """Saves a checkpoint at each step, w = step (or the given values), in one segment."""
    graph, weights, global_step = graph_with()
    with graph.as_default(), tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        checkpointer = checkpoints.Checkpointer(directory, every_secs=0, max_to_keep=max_to_keep)
        for step in steps:
            weights.load(values if values is not None else [float(step)] * 3, sess)
            global_step.load(step, sess)
            checkpointer.save(sess, step, {"wall_time_s": step / 10, "settings": {"seed": 3}})
    return directory


def names(directory):
    return sorted(os.listdir(directory))


def data_file(directory, step):
    (path,) = [p for p in checkpoints.checkpoint_files(directory)[step] if ".data-" in p]
    return path


def test_save_then_restore_in_a_new_graph(tmp_path):
    directory = save_steps(str(tmp_path), [7])
    usable, skipped = checkpoints.find_usable(directory)
    assert skipped == [] and usable.step == 7
    assert usable.prefix == os.path.join(directory, "ckpt-7")
    assert usable.metadata == {"wall_time_s": 0.7, "settings": {"seed": 3}, "step": 7}
    graph, weights, step = graph_with()
    with graph.as_default(), tf.compat.v1.Session() as sess:
        checkpoints.Checkpointer(directory, every_secs=3600).restore(sess, usable.prefix)
        np.testing.assert_array_equal(sess.run(weights), [7.0, 7.0, 7.0])
        assert sess.run(step) == 7


def test_keeps_max_to_keep_across_segments_with_their_sidecars(tmp_path):
    directory = str(tmp_path)
    save_steps(directory, [1, 2], max_to_keep=2)
    save_steps(directory, [3, 4], max_to_keep=2)  # A resumed segment deletes the older ones.
    assert names(directory) == ["checkpoint", "ckpt-3.data-00000-of-00001", "ckpt-3.index",
                                "ckpt-3.json", "ckpt-4.data-00000-of-00001", "ckpt-4.index",
                                "ckpt-4.json"]
    # TensorFlow's own tools read the state file written beside them.
    assert tf.compat.v1.train.latest_checkpoint(directory) == os.path.join(directory, "ckpt-4")


def test_restore_into_another_model_is_a_clear_error(tmp_path):
    directory = save_steps(str(tmp_path), [1])
    graph, _, _ = graph_with(size=4)
    with graph.as_default(), tf.compat.v1.Session() as sess:
        with pytest.raises(RunError, match=r"ckpt-1 into this model \(w is \[4\] here, \[3\] "
                                           r"there\).*--fresh"):
            checkpoints.Checkpointer(directory, every_secs=0).restore(
                sess, os.path.join(directory, "ckpt-1"))


def test_a_checkpoint_without_its_sidecar_is_usable(tmp_path):
    directory = save_steps(str(tmp_path), [2])
    os.remove(os.path.join(directory, "ckpt-2.json"))
    usable, _ = checkpoints.find_usable(directory)
    assert (usable.step, usable.metadata) == (2, {})


@pytest.mark.parametrize("damage, reason", [
    ("truncate_data", "does not read back"),
    ("flip_data", "does not read back"),
    ("delete_data", ".data file is missing"),
    ("delete_index", None),  # data alone, newest: reported as not reading back
    ("garble_index", "does not read back"),
])
def test_find_usable_falls_back_past_damaged_newer_checkpoints(tmp_path, damage, reason):
    directory = save_steps(str(tmp_path), [1, 2, 3])
    data, index = data_file(directory, 3), os.path.join(directory, "ckpt-3.index")
    if damage == "truncate_data":
        os.truncate(data, os.path.getsize(data) // 2)
    elif damage == "flip_data":
        with open(data, "r+b") as f:
            f.seek(4)
            byte = f.read(1)
            f.seek(4)
            f.write(bytes([byte[0] ^ 0xFF]))
    elif damage == "delete_data":
        os.remove(data)
    elif damage == "delete_index":
        os.remove(index)
    elif damage == "garble_index":
        with open(index, "wb") as f:
            f.write(os.urandom(64))
    assert checkpoints.tidy(directory) == []  # Damage is not a leftover: nothing deleted.
    usable, skipped = checkpoints.find_usable(directory)
    assert usable.step == 2
    assert [s.step for s in skipped] == [3]
    if reason:
        assert reason in skipped[0].reason
    moved = checkpoints.set_aside(directory, skipped)
    assert sorted(os.path.basename(p) for p in moved) == sorted(
        os.path.basename(p) for p in skipped[0].files)
    assert all(os.path.dirname(p) == os.path.join(directory, "damaged") for p in moved)
    assert 3 not in checkpoints.checkpoint_files(directory)


def test_a_checkpoint_with_nan_is_not_usable(tmp_path):
    directory = save_steps(str(tmp_path), [1])
    # Written behind the Checkpointer's back (it refuses nothing itself; the loop checks first).
    graph, weights, step = graph_with()
    with graph.as_default(), tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        weights.load([1.0, np.nan, 2.0], sess)
        tf.compat.v1.train.Saver().save(sess, os.path.join(directory, "ckpt-2"),
                                         write_meta_graph=False, write_state=False)
    usable, skipped = checkpoints.find_usable(directory)
    assert usable.step == 1
    assert skipped[0].reason == "its variable w holds NaN or infinite values"


def test_nothing_usable(tmp_path):
    directory = save_steps(str(tmp_path), [1])
    os.truncate(data_file(directory, 1), 3)
    usable, skipped = checkpoints.find_usable(directory)
    assert usable is None and [s.step for s in skipped] == [1]
    assert checkpoints.find_usable(os.path.join(directory, "missing")) == (None, [])


def test_tidy_removes_the_leftovers_of_interrupted_saves_and_deletions(tmp_path):
    directory = save_steps(str(tmp_path), [4, 5])
    # A deletion of ckpt-2 cut short after its index; a save of 6 cut short mid-merge; a save
    # of 7 cut short after its sidecar; temporary files of atomic writes.
    for name in ("ckpt-2.data-00000-of-00001", "ckpt-2.json", "ckpt-6.data-00000-of-00001",
                 "ckpt-7.json", ".ckpt-8.json.abc.tmp", "checkpoint.tmp123"):
        with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
            f.write("x")
    os.makedirs(os.path.join(directory, "ckpt-6_temp"))
    removed = checkpoints.tidy(directory)
    assert len(removed) == 7
    assert names(directory) == ["checkpoint", "ckpt-4.data-00000-of-00001", "ckpt-4.index",
                                "ckpt-4.json", "ckpt-5.data-00000-of-00001", "ckpt-5.index",
                                "ckpt-5.json"]
    assert checkpoints.find_usable(directory)[0].step == 5


def test_set_aside_never_overwrites(tmp_path):
    directory = str(tmp_path)
    for _ in range(2):
        path = os.path.join(directory, "ckpt-9.index")
        with open(path, "w", encoding="utf-8") as f:
            f.write("x")
        checkpoints.set_aside(directory, [checkpoints.Skipped(9, [path], "damaged")])
    assert names(os.path.join(directory, "damaged")) == ["ckpt-9.index", "ckpt-9.index.1"]
