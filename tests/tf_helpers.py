"""Graph-mode helpers shared by the tests."""

import numpy as np

from phased_lstm import tf
from numpy_reference import PARAM_NAMES


def cell_variables(cell):
    """The cell's variables keyed by their TF 1.x names ("mask_gates/kernel", "period", ...)."""
    found = {}
    for variable in cell.weights:
        name = variable.name.split(":")[0]
        for key in PARAM_NAMES:
            if name == key or name.endswith("/" + key):
                found[key] = variable
    return found


def load_params(sess, cell, params):
    """Assigns NumPy values to the cell's variables (no constraint is applied)."""
    for key, variable in cell_variables(cell).items():
        variable.load(np.asarray(params[key], variable.dtype.as_numpy_dtype), sess)
