"""Zero-debiased running averages of batch statistics, and their cumulative mode.

Every batch normalization of tfnvp (the ``BatchNorm`` bijectors of section 3.7
and the conditioners' ``BatchNormalization`` layers) keeps a per-channel
running mean ``mu`` and variance ``v`` with an update counter ``n``
(``num_updates``, a non-trainable, checkpointed weight).

**Exponential mode** (training).  With momentum ``m`` and batch moments
``(b, w)``, update ``n`` is::

    n   <- n + 1
    f    = (1 - m) / (1 - m^n)
    mu  <- mu + f * (b - mu)
    v   <- v  + f * (w - v)

This stores the *bias-corrected* average of Adam (Kingma & Ba, 2015,
section 3): with ``r_n = m r_{n-1} + (1 - m) b_n`` started at ``r_0 = 0``,
``mu_n = r_n / (1 - m^n)``, because ``1 - m^n = m (1 - m^{n-1}) + (1 - m)``.
After one update ``mu`` is exactly the batch's mean (``f = 1``); the plain
average started at 0 / 1 instead lags the network by ~``1 / (1 - m)``
updates, and a lagging variance enters the log-determinant directly.
Before any update (``n = 0``) the initial values (mean 0, variance 1) are
used.  Because the stored values are already debiased, evaluation, sampling,
the conditioners' fused kernels, their batch-norm folding and exports read
them unchanged.  ``m = 1`` (the frozen statistics of a recomputed backward
pass) changes nothing, the counter included.

**Cumulative mode** (``training=RECALIBRATE``, used by
``FlowModel.recalibrate``).  Update ``n`` gives every batch the same weight
``1 / n`` and pools the variances of equal-sized batches exactly::

    mu <- mu + (b - mu) / n
    v  <- v + (w - v) / n + (n - 1) / n^2 * (b - mu_old)^2

(the last term is the spread of the batch means; with ``n = 1`` this is the
batch's moments).  After ``N`` batches ``(mu, v)`` are the mean and variance
of all ``N`` batches' values taken together.  In this mode every batch
normalization normalizes with its freshly updated ``(mu, v)``, see
``FlowModel.recalibrate``.

The mode is a call argument, never state: every tfnvp bijector and
conditioner takes ``training`` in ``{False, True, RECALIBRATE}`` (the
``Training`` type).  ``False`` is evaluation (running statistics), ``True``
training (batch statistics, exponential updates) and ``RECALIBRATE`` training
with cumulative updates.  ``RECALIBRATE`` is truthy, so a layer that only
distinguishes training from evaluation treats it as training.
"""

from __future__ import annotations

from typing import Literal, Union

import keras
import tensorflow as tf

__all__ = ["RECALIBRATE", "RECOMPUTE", "Training", "is_cumulative", "is_recomputation",
           "recomputation", "add_counter", "update"]

RECALIBRATE = "recalibrate"
"""The ``training`` value of ``FlowModel.recalibrate``: cumulative updates."""

RECOMPUTE = "recompute"
"""The ``training`` value of a training-mode forward pass recomputed for its gradient
(``tfnvp.nets.recompute``): batch statistics, and no update (the forward pass made it)."""

Training = Union[bool, Literal["recalibrate", "recompute"]]


def is_cumulative(training: Training) -> bool:
    """Whether ``training`` asks for cumulative updates (``RECALIBRATE``)."""
    return isinstance(training, str) and training == RECALIBRATE


def is_recomputation(training: Training) -> bool:
    """Whether ``training`` is a recomputed forward pass (``RECOMPUTE``): no updates."""
    return isinstance(training, str) and training == RECOMPUTE


def recomputation(training: Training) -> Training:
    """The mode that recomputes a forward pass made in mode ``training``: ``RECOMPUTE``
    for a training mode (the same batch statistics, no second update), else ``training``."""
    return RECOMPUTE if training else training


def add_counter(layer: keras.layers.Layer) -> keras.Variable:
    """The layer's update counter ``n`` (float32 scalar, starts at 0, checkpointed).

    Aggregation ``mean``: every replica applies the same updates, so the
    mirrored copies stay equal.
    """
    return layer.add_weight(name="num_updates", shape=(), initializer="zeros", trainable=False,
                            dtype="float32", aggregation="mean", autocast=False)


def update(mean: keras.Variable, variance: keras.Variable, counter: keras.Variable,
           batch_mean: tf.Tensor, batch_variance: tf.Tensor, momentum: float,
           cumulative: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
    """Assigns the updated ``(mu, v, n)``; returns the new ``(mu, v)``.

    ``cumulative`` selects the cumulative mode (see the module docstring).

    The returned values keep their gradient with respect to the batch moments
    (the appendix-E variant normalizes with them); the assigned values do
    not.  ``momentum == 1`` returns the current values and assigns nothing.
    """
    dtype = batch_mean.dtype
    old_mean = tf.cast(tf.convert_to_tensor(mean), dtype)
    old_variance = tf.cast(tf.convert_to_tensor(variance), dtype)
    count = tf.convert_to_tensor(counter) + 1.0
    n = tf.cast(count, dtype)
    delta = batch_mean - old_mean
    if cumulative:
        weight = 1.0 / n
        new_mean = old_mean + weight * delta
        new_variance = (old_variance + weight * (batch_variance - old_variance)
                        + (1.0 - weight) * weight * tf.square(delta))
    else:
        weight = (1.0 - momentum) / (1.0 - tf.pow(tf.constant(momentum, dtype), n))
        new_mean = old_mean + weight * delta
        new_variance = old_variance + weight * (batch_variance - old_variance)
    mean.assign(tf.cast(tf.stop_gradient(new_mean), mean.dtype))
    variance.assign(tf.cast(tf.stop_gradient(new_variance), variance.dtype))
    counter.assign(count)
    return new_mean, new_variance
