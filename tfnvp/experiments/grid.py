"""Image grids and PNG files for samples and latent-space pictures."""

from __future__ import annotations

import os
import tempfile
from typing import Sequence

import numpy as np

__all__ = ["grid_shape", "image_grid", "save_png", "to_uint8"]


def to_uint8(images) -> np.ndarray:
    """Model-space pixels in ``[0, 256)`` -> uint8 (floor, clipped to 0..255)."""
    return np.clip(np.floor(np.asarray(images, dtype=np.float64)), 0, 255).astype(np.uint8)


def image_grid(images, rows: int | None = None, padding: int = 1,
               pad_value: int = 255) -> np.ndarray:
    """Tiles ``[N, H, W, C]`` images (uint8 or floats in [0, 256)) into one image.

    ``rows`` defaults to a near-square layout; missing cells stay ``pad_value``.
    Returns uint8 ``[rows*(H+p)+p, cols*(W+p)+p, C]``.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"Expected images of shape [N, H, W, C], got {images.shape}.")
    if images.dtype != np.uint8:
        images = to_uint8(images)
    n, h, w, c = images.shape
    rows, cols = grid_shape(n, rows)
    grid = np.full((rows * (h + padding) + padding, cols * (w + padding) + padding, c),
                   pad_value, dtype=np.uint8)
    for k in range(n):
        r, col = divmod(k, cols)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[top:top + h, left:left + w] = images[k]
    return grid


def save_png(image: np.ndarray, path: str | os.PathLike, scale: int = 1) -> str:
    """Writes an ``[H, W, C]`` uint8 image (C = 1 or 3) atomically; returns the path.

    ``scale`` enlarges small images (nearest neighbour) so pixels stay visible.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] not in (1, 3) or image.dtype != np.uint8:
        raise ValueError(f"Expected a uint8 [H, W, 1 or 3] image, got {image.dtype} {image.shape}.")
    if scale > 1:
        image = image.repeat(scale, axis=0).repeat(scale, axis=1)
    try:
        from PIL import Image  # Pillow comes with the trainer's extra, not the library.
    except ImportError as error:
        raise ImportError("tfnvp.grid.save_png needs Pillow: pip install pillow "
                          "(or tfnvp[train]).") from error
    picture = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=directory)
    os.close(fd)
    try:
        picture.save(tmp, format="PNG")
        # mkstemp creates the file readable by its owner only; give it the
        # permissions an ordinary new file gets (0666 less the umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def grid_shape(num_images: int, rows: int | None = None) -> Sequence[int]:
    """``(rows, cols)`` that ``image_grid`` uses for ``num_images``."""
    rows = rows or max(1, int(np.floor(np.sqrt(num_images))))
    return rows, int(np.ceil(num_images / rows))
