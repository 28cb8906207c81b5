"""Builds a C++ kernel library from source, caches it, and loads it: for any framework.

The framework's part is a `Toolchain`: its compile and link flags, what else the binary depends
on (versions), and how to load the built library. `phased_lstm.op_library` gives TensorFlow's
(`tf.sysconfig` flags, `tf.load_op_library`); `phased_lstm.jax_ffi` gives JAX's (its XLA FFI
headers, Eigen, ctypes and `jax.ffi.register_ffi_target`). This module imports neither.

The library is compiled into a cache folder. Builds are tried down a ladder of instruction sets
until one compiles and loads (`build_ladder`):

1. `native`: `-march=native`, everything this CPU has.
2. `native without the newest extensions`: the same less AVX512-FP16 and AMX, on CPUs that have
   them. Eigen's headers in TensorFlow's wheel do not compile with AVX512-FP16 (g++ 12,
   TensorFlow 2.21: `PacketMathFP16.h`), which stops rung 1 on Intel Sapphire Rapids.
3. `x86-64-v3` (AVX2, FMA) and 4. `x86-64-v2` (SSE4.2), where the CPU has them.
5. `portable`: the compiler's default target.

Each rung is cached under its own key, a hash of everything its binary depends on: the source
and the local headers it includes (`source_files`), the toolchain's versions and flags, the
compiler (its command and the files it runs), the rung's flags, and the CPU. A rung that fails,
to compile or to load, is remembered under its key (a `.failed` file beside the logs), so that
later processes skip it without calling the compiler: where every rung failed once, later
processes go straight to the framework's own path. Failures that may pass (a timeout, a compiler
killed by a signal, a cache that cannot be written) are not remembered.
`python -m phased_lstm.build` forgets them and builds again.

Environment:
  PHASED_LSTM_KERNEL_CACHE: the cache folder; default `$XDG_CACHE_HOME/phased_lstm/kernels`,
    else `~/.cache/phased_lstm/kernels`. Where it is not writable, a temporary folder is used
    (and a failure is then remembered for this process only).
  PHASED_LSTM_CXX: the C++ compiler; default `$CXX`, else `g++`, else `c++`.
  PHASED_LSTM_FUSED: "0" never builds nor uses the fused kernels (`disabled`).

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
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from absl import logging

try:
    import fcntl
except ImportError:  # not POSIX: the atomic rename alone keeps concurrent builds safe
    fcntl = None

CACHE_DIR_ENV = "PHASED_LSTM_KERNEL_CACHE"
CXX_ENV = "PHASED_LSTM_CXX"
FUSED_ENV = "PHASED_LSTM_FUSED"
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


KERNELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels")


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
class Toolchain:
    """What a framework adds to the build: flags, versions, and how to load the library.

    Attributes:
      name: the framework and its version, for the logs ("TensorFlow 2.21.0").
      flags: compiler and linker flags after the source (include folders, libraries).
      identity: what else the binary depends on (versions, header folders), for the key.
      load: a function of the built library's path that returns the loaded module; it raises
        one of `load_errors` where the library does not load.
      load_errors: the exception types of a library that does not load (a failed rung).
      missing: why no build can start (headers not found), or None: `load` then fails at once,
        without calling the compiler.
    """
    name: str
    flags: tuple
    identity: tuple
    load: object
    load_errors: tuple = (OSError,)
    missing: str = None


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
    """A loaded library: what the toolchain's load gave (the ops' Python module, say), the rung
    that built it, every attempt."""
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


def build_command(source, output, rung, toolchain):
    """The compiler command line that builds `source` into the shared library `output`."""
    return (compiler() + ["-std=c++17", *COMMON_FLAGS, *rung.arch_flags, source, "-o", output]
            + list(toolchain.flags))


_LOCAL_INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.MULTILINE)


def source_files(source):
    """The files a build of `source` reads from this package: the source and the headers it
    includes with quotes that exist beside it, recursively (framework headers, found on the
    include path, are in the toolchain's identity instead).

    Returns:
      A list of paths, `source` first, each once.
    """
    found, pending = [], [os.path.abspath(source)]
    while pending:
        path = pending.pop(0)
        if path in found:
            continue
        found.append(path)
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        for name in _LOCAL_INCLUDE.findall(text):
            header = os.path.join(os.path.dirname(path), name)
            if os.path.isfile(header):
                pending.append(os.path.abspath(header))
    return found


def library_key(source, rung, toolchain):
    """A hash of everything the rung's library depends on (see the module docstring)."""
    digest = hashlib.sha256()
    for path in source_files(source):
        digest.update(os.path.basename(path).encode() + b"\0")
        with open(path, "rb") as f:
            digest.update(f.read())
    for part in (toolchain.identity, build_command("SOURCE", "OUTPUT", rung, toolchain),
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
    def of(cls, folder, source, rung, toolchain):
        name = (f"{os.path.splitext(os.path.basename(source))[0]}-"
                f"{library_key(source, rung, toolchain)}")
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


def _compile(source, rung, files, toolchain):
    """Compiles one rung into files.library; raises BuildError with the log's path."""
    fd, partial = tempfile.mkstemp(dir=os.path.dirname(files.library),
                                   prefix=os.path.basename(files.library) + ".",
                                   suffix=".partial")
    os.close(fd)
    command = build_command(source, partial, rung, toolchain)
    logging.info("Compiling %s (%s build: %s) against %s (once, then cached).",
                 os.path.basename(source), rung.name, " ".join(rung.arch_flags) or "no -march",
                 toolchain.name)
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


def load(source, toolchain, rebuild=False, ladder=None):
    """Loads the library built from `source`: the first rung of the ladder that builds and loads.

    A rung found in the cache is loaded without compiling; a rung that failed before (in any
    process) is skipped without calling the compiler; a rung that fails now is remembered,
    unless the failure may pass (`BuildError.lasting`).

    Args:
      source: path of the C++ source of the library.
      toolchain: the framework's Toolchain.
      rebuild: forget every rung's cached library and remembered failure first.
      ladder: the rungs to try; default `build_ladder()`.

    Returns:
      A Loaded: what toolchain.load returned, the rung used, the library's path, and every
      attempt.

    Raises:
      LadderError: if no rung builds and loads; its `attempts` say why each did not.
      BuildError: if the toolchain says no build can start (`Toolchain.missing`).
    """
    if toolchain.missing:
        raise BuildError(f"cannot build against {toolchain.name}: {toolchain.missing}")
    folder = _writable_cache_dir()
    ladder = build_ladder() if ladder is None else ladder
    if rebuild:
        for rung in ladder:
            files = _Files.of(folder, source, rung, toolchain)
            with _lock(files.lock):
                _forget(files)
    attempts = []
    no_compiler = None  # why the compiler could not be run, once it could not
    for rung in ladder:
        files = _Files.of(folder, source, rung, toolchain)
        with _lock(files.lock):
            attempt, module = _try_rung(source, rung, files, toolchain, no_compiler)
        attempts.append(attempt)
        if module is not None:
            return Loaded(module, rung, files.library, tuple(attempts))
        if attempt.detail.startswith(NO_COMPILER):
            no_compiler = attempt.detail  # no other rung can do better
    raise LadderError(attempts)


def _try_rung(source, rung, files, toolchain, no_compiler):
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
                _compile(source, rung, files, toolchain)
            except OSError as error:  # the cache's files, not the compiler: may pass
                raise BuildError(f"could not write the build's files in "
                                 f"{os.path.dirname(files.library)}: {error}",
                                 lasting=False) from error
        try:
            module = toolchain.load(files.library)
        except toolchain.load_errors as error:
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


def remembered_failures(source, toolchain, ladder=None):
    """[(rung, {"reason", "log", ...})] for the rungs whose failure is remembered in the cache."""
    folder = cache_dir()
    found = []
    for rung in build_ladder() if ladder is None else ladder:
        failure = _read_failure(_Files.of(folder, source, rung, toolchain))
        if failure is not None:
            found.append((rung, failure))
    return found


def cached_status(source, toolchain, ladder=None):
    """What `load` would find in the cache, without compiling or loading anything.

    Returns:
      ("cached", rung) for the first rung with a library and no failure before it that is not
      remembered; ("not built", rung) where `load` would compile that rung first; ("failed",
      None) where every rung failed before, or where no build can start
      (`toolchain.missing`).
    """
    if toolchain.missing:
        return "failed", None
    folder = cache_dir()
    for rung in build_ladder() if ladder is None else ladder:
        files = _Files.of(folder, source, rung, toolchain)
        if _read_failure(files) is not None:
            continue
        return ("cached" if os.path.exists(files.library) else "not built"), rung
    return "failed", None


def disabled():
    """Whether PHASED_LSTM_FUSED turns the fused kernels off."""
    return os.environ.get(FUSED_ENV, "").strip().lower() in ("0", "false", "no", "off")


class KernelLibrary:
    """One fused kernel library: built from its source on first use, loaded once per process.

    Each cell's kernel is its own library (its own source, cache key and remembered failure), so
    that one failing to build leaves the other's fast path alone.

    Args:
      source: path of the C++ source.
      toolchain: the framework's Toolchain (`phased_lstm.op_library.TENSORFLOW`, or
        `phased_lstm.jax_ffi`'s).
      cell: the cell's name in the logs ("Phased LSTM").
      function: what runs the kernel ("phased_lstm_rnn"), in the messages.
      kernel: what the library computes, in the messages.
      fallback: what runs where it is unavailable, in the messages ("its ..." and "the ...").
      instead: the same in the warning, which says why ("its pure-TensorFlow path").
    """

    def __init__(self, source, toolchain, cell, function, kernel="fused sequence kernel",
                 fallback="TensorFlow loop", instead="its pure-TensorFlow path"):
        self.source = source
        self.toolchain = toolchain
        self.cell = cell
        self.function = function
        self.kernel = kernel
        self.fallback = fallback
        self.instead = instead
        self._lock = threading.Lock()
        self._loaded = None  # the Loaded once loading succeeded
        self._failure = None  # why it failed (see failure), once it did

    def load(self, rebuild=False):
        """The loaded module (Loaded.module), or None; tries to build and load it once per process
        (or again if rebuild)."""
        if disabled() and not rebuild:
            return None
        with self._lock:
            if rebuild and self._loaded is not None:
                # TensorFlow (and JAX) cannot register the same ops twice in one process.
                raise RuntimeError("the fused kernel is already loaded in this process; rebuild "
                                   f"it in a new one: {REBUILD_COMMAND}")
            if rebuild or (self._loaded is None and self._failure is None):
                self._loaded = self._failure = None
                try:
                    self._loaded = load(self.source, self.toolchain, rebuild=rebuild)
                    logging.info("%s: the %s is available to %s (%s build, %s).", self.cell,
                                 self.kernel, self.function, self._loaded.rung.name,
                                 " ".join(self._loaded.rung.arch_flags) or "no -march")
                except (BuildError, OSError) as error:  # OSError: the cache's lock
                    self._failure = error
                    logging.warning("%s: %s", self.cell, self.unavailable_message(error))
        return self._loaded.module if self._loaded is not None else None

    def unavailable_message(self, error):
        """One line: why the kernel is unavailable, what runs instead, and how to retry."""
        log_path = getattr(error, "log_path", None)
        where = f"; compiler log: {log_path}" if log_path else ""
        return (f"the {self.kernel} is not available: {error}{where}. {self.function} "
                f"uses {self.instead} (same results, slower); after fixing the cause, "
                f"`{REBUILD_COMMAND}` builds again.")

    def available(self):
        """Whether the kernel can run (building it on first call if needed); see
        `fused_kernel_available`."""
        return self.load() is not None

    def failure(self):
        """Why the kernel is unavailable in this process (an LadderError, or the
        OSError of a cache that could not be used), or None."""
        self.load()
        return self._failure

    def loaded_build(self):
        """The Loaded of this process (its rung, path and attempts), or None."""
        self.load()
        return self._loaded

    def rebuild(self):
        """Forgets the cached builds and failures, builds again and loads; returns (Loaded or
        None, the LadderError or None)."""
        self.load(rebuild=True)
        return self._loaded, self._failure

    def cached_description(self):
        """Which path the sequence function runs, from the cache alone: compiles and loads
        nothing (for --help)."""
        if disabled():
            return f"the {self.fallback} ({FUSED_ENV}=0 turns the fused kernel off)"
        state, rung = cached_status(self.source, self.toolchain)
        if state == "cached":
            return f"the fused kernel ({rung.name} build, cached)"
        if state == "not built":
            return ("the fused kernel, compiled on first use (once; "
                    f"`{REBUILD_COMMAND}` builds it now)")
        if self.toolchain.missing:
            return f"the {self.fallback}, slower: {self.toolchain.missing}"
        return (f"the {self.fallback}, slower: every build of the fused kernel failed on this "
                f"machine (`{REBUILD_COMMAND}` says why and builds again)")
