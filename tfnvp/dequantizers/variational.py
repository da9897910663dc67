"""Variational dequantization (Ho et al., 2019, Flow++ section 3.1).

Uniform dequantization (``tfnvp.dequantizers.uniform``) trains ``p`` on ``x + u``,
``u ~ U[0, 1)^D``, and reports ``-E_u log p(x + u)``: a bound that is loose
wherever ``p`` is not constant across a bin.  With a learned dequantization
distribution ``q(u | x)`` on ``[0, 1)^D`` the bound is

    log P(x) >= E_{u ~ q(u|x)} [log p(x + u) - log q(u | x)]        (Flow++ section 3.1)

(Jensen; equality when ``q(u | x) = p(x + u) / P(x)``), and training ``p``
and ``q`` jointly on it tightens it.  ``q`` is a conditional flow, data
direction ``eps -> u``::

    eps ~ Logistic(0, 1)^D  (the image's shape)
    g = coupling_{n-1}( ... coupling_0(eps; c) ... ; c)      affine couplings (Real NVP eq. 8)
    u = sigmoid(g)                                            into (0, 1)
    log q(u | x) = log Logistic(eps; 0, 1) - log|det du/deps|

The base is the standard logistic, not Flow++'s ``N(0, I)``: ``sigmoid``
maps ``Logistic(0, 1)`` exactly onto ``U(0, 1)``, so a new dequantizer
(zero-gain coupling outputs: identity couplings) *is* uniform dequantization,
``log q = 0``, and a variational model starts from the uniform model's bound
and can only tighten it.  (A normal base starts at the logit-normal, whose
entropy, -0.193 nats per dimension, loosens the bound by 0.28 bits/dim
before ``q`` has learned anything: at short training budgets that showed up
as a worse bound than uniform dequantization's on CIFAR-10.)
Sampling draws ``v ~ U(0, 1)`` and sets ``eps = logit(v)`` (``tfd.Logistic``'s sampler),
so with the same ``seed`` a new dequantizer's ``u`` equals
``tfnvp.dequantize``'s noise up to rounding.

with checkerboard masks of alternating parity, every coupling's conditioner
reading the masked input concatenated with the context feature map ``c =
h(x / 255 - 1/2)`` ([batch, H, W, context_channels], one small conv net ``h``
shared by all couplings, as in Flow++).  A class-conditional model's
dequantizer (``num_classes=K``) is ``q(u | x, y)``: its context map adds a
learned per-class feature vector, ``c = h(x / 255 - 1/2) + E y`` (``y`` the
one-hot label, ``E`` a ``K x context_channels`` matrix, the same at every
position), so the bound ``E_q[log p(x + u | y) - log q(u | x, y)]`` is that
of the conditional model ``P(x | y)``.  ``log|det du/deps|`` is the sum of
the couplings' log-dets and the sigmoid's, ``sum log sigmoid(g) + log
sigmoid(-g)``.  ``dequantization_flow`` returns the ``eps -> u`` bijector
(``FusedChain``, ``context=c`` a call argument per ``tfnvp.bijectors.base``);
``VariationalDequantizer`` is the Keras layer owning its weights, the
model's dequantizer component (``RealNVP(..., dequantization="variational")``).

Floating point: ``x + u`` is clamped strictly below ``pixel + 1`` like
``tfnvp.dequantize`` (in float32, ``255 + u`` rounds to 256 for ``u > 1 -
2**-17``, and ``sigmoid(g)`` itself rounds to 1 for ``g > ~17``).  ``log q``
is that of the unclamped ``u``; the clamp moves the point ``p`` is evaluated
at by at most one ulp of ``pixel + 1`` (``2**-16`` at 255), inside the same
bin, so the bound is exact up to that rounding (an error of order ``2**-16 *
|d log p / dx|`` nats on the affected values; none in float64 below ``u = 1 -
2**-45``).
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfnvp import validation
from tfnvp.bijectors.base import IdentityParameterized
from tfnvp.bijectors.chain import FusedChain
from tfnvp.bijectors.coupling import AffineCoupling
from tfnvp.dequantizers.uniform import UniformDequantizer, uniform_noise
from tfnvp.errors import UsageError
from tfnvp.nets.empty_batches import unless_empty
from tfnvp.nets.shift_and_log_scale import ShiftAndLogScale
from tfnvp.nets.tracking import track_layers
from tfnvp.nets.weight_norm import WeightNormConv2D

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ["ConvNet", "Sigmoid", "VariationalDequantizer", "dequantization_flow"]


class Sigmoid(IdentityParameterized, tfb.Bijector):
    """``u = sigmoid(g)``: the real line onto ``(0, 1)``, elementwise.

    Math::

        forward(g) = 1 / (1 + exp(-g))
        inverse(u) = log(u) - log(1 - u)
        forward_log_det_jacobian(g) = -softplus(-g) - softplus(g)

    ``tfb.Sigmoid`` with tfnvp's call arguments (``training``, ``context``,
    ``tfnvp.bijectors.base``), accepted and ignored.
    """

    def __init__(self, validate_args: bool = False, name: str = "sigmoid"):
        parameters = dict(locals())
        super().__init__(forward_min_event_ndims=0, validate_args=validate_args,
                         parameters=parameters, name=name)

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return {}

    def _forward(self, g: tf.Tensor, **kwargs) -> tf.Tensor:
        return tf.sigmoid(g)

    def _inverse(self, u: tf.Tensor, **kwargs) -> tf.Tensor:
        return tf.math.log(u) - tf.math.log1p(-u)

    def _forward_log_det_jacobian(self, g: tf.Tensor, **kwargs) -> tf.Tensor:
        return -tf.nn.softplus(-g) - tf.nn.softplus(g)

    def _inverse_log_det_jacobian(self, u: tf.Tensor, **kwargs) -> tf.Tensor:
        return -tf.math.log(u) - tf.math.log1p(-u)


@keras.saving.register_keras_serializable(package="tfnvp")
class ConvNet(keras.layers.Layer):
    """``conv3x3 -> relu -> conv1x1 -> relu -> conv3x3``, weight-normalized, no normalization.

    The dequantizer's networks: the context net ``h`` and the coupling
    bodies.  With ``zero_output`` the last convolution starts with zero gain
    (a coupling body then starts as the identity coupling).

    Args:
      hidden_channels: width of the two hidden layers.
      out_channels: output features.
      zero_output: start the output at zero.
    """

    def __init__(self, hidden_channels: int, out_channels: int, zero_output: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        if hidden_channels < 1 or out_channels < 1:
            raise UsageError("ConvNet needs positive hidden_channels and out_channels, got "
                             f"{hidden_channels} and {out_channels}.")
        self.hidden_channels = int(hidden_channels)
        self.out_channels = int(out_channels)
        self.zero_output = bool(zero_output)
        policy = self.dtype_policy
        self.conv_in = WeightNormConv2D(self.hidden_channels, dtype=policy)
        self.conv_hidden = WeightNormConv2D(self.hidden_channels, kernel_size=1, dtype=policy)
        self.conv_out = WeightNormConv2D(self.out_channels,
                                         gain_initializer="zeros" if zero_output else "ones",
                                         dtype=policy)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        """Creates every weight from the input shape, without tracing ``call``."""
        self.conv_in.build(input_shape)
        hidden = tuple(input_shape[:-1]) + (self.hidden_channels,)
        self.conv_hidden.build(hidden)
        self.conv_out.build(hidden)

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        h = tf.nn.relu(self.conv_in(x))
        return self.conv_out(tf.nn.relu(self.conv_hidden(h)))

    def get_config(self) -> dict:
        return {**super().get_config(), "hidden_channels": self.hidden_channels,
                "out_channels": self.out_channels, "zero_output": self.zero_output}


def dequantization_flow(conditioners: Sequence[keras.layers.Layer],
                        name: str = "dequantization_flow") -> FusedChain:
    """The bijector ``eps -> u`` of ``q(u | x)``: ``sigmoid o coupling_{n-1} o ... o coupling_0``.

    Coupling ``k`` is an ``AffineCoupling`` with ``conditioners[k]`` and a
    checkerboard mask of parity ``k % 2``.  Its call arguments: ``context`` is
    the context feature map ``c`` ([batch, H, W, K]), handed to every
    conditioner; ``training`` likewise.  Data direction: ``forward`` maps
    ``eps`` to ``u``; ``inverse`` maps ``u`` in ``(0, 1)`` back.
    """
    couplings = [AffineCoupling(conditioner, mask="checkerboard", parity=k % 2, event_ndims=3,
                                name=f"dequantization_coupling_{k}")
                 for k, conditioner in enumerate(conditioners)]
    return FusedChain([Sigmoid()] + couplings[::-1], name=name)


@keras.saving.register_keras_serializable(package="tfnvp")
class VariationalDequantizer(keras.layers.Layer):
    """``q(u | x)`` as a conditional flow on ``[0, 1)^D`` (see the module docstring).

    ``dequantize(images, seed, training, context) -> (x, log_q)``: ``x =
    images + u`` with ``u ~ q(u | images)`` and ``log_q = log q(u | images)``
    per image, like ``tfnvp.UniformDequantizer``.  With a ``seed`` (shape
    ``[2]``, or one per image, ``[batch..., 2]``: ``uniform_noise``) ``eps`` is a
    stateless draw, so ``u`` is a pure function of the seed and the weights.  A new
    dequantizer is exactly uniform dequantization (module docstring).  ``context`` is a class-conditional model's one-hot
    labels (``[batch..., num_classes]``, ``tfnvp.conditional.one_hot_context``):
    required with ``num_classes``, refused without.  No normalization layers, so
    ``training`` changes nothing; the gains of its weight-normalized
    convolutions are among a model's ``regularized_weights`` (the L2 term).

    Args:
      channels: the images' channels ``C``.
      num_couplings: affine couplings of the flow (checkerboard, alternating).
      hidden_channels: width of the context net and of the coupling bodies.
      context_channels: features of the context map ``c = h(x)``.
      num_classes: classes ``K`` of a class-conditional model: ``q(u | x, y)``
        with ``c = h(x) + E y`` (module docstring); ``None``: ``q(u | x)``.

    Example::

        deq = VariationalDequantizer(channels=3, dtype="float64")
        x, log_q = deq.dequantize(images_uint8, seed=[1, 2])
    """

    def __init__(self, channels: int, num_couplings: int = 4, hidden_channels: int = 32,
                 context_channels: int = 16, num_classes: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if min(channels, num_couplings, hidden_channels, context_channels) < 1:
            raise UsageError("VariationalDequantizer needs positive channels, num_couplings, "
                             f"hidden_channels and context_channels, got {channels}, "
                             f"{num_couplings}, {hidden_channels}, {context_channels}.")
        if num_classes is not None and int(num_classes) < 1:
            raise UsageError(f"num_classes must be None or at least 1, got {num_classes!r}.")
        self.channels = int(channels)
        self.num_couplings = int(num_couplings)
        self.hidden_channels = int(hidden_channels)
        self.context_channels = int(context_channels)
        self.num_classes = None if num_classes is None else int(num_classes)
        policy = self.dtype_policy
        self.context_net = ConvNet(hidden_channels, context_channels, dtype=policy,
                                   name="context_net")
        # E: one context feature vector per class (a bias-free Dense on the one-hot label).
        self.class_context = (None if self.num_classes is None else keras.layers.Dense(
            context_channels, use_bias=False, dtype=policy, name="class_context"))
        self.conditioners = track_layers(self, "coupling", [
            ShiftAndLogScale(ConvNet(hidden_channels, 2 * self.channels, zero_output=True,
                                     dtype=policy), self.channels, dtype=policy,
                             name=f"coupling_{k}")
            for k in range(self.num_couplings)])
        self._bijector = dequantization_flow(self.conditioners)

    @property
    def bijector(self) -> FusedChain:
        """The flow ``eps -> u`` (``dequantization_flow``); call it with ``context=``."""
        return self._bijector

    def get_config(self) -> dict:
        return {**super().get_config(), "channels": self.channels,
                "num_couplings": self.num_couplings, "hidden_channels": self.hidden_channels,
                "context_channels": self.context_channels, "num_classes": self.num_classes}

    def context(self, images: tf.Tensor, training: bool = False,
                labels: tf.Tensor | None = None) -> tf.Tensor:
        """``c = h(x / 255 - 1/2)`` for 8-bit images ``[batch, H, W, C]``, plus ``E y``
        for the one-hot ``labels`` (``[batch, num_classes]``) of a class-conditional ``q``."""
        dtype = tf.as_dtype(self.compute_dtype)
        x = tf.cast(images, dtype) / 255.0 - 0.5
        c = unless_empty(lambda t: self.context_net(t, training=training), x)
        if self.class_context is None:
            return c
        return c + self.class_context(tf.cast(labels, dtype))[:, None, None, :]

    def _check_context(self, context: tf.Tensor | None) -> tf.Tensor | None:
        """The one-hot labels, checked against ``num_classes``, with one batch axis."""
        if self.num_classes is None:
            if context is not None:
                raise ValueError("This VariationalDequantizer is unconditional (num_classes="
                                 "None): it takes no context (class labels).")
            return None
        if context is None:
            raise ValueError(f"This VariationalDequantizer is class-conditional (num_classes="
                             f"{self.num_classes}): pass context= (the one-hot labels).")
        context = tf.convert_to_tensor(context)
        if context.shape.rank is None or context.shape[-1] != self.num_classes:
            raise ValueError(f"VariationalDequantizer expects one-hot labels of shape "
                             f"[batch..., {self.num_classes}], got {context.shape}.")
        return tf.reshape(context, [-1, self.num_classes])

    def dequantize(self, images: tf.Tensor, seed: tf.Tensor | Sequence[int] | None = None,
                   training: bool = False, context: tf.Tensor | None = None
                   ) -> tuple[tf.Tensor, tf.Tensor]:
        images = tf.convert_to_tensor(images)
        if images.shape.rank is None or images.shape.rank < 4 or images.shape[-1] != self.channels:
            raise ValueError(f"VariationalDequantizer expects images of shape [batch..., H, W, "
                             f"{self.channels}], got {images.shape}.")
        dtype = tf.as_dtype(self.compute_dtype)
        labels = self._check_context(context)
        shape = tf.shape(images)
        # The conditioners' convolutions take one batch axis.
        flat = tf.reshape(images, tf.concat([[-1], shape[-3:]], 0))
        # eps = logit(v), v ~ U(tiny, 1): tfd.Logistic's sampler, drawn here because
        # TFP's takes only int32 seeds (the trainer's are int64).
        tiny = float(np.finfo(dtype.as_numpy_dtype).tiny)
        seed = validation.check_seed(seed, images.shape[:-3])
        if seed is not None and seed.shape.rank > 1:  # One seed per image.
            seed = tf.reshape(seed, [-1, 2])
        v = uniform_noise(flat, seed, dtype, minval=tiny)
        eps = tf.math.log(v) - tf.math.log1p(-v)
        base = tfd.Logistic(tf.zeros([], dtype), tf.ones([], dtype))
        kwargs = dict(training=training,
                      context=self.context(flat, training=training, labels=labels))
        u = self._bijector.forward(eps, **kwargs)
        log_det = self._bijector.forward_log_det_jacobian(eps, event_ndims=3, **kwargs)
        log_base = tf.reduce_sum(base.log_prob(eps), axis=[-3, -2, -1])
        pixels = tf.cast(flat, dtype)
        x = tf.minimum(pixels + u, tf.math.nextafter(pixels + 1.0, pixels))
        return (tf.reshape(x, shape), tf.reshape(log_base - log_det, shape[:-3]))

    def call(self, images: tf.Tensor, seed=None, training: bool = False, context=None):
        return self.dequantize(images, seed=seed, training=training, context=context)

    # (x, log_q): the images' shape and their batch axes.
    compute_output_shape = UniformDequantizer.compute_output_shape
