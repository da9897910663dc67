"""Load a training run (the trainer's RUN directory) and save a grid of samples.

One row per temperature (z ~ N(0, T^2 I), decoded by the flow's forward pass; the paper's
section 4 samples at T < 1 look cleaner).  Needs only the library (``tfnvp.load_run``):

    python examples/sample_grid.py --run=runs/digits --out=samples.png
"""

from __future__ import annotations

import argparse

import numpy as np

import tfnvp


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run directory (config.json, checkpoints/)")
    parser.add_argument("--out", default="samples.png", help="PNG file to write")
    parser.add_argument("--per_row", type=int, default=8, help="samples per temperature")
    parser.add_argument("--temperatures", default="0.5,0.7,1.0")
    args = parser.parse_args(argv)

    model = tfnvp.load_run(args.run)  # newest intact checkpoint, evaluation mode
    temperatures = [float(t) for t in args.temperatures.split(",")]
    rows = [model.sample(args.per_row, temperature=t, seed=(0, 1)).numpy() for t in temperatures]
    grid = tfnvp.grid.image_grid(np.concatenate(rows), rows=len(temperatures))
    path = tfnvp.grid.save_png(grid, args.out, scale=max(1, 64 // model.image_shape[0]))
    print(f"{len(temperatures)} rows of {args.per_row} samples (temperatures {temperatures}): {path}")
    return path


if __name__ == "__main__":
    main()
