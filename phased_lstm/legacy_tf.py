"""TensorFlow with its TF 1.x RNN cells, whatever the import order.

TensorFlow 2.16+ routes `tf.keras` and `tf.compat.v1.nn.rnn_cell` to Keras 3, which has no
`RNNCell`. The TF 1.x cells live on in the package tf-keras and are used when
`TF_USE_LEGACY_KERAS=1` is set before `tf.keras` is first touched. This module sets it (unless
the user chose otherwise, or `tf.keras` is already in use) and takes the cells straight from
tf-keras's own v1 API, so that the TF 1.x cells work whether or not `tensorflow` was imported
first.

The variable is left alone once `tf.keras` has been resolved (to Keras 3, say, by a user's
`tf.keras.layers.Dense`): setting it then could not change that `tf.keras` and would only make
the process inconsistent. So importing the TF 1.x parts never changes what an already-used
`tf.keras` means. The decision reads only the process's own state (`tf.keras`'s loader and the
environment), never anything this package set: whether `keras` is imported says nothing, since
`import tensorflow` itself imports Keras 3. `import phased_lstm` alone does not import this
module (the package loads it on the first use of a TF 1.x name), and `phased_lstm.keras3`
never does.

Every TF 1.x module of the package imports `tf` and `rnn_cell` from here.
"""

import os
import sys


def tf_keras_resolved():
    """The Keras that `tf.keras` already means: "keras_3", "tf_keras", or None if unused yet.

    Read from TensorFlow's lazy loader (if TensorFlow is imported), which answers without
    loading anything.
    """
    tensorflow = sys.modules.get("tensorflow")
    loader = None if tensorflow is None else tensorflow.__dict__.get("keras")
    if loader is None or not getattr(loader, "_tfll_initialized", True):
        return None
    version = getattr(loader, "_tfll_keras_version", None)
    if version is None:
        version = "tf_keras" if loader.__name__.startswith("tf_keras") else "keras_3"
    return "keras_3" if version == "keras_3" else "tf_keras"


# Must precede the first use of tf.keras; TensorFlow reads it lazily, when tf.keras is first
# touched, not at import. A user's own setting wins (setdefault), and an already-used tf.keras
# is left as it is.
if tf_keras_resolved() is None:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402


def _major_minor(version):
    return tuple(version.split(".")[:2])


_INSTALL_HINT = (
    "Install it with the same major.minor version as TensorFlow: "
    f"pip install 'tf-keras~={'.'.join(_major_minor(tf.__version__))}.0'"
)

try:
    import tf_keras  # noqa: E402
except ImportError as error:
    raise ImportError(
        "phased_lstm needs the TF 1.x RNN cells, which TensorFlow "
        f"{tf.__version__} only provides through the package tf-keras, and it is not "
        f"installed. {_INSTALL_HINT}"
    ) from error

if _major_minor(tf_keras.__version__) != _major_minor(tf.__version__):
    raise ImportError(
        f"tf-keras {tf_keras.__version__} does not match TensorFlow {tf.__version__}. "
        + _INSTALL_HINT
    )

# The same classes as tf.compat.v1.nn.rnn_cell under TF_USE_LEGACY_KERAS=1, reached even if
# tf.keras was already bound to Keras 3 before this package was imported.
from tf_keras.api._v1.keras.__internal__.legacy import rnn_cell  # noqa: E402

# The RNNCell subclass that TensorFlow's own cells derive from: variables made in build(), no
# scope cached from the first call (RNNCell caches one, and a cell first used inside
# dynamic_rnn's while loop would build its later static_rnn ops in that loop's graph).
# tf-keras does not export it; it is the same class TF 1.x had as rnn_cell_impl.LayerRNNCell.
from tf_keras.src.layers.rnn.legacy_cells import LayerRNNCell  # noqa: E402

__all__ = ["tf", "rnn_cell", "LayerRNNCell", "tf_keras_resolved"]
