"""The library install needs only its own dependencies; the trainers' are the ``[train]`` extra.

setup.cfg's ``install_requires`` is what ``pip install tfnvp`` brings; importing every module of
``tfnvp`` (in a fresh interpreter) must not load a module that only ``tfnvp[train]`` installs.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Import name of each distribution of the [train] extra.
IMPORT_NAMES = {
    "tensorflow-datasets": "tensorflow_datasets", "importlib_resources": "importlib_resources",
    "requests": "requests", "tensorboard": "tensorboard", "absl-py": "absl",
    "scikit-learn": "sklearn", "pillow": "PIL", "matplotlib": "matplotlib",
}
# Also required by TensorFlow itself, so installed (and imported by TensorFlow) with the library.
REQUIRED_BY_TENSORFLOW = {"absl-py", "requests"}

# A fresh interpreter in which the trainer-only modules cannot be imported (as after
# `pip install tfnvp`): every tfnvp module imports and the public API runs.  (Modules that other
# libraries import only if present, e.g. Keras trying PIL, are fine: they cope without them.)
CHILD = r"""
import importlib, importlib.abc, json, pkgutil, sys
BLOCKED = set(sys.argv[1].split(","))
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed (blocked)")
sys.meta_path.insert(0, Refuse())

import numpy as np
import tfnvp
names = ["tfnvp"] + [m.name for m in pkgutil.walk_packages(tfnvp.__path__, "tfnvp.")]
for name in names:
    importlib.import_module(name)
model = tfnvp.RealNVP(image_shape=(4, 4, 1), num_scales=1, num_res_blocks=1, hidden_channels=4)
bpd = model.bits_per_dim(np.full((2, 4, 4, 1), 100, np.uint8), seed=(1, 2))
dense = tfnvp.DenseRealNVP(2, hidden_dim=8, num_couplings=2)
moons = tfnvp.toy_data.two_moons(16).astype(np.float32)
one_d = tfnvp.PiecewiseLinearFlow(4, -3.0, 3.0)
grid = tfnvp.grid.image_grid(model.sample(4, seed=(0, 1)))
results = [bpd, dense.log_prob(moons), one_d.log_prob(moons[:, :1])]
print(json.dumps({"modules": names, "finite": all(bool(np.isfinite(r).all()) for r in results),
                  "grid": list(grid.shape), "loaded": sorted(b for b in BLOCKED if b in sys.modules)}))
"""


def _setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    return config


def _requirements(text: str) -> list[str]:
    """Distribution names of a setup.cfg requirement list (comments and versions dropped)."""
    names = []
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.append(re.split(r"[<>=!~\[ ;]", line, maxsplit=1)[0])
    return names


def _extra(name: str) -> list[str]:
    return _requirements(_setup_cfg()["options.extras_require"][name])


def test_library_requirements_are_the_library_imports():
    assert sorted(_requirements(_setup_cfg()["options"]["install_requires"])) == sorted(
        ["tensorflow", "tensorflow-probability", "tf-keras", "keras", "numpy"])


def test_extras():
    train = _extra("train")
    assert sorted(train) == sorted(IMPORT_NAMES)
    assert {"tfnvp", "pytest", "scipy"} <= set(_extra("test"))
    assert "tfnvp[train]" in _setup_cfg()["options.extras_require"]["test"]
    assert _extra("gpu") == ["tensorflow"]
    assert "tensorflow[and-cuda]" in _setup_cfg()["options.extras_require"]["gpu"]


def test_version_and_metadata():
    """One version: setup.cfg's, tfnvp.__version__ and a CHANGELOG release heading (with an
    "Unreleased" section above it for what comes next)."""
    import tfnvp

    metadata = _setup_cfg()["metadata"]
    assert metadata["version"] == tfnvp.__version__
    assert metadata["author"].strip()
    with open(os.path.join(ROOT, "CHANGELOG.md")) as f:
        headings = re.findall(r"^## (.+)$", f.read(), flags=re.M)
    assert headings[0] == "Unreleased"
    assert headings[1].startswith(f"{tfnvp.__version__} — ")


def test_python_classifiers_are_the_versions_tested():
    """setup.cfg lists the Python versions the suite runs on: the interpreter running it is
    among them, and each one listed satisfies ``python_requires``."""
    config = _setup_cfg()
    listed = re.findall(r"Programming Language :: Python :: (3\.\d+)$",
                        config["metadata"]["classifiers"], flags=re.M)
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in listed
    minimum = re.fullmatch(r">=(\d+)\.(\d+)", config["options"]["python_requires"].strip())
    assert all(tuple(map(int, v.split("."))) >= tuple(map(int, minimum.groups())) for v in listed)


def test_license_and_type_marker_are_shipped():
    config = _setup_cfg()
    assert config["metadata"]["license"] == "Apache-2.0"
    assert config["metadata"]["license_files"].strip() == "LICENSE"
    with open(os.path.join(ROOT, "LICENSE")) as f:
        text = f.read()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert "py.typed" in config["options.package_data"]["tfnvp"]
    assert os.path.exists(os.path.join(ROOT, "tfnvp", "py.typed"))


def test_library_works_without_the_trainer_dependencies():
    trainer_only = sorted(IMPORT_NAMES[d] for d in IMPORT_NAMES if d not in REQUIRED_BY_TENSORFLOW)
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", CHILD, ",".join(trainer_only)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"tfnvp.experiments.toy_data", "tfnvp.experiments.grid", "tfnvp.experiments.latent",
            "tfnvp.models.realnvp"} <= set(report["modules"])
    assert report["finite"] and report["grid"][2] == 1
    assert report["loaded"] == []


def test_save_png_without_pillow_names_the_extra(tmp_path, monkeypatch):
    import numpy as np

    from tfnvp.experiments import grid

    monkeypatch.setitem(sys.modules, "PIL", None)  # `import PIL` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install pillow \(or tfnvp\[train\]\)"):
        grid.save_png(np.zeros((2, 2, 1), np.uint8), tmp_path / "x.png")
    assert os.listdir(tmp_path) == []


# Copied into a scratch folder to build the wheel there (setuptools writes build/ and
# *.egg-info next to setup.cfg).
_SOURCES = ("tfnvp", "trainers", "setup.cfg", "pyproject.toml", "README.md", "LICENSE")
_TINY_RUN = ["--output_dir=run", "--train_steps=2", "--num_scales=1", "--num_res_blocks=1",
             "--hidden_channels=4", "--batch_size=16", "--eval_batch_size=300",
             "--num_sample_images=4", "--eval_every=1000", "--checkpoint_every=2",
             "--recalibration_batches=1", "--log_every=1", "--summary_every=100"]


def test_wheel_installs_the_commands_and_flagfiles(tmp_path):
    """The wheel in a fresh virtual environment: it ships every module and flagfile;
    tfnvp-train (a shipped flagfile by name, from another directory) trains and evaluates;
    tfnvp-visualize runs; the three commands are installed; a checkout's script does not
    run another installation's code."""
    import shutil
    import site
    import zipfile

    source = tmp_path / "source"
    source.mkdir()
    for name in _SOURCES:
        if os.path.isdir(os.path.join(ROOT, name)):
            shutil.copytree(os.path.join(ROOT, name), source / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(os.path.join(ROOT, name), source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
                    str(source)], check=True, capture_output=True, timeout=300)
    [wheel] = tmp_path.glob("tfnvp-*.whl")
    shipped = zipfile.ZipFile(wheel).namelist()
    assert {"trainers/train.py", "trainers/digits.flags", "trainers/cifar.flags",
            "tfnvp/py.typed"} <= set(shipped)
    # Every module and flagfile of the checkout, so that each mode of the commands (eval,
    # export, ...: tests/test_train.py runs them in-process) finds its code installed.
    package_files = {str(path.relative_to(source)) for package in ("tfnvp", "trainers")
                     for pattern in ("*.py", "*.flags")
                     for path in (source / package).rglob(pattern)}
    assert len(package_files) > 60 and package_files <= set(shipped), sorted(
        package_files - set(shipped))
    assert not any(name.startswith(("tests/", "bench/")) for name in shipped)

    # A fresh environment with tfnvp from the wheel only; its dependencies are this
    # interpreter's (a path entry: the editable install's import hook there is not loaded).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=300)
    python = venv / "bin" / "python"
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    [packages] = venv.glob("lib/python*/site-packages")
    (packages / "dependencies.pth").write_text(
        "\n".join(p for p in site.getsitepackages() if p != str(packages)) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    where = subprocess.run(
        [str(python), "-c", "import tfnvp, trainers; print(tfnvp.__file__, trainers.__file__)"],
        capture_output=True, text=True, check=True, cwd=tmp_path, env=env, timeout=300
    ).stdout.split()
    assert all(path.startswith(str(packages)) for path in where), where
    entry_points = (next(packages.glob("tfnvp-*.dist-info")) / "entry_points.txt").read_text()
    for name, module in (("tfnvp-train", "train"), ("tfnvp-visualize", "visualize"),
                         ("tfnvp-toy", "train_toy")):
        assert f"{name} = trainers.{module}:console_main" in entry_points
        assert (venv / "bin" / name).exists()

    work = tmp_path / "elsewhere"
    work.mkdir()

    def command(name: str, *args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(venv / "bin" / name), *args], cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr and "checkout" not in proc.stderr
        return proc

    train = command("tfnvp-train", "--flagfile=digits.flags", *_TINY_RUN)
    assert "Run directory: run (new run)" in train.stderr + train.stdout
    assert (work / "run" / "checkpoints" / "ckpt-2.index").exists()
    assert "Evaluation at step 2" in train.stderr  # The last step is evaluated.
    assert (work / "run" / "samples" / "step_00000002.png").stat().st_size > 0
    # The command ends without freeing its objects (trainers/process_exit.py): its last
    # line was printed and its TensorBoard event files hold the last step's summaries.
    assert "Trained steps 1..2 in" in train.stderr.strip().splitlines()[-1]
    from tensorboard.backend.event_processing import event_accumulator
    for split, tag in (("train", "images_per_second"), ("eval", "bits_per_dim")):
        events = event_accumulator.EventAccumulator(str(work / "run" / "tensorboard" / split),
                                                    size_guidance={"tensors": 0}).Reload()
        assert [event.step for event in events.Tensors(tag)][-1] == 2, split
    command("tfnvp-visualize", "--what=samples", "--output_dir=run", "--out=samples.png")
    assert (work / "samples.png").stat().st_size > 0
    # --help lists each command's own flags by group, and exits 0 (command() checks).
    for name, heading in (("tfnvp-train", "\nTraining:\n"), ("tfnvp-visualize", "\nPicture:\n"),
                          ("tfnvp-toy", "\nModel:\n")):
        shown = command(name, "--help").stdout
        assert shown.startswith(f"{name}: ") and heading in shown, shown[:2000]

    # A checkout's script runs only the checkout's code (no sys.path edits): with tfnvp
    # installed elsewhere it stops in one line naming both and the fix; `python -m` from the
    # checkout runs the checkout's code.
    script = subprocess.run([str(python), str(source / "trainers" / "train.py"), "--helpshort"],
                            cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert script.returncode == 1 and script.stdout == ""
    assert script.stderr == (
        f"Error: trainers is imported from {packages}, not from this checkout ({source}). "
        f"Install the checkout (pip install -e {source}), or run its code without installing "
        f"it: cd {source} && python -m trainers.train ...\n")
    module = subprocess.run([str(python), "-m", "trainers.train", "--helpshort"], cwd=source,
                            env=env, capture_output=True, text=True, timeout=600)
    assert "Traceback" not in module.stderr and "--flagfile" in module.stdout  # Its help.
