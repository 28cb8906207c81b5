"""Tests of experiments.training.signals: SIGTERM and Ctrl-C as a stop request."""

import os
import signal

import pytest

from experiments import training


def test_stop_signals_turn_sigterm_into_a_request():
    previous = signal.getsignal(signal.SIGTERM)
    with training.StopSignals() as stop:
        assert not stop.requested and stop.name is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.name == "SIGTERM"
        os.kill(os.getpid(), signal.SIGTERM)  # A second SIGTERM changes nothing.
        assert stop.received == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is previous


def test_a_second_ctrl_c_interrupts_at_once():
    previous = signal.getsignal(signal.SIGINT)
    with training.StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is previous
