"""The machine and builds a benchmark ran on, for its tables' headings.

Its own module (no flags) so that every benchmark can name the machine, whatever flags it
defines.
"""

import os

from phased_lstm import fused_rnn, op_library, tf


def describe():
    """The machine, for every table's heading: numbers hold only on the machine that gave them."""
    def build(library):
        if library.available():
            return f"{library.loaded_build().rung.name} build"
        return f"off ({fused_rnn.FUSED_ENV}=0)" if fused_rnn.disabled() else "not available"

    return (f"{op_library.cpu_name()}, {os.cpu_count()} CPU cores, TensorFlow {tf.__version__}"
            f", fused kernel: {build(fused_rnn.LSTM)}, fused GRU kernel: {build(fused_rnn.GRU)}"
            f", fused time-gate kernel: {build(fused_rnn.TIME_GATE)}")
