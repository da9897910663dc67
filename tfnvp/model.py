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

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfnvp import multiscale, validation
from tfnvp.bijectors.chain import FusedChain
from tfnvp.bijectors.logit import LogitPreprocess
from tfnvp.checked_distribution import EventCheckedDistribution
from tfnvp.coupling_step import CouplingStep
from tfnvp.dequantization import UniformDequantizer, bits_per_dim_from_log_prob
from tfnvp.flow_model import Flow, FlowModel
from tfnvp.multiscale import Scale, SqueezeOp, Step, StepBuilder, UnsqueezeOp
from tfnvp.nets.resnet import ResNet
from tfnvp.running_average import Training

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ["RealNVP", "PAPER_CONFIGS", "FACTOR_OUT_ORDERS", "LOGIT_MAPS", "latent_scale_index",
           "real_nvp_scales"]


def _paper_config(size: int, num_res_blocks: int, hidden_channels: int,
                  num_scales: int | None = None) -> dict:
    """Section 4.1: scales until the last recursion's input is 4 x 4 (unless given)."""
    if num_scales is None:
        num_scales = int(math.log2(size // 4)) + 1
    return dict(image_shape=(size, size, 3), num_scales=num_scales,
                num_res_blocks=num_res_blocks, hidden_channels=hidden_channels)


# Section 4.1: CIFAR-10 8 residual blocks, 64 feature maps, one downscale (two
# scales); ImageNet 32x32 4 blocks, 32 feature maps; the 64x64 datasets 2
# blocks, 32 feature maps; all but CIFAR-10 recurse down to 4 x 4 (32x32: 4
# scales, 64x64: 5 scales).
PAPER_CONFIGS: dict[str, dict] = {
    "cifar10": _paper_config(32, 8, 64, num_scales=2),
    "imagenet32": _paper_config(32, 4, 32),
    "imagenet64": _paper_config(64, 2, 32),
    "celeba": _paper_config(64, 2, 32),
    "lsun": _paper_config(64, 2, 32),
}

# Factor-out variant -> the squeeze order of the factor-out step.
FACTOR_OUT_ORDERS = {"checkerboard": "checkerboard", "channel": "space_to_depth"}
LOGIT_MAPS = ("symmetric", "asymmetric")


class RealNVP(FlowModel):
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
        the coupling arithmetic.  Defaults to ``dtype``.
      recompute_gradients: memory-saving backprop: each conditioner body's
        activations are recomputed in the backward pass instead of stored
        (one extra conditioner forward pass per step, ~+1/3 FLOPs; the
        gradients are the same).
      validate_args: check pixel values (finite, in range) in the user-facing
        methods; static shape and dtype checks always run.
      num_classes: ``K`` makes the model class-conditional (``tfnvp.conditional``):
        one-hot labels reach every conditioner and the prior is ``N(mu_y,
        sigma_y^2)`` per class; ``log_prob``, ``nll``, ``bits_per_dim``,
        ``encode``, ``decode`` and ``sample`` then take ``labels=``.

    Example::

        model = tfnvp.RealNVP((32, 32, 3), num_scales=2, num_res_blocks=2, hidden_channels=32)
        dist = model.distribution
        log_p = dist.log_prob(x)                # nats, x float in [0, 256)
        bpd = model.bits_per_dim(x_uint8)       # uniform dequantization
        x = model.sample(16, temperature=0.7)   # in [0, 256): see FlowModel.decode
    """

    data_support = (0.0, 256.0)

    def __init__(self, image_shape: Sequence[int], num_scales: int = 2,
                 num_res_blocks: int = 8, hidden_channels: int = 64, alpha: float = 0.05,
                 logit_map: str = "symmetric", skip_connections: bool = True,
                 factor_out: str = "checkerboard", batch_norm: bool = True, batch_norm_momentum: float = 0.99,
                 running_average_batch_norm: bool = False,
                 synchronized_batch_norm: bool = False, dtype: tf.DType | str = tf.float32,
                 conditioner_dtype: str | None = None, validate_args: bool = True,
                 recompute_gradients: bool = False, num_classes: int | None = None,
                 name: str = "real_nvp"):
        super().__init__(dtype=dtype, validate_args=validate_args, name=name)
        flow_dtype = self.flow_dtype
        image_shape = tuple(int(d) for d in image_shape)
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"image_shape must be (height, width, channels), got {image_shape}.")
        if num_scales < 1:
            raise ValueError(f"num_scales must be at least 1, got {num_scales}.")
        if logit_map not in LOGIT_MAPS:
            raise ValueError(f"logit_map must be one of {LOGIT_MAPS}, got {logit_map!r}.")
        if factor_out not in FACTOR_OUT_ORDERS:
            raise ValueError(f"factor_out must be one of {tuple(FACTOR_OUT_ORDERS)}, "
                             f"got {factor_out!r}.")
        factor = 2 ** (num_scales - 1)
        if image_shape[0] % factor or image_shape[1] % factor:
            raise ValueError(
                f"image_shape {image_shape}: height and width must be divisible by "
                f"2**(num_scales - 1) = {factor} for num_scales={num_scales}.")
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
        self.image_shape = image_shape
        self.event_shape = image_shape
        self.num_scales = int(num_scales)
        body_policy = conditioner_dtype or flow_dtype.name

        def resnet(position: multiscale.Position, out_channels: int) -> ResNet:
            # Feature maps double with every squeeze (the resolution halves).
            return ResNet(hidden_channels * 2 ** position.depth, num_res_blocks, out_channels,
                          synchronized_batch_norm=synchronized_batch_norm,
                          batch_norm_momentum=batch_norm_momentum,
                          skip_connections=skip_connections, dtype=body_policy,
                          name=f"resnet_{position.index}")

        coupling = CouplingStep(resnet, flow_dtype, batch_norm=batch_norm,
                                batch_norm_momentum=batch_norm_momentum,
                                running_average_batch_norm=running_average_batch_norm,
                                recompute_gradients=recompute_gradients)
        # The layers do not depend on the image size: the same weights build
        # the flow at any size (extrapolation, appendix C).
        self._create_steps(real_nvp_scales(num_scales, factor_out, coupling), image_shape[-1],
                           event_ndims=3)
        self.dequantizer = UniformDequantizer(dtype=flow_dtype.name, name="dequantizer")
        self._make_class_conditional(num_classes)
        # Build every weight now (eval mode: no statistics are updated).
        self.log_prob(tf.fill((1,) + image_shape, tf.constant(128.0, flow_dtype)),
                      labels=None if num_classes is None else tf.zeros([1], tf.int32))

    @classmethod
    def from_paper(cls, name: str, **overrides) -> "RealNVP":
        """The paper's configuration for ``name`` (a key of ``PAPER_CONFIGS``)."""
        if name not in PAPER_CONFIGS:
            raise ValueError(f"Unknown paper configuration {name!r}; "
                             f"choose one of {sorted(PAPER_CONFIGS)}.")
        return cls(**{**PAPER_CONFIGS[name], **overrides})

    def get_config(self) -> dict:
        return dict(self._config)

    # ------------------------------------------------------------------ flow
    def _build_flow(self, image_shape: tuple[int, ...]) -> Flow:
        validation.check_image_shape(image_shape, self.image_shape[-1], self.num_scales)
        bijector = FusedChain(
            [LogitPreprocess(self._config["alpha"],
                             symmetric=self._config["logit_map"] == "symmetric",
                             validate_args=self.validate_args)] + self._flow_bijectors(3),
            name="real_nvp_flow")
        base = tfd.Sample(tfd.Normal(tf.zeros([], self.flow_dtype), tf.ones([], self.flow_dtype)),
                          sample_shape=image_shape)
        distribution = EventCheckedDistribution(
            base, bijector, what="images", layout="batch..., height, width, channels",
            name="real_nvp")
        return Flow(bijector, distribution)

    def distribution_for(self, image_shape: Sequence[int]) -> tfd.TransformedDistribution:
        """The same weights as a distribution over images of another size.

        The conditioners are convolutional and the masks are computed from
        the input's shape, so the trained model extrapolates (appendix C).
        """
        return self._flow(image_shape).distribution

    # ------------------------------------------------------------------ API
    def _check_inputs(self, x) -> tf.Tensor:
        return validation.check_images(x, self.flow_dtype, self.image_shape[-1],
                                       self.validate_args, self.num_scales)

    def _check_latents(self, z) -> tf.Tensor:
        return validation.check_latents(z, self.flow_dtype, self.image_shape[-1],
                                        self.validate_args, self.num_scales)

    def _dequantize(self, x, seed, training: Training | None) -> tuple[tf.Tensor, tf.Tensor | float]:
        """uint8 images go through ``self.dequantizer``; float pixels are already dequantized."""
        x = tf.convert_to_tensor(x)
        if x.dtype != tf.uint8:
            return x, 0.0
        images = validation.check_uint8_images(x)
        return self.dequantizer.dequantize(images, seed=seed, training=bool(training))

    def bits_per_dim(self, images: tf.Tensor, seed: tf.Tensor | Sequence[int] | None = None,
                     training: Training | None = False,
                     labels: tf.Tensor | None = None) -> tf.Tensor:
        """Bits/dim of 8-bit images under the model's dequantizer.

        ``images`` are uint8 ``[..., H, W, C]``; ``self.dequantizer`` turns
        them into ``x = images + u`` with ``log q(u | x)`` (uniform noise and
        ``log q = 0``, ``tfnvp.dequantize``, from the stateless ``seed`` if
        given) and the result is ``nll(images) / (D ln 2) = (-log p(x) + log
        q) / (D ln 2)`` per image: the dequantization bound on the discrete
        model's bits/dim (see ``tfnvp.dequantization``).
        """
        images = validation.check_uint8_images(images)
        nll = self.nll(images, training=training, seed=seed, labels=labels)
        return bits_per_dim_from_log_prob(-nll, int(np.prod(images.shape[-3:])))

    def sample(self, num_samples: int, temperature: float = 1.0,
               seed: tf.Tensor | Sequence[int] | None = None,
               image_shape: Sequence[int] | None = None,
               labels: tf.Tensor | None = None) -> tf.Tensor:
        """``num_samples`` images from ``z ~ N(0, temperature^2 I)`` of ``image_shape``
        (default: the model's own; any size the flow accepts, appendix C); of the
        classes ``labels`` (``[num_samples]``) for a class-conditional model."""
        return super().sample(num_samples, temperature, seed, event_shape=image_shape,
                              labels=labels)

    def latent_scale_index(self, image_shape: Sequence[int] | None = None) -> np.ndarray:
        """``latent_scale_index`` of this model's layout (default: its own image shape)."""
        return multiscale.latent_scale_index(self._untracked.scales,
                                             image_shape or self.image_shape)


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
        raise ValueError(f"factor_out must be one of {tuple(FACTOR_OUT_ORDERS)}, "
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
