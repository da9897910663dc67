"""A .npz file of uint8 images (``npz``): arrays train/test or x_train/x_test, and
y_train/y_test or train_labels/test_labels for class labels."""

from __future__ import annotations

import pathlib
import zipfile

import numpy as np
from absl import logging

from tfnvp.errors import UsageError
from trainers.sources.base import (ArraySource, check_labels, data_identity, existing_path,
                                   file_fingerprint)


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


class NpzSource(ArraySource):
    """A .npz file (data_dir is its path) with arrays train/test or x_train/x_test,
    and for class labels y_train/y_test or train_labels/test_labels."""

    def __init__(self, data_dir: str | None) -> None:
        self._path = existing_path(data_dir, "npz", "the path of a .npz file")

    def identity(self) -> dict[str, str]:
        return data_identity(self._path, file_fingerprint(self._path))

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
        return check_labels(train, test, counts, tuple(f"{self._path}: {k!r}" for k in keys))
