"""The Real NVP image model (Dinh, Sohl-Dickstein & Bengio, ICLR 2017).

``RealNVP`` is a ``keras.Model`` that owns every layer of the flow (so
``model.trainable_variables`` is complete and checkpoints hold everything)
and exposes the flow as a ``tfd.TransformedDistribution`` over an isotropic
Gaussian, with support ``[0, 256)^(H x W x C)``.

Architecture (section 3.6), data -> latent, for ``num_scales = L``::

    x in [0, 256)  --LogitPreprocess-->  logit space                 (section 4.1)
    scale i < L-1:  3 checkerboard couplings, squeeze,
                    3 channel couplings, factor out half (eqs. 10-13),
                    then scale i+1 on the other half
    scale L-1:      4 checkerboard couplings

Every coupling is followed by a ``BatchNorm`` bijector (section 3.7) unless
``batch_norm=False``.  Conditioners at scale ``i`` have ``hidden_channels *
2**i`` feature maps before the squeeze and twice that after it: the number of
features doubles at each coarser resolution.  They are ResNets with skip
connections (section 4.1; ``tfnvp.nets.ResNet``).

Attention (``attention=True``, off by default): the conditioners at the
coarse scales, those of steps at squeeze depth ``>= attention_min_depth``
(default 1: every step after the first squeeze, whose tensor is at most
``H/2 x W/2``; the full-resolution checkerboard couplings of the first scale
keep plain ResNets), add gated multi-head self-attention after each residual
block (Flow++, Ho et al. 2019, section 3.3; ``tfnvp.nets.GatedAttention``).
The rule is by depth, not by pixels, because the same weights run at any
image size (``distribution_for``).  Attention costs ``O((HW)^2)`` per
conditioner, hence the coarse scales only.

Gated convolutions and dropout (``gated_convolutions=True``, ``dropout=p``;
off by default): Flow++'s residual blocks (Ho et al. 2019, section 3.3 and
appendix) in every conditioner, ``h + a * sigmoid(g)`` with ``(a, g)`` the
block's last convolution's ``2C`` features, and dropout (Flow++: 0.2 on
CIFAR-10) on the blocks' hidden activations in training mode only
(``tfnvp.nets.ResNet``).  Evaluation (``log_prob``, sampling, export) is
deterministic.  Dropout cannot be combined with ``recompute_gradients``
(the recomputed pass would draw another mask; a ValueError).

Factor-out (``factor_out``):

* ``"checkerboard"`` (default, the authors' release): the channel couplings
  run on the ``space_to_depth`` squeeze; the tensor is un-squeezed and
  squeezed again in the checkerboard order (``Squeeze(order="checkerboard")``),
  the colour ``dy + dx = 1`` of every 2x2 block leaves and the colour ``dy + dx
  = 0`` goes on: the next scale sees a quincunx lattice of the image (the
  coarse latents of appendix D are a sub-sampled image).
* ``"channel"``: the first half of the ``space_to_depth`` squeeze's channels
  leaves, i.e. the top row of every 2x2 block: the next scale sees alternate
  rows.

Latent layout: each scale un-squeezes after its factor-out, so ``z`` has the
image's shape; ``latent_scale_index()`` says which scale each entry left at.

The architecture is declared once, by ``real_nvp_scales`` (a
``tfnvp.multiscale`` declaration of ``CouplingStep`` steps); the layers, the
bijector chain and the latent layout all derive from it.

Section 4.1's configurations (``PAPER_CONFIGS``): the recursion is "repeated
until the input of the last recursion is a 4 x 4 x c tensor", except for
CIFAR-10, downscaled only once; 8 residual blocks of 64 feature maps for
CIFAR-10, 4 of 32 for ImageNet 32x32, 2 of 32 for the 64x64 datasets.
"""

from __future__ import annotations

import math
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from tfnvp.steps import multiscale
from tfnvp.steps.coupling_step import COUPLINGS, CouplingStep
from tfnvp.errors import UsageError
from tfnvp.models.image_flow import DEQUANTIZER_CHANNELS, LOGIT_MAPS, ImageFlowModel
from tfnvp.steps.multiscale import Scale, SqueezeOp, Step, StepBuilder, UnsqueezeOp
from tfnvp.nets.resnet import ResNet

__all__ = ["RealNVP", "PAPER_CONFIGS", "FACTOR_OUT_ORDERS", "LOGIT_MAPS", "latent_scale_index",
           "real_nvp_scales"]


def _paper_config(size: int, num_res_blocks: int, hidden_channels: int,
                  num_scales: int | None = None) -> dict:
    """Section 4.1: scales until the last recursion's input is 4 x 4 (unless given)."""
    if num_scales is None:
        num_scales = int(math.log2(size // 4)) + 1
    return dict(image_shape=(size, size, 3), num_scales=num_scales,
                num_res_blocks=num_res_blocks, hidden_channels=hidden_channels)


#: Real NVP's configurations of section 4.1, by dataset. CIFAR-10 8 residual blocks, 64
#: feature maps, one downscale (two scales); ImageNet 32x32 4 blocks, 32 feature maps;
#: the 64x64 datasets 2 blocks, 32 feature maps; all but CIFAR-10 recurse down to 4 x 4
#: (32x32: 4 scales, 64x64: 5 scales).
PAPER_CONFIGS: dict[str, dict] = {
    "cifar10": _paper_config(32, 8, 64, num_scales=2),
    "imagenet32": _paper_config(32, 4, 32),
    "imagenet64": _paper_config(64, 2, 32),
    "celeba": _paper_config(64, 2, 32),
    "lsun": _paper_config(64, 2, 32),
}

# Factor-out variant -> the squeeze order of the factor-out step.
FACTOR_OUT_ORDERS = {"checkerboard": "checkerboard", "channel": "space_to_depth"}


@keras.saving.register_keras_serializable(package="tfnvp")
class RealNVP(ImageFlowModel):
    """Real NVP for images with values in ``[0, 256)``.

    Args:
      image_shape: ``(H, W, C)``; ``H`` and ``W`` divisible by ``2**(num_scales-1)``.
      num_scales: number of scales ``L`` (``L - 1`` squeeze + factor-out steps).
      num_res_blocks: residual blocks per conditioner.
      hidden_channels: feature maps of the finest scale's conditioners.
      alpha: logit preprocessing constant (section 4.1).
      logit_map: ``"symmetric"`` (the release's ``alpha + (1 - 2 alpha) x/256``)
        or ``"asymmetric"`` (section 4.1's formula); see ``LogitPreprocess``.
      skip_connections: the conditioner ResNets' skip connections (section 4.1);
        False keeps only the residual connections (ablation).
      factor_out: ``"checkerboard"`` or ``"channel"`` (module docstring).
      batch_norm: follow every coupling with a ``BatchNorm`` bijector.
      batch_norm_momentum: decay of the running statistics, of the batch-norm
        bijectors and of the conditioners' batch norms alike.
      running_average_batch_norm: appendix-E variant (see ``BatchNorm``).
      synchronized_batch_norm: all-reduce batch statistics across replicas.
      dtype: float32 or float64, for every variable and the flow arithmetic.
      conditioner_dtype: Keras dtype policy of the conditioner bodies, e.g.
        ``"mixed_bfloat16"``; their outputs are cast back to ``dtype`` before
        the coupling arithmetic.  Default: Keras' global dtype policy if it is a
        mixed one (``keras.mixed_precision.set_global_policy("mixed_bfloat16")``)
        and ``dtype`` is float32, else ``dtype``.
      recompute_gradients: memory-saving backprop: each conditioner body's
        activations are recomputed in the backward pass instead of stored
        (one extra conditioner forward pass per step, ~+1/3 FLOPs; the
        gradients are the same).
      validate_args: check pixel values (finite, in range) in the user-facing
        methods; static shape and dtype checks always run.
      coupling: ``"affine"`` (Real NVP's, eqs. 7-9) or ``"logistic_mixture"``
        (Flow++'s logistic-mixture CDF coupling, section 3.2; sampling inverts
        it by bisection, see ``tfnvp.bijectors.LogisticMixtureCoupling``) in
        every step.
      mixture_components: the logistic mixture's ``K`` (ignored by ``"affine"``).
      num_classes: ``K`` makes the model class-conditional (``tfnvp.conditional``):
        one-hot labels reach every conditioner and the prior is ``N(mu_y,
        sigma_y^2)`` per class; ``log_prob``, ``nll``, ``bits_per_dim``,
        ``encode``, ``decode`` and ``sample`` then take ``labels=``.
      dequantization: ``"uniform"`` (section 4.1) or ``"variational"``: a learned
        ``q(u | x)`` (Flow++, ``tfnvp.VariationalDequantizer``; ``q(u | x, y)``
        with ``num_classes``), trained with the flow on the variational bound
        ``nll``; see ``ImageFlowModel``.
      dequantizer_channels: width of the variational dequantizer's networks
        (its context map: half); ignored by ``"uniform"``.
      attention: gated self-attention in the coarse scales' conditioners
        (module docstring); default off.
      attention_heads: heads of each attention; must divide the feature maps
        at every depth that has attention (``hidden_channels * 2**depth``).
      attention_min_depth: steps at this squeeze depth or deeper get attention
        (0 to ``num_scales - 1``, the deepest; 0: every conditioner).
      gated_convolutions: Flow++'s gated residual blocks in every conditioner,
        ``h + a * sigmoid(g)`` (module docstring; section 3.3); default off.
      dropout: dropout rate in ``[0, 1)`` in every conditioner's residual
        blocks, training mode only (Flow++: 0.2 on CIFAR-10); needs
        ``recompute_gradients=False``.

    Example::

        model = tfnvp.RealNVP((32, 32, 3), num_scales=2, num_res_blocks=2, hidden_channels=32)
        dist = model.distribution
        log_p = dist.log_prob(x)                # nats, x float in [0, 256)
        bpd = model.bits_per_dim(x_uint8)       # uniform dequantization
        x = model.sample(16, temperature=0.7)   # in [0, 256): see FlowModel.decode
    """

    paper_configs = PAPER_CONFIGS

    def __init__(self, image_shape: Sequence[int], num_scales: int = 2,
                 num_res_blocks: int = 8, hidden_channels: int = 64, alpha: float = 0.05,
                 logit_map: str = "symmetric", skip_connections: bool = True,
                 factor_out: str = "checkerboard", batch_norm: bool = True, batch_norm_momentum: float = 0.99,
                 running_average_batch_norm: bool = False,
                 synchronized_batch_norm: bool = False, dtype: tf.DType | str = tf.float32,
                 conditioner_dtype: str | None = None, validate_args: bool = True,
                 recompute_gradients: bool = False, num_classes: int | None = None,
                 dequantization: str = "uniform",
                 dequantizer_channels: int = DEQUANTIZER_CHANNELS,
                 coupling: str = "affine", mixture_components: int = 4,
                 attention: bool = False, attention_heads: int = 4,
                 attention_min_depth: int = 1, gated_convolutions: bool = False,
                 dropout: float = 0.0, name: str = "real_nvp"):
        super().__init__(dtype=dtype, validate_args=validate_args, name=name)
        flow_dtype = self.flow_dtype
        # Scale i < L - 1 squeezes once (its channel couplings, then its factor-out).
        image_shape = self._set_image_shape(image_shape, num_scales, num_scales - 1, logit_map)
        if factor_out not in FACTOR_OUT_ORDERS:
            raise UsageError(f"factor_out must be one of {tuple(FACTOR_OUT_ORDERS)}, "
                             f"got {factor_out!r}.")
        conditioner_dtype = self._conditioner_policy(conditioner_dtype)
        self._config = dict(
            image_shape=image_shape, num_scales=int(num_scales),
            num_res_blocks=int(num_res_blocks), hidden_channels=int(hidden_channels),
            alpha=float(alpha), logit_map=logit_map, skip_connections=bool(skip_connections),
            factor_out=factor_out, batch_norm=bool(batch_norm),
            batch_norm_momentum=float(batch_norm_momentum),
            running_average_batch_norm=bool(running_average_batch_norm),
            synchronized_batch_norm=bool(synchronized_batch_norm), dtype=flow_dtype.name,
            conditioner_dtype=conditioner_dtype, validate_args=bool(validate_args),
            recompute_gradients=bool(recompute_gradients))
        if num_classes is not None:
            # Only then: unconditional configs stay as they were (resumable runs).
            self._config["num_classes"] = int(num_classes)
        if coupling not in COUPLINGS:
            raise UsageError(f"coupling must be one of {COUPLINGS}, got {coupling!r}.")
        if coupling != "affine":  # Likewise: affine configs stay as they were.
            self._config.update({"coupling": coupling, "mixture_components": int(mixture_components)})
        if attention and num_res_blocks < 1:
            raise UsageError("attention=True needs num_res_blocks >= 1: the attention "
                             "follows each residual block.")
        # Steps at squeeze depths 0 (the first scale's checkerboard couplings) to
        # num_scales - 1 (the last scale's).
        self._set_flowpp_options(attention, attention_heads, attention_min_depth,
                                 range(num_scales), gated_convolutions, dropout)
        body_policy = conditioner_dtype or flow_dtype.name

        def resnet(position: multiscale.Position, out_channels: int) -> ResNet:
            # Feature maps double with every squeeze (the resolution halves).
            return ResNet(hidden_channels * 2 ** position.depth, num_res_blocks, out_channels,
                          synchronized_batch_norm=synchronized_batch_norm,
                          batch_norm_momentum=batch_norm_momentum,
                          skip_connections=skip_connections,
                          attention=attention and position.depth >= attention_min_depth,
                          attention_heads=attention_heads, gated=gated_convolutions,
                          dropout=dropout, dtype=body_policy, name=f"resnet_{position.index}")

        coupling = CouplingStep(resnet, flow_dtype, batch_norm=batch_norm,
                                batch_norm_momentum=batch_norm_momentum,
                                running_average_batch_norm=running_average_batch_norm,
                                recompute_gradients=recompute_gradients,
                                coupling=coupling, mixture_components=mixture_components)
        # The layers do not depend on the image size: the same weights build
        # the flow at any size (extrapolation, appendix C).
        self._create_steps(real_nvp_scales(num_scales, factor_out, coupling), image_shape[-1],
                           event_ndims=3)
        self._finish_image_flow(num_classes, dequantization, dequantizer_channels)


def real_nvp_scales(num_scales: int, factor_out: str = "checkerboard",
                    coupling: StepBuilder | None = None) -> tuple[Scale, ...]:
    """Section 3.6's architecture as a ``tfnvp.multiscale`` declaration.

    Scale ``i < L - 1``: 3 checkerboard couplings, squeeze, 3 channel
    couplings, un-squeeze, factor-out in the order ``FACTOR_OUT_ORDERS[factor_out]``;
    scale ``L - 1``: 4 checkerboard couplings.  Parities alternate within each
    group.  ``coupling`` is the step type (``None``: a layout-only
    declaration, e.g. for ``latent_scale_index``).
    """
    if factor_out not in FACTOR_OUT_ORDERS:
        raise UsageError(f"factor_out must be one of {tuple(FACTOR_OUT_ORDERS)}, "
                         f"got {factor_out!r}.")

    def couplings(mask: str, count: int) -> tuple[Step, ...]:
        return tuple(Step(coupling, mask=mask, parity=k % 2) for k in range(count))

    last = Scale(couplings("checkerboard", 4))
    scale = Scale(couplings("checkerboard", 3) + (SqueezeOp(),) + couplings("channel", 3)
                  + (UnsqueezeOp(),), factor_out=FACTOR_OUT_ORDERS[factor_out])
    return (scale,) * (int(num_scales) - 1) + (last,)


def latent_scale_index(image_shape: Sequence[int], num_scales: int,
                       factor_out: str = "checkerboard") -> np.ndarray:
    """Integer array of the latent's shape: the scale at which each entry left the flow.

    0 is the finest scale (factored out first, half of the variables),
    ``num_scales - 1`` the coarsest; ``factor_out`` as in ``RealNVP``.
    Derived from the same declaration as the flow (``real_nvp_scales``,
    ``tfnvp.multiscale.latent_scale_index``), so it follows the flow's layout.
    """
    return multiscale.latent_scale_index(real_nvp_scales(num_scales, factor_out), image_shape)
