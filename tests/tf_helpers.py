"""Graph-mode helpers shared by the tests."""

import numpy as np

from phased_lstm import tf
from numpy_reference import PARAM_NAMES


def cell_variables(cell, names=PARAM_NAMES):
    """The cell's variables keyed by their TF 1.x names ("mask_gates/kernel", "period", ...);
    `names`: the cell's (the Phased LSTM's by default)."""
    found = {}
    for variable in cell.weights:
        name = variable.name.split(":")[0]
        for key in names:
            if name == key or name.endswith("/" + key):
                found[key] = variable
    return found


def load_params(sess, cell, params, names=PARAM_NAMES):
    """Assigns NumPy values to the cell's variables (no constraint is applied)."""
    for key, variable in cell_variables(cell, names).items():
        variable.load(np.asarray(params[key], variable.dtype.as_numpy_dtype), sess)


def variable_gradients(cell, loss, params):
    """d loss / d each of the cell's variables (keyed by TF 1.x names) at the values params."""
    variables = cell_variables(cell)
    grads = dict(zip(variables, tf.gradients(loss, list(variables.values()))))
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        load_params(sess, cell, params)
        return sess.run(grads)
