"""Fault injection: the main job (mnist_phased_lstm.py, at small size) killed and its files damaged.

Nothing here is part of the scripts: the faults are injected by a wrapper (DRIVER, run with
`python -c`) that patches functions of the process it runs the script in, and then runs the
script as __main__. Each process runs under a timeout, so that a hang cannot stall CI.

1. Kills (SIGKILL), one chain of subprocesses in one folder: each run resumes the previous one
   and is killed at another point (after a training step, in the middle of an evaluation and
   of a log row, in each phase of a save, in the deletion of an old checkpoint, while writing
   results.json); a last run finishes. After every kill: log rows once each and in order, no
   checkpoint with a non-finite value; every next run resumes without a traceback from the
   checkpoint expected; at the end the log equals an uninterrupted run's, results.json agrees
   with it, and nothing is left over.
2. Damage, in-process (loop.prepare, which reads every file of a run folder before training):
   each file of a finished run's folder deleted, truncated, with bytes flipped, and garbled.
   Each ends in a resume (from the newest checkpoint, or an older one) or a clear RunError that
   names the file and changes nothing; nothing usable is ever deleted.
3. Damage, end to end (main() in this process, which saves TensorFlow's start-up): the newest
   checkpoint deleted; flipped, with a garbage state file; all checkpoints damaged.
4. Divergence, end to end: a learning rate of 3e38 in the MNIST script (PhasedLSTMCell and
   BasicLSTMCell) and in the frequency script, through their main() in this process.

Only the kills need subprocesses (9); they run in a thread while this process makes the other
runs.

The closing test (`test_fault_summary`) counts, from the runs themselves, how many faults were
injected and how each class ended, and prints it; pytest shows it with -s (or -rA).
"""

import collections
import concurrent.futures
import glob
import json
import logging
import os
import shutil
import sys
import types

import numpy as np
import pytest

import freq_phased_lstm
import mnist_phased_lstm
from experiments import checkpoints, loop, training
import fake_mnist
from fake_mnist import write_fake_mnist
from script_helpers import ROOT, check_no_traceback, run
import script_helpers

MNIST = os.path.join(ROOT, "mnist_phased_lstm.py")
STEPS = 12
SMALL = ["-m", "PhasedLSTMCell", "--batch_size=32", "--num_units=4", "--eval_every=4",
         "--eval_batch_size=128", "--checkpoint_every_secs=0",
         f"--steps={STEPS}"]
RUN = "PhasedLSTMCell"

# Runs a script (argv[2]) with its arguments (argv[3:]) after arranging for SIGKILL at a fault
# point, argv[1] = "<kind>:<n>": at the n-th event of that kind in this process.
DRIVER = fake_mnist.PREAMBLE + r"""
import os, re, runpy, signal, sys
kind, n = sys.argv[1].split(":")
n = int(n)
counts = {}

def due(event):
    counts[event] = counts.get(event, 0) + 1
    return event == kind and counts[event] == n

def die():
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)

from phased_lstm import tf
from experiments import training

session_run = tf.compat.v1.Session.run
def run(self, fetches, feed_dict=None, *args, **kwargs):
    names = {getattr(k, "name", "") for k in (feed_dict or {})}
    leak = [v for k, v in (feed_dict or {}).items() if getattr(k, "name", "") == "leak:0"]
    event = ("eval" if leak and leak[0] == 0.0 else "train") if "labels:0" in names else None
    if event and due(event):
        die()
    result = session_run(self, fetches, feed_dict, *args, **kwargs)
    if event and due(event + "_done"):
        die()
    return result
tf.compat.v1.Session.run = run

log_write = training.LogWriter.write
def write(self, row):
    if due("row"):
        # Half a row, as a kill in the middle of the write would leave.
        self._file.write("\t".join(str(v) for v in row.values())[:9])
        self._file.flush()
        die()
    log_write(self, row)
training.LogWriter.write = write

saver_save = tf.compat.v1.train.Saver.save
def save(self, sess, save_path, global_step=None, **kwargs):
    if due("sidecar"):  # the sidecar is written, the checkpoint not yet
        die()
    result = saver_save(self, sess, save_path, global_step, **kwargs)
    if due("saved"):  # files complete; not verified, no state file, no deletion yet
        die()
    if due("merge"):  # as a kill while merging: data without index beside the temp folder
        prefix = f"{save_path}-{global_step}"
        os.makedirs(prefix + "_temp")
        os.remove(prefix + ".index")
        die()
    return result
tf.compat.v1.train.Saver.save = save

os_remove = os.remove
def remove(path, *args, **kwargs):
    os_remove(path, *args, **kwargs)
    if re.search(r"/checkpoints/ckpt-\d+\.index$", str(path)) and due("delete"):
        die()  # an old checkpoint's index deleted, its data and sidecar not yet
os.remove = remove

os_replace = os.replace
def replace(src, dst, *args, **kwargs):
    if str(dst).endswith("results.json") and due("results"):
        die()  # results.json's temporary file written, not yet renamed
    return os_replace(src, dst, *args, **kwargs)
os.replace = replace

sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

# The chain of kills: (fault, the step the next run resumes from). Steps are saved every step
# (max 3 kept), evaluated at 4, 8 and 12 (two batches of 128 test images each).
KILLS = [
    ("train_done:2", 1),   # step 2 trained, not logged
    ("eval:2", 3),         # in step 4's evaluation, between its two batches
    ("row:2", 4),          # half of step 5's row written
    ("sidecar:2", 5),      # step 6's sidecar written, its checkpoint not
    ("merge:1", 5),        # step 6's checkpoint cut short while merging
    ("saved:2", 7),        # step 7's files complete, before verify, state file and deletion
    ("delete:1", 8),       # the deletion of ckpt-4 cut after its index
    ("results:1", STEPS),  # results.json's temporary file written, not renamed
]

def run_script(script, *args, fault=None):
    """Runs a script (through DRIVER with a fault); returns the CompletedProcess."""
    command = fake_mnist.command(script, *args)
    if fault:
        command = [sys.executable, "-c", DRIVER, fault, script, *args]
    return run(command)


def run_dir(log_dir):
    return os.path.join(log_dir, RUN)


def logged_steps(log_dir):
    """The steps of the log's complete rows, in file order."""
    with open(os.path.join(run_dir(log_dir), training.LOG_NAME), encoding="utf-8") as f:
        lines = f.read().split("\n")[1:-1]
    return [int(line.split("\t")[0]) for line in lines]


def checkpoint_problems(log_dir):
    """Readable checkpoints holding a non-finite value (there must be none)."""
    problems = []
    folder = os.path.join(run_dir(log_dir), training.CHECKPOINT_DIR)
    for step in checkpoints.checkpoint_files(folder):
        reason = checkpoints.verify(os.path.join(folder, f"ckpt-{step}"))
        if reason and "NaN" in reason:
            problems.append((step, reason))
    return problems


def leftovers(log_dir):
    folder = run_dir(log_dir)
    return (glob.glob(os.path.join(folder, "**", "*_temp"), recursive=True)
            + glob.glob(os.path.join(folder, "**", ".*.tmp"), recursive=True))


def kill_chain(log_dir, data_dir):
    """Runs the chain of KILLS in one folder, then a last run to the end."""
    args = [*SMALL, f"--data_dir={data_dir}", f"--log_dir={log_dir}"]
    after_kill = []
    for fault, _ in KILLS:
        proc = run_script(MNIST, *args, fault=fault)
        steps = logged_steps(log_dir)
        after_kill.append(types.SimpleNamespace(
            fault=fault, proc=proc, steps=steps, nan=checkpoint_problems(log_dir)))
    last = run_script(MNIST, *args)
    return types.SimpleNamespace(log_dir=log_dir, after_kill=after_kill, last=last)


class _Messages(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def run_in_process(*args, script=mnist_phased_lstm):
    """Runs a script's main() here (no TensorFlow start-up), as `python <script> *args` would
    (MNIST: on a fake MNIST); returns (exit status or error message, its log text)."""
    messages = _Messages()
    logger = logging.getLogger("absl")
    logger.addHandler(messages)
    # The logger's own level, not absl's verbosity: restoring a verbosity would leave an explicit
    # level on the absl logger, and later tests' caplog.at_level(INFO) would see nothing.
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with pytest.MonkeyPatch.context() as patch:
            fake_mnist.accept_fake_mnist(patch.setattr)
            status = script_helpers.run_main(script, *args)
    finally:
        logger.setLevel(level)
        logger.removeHandler(messages)
    text = "\n".join(messages.lines)
    return types.SimpleNamespace(returncode=1 if isinstance(status, str) else status,
                                 stderr=text + ("\n" + status if isinstance(status, str) else ""))


def damage_end_to_end(reference, data_dir, base):
    """Copies of the finished reference run, damaged, then run with the same command."""
    cases = {}
    for name in ("newest_deleted", "newest_flipped_state_garbage", "all_truncated"):
        log_dir = os.path.join(base, name)
        shutil.copytree(reference, log_dir)
        folder = os.path.join(run_dir(log_dir), training.CHECKPOINT_DIR)
        newest = os.path.join(folder, f"ckpt-{STEPS}")
        if name == "newest_deleted":
            for path in glob.glob(newest + ".*"):
                os.remove(path)
        elif name == "newest_flipped_state_garbage":
            flip(newest + ".data-00000-of-00001")
            with open(os.path.join(folder, "checkpoint"), "wb") as f:
                f.write(bytes(range(256)))
        elif name == "all_truncated":
            for path in glob.glob(os.path.join(folder, "*.data-*")):
                os.truncate(path, 10)
        before = snapshot(log_dir)
        proc = run_in_process(*SMALL, f"--data_dir={data_dir}", f"--log_dir={log_dir}")
        cases[name] = types.SimpleNamespace(log_dir=log_dir, proc=proc, before=before,
                                            after=snapshot(log_dir))
    return cases


def divergence_runs(data_dir, base):
    runs = {}
    for model in ("PhasedLSTMCell", "BasicLSTMCell"):
        log_dir = os.path.join(base, "diverged_" + model)
        args = [model if a == RUN else a for a in SMALL]
        runs[model] = types.SimpleNamespace(log_dir=log_dir, proc=run_in_process(
            *args, "--learning_rate=3e38", f"--data_dir={data_dir}", f"--log_dir={log_dir}"))
    return runs


def freq_divergence(base):
    log_dir = os.path.join(base, "diverged_freq")
    return types.SimpleNamespace(log_dir=log_dir, proc=run_in_process(
        "--sampling=standard", "--seeds=2", "--epochs=2", "--batches_per_epoch=2",
        "--batch_size=4", "--num_units=4", "--val_size=10", "--checkpoint_every_secs=0",
        "--learning_rate=3e38", f"--log_dir={log_dir}", script=freq_phased_lstm))


def flip(path, offset=None):
    """Flips the bits of one byte (the middle one by default)."""
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(size // 2 if offset is None else offset)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def garble(path):
    """Replaces the file's content with random bytes of the same length (at least 32)."""
    size = max(os.path.getsize(path), 32)
    with open(path, "wb") as f:
        f.write(np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes())


def snapshot(log_dir):
    """{relative path: size} of every file under log_dir."""
    files = {}
    for folder, _, names in os.walk(log_dir):
        for name in names:
            path = os.path.join(folder, name)
            files[os.path.relpath(path, log_dir)] = os.path.getsize(path)
    return files


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every run of this module: the subprocesses (the kill chain) in a thread, the runs that
    need no kill in this process meanwhile."""
    data_dir = write_fake_mnist(tmp_path_factory.mktemp("data"))
    base = str(tmp_path_factory.mktemp("faults"))
    reference = os.path.join(base, "reference")

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        chain = pool.submit(kill_chain, os.path.join(base, "chain"), data_dir)
        proc = run_in_process(*SMALL, f"--data_dir={data_dir}", f"--log_dir={reference}")
        damaged = damage_end_to_end(reference, data_dir, base)
        diverged = divergence_runs(data_dir, base)
        diverged["freq"] = freq_divergence(base)
        chain = chain.result()
        return types.SimpleNamespace(reference=reference, reference_proc=proc, damaged=damaged,
                                     diverged=diverged, chain=chain)


def read_results(log_dir):
    with open(os.path.join(run_dir(log_dir), training.RESULTS_NAME), encoding="utf-8") as f:
        return json.load(f)


def assert_same_log(log_dir, reference):
    log = training.read_log(os.path.join(run_dir(log_dir), training.LOG_NAME))
    ref = training.read_log(os.path.join(run_dir(reference), training.LOG_NAME))
    np.testing.assert_array_equal(log["step"], range(1, STEPS + 1))
    np.testing.assert_allclose(log["train_loss"], ref["train_loss"], rtol=1e-4)
    np.testing.assert_array_equal(log["train_accuracy"], ref["train_accuracy"])
    np.testing.assert_allclose(log["test_loss"], ref["test_loss"], rtol=1e-4)
    np.testing.assert_array_equal(log["test_accuracy"], ref["test_accuracy"])


def assert_results_agree_with_log(log_dir):
    results = read_results(log_dir)
    log = training.read_log(os.path.join(run_dir(log_dir), training.LOG_NAME))
    tested = ~np.isnan(log["test_accuracy"])
    assert results["steps"] == int(log["step"][-1])
    assert results["final_test_accuracy"] == pytest.approx(log["test_accuracy"][tested][-1])
    assert results["best_test_accuracy"] == pytest.approx(log["test_accuracy"][tested].max())


# ---------------------------------------------------------------------------------------------
# 1. Kills.

def test_reference_run(runs):
    assert runs.reference_proc.returncode == 0, runs.reference_proc.stderr[-3000:]
    assert_results_agree_with_log(runs.reference)


@pytest.mark.parametrize("number", range(len(KILLS)))
def test_after_each_kill_the_log_and_checkpoints_are_sound(runs, number):
    killed = runs.chain.after_kill[number]
    fault, _ = KILLS[number]
    assert killed.proc.returncode == -9, (fault, killed.proc.stderr[-3000:])
    check_no_traceback(killed.proc)
    assert killed.steps == list(range(1, len(killed.steps) + 1)), fault  # once, in order
    assert killed.nan == []


@pytest.mark.parametrize("number", range(len(KILLS)))
def test_each_next_run_resumes_from_the_expected_checkpoint(runs, number):
    _, resume_step = KILLS[number]
    following = (runs.chain.after_kill[number + 1].proc if number + 1 < len(KILLS)
                 else runs.chain.last)
    check_no_traceback(following)
    assert "Resuming PhasedLSTMCell from " in following.stderr
    assert f"ckpt-{resume_step} (step {resume_step} of {STEPS})" in following.stderr


def test_the_chain_ends_as_an_uninterrupted_run(runs):
    chain = runs.chain
    assert chain.last.returncode == 0, chain.last.stderr[-3000:]
    assert_same_log(chain.log_dir, runs.reference)
    assert_results_agree_with_log(chain.log_dir)
    assert leftovers(chain.log_dir) == []
    folder = os.path.join(run_dir(chain.log_dir), training.CHECKPOINT_DIR)
    assert sorted(checkpoints.checkpoint_files(folder)) == [STEPS - 2, STEPS - 1, STEPS]
    assert all(checkpoints.verify(os.path.join(folder, f"ckpt-{s}")) is None
               for s in checkpoints.checkpoint_files(folder))
    assert not os.path.exists(os.path.join(folder, checkpoints.DAMAGED_DIR))
    # The leftovers of the killed save and deletion were tidied, and said so.
    stderr = "".join(k.proc.stderr for k in chain.after_kill) + chain.last.stderr
    assert "Tidied what an interrupted save or deletion left" in stderr


# ---------------------------------------------------------------------------------------------
# 2. Damage, in-process: every file of a finished run, four ways.

DAMAGES = ("deleted", "truncated", "flipped", "garbled")


def damage(path, how):
    if how == "deleted":
        os.remove(path)
    elif how == "truncated":
        os.truncate(path, os.path.getsize(path) // 2)
    elif how == "flipped":
        flip(path)
    else:
        garble(path)


def files_of_a_run(reference):
    folder = run_dir(reference)
    names = ["log.tsv", "results.json", "checkpoints/checkpoint"]
    names += [f"checkpoints/ckpt-{STEPS}.{ext}" for ext in ("index", "data-00000-of-00001",
                                                          "json")]
    names += [f"checkpoints/ckpt-{STEPS - 2}.data-00000-of-00001"]  # an older one
    names += [os.path.relpath(p, folder) for p in glob.glob(os.path.join(folder, "events.*"))]
    return names


def prepare(log_dir):
    """loop.prepare of the run the MNIST command would train."""
    with open(os.path.join(run_dir(log_dir), "checkpoints", f"ckpt-{STEPS - 1}.json"),
              encoding="utf-8") as f:
        settings = json.load(f)["settings"]  # the reference's, as the same command gives
    run = loop.Run(run_dir(log_dir), total_steps=STEPS, seed=0, settings=settings,
                   must_match=mnist_phased_lstm.resume_must_match("PhasedLSTMCell"),
                   checkpoint_every_secs=0, unrecorded=mnist_phased_lstm.RESUME_UNRECORDED)
    return loop.prepare(run)


@pytest.fixture(scope="module")
def damaged_in_process(runs, tmp_path_factory):
    """{(file, how): what loop.prepare did with a copy of the reference run so damaged}."""
    assert runs.reference_proc.returncode == 0, runs.reference_proc.stderr[-3000:]
    base = tmp_path_factory.mktemp("damaged")
    cases = {}
    for name in files_of_a_run(runs.reference):
        for how in DAMAGES:
            log_dir = os.path.join(base, f"{name.replace('/', '_')}_{how}")
            shutil.copytree(runs.reference, log_dir)
            damage(os.path.join(run_dir(log_dir), name), how)
            before = snapshot(log_dir)
            case = types.SimpleNamespace(error=None, step=None, skipped=None)
            try:
                resume = prepare(log_dir)
                case.step, case.skipped = (resume.checkpoint.step,
                                           [s.step for s in resume.skipped])
            except training.RunError as error:
                case.error = str(error)
            case.lost = set(before) - set(snapshot(log_dir))
            case.changed = snapshot(log_dir) != before
            cases[(name, how)] = case
    return cases


FELL_BACK, RESUMED, ERROR = ("fell back to the older checkpoint",
                             "resumed from the newest checkpoint", "clear error")


def damage_outcome(case):
    """How a damaged run folder ended: FELL_BACK, RESUMED, ERROR, or what went wrong."""
    if case.error is not None:
        return ERROR
    if case.step == STEPS:
        return RESUMED
    if case.step == STEPS - 1 and case.skipped == [STEPS]:
        return FELL_BACK
    return f"unexpected: resumed from step {case.step}, skipping {case.skipped}"


def damaged_file(name):
    """The file's role in a run folder, for the summary."""
    if f"ckpt-{STEPS}." in name:
        return f"newest checkpoint's .{name.split('.', 1)[1].split('-')[0]}"
    return ("an older checkpoint's .data" if "ckpt-" in name
            else "TensorBoard events" if "events" in name
            else "state file `checkpoint`" if name.endswith("/checkpoint")
            else os.path.basename(name))


def test_damaged_files_resume_or_stop_with_a_clear_error(damaged_in_process):
    assert len({name for name, _ in damaged_in_process}) == 8
    for (name, how), case in damaged_in_process.items():
        if case.error is not None:
            # Names the damaged file (or, for the state of the log, the log).
            assert os.path.basename(name).split(".")[0] in case.error, (name, how, case.error)
            assert not case.changed, (name, how)  # nothing changed
        else:
            # Nothing usable was deleted: every file is still there, or was a leftover.
            assert case.lost <= {name}, (name, how)
    ended = {key: damage_outcome(case) for key, case in damaged_in_process.items()}
    names = {name for name, _ in damaged_in_process}
    expected = {(name, how): RESUMED for name in names for how in DAMAGES}
    # The newest checkpoint's index or data: missing, or it does not read back.
    for ext in ("index", "data-00000-of-00001"):
        expected.update({(f"checkpoints/ckpt-{STEPS}.{ext}", how): FELL_BACK for how in DAMAGES})
    # The log: a deleted one starts anew after the checkpoint, a partial last line is dropped;
    # bytes that are not text, or garbage, are a clear error, never a silent loss. (The
    # state file is not read; an older checkpoint is not needed; events are TensorBoard's;
    # results.json is rewritten at the end; an unreadable sidecar is a warning.)
    expected[("log.tsv", "flipped")] = expected[("log.tsv", "garbled")] = ERROR
    assert ended == expected


def blocked_checkpoint_folder(tmp_path):
    """A file where the checkpoint folder goes: loop.prepare's error message."""
    log_dir = os.path.join(tmp_path, "blocked")
    os.makedirs(run_dir(log_dir))
    with open(os.path.join(run_dir(log_dir), "checkpoints"), "w", encoding="utf-8") as f:
        f.write("a file where the checkpoint folder goes")
    try:
        loop.prepare(loop.Run(run_dir(log_dir), STEPS, 0, {}, (), 0))
    except training.RunError as error:
        return str(error)
    return None


def test_a_blocked_checkpoint_folder_is_refused_before_training(tmp_path):
    assert "cannot write to the checkpoint folder" in blocked_checkpoint_folder(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_run_folder_is_refused_before_training(tmp_path):
    folder = os.path.join(tmp_path, RUN)
    os.makedirs(folder)
    os.chmod(folder, 0o555)
    try:
        with pytest.raises(training.RunError, match="cannot write to the run folder"):
            loop.prepare(loop.Run(folder, STEPS, 0, {}, (), 0))
    finally:
        os.chmod(folder, 0o755)


# ---------------------------------------------------------------------------------------------
# 3. Damage, end to end.

def test_a_lost_newest_checkpoint_resumes_from_the_older_one(runs):
    case = runs.damaged["newest_deleted"]
    assert case.proc.returncode == 0, case.proc.stderr[-3000:]
    check_no_traceback(case.proc)
    assert f"ckpt-{STEPS - 1} (step {STEPS - 1} of {STEPS})" in case.proc.stderr
    assert_same_log(case.log_dir, runs.reference)
    assert_results_agree_with_log(case.log_dir)


def test_a_damaged_newest_checkpoint_is_set_aside_and_named(runs):
    name = "newest_flipped_state_garbage"
    case = runs.damaged[name]
    assert case.proc.returncode == 0, case.proc.stderr[-3000:]
    check_no_traceback(case.proc)
    assert "Resuming from an older checkpoint" in case.proc.stderr
    assert f"ckpt-{STEPS}.data-00000-of-00001" in case.proc.stderr
    damaged = os.path.join(run_dir(case.log_dir), "checkpoints", checkpoints.DAMAGED_DIR)
    assert sorted(os.listdir(damaged)) == [f"ckpt-{STEPS}.data-00000-of-00001",
                                           f"ckpt-{STEPS}.index", f"ckpt-{STEPS}.json"]
    assert_same_log(case.log_dir, runs.reference)
    assert_results_agree_with_log(case.log_dir)


def test_nothing_usable_is_a_clear_error_that_changes_nothing(runs):
    name, text = "all_truncated", "checkpoint files that do not read back"
    case = runs.damaged[name]
    assert case.proc.returncode == 1, case.proc.stderr[-3000:]
    check_no_traceback(case.proc)
    assert "error: " in case.proc.stderr and text in case.proc.stderr
    assert "--fresh" in case.proc.stderr
    assert case.after == case.before


def test_the_error_says_what_fresh_would_delete(runs):
    stderr = runs.damaged["all_truncated"].proc.stderr
    assert f"--fresh deletes {run_dir(runs.damaged['all_truncated'].log_dir)}: log.tsv " \
           f"({STEPS} rows), results.json" in stderr
    for step in (STEPS - 2, STEPS - 1, STEPS):
        assert f"ckpt-{step}.data-00000-of-00001" in stderr  # each bad file named


# ---------------------------------------------------------------------------------------------
# 4. Divergence.

@pytest.mark.parametrize("model", ["PhasedLSTMCell", "BasicLSTMCell"])
def test_divergence_stops_keeps_the_last_good_checkpoint_and_says_so(runs, model):
    case = runs.diverged[model]
    proc = case.proc
    assert proc.returncode == loop.EXIT_DIVERGED, proc.stderr[-3000:]
    check_no_traceback(proc)
    assert "training diverged at step" in proc.stderr and "--learning_rate" in proc.stderr
    folder = os.path.join(case.log_dir, model)
    with open(os.path.join(folder, training.RESULTS_NAME), encoding="utf-8") as f:
        results = json.load(f)
    diverged = results["diverged"]
    good = diverged["last_good_checkpoint_step"]
    assert good is not None and good < diverged["step"]
    assert results["steps"] == good
    # Accuracies only from what the last good checkpoint logged.
    log = training.read_log(os.path.join(folder, training.LOG_NAME))
    kept = log["step"] <= good
    tested = kept & ~np.isnan(log["test_accuracy"])
    assert results["final_test_accuracy"] == (
        pytest.approx(log["test_accuracy"][tested][-1]) if tested.any() else None)
    # No checkpoint holds a non-finite value; the last good one is there.
    checkpoint_dir = os.path.join(folder, "checkpoints")
    steps = list(checkpoints.checkpoint_files(checkpoint_dir))
    assert steps and max(steps) == good
    assert all(checkpoints.verify(os.path.join(checkpoint_dir, f"ckpt-{s}")) is None
               for s in steps)
    assert log["step"].max() < diverged["step"]  # the diverged step's row is not logged


def test_divergence_in_the_frequency_script_through_the_same_loop(runs):
    case = runs.diverged["freq"]
    assert case.proc.returncode == loop.EXIT_DIVERGED, case.proc.stderr[-3000:]
    check_no_traceback(case.proc)
    assert "The runs after this one were not started" in case.proc.stderr
    # The task's own advice: the frequency task's names its gradient clipping too.
    assert "training diverged at step" in case.proc.stderr
    assert "--learning_rate=3e+38" in case.proc.stderr
    assert "--clip_norm=0: not clipped" in case.proc.stderr
    with open(os.path.join(case.log_dir, "standard", "PhasedLSTMCell", "seed0",
                           training.RESULTS_NAME), encoding="utf-8") as f:
        assert "diverged" in json.load(f)
    assert not os.path.exists(os.path.join(case.log_dir, "standard", "PhasedLSTMCell",
                                           "seed1", training.LOG_NAME))


# ---------------------------------------------------------------------------------------------
# The closing note.

def fault_outcomes(runs, damaged_in_process, tmp_path):
    """{"<fault class>: <how it ended>": count} for every fault of this module, from the runs
    themselves; a fault that ended otherwise than it should is counted as "unexpected"."""
    outcomes = collections.Counter()
    chain = runs.chain
    for number, (fault, resume_step) in enumerate(KILLS):
        following = (chain.after_kill[number + 1].proc if number + 1 < len(KILLS)
                     else chain.last)
        resumed = f"ckpt-{resume_step} (step {resume_step} of {STEPS})" in following.stderr
        outcomes["kill: killed, then the next run resumed"
                 if chain.after_kill[number].proc.returncode == -9 and resumed
                 else f"kill {fault}: unexpected"] += 1
    for (name, _), case in damaged_in_process.items():
        outcomes[f"damage ({damaged_file(name)}): {damage_outcome(case)}"] += 1
    outcomes["unwritable checkpoint folder: clear error before training"
             if blocked_checkpoint_folder(tmp_path) else "unwritable checkpoint folder: "
             "unexpected"] += 1
    damaged = runs.damaged
    for name, status, said in (
            ("newest_deleted", 0, f"ckpt-{STEPS - 1} (step {STEPS - 1} of {STEPS})"),
            ("newest_flipped_state_garbage", 0, "Resuming from an older checkpoint"),
            ("all_truncated", 1, "--fresh")):
        proc = damaged[name].proc
        ok = proc.returncode == status and said in proc.stderr
        if name == "all_truncated":
            ok = ok and damaged[name].after == damaged[name].before
        outcomes[f"end to end: {name}: " + ({0: "resumed", 1: "clear error, nothing changed"}[
            status] if ok else "unexpected")] += 1
    for model, case in runs.diverged.items():
        outcomes[f"divergence ({model}): " + ("exit 3" if case.proc.returncode ==
                                              loop.EXIT_DIVERGED else "unexpected")] += 1
    return outcomes


def test_fault_summary(runs, damaged_in_process, tmp_path):
    """How many faults were injected and how each class ended (shown with -s or -rA)."""
    outcomes = fault_outcomes(runs, damaged_in_process, tmp_path)
    total = sum(outcomes.values())
    lines = [f"{total} faults injected:"] + [f"  {count:3d}  {outcome}"
                                             for outcome, count in sorted(outcomes.items())]
    print("\n" + "\n".join(lines))
    # 8 kills, 8 files x 4 damages, 1 blocked folder, 3 damaged runs end to end, 3 divergences.
    assert total == len(KILLS) + 8 * len(DAMAGES) + 1 + 3 + 3
    assert not [outcome for outcome in outcomes if "unexpected" in outcome], lines
