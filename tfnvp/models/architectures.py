"""The image architectures by name: the one place that maps a name to its model and spec.

``ARCHITECTURES`` maps the name a run directory, an export and the
trainer's ``--model`` use to the model class; the class names its
specification (``model_class.spec_class``).  A stored model configuration
(``config.json``'s ``"model"``, an export's ``"model_config"``) is the
specification's ``to_config()`` plus, unless the architecture is Real NVP,
its name under ``ARCHITECTURE_KEY``: configurations written before other
architectures existed stay as they were.  ``stored_config`` writes that form,
``spec_from_stored`` reads it (a key written before its option existed takes
the option's ``legacy`` value), ``build`` makes the model of a specification.

Example::

    spec = tfnvp.models.architectures.spec_from_stored(tfnvp.runs.read_config(run)["model"])
    model = tfnvp.models.architectures.build(spec)
"""

from __future__ import annotations

from typing import Any, Mapping

from tfnvp.errors import UsageError
from tfnvp.models.glow import Glow
from tfnvp.models.image_flow import ImageFlowModel
from tfnvp.models.realnvp import RealNVP
from tfnvp.models.spec import ImageFlowSpec

__all__ = ["ARCHITECTURES", "ARCHITECTURE_KEY", "DEFAULT_ARCHITECTURE", "architecture_of",
           "build", "spec_class", "spec_from_stored", "stored_config"]

#: The model class of each architecture name (its specification is ``spec_class``).
ARCHITECTURES: dict[str, type[ImageFlowModel]] = {"realnvp": RealNVP, "glow": Glow}
#: A stored configuration without ``ARCHITECTURE_KEY`` is of this architecture.
DEFAULT_ARCHITECTURE = "realnvp"
ARCHITECTURE_KEY = "architecture"


def spec_class(name: str) -> type[ImageFlowSpec]:
    """The specification class of architecture ``name``."""
    if name not in ARCHITECTURES:
        raise UsageError(f"Unknown model architecture {name!r} (known: {sorted(ARCHITECTURES)}).")
    return ARCHITECTURES[name].spec_class


def architecture_of(item: ImageFlowModel | ImageFlowSpec) -> str:
    """The ``ARCHITECTURES`` name of a model or a specification."""
    for name, model_class in ARCHITECTURES.items():
        if type(item) in (model_class, model_class.spec_class):
            return name
    raise TypeError(f"No architecture name for {type(item).__name__}; known: "
                    f"{sorted(ARCHITECTURES)}.")


def build(spec: ImageFlowSpec, **keras_arguments: Any) -> ImageFlowModel:
    """The model of ``spec`` (``keras_arguments``: e.g. ``name``)."""
    return ARCHITECTURES[architecture_of(spec)](spec, **keras_arguments)


def stored_config(spec: ImageFlowSpec) -> dict[str, Any]:
    """The stored form of ``spec``: ``spec.to_config()``, with ``ARCHITECTURE_KEY`` unless
    it is of the ``DEFAULT_ARCHITECTURE``."""
    name = architecture_of(spec)
    config = spec.to_config()
    if name != DEFAULT_ARCHITECTURE:
        config[ARCHITECTURE_KEY] = name
    return config


def spec_from_stored(config: Mapping[str, Any]) -> ImageFlowSpec:
    """The specification of a stored model configuration (``stored_config``'s inverse;
    absent keys take their options' ``legacy`` values)."""
    config = dict(config)
    name = config.pop(ARCHITECTURE_KEY, DEFAULT_ARCHITECTURE)
    if name not in ARCHITECTURES:
        raise UsageError(f"Unknown model architecture {name!r} in the stored configuration "
                         f"(known: {sorted(ARCHITECTURES)}): written by a newer tfnvp?")
    return spec_class(name).from_config(config, legacy=True)
