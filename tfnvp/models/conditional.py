"""Class-conditional flows: labels as context plus a class-conditional prior.

A class-conditional flow models ``p(x | y)`` for a label ``y`` in
``{0, ..., K-1}`` with two changes to the unconditional one:

* every conditioner receives the one-hot label ``e_y`` as ``context``
  (``one_hot_context``; ``tfnvp.nets.ShiftAndLogScale`` concatenates it to
  its input), so each coupling's ``s`` and ``t`` depend on ``y``;
* the base distribution is ``ClassConditionalPrior``:
  ``p(z | y) = N(z; mu_y, diag(sigma_y^2))`` with a learned mean ``mu_y`` and
  log-scale ``log sigma_y`` per class and latent dimension (both start at 0,
  so a new model starts from ``N(0, I)`` for every class).

Then ``log p(x | y) = log N(f(x; y); mu_y, sigma_y^2) + log|det df(x; y)/dx|``
(eq. 3 with a label-dependent ``f`` and prior).
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfnvp import validation

tfd = tfp.distributions

__all__ = ["ClassConditionalPrior", "check_labels", "one_hot_context"]


def check_labels(labels, num_classes: int, batch_shape: Sequence[int | None],
                 validate_args: bool, batch_size: tf.Tensor | None = None,
                 per: str = "input") -> tf.Tensor:
    """``labels`` as an int32 tensor of ``batch_shape``; clear errors otherwise.

    Static checks (integer dtype, shape) always run; with ``validate_args``
    the values are checked to lie in ``[0, num_classes)`` *as given*, before
    the cast to int32 (an int64 label ``2**32 + 1`` must not wrap to class 1),
    and, when ``batch_shape`` is not fully known (a traced or exported
    function), the labels' shape against ``batch_size``, the inputs' batch
    shape at run time (one label per ``per``: labels are never broadcast).
    """
    labels = tf.convert_to_tensor(labels)
    if not labels.dtype.is_integer:
        raise TypeError(f"labels must be integers in [0, {num_classes}), got dtype "
                        f"{labels.dtype.name}.")
    batch_shape = tf.TensorShape(batch_shape)
    if not labels.shape.is_compatible_with(batch_shape):
        fix = (" (a column of labels: pass labels[..., 0])"
               if batch_shape.rank is not None and labels.shape.rank == batch_shape.rank + 1
               and labels.shape[-1] == 1 else "")
        raise ValueError(f"labels must have the inputs' batch shape {batch_shape} (one label "
                         f"per {per}), got shape {labels.shape}{fix}.")
    if validate_args:
        valid = tf.ones(tf.shape(labels), tf.bool)
        if not labels.dtype.is_unsigned:
            valid &= labels >= 0
        if num_classes <= labels.dtype.max:  # Else every value of the dtype is below it.
            valid &= labels < tf.constant(num_classes, labels.dtype)
        checks = [validation.require(
            tf.reduce_all(valid),
            f"labels: expected classes in [0, num_classes={num_classes}), got {{}}", labels)]
        if batch_size is not None and not batch_shape.is_fully_defined():
            given = tf.shape(labels, out_type=tf.int32)
            checks.append(validation.require(
                tf.reduce_all(tf.equal(given, tf.cast(batch_size, tf.int32))),
                f"labels: expected shape {{}} (one label per {per}), got shape {{}}",
                batch_size, given))
        with tf.control_dependencies(checks):
            labels = tf.identity(labels)
    return tf.cast(labels, tf.int32)


def one_hot_context(labels: tf.Tensor, num_classes: int, dtype: tf.DType) -> tf.Tensor:
    """The conditioners' context: one-hot labels ``[batch..., K]``."""
    return tf.one_hot(labels, num_classes, dtype=dtype)


@keras.saving.register_keras_serializable(package="tfnvp")
class ClassConditionalPrior(keras.layers.Layer):
    """``p(z | y) = N(mu_y, diag(exp(log_sigma_y))^2)`` over events of ``event_shape``.

    The weights ``loc`` and ``log_scale`` (``[K, *event_shape]``, zero at
    start) are rows looked up by label, like an ``Embedding``.

    Example::

        prior = ClassConditionalPrior(10, (8, 8, 1))
        prior.distribution(labels).log_prob(z)   # labels [B], z [B, 8, 8, 1] -> [B]
    """

    def __init__(self, num_classes: int, event_shape: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}.")
        self.num_classes = int(num_classes)
        self.event_shape = tuple(int(d) for d in event_shape)
        shape = (self.num_classes,) + self.event_shape
        self.loc = self.add_weight(name="loc", shape=shape, initializer="zeros")
        self.log_scale = self.add_weight(name="log_scale", shape=shape, initializer="zeros")
        self.built = True  # Every weight exists (Keras' fit would otherwise trace the model).

    def parameters_of(self, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``(mu_y, sigma_y)`` of each label, ``[batch..., *event_shape]``."""
        loc = tf.gather(tf.convert_to_tensor(self.loc), labels)
        scale = tf.exp(tf.gather(tf.convert_to_tensor(self.log_scale), labels))
        return loc, scale

    def distribution(self, labels: tf.Tensor) -> tfd.Distribution:
        """``p(z | y)`` with batch shape ``labels.shape``, event shape ``event_shape``."""
        loc, scale = self.parameters_of(labels)
        return tfd.Independent(tfd.Normal(loc, scale),
                               reinterpreted_batch_ndims=len(self.event_shape))

    def call(self, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return self.parameters_of(labels)

    def build(self, labels_shape: tuple[int | None, ...]) -> None:
        """Creates nothing (every weight exists); Keras records ``labels_shape`` (``summary()``)."""

    def compute_output_shape(self, labels_shape: tuple[int | None, ...]
                             ) -> tuple[tuple[int | None, ...], tuple[int | None, ...]]:
        """The shapes of ``(mu_y, sigma_y)``: ``[batch..., *event_shape]``."""
        shape = tuple(labels_shape) + self.event_shape
        return shape, shape

    def get_config(self) -> dict:
        return {**super().get_config(), "num_classes": self.num_classes,
                "event_shape": list(self.event_shape)}
