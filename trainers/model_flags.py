"""The trainer's model flags, declared from the models' specifications, and the one place
that turns them into a specification.

Every option of a model specification (``tfnvp.RealNVPSpec``, ``tfnvp.GlowSpec``,
their ``tfnvp.ConditionerSpec``) is a flag of the same name, type and help
(``tfnvp.models.spec.option``), except ``DERIVED``: those the trainer sets
from the data and its other flags.  A flag left unset takes, for the options
a paper preset sets (``option(preset=True)``: the scales, blocks, steps and
widths), the preset of the dataset's paper (section 4.1's for Real NVP,
``tfnvp.RealNVPSpec.presets()``; Glow's, ``tfnvp.GlowSpec.presets()``) and is
required for a dataset without one; for the others, the specification's
default.  So a new model option is one field of its specification and its
one use in the model: the flag, its help and its default follow.

``model_spec`` builds the specification; the specification checks the values
(a ``tfnvp.UsageError`` naming the flag and the fix).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from absl import flags, logging

import tfnvp
from tfnvp.models import architectures
from tfnvp.models.architectures import ARCHITECTURES

__all__ = ["DERIVED", "define_flags", "flag_names", "model_spec", "paper_preset_name"]

#: Specification fields the trainer sets itself, and from what.
DERIVED = {"image_shape": "the dataset's image shape",
           "num_classes": "--conditional: the dataset's number of classes",
           "conditioner_dtype": "--mixed_precision",
           "synchronized_batch_norm": "the number of replicas (training.build_model)",
           "dtype": "float32", "validate_args": "the default"}

_NAMES = {"realnvp": "Real NVP", "glow": "Glow"}
_DEFINE = {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           str: flags.DEFINE_string}


def _options() -> dict[str, dict[str, dataclasses.Field]]:
    """Flag name -> {architecture: its specification's field}, in declaration order."""
    result: dict[str, dict[str, dataclasses.Field]] = {}
    for architecture in ARCHITECTURES:
        for name, field in architectures.spec_class(architecture).options().items():
            if name not in DERIVED:
                result.setdefault(name, {})[architecture] = field
    return result


def flag_names() -> list[str]:
    """The model flags ``define_flags`` declares."""
    return list(_options())


def _help(fields: dict[str, dataclasses.Field]) -> str:
    """The fields' help, per architecture where it differs, and the default."""
    def label(architecture: str) -> str:
        return "" if len(fields) == len(ARCHITECTURES) else f"{_NAMES[architecture]}: "

    texts = {field.metadata["help"] for field in fields.values()}
    if len(texts) == 1:
        text = label(next(iter(fields))) + texts.pop()
    else:
        text = " ".join(f"{_NAMES[a]}: {field.metadata['help']}" for a, field in fields.items())
    if any(field.metadata.get("preset") for field in fields.values()):
        return text + " Unset: the --model's paper preset for --dataset (required for others)."
    defaults = {a: str(field.default).lower() if isinstance(field.default, bool)
                else str(field.default) for a, field in fields.items()}
    if len(set(defaults.values())) == 1:
        return text + f" Unset: {next(iter(defaults.values()))}."
    return text + " Unset: " + ", ".join(f"{_NAMES[a]} {d}" for a, d in defaults.items()) + "."


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Declares one flag per specification option (default: unset, ``model_spec``)."""
    for name, fields in _options().items():
        field = next(iter(fields.values()))
        choices = [c for f in fields.values() for c in (f.metadata.get("choices") or ())]
        help_text = _help(fields)
        if choices:
            flags.DEFINE_enum(name, None, list(dict.fromkeys(choices)), help_text,
                              flag_values=flag_values)
        else:
            _DEFINE[type(field.default)](name, None, help_text, flag_values=flag_values)


def paper_preset_name(dataset: str, architecture: str) -> str | None:
    """The ``architecture``'s paper preset for ``dataset`` (``lsun_*``: ``lsun``), if any."""
    name = "lsun" if dataset.startswith("lsun_") else dataset
    return name if name in architectures.spec_class(architecture).presets() else None


def model_spec(flag_values: flags.FlagValues, dataset: str, image_shape: Sequence[int],
               num_classes: int | None, conditioner_dtype: str | None
               ) -> tfnvp.ImageFlowSpec:
    """The ``--model``'s specification from the model flags, for ``dataset``'s images.

    Raises ``tfnvp.UsageError`` for a required flag left unset, or a value the
    specification refuses (the message names the flag); a flag of another
    architecture is ignored with a warning.
    """
    architecture = flag_values.model
    spec_class = architectures.spec_class(architecture)
    own = spec_class.options()
    given = {name: flag_values[name].value for name in flag_names()
             if flag_values[name].value is not None}
    for name in sorted(set(given) - set(own)):
        logging.warning("--%s=%s is not a --model=%s setting: ignored.", name, given.pop(name),
                        architecture)
    preset = paper_preset_name(dataset, architecture)
    values: dict[str, Any] = {}
    if preset is not None:
        values.update(spec_class.paper(preset).preset_fields())
    else:
        missing = [name for name, field in own.items()
                   if field.metadata.get("preset") and name not in given]
        if missing:
            raise tfnvp.UsageError(
                f"--model={architecture} --dataset={dataset} needs "
                f"{', '.join('--' + name for name in missing)} (the dataset has no paper "
                f"configuration; those exist for {sorted(spec_class.presets())}).")
    values.update(given, image_shape=tuple(image_shape), num_classes=num_classes,
                  conditioner_dtype=conditioner_dtype)
    try:
        return spec_class.from_config(values)
    except tfnvp.UsageError as error:
        raise tfnvp.UsageError(f"--model={architecture}: {error}") from error
