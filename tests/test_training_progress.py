"""Tests of experiments.training.progress: the progress line."""

from experiments import training


def test_format_duration():
    assert training.format_duration(0) == "0:00:00"
    assert training.format_duration(3725.4) == "1:02:05"
    assert training.format_duration(float("inf")) == "?"


def test_progress_reports_every_n_steps_or_seconds_and_the_ends():
    now = [100.0]
    progress = training.Progress(total_steps=110, first_step=10, every_steps=20, every_secs=10,
                                 clock=lambda: now[0])
    lines = {}
    for step in range(11, 111):
        seconds = 0.25 if step < 80 else 2.0  # Slower from step 80 on.
        now[0] += seconds + (1.0 if step == 50 else 0.0)  # An evaluation at step 50.
        line = progress.update(step, loss=step / 100, accuracy=0.5, seconds=seconds)
        if line:
            lines[step] = line
    # The first step; every 20 steps; every 10 s (5 steps at 2 s each); the last step.
    assert list(lines) == [11, 31, 51, 71, 83, 88, 93, 98, 103, 108, 110]
    # 20 steps in 5 s of training; 59 steps left at this segment's 41 steps in 11.25 s.
    assert lines[51] == "step 51/110  loss 0.5100  accuracy 0.500  4.00 steps/s  ETA 0:00:16"
    assert lines[110] == "step 110/110  loss 1.1000  accuracy 0.500  0.50 steps/s  ETA 0:00:00"
