"""Make lists of Keras 3 layers visible to ``tf.train.Checkpoint``.

Keras 3 keeps a list attribute of layers in its own ``TrackedList``, which
TensorFlow's checkpoint graph does not follow: ``tf.train.Checkpoint(model=m)``
would silently save none of the listed layers' weights.  Assigning each layer
also as a named attribute gives the checkpoint graph a stable path to it
(``model/conditioner_3/body/...``) without duplicating any weight in Keras'
own tracking.
"""

from __future__ import annotations

from typing import TypeVar

import keras

__all__ = ["track_layers"]

LayerList = TypeVar("LayerList", bound=list)


def track_layers(owner: keras.layers.Layer, prefix: str, layers: LayerList) -> LayerList:
    """Assigns ``layers[i]`` as ``owner.<prefix>_<i>``; returns ``layers``."""
    for index, layer in enumerate(layers):
        setattr(owner, f"{prefix}_{index}", layer)
    return layers
