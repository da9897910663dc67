"""Image sources for the trainer's input pipelines: where the uint8 images come from, one
module per kind of source (`base`: what they share; `digits`, `idx`, `npz`, `folder`,
`tfds`), and `get_source`, the registry of their names.

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

import functools
import os
from collections.abc import Callable

from tfnvp.errors import UsageError
from trainers.sources.base import Geometry, Shape, Source, Split
from trainers.sources.digits import DigitsSource
from trainers.sources.folder import FolderSource
from trainers.sources.idx import IdxSource
from trainers.sources.npz import NpzSource
from trainers.sources.tfds import TFDS_NAMES, TFDS_SPECS, TfdsSource

__all__ = ["Geometry", "NAMES", "Shape", "Source", "Split", "TFDS_NAMES", "get_source"]


_REGISTRY: dict[str, Callable[[str | None], Source]] = {
    "digits": DigitsSource,
    "mnist_idx": IdxSource,
    "image_folder": FolderSource,
    "npz": NpzSource,
    **{name: functools.partial(TfdsSource, name, spec) for name, spec in TFDS_SPECS.items()},
}
NAMES: tuple[str, ...] = tuple(sorted(_REGISTRY))


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
