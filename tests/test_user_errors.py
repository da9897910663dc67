"""The commands print one line for the errors a user causes (``tfnvp.UsageError``, files,
flags) and keep the traceback of every other error; a checkout's script runs only its own
checkout's code (trainers/checkout.py)."""

from __future__ import annotations

import pathlib

import pytest
from absl import flags

import tfnvp
from trainers import checkout, console, sources, train, visualize

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["train.py", "--flagfile=digits.flags", "--num_scales=1", "--num_res_blocks=0",
        "--hidden_channels=8", "--batch_size=16", "--train_steps=1"]


def _fail_deep_inside(monkeypatch, error: Exception) -> None:
    """Opening the data (under the trainer's data pipeline) raises ``error``."""
    def get_source(*args, **kwargs):
        raise error

    monkeypatch.setattr(sources, "get_source", get_source)


def test_trainer_user_error_is_one_line_and_exit_1(tmp_path, monkeypatch, capfd):
    _fail_deep_inside(monkeypatch, tfnvp.UsageError("--data_dir=x: no images there."))
    capfd.readouterr()
    assert train.run([*TINY, f"--output_dir={tmp_path / 'run'}"]) == 1
    err = capfd.readouterr().err
    assert "Error (UsageError): --data_dir=x: no images there." in err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 3, err
    assert not (tmp_path / "run").exists()


def test_trainer_internal_value_error_keeps_its_traceback(tmp_path, monkeypatch, capfd):
    """A plain ValueError is not the user's: it escapes ``run`` (the command's ``app.run``
    prints its traceback), instead of becoming a one-line "Error (ValueError)"."""
    _fail_deep_inside(monkeypatch, ValueError("a bug deep inside"))
    capfd.readouterr()
    with pytest.raises(ValueError, match="a bug deep inside"):
        train.run([*TINY, f"--output_dir={tmp_path / 'run'}"])
    assert "Error (ValueError)" not in capfd.readouterr().err
    assert not (tmp_path / "run").exists()


def _visualize(*args: str) -> None:
    flag_values = flags.FlagValues()
    visualize.define_flags(flag_values)
    visualize.main(flag_values(["visualize.py", *args]), flag_values=flag_values)


def test_visualize_one_line_for_user_errors_traceback_for_others(tmp_path, monkeypatch):
    args = ("--what=samples", f"--output_dir={tmp_path}", f"--out={tmp_path / 's.png'}")

    def read_config(error):
        def read(*args, **kwargs):
            raise error
        return read

    monkeypatch.setattr(visualize.run_dir, "read_config",
                        read_config(tfnvp.UsageError("config.json is damaged")))
    with pytest.raises(SystemExit, match="^visualize.py: error: config.json is damaged$"):
        _visualize(*args)
    monkeypatch.setattr(visualize.run_dir, "read_config", read_config(ValueError("a bug")))
    with pytest.raises(ValueError, match="a bug"):
        _visualize(*args)


def test_which_errors_are_the_users():
    import tensorflow as tf

    assert issubclass(tfnvp.UsageError, ValueError)
    assert console.is_user_error(tfnvp.UsageError("--x=1: no."))
    assert console.is_user_error(FileNotFoundError("x"))
    assert not console.is_user_error(ValueError("a bug"))
    assert not console.is_user_error(TypeError("a bug"))
    # A data check inside the input pipeline (tf.debugging.Assert), not any op's error.
    assert console.is_user_error(tf.errors.InvalidArgumentError(
        None, None, "assertion failed: [cannot read or decode image file a.png]"))
    assert not console.is_user_error(tf.errors.InvalidArgumentError(
        None, None, "Incompatible shapes: [2,3] vs. [3,2]"))


def test_an_image_that_fails_to_decode_in_the_pipeline_is_one_line(tmp_path, capfd):
    """Found by the input pipeline's assertion while training, not by the header check."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 32), ("test", 8)):
        (tmp_path / "images" / split).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(
                tmp_path / "images" / split / f"{i:03d}.png")
    bad = tmp_path / "images" / "train" / "005.png"
    bad.write_bytes(bad.read_bytes()[:60])  # Intact header, truncated pixels.
    capfd.readouterr()
    assert train.run([*TINY, "--dataset=image_folder", f"--data_dir={tmp_path / 'images'}",
                      f"--output_dir={tmp_path / 'run'}"]) == 1
    err = capfd.readouterr().err
    assert f"cannot read or decode image file {bad}" in err
    assert "Error (InvalidArgumentError)" in err and "Traceback" not in err, err[-3000:]


def test_a_checkout_script_runs_only_its_own_checkouts_code(tmp_path, monkeypatch):
    # This checkout's script, with this checkout's packages importable (pytest's pythonpath).
    assert checkout.imported_from("trainers") == checkout.imported_from("tfnvp") == str(ROOT)
    checkout.require_own_checkout(str(ROOT / "trainers" / "train.py"))
    # Another checkout's script: it would import this checkout's modules.
    other = tmp_path / "other"
    (other / "trainers").mkdir(parents=True)
    with pytest.raises(SystemExit) as stopped:
        checkout.require_own_checkout(str(other / "trainers" / "visualize.py"))
    assert str(stopped.value) == (
        f"Error: trainers is imported from {ROOT}, not from this checkout ({other}). Install "
        f"the checkout (pip install -e {other}), or run its code without installing it: "
        f"cd {other} && python -m trainers.visualize ...")
    # Nothing installed.
    monkeypatch.setattr(checkout.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit, match=r"^Error: trainers is not installed in this Python "
                                         r"environment \("):
        checkout.require_own_checkout(str(ROOT / "trainers" / "train.py"))


def test_installed_code_edits_no_sys_path():
    for path in sorted((ROOT / "trainers").glob("*.py")) + sorted((ROOT / "tfnvp").rglob("*.py")):
        assert "sys.path" not in path.read_text().replace("``sys.path``", ""), path


@pytest.mark.parametrize("build,message", [
    (lambda: tfnvp.RealNVP((8, 8, 1), num_scales=1, num_res_blocks=0, hidden_channels=4,
                           attention=True), "attention=True needs num_res_blocks >= 1"),
    (lambda: tfnvp.RealNVP((6, 6, 1), num_scales=3, num_res_blocks=1, hidden_channels=4),
     "height and width must be divisible"),
    (lambda: tfnvp.RealNVP((8, 8, 1), num_scales=1, num_res_blocks=1, hidden_channels=4,
                           dropout=1.5), "dropout must be in"),
    (lambda: tfnvp.Glow((8, 8, 1), num_scales=1, steps_per_scale=0, hidden_channels=4),
     "steps_per_scale must be at least 1"),
    (lambda: tfnvp.Glow((8, 8, 1), num_scales=1, steps_per_scale=1, hidden_channels=6,
                        attention=True, attention_heads=4),
     "attention_heads must divide the 6 feature maps"),
])
def test_model_options_the_library_refuses_are_usage_errors(build, message):
    """A constructor's refusal of its arguments (what the trainer's flags become) is a
    UsageError: the trainer prints it in one line."""
    with pytest.raises(tfnvp.UsageError, match=message):
        build()
