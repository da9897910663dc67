"""Tests for trainers/visualize.py against a tiny run directory made here.

The run (config.json + one checkpoint of a tiny Real NVP with perturbed
weights) uses the offline ``digits`` dataset, so the held-out images come
from trainers.data exactly as for a real run.  One test restores the model
from the run directory; the others reuse the fixture's model (same weights)
to stay within the time budget.
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from PIL import Image
from sklearn.datasets import load_digits

import tfnvp
from tfnvp.experiments import grid as grid_lib
from trainers import run_dir, visualize

SHAPE = (8, 8, 1)
SCALE = 8  # default enlargement of 8x8 images: 64 pixels


def _digits(count: int) -> np.ndarray:
    images = load_digits().images[:count]
    return (np.round(images * 255.0 / 16.0) + 0.5).astype(np.float32)[..., None]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(run directory, model) of a tiny digits run with one checkpoint."""
    output_dir = str(tmp_path_factory.mktemp("run"))
    keras.utils.set_random_seed(0)
    model = tfnvp.RealNVP(SHAPE, num_scales=2, num_res_blocks=1, hidden_channels=8,
                          validate_args=False)
    rng = np.random.default_rng(0)
    for variable in model.trainable_variables:
        variable.assign_add(0.1 * rng.standard_normal(variable.shape).astype(np.float32))
    model.log_prob(_digits(64), training=True)
    run_dir.write_or_check_config(output_dir, {
        "model": model.get_config(),
        # As trainers/train.py writes it: DataConfig fields under "input".
        "data": {"dataset": "digits", "image_shape": list(SHAPE)},
        "input": {"dataset": "digits", "data_dir": None, "eval_batch_size": 256, "seed": 0},
    })
    checkpoint = tf.train.Checkpoint(model=run_dir.model_checkpoint_object(model))
    manager = tf.train.CheckpointManager(checkpoint, run_dir.checkpoint_dir(output_dir),
                                         max_to_keep=1)
    manager.save()
    return output_dir, model


@pytest.fixture
def cached_model(run, monkeypatch):
    """Makes ``restore_model`` return the fixture's model (the checkpoint's weights)."""
    output_dir, model = run
    monkeypatch.setattr(visualize.run_dir, "restore_model",
                        lambda directory, checkpoint_path=None, **overrides: model)
    return model


def _png(path: str) -> Image.Image:
    with Image.open(path) as picture:
        picture.load()
        assert picture.format == "PNG"
        return picture.copy()


def _grid_size(rows: int, cols: int, h: int = 8, w: int = 8, padding: int = 1) -> tuple[int, int]:
    """(width, height) of an image_grid, enlarged by SCALE."""
    return (SCALE * (cols * (w + padding) + padding), SCALE * (rows * (h + padding) + padding))


def _eval_images(count: int) -> np.ndarray:
    from trainers import data

    config = data.DataConfig(dataset="digits")
    full = np.concatenate([b["x"].numpy() for b in data.make_eval_dataset(config)])
    # The command shows an evenly spread subset of the held-out split (every k-th image).
    return full[:: len(full) // count][:count]


def test_restores_run_and_reconstructs_eval_images(run, tmp_path, monkeypatch):
    output_dir, model = run
    restored = []
    restore = run_dir.restore_model
    monkeypatch.setattr(visualize.run_dir, "restore_model",
                        lambda *args, **kwargs: restored.append(restore(*args, **kwargs))
                        or restored[-1])
    out = visualize.run("reconstruct", str(tmp_path / "rec.png"), output_dir=output_dir, num=3)
    # The checkpoint's weights, not a fresh initialization.
    assert len(restored) == 1 and len(restored[0].weights) == len(model.weights)
    for mine, theirs in zip(restored[0].weights, model.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    picture = _png(out)
    assert picture.size == _grid_size(2, 3) and picture.mode == "L"
    pixels = np.asarray(picture)[::SCALE, ::SCALE]  # undo the enlargement
    expected = grid_lib.to_uint8(_eval_images(3))[..., 0]
    for k in range(3):
        cell = (slice(1, 9), slice(1 + 9 * k, 9 + 9 * k))
        np.testing.assert_array_equal(pixels[cell], expected[k])  # originals on top
        np.testing.assert_allclose(pixels[9:][cell], expected[k], atol=1)  # reconstructions


@pytest.mark.parametrize("what, num, size, mode", [
    ("samples", 4, (SCALE * (4 * 19 + 3 * 4), SCALE * 19), "L"),
    ("manifold", 3, (SCALE * (3 * 10 + 2),) * 2, "RGB"),
    ("compression", 2, _grid_size(2, 6), "L"),
    ("extrapolate", 2, _grid_size(1, 2, 16, 16), "L"),
    ("interpolate", 5, _grid_size(1, 5), "L"),
])
def test_every_picture_is_a_png_of_the_expected_size(cached_model, run, tmp_path, what, num,
                                                     size, mode):
    out = visualize.run(what, str(tmp_path / f"{what}.png"), output_dir=run[0], num=num)
    picture = _png(out)
    assert picture.size == size and picture.mode == mode
    assert len(np.unique(np.asarray(picture))) > 2  # not blank


def _write(path, array: np.ndarray) -> str:
    Image.fromarray(array).save(path)
    return str(path)


def test_image_files_are_converted_and_resized(cached_model, run, tmp_path):
    digits = _digits(2)[..., 0].astype(np.uint8)  # pixel values 0..255
    gray = _write(tmp_path / "a.png", digits[0])
    rgb_big = np.repeat(np.kron(digits[1], np.ones((2, 2), np.uint8))[..., None], 3, axis=-1)
    big = _write(tmp_path / "b.png", rgb_big)  # 16x16 RGB: same aspect ratio
    loaded = visualize.load_image_files([gray, big], SHAPE)
    assert loaded.shape == (2,) + SHAPE and loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded[0, ..., 0], digits[0] + 0.5)
    assert np.abs(loaded[1, ..., 0] - (digits[1] + 0.5)).mean() < 10
    out = visualize.run("interpolate", str(tmp_path / "i.png"), output_dir=run[0],
                        images=[gray, big], num=4)
    assert _png(out).size == _grid_size(1, 4)


def test_bad_image_files_name_the_file(run, tmp_path, monkeypatch):
    def no_restore(*args, **kwargs):
        raise AssertionError("the images are checked before the model is restored")

    monkeypatch.setattr(visualize.run_dir, "restore_model", no_restore)
    good = _write(tmp_path / "good.png", np.zeros((8, 8), np.uint8))
    wide = _write(tmp_path / "wide.png", np.zeros((8, 10), np.uint8))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG")
    out = str(tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"wide\.png.*10x8"):
        visualize.run("interpolate", out, output_dir=run[0], images=[good, wide])
    with pytest.raises(ValueError, match=r"corrupt\.png"):
        visualize.run("interpolate", out, output_dir=run[0], images=[str(corrupt), good])
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        visualize.run("reconstruct", out, output_dir=run[0],
                      images=[str(tmp_path / "missing.png")])
    with pytest.raises(ValueError, match="exactly 4"):
        visualize.run("manifold", out, output_dir=run[0], images=[good, good])
    assert not os.path.exists(out)


def test_main_parses_flags_and_exits_with_a_clear_error(cached_model, run, tmp_path):
    def main(*args: str) -> None:
        flag_values = flags.FlagValues()
        visualize.define_flags(flag_values)
        argv = flag_values(["visualize.py", *args])
        visualize.main(argv, flag_values=flag_values)

    out = tmp_path / "s.png"
    main("--what=samples", f"--output_dir={run[0]}", f"--out={out}", "--num=1",
         "--temperatures=0.5,1", "--scale=2")
    assert _png(str(out)).size == (2 * (2 * 10 + 4), 2 * 10)
    main("--what=samples", f"--output_dir={run[0]}", f"--out={out}", "--num=4",
         "--temperature=0.7")  # one block of 2x2 samples
    assert _png(str(out)).size == (SCALE * 19, SCALE * 19)
    corrupt = tmp_path / "bad.png"
    corrupt.write_bytes(b"garbage")
    with pytest.raises(SystemExit, match=r"bad\.png"):
        main("--what=reconstruct", f"--output_dir={run[0]}", f"--out={tmp_path / 'r.png'}",
             f"--images={corrupt}")


class _AffineExport(tf.Module):
    """A stand-in for a trainers/export.py SavedModel: z = x / 64 - 2, fixed 8x8x1."""

    def __init__(self, metadata_path: str):
        super().__init__()
        self.metadata = tf.saved_model.Asset(metadata_path)
        spec = tf.TensorSpec([None, 8, 8, 1], tf.float32)
        self.encode = tf.function(lambda x: x / 64.0 - 2.0, input_signature=[spec])
        self.decode = tf.function(lambda z: (z + 2.0) * 64.0, input_signature=[spec])


def test_saved_model_adapter(run, tmp_path):
    metadata = tmp_path / "tfnvp_export.json"
    metadata.write_text(json.dumps({"image_shape": list(SHAPE),
                                    "model_config": {"num_scales": 2,
                                                     "factor_out": "checkerboard"}}))
    export_dir = str(tmp_path / "saved_model")
    tf.saved_model.save(_AffineExport(str(metadata)), export_dir)
    adapter = visualize.SavedModelAdapter(export_dir)
    assert adapter.image_shape == SHAPE
    reference = run[1].latent_scale_index()  # a real two-scale model of this shape
    np.testing.assert_array_equal(adapter.latent_scale_index(), reference)
    assert set(np.unique(reference)) == {0, 1}

    images = _write(tmp_path / "d.png", _digits(1)[0, ..., 0].astype(np.uint8))
    out = visualize.run("compression", str(tmp_path / "c.png"), saved_model=export_dir,
                        images=[images])
    assert _png(out).size == _grid_size(1, 6)
    with pytest.raises(ValueError, match="--output_dir"):
        visualize.run("extrapolate", str(tmp_path / "e.png"), saved_model=export_dir)
    with pytest.raises(ValueError, match="fix the image size"):
        adapter.decode(np.zeros((1, 16, 16, 1), np.float32))
    with pytest.raises(ValueError, match="needs images"):  # no run config.json next to it
        visualize.run("manifold", str(tmp_path / "m.png"), saved_model=export_dir)


def test_runs_and_exports_older_than_the_architecture_options(tmp_path):
    """Configs without skip_connections / logit_map / factor_out describe the old model."""
    config = {"model": dict(image_shape=list(SHAPE), num_scales=2, num_res_blocks=1,
                            hidden_channels=4)}
    model = run_dir.build_model(config)
    legacy = tfnvp.RealNVPSpec.legacy_defaults()
    assert legacy == dict(skip_connections=False, logit_map="asymmetric", factor_out="channel",
                          conditioner_form="direct", channel_squeeze="space_to_depth",
                          conditioner_batch_norm_momentum=None,
                          conditioner_batch_norm_epsilon=1e-3)
    assert {k: model.get_config()[k] for k in legacy} == legacy
    assert not model.conditioners[0].body.skips
    metadata = tmp_path / "tfnvp_export.json"
    metadata.write_text(json.dumps({"image_shape": list(SHAPE),
                                    "model_config": {"num_scales": 2}}))
    export_dir = str(tmp_path / "saved_model")
    tf.saved_model.save(_AffineExport(str(metadata)), export_dir)
    adapter = visualize.SavedModelAdapter(export_dir)
    np.testing.assert_array_equal(adapter.latent_scale_index(), model.latent_scale_index())
    np.testing.assert_array_equal(adapter.latent_scale_index()[..., 0],
                                  np.indices(SHAPE[:2])[0] % 2)  # alternate rows
