"""Tests for tfnvp.latent on a tiny Real NVP with perturbed weights and real digits.

The model's weights get noise (a fresh Real NVP is the identity after the
logit preprocessing) and one training-mode pass moves the batch-norm running
statistics, so encode/decode are far from trivial.  ``validate_args=False``
and no ``data_support`` (no clipping in ``decode``) let decoded samples that
leave ``[0, 256)`` be re-encoded exactly.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

import tfnvp
from tfnvp.experiments import latent

SHAPE = (8, 8, 1)
PIXEL_ATOL = 1e-3  # pixel levels


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """sklearn digits on the 8-bit scale (pixel centres, float32 [N, 8, 8, 1])."""
    images = load_digits().images[:64]
    return (np.round(images * 255.0 / 16.0) + 0.5).astype(np.float32)[..., None]


@pytest.fixture(scope="module")
def model(digits) -> tfnvp.RealNVP:
    keras.utils.set_random_seed(0)  # the same weights whatever ran before
    model = tfnvp.RealNVP(SHAPE, num_scales=2, num_res_blocks=1, hidden_channels=8,
                          validate_args=False)
    rng = np.random.default_rng(0)
    for variable in model.trainable_variables:
        variable.assign_add(0.1 * rng.standard_normal(variable.shape).astype(np.float32))
    model.log_prob(digits, training=True)  # moves the batch-norm statistics
    model.data_support = None  # No clipping in decode: out-of-range samples re-encode exactly.
    return model


def _logit(x: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    p = alpha + (1 - 2 * alpha) * x / 256.0
    return np.log(p) - np.log1p(-p)


def test_model_is_not_trivial(model, digits):
    z = model.encode(digits[:8]).numpy()
    assert np.abs(z - _logit(digits[:8])).mean() > 0.1


def test_reconstruct_reproduces_real_images(model, digits):
    result = latent.reconstruct(model, digits[:16])
    np.testing.assert_array_equal(result.originals, digits[:16])
    error = np.abs(result.reconstructions.astype(np.float64) - digits[:16]).max()
    assert error < PIXEL_ATOL
    assert result.max_abs_error == pytest.approx(error)
    assert result.grid().shape == (2 * 9 + 1, 16 * 9 + 1, 1)


def test_manifold_corners_are_the_sources_and_interior_is_eq14(model, digits):
    n = 5
    sources = digits[[0, 1, 2, 3]]
    result = latent.manifold(model, sources, n=n)
    assert result.images.shape == (n, n) + SHAPE
    np.testing.assert_allclose(result.angles, np.linspace(0, np.pi / 2, n))
    # (phi, phi') = (0, 0), (0, pi/2), (pi/2, 0), (pi/2, pi/2) -> images 1, 2, 3, 4.
    for k, (i, j) in enumerate([(0, 0), (0, n - 1), (n - 1, 0), (n - 1, n - 1)]):
        assert np.abs(result.images[i, j] - sources[k]).max() < PIXEL_ATOL, (i, j)
    # An interior point, from eq. (14) written out independently.
    z1, z2, z3, z4 = model.encode(sources).numpy().astype(np.float64)
    phi, phi_p = np.pi / 4, 3 * np.pi / 8  # indices 2 and 3
    z = (np.cos(phi) * (np.cos(phi_p) * z1 + np.sin(phi_p) * z2)
         + np.sin(phi) * (np.cos(phi_p) * z3 + np.sin(phi_p) * z4))
    expected = model.decode(z[None].astype(np.float32)).numpy()[0]
    np.testing.assert_allclose(result.images[2, 3], expected, atol=PIXEL_ATOL)
    assert np.abs(result.images[2, 3] - sources).max() > 10  # not a source image

    picture = result.grid(padding=2)
    assert picture.shape == (n * 10 + 2, n * 10 + 2, 3)
    red = np.array([255, 0, 0])
    np.testing.assert_array_equal(picture[0, 0], red)  # frame of (0, 0)
    np.testing.assert_array_equal(picture[-1, -1], red)  # frame of (n-1, n-1)
    np.testing.assert_array_equal(picture[2 * 10 + 5, 2 * 10 + 1], [255, 255, 255])  # not a corner


def test_compression_keeps_coarsest_latents(model, digits):
    images = digits[4:7]
    fractions = (1, .5, .25, .125, .0625)
    result = latent.compression(model, images, fractions, seed=3)
    size = int(np.prod(SHAPE))
    assert result.num_kept == tuple(int(np.floor(f * size + 0.5)) for f in fractions)
    assert [int(m.sum()) for m in result.kept] == list(result.num_kept)
    assert result.images.shape == (3, len(fractions)) + SHAPE
    # 100%: the images themselves.
    assert np.abs(result.images[:, 0] - images).max() < PIXEL_ATOL

    scale = model.latent_scale_index(SHAPE)
    z = model.encode(images).numpy()
    for k in range(1, len(fractions)):
        kept = result.kept[k]
        # Coarsest first: no dropped latent belongs to a coarser scale than a kept one.
        assert scale[kept].min() >= scale[~kept].max()
        assert np.all(result.kept[k - 1][kept])  # nested
        z_out = model.encode(result.images[:, k]).numpy()
        # Saturated pixels make re-encoding ill-conditioned: a relative tolerance too.
        np.testing.assert_allclose(z_out[:, kept], z[:, kept], rtol=2e-3, atol=2e-3)
        assert np.mean(np.abs(z_out[:, ~kept] - z[:, ~kept]) > 1e-2) > 0.9  # resampled
    # 50% of a two-scale model is exactly the coarser scale: a quincunx lattice
    # (checkerboard factor-out); 25% its sub-lattice of even rows and columns.
    np.testing.assert_array_equal(result.kept[1], scale == 1)
    rows, cols = np.indices(SHAPE[:2])
    np.testing.assert_array_equal(result.kept[1][..., 0], (rows + cols) % 2 == 0)
    np.testing.assert_array_equal(result.kept[2][..., 0], (rows % 2 == 0) & (cols % 2 == 0))
    other = latent.compression(model, images, fractions, seed=4)
    assert np.abs(other.images[:, 2] - result.images[:, 2]).max() > 1.0
    assert result.grid().shape == (3 * 9 + 1, 6 * 9 + 1, 1)


def test_compression_order_is_interlaced():
    order = latent.compression_order(np.zeros((8, 8, 1), np.int32))
    assert sorted(order) == list(range(64))
    rows, cols = np.unravel_index(order, (8, 8))
    assert set(zip(rows[:4], cols[:4])) == {(0, 0), (0, 4), (4, 0), (4, 4)}
    lattice = {(i, j) for i in range(0, 8, 2) for j in range(0, 8, 2)}
    assert set(zip(rows[:16], cols[:16])) == lattice
    # Scales first, then positions, channels together at one position.
    scale = np.zeros((4, 4, 3), np.int32)
    scale[1::2] = 1
    order = latent.compression_order(scale)
    r, c, ch = np.unravel_index(order, scale.shape)
    assert np.all(scale[r[:24], c[:24], ch[:24]] == 1)
    assert list(ch[:3]) == [0, 1, 2] and len(set(zip(r[:3], c[:3]))) == 1


@pytest.mark.parametrize("factor", [2, 10])
def test_extrapolate_size_and_likelihood(model, digits, factor):
    n = 2 if factor == 2 else 1
    result = latent.extrapolate(model, factor=factor, n=n, temperature=0.7, seed=1)
    assert result.images.shape == (n, 8 * factor, 8 * factor, 1)
    assert np.all(np.isfinite(result.images))
    if factor == 2:
        again = latent.extrapolate(model, factor=2, n=n, temperature=0.7, seed=1)
        np.testing.assert_array_equal(again.images, result.images)
        other = latent.extrapolate(model, factor=2, n=n, temperature=0.7, seed=2)
        assert np.abs(other.images - result.images).max() > 1.0
        # The same weights give a finite density to a 16x16 image.
        big = np.kron(digits[:2, ..., 0], np.ones((2, 2), np.float32))[..., None]
        assert np.all(np.isfinite(model.log_prob(big).numpy()))
        assert np.all(np.isfinite(model.log_prob(np.clip(result.images, 0, 255.9)).numpy()))


def test_interpolate_endpoints_and_path(model, digits):
    result = latent.interpolate(model, digits[10], digits[11], steps=6)
    np.testing.assert_allclose(result.t, np.linspace(0, 1, 6))
    assert result.images.shape == (6,) + SHAPE
    assert np.abs(result.images[0] - digits[10]).max() < PIXEL_ATOL
    assert np.abs(result.images[-1] - digits[11]).max() < PIXEL_ATOL
    assert np.abs(result.images[3] - digits[10:12]).max() > 10
    assert result.grid().shape == (10, 6 * 9 + 1, 1)


def test_slerp_is_a_great_circle_with_linear_norm():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 4, 4, 2))
    b *= 1.5
    t = np.linspace(0, 1, 7)
    path = latent.slerp(a, b, t)
    np.testing.assert_allclose(path[0], a, atol=1e-12)
    np.testing.assert_allclose(path[-1], b, atol=1e-12)
    norms = np.linalg.norm(path.reshape(7, -1), axis=1)
    np.testing.assert_allclose(norms, (1 - t) * np.linalg.norm(a) + t * np.linalg.norm(b))
    units = path.reshape(7, -1) / norms[:, None]
    steps = np.arccos(np.clip(np.sum(units[1:] * units[:-1], axis=1), -1, 1))
    np.testing.assert_allclose(steps, steps[0])  # constant angular speed
    # In the plane of a and b.
    basis, _ = np.linalg.qr(np.stack([a.ravel(), b.ravel()], axis=1))
    residual = units - (units @ basis) @ basis.T
    assert np.abs(residual).max() < 1e-10


def test_temperature_samples_share_noise(model):
    temperatures = (0.0, 0.5, 1.0)
    result = latent.temperature_samples(model, temperatures, n=4, seed=5)
    assert result.images.shape == (3, 4) + SHAPE
    assert result.temperatures == temperatures
    # T = 0 decodes z = 0 for every sample.
    zero = model.decode(np.zeros((1,) + SHAPE, np.float32)).numpy()
    np.testing.assert_allclose(result.images[0], np.repeat(zero, 4, axis=0), atol=PIXEL_ATOL)
    # The same eps at every temperature: z(T=0.5) = z(T=1) / 2.
    z_half = model.encode(result.images[1]).numpy()
    z_one = model.encode(result.images[2]).numpy()
    np.testing.assert_allclose(z_half, 0.5 * z_one, atol=1e-2)
    assert np.abs(z_one).std() > 0.5
    again = latent.temperature_samples(model, temperatures, n=4, seed=5)
    np.testing.assert_array_equal(again.images, result.images)
    # Blocks of 2x2 images side by side, 4 pixels apart.
    assert result.grid().shape == (19, 3 * 19 + 2 * 4, 1)


def test_bad_inputs_are_rejected(model, digits):
    with pytest.raises(ValueError, match="exactly 4"):
        latent.manifold(model, digits[:3])
    with pytest.raises(ValueError, match="shape"):
        latent.reconstruct(model, np.zeros((2, 16, 16, 1), np.float32))
    with pytest.raises(TypeError, match="float"):
        latent.reconstruct(model, digits[:2].astype(np.uint8))
    with pytest.raises(ValueError, match="fractions"):
        latent.compression(model, digits[:1], fractions=(1.5,))
