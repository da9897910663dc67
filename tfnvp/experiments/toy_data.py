"""Toy densities for flow experiments: deterministic float32 numpy samplers (numpy only).

Every sampler has the signature ``sampler(n, seed=0, **options)`` and returns a
float32 array, of shape ``(n, 2)`` for the 2-D densities and ``(n,)`` for
`gaussian_mixture_1d`; the same ``(n, seed, options)`` always gives the same
array. The Gaussian mixtures also have an exact ``*_log_prob`` so that the true
differential entropy ``H = -E[log p(x)]`` can be estimated on held-out samples
as ``-mean(log_prob(x))``. `SAMPLERS` maps names to samplers and `get_sampler`
looks them up.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = [
    "SAMPLERS",
    "checkerboard",
    "gaussian_mixture_1d",
    "gaussian_mixture_1d_log_prob",
    "gaussian_mixture_2d",
    "gaussian_mixture_2d_log_prob",
    "get_sampler",
    "rings",
    "two_moons",
]

# Default 1-D mixture: three unequal, well separated components.
MIXTURE_1D_MEANS = (-2.0, 0.5, 2.5)
MIXTURE_1D_SCALES = (0.6, 0.4, 0.8)
MIXTURE_1D_WEIGHTS = (0.3, 0.45, 0.25)


def two_moons(n: int, seed: int = 0, noise: float = 0.1) -> np.ndarray:
    """Two interleaving half circles plus isotropic Gaussian noise of std ``noise``.

    Upper moon: ``(cos t, sin t)``; lower moon: ``(1 - cos t, 0.5 - sin t)``,
    ``t ~ U[0, π]``, each point on either moon with probability 1/2. Without
    noise the points lie in ``[-1, 2] x [-0.5, 1]``.
    """
    rng = np.random.default_rng(seed)
    t = rng.uniform(0.0, np.pi, size=n)
    lower = rng.random(n) < 0.5
    x = np.where(lower, 1.0 - np.cos(t), np.cos(t))
    y = np.where(lower, 0.5 - np.sin(t), np.sin(t))
    points = np.stack([x, y], axis=1) + noise * rng.standard_normal((n, 2))
    return points.astype(np.float32)


def rings(
    n: int, seed: int = 0, radii: tuple[float, ...] = (1.0, 2.0, 3.0), noise: float = 0.08
) -> np.ndarray:
    """Concentric circles centred at the origin, with Gaussian noise of std ``noise``.

    Each point picks a radius from ``radii`` uniformly at random and an angle
    uniformly in ``[0, 2π)``.
    """
    rng = np.random.default_rng(seed)
    r = np.asarray(radii, dtype=np.float64)[rng.integers(len(radii), size=n)]
    angle = rng.uniform(0.0, 2.0 * np.pi, size=n)
    points = r[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return (points + noise * rng.standard_normal((n, 2))).astype(np.float32)


def checkerboard(n: int, seed: int = 0) -> np.ndarray:
    """Uniform density on the 8 "black" unit-2 squares of a 4x4 board on ``[-4, 4]²``.

    A square ``[2i - 4, 2i - 2) x [2j - 4, 2j - 2)`` is black iff ``i + j`` is
    even; the density is 1/32 on black squares and 0 elsewhere.
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(-4.0, 4.0, size=n)
    column = np.floor((x + 4.0) / 2.0)
    # Pick one of the two black rows j in {0..3} with i + j even, then a point in it.
    row = 2.0 * rng.integers(2, size=n) + column % 2
    y = 2.0 * row - 4.0 + rng.uniform(0.0, 2.0, size=n)
    return np.stack([x, y], axis=1).astype(np.float32)


def _mixture_2d_params(
    num_components: int, radius: float, scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    angle = 2.0 * np.pi * np.arange(num_components) / num_components
    means = radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    weights = np.full(num_components, 1.0 / num_components)
    return means, np.full(num_components, float(scale)), weights


def _mixture_sample(
    n: int, seed: int, means: np.ndarray, scales: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Samples an isotropic Gaussian mixture; ``means`` is ``[K, d]``."""
    rng = np.random.default_rng(seed)
    component = rng.choice(len(weights), size=n, p=weights)
    noise = rng.standard_normal((n, means.shape[1]))
    return (means[component] + scales[component, None] * noise).astype(np.float32)


def _mixture_log_prob(
    x: np.ndarray, means: np.ndarray, scales: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Exact log density (float64) of an isotropic Gaussian mixture at ``x`` ``[n, d]``."""
    d = means.shape[1]
    sq_dist = np.sum((x[:, None, :] - means[None]) ** 2, axis=-1)  # [n, K]
    log_normal = -0.5 * sq_dist / scales**2 - d * np.log(scales) - 0.5 * d * np.log(2.0 * np.pi)
    return np.logaddexp.reduce(log_normal + np.log(weights), axis=1)


def _mixture_1d_params(
    means: tuple[float, ...], scales: tuple[float, ...], weights: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    means_, scales_, weights_ = (np.asarray(v, dtype=np.float64) for v in (means, scales, weights))
    if not (means_.shape == scales_.shape == weights_.shape and means_.ndim == 1):
        raise ValueError("`means`, `scales` and `weights` must be 1-D of equal length.")
    if np.any(scales_ <= 0) or np.any(weights_ < 0) or not np.isclose(weights_.sum(), 1.0):
        raise ValueError("`scales` must be > 0 and `weights` a probability vector.")
    return means_[:, None], scales_, weights_


def gaussian_mixture_1d(
    n: int,
    seed: int = 0,
    means: tuple[float, ...] = MIXTURE_1D_MEANS,
    scales: tuple[float, ...] = MIXTURE_1D_SCALES,
    weights: tuple[float, ...] = MIXTURE_1D_WEIGHTS,
) -> np.ndarray:
    """1-D Gaussian mixture ``Σ_k w_k N(μ_k, σ_k²)``; returns shape ``(n,)``."""
    return _mixture_sample(n, seed, *_mixture_1d_params(means, scales, weights))[:, 0]


def gaussian_mixture_1d_log_prob(
    x: np.ndarray,
    means: tuple[float, ...] = MIXTURE_1D_MEANS,
    scales: tuple[float, ...] = MIXTURE_1D_SCALES,
    weights: tuple[float, ...] = MIXTURE_1D_WEIGHTS,
) -> np.ndarray:
    """Exact log density (float64) of `gaussian_mixture_1d` at ``x`` (any shape)."""
    x = np.asarray(x, dtype=np.float64)
    flat = _mixture_log_prob(x.reshape(-1, 1), *_mixture_1d_params(means, scales, weights))
    return flat.reshape(x.shape)


def gaussian_mixture_2d(
    n: int, seed: int = 0, num_components: int = 8, radius: float = 2.0, scale: float = 0.5
) -> np.ndarray:
    """Equal-weight mixture of ``num_components`` isotropic Gaussians (std ``scale``)
    with means equally spaced on the circle of radius ``radius``; shape ``(n, 2)``."""
    return _mixture_sample(n, seed, *_mixture_2d_params(num_components, radius, scale))


def gaussian_mixture_2d_log_prob(
    x: np.ndarray, num_components: int = 8, radius: float = 2.0, scale: float = 0.5
) -> np.ndarray:
    """Exact log density (float64) of `gaussian_mixture_2d` at ``x`` ``(n, 2)``."""
    x = np.asarray(x, dtype=np.float64)
    return _mixture_log_prob(x, *_mixture_2d_params(num_components, radius, scale))


#: The toy distributions' samplers by name (``get_sampler`` looks a name up).
SAMPLERS: dict[str, Callable[..., np.ndarray]] = {
    "two_moons": two_moons,
    "rings": rings,
    "gaussian_mixture_2d": gaussian_mixture_2d,
    "checkerboard": checkerboard,
    "gaussian_mixture_1d": gaussian_mixture_1d,
}


def get_sampler(name: str) -> Callable[..., np.ndarray]:
    """Returns ``SAMPLERS[name]``; unknown names raise ValueError listing the valid ones."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(
            f"Unknown toy dataset {name!r}; expected one of {sorted(SAMPLERS)}."
        ) from None
