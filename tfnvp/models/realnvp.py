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

Conditioner form (``conditioner_form``):

* ``"release"`` (default), the authors' release's (tensorflow/models
  ``research/real_nvp``): the network reads a prepared input
  (``tfnvp.nets.conditioner_input``): ``relu([u, -u, b])`` with ``u = 2 *
  bn(b * x)`` and the mask ``b`` as a channel in checkerboard couplings,
  ``relu([u, -u])`` with ``u = bn(x_kept)`` of the kept half in channel
  couplings, ``bn`` without a learned scale; the network's batch norms have
  no ``gamma`` either, and its output convolution is 1x1.  The log-scale is
  ``s = scale * tanh(raw)`` with one scalar ``scale`` per coupling, 0 at the
  start in checkerboard couplings (whose raw log-scale starts small and
  random, the shift at 0: every new coupling is the identity) and 1 in
  channel couplings; the checkerboard couplings' scalars are in the L2
  penalty with the weight-norm gains, the channel couplings' are not (the
  release's name filter, ``magnitude`` or ``rescaling_scale``).  The release
  writes the coupling ``y = (x + t) * exp(s)``, we ``y = x * exp(s) + t``
  (eq. 9): the same family, ``t' = t * exp(s)``.  Not the release's: the
  weight initialization (He-normal directions, unit gains) besides the output
  convolution's log-scale gains (the release's ``0.01 * sqrt(fan_in / 12)``),
  and our batch norms' debiased running averages (``tfnvp.running_average``).
* ``"direct"`` (stored models from before): ``b * x`` straight into the
  first convolution, batch norms with ``gamma``, a 3x3 output convolution
  starting at zero, a per-channel ``scale`` starting at 1, not penalized.

The conditioners' batch norms have their own momentum and epsilon
(``conditioner_batch_norm_momentum``, ``conditioner_batch_norm_epsilon``;
the release's 0.9 and 1e-4 by default); ``batch_norm_momentum`` is the
``BatchNorm`` bijectors'.  The squeeze before the channel couplings is the
release's channel-major ``squeeze_2x2`` (``channel_squeeze="channel_major"``,
default: the channel couplings split the input channels) or
``space_to_depth`` (they split each 2x2 block's rows; stored models from
before); ``tfnvp.bijectors.Squeeze``.

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

* ``"checkerboard"`` (default, the authors' release): after the channel
  couplings the tensor is un-squeezed and squeezed again in the checkerboard
  order (``Squeeze(order="checkerboard")``), the colour ``dy + dx = 1`` of every 2x2 block leaves and the colour ``dy + dx
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

Every option is a field of ``RealNVPSpec`` (validated once; the model keeps
it as ``model.spec``).  Section 4.1's configurations are its presets
(``RealNVPSpec.cifar10()``, ..., ``PAPER_CONFIGS``): the recursion is "repeated
until the input of the last recursion is a 4 x 4 x c tensor", except for
CIFAR-10, downscaled only once; 8 residual blocks of 64 feature maps for
CIFAR-10, 4 of 32 for ImageNet 32x32, 2 of 32 for the 64x64 datasets.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import keras
import numpy as np

from tfnvp.steps import multiscale
from tfnvp.steps.coupling_step import COUPLINGS, CouplingStep
from tfnvp.errors import UsageError
from tfnvp.models.image_flow import LOGIT_MAPS, ImageFlowModel
from tfnvp.models.spec import ImageFlowSpec, option
from tfnvp.steps.multiscale import Scale, SqueezeOp, Step, StepBuilder, UnsqueezeOp
from tfnvp.nets.conditioner_input import RELEASE_BATCH_NORM_EPSILON, RELEASE_BATCH_NORM_MOMENTUM
from tfnvp.nets.resnet import KERAS_EPSILON, ResNet, release_gain

__all__ = ["RealNVP", "RealNVPSpec", "PAPER_CONFIGS", "CHANNEL_SQUEEZES", "CONDITIONER_FORMS",
           "FACTOR_OUT_ORDERS", "LOGIT_MAPS", "latent_scale_index", "real_nvp_scales"]

# Factor-out variant -> the squeeze order of the factor-out step.
FACTOR_OUT_ORDERS = {"checkerboard": "checkerboard", "channel": "space_to_depth"}
#: The squeeze orders before the channel couplings (``channel_squeeze``; ``Squeeze``).
CHANNEL_SQUEEZES = ("channel_major", "space_to_depth")
#: The forms of the coupling networks (``conditioner_form``; module docstring).
CONDITIONER_FORMS = ("release", "direct")


@dataclasses.dataclass(frozen=True)
class RealNVPSpec(ImageFlowSpec):
    """Every option of a ``RealNVP``, validated once (``tfnvp.models.spec``).

    ``RealNVPSpec(image_shape, **options)``; the fields besides
    ``ImageFlowSpec``'s (image shape, logit map, dtypes, class conditioning,
    dequantizer, ``conditioner``: Flow++'s options) are below.  The presets
    are section 4.1's configurations: ``cifar10``, ``imagenet32``,
    ``imagenet64``, ``celeba``, ``lsun``.
    """

    num_scales: int = option(2, "Scales L of the multi-scale architecture (L - 1 squeeze and "
                             "factor-out steps).", preset=True)
    num_res_blocks: int = option(8, "Residual blocks per conditioner ResNet.", preset=True)
    hidden_channels: int = option(64, "Feature maps of the finest scale's conditioners "
                                  "(doubling at every squeeze).", preset=True)
    skip_connections: bool = option(True, "The conditioner ResNets' skip connections "
                                    "(section 4.1); False keeps only the residual ones.",
                                    legacy=False)
    factor_out: str = option("checkerboard", "checkerboard (the authors' release) or channel: "
                             "which half of the variables leaves at each scale (tfnvp.RealNVP).",
                             choices=tuple(FACTOR_OUT_ORDERS), legacy="channel")
    conditioner_form: str = option(
        "release", "release (the authors' release: the coupling networks read relu([u, -u, b]), "
        "u the batch-normalized masked input, x2 with the mask b as a channel in checkerboard "
        "couplings, the kept half in channel couplings; no batch-norm gamma; a 1x1 output "
        "convolution; one s-scale per coupling, 0 (L2-penalized) in checkerboard couplings, 1 in "
        "channel couplings) or direct (b*x into the first convolution, a 3x3 output "
        "convolution starting at zero, a per-channel s-scale starting at 1).",
        choices=CONDITIONER_FORMS, legacy="direct")
    channel_squeeze: str = option(
        "channel_major", "The squeeze before the channel couplings: channel_major (the "
        "release's squeeze_2x2: the channel couplings split the input channels) or "
        "space_to_depth (they split each 2x2 block's rows); tfnvp.bijectors.Squeeze.",
        choices=CHANNEL_SQUEEZES, legacy="space_to_depth")
    batch_norm: bool = option(True, "Follow every coupling with a BatchNorm bijector "
                              "(section 3.7).")
    batch_norm_momentum: float = option(0.99, "Decay of the running statistics of the "
                                        "BatchNorm bijectors (section 3.7).")
    conditioner_batch_norm_momentum: float | None = option(
        RELEASE_BATCH_NORM_MOMENTUM, "Decay of the running statistics of the coupling "
        "networks' batch norms (the release's 0.9; None, stored models from before: "
        "batch_norm_momentum's).", legacy=None)
    conditioner_batch_norm_epsilon: float = option(
        RELEASE_BATCH_NORM_EPSILON, "Epsilon of the coupling networks' batch norms (the "
        "release's 1e-4; stored models from before: Keras' 1e-3).", legacy=KERAS_EPSILON)
    running_average_batch_norm: bool = option(False, "Appendix E: the batch-norm bijectors "
                                              "normalize training batches with their running "
                                              "averages.")
    synchronized_batch_norm: bool = option(False, "All-reduce batch statistics across "
                                           "replicas.")
    recompute_gradients: bool = option(False, "Recompute each conditioner's activations in "
                                       "the backward pass instead of storing them (~+1/3 "
                                       "FLOPs, same gradients).")
    coupling: str = option("affine", "affine (Real NVP's, eqs. 7-9) or logistic_mixture "
                           "(Flow++'s logistic-mixture CDF coupling; sampling inverts it by "
                           "bisection) in every step.", choices=COUPLINGS,
                           recorded_with=("coupling",))
    mixture_components: int = option(4, "Logistic components K per coupled entry of "
                                     "coupling=logistic_mixture.", recorded_with=("coupling",))

    def __post_init__(self) -> None:
        if self.conditioner.attention and self.num_res_blocks < 1:  # Before the depth checks.
            raise UsageError("attention=True needs num_res_blocks >= 1: the attention follows "
                             "each residual block; got num_res_blocks=0.")
        super().__post_init__()
        self._require(self.num_res_blocks >= 0, "num_res_blocks", "must be at least 0")
        self._require(0.0 <= self.batch_norm_momentum < 1.0, "batch_norm_momentum",
                      "must be in [0, 1)")
        self._require(0.0 <= self.conditioner_momentum < 1.0, "conditioner_batch_norm_momentum",
                      "must be in [0, 1) or None (batch_norm_momentum's)")
        self._require(self.conditioner_batch_norm_epsilon > 0.0, "conditioner_batch_norm_epsilon",
                      "must be positive")
        self._require(self.mixture_components >= 1, "mixture_components", "must be at least 1")
        if self.conditioner.dropout and self.recompute_gradients:
            raise UsageError(f"recompute_gradients=True cannot be combined with dropout="
                             f"{self.conditioner.dropout} (the recomputed pass would draw "
                             "another mask): use dropout=0 or recompute_gradients=False.")

    @property
    def conditioner_momentum(self) -> float:
        """The coupling networks' batch-norm momentum, ``conditioner_batch_norm_momentum``
        or, if that is None (a stored model from before), ``batch_norm_momentum``."""
        if self.conditioner_batch_norm_momentum is None:
            return self.batch_norm_momentum
        return self.conditioner_batch_norm_momentum

    @property
    def squeezes(self) -> int:
        return self.num_scales - 1  # Scale i < L - 1 squeezes once.

    def step_depths(self) -> range:
        # From the first scale's checkerboard couplings (0) to the last scale's.
        return range(self.num_scales)

    def conditioner_width(self, depth: int) -> int:
        return self.hidden_channels * 2 ** depth  # Feature maps double with every squeeze.

    def layout(self) -> tuple[Scale, ...]:
        return real_nvp_scales(self.num_scales, self.factor_out,
                               channel_squeeze=self.channel_squeeze)

    @classmethod
    def _section_4_1(cls, size: int, num_res_blocks: int, hidden_channels: int,
                     num_scales: int | None, overrides: dict) -> RealNVPSpec:
        """Section 4.1: scales until the last recursion's input is 4 x 4 (unless given)."""
        if num_scales is None:
            num_scales = int(math.log2(size // 4)) + 1
        return cls(**{"image_shape": (size, size, 3), "num_scales": num_scales,
                      "num_res_blocks": num_res_blocks, "hidden_channels": hidden_channels,
                      **overrides})

    @classmethod
    def cifar10(cls, **overrides) -> RealNVPSpec:
        """CIFAR-10 (section 4.1): 8 residual blocks of 64 feature maps, downscaled once."""
        return cls._section_4_1(32, 8, 64, 2, overrides)

    @classmethod
    def imagenet32(cls, **overrides) -> RealNVPSpec:
        """ImageNet 32x32 (section 4.1): 4 residual blocks of 32 feature maps, 4 scales."""
        return cls._section_4_1(32, 4, 32, None, overrides)

    @classmethod
    def imagenet64(cls, **overrides) -> RealNVPSpec:
        """ImageNet 64x64 (section 4.1): 2 residual blocks of 32 feature maps, 5 scales."""
        return cls._section_4_1(64, 2, 32, None, overrides)

    @classmethod
    def celeba(cls, **overrides) -> RealNVPSpec:
        """CelebA at 64x64 (section 4.1): as ImageNet 64x64."""
        return cls._section_4_1(64, 2, 32, None, overrides)

    @classmethod
    def lsun(cls, **overrides) -> RealNVPSpec:
        """LSUN at 64x64 (section 4.1; bedroom, church, tower): as ImageNet 64x64."""
        return cls._section_4_1(64, 2, 32, None, overrides)

    @classmethod
    def presets(cls) -> dict:
        return {"cifar10": cls.cifar10, "imagenet32": cls.imagenet32,
                "imagenet64": cls.imagenet64, "celeba": cls.celeba, "lsun": cls.lsun}


#: Real NVP's configurations of section 4.1 by dataset (``RealNVPSpec``'s presets' image
#: shape, scales, residual blocks and feature maps): CIFAR-10 8 blocks of 64 feature maps,
#: one downscale; ImageNet 32x32 4 blocks of 32, 4 scales; the 64x64 datasets 2 blocks of
#: 32, 5 scales (all but CIFAR-10 recurse down to 4 x 4).
PAPER_CONFIGS: dict[str, dict] = {name: preset().preset_fields()
                                  for name, preset in RealNVPSpec.presets().items()}


@keras.saving.register_keras_serializable(package="tfnvp")
class RealNVP(ImageFlowModel):
    """Real NVP for images with values in ``[0, 256)``.

    ``RealNVP(spec)`` with a ``RealNVPSpec``, or ``RealNVP(image_shape,
    **options)`` with the specification's fields as keyword arguments
    (``ImageFlowSpec``'s and ``ConditionerSpec``'s among them; each field's
    help is its documentation).  The main ones:

    Args:
      image_shape: ``(H, W, C)``; ``H`` and ``W`` divisible by ``2**(num_scales-1)``;
        or a ``RealNVPSpec`` (then no options).
      name: the Keras model's name.
      num_scales: number of scales ``L`` (``L - 1`` squeeze + factor-out steps).
      num_res_blocks: residual blocks per conditioner.
      hidden_channels: feature maps of the finest scale's conditioners.
      alpha, logit_map: the logit preprocessing (section 4.1; ``LogitPreprocess``).
      skip_connections, factor_out, batch_norm, conditioner_form, channel_squeeze:
        see the module docstring.
      batch_norm_momentum, running_average_batch_norm: the batch-norm bijectors (section 3.7).
      conditioner_batch_norm_momentum, conditioner_batch_norm_epsilon: the
        conditioners' batch norms.
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
        every step; ``mixture_components``: its ``K``.
      num_classes: ``K`` makes the model class-conditional (``tfnvp.conditional``):
        one-hot labels reach every conditioner and the prior is ``N(mu_y,
        sigma_y^2)`` per class; ``log_prob``, ``nll``, ``bits_per_dim``,
        ``encode``, ``decode`` and ``sample`` then take ``labels=``.
      dequantization: ``"uniform"`` (section 4.1) or ``"variational"``: a learned
        ``q(u | x)`` (Flow++, ``tfnvp.VariationalDequantizer``; ``q(u | x, y)``
        with ``num_classes``), trained with the flow on the variational bound
        ``nll``; see ``ImageFlowModel``.  ``dequantizer_channels``: its width.
      attention, attention_heads, attention_min_depth: Flow++'s attention
        (``tfnvp.ConditionerSpec``; module docstring).
      gated_convolutions, dropout: Flow++'s gated blocks and dropout (module
        docstring); dropout needs ``recompute_gradients=False``.

    Example::

        model = tfnvp.RealNVP((32, 32, 3), num_scales=2, num_res_blocks=2, hidden_channels=32)
        model = tfnvp.RealNVP(tfnvp.RealNVPSpec.cifar10())   # section 4.1
        dist = model.distribution
        log_p = dist.log_prob(x)                # nats, x float in [0, 256)
        bpd = model.bits_per_dim(x_uint8)       # uniform dequantization
        x = model.sample(16, temperature=0.7)   # in [0, 256): see FlowModel.decode
    """

    spec_class = RealNVPSpec

    def __init__(self, image_shape: Sequence[int] | RealNVPSpec, *, name: str = "real_nvp",
                 **options):
        super().__init__(RealNVPSpec.of(image_shape, **options), name=name)
        spec = self.spec

        release = spec.conditioner_form == "release"

        def resnet(step: Step, position: multiscale.Position, out_channels: int) -> ResNet:
            width = spec.conditioner_width(position.depth)
            # The release's checkerboard couplings' log-scale factor starts at 0 (CouplingStep).
            factor_zero = spec.coupling == "affine" and step.mask == "checkerboard"
            prepared = (dict(input_mask=step.mask, input_parity=step.parity,
                             input_channels=position.channels, batch_norm_scale=False,
                             output_kernel_size=1,
                             log_scale_gain=release_gain(width) if factor_zero else 0.0)
                        if release else {})
            return ResNet(width, spec.num_res_blocks,
                          out_channels, synchronized_batch_norm=spec.synchronized_batch_norm,
                          batch_norm_momentum=spec.conditioner_momentum,
                          batch_norm_epsilon=spec.conditioner_batch_norm_epsilon,
                          skip_connections=spec.skip_connections, **prepared,
                          **spec.conditioner.layer_options(position.depth),
                          dtype=self.conditioner_policy, name=f"resnet_{position.index}")

        coupling = CouplingStep(resnet, self.flow_dtype, batch_norm=spec.batch_norm,
                                batch_norm_momentum=spec.batch_norm_momentum,
                                running_average_batch_norm=spec.running_average_batch_norm,
                                recompute_gradients=spec.recompute_gradients,
                                coupling=spec.coupling,
                                mixture_components=spec.mixture_components,
                                release_scale=release)
        # The layers do not depend on the image size: the same weights build
        # the flow at any size (extrapolation, appendix C).
        self._create_steps(real_nvp_scales(spec.num_scales, spec.factor_out, coupling,
                                           spec.channel_squeeze),
                           spec.image_shape[-1], event_ndims=3)
        self._finish_image_flow()


def real_nvp_scales(num_scales: int, factor_out: str = "checkerboard",
                    coupling: StepBuilder | None = None,
                    channel_squeeze: str = "channel_major") -> tuple[Scale, ...]:
    """Section 3.6's architecture as a ``tfnvp.multiscale`` declaration.

    Scale ``i < L - 1``: 3 checkerboard couplings, squeeze in the order
    ``channel_squeeze``, 3 channel couplings, un-squeeze, factor-out in the order
    ``FACTOR_OUT_ORDERS[factor_out]``; scale ``L - 1``: 4 checkerboard
    couplings.  Parities alternate within each group.  ``coupling`` is the
    step type (``None``: a layout-only declaration, e.g. for
    ``latent_scale_index``; the latent layout does not depend on
    ``channel_squeeze``: the body un-squeezes what it squeezed).
    """
    if factor_out not in FACTOR_OUT_ORDERS:
        raise UsageError(f"factor_out must be one of {tuple(FACTOR_OUT_ORDERS)}, "
                         f"got {factor_out!r}.")
    if channel_squeeze not in CHANNEL_SQUEEZES:
        raise UsageError(f"channel_squeeze must be one of {CHANNEL_SQUEEZES}, "
                         f"got {channel_squeeze!r}.")

    def couplings(mask: str, count: int) -> tuple[Step, ...]:
        return tuple(Step(coupling, mask=mask, parity=k % 2) for k in range(count))

    last = Scale(couplings("checkerboard", 4))
    scale = Scale(couplings("checkerboard", 3) + (SqueezeOp(channel_squeeze),)
                  + couplings("channel", 3) + (UnsqueezeOp(channel_squeeze),),
                  factor_out=FACTOR_OUT_ORDERS[factor_out])
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
