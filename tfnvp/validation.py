"""Input checks with errors that name the problem.

Static properties (rank, shape, dtype) are always checked: that costs
nothing.  Value checks (NaN, pixel range) follow TFP's ``validate_args``
convention: on in the user-facing methods, free to be off inside a compiled
training step.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

__all__ = ["check_image_shape", "check_images", "check_latents", "check_seed",
           "check_uint8_images", "require"]


def require(condition: tf.Tensor, template: str, *values: tf.Tensor) -> tf.Operation:
    """Asserts ``condition`` at run time (a value check of a traced or exported function).

    Its error's message is ``template`` formatted with the runtime ``values``
    (``tf.strings.format``), e.g. ``assertion failed: [labels: expected shape [4]
    (one label per input), got shape [1]]``: the argument, what is expected and what
    was given, on the status message's first line.  Use it under
    ``tf.control_dependencies`` of what the check guards.
    """
    return tf.debugging.Assert(condition, [tf.strings.format(template, values, summarize=8)])


def check_image_shape(shape: tuple[int, ...], channels: int, squeezes: int) -> None:
    """Raises ``ValueError`` unless ``shape`` is ``(H, W, channels)`` with ``H`` and ``W``
    divisible by ``2**squeezes`` (a flow that halves the resolution ``squeezes`` times)."""
    if len(shape) != 3:
        raise ValueError(f"Expected an image shape (height, width, channels), got {shape}.")
    if shape[-1] != channels:
        raise ValueError(f"Expected images with {channels} channels, got shape {shape}.")
    factor = 2 ** squeezes
    if shape[0] % factor or shape[1] % factor:
        raise ValueError(f"Image height and width must be divisible by {factor} (the flow "
                         f"halves them {squeezes} times), got shape {shape}.")


def _check_event(x: tf.Tensor, what: str, channels: int, squeezes: int) -> None:
    if x.shape.rank is None or x.shape.rank < 3:
        raise ValueError(f"Expected {what} of shape [..., height, width, channels], "
                         f"got rank {x.shape.rank} with shape {x.shape}.")
    event = tuple(x.shape[-3:])
    if None in event:
        raise ValueError(f"The height, width and channels of {what} must be known, got {x.shape}.")
    check_image_shape(event, channels, squeezes)


def check_images(x, dtype: tf.DType, channels: int, validate_args: bool,
                 squeezes: int) -> tf.Tensor:
    """Checks float images in ``[0, 256)``; returns them as a ``dtype`` tensor."""
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise TypeError(
            f"Expected float pixel values in [0, 256) (dequantized), got dtype {x.dtype.name}; "
            "use bits_per_dim() for 8-bit images, which dequantizes them.")
    _check_event(x, "images", channels, squeezes)
    # A fresh tensor: TFP caches bijector results by input tensor, which would
    # return results from before a weight update for a reused eager tensor.
    x = tf.identity(tf.cast(x, dtype))
    if validate_args:
        tf.debugging.assert_all_finite(x, "pixel values contain NaN or Inf")
        tf.debugging.assert_greater_equal(
            x, tf.zeros([], dtype), message="pixel values must lie in [0, 256): found a negative value")
        tf.debugging.assert_less(
            x, tf.constant(256, dtype), message="pixel values must lie in [0, 256): found a value >= 256")
    return x


def check_latents(z, dtype: tf.DType, channels: int, validate_args: bool,
                  squeezes: int) -> tf.Tensor:
    """Checks latents of shape ``[..., H, W, C]``; returns them as ``dtype``."""
    z = tf.convert_to_tensor(z)
    if not z.dtype.is_floating:
        raise TypeError(f"Expected float latents, got dtype {z.dtype.name}.")
    _check_event(z, "latents", channels, squeezes)
    z = tf.identity(tf.cast(z, dtype))  # Fresh for TFP's cache, see check_images.
    if validate_args:
        tf.debugging.assert_all_finite(z, "latents contain NaN or Inf")
    return z


def check_uint8_images(images, channels: int | None = None, squeezes: int = 0) -> tf.Tensor:
    """Checks 8-bit images ``[..., H, W, C]`` (with ``channels`` channels and ``H``, ``W``
    divisible by ``2**squeezes``, if ``channels`` is given)."""
    images = tf.convert_to_tensor(images)
    if images.dtype != tf.uint8:
        raise TypeError(f"Expected uint8 images (values 0..255), got dtype {images.dtype.name}; "
                        "use log_prob() for dequantized float images.")
    if images.shape.rank is None or images.shape.rank < 3:
        raise ValueError(f"Expected images of shape [..., height, width, channels], got {images.shape}.")
    if channels is not None:
        _check_event(images, "images", channels, squeezes)
    return images


def check_seed(seed, batch_shape: tf.TensorShape | None = None) -> tf.Tensor | None:
    """A stateless seed: ``None``, an integer tensor of shape ``[2]`` or, where
    ``batch_shape`` is given, one seed per example (shape ``batch_shape + [2]``).

    Accepts what ``tf.random.stateless_*`` accept (a pair of ints, a shape-[2]
    integer tensor) and, as Keras' random ops do, a single int ``s``, which
    means ``[s, 0]``.  Anything else raises ``ValueError``/``TypeError`` naming
    the problem instead of failing deep inside a random op.
    """
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)):
        raise TypeError(f"seed must be an int, a pair of ints or an integer tensor of shape [2], "
                        f"got {seed!r}.")
    if isinstance(seed, (int, np.integer)):
        seed = [int(seed), 0]
    try:
        seed = tf.convert_to_tensor(seed)
    except (TypeError, ValueError) as error:
        raise TypeError(f"seed must be an int, a pair of ints or an integer tensor of shape [2], "
                        f"got {seed!r}.") from error
    if not seed.dtype.is_integer:
        raise TypeError(f"seed must be integers (a stateless seed), got dtype {seed.dtype.name}.")
    if seed.shape.rank == 0:
        return tf.stack([seed, tf.zeros_like(seed)])
    if seed.shape.is_compatible_with([2]):
        return seed
    per_example = None if batch_shape is None else tf.TensorShape(batch_shape).concatenate([2])
    if per_example is not None and per_example.rank > 1 and seed.shape.is_compatible_with(
            per_example):
        return seed
    also = ("" if per_example is None or per_example.rank == 1
            else f", or one seed per example (shape {per_example.as_list()})")
    raise ValueError(f"seed must be an int or a pair of ints (shape [2]){also}, got shape "
                     f"{seed.shape.as_list()}.")
