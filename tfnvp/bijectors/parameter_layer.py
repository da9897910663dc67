"""The shapes Keras sees of a layer holding a shape-preserving bijector's parameters.

``BatchNormStatistics``, ``ActNormParameters`` and ``InvertibleConv1x1Weights``
hold the weights of a bijector that maps ``[batch..., channels]`` tensors to
tensors of the same shape (batch normalization, actnorm, invertible 1x1
convolution).  Their weights exist from construction, so Keras never builds
them; the model that owns them calls ``build(input_shape)`` with the shape of
the tensor the bijector transforms, ``(None, ..., channels)``
(``FlowModel._build_step_layers``), which checks the channel axis and creates
nothing, and Keras records that shape.  ``compute_output_shape`` returns it
unchanged, the bijector's output shape: what ``model.summary()`` shows.
"""

from __future__ import annotations

__all__ = ["ShapePreserving"]


class ShapePreserving:
    """Mixin of a ``keras.layers.Layer`` with a ``channels`` attribute whose weights are
    created in ``__init__``: ``build`` checks a shape, ``compute_output_shape`` keeps it."""

    channels: int

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        """Checks that ``input_shape`` ends in ``channels`` (every weight exists already)."""
        if not input_shape or input_shape[-1] != self.channels:
            raise ValueError(f"{type(self).__name__} {self.name!r} holds the parameters for "
                             f"{self.channels} channels, got input_shape {input_shape} (the last "
                             "axis is the channel axis).")

    def compute_output_shape(self, input_shape: tuple[int | None, ...]
                             ) -> tuple[int | None, ...]:
        """``input_shape``: the bijector these parameters define preserves shapes."""
        return tuple(input_shape)
