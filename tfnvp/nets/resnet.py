"""Residual conditioner network for image coupling layers (section 3.7).

The s and t functions of a coupling layer are one deep convolutional ResNet
(He et al., 2016) with batch normalization and weight normalization::

    h_0 = conv3x3(x)
    repeat i = 1..num_blocks:  h_i = block_i(h_{i-1})
        block(h) = h + conv3x3(relu(bn(conv3x3(relu(bn(h))))))         # default
                 = h + a * sigmoid(g), (a, g) = split(conv3x3(...))   # gated=True
    s = sum_{i=0..num_blocks} conv1x1_i(h_i)      # skip connections (default)
    out = conv3x3(relu(bn(s)))          # 2 * out_channels features, zero gain

With ``attention=True`` each residual block is followed by gated multi-head
self-attention over the positions (Flow++, Ho et al. 2019, section 3.3;
``tfnvp.nets.attention.GatedAttention``: residual, gated, layer-normalized),
``h_i = attention_i(block_i(h_{i-1}))``: the convolutions see a neighbourhood,
the attention the whole (coarse) image.  The residual blocks, their
batch-norm folding in evaluation mode and the output head are unchanged.

Flow++'s gated convolutions and dropout (Ho et al. 2019, section 3.3 and
appendix: "h + GLU(conv(nonlinearity(conv(nonlinearity(h)))))", dropout 0.2
on CIFAR-10).  With ``gated=True`` each residual block's last convolution
has ``2C`` output features, split into ``a`` and ``g``, and the block adds a
gated linear unit (Dauphin et al., 2017)::

    u = relu(bn(conv3x3(relu(bn(h)))))
    a, g = split(conv3x3(dropout(u)), 2)      # 2C features -> C and C
    block(h) = h + a * sigmoid(g)

With ``dropout=p > 0`` the hidden activations ``u`` go through a
``keras.layers.Dropout(p)`` (inverted dropout: kept entries scaled by
``1 / (1 - p)``; every replica of a ``tf.distribute`` strategy draws its own
mask, ``tfnvp.nets.gating.ReplicaDropout``) before the last convolution, in training mode only.
Evaluation (``log_prob``, sampling, export) is deterministic, without
dropout, and so is batch-norm recalibration (``training=RECALIBRATE``): it
measures the statistics of the evaluation-mode network.  Real NVP's batch
norms and ReLUs are kept (Flow++'s blocks use concat-ELU and a layer norm
after each block), so are the blocks' batch-norm folding and the zero-gain
output head: a new coupling is still the identity, whatever the blocks
compute.  Both options default to off, and the layers' configurations then
have no ``gated``/``dropout`` keys.

Section 4.1 uses "residual networks in the coupling layers with
skip-connections"; as in the authors' release, every stage of the network,
the input convolution's output and each residual block's, reaches the output
head through its own weight-normalized 1x1 convolution, and the head reads
their sum.  With ``skip_connections=False`` the head reads ``h_num_blocks``
(only the residual connections; for ablations).  The last convolution starts
with zero gain, so a new coupling layer is the identity (with
``log_scale_gain``, the release form's checkerboard couplings, only its shift
half does; the log-scale half starts at the release's small gain, and the
coupling's scalar s-scale, starting at 0, keeps the coupling the identity).

In training mode each ``conv(relu(bn(x)))`` unit keeps only ``x`` for the
backward pass, which recomputes ``relu(bn(x))`` (``normalized_conv``): half
the activations of a residual block are not stored, the gradients are the same.

The batch normalizations are ``tfnvp.nets.batch_norm.BatchNormalization``, a
``keras.layers.BatchNormalization`` with zero-debiased moving averages
(``tfnvp.running_average``) that runs as one fused op (``FusedBatchNormV3``,
a oneDNN primitive on CPU, and its fused gradient) instead of ~8 separate
element-wise passes over the activations; float32 statistics also for
bfloat16/float16 activations.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from tfnvp import running_average
from tfnvp.errors import UsageError
from tfnvp.nets.attention import GatedAttention
from tfnvp.nets.batch_norm import BatchNormalization
from tfnvp.nets.conditioner_input import ConditionerInput
from tfnvp.nets.gating import (ReplicaDropout, check_dropout, dropped, flowpp_options,
                               gated_linear_unit)
from tfnvp.nets import shared_body
from tfnvp.nets.recompute import recompute
from tfnvp.nets.tracking import track_layers
from tfnvp.nets.weight_norm import WeightNormConv2D

__all__ = ["ResNet", "OutputGain", "normalized_conv", "release_gain"]

# Evaluation mode: fold each residual block's inner batch norm into the
# convolution before it (see `_ResidualBlock._conv_in_folded`).  Read when a
# function is traced.
FOLD_EVAL_BATCH_NORM = True

# Training mode: each conv(relu(bn(x))) unit keeps only x for its gradient and
# recomputes relu(bn(x)) in the backward pass (see `normalized_conv`).  Read
# when a function is traced.
LEAN_BACKWARD = True


#: Keras' batch-norm epsilon, the conditioners' before the release's option (1e-4).
KERAS_EPSILON = 1e-3


def _changed(**options: tuple) -> dict:
    """``{name: value}`` of the ``name=(value, default)`` that differ from their default:
    the configuration keys of options that came later, so earlier configurations stay as
    they were."""
    return {name: value for name, (value, default) in options.items() if value != default}


def release_gain(fan_in: int) -> float:
    """The release's initial weight-norm gain (``magnitude``) of a convolution with
    ``fan_in`` inputs per filter: ``0.01 * sqrt(fan_in / 12)`` (``real_nvp_utils.conv_layer``,
    ``stddev=1e-2``)."""
    return 0.01 * math.sqrt(fan_in / 12.0)


@keras.saving.register_keras_serializable(package="tfnvp")
class OutputGain(keras.initializers.Initializer):
    """The output convolution's initial gains: 0 for the first half of the filters
    (the shift), ``log_scale_gain`` for the second half (the raw log-scale)."""

    def __init__(self, log_scale_gain: float):
        self.log_scale_gain = float(log_scale_gain)

    def __call__(self, shape, dtype=None):
        half = shape[0] // 2
        return tf.concat([tf.zeros([half], dtype),
                          tf.fill([shape[0] - half], tf.constant(self.log_scale_gain, dtype))], 0)

    def get_config(self) -> dict:
        return {"log_scale_gain": self.log_scale_gain}


def _trace_settings() -> tuple[bool, bool]:
    """The switches above, as a trace reads them: part of a shared body's key
    (``tfnvp.nets.shared_body``), so a change traces anew."""
    return FOLD_EVAL_BATCH_NORM, LEAN_BACKWARD


def normalized_conv(norm: BatchNormalization, conv: keras.layers.Layer, x: tf.Tensor,
                    training: running_average.Training,
                    drop: ReplicaDropout | None = None) -> tf.Tensor:
    """``conv(dropout(relu(norm(x))))``, a pre-activation unit of the ResNet.

    Memory: autodiff would keep both ``x`` (for the batch norm's gradient)
    and ``relu(norm(x))`` (for the ReLU's and the convolution's).  In
    training mode (``LEAN_BACKWARD``) the unit keeps ``x`` only and its
    backward pass recomputes ``relu(norm(x))`` from it, with the same batch
    statistics and without a second moving-average update
    (``tfnvp.nets.recompute.recompute``): two tensors fewer per residual
    block, for element-wise work (no convolution) in the backward pass; the
    gradients are the same.  Not with active dropout (a recomputation would
    draw another mask) nor in evaluation mode or when recalibrating (no
    gradients are needed there).
    """

    def unit(inputs: tf.Tensor, mode: running_average.Training) -> tf.Tensor:
        return conv(dropped(drop, tf.nn.relu(norm(inputs, training=mode)), mode))

    if (LEAN_BACKWARD and training and not running_average.is_cumulative(training)
            and drop is None):
        return recompute(unit, x, training,
                         weights=norm.trainable_variables + conv.trainable_variables)
    return unit(x, training)


@keras.saving.register_keras_serializable(package="tfnvp")
class _ResidualBlock(keras.layers.Layer):
    """``h + conv(relu(bn(conv(relu(bn(h))))))``; gated (Flow++ section 3.3):
    ``h + a * sigmoid(g)`` with ``(a, g)`` the last convolution's ``2C`` features;
    ``dropout`` before the last convolution in training mode (module docstring)."""

    #: One trace for every block like it (``tfnvp.nets.shared_body``).
    traced_once = True
    trace_settings = staticmethod(_trace_settings)

    def __init__(self, channels: int, synchronized: bool, momentum: float = 0.99,
                 gated: bool = False, dropout: float = 0.0, epsilon: float = KERAS_EPSILON,
                 batch_norm_scale: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.synchronized = bool(synchronized)
        self.momentum = float(momentum)
        self.gated = bool(gated)
        self.dropout = check_dropout(dropout)
        self.epsilon = float(epsilon)
        self.batch_norm_scale = bool(batch_norm_scale)
        norm = dict(momentum=momentum, epsilon=self.epsilon, scale=self.batch_norm_scale,
                    synchronized=synchronized, dtype=self.dtype_policy)
        self.norm_in = BatchNormalization(**norm)
        self.conv_in = WeightNormConv2D(channels, dtype=self.dtype_policy)
        self.norm_out = BatchNormalization(**norm)
        # Only with dropout > 0: its seed generator is a (checkpointed) variable.
        self.drop = (ReplicaDropout(self.dropout, dtype=self.dtype_policy, name="dropout")
                     if self.dropout else None)
        self.conv_out = WeightNormConv2D(2 * channels if self.gated else channels,
                                         dtype=self.dtype_policy)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        """Creates every weight from the input shape (``[..., channels]``): Keras
        would otherwise trace ``call`` once more, symbolically, to find them."""
        hidden = tuple(input_shape[:-1]) + (self.channels,)
        for layer in (self.norm_in, self.conv_in, self.norm_out, self.conv_out):
            layer.build(hidden)

    def call(self, h: tf.Tensor, training: running_average.Training = False) -> tf.Tensor:
        if FOLD_EVAL_BATCH_NORM and self._foldable(h, training):
            hidden = self._conv_in_folded(tf.nn.relu(self.norm_in(h, training=training)))
            out = self.conv_out(tf.nn.relu(hidden))
        else:
            hidden = normalized_conv(self.norm_in, self.conv_in, h, training)
            out = normalized_conv(self.norm_out, self.conv_out, hidden, training, self.drop)
        if self.gated:
            out = gated_linear_unit(out)
        return h + out

    def _foldable(self, h: tf.Tensor, training) -> bool:
        """Whether ``norm_out`` uses its moving averages on ``conv_in(relu(norm_in(h)))`` here."""
        norm = self.norm_out
        return (self.conv_in.built and norm.built and not (training and norm.trainable)
                and norm._fused(h, None))

    def _conv_in_folded(self, x: tf.Tensor) -> tf.Tensor:
        """``norm_out(conv_in(x))`` in evaluation mode as one convolution.

        With moving averages the normalization is per-channel affine, so it
        folds into the convolution: ``w' = w * s``, ``b' = (b - mean) * s +
        beta`` with ``s = gamma / sqrt(var + eps)``, computed in float32.  One
        pass over the activations fewer (the following ReLU fuses into the
        oneDNN convolution); equal up to float rounding.
        """
        conv, norm = self.conv_in, self.norm_out
        scale = norm.scale_factors() * tf.math.rsqrt(
            tf.convert_to_tensor(norm.moving_variance) + norm.epsilon)
        kernel = conv.normalized_kernel() * scale
        bias = ((tf.convert_to_tensor(conv.bias) - tf.convert_to_tensor(norm.moving_mean)) * scale
                + tf.convert_to_tensor(norm.beta))
        out = tf.nn.conv2d(x, tf.cast(kernel, x.dtype), strides=1, padding="SAME")
        return tf.nn.bias_add(out, tf.cast(bias, x.dtype))

    def get_config(self) -> dict:
        return {**super().get_config(), "channels": self.channels,
                "synchronized": self.synchronized, "momentum": self.momentum,
                **flowpp_options(self.gated, self.dropout),
                **_changed(epsilon=(self.epsilon, KERAS_EPSILON),
                           batch_norm_scale=(self.batch_norm_scale, True))}


@keras.saving.register_keras_serializable(package="tfnvp")
class ResNet(keras.layers.Layer):
    """Conditioner body: ``[..., H, W, C_in] -> [..., H, W, out_channels]``.

    Args:
      hidden_channels: feature maps of every hidden convolution.
      num_blocks: number of residual blocks.
      out_channels: output features (``2 * C`` for a shift and a log-scale).
      synchronized_batch_norm: all-reduce batch-norm statistics across
        replicas under ``tf.distribute``.
      batch_norm_momentum: decay of the batch norms' running statistics.
      skip_connections: sum 1x1 projections of every stage into the output
        head (see the module docstring); False: only the residual connections.
      attention: gated self-attention after every residual block (module
        docstring); needs ``num_blocks >= 1``.
      attention_heads: heads of each attention; must divide ``hidden_channels``.
      gated: Flow++'s gated residual blocks, ``h + a * sigmoid(g)`` (module
        docstring; Ho et al. 2019, section 3.3).
      dropout: dropout rate in ``[0, 1)`` on each residual block's hidden
        activations before its last convolution, in training mode only.
      batch_norm_epsilon: the batch norms' epsilon (Keras' 1e-3; the release's 1e-4).
      batch_norm_scale: the batch norms' learned scale ``gamma`` (the release has none).
      output_kernel_size: the output convolution's (3; the release's 1).
      log_scale_gain: the initial gain of the output convolution's second half
        of filters (``ShiftAndLogScale``'s raw log-scale); the first half (the
        shift) starts at zero gain.  0 (default): the output starts at zero, a
        new coupling is the identity.  A coupling whose log-scale factor starts
        at 0 (the release's checkerboard couplings) needs a nonzero raw
        log-scale, else neither gets a gradient: ``release_gain(fan_in)``, small
        random outputs, multiplied by the factor 0, so that coupling too starts
        as the identity.
      input_mask, input_parity, input_channels: a coupling's mask (``"checkerboard"``
        or ``"channel"``), parity and coupled channels: the input is first
        prepared as in the release (``tfnvp.nets.conditioner_input``); ``None``:
        the input goes straight to the first convolution.
    """

    #: One trace for every body like it (``tfnvp.nets.shared_body``), the prepared
    #: input (parity included) run before it, inline.
    traced_once = True
    trace_settings = staticmethod(_trace_settings)
    #: The configuration that the shared trace does not read (the prefix's, and an
    #: initializer's).
    untraced_config = ("input_mask", "input_parity", "input_channels", "log_scale_gain")

    def __init__(self, hidden_channels: int, num_blocks: int, out_channels: int,
                 synchronized_batch_norm: bool = False, batch_norm_momentum: float = 0.99,
                 skip_connections: bool = True, attention: bool = False,
                 attention_heads: int = 4, gated: bool = False, dropout: float = 0.0,
                 batch_norm_epsilon: float = KERAS_EPSILON, batch_norm_scale: bool = True,
                 output_kernel_size: int = 3, log_scale_gain: float = 0.0,
                 input_mask: str | None = None, input_parity: int = 0,
                 input_channels: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if hidden_channels < 1 or num_blocks < 0 or out_channels < 1:
            raise UsageError("ResNet needs hidden_channels >= 1, num_blocks >= 0 and "
                             f"out_channels >= 1, got {hidden_channels}, {num_blocks}, {out_channels}.")
        if attention and num_blocks < 1:
            raise UsageError("ResNet(attention=True) needs num_blocks >= 1: the attention "
                             "follows each residual block.")
        self.hidden_channels = int(hidden_channels)
        self.num_blocks = int(num_blocks)
        self.out_channels = int(out_channels)
        self.synchronized_batch_norm = bool(synchronized_batch_norm)
        self.batch_norm_momentum = float(batch_norm_momentum)
        self.skip_connections = bool(skip_connections)
        self.attention = bool(attention)
        self.attention_heads = int(attention_heads)
        self.gated = bool(gated)
        self.dropout = check_dropout(dropout)
        self.batch_norm_epsilon = float(batch_norm_epsilon)
        self.batch_norm_scale = bool(batch_norm_scale)
        self.output_kernel_size = int(output_kernel_size)
        self.log_scale_gain = float(log_scale_gain)
        self.input_mask = input_mask
        self.input_parity = int(input_parity)
        self.input_channels = None if input_channels is None else int(input_channels)
        if (input_mask is None) != (input_channels is None):
            raise UsageError("ResNet: give input_mask and input_channels together (a prepared "
                             f"input) or neither, got {input_mask!r} and {input_channels!r}.")
        policy = self.dtype_policy
        self.prepare = None if input_mask is None else ConditionerInput(
            self.input_channels, input_mask, self.input_parity,
            batch_norm_momentum=batch_norm_momentum, batch_norm_epsilon=batch_norm_epsilon,
            synchronized_batch_norm=synchronized_batch_norm, dtype=policy, name="prepare")
        self.conv_in = WeightNormConv2D(hidden_channels, dtype=policy)
        self.blocks = track_layers(self, "block", [
            _ResidualBlock(hidden_channels, synchronized_batch_norm, momentum=batch_norm_momentum,
                           gated=gated, dropout=self.dropout, epsilon=batch_norm_epsilon,
                           batch_norm_scale=batch_norm_scale, dtype=policy, name=f"block_{i}")
            for i in range(num_blocks)])
        self.attentions = track_layers(self, "attention", [
            GatedAttention(hidden_channels, attention_heads, dtype=policy, name=f"attention_{i}")
            for i in range(num_blocks)] if attention else [])
        # skip_i projects h_i (i = 0: the input convolution's output).
        self.skips = track_layers(self, "skip", [
            WeightNormConv2D(hidden_channels, kernel_size=1, dtype=policy, name=f"skip_{i}")
            for i in range(num_blocks + 1)] if skip_connections else [])
        self.norm_out = BatchNormalization(momentum=batch_norm_momentum,
                                           epsilon=batch_norm_epsilon, scale=batch_norm_scale,
                                           synchronized=synchronized_batch_norm, dtype=policy)
        self.conv_out = WeightNormConv2D(
            out_channels, kernel_size=output_kernel_size, dtype=policy,
            gain_initializer=OutputGain(self.log_scale_gain) if self.log_scale_gain else "zeros")

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        """Creates every weight from the input shape (``[..., C_in]``) without
        tracing ``call`` (what Keras does for a layer without ``build``, once per
        level of nesting)."""
        if self.prepare is not None:
            self.prepare.build(input_shape)
            input_shape = self.prepare.compute_output_shape(input_shape)
        self.conv_in.build(input_shape)
        hidden = tuple(input_shape[:-1]) + (self.hidden_channels,)
        for layer in [*self.blocks, *self.attentions, *self.skips, self.norm_out, self.conv_out]:
            layer.build(hidden)

    @property
    def untraced_prefix(self) -> ConditionerInput | None:
        """The prepared input (``tfnvp.nets.shared_body`` runs it outside the shared trace)."""
        return self.prepare

    def call(self, x: tf.Tensor, training: running_average.Training = False,
             prefixed: bool = False) -> tf.Tensor:
        """``prefixed``: ``x`` is already the prepared input (``tfnvp.nets.shared_body``)."""
        if self.prepare is not None and not prefixed:
            x = self.prepare(x, training=training)
        stages = [self.conv_in(x)]
        for i, block in enumerate(self.blocks):
            h = shared_body.call(block, stages[-1], training)
            stages.append(self.attentions[i](h) if self.attentions else h)
        head = (tf.add_n([skip(h) for skip, h in zip(self.skips, stages)]) if self.skips
                else stages[-1])
        return normalized_conv(self.norm_out, self.conv_out, head, training)

    def get_config(self) -> dict:
        return {**super().get_config(), "hidden_channels": self.hidden_channels,
                "num_blocks": self.num_blocks, "out_channels": self.out_channels,
                "batch_norm_momentum": self.batch_norm_momentum,
                "synchronized_batch_norm": self.synchronized_batch_norm,
                "skip_connections": self.skip_connections, "attention": self.attention,
                "attention_heads": self.attention_heads,
                **flowpp_options(self.gated, self.dropout),
                **_changed(batch_norm_epsilon=(self.batch_norm_epsilon, KERAS_EPSILON),
                           batch_norm_scale=(self.batch_norm_scale, True),
                           output_kernel_size=(self.output_kernel_size, 3),
                           log_scale_gain=(self.log_scale_gain, 0.0),
                           input_mask=(self.input_mask, None),
                           input_parity=(self.input_parity, 0),
                           input_channels=(self.input_channels, None))}
