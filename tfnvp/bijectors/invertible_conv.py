"""Invertible 1x1 convolution, LU-parameterized (Glow, Kingma & Dhariwal 2018, section 3.2).

A 1x1 convolution with a ``C x C`` kernel ``W`` mixes the channels at every
position.  In the data -> latent direction (this bijector's ``inverse``,
Glow's forward pass; Table 1, second row)::

    z[i, j, :] = x[i, j, :] @ W
    log|det dz/dx| = H * W_img * log|det W|                             (eq. 9)

``W`` is kept in the LU form of eq. (10)::

    W = P L (U + diag(sign(s) * exp(log|s|)))

with ``P`` a fixed permutation, ``L`` unit lower triangular, ``U`` strictly
upper triangular and ``sign(s)`` fixed; ``L``, ``U`` and ``log|s|`` are
trained.  Then ``log|det W| = sum(log|s|)`` exactly, in O(C) instead of the
O(C^3) of a determinant, and ``W^-1 = U_s^-1 L^-1 P^T`` is two triangular
solves.  As in the paper, ``W`` starts as a random rotation (the ``Q`` of
the QR decomposition of a seeded Gaussian matrix), whose LU factors give
the initial ``P``, ``L``, ``U``, ``s``.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfnvp.bijectors.channelwise import ChannelwiseBijector
from tfnvp.bijectors.parameter_layer import ShapePreserving

__all__ = ["InvertibleConv1x1", "InvertibleConv1x1Weights"]


def _random_rotation_lu(channels: int, seed: int | None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(P, L, U_with_diagonal, s)`` of a random orthogonal matrix ``Q = P L U``."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((channels, channels)))
    lu, order = tf.linalg.lu(tf.constant(rotation, tf.float64))  # rotation[order] = L U
    lu = lu.numpy()
    permutation = np.eye(channels)[order.numpy()].T  # rotation = permutation @ L @ U
    lower = np.tril(lu, -1) + np.eye(channels)
    upper = np.triu(lu)
    return permutation, lower, upper, np.diag(upper)


@keras.saving.register_keras_serializable(package="tfnvp")
class InvertibleConv1x1Weights(ShapePreserving, keras.layers.Layer):
    """The LU factors of an invertible 1x1 convolution's kernel (owned by the model).

    Weights: ``permutation`` (``P``, fixed), ``lower`` (its strict lower
    triangle is ``L``'s), ``upper`` (its strict upper triangle is ``U``),
    ``log_abs_s`` (trained) and ``sign_s`` (fixed).  The unused triangles
    of ``lower`` and ``upper`` never enter the kernel (zero gradient).

    Args:
      channels: ``C``.
      seed: seed of the initial random rotation (``None``: nondeterministic).
      **kwargs: forwarded to ``keras.layers.Layer`` (``dtype``, ``name``).
    """

    def __init__(self, channels: int, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels!r}.")
        self.channels = int(channels)
        self.seed = seed
        permutation, lower, upper, s = _random_rotation_lu(self.channels, seed)
        square = (self.channels, self.channels)
        self.permutation = self.add_weight(name="permutation", shape=square, trainable=False)
        self.lower = self.add_weight(name="lower", shape=square)
        self.upper = self.add_weight(name="upper", shape=square)
        self.log_abs_s = self.add_weight(name="log_abs_s", shape=(self.channels,))
        self.sign_s = self.add_weight(name="sign_s", shape=(self.channels,), trainable=False)
        for variable, value in [(self.permutation, permutation), (self.lower, lower),
                                (self.upper, upper), (self.log_abs_s, np.log(np.abs(s))),
                                (self.sign_s, np.sign(s))]:
            variable.assign(value)
        self.built = True

    def get_config(self) -> dict:
        return {**super().get_config(), "channels": self.channels, "seed": self.seed}

    def factors(self, dtype: tf.DType) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """``(P, L, U_s)`` in ``dtype``; ``U_s = U + diag(sign(s) exp(log|s|))``."""
        lower = tf.linalg.band_part(tf.cast(self.lower, dtype), -1, 0)
        lower = tf.linalg.set_diag(lower, tf.ones([self.channels], dtype))
        upper = tf.linalg.band_part(tf.cast(self.upper, dtype), 0, -1)
        diagonal = tf.cast(self.sign_s, dtype) * tf.exp(tf.cast(self.log_abs_s, dtype))
        return tf.cast(self.permutation, dtype), lower, tf.linalg.set_diag(upper, diagonal)

    def kernel(self, dtype: tf.DType) -> tf.Tensor:
        """``W = P L U_s`` (``z = x @ W`` maps data to latent)."""
        permutation, lower, upper = self.factors(dtype)
        return permutation @ lower @ upper

    def inverse_kernel(self, dtype: tf.DType) -> tf.Tensor:
        """``W^-1 = U_s^-1 L^-1 P^T`` by two triangular solves."""
        permutation, lower, upper = self.factors(dtype)
        solved = tf.linalg.triangular_solve(lower, tf.transpose(permutation), lower=True)
        return tf.linalg.triangular_solve(upper, solved, lower=False)

    def log_abs_det(self, dtype: tf.DType) -> tf.Tensor:
        """``log|det W| = sum(log|s|)`` (``det P = +-1``, ``det L = 1``)."""
        return tf.reduce_sum(tf.cast(self.log_abs_s, dtype))


class InvertibleConv1x1(ChannelwiseBijector):
    """Glow's invertible 1x1 convolution on ``[..., H, W, C]`` events; ``inverse`` is data -> latent.

    Math (``W`` from the ``InvertibleConv1x1Weights`` layer)::

        inverse(x) = x @ W                 (at every position)
        forward(z) = z @ W^-1
        inverse_log_det_jacobian(x) = H * W_img * sum(log|s|)

    ``training`` and ``context`` are accepted and ignored.

    Example::

        weights = InvertibleConv1x1Weights(channels=12, seed=0)
        conv = InvertibleConv1x1(weights)
        z = conv.inverse(x)
    """

    def __init__(self, weights: InvertibleConv1x1Weights, validate_args: bool = False,
                 name: str = "invertible_conv_1x1"):
        parameters = dict(locals())
        super().__init__(weights, weights.channels, parameters, validate_args, name)

    @property
    def kernel_weights(self) -> InvertibleConv1x1Weights:
        return self._layer

    def _position_log_det(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        return self._layer.log_abs_det(x.dtype)

    def _inverse(self, x: tf.Tensor, training: bool = False, context=None) -> tf.Tensor:
        del training, context
        self._check_channels(x)
        return tf.linalg.matmul(x, self._layer.kernel(x.dtype))

    def _forward(self, z: tf.Tensor, training: bool = False, context=None) -> tf.Tensor:
        del training, context
        self._check_channels(z)
        return tf.linalg.matmul(z, self._layer.inverse_kernel(z.dtype))
