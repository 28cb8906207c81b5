"""experiments.keras_over_seeds: mean ± std per epoch of the Keras script's runs."""

import os

import numpy as np

from experiments import keras_over_seeds


def _write_log(root, seed, model, train, test):
    folder = os.path.join(root, f"seed{seed}", model)
    os.makedirs(folder)
    with open(os.path.join(folder, "log.csv"), "w") as f:
        f.write("epoch,accuracy,epoch_seconds,loss,val_accuracy,val_loss\n")
        for epoch, (a, v) in enumerate(zip(train, test)):
            f.write(f"{epoch},{a},1.0,0.5,{v},0.5\n")


def test_table_is_mean_and_sample_std_over_the_seeds_that_reached_the_epoch(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.uniform(size=(3, 4))
    test = rng.uniform(size=(3, 4))
    for seed in range(3):
        # Seed 2 stopped after 2 epochs: it counts for epochs 1 and 2 only.
        epochs = 2 if seed == 2 else 4
        _write_log(tmp_path, seed, "PhasedLSTM", train[seed, :epochs], test[seed, :epochs])
    _write_log(tmp_path, 0, "LSTM", [0.1, 0.2, 0.3, 0.4], [0.15, 0.25, 0.35, 0.45])

    runs = keras_over_seeds.collect(str(tmp_path))
    assert sorted(runs) == ["LSTM", "PhasedLSTM"] and sorted(runs["PhasedLSTM"]) == [0, 1, 2]
    summary = keras_over_seeds.summarize(runs, [1, 4, 5])
    mean, std, n = summary["PhasedLSTM"]["train"][1]
    assert n == 3 and np.isclose(mean, train[:, 0].mean())
    assert np.isclose(std, train[:, 0].std(ddof=1))
    mean, std, n = summary["PhasedLSTM"]["test"][4]
    assert n == 2 and np.isclose(mean, test[:2, 3].mean())
    assert np.isclose(std, test[:2, 3].std(ddof=1))
    assert summary["PhasedLSTM"]["train"][5] is None  # no seed reached it
    assert summary["LSTM"]["test"][4] == (0.45, 0.0, 1)

    table = keras_over_seeds.markdown_table(summary, [1, 4, 5])
    assert f"{train[:, 0].mean():.3f} ± {train[:, 0].std(ddof=1):.3f} (3)" in table
    path = os.path.join(tmp_path, "curves.png")
    keras_over_seeds.plot(runs, path, "test")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
