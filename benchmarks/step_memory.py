"""The memory a training step needs, measured the same way for every benchmark row.

Its own module, without TensorFlow or Keras, so that the TF 1.x benchmark and the Keras 3 one
(on any backend) share one definition.
"""

import resource

# Steps measured after the first one (which makes the one-time allocations: optimizer slots,
# kernels' caches, compiled programs).
MEASURED_STEPS = 3


def peak_rss_mib():
    """The process's peak resident set so far (VmHWM), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mib():
    """The process's resident set now (VmRSS), MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def growth_mib(step):
    """Peak memory growth of MEASURED_STEPS calls of `step` after a first one, MiB.

    Run it in a fresh process holding only the model measured: the peak resident set above what
    the process held after its first step, i.e. what the training step itself needs. It varies
    between runs with what malloc kept from the first step.
    """
    step()
    before = current_rss_mib()
    for _ in range(MEASURED_STEPS):
        step()
    return max(0.0, peak_rss_mib() - before)
