"""Builds a TensorFlow custom-op library from C++ source, caches it, and loads it.

The library is compiled against the installed TensorFlow with its own flags
(`tf.sysconfig.get_compile_flags()` and `get_link_flags()`) into a cache folder. Builds are
tried down a ladder of instruction sets until one compiles and loads (`build_ladder`):

1. `native`: `-march=native`, everything this CPU has.
2. `native without the newest extensions`: the same less AVX512-FP16 and AMX, on CPUs that have
   them. Eigen's headers in TensorFlow's wheel do not compile with AVX512-FP16 (g++ 12,
   TensorFlow 2.21: `PacketMathFP16.h`), which stops rung 1 on Intel Sapphire Rapids.
3. `x86-64-v3` (AVX2, FMA) and 4. `x86-64-v2` (SSE4.2), where the CPU has them.
5. `portable`: the compiler's default target.

Each rung is cached under its own key, a hash of everything its binary depends on: the source,
TensorFlow's version and flags, the compiler (its command and the files it runs), the rung's
flags, and the CPU. A rung that fails, to compile or to load, is remembered under its key (a
`.failed` file beside the logs), so that later processes skip it without calling the compiler:
where every rung failed once, later processes go straight to the TensorFlow path. Failures that
may pass (a timeout, a compiler killed by a signal, a cache that cannot be written) are not
remembered. `python -m phased_lstm.build` forgets them and builds again.

Environment:
  PHASED_LSTM_KERNEL_CACHE: the cache folder; default `$XDG_CACHE_HOME/phased_lstm/kernels`,
    else `~/.cache/phased_lstm/kernels`. Where it is not writable, a temporary folder is used
    (and a failure is then remembered for this process only).
  PHASED_LSTM_CXX: the C++ compiler; default `$CXX`, else `g++`, else `c++`.

Two processes building at once cannot load a half-written file: each compiles to a temporary
file and renames it into place (`os.replace` is atomic), and a lock file per key makes the
second wait for the first and reuse its result, or its failure.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

from absl import logging

# Plain TensorFlow, not legacy_tf: the Keras 3 layer uses this module on the TensorFlow backend
# and must not select tf-keras (nothing here needs the TF 1.x cells).
import tensorflow as tf

try:
    import fcntl
except ImportError:  # not POSIX: the atomic rename alone keeps concurrent builds safe
    fcntl = None

CACHE_DIR_ENV = "PHASED_LSTM_KERNEL_CACHE"
CXX_ENV = "PHASED_LSTM_CXX"
# -w: TensorFlow's own headers emit hundreds of deprecation warnings that would bury an error.
COMMON_FLAGS = ("-O3", "-fPIC", "-shared", "-fvisibility=hidden", "-w")
BUILD_TIMEOUT_S = 600
REBUILD_COMMAND = "python -m phased_lstm.build"
NO_COMPILER = "could not run the compiler"

# /proc/cpuinfo flag: the g++/clang flag that turns it off. The newest x86 extensions, which a
# compiler or a header may support only partly (rung 2 of the ladder).
NEWEST_EXTENSIONS = {"avx512_fp16": "-mno-avx512fp16", "amx_tile": "-mno-amx-tile",
                     "amx_int8": "-mno-amx-int8", "amx_bf16": "-mno-amx-bf16"}
# The x86-64 micro-architecture levels (psABI), by the /proc/cpuinfo flags each needs.
X86_64_LEVELS = (
    ("x86-64-v3", {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}),
    ("x86-64-v2", {"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"}),
)


class BuildError(RuntimeError):
    """The library could not be compiled or loaded; `log_path` holds the compiler's output.

    `lasting` says whether the same build would fail again (a compiler error, no compiler, a
    library that does not load), so that it is remembered; a timeout, a compiler killed by a
    signal or a full disk are not.
    """

    def __init__(self, message, log_path=None, lasting=True):
        super().__init__(message)
        self.log_path = log_path
        self.lasting = lasting


@dataclasses.dataclass(frozen=True)
class Rung:
    """One build of the ladder: a name for the logs and the flags that choose the target."""
    name: str
    arch_flags: tuple


@dataclasses.dataclass(frozen=True)
class Attempt:
    """What one rung gave: "cached", "built", "failed", or "failed before" (remembered)."""
    rung: Rung
    outcome: str
    detail: str = ""  # why it failed, or the library's path
    log_path: str = None
    seconds: float = 0.0


@dataclasses.dataclass(frozen=True)
class Loaded:
    """A loaded op library: the ops' Python module, the rung that built it, every attempt."""
    module: object
    rung: Rung
    path: str
    attempts: tuple


class LadderError(BuildError):
    """No rung of the ladder could be built and loaded; `attempts` says what each gave."""

    def __init__(self, attempts):
        by_reason = {}  # reason: the rungs it stopped, in ladder order
        for attempt in attempts:
            by_reason.setdefault(attempt.detail, []).append(attempt.rung.name)
        reasons = "; ".join(f"{', '.join(rungs)}: {reason}"
                            for reason, rungs in by_reason.items())
        remembered = bool(attempts) and all(a.outcome == "failed before" for a in attempts)
        logs = [a.log_path for a in attempts if a.log_path]
        super().__init__(("every build failed on this machine before, and is not retried "
                          if remembered else "no build succeeded ") + f"({reasons})",
                         logs[-1] if logs else None)
        self.attempts = tuple(attempts)
        self.remembered = remembered


def cache_dir():
    """The folder the built libraries are cached in (not created here)."""
    chosen = os.environ.get(CACHE_DIR_ENV)
    if chosen:
        return os.path.expanduser(chosen)
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # unset or relative: ignored, as the XDG spec says
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "phased_lstm", "kernels")


def compiler():
    """The C++ compiler command, as a list (it may carry flags, e.g. "ccache g++")."""
    chosen = os.environ.get(CXX_ENV) or os.environ.get("CXX")
    if chosen:
        return shlex.split(chosen)
    return [shutil.which("g++") or shutil.which("c++") or "g++"]


def _compiler_identity():
    """The compiler's command and the files its words run (path, size, time): a new compiler at
    the same command ("g++", or "ccache g++") is another key, found without running it."""
    command = compiler()
    files = []
    for word in command:
        executable = shutil.which(word)
        if executable is not None:
            stat = os.stat(executable)
            files.append((os.path.realpath(executable), stat.st_size, stat.st_mtime_ns))
    return command, files


def _cpu_info():
    """(text, flags): the CPU's model and instruction-set flags, what -march=native depends on."""
    try:
        with open("/proc/cpuinfo") as info:
            lines = [line for line in info
                     if line.startswith(("model name", "flags", "Features"))]
    except OSError:
        return platform.processor() + platform.machine(), set()
    flags = set()
    for line in lines:
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    return "".join(lines)[:20000], flags


def cpu_name():
    """The CPU's model name, for logs and benchmark tables."""
    text, _ = _cpu_info()
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def build_ladder(march="native", cpu_flags=None, machine=None):
    """The builds to try, best first (see the module docstring).

    Args:
      march: the first rung's `-march` (tests pass a named CPU to stand for `native`).
      cpu_flags: the CPU's /proc/cpuinfo flags; default this machine's.
      machine: `platform.machine()`; default this machine's.

    Returns:
      A list of Rung.
    """
    if cpu_flags is None:
        cpu_flags = _cpu_info()[1]
    machine = machine or platform.machine()
    native = (f"-march={march}",)
    ladder = [Rung("native", native)]
    if machine.lower() in ("x86_64", "amd64"):
        newest = [flag for cpu_flag, flag in NEWEST_EXTENSIONS.items() if cpu_flag in cpu_flags]
        if newest:
            ladder.append(Rung("native without the newest extensions", native + tuple(newest)))
        for level, needs in X86_64_LEVELS:
            if needs <= set(cpu_flags):
                ladder.append(Rung(level, (f"-march={level}", "-mtune=native")))
    ladder.append(Rung("portable", ()))
    return ladder


def build_command(source, output, rung):
    """The compiler command line that builds `source` into the shared library `output`."""
    return (compiler() + ["-std=c++17", *COMMON_FLAGS, *rung.arch_flags, source, "-o", output]
            + tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags())


def library_key(source, rung):
    """A hash of everything the rung's library depends on (see the module docstring)."""
    digest = hashlib.sha256()
    with open(source, "rb") as f:
        digest.update(f.read())
    for part in (tf.__version__, tf.sysconfig.get_compile_flags(),
                 tf.sysconfig.get_link_flags(), build_command("SOURCE", "OUTPUT", rung),
                 _compiler_identity(), _cpu_info()[0], sys.platform):
        digest.update(repr(part).encode())
    return digest.hexdigest()[:20]


def _writable_cache_dir():
    folder = cache_dir()
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
        return folder
    except OSError:
        return tempfile.mkdtemp(prefix="phased_lstm_")


@contextlib.contextmanager
def _lock(path):
    if fcntl is None:
        yield
        return
    with open(path, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


@dataclasses.dataclass(frozen=True)
class _Files:
    """The cache's files of one source and rung."""
    library: str
    log: str
    failure: str
    lock: str

    @classmethod
    def of(cls, folder, source, rung):
        name = f"{os.path.splitext(os.path.basename(source))[0]}-{library_key(source, rung)}"
        stem = os.path.join(folder, name)
        return cls(stem + ".so", stem + ".log", stem + ".failed", stem + ".lock")


def _read_failure(files):
    """The remembered failure of a rung, {"reason", "log"}, or None."""
    try:
        with open(files.failure, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _remember_failure(files, rung, reason, log_path):
    """Records the rung's failure for later processes; a cache that cannot take it is logged,
    not raised (the build failed either way)."""
    record = {"rung": rung.name, "flags": list(rung.arch_flags), "reason": reason,
              "log": log_path, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        fd, partial = tempfile.mkstemp(dir=os.path.dirname(files.failure), suffix=".partial")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1)
        os.replace(partial, files.failure)
    except OSError as error:
        logging.warning("Phased LSTM: could not record the failed %s build in %s: %s",
                        rung.name, files.failure, error)


def _forget(files):
    for path in (files.library, files.failure):
        if os.path.exists(path):
            os.remove(path)


def _compile(source, rung, files):
    """Compiles one rung into files.library; raises BuildError with the log's path."""
    fd, partial = tempfile.mkstemp(dir=os.path.dirname(files.library),
                                   prefix=os.path.basename(files.library) + ".",
                                   suffix=".partial")
    os.close(fd)
    command = build_command(source, partial, rung)
    logging.info("Compiling %s (%s build: %s) against TensorFlow %s (once, then cached).",
                 os.path.basename(source), rung.name, " ".join(rung.arch_flags) or "no -march",
                 tf.__version__)
    try:
        with open(files.log, "w") as log:
            log.write(shlex.join(command) + "\n\n")
            log.flush()
            try:
                result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                                        timeout=BUILD_TIMEOUT_S, check=False)
            except (FileNotFoundError, PermissionError) as error:  # no compiler to run
                log.write(f"\n{error}\n")
                raise BuildError(f"{NO_COMPILER} {command[0]!r}: {error}", files.log) from error
            except (OSError, subprocess.TimeoutExpired) as error:  # may pass: not remembered
                log.write(f"\n{error}\n")
                raise BuildError(f"the compiler {command[0]!r} did not finish: {error}",
                                 files.log, lasting=False) from error
        if result.returncode != 0:
            # A negative status is a signal (killed for memory, say): it may pass.
            raise BuildError(f"the compiler {command[0]!r} failed (exit status "
                             f"{result.returncode})", files.log, lasting=result.returncode > 0)
        os.replace(partial, files.library)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def load(source, rebuild=False, ladder=None):
    """Loads the library built from `source`: the first rung of the ladder that builds and loads.

    A rung found in the cache is loaded without compiling; a rung that failed before (in any
    process) is skipped without calling the compiler; a rung that fails now is remembered,
    unless the failure may pass (`BuildError.lasting`).

    Args:
      source: path of the C++ source of the op library.
      rebuild: forget every rung's cached library and remembered failure first.
      ladder: the rungs to try; default `build_ladder()`.

    Returns:
      A Loaded: the module of Python wrappers `tf.load_op_library` makes (one function per op),
      the rung used, the library's path, and every attempt.

    Raises:
      LadderError: if no rung builds and loads; its `attempts` say why each did not.
    """
    folder = _writable_cache_dir()
    ladder = build_ladder() if ladder is None else ladder
    if rebuild:
        for rung in ladder:
            files = _Files.of(folder, source, rung)
            with _lock(files.lock):
                _forget(files)
    attempts = []
    no_compiler = None  # why the compiler could not be run, once it could not
    for rung in ladder:
        files = _Files.of(folder, source, rung)
        with _lock(files.lock):
            attempt, module = _try_rung(source, rung, files, no_compiler)
        attempts.append(attempt)
        if module is not None:
            return Loaded(module, rung, files.library, tuple(attempts))
        if attempt.detail.startswith(NO_COMPILER):
            no_compiler = attempt.detail  # no other rung can do better
    raise LadderError(attempts)


def _try_rung(source, rung, files, no_compiler):
    """(Attempt, the loaded module or None) for one rung; called under its lock."""
    failure = _read_failure(files)
    if failure is not None:
        return Attempt(rung, "failed before", failure.get("reason", "?"), failure.get("log")), None
    start = time.monotonic()
    outcome = "cached" if os.path.exists(files.library) else "built"
    try:
        if outcome == "built":
            if no_compiler:
                raise BuildError(no_compiler, None)
            try:
                _compile(source, rung, files)
            except OSError as error:  # the cache's files, not the compiler: may pass
                raise BuildError(f"could not write the build's files in "
                                 f"{os.path.dirname(files.library)}: {error}",
                                 lasting=False) from error
        try:
            module = tf.load_op_library(files.library)
        except (tf.errors.OpError, OSError) as error:
            raise BuildError(f"could not load {files.library}: {error}", files.log) from error
    except BuildError as error:
        reason = str(error)
        log_path = error.log_path
        if log_path is None and os.path.exists(files.log):
            log_path = files.log
        if error.lasting:
            _remember_failure(files, rung, reason, log_path)
        logging.info("Phased LSTM: the %s build of %s failed (%s; log: %s).", rung.name,
                     os.path.basename(source), reason, log_path)
        return Attempt(rung, "failed", reason, log_path, time.monotonic() - start), None
    return Attempt(rung, outcome, files.library, files.log, time.monotonic() - start), module


def remembered_failures(source, ladder=None):
    """[(rung, {"reason", "log", ...})] for the rungs whose failure is remembered in the cache."""
    folder = cache_dir()
    found = []
    for rung in build_ladder() if ladder is None else ladder:
        failure = _read_failure(_Files.of(folder, source, rung))
        if failure is not None:
            found.append((rung, failure))
    return found


def cached_status(source, ladder=None):
    """What `load` would find in the cache, without compiling or loading anything.

    Returns:
      ("cached", rung) for the first rung with a library and no failure before it that is not
      remembered; ("not built", rung) where `load` would compile that rung first; ("failed",
      None) where every rung failed before.
    """
    folder = cache_dir()
    for rung in build_ladder() if ladder is None else ladder:
        files = _Files.of(folder, source, rung)
        if _read_failure(files) is not None:
            continue
        return ("cached" if os.path.exists(files.library) else "not built"), rung
    return "failed", None
