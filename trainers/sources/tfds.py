"""TensorFlow Datasets sources (mnist, cifar10, imagenet32, imagenet64, celeba, lsun_*):
each one's `TfdsSpec` (splits, shape, the paper's geometry and flip), prepared (downloaded if
needed) in ``data_dir``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from tfnvp.errors import UsageError
from trainers import tfds_prepare
from trainers.sources.base import (Geometry, Shape, Source, Split, data_identity,
                                   decode_image_bytes)


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
    """A TFDS dataset: its name, splits, output shape, geometry and flip default."""

    name: str
    eval_split: str
    shape: Shape
    geometry: Geometry = Geometry()
    flip: bool = False
    train_split: str = "train"
    label: str | None = None  # The class label feature, if the dataset has one.


class TfdsSource(Source):
    """A TensorFlow Datasets dataset, downloaded and prepared in data_dir if needed.

    Images are read still encoded (SkipDecoding) and decoded by `decode_image_bytes`,
    like image files.
    """

    def __init__(self, name: str, spec: TfdsSpec, data_dir: str | None) -> None:
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
        return data_identity(self._data_dir,
                             f"{info.full_name}" + (f" ({splits})" if splits else ""))

    def num_classes(self) -> int:
        if self._spec.label is None:
            with_labels = sorted(name for name, spec in TFDS_SPECS.items() if spec.label)
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


def _decode_each(records: tf.data.Dataset, decode_one: Callable[[tf.Tensor], tf.Tensor]
                 ) -> tf.data.Dataset:
    """Maps each record to its image, or each (record, label) pair to (image, label)."""

    def one(record: tf.Tensor, *label: tf.Tensor):
        image = decode_one(record)
        return (image, *label) if label else image

    return records.map(one, num_parallel_calls=tf.data.AUTOTUNE)


_LSUN_GEOMETRY = Geometry(resize_to=96, random_crop=True)  # Paper 4.1, as in DCGAN.
TFDS_SPECS = {
    "mnist": TfdsSpec("mnist", "test", (28, 28, 1), label="label"),
    "cifar10": TfdsSpec("cifar10", "test", (32, 32, 3), flip=True, label="label"),
    # Stored at 32x32 / 64x64; the resize is the identity then, and copes with other sizes.
    "imagenet32": TfdsSpec(
        "downsampled_imagenet/32x32", "validation", (32, 32, 3), Geometry(resize_to=32)
    ),
    "imagenet64": TfdsSpec(
        "downsampled_imagenet/64x64", "validation", (64, 64, 3), Geometry(resize_to=64)
    ),
    # Paper 4.1: "an approximately central crop of 148 x 148" resized to 64x64; the box of
    # the authors' release (tensorflow/models research/real_nvp: image[40:188, 15:163] of the
    # 218x178 images), 5 rows below the exact centre.
    "celeba": TfdsSpec(
        "celeb_a", "test", (64, 64, 3), Geometry(crop_box=(40, 15, 148, 148), resize_to=64),
        flip=True
    ),
    "lsun_bedroom": TfdsSpec("lsun/bedroom", "validation", (64, 64, 3), _LSUN_GEOMETRY, flip=True),
    "lsun_tower": TfdsSpec("lsun/tower", "validation", (64, 64, 3), _LSUN_GEOMETRY, flip=True),
    "lsun_church": TfdsSpec("lsun/church_outdoor", "validation", (64, 64, 3), _LSUN_GEOMETRY,
                            flip=True),
}


TFDS_NAMES: tuple[str, ...] = tuple(sorted(TFDS_SPECS))
