"""A run's data identity and its failed starts (issue 30, items 3 and 5).

* Resuming with other data (another ``--data_dir``, or the same file rewritten) is refused
  with the differing path/fingerprint, unless ``--allow_other_data``, which config.json
  records; eval then uses the new data.
* A start that fails before the first checkpoint leaves nothing of its own behind, in a new
  directory or in an existing one holding the user's files.

Tiny in-process runs on small .npz files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from trainers import launch, run_dir, steps, train
from trainers.sources.base import file_fingerprint

TINY = ["--dataset=npz", "--num_scales=1", "--num_res_blocks=0", "--hidden_channels=4",
        "--batch_size=4", "--eval_batch_size=8", "--num_sample_images=0",
        "--recalibration_batches=0", "--eval_every=1000", "--checkpoint_every=1",
        "--log_every=1", "--summary_every=1000",
        # One replica (tests/conftest.py's two logical CPUs would make it two, at about 1.7
        # times the CPU time): the data's identity does not depend on the replica count.
        "--strategy=one_device"]


def _npz(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, train=rng.integers(0, 256, (8, 8, 8), np.uint8),
             test=rng.integers(0, 256, (4, 8, 8), np.uint8))
    return path


def _run(*args: str) -> int:
    return train.run(["train.py", *TINY, *args])


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _config(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


def test_file_fingerprint_reads_samples_and_tells_files_apart(tmp_path):
    small = tmp_path / "small"
    small.write_bytes(b"abc")
    first = file_fingerprint(small)
    small.write_bytes(b"abd")  # Up to 1 MiB, every byte counts.
    assert file_fingerprint(small) != first and first.startswith("3 bytes, sha256 ")
    big = tmp_path / "big"
    data = np.random.default_rng(0).integers(0, 256, 5 << 20, np.uint8)
    big.write_bytes(data.tobytes())
    fingerprint = file_fingerprint(big)
    assert fingerprint.startswith(f"{5 << 20} bytes, sha256 ")
    data[-1] ^= 1  # A byte in the last sampled block.
    big.write_bytes(data.tobytes())
    assert file_fingerprint(big) != fingerprint
    big.write_bytes(data.tobytes() + b"x")  # Another size.
    assert not file_fingerprint(big).startswith(f"{5 << 20} bytes")


def test_resuming_with_other_data_is_refused_unless_allowed(tmp_path, capfd):
    a, b = _npz(tmp_path / "a.npz", 0), _npz(tmp_path / "b.npz", 1)
    run = tmp_path / "run"
    assert _run(f"--data_dir={a}", f"--output_dir={run}", "--train_steps=1") == 0
    stored = _config(run)["data"]
    assert stored["data_path"] == str(a)
    assert stored["data_fingerprint"] == file_fingerprint(a)
    before = _hashes(run)
    capfd.readouterr()

    # Another file of the same kind and shape: refused, naming both values and the flag.
    assert _run(f"--data_dir={b}", f"--output_dir={run}", "--train_steps=2") == 1
    err = capfd.readouterr().err
    assert "different data configuration" in err and str(a) in err and str(b) in err
    assert "--allow_other_data" in err and "Traceback" not in err
    assert _hashes(run) == before
    # The same path with other contents: refused on the fingerprint.
    original = a.read_bytes()
    _npz(a, 2)
    assert _run(f"--data_dir={a}", f"--output_dir={run}", "--train_steps=2") == 1
    err = capfd.readouterr().err
    assert "data_fingerprint" in err and "data_path" not in err
    assert _hashes(run) == before
    a.write_bytes(original)

    # On purpose (one step more: a run already at its --train_steps stops as complete):
    # config.json says so, and eval then reads b.
    assert _run(f"--data_dir={b}", f"--output_dir={run}", "--train_steps=2",
                "--allow_other_data") == 0
    config = _config(run)
    assert config["data"]["data_path"] == str(b)
    assert config["input"]["data_dir"] == str(b)
    (change,) = config[run_dir.DATA_CHANGES_KEY]
    assert change["from"] == {"data_path": str(a), "data_fingerprint": stored["data_fingerprint"]}
    assert change["to"] == {"data_path": str(b),
                            "data_fingerprint": file_fingerprint(b)}
    assert change["after_checkpoint"] == "ckpt-1"
    # b is the run's data now, a the other data.
    capfd.readouterr()
    assert _run(f"--data_dir={a}", f"--output_dir={run}", "--train_steps=3") == 1
    assert f"'data_path': ('{b}', '{a}')" in capfd.readouterr().err


def test_a_run_recorded_before_data_identity_is_not_checked_for_it(tmp_path):
    """config.json files written before the data's identity was recorded still resume."""
    legacy = {"model": {"num_scales": 1}, "data": {"dataset": "npz", "image_shape": [8, 8, 1]}}
    run_dir.write_json_atomic(str(tmp_path / "config.json"), legacy)
    requested = {"model": {"num_scales": 1},
                 "data": {**legacy["data"], "data_path": "/x.npz", "data_fingerprint": "1 bytes"}}
    assert run_dir.check_config(str(tmp_path), requested)
    with pytest.raises(run_dir.ConfigMismatchError, match="image_shape"):
        run_dir.check_config(str(tmp_path), {**requested, "data": {**requested["data"],
                                                                   "image_shape": [16, 16, 1]}})


@pytest.mark.parametrize("existing", [False, True])
def test_a_failed_start_leaves_nothing_of_its_own(existing, tmp_path, monkeypatch):
    """A failure after config.json was written but before the first checkpoint: the next
    start in that directory is a new run, not refused over flags that never trained."""
    a = _npz(tmp_path / "a.npz", 0)
    run = tmp_path / "run"
    if existing:
        run.mkdir()
        (run / "notes.txt").write_text("the user's")
        (run / "tensorboard").mkdir()  # Already there: not the failed run's to remove.
    before = _hashes(run) if existing else None

    def fail(*args, **kwargs):
        assert (run / "config.json").exists()  # The failure comes after config.json.
        raise ValueError("injected failure before the first checkpoint")

    monkeypatch.setattr(steps, "make_optimizer", fail)
    with pytest.raises(ValueError, match="injected failure"):  # Not the user's: a traceback.
        _run(f"--data_dir={a}", f"--output_dir={run}", "--train_steps=1")
    if existing:
        assert sorted(p.name for p in run.iterdir()) == ["notes.txt", "tensorboard"]
        assert _hashes(run) == before
    else:
        assert not run.exists()
    # Nothing pins the next start: it is a new run, with any flags.
    assert launch.describe(str(run), training=True) == f"Run directory: {run} (new run)"
    assert not run_dir.check_config(str(run), {"model": {"hidden_channels": 8}})


def test_the_optimizer_is_recorded_and_a_resume_with_another_is_refused(tmp_path, capfd):
    """--optimizer=adamax (Glow's release's Adamax) trains and is recorded; resuming with
    --optimizer=adam is one line naming the flag and the fix, and changes nothing."""
    a = _npz(tmp_path / "a.npz", 0)
    run = tmp_path / "run"
    assert _run(f"--data_dir={a}", f"--output_dir={run}", "--train_steps=1",
                "--optimizer=adamax", "--adamax_beta2=0.99") == 0
    training = _config(run)["training"]
    assert (training["optimizer"], training["adamax_beta2"]) == ("adamax", 0.99)
    before = _hashes(run)
    capfd.readouterr()
    assert _run(f"--data_dir={a}", f"--output_dir={run}", "--train_steps=2") == 1
    err = capfd.readouterr().err
    assert "--optimizer=adamax" in err and "--optimizer=adam " in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if "--optimizer" in line]) == 1
    assert _hashes(run) == before
    # With the run's optimizer it resumes (its checkpoint holds Adamax's slots).
    assert _run(f"--data_dir={a}", f"--output_dir={run}", "--train_steps=2",
                "--optimizer=adamax", "--adamax_beta2=0.99") == 0


def test_make_optimizer_builds_the_release_adamax():
    from tfnvp import FusedAdam, GlowAdamax

    adamax = steps.make_optimizer(1e-3, optimizer="adamax", adamax_beta2=0.99)
    assert isinstance(adamax, GlowAdamax) and adamax.beta_2 == 0.99 and adamax.epsilon == 1e-8
    assert isinstance(steps.make_optimizer(1e-3), FusedAdam)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        steps.make_optimizer(1e-3, optimizer="sgd")
