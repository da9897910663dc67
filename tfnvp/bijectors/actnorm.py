"""Activation normalization, "actnorm" (Glow, Kingma & Dhariwal 2018, section 3.1).

A per-channel affine map whose parameters are *initialized from data* and
then trained like any other weight.  In the data -> latent direction (this
bijector's ``inverse``, Glow's forward pass; Table 1, first row)::

    z[i, j, c] = (x[i, j, c] + b_c) * exp(s_c)
    log|det dz/dx| = H * W * sum_c s_c                     (per example)

On the first training-mode call the bias ``b`` and log-scale ``s`` are set
so that that batch's output has zero mean and unit variance per channel
(over the batch and spatial axes): ``b = -mean``, ``s = -log(std + eps)``.
That is Glow's data-dependent initialization, which the paper uses instead
of batch normalization so that small (per-device) batches work.

Whether that has happened is a checkpointed variable, ``initialized``, of
the ``ActNormParameters`` layer that owns ``s`` and ``b``: a model restored
from a checkpoint keeps its trained values and never re-initializes.  The
check is a ``tf.cond`` on that variable, so the same code runs eagerly and
inside ``tf.function`` (where the initializing branch costs nothing once
the variable is set).

Under ``tf.distribute`` (``MirroredStrategy``) the initial statistics are
those of the *global* batch (all-reduced across replicas, like
``BatchNorm``'s), so every replica computes the same values and writes them
to its own copy of the variables (aggregation ``none``: a local write,
legal inside the ``tf.cond`` where a synchronizing write would not be).  The
all-reduce itself is a synchronization point, which TensorFlow does not
allow inside a ``tf.cond`` in a replica context, so with several replicas the
(cheap: two per-channel sums) statistics are computed and all-reduced on
every training call, outside the condition.
"""

from __future__ import annotations

import keras
import tensorflow as tf

# The per-channel batch moments of the batch-norm bijector (all-reduced over
# the replicas in sync when there are several).
from tfnvp.bijectors.batch_norm import _batch_moments
from tfnvp.bijectors.channelwise import ChannelwiseBijector
from tfnvp.bijectors.parameter_layer import ShapePreserving

__all__ = ["ActNorm", "ActNormParameters"]


def _replicas_in_sync() -> int:
    ctx = tf.distribute.get_replica_context()
    return ctx.num_replicas_in_sync if ctx is not None else 1


@keras.saving.register_keras_serializable(package="tfnvp")
class ActNormParameters(ShapePreserving, keras.layers.Layer):
    """Per-channel log-scale ``s`` and bias ``b`` of an actnorm, with their data-dependent init.

    Called as a layer (``layer(x, training=...)``) it normalizes,
    ``(x + b) * exp(s)`` -- the form used inside Glow's coupling networks
    (``tfnvp.nets.GlowNet``); the ``ActNorm`` bijector reads the same
    variables.  The first call with ``training=True`` initializes ``s`` and
    ``b`` from that batch (see the module docstring); until then, and in
    evaluation mode, the layer is the identity.

    Args:
      channels: size of the last axis.
      epsilon: added to the standard deviation at initialization.
      **kwargs: forwarded to ``keras.layers.Layer`` (``dtype``, ``name``).
    """

    def __init__(self, channels: int, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels!r}.")
        if epsilon <= 0.0:
            raise ValueError(f"epsilon must be positive, got {epsilon!r}.")
        self.channels = int(channels)
        self.epsilon = float(epsilon)
        # Aggregation "none": under MirroredStrategy a replica-context write
        # (the initialization) is local; every replica writes the same value.
        self.log_scale = self.add_weight(name="log_scale", shape=(self.channels,),
                                         initializer="zeros", aggregation="none")
        self.bias = self.add_weight(name="bias", shape=(self.channels,), initializer="zeros",
                                    aggregation="none")
        self.initialized = self.add_weight(name="initialized", shape=(), initializer="zeros",
                                           trainable=False, dtype="float32",
                                           aggregation="none", autocast=False)
        self.built = True

    def get_config(self) -> dict:
        return {**super().get_config(), "channels": self.channels, "epsilon": self.epsilon}

    def _check_channels(self, x: tf.Tensor) -> None:
        if x.shape[-1] != self.channels:
            raise ValueError(f"ActNorm over {self.channels} channels got an input of shape "
                             f"{x.shape} (the last axis is the channel axis).")

    def initialize_from(self, x: tf.Tensor) -> None:
        """Initializes ``s`` and ``b`` from ``x`` unless already initialized.

        Runs eagerly, in ``tf.function`` and in a ``tf.distribute`` replica
        context (see the module docstring).  Called by every training-mode
        use of the parameters; call it directly to initialize on a larger
        batch before training.
        """
        self._check_channels(x)
        # With several replicas the moments are all-reduced, which must not
        # happen inside the tf.cond (see the module docstring).
        precomputed = _batch_moments(x) if _replicas_in_sync() > 1 else None

        def initialize() -> tf.Tensor:
            mean, variance = precomputed or _batch_moments(x)
            self.bias.assign(tf.cast(-mean, self.bias.dtype))
            self.log_scale.assign(tf.cast(-tf.math.log(tf.sqrt(variance) + self.epsilon),
                                          self.log_scale.dtype))
            self.initialized.assign(1.0)
            return tf.constant(True)

        tf.cond(self.initialized > 0.5, lambda: tf.constant(False), initialize)

    def values(self, x: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """``(s, b)`` in ``x``'s dtype, initialized from ``x`` first in training mode.

        The variables are read after the (conditional) initialization, so the
        initializing batch already sees its own statistics.
        """
        self._check_channels(x)
        if training:
            self.initialize_from(x)
        return tf.cast(self.log_scale, x.dtype), tf.cast(self.bias, x.dtype)

    def normalize(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """``(x + b) * exp(s)`` in ``x``'s dtype (initializing first in training mode)."""
        log_scale, bias = self.values(x, training=training)
        return (x + bias) * tf.exp(log_scale)

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.normalize(x, training=training)


class ActNorm(ChannelwiseBijector):
    """Glow's actnorm as a bijector on ``[..., H, W, C]`` events; ``inverse`` is data -> latent.

    Math (``s``, ``b`` from the ``ActNormParameters`` layer)::

        inverse(x) = (x + b) * exp(s)
        forward(z) = z * exp(-s) - b
        inverse_log_det_jacobian(x) = H * W * sum_c s_c

    ``training=True`` (a Python bool) on a data-side call (``inverse``,
    ``inverse_log_det_jacobian``) runs the one-time data-dependent
    initialization; otherwise ``training`` and ``context`` are accepted and
    ignored (modes and conditions are call arguments of every tfnvp
    bijector).  ``forward`` (sampling) never initializes.  As for every TFP
    bijector, results are cached per input tensor (and kwargs): after the
    initialization or a weight update, evaluate on a fresh tensor.

    Args:
      params: the ``ActNormParameters`` layer (owned by the model, so that
        it is trained and checkpointed).

    Example::

        params = ActNormParameters(channels=3)
        actnorm = ActNorm(params)
        z = actnorm.inverse(x, training=True)   # first call: z has unit variance
    """

    def __init__(self, params: ActNormParameters, validate_args: bool = False,
                 name: str = "actnorm"):
        parameters = dict(locals())
        super().__init__(params, params.channels, parameters, validate_args, name)

    @property
    def params(self) -> ActNormParameters:
        return self._layer

    def _position_log_det(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        log_scale, _ = self._layer.values(x, training=training)
        return tf.reduce_sum(log_scale)

    def _inverse(self, x: tf.Tensor, training: bool = False, context=None) -> tf.Tensor:
        del context
        return self._layer.normalize(x, training=training)

    def _forward(self, z: tf.Tensor, training: bool = False, context=None) -> tf.Tensor:
        del training, context
        log_scale, bias = self._layer.values(z)
        return z * tf.exp(-log_scale) - bias
