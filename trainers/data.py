"""Input pipelines for training and evaluating Real NVP: batches of 8-bit images.

Every source of `trainers/sources/` goes through the same steps:

  records --shard--> [shuffle] --decode--> [cache, shuffle] --repeat--> fit, flip,
  seed --batch--> prefetch

* Elements: dicts of the model's batch keys (`tfnvp.models.keras_fit.unpack_batch`,
  `objective`'s arguments): "x", the uint8 images [B, H, W, C]; "seed", one
  stateless seed per image (int64 [B, 2]); with `labels=True`, "labels", the
  int32 class labels [B] (for class-conditional models), each travelling with
  its image through the same steps.
* Dequantization is the model's (its dequantizer, `model.objective(**batch)`):
  the pipelines add no noise; image i's seed is the one its noise is drawn from,
  x = pixel + u, u ~ q(u | pixel) (uniform: U[0, 1)), so x lies in [0, 256).
  The random crops, flips and noise seed of example i come from stateless ops
  seeded with fold_in(seed, i), so a pipeline is deterministic given its seed.
  For evaluation the seed is `eval_seed`, so held-out images and their seeds
  are a pure function of (eval_seed, example index): identical across runs and
  batch sizes.
* Shuffling: sources whose records are indices or paths shuffle a whole epoch of
  them; when the decoded split fits in memory (< 2 GiB) and `cache` is on, the
  decoded images are cached and a whole epoch of them is shuffled (cached tensors
  are shared, not copied); large TFDS datasets stream through `shuffle_buffer`.
* Flips: `flip=None` uses the paper's choice (cifar10, celeba and every LSUN category).
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf
from absl import logging

from tfnvp.errors import UsageError

from trainers import sources

_AUTOTUNE = tf.data.AUTOTUNE
_CACHE_LIMIT_BYTES = 2 * 1024**3


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What data to read and how to batch it.

    Attributes:
      dataset: a name of `sources.NAMES`.
      data_dir: folder or file for on-disk datasets; TFDS data_dir for TFDS ones.
      batch_size: global training batch size.
      eval_batch_size: evaluation batch size.
      flip: random horizontal flips in training; None for the paper's choice.
      seed: seed of the training shuffling, crops, flips and noise.
      eval_seed: seed of the fixed evaluation dequantization noise.
      shuffle_buffer: shuffle buffer of streamed (uncached TFDS) training data.
      cache: cache decoded images in memory when they fit (< 2 GiB).
      max_eval_examples: evaluate on this many held-out examples only, spread evenly
        over the split (every k-th) when its size is known, else the first ones.
      channels: image channels (1-4) the images are converted to (image_folder) or must
        have (other datasets); None: the dataset's own, which all files must agree on.
      labels: yield the class labels too ("labels"; the `sources` package
        docstring says where each dataset's come from); a clear error for a dataset
        without labels.
    """

    dataset: str
    data_dir: str | None = None
    batch_size: int = 64
    eval_batch_size: int = 256
    flip: bool | None = None
    seed: int = 0
    eval_seed: int = 1234
    shuffle_buffer: int = 10_000
    cache: bool = True
    max_eval_examples: int | None = None
    channels: int | None = None
    labels: bool = False

    def __post_init__(self) -> None:
        if self.channels is not None and self.channels not in (1, 2, 3, 4):
            raise UsageError(f"DataConfig.channels must be 1, 2, 3, 4 or None, got {self.channels}.")
        for name in ("batch_size", "eval_batch_size", "shuffle_buffer"):
            if getattr(self, name) < 1:
                raise UsageError(f"DataConfig.{name} must be positive, got {getattr(self, name)}.")
        if self.max_eval_examples is not None and self.max_eval_examples < 1:
            raise UsageError(
                "DataConfig.max_eval_examples must be positive or None, "
                f"got {self.max_eval_examples}."
            )


def from_record(record: dict, **overrides) -> DataConfig:
    """The `DataConfig` a run recorded (config.json's "input"), with `overrides`; keys
    that are not `DataConfig` fields (as in runs of other versions) are left out."""
    fields = {field.name for field in dataclasses.fields(DataConfig)}
    return DataConfig(**{**{k: v for k, v in record.items() if k in fields}, **overrides})


def _source(config: DataConfig) -> sources.Source:
    return sources.get_source(config.dataset, config.data_dir, config.channels)


def image_shape(config: DataConfig) -> tuple[int, int, int]:
    """(H, W, C) of the images the pipelines yield, without loading data when possible."""
    return _source(config).image_shape()


def identity(config: DataConfig) -> dict[str, str]:
    """Where the dataset is and a cheap fingerprint of it (`sources.Source.identity`)."""
    return _source(config).identity()


def num_classes(config: DataConfig) -> int:
    """Number of classes of the dataset's labels; a ValueError naming the dataset and
    the problem when it has none (or they are unusable)."""
    return _source(config).num_classes()


def prepare(config: DataConfig) -> None:
    """Gets the dataset ready to read (TFDS: downloads and prepares it), before a run
    writes anything; raises a clear error (e.g. `tfds_prepare.DatasetUnavailableError`,
    or a dataset without the labels `config.labels` asks for) if it cannot."""
    source = _source(config)
    if config.labels:
        source.num_classes()  # Before any download.
    source.prepare()


def _cardinality(records: tf.data.Dataset) -> int | None:
    size = int(records.cardinality())
    return size if size >= 0 else None


def _fits_in_memory(config: DataConfig, split: sources.Split, size: int | None) -> bool:
    if not config.cache or split.example_bytes is None or size is None:
        return False
    total = split.example_bytes * size
    if total > _CACHE_LIMIT_BYTES:
        logging.info("%s: not caching %.2f GiB of decoded images.", config.dataset, total / 2**30)
        return False
    logging.info("%s: caching %d decoded images (%.1f MiB).", config.dataset, size, total / 2**20)
    return True


def _example_seeds(base: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    """Three independent stateless seeds (crop, flip, noise) for example `index`."""
    return tf.random.experimental.stateless_split(
        tf.random.experimental.stateless_fold_in(base, index), num=3
    )


def _central_crop(image: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    top = (tf.shape(image)[0] - height) // 2
    left = (tf.shape(image)[1] - width) // 2
    return image[top : top + height, left : left + width]


def _resize_smaller_side(image: tf.Tensor, side: int) -> tf.Tensor:
    """Resizes (antialiased bilinear) so the smaller side is `side`; rounds to uint8."""
    size = tf.cast(tf.shape(image)[:2], tf.float32)
    new_size = tf.cast(tf.round(size * (side / tf.reduce_min(size))), tf.int32)
    resized = tf.image.resize(image, tf.maximum(new_size, side), antialias=True)
    return tf.saturate_cast(tf.round(resized), tf.uint8)


def _fit(
    image: tf.Tensor,
    shape: sources.Shape,
    geometry: sources.Geometry,
    random_crop_seed: tf.Tensor | None,
) -> tf.Tensor:
    """Applies `geometry` (see sources.Geometry) to a uint8 image of any size."""
    if geometry.crop_box is not None:
        top, left, height, width = geometry.crop_box
        image = image[top : top + height, left : left + width]
    if geometry.resize_to is not None:
        image = _resize_smaller_side(image, geometry.resize_to)
    if random_crop_seed is not None:
        image = tf.image.stateless_random_crop(image, shape, seed=random_crop_seed)
    else:
        image = _central_crop(image, shape[0], shape[1])
    return tf.ensure_shape(image, shape)


def _finish(
    images: tf.data.Dataset,
    source: sources.Source,
    base_seed: tuple[int, int],
    training: bool,
    flip: bool,
) -> tf.data.Dataset:
    """Fits and flips (if `flip`) each uint8 image with per-example seeds, and gives it
    its noise seed: an element {"x": image, "seed": seed} (and its "labels")."""
    shape = source.image_shape()
    base = tf.constant(base_seed, tf.int64)
    random_crop = training and source.geometry.random_crop

    def finish_one(index: tf.Tensor, element) -> dict[str, tf.Tensor]:
        image, label = element if isinstance(element, tuple) else (element, None)
        crop_seed, flip_seed, noise_seed = tf.unstack(_example_seeds(base, index))
        image = _fit(image, shape, source.geometry, crop_seed if random_crop else None)
        if flip:
            image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
        example = dict(x=image, seed=noise_seed)
        if label is not None:
            example["labels"] = label
        return example

    return images.enumerate().map(finish_one, num_parallel_calls=_AUTOTUNE)


def make_train_dataset(
    config: DataConfig, input_context: tf.distribute.InputContext | None = None
) -> tf.data.Dataset:
    """Infinite, shuffled, augmented batches: uint8 images [B, H, W, C] with their noise
    seeds (and with `config.labels` their labels; the module docstring).

    Args:
      config: the data configuration.
      input_context: as passed by `strategy.distribute_datasets_from_function`: the
        records are sharded by input pipeline and B is the per-replica batch size.
    """
    source = _source(config)
    split = source.split(training=True, seed=config.seed, labels=config.labels)
    records, batch_size, pipeline = split.records, config.batch_size, 0
    if input_context is not None:
        pipeline = input_context.input_pipeline_id
        records = records.shard(input_context.num_input_pipelines, pipeline)
        batch_size = input_context.get_per_replica_batch_size(config.batch_size)

    size = _cardinality(records)
    if _fits_in_memory(config, split, size):
        images = split.decode(records).cache().shuffle(size, seed=config.seed).repeat()
    else:
        buffer = size if split.cheap_records and size is not None else config.shuffle_buffer
        images = split.decode(records.shuffle(buffer, seed=config.seed).repeat())

    flip = source.flip_default if config.flip is None else config.flip
    logging.info(
        "%s: training batches of %d, flips %s.", config.dataset, batch_size, "on" if flip else "off"
    )
    batches = _finish(images, source, (config.seed, pipeline), training=True, flip=flip)
    return batches.batch(batch_size, drop_remainder=True).prefetch(_AUTOTUNE)


def _eval_split(config: DataConfig) -> tuple[sources.Source, sources.Split, tf.data.Dataset]:
    source = _source(config)
    split = source.split(training=False, seed=config.eval_seed, labels=config.labels)
    records = split.records
    if config.max_eval_examples is not None:
        size = _cardinality(records)
        if size is not None and size >= 2 * config.max_eval_examples:
            # Every k-th example: held-out folders are often sorted by class.
            records = records.shard(size // config.max_eval_examples, 0)
        records = records.take(config.max_eval_examples)
    return source, split, records


def make_eval_dataset(config: DataConfig) -> tf.data.Dataset:
    """One pass over the held-out split: uint8 images [B, H, W, C] with their noise
    seeds (and with `config.labels` their labels; the module docstring).

    No augmentation (central crops); the last partial batch is kept. The noise seed of
    example i is a function of (eval_seed, i) only.
    """
    source, split, records = _eval_split(config)
    images = split.decode(records)
    if _fits_in_memory(config, split, _cardinality(records)):
        images = images.cache()
    batches = _finish(images, source, (config.eval_seed, 0), training=False, flip=False)
    return batches.batch(config.eval_batch_size).prefetch(_AUTOTUNE)


def num_eval_examples(config: DataConfig) -> int:
    """Number of examples one pass of `make_eval_dataset(config)` yields."""
    _, _, records = _eval_split(config)
    size = _cardinality(records)
    if size is None:  # Unknown size: count the (still encoded) records.
        size = int(records.reduce(0, lambda count, _: count + 1))
    return size
