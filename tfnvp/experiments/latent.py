"""The paper's latent-space experiments (Real NVP, section 5 and appendices B-D).

Every function takes a *latent model*: any object with

* ``image_shape``: the ``(H, W, C)`` it was trained on,
* ``encode(x)``: float images ``[N, H, W, C]`` in ``[0, 256)`` -> latents ``z``
  of the same shape,
* ``decode(z)``: the inverse,
* ``latent_scale_index(image_shape)`` (only ``compression``): integer array of
  the latent's shape, the scale (0 finest ... ``L - 1`` coarsest) at which
  each entry left the flow.

``tfnvp.RealNVP`` is one; ``trainers/visualize.py`` adapts a SavedModel
export.  Results are small dataclasses holding float images in model space
(``[0, 256)``, the model's dtype) for checks, and a ``grid()`` method that
tiles them into a uint8 ``[H', W', C']`` picture for ``tfnvp.grid.save_png``.
Decoded latents that the model finds unlikely can fall slightly outside
``[0, 256)`` (the symmetric inverse logit ranges over ``256 (-alpha, 1 -
alpha) / (1 - 2 alpha)``): the arrays keep the exact values, the grids clip
them.

Randomness is stateless: ``seed`` is an int or a pair of ints, and the same
seed gives the same pictures.

Example::

    model = tfnvp.RealNVP((28, 28, 1), num_scales=2, num_res_blocks=2, hidden_channels=32)
    figure = tfnvp.latent.manifold(model, images[:4], n=9)
    tfnvp.grid.save_png(figure.grid(), "manifold.png", scale=3)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
import tensorflow as tf

from tfnvp.experiments import grid as grid_lib
from tfnvp import validation

__all__ = [
    "LatentModel", "TemperatureSamples", "Manifold", "Compression", "Extrapolation",
    "Interpolation", "Reconstruction", "temperature_samples", "manifold", "compression",
    "compression_order", "num_kept", "extrapolate", "interpolate", "reconstruct", "slerp",
]

Seed = Any  # int, pair of ints, or an int tensor of shape [2]

# Images go through encode/decode in chunks of this many, to bound memory.
_BATCH = 64


@runtime_checkable
class LatentModel(Protocol):
    """What the functions of this module need from a model (see the module docstring)."""

    image_shape: tuple[int, int, int]

    def encode(self, x): ...

    def decode(self, z): ...


# ---------------------------------------------------------------------- helpers
def _seed(seed: Seed, stream: int = 0) -> tf.Tensor:
    """A stateless seed ``[2]`` (see ``validation.check_seed``); ``stream`` separates
    independent uses of one seed."""
    seed = tf.cast(validation.check_seed(seed), tf.int64)
    return seed + tf.constant([0, stream], tf.int64) if stream else seed


def _normal(shape: Sequence[int], seed: Seed, stream: int = 0) -> np.ndarray:
    return tf.random.stateless_normal(list(shape), seed=_seed(seed, stream),
                                      dtype=tf.float64).numpy()


def _apply(fn, arrays: np.ndarray, dtype=np.float32) -> np.ndarray:
    """``fn`` over ``arrays [N, H, W, C]`` in chunks of ``_BATCH``; numpy out."""
    arrays = np.asarray(arrays)
    if not len(arrays):
        return np.asarray(fn(tf.zeros((1,) + arrays.shape[1:], dtype)))[:0]
    outputs = [np.asarray(fn(tf.constant(arrays[k:k + _BATCH], dtype)))
               for k in range(0, len(arrays), _BATCH)]
    return np.concatenate(outputs, axis=0)


def _dtype(model) -> np.dtype:
    """The float dtype the model computes in (float32 unless it says otherwise)."""
    flow_dtype = getattr(model, "flow_dtype", None)
    return np.dtype(flow_dtype.as_numpy_dtype) if flow_dtype is not None else np.dtype(np.float32)


def _images(model, images, what: str, count: int | None = None) -> np.ndarray:
    """Checks float images ``[N, H, W, C]`` of the model's shape."""
    images = np.asarray(images)
    expected = tuple(model.image_shape)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise ValueError(f"{what}: expected images of shape [N, {', '.join(map(str, expected))}], "
                         f"got {images.shape}.")
    if count is not None and len(images) != count:
        raise ValueError(f"{what}: expected exactly {count} images, got {len(images)}.")
    if not np.issubdtype(images.dtype, np.floating):
        raise TypeError(f"{what}: expected float pixel values in [0, 256), got dtype "
                        f"{images.dtype}; for 8-bit images use e.g. images + 0.5.")
    return images.astype(_dtype(model))


def _encode(model, x: np.ndarray) -> np.ndarray:
    return _apply(model.encode, x, _dtype(model)).astype(np.float64)


def _decode(model, z: np.ndarray) -> np.ndarray:
    return _apply(model.decode, z, _dtype(model))


def _tile(cells: np.ndarray, padding: int, marked: Sequence[tuple[int, int]] = (),
          mark_color: Sequence[int] = (255, 0, 0)) -> np.ndarray:
    """``cells [R, K, H, W, C]`` -> uint8 grid; ``marked`` cells get a coloured frame.

    The frame is the padding ring around the cell (``padding`` pixels wide);
    grayscale grids become RGB when anything is marked.
    """
    rows, cols, h, w, c = cells.shape
    picture = grid_lib.image_grid(cells.reshape((rows * cols, h, w, c)), rows=rows,
                                  padding=padding)
    if marked:
        if padding < 1:
            raise ValueError("Marking cells needs padding >= 1.")
        if c == 1:
            picture = np.repeat(picture, 3, axis=-1)
        color = np.asarray(mark_color, np.uint8)
        for r, k in marked:
            top, left = r * (h + padding), k * (w + padding)
            bottom, right = top + h + 2 * padding, left + w + 2 * padding
            picture[top:top + padding, left:right] = color
            picture[bottom - padding:bottom, left:right] = color
            picture[top:bottom, left:left + padding] = color
            picture[top:bottom, right - padding:right] = color
    return picture


def _side_by_side(pictures: Sequence[np.ndarray], gap: int, pad_value: int = 255) -> np.ndarray:
    """Concatenates uint8 pictures of equal height horizontally, ``gap`` pixels apart."""
    height, channels = pictures[0].shape[0], pictures[0].shape[-1]
    spacer = np.full((height, gap, channels), pad_value, np.uint8)
    parts = []
    for k, picture in enumerate(pictures):
        parts += ([spacer] if k else []) + [picture]
    return np.concatenate(parts, axis=1)


# ------------------------------------------------------------------ temperature
@dataclasses.dataclass(frozen=True)
class TemperatureSamples:
    """Samples ``decode(T * eps)`` for each temperature ``T``, the same ``eps`` for all.

    ``images``: ``[len(temperatures), n, H, W, C]``.
    """

    temperatures: tuple[float, ...]
    images: np.ndarray

    def grid(self, padding: int = 1, gap: int = 4) -> np.ndarray:
        """One near-square block per temperature, blocks side by side (coolest left)."""
        return _side_by_side([grid_lib.image_grid(block, padding=padding) for block in self.images],
                             gap)


def temperature_samples(model: LatentModel, temperatures: Sequence[float] = (0.5, 0.7, 0.85, 1.0),
                        n: int = 16, seed: Seed = 0) -> TemperatureSamples:
    """``n`` samples at each temperature, ``z ~ N(0, T^2 I)`` (section 5, Figure 5).

    The same standard-normal ``eps`` is scaled by every ``T``, so block ``k``'s
    ``i``-th image is the same sample at another temperature.
    """
    temperatures = tuple(float(t) for t in temperatures)
    if not temperatures or min(temperatures) < 0:
        raise ValueError(f"temperatures must be non-empty and non-negative, got {temperatures}.")
    if n < 1:
        raise ValueError(f"n must be positive, got {n}.")
    eps = _normal((n,) + tuple(model.image_shape), seed)
    z = np.concatenate([t * eps for t in temperatures], axis=0)
    images = _decode(model, z).reshape((len(temperatures), n) + tuple(model.image_shape))
    return TemperatureSamples(temperatures, images)


# --------------------------------------------------------------------- manifold
@dataclasses.dataclass(frozen=True)
class Manifold:
    """Decoded points of the 2-d manifold of eq. (14): ``images[i, j]`` at ``(phi_i, phi'_j)``.

    The corners ``[0, 0]``, ``[0, -1]``, ``[-1, 0]``, ``[-1, -1]`` decode
    ``z_1``, ``z_2``, ``z_3``, ``z_4``: the four source images.
    """

    angles: np.ndarray
    images: np.ndarray
    sources: np.ndarray

    @property
    def corners(self) -> tuple[tuple[int, int], ...]:
        n = len(self.angles)
        return ((0, 0), (0, n - 1), (n - 1, 0), (n - 1, n - 1))

    def grid(self, padding: int = 2, mark_color: Sequence[int] = (255, 0, 0)) -> np.ndarray:
        """The ``n x n`` grid (rows: ``phi``, columns: ``phi'``), source corners framed."""
        return _tile(self.images, padding, self.corners, mark_color)


def _quarter_circle(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` angles ``0 .. pi/2`` and their cos/sin, exactly 1 and 0 at the ends."""
    k = np.arange(n)
    angles = k * (np.pi / (2 * (n - 1)))
    cos, sin = np.cos(angles), np.sin(angles)
    cos[-1], sin[0], sin[-1] = 0.0, 0.0, 1.0
    return angles, cos, sin


def manifold(model: LatentModel, images, n: int = 9) -> Manifold:
    """The manifold spanned by four images' latents (appendix B, eq. 14).

    ``z = cos(phi) (cos(phi') z1 + sin(phi') z2) + sin(phi) (cos(phi') z3 + sin(phi') z4)``
    for ``phi, phi'`` in ``{0, pi/(2(n-1)), ..., pi/2}``, decoded into an
    ``n x n`` grid.
    """
    if n < 2:
        raise ValueError(f"n must be at least 2 (both ends of [0, pi/2]), got {n}.")
    sources = _images(model, images, "manifold", count=4)
    z1, z2, z3, z4 = _encode(model, sources)
    angles, cos, sin = _quarter_circle(n)
    c, s = cos[:, None], sin[:, None]  # phi along rows
    cp, sp = cos[None, :], sin[None, :]  # phi' along columns
    expand = (slice(None), slice(None), None, None, None)
    z = ((c * cp)[expand] * z1 + (c * sp)[expand] * z2
         + (s * cp)[expand] * z3 + (s * sp)[expand] * z4)
    decoded = _decode(model, z.reshape((n * n,) + z1.shape)).reshape((n, n) + z1.shape)
    return Manifold(angles, decoded, sources)


# ------------------------------------------------------------------ compression
def _interlaced_rank(height: int, width: int) -> np.ndarray:
    """Rank ``[H, W]`` of each position in bit-reversed Morton (interlaced) order.

    Positions come coarse lattice first: every ``2^k``-th row and column, then
    the positions halfway between, and so on (like Adam7 interlacing), so any
    prefix of the order is spread over the whole image.
    """
    bits = max(1, math.ceil(math.log2(max(height, width))))
    i, j = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    key = np.zeros_like(i)
    # Least significant coordinate bits become the most significant key bits;
    # at each level the row bit outranks the column bit.
    for b in range(bits):
        key |= ((i >> b) & 1) << (2 * bits - 1 - 2 * b)
        key |= ((j >> b) & 1) << (2 * bits - 2 - 2 * b)
    return key


def compression_order(scale_index: np.ndarray) -> np.ndarray:
    """Flat (C-order) indices of the latent entries, most important first.

    Order: coarsest scale first (descending ``scale_index``); inside a scale,
    positions in interlaced order (``_interlaced_rank``: a prefix is a
    lattice covering the image, not its top rows); at one position, channels
    in order.  Keeping the first ``m`` entries therefore keeps whole coarser
    scales, then an evenly spread subset of the first partially kept one.

    With ``RealNVP``'s checkerboard factor-out each scale's entries are
    lattices: the finest scale one checkerboard colour, the coarser ones
    the quincunx of the other colour, sub-sampled again at each scale (the
    coarse latents are a sub-sampled image, appendix D).  The interlaced
    order takes a sub-lattice of each first: e.g. keeping 1/4 of a two-scale
    model's latents keeps every other row and column.
    """
    scale_index = np.asarray(scale_index)
    if scale_index.ndim != 3:
        raise ValueError(f"scale_index must have shape [H, W, C], got {scale_index.shape}.")
    h, w, c = scale_index.shape
    position = np.broadcast_to(_interlaced_rank(h, w)[:, :, None], (h, w, c))
    channel = np.broadcast_to(np.arange(c)[None, None, :], (h, w, c))
    # np.lexsort sorts by its last key first.
    return np.lexsort((channel.ravel(), position.ravel(), -scale_index.ravel()))


def num_kept(fraction: float, num_latents: int) -> int:
    """How many latents ``compression`` keeps: ``fraction * D`` rounded half up."""
    return int(math.floor(fraction * num_latents + 0.5))


@dataclasses.dataclass(frozen=True)
class Compression:
    """``images[i, k]``: image ``i`` keeping ``fractions[k]`` of its latents.

    ``kept[k]`` (bool, the latent's shape) marks the kept entries, the same
    for every image; ``num_kept[k]`` is their number.
    """

    fractions: tuple[float, ...]
    num_kept: tuple[int, ...]
    kept: np.ndarray
    images: np.ndarray
    originals: np.ndarray

    def grid(self, padding: int = 1, with_originals: bool = True) -> np.ndarray:
        """One row per image; columns: the original (optional), then each fraction."""
        cells = self.images
        if with_originals:
            cells = np.concatenate([self.originals[:, None].astype(cells.dtype), cells], axis=1)
        return _tile(cells, padding)


def compression(model: LatentModel, images, fractions: Sequence[float] = (1, .5, .25, .125, .0625),
                seed: Seed = 0, temperature: float = 1.0,
                scale_index: np.ndarray | None = None) -> Compression:
    """Conceptual compression (appendix D): keep the coarsest latents, resample the rest.

    For each fraction ``f``, the first ``num_kept(f, D)`` entries of
    ``compression_order`` keep the image's latent values; the others are
    drawn from ``N(0, temperature^2 I)`` (independently per image and
    fraction) and the result is decoded.  ``scale_index`` defaults to
    ``model.latent_scale_index(model.image_shape)``.
    """
    fractions = tuple(float(f) for f in fractions)
    if not fractions or any(not 0.0 <= f <= 1.0 for f in fractions):
        raise ValueError(f"fractions must lie in [0, 1], got {fractions}.")
    originals = _images(model, images, "compression")
    shape = tuple(model.image_shape)
    if scale_index is None:
        scale_index = model.latent_scale_index(shape)
    scale_index = np.asarray(scale_index)
    if scale_index.shape != shape:
        raise ValueError(f"scale_index has shape {scale_index.shape}, expected {shape}.")
    order = compression_order(scale_index)
    size = int(np.prod(shape))
    counts = tuple(num_kept(f, size) for f in fractions)
    kept = np.zeros((len(fractions), size), bool)
    for k, count in enumerate(counts):
        kept[k, order[:count]] = True
    kept = kept.reshape((len(fractions),) + shape)
    z = _encode(model, originals)
    noise = temperature * _normal((len(originals), len(fractions)) + shape, seed)
    mixed = np.where(kept[None], z[:, None], noise)
    decoded = _decode(model, mixed.reshape((-1,) + shape)).reshape(mixed.shape)
    return Compression(fractions, counts, kept, decoded, originals)


# ------------------------------------------------------------------ extrapolate
@dataclasses.dataclass(frozen=True)
class Extrapolation:
    """``images [n, factor*H, factor*W, C]``: samples larger than the training images."""

    factor: int
    temperature: float
    images: np.ndarray

    def grid(self, padding: int = 1) -> np.ndarray:
        return grid_lib.image_grid(self.images, padding=padding)


def extrapolate(model: LatentModel, factor: int = 2, n: int = 4, temperature: float = 1.0,
                seed: Seed = 0) -> Extrapolation:
    """Samples at ``factor`` times the training height and width (appendix C).

    The same weights decode ``temperature * eps`` with ``eps`` of the larger
    shape (what ``RealNVP.sample(image_shape=...)`` does); the model's
    ``decode`` must accept that shape.
    """
    if int(factor) != factor or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}.")
    if temperature < 0 or n < 1:
        raise ValueError(f"need n >= 1 and temperature >= 0, got n={n}, temperature={temperature}.")
    h, w, c = model.image_shape
    shape = (int(factor) * h, int(factor) * w, c)
    z = temperature * _normal((n,) + shape, seed)
    return Extrapolation(int(factor), float(temperature), _decode(model, z))


# ------------------------------------------------------------------ interpolate
def slerp(z_a: np.ndarray, z_b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Great-circle interpolation: ``[len(t), *z.shape]``.

    The direction moves along the great circle from ``z_a/|z_a|`` to
    ``z_b/|z_b|`` at constant angular speed and the norm is interpolated
    linearly, so every point stays near the Gaussian's typical shell (a
    straight line would pass through its low-norm, atypical interior).
    ``t = 0`` and ``t = 1`` give ``z_a`` and ``z_b`` (up to rounding).
    """
    z_a, z_b = np.asarray(z_a, np.float64), np.asarray(z_b, np.float64)
    t = np.asarray(t, np.float64).reshape((-1,) + (1,) * z_a.ndim)
    norm_a, norm_b = np.linalg.norm(z_a), np.linalg.norm(z_b)
    if norm_a == 0 or norm_b == 0:
        return (1 - t) * z_a + t * z_b
    u_a, u_b = z_a / norm_a, z_b / norm_b
    omega = np.arccos(np.clip(np.sum(u_a * u_b), -1.0, 1.0))
    if np.sin(omega) < 1e-6:  # (anti)parallel: the great circle is not unique
        direction = (1 - t) * u_a + t * u_b
    else:
        direction = (np.sin((1 - t) * omega) * u_a + np.sin(t * omega) * u_b) / np.sin(omega)
    return ((1 - t) * norm_a + t * norm_b) * direction


@dataclasses.dataclass(frozen=True)
class Interpolation:
    """``images [steps, H, W, C]`` decoded at ``t`` along ``slerp(z_a, z_b, t)``."""

    t: np.ndarray
    images: np.ndarray

    def grid(self, padding: int = 1) -> np.ndarray:
        return grid_lib.image_grid(self.images, rows=1, padding=padding)


def interpolate(model: LatentModel, image_a, image_b, steps: int = 8) -> Interpolation:
    """Interpolates two images along a great circle in latent space (see ``slerp``).

    ``steps`` points, ``t = 0 .. 1`` inclusive, so the first and last images
    reproduce ``image_a`` and ``image_b``.
    """
    if steps < 2:
        raise ValueError(f"steps must be at least 2 (both endpoints), got {steps}.")
    pair = _images(model, np.stack([np.asarray(image_a), np.asarray(image_b)]), "interpolate")
    z_a, z_b = _encode(model, pair)
    t = np.linspace(0.0, 1.0, steps)
    z = slerp(z_a, z_b, t)
    z[0], z[-1] = z_a, z_b
    return Interpolation(t, _decode(model, z))


# ------------------------------------------------------------------ reconstruct
@dataclasses.dataclass(frozen=True)
class Reconstruction:
    """``decode(encode(x))`` next to ``x``; ``max_abs_error`` in pixel levels."""

    originals: np.ndarray
    reconstructions: np.ndarray
    max_abs_error: float

    def grid(self, padding: int = 1) -> np.ndarray:
        """Originals in the top row, reconstructions below."""
        return _tile(np.stack([self.originals.astype(self.reconstructions.dtype),
                               self.reconstructions]), padding)


def reconstruct(model: LatentModel, images) -> Reconstruction:
    """Encodes then decodes ``images``: the flow is exactly invertible (section 3)."""
    originals = _images(model, images, "reconstruct")
    reconstructions = _decode(model, _encode(model, originals))
    error = float(np.max(np.abs(reconstructions.astype(np.float64) - originals))) if len(
        originals) else 0.0
    return Reconstruction(originals, reconstructions, error)
