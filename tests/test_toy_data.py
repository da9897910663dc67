"""Tests for tfnvp.toy_data against independent (scipy / geometric) computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from tfnvp.experiments import toy_data

N = 20_000
EXPECTED_DIM = {
    "two_moons": 2,
    "rings": 2,
    "gaussian_mixture_2d": 2,
    "checkerboard": 2,
    "gaussian_mixture_1d": 1,
}


def test_registry_names() -> None:
    assert set(toy_data.SAMPLERS) == set(EXPECTED_DIM)


@pytest.mark.parametrize("name", sorted(EXPECTED_DIM))
def test_shape_dtype_and_determinism(name: str) -> None:
    sampler = toy_data.get_sampler(name)
    a, b, c = sampler(500, seed=3), sampler(500, seed=3), sampler(500, seed=4)
    expected_shape = (500,) if EXPECTED_DIM[name] == 1 else (500, EXPECTED_DIM[name])
    assert a.shape == expected_shape and a.dtype == np.float32
    assert np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="nope") as info:
        toy_data.get_sampler("nope")
    assert all(name in str(info.value) for name in EXPECTED_DIM)


def test_two_moons_geometry() -> None:
    x = toy_data.two_moons(N, seed=0, noise=0.0).astype(np.float64)
    on_upper = np.isclose(np.hypot(x[:, 0], x[:, 1]), 1.0, atol=1e-5) & (x[:, 1] >= -1e-6)
    on_lower = np.isclose(np.hypot(x[:, 0] - 1.0, x[:, 1] - 0.5), 1.0, atol=1e-5) & (
        x[:, 1] <= 0.5 + 1e-6
    )
    assert np.all(on_upper | on_lower)
    assert abs(on_upper.mean() - 0.5) < 0.02
    noisy = toy_data.two_moons(N, seed=0)  # noise 0.1: within 6 sigma of the clean box
    assert noisy[:, 0].min() > -1.6 and noisy[:, 0].max() < 2.6
    assert noisy[:, 1].min() > -1.1 and noisy[:, 1].max() < 1.6


def test_rings_geometry() -> None:
    radii = (1.0, 2.0, 3.0)
    clean = np.hypot(*toy_data.rings(N, seed=0, radii=radii, noise=0.0).T.astype(np.float64))
    distance_to_ring = np.min(np.abs(clean[:, None] - np.array(radii)), axis=1)
    np.testing.assert_allclose(distance_to_ring, 0.0, atol=1e-5)
    counts = np.array([np.sum(np.isclose(clean, r, atol=1e-5)) for r in radii])
    np.testing.assert_allclose(counts / N, 1.0 / 3.0, atol=0.02)
    noisy = np.hypot(*toy_data.rings(N, seed=0).T)  # noise 0.08: within 6 sigma of a ring
    assert np.all(np.min(np.abs(noisy[:, None] - np.array(radii)), axis=1) < 0.5)


def test_checkerboard_support_and_uniformity() -> None:
    x = toy_data.checkerboard(N, seed=0)
    assert np.all(np.abs(x) <= 4.0)
    i, j = (np.floor((x.astype(np.float64) + 4.0) / 2.0).astype(int)).T
    assert np.all((i + j) % 2 == 0)
    black = (np.add.outer(np.arange(4), np.arange(4)) % 2 == 0).ravel()
    counts = np.bincount(4 * i + j, minlength=16)[black]
    np.testing.assert_allclose(counts / N, 1.0 / 8.0, atol=0.01)


def test_mixture_1d_log_prob_matches_scipy_and_normalizes() -> None:
    means = np.array(toy_data.MIXTURE_1D_MEANS)
    scales = np.array(toy_data.MIXTURE_1D_SCALES)
    weights = np.array(toy_data.MIXTURE_1D_WEIGHTS)
    grid = np.linspace(-12.0, 12.0, 24_001)
    pdfs = [w * stats.norm.pdf(grid, m, s) for m, s, w in zip(means, scales, weights)]
    expected = np.log(np.sum(pdfs, axis=0))
    log_p = toy_data.gaussian_mixture_1d_log_prob(grid)
    np.testing.assert_allclose(log_p, expected, rtol=1e-10, atol=1e-10)
    assert abs(integrate.trapezoid(np.exp(log_p), grid) - 1.0) < 1e-6
    # Sampler and density agree: moments, and entropy by quadrature vs Monte Carlo.
    x = toy_data.gaussian_mixture_1d(N, seed=1).astype(np.float64)
    mean = weights @ means
    var = weights @ (scales**2 + means**2) - mean**2
    assert abs(x.mean() - mean) < 4 * np.sqrt(var / N)
    assert abs(x.var() / var - 1.0) < 0.05
    entropy = -integrate.trapezoid(np.exp(log_p) * log_p, grid)
    log_p_x = toy_data.gaussian_mixture_1d_log_prob(x)
    assert abs(-log_p_x.mean() - entropy) < 4 * log_p_x.std() / np.sqrt(N)


def test_mixture_1d_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="weights"):
        toy_data.gaussian_mixture_1d(10, weights=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="equal length"):
        toy_data.gaussian_mixture_1d_log_prob(np.zeros(3), means=(0.0, 1.0))


def test_mixture_2d_log_prob_matches_scipy_and_normalizes() -> None:
    angles = 2 * np.pi * np.arange(8) / 8
    means = 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    axis = np.linspace(-6.0, 6.0, 601)
    grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
    log_p = toy_data.gaussian_mixture_2d_log_prob(grid)
    pdfs = [stats.multivariate_normal.pdf(grid, m, 0.5**2) for m in means]
    expected = np.log(np.mean(pdfs, axis=0))
    np.testing.assert_allclose(log_p, expected, rtol=1e-10, atol=1e-10)
    step = axis[1] - axis[0]
    assert abs(np.exp(log_p).sum() * step**2 - 1.0) < 1e-4
    # Samples: mean ~ 0 and each component (nearest mean) gets ~1/8 of the points.
    x = toy_data.gaussian_mixture_2d(N, seed=2).astype(np.float64)
    # Per-coordinate variance σ² + R²/2 = 2.25.
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=4 * np.sqrt(2.25 / N))
    nearest = np.argmin(np.linalg.norm(x[:, None] - means[None], axis=-1), axis=1)
    np.testing.assert_allclose(np.bincount(nearest, minlength=8) / N, 1 / 8, atol=0.015)
