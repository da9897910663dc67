"""Issue 28, item 5: run directories and ``.keras`` files written by the code before the
layout by role (commit 307fba3; ``tests/legacy_artifacts.py`` wrote them) load with the
current code and give the outputs recorded then."""

from __future__ import annotations

import shutil

import keras
import legacy_artifacts
import numpy as np
import pytest

import tfnvp

EXPECTED = legacy_artifacts.DATA / "expected.npz"


def _check(name: str, model) -> None:
    expected = np.load(EXPECTED)
    for key, value in legacy_artifacts.outputs(model).items():
        np.testing.assert_allclose(
            value, expected[f"{name}_{key}"], rtol=1e-6, atol=0,
            err_msg=f"{key} of the legacy artifact {name} ({legacy_artifacts.DATA}) changed")


@pytest.mark.parametrize("name", sorted(legacy_artifacts.RUNS))
def test_legacy_run_directory_loads(name, tmp_path):
    run = tmp_path / name
    shutil.copytree(legacy_artifacts.DATA / "runs" / name, run)
    model = tfnvp.load_run(run)
    assert type(model).__name__ == {"realnvp": "RealNVP", "glow": "Glow"}[name]
    _check(f"run_{name}", model)


@pytest.mark.parametrize("name", sorted(legacy_artifacts.KERAS_FILES))
def test_legacy_keras_file_loads(name):
    model = keras.saving.load_model(legacy_artifacts.DATA / f"{name}.keras")
    assert type(model).__name__ == {"realnvp": "RealNVP", "glow": "Glow"}[name]
    _check(f"keras_{name}", model)
