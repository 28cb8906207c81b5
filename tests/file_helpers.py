"""Temporary folders and files for the tests that build, cache or run things."""

import tempfile


def temp_dir(test):
    """A temporary folder removed when `test` (a unittest.TestCase) ends."""
    folder = tempfile.TemporaryDirectory()
    test.addCleanup(folder.cleanup)
    return folder.name


def write(path, text):
    """Writes `text` to `path`; returns the path."""
    with open(path, "w") as f:
        f.write(text)
    return path
