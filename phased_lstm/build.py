"""Builds the fused kernels again and says which path phased_lstm_rnn and phased_gru_rnn run.

    python -m phased_lstm.build            # forget cached builds and failures, build again
    python -m phased_lstm.build --status   # only say what the cache holds; build nothing
    python -m phased_lstm.build --backend=jax   # the same for the Keras 3 layer on JAX

With --backend=jax the library is the XLA FFI one that the Keras 3 PhasedLSTM runs on JAX
(`phased_lstm.jax_ffi`), and TensorFlow is not imported.

The kernels (the Phased LSTM's, the Phased GRU's and the evaluation time gate's, each its own
library, and the JAX one) are built on first use anyway (`phased_lstm.kernel_build`); a build
that failed is remembered so that later processes do not call the compiler again. Run this after
fixing the cause (installing a compiler, setting PHASED_LSTM_CXX), or to see what each build
attempt gave. Exits 0 when every fused kernel is available, 1 when any falls back (to
TensorFlow's loop, or to Keras' loop for --backend=jax); with --status, 1 when every build of any
kernel failed before, none can start (no Eigen for JAX) or PHASED_LSTM_FUSED=0, else 0 (built,
or to be built on first use).
"""

import sys

from absl import app, flags

from phased_lstm import kernel_build

flags.DEFINE_bool("status", False, "Only report what the cache holds; compile nothing.")
flags.DEFINE_enum("backend", "tensorflow", ["tensorflow", "jax"],
                  "Whose kernels: TensorFlow's ops (phased_lstm_rnn, phased_gru_rnn) or the "
                  "XLA FFI library of the Keras 3 layer on JAX.")
FLAGS = flags.FLAGS


def _libraries():
    """(the KernelLibrary objects of FLAGS.backend, a function of one that says where its
    `function` runs the kernel)."""
    if FLAGS.backend == "jax":
        from phased_lstm import jax_ffi  # pylint: disable=import-outside-toplevel
        return (jax_ffi.LIBRARY,), lambda library: "float32 and float64 layers on the CPU"
    from phased_lstm import fused_rnn  # pylint: disable=import-outside-toplevel
    return fused_rnn.LIBRARIES, lambda library: (
        "float32 and float64 cells whose recurrence runs on the CPU (on a GPU it runs "
        f"its {library.fallback})")


def _print_attempt(attempt):
    flags_text = " ".join(attempt.rung.arch_flags) or "no -march"
    line = f"  {attempt.rung.name} ({flags_text}): {attempt.outcome}"
    if attempt.outcome in ("built", "cached"):
        line += f" in {attempt.seconds:.0f} s: {attempt.detail}"
    else:
        line += f": {attempt.detail}"
        if attempt.log_path:
            line += f" (log: {attempt.log_path})"
    print(line)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    print(f"CPU: {kernel_build.cpu_name()}; compiler: {' '.join(kernel_build.compiler())}; "
          f"cache: {kernel_build.cache_dir()}")
    print("builds, best first: " + "; ".join(
        f"{rung.name} ({' '.join(rung.arch_flags) or 'no -march'})"
        for rung in kernel_build.build_ladder()))
    libraries, where = _libraries()
    if FLAGS.status:
        failed = False
        for library in libraries:
            for rung, failure in kernel_build.remembered_failures(library.source,
                                                                  library.toolchain):
                print(f"  {rung.name}: failed before: {failure.get('reason')} "
                      f"(log: {failure.get('log')})")
            print(f"{library.function} runs " + library.cached_description())
            failed |= kernel_build.cached_status(library.source,
                                                 library.toolchain)[0] == "failed"
        return 1 if failed or kernel_build.disabled() else 0
    status = 0
    for library in libraries:
        print(f"building {library.source} again:")
        loaded, failure = library.rebuild()
        for attempt in getattr(loaded or failure, "attempts", ()):  # none: no build started
            _print_attempt(attempt)
        if loaded is None:
            print(f"{library.function} runs its {library.fallback} (slower): "
                  + library.unavailable_message(failure))
            status = 1
        elif kernel_build.disabled():
            print(f"built, but {kernel_build.FUSED_ENV}=0 turns the fused kernel off: "
                  f"{library.function} runs its {library.fallback}")
            status = 1
        else:
            print(f"{library.function} runs the fused kernel ({loaded.rung.name} build) for "
                  + where(library))
    return status


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
