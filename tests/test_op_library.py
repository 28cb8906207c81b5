"""The op library's build: its cache, its ladder of builds, remembered failures, and the kernel's
source parsed for the x86-64 targets TensorFlow runs on.

The in-process tests stand in for the compiler (`subprocess.run`) and for `tf.load_op_library`,
so that they take no time; the parse test runs the real compiler with `-fsyntax-only`.
"""

import concurrent.futures
import os
import platform
import shutil
import subprocess
from unittest import mock

from phased_lstm import fused_rnn, op_library, tf
from file_helpers import temp_dir, write

# x86-64 targets that TensorFlow's wheels run on, from the psABI levels to recent server CPUs.
# Each must parse at the first rung of its ladder (-march=<target> standing for -march=native),
# except Sapphire Rapids, which may need the second: Eigen's AVX512-FP16 header in TensorFlow
# 2.21's wheel does not compile with g++ 12, and that rung must turn it into a working build.
# target: the index of the last rung of its ladder that may be needed.
PARSE_TARGETS = {
    "x86-64-v2": 0, "x86-64-v3": 0, "skylake-avx512": 0, "icelake-server": 0,
    "sapphirerapids": 1, "znver3": 0, "znver4": 0,
}
# The /proc/cpuinfo flags that decide the ladder's second rung: what Sapphire Rapids has.
SAPPHIRE_RAPIDS_NEWEST = set(op_library.NEWEST_EXTENSIONS)


class BuildLadderTest(tf.test.TestCase):

    def test_sapphire_rapids_gets_a_rung_without_its_newest_extensions(self):
        ladder = op_library.build_ladder(cpu_flags=SAPPHIRE_RAPIDS_NEWEST | {"avx2"},
                                         machine="x86_64")
        self.assertEqual(ladder[0].arch_flags, ("-march=native",))
        self.assertEqual(ladder[1].arch_flags[0], "-march=native")
        self.assertIn("-mno-avx512fp16", ladder[1].arch_flags)
        self.assertEqual(ladder[-1].arch_flags, ())  # portable, last

    def test_levels_only_where_the_cpu_has_them(self):
        v3, v2 = (set(needs) for _, needs in op_library.X86_64_LEVELS)
        names = [r.name for r in op_library.build_ladder(cpu_flags=v2 | v3, machine="x86_64")]
        self.assertEqual(names, ["native", "x86-64-v3", "x86-64-v2", "portable"])
        names = [r.name for r in op_library.build_ladder(cpu_flags=v2, machine="x86_64")]
        self.assertEqual(names, ["native", "x86-64-v2", "portable"])
        names = [r.name for r in op_library.build_ladder(cpu_flags=v2 | v3, machine="aarch64")]
        self.assertEqual(names, ["native", "portable"])

    def test_each_rung_has_its_own_key(self):
        source = write(os.path.join(temp_dir(self), "op.cc"), "// one")
        ladder = op_library.build_ladder(cpu_flags=SAPPHIRE_RAPIDS_NEWEST, machine="x86_64")
        keys = {op_library.library_key(source, rung) for rung in ladder}
        self.assertLen(keys, len(ladder))


class BuildCacheTest(tf.test.TestCase):
    """op_library.load with a stand-in compiler and loader."""

    def setUp(self):
        super().setUp()
        self.cache = temp_dir(self)
        self.source = write(os.path.join(temp_dir(self), "op.cc"), "// source")
        self.calls = []
        self.fails = lambda command: False  # which compiler commands fail
        patches = [
            mock.patch.dict(os.environ, {op_library.CACHE_DIR_ENV: self.cache}),
            mock.patch.object(op_library.subprocess, "run", self._fake_compiler),
            mock.patch.object(op_library.tf, "load_op_library", self._fake_loader),
        ]
        for patch in patches:
            patch.start()
            self.addCleanup(patch.stop)
        # Sapphire Rapids: native, native without the newest extensions, portable.
        self.ladder = op_library.build_ladder(cpu_flags=SAPPHIRE_RAPIDS_NEWEST,
                                              machine="x86_64")

    def _fake_compiler(self, command, **kwargs):
        self.calls.append(command)
        if self.fails(command):
            return subprocess.CompletedProcess(command, 1)
        with open(command[command.index("-o") + 1], "w") as f:
            f.write("built")
        return subprocess.CompletedProcess(command, 0)

    @staticmethod
    def _fake_loader(path):
        with open(path) as f:
            if f.read() != "built":
                raise tf.errors.NotFoundError(None, None, "not a library")
        return path

    def _load(self, **kwargs):
        return op_library.load(self.source, ladder=self.ladder, **kwargs)

    def test_a_cached_library_is_loaded_without_compiling(self):
        first = self._load()
        second = self._load()
        self.assertLen(self.calls, 1)
        self.assertEqual([a.outcome for a in first.attempts], ["built"])
        self.assertEqual([a.outcome for a in second.attempts], ["cached"])
        self.assertEqual(first.path, second.path)
        self.assertEqual(os.path.dirname(first.path), self.cache)
        # The finished library, its log and the lock: no partial file is left.
        self.assertCountEqual([os.path.splitext(name)[1] for name in os.listdir(self.cache)],
                              [".so", ".log", ".lock"])

    def test_a_failed_rung_is_remembered_and_the_next_one_used(self):
        self.fails = lambda command: "-mno-avx512fp16" not in command
        first = self._load()
        self.assertEqual([a.outcome for a in first.attempts], ["failed", "built"])
        self.assertEqual(first.rung.name, "native without the newest extensions")
        self.assertLen(self.calls, 2)
        self.assertIn("exit status 1", first.attempts[0].detail)
        self.assertTrue(os.path.isfile(first.attempts[0].log_path))
        second = self._load()  # another process: no compiler call at all
        self.assertEqual([a.outcome for a in second.attempts], ["failed before", "cached"])
        self.assertLen(self.calls, 2)
        self.assertEqual(op_library.cached_status(self.source, self.ladder),
                         ("cached", first.rung))

    def test_when_every_rung_fails_later_loads_do_not_compile(self):
        self.fails = lambda command: True
        with self.assertRaises(op_library.LadderError) as first:
            self._load()
        self.assertLen(self.calls, len(self.ladder))
        self.assertFalse(first.exception.remembered)
        with self.assertRaises(op_library.LadderError) as second:
            self._load()
        self.assertLen(self.calls, len(self.ladder))  # not one more
        self.assertTrue(second.exception.remembered)
        self.assertIn("failed on this machine before", str(second.exception))
        self.assertEqual(op_library.cached_status(self.source, self.ladder), ("failed", None))

    def test_rebuild_forgets_failures_and_libraries(self):
        self.fails = lambda command: True
        with self.assertRaises(op_library.LadderError):
            self._load()
        self.fails = lambda command: False
        loaded = self._load(rebuild=True)
        self.assertEqual([a.outcome for a in loaded.attempts], ["built"])
        self.assertLen(self.calls, len(self.ladder) + 1)
        self.assertEqual([a.outcome for a in self._load(rebuild=True).attempts], ["built"])

    def test_failures_that_may_pass_are_not_remembered(self):
        # Killed by a signal (say, for memory) on the native rung; then a timeout.
        self.fails = lambda command: "-mno-avx512fp16" not in command

        def killed(command, **kwargs):
            self.calls.append(command)
            return subprocess.CompletedProcess(command, -9)

        for stand_in in (killed, mock.Mock(side_effect=subprocess.TimeoutExpired("c++", 600))):
            with mock.patch.object(op_library.subprocess, "run", stand_in):
                with self.assertRaises(op_library.LadderError) as error:
                    self._load()
            self.assertEqual({a.outcome for a in error.exception.attempts}, {"failed"})
            self.assertEqual(op_library.remembered_failures(self.source, self.ladder), [])
        loaded = self._load()  # the next process tries again, and the native rung fails
        self.assertEqual([a.outcome for a in loaded.attempts], ["failed", "built"])

    def test_a_library_that_does_not_load_is_a_failed_rung(self):
        def write_garbage(command, **kwargs):
            self.calls.append(command)
            with open(command[command.index("-o") + 1], "w") as f:
                f.write("garbage" if "-mno-avx512fp16" not in command else "built")
            return subprocess.CompletedProcess(command, 0)

        with mock.patch.object(op_library.subprocess, "run", write_garbage):
            loaded = self._load()
        self.assertEqual([a.outcome for a in loaded.attempts], ["failed", "built"])
        self.assertIn("could not load", loaded.attempts[0].detail)

    def test_a_missing_compiler_is_tried_once_not_per_rung(self):
        def missing(command, **kwargs):
            self.calls.append(command)
            raise FileNotFoundError(2, "No such file or directory", command[0])

        with mock.patch.object(op_library.subprocess, "run", missing):
            with self.assertRaises(op_library.LadderError) as error:
                self._load()
        self.assertLen(self.calls, 1)
        self.assertLen(error.exception.attempts, len(self.ladder))
        self.assertIn("could not run the compiler", str(error.exception))

    def test_key_follows_the_source_and_the_compiler(self):
        rung = self.ladder[0]
        key = op_library.library_key(self.source, rung)
        self.assertEqual(op_library.library_key(self.source, rung), key)
        write(self.source, "// two")
        changed_source = op_library.library_key(self.source, rung)
        with mock.patch.dict(os.environ, {op_library.CXX_ENV: "clang++"}):
            changed_compiler = op_library.library_key(self.source, rung)
        self.assertLen({key, changed_source, changed_compiler}, 3)

    def test_key_follows_every_header_the_source_includes(self):
        folder = os.path.dirname(self.source)
        core = write(os.path.join(folder, "core.h"), '#include "deeper.h"\n// one')
        deeper = write(os.path.join(folder, "deeper.h"), "// one")
        write(self.source, '#include "core.h"\n#include <vector>\n#include "absent.h"\n')
        self.assertEqual(op_library.source_files(self.source), [self.source, core, deeper])
        keys = [op_library.library_key(self.source, self.ladder[0])]
        for header in (core, deeper):
            with open(header, "a") as f:
                f.write("// edited\n")
            keys.append(op_library.library_key(self.source, self.ladder[0]))
        self.assertLen(set(keys), 3)

    def test_the_kernels_keys_cover_their_shared_core(self):
        core = os.path.join(fused_rnn.KERNELS, "phased_lstm_core.h")
        self.assertIn(core, op_library.source_files(fused_rnn.SOURCE))
        self.assertIn(core, op_library.source_files(
            os.path.join(fused_rnn.KERNELS, "phased_lstm_xla_ffi.cc")))

    def test_a_new_compiler_at_the_same_command_is_another_key(self):
        compiler = write(os.path.join(temp_dir(self), "c++"), "#!/bin/sh\nexit 1\n")
        os.chmod(compiler, 0o755)
        with mock.patch.dict(os.environ, {op_library.CXX_ENV: compiler}):
            before = op_library.library_key(self.source, self.ladder[0])
            write(compiler, "#!/bin/sh\n# upgraded\nexit 0\n")
            after = op_library.library_key(self.source, self.ladder[0])
        self.assertNotEqual(before, after)

    def test_unwritable_cache_builds_in_a_temporary_folder(self):
        blocker = write(os.path.join(temp_dir(self), "not_a_folder"), "")
        with mock.patch.dict(os.environ, {op_library.CACHE_DIR_ENV: blocker}):
            built = self._load().path
        self.assertTrue(os.path.isfile(built))
        self.assertFalse(built.startswith(blocker))


def _compiler_knows(march):
    probe = subprocess.run(op_library.compiler() + [f"-march={march}", "-E", "-x", "c++",
                                                    os.devnull],
                           capture_output=True, check=False)
    return probe.returncode == 0


def _parses(rung):
    """(whether the kernel's source parses with the rung's flags, the compiler's output)."""
    command = op_library.build_command(fused_rnn.SOURCE, os.devnull, rung) + ["-fsyntax-only"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    return result.returncode == 0, result.stdout + result.stderr


class KernelParsesOnEveryTargetTest(tf.test.TestCase):
    """The fused kernel's source against TensorFlow's headers, for CPUs other than this one.

    Parsing (`-fsyntax-only`, much quicker than a build) is enough to catch what broke the build on
    Sapphire Rapids: a header that does not compile with an instruction-set extension.
    """

    def test_the_ladder_finds_a_build_for_each_target(self):
        if platform.machine().lower() not in ("x86_64", "amd64"):
            self.skipTest(f"x86-64 targets; this machine is {platform.machine()}")
        if shutil.which(op_library.compiler()[0]) is None:
            self.fail(f"no C++ compiler {op_library.compiler()[0]!r}: the fused kernel cannot "
                      "be built here")
        known = [target for target in PARSE_TARGETS if _compiler_knows(target)]
        ladders = {t: op_library.build_ladder(
            march=t, cpu_flags=SAPPHIRE_RAPIDS_NEWEST if t == "sapphirerapids" else set(),
            machine="x86_64") for t in known}
        # The rungs each target may need: the first, and the second where the ladder says so.
        jobs = [(t, i) for t in known for i in range(PARSE_TARGETS[t] + 1)]
        with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            results = dict(zip(jobs, pool.map(lambda job: _parses(ladders[job[0]][job[1]]),
                                              jobs)))
        for target in known:
            tried = [results[(target, i)] for i in range(PARSE_TARGETS[target] + 1)]
            self.assertTrue(any(parsed for parsed, _ in tried),
                            msg=f"{target}: no build of {ladders[target][:len(tried)]} parses:\n"
                                f"{tried[-1][1][-3000:]}")


if __name__ == "__main__":
    tf.test.main()
