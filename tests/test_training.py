"""A short training run on real data learns: held-out bits/dim far below its start
and below an independent per-pixel baseline."""

import math

import numpy as np
import scipy.special
import scipy.stats
import tensorflow as tf

import digits_runs
import tfnvp

ALPHA = 0.05
STEPS = 150
EVAL_SEED = digits_runs.EVAL_SEED


def _per_pixel_logit_normal_bpd(train: np.ndarray, test: np.ndarray) -> float:
    """Independent baseline: each pixel's logit (section 4.1's preprocessing) ~ its own Gaussian."""
    def logits(x):
        p = ALPHA + (1 - ALPHA) * x / 256.0
        return scipy.special.logit(p), np.log((1 - ALPHA) / 256.0) - np.log(p) - np.log1p(-p)
    y_train, _ = logits(tfnvp.dequantize(train, seed=(0, 0), dtype=tf.float64).numpy())
    y_test, log_det = logits(tfnvp.dequantize(test, seed=EVAL_SEED, dtype=tf.float64).numpy())
    log_p = scipy.stats.norm.logpdf(y_test, y_train.mean(0), y_train.std(0)) + log_det
    return float(-log_p.reshape(len(test), -1).sum(1).mean() / (64 * math.log(2.0)))


def test_short_training_on_digits_beats_start_and_per_pixel_baseline():
    train, _, test, _ = digits_runs.digits()
    baseline = _per_pixel_logit_normal_bpd(train, test)
    # The run (tests/digits_runs.py) is shared with tests/test_conditional.py.
    run = digits_runs.digits_run()
    start = run.held_out_bits_per_dim(0)
    end = run.held_out_bits_per_dim(STEPS)
    print(f"held-out bits/dim: start {start:.3f}, after {STEPS} steps {end:.3f}, "
          f"per-pixel logit-normal baseline {baseline:.3f}")
    assert np.isfinite(end)
    assert end < start - 4.0
    assert end < baseline - 0.5
