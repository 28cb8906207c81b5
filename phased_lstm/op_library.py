"""Builds a TensorFlow custom-op library from C++ source, caches it, and loads it.

The library is compiled against the installed TensorFlow with its own flags
(`tf.sysconfig.get_compile_flags()` and `get_link_flags()`) into a cache folder, under a name
that hashes everything the binary depends on: the source, TensorFlow's version and flags, the
compiler and its flags, and the CPU (the code is built for the machine it runs on,
`-march=native`). A later process with the same key loads the cached file without compiling.

Environment:
  PHASED_LSTM_KERNEL_CACHE: the cache folder; default `$XDG_CACHE_HOME/phased_lstm/kernels`,
    else `~/.cache/phased_lstm/kernels`. Where it is not writable, a temporary folder is used.
  PHASED_LSTM_CXX: the C++ compiler; default `$CXX`, else `g++`, else `c++`.

Two processes building at once cannot load a half-written file: each compiles to a temporary
file and renames it into place (`os.replace` is atomic), and a lock file makes the second wait
for the first and reuse its result.
"""

import contextlib
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile

from absl import logging

from phased_lstm.legacy_tf import tf

try:
    import fcntl
except ImportError:  # not POSIX: the atomic rename alone keeps concurrent builds safe
    fcntl = None

CACHE_DIR_ENV = "PHASED_LSTM_KERNEL_CACHE"
CXX_ENV = "PHASED_LSTM_CXX"
# -w: TensorFlow's own headers emit hundreds of deprecation warnings that would bury an error.
OPTIMIZATION_FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-fvisibility=hidden", "-w")
BUILD_TIMEOUT_S = 600


class BuildError(RuntimeError):
    """The library could not be compiled or loaded; `log_path` holds the compiler's output."""

    def __init__(self, message, log_path=None):
        super().__init__(message)
        self.log_path = log_path


def cache_dir():
    """The folder the built libraries are cached in (not created here)."""
    chosen = os.environ.get(CACHE_DIR_ENV)
    if chosen:
        return os.path.expanduser(chosen)
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # unset or relative: ignored, as the XDG spec says
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "phased_lstm", "kernels")


def compiler():
    """The C++ compiler command, as a list (it may carry flags, e.g. "ccache g++")."""
    chosen = os.environ.get(CXX_ENV) or os.environ.get("CXX")
    if chosen:
        return shlex.split(chosen)
    return [shutil.which("g++") or shutil.which("c++") or "g++"]


def _cpu_id():
    """What -march=native depends on: the CPU's model and its instruction-set flags."""
    try:
        with open("/proc/cpuinfo") as info:
            return "".join(line for line in info
                           if line.startswith(("model name", "flags", "Features")))[:20000]
    except OSError:
        return platform.processor() + platform.machine()


def build_command(source, output):
    """The compiler command line that builds `source` into the shared library `output`."""
    return (compiler() + ["-std=c++17", *OPTIMIZATION_FLAGS, source, "-o", output]
            + tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags())


def library_key(source):
    """A hash of everything the built library depends on (see the module docstring)."""
    digest = hashlib.sha256()
    with open(source, "rb") as f:
        digest.update(f.read())
    for part in (tf.__version__, tf.sysconfig.get_compile_flags(),
                 tf.sysconfig.get_link_flags(), build_command("SOURCE", "OUTPUT"), _cpu_id(),
                 sys.platform):
        digest.update(repr(part).encode())
    return digest.hexdigest()[:20]


def _writable_cache_dir():
    folder = cache_dir()
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
        return folder
    except OSError:
        return tempfile.mkdtemp(prefix="phased_lstm_")


@contextlib.contextmanager
def _lock(path):
    if fcntl is None:
        yield
        return
    with open(path, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def build(source):
    """Compiles `source` into the cache unless it is there already; returns the library's path.

    Args:
      source: path of the C++ source of the op library.

    Returns:
      The path of the built shared library.

    Raises:
      BuildError: if the compiler is missing, fails or times out (its output is in the
        error's `log_path`).
    """
    name = f"{os.path.splitext(os.path.basename(source))[0]}-{library_key(source)}"
    folder = _writable_cache_dir()
    library = os.path.join(folder, name + ".so")
    log_path = os.path.join(folder, name + ".log")
    if os.path.exists(library):
        return library
    with _lock(os.path.join(folder, name + ".lock")):
        if os.path.exists(library):  # another process built it while this one waited
            return library
        fd, partial = tempfile.mkstemp(dir=folder, prefix=name + ".", suffix=".so.partial")
        os.close(fd)
        command = build_command(source, partial)
        logging.info("Compiling %s against TensorFlow %s into %s (once; about a minute).",
                     source, tf.__version__, library)
        try:
            with open(log_path, "w") as log:
                log.write(shlex.join(command) + "\n\n")
                log.flush()
                try:
                    result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                                            timeout=BUILD_TIMEOUT_S, check=False)
                except (OSError, subprocess.TimeoutExpired) as error:
                    log.write(f"\n{error}\n")
                    raise BuildError(f"could not run the compiler {command[0]!r}: {error}",
                                     log_path) from error
            if result.returncode != 0:
                raise BuildError(f"the compiler {command[0]!r} failed (exit status "
                                 f"{result.returncode})", log_path)
            os.replace(partial, library)
        finally:
            if os.path.exists(partial):
                os.remove(partial)
    return library


def load(source):
    """Builds `source` if needed (see `build`) and loads it with `tf.load_op_library`.

    Returns:
      The module of Python wrappers `tf.load_op_library` makes, one function per op.

    Raises:
      BuildError: if it cannot be built or loaded.
    """
    library = build(source)
    try:
        module = tf.load_op_library(library)
    except (tf.errors.OpError, OSError) as error:
        raise BuildError(f"could not load {library}: {error}") from error
    logging.info("Loaded the op library %s (built from %s).", library, source)
    return module
