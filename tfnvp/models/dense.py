"""Real NVP for vectors: fully-connected affine couplings (Dinh et al., 2017).

``DenseRealNVP`` is the vector counterpart of ``RealNVP``: the same
``AffineCoupling`` bijector (eqs. 6-9) with an explicit mask over the
coordinates, MLP conditioners (``MLP`` inside ``ShiftAndLogScale``, zero
initialized, so the untrained flow is the identity), optional ``BatchNorm``
steps (section 3.7), all in a ``FusedChain``, exposed as a
``tfd.TransformedDistribution`` over ``N(0, I_dim)``.

Masks (section 3.4 for vectors): a random half of the coordinates (fixed by
``seed``, ``floor(dim / 2)`` of them, stored in the config) is kept unchanged
by the even couplings and its complement by the odd ones, so every
coordinate is transformed by every other coupling.  Data -> latent::

    x --coupling(mask, 0)--[BN]--coupling(mask, 1)--[BN]-- ... --> z ~ N(0, I)

A single coordinate cannot be split in two halves: for ``dim = 1`` use
``tfnvp.models.piecewise_linear_flow.PiecewiseLinearFlow``.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfnvp.bijectors.chain import FusedChain
from tfnvp.models.checked_distribution import EventCheckedDistribution
from tfnvp.steps.coupling_step import CouplingStep
from tfnvp.models.flow_model import Flow, FlowModel
from tfnvp.steps.multiscale import Position, Scale, Step
from tfnvp.nets.mlp import MLP

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ["DenseRealNVP", "random_half_mask", "check_vectors"]


def random_half_mask(dim: int, seed: int) -> np.ndarray:
    """0/1 int array of length ``dim`` with ``dim // 2`` ones at random positions."""
    if dim < 2:
        raise ValueError(f"A coupling mask needs dim >= 2, got {dim}.")
    mask = np.zeros(dim, dtype=np.int64)
    mask[np.random.default_rng(seed).permutation(dim)[: dim // 2]] = 1
    return mask


def check_vectors(x, dtype: tf.DType, dim: int, validate_args: bool,
                  what: str = "inputs") -> tf.Tensor:
    """Checks float vectors of shape ``[..., dim]``; returns a fresh ``dtype`` tensor.

    Static properties (dtype, rank, last dimension) raise ``TypeError`` /
    ``ValueError`` at once; with ``validate_args`` non-finite values raise
    ``tf.errors.InvalidArgumentError``.  The result is always a new tensor
    object: TFP's bijector cache is keyed by the input tensor and does not see
    weight updates, so re-evaluating the caller's tensor must not hit it.
    """
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise TypeError(f"Expected float {what} of shape [..., {dim}], got dtype {x.dtype.name}.")
    if x.shape.rank is None or x.shape.rank < 1:
        raise ValueError(f"Expected {what} of shape [..., {dim}] (rank >= 1), "
                         f"got rank {x.shape.rank} with shape {x.shape}.")
    if x.shape[-1] != dim:
        raise ValueError(f"Expected {what} of shape [..., {dim}], got last dimension "
                         f"{x.shape[-1]} (shape {x.shape}).")
    x = tf.identity(tf.cast(x, dtype))
    if validate_args:
        x = tf.debugging.assert_all_finite(x, f"{what} contain NaN or Inf")
    return x


@keras.saving.register_keras_serializable(package="tfnvp")
class DenseRealNVP(FlowModel):
    """Real NVP density on ``R^dim`` with MLP couplings (affine, or Flow++'s logistic mixture).

    Args:
      dim: number of coordinates (>= 2).
      hidden_dim: units of each hidden layer of the s/t MLPs.
      depth: hidden layers per MLP.
      num_couplings: coupling layers; parities alternate 0, 1, 0, ...
      batch_norm: follow every coupling with a ``BatchNorm`` bijector.
      batch_norm_momentum: decay of the running statistics.
      seed: picks the random half of the coordinates of the mask.
      mask: explicit 0/1 mask of length ``dim`` (overrides ``seed``; both
        halves must be non-empty).  ``get_config`` stores the mask in use.
      activation: hidden activation of the MLPs.
      coupling: ``"affine"`` (Real NVP eqs. 6-9) or ``"logistic_mixture"``: Flow++'s
        logistic-mixture CDF coupling (``tfnvp.bijectors.LogisticMixtureCoupling``,
        ``tfnvp.steps.coupling_step``) with ``mixture_components`` components per coordinate.
      mixture_components: ``K`` of the logistic-mixture coupling.
      dtype: float32 or float64, for every variable and the flow arithmetic.
      validate_args: check for NaN/Inf in the user-facing methods; static
        shape and dtype checks always run.

    Example::

        model = tfnvp.DenseRealNVP(dim=2, hidden_dim=64, depth=2, num_couplings=6)
        nll = -tf.reduce_mean(model.log_prob(x, training=True))   # x: [N, 2]
        x_new = model.sample(1000, seed=[1, 2])
        z = model.encode(x)                    # data -> latent, ~N(0, I) when trained
    """

    def __init__(self, dim: int, hidden_dim: int = 64, depth: int = 2, num_couplings: int = 6,
                 batch_norm: bool = False, batch_norm_momentum: float = 0.99, seed: int = 0,
                 mask: Sequence[int] | None = None, activation: str = "tanh",
                 dtype: tf.DType | str = tf.float32, validate_args: bool = True,
                 coupling: str = "affine", mixture_components: int = 4,
                 name: str = "dense_real_nvp"):
        super().__init__(dtype=dtype, validate_args=validate_args, name=name)
        flow_dtype = self.flow_dtype
        policy = keras.config.dtype_policy().name
        if policy.startswith("mixed_"):
            warnings.warn(f"DenseRealNVP computes in its dtype ({flow_dtype.name}): Keras' global "
                          f"policy {policy!r} applies to the image models' conditioners only "
                          "(RealNVP, Glow: conditioner_dtype).", stacklevel=2)
        if isinstance(dim, bool) or int(dim) != dim or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}.")
        dim = int(dim)
        if dim == 1:
            raise ValueError(
                "DenseRealNVP needs dim >= 2: a coupling layer splits the coordinates into two "
                "non-empty halves, which one coordinate cannot provide. For 1-D data use "
                "tfnvp.PiecewiseLinearFlow (PiecewiseLinear bijector).")
        if num_couplings < 1:
            raise ValueError(f"num_couplings must be at least 1, got {num_couplings}.")
        if mask is None:
            mask_array = random_half_mask(dim, seed)
        else:
            mask_array = np.asarray(mask)
            if (mask_array.shape != (dim,) or not np.all((mask_array == 0) | (mask_array == 1))
                    or mask_array.sum() in (0, dim)):
                raise ValueError(f"mask must be a 0/1 array of length dim={dim} with both zeros "
                                 f"and ones, got {mask!r}.")
            mask_array = mask_array.astype(np.int64)
        self._config = dict(
            dim=dim, hidden_dim=int(hidden_dim), depth=int(depth),
            num_couplings=int(num_couplings), batch_norm=bool(batch_norm),
            batch_norm_momentum=float(batch_norm_momentum), seed=int(seed),
            mask=[int(m) for m in mask_array], activation=activation, dtype=flow_dtype.name,
            validate_args=bool(validate_args))
        if coupling != "affine":  # Affine configurations stay as they were.
            self._config.update({"coupling": coupling, "mixture_components": int(mixture_components)})
        self.dim = dim
        self.event_shape = (dim,)
        self.mask = mask_array

        def mlp(step: Step, position: Position, out_channels: int) -> MLP:
            return MLP(hidden_dim, depth, out_channels, activation=activation,
                       dtype=flow_dtype.name, name=f"mlp_{position.index}")

        step = CouplingStep(mlp, flow_dtype, batch_norm=batch_norm,
                            batch_norm_momentum=batch_norm_momentum, coupling=coupling,
                            mixture_components=mixture_components)
        # One scale, no squeezes: couplings with alternating parities.
        scale = Scale(tuple(Step(step, mask=mask_array, parity=index % 2)
                            for index in range(num_couplings)))
        self._create_steps((scale,), dim, event_ndims=1)
        # Build every weight now (evaluation mode: no statistics are updated).
        self._build_weights(tf.zeros((1, dim), flow_dtype))

    def get_config(self) -> dict:
        return dict(self._config)

    @classmethod
    def from_config(cls, config: dict) -> "DenseRealNVP":
        return cls(**config)

    # ------------------------------------------------------------------ flow
    def _build_flow(self, event_shape: tuple[int, ...]) -> Flow:
        if event_shape != (self.dim,):
            raise ValueError(f"Expected vectors of shape [..., {self.dim}], got events {event_shape}.")
        bijector = FusedChain(self._flow_bijectors(1), name="dense_real_nvp_flow")
        base = tfd.Sample(tfd.Normal(tf.zeros([], self.flow_dtype), tf.ones([], self.flow_dtype)),
                          sample_shape=[self.dim])
        distribution = EventCheckedDistribution(base, bijector, what="vectors",
                                                layout="batch..., dim", name="dense_real_nvp")
        return Flow(bijector, distribution)

    def _check_inputs(self, x) -> tf.Tensor:
        return check_vectors(x, self.flow_dtype, self.dim, self.validate_args)

    def _check_latents(self, z) -> tf.Tensor:
        return check_vectors(z, self.flow_dtype, self.dim, self.validate_args, what="latents")
