"""Builds, caches and loads a TensorFlow custom-op library (`phased_lstm.kernel_build` for TF).

The generic machinery (the ladder of builds, the cache, its locks and remembered failures) is
`phased_lstm.kernel_build`; this module adds TensorFlow's part, `TENSORFLOW`: the flags of
`tf.sysconfig.get_compile_flags()` and `get_link_flags()`, TensorFlow's version in the key, and
`tf.load_op_library`. The functions below are kernel_build's with that toolchain.
"""

# Plain TensorFlow, not legacy_tf: the Keras 3 layer uses this module on the TensorFlow backend
# and must not select tf-keras (nothing here needs the TF 1.x cells).
import tensorflow as tf

from phased_lstm import kernel_build
from phased_lstm.kernel_build import (  # noqa: F401  (this module's interface, as before)
    CACHE_DIR_ENV, COMMON_FLAGS, CXX_ENV, NEWEST_EXTENSIONS, NO_COMPILER, REBUILD_COMMAND,
    X86_64_LEVELS, Attempt, BuildError, LadderError, Loaded, Rung, build_ladder, cache_dir,
    compiler, cpu_name, source_files, subprocess)


def _load_op_library(path):
    return tf.load_op_library(path)  # looked up per call: tests stand in for it


TENSORFLOW = kernel_build.Toolchain(
    name=f"TensorFlow {tf.__version__}",
    flags=tuple(tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags()),
    identity=(tf.__version__,),
    load=_load_op_library,
    load_errors=(tf.errors.OpError, OSError))


def build_command(source, output, rung):
    """kernel_build.build_command against TensorFlow."""
    return kernel_build.build_command(source, output, rung, TENSORFLOW)


def library_key(source, rung):
    """kernel_build.library_key against TensorFlow."""
    return kernel_build.library_key(source, rung, TENSORFLOW)


def load(source, rebuild=False, ladder=None):
    """kernel_build.load against TensorFlow: the Loaded's module is the ops' Python wrappers
    that `tf.load_op_library` makes (one function per op)."""
    return kernel_build.load(source, TENSORFLOW, rebuild=rebuild, ladder=ladder)


def remembered_failures(source, ladder=None):
    """kernel_build.remembered_failures against TensorFlow."""
    return kernel_build.remembered_failures(source, TENSORFLOW, ladder)


def cached_status(source, ladder=None):
    """kernel_build.cached_status against TensorFlow."""
    return kernel_build.cached_status(source, TENSORFLOW, ladder)
