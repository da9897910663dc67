#!/usr/bin/env python
"""Evaluation-mode vs batch-statistics bits/dim along a training run (issue 9).

    PYTHONPATH=/work/wt/X python bench/eval_lag.py --output=/tmp/lag_after
    PYTHONPATH=/work/main python bench/eval_lag.py --output=/tmp/lag_before   # code before
    python bench/eval_lag.py --output=/tmp/lag --extra=--recalibration_batches=0

Trains the issue's MNIST configuration (``trainers/mnist.flags`` with 2
scales, 4 residual blocks, 32 feature maps, batch 64, Adam 1e-3, gradient norm
clipped to 100, the first 2,000 test images held out) *through the trainer*
(``trainers/train.py`` of the tfnvp found on ``PYTHONPATH``, in a subprocess),
stopping at each of ``--steps`` (the run resumes from its latest checkpoint).
At every stop it reports, on the same 2,000 test images (the trainer's
evaluation pipeline, fixed dequantization noise):

* ``eval``: the held-out bits/dim the trainer logged (evaluation mode: the
  statistics the trainer evaluates, samples and exports with);
* ``batch_stats``: bits/dim of the same checkpoint in training mode, every
  batch of ``--stats_batch`` images normalized with its own statistics (on a
  throw-away copy of the model, so nothing is updated);
* ``train``: the training bits/dim, mean of the step summaries in the last
  ``--train_window`` steps (``--summary_every=10``);
* ``gap`` = eval - batch_stats.

Results: a markdown table on stdout and ``OUTPUT/eval_lag.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

import tfnvp
import trainers
from trainers import data
from trainers import run_dir

from bench import summaries

CODE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(trainers.__file__)))

MNIST_ARGS = ["--flagfile=" + os.path.join(CODE_ROOT, "trainers", "mnist.flags"),
              "--data_dir=/work/shared/data/mnist", "--num_scales=2", "--num_res_blocks=4",
              "--hidden_channels=32", "--batch_size=64", "--learning_rate=1e-3",
              "--clip_grad_norm=100", "--max_eval_examples=2000", "--eval_batch_size=250",
              "--num_sample_images=0", "--summary_every=10", "--log_every=50"]


def batch_statistics_bits(output_dir: str, stats_batch: int) -> tuple[float, int]:
    """Training-mode bits/dim of the latest checkpoint on the run's held-out images."""
    config = run_dir.read_config(output_dir)
    model = run_dir.restore_model(output_dir, conditioner_dtype=None)
    data_config = data.from_record(config["input"], eval_batch_size=stats_batch)
    num_dims = int(np.prod(model.image_shape))

    @tf.function
    def bits(batch):
        nll = model.objective(**batch, training=True).nll
        return tfnvp.bits_per_dim_from_log_prob(-tf.cast(nll, tf.float64), num_dims)

    values = np.concatenate([bits(batch).numpy() for batch in data.make_eval_dataset(data_config)])
    return float(values.mean()), int(values.size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="run directory (created)")
    parser.add_argument("--steps", default="100,200,400,600")
    parser.add_argument("--stats_batch", type=int, default=250)
    parser.add_argument("--train_window", type=int, default=50)
    parser.add_argument("--base", default=None,
                        help="flags replacing the MNIST configuration, comma separated "
                             "(e.g. --flagfile=trainers/digits.flags)")
    parser.add_argument("--extra", action="append", default=[], help="more trainer flags")
    args = parser.parse_args()
    base = args.base.split(",") if args.base else MNIST_ARGS
    steps = [int(s) for s in args.steps.split(",")]
    rows = []
    for step in steps:
        command = [sys.executable, os.path.join(CODE_ROOT, "trainers", "train.py"), *base,
                   f"--output_dir={args.output}", f"--train_steps={step}",
                   f"--eval_every={step}", f"--checkpoint_every={step}", *args.extra]
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": CODE_ROOT})
        board = os.path.join(args.output, "tensorboard")
        evaluated = summaries.scalars(os.path.join(board, "eval"), "bits_per_dim")[step]
        batch_stats, count = batch_statistics_bits(args.output, args.stats_batch)
        train = summaries.scalars(os.path.join(board, "train"), "bits_per_dim")
        window = [v for s, v in train.items() if step - args.train_window < s <= step]
        rows.append(dict(step=step, eval=evaluated, batch_stats=batch_stats,
                         gap=evaluated - batch_stats, train=float(np.mean(window)),
                         examples=count))
        print(json.dumps(rows[-1]), flush=True)
    with open(os.path.join(args.output, "eval_lag.json"), "w") as f:
        json.dump(dict(code=CODE_ROOT, base=base, extra=args.extra, rows=rows), f, indent=2)
    print(f"\ncode: {CODE_ROOT}; flags: {' '.join(base + args.extra)}")
    print("| step | eval-mode bits/dim (trainer) | batch-statistics bits/dim | gap | "
          "training bits/dim |")
    print("|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['step']} | {row['eval']:.3f} | {row['batch_stats']:.3f} | "
              f"{row['gap']:+.3f} | {row['train']:.3f} |")
    if any(not math.isfinite(r["eval"]) for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
