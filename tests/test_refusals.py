"""Non-finite settings and inputs are refused, with a message that names them; NumPy integers are
accepted wherever Python integers are.

- Every float flag of every script refuses nan, inf and -inf. The MNIST and frequency scripts are
  checked in this process, each on a FlagValues of its own; the Keras script, which defines its
  flags on absl's FLAGS at import, in a subprocess.
- Every timing setting of every front end (`GateTiming`, which checks them for all: the TF 1.x
  PhasedLSTMCell and PhasedGRUCell, TimeGate through them, the tf-keras PhasedLSTM, the Keras 3
  PhasedLSTMCell and PhasedLSTM), out of range or not finite, with the one message.
- NaN or infinite timestamps are an error on every path that computes the time gate (the cell
  under dynamic_rnn, the fast path, the event-driven path, the Keras layer).

The Keras 3 layer and cell refuse non-finite settings and timestamps on each backend too:
test_keras3.py.
"""

import json
import sys

from absl import flags
import numpy as np
import pytest

import freq_phased_lstm
import mnist_phased_lstm
from phased_lstm import PhasedGRUCell, PhasedLSTMCell, exp_uniform_initializer, tf
from phased_lstm.event_rnn import event_driven_phased_lstm
from phased_lstm.fast_rnn import phased_lstm_rnn
from phased_lstm.gate_math import GateTiming
from phased_lstm.keras_layer import PhasedLSTM
from script_helpers import parse_flags, run

try:  # after tf-keras: Keras 3 beside it, as in test_keras3.py
    from phased_lstm import keras3
except ImportError:  # Keras 2 alone: the other front ends are still checked
    keras3 = None

NON_FINITE = ("nan", "inf", "-inf")
MNIST_FLOAT_FLAGS = ("learning_rate", "checkpoint_every_secs", "ratio_on", "period_init_min",
                     "period_init_max", "leak")
FREQ_FLOAT_FLAGS = MNIST_FLOAT_FLAGS + ("phase_init_max", "clip_norm", "gate_gradient_clip")
KERAS_FLOAT_FLAGS = ("learning_rate", "ratio_on", "period_init_min", "period_init_max", "leak",
                     "inference_leak")

# Parses each `--name=value` with the script's flags; prints {argument: error message or None}.
PARSE_EACH = """
import json, sys
from absl import flags
import {module}
results = {{}}
for argument in sys.argv[1:]:
    try:
        flags.FLAGS(["{module}.py", argument])
        results[argument] = None
    except flags.Error as error:
        results[argument] = str(error)
    flags.FLAGS.unparse_flags()
results["float flags"] = sorted(
    f.name for f in flags.FLAGS.get_flags_for_module({module})
    if isinstance(f.parser, flags.FloatParser))
print(json.dumps(results))
"""


def float_flags(module):
    """The float flags a script defines (so that a new one cannot be forgotten here)."""
    return sorted(f.name for f in parse_flags(module).get_flags_for_module(module)
                  if isinstance(f.parser, flags.FloatParser))


def parse_in_subprocess(module, arguments):
    proc = run([sys.executable, "-c", PARSE_EACH.format(module=module), *arguments])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_names_the_flag(message, name, value):
    # nan and inf: our validator's message; -inf below a lower bound: absl's own.
    assert (f"--{name} must be a finite number; got {float(value)}" in message
            or f"--{name}={value}: {value} is not a non-negative number" in message), message


@pytest.mark.parametrize("module, names", [(mnist_phased_lstm, MNIST_FLOAT_FLAGS),
                                           (freq_phased_lstm, FREQ_FLOAT_FLAGS)])
def test_every_float_flag_of_the_tf1_scripts_is_checked_here(module, names):
    assert float_flags(module) == sorted(names)
    assert parse_flags(module, "--learning_rate=0.5").learning_rate == 0.5  # finite: passes


@pytest.mark.parametrize("module, name", [(mnist_phased_lstm, name) for name in MNIST_FLOAT_FLAGS]
                         + [(freq_phased_lstm, name) for name in FREQ_FLOAT_FLAGS])
@pytest.mark.parametrize("value", NON_FINITE)
def test_tf1_scripts_flags_refuse_non_finite_numbers(module, name, value):
    with pytest.raises(flags.IllegalFlagValueError) as error:
        parse_flags(module, f"--{name}={value}")
    assert_names_the_flag(str(error.value), name, value)


def test_keras_scripts_flags_refuse_non_finite_numbers():
    module, names = "keras_mnist_phased_lstm", KERAS_FLOAT_FLAGS
    arguments = [f"--{name}={value}" for name in names for value in NON_FINITE]
    results = parse_in_subprocess(module, arguments + ["--learning_rate=0.5"])
    assert results.pop("float flags") == sorted(names)  # none forgotten here
    assert results.pop("--learning_rate=0.5") is None  # a finite value still passes
    for argument, message in results.items():
        name, value = argument[2:].split("=")
        assert message, argument
        assert_names_the_flag(message, name, value)


# Each front end, built with the given timing settings (4 units where it has units).
FRONT_ENDS = {
    "GateTiming": GateTiming,
    "PhasedLSTMCell": lambda **timing: PhasedLSTMCell(4, **timing),
    "PhasedGRUCell": lambda **timing: PhasedGRUCell(4, **timing),
    "keras_layer.PhasedLSTM": lambda **timing: PhasedLSTM(4, **timing),
}
if keras3 is not None:
    FRONT_ENDS.update({
        "keras3.PhasedLSTMCell": lambda **timing: keras3.PhasedLSTMCell(4, **timing),
        "keras3.PhasedLSTM": lambda **timing: keras3.PhasedLSTM(4, **timing)})
KERAS_LAYERS = ("keras_layer.PhasedLSTM", "keras3.PhasedLSTM")  # they also take alpha
NUMBERS = ("leak", "inference_leak", "ratio_on", "period_init_min", "period_init_max")

# (settings, GateTiming's message): every check, each a front end must make with that message.
BAD_TIMING = [
    (dict(leak=-0.1), r"leak must be >= 0; got -0\.1"),
    (dict(inference_leak=-0.5), r"inference_leak must be >= 0; got -0\.5"),
    (dict(ratio_on=0.0), r"ratio_on must be in \(0, 1\]; got 0\.0"),
    (dict(ratio_on=1.5), r"ratio_on must be in \(0, 1\]; got 1\.5"),
    (dict(period_init_min=0.0), r"period_init_min must be > 0; got 0\.0"),
    (dict(period_init_min=-1.0), r"period_init_min must be > 0; got -1\.0"),
    (dict(period_init_min=10.0, period_init_max=5.0),
     r"period_init_max must be >= period_init_min \(10\.0\); got 5\.0"),
    (dict(mod_gradient="floor"), r"mod_gradient must be one of \('tf1', 'exact'\); got 'floor'"),
] + [(dict([(name, value)]), rf"{name} must be a finite number; got {float(value)}")
     for name in NUMBERS for value in (float("nan"), float("inf"), np.float32("-inf"))]


def _takes(front_end, settings):
    """Whether the front end has every setting (the TF 1.x cells have no inference_leak)."""
    return not (front_end.startswith("Phased") and "inference_leak" in settings)


@pytest.mark.parametrize("front_end, settings, message", [
    pytest.param(front_end, settings, message, id=f"{front_end}-{settings}")
    for front_end in FRONT_ENDS for settings, message in BAD_TIMING
    if _takes(front_end, settings)])
def test_every_front_end_refuses_bad_timing_with_gate_timings_message(front_end, settings,
                                                                       message):
    with pytest.raises(ValueError, match=message):
        FRONT_ENDS[front_end](**settings)


@pytest.mark.parametrize("front_end", [name for name in KERAS_LAYERS if name in FRONT_ENDS])
@pytest.mark.parametrize("alpha, message", [
    (-0.1, r"leak must be >= 0; got -0\.1"), (float("nan"), "leak must be a finite number"),
    (float("inf"), "leak must be a finite number")])
def test_keras_layers_check_alpha_as_the_leak(front_end, alpha, message):
    with pytest.raises(ValueError, match=message):
        FRONT_ENDS[front_end](alpha=alpha)


@pytest.mark.parametrize("front_end", ["GateTiming"] + [
    name for name in FRONT_ENDS if name.startswith(("keras_layer.", "keras3."))])
@pytest.mark.parametrize("name, value, message", [
    ("leak", "0", r"leak must be a number >= 0; got '0'"),
    ("leak", True, r"leak must be a number >= 0; got True"),
    ("inference_leak", "0", r"inference_leak must be a number >= 0; got '0'")])
def test_keras_front_ends_take_numbers_only(front_end, name, value, message):
    # Their configs hold the settings; GateTiming itself lets a TF 1.x cell's tensors through.
    make = FRONT_ENDS[front_end]
    with pytest.raises(ValueError, match=message):
        timing = make(**{name: value})
        if front_end == "GateTiming":
            timing.numbers_only()


@pytest.mark.parametrize("low, high, message", [
    (1.0, float("inf"), "high must be a finite number; got inf"),
    (float("nan"), 2.0, "low must be a finite number; got nan"),
    (0.0, 2.0, "0 < low <= high"),
])
def test_exp_uniform_initializer_refuses_bad_bounds(low, high, message):
    with pytest.raises(ValueError, match=message):
        exp_uniform_initializer(low, high)


def test_infinite_period_init_max_is_refused():  # the example
    with pytest.raises(ValueError, match="period_init_max must be a finite number; got inf"):
        PhasedLSTMCell(8, period_init_max=float("inf"))


@pytest.mark.parametrize("integer", [np.int64(8), np.int32(8), np.uint8(8)])
def test_numpy_integers_are_integers(integer):
    for cell in (PhasedLSTMCell(integer), PhasedGRUCell(integer)):
        assert cell.output_size == 8 and isinstance(cell.output_size, int)
        assert not isinstance(cell.output_size, np.integer)
    assert PhasedLSTM(integer).units == 8


def test_a_bool_is_no_number_of_units():
    with pytest.raises(ValueError, match="num_units must be an integer >= 1; got True"):
        PhasedLSTMCell(True)


def run_with_time(path, bad):
    """Runs a 4-unit Phased LSTM over 5 steps whose third timestamp is `bad`."""
    time = np.arange(5, dtype=np.float64).reshape(1, 5, 1)
    time[0, 2, 0] = bad
    features = np.ones((1, 5, 1), np.float32)
    with tf.Graph().as_default():
        cell = PhasedLSTMCell(4)
        if path == "dynamic_rnn":
            outputs, _ = tf.compat.v1.nn.dynamic_rnn(cell, (tf.constant(time), features),
                                                     dtype=tf.float32)
        elif path == "fast":
            outputs, _ = phased_lstm_rnn(cell, tf.constant(time), features)
        elif path == "event_driven":
            outputs = event_driven_phased_lstm(cell, tf.constant(time), features)
        else:
            layer = PhasedLSTM(4)
            outputs = layer([tf.constant(features), tf.constant(time)])
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            return sess.run(outputs)


@pytest.mark.parametrize("path", ["dynamic_rnn", "fast", "event_driven", "keras_layer"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_timestamps_are_an_error(path, bad):
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="every timestamp must be finite"):
        run_with_time(path, bad)


@pytest.mark.parametrize("path", ["dynamic_rnn", "fast", "event_driven", "keras_layer"])
def test_finite_timestamps_pass(path):
    outputs = run_with_time(path, 2.0)
    assert all(np.isfinite(o).all() for o in tf.nest.flatten(outputs))
