"""Writes ``tests/data/legacy_307fba3/``: artifacts of tfnvp as of commit 307fba3 (issue 28).

Issue 28 moves tfnvp's and the trainers' modules to a layout by role; item 5 asks that run
directories, checkpoints and ``.keras`` files written by the code before the move still load.
This script was run at commit 307fba3 (the commit before the move) and its output committed
with it, so the data is the old code's.  ``tests/test_legacy_artifacts.py`` loads it with the
current code and compares the outputs recorded here.

Written (a few hundred KB in all):

- ``runs/realnvp/``, ``runs/glow/``: trainer run directories (``trainers/train.py`` on
  scikit-learn's digits, 2 steps of a 1-scale model with 4 hidden channels), keeping only
  ``config.json`` and the last checkpoint (``checkpoints/checkpoint``, ``ckpt-2.*``);
- ``realnvp.keras``, ``glow.keras``: tiny float32 models saved with ``model.save``;
- ``expected.npz``: for each artifact, ``<name>_log_prob`` (``log_prob`` of ``float_inputs()``)
  and ``<name>_bits_per_dim`` (``bits_per_dim`` of ``uint8_inputs()`` with ``SEED``'s
  dequantization noise), from ``tfnvp.load_run`` (runs) and ``keras.saving.load_model``
  (``.keras`` files).

Regenerate (only from a checkout of 307fba3, e.g. ``git worktree add /tmp/old 307fba3``;
regenerating from later code would no longer test old artifacts)::

    cd /tmp/old && PYTHONPATH=$PWD python tests/legacy_artifacts.py
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf

import tfnvp

DATA = pathlib.Path(__file__).parent / "data" / "legacy_307fba3"
SEED = (3, 5)
SHAPE = (8, 8, 1)
RUN_FLAGS = ["--dataset=digits", "--num_scales=1", "--hidden_channels=4", "--batch_size=16",
             "--eval_batch_size=300", "--num_sample_images=0", "--log_every=1",
             "--summary_every=100", "--eval_every=1000", "--checkpoint_every=2",
             "--recalibration_batches=1", "--train_steps=2"]
RUNS = {"realnvp": ["--num_res_blocks=1"], "glow": ["--model=glow", "--steps_per_scale=1"]}
KERAS_FILES = {
    "realnvp": lambda: tfnvp.RealNVP(SHAPE, num_scales=1, num_res_blocks=1, hidden_channels=4),
    "glow": lambda: tfnvp.Glow(SHAPE, num_scales=1, steps_per_scale=2, hidden_channels=4),
}


def uint8_inputs() -> np.ndarray:
    """Four fixed 8x8 uint8 images."""
    return np.random.default_rng(0).integers(0, 256, (4, *SHAPE), dtype=np.uint8)


def float_inputs() -> np.ndarray:
    """Four fixed float32 8x8 images in [0, 256)."""
    return np.random.default_rng(1).uniform(0, 256, (4, *SHAPE)).astype(np.float32)


def outputs(model) -> dict[str, np.ndarray]:
    """What ``expected.npz`` records for one loaded model."""
    return {"log_prob": model.log_prob(tf.constant(float_inputs())).numpy(),
            "bits_per_dim": model.bits_per_dim(tf.constant(uint8_inputs()), seed=SEED).numpy()}


def _write_run(name: str, flags: list[str]) -> pathlib.Path:
    target = DATA / "runs" / name
    with tempfile.TemporaryDirectory() as scratch:
        run = pathlib.Path(scratch) / "run"
        subprocess.run([sys.executable, "trainers/train.py", *RUN_FLAGS, *flags,
                        f"--output_dir={run}"], check=True)
        (target / "checkpoints").mkdir(parents=True)
        shutil.copy(run / "config.json", target / "config.json")
        state = run / "checkpoints" / "checkpoint"
        shutil.copy(state, target / "checkpoints" / "checkpoint")
        for path in (run / "checkpoints").glob("ckpt-2.*"):
            shutil.copy(path, target / "checkpoints" / path.name)
    # The state file names only the kept checkpoint.
    (target / "checkpoints" / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-2"\nall_model_checkpoint_paths: "ckpt-2"\n')
    return target


def main() -> None:
    if DATA.exists():
        shutil.rmtree(DATA)
    DATA.mkdir(parents=True)
    expected = {}
    for name, flags in RUNS.items():
        run = _write_run(name, flags)
        for key, value in outputs(tfnvp.load_run(run)).items():
            expected[f"run_{name}_{key}"] = value
    for name, build in KERAS_FILES.items():
        keras.utils.set_random_seed(0)
        model = build()
        # Non-trivial weights: a few Adam steps by maximum likelihood on the uint8 inputs.
        model.compile(keras.optimizers.Adam(1e-2))
        model.fit(uint8_inputs(), epochs=3, batch_size=4, verbose=0)
        path = DATA / f"{name}.keras"
        model.save(path)
        for key, value in outputs(keras.saving.load_model(path)).items():
            expected[f"keras_{name}_{key}"] = value
    np.savez(DATA / "expected.npz", **expected)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=DATA).stdout.strip()
    (DATA / "SOURCE.json").write_text(json.dumps({"commit": commit}, indent=1) + "\n")


if __name__ == "__main__":
    main()
