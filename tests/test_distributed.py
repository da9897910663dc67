"""Multi-replica, multi-worker and crash-recovery behaviour of trainers/train.py.

The multi-worker and kill tests run fresh processes (TensorFlow's collective
runtime is fixed at start-up; SIGKILL needs a process); all use tiny models.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, str(REPO / "trainers" / "train.py")]
# A tiny model on the bundled digits: one scale, no residual blocks, 8 feature maps.
TINY = ["--flagfile=digits.flags", "--num_scales=1", "--num_res_blocks=0", "--hidden_channels=8",
        "--batch_size=16", "--eval_batch_size=300", "--num_sample_images=0", "--log_every=1",
        "--summary_every=1000", "--eval_every=100000", "--recalibration_batches=1"]
TIMEOUT = 600  # A hung collective must fail the test, not the CI job.


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1", **extra)
    return env


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _final_weights(log: str) -> str:
    found = re.findall(r"Final weights ([0-9a-f]{16})", log)
    assert found, log[-3000:]
    return found[-1]


def _fingerprint_of_checkpoint(run: Path, checkpoint: str) -> str:
    from trainers import run_dir, training

    return training.weights_fingerprint(run_dir.restore_model(str(run), checkpoint))


def _replica_report(recompute_gradients: bool) -> dict:
    """In-process when this process has 2 logical CPUs (tests/conftest.py), else in a fresh one."""
    import tensorflow as tf

    if len(tf.config.list_logical_devices("CPU")) >= 2:
        sys.path.insert(0, str(REPO / "tests"))
        import replica_equivalence_check

        return replica_equivalence_check.report(recompute_gradients)
    flags = ["--recompute_gradients"] if recompute_gradients else []
    result = subprocess.run([sys.executable, str(REPO / "tests" / "replica_equivalence_check.py"),
                             *flags],
                            cwd=REPO, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("recompute_gradients", [False, True])
def test_two_replicas_match_one_device(recompute_gradients):
    """Same initial weights, same global batch: 2 replicas == 1 device after 2 steps."""
    report = _replica_report(recompute_gradients)
    assert report["num_replicas"] == 2
    assert all(report["applied"])
    (nll_one, nll_two), (norm_one, norm_two) = report["nll"], report["grad_norm"]
    assert nll_one == pytest.approx(nll_two, rel=1e-5)
    assert norm_one == pytest.approx(norm_two, rel=1e-5)
    assert min(norm_one) > 1.0  # Clipping to 1.0 was active: it must use the global norm.
    assert report["max_update"] > 1e-2  # The steps did move the weights...
    assert report["trainable_max_abs_diff"] < 1e-5  # ...identically (gradients + clipping).
    assert report["statistics_max_rel_diff"] < 1e-4  # Batch-norm running statistics too.
    assert report["replica_spread"] == 0.0  # Replicas hold identical copies.


def test_multi_worker_training_ends_with_identical_weights(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    run = tmp_path / "run"
    args = TRAIN + TINY + [f"--output_dir={run}", "--train_steps=6", "--checkpoint_every=3"]
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        with open(logs[index], "w") as log:
            procs.append(subprocess.Popen(args, cwd=REPO, env=_env(TF_CONFIG=tf_config),
                                          stdout=log, stderr=subprocess.STDOUT))
    try:
        codes = [p.wait(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], "\n\n".join(t[-3000:] for t in texts)
    for text in texts:
        assert "MultiWorkerMirroredStrategy: 2 replica(s) in sync" in text
    fingerprints = [_final_weights(t) for t in texts]
    assert fingerprints[0] == fingerprints[1]
    # The chief wrote the checkpoints; the other worker's scratch copies are gone.
    latest = str(run / "checkpoints" / "ckpt-6")
    assert (run / "checkpoints" / "ckpt-6.index").exists()
    assert not any(p.name.startswith(".worker_") for p in run.iterdir())
    assert _fingerprint_of_checkpoint(run, latest) == fingerprints[0]


def test_sigkill_then_resume_continues_from_checkpoint(tmp_path):
    """kill -9 mid-run (checkpoints are written every 2 steps, so often mid-save), restart."""
    run = tmp_path / "run"
    args = TRAIN + TINY + [f"--output_dir={run}", "--train_steps=40", "--checkpoint_every=2"]
    first_log = tmp_path / "first.log"
    index = run / "checkpoints" / "checkpoint"
    with open(first_log, "w") as log:
        proc = subprocess.Popen(args, cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            steps = [int(s) for s in re.findall(r"step (\d+)/40", first_log.read_text())]
            if index.exists() and steps and max(steps) >= 6:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "training ended before it could be killed:\n" + first_log.read_text()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()

    import tensorflow as tf

    from trainers import evaluation

    latest = tf.train.latest_checkpoint(str(run / "checkpoints"))
    assert latest is not None
    saved_step = evaluation.checkpoint_step(latest)
    assert 2 <= saved_step < 40 and saved_step % 2 == 0
    saved_weights = _fingerprint_of_checkpoint(run, latest)

    second = subprocess.run(args, cwd=REPO, env=_env(), capture_output=True, text=True,
                            timeout=TIMEOUT)
    log = second.stdout + second.stderr
    assert second.returncode == 0, log[-3000:]
    resumed = re.search(r"Restored (\S+): resuming at step (\d+) \(weights ([0-9a-f]{16})\)", log)
    assert resumed, log[-3000:]
    assert resumed.group(1) == latest
    assert int(resumed.group(2)) == saved_step
    assert resumed.group(3) == saved_weights
    assert f"Training steps {saved_step + 1}..40" in log
    assert re.search(r"step 40/40", log)
    assert tf.train.latest_checkpoint(str(run / "checkpoints")).endswith("ckpt-40")
    assert _fingerprint_of_checkpoint(run, str(run / "checkpoints" / "ckpt-40")) == _final_weights(log)
