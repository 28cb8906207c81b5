"""pyproject.toml ships every file the kernels' builds read: an installed package (not a clone)
compiles its kernels from the package's own files."""

import fnmatch
import glob
import os
import tomllib

from phased_lstm import kernel_build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "phased_lstm")


def shipped_data_files():
    """The package's files that pyproject.toml's package-data globs select, relative to it."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        patterns = tomllib.load(f)["tool"]["setuptools"]["package-data"]["phased_lstm"]
    files = [os.path.relpath(path, PACKAGE)
             for path in glob.glob(os.path.join(PACKAGE, "**", "*"), recursive=True)
             if os.path.isfile(path)]
    return {name for name in files if any(fnmatch.fnmatch(name, p) for p in patterns)}


def test_every_file_a_kernel_build_reads_is_package_data():
    sources = glob.glob(os.path.join(PACKAGE, "kernels", "*.cc"))
    assert sources, "no kernel sources found"
    shipped = shipped_data_files()
    read = {os.path.relpath(path, PACKAGE)
            for source in sources for path in kernel_build.source_files(source)}
    # Headers are read too: the test means something only if some source includes one.
    assert any(name.endswith(".h") for name in read)
    assert read <= shipped, f"read by a build but not in package-data: {sorted(read - shipped)}"
