"""The flow architecture declared once: a multi-scale recursion of steps (section 3.6).

A flow is declared as a tuple of ``Scale`` s, finest first.  Each scale has a
``body``, in the data -> latent direction, of

* ``Step(builder, mask, parity)``: one step of a step type (a ``StepBuilder``:
  a Real NVP coupling with its batch norm, ``tfnvp.steps.coupling_step``; a Glow
  step; ...), which creates the step's Keras layers and its bijectors;
* ``SqueezeOp(order)`` / ``UnsqueezeOp(order)``: a 2x2 squeeze (``Squeeze``'s
  ``inverse``) and its undoing.  Squeezes in a body must be undone, in
  reverse order, by the body's end, so that a body preserves positions;

and, unless it is the coarsest scale, ``factor_out``: the squeeze order of
its factor-out step (eqs. 10-13).  After the body the scale squeezes in that
order, lets the first half of the channels leave as latents, runs the next
scale on the second half (``FactorOut``) and un-squeezes, so the whole latent
keeps the input's shape.  A body ending in ``UnsqueezeOp(order)`` followed by
a factor-out in the same ``order`` skips the un-squeeze/squeeze pair.

Everything derives from that one declaration:

* ``walk``: every step's ``Position`` (index, scale, channels and squeeze
  depth of the tensor it acts on);
* ``create_layers``: the Keras layers of every step, in step order, tracked
  on the model as ``<role>_<index>`` (checkpoint paths, see
  ``tfnvp.nets.tracking``);
* ``build_bijectors``: the bijector chain, data -> latent order;
* ``latent_scale_index``: which scale each latent entry left the flow at.

Adding a step type means writing one ``StepBuilder`` (in its own module);
this module does not change.  A Glow step (Kingma & Dhariwal, 2018: actnorm,
invertible 1x1 convolution, affine coupling) is such a builder: its
``layers`` returns e.g. ``{"actnorm": ..., "conv1x1": ..., "conditioner":
...}`` and its ``bijectors`` the three bijectors in data -> latent order;
Glow's scales are then ``Scale((SqueezeOp(), *K steps, UnsqueezeOp()),
factor_out="space_to_depth")``.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Iterator, Mapping, Sequence, Union

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfnvp.bijectors.chain import FusedChain
from tfnvp.bijectors.factor_out import FactorOut
from tfnvp.bijectors.squeeze import SQUEEZE_ORDERS, Squeeze

tfb = tfp.bijectors

__all__ = ["Position", "StepBuilder", "Step", "SqueezeOp", "UnsqueezeOp", "Scale",
           "check_scales", "walk", "create_layers", "build_bijectors", "latent_scale_index"]


@dataclasses.dataclass(frozen=True)
class Position:
    """Where a step acts: its index (data -> latent), scale, and the tensor there.

    ``channels`` is the size of the last axis of the tensor the step
    transforms; ``depth`` is the number of 2x2 squeezes between the data and
    that tensor (factor-outs of coarser scales included), so its spatial size
    is the input's divided by ``2**depth``.
    """

    index: int
    scale: int
    channels: int
    depth: int


class StepBuilder(abc.ABC):
    """One step type: the layers a step owns and the bijectors built from them."""

    @abc.abstractmethod
    def layers(self, step: "Step", position: Position) -> dict[str, keras.layers.Layer]:
        """The step's Keras layers by role (e.g. ``"conditioner"``); the model
        tracks ``layers[role]`` as ``<role>_<position.index>``."""

    @abc.abstractmethod
    def bijectors(self, step: "Step", layers: Mapping[str, keras.layers.Layer],
                  position: Position, event_ndims: int) -> list[tfb.Bijector]:
        """The step's bijectors in data -> latent order (``inverse`` direction)."""


@dataclasses.dataclass(frozen=True, eq=False)
class Step:
    """One step of type ``builder``; ``mask``/``parity`` as in ``AffineCoupling``
    (step types without a mask ignore them)."""

    builder: StepBuilder | None
    mask: Any = "channel"
    parity: int = 0


@dataclasses.dataclass(frozen=True)
class SqueezeOp:
    """2x2 squeeze (data -> latent) in ``order`` (a key of ``SQUEEZE_ORDERS``)."""

    order: str = "space_to_depth"


@dataclasses.dataclass(frozen=True)
class UnsqueezeOp:
    """Undoes the innermost open ``SqueezeOp``, which must have the same ``order``."""

    order: str = "space_to_depth"


Element = Union[Step, SqueezeOp, UnsqueezeOp]


@dataclasses.dataclass(frozen=True, eq=False)
class Scale:
    """One scale: its ``body`` and the squeeze order of its factor-out (``None``:
    the coarsest scale, which factors nothing out)."""

    body: tuple[Element, ...]
    factor_out: str | None = None


def check_scales(scales: Sequence[Scale], event_ndims: int) -> None:
    """``ValueError`` unless ``scales`` is a well-formed declaration (module docstring)."""
    if not scales:
        raise ValueError("A flow needs at least one scale.")
    for level, scale in enumerate(scales):
        last = level == len(scales) - 1
        if (scale.factor_out is None) != last:
            raise ValueError(f"Scale {level}: every scale but the coarsest factors out, "
                             f"got factor_out={scale.factor_out!r}.")
        orders = [scale.factor_out] if scale.factor_out else []
        open_squeezes: list[str] = []
        for element in scale.body:
            if isinstance(element, (SqueezeOp, UnsqueezeOp)):
                orders.append(element.order)
            if isinstance(element, SqueezeOp):
                open_squeezes.append(element.order)
            elif isinstance(element, UnsqueezeOp):
                if not open_squeezes or open_squeezes.pop() != element.order:
                    raise ValueError(f"Scale {level}: {element} does not undo the innermost "
                                     "open squeeze.")
            elif not isinstance(element, Step):
                raise TypeError(f"Scale {level}: unknown body element {element!r}.")
        if open_squeezes:
            raise ValueError(f"Scale {level}: squeezes {open_squeezes} are not undone by the "
                             "end of the body.")
        unknown = [o for o in orders if o not in SQUEEZE_ORDERS]
        if unknown:
            raise ValueError(f"Scale {level}: unknown squeeze orders {unknown}; choose from "
                             f"{sorted(SQUEEZE_ORDERS)}.")
        if orders and event_ndims != 3:
            raise ValueError("Squeezes and factor-outs need image events (event_ndims=3).")


def walk(scales: Sequence[Scale], channels: int) -> list[tuple[Step, Position]]:
    """Every step with its ``Position``, data -> latent order."""
    result: list[tuple[Step, Position]] = []
    for level, scale in enumerate(scales):
        width, depth = channels * 2 ** level, level
        for element in scale.body:
            if isinstance(element, SqueezeOp):
                width, depth = width * 4, depth + 1
            elif isinstance(element, UnsqueezeOp):
                width, depth = width // 4, depth - 1
            else:
                result.append((element, Position(len(result), level, width, depth)))
    return result


def create_layers(owner: keras.layers.Layer, scales: Sequence[Scale], channels: int
                  ) -> list[dict[str, keras.layers.Layer]]:
    """Creates every step's layers, tracks them on ``owner`` as ``<role>_<index>``
    (step order, so Keras' weight order follows the flow), returns them per step."""
    per_step = []
    for step, position in walk(scales, channels):
        layers = step.builder.layers(step, position)
        for role, layer in layers.items():
            setattr(owner, f"{role}_{position.index}", layer)
        per_step.append(layers)
    return per_step


def build_bijectors(scales: Sequence[Scale], layers: Sequence[Mapping[str, keras.layers.Layer]],
                    channels: int, event_ndims: int) -> list[tfb.Bijector]:
    """The flow's bijectors, data -> latent order (a ``FusedChain`` of them is the flow)."""
    steps: Iterator[tuple[Step, Position]] = iter(walk(scales, channels))

    def scale_bijectors(level: int) -> list[tfb.Bijector]:
        scale = scales[level]
        result: list[tfb.Bijector] = []
        for element in scale.body:
            if isinstance(element, SqueezeOp):
                result.append(Squeeze(order=element.order, name=f"squeeze_{level}"))
            elif isinstance(element, UnsqueezeOp):
                result.append(tfb.Invert(Squeeze(order=element.order),
                                         name=f"unsqueeze_channels_{level}"))
            else:
                step, position = next(steps)
                result += step.builder.bijectors(step, layers[position.index], position,
                                                 event_ndims)
        if scale.factor_out is None:
            return result
        order = scale.factor_out
        last = scale.body[-1] if scale.body else None
        if isinstance(last, UnsqueezeOp) and last.order == order:
            result.pop()  # Un-squeezing and squeezing again in the same order cancel.
        else:
            result.append(Squeeze(order=order, name=f"squeeze_{order}_{level}"))
        inner = FusedChain(scale_bijectors(level + 1), name=f"scale_{level + 1}")
        result.append(FactorOut(inner, name=f"factor_out_{level}"))
        result.append(tfb.Invert(Squeeze(order=order), name=f"unsqueeze_{level}"))
        return result

    return scale_bijectors(0)


def latent_scale_index(scales: Sequence[Scale], image_shape: Sequence[int]) -> np.ndarray:
    """Integer array of the latent's shape: the scale at which each entry left the flow.

    0 is the finest scale (factored out first), ``len(scales) - 1`` the
    coarsest.  Built by pushing scale labels through the same ``Squeeze``
    bijectors the factor-outs use (bodies preserve positions), so it follows
    the flow's layout.
    """

    def labels(h: int, w: int, c: int, level: int) -> tf.Tensor:
        order = scales[level].factor_out
        if order is None:
            return tf.fill([h, w, c], float(level))
        kept = tf.fill([h // 2, w // 2, 2 * c], float(level))
        inner = labels(h // 2, w // 2, 2 * c, level + 1)
        return Squeeze(order=order).forward(tf.concat([kept, inner], axis=-1))

    return labels(*(int(d) for d in image_shape), 0).numpy().astype(np.int32)
