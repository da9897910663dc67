"""The trainer turns on TensorFlow's oneDNN CPU kernels, and they compute the same flow.

``trainers/train.py`` sets ``TF_ENABLE_ONEDNN_OPTS=1`` unless the user set it (TensorFlow
reads it once, when it loads, and leaves oneDNN off on some CPUs, AVX2-only ones among
them).  oneDNN rewrites the graph (its own fused convolution, batch-norm and bias kernels),
so the same float32 model is run in two fresh processes, oneDNN on and off, and every
user-facing result is compared: evaluation- and training-mode ``log_prob`` (batch-norm folding
and batch statistics), sampling, the trainer's gradients and one Adam update.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import trainers.train  # Sets TF_ENABLE_ONEDNN_OPTS unless it is set.
    import keras
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port
    import tfnvp
    from trainers import steps as steps_lib

    keras.utils.set_random_seed(0)
    shape = (8, 8, 3)
    model = tfnvp.RealNVP(shape, num_scales=2, num_res_blocks=1, hidden_channels=16)
    images = tf.random.stateless_uniform((16,) + shape, [1, 2], 0.0, 255.999)
    model.log_prob(images)
    rng = np.random.default_rng(1)  # Every weight off its initial value (zero gains too).
    for v in model.weights:
        value = v.numpy()
        if "moving_variance" in v.path:
            v.assign(value * np.exp(rng.normal(0, 0.1, value.shape)).astype(value.dtype))
        else:
            v.assign(value + rng.normal(0, 0.05, value.shape).astype(value.dtype))
    out = dict(onednn=bool(_pywrap_util_port.IsMklEnabled()),
               log_prob=model.log_prob(images).numpy().tolist(),
               log_prob_training=model.log_prob(images, training=True).numpy().tolist(),
               sample=model.sample(4, seed=[3, 4]).numpy().tolist())
    steps = steps_lib.TrainSteps(model, steps_lib.make_optimizer(1e-3),
                                 tf.distribute.get_strategy(),
                                 tf.TensorSpec((16,) + shape, tf.float32), 16)
    before = [v.numpy() for v in model.trainable_variables]
    stats = steps.train_step(images)
    out["nll"] = float(stats["nll"])
    out["grad_norm"] = float(stats["grad_norm"])
    out["update"] = float(sum(np.abs(v.numpy() - b).sum()
                              for v, b in zip(model.trainable_variables, before)))
    out["log_prob_after_step"] = model.log_prob(images).numpy().tolist()
    print("RESULT " + json.dumps(out))
""")


def _run(onednn: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if onednn is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = onednn
    env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=600)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def runs() -> dict:
    return {"trainer default": _run(None), "off": _run("0")}


def test_the_trainer_turns_onednn_on_unless_told_otherwise(runs):
    assert runs["trainer default"]["onednn"] is True
    assert runs["off"]["onednn"] is False


@pytest.mark.parametrize("key", ["log_prob", "log_prob_training", "sample", "nll", "grad_norm",
                                 "log_prob_after_step"])
def test_onednn_and_eigen_kernels_give_the_same_results(runs, key):
    on, off = (np.asarray(runs[k][key]) for k in ("trainer default", "off"))
    assert np.all(np.isfinite(on)) and np.all(np.isfinite(off))
    # float32 on both sides: only the order of the sums differs (measured: <= 2e-6 relative).
    np.testing.assert_allclose(on, off, rtol=1e-5, atol=1e-3)


def test_the_training_step_updates_the_weights_the_same(runs):
    on, off = runs["trainer default"]["update"], runs["off"]["update"]
    assert on > 0
    np.testing.assert_allclose(on, off, rtol=1e-4)


@pytest.mark.parametrize("given", [None, "0"])
def test_the_library_chooses_onednn_unless_the_user_did(given):
    """``import tfnvp`` before TensorFlow turns the oneDNN kernels on, unless
    ``TF_ENABLE_ONEDNN_OPTS`` is set (then the user's choice stands)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if given is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = given
    script = ("import os, tfnvp; print('RESULT', os.environ['TF_ENABLE_ONEDNN_OPTS'], "
              "tfnvp._compat.onednn_enabled())")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, check=True, cwd=REPO).stdout
    line = [l for l in out.splitlines() if l.startswith("RESULT")][0]
    assert line == ("RESULT 1 True" if given is None else "RESULT 0 False")


def test_imported_after_tensorflow_it_says_how_to_get_the_fast_kernels(monkeypatch, caplog):
    """TensorFlow loaded first with its default kernels (as on AVX2-only CPUs): one
    message naming the variable; none when the user chose, or oneDNN is on."""
    import tfnvp

    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    monkeypatch.setattr(tfnvp._compat, "onednn_enabled", lambda: False)
    with caplog.at_level("WARNING", logger="tfnvp"):
        tfnvp._compat.report_cpu_kernels()
    assert len(caplog.records) == 1
    assert "TF_ENABLE_ONEDNN_OPTS=1" in caplog.records[0].getMessage()
    caplog.clear()
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    tfnvp._compat.report_cpu_kernels()
    monkeypatch.setattr(tfnvp._compat, "onednn_enabled", lambda: True)
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS")
    tfnvp._compat.report_cpu_kernels()
    assert not caplog.records
