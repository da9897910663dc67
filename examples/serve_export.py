"""Use a ``--mode=export`` SavedModel with plain TensorFlow (no tfnvp, no TFP).

``RUN/saved_model`` holds one directory per version (TensorFlow Serving's layout); this loads
the newest, prints its ``serving_default`` signature, draws samples with the ``sample``
signature and scores them with ``serving_default`` (log-density in nats) and ``bits_per_dim``:

    python examples/serve_export.py --export=runs/digits/saved_model

The same directory serves over HTTP with TensorFlow Serving
(``--model_base_path=$PWD/runs/digits/saved_model``).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import tensorflow as tf


def newest_version(base: str) -> str:
    """``base`` itself if it is a SavedModel, else its highest integer-named subdirectory."""
    if os.path.exists(os.path.join(base, "saved_model.pb")):
        return base
    versions = [int(v) for v in os.listdir(base) if v.isdigit()]
    if not versions:
        raise SystemExit(f"{base!r} holds no SavedModel version directory.")
    return os.path.join(base, str(max(versions)))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", required=True, help="RUN/saved_model or one version of it")
    parser.add_argument("--num", type=int, default=4, help="samples to draw and score")
    args = parser.parse_args(argv)

    path = newest_version(args.export)
    loaded = tf.saved_model.load(path)  # keep this reference: it owns the variables
    serving = loaded.signatures["serving_default"]
    print(f"{path}: serving_default inputs {serving.structured_input_signature[1]}, "
          f"outputs {serving.structured_outputs}")

    samples = loaded.signatures["sample"](num_samples=tf.constant(args.num),
                                          temperature=tf.constant(0.7),
                                          seed=tf.constant([0, 1]))["samples"]  # float32 [0, 256)
    nats = serving(x=samples)["log_prob"]
    images = tf.cast(tf.floor(samples), tf.uint8)
    bits = loaded.signatures["bits_per_dim"](images=images, seed=tf.constant([1, 2]))["bits_per_dim"]
    print(f"log p(x) of {args.num} samples (nats): {np.round(nats.numpy(), 2)}")
    print(f"bits/dim of the same samples as 8-bit images: {np.round(bits.numpy(), 4)}")
    return {"path": path, "log_prob": nats.numpy(), "bits_per_dim": bits.numpy()}


if __name__ == "__main__":
    main()
