#!/usr/bin/env python
"""Real NVP vs Glow, unconditional vs class-conditional, through the trainer (issue 10).

    nice python bench/model_comparison.py --dataset=mnist --output=/tmp/cmp
    nice python bench/model_comparison.py --dataset=cifar10_jpeg --configs=realnvp,glow
    python bench/model_comparison.py --dataset=mnist --output=/tmp/cmp --table

Every configuration is a list of ``trainers/train.py`` flags (``CONFIGS``): the
same data, batch size, learning rate, gradient clipping, seed and number of
steps for all; each model keeps its own paper's weight decay (Real NVP: L2
5e-5; Glow: none). The sizes are chosen so that the parameter counts agree
within 1% (Real NVP: 2 scales, 1 residual block, 16 feature maps: 181,763
parameters on MNIST, 219,145 on CIFAR-10; Glow: 2 levels of 8 steps, 72 (MNIST,
182,624) or 44 (CIFAR-10, 217,824) feature maps).

Each run trains *through the trainer* (the tfnvp on ``PYTHONPATH``, one
subprocess per configuration, ``OUTPUT/<dataset>/<config>``), which evaluates
every ``--eval_every`` steps on the first ``--max_eval_examples`` held-out
images in evaluation mode (recalibrated batch-norm statistics, the statistics
users sample and export with); those evaluations are the learning curves.  At
the end ``--mode=eval`` evaluates the last checkpoint on the whole held-out
split (mean bits/dim ± standard error).  A run that exists is resumed, not
restarted, so an interrupted comparison continues.

Results: ``OUTPUT/<dataset>/comparison.json`` and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from bench import summaries  # noqa: E402
DATA = "/work/shared/data"

DATASETS = {
    "mnist": dict(flags=["--dataset=mnist_idx", f"--data_dir={DATA}/mnist", "--noflip"],
                  glow_hidden=72),
    "cifar10_jpeg": dict(flags=["--dataset=image_folder", f"--data_dir={DATA}/cifar10_jpeg",
                                "--flip"], glow_hidden=44),
}


def configs(dataset: str) -> dict[str, list[str]]:
    realnvp = ["--model=realnvp", "--num_scales=2", "--num_res_blocks=1",
               "--hidden_channels=16", "--l2=5e-5"]
    glow = ["--model=glow", "--num_scales=2", "--steps_per_scale=8",
            f"--hidden_channels={DATASETS[dataset]['glow_hidden']}", "--l2=0"]
    return {"realnvp": realnvp, "glow": glow,
            "realnvp_conditional": realnvp + ["--conditional"],
            "glow_conditional": glow + ["--conditional"]}


def _trainer(flags: list[str], log_path: str) -> str:
    """Runs the trainer with ``flags``, its output going to ``log_path`` as it happens."""
    command = [sys.executable, os.path.join(REPO, "trainers", "train.py"), *flags]
    print("$", " ".join(command), flush=True)
    start = os.path.getsize(log_path) if os.path.exists(log_path) else 0
    with open(log_path, "a") as log:
        process = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                                 env={**os.environ, "PYTHONPATH": REPO})
    with open(log_path) as log:
        log.seek(start)
        output = log.read()
    if process.returncode:
        print(output[-3000:], file=sys.stderr)
        raise SystemExit(f"trainer failed (exit {process.returncode}): {' '.join(flags)}")
    return output


def run(args: argparse.Namespace, name: str, flags: list[str]) -> dict:
    output = os.path.join(args.output, args.dataset, name)
    log_path = output + ".log"
    common = [*DATASETS[args.dataset]["flags"], f"--output_dir={output}",
              f"--batch_size={args.batch_size}", f"--learning_rate={args.learning_rate}",
              "--clip_grad_norm=100", f"--seed={args.seed}", "--eval_batch_size=250",
              f"--max_eval_examples={args.max_eval_examples}",
              f"--recalibration_batches={args.recalibration_batches}"]
    start = time.perf_counter()
    out = _trainer([*common, *flags, f"--train_steps={args.steps}",
                    f"--eval_every={args.eval_every}", f"--checkpoint_every={args.eval_every}",
                    "--log_every=50", "--summary_every=50", "--num_sample_images=100",
                    "--temperature=0.8"], log_path)
    seconds = time.perf_counter() - start
    params = re.findall(r"\((\d+) parameters", open(log_path).read())
    _trainer([*common, "--mode=eval"], log_path)
    final = json.load(open(os.path.join(output, "eval.json")))
    curve = summaries.scalars(os.path.join(output, "tensorboard", "eval"), "bits_per_dim")
    return dict(config=name, flags=flags, params=int(params[0]) if params else None,
                steps=args.steps, seconds=round(seconds, 1), resumed="resuming" in out,
                curve={str(k): v for k, v in sorted(curve.items())},
                eval_bits_per_dim=final["bits_per_dim"], eval_std_error=final["std_error"],
                eval_examples=final["num_examples"],
                samples=sorted(glob.glob(os.path.join(output, "samples", "*.png")))[-1:])


def table(rows: list[dict]) -> str:
    steps = sorted({int(s) for r in rows for s in r["curve"]})
    lines = ["| config | params | steps | wall time (s) | "
             + " | ".join(f"step {s}" for s in steps)
             + " | final, whole test split ± s.e. |",
             "|---|---:|---:|---:|" + "---:|" * len(steps) + "---:|"]
    for r in rows:
        curve = " | ".join(f"{r['curve'][str(s)]:.3f}" if str(s) in r["curve"] else "–"
                           for s in steps)
        lines.append(f"| {r['config']} | {r['params']:,} | {r['steps']} | {r['seconds']:.0f} | "
                     f"{curve} | {r['eval_bits_per_dim']:.4f} ± {r['eval_std_error']:.4f} "
                     f"({r['eval_examples']}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="mnist")
    parser.add_argument("--configs", default="realnvp,glow,realnvp_conditional,glow_conditional")
    parser.add_argument("--output", default="/tmp/model_comparison")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--eval_every", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--max_eval_examples", type=int, default=500)
    parser.add_argument("--recalibration_batches", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", action="store_true", help="only print the saved table")
    args = parser.parse_args()
    names = args.configs.split(",")
    available = configs(args.dataset)
    if unknown := [n for n in names if n not in available]:
        parser.error(f"unknown configurations {unknown}; choose from {sorted(available)}")
    path = os.path.join(args.output, args.dataset, "comparison.json")
    saved = json.load(open(path)) if os.path.exists(path) else {}
    if not args.table:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        for name in names:
            saved[name] = run(args, name, available[name])
            with open(path + ".tmp", "w") as stream:
                json.dump(saved, stream, indent=2)
            os.replace(path + ".tmp", path)
            print(table([saved[n] for n in names if n in saved]), flush=True)
    print(f"\n{args.dataset}, batch {args.batch_size}, Adam {args.learning_rate}, "
          f"evaluation mode on the first {args.max_eval_examples} held-out images per curve point")
    print(table([saved[n] for n in available if n in saved]))


if __name__ == "__main__":
    main()
