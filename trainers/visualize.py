r"""Pictures of a trained Real NVP's latent space (paper section 5, appendices B-D).

Usage::

    python trainers/visualize.py --what=samples --output_dir=RUN --out=samples.png
    python trainers/visualize.py --what=manifold --output_dir=RUN --out=manifold.png --num=9
    python trainers/visualize.py --what=interpolate --saved_model=RUN/saved_model \
        --images=a.png,b.png --out=interp.png

``--what``:
  samples      blocks of ``--num`` samples at each ``--temperatures`` (or ``--temperature``), the
               same noise scaled by each temperature, side by side (coolest left).
  manifold     the ``--num`` x ``--num`` manifold of eq. (14) through four images (corners framed).
  compression  one row per image: the image, then keeping ``--fractions`` of its latents
               (coarsest scales first), the rest resampled at ``--temperature``.
  extrapolate  ``--num`` samples at ``--factor`` x the training size (``--output_dir`` only).
  interpolate  ``--num`` steps along a great circle in latent space between two images.
  reconstruct  images (top row) and decode(encode(images)) (bottom row); logs the max error.

A class-conditional model (``--conditional`` run, or its export) draws
``--what=samples`` with one row per class: row ``k`` holds ``--num`` samples of
class ``k`` at each temperature (the same noise at every temperature, coolest
left); the other pictures encode images without labels and are refused for it.

``--num`` defaults: samples 16 per temperature, manifold 9 x 9, compression 4
images, extrapolate 4 samples, interpolate 8 steps, reconstruct 8 images.
Held-out images are the first ones of the split, at their pixel centres (uint8 + 0.5,
as image files are); manifold takes 4 and interpolate 2.

The model comes from ``--output_dir`` (config.json + latest checkpoint) or a
``--saved_model`` export.  Images come from ``--images`` (PNG/JPEG files,
converted to the model's channels and resized when the aspect ratio matches)
or else from the start of the run's held-out split.  The PNG is enlarged
(``--scale``, by default so that one image is at least 64 pixels) so that an
8x8 digit stays visible.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import traceback
from typing import Sequence

if __name__ == "__main__" and not __package__:  # python trainers/visualize.py
    import checkout  # trainers/checkout.py, this script's sibling.

    checkout.require_own_checkout(__file__)

from trainers import console  # noqa: E402

console.start_tensorflow()  # Its C++ errors only, unless TF_CPP_MIN_LOG_LEVEL says otherwise.

import numpy as np
import tensorflow as tf
from absl import app, flags, logging
from PIL import Image, UnidentifiedImageError

from tfnvp.experiments import grid as grid_lib
from tfnvp.experiments import latent
from tfnvp.errors import UsageError
from trainers import run_dir

__all__ = ["WHATS", "SavedModelAdapter", "default_scale", "define_flags", "load_image_files",
           "main", "run", "console_main"]

WHATS = ("samples", "manifold", "compression", "extrapolate", "interpolate", "reconstruct")
# Images each --what takes from the data (None: none), and its default --num.
_IMAGES_NEEDED = {"manifold": 4, "interpolate": 2, "compression": None, "reconstruct": None}
_DEFAULT_NUM = {"samples": 16, "manifold": 9, "compression": 4, "extrapolate": 4,
                "interpolate": 8, "reconstruct": 8}
_EXPORT_METADATA = "tfnvp_export.json"

def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines the command's flags on ``flag_values``.

    Called by ``__main__`` only, so importing this module (e.g. in tests next
    to other commands with an ``--output_dir`` flag) defines no global flags.
    """
    kw = dict(flag_values=flag_values)
    flags.DEFINE_enum("what", None, WHATS, "Which picture to make.", **kw)
    flags.DEFINE_string("output_dir", None, "Training run directory (config.json + checkpoints/).",
                        **kw)
    flags.DEFINE_string("checkpoint", None, "A checkpoint of --output_dir instead of the latest.",
                        **kw)
    flags.DEFINE_string("saved_model", None,
                        "A SavedModel export (trainers/export.py) instead of a run; "
                        "RUN/saved_model means its newest version.", **kw)
    flags.DEFINE_string("out", None, "Output PNG file.", **kw)
    flags.DEFINE_list("images", None,
                      "Comma-separated image files (default: the run's held-out split).", **kw)
    flags.DEFINE_string("data_dir", None, "Override the run's data_dir for its held-out split.",
                        **kw)
    flags.DEFINE_float("temperature", None, "Sampling temperature (samples: instead of "
                       "--temperatures; extrapolate: default 0.7; compression: of the resampled "
                       "latents, default 1).", **kw)
    flags.DEFINE_list("temperatures", ["0.5", "0.7", "0.85", "1.0"],
                      "Temperatures for --what=samples.", **kw)
    flags.DEFINE_list("fractions", ["1", "0.5", "0.25", "0.125", "0.0625"],
                      "Fractions of latents kept for --what=compression.", **kw)
    flags.DEFINE_integer("seed", 0, "Seed of the sampling noise.", **kw)
    flags.DEFINE_integer(
        "num", None, "Samples per temperature / manifold side / number of images / interpolation "
        "steps (defaults: " + ", ".join(f"{k} {v}" for k, v in _DEFAULT_NUM.items()) + ").", **kw)
    flags.DEFINE_integer("factor", 2, "Size factor for --what=extrapolate.", **kw)
    flags.DEFINE_integer("scale", None, "PNG enlargement factor (default: images >= 64 pixels).",
                         **kw)
    flags.DEFINE_boolean("verbose", False, "On an error, also print the Python traceback.", **kw)


# ------------------------------------------------------------------ SavedModel
class SavedModelAdapter:
    """A ``trainers/export.py`` SavedModel as a ``tfnvp.latent.LatentModel``.

    Limits: the export's ``encode``/``decode`` have the training image shape
    baked in, so ``decode`` of another size (extrapolation) raises a
    ``ValueError``; ``latent_scale_index`` needs the export's metadata
    (``assets/tfnvp_export.json``, for ``num_scales``).
    """

    def __init__(self, path: str):
        if not os.path.exists(os.path.join(path, "saved_model.pb")):  # RUN/saved_model: newest
            from trainers import export  # version (TensorFlow Serving's layout)

            path = export.latest_version(path) or path
        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            raise FileNotFoundError(f"{path!r} is not a SavedModel directory (no saved_model.pb).")
        self.path = path
        self._loaded = tf.saved_model.load(path)
        missing = [n for n in ("encode", "decode") if not hasattr(self._loaded, n)]
        if missing:
            raise UsageError(f"SavedModel {path!r} lacks {missing}: not a tfnvp export.")
        spec = self._loaded.decode.input_signature[0]
        self.image_shape = tuple(int(d) for d in spec.shape[1:])
        self.metadata = self._read_metadata()
        self.num_classes = (self.metadata or {}).get("num_classes")
        if self.num_classes is None and len(self._loaded.decode.input_signature) > 1:
            raise UsageError(f"SavedModel {path!r} takes labels but its {_EXPORT_METADATA} does "
                             "not say how many classes there are: export it again.")

    def _read_metadata(self) -> dict | None:
        path = os.path.join(self.path, "assets", _EXPORT_METADATA)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    def _check(self, array, what: str) -> tf.Tensor:
        array = tf.cast(array, tf.float32)
        if tuple(array.shape[1:]) != self.image_shape:
            raise UsageError(
                f"The SavedModel {self.path!r} only handles {what} of shape "
                f"{list(self.image_shape)} (its signatures fix the image size), got "
                f"{list(array.shape[1:])}. Use --output_dir with the training run instead: "
                "a restored RealNVP works at any size.")
        return array

    def encode(self, x) -> tf.Tensor:
        return self._loaded.encode(self._check(x, "images"))

    def decode(self, z) -> tf.Tensor:
        return self._loaded.decode(self._check(z, "latents"))

    def sample(self, num_samples: int, temperature: float, seed: tf.Tensor,
               labels: tf.Tensor) -> tf.Tensor:
        """The export's ``sample`` (class-conditional exports: ``labels [num_samples]``)."""
        return self._loaded.sample(tf.constant(num_samples, tf.int32),
                                   tf.constant(temperature, tf.float32),
                                   tf.cast(seed, tf.int32), tf.cast(labels, tf.int32))

    def latent_scale_index(self, image_shape: Sequence[int] | None = None) -> np.ndarray:
        config = (self.metadata or {}).get("model_config")
        if not config:
            raise UsageError(f"SavedModel {self.path!r} has no {_EXPORT_METADATA} with the model "
                             "config: cannot tell which scale each latent belongs to. "
                             "Use --output_dir instead.")
        return run_dir.latent_scale_index(config, image_shape or self.image_shape)


# ------------------------------------------------------------------ images
def load_image_files(paths: Sequence[str], image_shape: Sequence[int]) -> np.ndarray:
    """Reads image files as float ``[N, H, W, C]`` pixel centres (``uint8 + 0.5``).

    Each file is converted to ``C`` channels (grayscale or RGB, alpha dropped)
    and resized (Lanczos) to ``H x W`` if its aspect ratio is the same;
    otherwise, or if it cannot be read, a ``ValueError`` names the file.
    """
    height, width, channels = (int(d) for d in image_shape)
    if channels not in (1, 3):
        raise UsageError("Image files need a 1- or 3-channel model, got shape "
                         f"{tuple(image_shape)}.")
    images = []
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Image file {path!r} does not exist.")
        try:
            with Image.open(path) as picture:
                picture.load()
                picture = picture.convert("L" if channels == 1 else "RGB")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            raise UsageError(f"Cannot read image file {path!r}: it is corrupt or not an image "
                             f"({error}).") from error
        w, h = picture.size
        if (h, w) != (height, width):
            if h * width != w * height:
                raise UsageError(
                    f"Image file {path!r} is {w}x{h} (width x height); the model takes "
                    f"{width}x{height} images, and a different aspect ratio cannot be "
                    "resized without distortion: crop it first.")
            logging.info("Resizing %s from %dx%d to %dx%d.", path, w, h, width, height)
            picture = picture.resize((width, height), Image.Resampling.LANCZOS)
        pixels = np.asarray(picture, np.uint8).reshape(height, width, channels)
        images.append(pixels.astype(np.float32) + 0.5)
    return np.stack(images) if images else np.zeros((0, height, width, channels), np.float32)


def _data_config(output_dir: str | None, saved_model: str | None) -> dict | None:
    """The run's data settings: ``--output_dir``, or the run that holds ``--saved_model``.

    ``config.json`` has ``"data"`` (dataset, image shape) and, as written by
    trainers/train.py, ``"input"`` (the ``DataConfig`` fields: data_dir, ...).
    """
    exports = os.path.abspath(saved_model) if saved_model else None  # RUN/saved_model[/N]
    around = [os.path.dirname(exports), os.path.dirname(os.path.dirname(exports))] if exports else []
    for directory in ([output_dir] if output_dir else []) + around:
        if os.path.exists(os.path.join(directory, run_dir.CONFIG_FILE)):
            config = run_dir.read_config(directory)
            return {**(config.get("data") or {}), **(config.get("input") or {})}
    return None


def _eval_images(data: dict, count: int, data_dir: str | None = None) -> np.ndarray:
    """The first ``count`` images of the held-out split as float pixel centres (``uint8 +
    0.5``, as ``load_image_files``)."""
    from trainers import data as data_lib  # Imported late: only this path needs it.

    config = data_lib.from_record(data, labels=False)
    if data_dir is not None:
        config = dataclasses.replace(config, data_dir=data_dir)
    config = dataclasses.replace(config, eval_batch_size=min(config.eval_batch_size, count),
                                 max_eval_examples=count)
    images = np.concatenate([batch["x"].numpy() for batch in data_lib.make_eval_dataset(config)],
                            axis=0).astype(np.float32) + 0.5
    if len(images) < count:
        raise UsageError(f"The held-out split of {config.dataset!r} has only {len(images)} "
                         f"images; {count} are needed.")
    return images[:count]


@dataclasses.dataclass(frozen=True)
class ClassSamples:
    """Samples of a class-conditional model: ``images[k, t, i]`` is sample ``i`` of class
    ``k`` at ``temperatures[t]``, from the same noise at every temperature."""

    temperatures: tuple[float, ...]
    images: np.ndarray  # [K, len(temperatures), n, H, W, C]

    def grid(self, padding: int = 1) -> np.ndarray:
        """One row per class; the temperatures' blocks of ``n`` left to right."""
        rows = self.images.shape[0]
        return grid_lib.image_grid(self.images.reshape((-1,) + self.images.shape[3:]), rows=rows,
                                   padding=padding)


def class_samples(model, num_classes: int, temperatures: Sequence[float], n: int,
                  seed: int) -> ClassSamples:
    """``n`` samples of each class at each temperature (``model.sample(..., labels=)``:
    a restored model or a ``SavedModelAdapter``)."""
    from trainers import evaluation  # Late: it pulls in the input pipelines.

    temperatures = tuple(float(t) for t in temperatures)
    if not temperatures or min(temperatures) < 0:
        raise UsageError(f"temperatures must be non-empty and non-negative, got {temperatures}.")
    labels = tf.constant(evaluation.class_rows(num_classes, n))
    noise_seed = tf.constant([seed, 0], tf.int32)
    blocks = [np.asarray(model.sample(num_classes * n, t, seed=noise_seed, labels=labels))
              for t in temperatures]
    shape = (num_classes, 1, n) + tuple(model.image_shape)
    return ClassSamples(temperatures, np.concatenate([b.reshape(shape) for b in blocks], axis=1))


def default_scale(image_shape: Sequence[int], target: int = 64) -> int:
    """Enlargement that makes one image at least ``target`` pixels on its longer side."""
    return max(1, math.ceil(target / max(image_shape[0], image_shape[1])))


# ------------------------------------------------------------------ command
def run(what: str, out: str, output_dir: str | None = None, saved_model: str | None = None,
        checkpoint: str | None = None, images: Sequence[str] | None = None,
        data_dir: str | None = None, temperature: float | None = None,
        temperatures: Sequence[float] = (0.5, 0.7, 0.85, 1.0),
        fractions: Sequence[float] = (1, .5, .25, .125, .0625), seed: int = 0,
        num: int | None = None, factor: int = 2, scale: int | None = None) -> str:
    """Makes one picture and writes it to ``out``; returns the path (see the module docstring)."""
    if what not in WHATS:
        raise UsageError(f"Unknown --what={what!r}; choose one of {', '.join(WHATS)}.")
    if (output_dir is None) == (saved_model is None):
        raise UsageError("Give exactly one of --output_dir (a training run) and --saved_model.")
    if not out:
        raise UsageError("--out (the PNG file to write) is required.")
    if what == "extrapolate" and saved_model is not None:
        raise UsageError("--what=extrapolate needs --output_dir: a SavedModel's signatures fix the "
                         "image size, so it cannot decode larger images. Point --output_dir at "
                         "the training run (config.json + checkpoints) instead.")
    num = _DEFAULT_NUM[what] if num is None else int(num)
    if num < 1:
        raise UsageError(f"--num must be positive, got {num}.")

    if saved_model is not None:
        model = SavedModelAdapter(saved_model)
        image_shape, num_classes = model.image_shape, model.num_classes
    else:  # Restored after the images are checked: bad files fail fast.
        model = None
        stored = run_dir.read_config(output_dir)["model"]
        image_shape, num_classes = tuple(stored["image_shape"]), stored.get("num_classes")
    if num_classes is not None and what != "samples":
        raise UsageError(f"--what={what} encodes images without class labels; the model is "
                         f"class-conditional ({num_classes} classes): only --what=samples "
                         "(one row per class) is available for it.")

    pictures = None
    if what in _IMAGES_NEEDED:
        count = _IMAGES_NEEDED[what] or num
        if images:
            pictures = load_image_files(images, image_shape)
            if _IMAGES_NEEDED[what] and len(pictures) != count:
                raise UsageError(f"--what={what} takes exactly {count} --images, "
                                 f"got {len(pictures)}.")
        else:
            data = _data_config(output_dir, saved_model)
            if data is None:
                raise UsageError(f"--what={what} needs images: pass --images=a.png,... (no run "
                                 "config.json to read the held-out split from).")
            pictures = _eval_images(data, count, data_dir)
    if model is None:
        # Float32 conditioners whatever the training precision (as for exports).
        model = run_dir.restore_model(output_dir, checkpoint_path=checkpoint,
                                      conditioner_dtype=None)

    if what == "samples" and num_classes is not None:
        figure = class_samples(model, num_classes,
                               temperatures if temperature is None else (temperature,), num, seed)
    elif what == "samples":
        figure = latent.temperature_samples(
            model, temperatures if temperature is None else (temperature,), n=num, seed=seed)
    elif what == "manifold":
        figure = latent.manifold(model, pictures, n=num)
    elif what == "compression":
        figure = latent.compression(model, pictures, fractions, seed=seed,
                                    temperature=1.0 if temperature is None else temperature)
    elif what == "extrapolate":
        figure = latent.extrapolate(model, factor, n=num,
                                    temperature=0.7 if temperature is None else temperature,
                                    seed=seed)
    elif what == "interpolate":
        figure = latent.interpolate(model, pictures[0], pictures[1], steps=num)
    else:
        figure = latent.reconstruct(model, pictures)
        logging.info("Reconstruction: max |x - decode(encode(x))| = %.3g pixel levels.",
                     figure.max_abs_error)
    scale = default_scale(model.image_shape) if scale is None else int(scale)
    path = grid_lib.save_png(figure.grid(), out, scale=scale)
    logging.info("Wrote %s.", path)
    return path


def main(argv: Sequence[str], flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Runs ``run`` with parsed flags; a bad input exits with a one-line error (status 1;
    ``--verbose`` adds the traceback); any other error shows its traceback
    (``console.is_user_error``)."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    f = flag_values
    if f.what is None or f.out is None:
        raise app.UsageError("--what and --out are required.")
    try:
        run(f.what, f.out, output_dir=f.output_dir, saved_model=f.saved_model,
            checkpoint=f.checkpoint, images=f.images, data_dir=f.data_dir,
            temperature=f.temperature,
            temperatures=[float(t) for t in f.temperatures],
            fractions=[float(x) for x in f.fractions], seed=f.seed, num=f.num,
            factor=f.factor, scale=f.scale)
    except Exception as error:  # noqa: BLE001 - the user's errors; the others are re-raised.
        if not console.is_user_error(error):
            raise
        if f.verbose:
            traceback.print_exc()
        sys.exit(f"visualize.py: error: {error}")


# --help: every flag of define_flags, by group.
HELP_GROUPS = {
    "Model (one of)": ("output_dir", "checkpoint", "saved_model"),
    "Data": ("images", "data_dir"),
    "Picture": ("what", "num", "temperature", "temperatures", "fractions", "factor", "seed"),
    "Output": ("out", "scale", "verbose"),
}


def console_main() -> None:
    """The ``tfnvp-visualize`` command (setup.cfg entry point)."""
    define_flags()
    console.exit_if_help(
        sys.argv, "tfnvp-visualize: the latent-space pictures of Real NVP's section 4.2 and "
        "appendices B-D, from a run or an export.",
        "tfnvp-visualize --what=samples --output_dir=runs/digits --out=samples.png",
        HELP_GROUPS, flags.FLAGS)
    app.run(main)


if __name__ == "__main__":
    console_main()
