"""Image sources for the trainer's input pipelines: where the uint8 images come from.

A *source* describes one dataset: its output image shape, the Real NVP paper's
horizontal-flip choice for it, the geometry that fits decoded images to that shape,
and, per split, a `Split`: a dataset of cheap *records* in a fixed order (array
indices, file paths or encoded image bytes) plus the transformation that decodes
records into uint8 [h, w, c] images. `trainers/data.py` turns splits into shuffled,
augmented, dequantized batches; nothing here shuffles, augments or batches.

Registered names (see `NAMES`):
  digits        scikit-learn's bundled 8x8 digits, a fixed 1500/297 split (offline).
  mnist_idx     MNIST IDX files in `data_dir` (train-images / t10k-images, .gz or not).
  image_folder  PNG/JPEG files under `data_dir/train/**` and `data_dir/test/**`.
  npz           a .npz file with arrays train/test (or x_train/x_test).
  mnist, cifar10, imagenet32, imagenet64, celeba, lsun_bedroom, lsun_tower,
  lsun_church   TensorFlow Datasets, prepared (downloaded if needed) in `data_dir`.

Horizontal flips default to on for cifar10, celeba and every LSUN category, as in
the paper's section 4.1, and off for every other dataset, including the user-supplied
image_folder and npz ones (flipping is wrong for e.g. digits; turn it on explicitly).
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import gzip
import os
import pathlib
import struct
import zipfile
from collections.abc import Callable
from typing import BinaryIO

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from trainers import tfds_prepare

Shape = tuple[int, int, int]
_AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class Split:
    """One split of a source: records in a deterministic order and how to decode them.

    Attributes:
      records: finite dataset of records (indices, file paths or encoded bytes) in a
        deterministic order; its cardinality is known whenever the source knows its size.
      decode: maps a dataset of records to a dataset of uint8 [h, w, c] images, one
        per record, in the same order.
      example_bytes: memory one decoded image takes if cached; None when caching
        gains nothing (images already in memory) or their size is unknown.
      cheap_records: records are indices or paths, so a whole epoch of them fits
        in a shuffle buffer.
    """

    records: tf.data.Dataset
    decode: Callable[[tf.data.Dataset], tf.data.Dataset]
    example_bytes: int | None
    cheap_records: bool


@dataclasses.dataclass(frozen=True)
class Geometry:
    """How decoded images of any size >= 1 pixel are fitted to the source's shape.

    Applied in order: a central square crop of `center_crop` pixels (or the largest
    square that fits), a resize so that the smaller side is `resize_to` pixels
    (upscaling small images), then a crop to the output shape, random when training
    with `random_crop`, central otherwise. With the defaults, images must already
    have the output shape and the final crop is the identity.
    """

    center_crop: int | None = None
    resize_to: int | None = None
    random_crop: bool = False


class Source(abc.ABC):
    """A dataset of images of one shape, split into a training and a held-out part."""

    flip_default: bool = False
    geometry: Geometry = Geometry()

    @abc.abstractmethod
    def image_shape(self) -> Shape:
        """(H, W, C) of the images the pipelines output, read cheaply if possible."""

    def prepare(self) -> None:
        """Gets the data ready to read (e.g. downloads it); a clear error if it cannot."""

    @abc.abstractmethod
    def split(self, training: bool, seed: int) -> Split:
        """The training split or the fixed held-out split.

        Args:
          training: which split.
          seed: file-shuffling seed, used by sources that shuffle while reading.
        """


def decode_image_bytes(data: tf.Tensor, channels: int) -> tf.Tensor:
    """Decodes PNG/JPEG/BMP/GIF bytes to a uint8 [h, w, channels] image (0: native).

    JPEGs use the accurate integer IDCT (libjpeg's default, as in PIL), not
    TensorFlow's default fast one, which is off by up to ~10 levels on noisy images.
    """
    return tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=channels, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=channels, expand_animations=False),
    )


# --- in-memory arrays: digits, mnist_idx, npz ---------------------------------------


class _ArraySource(Source):
    """A source whose two splits are uint8 NHWC numpy arrays held in memory."""

    @abc.abstractmethod
    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        """Returns the (train, eval) uint8 NHWC arrays, validated."""

    @functools.cached_property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self._load()

    def image_shape(self) -> Shape:
        return tuple(int(d) for d in self._arrays[0].shape[1:])

    def split(self, training: bool, seed: int) -> Split:
        images = tf.constant(self._arrays[0 if training else 1])

        def decode(indices: tf.data.Dataset) -> tf.data.Dataset:
            return indices.map(lambda i: tf.gather(images, i), num_parallel_calls=_AUTOTUNE)

        return Split(
            records=tf.data.Dataset.range(int(images.shape[0])),
            decode=decode,
            example_bytes=None,
            cheap_records=True,
        )


_DIGITS_SPLIT_SEED = 0
_DIGITS_NUM_EVAL = 297


class _DigitsSource(_ArraySource):
    """scikit-learn's 1797 8x8 digits (0..16) as uint8 0..255; the last 297 of a
    fixed permutation are held out."""

    def __init__(self, data_dir: str | None) -> None:
        del data_dir  # Bundled with scikit-learn.

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_digits  # Heavy import, only needed here.

        images = np.round(load_digits().images * (255.0 / 16.0)).astype(np.uint8)[..., None]
        order = np.random.default_rng(_DIGITS_SPLIT_SEED).permutation(len(images))
        return images[order[:-_DIGITS_NUM_EVAL]], images[order[-_DIGITS_NUM_EVAL:]]


def _existing_path(data_dir: str | None, dataset: str, what: str) -> pathlib.Path:
    """`data_dir` as a path that exists, or a clear error."""
    if data_dir is None:
        raise ValueError(f"Dataset {dataset!r} needs data_dir: {what}.")
    path = pathlib.Path(data_dir).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"Dataset {dataset!r}: {path} does not exist ({what}).")
    return path


_IDX_IMAGE_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions.
_IDX_HEADER = struct.Struct(">IIII")  # magic, count, rows, cols; big-endian.


def _read_idx_header(path: pathlib.Path, stream: BinaryIO) -> tuple[int, int, int]:
    """Parses and validates an IDX image header; returns (count, rows, cols)."""
    header = stream.read(_IDX_HEADER.size)
    if len(header) < _IDX_HEADER.size:
        raise ValueError(f"{path}: too short for an IDX image header ({len(header)} bytes).")
    magic, count, rows, cols = _IDX_HEADER.unpack(header)
    if magic != _IDX_IMAGE_MAGIC:
        raise ValueError(
            f"{path}: not an IDX image file: magic number {magic}, expected {_IDX_IMAGE_MAGIC} "
            "(unsigned bytes, 3 dimensions)."
        )
    if min(count, rows, cols) == 0:
        raise ValueError(f"{path}: IDX header has a zero dimension ({count}x{rows}x{cols}).")
    return count, rows, cols


class _IdxSource(_ArraySource):
    """MNIST in its original IDX format: train-images / t10k-images (eval)."""

    def __init__(self, data_dir: str | None) -> None:
        what = "a folder with train-images-idx3-ubyte[.gz] and t10k-images-idx3-ubyte[.gz]"
        folder = _existing_path(data_dir, "mnist_idx", what)
        self._train, self._eval = (self._find(folder, stem) for stem in ("train", "t10k"))

    @staticmethod
    def _find(folder: pathlib.Path, prefix: str) -> pathlib.Path:
        candidates = [folder / f"{prefix}-images-idx3-ubyte{ext}" for ext in ("", ".gz")]
        for path in candidates:
            if path.is_file():
                return path
        raise FileNotFoundError(f"mnist_idx: neither {candidates[0]} nor {candidates[1]} exists.")

    @staticmethod
    def _read(path: pathlib.Path, pixels: bool) -> tuple[tuple[int, int, int], bytes]:
        """Header (count, rows, cols) and, if `pixels`, the validated pixel bytes."""
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rb") as stream:
                dims = _read_idx_header(path, stream)
                data = stream.read() if pixels else b""
        except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError.
            raise ValueError(f"{path}: cannot read IDX file: {error}") from error
        expected = dims[0] * dims[1] * dims[2]
        if pixels and len(data) != expected:
            raise ValueError(
                f"{path}: IDX header announces {dims[0]}x{dims[1]}x{dims[2]} = {expected} "
                f"pixel bytes, the file has {len(data)}."
            )
        return dims, data

    def image_shape(self) -> Shape:
        (_, rows, cols), _ = self._read(self._train, pixels=False)
        return rows, cols, 1

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        arrays = []
        for path in (self._train, self._eval):
            (count, rows, cols), data = self._read(path, pixels=True)
            arrays.append(np.frombuffer(data, np.uint8).reshape(count, rows, cols, 1))
        if arrays[0].shape[1:] != arrays[1].shape[1:]:
            raise ValueError(
                f"mnist_idx: {self._train} has {arrays[0].shape[1:3]} images but "
                f"{self._eval} has {arrays[1].shape[1:3]}."
            )
        return arrays[0], arrays[1]


_NPZ_KEYS = (("train", "test"), ("x_train", "x_test"))


def _validated_npz_array(array: np.ndarray, path: pathlib.Path, key: str) -> np.ndarray:
    """Checks pixel values are integers in [0, 255]; returns a uint8 NHWC array."""
    where = f"{path}: array {key!r}"
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 2, 3, 4) or 0 in array.shape:
        raise ValueError(
            f"{where} has shape {array.shape}; expected NHW or NHWC with 1-4 channels."
        )
    if array.dtype == np.uint8:
        return array
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{where} has dtype {array.dtype}; expected uint8, integers or floats.")
    if np.issubdtype(array.dtype, np.floating):
        nan, inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
        if nan or inf:
            raise ValueError(f"{where} contains {nan} NaN and {inf} infinite values.")
        if not np.array_equal(array, np.round(array)):
            raise ValueError(f"{where} has non-integer values; expected raw pixel values 0..255.")
    low, high = array.min(), array.max()
    if low < 0 or high > 255:
        raise ValueError(f"{where} has values in [{low}, {high}], out of the range [0, 255].")
    return array.astype(np.uint8)


def _check_npz_splits_agree(arrays: list[np.ndarray], keys: tuple[str, str],
                            path: pathlib.Path) -> None:
    """Both splits hold raw pixel values 0..255: neither is silently read on another scale.

    A split whose values are 0 and 1 (maximum 1) is most likely intensities in
    [0, 1] (non-integer ones are refused earlier): it is refused when the
    other split is not, and warned about when both are (they would be read as
    nearly black 8-bit images).
    """
    unit = [a.max() == 1 for a in arrays]  # all-zero arrays prove nothing
    if unit[0] != unit[1]:
        low, high = (keys[0], keys[1]) if unit[0] else (keys[1], keys[0])
        raise ValueError(f"{path}: {low!r} has values in [0, 1] but {high!r} goes up to "
                         f"{int(max(a.max() for a in arrays))}; both splits must hold pixel "
                         "values 0..255 (multiply [0, 1] intensities by 255).")
    if all(unit):
        logging.warning("%s: every value is 0 or 1; they are read as 8-bit pixel values 0..255 "
                        "(nearly black images). If they are intensities, multiply by 255.", path)


class _NpzSource(_ArraySource):
    """A .npz file (data_dir is its path) with arrays train/test or x_train/x_test."""

    def __init__(self, data_dir: str | None) -> None:
        self._path = _existing_path(data_dir, "npz", "the path of a .npz file")

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        try:
            archive = np.load(self._path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise ValueError(f"{self._path}: not a readable .npz file: {error}") from error
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError(f"{self._path}: a single .npy array, expected a .npz archive.")
        with archive:
            keys = next((pair for pair in _NPZ_KEYS if set(pair) <= set(archive.files)), None)
            if keys is None:
                raise ValueError(
                    f"{self._path}: has arrays {sorted(archive.files)}; expected "
                    + " or ".join("/".join(pair) for pair in _NPZ_KEYS)
                    + "."
                )
            train, test = (_validated_npz_array(archive[key], self._path, key) for key in keys)
        _check_npz_splits_agree([train, test], keys, self._path)
        if train.shape[1:] != test.shape[1:]:
            raise ValueError(
                f"{self._path}: {keys[0]!r} images are {train.shape[1:]}, "
                f"{keys[1]!r} images are {test.shape[1:]}."
            )
        return train, test


# --- a folder of image files ----------------------------------------------------------

_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_HELD_OUT_EVERY = 10  # Without a test/ folder, every 10th file (by sorted path) is held out.
_FILES_PER_CHUNK = 16  # Decoded sequentially inside one nested dataset; chunks run in parallel.


def _check_size(image: tf.Tensor, path: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """`image`, after asserting that it is `size` pixels, naming `path` otherwise."""
    actual = tf.shape(image)[:2]
    height, width = tf.unstack(tf.strings.as_string(actual))
    expected = f" pixels, but the dataset's images (like its first file) are {size[0]}x{size[1]}"
    message = tf.strings.join(["image file ", path, " is ", height, "x", width, expected])
    with tf.control_dependencies([tf.debugging.Assert(tf.reduce_all(actual == size), [message])]):
        return tf.identity(image)


def decode_image_files(
    paths: tf.data.Dataset, channels: int, size: tuple[int, int] | None
) -> tf.data.Dataset:
    """Reads and decodes image files, in order, reporting any bad file by its path.

    TensorFlow's decoders fail without saying which file was bad. So files are
    decoded in chunks, each in a small dataset whose failed elements are dropped
    (`ignore_errors`); zipping the chunk's paths with the decoded (path, image)
    pairs, the first path without its image is the bad file, and an
    InvalidArgumentError names it.

    Args:
      paths: dataset of file paths.
      channels: channels to decode to (0: the file's own).
      size: the (height, width) every image must have, or None to accept any.
    """
    no_image = tf.data.Dataset.from_tensors((tf.constant(""), tf.zeros([0, 0, channels], tf.uint8)))

    def check(path: tf.Tensor, decoded: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        decoded_path, image = decoded
        message = tf.strings.join(["cannot read or decode image file ", path])
        with tf.control_dependencies(
            [tf.debugging.Assert(tf.equal(decoded_path, path), [message])]
        ):
            return image if size is None else _check_size(image, path, size)

    def decode_chunk(chunk: tf.Tensor) -> tf.data.Dataset:
        files = tf.data.Dataset.from_tensor_slices(chunk)
        decoded = files.map(lambda p: (p, decode_image_bytes(tf.io.read_file(p), channels)))
        padded = decoded.ignore_errors().concatenate(no_image.repeat())
        return tf.data.Dataset.zip(files, padded).map(check)

    return paths.batch(_FILES_PER_CHUNK).interleave(
        decode_chunk,
        block_length=_FILES_PER_CHUNK,
        num_parallel_calls=_AUTOTUNE,
        deterministic=True,
    )


def _list_images(folder: pathlib.Path) -> list[str]:
    """Sorted paths of the image files anywhere under `folder`."""
    paths = sorted(
        os.path.join(parent, name)
        for parent, _, names in os.walk(folder)
        for name in names
        if name.lower().endswith(_IMAGE_EXTENSIONS)
    )
    if not paths:
        raise FileNotFoundError(
            f"image_folder: no {'/'.join(_IMAGE_EXTENSIONS)} files under {folder}."
        )
    return paths


class _FolderSource(Source):
    """PNG/JPEG files under data_dir/train/** and data_dir/test/** (class folders allowed).

    Without a test/ folder, every 10th training file by sorted path is held out.
    All images must have the size of the first training file; they are decoded to
    its number of channels.
    """

    def __init__(self, data_dir: str | None) -> None:
        root = _existing_path(data_dir, "image_folder", "a folder with train/ and optionally test/")
        train_dir, test_dir = root / "train", root / "test"
        if not train_dir.is_dir():
            raise FileNotFoundError(f"image_folder: {train_dir} does not exist or is not a folder.")
        train = _list_images(train_dir)
        if test_dir.is_dir():
            self._eval = _list_images(test_dir)
        else:
            self._eval = train[::_HELD_OUT_EVERY]
            train = [path for i, path in enumerate(train) if i % _HELD_OUT_EVERY]
            logging.info(
                "image_folder: no %s, holding out %d of %d files.",
                test_dir,
                len(self._eval),
                len(self._eval) + len(train),
            )
        if not train:
            raise ValueError(f"image_folder: {train_dir} has too few images to hold some out.")
        self._train = train

    @functools.cached_property
    def _shape(self) -> Shape:
        first = tf.data.Dataset.from_tensors(self._train[0])
        image = next(iter(decode_image_files(first, channels=0, size=None)))
        return tuple(int(d) for d in image.shape)

    def image_shape(self) -> Shape:
        return self._shape

    def split(self, training: bool, seed: int) -> Split:
        height, width, channels = self._shape
        return Split(
            records=tf.data.Dataset.from_tensor_slices(self._train if training else self._eval),
            decode=functools.partial(decode_image_files, channels=channels, size=(height, width)),
            example_bytes=height * width * channels,
            cheap_records=True,
        )


# --- TensorFlow Datasets ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _TfdsSpec:
    """A TFDS dataset: its name, splits, output shape, geometry and flip default."""

    name: str
    eval_split: str
    shape: Shape
    geometry: Geometry = Geometry()
    flip: bool = False
    train_split: str = "train"


class _TfdsSource(Source):
    """A TensorFlow Datasets dataset, downloaded and prepared in data_dir if needed.

    Images are read still encoded (SkipDecoding) and decoded by `decode_image_bytes`,
    like image files.
    """

    def __init__(self, name: str, spec: _TfdsSpec, data_dir: str | None) -> None:
        self._name = name
        self._spec = spec
        self._data_dir = data_dir
        self.flip_default = spec.flip
        self.geometry = spec.geometry

    def image_shape(self) -> Shape:
        return self._spec.shape

    def _builder(self) -> tfds.core.DatasetBuilder:
        return tfds.builder(self._spec.name, data_dir=self._data_dir)

    def prepare(self) -> None:
        tfds_prepare.prepare(self._name, self._builder())

    def split(self, training: bool, seed: int) -> Split:
        builder = self._builder()
        logging.info("Preparing TFDS %s in %s.", self._spec.name, builder.data_dir)
        tfds_prepare.download_and_prepare(self._name, builder)
        features = builder.as_dataset(
            split=self._spec.train_split if training else self._spec.eval_split,
            shuffle_files=training,
            read_config=tfds.ReadConfig(shuffle_seed=seed),
            decoders={"image": tfds.decode.SkipDecoding()},
        )
        stored_shape = builder.info.features["image"].shape
        channels = self._spec.shape[-1]

        def decode(encoded: tf.data.Dataset) -> tf.data.Dataset:
            return encoded.map(
                lambda x: decode_image_bytes(x, channels), num_parallel_calls=_AUTOTUNE
            )

        return Split(
            records=features.map(lambda example: example["image"]),
            decode=decode,
            example_bytes=None if None in stored_shape else int(np.prod(stored_shape)),
            cheap_records=False,
        )


_LSUN_GEOMETRY = Geometry(resize_to=96, random_crop=True)  # Paper 4.1, as in DCGAN.
_TFDS_SPECS = {
    "mnist": _TfdsSpec("mnist", "test", (28, 28, 1)),
    "cifar10": _TfdsSpec("cifar10", "test", (32, 32, 3), flip=True),
    # Stored at 32x32 / 64x64; the resize is the identity then, and copes with other sizes.
    "imagenet32": _TfdsSpec(
        "downsampled_imagenet/32x32", "validation", (32, 32, 3), Geometry(resize_to=32)
    ),
    "imagenet64": _TfdsSpec(
        "downsampled_imagenet/64x64", "validation", (64, 64, 3), Geometry(resize_to=64)
    ),
    # Paper 4.1: an approximately central 148x148 crop resized to 64x64.
    "celeba": _TfdsSpec(
        "celeb_a", "test", (64, 64, 3), Geometry(center_crop=148, resize_to=64), flip=True
    ),
    "lsun_bedroom": _TfdsSpec("lsun/bedroom", "validation", (64, 64, 3), _LSUN_GEOMETRY, flip=True),
    "lsun_tower": _TfdsSpec("lsun/tower", "validation", (64, 64, 3), _LSUN_GEOMETRY, flip=True),
    "lsun_church": _TfdsSpec("lsun/church_outdoor", "validation", (64, 64, 3), _LSUN_GEOMETRY,
                             flip=True),
}

_REGISTRY: dict[str, Callable[[str | None], Source]] = {
    "digits": _DigitsSource,
    "mnist_idx": _IdxSource,
    "image_folder": _FolderSource,
    "npz": _NpzSource,
    **{name: functools.partial(_TfdsSource, name, spec) for name, spec in _TFDS_SPECS.items()},
}
NAMES: tuple[str, ...] = tuple(sorted(_REGISTRY))
TFDS_NAMES: tuple[str, ...] = tuple(sorted(_TFDS_SPECS))


def get_source(name: str, data_dir: str | None) -> Source:
    """The source registered as `name`, reading from `data_dir`.

    Raises:
      ValueError: unknown name (the message lists the valid ones) or unusable data.
      FileNotFoundError: `data_dir` or a file the dataset needs is missing.
    """
    if name not in _REGISTRY:
        raise ValueError(f"Unknown dataset {name!r}; valid names: {', '.join(NAMES)}.")
    return _REGISTRY[name](os.fspath(data_dir) if data_dir is not None else None)
