"""Glow's coupling conditioner (Kingma & Dhariwal 2018, section 3.3 and appendix).

``GlowNet`` is the paper's ``NN()``: three convolutions, the first two
followed by actnorm and a ReLU, the last zero-initialized (so every coupling
starts at the same, data-independent map)::

    h = relu(actnorm(conv3x3(x, hidden)))
    h = relu(actnorm(conv1x1(h, hidden)))
    out = zero_conv3x3(h, out) * exp(3 * logs)        (logs per channel, starts at 0)

The convolutions before an actnorm have no bias (the actnorm's is the bias);
the weights start as ``N(0, 0.05^2)`` as in the authors' release.  The actnorms
are ``tfnvp.bijectors.ActNormParameters`` layers: data-dependent
initialization on the first training call, checkpointed.  Left out: the
release's "edge bias" extra input channel that marks zero padding.

Flow++'s conditioner components (Ho et al. 2019, section 3.3; all off by
default, as in ``tfnvp.nets.ResNet``, from the same layers).  The hidden
layer becomes::

    u = dropout(h)                                      dropout=p: training mode only
    h = relu(actnorm(conv1x1(u, hidden)))               default
    h = h + GLU(actnorm(conv1x1(u, 2 * hidden)))        gated=True: Flow++'s gated
                                                        convolution, GLU(a, g) = a * sigmoid(g)
    h = attention(h)                                    attention=True

``dropout`` and ``GLU`` are ``tfnvp.nets.gating``'s (inverted dropout, a
mask per replica; evaluation is deterministic), ``attention`` is a
``tfnvp.nets.GatedAttention`` over the positions (``attention_heads`` heads;
residual, gated, layer-normalized).  The output convolution still starts at
zero: a new coupling is the same map whatever the options.  With dropout,
the hidden actnorm initializes from its first training batch as dropped
(inverted dropout keeps the activations' mean).

``GlowAdditiveHead`` is the additive coupling's conditioner (Glow's
``coupling="additive"``, the release's ``flow_coupling=0``): the network, with
half as many outputs, gives the shift ``t`` of ``y_b = x_b + t(x_a)``
(``tfnvp.bijectors.AdditiveCoupling``, log-det 0).

``GlowAffineHead`` turns the network into a conditioner for
``tfnvp.bijectors.AffineCoupling`` computing Glow's sigmoid-scaled affine
coupling (see ``tfnvp.bijectors.glow_coupling``): of the channel-masked
input it feeds the kept half to the body, splits the body's output into
``t`` (even channels) and ``h`` (odd channels, as in the release), and
returns ``shift = t * s``, ``log_scale = log s`` with ``s = max(sigmoid(h + 2),
e^-7)`` on the transformed half (zeros on the kept half).

The floor ``s >= e^-7`` is ours (the release has none).  In the sampling
direction the coupling divides by ``s``, an amplification without a bound:
a large kept half makes the network emit a very negative ``h``, which makes
the next values larger still.  A Glow trained on the CIFAR-10 JPEGs (the
ablation's ``glow``, 3,000 steps) drew 18 non-finite samples among 2,048 at
temperature 1, each an overflow of ``exp(-log s)``; with the floor none, and
its held-out bits/dim were unchanged to five decimals (3.65285): on its data
``log s`` never went below -6.13.  The floor is exact like the rest of the
coupling (``log s`` is a function of the kept half; where it binds, its
gradient is zero).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfnvp.bijectors.actnorm import ActNormParameters
from tfnvp.errors import UsageError
from tfnvp.nets.attention import GatedAttention
from tfnvp.nets.gating import (ReplicaDropout, check_dropout, dropped, flowpp_options,
                               gated_linear_unit)
from tfnvp.nets import shared_body
from tfnvp.nets.shift_and_log_scale import BodyConfig, ShiftAndLogScale

__all__ = ["GlowAdditiveHead", "GlowAffineHead", "GlowHead", "GlowNet", "MIN_LOG_SCALE"]

_LOGSCALE_FACTOR = 3.0  # The release's `logscale_factor` of its zero-initialized convolution.
_SCALE_OFFSET = 2.0  # sigmoid(h + 2): the coupling starts as a contraction by sigmoid(2).
#: Floor of the coupling's ``log s`` (ours; module docstring): sampling divides by ``s``.
MIN_LOG_SCALE = -7.0


@keras.saving.register_keras_serializable(package="tfnvp")
class GlowNet(keras.layers.Layer):
    """Glow's three-convolution coupling network (see the module docstring).

    Args:
      out_channels: features of the output (``2 * C/2`` for a coupling on
        ``C`` channels: a shift and a scale for each transformed channel).
      hidden_channels: width of the hidden layers (512 in the paper).
      context_channels: size of the per-example conditioning vector
        (``context``, e.g. one-hot labels); 0 for an unconditional net.  It
        enters as a learned per-channel bias after the first actnorm.
      attention: gated self-attention after the hidden layer (module docstring).
      attention_heads: heads of the attention; must divide ``hidden_channels``.
      gated: Flow++'s gated hidden layer ``h + GLU(actnorm(conv1x1(h)))``.
      dropout: dropout rate in ``[0, 1)`` on the hidden activations before the
        hidden convolution, in training mode only.
      **kwargs: forwarded to ``keras.layers.Layer`` (``dtype``, ``name``).
    """

    #: One trace for every body like it (``tfnvp.nets.shared_body``).
    traced_once = True

    def __init__(self, out_channels: int, hidden_channels: int = 512,
                 context_channels: int = 0, attention: bool = False, attention_heads: int = 4,
                 gated: bool = False, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if out_channels < 1 or hidden_channels < 1 or context_channels < 0:
            raise UsageError("GlowNet needs positive out_channels and hidden_channels and a "
                             f"non-negative context_channels, got {out_channels}, "
                             f"{hidden_channels}, {context_channels}.")
        self.out_channels = int(out_channels)
        self.hidden_channels = int(hidden_channels)
        self.context_channels = int(context_channels)
        self.attention = bool(attention)
        self.attention_heads = int(attention_heads)
        self.gated = bool(gated)
        self.dropout = check_dropout(dropout)
        dtype = self.dtype_policy
        normal = keras.initializers.RandomNormal(stddev=0.05)
        self.conv_in = keras.layers.Conv2D(self.hidden_channels, 3, padding="same", use_bias=False,
                                           kernel_initializer=normal, dtype=dtype)
        self.norm_in = ActNormParameters(self.hidden_channels, dtype=dtype)
        # Only with dropout > 0: its seed generator is a (checkpointed) variable.
        self.drop = (ReplicaDropout(self.dropout, dtype=dtype, name="dropout")
                     if self.dropout else None)
        hidden_out = 2 * self.hidden_channels if self.gated else self.hidden_channels
        self.conv_hidden = keras.layers.Conv2D(hidden_out, 1, use_bias=False,
                                               kernel_initializer=normal, dtype=dtype)
        self.norm_hidden = ActNormParameters(hidden_out, dtype=dtype)
        self.gated_attention = (GatedAttention(self.hidden_channels, self.attention_heads,
                                               dtype=dtype, name="attention")
                                if self.attention else None)
        self.conv_out = keras.layers.Conv2D(self.out_channels, 3, padding="same",
                                            kernel_initializer="zeros", dtype=dtype)
        self.out_logs = self.add_weight(name="out_logs", shape=(self.out_channels,),
                                        initializer="zeros")
        self.context_bias = (keras.layers.Dense(self.hidden_channels, use_bias=False, dtype=dtype)
                             if self.context_channels else None)

    def get_config(self) -> dict:
        return {**super().get_config(), "out_channels": self.out_channels,
                "hidden_channels": self.hidden_channels,
                "context_channels": self.context_channels,
                **({"attention": True, "attention_heads": self.attention_heads}
                   if self.attention else {}),
                **flowpp_options(self.gated, self.dropout)}

    def _check_context(self, context: tf.Tensor | None) -> None:
        if context is None and self.context_bias is not None:
            raise ValueError(f"This GlowNet is conditional (context_channels="
                             f"{self.context_channels}): pass context=[batch, "
                             f"{self.context_channels}] (e.g. one-hot labels).")
        if context is not None and self.context_bias is None:
            raise ValueError("This GlowNet is unconditional (context_channels=0) but got a "
                             "context; build it with context_channels=K to condition on it.")
        if context is not None and context.shape[-1] != self.context_channels:
            raise ValueError(f"context must have {self.context_channels} features, got shape "
                             f"{context.shape}.")

    def build(self, x_shape: tuple[int | None, ...],
              context_shape: tuple[int | None, ...] | None = None) -> None:
        """Creates every weight from the input shapes, without tracing ``call``."""
        self.conv_in.build(x_shape)
        hidden = tuple(x_shape[:-1]) + (self.hidden_channels,)
        self.norm_in.build(hidden)  # Records the shape only: actnorm weights exist already.
        self.conv_hidden.build(hidden)
        self.norm_hidden.build(tuple(x_shape[:-1]) + (self.norm_hidden.channels,))
        if self.gated_attention is not None:
            self.gated_attention.build(hidden)
        self.conv_out.build(hidden)
        if self.context_bias is not None and context_shape is not None:
            self.context_bias.build(context_shape)

    def call(self, x: tf.Tensor, training: bool = False,
             context: tf.Tensor | None = None) -> tf.Tensor:
        self._check_context(context)
        h = self.norm_in(self.conv_in(x), training=training)
        if context is not None:
            h = h + self.context_bias(context)[:, None, None, :]
        h = tf.nn.relu(h)
        u = self.norm_hidden(self.conv_hidden(dropped(self.drop, h, training)), training=training)
        h = h + gated_linear_unit(u) if self.gated else tf.nn.relu(u)
        if self.gated_attention is not None:
            h = self.gated_attention(h)
        scale = tf.exp(_LOGSCALE_FACTOR * tf.cast(self.out_logs, h.dtype))
        return self.conv_out(h) * scale


class GlowHead(BodyConfig, keras.layers.Layer):
    """What Glow's coupling heads share: the body on the kept half of the channels
    (``parity`` 0: the first half, ``channel_mask``; 1: the second), and the
    transformed half's parameters placed beside zeros on the kept half."""

    def __init__(self, body: keras.layers.Layer, channels: int, parity: int = 0, **kwargs):
        super().__init__(**kwargs)
        if channels < 2 or channels % 2:
            raise UsageError(f"Glow's coupling needs an even number of channels, got {channels}.")
        if parity not in (0, 1):
            raise UsageError(f"parity must be 0 or 1, got {parity!r}.")
        self.body = body
        self.channels = int(channels)
        self.parity = parity

    def get_config(self) -> dict:
        return {**super().get_config(), "channels": self.channels, "parity": self.parity}

    def build(self, x_shape: tuple[int | None, ...],
              context_shape: tuple[int | None, ...] | None = None) -> None:
        """Builds ``body`` on the kept half (and the context), without tracing ``call``."""
        kept = tuple(x_shape[:-1]) + (self.channels // 2,)
        self.body.build(kept, *([] if context_shape is None else [context_shape]))

    def _body_outputs(self, x: tf.Tensor, training: bool,
                      context: tf.Tensor | None) -> tf.Tensor:
        """The body on the kept half, in the variables' dtype."""
        half = self.channels // 2
        kept = x[..., :half] if self.parity == 0 else x[..., half:]
        return tf.cast(shared_body.call(self.body, kept, training, context), self.variable_dtype)

    def _placed(self, values: tf.Tensor) -> tf.Tensor:
        """``values`` of the transformed half, zeros on the kept half."""
        zeros = tf.zeros_like(values)
        return tf.concat([zeros, values] if self.parity == 0 else [values, zeros], -1)


@keras.saving.register_keras_serializable(package="tfnvp")
class GlowAffineHead(GlowHead):
    """Conditioner for ``AffineCoupling(mask="channel")`` computing Glow's coupling.

    Math (``a`` = kept half, ``[t, h] = body(a)``; see the module docstring)::

        s         = max(sigmoid(h + 2), exp(MIN_LOG_SCALE))
        shift     = t * s
        log_scale = log s

    so the coupling's ``x * exp(log_scale) + shift`` is Glow's
    ``(x + t) * sigmoid(h + 2)`` wherever ``sigmoid(h + 2) >= e^-7``.

    Args:
      body: a layer mapping ``[..., H, W, C/2]`` (and ``training=``,
        ``context=``) to ``C`` features, normally ``GlowNet(out_channels=C)``.
      channels: ``C`` (even).
      parity: the coupling's parity: 0 keeps the first half of the channels
        (``channel_mask``), 1 the second.  ``tfnvp.bijectors.glow_coupling``
        builds the coupling with the matching parity.
      **kwargs: forwarded to ``keras.layers.Layer``.
    """

    # (shift, log_scale), each of x's shape.
    compute_output_shape = ShiftAndLogScale.compute_output_shape

    def call(self, x: tf.Tensor, training: bool = False,
             context: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        raw = self._body_outputs(x, training, context)
        shift, pre_scale = raw[..., 0::2], raw[..., 1::2] + _SCALE_OFFSET
        floor = tf.constant(MIN_LOG_SCALE, pre_scale.dtype)
        log_scale = tf.maximum(tf.math.log_sigmoid(pre_scale), floor)
        shift = shift * tf.maximum(tf.sigmoid(pre_scale), tf.exp(floor))
        return self._placed(shift), self._placed(log_scale)


@keras.saving.register_keras_serializable(package="tfnvp")
class GlowAdditiveHead(GlowHead):
    """Conditioner for ``AdditiveCoupling(mask="channel")`` computing Glow's additive
    coupling (the release's ``flow_coupling=0``): ``shift = t = body(a)`` on the
    transformed half, so the coupling is ``y_b = x_b + t(x_a)`` with log-det 0.

    Args as ``GlowAffineHead``'s, but ``body`` maps ``[..., H, W, C/2]`` to ``C/2``
    features (``GlowNet(out_channels=C/2)``: half an affine head's).
    """

    def compute_output_shape(self, x_shape: tuple[int | None, ...],
                             context_shape: tuple[int | None, ...] | None = None
                             ) -> tuple[tuple[int | None, ...]]:
        """The shape of ``(shift,)``: ``x``'s."""
        return (tuple(x_shape[:-1]) + (self.channels,),)

    def call(self, x: tf.Tensor, training: bool = False,
             context: tf.Tensor | None = None) -> tuple[tf.Tensor]:
        return (self._placed(self._body_outputs(x, training, context)),)
