"""A folder of PNG/JPEG files (``image_folder``): ``data_dir/train/**`` and
``data_dir/test/**``, class labels from class sub-folders; the image headers are read
(`read_image_header`, `check_image_files`) before any image is decoded."""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import struct
from collections.abc import Callable
from typing import BinaryIO

import numpy as np
import tensorflow as tf
from absl import logging

from tfnvp.errors import UsageError
from trainers.sources.base import (Shape, Source, Split, data_identity, decode_image_bytes,
                                   existing_path, file_fingerprint, files_fingerprint)


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
        num_parallel_calls=tf.data.AUTOTUNE,
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


class FolderSource(Source):
    """PNG/JPEG files under data_dir/train/** and data_dir/test/** (class folders allowed).

    Without a test/ folder, every 10th training file by sorted path is held out.
    Every file must follow `check_image_files`' rule (checked when the image
    shape is first asked for, before any image is decoded).  Class labels: the
    sub-folder of train/ (or test/) a file is in, `data_dir/train/<class>/...`;
    the classes are train/'s sub-folders with images, in sorted order.
    """

    def __init__(self, data_dir: str | None) -> None:
        root = existing_path(data_dir, "image_folder", "a folder with train/ and optionally test/")
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
        digest = files_fingerprint(
            [(os.path.relpath(p, root), file_fingerprint(p) if p in sampled else "")
             for p in paths])
        return data_identity(root, f"{len(self._train)} + {len(self._eval)} files, sha256 {digest}")

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
