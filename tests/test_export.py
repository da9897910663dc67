"""Tests for trainers.export: the SavedModel runs without tfnvp and matches the live model.

The export is written in TensorFlow Serving's layout (``BASE/<version>/saved_model.pb``) and its
``serving_default`` signature is what the README documents.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import tfnvp
from trainers import export

IMAGE_SHAPE = (8, 8, 1)
SEED = np.array([3, 7], np.int32)
OTHER_SEED = np.array([4, 7], np.int32)
TEMPERATURE = 0.8
VERSION = 7

# The child process: loads the export with tfnvp, trainers and TFP made
# unimportable, runs every function on the saved inputs and writes the outputs.
CHILD = textwrap.dedent(r"""
    import importlib.abc, json, sys

    class Refuse(importlib.abc.MetaPathFinder):
        BLOCKED = {"tfnvp", "trainers", "tensorflow_probability"}
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.BLOCKED:
                raise ImportError(f"{name} is blocked in this process")
            return None

    sys.meta_path.insert(0, Refuse())
    for name in Refuse.BLOCKED:
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise AssertionError(f"{name} could be imported")

    import numpy as np
    import tensorflow as tf

    export_dir, inputs, outputs = sys.argv[1:4]
    d = dict(np.load(inputs))
    loaded = tf.saved_model.load(export_dir)
    sig = loaded.signatures
    seed, other = tf.constant(d["seed"]), tf.constant(d["other_seed"])
    t = tf.constant(float(d["temperature"]))
    z = loaded.encode(d["x"])
    out = {
        "log_prob": loaded.log_prob(d["x"]),
        "log_prob_signature": sig["log_prob"](x=tf.constant(d["x"]))["log_prob"],
        "serving_default": sig["serving_default"](x=tf.constant(d["x"]))["log_prob"],
        "bits_per_dim": loaded.bits_per_dim(d["images"], seed),
        "bits_per_dim_again": loaded.bits_per_dim(d["images"], seed),
        "bits_per_dim_other_seed": loaded.bits_per_dim(d["images"], other),
        "bits_per_dim_signature": sig["bits_per_dim"](
            images=tf.constant(d["images"]), seed=seed)["bits_per_dim"],
        "encode": z,
        "encode_signature": sig["encode"](x=tf.constant(d["x"]))["z"],
        "decode": loaded.decode(d["z"]),
        "decode_signature": sig["decode"](z=tf.constant(d["z"]))["x"],
        "round_trip": loaded.decode(z),
        "sample_2": loaded.sample(tf.constant(2), t, seed),
        "sample_5": loaded.sample(tf.constant(5), t, seed),
        "sample_5_signature": sig["sample"](
            num_samples=tf.constant(5), temperature=t, seed=seed)["samples"],
    }
    np.savez(outputs + ".npz", **{k: v.numpy() for k, v in out.items()})

    bad = d["x"].copy()
    cases = {}
    def check(name, fn):
        try:
            fn()
            cases[name] = None
        except tf.errors.InvalidArgumentError as e:
            cases[name] = e.message
    def with_value(value):
        x = bad.copy()
        x[0, 1, 2, 0] = value
        return x
    check("log_prob_nan", lambda: loaded.log_prob(with_value(np.nan)))
    check("log_prob_inf", lambda: loaded.log_prob(with_value(np.inf)))
    check("log_prob_negative", lambda: loaded.log_prob(with_value(-0.5)))
    check("log_prob_256", lambda: loaded.log_prob(with_value(256.0)))
    check("log_prob_signature_nan", lambda: sig["log_prob"](x=tf.constant(with_value(np.nan))))
    check("encode_nan", lambda: loaded.encode(with_value(np.nan)))
    check("encode_256", lambda: loaded.encode(with_value(300.0)))
    check("decode_nan", lambda: loaded.decode(with_value(np.nan)))
    check("sample_negative_temperature", lambda: loaded.sample(2, -1.0, seed))
    check("valid_input", lambda: loaded.log_prob(d["x"]))

    def specs(structure):
        return {k: [v.dtype.name, v.shape.as_list()] for k, v in structure.items()}

    serving = sig["serving_default"]
    serving_spec = {"inputs": specs(serving.structured_input_signature[1]),
                    "outputs": specs(serving.structured_outputs)}

    with open(loaded.metadata.asset_path.numpy().decode()) as f:
        metadata = json.load(f)
    blocked = [m for m in sys.modules if m.split(".")[0] in Refuse.BLOCKED and sys.modules[m]]
    with open(outputs + ".json", "w") as f:
        json.dump({"errors": cases, "metadata": metadata, "blocked_modules_loaded": blocked,
                   "serving_default": serving_spec}, f)
""")


def _perturbed_model(seed: int, **config) -> tfnvp.RealNVP:
    """A model whose weights and batch-norm statistics are far from their initial values."""
    model = tfnvp.RealNVP(**config)
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign_add(rng.normal(scale=0.05, size=v.shape).astype(v.dtype))
    batch = rng.uniform(0.0, 256.0, (16,) + tuple(config["image_shape"])).astype(np.float32)
    model.log_prob(batch, training=True)  # moves every running statistic
    assert np.all(np.isfinite(model.log_prob(batch).numpy()))
    return model


def _files(directory: str) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``directory``."""
    result = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                result[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return result


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Exports a perturbed model, then runs CHILD on it; returns everything to compare."""
    tmp = tmp_path_factory.mktemp("export")
    model = _perturbed_model(0, image_shape=IMAGE_SHAPE, num_scales=2, num_res_blocks=1,
                             hidden_channels=8, batch_norm_momentum=0.5)
    assert not np.allclose(model.statistics[0].moving_mean.numpy(), 0.0)
    export_dir = export.export_version(model, str(tmp / "saved_model"), VERSION)

    rng = np.random.default_rng(1)
    inputs = dict(
        x=rng.uniform(0.0, 256.0, (3,) + IMAGE_SHAPE).astype(np.float32),
        z=rng.normal(size=(4,) + IMAGE_SHAPE).astype(np.float32),
        images=rng.integers(0, 256, (3,) + IMAGE_SHAPE).astype(np.uint8),
        seed=SEED, other_seed=OTHER_SEED, temperature=np.float32(TEMPERATURE))
    np.savez(tmp / "inputs.npz", **inputs)
    (tmp / "child.py").write_text(CHILD)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run(
        [sys.executable, "-I", str(tmp / "child.py"), export_dir, str(tmp / "inputs.npz"),
         str(tmp / "outputs")],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    outputs = dict(np.load(tmp / "outputs.npz"))
    with open(tmp / "outputs.json") as f:
        report = json.load(f)
    return dict(model=model, export_dir=export_dir, inputs=inputs, outputs=outputs, **report)


def test_loaded_without_tfnvp(exported):
    assert exported["blocked_modules_loaded"] == []
    assert exported["errors"]["valid_input"] is None


def test_log_prob_matches_live_model(exported):
    model, x, out = exported["model"], exported["inputs"]["x"], exported["outputs"]
    expected = model.log_prob(x).numpy()
    assert expected.shape == (3,)
    for key in ("log_prob", "log_prob_signature", "serving_default"):
        assert out[key].dtype == np.float32
        np.testing.assert_allclose(out[key], expected, rtol=1e-4, err_msg=key)


def test_bits_per_dim_matches_live_model_and_is_deterministic(exported):
    model, inputs, out = exported["model"], exported["inputs"], exported["outputs"]
    expected = model.bits_per_dim(inputs["images"], seed=SEED).numpy()
    np.testing.assert_allclose(out["bits_per_dim"], expected, rtol=1e-4)
    np.testing.assert_allclose(out["bits_per_dim_signature"], expected, rtol=1e-4)
    np.testing.assert_array_equal(out["bits_per_dim_again"], out["bits_per_dim"])
    other = model.bits_per_dim(inputs["images"], seed=OTHER_SEED).numpy()
    np.testing.assert_allclose(out["bits_per_dim_other_seed"], other, rtol=1e-4)
    assert not np.allclose(other, expected, rtol=1e-6, atol=0.0)  # the seed matters


def test_encode_decode_match_live_model(exported):
    model, inputs, out = exported["model"], exported["inputs"], exported["outputs"]
    z = model.encode(inputs["x"]).numpy()
    np.testing.assert_allclose(out["encode"], z, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["encode_signature"], z, rtol=1e-4, atol=1e-4)
    x = model.decode(inputs["z"]).numpy()
    assert out["decode"].shape == (4,) + IMAGE_SHAPE
    np.testing.assert_allclose(out["decode"], x, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(out["decode_signature"], x, rtol=1e-4, atol=1e-3)
    # Not the identity: the latent is far from the (logit of the) input.
    assert np.abs(z - inputs["x"]).max() > 1.0


def test_decode_inverts_encode(exported):
    np.testing.assert_allclose(exported["outputs"]["round_trip"], exported["inputs"]["x"],
                               atol=2e-2)


def test_sample_matches_live_model_with_dynamic_count(exported):
    model, out = exported["model"], exported["outputs"]
    for n in (2, 5):
        got = out[f"sample_{n}"]
        assert got.shape == (n,) + IMAGE_SHAPE
        assert np.all((got >= 0.0) & (got < 256.0))
        expected = model.sample(n, temperature=TEMPERATURE, seed=SEED).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(out["sample_5_signature"], out["sample_5"], rtol=1e-6)


@pytest.mark.parametrize("case,needle", [
    ("log_prob_nan", "NaN"), ("log_prob_inf", "Inf"), ("log_prob_negative", "negative"),
    ("log_prob_256", "256"), ("log_prob_signature_nan", "NaN"), ("encode_nan", "NaN"),
    ("encode_256", "256"), ("decode_nan", "NaN"), ("sample_negative_temperature", "temperature"),
])
def test_invalid_inputs_raise_after_loading(exported, case, needle):
    message = exported["errors"][case]
    assert message is not None, f"{case}: no error raised"
    assert needle in message


def test_metadata(exported):
    metadata = exported["metadata"]
    assert metadata["image_shape"] == list(IMAGE_SHAPE)
    assert metadata["model_config"] == json.loads(json.dumps(exported["model"].get_config()))
    assert os.path.exists(os.path.join(exported["export_dir"], "assets", export.METADATA_FILE))


def _siblings(export_dir: str) -> list[str]:
    return sorted(os.listdir(os.path.dirname(export_dir)))


def test_failed_reexport_keeps_previous_export(exported, tmp_path, monkeypatch):
    export_dir = str(tmp_path / "saved_model")
    # Copy the module's export: the "previous" export that must survive.
    subprocess.run(["cp", "-a", exported["export_dir"], export_dir], check=True)
    before = _files(export_dir)
    model = exported["model"]

    def crash_mid_save(obj, path, signatures=None, options=None):
        os.makedirs(os.path.join(path, "variables"))
        with open(os.path.join(path, "saved_model.pb"), "wb") as f:
            f.write(b"half-written")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(tf.saved_model, "save", crash_mid_save)
    with pytest.raises(OSError, match="simulated"):
        export.export_saved_model(model, export_dir)
    assert _files(export_dir) == before
    assert _siblings(export_dir) == ["saved_model"]  # no temporary directory left behind

    # A save that "succeeds", then the final rename fails: the old export is restored.
    def fake_save(obj, path, signatures=None, options=None):
        os.makedirs(path)
        with open(os.path.join(path, "saved_model.pb"), "wb") as f:
            f.write(b"new")

    real_rename = os.rename

    def failing_rename(src, dst):
        if os.path.basename(src) == "saved_model" and dst == export_dir:
            raise OSError("rename failed (simulated)")
        return real_rename(src, dst)

    monkeypatch.setattr(tf.saved_model, "save", fake_save)
    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(OSError, match="rename failed"):
        export.export_saved_model(model, export_dir)
    assert _files(export_dir) == before
    assert _siblings(export_dir) == ["saved_model"]
    monkeypatch.undo()
    x = exported["inputs"]["x"]
    loaded = tf.saved_model.load(export_dir)  # keep a reference: it owns the variables
    np.testing.assert_allclose(loaded.log_prob(x), exported["outputs"]["log_prob"], rtol=1e-6)

    # The same fake save with working renames does replace it (so the checks above can fail).
    monkeypatch.setattr(tf.saved_model, "save", fake_save)
    export.export_saved_model(model, export_dir)
    assert _files(export_dir)["saved_model.pb"] != before["saved_model.pb"]
    monkeypatch.undo()


def test_refuses_to_replace_a_directory_that_is_not_a_saved_model(exported, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    with pytest.raises(FileExistsError):
        export.export_saved_model(exported["model"], str(tmp_path / "run"))
    assert os.listdir(tmp_path / "run") == ["config.json"]
    assert sorted(os.listdir(tmp_path)) == ["run"]


def test_tensorflow_serving_layout(exported):
    """BASE/<version>/saved_model.pb, nothing else in BASE (the temporary directory is gone)."""
    export_dir = exported["export_dir"]
    base = os.path.dirname(export_dir)
    assert os.path.basename(export_dir) == str(VERSION)
    assert os.listdir(base) == [str(VERSION)]
    assert os.path.exists(os.path.join(export_dir, "saved_model.pb"))
    assert export.latest_version(base) == export_dir


def test_serving_default_signature_as_documented(exported):
    """README: inputs {x: float32 [None, H, W, C]}, outputs {log_prob: float32 [None]}."""
    assert exported["serving_default"] == {
        "inputs": {"x": ["float32", [None, *IMAGE_SHAPE]]},
        "outputs": {"log_prob": ["float32", [None]]},
    }


def test_new_version_beside_the_old_one_keeps_value_checks_and_is_replaced(exported, tmp_path):
    """A new version leaves the previous one untouched; the highest complete one is the latest.
    Its model, built without value checks, is still exported with them and left as it was;
    exporting the same version again replaces its weights."""
    base = tmp_path / "saved_model"
    assert export.latest_version(str(base)) is None
    shutil.copytree(exported["export_dir"], base / str(VERSION))  # the previous version
    before = _files(str(base / str(VERSION)))
    model = tfnvp.RealNVP((4, 4, 1), num_scales=1, num_res_blocks=1, hidden_channels=4,
                          validate_args=False)
    path = export.export_version(model, str(base), 10)
    assert model.validate_args is False
    assert sorted(os.listdir(base)) == ["10", str(VERSION)]
    assert _files(str(base / str(VERSION))) == before
    (base / "12").mkdir()  # not a SavedModel (yet): never the latest
    (base / ".13.tmp-x").mkdir()
    assert export.latest_version(str(base)) == path == str(base / "10")
    x = np.full((2, 4, 4, 1), 120.0, np.float32)
    loaded = tf.saved_model.load(path)  # keep a reference: it owns the variables
    np.testing.assert_allclose(loaded.log_prob(x), model.log_prob(x), rtol=1e-4)
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
        loaded.log_prob(x)
    # Re-export over it: the new weights replace the old ones.
    other = _perturbed_model(5, image_shape=(4, 4, 1), num_scales=1, num_res_blocks=1,
                             hidden_channels=4)
    assert export.export_version(other, str(base), 10) == path
    x[0, 0, 0, 0] = 120.0
    reloaded = tf.saved_model.load(path)  # keep a reference: it owns the variables
    np.testing.assert_allclose(reloaded.log_prob(x), other.log_prob(x), rtol=1e-4)
    assert not np.allclose(other.log_prob(x), model.log_prob(x), rtol=1e-4)  # so it can fail
    assert sorted(os.listdir(base)) == [".13.tmp-x", "10", "12", str(VERSION)]  # no debris
    assert _files(str(base / str(VERSION))) == before


@pytest.mark.parametrize("version", [-1, 1.5, "3", True])
def test_bad_version_is_refused(exported, tmp_path, version):
    with pytest.raises(ValueError, match="non-negative integer"):
        export.export_version(exported["model"], str(tmp_path), version)
    assert os.listdir(tmp_path) == []


def test_saved_model_cli_runs_serving_default(exported, tmp_path):
    """TensorFlow's own command line runs the serving signature on the export."""
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if not os.path.exists(cli):
        pytest.skip("saved_model_cli is not installed next to this Python")
    x = exported["inputs"]["x"]
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [cli, "run", "--dir", exported["export_dir"], "--tag_set", "serve",
         "--signature_def", "serving_default", "--inputs", f"x={tmp_path / 'x.npy'}",
         "--outdir", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_allclose(np.load(out / "log_prob.npy"), exported["outputs"]["log_prob"],
                               rtol=1e-5)


def _refusal(call) -> str:
    """The refusal's own line: the status message's first line after TensorFlow's Python
    header ("Graph execution error:", "Detected at node ...", the stack it has not)."""
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        call()
    lines = [line for line in raised.value.message.splitlines() if line.strip()]
    own = [line for line in lines if not line.startswith(
        ("Graph execution error", "Detected at node", "<stack traces unavailable>"))]
    return own[0]


def test_exported_labels_are_one_per_image_and_refusals_name_the_argument(tmp_path):
    """Issue 30: labels=[1] with 4 images was broadcast by every signature; 3 labels failed
    deep in the graph ("Incompatible shapes: [4,8,8,1] vs. [3,1,1,3]")."""
    model = tfnvp.RealNVP((8, 8, 1), num_scales=1, num_res_blocks=0, hidden_channels=4,
                          num_classes=3)
    loaded = tf.saved_model.load(export.export_saved_model(model, str(tmp_path / "1")))
    x = tf.random.stateless_uniform((4, 8, 8, 1), seed=[1, 2], maxval=255.0)
    images, seed = tf.cast(x, tf.uint8), tf.constant([1, 2])
    for given in ([1], [0, 1, 2]):
        labels = tf.constant(given)
        expected = (f"assertion failed: [labels: expected shape [4] (one label per {{}}), got "
                    f"shape [{len(given)}]]")
        for call, per in ((lambda: loaded.log_prob(x, labels), "input"),
                          (lambda: loaded.signatures["log_prob"](x=x, labels=labels), "input"),
                          (lambda: loaded.encode(x, labels), "input"),
                          (lambda: loaded.decode(x, labels), "latent"),
                          (lambda: loaded.bits_per_dim(images, seed, labels), "input")):
            assert _refusal(call) == expected.format(per)
    assert _refusal(lambda: loaded.log_prob(x, tf.constant([0, 1, 3, 2]))) == (
        "assertion failed: [labels: expected classes in [0, num_classes=3), got [0 1 3 2]]")
    assert _refusal(lambda: loaded.sample(4, 1.0, seed, tf.constant([0, 1]))).startswith(
        "assertion failed: [labels: expected shape [4] (one label per sample")
    for temperature, shown in ((np.inf, "inf"), (np.nan, "nan"), (-1.0, "-1")):
        assert _refusal(lambda: loaded.sample(2, temperature, seed, tf.constant([0, 1]))) == (
            f"assertion failed: [temperature: expected a finite non-negative number, got "
            f"{shown}]")
    assert _refusal(lambda: loaded.sample(-1, 1.0, seed, tf.constant([], tf.int32))) == (
        "assertion failed: [num_samples: expected a non-negative count, got -1]")
    np.testing.assert_allclose(loaded.log_prob(x, tf.constant([0, 1, 2, 0])).numpy(),
                               model.log_prob(x, labels=[0, 1, 2, 0]).numpy(), rtol=1e-5)
