"""docs/api.md covers the public API and the trainer's flags, and keeps up with their signatures."""

from __future__ import annotations

import inspect
import os
import re

import pytest

import tfnvp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(ROOT, "docs", "api.md")) as _f:
    API = _f.read()


@pytest.mark.parametrize("name", tfnvp.__all__)
def test_every_export_is_documented(name):
    assert f"tfnvp.{name}" in API or f"`{name}(" in API, name


@pytest.mark.parametrize("module", ["bijectors", "nets", "latent", "grid", "toy_data"])
def test_every_module_member_is_documented(module):
    missing = [n for n in getattr(tfnvp, module).__all__ if not re.search(rf"\b{n}\b", API)]
    assert missing == []


@pytest.mark.parametrize("cls", [tfnvp.RealNVP, tfnvp.Glow, tfnvp.DenseRealNVP,
                                 tfnvp.PiecewiseLinearFlow])
def test_constructor_signatures(cls):
    block = re.search(rf"```python\n{cls.__name__}\((.*?)\)\n```", API, re.S)
    assert block, f"no signature block for {cls.__name__}"
    documented = re.findall(r"(\*{0,2}\w+)(?::|,|$)", block.group(1).replace("\n", " "))
    documented = [d for d in documented if d in inspect.signature(cls).parameters
                  or d.lstrip("*") in inspect.signature(cls).parameters]
    assert [d.lstrip("*") for d in documented] == list(inspect.signature(cls).parameters)


def test_every_trainer_flag_is_documented():
    from trainers import model_flags

    with open(os.path.join(ROOT, "trainers", "train.py")) as f:
        flags = re.findall(r'flags\.DEFINE_\w+\("(\w+)"', f.read()) + model_flags.flag_names()
    assert len(flags) > 20
    assert [f for f in flags if f"`--{f}" not in API] == []
