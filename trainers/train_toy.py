"""Trains a flow on a toy density and writes one PNG of what it learned.

2-D datasets (``moons``, ``rings``, ``gmm``, ``checkerboard``) train a
``DenseRealNVP``; the figure shows the held-out data, samples, the learned
log-density on a grid, and the latent image ``encode(data)``.  The 1-D
dataset ``gmm1d`` trains a ``PiecewiseLinearFlow`` (a coupling cannot split
one coordinate); the figure shows the data histogram against the learned
(and true) density, samples, the learned map ``f`` and the latent histogram.

Prints the held-out NLL in nats and, for the Gaussian mixtures, the true
differential entropy estimated on the same held-out points, ``-mean log
p_true(x_test)``, which a perfect model's NLL would match.

Usage (from the repository root)::

    python trainers/train_toy.py --dataset=moons --out=/tmp/toy_moons.png
    python trainers/train_toy.py --dataset=gmm1d --steps=2000
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not __package__:  # python trainers/train_toy.py
    import checkout  # trainers/checkout.py, this script's sibling.

    checkout.require_own_checkout(__file__)

import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable  # noqa: E402

from trainers import console  # noqa: E402

console.start_tensorflow()  # Its C++ errors only, unless TF_CPP_MIN_LOG_LEVEL says otherwise.

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras  # noqa: E402
from absl import app, flags  # noqa: E402

from tfnvp.experiments import toy_data  # noqa: E402
from tfnvp.models.dense import DenseRealNVP  # noqa: E402
from tfnvp.models.piecewise_linear_flow import PiecewiseLinearFlow  # noqa: E402

__all__ = ["DATASETS", "run", "define_flags", "main", "console_main"]

# Flag value -> name in tfnvp.toy_data.SAMPLERS.
DATASETS: dict[str, str] = {
    "moons": "two_moons",
    "rings": "rings",
    "gmm": "gaussian_mixture_2d",
    "checkerboard": "checkerboard",
    "gmm1d": "gaussian_mixture_1d",
}
# Exact log-densities of the datasets that have one.
TRUE_LOG_PROB: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gmm": toy_data.gaussian_mixture_2d_log_prob,
    "gmm1d": toy_data.gaussian_mixture_1d_log_prob,
}
_TEST_SEED_OFFSET = 1_000_003  # held-out points come from another seed


def _train(model: keras.Model, x_train: np.ndarray, steps: int, batch_size: int,
           learning_rate: float, seed: int) -> float:
    """Adam (cosine-decayed learning rate) on the mean ``model.nll`` in training
    mode; returns the last loss."""
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, max(steps, 1), alpha=0.02)
    optimizer = keras.optimizers.Adam(schedule)
    variables = model.trainable_variables

    @tf.function
    def step(x: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model.nll(x, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    data = tf.constant(x_train)
    full_batch = batch_size >= len(x_train)
    rng = np.random.default_rng(seed)
    loss = float("nan")
    for _ in range(steps):
        batch = data if full_batch else tf.gather(data, rng.integers(len(x_train), size=batch_size))
        loss = step(batch)
    return float(loss) if steps else float("nan")


def _limits(x: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(x, [0.5, 99.5])
    margin = 0.15 * (hi - lo)
    return float(lo - margin), float(hi + margin)


def _figure_2d(model: DenseRealNVP, x_test: np.ndarray, samples: np.ndarray, latent: np.ndarray,
               title: str, grid_size: int) -> plt.Figure:
    (x0, x1), (y0, y1) = _limits(x_test[:, 0]), _limits(x_test[:, 1])
    gx, gy = np.meshgrid(np.linspace(x0, x1, grid_size), np.linspace(y0, y1, grid_size))
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
    log_density = model.log_prob(grid).numpy().reshape(grid_size, grid_size)
    fig, axes = plt.subplots(1, 4, figsize=(20, 5))
    shown = slice(0, 3000)
    axes[0].scatter(x_test[shown, 0], x_test[shown, 1], s=2, alpha=0.5)
    axes[0].set_title("held-out data")
    axes[1].scatter(samples[shown, 0], samples[shown, 1], s=2, alpha=0.5, color="tab:orange")
    axes[1].set_title("samples")
    image = axes[2].imshow(np.maximum(log_density, log_density.max() - 12.0), origin="lower",
                           extent=(x0, x1, y0, y1), aspect="auto", cmap="viridis")
    fig.colorbar(image, ax=axes[2], fraction=0.046, label="log p(x) [nats]")
    axes[2].set_title("learned log-density")
    for ax in axes[:3]:
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
    axes[3].scatter(latent[shown, 0], latent[shown, 1], s=2, alpha=0.5, color="tab:green")
    angle = np.linspace(0.0, 2.0 * np.pi, 200)
    for radius in (1.0, 2.0, 3.0):
        axes[3].plot(radius * np.cos(angle), radius * np.sin(angle), "k--", lw=0.6)
    axes[3].set_xlim(-4, 4)
    axes[3].set_ylim(-4, 4)
    axes[3].set_aspect("equal")
    axes[3].set_title("latent encode(data) (circles: N(0,I) radii 1,2,3)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _figure_1d(model: PiecewiseLinearFlow, x_train: np.ndarray, x_test: np.ndarray,
               samples: np.ndarray, latent: np.ndarray, true_log_prob: Callable | None,
               title: str, grid_size: int) -> plt.Figure:
    lo, hi = _limits(x_test)
    grid = np.linspace(lo, hi, 10 * grid_size).astype(np.float32)
    density = np.exp(model.log_prob(grid).numpy())
    true_density = None if true_log_prob is None else np.exp(true_log_prob(grid))
    fig, axes = plt.subplots(1, 4, figsize=(20, 5))
    bins = np.linspace(lo, hi, 80)
    for ax, values, label, color in ((axes[0], x_train, "training data", "tab:blue"),
                                     (axes[1], samples, "samples", "tab:orange")):
        ax.hist(values, bins=bins, density=True, alpha=0.5, color=color, label=label)
        ax.plot(grid, density, "k-", lw=1.2, label="learned density")
        if true_density is not None:
            ax.plot(grid, true_density, "r--", lw=1.0, label="true density")
        ax.set_xlim(lo, hi)
        ax.legend(fontsize=8)
    axes[0].set_title("data histogram vs learned density")
    axes[1].set_title("samples")
    bijector = model.bijector
    axes[2].plot(grid, bijector.inverse(tf.constant(grid)).numpy(), "k-", lw=1.2)
    edges = bijector.edges().numpy()
    knots = bijector.knots().numpy()
    axes[2].plot(edges, knots, "o", ms=2.5, color="tab:red", label="knots")
    axes[2].set_xlim(lo, hi)
    axes[2].set_xlabel("x")
    axes[2].set_ylabel("z = f(x)")
    axes[2].legend(fontsize=8)
    axes[2].set_title("learned map f (data -> latent)")
    z_grid = np.linspace(-4, 4, 200)
    axes[3].hist(latent, bins=np.linspace(-4, 4, 60), density=True, alpha=0.5, color="tab:green",
                 label="f(held-out data)")
    axes[3].plot(z_grid, np.exp(-0.5 * z_grid**2) / np.sqrt(2 * np.pi), "k--", lw=1.0,
                 label="N(0, 1)")
    axes[3].legend(fontsize=8)
    axes[3].set_title("latent histogram")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def run(dataset: str = "moons", steps: int = 3000, batch_size: int = 512,
        learning_rate: float = 5e-3, hidden_dim: int = 64, depth: int = 2,
        num_couplings: int = 8, seed: int = 0, out: str | None = None,
        num_train: int = 20000, num_test: int = 5000, num_bins: int = 64,
        grid_size: int = 200, verbose: bool = True, coupling: str = "affine",
        mixture_components: int = 4) -> dict[str, Any]:
    """Trains on ``dataset``, writes the PNG ``out`` and returns the figures.

    Returns a dict with ``out``, ``test_nll`` (nats, held-out), ``train_loss``
    (last step), ``true_entropy`` (``None`` without a known density),
    ``seconds`` (training time) and ``model`` (the trained flow).
    """
    if dataset not in DATASETS:
        raise ValueError(f"Unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}.")
    if steps < 0 or batch_size < 1 or num_train < 1 or num_test < 1:
        raise ValueError("steps must be >= 0 and batch_size, num_train, num_test >= 1.")
    out = out or os.path.join(tempfile.gettempdir(), f"toy_{dataset}.png")
    keras.utils.set_random_seed(seed)
    sampler = toy_data.get_sampler(DATASETS[dataset])
    x_train = sampler(num_train, seed=seed)
    x_test = sampler(num_test, seed=seed + _TEST_SEED_OFFSET)
    one_d = x_train.ndim == 1
    start = time.time()
    if one_d:
        lo, hi = np.percentile(x_train, [0.1, 99.9])
        model = PiecewiseLinearFlow(num_bins, x_min=float(lo), x_max=float(hi))
    else:
        model = DenseRealNVP(x_train.shape[-1], hidden_dim=hidden_dim, depth=depth,
                             num_couplings=num_couplings, seed=seed, coupling=coupling,
                             mixture_components=mixture_components)
    train_loss = _train(model, x_train, steps, batch_size, learning_rate, seed)
    seconds = time.time() - start
    test_nll = float(np.mean(model.nll(x_test).numpy()))
    true_entropy = None
    if dataset in TRUE_LOG_PROB:
        true_entropy = float(-np.mean(TRUE_LOG_PROB[dataset](x_test)))
    summary = f"{dataset}: held-out NLL {test_nll:.4f} nats"
    if true_entropy is not None:
        summary += f", true entropy {true_entropy:.4f} nats (gap {test_nll - true_entropy:+.4f})"
    if verbose:
        print(f"{summary}; {steps} steps in {seconds:.1f} s")

    sample_seed = (seed, 1)
    if one_d:
        samples = model.distribution.sample(num_test, seed=sample_seed).numpy()
        latent = model.bijector.inverse(tf.constant(x_test)).numpy()
        fig = _figure_1d(model, x_train, x_test, samples, latent, TRUE_LOG_PROB.get(dataset),
                         summary, grid_size)
    else:
        samples = model.sample(num_test, seed=sample_seed).numpy()
        latent = model.encode(x_test).numpy()
        fig = _figure_2d(model, x_test, samples, latent, summary, grid_size)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    if verbose:
        print(f"wrote {out}")
    return dict(out=out, test_nll=test_nll, train_loss=train_loss, true_entropy=true_entropy,
                seconds=seconds, model=model)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines this script's flags (only when run as a script, so importing
    the module from tests or other trainers cannot clash with their flags)."""
    flags.DEFINE_enum("dataset", "moons", sorted(DATASETS), "Toy dataset.",
                      flag_values=flag_values)
    flags.DEFINE_integer("steps", 3000, "Training steps.", flag_values=flag_values)
    flags.DEFINE_integer("batch_size", 512, "Batch size (>= num_train: full batch).",
                         flag_values=flag_values)
    flags.DEFINE_float("learning_rate", 5e-3, "Initial Adam learning rate (cosine decay).",
                       flag_values=flag_values)
    flags.DEFINE_integer("hidden_dim", 64, "Hidden units of the coupling MLPs.",
                         flag_values=flag_values)
    flags.DEFINE_integer("depth", 2, "Hidden layers per coupling MLP.", flag_values=flag_values)
    flags.DEFINE_integer("num_couplings", 8, "Coupling layers.", flag_values=flag_values)
    flags.DEFINE_enum("coupling", "affine", ["affine", "logistic_mixture"],
                      "Coupling of the 2-D flows: Real NVP's affine one or Flow++'s "
                      "logistic-mixture CDF coupling (DenseRealNVP(coupling=)).",
                      flag_values=flag_values)
    flags.DEFINE_integer("mixture_components", 4, "Components K of the logistic-mixture "
                         "coupling.", flag_values=flag_values)
    flags.DEFINE_integer("num_bins", 64, "Bins of the 1-D piecewise-linear flow (gmm1d).",
                         flag_values=flag_values)
    flags.DEFINE_integer("seed", 0, "Seed of the data, mask and initialization.",
                         flag_values=flag_values)
    flags.DEFINE_string("out", None, "Output PNG (default: <tmp>/toy_<dataset>.png).",
                        flag_values=flag_values)
    flags.DEFINE_integer("num_train", 20000, "Training points.", flag_values=flag_values)
    flags.DEFINE_integer("num_test", 5000, "Held-out points.", flag_values=flag_values)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    run(dataset=f.dataset, steps=f.steps, batch_size=f.batch_size,
        learning_rate=f.learning_rate, hidden_dim=f.hidden_dim, depth=f.depth,
        num_couplings=f.num_couplings, seed=f.seed, out=f.out, num_train=f.num_train,
        num_test=f.num_test, num_bins=f.num_bins, coupling=f.coupling,
        mixture_components=f.mixture_components)


# --help: every flag of define_flags, by group.
HELP_GROUPS = {
    "Data": ("dataset", "num_train", "num_test", "seed"),
    "Model": ("coupling", "hidden_dim", "depth", "num_couplings", "mixture_components",
              "num_bins"),
    "Training": ("steps", "batch_size", "learning_rate"),
    "Output": ("out",),
}


def console_main() -> None:
    """The ``tfnvp-toy`` command (setup.cfg entry point); ``python trainers/train_toy.py``."""
    define_flags()
    console.exit_if_help(
        sys.argv, "tfnvp-toy: a flow on 2-D (or 1-D) toy data, and a PNG of data, samples, "
        "density and latents.", "tfnvp-toy --dataset=moons --out=moons.png",
        HELP_GROUPS, flags.FLAGS)
    app.run(main)


if __name__ == "__main__":
    console_main()
