"""MNIST in its original IDX files (``mnist_idx``): train-images / t10k-images in
``data_dir``, .gz or not, and their label files for class labels."""

from __future__ import annotations

import gzip
import pathlib
import struct
from typing import BinaryIO

import numpy as np

from tfnvp.errors import UsageError
from trainers.sources.base import (ArraySource, Shape, check_labels, data_identity,
                                   existing_path, file_fingerprint, files_fingerprint)


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


class IdxSource(ArraySource):
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
        folder = existing_path(data_dir, "mnist_idx", what)
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
        return data_identity(self._folder, files_fingerprint(
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
        return check_labels(labels[0], labels[1], (len(self._arrays[0]), len(self._arrays[1])),
                           (paths[0], paths[1]))
