"""Export a trained ``tfnvp.RealNVP`` as a self-contained TensorFlow SavedModel.

The export needs neither tfnvp nor TFP to load: every computation is a traced
graph over the model's variables.  All functions run the model in evaluation
mode (batch-norm running statistics, no statistics updates), and the pixel
value checks (NaN/Inf, range ``[0, 256)``) stay in the graph whatever the
model's ``validate_args``: bad inputs raise ``tf.errors.InvalidArgumentError``.

Functions (callable attributes of the loaded object, and signatures of the
same name in ``loaded.signatures`` for serving; ``H, W, C`` is the model's
``image_shape``, every float input/output is float32 whatever the model's
``flow_dtype``)::

    log_prob(x: float32 [N, H, W, C] in [0, 256))      -> float32 [N]  nats per image
    bits_per_dim(images: uint8 [N, H, W, C],
                 seed: int32 [2])                      -> float32 [N]  bits/dim per image
                                                          (the model's dequantizer, uniform or learned
                                                           (variational bound); deterministic given seed)
    sample(num_samples: int32 [], temperature: float32 [],
           seed: int32 [2])                            -> float32 [num_samples, H, W, C] in [0, 256)
    encode(x: float32 [N, H, W, C])                    -> float32 [N, H, W, C]  latent z
    decode(z: float32 [N, H, W, C])                    -> float32 [N, H, W, C]  images

A class-conditional model (``num_classes=K``, ``--conditional``) adds one
last input to every function, ``labels: int32 [N]`` (``[num_samples]`` for
``sample``), class indices in ``[0, K)`` (checked in the graph)::

    log_prob(x, labels)          -> log p(x | y)
    bits_per_dim(images, seed, labels)
    sample(num_samples, temperature, seed, labels)   labels[i]: the class of sample i
    encode(x, labels), decode(z, labels)

Called as attributes they return the tensor; ``loaded.signatures[name]``
takes keyword arguments and returns a dict with one key, the function's name
for ``log_prob``/``bits_per_dim`` and ``"samples"``, ``"z"``, ``"x"`` for
``sample``, ``encode``, ``decode``.  ``serving_default`` is ``log_prob``.
``loaded.metadata.asset_path`` (also ``EXPORT_DIR/assets/tfnvp_export.json``)
holds the image shape, the model's ``get_config()``, ``num_classes`` (null for
an unconditional model), ``weights`` (which weights were exported, in the
words of the trainer's log and ``eval.json``: ``"Polyak-averaged weights
(decay D)"`` or ``"training weights"``, ``tfnvp.io.runs.describe_weights``; null
when the caller did not say) and the versions used.

Usage::

    # trainer side (--mode=export: version = the checkpoint's step)
    from trainers.export import export_version
    export_version(model, "RUN/saved_model", version=1000)   # RUN/saved_model/1000/

    # consumer side: plain TensorFlow, or TensorFlow Serving with
    # --model_base_path=RUN/saved_model (serving_default is log_prob)
    loaded = tf.saved_model.load("RUN/saved_model/1000")
    nats = loaded.log_prob(tf.random.uniform([4, 32, 32, 3], 0.0, 256.0))
    bpd = loaded.bits_per_dim(images_uint8, seed=[1, 2])
    x = loaded.sample(num_samples=16, temperature=0.7, seed=[0, 0])
    bpd = loaded.signatures["bits_per_dim"](images=images_uint8,
                                            seed=tf.constant([1, 2]))["bits_per_dim"]

Keep a reference to the loaded object while calling its functions
(``tf.saved_model.load(path).log_prob(x)`` fails: the temporary owns the
variables and is garbage-collected mid-call).

``export_saved_model`` writes into a temporary directory next to
``export_dir`` and moves it into place only when complete; an existing export
is kept until then (see its docstring).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Iterator

import tensorflow as tf

import tfnvp
from tfnvp.errors import UsageError

from trainers import run_dir

__all__ = ["METADATA_FILE", "SIGNATURE_NAMES", "export_saved_model", "export_version",
           "latest_version"]

METADATA_FILE = "tfnvp_export.json"
SIGNATURE_NAMES = ("log_prob", "bits_per_dim", "sample", "encode", "decode")


class _ExportModule(tf.Module):
    """The exported object: the model's variables and its functions in eval mode."""

    def __init__(self, model: tfnvp.RealNVP, metadata_path: str):
        super().__init__(name="tfnvp_export")
        self.model = model
        # The tf.Variables under the Keras 3 variables, tracked directly: without them the
        # graph's variables are not the ones the functions read when the SavedModel is run by
        # TensorFlow Serving, saved_model_cli or any TF1-style loader ("Could not find
        # variable ..."; keras-team/keras#20096), although tf.saved_model.load works.
        self.tf_variables = [weight.value for weight in model.weights]
        self.metadata = tf.saved_model.Asset(metadata_path)
        height, width, channels = model.image_shape
        images = tf.TensorSpec([None, height, width, channels], tf.float32)
        uint8 = tf.TensorSpec([None, height, width, channels], tf.uint8)
        seed = tf.TensorSpec([2], tf.int32)
        scalar_int = tf.TensorSpec([], tf.int32)
        scalar_float = tf.TensorSpec([], tf.float32)
        # Class-conditional models take the labels as every function's last input.
        labels = [tf.TensorSpec([None], tf.int32)] if model.num_classes is not None else []
        out = lambda t: tf.cast(t, tf.float32)  # noqa: E731

        def shaped(t: tf.Tensor, name: str) -> tf.Tensor:
            """``t``, checked at run time to be ``[N, H, W, C]``.

            A signature (``loaded.signatures[...]``) does not check its inputs' shapes
            against its ``TensorSpec``, and the flow would fail deep inside on a wrong
            one.  The check reads the shape as text: an op on the static shape (its
            rank, a slice of it) would be folded by the graph optimizer, which trusts
            the declared ``[None, H, W, C]``.
            """
            actual = tf.strings.reduce_join(tf.strings.as_string(tf.shape(t)), separator=",")
            ok = tf.strings.regex_full_match(actual, rf"\d+,{height},{width},{channels}")
            with tf.control_dependencies([tf.debugging.Assert(ok, [
                    f"{name} must have shape (None, {height}, {width}, {channels}) (batch, "
                    f"height, width, channels); got shape", tf.shape(t)], summarize=8)]):
                return tf.identity(t)

        # The model's own methods, in evaluation mode, with its checks (the labels: one per
        # image or sample, in [0, num_classes); the sampling temperature and count): traced
        # with validate_args on (_validating), they check at run time what the signature's
        # inputs leave unknown.
        @tf.function(autograph=False, input_signature=[images] + labels)
        def log_prob(x, labels=None):
            return out(model.log_prob(shaped(x, "x"), training=False, labels=labels))

        @tf.function(autograph=False, input_signature=[uint8, seed] + labels)
        def bits_per_dim(images, seed, labels=None):
            # The model's dequantizer (uniform or learned, evaluation mode) and objective.
            return out(model.bits_per_dim(shaped(images, "images"), seed=seed, labels=labels))

        @tf.function(autograph=False, input_signature=[scalar_int, scalar_float, seed] + labels)
        def sample(num_samples, temperature, seed, labels=None):
            return out(model.sample(num_samples, temperature=temperature, seed=seed,
                                    labels=labels))

        @tf.function(autograph=False, input_signature=[images] + labels)
        def encode(x, labels=None):
            return out(model.encode(shaped(x, "x"), labels=labels))

        @tf.function(autograph=False, input_signature=[images] + labels)
        def decode(z, labels=None):
            return out(model.decode(shaped(z, "z"), labels=labels))

        self.log_prob = log_prob
        self.bits_per_dim = bits_per_dim
        self.sample = sample
        self.encode = encode
        self.decode = decode


def _given(labels: tf.Tensor | None) -> tuple[tf.Tensor, ...]:
    """``labels`` as the optional last positional argument of a module function."""
    return () if labels is None else (labels,)


def _signatures(module: _ExportModule) -> dict:
    """Signature functions: the module's functions with named outputs.

    They are handed to ``tf.saved_model.save`` untraced: functions traced
    outside its save context are traced again inside it (the variable policy
    is part of the cache key), which would store every flow graph twice.
    """

    def log_prob(x, labels=None):
        return {"log_prob": module.log_prob(x, *_given(labels))}

    def bits_per_dim(images, seed, labels=None):
        return {"bits_per_dim": module.bits_per_dim(images, seed, *_given(labels))}

    def sample(num_samples, temperature, seed, labels=None):
        return {"samples": module.sample(num_samples, temperature, seed, *_given(labels))}

    def encode(x, labels=None):
        return {"z": module.encode(x, *_given(labels))}

    def decode(z, labels=None):
        return {"x": module.decode(z, *_given(labels))}

    signatures = {}
    for wrapper in (log_prob, bits_per_dim, sample, encode, decode):
        name = wrapper.__name__
        signatures[name] = tf.function(
            wrapper, input_signature=getattr(module, name).input_signature, autograph=False)
    signatures["serving_default"] = signatures["log_prob"]
    return signatures


@contextlib.contextmanager
def _validating(model: tfnvp.RealNVP) -> Iterator[None]:
    """Traces with the value checks on, then restores the model's setting.

    ``validate_args`` is read when a function is traced, so the exported graph
    keeps the checks even for a model built with ``validate_args=False``
    (e.g. for a faster training step).
    """
    previous = model.validate_args
    model.validate_args = True
    try:
        yield
    finally:
        model.validate_args = previous


def _is_replaceable(path: str) -> bool:
    """An existing SavedModel directory, or an empty one: safe to replace."""
    if not os.path.isdir(path) or os.path.islink(path):
        return False
    entries = os.listdir(path)
    return not entries or any(e in entries for e in ("saved_model.pb", "saved_model.pbtxt"))


def export_saved_model(model: tfnvp.RealNVP, export_dir: str, weights: str | None = None) -> str:
    """Writes ``model`` as a SavedModel to ``export_dir``; returns its absolute path.

    See the module docstring for the exported functions; ``weights`` says
    which weights ``model`` holds (``tfnvp.io.runs.describe_weights``), for the
    metadata.  The SavedModel and
    its metadata are written to a temporary directory next to ``export_dir``
    (same filesystem), then moved into place by renames: an existing export
    is moved aside only once the new one is complete, restored if the final
    rename fails, and deleted last.  A failure at any earlier point leaves the
    previous export untouched.  ``export_dir`` must be absent, empty, or a
    previous SavedModel; anything else raises ``FileExistsError`` rather than
    being deleted.  Local filesystems only.
    """
    export_dir = os.path.abspath(export_dir)
    parent, base = os.path.split(export_dir)
    if os.path.lexists(export_dir) and not _is_replaceable(export_dir):
        raise FileExistsError(
            f"{export_dir!r} exists and is not a SavedModel directory; refusing to replace it.")
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
    keep_work = False  # set if `work` holds the only copy of the previous export
    try:
        staged = os.path.join(work, "saved_model")
        metadata_path = os.path.join(work, METADATA_FILE)
        with open(metadata_path, "w") as f:
            json.dump(_metadata(model, weights), f, indent=2, sort_keys=True)
            f.write("\n")
        module = _ExportModule(model, metadata_path)
        with _validating(model):
            tf.saved_model.save(module, staged, signatures=_signatures(module))
        if not os.path.exists(os.path.join(staged, "saved_model.pb")):
            raise RuntimeError(f"tf.saved_model.save wrote no saved_model.pb in {staged!r}.")
        previous = os.path.join(work, "previous")
        if os.path.lexists(export_dir):
            os.rename(export_dir, previous)
        try:
            os.rename(staged, export_dir)
        except BaseException as error:
            if os.path.lexists(previous):
                try:
                    os.rename(previous, export_dir)
                except OSError:
                    keep_work = True
                    raise OSError(f"Could not move the new export to {export_dir!r} ({error}) "
                                  f"nor restore the previous one; it is in {previous!r}.") from error
            raise
    finally:
        if not keep_work:
            shutil.rmtree(work, ignore_errors=True)
    return export_dir


def _metadata(model: tfnvp.RealNVP, weights: str | None) -> dict:
    return {
        "format": "tfnvp.saved_model/1",
        "image_shape": list(model.image_shape),
        "flow_dtype": model.flow_dtype.name,
        "model_config": json.loads(json.dumps(run_dir.model_config(model))),
        "num_classes": model.num_classes,
        "weights": weights,
        "signatures": list(SIGNATURE_NAMES),
        "io_dtype": "float32",
        "value_checks": True,
        "versions": {"tfnvp": getattr(tfnvp, "__version__", None),
                     "tensorflow": tf.__version__},
    }


def export_version(model: tfnvp.RealNVP, base_dir: str, version: int,
                   weights: str | None = None) -> str:
    """Writes ``model`` to ``base_dir/<version>/``, TensorFlow Serving's layout; returns the path.

    TensorFlow Serving (``--model_base_path=base_dir``) serves the highest
    integer-named subdirectory and picks up new ones as they appear.  The
    version directory is written by ``export_saved_model``: in a temporary
    directory ``base_dir/.<version>.tmp-*`` (not an integer name, so never
    served) renamed into place when complete; exporting an existing version
    again replaces it the same way.  Other versions are left alone.  ``weights``
    as in ``export_saved_model``.
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise UsageError(f"An export version is a non-negative integer, got {version!r}.")
    return export_saved_model(model, os.path.join(base_dir, str(version)), weights)


def latest_version(base_dir: str) -> str | None:
    """The highest ``base_dir/<integer>/`` holding a ``saved_model.pb`` (what Serving loads)."""
    if not os.path.isdir(base_dir):
        return None
    versions = [int(name) for name in os.listdir(base_dir) if name.isdigit()
                and os.path.exists(os.path.join(base_dir, name, "saved_model.pb"))]
    return os.path.join(base_dir, str(max(versions))) if versions else None
