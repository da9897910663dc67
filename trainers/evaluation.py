"""Held-out bits/dim and sample grids of a Real NVP model.

Bits/dim are those of ``model.objective`` on the evaluation pipeline's uint8
images, each dequantized by the model from its own fixed seed (a function of
the evaluation seed and the example's index only, ``trainers/data.py``), in
evaluation mode: ``(-log p(x + u) + log q(u | x)) / (D ln 2)`` (uniform
dequantization: ``log q = 0``, exact for the dequantized data; a learned
dequantizer, ``--dequantization=variational``: the variational bound), averaged
over every example of the held-out split, with the standard error of that
mean.  The figures do not depend on ``--eval_batch_size``.

Evaluation runs in cross-replica context on the local device: evaluation mode
uses the model's batch-norm statistics, so it needs no communication, and only
the chief process evaluates during multi-worker training.

Which statistics: the debiased running averages of training
(``tfnvp.running_average``), or, after ``recalibrate``, exact averages over
``N`` fixed training batches (``FlowModel.recalibrate``).  The trainer
recalibrates before every evaluation and sample grid and checkpoints the
result; the checkpoint records it (``recalibration_batches``, 0 = running
averages), and ``--mode=eval`` / ``--mode=export`` of a checkpoint that was not
recalibrated recalibrate it first (unless ``--recalibration_batches=0``).

Which weights: a run trained with Polyak averaging (``--polyak_decay``) is
evaluated, sampled and recalibrated with its averaged weights
(``trainers/polyak.py``); eval and export of its checkpoints too
(``run_dir.restore_run``).

Class-conditional models (``num_classes``) are evaluated on ``-log p(x | y)``
with the held-out labels, recalibrated with the training labels, and their
sample grids have one row per class (row ``k``: samples of class ``k``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import numpy as np
import tensorflow as tf
from absl import logging

import tfnvp
from tfnvp.experiments import grid
from tfnvp.errors import UsageError
from tfnvp.models.keras_fit import unpack_batch

from trainers import data
from trainers import run_dir

__all__ = ["EvalResult", "Evaluator", "Sampler", "sample_grid_path", "evaluate_run",
           "class_rows",
           "RECALIBRATION_KEY", "describe_statistics", "describe_weights",
           "checkpoint_recalibration",
           "recalibration_dataset", "recalibrate", "prepare_statistics"]

# The checkpoint variable saying how many batches the model's batch-norm
# statistics were recalibrated over (0: the running averages of training).
RECALIBRATION_KEY = "recalibration_batches"

EVAL_FILE = "eval.json"
SAMPLES_DIR = "samples"


@dataclasses.dataclass(frozen=True)
class EvalResult:
    bits_per_dim: float
    std_error: float
    num_examples: int
    seconds: float

    def summary(self) -> str:
        return (f"{self.bits_per_dim:.4f} ± {self.std_error:.4f} bits/dim over "
                f"{self.num_examples} examples ({self.seconds:.1f} s)")


def _labels_for(data_config: data.DataConfig, model: tfnvp.ImageFlowModel) -> data.DataConfig:
    """``data_config`` yielding labels exactly when ``model`` is class-conditional."""
    return dataclasses.replace(data_config, labels=model.num_classes is not None)


def class_rows(num_classes: int, per_class: int) -> np.ndarray:
    """int32 labels ``[num_classes * per_class]`` of a grid with one row per class:
    ``per_class`` times 0, then 1, ..."""
    return np.repeat(np.arange(num_classes, dtype=np.int32), per_class)


class Evaluator:
    """Per-example bits/dim of a model on the evaluation pipeline's batches (uint8
    images with one noise seed each, and labels for a class-conditional model;
    ``trainers/data.py``), or any batch the model takes (``unpack_batch``): the
    model's ``objective`` in evaluation mode, compiled by the model once per input
    signature, whatever the batch size (``FlowModel._compiled_call``)."""

    def __init__(self, model: tfnvp.ImageFlowModel):
        self.model = model
        self.num_dims = int(math.prod(model.image_shape))

    def bits_per_dim(self, batch) -> tf.Tensor:
        """``model.objective``'s nll of each example of ``batch`` (uint8 images: the
        dequantization bound with ``u`` drawn from the batch's seeds) divided by ``D ln
        2`` in float64."""
        x, labels, seed = unpack_batch(batch)
        nll = self.model.objective(x, training=False, seed=seed, labels=labels).nll
        return tfnvp.bits_per_dim_from_log_prob(-tf.cast(nll, tf.float64), self.num_dims)

    def evaluate(self, dataset: tf.data.Dataset) -> EvalResult:
        """Mean bits/dim (and its standard error) over one pass of ``dataset``."""
        start = time.perf_counter()
        count, total, total_sq = 0, 0.0, 0.0
        for batch in dataset:
            bits = self.bits_per_dim(batch).numpy()
            if not np.all(np.isfinite(bits)):
                raise FloatingPointError(
                    f"Non-finite bits/dim for {int(np.sum(~np.isfinite(bits)))} held-out examples.")
            count += bits.size
            total += float(bits.sum())
            total_sq += float(np.square(bits).sum())
        if count == 0:
            raise UsageError("The evaluation split is empty.")
        mean = total / count
        variance = max(total_sq / count - mean * mean, 0.0) * count / max(count - 1, 1)
        return EvalResult(mean, math.sqrt(variance / count), count, time.perf_counter() - start)


class Sampler:
    """A fixed-seed grid of samples (the same latents every time it is called).

    A class-conditional model's grid has one row per class, row ``k`` holding
    ``ceil(num_images / num_classes)`` samples of class ``k``.
    """

    def __init__(self, model: tfnvp.ImageFlowModel, num_images: int, temperature: float,
                 seed: int):
        self.model = model
        self.num_images = int(num_images)
        self.temperature = float(temperature)
        self.rows = None
        self._labels = None
        if model.num_classes is not None:
            self.rows = model.num_classes
            self._labels = tf.constant(class_rows(self.rows, -(-self.num_images // self.rows)))
            self.num_images = int(self._labels.shape[0])
        self._seed = tf.constant([seed, 7919], tf.int64)
        self._sample = tf.function(self._draw, input_signature=[tf.TensorSpec([2], tf.int64)],
                                   autograph=False)

    def _draw(self, seed: tf.Tensor) -> tf.Tensor:
        return self.model.sample(self.num_images, temperature=self.temperature, seed=seed,
                                 labels=self._labels)

    def images(self) -> np.ndarray:
        """uint8 ``[N, H, W, C]`` samples (class by class for a class-conditional model)."""
        return grid.to_uint8(self._sample(self._seed).numpy())

    def save_grid(self, path: str) -> tuple[str, np.ndarray]:
        """Writes the PNG grid; returns its path and the grid image."""
        picture = grid.image_grid(self.images(), rows=self.rows)
        scale = max(1, 128 // max(self.model.image_shape[:2]))
        return grid.save_png(picture, path, scale=scale), picture


def describe_statistics(model: tfnvp.models.flow_model.FlowModel,
                        recalibration_batches: int) -> str:
    """What an evaluation's batch-norm statistics are, for logs and reports."""
    if not model.batch_norm_layers():
        return "none (the model has no batch norm)"
    if recalibration_batches > 0:
        return f"recalibrated over {recalibration_batches} training batches"
    return "running averages (debiased)"


def describe_weights(checkpoint_path: str) -> str:
    """Which weights eval/export of a checkpoint use (``run_dir.restore_run``'s): its
    Polyak averages if it holds them."""
    return tfnvp.io.runs.describe_weights(tfnvp.io.runs.checkpoint_polyak_decay(checkpoint_path))


def checkpoint_recalibration(checkpoint_path: str) -> int:
    """Batches the checkpoint's statistics were recalibrated over (0: none)."""
    reader = tf.train.load_checkpoint(checkpoint_path)
    key = f"{RECALIBRATION_KEY}/.ATTRIBUTES/VARIABLE_VALUE"
    return int(reader.get_tensor(key)) if reader.has_tensor(key) else 0


def recalibration_dataset(data_config: data.DataConfig, num_batches: int,
                          seed: int) -> tf.data.Dataset:
    """``num_batches`` fixed training batches (the same at every recalibration).

    The training pipeline (augmentation and the images' noise seeds included) with
    its own ``seed``, so it does not touch the training order; not cached as
    a whole, only the batches taken are kept (``cache``) and replayed.
    """
    config = dataclasses.replace(data_config, seed=seed, cache=False)
    return data.make_train_dataset(config).take(num_batches).cache()


def recalibrate(model: tfnvp.RealNVP, dataset: tf.data.Dataset, num_batches: int,
                strategy: tf.distribute.Strategy | None = None) -> int:
    """``model.recalibrate`` in cross-replica context; returns the batches used (0 for a
    model without batch norm, e.g. Glow: nothing to recalibrate)."""
    if not model.batch_norm_layers():
        return 0
    start = time.perf_counter()
    with (strategy or tf.distribute.get_strategy()).scope():
        used = model.recalibrate(dataset, num_batches)
    logging.info("Batch-norm statistics recalibrated over %d training batches (%.1f s).",
                 used, time.perf_counter() - start)
    return used


def prepare_statistics(model: tfnvp.RealNVP, checkpoint_path: str, output_dir: str,
                       data_config: data.DataConfig, num_batches: int) -> int:
    """For eval/export: recalibrates a checkpoint that was not (if ``num_batches``).

    The batches are the training pipeline's, with the run's batch size, flips
    and seed.  Returns the batches the statistics are averaged over (0: the
    checkpoint's running averages).
    """
    stored = checkpoint_recalibration(checkpoint_path)
    if stored or not num_batches:
        return stored
    run = run_dir.read_config(output_dir)
    config = dataclasses.replace(_labels_for(data_config, model),
                                 batch_size=run["input"]["batch_size"], flip=run["input"]["flip"])
    seed = run.get("training", {}).get("seed", 0)
    logging.info("%s holds running averages: recalibrating over %d training batches.",
                 checkpoint_path, num_batches)
    return recalibrate(model, recalibration_dataset(config, num_batches, seed), num_batches)


def sample_grid_path(output_dir: str, step: int) -> str:
    return os.path.join(output_dir, SAMPLES_DIR, f"step_{step:08d}.png")


def checkpoint_step(checkpoint_path: str) -> int:
    """The training step stored in a checkpoint written by ``trainers.training``."""
    reader = tf.train.load_checkpoint(checkpoint_path)
    return int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))


def evaluate_run(output_dir: str, data_config: data.DataConfig, checkpoint: str | None = None,
                 recalibration_batches: int = 0) -> dict:
    """``--mode=eval``: exact bits/dim of a checkpoint over the whole held-out split.

    ``checkpoint`` defaults to the newest intact one (``run_dir.restore_run``).
    Runs the float32 model (mixed-precision conditioners are evaluated in full
    precision) with the
    checkpoint's statistics, recalibrated first if they were not
    (``prepare_statistics``), and writes ``RUN/eval.json`` atomically.
    """
    model, checkpoint = run_dir.restore_run(output_dir, checkpoint, conditioner_dtype=None)
    step = checkpoint_step(checkpoint)
    if tuple(data.image_shape(data_config)) != tuple(model.image_shape):
        raise run_dir.ConfigMismatchError(
            f"Dataset {data_config.dataset!r} has images of shape {data.image_shape(data_config)}, "
            f"the model in {output_dir!r} was trained on {model.image_shape}.")
    batches = prepare_statistics(model, checkpoint, output_dir, data_config,
                                 recalibration_batches)
    statistics = describe_statistics(model, batches)
    weights = describe_weights(checkpoint)
    data_config = dataclasses.replace(_labels_for(data_config, model), max_eval_examples=None)
    expected = data.num_eval_examples(data_config)
    logging.info("Evaluating %s (step %d; %s; batch-norm statistics: %s) on %d held-out %s "
                 "examples.", checkpoint, step, weights, statistics, expected, data_config.dataset)
    result = Evaluator(model).evaluate(data.make_eval_dataset(data_config))
    if result.num_examples != expected:
        raise RuntimeError(f"Evaluated {result.num_examples} examples, expected {expected}.")
    report = dict(bits_per_dim=result.bits_per_dim, std_error=result.std_error,
                  num_examples=result.num_examples, step=step, checkpoint=checkpoint,
                  dataset=data_config.dataset, eval_seed=data_config.eval_seed,
                  seconds=round(result.seconds, 3), batch_norm_statistics=statistics,
                  recalibration_batches=batches, weights=weights)
    path = os.path.join(output_dir, EVAL_FILE)
    run_dir.write_json_atomic(path, report)
    logging.info("Step %d: %s; wrote %s", step, result.summary(), path)
    return report
