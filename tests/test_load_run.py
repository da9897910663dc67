"""tfnvp.load_run: a trainer's run directory back to the trained model, without trainers/."""

from __future__ import annotations

import gc
import io
import logging
import shutil

import numpy as np
import pytest
import tensorflow as tf

import tfnvp
from trainers import run_dir, train

TINY = ["--dataset=digits", "--num_scales=1", "--hidden_channels=4", "--batch_size=16",
        "--eval_batch_size=300", "--num_sample_images=0", "--log_every=1", "--summary_every=100",
        "--eval_every=1000", "--checkpoint_every=2", "--recalibration_batches=1",
        # One replica (tests/conftest.py's two logical CPUs would make it two, at about 1.7
        # times the CPU time): what a run directory holds does not depend on the replica count.
        "--strategy=one_device"]
MODELS = {"realnvp": ["--num_res_blocks=1"], "glow": ["--model=glow", "--steps_per_scale=1"]}


@pytest.fixture(scope="module", params=sorted(MODELS))
def run(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param) / "run"
    assert train.run(["train.py", *TINY, *MODELS[request.param], f"--output_dir={path}",
                      "--train_steps=3"]) == 0
    return request.param, path


def _x():
    return tf.random.stateless_uniform((3, 8, 8, 1), seed=[4, 2], minval=0.0, maxval=256.0)


def test_load_run_is_the_trainers_model(run):
    name, path = run
    model = tfnvp.load_run(path)
    assert type(model) is run_dir.ARCHITECTURES[name]
    expected = run_dir.restore_model(str(path))
    np.testing.assert_array_equal(model.log_prob(_x()).numpy(), expected.log_prob(_x()).numpy())
    # Trained weights and statistics, not a fresh model's.
    fresh = run_dir.build_model(run_dir.read_config(str(path)))
    assert np.abs(fresh.log_prob(_x()).numpy() - model.log_prob(_x()).numpy()).max() > 1e-3

    # A named checkpoint: step, name or path.
    older, _ = run_dir.restore_run(str(path), str(path / "checkpoints" / "ckpt-2"))
    for checkpoint in (2, "ckpt-2", str(path / "checkpoints" / "ckpt-2")):
        np.testing.assert_array_equal(tfnvp.load_run(path, checkpoint).log_prob(_x()).numpy(),
                                      older.log_prob(_x()).numpy())
    assert np.abs(older.log_prob(_x()).numpy() - model.log_prob(_x()).numpy()).max() > 0
    with pytest.raises(FileNotFoundError, match=r"No checkpoint 'ckpt-7'.*ckpt-3"):
        tfnvp.load_run(path, "ckpt-7")


def test_load_run_errors(run, tmp_path):
    _, path = run
    with pytest.raises(FileNotFoundError, match="not a tfnvp run directory"):
        tfnvp.load_run(tmp_path / "nothing")
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    older = tfnvp.load_run(copy, 2).log_prob(_x()).numpy()
    # A damaged newest checkpoint is skipped (with a warning); the older one is used.
    (copy / "checkpoints" / "ckpt-3.index").write_bytes(b"garbage")
    np.testing.assert_array_equal(tfnvp.load_run(copy).log_prob(_x()).numpy(), older)
    with pytest.raises(tfnvp.io.runs.CheckpointError, match="ckpt-3"):
        tfnvp.load_run(copy, "ckpt-3")
    for data in (copy / "checkpoints").glob("ckpt-2.data-*"):
        data.write_bytes(b"")
    with pytest.raises(tfnvp.io.runs.CheckpointError, match="No checkpoint .* restores completely"):
        tfnvp.load_run(copy)
    shutil.rmtree(copy / "checkpoints")
    with pytest.raises(FileNotFoundError, match="No checkpoint in"):
        tfnvp.load_run(copy)
    (copy / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is damaged"):
        tfnvp.load_run(copy)


def test_another_architectures_checkpoint_is_one_clear_error(tmp_path):
    """Issue 30: after the CheckpointError, TensorFlow logged ~200 lines of "Value in
    checkpoint could not be found" when the discarded model was collected."""
    glow = tfnvp.Glow((8, 8, 1), num_scales=1, steps_per_scale=1, hidden_channels=4)
    tf.train.Checkpoint(model=glow).save(str(tmp_path / "checkpoints" / "ckpt"))
    real_nvp = tfnvp.RealNVP((8, 8, 1), num_scales=1, num_res_blocks=1, hidden_channels=4)
    run_dir.write_json_atomic(str(tmp_path / "config.json"), dict(
        model=run_dir.model_config(real_nvp), data=dict(dataset="digits", image_shape=[8, 8, 1])))
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    tf.get_logger().addHandler(handler)
    try:
        for load in (lambda: tfnvp.load_run(tmp_path), lambda: tfnvp.load_run(tmp_path, 1),
                     lambda: run_dir.restore_run(str(tmp_path))):
            with pytest.raises(tfnvp.io.runs.CheckpointError, match="ckpt-1"):
                load()
            gc.collect()
    finally:
        tf.get_logger().removeHandler(handler)
    assert "could not be found" not in stream.getvalue()
    assert "unrestored values" not in stream.getvalue()
