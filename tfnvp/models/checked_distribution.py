"""``model.distribution``: a ``TransformedDistribution`` that checks what it scores.

A plain ``tfd.TransformedDistribution`` hands any tensor to the flow, and a
value of the wrong shape fails deep inside a convolution or a broadcast with a
message about neither.  ``EventCheckedDistribution`` first checks that a value
ends with the distribution's event shape (``[..., H, W, C]`` for images,
``[..., D]`` for vectors) and raises ``ValueError`` naming that shape
otherwise.  Any batch shape is accepted, a single unbatched event and empty
batches included: the couplings flatten batch axes for their conditioners
(``AffineCoupling``).  Sampling needs no check: its shape comes from the base
distribution and ``sample_shape``.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from tfnvp._compat import TransformedDistribution

__all__ = ["EventCheckedDistribution", "check_event_shape"]


def check_event_shape(value, event_shape: Sequence[int], what: str, layout: str) -> tf.Tensor:
    """``value`` as a float tensor; ``ValueError`` unless its shape ends with ``event_shape``."""
    value = tf.convert_to_tensor(value)
    expected = f"[..., {', '.join(str(d) for d in event_shape)}] ({layout})"
    if not value.dtype.is_floating:
        raise TypeError(f"Expected float {what} of shape {expected}, got dtype {value.dtype.name}.")
    rank, shape = len(event_shape), value.shape
    if shape.rank is None or shape.rank < rank or not all(
            d is None or d == e for d, e in zip(shape[shape.rank - rank:], event_shape)):
        raise ValueError(f"Expected {what} of shape {expected}, got shape {value.shape}.")
    return value


class EventCheckedDistribution(TransformedDistribution):
    """``TransformedDistribution`` whose ``log_prob``/``prob`` check the event shape.

    Args (besides ``TransformedDistribution``'s):
      what: what an event is, for messages (e.g. ``"images"``).
      layout: the axes' names, e.g. ``"batch..., height, width, channels"``.
    """

    def __init__(self, distribution, bijector, what: str = "values",
                 layout: str = "batch..., event", name: str | None = None):
        parameters = dict(locals())
        self._what, self._layout = what, layout
        super().__init__(distribution, bijector, parameters=parameters, name=name)

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        # The tensor parameters are the parent's; ``what`` and ``layout`` are text.
        return TransformedDistribution._parameter_properties(dtype, num_classes=num_classes)

    def _checked(self, value) -> tf.Tensor:
        event = tuple(int(d) for d in tf.TensorShape(self.event_shape))
        return check_event_shape(value, event, self._what, self._layout)

    def with_base(self, distribution) -> "EventCheckedDistribution":
        """The same bijector and checks over another base distribution (e.g. a
        class-conditional prior, ``tfnvp.conditional``)."""
        return EventCheckedDistribution(distribution, self.bijector, what=self._what,
                                        layout=self._layout, name=self.name)

    def log_prob(self, value, name: str = "log_prob", **kwargs) -> tf.Tensor:
        return super().log_prob(self._checked(value), name=name, **kwargs)

    def prob(self, value, name: str = "prob", **kwargs) -> tf.Tensor:
        return super().prob(self._checked(value), name=name, **kwargs)
