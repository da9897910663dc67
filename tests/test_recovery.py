"""Fault injection: damaged checkpoints, signals, two trainers, a full disk, divergence.

Each test breaks something on purpose and checks what the trainer guarantees
(docs/training.md, "Failure and recovery"): it resumes from the newest checkpoint that
restores completely or refuses without touching anything; a signal costs at
most the current step; the run directory has one trainer; a full disk leaves
no debris and the previous checkpoint; a diverged run stops, keeping its last
good checkpoint the newest.  Tiny models on the bundled digits.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from trainers import checkpoints, data, divergence, evaluation, preemption, run_dir, run_lock, train

REPO = Path(__file__).resolve().parents[1]
TINY = ["--flagfile=digits.flags", "--num_scales=1", "--num_res_blocks=0", "--hidden_channels=8",
        "--batch_size=16", "--eval_batch_size=300", "--num_sample_images=0", "--log_every=1",
        "--summary_every=1000", "--eval_every=1000", "--checkpoint_every=2",
        "--recalibration_batches=1"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
       "PYTHONPATH": str(REPO)}


def _run(*args: str) -> int:
    """The trainer in-process, on one replica: tests/conftest.py's two logical CPUs would make
    the default strategy two replicas, at about 1.7 times the CPU time of a run, and nothing
    here depends on the replica count (two-replica trainer runs: tests/test_train.py,
    test_train_conditional.py, test_train_glow.py, test_train_variational.py and
    test_distributed.py). ``_start``'s trainers, fresh processes, run the default."""
    return train.run(["train.py", *TINY, "--strategy=one_device", *args])


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _ckpt_files(run: Path) -> dict[str, str]:
    """The checkpoint files (the state file aside, which a restart rewrites)."""
    return {k: v for k, v in _hashes(run / "checkpoints").items() if k != "checkpoint"}


def _latest_step(run: Path) -> int:
    return evaluation.checkpoint_step(tf.train.latest_checkpoint(str(run / "checkpoints")))


def _finite_loss(run: Path) -> bool:
    """Whether the newest checkpoint's training loss (batch statistics) is finite."""
    model = run_dir.restore_model(str(run))
    batch = next(iter(data.make_train_dataset(data.DataConfig("digits", batch_size=16))))
    return bool(np.all(np.isfinite(model.objective(**batch, training=True).nll.numpy())))


@pytest.fixture(scope="module")
def three_steps(tmp_path_factory) -> Path:
    """A run with checkpoints at steps 1, 2 and 3."""
    run = tmp_path_factory.mktemp("pristine") / "run"
    assert _run(f"--output_dir={run}", "--train_steps=3", "--checkpoint_every=1") == 0
    assert sorted(p.name for p in (run / "checkpoints").glob("*.index")) == [
        "ckpt-1.index", "ckpt-2.index", "ckpt-3.index"]
    return run


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_bytes(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 16] = bytes(b ^ 0xFF for b in raw[middle:middle + 16])
    path.write_bytes(bytes(raw))


def _data(step: int) -> str:
    return f"ckpt-{step}.data-00000-of-00001"


DAMAGE = {  # name: (what is done to the newest checkpoint N or the state file, step restored)
    "index_deleted": (lambda d, n: (d / f"ckpt-{n}.index").unlink(), -1),
    "index_truncated": (lambda d, n: _truncate(d / f"ckpt-{n}.index"), -1),
    "data_deleted": (lambda d, n: (d / _data(n)).unlink(), -1),
    "data_truncated": (lambda d, n: _truncate(d / _data(n)), -1),
    "data_bit_flips": (lambda d, n: _flip_bytes(d / _data(n)), -1),
    "state_garbled": (lambda d, n: (d / "checkpoint").write_text("garbage {{{ \x00"), 0),
    "state_deleted": (lambda d, n: (d / "checkpoint").unlink(), 0),
    "state_names_missing": (
        lambda d, n: (d / "checkpoint").write_text(f'model_checkpoint_path: "ckpt-{n + 5}"\n'), 0),
}


def _small_checkpoints(directory: Path) -> tuple[tf.train.Checkpoint, list[np.ndarray]]:
    weights = tf.Variable(tf.zeros([64, 64]))
    checkpoint = tf.train.Checkpoint(w=weights)
    manager = tf.train.CheckpointManager(checkpoint, str(directory), max_to_keep=3)
    values = []
    for step in (1, 2, 3):
        weights.assign(tf.random.normal([64, 64]))
        values.append(weights.numpy())
        manager.save(checkpoint_number=step)
    weights.assign(tf.zeros([64, 64]))
    return checkpoint, values


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_newest_intact_checkpoint_is_found_for_every_damage(damage, tmp_path):
    checkpoint, values = _small_checkpoints(tmp_path)
    damage_fn, offset = DAMAGE[damage]
    damage_fn(tmp_path, 3)
    path, skipped = checkpoints.restore_newest_intact(checkpoint, str(tmp_path))
    assert path == str(tmp_path / f"ckpt-{3 + offset}")
    np.testing.assert_array_equal(checkpoint.w.numpy(), values[2 + offset])
    expected = [f"ckpt-{3 + 5}"] if damage == "state_names_missing" else \
        ["ckpt-3"] if offset else []
    assert [os.path.basename(s.path) for s in skipped] == expected
    assert not checkpoints.state_names(str(tmp_path), path)  # every damage needs a repair
    checkpoints.write_state(str(tmp_path), path)
    assert tf.train.latest_checkpoint(str(tmp_path)) == path
    assert checkpoints.state_names(str(tmp_path), path)
    # The repaired state hands the intact checkpoints to the manager, which rotates them.
    manager = tf.train.CheckpointManager(checkpoint, str(tmp_path), max_to_keep=1)
    assert manager.latest_checkpoint == path
    manager.save(checkpoint_number=10)
    assert not any((tmp_path / f"ckpt-{k}.index").exists() for k in range(1, 3 + offset + 1))


def test_no_restorable_checkpoint_raises_and_changes_nothing(tmp_path):
    checkpoint, _ = _small_checkpoints(tmp_path)
    assert checkpoints.state_names(str(tmp_path), str(tmp_path / "ckpt-3"))  # intact: no repair
    for step in (1, 2, 3):
        _truncate(tmp_path / _data(step))
    before = _hashes(tmp_path)
    with pytest.raises(checkpoints.CheckpointError, match="ckpt-3: .*ckpt-2: .*ckpt-1: "):
        checkpoints.restore_newest_intact(checkpoint, str(tmp_path))
    assert _hashes(tmp_path) == before
    assert checkpoints.restore_newest_intact(checkpoint, str(tmp_path / "empty")) == (None, [])


# Every damage is covered by test_newest_intact_checkpoint_is_found_for_every_damage; the
# trainer's two paths are a skipped checkpoint and a repaired state file.
@pytest.mark.parametrize("damage", ["data_truncated", "state_garbled"])
def test_restart_resumes_from_the_newest_intact_checkpoint(damage, three_steps, tmp_path,
                                                           absl_log):
    """The trainer: no new run from step 0, older checkpoints untouched, debris removed."""
    run = tmp_path / "run"
    shutil.copytree(three_steps, run)
    damage_fn, offset = DAMAGE[damage]
    damage_fn(run / "checkpoints", 3)
    (run / "checkpoints" / "ckpt-4_temp").mkdir()  # debris of an interrupted save
    intact = {name: digest for name, digest in _hashes(run / "checkpoints").items()
              if name.startswith(("ckpt-1.", "ckpt-2."))}
    resumed = 3 + offset
    assert _run(f"--output_dir={run}", f"--train_steps={resumed + 1}", "--verbosity=0") == 0
    log = absl_log()
    assert f"resuming at step {resumed} " in log, log[-3000:]
    assert "New run" not in log
    if offset:
        assert re.search(r"Skipping checkpoint \S*ckpt-3: ", log), log[-3000:]
    # Older checkpoints were neither overwritten nor lost: the one resumed from is still
    # there; only the normal rotation (3 kept) removes the oldest.
    after = _hashes(run / "checkpoints")
    assert all(after.get(name, digest) == digest for name, digest in intact.items())
    assert f"ckpt-{resumed}.index" in after and len(
        [name for name in after if name.endswith(".index")]) >= 3
    assert not (run / "checkpoints" / "ckpt-4_temp").exists()
    assert _latest_step(run) == resumed + 1


def test_trainer_refuses_when_no_checkpoint_restores(three_steps, tmp_path, capfd):
    run = tmp_path / "run"
    shutil.copytree(three_steps, run)
    for step in (1, 2, 3):
        (run / "checkpoints" / f"ckpt-{step}.index").unlink()
    before = _hashes(run)
    capfd.readouterr()
    assert _run(f"--output_dir={run}", "--train_steps=8") == 1
    err = capfd.readouterr().err
    assert "No checkpoint in" in err and "restores completely" in err and "ckpt-1" in err
    assert "Traceback" not in err
    assert _hashes(run) == before


# --------------------------------------------------------------- preemption
def _start(run: Path, log: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "trainers/train.py", *TINY, f"--output_dir={run}", *extra],
        cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=log.open("w"))


def _wait_for(log: Path, pattern: str, proc: subprocess.Popen, timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text()
        if re.search(pattern, text):
            return text
        assert proc.poll() is None, text[-3000:]
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"{pattern!r} not in the log:\n{log.read_text()[-3000:]}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_checkpoints_the_current_step_and_exits_75(signum, tmp_path, capfd):
    """While the trainer runs, a second one on its directory is refused (run lock); then a
    signal stops it after the current step, checkpointed."""
    run, log = tmp_path / "run", tmp_path / "log.txt"
    proc = _start(run, log, "--train_steps=100000", "--checkpoint_every=100000")
    try:
        _wait_for(log, r"step 2/", proc)
        before = _hashes(run / "checkpoints") if (run / "checkpoints").exists() else {}
        capfd.readouterr()
        assert _run(f"--output_dir={run}", "--train_steps=4") == 1
        err = capfd.readouterr().err
        assert f"is in use by process {proc.pid}" in err and "Traceback" not in err
        assert (run / run_lock.LOCK_FILE).exists()
        assert (_hashes(run / "checkpoints") if (run / "checkpoints").exists() else {}) == before
        _wait_for(log, r"step 3/", proc)
    finally:
        proc.send_signal(signum)
    assert proc.wait(timeout=120) == preemption.EXIT_PREEMPTED
    text = log.read_text()
    name = signal.Signals(signum).name
    assert f"Received {name}" in text and "Traceback" not in text
    stopped = re.search(rf"Stopped by {name} after step (\d+): checkpoint \S+ckpt-(\d+) written",
                        text)
    assert stopped and stopped.group(1) == stopped.group(2), text[-3000:]
    last_logged = max(int(s) for s in re.findall(r"step (\d+)/100000", text))
    # Nothing lost: the checkpoint holds the last step trained.
    assert _latest_step(run) == int(stopped.group(1)) == last_logged
    assert not (run / run_lock.LOCK_FILE).exists()


def test_second_signal_exits_at_once_and_the_run_resumes(tmp_path, capfd):
    run, log = tmp_path / "run", tmp_path / "log.txt"
    proc = _start(run, log, "--train_steps=100000", "--checkpoint_every=3")
    _wait_for(log, r"Saved checkpoint \S+ckpt-3", proc)
    _wait_for(log, r"step 5/", proc)
    proc.send_signal(signal.SIGINT)  # Two different signals are never merged into one,
    proc.send_signal(signal.SIGTERM)  # but Python may handle the two pending ones in either order.
    status = proc.wait(timeout=120)
    assert status in (128 + signal.SIGINT, 128 + signal.SIGTERM)
    second = signal.Signals(status - 128).name
    text = log.read_text()
    assert f"Received {second} again: exiting now" in text and "Traceback" not in text
    assert not (run / run_lock.LOCK_FILE).exists()
    saved = _latest_step(run)
    assert saved >= 3
    assert _run(f"--output_dir={run}", f"--train_steps={saved + 1}", "--checkpoint_every=3") == 0
    assert _latest_step(run) == saved + 1


# ---------------------------------------------------------------- run lock
def test_stale_lock_of_a_dead_process_is_taken_over(three_steps, tmp_path, absl_log):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "run"
    shutil.copytree(three_steps, run)
    (run / run_lock.LOCK_FILE).write_text(
        f'{{"host": "{run_lock.socket.gethostname()}", "pid": {dead.pid}}}')
    # One more step (a complete run stops before it takes the lock: nothing to write).
    assert _run(f"--output_dir={run}", "--train_steps=4") == 0
    assert "stale lock" in absl_log()
    assert not (run / run_lock.LOCK_FILE).exists()  # released on exit


def test_lock_of_another_host_or_live_process_is_refused(tmp_path):
    lock = run_lock.RunLock(str(tmp_path))
    (tmp_path / run_lock.LOCK_FILE).write_text('{"host": "elsewhere", "pid": 1}')
    with pytest.raises(run_lock.RunLockedError, match="process 1 on host elsewhere"):
        lock.acquire()
    (tmp_path / run_lock.LOCK_FILE).unlink()
    with run_lock.RunLock(str(tmp_path)):
        with pytest.raises(run_lock.RunLockedError, match=f"process {os.getpid()}"):
            run_lock.RunLock(str(tmp_path)).acquire()
    assert not (tmp_path / run_lock.LOCK_FILE).exists()


# --------------------------------------------------------------- divergence
def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, capfd):
    """The issue's example: --learning_rate=1000 makes every update from step 3 on non-finite.

    In Real NVP's conditioner form of before: with the release's form (the default since
    issue 29) the update of step 2 is already non-finite, and no checkpoint before the
    divergence would be left to keep."""
    run = tmp_path / "run"
    code = _run(f"--output_dir={run}", "--train_steps=100", "--learning_rate=1000",
                "--max_consecutive_skipped=3", "--checkpoint_every=1",
                "--conditioner_form=direct")
    err = capfd.readouterr().err
    assert code == 1 and "Training diverged" in err and "Traceback" not in err, err[-3000:]
    assert "--max_consecutive_skipped=3" in err
    first, last = (int(s) for s in re.search(r"steps (\d+)\.\.(\d+)", err).groups())
    assert last - first + 1 == 3 and last < 50  # stopped at once, not at step 100
    # No checkpoint of the skipped steps; the weights that gave the first NaN are set aside.
    steps = sorted(checkpoints.checkpoint_step(str(p)[:-len(".index")])
                   for p in (run / "checkpoints").glob("*.index"))
    assert steps and max(steps) < first - 1
    assert (run / "checkpoints" / "diverged" / f"ckpt-{first - 1}.index").exists()
    assert _latest_step(run) == max(steps) and _finite_loss(run)


def test_skipped_updates_postpone_checkpoints_and_count_streaks():
    guard = divergence.SkippedUpdates(limit=3)
    assert not guard.update(1, applied=False, loss=float("nan"))
    assert not guard.checkpoint_allowed
    assert not guard.update(2, applied=True, loss=1.0) and guard.checkpoint_allowed
    assert not guard.update(3, applied=False, loss=float("nan"))
    assert not guard.update(4, applied=False, loss=float("inf"))
    assert guard.update(5, applied=False, loss=float("nan"))
    assert (guard.first, guard.suspect_step) == (3, 2)
    scaled = divergence.SkippedUpdates(limit=1, loss_scaled=True)
    assert not scaled.update(1, applied=False, loss=2.0)  # loss-scale overflow: not divergence
    assert scaled.update(2, applied=False, loss=float("nan"))
    with pytest.raises(ValueError, match=">= 1"):
        divergence.SkippedUpdates(limit=0)


# ----------------------------------------------------------------- disk full
def test_failed_save_cleans_up_and_keeps_the_previous_checkpoint(three_steps, tmp_path, capfd,
                                                                 monkeypatch):
    """In-process fault injection: the checkpoint write fails with ENOSPC half-way."""
    run = tmp_path / "run"
    shutil.copytree(three_steps, run)
    real_write = tf.train.Checkpoint._write

    def full_disk(self, prefix, options=None):
        os.makedirs(prefix + "_temp", exist_ok=True)
        Path(prefix + ".data-00000-of-00001").write_bytes(b"\x00" * 10)
        raise tf.errors.ResourceExhaustedError(None, None, f"{prefix}: No space left on device")

    monkeypatch.setattr(tf.train.Checkpoint, "_write", full_disk)
    before = _ckpt_files(run)
    capfd.readouterr()
    assert _run(f"--output_dir={run}", "--train_steps=4") == 1
    err = capfd.readouterr().err
    assert "Could not write the checkpoint of step 4" in err and "the disk is full" in err
    assert "Traceback" not in err
    assert _ckpt_files(run) == before  # no debris, nothing damaged
    assert _latest_step(run) == 3
    monkeypatch.setattr(tf.train.Checkpoint, "_write", real_write)
    assert _run(f"--output_dir={run}", "--train_steps=4") == 0  # space is back
    assert _latest_step(run) == 4


def test_full_disk_while_exporting_leaves_nothing_behind(three_steps, tmp_path, capfd,
                                                        monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(three_steps, run)
    (run / "saved_model").mkdir()
    (run / "saved_model" / "saved_model.pb").write_bytes(b"previous export")

    def full_disk(obj, export_dir, **kwargs):
        Path(export_dir).mkdir(parents=True)
        (Path(export_dir) / "partial").write_bytes(b"\x00")
        raise OSError(errno.ENOSPC, "No space left on device", export_dir)

    monkeypatch.setattr(tf.saved_model, "save", full_disk)
    before = _hashes(run)
    capfd.readouterr()
    assert train.run(["train.py", f"--output_dir={run}", "--mode=export"]) == 1
    err = capfd.readouterr().err
    assert "Could not export to" in err and "the disk is full" in err and "Traceback" not in err
    assert _hashes(run) == before
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["checkpoints", "config.json", "saved_model", "tensorboard"])


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


def test_real_full_disk_during_checkpointing(three_steps, tmp_path, capfd):
    """A real ENOSPC: checkpoints/ on a tmpfs that holds the existing checkpoints only.
    (That the run then goes on once there is space again:
    test_failed_save_cleans_up_and_keeps_the_previous_checkpoint.)"""
    run = tmp_path / "run"
    shutil.copytree(three_steps, run)
    saved = run.parent / "saved_checkpoints"
    shutil.move(run / "checkpoints", saved)
    used = sum(p.stat().st_size for p in saved.rglob("*") if p.is_file())
    size = used + 24 * 1024  # the existing checkpoints plus a fraction of a new one
    if not _mount_tmpfs(run / "checkpoints", str(size)):
        pytest.skip("cannot mount a tmpfs here (not root?); the in-process test covers ENOSPC")
    try:
        for p in saved.iterdir():
            shutil.copy2(p, run / "checkpoints" / p.name)
        before = _ckpt_files(run)
        capfd.readouterr()
        assert _run(f"--output_dir={run}", "--train_steps=4") == 1
        err = capfd.readouterr().err
        assert "Could not write the checkpoint of step 4" in err and "disk is full" in err, err
        assert "Traceback" not in err
        assert _ckpt_files(run) == before and _latest_step(run) == 3
    finally:
        subprocess.run(["umount", "-l", str(run / "checkpoints")], check=False)


# ------------------------------------------------------------------ messages
def test_verbose_adds_the_traceback_to_the_one_line_error(tmp_path, capfd):
    for extra, traceback in (([], False), (["--verbose"], True)):
        capfd.readouterr()
        assert _run(f"--output_dir={tmp_path}", "--dataset=no_such_data", "--train_steps=1",
                    *extra) == 1
        err = capfd.readouterr().err
        assert "Error (UsageError): Unknown dataset 'no_such_data'" in err
        assert ("Traceback" in err) == traceback


# ------------------------------------------------------------------ datasets
@pytest.mark.parametrize("test_split, expected", [
    (np.ones((4, 8, 8), np.float32), "'test' has values in \\[0, 1\\] but 'train' goes up to 255"),
    (np.ones((4, 8, 8), np.uint8), "'test' has values in \\[0, 1\\] but 'train' goes up to 255"),
])
def test_npz_splits_that_disagree_are_refused(test_split, expected, tmp_path):
    path = tmp_path / "data.npz"
    train_split = np.full((4, 8, 8), 255, np.uint8)
    np.savez(path, train=train_split, test=test_split)
    with pytest.raises(ValueError, match=expected):
        data.image_shape(data.DataConfig("npz", data_dir=str(path)))


# ------------------------------------------- eval, export, visualize of a damaged run
def test_eval_export_and_visualize_use_the_newest_intact_checkpoint(three_steps, tmp_path,
                                                                   capfd, absl_log,
                                                                   monkeypatch):
    """The trainer's restore logic: a damaged newest checkpoint (and a garbled state file)
    is skipped with its reason, the newest intact one is used; an explicit damaged
    --checkpoint is refused in one line."""
    from trainers import export, training, visualize

    run = tmp_path / "run"
    shutil.copytree(three_steps, run)
    _truncate(run / "checkpoints" / _data(3))
    (run / "checkpoints" / "checkpoint").write_text("garbage {{{")
    before = _ckpt_files(run)
    expected = training.weights_fingerprint(
        run_dir.restore_model(str(three_steps), str(three_steps / "checkpoints" / "ckpt-2")))
    skipped = re.compile(r"Skipping checkpoint \S*ckpt-3: \w+")

    assert train.run(["train.py", f"--output_dir={run}", "--mode=eval",
                      "--recalibration_batches=0"]) == 0
    report = json.loads((run / "eval.json").read_text())
    assert report["step"] == 2 and report["checkpoint"].endswith("ckpt-2")
    assert skipped.search(absl_log()), absl_log()[-2000:]

    exported = {}

    def fake_export(model, target, weights):  # The real export is tests/test_export.py's.
        exported.update(weights=training.weights_fingerprint(model), description=weights)
        return target

    monkeypatch.setattr(export, "export_saved_model", fake_export)
    assert train.run(["train.py", f"--output_dir={run}", "--mode=export",
                      "--recalibration_batches=0"]) == 0
    assert exported["weights"] == expected and exported["description"] == "training weights"
    assert len(skipped.findall(absl_log())) == 2

    out = tmp_path / "samples.png"
    visualize.run("samples", str(out), output_dir=str(run), num=1, temperatures=(1.0,))
    assert out.exists() and len(skipped.findall(absl_log())) == 3

    capfd.readouterr()
    assert train.run(["train.py", f"--output_dir={run}", "--mode=eval",
                      f"--checkpoint={run}/checkpoints/ckpt-3"]) == 1
    err = capfd.readouterr().err
    assert "ckpt-3' does not restore" in err and "leave --checkpoint unset" in err
    assert "Traceback" not in err
    assert _ckpt_files(run) == before  # Nothing repaired or removed by reading.


def test_out_of_memory_names_the_batch_size(three_steps, tmp_path, capfd, monkeypatch):
    from trainers import steps as steps_lib

    def out_of_memory(batch):
        raise tf.errors.ResourceExhaustedError(
            None, None, "OOM when allocating tensor with shape[16,8,8,64]\n"
            "Hint: If you want to see a list of allocated tensors when OOM happens, ...")

    class OutOfMemorySteps(steps_lib.TrainSteps):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.train_step = out_of_memory

    monkeypatch.setattr(steps_lib, "TrainSteps", OutOfMemorySteps)
    run = tmp_path / "run"
    shutil.copytree(three_steps, run)
    before = _ckpt_files(run)
    capfd.readouterr()
    assert _run(f"--output_dir={run}", "--train_steps=5") == 1
    err = [line for line in capfd.readouterr().err.splitlines() if line.startswith("Error")]
    assert err == ["Error (ResourceExhaustedError): Out of memory (OOM when allocating tensor "
                   "with shape[16,8,8,64]): use a smaller --batch_size (now 16; or "
                   "--eval_batch_size, now 300, if it ran out while evaluating)."]
    assert _ckpt_files(run) == before


def test_user_errors_name_the_file_or_flag_in_one_line(three_steps, tmp_path, capfd):
    """Item 8 of issue 12: each ends in one `Error (...)` line and exit status 1."""
    damaged_config = tmp_path / "damaged_config"
    shutil.copytree(three_steps, damaged_config)
    (damaged_config / "config.json").write_text("{not json")
    no_checkpoint = tmp_path / "no_checkpoint"
    no_checkpoint.mkdir()
    shutil.copy(three_steps / "config.json", no_checkpoint)
    cases = {  # expected message: argv
        "damaged_config/config.json is damaged": ["--mode=eval", f"--output_dir={damaged_config}"],
        f"No checkpoint in '{no_checkpoint}/checkpoints': train first": [
            "--mode=export", f"--output_dir={no_checkpoint}"],
        "missing/config.json not found": ["--mode=eval", f"--output_dir={tmp_path}/missing"],
        "--flagfile=no_such.flags: no readable file": ["--flagfile=no_such.flags"],
        f"--flagfile={tmp_path}: no readable file": [f"--flagfile={tmp_path}"],
        "--channels=5: must be 1, 2, 3 or 4": [*TINY, "--channels=5", "--train_steps=1"],
        "--channels=3, but this dataset's images have 1": [
            *TINY, "--channels=3", "--train_steps=1", f"--output_dir={tmp_path}/run"],
    }
    for expected, argv in cases.items():
        capfd.readouterr()
        assert train.run(["train.py", *argv]) == 1, expected
        err = capfd.readouterr().err
        assert expected in err, (expected, err[-2000:])
        assert "Traceback" not in err and len(err.strip().splitlines()) <= 3, err
    assert not (tmp_path / "run").exists()
