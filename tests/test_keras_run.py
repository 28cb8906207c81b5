"""experiments/keras_run.py in-process: TF_CONFIG, batch splits, the run folder's checks, the CSV
log. Training itself is tested through the script (test_keras_mnist_phased_lstm.py)."""

import json
import os

import numpy as np
import pytest

from experiments import keras_run, training

SETTINGS = {"num_units": 4, "learning_rate": 0.001, "seed": 0, "epochs": 3}
MUST_MATCH = ("num_units", "learning_rate", "seed")


def cluster(task_type="worker", index=0, workers=2, chiefs=0):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{2000 + i}" for i in range(workers)],
                                   **({"chief": ["127.0.0.1:1999"]} if chiefs else {})},
                       "task": {"type": task_type, "index": index}})


@pytest.mark.parametrize("text, expected", [
    ("", None),
    (cluster("worker", 0), (2, 0)),
    (cluster("worker", 1), (2, 1)),
    (cluster("chief", 0, chiefs=1), (3, 0)),    # the chief first,
    (cluster("worker", 0, chiefs=1), (3, 1)),   # then the workers
])
def test_tf_config_gives_the_cluster_size_and_this_process_place(text, expected):
    assert keras_run.parse_tf_config(text) == expected


@pytest.mark.parametrize("text, message", [
    ("{not json", "TF_CONFIG is not a cluster description"),
    ('{"cluster": {"worker": ["a:1"]}}', "TF_CONFIG is not a cluster description"),
    (cluster("worker", 2), "is not in its cluster"),
    (cluster("ps", 0), "is not in its cluster"),
])
def test_a_bad_tf_config_is_refused_with_what_it_must_be(text, message):
    with pytest.raises(training.RunError, match=message):
        keras_run.parse_tf_config(text)


def test_tf_config_on_another_backend_is_refused():
    with pytest.raises(training.RunError, match="the Keras backend is jax"):
        keras_run.replicas("jax", {"TF_CONFIG": cluster()})


def test_tf_config_for_keras_3_is_refused():  # its fit fails under the strategy (Keras 3.15)
    with pytest.raises(training.RunError, match="--keras tf_keras"):
        keras_run.replicas("tensorflow", {"TF_CONFIG": cluster()}, keras_3=True)


def test_without_tf_config_one_cpu_is_one_replica():
    replicas = keras_run.replicas("tensorflow", {})
    assert (replicas.strategy, replicas.count, replicas.is_chief) == (None, 1, True)


@pytest.mark.parametrize("count, batch, size, ok", [
    (2, 64, 256, True), (2, 64, 250, True),     # last batch 58: splits
    (2, 63, 252, False),                        # 63 does not
    (2, 64, 257, False),                        # the last batch of 1 does not
    (1, 63, 257, True),
])
def test_batches_must_split_evenly_across_replicas(count, batch, size, ok):
    if ok:
        keras_run.check_batch_split(count, batch, {"training": size})
    else:
        with pytest.raises(training.RunError, match=f"do not split across {count} replicas"):
            keras_run.check_batch_split(count, batch, {"training": size})


def model_run(tmp_path, worker_index=0, shared_backup=True):
    return keras_run.ModelRun.create(os.path.join(tmp_path, "PhasedLSTM"), worker_index,
                                     shared_backup)


def test_other_workers_write_their_own_files_but_may_share_the_backup(tmp_path):
    chief, other = model_run(tmp_path), model_run(tmp_path, 1)
    assert other.write_dir == os.path.join(chief.model_dir, "worker1")
    assert other.backup_dir == chief.backup_dir            # tf-keras reads the chief's backup
    assert model_run(tmp_path, 1, shared_backup=False).backup_dir == os.path.join(
        other.write_dir, keras_run.BACKUP_DIR)


def write_csv(path, rows, header="epoch,accuracy,loss,val_accuracy,val_loss"):
    with open(path, "w", encoding="utf-8") as f:
        f.write(header + "\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))


def test_a_new_folder_trains_and_records_its_settings(tmp_path):
    run = model_run(tmp_path)
    assert keras_run.prepare(run, SETTINGS, MUST_MATCH, epochs=3) == "train"
    with open(run.path(keras_run.SETTINGS), encoding="utf-8") as f:
        assert json.load(f) == SETTINGS


def test_a_blocked_folder_is_refused_before_any_work(tmp_path):
    with open(os.path.join(tmp_path, "PhasedLSTM"), "w", encoding="utf-8") as f:
        f.write("a file where the run folder goes")
    with pytest.raises(training.RunError, match="cannot write to the run folder .*--save_dir"):
        keras_run.prepare(model_run(tmp_path), SETTINGS, MUST_MATCH, epochs=3)


def test_resuming_with_other_settings_names_each_difference(tmp_path):
    run = model_run(tmp_path)
    keras_run.prepare(run, SETTINGS, MUST_MATCH, epochs=3)
    other = {**SETTINGS, "num_units": 8, "epochs": 5}  # epochs may change, units not
    with pytest.raises(training.RunError, match=r"--num_units=4 \(this command: 8\)") as error:
        keras_run.prepare(run, other, MUST_MATCH, epochs=5)
    assert "epochs" not in str(error.value)


def test_a_log_without_a_backup_is_refused_and_left_alone(tmp_path):
    run = model_run(tmp_path)
    os.makedirs(run.write_dir)
    write_csv(run.path(keras_run.CSV_LOG), [(0, 0.1, 2.3, 0.1, 2.3)])
    with pytest.raises(training.RunError, match="has rows but there is no backup/"):
        keras_run.prepare(run, SETTINGS, MUST_MATCH, epochs=3)
    assert os.path.exists(run.path(keras_run.CSV_LOG))


def test_a_finished_run_is_finished_and_a_longer_one_is_refused(tmp_path):
    run = model_run(tmp_path)
    keras_run.prepare(run, SETTINGS, MUST_MATCH, epochs=3)
    keras_run.finish(run, {"epochs": 3})
    assert keras_run.prepare(run, SETTINGS, MUST_MATCH, epochs=3) == "finished"
    assert keras_run.prepare(run, SETTINGS, MUST_MATCH, epochs=2) == "finished"
    with pytest.raises(training.RunError, match="finished 3 epoch.*asks for 5.*--fresh"):
        keras_run.prepare(run, SETTINGS, MUST_MATCH, epochs=5)


def test_finish_writes_results_then_deletes_the_backup(tmp_path):
    run = model_run(tmp_path)
    os.makedirs(os.path.join(run.backup_dir, "chief"))
    keras_run.finish(run, {"epochs": 3})
    assert not os.path.exists(run.backup_dir)
    assert keras_run.read_json(run.path(keras_run.RESULTS)) == {"epochs": 3}


def test_fresh_deletes_the_run_files_only(tmp_path):
    run = model_run(tmp_path)
    keras_run.prepare(run, SETTINGS, MUST_MATCH, epochs=3)
    write_csv(run.path(keras_run.CSV_LOG), [(0, 0.1, 2.3, 0.1, 2.3)])
    os.makedirs(os.path.join(run.write_dir, "worker1", keras_run.BACKUP_DIR))
    with open(os.path.join(run.write_dir, "notes.txt"), "w", encoding="utf-8") as f:
        f.write("the user's")
    other = {**SETTINGS, "num_units": 8}
    assert keras_run.prepare(run, other, MUST_MATCH, epochs=3, fresh=True) == "train"
    assert sorted(os.listdir(run.write_dir)) == ["notes.txt", keras_run.SETTINGS]


def test_the_csv_log_keeps_the_later_row_of_an_epoch_trained_twice(tmp_path):
    path = os.path.join(tmp_path, "log.csv")
    write_csv(path, [(0, 0.1, 2.3, 0.1, 2.3), (1, 0.2, 2.2, 0.2, 2.2), (1, 0.3, 2.1, 0.3, 2.1),
                     (2, 0.4, 2.0, 0.4, 2.0)])
    log = keras_run.read_csv_log(path)
    np.testing.assert_array_equal(log["epoch"], [0, 1, 2])
    np.testing.assert_array_equal(log["accuracy"], [0.1, 0.3, 0.4])
    summary = keras_run.summarize(log)
    assert (summary["epochs"], summary["best_test_accuracy"],
            summary["best_test_accuracy_epoch"]) == (3, 0.4, 3)


def test_a_damaged_csv_row_names_its_line(tmp_path):
    path = os.path.join(tmp_path, "log.csv")
    write_csv(path, [(0, 0.1, 2.3, 0.1, 2.3), (1, 0.2, "2.")])
    with pytest.raises(training.RunError, match="line 3 is damaged"):
        keras_run.read_csv_log(path)
