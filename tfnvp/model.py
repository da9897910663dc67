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

from tfnvp.bijectors.base import ModalBijector
from tfnvp.bijectors.batch_norm import BatchNormStatistics
from tfnvp.bijectors.chain import FusedChain
from tfnvp.bijectors.factor_out import FactorOut
from tfnvp.bijectors.logit import LogitPreprocess
from tfnvp.bijectors.squeeze import Squeeze
from tfnvp.dequantization import bits_per_dim_from_log_prob, dequantize
from tfnvp.checked_distribution import EventCheckedDistribution
from tfnvp.flow_model import Flow, FlowModel
from tfnvp.nets.resnet import ResNet
from tfnvp.nets.shift_and_log_scale import ShiftAndLogScale
from tfnvp.nets.tracking import track_layers
from tfnvp import validation

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ["RealNVP", "PAPER_CONFIGS", "FACTOR_OUT_ORDERS", "LOGIT_MAPS", "latent_scale_index"]



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
                 recompute_gradients: bool = False,
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
        self.image_shape = image_shape
        self.event_shape = image_shape
        self.num_scales = int(num_scales)
        body_policy = conditioner_dtype or flow_dtype.name
        # One (conditioner, statistics) pair per coupling, in data -> latent
        # order.  They do not depend on the image size: the same weights build
        # the flow at any size (extrapolation, appendix C).
        self.conditioners: list[ShiftAndLogScale] = []
        self.statistics: list[BatchNormStatistics] = []
        channels = image_shape[-1]
        for scale in range(num_scales):
            hidden = hidden_channels * 2 ** scale
            last = scale == num_scales - 1
            stages = [(4 if last else 3, channels, hidden)]
            if not last:
                stages.append((3, 4 * channels, 2 * hidden))
            for count, width, feature_maps in stages:
                for _ in range(count):
                    index = len(self.conditioners)
                    body = ResNet(feature_maps, num_res_blocks, 2 * width,
                                  synchronized_batch_norm=synchronized_batch_norm,
                                  batch_norm_momentum=batch_norm_momentum,
                                  skip_connections=skip_connections,
                                  dtype=body_policy, name=f"resnet_{index}")
                    self.conditioners.append(ShiftAndLogScale(
                        body, width, recompute_gradients=recompute_gradients,
                        dtype=flow_dtype.name, name=f"coupling_{index}"))
                    if batch_norm:
                        self.statistics.append(BatchNormStatistics(
                            width, dtype=flow_dtype.name, name=f"batch_norm_{index}"))
            channels *= 2
        track_layers(self, "conditioner", self.conditioners)
        track_layers(self, "statistics", self.statistics)
        # Build every weight now (eval mode: no statistics are updated).
        self.log_prob(tf.fill((1,) + image_shape, tf.constant(128.0, flow_dtype)))

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
        modal: list[ModalBijector] = []
        couplings = iter(range(len(self.conditioners)))
        momentum = self._config["batch_norm_momentum"]
        running = self._config["running_average_batch_norm"]
        order = FACTOR_OUT_ORDERS[self._config["factor_out"]]

        def coupled(mask: str, parity: int) -> list[tfb.Bijector]:
            index = next(couplings)
            steps = self.coupling_steps(
                self.conditioners[index], self.statistics[index] if self.statistics else None,
                mask, parity, event_ndims=3, index=index, momentum=momentum,
                running_average=running)
            modal.extend(steps)
            return steps

        def scale(level: int) -> list[tfb.Bijector]:
            # Data -> latent order; tfb.Chain applies its list from last to
            # first in `forward`, hence first to last in `inverse`, which is
            # the order written here.
            if level == self.num_scales - 1:
                return [s for k in range(4) for s in coupled("checkerboard", k % 2)]
            steps = [s for k in range(3) for s in coupled("checkerboard", k % 2)]
            steps.append(Squeeze())
            steps += [s for k in range(3) for s in coupled("channel", k % 2)]
            if order != "space_to_depth":
                # Re-squeeze in the factor-out's order (a permutation).
                steps += [tfb.Invert(Squeeze(), name=f"unsqueeze_channels_{level}"),
                          Squeeze(order=order, name=f"squeeze_{order}_{level}")]
            inner = FusedChain(scale(level + 1), name=f"scale_{level + 1}")
            steps.append(FactorOut(inner, name=f"factor_out_{level}"))
            steps.append(tfb.Invert(Squeeze(order=order), name=f"unsqueeze_{level}"))
            return steps

        bijector = FusedChain(
            [LogitPreprocess(self._config["alpha"],
                             symmetric=self._config["logit_map"] == "symmetric",
                             validate_args=self.validate_args)] + scale(0),
            name="real_nvp_flow")
        base = tfd.Sample(tfd.Normal(tf.zeros([], self.flow_dtype), tf.ones([], self.flow_dtype)),
                          sample_shape=image_shape)
        distribution = EventCheckedDistribution(
            base, bijector, what="images", layout="batch..., height, width, channels",
            name="real_nvp")
        return Flow(bijector, distribution, tuple(modal))

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

    def bits_per_dim(self, images: tf.Tensor, seed: tf.Tensor | Sequence[int] | None = None,
                     training: bool | None = False) -> tf.Tensor:
        """Bits/dim of 8-bit images under uniform dequantization.

        ``images`` are uint8 ``[..., H, W, C]``; each gets noise ``u ~ U[0,1)``
        (``tfnvp.dequantize``, from the stateless ``seed`` if given) and the
        result is ``-log p(x + u) / (D ln 2)`` per image (see
        ``tfnvp.bits_per_dim_from_log_prob``).
        """
        images = validation.check_uint8_images(images)
        x = dequantize(images, seed=seed, dtype=self.flow_dtype)
        log_prob = self.log_prob(x, training=training)
        return bits_per_dim_from_log_prob(log_prob, int(np.prod(images.shape[-3:])))

    def sample(self, num_samples: int, temperature: float = 1.0,
               seed: tf.Tensor | Sequence[int] | None = None,
               image_shape: Sequence[int] | None = None) -> tf.Tensor:
        """``num_samples`` images from ``z ~ N(0, temperature^2 I)`` of ``image_shape``
        (default: the model's own; any size the flow accepts, appendix C)."""
        return super().sample(num_samples, temperature, seed, event_shape=image_shape)

    def latent_scale_index(self, image_shape: Sequence[int] | None = None) -> np.ndarray:
        """``latent_scale_index`` of this model's layout (default: its own image shape)."""
        return latent_scale_index(image_shape or self.image_shape, self.num_scales,
                                  self._config["factor_out"])


def latent_scale_index(image_shape: Sequence[int], num_scales: int,
                       factor_out: str = "checkerboard") -> np.ndarray:
    """Integer array of the latent's shape: the scale at which each entry left the flow.

    0 is the finest scale (factored out first, half of the variables),
    ``num_scales - 1`` the coarsest.  Built by pushing scale labels through the
    same ``Squeeze`` bijector the flow's factor-out uses (``factor_out`` as in
    ``RealNVP``), so it follows the flow's layout.
    """
    if factor_out not in FACTOR_OUT_ORDERS:
        raise ValueError(f"factor_out must be one of {tuple(FACTOR_OUT_ORDERS)}, "
                         f"got {factor_out!r}.")
    unsqueeze = Squeeze(order=FACTOR_OUT_ORDERS[factor_out])

    def labels(h: int, w: int, c: int, level: int) -> tf.Tensor:
        if level == num_scales - 1:
            return tf.fill([h, w, c], float(level))
        kept = tf.fill([h // 2, w // 2, 2 * c], float(level))
        inner = labels(h // 2, w // 2, 2 * c, level + 1)
        return unsqueeze.forward(tf.concat([kept, inner], axis=-1))

    return labels(*(int(d) for d in image_shape), 0).numpy().astype(np.int32)
