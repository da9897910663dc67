"""Glow's learned priors (the authors' release, openai/glow ``model.py``): their networks.

The release does not give every latent ``N(0, I)``.  The half of the
channels that leaves the flow at a split gets a Gaussian whose mean and
log-scale a zero-initialized convolution computes from the half that stays
(``split2d_prior``); the top latent gets a Gaussian whose mean and log-scale
the same kind of convolution computes from zeros (``learntop``)::

    [mu, log_sigma] = ZeroConv2D(h)         split prior: h = the half that stays
    [mu, log_sigma] = ZeroConv2D(0)         top prior
    z ~ N(mu, sigma^2)                      (mu: even output channels, log_sigma: odd)

``ZeroConv2D`` is the release's ``conv2d_zeros``: a 3x3 convolution, weights
and bias starting at zero, its output times ``exp(3 * logs)`` with a
per-channel ``logs`` starting at zero, and (the release's default
``edge_bias=True``) an extra input channel that is 1 in the zero padding and
0 inside, so positions at the border can differ.  On the input zeros (the top
prior) only the bias and the edge channel's weights act, so the top prior's
convolution is given the edge channel alone (the release's zero channels
would add weights that never get a gradient): its mean and log-scale are
one value per channel, with other values at the border positions, for any
image size.

A prior ``N(mu, sigma^2)`` on ``z`` is the standard normal on ``eps = (z -
mu) * exp(-log_sigma)``: an affine map, so the priors are affine couplings
in the flow (``tfnvp.bijectors.glow_prior``) and the model stays a
``TransformedDistribution`` over ``N(0, I)``.  ``GaussianPriorHead`` is that
coupling's conditioner: from ``[mu, log_sigma]`` it returns ``shift = -mu *
exp(-log_sigma)`` and ``log_scale = -log_sigma`` on the channels the prior
is for, so ``AffineCoupling``'s ``x * exp(log_scale) + shift`` is ``(x - mu) *
exp(-log_sigma)``.  Everything starts at zero: a new prior is ``N(0, I)``,
the flow's function without it.

The release's class conditioning (``--ycond``) adds to the top prior's
``[mu, log_sigma]`` a ``LinearZeros`` (the release's ``linear_zeros``) of the
one-hot label ``e_y``, the same at every position::

    [mu, log_sigma] = ZeroConv2D(0) + LinearZeros(e_y)      (ZeroConv2D(0) only with learntop)

so each class has its own top-prior mean and log-scale, and nothing else in
the flow sees the label.  ``LinearZeros`` is also the release's classifier of
the label from the top latent (``tfnvp.Glow``'s ``weight_y``).  The release
takes ``mu`` from the first half of the channels and ``log_sigma`` from the
second; here they are the even and odd channels, a permutation of the
zero-initialized outputs that computes the same family of priors.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfnvp.errors import UsageError
from tfnvp.nets.glow_net import _LOGSCALE_FACTOR
from tfnvp.nets.shift_and_log_scale import ShiftAndLogScale

__all__ = ["GaussianPriorHead", "LinearZeros", "ZeroConv2D"]

_PRIOR_KINDS = ("split", "top")


@keras.saving.register_keras_serializable(package="tfnvp")
class ZeroConv2D(keras.layers.Layer):
    """The release's ``conv2d_zeros`` (module docstring): ``(conv3x3([x, edge]) + b) *
    exp(3 * logs)`` with zero padding, ``edge`` 1 in the padding and 0 inside, every
    weight starting at zero.  ``x`` may have no channels (the top prior).

    Args:
      out_channels: output features.
      **kwargs: forwarded to ``keras.layers.Layer`` (``dtype``, ``name``).
    """

    def __init__(self, out_channels: int, **kwargs):
        super().__init__(**kwargs)
        if out_channels < 1:
            raise UsageError(f"ZeroConv2D needs out_channels >= 1, got {out_channels}.")
        self.out_channels = int(out_channels)

    def get_config(self) -> dict:
        return {**super().get_config(), "out_channels": self.out_channels}

    def build(self, x_shape: tuple[int | None, ...]) -> None:
        inputs = int(x_shape[-1]) + 1  # And the edge channel.
        self.kernel = self.add_weight(name="kernel", shape=(3, 3, inputs, self.out_channels),
                                      initializer="zeros")
        self.bias = self.add_weight(name="bias", shape=(self.out_channels,), initializer="zeros")
        self.logs = self.add_weight(name="logs", shape=(self.out_channels,), initializer="zeros")

    def compute_output_shape(self, x_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return tuple(x_shape[:-1]) + (self.out_channels,)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        padding = [[0, 0], [1, 1], [1, 1], [0, 0]]
        inside = tf.zeros(tf.concat([tf.shape(x)[:-1], [1]], 0), x.dtype)
        edge = tf.pad(inside, padding, constant_values=1.0)
        h = tf.nn.conv2d(tf.concat([tf.pad(x, padding), edge], axis=-1),
                         tf.cast(self.kernel, x.dtype), 1, "VALID")
        return (h + tf.cast(self.bias, x.dtype)) * tf.exp(
            _LOGSCALE_FACTOR * tf.cast(self.logs, x.dtype))


@keras.saving.register_keras_serializable(package="tfnvp")
class LinearZeros(keras.layers.Layer):
    """The release's ``linear_zeros`` (module docstring): ``(x W + b) * exp(3 * logs)``,
    ``W``, ``b`` and the per-output ``logs`` starting at zero, on ``x`` of shape
    ``[batch, features]``.

    Args:
      out_features: output features.
      **kwargs: forwarded to ``keras.layers.Layer`` (``dtype``, ``name``).
    """

    def __init__(self, out_features: int, **kwargs):
        super().__init__(**kwargs)
        if out_features < 1:
            raise UsageError(f"LinearZeros needs out_features >= 1, got {out_features}.")
        self.out_features = int(out_features)

    def get_config(self) -> dict:
        return {**super().get_config(), "out_features": self.out_features}

    def build(self, x_shape: tuple[int | None, ...]) -> None:
        self.kernel = self.add_weight(name="kernel", shape=(int(x_shape[-1]), self.out_features),
                                      initializer="zeros")
        self.bias = self.add_weight(name="bias", shape=(self.out_features,), initializer="zeros")
        self.logs = self.add_weight(name="logs", shape=(self.out_features,), initializer="zeros")

    def compute_output_shape(self, x_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return tuple(x_shape[:-1]) + (self.out_features,)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        h = tf.matmul(x, tf.cast(self.kernel, x.dtype)) + tf.cast(self.bias, x.dtype)
        return h * tf.exp(_LOGSCALE_FACTOR * tf.cast(self.logs, x.dtype))


@keras.saving.register_keras_serializable(package="tfnvp")
class GaussianPriorHead(keras.layers.Layer):
    """Conditioner of an ``AffineCoupling`` that is a learned Gaussian prior (module docstring).

    Math (``[mu, log_sigma]`` = a ``ZeroConv2D`` of the condition, even/odd channels)::

        shift     = -mu * exp(-log_sigma)
        log_scale = -log_sigma

    on the channels the prior is for, zeros elsewhere.

    Args:
      channels: ``C``, the channels of the tensor the coupling transforms.
      kind: ``"split"``: the prior of the first ``C/2`` channels (the half that
        leaves the flow at a ``FactorOut``) conditioned on the last ``C/2``
        (the coupling's channel mask of parity 1); ``"top"``: the prior of all
        ``C`` channels, from zeros: the convolution sees only its edge channel.
      num_classes: ``K`` (``"top"`` only): ``[mu, log_sigma]`` also gets a
        ``LinearZeros`` of the call's ``context``, the one-hot labels ``[batch, K]``
        (the release's ``ycond``); ``None``: no label.
      learned: whether ``[mu, log_sigma]`` has the ``ZeroConv2D`` (``"top"``: the
        release's ``learntop``; a split prior always has it).  A top prior without it
        and without labels would be ``N(0, I)``, and is refused.
      **kwargs: forwarded to ``keras.layers.Layer`` (``dtype``, ``name``).
    """

    # (shift, log_scale), each of x's shape.
    compute_output_shape = ShiftAndLogScale.compute_output_shape

    def __init__(self, channels: int, kind: str, num_classes: int | None = None,
                 learned: bool = True, **kwargs):
        super().__init__(**kwargs)
        if kind not in _PRIOR_KINDS:
            raise UsageError(f"kind must be one of {_PRIOR_KINDS}, got {kind!r}.")
        if kind == "split" and (channels < 2 or channels % 2):
            raise UsageError(f"A split prior needs an even number of channels, got {channels}.")
        if kind == "split" and (num_classes is not None or not learned):
            raise UsageError("A split prior is always learned and sees no label: pass "
                             "num_classes=None and learned=True.")
        if num_classes is not None and num_classes < 1:
            raise UsageError(f"num_classes must be at least 1 (None: no label), got "
                             f"{num_classes}.")
        if not learned and num_classes is None:
            raise UsageError("A top prior that is neither learned nor conditioned on labels is "
                             "N(0, I): pass learned=True or num_classes=K, or leave it out.")
        self.channels = int(channels)
        self.kind = kind
        self.num_classes = None if num_classes is None else int(num_classes)
        self.learned = bool(learned)
        self.prior_channels = self.channels // 2 if kind == "split" else self.channels
        self.net = (ZeroConv2D(2 * self.prior_channels, dtype=self.dtype_policy, name="zero_conv")
                    if self.learned else None)
        self.label_embedding = (
            None if self.num_classes is None else
            LinearZeros(2 * self.prior_channels, dtype=self.dtype_policy, name="label_embedding"))

    def get_config(self) -> dict:
        return {**super().get_config(), "channels": self.channels, "kind": self.kind,
                "num_classes": self.num_classes, "learned": self.learned}

    def _condition(self, x: tf.Tensor) -> tf.Tensor:
        return x[..., self.prior_channels:] if self.kind == "split" else x[..., :0]

    def build(self, x_shape: tuple[int | None, ...],
              context_shape: tuple[int | None, ...] | None = None) -> None:
        """Builds the convolution on the condition's shape and the label embedding on the
        context's (one-hot labels, ``[batch, num_classes]``)."""
        condition = self.channels - self.prior_channels if self.kind == "split" else 0
        if self.net is not None:
            self.net.build(tuple(x_shape[:-1]) + (condition,))
        if self.label_embedding is not None:
            self.label_embedding.build(context_shape or (None, self.num_classes))

    def mean_and_log_scale(self, x: tf.Tensor, context: tf.Tensor | None = None
                           ) -> tuple[tf.Tensor, tf.Tensor]:
        """``(mu, log_sigma)`` of the prior, each ``[batch, H, W, prior_channels]``, from the
        coupling's masked input ``x`` (``[batch, H, W, C]``) and, for a prior with
        ``num_classes``, the one-hot labels ``context`` (``[batch, K]``)."""
        if self.label_embedding is None:
            h = self.net(self._condition(x))
            return h[..., 0::2], h[..., 1::2]
        if context is None:
            raise ValueError(f"This top prior is class-conditional (num_classes="
                             f"{self.num_classes}): pass context=[batch, {self.num_classes}] "
                             "(one-hot labels).")
        h = self.label_embedding(tf.cast(context, x.dtype))[:, None, None, :]
        if self.net is not None:
            h = h + self.net(self._condition(x))
        h = tf.broadcast_to(h, tf.concat([tf.shape(x)[:-1], [2 * self.prior_channels]], 0))
        return h[..., 0::2], h[..., 1::2]

    def call(self, x: tf.Tensor, training: bool = False,
             context: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """``(shift, log_scale)`` of the coupling (class docstring); ``context``: the one-hot
        labels, read by a prior with ``num_classes`` only (the release's priors have no
        mode)."""
        del training
        mean, log_sigma = self.mean_and_log_scale(
            x, context if self.label_embedding is not None else None)
        shift, log_scale = -mean * tf.exp(-log_sigma), -log_sigma
        if self.kind == "top":
            return shift, log_scale
        zeros = tf.zeros_like(shift)
        return tf.concat([shift, zeros], -1), tf.concat([log_scale, zeros], -1)
