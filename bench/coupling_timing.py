#!/usr/bin/env python
"""Time per ``log_prob`` and ``sample`` call: affine vs logistic-mixture coupling (issue 11).

    nice python bench/coupling_timing.py --image_shape=8,8,1 --batch=64

Builds two ``RealNVP`` models of the given shape (the affine one with
``--affine_hidden`` feature maps, the logistic-mixture one with ``--mixture_hidden``
and ``--components``: by default about equal parameter counts), calls each
model's user-facing ``log_prob`` (closed form in both) and ``sample`` (the
logistic mixture inverts its CDF by bisection in every coupling) once to
trace, then ``--repeats`` times, and prints the median wall time per call.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import tensorflow as tf

import tfnvp


def _median_seconds(fn, repeats: int) -> float:
    fn()  # Traces and warms up.
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image_shape", default="8,8,1")
    parser.add_argument("--num_scales", type=int, default=2)
    parser.add_argument("--num_res_blocks", type=int, default=2)
    parser.add_argument("--affine_hidden", type=int, default=16)
    parser.add_argument("--mixture_hidden", type=int, default=14)
    parser.add_argument("--components", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.image_shape.split(","))
    x = tf.random.uniform((args.batch, *shape), 0.0, 256.0, seed=0)
    results = {}
    for name, options in (("affine", dict(hidden_channels=args.affine_hidden)),
                          ("logistic_mixture", dict(hidden_channels=args.mixture_hidden,
                                                    coupling="logistic_mixture",
                                                    mixture_components=args.components))):
        model = tfnvp.RealNVP(shape, num_scales=args.num_scales,
                              num_res_blocks=args.num_res_blocks, **options)
        results[name] = dict(
            parameters=int(sum(np.prod(v.shape) for v in model.trainable_variables)),
            log_prob_ms=1e3 * _median_seconds(lambda: model.log_prob(x).numpy(), args.repeats),
            sample_ms=1e3 * _median_seconds(lambda: model.sample(args.batch).numpy(), args.repeats))
    print(json.dumps(dict(image_shape=shape, batch=args.batch, results=results), indent=1))


if __name__ == "__main__":
    main()
