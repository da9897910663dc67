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
* with ``num_classes=K``, two forms of class conditioning
  (``class_conditioning``).  ``"couplings"`` (the default, the form of models
  stored before the option existed): the class-conditional prior ``N(mu_y,
  sigma_y^2)`` of ``tfnvp.conditional`` on every latent, and one-hot labels to
  every coupling network (a learned bias after its first actnorm).
  ``"release"`` (the authors' release's ``--ycond``): the label reaches the top
  prior only, whose mean and log-scale get a zero-initialized linear map of
  the one-hot label (the release's ``linear_zeros``) added, one value per
  class and channel at every position, ``[mu_y, log_sigma_y] = ZeroConv2D(0) +
  LinearZeros(e_y)`` (``tfnvp.nets.glow_prior``); the top prior stays an
  affine step of the flow, conditioned on the labels (with ``learn_top=False``
  the label term alone), and nothing else in the flow sees the label (the
  coupling networks are the unconditional ones; a variational dequantizer,
  not part of the release, still sees it).  Its optional classification loss
  (``weight_y > 0``, the release's ``--weight_y``): a zero-initialized linear
  classifier (``classifier``) of the label from the mean over positions of
  the top latent ``z`` (the top prior's input), and ::

      loss = nll + weight_y * D * classification_nll,  classification_nll = -log softmax(logits)_y

  the release's ``bits_x + weight_y * bits_y`` times ``D ln 2``
  (``tfnvp.Objective``): ``fit`` and the trainer minimize it, ``nll`` and
  bits/dim stay the likelihood's;
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
from typing import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfnvp.steps import multiscale
from tfnvp.bijectors.squeeze import Squeeze
from tfnvp.bijectors.without_context import WithoutContext
from tfnvp.errors import UsageError
from tfnvp.models.conditional import one_hot_context
from tfnvp.nets.glow_prior import LinearZeros
from tfnvp.steps.glow_prior import GlowPrior
from tfnvp.steps.glow_step import GlowStep
from tfnvp.models.image_flow import ImageFlowModel
from tfnvp.models.spec import ImageFlowSpec, option
from tfnvp.steps.multiscale import Position, Scale, SqueezeOp, Step, StepBuilder, UnsqueezeOp

tfb = tfp.bijectors

__all__ = ["Glow", "GlowSpec", "GLOW_CLASS_CONDITIONINGS", "GLOW_COUPLINGS", "GLOW_PAPER_CONFIGS",
           "glow_scales", "glow_latent_scale_index", "glow_top_latent_positions"]

#: Glow's couplings (``coupling=``): the paper's affine one, or the additive one
#: (``y_b = x_b + t(x_a)``, log-det 0; the authors' release's default ``flow_coupling=0``).
GLOW_COUPLINGS = ("affine", "additive")

#: Glow's forms of class conditioning (``class_conditioning=``, with ``num_classes``):
#: labels to every coupling network and a per-class prior on every latent, or the
#: authors' release's ``ycond``: labels to the top prior only.
GLOW_CLASS_CONDITIONINGS = ("couplings", "release")


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
    class_conditioning: str = option(
        "couplings", "With num_classes: couplings (labels to every coupling network and a "
        "per-class prior N(mu_y, sigma_y^2) on every latent) or release (the release's ycond: "
        "labels to the top prior only, a per-class mean and log-scale of the top latent).",
        choices=GLOW_CLASS_CONDITIONINGS, recorded_with=("class_conditioning",))
    weight_y: float = option(
        0.0, "The release's classification loss (class_conditioning=release): loss = nll + "
        "weight_y * D * cross entropy of a zero-initialized linear classifier of the label "
        "from the top latent's mean over positions (the release's bits_x + weight_y * bits_y, "
        "times D ln 2); 0: off. Bits/dim stay the likelihood's.",
        recorded_with=("weight_y",))

    def __post_init__(self) -> None:
        super().__post_init__()
        self._require(self.steps_per_scale >= 1, "steps_per_scale", "must be at least 1")
        self._require(self.class_conditioning == "couplings" or self.num_classes is not None,
                      "class_conditioning", "needs a class-conditional model",
                      "Pass num_classes=K (the trainer: --conditional), or leave "
                      "class_conditioning at 'couplings'.")
        self._require(bool(np.isfinite(self.weight_y)) and self.weight_y >= 0, "weight_y",
                      "must be a finite number >= 0 (0: no classification loss)")
        self._require(self.weight_y == 0 or self.release_labels, "weight_y",
                      "is the release's classification loss and needs num_classes=K and "
                      "class_conditioning='release'",
                      "Pass both (the trainer: --conditional --class_conditioning=release), "
                      "or weight_y=0.")

    @property
    def release_labels(self) -> bool:
        """Whether the labels reach the top prior only (the release's ``ycond``)."""
        return self.num_classes is not None and self.class_conditioning == "release"

    @property
    def top_shape(self) -> tuple[int, int, int]:
        """The top latent's shape ``(H / 2^L, W / 2^L, C * 2^(L+1))``: what the top prior
        and the classifier see."""
        height, width, channels = self.image_shape
        scale = 2 ** self.num_scales
        return height // scale, width // scale, channels * 2 * scale

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
      class_conditioning: with ``num_classes``, ``"couplings"`` (default) or
        ``"release"`` (labels to the top prior only; module docstring).
      weight_y: the release's classification loss weight (``"release"`` only; 0: off).
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
        release = spec.release_labels
        step: StepBuilder = GlowStep(
            spec.hidden_channels, self.flow_dtype, conditioner_dtype=self.conditioner_policy,
            context_channels=0 if release else spec.num_classes or 0,
            conditioner=spec.conditioner, additive=spec.coupling == "additive")
        if release:
            step = _WithoutLabels(step)
        split_prior = GlowPrior("split", self.flow_dtype) if spec.split_prior else None
        top_prior = (GlowPrior("top", self.flow_dtype, num_classes=spec.num_classes if release
                               else None, learned=spec.learn_top)
                     if spec.learn_top or release else None)
        self._create_steps(glow_scales(spec.num_scales, spec.steps_per_scale, step, split_prior,
                                       top_prior),
                           spec.image_shape[-1], event_ndims=3)
        if spec.weight_y:
            self.classifier = LinearZeros(spec.num_classes, dtype=self.flow_dtype.name,
                                          name="classifier")
            self.classifier.build((None, spec.top_shape[-1]))
        self._finish_image_flow()

    def _make_class_conditional(self, num_classes: int | None, class_prior: bool = True
                                ) -> None:
        # The release's form: the top prior step holds the label's prior; the base is N(0, I).
        super()._make_class_conditional(num_classes, class_prior and not self.spec.release_labels)

    def top_latent(self, z: tf.Tensor) -> tf.Tensor:
        """The entries of latents ``z`` (``[batch..., H, W, C]``, ``encode``'s) that the top
        prior step produced, as ``[batch..., *GlowSpec.top_shape]``
        (``glow_top_latent_positions``)."""
        z = tf.convert_to_tensor(z)
        with tf.init_scope():  # A constant of the layout, computed eagerly when traced.
            positions = glow_top_latent_positions(self.image_shape, self.spec.num_scales)
        batch = tf.shape(z)[:-3]
        flat = tf.reshape(z, tf.concat([batch, [-1]], 0))
        return tf.reshape(tf.gather(flat, positions, axis=-1),
                          tf.concat([batch, self.spec.top_shape], 0))

    def _label_loss(self, z: tf.Tensor, labels: tf.Tensor | None, num_dims: int
                    ) -> tuple[tf.Tensor, tf.Tensor] | None:
        """The release's classification loss (``weight_y``; module docstring): the top
        prior's output ``eps`` mapped back to its input ``z_top = mu_y + sigma_y * eps``,
        logits ``classifier(mean over positions of z_top)``, softmax cross entropy."""
        if not self.spec.weight_y:
            return None
        eps = self.top_latent(z)
        flat_eps = tf.reshape(eps, (-1,) + self.spec.top_shape)
        flat_labels = tf.reshape(labels, [-1])
        head = self._role("top_prior")[0]
        mean, log_sigma = head.mean_and_log_scale(
            flat_eps, one_hot_context(flat_labels, self.num_classes, flat_eps.dtype))
        top = mean + tf.exp(log_sigma) * flat_eps
        logits = self.classifier(tf.reduce_mean(top, axis=[1, 2]))
        cross_entropy = tf.reshape(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=flat_labels, logits=logits), tf.shape(labels))
        return cross_entropy, self.spec.weight_y * num_dims * cross_entropy

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


class _WithoutLabels(StepBuilder):
    """``builder``'s steps with their bijectors called without the flow's context
    (``WithoutContext``): the release's class conditioning keeps the labels from the
    coupling networks."""

    def __init__(self, builder: StepBuilder):
        self._builder = builder

    def layers(self, step: Step, position: Position) -> dict[str, keras.layers.Layer]:
        return self._builder.layers(step, position)

    def bijectors(self, step: Step, layers: Mapping[str, keras.layers.Layer],
                  position: Position, event_ndims: int) -> list[tfb.Bijector]:
        return [WithoutContext(bijector) for bijector in
                self._builder.bijectors(step, layers, position, event_ndims)]


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


def glow_top_latent_positions(image_shape: Sequence[int], num_scales: int) -> np.ndarray:
    """Where a ``Glow`` latent (flattened ``H x W x C``, ``encode``'s layout) holds the top
    prior's tensor: entry ``k`` is the flat position of the top tensor's entry ``k``
    (row-major over ``GlowSpec.top_shape``).

    Built as ``glow_latent_scale_index`` is, from the same declaration: the top
    tensor's indices pushed through the coarsest level's un-squeeze and every
    coarser-to-finer factor-out's ``Squeeze`` (``-1`` for the entries that left earlier).
    """
    scales = glow_scales(num_scales, 1)

    def indices(height: int, width: int, channels: int, level: int) -> tf.Tensor:
        order = scales[level].factor_out
        if order is None:  # The coarsest level: squeeze, steps, top prior, un-squeeze.
            top = tf.reshape(tf.range(height * width * channels, dtype=tf.float64),
                             [height // 2, width // 2, 4 * channels])
            return Squeeze(order=scales[level].body[0].order).forward(top)
        left = tf.fill([height // 2, width // 2, 2 * channels], tf.constant(-1.0, tf.float64))
        inner = indices(height // 2, width // 2, 2 * channels, level + 1)
        return Squeeze(order=order).forward(tf.concat([left, inner], axis=-1))

    flat = indices(*(int(d) for d in image_shape), 0).numpy().ravel().astype(np.int64)
    top = flat >= 0
    positions = np.empty(int(top.sum()), np.int64)
    positions[flat[top]] = np.flatnonzero(top)
    return positions
