"""The Glow image model (Kingma & Dhariwal, NeurIPS 2018) on tfnvp's flow engine.

``Glow`` is an ``ImageFlowModel`` (like ``RealNVP``: a ``keras.Model``
owning every layer, the flow as a ``tfd.TransformedDistribution`` with
support ``[0, 256)^(H x W x C)``, the same methods).  Its multi-scale
architecture (section 3 and Figure 2b), data -> latent, for ``num_scales = L``
levels of ``K = steps_per_scale`` steps::

    x in [0, 256)  --LogitPreprocess-->  logit space   (as RealNVP, section 4.1 of Dinh et al.)
    level i < L-1:  squeeze, K steps of flow, split: half of the channels
                    leave as latents, level i+1 runs on the other half
    level L-1:      squeeze, K steps of flow

A step of flow is actnorm, an invertible 1x1 convolution and an affine
coupling (``tfnvp.steps.glow_step.GlowStep``); every coupling network
(``tfnvp.nets.GlowNet``) has ``hidden_channels`` feature maps at every level,
as in the paper.  The split is the engine's factor-out in the
``space_to_depth`` order: the first half of the squeezed tensor's channels
leaves (Glow's ``split2d`` keeps the first half; the 1x1 convolutions make
the choice immaterial) and the latent keeps the image's shape
(``latent_scale_index``).

Choices (the paper's CIFAR-10 model is ``Glow.from_paper("cifar10")``: 3
levels, K = 32, 512 channels):

* the prior is a standard normal ``N(0, I)`` (the paper's learned top-level
  prior ``--learntop`` is left out); with ``num_classes=K``, the
  class-conditional prior ``N(mu_y, sigma_y^2)`` of ``tfnvp.conditional`` and
  one-hot labels to every coupling network (a learned bias after its first
  actnorm);
* the data go through Real NVP's logit preprocessing (``alpha``,
  ``logit_map``) rather than the paper's ``x / 256 - 1/2``, so Glow and
  RealNVP model the same ``[0, 256)`` data with the same dequantizer and
  their bits/dim compare directly;
* Flow++'s conditioner components (Ho et al. 2019, section 3.3), off by
  default as in ``RealNVP`` and from the same layers (``tfnvp.nets.glow_net.GlowNet``):
  ``attention=True`` adds gated multi-head self-attention to the coupling
  networks of the steps at squeeze depth ``>= attention_min_depth`` (every
  level squeezes first, so level ``i``'s steps are at depth ``i + 1``; the
  default 1, every level, is Real NVP's rule: tensors of at most ``H/2 x
  W/2``); ``gated_convolutions=True`` makes every network's hidden layer
  Flow++'s gated convolution; ``dropout=p`` drops hidden activations in
  training mode only (evaluation, sampling and export are deterministic);
* the coupling's scale ``s = sigmoid(h + 2)`` is floored at ``e^-7``
  (``tfnvp.nets.glow_net.MIN_LOG_SCALE``): sampling divides by ``s``, and
  without a floor a trained model drew about 1% non-finite samples at
  temperature 1;
* there is no batch normalization: evaluation and training mode compute the
  same function once the actnorms are initialized (``recalibrate`` has
  nothing to recompute).  The actnorms initialize from the first
  ``training=True`` batch (data-dependent initialization, section 3.1); a
  model that never saw one is still exact, its actnorms the identity.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from tfnvp.steps import multiscale
from tfnvp.errors import UsageError
from tfnvp.steps.glow_step import GlowStep
from tfnvp.models.image_flow import DEQUANTIZER_CHANNELS, ImageFlowModel
from tfnvp.steps.multiscale import Scale, SqueezeOp, Step, StepBuilder, UnsqueezeOp

__all__ = ["Glow", "GLOW_PAPER_CONFIGS", "glow_scales", "glow_latent_scale_index"]

#: Glow's configuration (Kingma & Dhariwal 2018, section 5 and appendix), CIFAR-10 with
#: L = 3 levels of K = 32 steps and 512-channel coupling networks.
GLOW_PAPER_CONFIGS: dict[str, dict] = {
    "cifar10": dict(image_shape=(32, 32, 3), num_scales=3, steps_per_scale=32,
                    hidden_channels=512),
}


@keras.saving.register_keras_serializable(package="tfnvp")
class Glow(ImageFlowModel):
    """Glow for images with values in ``[0, 256)``; see the module docstring.

    Args:
      image_shape: ``(H, W, C)``; ``H`` and ``W`` divisible by ``2**num_scales``
        (every level squeezes).
      num_scales: levels ``L`` (``L - 1`` splits).
      steps_per_scale: steps of flow per level, ``K``.
      hidden_channels: feature maps of every coupling network.
      alpha, logit_map: the logit preprocessing, as in ``RealNVP``.
      dtype: float32 or float64, for every variable and the flow arithmetic.
      conditioner_dtype: Keras dtype policy of the coupling networks (e.g.
        ``"mixed_bfloat16"``); default as in ``RealNVP`` (a mixed global policy,
        else ``dtype``).
      validate_args: check pixel values in the user-facing methods.
      num_classes: ``K`` makes the model class-conditional (see ``RealNVP``).
      dequantization, dequantizer_channels: the dequantizer (see ``RealNVP``).
      attention: gated self-attention in the coupling networks of the steps at
        squeeze depth ``>= attention_min_depth`` (module docstring); default off.
      attention_heads: heads of each attention; must divide ``hidden_channels``.
      attention_min_depth: 1 (every level) to ``num_scales`` (the last level).
      gated_convolutions: Flow++'s gated hidden layer in every coupling network.
      dropout: dropout rate in ``[0, 1)`` in every coupling network, training
        mode only.

    Example::

        model = tfnvp.Glow((32, 32, 3), num_scales=3, steps_per_scale=8, hidden_channels=128)
        loss = tf.reduce_mean(model.nll(x_uint8, training=True))  # first call: actnorm init
        bpd = model.bits_per_dim(x_uint8)
        x = model.sample(16, temperature=0.7)
    """

    paper_configs = GLOW_PAPER_CONFIGS

    def __init__(self, image_shape: Sequence[int], num_scales: int = 3,
                 steps_per_scale: int = 32, hidden_channels: int = 512, alpha: float = 0.05,
                 logit_map: str = "symmetric", dtype: tf.DType | str = tf.float32,
                 conditioner_dtype: str | None = None, validate_args: bool = True,
                 num_classes: int | None = None,
                 dequantization: str = "uniform",
                 dequantizer_channels: int = DEQUANTIZER_CHANNELS,
                 attention: bool = False, attention_heads: int = 4,
                 attention_min_depth: int = 1, gated_convolutions: bool = False,
                 dropout: float = 0.0, name: str = "glow"):
        super().__init__(dtype=dtype, validate_args=validate_args, name=name)
        image_shape = self._set_image_shape(image_shape, num_scales, num_scales, logit_map)
        if steps_per_scale < 1:
            raise UsageError(f"steps_per_scale must be at least 1, got {steps_per_scale}.")
        if hidden_channels < 1:
            raise UsageError(f"hidden_channels must be at least 1, got {hidden_channels}.")
        conditioner_dtype = self._conditioner_policy(conditioner_dtype)
        self._config = dict(
            image_shape=image_shape, num_scales=int(num_scales),
            steps_per_scale=int(steps_per_scale), hidden_channels=int(hidden_channels),
            alpha=float(alpha), logit_map=logit_map, dtype=self.flow_dtype.name,
            conditioner_dtype=conditioner_dtype, validate_args=bool(validate_args))
        if num_classes is not None:
            self._config["num_classes"] = int(num_classes)
        # Level i's steps are at squeeze depth i + 1.
        self._set_flowpp_options(attention, attention_heads, attention_min_depth,
                                 range(1, num_scales + 1), gated_convolutions, dropout)
        step = GlowStep(hidden_channels, self.flow_dtype, conditioner_dtype=conditioner_dtype,
                        context_channels=int(num_classes or 0),
                        attention_min_depth=attention_min_depth if attention else None,
                        attention_heads=attention_heads, gated=gated_convolutions,
                        dropout=dropout)
        self._create_steps(glow_scales(num_scales, steps_per_scale, step), image_shape[-1],
                           event_ndims=3)
        self._finish_image_flow(num_classes, dequantization, dequantizer_channels)

    @property
    def actnorms(self) -> list:
        """Every step's ``ActNormParameters`` (the flow's, not the coupling networks'),
        data -> latent order."""
        return self._role("actnorm")

    @property
    def convolutions(self) -> list:
        """Every step's ``InvertibleConv1x1Weights``, data -> latent order."""
        return self._role("conv1x1")


def glow_scales(num_scales: int, steps_per_scale: int,
                step: StepBuilder | None = None) -> tuple[Scale, ...]:
    """Glow's architecture as a ``tfnvp.multiscale`` declaration.

    Every level: squeeze, ``steps_per_scale`` steps of type ``step`` (``None``:
    a layout-only declaration), un-squeeze; every level but the coarsest then
    factors out in the ``space_to_depth`` order (the un-squeeze and the
    factor-out's squeeze cancel, so the split acts on the squeezed tensor).
    The couplings keep the first half of the channels (parity 0), as in the
    authors' release: the 1x1 convolutions mix the channels between steps.
    """
    if num_scales < 1 or steps_per_scale < 1:
        raise UsageError(f"Glow needs num_scales >= 1 and steps_per_scale >= 1, got "
                         f"{num_scales} and {steps_per_scale}.")
    body = ((SqueezeOp(),) + tuple(Step(step, mask="channel", parity=0)
                                   for _ in range(int(steps_per_scale))) + (UnsqueezeOp(),))
    return ((Scale(body, factor_out="space_to_depth"),) * (int(num_scales) - 1)
            + (Scale(body),))


def glow_latent_scale_index(image_shape: Sequence[int], num_scales: int) -> np.ndarray:
    """Integer array of a ``Glow`` latent's shape: the level each entry left the flow at
    (0 the finest), derived from the same declaration as the flow (``glow_scales``)."""
    return multiscale.latent_scale_index(glow_scales(num_scales, 1), image_shape)
