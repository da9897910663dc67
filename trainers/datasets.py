"""Image sources for the trainer's input pipelines: where the uint8 images come from.

A *source* describes one dataset: its output image shape, the Real NVP paper's
horizontal-flip choice for it, the geometry that fits decoded images to that shape,
and, per split, a `Split`: a dataset of cheap *records* in a fixed order (array
indices, file paths or encoded image bytes) plus the transformation that decodes
records into uint8 [h, w, c] images. `trainers/data.py` turns splits into shuffled,
augmented, dequantized batches; nothing here shuffles, augments or batches.

Class labels (for class-conditional models, `--conditional`): `split(labels=True)`
decodes to (image, label) pairs instead, label an int32 in [0, num_classes()), from
the same records in the same order. Where they come from:
  digits        scikit-learn's targets (10 classes).
  mnist_idx     train-labels-idx1-ubyte[.gz] / t10k-labels-idx1-ubyte[.gz] next to the images.
  image_folder  the class sub-folder: data_dir/train/<class>/... (class names sorted; the
                classes are the train split's, a test/ class not among them is an error).
  npz           arrays y_train/y_test or train_labels/test_labels (non-negative integers).
  mnist, cifar10  TFDS's "label" feature; the other TFDS datasets have no class labels.
Without `labels=True` nothing about the splits changes.

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
import hashlib
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

from tfnvp.errors import UsageError
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
        per record, in the same order; for a split with labels, to (image, int32 label)
        pairs.
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

    def set_channels(self, channels: int) -> None:
        """Requires images of `channels` channels (`--channels`); only image folders
        convert, other sources refuse a count that is not theirs."""
        if self.image_shape()[-1] != channels:
            raise UsageError(f"--channels={channels}, but this dataset's images have "
                             f"{self.image_shape()[-1]} channel(s) (only image_folder files are "
                             "converted); leave --channels unset.")

    @abc.abstractmethod
    def identity(self) -> dict[str, str]:
        """``{"data_path": ..., "data_fingerprint": ...}``: where the data are and a cheap
        fingerprint of them (`file_fingerprint`: sizes, counts, sampled bytes; never a
        hash of the whole dataset), so that a resumed run can tell other data apart."""

    @abc.abstractmethod
    def num_classes(self) -> int:
        """Number of classes of the labels `split(labels=True)` yields; a ValueError
        (FileNotFoundError for a missing labels file) naming the dataset and the problem
        when it has none or they are unusable."""

    @abc.abstractmethod
    def split(self, training: bool, seed: int, labels: bool = False) -> Split:
        """The training split or the fixed held-out split.

        Args:
          training: which split.
          seed: file-shuffling seed, used by sources that shuffle while reading.
          labels: decode to (image, label) pairs (see the module docstring).
        """


def _decode_each(records: tf.data.Dataset, decode_one: Callable[[tf.Tensor], tf.Tensor]
                 ) -> tf.data.Dataset:
    """Maps each record to its image, or each (record, label) pair to (image, label)."""

    def one(record: tf.Tensor, *label: tf.Tensor):
        image = decode_one(record)
        return (image, *label) if label else image

    return records.map(one, num_parallel_calls=_AUTOTUNE)


#: The largest class index a label may be (labels travel as int32).
_MAX_LABEL = np.iinfo(np.int32).max - 1


def _check_labels(train: np.ndarray, test: np.ndarray, counts: tuple[int, int],
                 where: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Class labels of both splits as int32 arrays, checked: 1-D non-negative integers,
    one per image (`counts`), the test split's among the train split's classes
    (0..max); `where` names each split's labels in the errors."""
    checked = []
    for array, count, name in zip((train, test), counts, where):
        array = np.asarray(array)
        if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
            raise UsageError(f"{name}: labels must be a 1-D array of integers, got shape "
                             f"{array.shape} and dtype {array.dtype}.")
        if len(array) != count:
            raise UsageError(f"{name}: {len(array)} labels for {count} images; one label per "
                             "image is needed.")
        if len(array) and array.min() < 0:
            raise UsageError(f"{name}: labels must be non-negative class indices, got "
                             f"{array.min()}.")
        # On the values as given: an int64 label 2**32 + 1 must not wrap to class 1.
        if len(array) and int(array.max()) > _MAX_LABEL:
            raise UsageError(f"{name}: label {int(array.max())} is not a class index (labels "
                             f"are 0..num_classes - 1, at most {_MAX_LABEL}).")
        checked.append(array)
    num_classes = int(checked[0].max()) + 1
    if len(checked[1]) and checked[1].max() >= num_classes:
        raise UsageError(f"{where[1]}: label {checked[1].max()} is not a class of the training "
                         f"split ({where[0]} has labels 0..{num_classes - 1}).")
    return checked[0].astype(np.int32), checked[1].astype(np.int32)


_FINGERPRINT_BLOCKS = 16
_FINGERPRINT_BLOCK_BYTES = 1 << 16


def file_fingerprint(path: str | os.PathLike) -> str:
    """``"<size> bytes, sha256 <16 hex>"`` of a file's size and of up to 16 evenly spaced
    64 KiB blocks (the whole file up to 1 MiB): another file of the same size almost
    surely differs in a sampled block, and no more than 1 MiB is read."""
    size = os.path.getsize(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= _FINGERPRINT_BLOCKS * _FINGERPRINT_BLOCK_BYTES:
            digest.update(f.read())
        else:
            for k in range(_FINGERPRINT_BLOCKS):  # The first block to the last.
                f.seek(k * (size - _FINGERPRINT_BLOCK_BYTES) // (_FINGERPRINT_BLOCKS - 1))
                digest.update(f.read(_FINGERPRINT_BLOCK_BYTES))
    return f"{size} bytes, sha256 {digest.hexdigest()[:16]}"


def _files_fingerprint(named: list[tuple[str, str]]) -> str:
    """One digest over ``(name, file_fingerprint)`` pairs."""
    digest = hashlib.sha256()
    for name, fingerprint in named:
        digest.update(f"{name}\0{fingerprint}\0".encode())
    return digest.hexdigest()[:16]


def _identity(path: str | os.PathLike | None, fingerprint: str) -> dict[str, str]:
    return {"data_path": None if path is None else os.path.abspath(os.fspath(path)),
            "data_fingerprint": fingerprint}


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

    @abc.abstractmethod
    def _load_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """Returns the (train, eval) labels (see `_check_labels`), or a clear error."""

    @functools.cached_property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self._load()

    @functools.cached_property
    def _labels(self) -> tuple[np.ndarray, np.ndarray]:
        return self._load_labels()

    def image_shape(self) -> Shape:
        return tuple(int(d) for d in self._arrays[0].shape[1:])

    def num_classes(self) -> int:
        return int(self._labels[0].max()) + 1

    def split(self, training: bool, seed: int, labels: bool = False) -> Split:
        part = 0 if training else 1
        images = tf.constant(self._arrays[part])
        classes = tf.constant(self._labels[part]) if labels else None

        def decode(indices: tf.data.Dataset) -> tf.data.Dataset:
            if classes is None:
                return indices.map(lambda i: tf.gather(images, i), num_parallel_calls=_AUTOTUNE)
            return indices.map(lambda i: (tf.gather(images, i), tf.gather(classes, i)),
                               num_parallel_calls=_AUTOTUNE)

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

    @staticmethod
    def _split(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.random.default_rng(_DIGITS_SPLIT_SEED).permutation(len(values))
        return values[order[:-_DIGITS_NUM_EVAL]], values[order[-_DIGITS_NUM_EVAL:]]

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_digits  # Heavy import, only needed here.

        return self._split(
            np.round(load_digits().images * (255.0 / 16.0)).astype(np.uint8)[..., None])

    def identity(self) -> dict[str, str]:
        train, test = self._arrays  # 1797 8x8 images: hashing them all costs nothing.
        digest = hashlib.sha256(train.tobytes() + test.tobytes()).hexdigest()[:16]
        return {"data_path": "sklearn.datasets.load_digits",
                "data_fingerprint": f"{len(train)} + {len(test)} images, sha256 {digest}"}

    def _load_labels(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_digits

        train, test = self._split(load_digits().target)
        return _check_labels(train, test, (len(train), len(test)), ("digits", "digits"))


def _existing_path(data_dir: str | None, dataset: str, what: str) -> pathlib.Path:
    """`data_dir` as a path that exists, or a clear error."""
    if data_dir is None:
        raise UsageError(f"Dataset {dataset!r} needs data_dir: {what}.")
    path = pathlib.Path(data_dir).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"Dataset {dataset!r}: {path} does not exist; --data_dir must "
                                f"be {what}.")
    return path


# IDX (LeCun's MNIST format): a big-endian header of two zero bytes, a type code and
# the number of dimensions, one 32-bit size per dimension, then the values.
_IDX_TYPES = {0x08: "unsigned bytes", 0x09: "signed bytes", 0x0B: "int16", 0x0C: "int32",
              0x0D: "float32", 0x0E: "float64"}
_IDX_UBYTE = 0x08


def _read_idx_header(path: pathlib.Path, stream: BinaryIO, ndims: int, what: str
                     ) -> tuple[int, ...]:
    """Parses an IDX header, checks it holds `ndims`-dimensional unsigned bytes
    (`what` describes them); returns the sizes."""
    magic = stream.read(4)
    if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] not in _IDX_TYPES:
        raise UsageError(f"{path}: not an IDX file (magic bytes {magic.hex() or 'missing'}, "
                         f"expected 0000{_IDX_UBYTE:02x}{ndims:02x} for {what}).")
    if magic[2] != _IDX_UBYTE or magic[3] != ndims:
        raise UsageError(
            f"{path}: an IDX file of {magic[3]}-dimensional {_IDX_TYPES[magic[2]]}, expected "
            f"{what}: {ndims}-dimensional unsigned bytes (magic 0000{_IDX_UBYTE:02x}{ndims:02x}). "
            "Is it the right file?")
    sizes = stream.read(4 * ndims)
    if len(sizes) < 4 * ndims:
        raise UsageError(f"{path}: IDX header cut short ({4 + len(sizes)} bytes).")
    dims = struct.unpack(f">{ndims}I", sizes)
    if 0 in dims:
        raise UsageError(f"{path}: IDX header has a zero dimension ({'x'.join(map(str, dims))}).")
    return dims


def _read_idx(path: pathlib.Path, ndims: int, what: str, values: bool
              ) -> tuple[tuple[int, ...], bytes]:
    """The header's sizes and, if `values`, the values, checked to match it."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            dims = _read_idx_header(path, stream, ndims, what)
            data = stream.read() if values else b""
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError.
        raise UsageError(f"{path}: cannot read IDX file: {error}") from error
    expected = int(np.prod(dims))
    if values and len(data) != expected:
        raise UsageError(
            f"{path}: IDX header announces {'x'.join(map(str, dims))} = {expected} bytes of "
            f"values, the file has {len(data)}{' (truncated?)' if len(data) < expected else ''}."
        )
    return dims, data


class _IdxSource(_ArraySource):
    """MNIST in its original IDX format: train-images / t10k-images (eval).

    Each file's header must describe 3-dimensional unsigned bytes (count, rows,
    cols) and the file must hold exactly that many; both splits must have the
    same image size.  A labels file next to the images (``train-labels-idx1-ubyte``,
    ``t10k-labels-...``; read for class-conditional models only, which need both)
    must be 1-dimensional unsigned bytes with one label per image: a count that
    disagrees means the files do not belong together.
    """

    def __init__(self, data_dir: str | None) -> None:
        what = "a folder with train-images-idx3-ubyte[.gz] and t10k-images-idx3-ubyte[.gz]"
        folder = _existing_path(data_dir, "mnist_idx", what)
        self._folder = folder
        self._train, self._eval = (self._find(folder, f"{stem}-images-idx3-ubyte", True)
                                   for stem in ("train", "t10k"))

    @staticmethod
    def _find(folder: pathlib.Path, stem: str, required: bool) -> pathlib.Path | None:
        candidates = [folder / f"{stem}{ext}" for ext in ("", ".gz")]
        for path in candidates:
            if path.is_file():
                return path
        if required:
            raise FileNotFoundError(
                f"mnist_idx: neither {candidates[0]} nor {candidates[1]} exists.")
        return None

    def identity(self) -> dict[str, str]:
        files = [path for stem in ("train", "t10k") for kind in ("images-idx3", "labels-idx1")
                 if (path := self._find(self._folder, f"{stem}-{kind}-ubyte", False))]
        return _identity(self._folder, _files_fingerprint(
            [(path.name, file_fingerprint(path)) for path in files]))

    def image_shape(self) -> Shape:
        (_, rows, cols), _ = _read_idx(self._train, 3, "images", values=False)
        return rows, cols, 1

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        arrays = []
        for stem, path in (("train", self._train), ("t10k", self._eval)):
            (count, rows, cols), data = _read_idx(path, 3, "images", values=True)
            arrays.append(np.frombuffer(data, np.uint8).reshape(count, rows, cols, 1))
            labels = self._find(self._folder, f"{stem}-labels-idx1-ubyte", False)
            if labels is not None:
                (num_labels,), _ = _read_idx(labels, 1, "labels", values=True)
                if num_labels != count:
                    raise UsageError(
                        f"mnist_idx: {path} has {count} images but {labels} has {num_labels} "
                        "labels: the files do not belong together (a partial download or a "
                        "mix of datasets?). Replace them with matching files.")
        if arrays[0].shape[1:] != arrays[1].shape[1:]:
            raise UsageError(
                f"mnist_idx: {self._train} has {arrays[0].shape[1:3]} images but "
                f"{self._eval} has {arrays[1].shape[1:3]}."
            )
        return arrays[0], arrays[1]

    def _load_labels(self) -> tuple[np.ndarray, np.ndarray]:
        labels, paths = [], []
        for stem, images in (("train", self._arrays[0]), ("t10k", self._arrays[1])):
            path = self._find(self._folder, f"{stem}-labels-idx1-ubyte", False)
            if path is None:
                raise FileNotFoundError(
                    f"mnist_idx: class labels need {self._folder / stem}-labels-idx1-ubyte[.gz] "
                    "(MNIST's label file) next to the images; it is missing.")
            _, data = _read_idx(path, 1, "labels", values=True)  # Count checked by _load.
            labels.append(np.frombuffer(data, np.uint8))
            paths.append(str(path))
        return _check_labels(labels[0], labels[1], (len(self._arrays[0]), len(self._arrays[1])),
                            (paths[0], paths[1]))


_NPZ_KEYS = (("train", "test"), ("x_train", "x_test"))
_NPZ_LABEL_KEYS = (("y_train", "y_test"), ("train_labels", "test_labels"))


def _validated_npz_array(array: np.ndarray, path: pathlib.Path, key: str) -> np.ndarray:
    """Checks pixel values are integers in [0, 255]; returns a uint8 NHWC array."""
    where = f"{path}: array {key!r}"
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 2, 3, 4) or 0 in array.shape:
        raise UsageError(
            f"{where} has shape {array.shape}; expected NHW or NHWC with 1-4 channels."
        )
    if array.dtype == np.uint8:
        return array
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise UsageError(f"{where} has dtype {array.dtype}; expected uint8, integers or floats.")
    if np.issubdtype(array.dtype, np.floating):
        nan, inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
        if nan or inf:
            raise UsageError(f"{where} contains {nan} NaN and {inf} infinite values.")
        if not np.array_equal(array, np.round(array)):
            raise UsageError(f"{where} has non-integer values; expected raw pixel values 0..255.")
    low, high = array.min(), array.max()
    if low < 0 or high > 255:
        raise UsageError(f"{where} has values in [{low}, {high}], out of the range [0, 255].")
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
        raise UsageError(f"{path}: {low!r} has values in [0, 1] but {high!r} goes up to "
                         f"{int(max(a.max() for a in arrays))}; both splits must hold pixel "
                         "values 0..255 (multiply [0, 1] intensities by 255).")
    if all(unit):
        logging.warning("%s: every value is 0 or 1; they are read as 8-bit pixel values 0..255 "
                        "(nearly black images). If they are intensities, multiply by 255.", path)


class _NpzSource(_ArraySource):
    """A .npz file (data_dir is its path) with arrays train/test or x_train/x_test,
    and for class labels y_train/y_test or train_labels/test_labels."""

    def __init__(self, data_dir: str | None) -> None:
        self._path = _existing_path(data_dir, "npz", "the path of a .npz file")

    def identity(self) -> dict[str, str]:
        return _identity(self._path, file_fingerprint(self._path))

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        try:
            archive = np.load(self._path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise UsageError(f"{self._path}: not a readable .npz file: {error}") from error
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise UsageError(f"{self._path}: a single .npy array, expected a .npz archive.")
        with archive:
            keys = next((pair for pair in _NPZ_KEYS if set(pair) <= set(archive.files)), None)
            if keys is None:
                raise UsageError(
                    f"{self._path}: has arrays {sorted(archive.files)}; expected "
                    + " or ".join("/".join(pair) for pair in _NPZ_KEYS)
                    + "."
                )
            train, test = (_validated_npz_array(archive[key], self._path, key) for key in keys)
            self._label_arrays = next(
                ((pair, archive[pair[0]], archive[pair[1]]) for pair in _NPZ_LABEL_KEYS
                 if set(pair) <= set(archive.files)), None)
        _check_npz_splits_agree([train, test], keys, self._path)
        if train.shape[1:] != test.shape[1:]:
            raise UsageError(
                f"{self._path}: {keys[0]!r} images are {train.shape[1:]}, "
                f"{keys[1]!r} images are {test.shape[1:]}."
            )
        return train, test

    def _load_labels(self) -> tuple[np.ndarray, np.ndarray]:
        counts = (len(self._arrays[0]), len(self._arrays[1]))  # Loads the archive.
        if self._label_arrays is None:
            raise UsageError(f"{self._path}: no class labels; a class-conditional model needs "
                             "arrays " + " or ".join("/".join(p) for p in _NPZ_LABEL_KEYS) + ".")
        keys, train, test = self._label_arrays
        return _check_labels(train, test, counts, tuple(f"{self._path}: {k!r}" for k in keys))


# --- a folder of image files ----------------------------------------------------------

_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_FINGERPRINT_FILES = 64  # Files whose bytes enter an image folder's fingerprint.
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
      paths: dataset of file paths, or of (path, label) pairs: then (image, label)
        pairs come out.
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

    def decode_chunk(chunk: tf.Tensor, labels: tf.Tensor | None = None) -> tf.data.Dataset:
        files = tf.data.Dataset.from_tensor_slices(chunk)
        decoded = files.map(lambda p: (p, decode_image_bytes(tf.io.read_file(p), channels)))
        padded = decoded.ignore_errors().concatenate(no_image.repeat())
        images = tf.data.Dataset.zip(files, padded).map(check)
        if labels is None:
            return images
        return tf.data.Dataset.zip(images, tf.data.Dataset.from_tensor_slices(labels))

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


@dataclasses.dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says: the image TensorFlow's decoder would produce.

    `channels` is what `decode_image_bytes(..., channels=0)` yields (a palette PNG
    with transparency gives 4, a CMYK JPEG 3); `bits` is the sample depth.
    """

    height: int
    width: int
    channels: int
    bits: int


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # By IHDR colour type.
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _png_header(stream: BinaryIO) -> ImageHeader | None:
    chunk = stream.read(25)  # IHDR: length, type, width, height, depth, colour type, ..., CRC.
    if len(chunk) < 25 or chunk[4:8] != b"IHDR":
        return None
    width, height, bits, colour = struct.unpack(">IIBB", chunk[8:18])
    if colour not in _PNG_CHANNELS:
        return None
    channels = _PNG_CHANNELS[colour]
    while colour == 3:  # A palette with a tRNS chunk decodes to RGBA.
        head = stream.read(8)
        if len(head) < 8 or head[4:] in (b"IDAT", b"IEND"):
            break
        if head[4:] == b"tRNS":
            channels = 4
            break
        stream.seek(struct.unpack(">I", head[:4])[0] + 4, os.SEEK_CUR)
    return ImageHeader(height, width, channels, bits)


def _jpeg_header(stream: BinaryIO) -> ImageHeader | None:
    while True:
        byte = stream.read(1)
        while byte == b"\xff":  # Fill bytes before a marker.
            byte = stream.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker in (0x01, *range(0xD0, 0xD9)):  # Markers without a length.
            continue
        length = stream.read(2)
        if len(length) < 2:
            return None
        if marker in _JPEG_SOF:
            frame = stream.read(6)
            if len(frame) < 6:
                return None
            bits, height, width, components = struct.unpack(">BHHB", frame)
            return ImageHeader(height, width, 1 if components == 1 else 3, bits)
        stream.seek(struct.unpack(">H", length)[0] - 2, os.SEEK_CUR)
        if stream.read(1) != b"\xff":
            return None


def read_image_header(path: str) -> ImageHeader:
    """The header of a PNG or JPEG file (by content, not name); ValueError naming
    `path` if it is neither or its header is damaged."""
    with open(path, "rb") as stream:
        start = stream.read(8)
        header = None
        if start == _PNG_SIGNATURE:
            header = _png_header(stream)
        elif start[:2] == b"\xff\xd8":
            stream.seek(2)
            if stream.read(1) == b"\xff":
                header = _jpeg_header(stream)
    if header is None or min(header.height, header.width) == 0:
        raise UsageError(f"image_folder: {path} is not a readable PNG or JPEG file (damaged or "
                         "missing header); remove or replace it.")
    return header


def check_image_files(paths: list[str], channels: int | None) -> Shape:
    """The (H, W, C) images of `paths` decode to, under the image_folder rule.

    The rule (every file's header is read first, so no run starts on data it
    would reinterpret): every image has the size of the first file (no
    cropping or resizing) and at most 8 bits per sample (16-bit PNGs and 12-bit
    JPEGs are refused, not rescaled; 1-, 2- and 4-bit PNGs expand exactly).  Channels: with `channels` None (inferred),
    every file must have the first file's channel count; an explicit
    `channels` (1-4) converts every file to it, with one warning that says how
    many files were converted.  Disagreeing files give a ValueError naming the
    first of them, how many there are, and the fix.  The result is cached per
    process for unchanged files (same paths, sizes and modification times).
    """
    try:
        stats = [os.stat(path) for path in paths]
        return _check_image_files(
            tuple((path, st.st_size, st.st_mtime_ns) for path, st in zip(paths, stats)), channels)
    except OSError as error:
        raise UsageError(f"image_folder: cannot read {error.filename}: {error.strerror}.") from error


@functools.lru_cache(maxsize=8)
def _check_image_files(files: tuple[tuple[str, int, int], ...], channels: int | None) -> Shape:
    paths = [path for path, _, _ in files]
    headers = [read_image_header(path) for path in paths]
    first = headers[0]

    def refuse(bad: list[int], what: Callable[[ImageHeader], str], fix: str) -> None:
        if bad:
            i = bad[0]
            raise UsageError(f"image_folder: {paths[i]} {what(headers[i])} ({len(bad)} of "
                             f"{len(paths)} files are like it); {fix}")

    refuse([i for i, h in enumerate(headers) if (h.height, h.width) != (first.height, first.width)],
           lambda h: f"is {h.height}x{h.width} pixels but the first file {paths[0]} is "
                     f"{first.height}x{first.width}",
           "images are not cropped or resized: give every file the same size.")
    refuse([i for i, h in enumerate(headers) if h.bits > 8],
           lambda h: f"has {h.bits} bits per sample",
           "only images of up to 8 bits per sample are read (deeper ones would be rescaled): "
           "convert the files to 8 bits per sample.")
    if channels is None:
        refuse([i for i, h in enumerate(headers) if h.channels != first.channels],
               lambda h: f"has {h.channels} channel(s) but the first file {paths[0]} has "
                         f"{first.channels}",
               f"pass --channels={first.channels} (or another count) to convert every image to "
               "that many channels.")
        return first.height, first.width, first.channels
    converted = [path for path, h in zip(paths, headers) if h.channels != channels]
    if converted:
        logging.warning("image_folder: converted %d of %d files to %d channel(s) "
                        "(--channels=%d), e.g. %s.", len(converted), len(paths), channels,
                        channels, converted[0])
    return first.height, first.width, channels


class _FolderSource(Source):
    """PNG/JPEG files under data_dir/train/** and data_dir/test/** (class folders allowed).

    Without a test/ folder, every 10th training file by sorted path is held out.
    Every file must follow `check_image_files`' rule (checked when the image
    shape is first asked for, before any image is decoded).  Class labels: the
    sub-folder of train/ (or test/) a file is in, `data_dir/train/<class>/...`;
    the classes are train/'s sub-folders with images, in sorted order.
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
            raise UsageError(f"image_folder: {train_dir} has too few images to hold some out.")
        self._train = train
        self._roots = (train_dir, test_dir if test_dir.is_dir() else train_dir)
        self._channels: int | None = None

    def set_channels(self, channels: int) -> None:
        self._channels = channels

    def identity(self) -> dict[str, str]:
        """Counts, every file's relative path, and the bytes of up to 64 evenly spaced
        files (`file_fingerprint`)."""
        root = self._roots[0].parent
        paths = self._train + self._eval
        sampled = set(paths[::max(1, len(paths) // _FINGERPRINT_FILES)])
        digest = _files_fingerprint(
            [(os.path.relpath(p, root), file_fingerprint(p) if p in sampled else "")
             for p in paths])
        return _identity(root, f"{len(self._train)} + {len(self._eval)} files, sha256 {digest}")

    @functools.cached_property
    def _shape(self) -> Shape:
        return check_image_files(self._train + self._eval, self._channels)

    def image_shape(self) -> Shape:
        return self._shape

    @staticmethod
    def _class_names(paths: list[str], root: pathlib.Path) -> list[str]:
        """The class (first sub-folder under `root`) of each path."""
        names = []
        for path in paths:
            parts = pathlib.Path(path).relative_to(root).parts
            if len(parts) < 2:
                raise UsageError(
                    f"image_folder: {path} is not in a class sub-folder; class labels need "
                    f"{root}/<class>/<image> (move every image into its class's folder).")
            names.append(parts[0])
        return names

    @functools.cached_property
    def _classes(self) -> tuple[list[str], tuple[list[int], list[int]]]:
        """Sorted class names and the labels of the (train, eval) files."""
        train = self._class_names(self._train, self._roots[0])
        classes = sorted(set(train))
        index = {name: k for k, name in enumerate(classes)}
        held_out = self._class_names(self._eval, self._roots[1])
        unknown = sorted(set(held_out) - set(classes))
        if unknown:
            raise UsageError(
                f"image_folder: {self._roots[1]} has class folder(s) {unknown} that "
                f"{self._roots[0]} lacks (its classes: {classes}); every held-out class must "
                "be a training class.")
        return classes, ([index[n] for n in train], [index[n] for n in held_out])

    def num_classes(self) -> int:
        return len(self._classes[0])

    def split(self, training: bool, seed: int, labels: bool = False) -> Split:
        height, width, channels = self._shape
        paths = self._train if training else self._eval
        records = (tf.data.Dataset.from_tensor_slices(
            (paths, np.asarray(self._classes[1][0 if training else 1], np.int32)))
            if labels else tf.data.Dataset.from_tensor_slices(paths))
        return Split(
            records=records,
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
    label: str | None = None  # The class label feature, if the dataset has one.


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

    def identity(self) -> dict[str, str]:
        """The prepared dataset's name, version and split sizes (TFDS checks its files)."""
        info = self._builder().info
        splits = ", ".join(f"{name} {split.num_examples}"
                           for name, split in sorted(info.splits.items()))
        return _identity(self._data_dir, f"{info.full_name}" + (f" ({splits})" if splits else ""))

    def num_classes(self) -> int:
        if self._spec.label is None:
            with_labels = sorted(name for name, spec in _TFDS_SPECS.items() if spec.label)
            raise UsageError(
                f"Dataset {self._name!r} has no class labels, so it cannot train a "
                f"class-conditional model (--conditional); TFDS datasets with labels: "
                f"{', '.join(with_labels)} (or use image_folder class sub-folders, npz or "
                "mnist_idx).")
        return int(self._builder().info.features[self._spec.label].num_classes)

    def split(self, training: bool, seed: int, labels: bool = False) -> Split:
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
            return _decode_each(encoded, lambda x: decode_image_bytes(x, channels))

        if labels:
            self.num_classes()  # A clear error for a dataset without labels.
            label = self._spec.label
            records = features.map(lambda ex: (ex["image"], tf.cast(ex[label], tf.int32)))
        else:
            records = features.map(lambda example: example["image"])
        return Split(
            records=records,
            decode=decode,
            example_bytes=None if None in stored_shape else int(np.prod(stored_shape)),
            cheap_records=False,
        )


_LSUN_GEOMETRY = Geometry(resize_to=96, random_crop=True)  # Paper 4.1, as in DCGAN.
_TFDS_SPECS = {
    "mnist": _TfdsSpec("mnist", "test", (28, 28, 1), label="label"),
    "cifar10": _TfdsSpec("cifar10", "test", (32, 32, 3), flip=True, label="label"),
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


def get_source(name: str, data_dir: str | None, channels: int | None = None) -> Source:
    """The source registered as `name`, reading from `data_dir`, with `channels`
    channels if given (see `Source.set_channels`).

    Raises:
      ValueError: unknown name (the message lists the valid ones) or unusable data.
      FileNotFoundError: `data_dir` or a file the dataset needs is missing.
    """
    if name not in _REGISTRY:
        raise UsageError(f"Unknown dataset {name!r}; valid names: {', '.join(NAMES)}.")
    source = _REGISTRY[name](os.fspath(data_dir) if data_dir is not None else None)
    if channels is not None:
        source.set_channels(channels)
    return source
