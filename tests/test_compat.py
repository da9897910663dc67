"""tfnvp/_compat.py: the one home of private TensorFlow/TFP/Keras names, its version check
and its message when a private name is missing."""

import configparser
import os
import pathlib
import re
import subprocess
import sys
import warnings

import keras
import pytest
import tensorflow as tf

from tfnvp import _compat

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Private entry points of TensorFlow, TensorFlow Probability and Keras.
_PRIVATE = re.compile(r"keras\.src\b|tensorflow(_probability)?\.python\b|tf\.__internal__|"
                      r"\b_flatten_layers\b|\b_Chain\b|\b_TransformedDistribution\b|"
                      r"\bcache_util\b|\b_get_parameterization\b|\b_pywrap_util_port\b")


def test_no_module_outside_compat_names_a_private_entry_point():
    found = []
    for folder in ("tfnvp", "trainers", "bench", "examples"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == ROOT / "tfnvp" / "_compat.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if _PRIVATE.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def _assert_names_versions(message: str, missing: str) -> None:
    assert f"tfnvp relies on {missing}" in message
    for name, version in (("TensorFlow", tf.__version__), ("Keras", keras.__version__)):
        assert f"{name} {version}" in message
    assert ("tfnvp supports TensorFlow >=2.18,<2.22, TensorFlow Probability >=0.25,<0.27, "
            "Keras >=3.8,<4") in message


def test_a_missing_private_name_is_a_clear_error(monkeypatch):
    from tensorflow.python.eager import record  # noqa: the name removed below.

    layer = keras.layers.Dense(2)
    owner = next(c for c in type(layer).__mro__ if "_flatten_layers" in vars(c))
    monkeypatch.delattr(owner, "_flatten_layers")
    with pytest.raises(RuntimeError) as error:
        _compat.sublayers(layer)
    _assert_names_versions(str(error.value), "keras.layers.Layer._flatten_layers")

    monkeypatch.delattr(record, "stop_recording")
    with pytest.raises(RuntimeError) as error:
        _compat.stop_recording()
    _assert_names_versions(str(error.value), "tensorflow.python.eager.record.stop_recording")

    monkeypatch.delattr(tf.__internal__.distribute.interim, "maybe_merge_call")
    with pytest.raises(RuntimeError) as error:
        _compat.maybe_merge_call(print, None)
    _assert_names_versions(str(error.value),
                           "tf.__internal__.distribute.interim.maybe_merge_call")


def test_a_missing_optimizer_hook_is_a_clear_error(monkeypatch):
    from keras.src.backend.tensorflow.optimizer import TFOptimizer  # noqa: its hook removed.

    _compat.check_gradient_all_reduce_hook()
    monkeypatch.delattr(TFOptimizer, "_all_reduce_sum_gradients")
    with pytest.raises(RuntimeError) as error:
        _compat.check_gradient_all_reduce_hook()
    _assert_names_versions(str(error.value), "keras TFOptimizer._all_reduce_sum_gradients")


def test_a_missing_base_class_fails_the_import_with_the_message():
    """Names looked up at import (a base class of tfnvp's): ``import tfnvp`` itself fails
    with the message, not with an ImportError from inside a bijector module."""
    script = ("from tensorflow_probability.python.bijectors import chain\n"
              "del chain._Chain\n"
              "import tfnvp\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("RuntimeError: tfnvp relies on "
                           "tensorflow_probability.python.bijectors.chain._Chain,"), last
    _assert_names_versions(last, "tensorflow_probability.python.bijectors.chain._Chain")


def test_supported_ranges_are_setup_cfgs():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    requires = {}
    for line in config["options"]["install_requires"].splitlines():
        match = re.fullmatch(r"([\w-]+)>=([\d.]+),<([\d.]+)", line.strip())
        if match:
            requires[match.group(1)] = tuple(tuple(int(p) for p in v.split("."))
                                             for v in match.group(2, 3))
    assert {"TensorFlow": requires["tensorflow"],
            "TensorFlow Probability": requires["tensorflow-probability"],
            "Keras": requires["keras"]} == _compat.SUPPORTED


@pytest.mark.parametrize("version,supported", [
    ("2.18.0", True), ("2.21.0", True), ("2.21.0rc1", True), ("2.17.1", False),
    ("2.22.0", False), ("2.22.0-dev20260101", False), ("3.0.0", False)])
def test_an_unsupported_version_warns_once_at_import_naming_the_ranges(
        monkeypatch, version, supported):
    monkeypatch.setattr(tf, "__version__", version)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _compat._warn_if_unsupported()
    messages = [str(w.message) for w in caught if w.category is RuntimeWarning]
    if supported:
        assert messages == []
    else:
        [message] = messages
        assert message.startswith(f"tfnvp was not written for TensorFlow {version} ")
        assert "tfnvp supports TensorFlow >=2.18,<2.22," in message


def test_autograph_calls_tfnvp_as_written_and_converts_user_code():
    """A user's ``tf.function`` reaches tfnvp's functions directly (the distribution's
    ``log_prob``, ``FusedAdam``'s update through ``tf.distribute``): AutoGraph calls them as
    written, as it calls TFP's, and still converts the user's own functions."""
    from tensorflow.python.autograph.core import config
    from tensorflow.python.autograph.impl import conversion

    import tfnvp
    from tfnvp.models import checked_distribution

    def user_function(x):
        return x

    for function in (checked_distribution.check_event_shape, tfnvp.RealNVP.log_prob,
                     tfnvp.FusedAdam._apply_one, tfnvp.bijectors.AffineCoupling.__init__):
        assert conversion.is_allowlisted(function), function
    assert not conversion.is_allowlisted(user_function)
    _compat.call_unconverted_by_autograph("tfnvp")  # Idempotent: one rule, not two.
    rules = [str(rule) for rule in config.CONVERSION_RULES]
    assert rules.count("DoNotConvert rule for tfnvp") == 1
