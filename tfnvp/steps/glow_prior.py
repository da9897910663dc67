"""Glow's learned priors as steps of the engine's declaration (``tfnvp.multiscale``).

``GlowPrior("split")`` is the step placed where a level's factor-out happens
(the squeezed tensor, before the split): the prior of the half that leaves,
conditioned on the half that stays (the release's ``split2d_prior``);
``GlowPrior("top")`` the step at the end of the coarsest level: the prior of
the top latent (``learntop``), with the release's class conditioning
(``ycond``) a per-class mean and log-scale added.  Each creates one layer, a
``tfnvp.nets.glow_prior.GaussianPriorHead`` tracked as ``<kind>_prior_<index>``,
and one bijector, ``tfnvp.bijectors.glow_prior.learned_prior``.  Used by
``tfnvp.Glow`` (``split_prior``, ``learn_top``).
"""

from __future__ import annotations

from typing import Mapping

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfnvp.bijectors.glow_prior import learned_prior
from tfnvp.nets.glow_prior import GaussianPriorHead
from tfnvp.steps.multiscale import Position, Step, StepBuilder

tfb = tfp.bijectors

__all__ = ["GlowPrior"]


class GlowPrior(StepBuilder):
    """Learned Gaussian prior steps of ``kind`` ``"split"`` or ``"top"`` (module docstring).

    Args:
      kind: ``"split"`` or ``"top"`` (``GaussianPriorHead``).
      dtype: the flow's dtype (the prior's variables and arithmetic).
      num_classes: ``K`` (``"top"`` only): the prior's mean and log-scale also depend on
        the flow's ``context``, one-hot labels (``GaussianPriorHead``).
      learned: the ``"top"`` prior's zero-initialized convolution (``learntop``);
        ``False`` with ``num_classes`` only.
    """

    def __init__(self, kind: str, dtype: tf.DType | str, num_classes: int | None = None,
                 learned: bool = True):
        self._kind = kind
        self._role = f"{kind}_prior"
        self._dtype = tf.as_dtype(dtype).name
        self._num_classes = num_classes
        self._learned = learned

    def layers(self, step: Step, position: Position) -> dict[str, keras.layers.Layer]:
        return {self._role: GaussianPriorHead(position.channels, self._kind,
                                              num_classes=self._num_classes,
                                              learned=self._learned, dtype=self._dtype,
                                              name=f"{self._role}_{position.index}")}

    def bijectors(self, step: Step, layers: Mapping[str, keras.layers.Layer],
                  position: Position, event_ndims: int) -> list[tfb.Bijector]:
        if event_ndims != 3:
            raise ValueError(f"A Glow prior acts on images (event_ndims=3), got {event_ndims}.")
        return [learned_prior(layers[self._role], name=f"{self._role}_{position.index}")]
