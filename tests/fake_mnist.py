"""A fake MNIST for the scripts' tests: MNIST's layout, random pixels, never downloaded.

The scripts train only on verified MNIST. Tests that train them on a fake make
`experiments.mnist_data` accept any file in MNIST's layout and never download: in this process
(`accept_fake_mnist(monkeypatch.setattr)`) or in a script run through `command`.
"""

import os
import sys

import numpy as np

from experiments import mnist_data

TESTS = os.path.dirname(os.path.abspath(__file__))
# Python code that makes its process accept a fake MNIST (`python -c` runs it first).
PREAMBLE = (f"import sys; sys.path.insert(1, {TESTS!r}); import fake_mnist; "
            "fake_mnist.accept_fake_mnist()\n")
# Then runs the script argv[1] with the arguments after it, as `python script ...` would.
_RUN_SCRIPT = ("import runpy\nsys.argv = sys.argv[1:]\n"
               "runpy.run_path(sys.argv[0], run_name='__main__')\n")


def write_fake_mnist(folder, n_train=512, n_test=256):
    """Writes an MNIST-shaped mnist.npz of random images; returns the folder."""
    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    np.savez(os.path.join(folder, "mnist.npz"),
             x_train=rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
             y_train=rng.integers(0, 10, n_train, dtype=np.uint8),
             x_test=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
             y_test=rng.integers(0, 10, n_test, dtype=np.uint8))
    return str(folder)


def _no_download(scratch):
    del scratch  # unused
    raise mnist_data.MnistDataError("the tests never download MNIST")


def accept_fake_mnist(patch=setattr):
    """Makes mnist_data check only MNIST's layout and never download.

    Args:
      patch: sets an attribute; pytest's `monkeypatch.setattr` to undo it after the test.
    """
    patch(mnist_data, "verify_mnist", mnist_data.check_layout)
    patch(mnist_data, "fetch_from_keras", _no_download)
    patch(mnist_data, "fetch_from_index", _no_download)


def command(script, *args):
    """The command that runs a script on a fake MNIST (run it from the repository's root)."""
    return [sys.executable, "-c", PREAMBLE + _RUN_SCRIPT, script, *args]
