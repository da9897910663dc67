"""The Adamax of Glow's release (openai/glow ``optim.py``, ``adamax``): ``tfnvp.GlowAdamax``.

Kingma & Ba (2015, section 7.1, Algorithm 2) define Adamax with the
infinity-norm second moment ``u``; Glow's release (its default optimizer,
``--optimizer=adamax``) keeps Adam's step size with the second moment's bias
correction as well, and uses ``epsilon = 1e-8`` inside the denominator.  With
``t = iterations + 1`` (the release's ``t`` starts at 1), for every weight ``w``
and its gradient ``g``::

    m     <- beta_1 * m + (1 - beta_1) * g
    u     <- max(beta_2 * u, |g|)
    alpha_t = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)
    w     <- w - alpha_t * m / (u + epsilon)

``keras.optimizers.Adamax`` is Algorithm 2 (``alpha_t = lr / (1 - beta_1^t)``,
without the ``sqrt(1 - beta_2^t)`` factor, ``epsilon = 1e-7``): with the
release's ``beta_2`` close to 1 its first steps are about ``1 / sqrt(1 -
beta_2)`` times larger (28 times at CIFAR-10's ``beta_2 = 1 - 1/782``).

The release sets ``beta_1 = 0.9`` (``--beta1``) and ``beta_2 = 1 - 1 /
(train_its * polyak_epochs)``: one minus the reciprocal of the number of
steps in ``polyak_epochs`` (default 1) epochs of the global batch, e.g. ``1 -
1/782`` for CIFAR-10's 50,000 images in batches of 64 (``train_its =
ceil(50000 / 64)``).  Its ``weight_decay`` (a factor on ``w``, default 1: off)
is not part of this optimizer.  Slots: ``momentum`` (``m``) and ``norm``
(``u``), as Keras' ``Adamax`` names them.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["GlowAdamax"]


@keras.saving.register_keras_serializable(package="tfnvp")
class GlowAdamax(keras.optimizers.Adamax):
    """Glow's release's Adamax (module docstring); arguments as ``keras.optimizers.Adamax``'s,
    ``epsilon`` defaulting to the release's ``1e-8``.

    Example::

        optimizer = tfnvp.GlowAdamax(1e-3, beta_2=1 - 1 / 782)  # CIFAR-10, batch 64
    """

    def __init__(self, learning_rate=0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-8, **kwargs):
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, **kwargs)

    def update_step(self, gradient, variable, learning_rate) -> None:
        dtype = variable.dtype
        gradient = ops.cast(gradient, dtype)
        step = ops.cast(self.iterations + 1, dtype)
        # convert_to_tensor: ops.cast would round a Python float to float32 first.
        beta_1, beta_2, epsilon = (ops.convert_to_tensor(value, dtype)
                                   for value in (self.beta_1, self.beta_2, self.epsilon))
        alpha = (ops.cast(learning_rate, dtype) * ops.sqrt(1 - ops.power(beta_2, step))
                 / (1 - ops.power(beta_1, step)))
        index = self._get_variable_index(variable)
        m, u = self._m[index], self._u[index]
        self.assign(m, beta_1 * m + (1 - beta_1) * gradient)
        self.assign(u, ops.maximum(beta_2 * u, ops.abs(gradient)))
        self.assign_sub(variable, alpha * m / (u + epsilon))
