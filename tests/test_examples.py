"""Every script in examples/ runs, in-process with small settings, and says what it computed."""

from __future__ import annotations

import importlib.util
import math
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import tfnvp
from trainers import export, run_dir

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}",
                                                  os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_tested():
    tested = {"digits_log_prob", "sample_grid", "serve_export"}
    assert {f[:-3] for f in os.listdir(EXAMPLES) if f.endswith(".py")} == tested


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run directory as the trainer leaves it: config.json, a checkpoint, an export (v3)."""
    path = tmp_path_factory.mktemp("run")
    model = tfnvp.RealNVP(image_shape=(8, 8, 1), num_scales=1, num_res_blocks=1, hidden_channels=4)
    rng = np.random.default_rng(0)
    for v in model.trainable_variables:  # not the initial weights
        v.assign_add(rng.normal(scale=0.02, size=v.shape).astype(v.dtype))
    run_dir.write_or_check_config(str(path), {
        "model": model.get_config(), "data": {"dataset": "digits", "image_shape": [8, 8, 1]}})
    checkpoint = tf.train.Checkpoint(model=run_dir.model_checkpoint_object(model))
    tf.train.CheckpointManager(checkpoint, run_dir.checkpoint_dir(str(path)), 1).save(3)
    export.export_version(model, str(path / "saved_model"), 3)
    return path, model


@pytest.fixture
def functions_run_eagerly():
    """Two steps do not pay back tracing the flow's gradient (~4x the CPU time): run eagerly."""
    tf.config.run_functions_eagerly(True)
    yield
    tf.config.run_functions_eagerly(False)


def test_digits_log_prob(functions_run_eagerly, capsys):
    bits = _example("digits_log_prob").main(["--steps=2", "--batch_size=16"])
    out = capsys.readouterr().out
    assert re.search(r"^step 2: training loss [\d.]+ nats", out, re.M)
    printed = float(re.search(r"held-out bits/dim: ([\d.]+) over 297 digits", out).group(1))
    assert printed == pytest.approx(bits, abs=1e-4)
    assert 0.0 < bits < 12.0 and math.isfinite(bits)  # near 8 bits/dim after 2 steps


def test_sample_grid(run, tmp_path, capsys):
    path, model = run
    out = _example("sample_grid").main([f"--run={path}", f"--out={tmp_path / 'g.png'}",
                                        "--per_row=3", "--temperatures=0.5,1.0"])
    assert "2 rows of 3 samples" in capsys.readouterr().out
    picture = np.asarray(Image.open(out))
    scale = 64 // 8
    assert picture.shape == ((2 * 9 + 1) * scale, (3 * 9 + 1) * scale)
    # The restored model's samples: the grid's first cell is the first T=0.5 sample.
    first = tfnvp.grid.to_uint8(model.sample(3, temperature=0.5, seed=(0, 1)).numpy())[0, ..., 0]
    np.testing.assert_array_equal(picture[scale:9 * scale:scale, scale:9 * scale:scale], first)


def test_serve_export(run, capsys):
    path, model = run
    result = _example("serve_export").main([f"--export={path / 'saved_model'}", "--num=3"])
    out = capsys.readouterr().out
    assert result["path"] == str(path / "saved_model" / "3")
    assert "serving_default inputs" in out and "'x'" in out and "'log_prob'" in out
    samples = model.sample(3, temperature=0.7, seed=(0, 1))
    np.testing.assert_allclose(result["log_prob"], model.log_prob(samples), rtol=1e-4)
    assert result["bits_per_dim"].shape == (3,) and np.all(np.isfinite(result["bits_per_dim"]))
