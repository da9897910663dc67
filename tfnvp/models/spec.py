"""Model specifications: one frozen, validated value holds every option of a model.

A specification is a frozen dataclass (``tfnvp.RealNVPSpec``, ``tfnvp.GlowSpec``)
whose fields are the model's options, checked once, in ``__post_init__``,
with a ``tfnvp.UsageError`` naming the field and the fix.  The model is built
from it (``tfnvp.RealNVP(spec)``; ``tfnvp.RealNVP(image_shape, **options)``
builds the spec from the same names), records it (``model.spec``), and
``get_config`` is the spec's ``to_config()``.  What the options of every
coupling network share -- Flow++'s attention, gated convolutions and dropout
(Ho et al. 2019, section 3.3) -- is one value, ``ConditionerSpec``, the
spec's ``conditioner`` field; its fields are flat in the constructor's
arguments and in the stored configuration.

A field describes itself (``dataclasses.field`` metadata, ``option``): its
help text, its choices, and how it is stored -- always, or only when it and
the fields it depends on differ from their defaults (``recorded_with``), so
that a configuration written before an option existed stays as it was
(``.keras`` files, ``config.json`` of run directories); ``legacy`` is the value
a stored run configuration without the key means (the value before the option
existed).  The trainer declares its model flags from these fields
(``trainers/model_flags.py``): a new option is one field, its one use, and
the flag follows.

Example::

    spec = tfnvp.RealNVPSpec.cifar10()                        # section 4.1
    spec = dataclasses.replace(spec, hidden_channels=32)      # validated again
    model = tfnvp.RealNVP(spec)
    assert tfnvp.RealNVPSpec.from_config(model.get_config()) == model.spec
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

from tfnvp.errors import UsageError
from tfnvp.steps import multiscale
from tfnvp.steps.multiscale import Scale

__all__ = ["ConditionerSpec", "DEQUANTIZATIONS", "DEQUANTIZER_CHANNELS", "Fields", "ImageFlowSpec",
           "LOGIT_MAPS", "option"]

LOGIT_MAPS = ("symmetric", "asymmetric")
#: The image models' dequantizers (``dequantization=``): section 4.1's uniform noise, or
#: Flow++'s learned ``q(u | x)`` (``tfnvp.VariationalDequantizer``).
DEQUANTIZATIONS = ("uniform", "variational")
#: Default width of a variational dequantizer's networks (``VariationalDequantizer``'s
#: ``hidden_channels``; its context map has half as many features).
DEQUANTIZER_CHANNELS = 32

_NO_LEGACY = object()


def option(default: Any, help: str, *, choices: Sequence[Any] | None = None,
           recorded_with: tuple[str, ...] = (), legacy: Any = _NO_LEGACY,
           preset: bool = False) -> Any:
    """A specification field.

    Args:
      default: the value when the option is not given.
      help: what the option does (docstrings, the trainer's flag help).
      choices: the allowed values (checked by the specification).
      recorded_with: stored only when each of these fields differs from its default
        (empty: always stored).
      legacy: the value a stored run configuration without this key means.
      preset: the paper presets set it (the trainer requires it for datasets without one).
    """
    metadata = {"help": help, "choices": None if choices is None else tuple(choices),
                "recorded_with": tuple(recorded_with), "preset": preset}
    if legacy is not _NO_LEGACY:
        metadata["legacy"] = legacy
    return dataclasses.field(default=default, metadata=metadata)


class Fields:
    """What ``ConditionerSpec`` and the model specifications share: checks, the stored
    form, and the flat view of nested fields."""

    #: Fields holding a nested specification whose own fields are flat in the stored form.
    nested: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def options(cls) -> dict[str, dataclasses.Field]:
        """Every option by its flat name (nested specifications' fields included)."""
        result: dict[str, dataclasses.Field] = {}
        for field in dataclasses.fields(cls):
            if field.name in cls.nested:
                result.update(type(field.default).options())
            else:
                result[field.name] = field
        return result

    def _require(self, condition: bool, field: str, problem: str, fix: str = "") -> None:
        """``UsageError`` ``"<field> <problem>, got <value>. <fix>"`` unless ``condition``."""
        if not condition:
            raise UsageError(f"{field} {problem}, got {getattr(self, field)!r}."
                             + (f" {fix}" if fix else ""))

    def _normalize(self) -> None:
        """Casts the bool, int and float fields (e.g. NumPy scalars, JSON values) to their
        default's type."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            kind = type(field.default)
            if kind in (bool, int, float) and value is not None:
                self._set(field.name, kind(value))

    def _check_choices(self) -> None:
        for field in dataclasses.fields(self):
            choices = field.metadata.get("choices")
            if choices is not None:
                self._require(getattr(self, field.name) in choices, field.name,
                              f"must be one of {choices}")

    def _set(self, name: str, value: Any) -> None:
        """Sets a field in ``__post_init__`` (the dataclass is frozen)."""
        object.__setattr__(self, name, value)

    def _differs(self, name: str) -> bool:
        field = next(f for f in dataclasses.fields(self) if f.name == name)
        return getattr(self, name) != field.default

    def flat(self) -> dict[str, Any]:
        """Every option by its flat name, as ``options()`` (nested values flattened)."""
        result: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            result.update(value.flat() if field.name in self.nested else {field.name: value})
        return result

    def to_config(self) -> dict[str, Any]:
        """The stored form: flat, JSON-compatible (``get_config``, ``config.json``);
        fields with ``recorded_with`` only when those differ from their defaults."""
        config: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in self.nested:
                config.update(value.to_config())
            elif all(self._differs(name) for name in field.metadata.get("recorded_with", ())):
                config[field.name] = value
        return config

    @classmethod
    def _split(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """Constructor arguments from flat ``options`` (nested fields gathered)."""
        arguments = dict(options)
        for field in dataclasses.fields(cls):
            if field.name in cls.nested:
                nested = type(field.default)
                own = [name for name in nested.options() if name in arguments]
                arguments[field.name] = nested(**{name: arguments.pop(name) for name in own})
        return arguments


@dataclasses.dataclass(frozen=True)
class ConditionerSpec(Fields):
    """Flow++'s options of the coupling networks (Ho et al. 2019, section 3.3), off by
    default: the same value configures Real NVP's ResNets and Glow's networks.

    Attention goes to the steps at squeeze depth ``>= attention_min_depth``
    (``tfnvp.multiscale.Position.depth``); the model's specification checks
    that depth exists and that ``attention_heads`` divides the feature maps
    there.  ``layer_options(depth)`` is what one network at that depth gets.
    """

    attention: bool = option(False, "Flow++'s gated multi-head self-attention in the coupling "
                             "networks of the steps at squeeze depth >= attention_min_depth.",
                             recorded_with=("attention",))
    attention_heads: int = option(4, "Heads of each attention; must divide the networks' "
                                  "feature maps where there is attention.",
                                  recorded_with=("attention",))
    attention_min_depth: int = option(1, "Steps at this squeeze depth or deeper get attention "
                                      "(1: every step after the first squeeze).",
                                      recorded_with=("attention",))
    gated_convolutions: bool = option(False, "Flow++'s gated convolutions, h + a * sigmoid(g), "
                                      "in every coupling network.",
                                      recorded_with=("gated_convolutions",))
    dropout: float = option(0.0, "Dropout rate in [0, 1) on the coupling networks' hidden "
                            "activations, in training only (Flow++: 0.2).",
                            recorded_with=("dropout",))

    def __post_init__(self) -> None:
        self._normalize()
        self._require(self.attention_heads >= 1, "attention_heads", "must be at least 1")
        self._require(self.attention_min_depth >= 0, "attention_min_depth",
                      "must be a squeeze depth, at least 0")
        self._require(0.0 <= self.dropout < 1.0, "dropout",
                      "must be in [0, 1) (the fraction of hidden activations dropped in "
                      "training; 0: none)")

    def has_attention(self, depth: int) -> bool:
        """Whether the networks of the steps at squeeze ``depth`` have attention."""
        return self.attention and depth >= self.attention_min_depth

    def layer_options(self, depth: int) -> dict[str, Any]:
        """The keyword arguments of a coupling network (``tfnvp.nets.ResNet``,
        ``tfnvp.nets.GlowNet``) of a step at squeeze ``depth``."""
        return dict(attention=self.has_attention(depth), attention_heads=self.attention_heads,
                    gated=self.gated_convolutions, dropout=self.dropout)

    def check_attention(self, spec: ImageFlowSpec) -> None:
        """Checks ``attention_min_depth`` and ``attention_heads`` against a model's steps."""
        if not self.attention:
            return
        depths = spec.step_depths()
        self._require(self.attention_min_depth in depths, "attention_min_depth",
                      f"must be in [{depths[0]}, {depths[-1]}] (the squeeze depths of the "
                      f"model's steps for num_scales={spec.num_scales})")
        for depth in depths:
            width = spec.conditioner_width(depth)
            if self.has_attention(depth):
                self._require(width % self.attention_heads == 0, "attention_heads",
                              f"must divide the {width} feature maps of the coupling networks "
                              f"at squeeze depth {depth}", f"Choose a divisor of {width}.")


@dataclasses.dataclass(frozen=True)
class ImageFlowSpec(Fields):
    """What every image model's specification has (``tfnvp.ImageFlowModel``).

    Subclasses add their architecture's fields, define ``squeezes`` (how
    often the flow halves the height and width), ``step_depths`` and
    ``conditioner_width``, and call ``super().__post_init__()``.
    """

    image_shape: tuple[int, ...]
    _: dataclasses.KW_ONLY
    num_scales: int = option(2, "Scales of the multi-scale architecture.", preset=True)
    hidden_channels: int = option(64, "Feature maps of the coupling networks.", preset=True)
    alpha: float = option(0.05, "Logit preprocessing constant (section 4.1).")
    logit_map: str = option("symmetric", "symmetric (the release's alpha + (1 - 2 alpha) x/256) "
                            "or asymmetric (section 4.1's formula); see LogitPreprocess.",
                            choices=LOGIT_MAPS, legacy="asymmetric")
    dtype: str = option("float32", "float32 or float64, for every variable and the flow "
                        "arithmetic.")
    conditioner_dtype: str | None = option(
        None, "Keras dtype policy of the coupling networks, e.g. mixed_bfloat16 (None: "
        "Keras' global policy if it is a mixed one and dtype is float32, else dtype).")
    validate_args: bool = option(True, "Check pixel values (finite, in range) in the "
                                 "user-facing methods; static checks always run.")
    num_classes: int | None = option(
        None, "K makes the model class-conditional (tfnvp.conditional): labels reach every "
        "coupling network and the prior is N(mu_y, sigma_y^2) per class (Glow with "
        "class_conditioning=release: labels reach its top prior only).",
        recorded_with=("num_classes",))
    dequantization: str = option(
        "uniform", "uniform (section 4.1) or variational (Flow++'s learned q(u | x), trained "
        "with the flow on the variational bound).", choices=DEQUANTIZATIONS,
        recorded_with=("dequantization",))
    dequantizer_channels: int = option(
        DEQUANTIZER_CHANNELS, "Width of the variational dequantizer's networks (its context "
        "map half as wide).", recorded_with=("dequantization", "dequantizer_channels"))
    conditioner: ConditionerSpec = ConditionerSpec()

    nested = ("conditioner",)

    def __post_init__(self) -> None:
        self._normalize()
        self._check_choices()
        try:
            shape = tuple(int(d) for d in self.image_shape)
        except (TypeError, ValueError):
            shape = ()
        self._require(len(shape) == 3 and min(shape) >= 1, "image_shape",
                      "must be (height, width, channels), each at least 1")
        self._set("image_shape", shape)
        self._require(self.num_scales >= 1, "num_scales", "must be at least 1")
        factor = 2 ** self.squeezes
        self._require(shape[0] % factor == 0 and shape[1] % factor == 0, "image_shape",
                      f"height and width must be divisible by {factor} for num_scales="
                      f"{self.num_scales} (the flow halves them {self.squeezes} times)",
                      "Use fewer scales or another image size.")
        self._require(self.hidden_channels >= 1, "hidden_channels", "must be at least 1")
        dtype = tf.as_dtype(self.dtype)
        self._require(dtype in (tf.float32, tf.float64), "dtype", "must be float32 or float64")
        self._set("dtype", dtype.name)
        self._require(self.num_classes is None or self.num_classes >= 1, "num_classes",
                      "must be at least 1 (None: an unconditional model)")
        if self.num_classes is not None:
            self._set("num_classes", int(self.num_classes))
        self._require(self.dequantizer_channels >= 2, "dequantizer_channels",
                      "must be at least 2 (its context map is half as wide)")
        self.conditioner.check_attention(self)

    def with_options(self, **options: Any) -> ImageFlowSpec:
        """A copy with some options (flat names, ``options()``) changed, validated again."""
        return type(self)(**self._split({**self.flat(), **options}))

    @property
    def squeezes(self) -> int:
        """How often the flow halves the height and width."""
        raise NotImplementedError

    def layout(self) -> tuple[Scale, ...]:
        """The architecture's ``tfnvp.multiscale`` declaration without step types (the
        latent layout)."""
        raise NotImplementedError

    def latent_scale_index(self, image_shape: Sequence[int] | None = None) -> np.ndarray:
        """The scale each latent entry leaves the flow at (0 the finest), for images of
        ``image_shape`` (default: the specification's); ``multiscale.latent_scale_index``."""
        return multiscale.latent_scale_index(self.layout(), image_shape or self.image_shape)

    def step_depths(self) -> range:
        """The squeeze depths of the model's steps (``multiscale.Position.depth``)."""
        raise NotImplementedError

    def conditioner_width(self, depth: int) -> int:
        """Feature maps of the coupling networks of the steps at squeeze ``depth``."""
        raise NotImplementedError

    @classmethod
    def of(cls, spec_or_image_shape: ImageFlowSpec | Sequence[int],
           **options: Any) -> ImageFlowSpec:
        """``spec`` itself, or the specification of ``image_shape`` and flat ``options``
        (the model constructors' two forms)."""
        if isinstance(spec_or_image_shape, ImageFlowSpec):
            if not isinstance(spec_or_image_shape, cls):
                raise UsageError(f"Expected a {cls.__name__}, got a "
                                 f"{type(spec_or_image_shape).__name__}.")
            if options:
                raise UsageError(f"Pass a {cls.__name__} or options, not both (got "
                                 f"{sorted(options)}): dataclasses.replace(spec, ...) changes "
                                 "a specification.")
            return spec_or_image_shape
        return cls.from_config(dict(options, image_shape=spec_or_image_shape))

    @classmethod
    def from_config(cls, config: Mapping[str, Any], legacy: bool = False) -> ImageFlowSpec:
        """The specification of a stored (flat) configuration, ``to_config``'s inverse.

        ``legacy``: a key that is absent takes its field's ``legacy`` value
        (the value before the option existed), as for a run directory's
        ``config.json``; else its default.
        """
        known = cls.options()
        unknown = sorted(set(config) - set(known))
        if unknown:
            raise UsageError(f"{cls.__name__}: unknown options {unknown}; the options are "
                             f"{sorted(known)}.")
        if legacy:
            config = {**cls.legacy_defaults(), **config}
        return cls(**cls._split(config))

    @classmethod
    def legacy_defaults(cls) -> dict[str, Any]:
        """What a stored run configuration without these keys means."""
        return {name: field.metadata["legacy"] for name, field in cls.options().items()
                if "legacy" in field.metadata}

    @classmethod
    def presets(cls) -> dict[str, Any]:
        """The published configurations: name -> constructor (``classmethod``)."""
        return {}

    @classmethod
    def paper(cls, name: str, **overrides: Any) -> ImageFlowSpec:
        """The published configuration ``name`` (``presets()``), with ``overrides``."""
        presets = cls.presets()
        if name not in presets:
            raise UsageError(f"Unknown paper configuration {name!r} for {cls.__name__}; "
                             f"choose one of {sorted(presets)}.")
        return presets[name](**overrides)

    def preset_fields(self) -> dict[str, Any]:
        """The fields a paper preset sets (``option(preset=True)``) and the image shape."""
        return {"image_shape": self.image_shape,
                **{name: getattr(self, name) for name, field in self.options().items()
                   if field.metadata.get("preset")}}

