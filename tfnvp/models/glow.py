"""The Glow image model (Kingma & Dhariwal, NeurIPS 2018) on tfnvp's flow engine.

``Glow`` is an ``ImageFlowModel`` (like ``RealNVP``: a ``keras.Model``
owning every layer, the flow as a ``tfd.TransformedDistribution`` with
support ``[0, 256)^(H x W x C)``, the same methods).  Its multi-scale
architecture (section 3 and Figure 2b), data -> latent, for ``num_scales = L``
levels of ``K = steps_per_scale`` steps::

    x in [0, 256)  --LogitPreprocess-->  logit space   (as RealNVP, section 4.1 of Dinh et al.)
    level i < L-1:  squeeze, K steps of flow, [split prior], split: half of the
                    channels leave as latents, level i+1 runs on the other half
    level L-1:      squeeze, K steps of flow, [top prior]

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

* the authors' release's learned priors, on by default (the release always
  has the split priors; its published CIFAR-10 run sets ``--learntop``):
  ``split_prior=True`` gives the half ``z`` of the channels that leaves at a
  split the prior ``N(mu(h), sigma(h)^2)``, mean and log-scale from a
  zero-initialized convolution of the half ``h`` that stays (``split2d_prior``);
  ``learn_top=True`` gives the top latent a learned mean and log-scale, from a
  zero-initialized convolution of zeros (``learntop``: one value per channel,
  others at the border positions; ``tfnvp.nets.glow_prior``).  Each is an
  affine step in the flow, ``eps = (z - mu) * exp(-log_sigma)``
  (``tfnvp.steps.glow_prior.GlowPrior``), so the base distribution stays
  ``N(0, I)``; a new prior is the identity, so with the same other weights a
  new model computes what it computes without them.
  Models stored before the options existed load without them (``legacy`` False);
* with ``num_classes=K``, the class-conditional prior ``N(mu_y, sigma_y^2)`` of
  ``tfnvp.conditional`` on top (the release's ``ycond``, labels into the top
  prior, and its classification loss are not available), and one-hot labels
  to every coupling network (a learned bias after its first actnorm);
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
* the coupling is the paper's affine one by default; ``coupling="additive"``
  is the authors' release's default (``flow_coupling=0``): ``y_b = x_b +
  t(x_a)``, log-det 0, each network giving only ``t`` (half the outputs);
* the affine coupling's scale ``s = sigmoid(h + 2)`` is floored at ``e^-7``
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

import dataclasses
from typing import Sequence

import keras
import numpy as np

from tfnvp.steps import multiscale
from tfnvp.errors import UsageError
from tfnvp.steps.glow_prior import GlowPrior
from tfnvp.steps.glow_step import GlowStep
from tfnvp.models.image_flow import ImageFlowModel
from tfnvp.models.spec import ImageFlowSpec, option
from tfnvp.steps.multiscale import Scale, SqueezeOp, Step, StepBuilder, UnsqueezeOp

__all__ = ["Glow", "GlowSpec", "GLOW_COUPLINGS", "GLOW_PAPER_CONFIGS", "glow_scales",
           "glow_latent_scale_index"]

#: Glow's couplings (``coupling=``): the paper's affine one, or the additive one
#: (``y_b = x_b + t(x_a)``, log-det 0; the authors' release's default ``flow_coupling=0``).
GLOW_COUPLINGS = ("affine", "additive")


@dataclasses.dataclass(frozen=True)
class GlowSpec(ImageFlowSpec):
    """Every option of a ``Glow``, validated once (``tfnvp.models.spec``).

    ``GlowSpec(image_shape, **options)``: ``ImageFlowSpec``'s fields (image
    shape, logit map, dtypes, class conditioning, dequantizer, ``conditioner``:
    Flow++'s options) and Glow's own below.  The preset ``GlowSpec.cifar10()``
    is the paper's CIFAR-10 model.
    """

    num_scales: int = option(3, "Levels L (L - 1 splits); every level squeezes first.",
                             preset=True)
    steps_per_scale: int = option(32, "Steps of flow per level, K.", preset=True)
    hidden_channels: int = option(512, "Feature maps of every coupling network.", preset=True)
    coupling: str = option("affine", "affine ((x_b + t) * sigmoid(h + 2), the paper's) or "
                           "additive (x_b + t, log-det 0: the release's default "
                           "flow_coupling=0) in every step.", choices=GLOW_COUPLINGS,
                           recorded_with=("coupling",))
    split_prior: bool = option(True, "The authors' release's learned split priors "
                               "(split2d_prior): the half of the channels that leaves at each "
                               "split is N(mu(h), sigma(h)^2), mu and log sigma from a "
                               "zero-initialized convolution of the half h that stays.",
                               legacy=False)
    learn_top: bool = option(True, "The release's learned top prior (learntop): the top latent "
                             "is N(mu, sigma^2), mu and log sigma from a zero-initialized "
                             "convolution of zeros (per channel, other values at the border).",
                             legacy=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._require(self.steps_per_scale >= 1, "steps_per_scale", "must be at least 1")

    @property
    def squeezes(self) -> int:
        return self.num_scales  # Every level squeezes.

    def step_depths(self) -> range:
        return range(1, self.num_scales + 1)  # Level i's steps are at squeeze depth i + 1.

    def conditioner_width(self, depth: int) -> int:
        return self.hidden_channels  # The same at every level, as in the paper.

    def layout(self) -> tuple[Scale, ...]:
        return glow_scales(self.num_scales, self.steps_per_scale)

    @classmethod
    def cifar10(cls, **overrides) -> GlowSpec:
        """CIFAR-10 (Kingma & Dhariwal 2018, section 5 and appendix): L = 3 levels of
        K = 32 steps, 512-channel coupling networks."""
        return cls(**{"image_shape": (32, 32, 3), "num_scales": 3, "steps_per_scale": 32,
                      "hidden_channels": 512, **overrides})

    @classmethod
    def presets(cls) -> dict:
        return {"cifar10": cls.cifar10}


#: Glow's published configurations (``GlowSpec``'s presets' image shape, levels, steps and
#: width): CIFAR-10 with L = 3 levels of K = 32 steps and 512-channel coupling networks.
GLOW_PAPER_CONFIGS: dict[str, dict] = {name: preset().preset_fields()
                                       for name, preset in GlowSpec.presets().items()}


@keras.saving.register_keras_serializable(package="tfnvp")
class Glow(ImageFlowModel):
    """Glow for images with values in ``[0, 256)``; see the module docstring.

    ``Glow(spec)`` with a ``GlowSpec``, or ``Glow(image_shape, **options)`` with
    the specification's fields as keyword arguments.  The main ones:

    Args:
      image_shape: ``(H, W, C)``; ``H`` and ``W`` divisible by ``2**num_scales``
        (every level squeezes); or a ``GlowSpec`` (then no options).
      name: the Keras model's name.
      num_scales: levels ``L`` (``L - 1`` splits).
      steps_per_scale: steps of flow per level, ``K``.
      hidden_channels: feature maps of every coupling network.
      coupling: ``"affine"`` (the paper's, default) or ``"additive"``: ``y_b = x_b +
        t(x_a)``, volume-preserving (log-det 0; the release's ``flow_coupling=0``,
        ``tfnvp.bijectors.AdditiveCoupling``), its networks giving ``t`` only.
      split_prior: the release's learned split priors (default on; module docstring).
      learn_top: the release's learned top prior (default on; module docstring).
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

    spec_class = GlowSpec

    def __init__(self, image_shape: Sequence[int] | GlowSpec, *, name: str = "glow",
                 **options):
        super().__init__(GlowSpec.of(image_shape, **options), name=name)
        spec = self.spec
        step = GlowStep(spec.hidden_channels, self.flow_dtype,
                        conditioner_dtype=self.conditioner_policy,
                        context_channels=spec.num_classes or 0, conditioner=spec.conditioner,
                        additive=spec.coupling == "additive")
        split_prior = GlowPrior("split", self.flow_dtype) if spec.split_prior else None
        top_prior = GlowPrior("top", self.flow_dtype) if spec.learn_top else None
        self._create_steps(glow_scales(spec.num_scales, spec.steps_per_scale, step, split_prior,
                                       top_prior),
                           spec.image_shape[-1], event_ndims=3)
        self._finish_image_flow()

    @property
    def actnorms(self) -> list:
        """Every step's ``ActNormParameters`` (the flow's, not the coupling networks'),
        data -> latent order."""
        return self._role("actnorm")

    @property
    def priors(self) -> list:
        """The learned priors' ``GaussianPriorHead`` s (``split_prior``: one per split;
        ``learn_top``: the top one, last), data -> latent order."""
        return self._role("split_prior") + self._role("top_prior")

    @property
    def convolutions(self) -> list:
        """Every step's ``InvertibleConv1x1Weights``, data -> latent order."""
        return self._role("conv1x1")


def glow_scales(num_scales: int, steps_per_scale: int, step: StepBuilder | None = None,
                split_prior: StepBuilder | None = None,
                top_prior: StepBuilder | None = None) -> tuple[Scale, ...]:
    """Glow's architecture as a ``tfnvp.multiscale`` declaration.

    Every level: squeeze, ``steps_per_scale`` steps of type ``step`` (``None``:
    a layout-only declaration), the level's prior step if any, un-squeeze;
    every level but the coarsest then factors out in the ``space_to_depth``
    order (the un-squeeze and the factor-out's squeeze cancel, so the split
    acts on the squeezed tensor).  The couplings keep the first half of the
    channels (parity 0), as in the authors' release: the 1x1 convolutions mix
    the channels between steps.  ``split_prior`` (a ``GlowPrior("split")``) is
    the last step of every level but the coarsest, on the tensor the split
    halves; ``top_prior`` (a ``GlowPrior("top")``) the coarsest level's last.
    """
    if num_scales < 1 or steps_per_scale < 1:
        raise UsageError(f"Glow needs num_scales >= 1 and steps_per_scale >= 1, got "
                         f"{num_scales} and {steps_per_scale}.")
    steps = tuple(Step(step, mask="channel", parity=0) for _ in range(int(steps_per_scale)))

    def body(prior: StepBuilder | None) -> tuple:
        return ((SqueezeOp(),) + steps + ((Step(prior),) if prior else ()) + (UnsqueezeOp(),))

    return ((Scale(body(split_prior), factor_out="space_to_depth"),) * (int(num_scales) - 1)
            + (Scale(body(top_prior)),))


def glow_latent_scale_index(image_shape: Sequence[int], num_scales: int) -> np.ndarray:
    """Integer array of a ``Glow`` latent's shape: the level each entry left the flow at
    (0 the finest), derived from the same declaration as the flow (``glow_scales``)."""
    return multiscale.latent_scale_index(glow_scales(num_scales, 1), image_shape)
