"""Issue 28, item 1: one specification per model (``tfnvp.RealNVPSpec``, ``tfnvp.GlowSpec``,
``tfnvp.ConditionerSpec``): validated once with errors naming the field, the paper presets,
the stored form (``get_config``, ``config.json``) as before, and the trainer's flags."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import tfnvp
from tfnvp.models import architectures
from trainers import model_flags, train

from trainer_flags import trainer_spec

REPO = Path(__file__).resolve().parent.parent
OLD_CONFIGS = json.loads((REPO / "tests" / "data" / "model_configs_307fba3.json").read_text())
SMALL = dict(image_shape=(8, 8, 1), num_scales=2, hidden_channels=4)


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize("spec_class, options, message", [
    (tfnvp.RealNVPSpec, dict(num_scales=3, image_shape=(6, 6, 1)),
     r"image_shape height and width must be divisible by 4 for num_scales=3 .* Use fewer"),
    (tfnvp.RealNVPSpec, dict(image_shape=(8, 8)), r"image_shape must be \(height, width, "),
    (tfnvp.RealNVPSpec, dict(hidden_channels=0), "hidden_channels must be at least 1, got 0"),
    (tfnvp.RealNVPSpec, dict(num_res_blocks=-1), "num_res_blocks must be at least 0, got -1"),
    (tfnvp.RealNVPSpec, dict(factor_out="rows"), "factor_out must be one of .*, got 'rows'"),
    (tfnvp.RealNVPSpec, dict(coupling="additive"), "coupling must be one of .*'additive'"),
    (tfnvp.RealNVPSpec, dict(batch_norm_momentum=1.0), r"batch_norm_momentum must be in \[0, 1\)"),
    (tfnvp.RealNVPSpec, dict(mixture_components=0), "mixture_components must be at least 1"),
    (tfnvp.RealNVPSpec, dict(dtype="float16"), "dtype must be float32 or float64"),
    (tfnvp.RealNVPSpec, dict(num_classes=0), "num_classes must be at least 1"),
    (tfnvp.RealNVPSpec, dict(dequantization="gaussian"), "dequantization must be one of"),
    (tfnvp.RealNVPSpec, dict(dequantizer_channels=1), "dequantizer_channels must be at least 2"),
    (tfnvp.RealNVPSpec, dict(dropout=0.1, recompute_gradients=True),
     "recompute_gradients=True cannot be combined with dropout=0.1.*use dropout=0"),
    (tfnvp.RealNVPSpec, dict(attention=True, num_res_blocks=0),
     "attention=True needs num_res_blocks >= 1"),
    (tfnvp.RealNVPSpec, dict(attention=True, attention_min_depth=2),
     r"attention_min_depth must be in \[0, 1\] .*num_scales=2\), got 2"),
    (tfnvp.RealNVPSpec, dict(attention=True, attention_heads=3),  # 8 feature maps at depth 1
     "attention_heads must divide the 8 feature maps .* depth 1, got 3. Choose a divisor of 8"),
    (tfnvp.RealNVPSpec, dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
    (tfnvp.RealNVPSpec, dict(no_such_option=1), r"unknown options \['no_such_option'\]"),
    (tfnvp.GlowSpec, dict(steps_per_scale=0), "steps_per_scale must be at least 1, got 0"),
    (tfnvp.GlowSpec, dict(coupling="logistic_mixture"),
     r"coupling must be one of \('affine', 'additive'\), got 'logistic_mixture'"),
    (tfnvp.GlowSpec, dict(num_scales=4), "divisible by 16 for num_scales=4"),
    (tfnvp.GlowSpec, dict(attention=True, attention_min_depth=0),
     r"attention_min_depth must be in \[1, 2\]"),
    (tfnvp.GlowSpec, dict(attention=True, attention_heads=3),
     "attention_heads must divide the 4 feature maps"),
])
def test_a_bad_option_is_a_usage_error_naming_the_field(spec_class, options, message):
    defaults = dict(SMALL, num_res_blocks=1) if spec_class is tfnvp.RealNVPSpec else dict(
        SMALL, steps_per_scale=1)
    with pytest.raises(tfnvp.UsageError, match=message):
        spec_class.from_config({**defaults, **options})


def test_the_model_takes_a_spec_or_its_options_not_both():
    spec = tfnvp.GlowSpec(**SMALL, steps_per_scale=1)
    with pytest.raises(tfnvp.UsageError, match="Pass a GlowSpec or options, not both"):
        tfnvp.Glow(spec, hidden_channels=8)
    with pytest.raises(tfnvp.UsageError, match="Expected a RealNVPSpec, got a GlowSpec"):
        tfnvp.RealNVP(spec)
    with pytest.raises(TypeError):  # Options are keywords: a positional one is refused.
        tfnvp.RealNVP((8, 8, 1), 2)


def test_a_spec_is_frozen_and_changed_by_with_options_validated_again():
    spec = tfnvp.RealNVPSpec(**SMALL, num_res_blocks=1)
    with pytest.raises(AttributeError):
        spec.hidden_channels = 8
    wider = spec.with_options(hidden_channels=8, attention=True, attention_heads=2)
    assert (wider.hidden_channels, wider.conditioner.attention) == (8, True)
    assert spec.hidden_channels == 4 and not spec.conditioner.attention
    with pytest.raises(tfnvp.UsageError, match="attention_heads must divide"):
        spec.with_options(attention=True, attention_heads=3)


def test_the_conditioner_options_are_one_value_given_to_every_network():
    conditioner = tfnvp.ConditionerSpec(attention=True, attention_heads=2, attention_min_depth=1,
                                        gated_convolutions=True, dropout=0.1)
    spec = tfnvp.RealNVPSpec(**SMALL, num_res_blocks=1, conditioner=conditioner)
    assert spec == tfnvp.RealNVPSpec.from_config(dict(  # The flat names of the stored form.
        SMALL, num_res_blocks=1, attention=True, attention_heads=2, gated_convolutions=True,
        dropout=0.1))
    assert conditioner.layer_options(0) == dict(attention=False, attention_heads=2, gated=True,
                                                dropout=0.1)
    assert conditioner.layer_options(1)["attention"]
    model = tfnvp.RealNVP(spec)
    for layer, position in zip(model.conditioners,
                               (p for _, p in tfnvp.multiscale.walk(model._untracked.scales, 1))):
        body = layer.body
        assert (bool(body.attentions), body.gated, body.dropout) == (
            position.depth >= 1, True, 0.1)


# ------------------------------------------------------------------ presets
def test_presets_are_section_4_1_and_the_paper_configs_derive_from_them():
    for name, preset in tfnvp.RealNVPSpec.presets().items():
        spec = preset()
        assert tfnvp.PAPER_CONFIGS[name] == spec.preset_fields()
        assert tfnvp.RealNVPSpec.paper(name) == spec
        assert spec.image_shape[0] // 2 ** spec.squeezes == (16 if name == "cifar10" else 4)
    assert tfnvp.RealNVPSpec.cifar10(hidden_channels=32).hidden_channels == 32
    assert tfnvp.GlowSpec.cifar10().preset_fields() == tfnvp.GLOW_PAPER_CONFIGS["cifar10"]
    with pytest.raises(tfnvp.UsageError, match="Unknown paper configuration 'mnist'"):
        tfnvp.GlowSpec.paper("mnist")


def _flagfile_values(path: Path) -> dict[str, str]:
    """The ``--name=value`` lines of a flagfile."""
    return dict(re.findall(r"^--(\w+)=(.*)$", path.read_text(), flags=re.MULTILINE))


@pytest.mark.parametrize("path", sorted((REPO / "trainers").glob("*.flags")), ids=lambda p: p.stem)
def test_the_flagfiles_and_the_presets_agree(path):
    """A flagfile of a paper's dataset states its model's preset sizes (Flow++'s own sizes
    excepted), and the trainer builds exactly that preset from it."""
    values = _flagfile_values(path)
    architecture = values.get("model", "realnvp")
    dataset = values["dataset"]
    preset = model_flags.paper_preset_name(dataset, architecture)
    if preset is None or path.stem == "flowpp_cifar":
        pytest.skip(f"{path.name}: not a paper preset of --model={architecture}")
    expected = architectures.spec_class(architecture).paper(preset)
    stated = {name: int(values[name]) for name in expected.preset_fields() if name in values}
    assert stated == {k: v for k, v in expected.preset_fields().items() if k != "image_shape"}
    spec = trainer_spec(f"--flagfile={path.name}", dataset=dataset, shape=expected.image_shape)
    assert spec.preset_fields() == expected.preset_fields()


# ----------------------------------------------------------------- stored form
@pytest.mark.parametrize("name", sorted(OLD_CONFIGS["cases"]))
def test_the_stored_form_is_the_old_get_config(name):
    """The same arguments give the configuration written before the specifications (commit
    307fba3): old .keras files and config.json files compare equal on resume."""
    case = OLD_CONFIGS["cases"][name]
    spec_class = getattr(tfnvp, case["model"]).spec_class
    # Options added since with a legacy value (e.g. Glow's learned priors), at that value:
    # the model of then.
    later = {name: value for name, value in spec_class.legacy_defaults().items()
             if name not in case["config"]}
    spec = spec_class.from_config({**case["arguments"], **later})
    stored = json.loads(json.dumps(spec.to_config()))
    assert stored == {**case["config"], **later}
    assert spec_class.from_config(case["config"], legacy=True) == spec_class.from_config(stored)


@pytest.mark.parametrize("spec", [
    tfnvp.RealNVPSpec(**SMALL, num_res_blocks=1, dtype="float64", num_classes=3,
                      coupling="logistic_mixture", mixture_components=2, factor_out="channel",
                      conditioner=tfnvp.ConditionerSpec(attention=True, attention_heads=2,
                                                        dropout=0.2)),
    tfnvp.GlowSpec(**SMALL, steps_per_scale=1, coupling="additive", dequantization="variational",
                   dequantizer_channels=6,
                   conditioner=tfnvp.ConditionerSpec(gated_convolutions=True)),
], ids=["realnvp", "glow"])
def test_round_trip_spec_config_json_spec(spec):
    stored = json.loads(json.dumps(architectures.stored_config(spec)))
    assert (architectures.ARCHITECTURE_KEY in stored) == isinstance(spec, tfnvp.GlowSpec)
    assert architectures.spec_from_stored(stored) == spec


def test_an_old_run_config_without_the_later_options_takes_their_legacy_values():
    stored = dict(image_shape=[8, 8, 1], num_scales=2, num_res_blocks=1, hidden_channels=4)
    spec = architectures.spec_from_stored(stored)
    assert (spec.skip_connections, spec.logit_map, spec.factor_out) == (
        False, "asymmetric", "channel")
    assert tfnvp.RealNVPSpec.from_config(stored).factor_out == "checkerboard"  # Not legacy.
    with pytest.raises(tfnvp.UsageError, match="Unknown model architecture 'flow'"):
        architectures.spec_from_stored({**stored, architectures.ARCHITECTURE_KEY: "flow"})


def test_the_model_records_its_spec_as_get_config():
    spec = tfnvp.GlowSpec(**SMALL, steps_per_scale=1, num_classes=2)
    model = architectures.build(spec)
    assert type(model) is tfnvp.Glow and model.spec == spec
    assert model.get_config() == spec.to_config()
    assert tfnvp.Glow.from_config(model.get_config()).spec == spec
    assert architectures.architecture_of(model) == architectures.architecture_of(spec) == "glow"


# -------------------------------------------------------------------- trainer
def test_every_spec_option_is_a_trainer_flag_but_those_the_trainer_derives():
    options = {name for architecture in architectures.ARCHITECTURES
               for name in architectures.spec_class(architecture).options()}
    assert set(model_flags.flag_names()) == options - set(model_flags.DERIVED)
    assert set(model_flags.DERIVED) <= options
    for name in model_flags.flag_names():
        assert train.FLAGS[name].default is None, name  # Unset: the preset or the default.
        assert train.FLAGS[name].help, name


def test_the_trainer_flags_produce_the_spec():
    spec = trainer_spec("--num_scales=2", "--num_res_blocks=1", "--hidden_channels=4",
                        "--attention", "--attention_heads=2", "--nobatch_norm",
                        "--factor_out=channel", "--batch_norm_momentum=0.9")
    assert spec == tfnvp.RealNVPSpec(
        **SMALL, num_res_blocks=1, batch_norm=False, factor_out="channel",
        batch_norm_momentum=0.9,
        conditioner=tfnvp.ConditionerSpec(attention=True, attention_heads=2))
    # A flag of the other architecture is ignored (with a warning).
    assert trainer_spec("--model=glow", "--num_scales=2", "--steps_per_scale=1",
                        "--hidden_channels=4", "--num_res_blocks=3") == tfnvp.GlowSpec(
        **SMALL, steps_per_scale=1)
    with pytest.raises(tfnvp.UsageError,
                       match="--model=realnvp: hidden_channels must be at least 1, got 0"):
        trainer_spec("--num_scales=2", "--num_res_blocks=1", "--hidden_channels=0")
    with pytest.raises(tfnvp.UsageError, match="--model=glow: coupling must be one of "
                                               r"\('affine', 'additive'\), got 'logistic_mix"):
        trainer_spec("--model=glow", "--num_scales=2", "--steps_per_scale=1",
                     "--hidden_channels=4", "--coupling=logistic_mixture")
    with pytest.raises(tfnvp.UsageError, match="--model=realnvp --dataset=digits needs "
                                               r"--num_res_blocks \(the dataset has no paper"):
        trainer_spec("--num_scales=2", "--hidden_channels=4")
