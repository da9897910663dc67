"""Uniform dequantization of 8-bit pixels and bits/dim accounting (section 4.1).

A discrete image ``x`` in ``{0, ..., 255}^D`` becomes ``x + u`` with
``u ~ U[0, 1)^D``; a density ``p`` on ``[0, 256)^D`` then satisfies
``log P(x) >= E_u log p(x + u)``, so ``-log p(x + u) / (D ln 2)`` is an upper
bound on the discrete model's bits per dimension -- the figure the paper
reports.  (A density over ``[0, 1)^D`` would first need ``+ D log 256``; the
model's support is already the 8-bit scale.)

With a dequantization distribution ``q(u | x)`` in general (Ho et al., 2019:
variational dequantization) the bound is ``log P(x) >= E_q [log p(x + u) -
log q(u | x)]``; a dequantizer is a model component returning ``(x + u,
log q(u | x))``.  ``UniformDequantizer`` is the uniform one: ``log q = 0``.

Seeds: the noise is drawn from a stateless seed of shape ``[2]`` (one draw for
the whole batch) or from one seed per example (shape ``[batch..., 2]``:
example ``i``'s noise is ``stateless_uniform(event shape, seed_i)``, the same
whatever batch it comes in; ``uniform_noise``), as the trainers' input
pipelines yield them beside the uint8 images.
"""

from __future__ import annotations

import math
from typing import Sequence

import keras
import tensorflow as tf

from tfnvp import validation

__all__ = ["UniformDequantizer", "bits_per_dim_from_log_prob", "dequantize", "uniform_noise"]


def uniform_noise(like: tf.Tensor, seed: tf.Tensor | None, dtype: tf.DType,
                  minval: float = 0.0) -> tf.Tensor:
    """``u ~ U[minval, 1)`` of ``like``'s shape, as ``dtype``, from a checked ``seed``
    (``tfnvp.validation.check_seed``).

    * ``None``: ``tf.random.uniform`` (TensorFlow's global generator);
    * shape ``[2]``: ``tf.random.stateless_uniform(shape, seed)``, one draw for all of ``like``;
    * shape ``[batch..., 2]`` (the leading ``k`` axes of ``like``, ``k = rank(seed) - 1``):
      one seed per example, example ``i``'s noise ``stateless_uniform(shape[k:], seed_i)``
      (drawn example by example, ``tf.map_fn``): a function of its own seed only.
    """
    if seed is None:
        return tf.random.uniform(tf.shape(like), minval=minval, dtype=dtype)
    if seed.shape.rank == 1:
        return tf.random.stateless_uniform(tf.shape(like), seed=seed, minval=minval, dtype=dtype)
    batch_rank = seed.shape.rank - 1
    event = like.shape[batch_rank:]
    event_size = event.as_list() if event.is_fully_defined() else tf.shape(like)[batch_rank:]
    noise = tf.map_fn(
        lambda example_seed: tf.random.stateless_uniform(event_size, seed=example_seed,
                                                         minval=minval, dtype=dtype),
        tf.reshape(seed, [-1, 2]), fn_output_signature=tf.TensorSpec(event, dtype))
    return tf.reshape(noise, tf.shape(like))


def dequantize(images: tf.Tensor, seed: tf.Tensor | Sequence[int] | None = None,
               dtype: tf.DType = tf.float32) -> tf.Tensor:
    """``images + u``, ``u ~ U[0, 1)``, as ``dtype``; each value stays in its bin.

    With a ``seed`` (an int ``s``, meaning ``[s, 0]``, a pair of ints or a shape-[2]
    tensor; ``tfnvp.validation.check_seed``) the noise is
    ``tf.random.stateless_uniform``'s, a pure function of the seed; images ``[batch...,
    H, W, C]`` also take one seed per image (shape ``[batch..., 2]``, ``uniform_noise``).
    The sum is clamped strictly below
    ``pixel + 1``: in float32 ``255 + u`` rounds to 256.0 for
    ``u > 1 - 2**-17``, which would leave the bin and the support ``[0, 256)``.
    """
    pixels = tf.cast(images, dtype)
    noise = uniform_noise(pixels, validation.check_seed(seed, pixels.shape[:-3]), dtype)
    return tf.minimum(pixels + noise, tf.math.nextafter(pixels + 1.0, pixels))


def bits_per_dim_from_log_prob(log_prob: tf.Tensor, num_dims: int) -> tf.Tensor:
    """``-log p / (D ln 2)``: bits per dimension of a density on ``[0, 256)^D``."""
    return -log_prob / (num_dims * math.log(2.0))


@keras.saving.register_keras_serializable(package="tfnvp")
class UniformDequantizer(keras.layers.Layer):
    """``u ~ U[0, 1)^D``: the uniform dequantizer of section 4.1 (no weights).

    ``dequantize(images, seed, training, context) -> (x, log_q)`` with ``x =
    images + u`` (``dequantize``) and ``log_q = log q(u | x) = 0`` per image
    (``[batch...]``).  ``training`` and ``context`` are accepted for the
    interface of learned dequantizers and ignored.

    Example::

        x, log_q = UniformDequantizer(dtype="float64").dequantize(images_uint8, seed=[1, 2])
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.built = True  # No weights (Keras' fit would otherwise trace the model).

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        """Creates nothing (no weights); Keras records the images' shape (``summary()``)."""

    def compute_output_shape(self, input_shape: tuple[int | None, ...]
                             ) -> tuple[tuple[int | None, ...], tuple[int | None, ...]]:
        """The shapes of ``(x, log_q)`` for images of shape ``input_shape``: the images'
        and their batch axes."""
        return tuple(input_shape), tuple(input_shape[:-3])

    def dequantize(self, images: tf.Tensor, seed: tf.Tensor | Sequence[int] | None = None,
                   training: bool = False, context: tf.Tensor | None = None
                   ) -> tuple[tf.Tensor, tf.Tensor]:
        x = dequantize(images, seed=seed, dtype=tf.as_dtype(self.compute_dtype))
        log_q = tf.zeros(tf.shape(x)[:-3], x.dtype)
        return x, log_q

    def call(self, images: tf.Tensor, seed=None, training: bool = False, context=None):
        return self.dequantize(images, seed=seed, training=training, context=context)
