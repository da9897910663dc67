"""Tests of the trainer's input pipelines (trainers/data.py, trainers/sources/).

Expected images are computed independently: scikit-learn / numpy for arrays, a
hand-written IDX parser, PIL for image files and for the crop/resize geometry.
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import io
import pathlib
import re
import struct

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image
from sklearn.datasets import load_digits

import tfnvp
from trainers import data, sources
from trainers.sources.base import decode_image_bytes
from trainers.sources.folder import read_image_header

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
MNIST_DIR = SHARED_DATA / "mnist"
CIFAR_JPEG_DIR = SHARED_DATA / "cifar10_jpeg"


def _batches(dataset: tf.data.Dataset, count: int | None = None, key: str = "x") -> np.ndarray:
    """The `key` part ("x": images, "seed": noise seeds) of the first `count` batches (all if
    None), concatenated."""
    return np.concatenate([b[key].numpy() for b in dataset.take(-1 if count is None else count)])


def _pixels(x: np.ndarray) -> np.ndarray:
    """The pipelines' images, checked to be uint8 (the model dequantizes them)."""
    assert x.dtype == np.uint8
    return x


def _multiset(images: np.ndarray) -> collections.Counter:
    return collections.Counter(image.tobytes() for image in images)


def _digits() -> np.ndarray:
    return np.round(load_digits().images * 255 / 16).astype(np.uint8)[..., None]


def _write_npz(path: pathlib.Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)
    return str(path)


def _write_png(path: pathlib.Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(path)


def _read_image(path: pathlib.Path) -> np.ndarray:
    image = np.asarray(Image.open(path))
    return image[..., None] if image.ndim == 2 else image


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="cifar10.*digits.*image_folder.*mnist_idx.*npz"):
        data.image_shape(data.DataConfig("cifar11"))


# --- digits -------------------------------------------------------------------------


def test_digits_train_batches_are_training_images_with_a_seed_each():
    config = data.DataConfig("digits", batch_size=64)
    assert data.image_shape(config) == (8, 8, 1)
    dataset = data.make_train_dataset(config)
    assert {key: (spec.shape.as_list(), spec.dtype) for key, spec in
            dataset.element_spec.items()} == {"x": ([64, 8, 8, 1], tf.uint8),
                                              "seed": ([64, 2], tf.int64)}
    pixels = _pixels(_batches(dataset, 3))
    all_images = _multiset(_digits())
    assert all(all_images[image.tobytes()] for image in pixels)
    seeds = _batches(dataset, 3, "seed")
    assert len(np.unique(seeds, axis=0)) == len(seeds) == 192  # One seed per example.
    # The model's uniform dequantization from them: noise almost everywhere, uniform on [0, 1).
    x = tfnvp.dequantize(pixels, seed=seeds).numpy()
    np.testing.assert_array_equal(np.floor(x), pixels)
    assert np.mean(x != pixels) > 0.99 and 0.45 < np.mean(x - pixels) < 0.55


def test_digits_split_is_fixed_disjoint_and_complete():
    train = data.DataConfig("digits", batch_size=500, seed=5)
    epoch = _pixels(_batches(data.make_train_dataset(train), 3))  # 1500 = one epoch.
    held_out = _pixels(_batches(data.make_eval_dataset(train)))
    assert len(held_out) == data.num_eval_examples(train) == 297
    assert _multiset(epoch) + _multiset(held_out) == _multiset(_digits())
    other_seed = data.make_eval_dataset(dataclasses.replace(train, seed=9))
    np.testing.assert_array_equal(_pixels(_batches(other_seed)), held_out)


def test_eval_noise_is_fixed_across_calls_and_batch_sizes():
    config = data.DataConfig("digits", eval_batch_size=256)
    eval_data = data.make_eval_dataset(config)
    first, seeds = _pixels(_batches(eval_data)), _batches(eval_data, key="seed")
    small_batches = data.make_eval_dataset(dataclasses.replace(config, eval_batch_size=100))
    assert [b["x"].shape[0] for b in small_batches] == [100, 100, 97]  # Partial batch kept.
    for again in (data.make_eval_dataset(config), small_batches):
        np.testing.assert_array_equal(_batches(again), first)
        np.testing.assert_array_equal(_batches(again, key="seed"), seeds)
    subset = data.make_eval_dataset(dataclasses.replace(config, max_eval_examples=50))
    # An evenly spread subset (every 297 // 50 = 5th example), not the first 50.
    np.testing.assert_array_equal(_pixels(_batches(subset)), first[::5][:50])
    # The model's dequantization: each example's noise from its own seed, whatever the batch.
    x = tfnvp.dequantize(first, seed=seeds).numpy()
    np.testing.assert_array_equal(tfnvp.dequantize(first[100:200], seed=seeds[100:200]),
                                  x[100:200])
    noise = (x - first).reshape(len(first), -1)
    # Independent noise per example: E|u - v| = 1/3 for independent uniforms.
    assert np.abs(noise[1:] - noise[:-1]).mean(axis=1).min() > 0.2
    other_seed = data.make_eval_dataset(dataclasses.replace(config, eval_seed=7))
    np.testing.assert_array_equal(_pixels(_batches(other_seed)), first)
    assert np.all(np.any(_batches(other_seed, key="seed") != seeds, axis=1))


def test_training_is_deterministic_given_the_seed():
    def first_batches(seed: int) -> tuple[np.ndarray, np.ndarray]:
        dataset = data.make_train_dataset(data.DataConfig("digits", seed=seed))
        return _batches(dataset, 2), _batches(dataset, 2, "seed")

    for ours, again, other in zip(first_batches(3), first_batches(3), first_batches(4)):
        np.testing.assert_array_equal(ours, again)
        assert not np.array_equal(ours, other)


def test_dequantized_values_stay_below_256(tmp_path):
    # float32(255 + u) rounds to 256 for u > 1 - 2**-17: ~6 such pixels expected here.
    path = _write_npz(
        tmp_path / "white.npz",
        train=np.full((256, 32, 32, 3), 255, np.uint8),
        test=np.full((1, 32, 32, 3), 255, np.uint8),
    )
    batch = next(iter(data.make_train_dataset(data.DataConfig("npz", path, batch_size=256))))
    x = tfnvp.dequantize(batch["x"], seed=batch["seed"]).numpy()  # The model's dequantizer's.
    assert x.dtype == np.float32 and x.max() < 256.0 and np.all(np.floor(x) == 255)


# --- mnist_idx --------------------------------------------------------------------------


def _write_idx(path: pathlib.Path, images: np.ndarray, magic: int = 2051) -> pathlib.Path:
    payload = struct.pack(">IIII", magic, *images.shape) + images.tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def test_mnist_idx_reads_small_files(tmp_path):
    rng = np.random.default_rng(0)
    train, test = (
        rng.integers(0, 256, (7, 3, 4), np.uint8),
        rng.integers(0, 256, (2, 3, 4), np.uint8),
    )
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", train)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", test)
    config = data.DataConfig("mnist_idx", str(tmp_path), batch_size=7)
    assert data.image_shape(config) == (3, 4, 1)
    assert data.num_eval_examples(config) == 2
    np.testing.assert_array_equal(
        _pixels(_batches(data.make_eval_dataset(config))), test[..., None]
    )
    epoch = _pixels(_batches(data.make_train_dataset(config), 1))
    assert _multiset(epoch) == _multiset(train[..., None])


@pytest.mark.parametrize("problem", ["magic", "truncated"])
def test_mnist_idx_bad_file_is_named(tmp_path, problem):
    images = np.zeros((3, 2, 2), np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte", images)
    bad = tmp_path / "t10k-images-idx3-ubyte"
    if problem == "magic":  # A labels file (2049) where images are expected.
        _write_idx(bad, images, magic=2049)
    else:
        bad.write_bytes(_write_idx(bad, images).read_bytes()[:-1])
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        data.make_eval_dataset(data.DataConfig("mnist_idx", str(tmp_path)))


@pytest.mark.parametrize("problem, message", [
    ("int16", "3-dimensional int16, expected images: 3-dimensional unsigned bytes"),
    ("labels_count", "has 3 images but .*t10k-labels-idx1-ubyte has 4 labels"),
    ("labels_magic", r"t10k-labels-idx1-ubyte: an IDX file of 3-dimensional unsigned bytes, "
                     "expected labels"),
    ("not_idx", "not an IDX file"),
    ("extra_bytes", "= 12 bytes of values, the file has 13"),
])
def test_mnist_idx_header_dtype_and_labels_are_checked(tmp_path, problem, message):
    images = np.zeros((3, 2, 2), np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte", images)
    t10k, labels = tmp_path / "t10k-images-idx3-ubyte", tmp_path / "t10k-labels-idx1-ubyte"
    _write_idx(t10k, images)
    if problem == "int16":
        t10k.write_bytes(struct.pack(">IIII", 0x0B03, 3, 2, 2) + images.astype(">i2").tobytes())
    elif problem == "labels_count":
        labels.write_bytes(struct.pack(">II", 2049, 4) + bytes(4))
    elif problem == "labels_magic":
        _write_idx(labels, images)
    elif problem == "not_idx":
        t10k.write_bytes(b"\x89PNG" + bytes(40))
    else:
        t10k.write_bytes(t10k.read_bytes() + b"\0")
    with pytest.raises(ValueError, match=message):
        data.make_eval_dataset(data.DataConfig("mnist_idx", str(tmp_path)))
    labels.write_bytes(struct.pack(">II", 2049, 3) + bytes(3))
    _write_idx(t10k, images)  # Matching files are read.
    assert data.num_eval_examples(data.DataConfig("mnist_idx", str(tmp_path))) == 3


def test_mnist_idx_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope"))):
        data.image_shape(data.DataConfig("mnist_idx", str(tmp_path / "nope")))
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        data.image_shape(data.DataConfig("mnist_idx", str(tmp_path)))
    with pytest.raises(ValueError, match="needs data_dir"):
        data.image_shape(data.DataConfig("mnist_idx"))


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"no MNIST IDX files in {MNIST_DIR}")
def test_mnist_idx_real_files():
    config = data.DataConfig(
        "mnist_idx", str(MNIST_DIR), max_eval_examples=300, eval_batch_size=128
    )
    assert data.image_shape(config) == (28, 28, 1)
    assert data.num_eval_examples(config) == 300
    with gzip.open(MNIST_DIR / "t10k-images-idx3-ubyte.gz") as f:
        expected = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)
    assert len(expected) == 10_000
    np.testing.assert_array_equal(_pixels(_batches(data.make_eval_dataset(config))),
                                  expected[:: 10_000 // 300][:300])
    assert _batches(data.make_train_dataset(config), 1).shape == (64, 28, 28, 1)


# --- image_folder -----------------------------------------------------------------------


@pytest.fixture
def image_folder(tmp_path) -> pathlib.Path:
    """train/{a,b}/*.png (5 and 4 files) and test/c/*.png (3 files), 5x6 RGB."""
    rng = np.random.default_rng(1)
    for folder, count in (("train/a", 5), ("train/b", 4), ("test/c", 3)):
        for i in range(count):
            _write_png(tmp_path / folder / f"{i}.png", rng.integers(0, 256, (5, 6, 3), np.uint8))
    return tmp_path


@pytest.mark.parametrize("cache", [True, False])
def test_image_folder_reads_train_and_test(image_folder, cache):
    config = data.DataConfig("image_folder", str(image_folder), batch_size=9, cache=cache)
    assert data.image_shape(config) == (5, 6, 3)
    test_files = sorted((image_folder / "test").rglob("*.png"))
    expected_eval = np.stack([_read_image(p) for p in test_files])
    np.testing.assert_array_equal(_pixels(_batches(data.make_eval_dataset(config))), expected_eval)
    train_files = sorted((image_folder / "train").rglob("*.png"))
    expected_train = np.stack([_read_image(p) for p in train_files])
    first, second = _pixels(_batches(data.make_train_dataset(config), 2)).reshape(2, 9, 5, 6, 3)
    for epoch in (first, second):  # 9 files = one epoch per batch.
        assert _multiset(epoch) == _multiset(expected_train)
    # Shuffled, and reshuffled every epoch (the chance of a false failure is ~1/9!).
    assert not np.array_equal(first, expected_train) and not np.array_equal(first, second)


def test_image_folder_grayscale_jpegs_and_held_out_tenth(tmp_path):
    rng = np.random.default_rng(2)
    for i in range(20):
        image = Image.fromarray(rng.integers(0, 256, (4, 7), np.uint8))
        (tmp_path / "train" / f"k{i % 2}").mkdir(parents=True, exist_ok=True)
        image.save(tmp_path / "train" / f"k{i % 2}" / f"{i:02d}.jpg", quality=90)
    config = data.DataConfig("image_folder", str(tmp_path))
    assert data.image_shape(config) == (4, 7, 1)
    held_out = sorted(str(p) for p in tmp_path.rglob("*.jpg"))[::10]
    assert data.num_eval_examples(config) == 2
    expected = np.stack([_read_image(pathlib.Path(p)) for p in held_out])
    np.testing.assert_array_equal(_pixels(_batches(data.make_eval_dataset(config))), expected)


@pytest.mark.parametrize("cache", [True, False])
def test_image_folder_undecodable_file_is_reported_by_path(image_folder, cache):
    bad = image_folder / "train" / "b" / "bad.png"
    good = (image_folder / "train" / "a" / "0.png").read_bytes()
    bad.write_bytes(good[: len(good) // 2])  # Intact header, truncated pixels.
    config = data.DataConfig("image_folder", str(image_folder), batch_size=4, cache=cache)
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(str(bad))):
        _batches(data.make_train_dataset(config), 5)


@pytest.mark.parametrize("problem, message", [
    ("corrupt", "not a readable PNG or JPEG"),
    ("wrong_size", r"is 5x7 pixels but the first file .* is 5x6.*same size"),
    ("16_bit", "16 bits per sample.*convert the files to 8 bits"),
    ("grayscale", r"has 1 channel\(s\) but the first file .* has 3.*--channels=3"),
    ("rgba", r"has 4 channel\(s\).*--channels=3"),
])
def test_image_folder_files_that_disagree_are_refused_before_decoding(image_folder, problem,
                                                                       message):
    bad = image_folder / "test" / "c" / "bad.png"
    if problem == "corrupt":
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    elif problem == "wrong_size":
        _write_png(bad, np.zeros((5, 7, 3), np.uint8))
    elif problem == "16_bit":  # Would be rescaled to 8 bits by the decoder.
        Image.fromarray(np.full((5, 6), 40000, np.uint16)).save(bad)
    elif problem == "grayscale":  # Would be silently converted to RGB.
        _write_png(bad, np.zeros((5, 6, 1), np.uint8))
    else:
        _write_png(bad, np.zeros((5, 6, 4), np.uint8))
    config = data.DataConfig("image_folder", str(image_folder))
    with pytest.raises(ValueError, match=re.escape(str(bad)) + ".*" + message):
        data.image_shape(config)
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        data.make_eval_dataset(config)


def test_image_folder_channels_flag_converts_with_one_warning(image_folder, absl_log):
    gray = np.arange(30, dtype=np.uint8).reshape(5, 6, 1)
    _write_png(image_folder / "test" / "c" / "gray.png", gray)
    config = data.DataConfig("image_folder", str(image_folder), channels=3)
    assert data.image_shape(config) == (5, 6, 3)
    data.make_eval_dataset(config)  # Checked once per process: one warning.
    assert absl_log().count("converted") == 1
    assert "converted 1 of 13 files to 3 channel(s)" in absl_log()
    held_out = _pixels(_batches(data.make_eval_dataset(config)))
    index = sorted(str(p) for p in (image_folder / "test").rglob("*.png")).index(
        str(image_folder / "test" / "c" / "gray.png"))
    np.testing.assert_array_equal(held_out[index], np.repeat(gray, 3, axis=-1))
    one = dataclasses.replace(config, channels=1)  # RGB files converted to luminance.
    assert data.image_shape(one) == (5, 6, 1)
    assert _batches(data.make_eval_dataset(one)).shape == (4, 5, 6, 1)


def test_channels_of_other_datasets_must_be_theirs():
    with pytest.raises(ValueError, match=r"--channels=3, but .* have 1 channel"):
        data.image_shape(data.DataConfig("digits", channels=3))
    assert data.image_shape(data.DataConfig("digits", channels=1)) == (8, 8, 1)
    with pytest.raises(ValueError, match="channels must be 1, 2, 3, 4"):
        data.DataConfig("digits", channels=5)


@pytest.mark.parametrize("mode, extension, options", [
    ("L", "png", {}), ("LA", "png", {}), ("RGB", "png", {}), ("RGBA", "png", {}),
    ("P", "png", {}), ("P", "png", {"transparency": 0}), ("1", "png", {}),
    ("L", "jpg", {}), ("RGB", "jpg", {"progressive": True}), ("CMYK", "jpg", {}),
    ("RGB", "jpg", {"exif": b"Exif\0\0" + b"\0" * 64}),
])
def test_image_header_agrees_with_the_decoder(tmp_path, mode, extension, options):
    rng = np.random.default_rng(5)
    path = tmp_path / f"x.{extension}"
    Image.fromarray(rng.integers(0, 256, (7, 9, 3), np.uint8)).convert(mode).save(path, **options)
    header = read_image_header(str(path))
    decoded = decode_image_bytes(tf.io.read_file(str(path)), channels=0)
    assert (header.height, header.width, header.channels) == tuple(decoded.shape)
    assert header.bits == (1 if mode == "1" else 8)


def test_image_folder_missing_folders_and_bad_first_file(image_folder, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape(str(empty / "train"))):
        data.image_shape(data.DataConfig("image_folder", str(empty)))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "absent"))):
        data.image_shape(data.DataConfig("image_folder", str(tmp_path / "absent")))
    first = image_folder / "train" / "a" / "0.png"  # Its size would be the dataset's.
    first.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=re.escape(str(first))):
        data.image_shape(data.DataConfig("image_folder", str(image_folder)))


@pytest.mark.skipif(not CIFAR_JPEG_DIR.is_dir(), reason=f"no CIFAR-10 JPEGs in {CIFAR_JPEG_DIR}")
def test_image_folder_real_cifar10_jpegs():
    config = data.DataConfig("image_folder", str(CIFAR_JPEG_DIR), cache=False, max_eval_examples=16)
    assert data.image_shape(config) == (32, 32, 3)
    assert _batches(data.make_train_dataset(config), 2).shape == (128, 32, 32, 3)
    all_test_files = sorted((CIFAR_JPEG_DIR / "test").rglob("*.jpg"))
    test_files = all_test_files[:: len(all_test_files) // 16][:16]
    assert len({p.parent.name for p in test_files}) == 10  # Every class, not 16 airplanes.
    expected = np.stack([_read_image(p) for p in test_files])
    np.testing.assert_array_equal(_pixels(_batches(data.make_eval_dataset(config))), expected)


# --- npz ----------------------------------------------------------------------------


def test_npz_float_nhw_and_uint8_nhwc(tmp_path):
    rng = np.random.default_rng(3)
    train, test = rng.integers(0, 256, (10, 4, 5)), rng.integers(0, 256, (3, 4, 5))
    path = _write_npz(
        tmp_path / "f.npz", train=train.astype(np.float64), test=test.astype(np.float32)
    )
    config = data.DataConfig("npz", path, batch_size=10)
    assert data.image_shape(config) == (4, 5, 1)
    np.testing.assert_array_equal(
        _pixels(_batches(data.make_eval_dataset(config))), test[..., None]
    )
    assert _multiset(_pixels(_batches(data.make_train_dataset(config), 1))) == _multiset(
        train[..., None].astype(np.uint8)
    )
    path = _write_npz(
        tmp_path / "u.npz",
        x_train=np.zeros((2, 3, 3, 3), np.uint8),
        x_test=np.full((1, 3, 3, 3), 9, np.uint8),
    )
    x = _batches(data.make_eval_dataset(data.DataConfig("npz", path)))
    np.testing.assert_array_equal(_pixels(x), np.full((1, 3, 3, 3), 9))


@pytest.mark.parametrize(
    "bad_train, message",
    [
        (np.full((2, 3, 3), np.nan), "'train' contains 18 NaN"),
        (np.full((2, 3, 3), 256.0), "'train' has values in .*out of the range"),
        (np.full((2, 3, 3), -1), "'train' has values in .*out of the range"),
        (np.full((2, 3, 3), 0.5), "'train' has non-integer values"),
        (np.zeros((2, 3)), "'train' has shape"),
    ],
)
def test_npz_bad_arrays_are_named(tmp_path, bad_train, message):
    path = _write_npz(tmp_path / "bad.npz", train=bad_train, test=np.zeros((1, 3, 3)))
    with pytest.raises(ValueError, match=re.escape(path) + ".*" + message):
        data.make_train_dataset(data.DataConfig("npz", path))


def test_npz_missing_file_and_arrays(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "no.npz"))):
        data.image_shape(data.DataConfig("npz", str(tmp_path / "no.npz")))
    path = _write_npz(tmp_path / "keys.npz", images=np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match=r"\['images'\].*train/test or x_train/x_test"):
        data.image_shape(data.DataConfig("npz", path))


# --- flips and sharding ---------------------------------------------------------------


def test_flips_on_give_both_orientations_and_off_never(tmp_path):
    ramp = np.tile(np.arange(0, 250, 50, dtype=np.uint8), (3, 1))[None, ..., None]  # 1x3x5x1.
    path = _write_npz(tmp_path / "ramp.npz", train=np.repeat(ramp, 8, axis=0), test=ramp)

    names = {ramp[0].tobytes(): "kept", ramp[0, :, ::-1].tobytes(): "mirrored"}

    def orientations(flip: bool | None) -> collections.Counter:
        found = collections.Counter()
        for seed in range(4):
            config = data.DataConfig("npz", path, batch_size=8, flip=flip, seed=seed)
            for image in _pixels(_batches(data.make_train_dataset(config), 1)):
                found[names.get(image.tobytes(), "other")] += 1
        return found

    on = orientations(True)
    assert on["kept"] > 0 and on["mirrored"] > 0 and on["other"] == 0
    assert orientations(False) == orientations(None) == {"kept": 32}  # npz: off by default.


@pytest.mark.parametrize("name", sorted(set(sources.NAMES) - {"mnist_idx", "image_folder", "npz"}))
def test_flip_defaults_follow_the_paper(name):
    # Section 4.1: horizontal flips for CIFAR-10, CelebA and every LSUN category only.
    assert sources.get_source(name, None).flip_default is (
        name in {"cifar10", "celeba", "lsun_bedroom", "lsun_tower", "lsun_church"}
    )


def test_sharding_splits_the_data_and_the_batch(tmp_path):
    images = np.arange(64, dtype=np.uint8).reshape(64, 1, 1, 1)  # Image i is pixel value i.
    path = _write_npz(tmp_path / "ids.npz", train=images, test=images[:1])
    config = data.DataConfig("npz", path, batch_size=32)
    seen = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=2
        )
        dataset = data.make_train_dataset(config, context)
        assert dataset.element_spec["x"].shape.as_list() == [16, 1, 1, 1]
        seen.append(set(_pixels(_batches(dataset, 2)).ravel()))  # One epoch of the shard.
    assert len(seen[0]) == len(seen[1]) == 32
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(range(64))


# --- TFDS, mocked ----------------------------------------------------------------------


def _encoded_tfds_images(name: str, split: str) -> list[np.ndarray]:
    """The mock split's images, decoded with PIL (independently of the pipeline)."""
    builder = tfds.builder(name)
    examples = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
    return [np.asarray(Image.open(io.BytesIO(ex["image"]))) for ex in tfds.as_numpy(examples)]


def _pil_resize_smaller_side(image: np.ndarray, side: int) -> np.ndarray:
    h, w = image.shape[:2]
    size = (max(side, round(w * side / min(h, w))), max(side, round(h * side / min(h, w))))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def _center(image: np.ndarray, h: int, w: int) -> np.ndarray:
    top, left = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
    return image[top : top + h, left : left + w]


_PIL_GEOMETRY = {  # The paper's preprocessing, written with PIL.
    "cifar10": ("cifar10", "test", lambda x: x),
    "imagenet32": (
        "downsampled_imagenet/32x32",
        "validation",
        lambda x: _center(_pil_resize_smaller_side(x, 32), 32, 32),
    ),
    # The authors' release crops CelebA's 218x178 images to [40:188, 15:163] (not centred).
    "celeba": ("celeb_a", "test", lambda x: _pil_resize_smaller_side(x[40:188, 15:163], 64)),
    "lsun_bedroom": (
        "lsun/bedroom",
        "validation",
        lambda x: _center(_pil_resize_smaller_side(x, 96), 64, 64),
    ),
}


@pytest.mark.parametrize(
    "name, shape",
    [
        ("cifar10", (32, 32, 3)),
        ("imagenet32", (32, 32, 3)),
        ("celeba", (64, 64, 3)),
        ("lsun_bedroom", (64, 64, 3)),
    ],
)
def test_tfds_datasets_under_mock_data(name, shape):
    tfds_name, split, geometry = _PIL_GEOMETRY[name]
    with tfds.testing.mock_data(num_examples=6):
        config = data.DataConfig(name, batch_size=4, eval_batch_size=4)
        assert data.image_shape(config) == shape
        train = _batches(data.make_train_dataset(config), 2)
        assert train.shape == (8, *shape)
        _pixels(train)  # Asserts uint8.
        x = _batches(data.make_eval_dataset(config))
        expected = np.stack([geometry(image) for image in _encoded_tfds_images(tfds_name, split)])
    assert x.shape == (6, *shape)
    # PIL and TF round resized values differently: allow one level.
    assert np.abs(_pixels(x).astype(int) - expected).max() <= (0 if name == "cifar10" else 1)


def test_lsun_training_crops_are_random_windows():
    with tfds.testing.mock_data(num_examples=1):  # Every training example is this image.
        config = data.DataConfig("lsun_tower", batch_size=4, flip=False)  # Crops only.
        crops = _pixels(_batches(data.make_train_dataset(config), 1)).astype(int)
        (image,) = _encoded_tfds_images("lsun/tower", "train")
    resized = _pil_resize_smaller_side(image, 96).astype(int)
    assert len({crop.tobytes() for crop in crops}) > 1
    offsets = [
        (top, left) for top in range(resized.shape[0] - 63) for left in range(resized.shape[1] - 63)
    ]
    for crop in crops:
        assert any(np.abs(resized[y : y + 64, x : x + 64] - crop).max() <= 1 for y, x in offsets)


def test_a_runs_recorded_input_gives_its_data_config():
    """config.json's "input" of a run written before pipelines yielded uint8 images (it holds
    "dequantize", no longer a field) still gives the run's DataConfig."""
    import json

    legacy = pathlib.Path(__file__).parent / "data" / "legacy_307fba3" / "runs" / "realnvp"
    recorded = json.loads((legacy / "config.json").read_text())["input"]
    assert recorded["dequantize"] is True
    config = data.from_record(recorded, eval_batch_size=7)
    assert config == data.DataConfig("digits", batch_size=16, eval_batch_size=7)
