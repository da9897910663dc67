"""What the image flows (``RealNVP``, ``Glow``) share: 8-bit images in ``[0, 256)``.

An ``ImageFlowModel`` is a ``FlowModel`` over ``[..., H, W, C]`` images with
values in ``[0, 256)``.  Data -> latent, its flow is::

    x in [0, 256)  --LogitPreprocess-->  logit space  --declared scales-->  z ~ N(0, I)

(the logit preprocessing of Real NVP's section 4.1, ``tfnvp.bijectors.LogitPreprocess``;
the scales are the subclass's ``tfnvp.multiscale`` declaration).  This base
class provides the image checks (shape, dtype, ``[0, 256)``), the
dequantizer of 8-bit images (``dequantization="uniform"`` or
``"variational"``, ``DEQUANTIZATIONS``; ``bits_per_dim``, with the
importance-weighted bound for ``num_samples > 1``), ``sample`` and
``distribution_for`` at other image sizes, ``latent_scale_index`` and
``from_paper`` over the subclass's specification presets.

A model is built from its specification (``spec_class``, a
``tfnvp.models.spec.ImageFlowSpec``: every option, validated once), which it
keeps as ``self.spec`` and stores as its ``get_config()``.  Subclasses call
``super().__init__(spec, name)`` first and ``_finish_image_flow()`` last in
``__init__``, after ``_create_steps``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import ClassVar, Sequence

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfnvp import validation
from tfnvp.steps import multiscale
from tfnvp.bijectors.chain import FusedChain
from tfnvp.bijectors.logit import LogitPreprocess
from tfnvp.models.checked_distribution import EventCheckedDistribution
from tfnvp.models.conditional import one_hot_context
from tfnvp.dequantizers.uniform import UniformDequantizer, bits_per_dim_from_log_prob
from tfnvp.models.flow_model import Flow, FlowModel
from tfnvp.models.spec import (DEQUANTIZATIONS, DEQUANTIZER_CHANNELS, LOGIT_MAPS,
                               ImageFlowSpec)
from tfnvp.running_average import Training
from tfnvp.dequantizers.variational import VariationalDequantizer

tfd = tfp.distributions

__all__ = ["DEQUANTIZATIONS", "DEQUANTIZER_CHANNELS", "ImageFlowModel", "LOGIT_MAPS"]


def _split_seed(seed: tf.Tensor, num: int) -> list[tf.Tensor]:
    """``num`` seeds from ``seed``: ``stateless_split(seed, num)``, or, for one seed per
    example (``[batch..., 2]``), each example's seed split likewise (``num`` seeds of the
    same shape)."""
    if seed.shape.rank == 1:
        return tf.unstack(tf.random.experimental.stateless_split(seed, num))
    split = tf.map_fn(lambda s: tf.random.experimental.stateless_split(s, num),
                      tf.reshape(seed, [-1, 2]),
                      fn_output_signature=tf.TensorSpec([num, 2], seed.dtype))
    split = tf.reshape(split, tf.concat([tf.shape(seed)[:-1], [num, 2]], 0))
    return tf.unstack(split, num=num, axis=-2)


class ImageFlowModel(FlowModel):
    """Base class of the image flows; see the module docstring."""

    data_support = (0.0, 256.0)
    #: The model's specification class (``tfnvp.models.spec.ImageFlowSpec`` subclass).
    spec_class: ClassVar[type[ImageFlowSpec]]

    def __init__(self, spec: ImageFlowSpec, name: str):
        """Records ``spec`` (``self.spec``) with its conditioner dtype policy resolved
        (``_conditioner_policy``); subclasses then create their steps."""
        super().__init__(dtype=spec.dtype, validate_args=spec.validate_args, name=name)
        self.spec = dataclasses.replace(spec, conditioner_dtype=self._conditioner_policy(spec))
        self.image_shape = spec.image_shape
        self.event_shape = spec.image_shape
        self.num_scales = spec.num_scales
        self._squeezes = spec.squeezes

    def _conditioner_policy(self, spec: ImageFlowSpec) -> str | None:
        """``spec.conditioner_dtype``, else Keras' global dtype policy if it is a mixed one.

        ``keras.mixed_precision.set_global_policy("mixed_bfloat16")`` (or
        ``"mixed_float16"``) before building a float32 model applies to its
        conditioners, as an explicit ``conditioner_dtype`` would; the flow's
        arithmetic, log-dets and loss stay in the model's ``dtype`` (exactness), and
        ``get_config`` records the policy used.  ``None``: the flow's dtype.
        """
        if spec.conditioner_dtype is None and self.flow_dtype == tf.float32:
            policy = keras.config.dtype_policy().name
            if policy.startswith("mixed_"):
                return policy
        return spec.conditioner_dtype

    @property
    def conditioner_policy(self) -> str:
        """The Keras dtype policy of the coupling networks."""
        return self.spec.conditioner_dtype or self.spec.dtype

    def _finish_image_flow(self) -> None:
        """The dequantizer, class conditioning, and every weight built (evaluation mode).

        ``spec.dequantization`` (``DEQUANTIZATIONS``): ``"uniform"`` (section 4.1,
        ``UniformDequantizer``) or ``"variational"`` (Flow++,
        ``VariationalDequantizer``, whose weights the model owns and trains
        through ``nll``; ``spec.dequantizer_channels`` wide, its context map half
        as wide).
        """
        spec = self.spec
        if spec.dequantization == "variational":
            self.dequantizer = VariationalDequantizer(
                self.image_shape[-1], hidden_channels=spec.dequantizer_channels,
                context_channels=spec.dequantizer_channels // 2, num_classes=spec.num_classes,
                dtype=self.flow_dtype.name, name="dequantizer")
        else:
            self.dequantizer = UniformDequantizer(dtype=self.flow_dtype.name, name="dequantizer")
        self._make_class_conditional(spec.num_classes)
        # Evaluation mode: no statistic is updated, no actnorm initialized.
        labels = None if spec.num_classes is None else tf.zeros([1], tf.int32)
        self._dequantize(tf.zeros((1,) + self.image_shape, tf.uint8), [0, 0], False, labels)
        # Its weights exist now (built through `dequantize`): Keras records the shape (summary()).
        self.dequantizer.build((None,) + self.image_shape)
        self._build_weights(
            tf.fill((1,) + self.image_shape, tf.constant(128.0, self.flow_dtype)), labels=labels)

    @classmethod
    def from_paper(cls, name: str, **overrides) -> "ImageFlowModel":
        """The published configuration ``name`` (``cls.spec_class.presets()``), with
        ``overrides`` of its options."""
        return cls(cls.spec_class.paper(name, **overrides))

    def get_config(self) -> dict:
        """The specification's stored form (``spec.to_config()``): ``from_config`` (the
        constructor's keyword arguments) rebuilds the same model."""
        return self.spec.to_config()

    @classmethod
    def from_config(cls, config: dict) -> "ImageFlowModel":
        """The model of a stored configuration (``get_config``'s, e.g. in a ``.keras``
        file): a key written before its option existed takes the option's ``legacy``
        value, so files from before load as the models they were."""
        return cls(cls.spec_class.from_config(config, legacy=True))

    # ------------------------------------------------------------------ flow
    def _build_flow(self, image_shape: tuple[int, ...]) -> Flow:
        validation.check_image_shape(image_shape, self.image_shape[-1], self._squeezes)
        bijector = FusedChain(
            [LogitPreprocess(self.spec.alpha, symmetric=self.spec.logit_map == "symmetric",
                             validate_args=self.validate_args)] + self._flow_bijectors(3),
            name=f"{self.name}_flow")
        base = tfd.Sample(tfd.Normal(tf.zeros([], self.flow_dtype), tf.ones([], self.flow_dtype)),
                          sample_shape=image_shape)
        distribution = EventCheckedDistribution(
            base, bijector, what="images", layout="batch..., height, width, channels",
            name=self.name)
        return Flow(bijector, distribution)

    def distribution_for(self, image_shape: Sequence[int]) -> tfd.TransformedDistribution:
        """The same weights as a distribution over images of another size.

        The conditioners are convolutional and the masks are computed from
        the input's shape, so a trained model extrapolates (Real NVP's appendix C).
        """
        return self._flow(image_shape).distribution

    # ------------------------------------------------------------------ API
    def _check_inputs(self, x) -> tf.Tensor:
        x = validation.check_images(x, self.flow_dtype, self.image_shape[-1],
                                    self.validate_args, self._squeezes)
        if not tf.inside_function():
            self._warn_if_unit_scaled(x)
        return x

    def _warn_if_unit_scaled(self, x) -> None:
        """Warns (once per model) when float images lie entirely in ``[0, 1]``.

        The model's pixels are 8-bit values in ``[0, 256)``; images scaled to
        ``[0, 1]`` (the usual preprocessing elsewhere) are valid inputs, but of
        an almost black image, and their log-probabilities (around -300 nats
        for a digit) say nothing about the images.  Checked on eager inputs:
        the eager methods, and ``fit``/``evaluate``/``predict`` of in-memory
        arrays (their ``tf.data`` batches are symbolic).
        """
        if self._untracked.unit_scale_warned or not hasattr(x, "dtype"):
            return
        x = tf.convert_to_tensor(x)
        if not x.dtype.is_floating or tf.size(x) == 0:
            return
        if float(tf.reduce_min(x)) >= 0.0 and float(tf.reduce_max(x)) <= 1.0:
            self._untracked.unit_scale_warned = True
            warnings.warn(
                f"{self.name}: every pixel value of these float images lies in [0, 1], but "
                "the model's pixels are 8-bit values in [0, 256): pass uint8 images (the "
                "model dequantizes them) or dequantized values, e.g. images * 255 + noise "
                "(tfnvp.dequantize), not images scaled to [0, 1].", stacklevel=3)

    def fit(self, x=None, *args, **kwargs):
        """Keras' ``fit``; float image arrays in ``[0, 1]`` warn (``_warn_if_unit_scaled``)."""
        self._warn_if_unit_scaled(x)
        return super().fit(x, *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        """Keras' ``evaluate``; float image arrays in ``[0, 1]`` warn."""
        self._warn_if_unit_scaled(x)
        return super().evaluate(x, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        """Keras' ``predict``: log-probabilities in nats per image (see ``call``); float
        image arrays in ``[0, 1]`` warn."""
        self._warn_if_unit_scaled(x)
        return super().predict(x, *args, **kwargs)

    def _check_latents(self, z) -> tf.Tensor:
        return validation.check_latents(z, self.flow_dtype, self.image_shape[-1],
                                        self.validate_args, self._squeezes)

    def _check_nll_inputs(self, x, seed) -> tuple[tf.Tensor, tf.Tensor | None]:
        """8-bit images (with a seed drawn now if none is given, when compiled) or
        dequantized float images (see ``FlowModel.nll``)."""
        x = tf.convert_to_tensor(x)
        if x.dtype != tf.uint8:
            return self._check_inputs(x), seed
        images = self._check_uint8_images(x)
        batch = self._batch_of(images)
        return images, (validation.check_seed(seed, batch) if tf.inside_function()
                        else self._eager_seed(seed, batch))

    def _check_uint8_images(self, images) -> tf.Tensor:
        return validation.check_uint8_images(images, self.image_shape[-1], self._squeezes)

    def dequantize(self, images: tf.Tensor, seed: tf.Tensor | Sequence[int] | None = None,
                   training: bool = False,
                   labels: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """``(x, log_q)``: uint8 ``images`` dequantized by ``self.dequantizer``.

        ``x = images + u`` with ``u ~ q(u | images)`` (``q(u | images, labels)``
        for a class-conditional model with a variational dequantizer; uniform
        noise and ``log_q = 0`` for section 4.1's dequantizer), from the
        stateless ``seed`` if given; ``log_q`` per image.  ``nll`` and
        ``bits_per_dim`` dequantize exactly so.
        """
        images = self._check_uint8_images(images)
        labels = self._labels_for(images, labels)
        return self._dequantize(images, validation.check_seed(seed, self._batch_of(images)),
                                training, labels)

    def _dequantize(self, x, seed, training: Training | None,
                    labels: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor | float]:
        """uint8 images go through ``self.dequantizer`` (a class-conditional model's
        ``q(u | x, y)`` sees the labels); float pixels are already dequantized."""
        if x.dtype != tf.uint8:
            return x, 0.0
        context = (None if labels is None
                   else one_hot_context(labels, self.num_classes, self.flow_dtype))
        return self.dequantizer.dequantize(x, seed=seed, training=bool(training), context=context)

    def bits_per_dim(self, images: tf.Tensor, seed: tf.Tensor | Sequence[int] | None = None,
                     training: Training | None = False,
                     labels: tf.Tensor | None = None, num_samples: int = 1) -> tf.Tensor:
        """Bits/dim of 8-bit images under the model's dequantizer.

        ``images`` are uint8 ``[..., H, W, C]``; ``self.dequantizer`` turns
        them into ``x = images + u`` with ``log q(u | x)`` (uniform noise and
        ``log q = 0``, ``tfnvp.dequantize``, or a learned ``q``; from the
        stateless ``seed`` if given) and the result is ``nll(images) / (D ln
        2) = (-log p(x) + log q) / (D ln 2)`` per image: the dequantization
        bound on the discrete model's bits/dim (see ``tfnvp.dequantizers.uniform``).

        ``num_samples = K > 1`` gives the importance-weighted bound (Burda et
        al., 2016; Flow++ section 3.1) with ``u_k ~ q(u | x)``::

            -log( (1/K) sum_k exp(log p(x + u_k) - log q(u_k | x)) ) / (D ln 2)

        (logsumexp), tighter than ``K = 1`` in expectation and converging to
        the discrete model's bits/dim as ``K`` grows.  Sample ``k`` uses the
        seed ``tf.random.experimental.stateless_split(seed, K)[k]`` (with one seed
        per image, ``[batch..., 2]``, each image's split likewise); ``K = 1``
        uses ``seed`` itself.  Called eagerly it runs compiled, like ``nll``.
        """
        if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")
        images = self._check_uint8_images(images)
        return self._objective_call("bits_per_dim", self._bits_per_dim, images, training, seed,
                                    labels, num_samples=int(num_samples))

    def _bits_per_dim(self, images: tf.Tensor, labels: tf.Tensor | None, seed: tf.Tensor | None,
                      training: Training, num_samples: int = 1) -> tf.Tensor:
        if num_samples == 1:
            return self._objective(images, labels, seed, training).bits_per_dim
        seeds = [None] * num_samples if seed is None else _split_seed(seed, num_samples)
        log_weights = tf.stack([-self._objective(images, labels, s, training).nll for s in seeds])
        log_mean = (tf.reduce_logsumexp(log_weights, axis=0)
                    - tf.constant(math.log(num_samples), log_weights.dtype))
        return bits_per_dim_from_log_prob(log_mean, int(np.prod(images.shape[-3:])))

    def sample(self, num_samples: int, temperature: float = 1.0,
               seed: tf.Tensor | Sequence[int] | None = None,
               image_shape: Sequence[int] | None = None,
               labels: tf.Tensor | None = None) -> tf.Tensor:
        """``num_samples`` images from ``z ~ N(0, temperature^2 I)`` of ``image_shape``
        (default: the model's own; any size the flow accepts, appendix C); of the
        classes ``labels`` (``[num_samples]``) for a class-conditional model."""
        return super().sample(num_samples, temperature, seed, event_shape=image_shape,
                              labels=labels)

    def latent_scale_index(self, image_shape: Sequence[int] | None = None) -> np.ndarray:
        """``tfnvp.multiscale.latent_scale_index`` of this model's layout (default: its
        own image shape): the scale each latent entry left the flow at, 0 the finest."""
        return multiscale.latent_scale_index(self._untracked.scales,
                                             image_shape or self.image_shape)
