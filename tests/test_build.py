"""`python -m phased_lstm.build`: builds again, says what each build gave and which path runs.

The compiler is a stand-in script: one that fails (and counts its calls), and one that "builds"
by copying the library this test process built from the same source (the Phased LSTM's, the
Phased GRU's or the time gate's), so that no test here compiles.
"""

import importlib.util
import os
import subprocess
import sys
import tempfile

from phased_lstm import fused_rnn, op_library, tf
from test_fused_gru import _require_kernel as _require_gru_kernel
from test_fused_rnn import _require_kernel
from test_fused_time_gate import require_time_gate_kernel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class BuildCommandTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        self.folder = folder.name
        self.cache = os.path.join(self.folder, "cache")
        self.calls = os.path.join(self.folder, "calls")

    def _compiler(self, body):
        path = os.path.join(self.folder, "c++")
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\necho x >> {self.calls}\n{body}\n")
        os.chmod(path, 0o755)
        return path

    def _calls(self):
        if not os.path.exists(self.calls):
            return 0
        with open(self.calls) as f:
            return len(f.readlines())

    def _build(self, compiler, *args):
        env = {name: value for name, value in os.environ.items()
               if name not in (fused_rnn.FUSED_ENV, "CXX")}
        env.update(PHASED_LSTM_CXX=compiler, PHASED_LSTM_KERNEL_CACHE=self.cache,
                   TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
        return subprocess.run([sys.executable, "-m", "phased_lstm.build", *args], env=env,
                              capture_output=True, text=True, timeout=600, cwd=self.folder)

    def test_a_failing_compiler_is_called_again_and_the_fallback_said(self):
        compiler = self._compiler("exit 1")
        # Every rung of each library: the Phased LSTM's, the Phased GRU's, the time gate's.
        rungs = len(op_library.build_ladder()) * len(fused_rnn.LIBRARIES)
        first = self._build(compiler)
        self.assertEqual(first.returncode, 1, msg=first.stderr[-2000:])
        self.assertEqual(first.stdout.count(": failed: the compiler"), rungs, msg=first.stdout)
        self.assertIn("phased_lstm_rnn runs its TensorFlow loop", first.stdout)
        self.assertIn("phased_gru_rnn runs its TensorFlow loop", first.stdout)
        self.assertIn("the forward-only time gate runs its TensorFlow gate ops", first.stdout)
        self.assertEqual(self._calls(), rungs)

        status = self._build(compiler, "--status")  # reads the cache, compiles nothing
        self.assertEqual(status.returncode, 1)
        self.assertEqual(status.stdout.count("every build of the fused kernel failed"),
                         len(fused_rnn.LIBRARIES))
        self.assertEqual(status.stdout.count("failed before: the compiler"), rungs)
        self.assertEqual(self._calls(), rungs)

        again = self._build(compiler)  # forgets the remembered failures
        self.assertEqual(again.returncode, 1)
        self.assertEqual(self._calls(), 2 * rungs)

    def test_the_jax_library_builds_with_the_same_ladder_without_tensorflow(self):
        if importlib.util.find_spec("jax") is None:
            self.skipTest("jax is not installed")
        compiler = self._compiler("exit 1")
        rungs = len(op_library.build_ladder())
        first = self._build(compiler, "--backend=jax")
        self.assertEqual(first.returncode, 1, msg=first.stderr[-2000:])
        self.assertIn("phased_lstm_xla_ffi.cc again", first.stdout)
        self.assertEqual(first.stdout.count(": failed: the compiler"), rungs, msg=first.stdout)
        self.assertIn("PhasedLSTM on JAX runs its Keras loop (slower)", first.stdout)
        self.assertEqual(self._calls(), rungs)
        status = self._build(compiler, "--backend=jax", "--status")
        self.assertEqual(status.returncode, 1)
        self.assertIn("PhasedLSTM on JAX runs the Keras loop, slower: every build",
                      status.stdout)
        self.assertEqual(self._calls(), rungs)
        # A JAX user's build does not import TensorFlow.
        probe = subprocess.run(
            [sys.executable, "-c",
             "import runpy, sys\n"
             "sys.argv = ['build', '--backend=jax', '--status']\n"
             "try:\n"
             "    runpy.run_module('phased_lstm.build', run_name='__main__')\n"
             "except SystemExit:\n"
             "    pass\n"
             "print('tensorflow imported:', 'tensorflow' in sys.modules)\n"],
            env=dict(os.environ, PHASED_LSTM_KERNEL_CACHE=self.cache, PYTHONPATH=REPO),
            capture_output=True, text=True, timeout=600, cwd=self.folder)
        self.assertIn("tensorflow imported: False", probe.stdout, msg=probe.stderr[-2000:])

    def test_a_working_compiler_builds_and_the_kernel_runs(self):
        _require_kernel(self)
        _require_gru_kernel(self)
        require_time_gate_kernel(self)
        lstm, gru, gate = (library.loaded_build().path for library in
                           (fused_rnn.LSTM, fused_rnn.GRU, fused_rnn.TIME_GATE))
        compiler = self._compiler(
            f'built="{lstm}"\n'
            'while [ $# -gt 0 ]; do\n'
            '  [ "$1" = -o ] && out="$2"\n'
            f'  case "$1" in *phased_gru_sequence.cc) built="{gru}";; esac\n'
            f'  case "$1" in *phased_time_gate.cc) built="{gate}";; esac\n'
            '  shift\n'
            'done\n'
            'cp "$built" "$out"')
        libraries = len(fused_rnn.LIBRARIES)
        result = self._build(compiler)
        self.assertEqual(result.returncode, 0, msg=result.stdout + result.stderr[-2000:])
        self.assertEqual(result.stdout.count("native (-march=native): built in"), libraries)
        self.assertIn("phased_lstm_rnn runs the fused kernel (native build)", result.stdout)
        self.assertIn("phased_gru_rnn runs the fused kernel (native build)", result.stdout)
        self.assertIn("the forward-only time gate runs the fused kernel (native build)",
                      result.stdout)
        self.assertEqual(self._calls(), libraries)
        status = self._build(compiler, "--status")
        self.assertEqual(status.returncode, 0)
        self.assertIn("phased_lstm_rnn runs the fused kernel (native build, cached)",
                      status.stdout)
        self.assertIn("phased_gru_rnn runs the fused kernel (native build, cached)",
                      status.stdout)
        self.assertIn("the forward-only time gate runs the fused kernel (native build, cached)",
                      status.stdout)
        self.assertEqual(self._calls(), libraries)


if __name__ == "__main__":
    tf.test.main()
