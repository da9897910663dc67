"""Fully-connected conditioner body for couplings of vectors.

``MLP`` is the dense counterpart of ``ResNet``: ``depth`` hidden ``Dense``
layers (tanh by default) and a linear output layer whose kernel and bias start
at zero, so that wrapped in ``ShiftAndLogScale`` a new coupling is the
identity::

    h_0 = x
    h_k = activation(W_k h_{k-1} + b_k),   k = 1..depth
    out = W_out h_depth + b_out            (W_out = 0, b_out = 0 at init)
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfnvp.nets.tracking import track_layers

__all__ = ["MLP"]


@keras.saving.register_keras_serializable(package="tfnvp")
class MLP(keras.layers.Layer):
    """Conditioner body: ``[..., d_in] -> [..., out_dim]``.

    Args:
      hidden_dim: units of every hidden layer.
      depth: number of hidden layers (0 gives a single, linear layer).
      out_dim: output features (``2 * dim`` for a shift and a log-scale).
      activation: Keras activation of the hidden layers.

    Example::

        body = MLP(hidden_dim=64, depth=2, out_dim=2 * dim)
        net = tfnvp.nets.ShiftAndLogScale(body, channels=dim)
    """

    #: One trace for every body like it (``tfnvp.nets.shared_body``).
    traced_once = True

    def __init__(self, hidden_dim: int, depth: int, out_dim: int, activation: str = "tanh",
                 **kwargs):
        super().__init__(**kwargs)
        if int(hidden_dim) < 1 or int(depth) < 0 or int(out_dim) < 1:
            raise ValueError(
                "MLP needs hidden_dim >= 1, depth >= 0 and out_dim >= 1, got "
                f"hidden_dim={hidden_dim}, depth={depth}, out_dim={out_dim}.")
        self.hidden_dim = int(hidden_dim)
        self.depth = int(depth)
        self.out_dim = int(out_dim)
        self.activation = (activation if isinstance(activation, str) or activation is None
                           else keras.activations.serialize(activation))
        self.hidden = track_layers(self, "hidden", [
            keras.layers.Dense(self.hidden_dim, activation=activation, dtype=self.dtype_policy,
                               name=f"hidden_{k}")
            for k in range(self.depth)
        ])
        self.out = keras.layers.Dense(self.out_dim, kernel_initializer="zeros",
                                      bias_initializer="zeros", dtype=self.dtype_policy,
                                      name="out")

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        """Creates every weight from the input shape, without tracing ``call``."""
        shape = tuple(input_shape)
        for layer in [*self.hidden, self.out]:
            layer.build(shape)
            shape = shape[:-1] + (layer.units,)

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        h = x
        for layer in self.hidden:
            h = layer(h)
        return self.out(h)

    def get_config(self) -> dict:
        return {**super().get_config(), "hidden_dim": self.hidden_dim, "depth": self.depth,
                "out_dim": self.out_dim, "activation": self.activation}
