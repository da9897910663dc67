"""One conformance test for every tfnvp bijector (issue 10, item 6).

Each bijector, with perturbed (non-identity) weights, float64, batch 3 of
small ``[H, W, C]`` events, must pass ``bijector_checks.assert_exact_bijector``
(round trips from fresh tensors, ``fldj(z) == -ildj(forward(z))``, log-dets
vs. ``batch_jacobian`` + ``slogdet`` in both directions, eager and in
``tf.function``) on a batch of typical points *and* edge points, where every output
and log-det must also be finite: for the image-space bijector (the logit
preprocessing, whose data side is pixels) pixel values 0 and 255.999, for the
latent-space ones entries of +-8.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfnvp.bijectors import (ActNorm, ActNormParameters, AdditiveCoupling, AffineCoupling,
                             BatchNorm, BatchNormStatistics, FactorOut, FusedChain,
                             InvertibleConv1x1, InvertibleConv1x1Weights, LogisticMixtureCoupling,
                             LogitPreprocess, PiecewiseLinear,
                             PiecewiseLinearParams, Squeeze, glow_coupling)
from tfnvp.nets import LogisticMixtureParameters, ResNet, ShiftAndLogScale
from tfnvp.nets.glow_net import GlowAdditiveHead, GlowAffineHead, GlowNet
from tfnvp.nets.glow_prior import GaussianPriorHead
from tfnvp.bijectors.glow_prior import learned_prior

from bijector_checks import assert_exact_bijector, perturb_weights

BATCH = 3
EVENT = (4, 4, 2)
EDGE_PIXELS = (0.0, 255.999)
EDGE_LATENT = 8.0

# --- Factories: one per bijector. ----------------------------------------
# Modes are call arguments (issue 10): every case here runs in evaluation
# mode, the default ``training=False`` of every bijector call.


def _data(shape=(BATCH, *EVENT), seed: int = 1) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).standard_normal(shape), tf.float64)


def affine_coupling(mask: str, parity: int, channels: int = EVENT[-1]) -> AffineCoupling:
    body = ResNet(8, num_blocks=0, out_channels=2 * channels, dtype="float64")
    conditioner = ShiftAndLogScale(body, channels, dtype="float64")
    coupling = AffineCoupling(conditioner, mask=mask, parity=parity)
    coupling.inverse(tf.zeros((1, *EVENT[:2], channels), tf.float64))  # Builds the layers.
    perturb_weights([conditioner], scale=0.3)
    return coupling


def release_affine_coupling(mask: str, parity: int) -> AffineCoupling:
    """Real NVP's ``conditioner_form="release"`` coupling: the prepared input (batch norm
    without gamma, [u, -u(, b)], ReLU), gamma-free residual block, 1x1 output, scalar s-scale."""
    channels = EVENT[-1]
    checkerboard = mask == "checkerboard"
    body = ResNet(8, num_blocks=1, out_channels=2 * channels, batch_norm_momentum=0.9,
                  batch_norm_epsilon=1e-4, batch_norm_scale=False, output_kernel_size=1,
                  log_scale_gain=0.05 if checkerboard else 0.0, input_mask=mask,
                  input_parity=parity, input_channels=channels, dtype="float64")
    conditioner = ShiftAndLogScale(body, channels, scalar_scale=True,
                                   initial_scale=0.0 if checkerboard else 1.0,
                                   regularized_scale=checkerboard, dtype="float64")
    coupling = AffineCoupling(conditioner, mask=mask, parity=parity)
    coupling.inverse(tf.zeros((1, *EVENT), tf.float64))  # Builds the layers.
    perturb_weights([conditioner], scale=0.3)
    return coupling


def logistic_mixture_coupling(mask: str, parity: int, components: int = 3) -> LogisticMixtureCoupling:
    channels = EVENT[-1]
    body = ResNet(8, num_blocks=0, dtype="float64",
                  out_channels=LogisticMixtureParameters.output_channels(channels, components))
    conditioner = LogisticMixtureParameters(body, channels, components, dtype="float64")
    coupling = LogisticMixtureCoupling(conditioner, mask=mask, parity=parity)
    coupling.inverse(tf.zeros((1, *EVENT), tf.float64))  # Builds the layers.
    perturb_weights([conditioner], scale=0.3)
    return coupling


def batch_norm() -> BatchNorm:
    statistics = BatchNormStatistics(EVENT[-1], dtype="float64")
    perturb_weights([statistics])
    return BatchNorm(statistics)


def logit(symmetric: bool) -> LogitPreprocess:
    return LogitPreprocess(symmetric=symmetric)


def squeeze(order: str) -> Squeeze:
    return Squeeze(order=order)


def factor_out() -> FactorOut:
    return FactorOut(affine_coupling("checkerboard", 0, channels=EVENT[-1] // 2))


def piecewise_linear() -> PiecewiseLinear:
    params = PiecewiseLinearParams(num_bins=6, dtype="float64")
    perturb_weights([params], scale=0.3)
    return PiecewiseLinear(6, x_min=-3.0, x_max=3.0, params=params)


def actnorm() -> ActNorm:
    params = ActNormParameters(EVENT[-1], dtype="float64")
    bijector = ActNorm(params)
    bijector.inverse(3.0 * _data() + 1.0, training=True)  # Data-dependent initialization.
    perturb_weights([params], scale=0.3)
    return bijector


def invertible_conv() -> InvertibleConv1x1:
    weights = InvertibleConv1x1Weights(EVENT[-1], seed=0, dtype="float64")
    perturb_weights([weights], scale=0.3)
    return InvertibleConv1x1(weights)


def glow_affine_coupling(parity: int) -> AffineCoupling:
    body = GlowNet(EVENT[-1], hidden_channels=8, dtype="float64")
    head = GlowAffineHead(body, EVENT[-1], parity=parity, dtype="float64")
    head(_data(), training=True)  # Initializes the net's actnorms.
    # Milder than elsewhere: forward divides by sigmoid(h + 2), which for
    # |z| = 8 and larger weights underflows (Glow's sampling direction is
    # unbounded; a trained net keeps h moderate).
    perturb_weights([head], scale=0.1)
    return glow_coupling(head)


def glow_additive_coupling(parity: int) -> AdditiveCoupling:
    body = GlowNet(EVENT[-1] // 2, hidden_channels=8, dtype="float64")  # t only
    head = GlowAdditiveHead(body, EVENT[-1], parity=parity, dtype="float64")
    head(_data(), training=True)  # Initializes the net's actnorms.
    perturb_weights([head], scale=0.3)
    return glow_coupling(head, additive=True)


def glow_prior(kind: str) -> AffineCoupling:
    """Glow's learned split (``"split"``) or top (``"top"``) prior, weights perturbed."""
    head = GaussianPriorHead(EVENT[-1], kind, dtype="float64")
    head(_data())  # Builds the convolution.
    perturb_weights([head], scale=0.1)
    return learned_prior(head)


def fused_chain() -> FusedChain:
    """Batch norm, Glow coupling, 1x1 convolution, actnorm (data -> latent order).

    Not Glow's step order (actnorm, convolution, coupling): there, sampling
    (``forward``) mixes the coupling's outputs, amplified by 1 / sigmoid(h + 2)
    at the +-8 edge points, through the convolution, and the round trip
    misses the 1e-9 tolerance by up to ~1e-7 (absolute): conditioning, not a defect.
    """
    return FusedChain([batch_norm(), glow_affine_coupling(1), invertible_conv(), actnorm()])


# name -> (factory, latent event shape, "image" | "latent": the space of the data side)
CASES: dict[str, tuple[Callable[[], tfp.bijectors.Bijector], tuple[int, ...], str]] = {
    "affine_coupling_checkerboard": (lambda: affine_coupling("checkerboard", 1), EVENT, "latent"),
    "affine_coupling_channel": (lambda: affine_coupling("channel", 0), EVENT, "latent"),
    "release_affine_coupling_checkerboard": (lambda: release_affine_coupling("checkerboard", 0),
                                             EVENT, "latent"),
    "release_affine_coupling_channel": (lambda: release_affine_coupling("channel", 1),
                                        EVENT, "latent"),
    "logistic_mixture_coupling_checkerboard": (lambda: logistic_mixture_coupling("checkerboard", 0),
                                               EVENT, "latent"),
    "logistic_mixture_coupling_channel": (lambda: logistic_mixture_coupling("channel", 1),
                                          EVENT, "latent"),
    "batch_norm_eval": (batch_norm, EVENT, "latent"),
    "logit_symmetric": (lambda: logit(True), EVENT, "image"),
    "logit_asymmetric": (lambda: logit(False), EVENT, "image"),
    "squeeze_space_to_depth": (lambda: squeeze("space_to_depth"), (2, 2, 8), "latent"),
    "squeeze_checkerboard": (lambda: squeeze("checkerboard"), (2, 2, 8), "latent"),
    "squeeze_channel_major": (lambda: squeeze("channel_major"), (2, 2, 8), "latent"),
    "factor_out": (factor_out, EVENT, "latent"),
    "piecewise_linear": (piecewise_linear, EVENT, "latent"),
    "fused_chain": (fused_chain, EVENT, "latent"),
    "actnorm": (actnorm, EVENT, "latent"),
    "invertible_conv_1x1": (invertible_conv, EVENT, "latent"),
    "glow_coupling_parity0": (lambda: glow_affine_coupling(0), EVENT, "latent"),
    "glow_coupling_parity1": (lambda: glow_affine_coupling(1), EVENT, "latent"),
    "glow_additive_coupling_parity0": (lambda: glow_additive_coupling(0), EVENT, "latent"),
    "glow_additive_coupling_parity1": (lambda: glow_additive_coupling(1), EVENT, "latent"),
    "glow_split_prior": (lambda: glow_prior("split"), EVENT, "latent"),
    "glow_top_prior": (lambda: glow_prior("top"), EVENT, "latent"),
}


def _points(bijector, latent_shape, space: str) -> tf.Tensor:
    """``BATCH`` typical latent points, then ``BATCH`` edge points.

    For the image space: ``inverse`` of uniform pixel values, then of pixels
    that are all 0 or 255.999.
    """
    rng = np.random.default_rng(2)
    shape = (BATCH, *latent_shape)
    if space == "latent":
        values = [rng.standard_normal(shape), EDGE_LATENT * rng.choice([-1.0, 1.0], shape)]
        return tf.constant(np.concatenate(values), tf.float64)
    pixels = np.concatenate([rng.uniform(0.0, 256.0, shape), rng.choice(EDGE_PIXELS, shape)])
    # A new tensor (from NumPy): TFP's cache must not answer forward(z) with the pixels.
    return tf.constant(bijector.inverse(tf.constant(pixels, tf.float64)).numpy())


def _outputs(bijector, z):
    x = bijector.forward(z)
    return (x, bijector.forward_log_det_jacobian(z, event_ndims=3),
            bijector.inverse(tf.identity(x)),
            bijector.inverse_log_det_jacobian(tf.identity(x), event_ndims=3))


@pytest.mark.parametrize("name", sorted(CASES))
def test_conformance(name):
    factory, latent_shape, space = CASES[name]
    bijector = factory()
    z = _points(bijector, latent_shape, space)
    for run in (_outputs, tf.function(_outputs)):
        for value in run(bijector, tf.identity(z)):
            assert np.all(np.isfinite(value.numpy())), (name, run)
    x = bijector.forward(z).numpy()
    if space == "image":  # The edge pixels themselves come back.
        np.testing.assert_allclose(np.sort(np.unique(np.round(x[BATCH:], 6))), EDGE_PIXELS)
    if x.shape == z.shape:  # Perturbed weights: not the identity.
        assert np.abs(x - z.numpy()).max() > 1e-2
    assert_exact_bijector(bijector, z, event_ndims=3)
