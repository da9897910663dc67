"""What every image source shares: `Source` (one dataset's shape, flip default, geometry and
splits), `Split` (records and how to decode them), `Geometry`, and the helpers the sources
use: the label check, the cheap data fingerprints, image-byte decoding, and `ArraySource`
(splits held in memory as uint8 arrays: digits, mnist_idx, npz).

A *source* describes one dataset: its output image shape, the Real NVP paper's
horizontal-flip choice for it, the geometry that fits decoded images to that shape,
and, per split, a `Split`: a dataset of cheap *records* in a fixed order (array
indices, file paths or encoded image bytes) plus the transformation that decodes
records into uint8 [h, w, c] images. `trainers/data.py` turns splits into shuffled,
augmented, dequantized batches; nothing here shuffles, augments or batches.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import hashlib
import os
import pathlib
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tfnvp.errors import UsageError


Shape = tuple[int, int, int]


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

    Applied in order: the crop `crop_box` = (top, left, height, width) (clamped to
    the image), a resize so that the smaller side is `resize_to` pixels
    (upscaling small images), then a crop to the output shape, random when training
    with `random_crop`, central otherwise. With the defaults, images must already
    have the output shape and the final crop is the identity.
    """

    crop_box: tuple[int, int, int, int] | None = None
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


#: The largest class index a label may be (labels travel as int32).
_MAX_LABEL = np.iinfo(np.int32).max - 1


def check_labels(train: np.ndarray, test: np.ndarray, counts: tuple[int, int],
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


def files_fingerprint(named: list[tuple[str, str]]) -> str:
    """One digest over ``(name, file_fingerprint)`` pairs."""
    digest = hashlib.sha256()
    for name, fingerprint in named:
        digest.update(f"{name}\0{fingerprint}\0".encode())
    return digest.hexdigest()[:16]


def data_identity(path: str | os.PathLike | None, fingerprint: str) -> dict[str, str]:
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


class ArraySource(Source):
    """A source whose two splits are uint8 NHWC numpy arrays held in memory."""

    @abc.abstractmethod
    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        """Returns the (train, eval) uint8 NHWC arrays, validated."""

    @abc.abstractmethod
    def _load_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """Returns the (train, eval) labels (see `check_labels`), or a clear error."""

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
                return indices.map(lambda i: tf.gather(images, i),
                                   num_parallel_calls=tf.data.AUTOTUNE)
            return indices.map(lambda i: (tf.gather(images, i), tf.gather(classes, i)),
                               num_parallel_calls=tf.data.AUTOTUNE)

        return Split(
            records=tf.data.Dataset.range(int(images.shape[0])),
            decode=decode,
            example_bytes=None,
            cheap_records=True,
        )


def existing_path(data_dir: str | None, dataset: str, what: str) -> pathlib.Path:
    """`data_dir` as a path that exists, or a clear error."""
    if data_dir is None:
        raise UsageError(f"Dataset {dataset!r} needs data_dir: {what}.")
    path = pathlib.Path(data_dir).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"Dataset {dataset!r}: {path} does not exist; --data_dir must "
                                f"be {what}.")
    return path
