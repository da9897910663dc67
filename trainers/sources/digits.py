"""scikit-learn's bundled 8x8 digits (``digits``): a fixed 1500/297 split, offline."""

from __future__ import annotations

import hashlib

import numpy as np

from trainers.sources.base import ArraySource, check_labels


_DIGITS_SPLIT_SEED = 0
_DIGITS_NUM_EVAL = 297


class DigitsSource(ArraySource):
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
        return check_labels(train, test, (len(train), len(test)), ("digits", "digits"))
