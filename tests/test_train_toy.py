"""Smoke tests of trainers/train_toy.py: tiny runs write a valid PNG."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from trainers import train_toy


@pytest.mark.parametrize("dataset,coupling", [("moons", "logistic_mixture"),
                                              ("gmm1d", "affine")])
def test_run_writes_png(tmp_path, dataset: str, coupling: str) -> None:
    out = tmp_path / "figures" / f"{dataset}.png"
    result = train_toy.run(dataset=dataset, steps=3, batch_size=64, hidden_dim=8, depth=1,
                           num_couplings=2, num_train=256, num_test=256, num_bins=8,
                           out=str(out), grid_size=30, verbose=False, coupling=coupling,
                           mixture_components=2)
    if dataset == "moons":  # The 2-D flow is built with the coupling asked for.
        assert result["model"].get_config()["coupling"] == coupling
    assert result["out"] == str(out)
    assert np.isfinite(result["test_nll"]) and np.isfinite(result["train_loss"])
    assert (result["true_entropy"] is not None) == (dataset == "gmm1d")
    with Image.open(out) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width > 2 * height > 0  # one row of four panels
        image.verify()


def test_unknown_dataset() -> None:
    with pytest.raises(ValueError, match="moons"):
        train_toy.run(dataset="spirals", steps=0)
