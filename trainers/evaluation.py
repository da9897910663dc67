"""Held-out bits/dim and sample grids of a Real NVP model.

Bits/dim are exact for the dequantized data: ``-log p(x + u) / (D ln 2)`` with the
evaluation pipeline's fixed noise ``u`` (a function of the evaluation seed and
the example's index only), averaged over every example of the held-out split,
with the standard error of that mean.

Evaluation runs in cross-replica context on the local device: evaluation mode
uses the running batch-norm statistics, so it needs no communication, and only
the chief process evaluates during multi-worker training.
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
from tfnvp import grid

from trainers import data
from trainers import run_dir

__all__ = ["EvalResult", "Evaluator", "Sampler", "sample_grid_path", "evaluate_run"]

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


class Evaluator:
    """Per-example bits/dim of a model, traced once for ``[None, H, W, C]`` batches."""

    def __init__(self, model: tfnvp.RealNVP):
        self.model = model
        self.num_dims = int(math.prod(model.image_shape))
        spec = tf.TensorSpec((None,) + tuple(model.image_shape), tf.float32)
        self.bits_per_dim = tf.function(self._bits_per_dim, input_signature=[spec])

    def _bits_per_dim(self, x: tf.Tensor) -> tf.Tensor:
        log_prob = self.model.log_prob(x, training=False)
        return tfnvp.bits_per_dim_from_log_prob(tf.cast(log_prob, tf.float64), self.num_dims)

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
            raise ValueError("The evaluation split is empty.")
        mean = total / count
        variance = max(total_sq / count - mean * mean, 0.0) * count / max(count - 1, 1)
        return EvalResult(mean, math.sqrt(variance / count), count, time.perf_counter() - start)


class Sampler:
    """A fixed-seed grid of samples (the same latents every time it is called)."""

    def __init__(self, model: tfnvp.RealNVP, num_images: int, temperature: float, seed: int):
        self.model = model
        self.num_images = int(num_images)
        self.temperature = float(temperature)
        self._seed = tf.constant([seed, 7919], tf.int64)
        self._sample = tf.function(self._draw, input_signature=[tf.TensorSpec([2], tf.int64)])

    def _draw(self, seed: tf.Tensor) -> tf.Tensor:
        return self.model.sample(self.num_images, temperature=self.temperature, seed=seed)

    def images(self) -> np.ndarray:
        """uint8 ``[N, H, W, C]`` samples."""
        return grid.to_uint8(self._sample(self._seed).numpy())

    def save_grid(self, path: str) -> tuple[str, np.ndarray]:
        """Writes the PNG grid; returns its path and the grid image."""
        picture = grid.image_grid(self.images())
        scale = max(1, 128 // max(self.model.image_shape[:2]))
        return grid.save_png(picture, path, scale=scale), picture


def sample_grid_path(output_dir: str, step: int) -> str:
    return os.path.join(output_dir, SAMPLES_DIR, f"step_{step:08d}.png")


def checkpoint_step(checkpoint_path: str) -> int:
    """The training step stored in a checkpoint written by ``trainers.training``."""
    reader = tf.train.load_checkpoint(checkpoint_path)
    return int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))


def evaluate_run(output_dir: str, data_config: data.DataConfig) -> dict:
    """``--mode=eval``: exact bits/dim of the latest checkpoint over the whole held-out split.

    Runs the float32 model (mixed-precision conditioners are evaluated in full
    precision) and writes ``RUN/eval.json`` atomically.
    """
    checkpoint = tf.train.latest_checkpoint(run_dir.checkpoint_dir(output_dir))
    if checkpoint is None:
        raise FileNotFoundError(f"No checkpoint in {run_dir.checkpoint_dir(output_dir)!r}: "
                                "train first (--mode=train).")
    model = run_dir.restore_model(output_dir, checkpoint, conditioner_dtype=None)
    step = checkpoint_step(checkpoint)
    if tuple(data.image_shape(data_config)) != tuple(model.image_shape):
        raise run_dir.ConfigMismatchError(
            f"Dataset {data_config.dataset!r} has images of shape {data.image_shape(data_config)}, "
            f"the model in {output_dir!r} was trained on {model.image_shape}.")
    data_config = dataclasses.replace(data_config, max_eval_examples=None)
    expected = data.num_eval_examples(data_config)
    logging.info("Evaluating %s (step %d) on %d held-out %s examples.", checkpoint, step,
                 expected, data_config.dataset)
    result = Evaluator(model).evaluate(data.make_eval_dataset(data_config))
    if result.num_examples != expected:
        raise RuntimeError(f"Evaluated {result.num_examples} examples, expected {expected}.")
    report = dict(bits_per_dim=result.bits_per_dim, std_error=result.std_error,
                  num_examples=result.num_examples, step=step, checkpoint=checkpoint,
                  dataset=data_config.dataset, eval_seed=data_config.eval_seed,
                  seconds=round(result.seconds, 3))
    path = os.path.join(output_dir, EVAL_FILE)
    run_dir.write_json_atomic(path, report)
    logging.info("Step %d: %s; wrote %s", step, result.summary(), path)
    return report
