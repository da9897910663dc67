"""Class-conditional training (``--conditional``): labels from every kind of dataset, the
training/eval/export/visualize path of a conditional run, and the clear errors.

One tiny conditional run on the bundled digits (20 steps, two replicas: tests/conftest.py
configures 2 logical CPUs) is shared by the trainer tests.
"""

from __future__ import annotations

import gzip
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from trainers import data, run_dir, train, visualize

CONDITIONAL = ["--flagfile=digits.flags", "--conditional", "--num_scales=1",
               "--num_res_blocks=1", "--hidden_channels=8", "--batch_size=32",
               "--eval_batch_size=300", "--train_steps=20", "--eval_every=20",
               "--checkpoint_every=20", "--log_every=10", "--summary_every=20",
               "--num_sample_images=20", "--recalibration_batches=1",
               # q(u | x, y): the labels reach the learned dequantizer too.
               "--dequantization=variational", "--dequantizer_channels=6"]
DIGIT_GRID = 8 + 1  # One 8x8 digit plus the grid's 1-pixel padding.


def _run(*args: str) -> int:
    return train.run(["train.py", *args])


def _png(path) -> np.ndarray:
    with Image.open(path) as picture:
        return np.asarray(picture)


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("conditional")
    assert _run(*CONDITIONAL, f"--output_dir={run}") == 0
    return run


@pytest.fixture(scope="module")
def conditional_model(conditional_run):
    """The run's model, restored from its final checkpoint."""
    model = run_dir.restore_model(str(conditional_run), conditioner_dtype=None)
    assert model.num_classes == 10
    return model


def _eval_batch(count: int = 16) -> dict[str, np.ndarray]:
    """The first ``count`` held-out images ("x", uint8), their noise seeds and labels."""
    config = data.DataConfig("digits", eval_batch_size=count, max_eval_examples=count,
                             labels=True)
    return {key: value.numpy() for key, value in next(iter(data.make_eval_dataset(config))).items()}


# ------------------------------------------------------------ the trainer's path
def test_conditional_run_records_classes_and_draws_one_row_per_class(conditional_run):
    config = run_dir.read_config(conditional_run)
    assert config["model"]["num_classes"] == 10
    assert config["input"]["labels"] is True  # --conditional: the model has num_classes.
    # The trainer's grid at step 20: 10 rows (classes) of ceil(20 / 10) = 2 samples,
    # enlarged 16x (128 // 8).
    grid = _png(conditional_run / "samples" / "step_00000020.png")
    assert grid.shape[:2] == ((10 * DIGIT_GRID + 1) * 16, (2 * DIGIT_GRID + 1) * 16)


def test_conditional_eval_and_export_agree_with_the_model(conditional_run, conditional_model,
                                                          tmp_path):
    assert _run(f"--output_dir={conditional_run}", "--mode=eval") == 0
    report = json.loads((conditional_run / "eval.json").read_text())
    assert report["num_examples"] == 297 and math.isfinite(report["bits_per_dim"])

    model = conditional_model
    assert model.dequantizer.num_classes == 10
    # --mode=eval is the bound on -log P(x | y) over the held-out split with its labels:
    # model.bits_per_dim of the uint8 images, each dequantized from its own seed.
    batch = _eval_batch(297)
    images, labels = batch["x"], batch["labels"]
    bits = model.bits_per_dim(images, seed=batch["seed"], labels=labels).numpy()
    assert report["bits_per_dim"] == pytest.approx(bits.mean(), rel=1e-5)
    x = model.dequantize(images, seed=batch["seed"], labels=labels)[0].numpy()

    assert _run(f"--output_dir={conditional_run}", "--mode=export", "--export_version=1") == 0
    loaded = tf.saved_model.load(str(conditional_run / "saved_model" / "1"))
    x, labels = x[:16], labels[:16]
    expected = model.log_prob(x, training=False, labels=labels).numpy()
    np.testing.assert_allclose(loaded.log_prob(x, labels).numpy(), expected, rtol=1e-5,
                               atol=1e-3)
    served = loaded.signatures["log_prob"](x=tf.constant(x), labels=tf.constant(labels))
    np.testing.assert_allclose(served["log_prob"].numpy(), expected, rtol=1e-5, atol=1e-3)
    other = (labels + 1) % 10  # The labels matter.
    assert np.abs(loaded.log_prob(x, other).numpy() - expected).max() > 1e-3
    # The export's bits_per_dim dequantizes with q(u | x, y), as the model does.
    seed = tf.constant([1, 2])
    served_bits = loaded.bits_per_dim(images[:16], seed, labels).numpy()
    np.testing.assert_allclose(
        served_bits, model.bits_per_dim(images[:16], seed=seed, labels=labels).numpy(), rtol=1e-5)
    _, log_q = model.dequantize(images[:16], seed=seed, labels=labels)
    _, log_q_other = model.dequantize(images[:16], seed=seed, labels=other)
    assert np.abs(log_q.numpy() - log_q_other.numpy()).max() > 1e-4
    samples = loaded.signatures["sample"](num_samples=tf.constant(3), temperature=tf.constant(0.7),
                                          seed=tf.constant([1, 2]),
                                          labels=tf.constant([0, 5, 9]))["samples"]
    np.testing.assert_allclose(
        samples.numpy(), model.sample(3, 0.7, seed=tf.constant([1, 2]),
                                      labels=tf.constant([0, 5, 9])).numpy(), atol=1e-3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="one label per sample"):
        loaded.sample(tf.constant(2), tf.constant(1.0), tf.constant([0, 0]), tf.constant([1]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes=10"):
        loaded.log_prob(x[:1], tf.constant([10]))
    metadata = json.loads((conditional_run / "saved_model" / "1" / "assets" /
                           "tfnvp_export.json").read_text())
    assert metadata["num_classes"] == 10

    # visualize: one row per class, from the run and from its export (same samples).
    pictures = {}
    for source in ("output_dir", "saved_model"):
        where = conditional_run if source == "output_dir" else conditional_run / "saved_model"
        out = visualize.run("samples", str(tmp_path / f"{source}.png"), **{source: str(where)},
                            temperatures=(0.5, 1.0), num=3, scale=1)
        pictures[source] = _png(out).astype(int)
        # 10 classes x (2 temperatures x 3 samples).
        assert pictures[source].shape[:2] == (10 * DIGIT_GRID + 1, 6 * DIGIT_GRID + 1)
    assert np.abs(pictures["output_dir"] - pictures["saved_model"]).max() <= 1
    with pytest.raises(ValueError, match="class-conditional .*only --what=samples"):
        visualize.run("manifold", str(tmp_path / "m.png"), output_dir=str(conditional_run))


def test_visualized_rows_are_the_classes(conditional_model):
    model = conditional_model
    figure = visualize.class_samples(model, 10, (0.0,), n=2, seed=0)
    assert figure.images.shape == (10, 1, 2, 8, 8, 1)
    # Temperature 0 decodes each class's prior mean mu_y: row k is decode(mu_k; k).
    for k in (0, 7):
        mean = tf.gather(tf.convert_to_tensor(model.prior.loc), [k])
        expected = model.decode(mean, labels=[k]).numpy()[0]
        np.testing.assert_allclose(figure.images[k, 0, 1], expected, atol=1e-3)


def test_unconditional_pipeline_is_unchanged_by_labels():
    """labels=True adds labels to the same images in the same order."""
    for make, size in ((data.make_train_dataset, "batch_size"),
                       (data.make_eval_dataset, "eval_batch_size")):
        plain = next(iter(make(data.DataConfig("digits", seed=3, **{size: 40}))))
        labelled = next(iter(make(data.DataConfig("digits", seed=3, labels=True,
                                                  **{size: 40}))))
        assert sorted(labelled) == ["labels", "seed", "x"]
        for key in ("x", "seed"):
            np.testing.assert_array_equal(plain[key].numpy(), labelled[key].numpy())
        labels = labelled["labels"]
        assert labels.dtype == tf.int32 and labels.shape == (40,)


def test_digits_labels_are_sklearns_targets():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    batch = _eval_batch(297)
    for image, label in zip(batch["x"][..., 0], batch["labels"]):
        matches = np.flatnonzero((images == image).all(axis=(1, 2)))
        assert len(matches) and label in digits.target[matches]
    assert data.num_classes(data.DataConfig("digits")) == 10


# ---------------------------------------------------------------- label sources
def _labelled(config: data.DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """Every held-out (pixel value, label) pair: the test images encode their class."""
    pixels, labels = [], []
    for batch in data.make_eval_dataset(config):
        pixels.append(batch["x"].numpy().reshape(len(batch["labels"]), -1)[:, 0])
        labels.append(batch["labels"].numpy())
    return np.concatenate(pixels).astype(int), np.concatenate(labels)


def _save_png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4), value, np.uint8)).save(path)


def test_image_folder_labels_are_sorted_class_folders(tmp_path):
    classes = {"bird": 10, "ant": 20, "cat": 30}  # Sorted: ant 0, bird 1, cat 2.
    for name, value in classes.items():
        for i in range(3):
            _save_png(tmp_path / "train" / name / f"{i}.png", value)
    for name in ("cat", "ant"):  # The test split may lack a class.
        _save_png(tmp_path / "test" / name / "x.png", classes[name])
    config = data.DataConfig("image_folder", str(tmp_path), eval_batch_size=3, labels=True)
    assert data.num_classes(config) == 3
    pixels, labels = _labelled(config)
    np.testing.assert_array_equal(labels, [{20: 0, 10: 1, 30: 2}[p] for p in pixels])
    assert sorted(pixels) == [20, 30]
    batch = next(iter(data.make_train_dataset(
        data.DataConfig("image_folder", str(tmp_path), batch_size=9, labels=True))))
    np.testing.assert_array_equal(batch["labels"].numpy(), [
        {20: 0, 10: 1, 30: 2}[int(p)] for p in batch["x"].numpy()[:, 0, 0, 0]])

    _save_png(tmp_path / "test" / "dog" / "y.png", 40)
    with pytest.raises(ValueError, match=r"class folder\(s\) \['dog'\] that .*train lacks"):
        data.num_classes(config)


def test_image_folder_without_class_folders_is_refused(tmp_path):
    for i in range(12):
        _save_png(tmp_path / "train" / f"{i}.png", i)
    config = data.DataConfig("image_folder", str(tmp_path), labels=True)
    with pytest.raises(ValueError, match=r"train/\d+\.png is not in a class sub-folder"):
        data.num_classes(config)
    assert data.image_shape(config) == (4, 4, 1)  # Unconditional use still works.


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        payload = gzip.compress(payload)
    path.write_bytes(payload)


def test_mnist_idx_labels_come_from_the_label_files(tmp_path):
    train_labels, test_labels = np.array([3, 0, 1, 3]), np.array([1, 3])
    for stem, labels in (("train", train_labels), ("t10k", test_labels)):
        _write_idx(tmp_path / f"{stem}-images-idx3-ubyte",
                   np.repeat(labels * 50, 16).reshape(-1, 4, 4))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", train_labels)  # gzipped or not
    config = data.DataConfig("mnist_idx", str(tmp_path), eval_batch_size=2, labels=True)
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.* is missing"):
        data.num_classes(config)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", test_labels)
    assert data.num_classes(config) == 4
    pixels, labels = _labelled(config)
    np.testing.assert_array_equal(labels, test_labels)
    np.testing.assert_array_equal(pixels, test_labels * 50)


def test_npz_labels_and_their_errors(tmp_path):
    x_train = np.repeat(np.arange(5) * 40, 16).reshape(5, 4, 4).astype(np.uint8)
    y_train = np.arange(5)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x_train, x_test=x_train[:3], train_labels=y_train,
             test_labels=y_train[:3])
    config = data.DataConfig("npz", str(path), eval_batch_size=3, labels=True)
    assert data.num_classes(config) == 5
    pixels, labels = _labelled(config)
    np.testing.assert_array_equal(labels, [0, 1, 2])
    np.testing.assert_array_equal(pixels, [0, 40, 80])

    for arrays, message in (
            ({}, "no class labels; a class-conditional model needs arrays y_train/y_test"),
            ({"y_train": y_train, "y_test": [0, 1, 7]}, "label 7 is not a class of the training"),
            ({"y_train": y_train[:4], "y_test": [0, 1, 2]}, "4 labels for 5 images"),
            ({"y_train": y_train * 0.5, "y_test": [0, 1, 2]}, "1-D array of integers"),
            ({"y_train": y_train - 1, "y_test": [0, 1, 2]}, "non-negative class indices"),
            # Checked as given (issue 30): 2**32 + 1 is no class, not class 1 after a cast.
            ({"y_train": np.array([0, 1, 2, 3, 2**32 + 1], np.int64), "y_test": [0, 1, 2]},
             "label 4294967297 is not a class index"),
            ({"y_train": y_train, "y_test": np.array([0, 1, 2**32 + 2], np.int64)},
             "label 4294967298 is not a class index")):
        np.savez(path, x_train=x_train, x_test=x_train[:3], **arrays)
        with pytest.raises(ValueError, match=message):
            data.num_classes(config)


def test_tfds_labels_under_mock_data():
    with tfds.testing.mock_data(num_examples=6):
        config = data.DataConfig("mnist", batch_size=4, eval_batch_size=6, labels=True)
        assert data.num_classes(config) == 10
        batch = next(iter(data.make_train_dataset(config)))
        assert batch["x"].shape == (4, 28, 28, 1) and batch["labels"].dtype == tf.int32
        eval_labels = next(iter(data.make_eval_dataset(config)))["labels"]
        expected = [int(example["label"]) for example in
                    tfds.builder("mnist").as_dataset(split="test")]
    np.testing.assert_array_equal(eval_labels.numpy(), expected)


# ----------------------------------------------------------------- clear errors
@pytest.mark.parametrize("dataset", ["imagenet32", "celeba"])
def test_a_dataset_without_labels_is_one_clear_error(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    code = _run(f"--dataset={dataset}", "--conditional", "--train_steps=1",
                f"--output_dir={run}", f"--data_dir={tmp_path / 'tfds'}")
    err = capsys.readouterr().err
    assert code == 1
    assert f"Error (UsageError): Dataset {dataset!r} has no class labels" in err
    assert "Traceback" not in err
    assert not run.exists() and not (tmp_path / "tfds").exists()  # Nothing written or fetched.


def test_npz_without_labels_is_one_clear_error(tmp_path, capsys):
    path = tmp_path / "d.npz"
    images = np.zeros((4, 4, 4), np.uint8)
    np.savez(path, train=images, test=images)
    code = _run(f"--dataset=npz", f"--data_dir={path}", "--conditional", "--train_steps=1",
                "--num_scales=1", "--num_res_blocks=0", "--hidden_channels=4",
                f"--output_dir={tmp_path / 'run'}")
    err = capsys.readouterr().err
    assert code == 1 and "no class labels" in err and "Traceback" not in err
