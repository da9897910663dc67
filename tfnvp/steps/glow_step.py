"""Glow's step type: actnorm, invertible 1x1 convolution, affine coupling.

One step of flow (Kingma & Dhariwal 2018, section 3 and Table 1), data -> latent::

    y = actnorm(x)              (x + b) * exp(s), data-dependent init     (section 3.1)
    y = conv1x1(y)              y @ W, W = P L (U + diag(s))               (section 3.2, eq. 10)
    y = coupling(y)             y_b <- (y_b + t) * sigmoid(h + 2), [t, h] = NN(y_a)   (3.3)
                                additive: y_b <- y_b + t, t = NN(y_a); log-det 0

``GlowStep`` is a ``tfnvp.multiscale.StepBuilder``: it creates the step's
layers -- ``actnorm`` (``ActNormParameters``), ``conv1x1``
(``InvertibleConv1x1Weights``) and ``conditioner`` (a ``GlowAffineHead``, or
a ``GlowAdditiveHead``, around a ``GlowNet``), tracked as ``<role>_<index>`` -- and builds the three
bijectors from them.  ``Step.parity`` says which half of the channels the
coupling keeps (``mask`` is always the channel mask).  Used by ``tfnvp.Glow``.

Flow++'s conditioner options (Ho et al. 2019, section 3.3) are ``GlowNet``'s:
gated convolutions and dropout in every coupling network, attention in those
of the steps at squeeze depth ``>= attention_min_depth``
(``tfnvp.multiscale.Position.depth``).
"""

from __future__ import annotations

from typing import Mapping

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfnvp.bijectors.actnorm import ActNorm, ActNormParameters
from tfnvp.bijectors.glow_coupling import glow_coupling
from tfnvp.bijectors.invertible_conv import InvertibleConv1x1, InvertibleConv1x1Weights
from tfnvp.models.spec import ConditionerSpec
from tfnvp.steps.multiscale import Position, Step, StepBuilder
from tfnvp.nets.glow_net import GlowAdditiveHead, GlowAffineHead, GlowNet

tfb = tfp.bijectors

__all__ = ["GlowStep"]


class GlowStep(StepBuilder):
    """Glow steps (actnorm, invertible 1x1 convolution, affine coupling).

    Args:
      hidden_channels: width of every coupling network (``GlowNet``; 512 in the paper).
      dtype: the flow's dtype (actnorm and 1x1-convolution variables, the heads).
      conditioner_dtype: Keras dtype policy of the coupling networks (default: ``dtype``).
      context_channels: size of the conditioning context (``K`` one-hot labels; 0: none).
      seed: seed of the 1x1 convolutions' initial random rotations (step ``i``
        uses ``seed + i``); ``None`` draws it from NumPy's global generator
        (``keras.utils.set_random_seed`` seeds it).
      conditioner: Flow++'s options of the coupling networks (``ConditionerSpec``:
        attention at the steps of squeeze depth ``>= attention_min_depth``,
        gated convolutions, dropout; ``ConditionerSpec.layer_options``).
      additive: the additive coupling ``y_b = x_b + t(x_a)`` (log-det 0; a
        ``GlowAdditiveHead``, its network half as wide at the output) instead of
        the affine one.
    """

    def __init__(self, hidden_channels: int, dtype: tf.DType | str,
                 conditioner_dtype: str | None = None, context_channels: int = 0,
                 seed: int | None = None, conditioner: ConditionerSpec = ConditionerSpec(),
                 additive: bool = False):
        self._hidden = int(hidden_channels)
        self._dtype = tf.as_dtype(dtype).name
        self._net_dtype = conditioner_dtype or self._dtype
        self._context = int(context_channels)
        self._seed = int(np.random.randint(2**31 - 1)) if seed is None else int(seed)
        self._conditioner = conditioner
        self._additive = bool(additive)

    def layers(self, step: Step, position: Position) -> dict[str, keras.layers.Layer]:
        if step.mask != "channel":
            raise ValueError(f"A Glow step couples the channel halves, got mask={step.mask!r}.")
        width, index = position.channels, position.index
        # The affine coupling's network gives t and h for each transformed channel, the
        # additive one's t only.
        net = GlowNet(width // 2 if self._additive else width, self._hidden,
                      context_channels=self._context,
                      **self._conditioner.layer_options(position.depth), dtype=self._net_dtype,
                      name=f"glow_net_{index}")
        return {
            "actnorm": ActNormParameters(width, dtype=self._dtype, name=f"actnorm_{index}"),
            "conv1x1": InvertibleConv1x1Weights(width, seed=self._seed + index, dtype=self._dtype,
                                                name=f"conv1x1_{index}"),
            "conditioner": (GlowAdditiveHead if self._additive else GlowAffineHead)(
                net, width, parity=step.parity, dtype=self._dtype, name=f"coupling_{index}"),
        }

    def bijectors(self, step: Step, layers: Mapping[str, keras.layers.Layer],
                  position: Position, event_ndims: int) -> list[tfb.Bijector]:
        if event_ndims != 3:
            raise ValueError(f"A Glow step acts on images (event_ndims=3), got {event_ndims}.")
        index = position.index
        return [ActNorm(layers["actnorm"], name=f"actnorm_{index}"),
                InvertibleConv1x1(layers["conv1x1"], name=f"conv1x1_{index}"),
                glow_coupling(layers["conditioner"], self._additive, name=f"coupling_{index}")]
