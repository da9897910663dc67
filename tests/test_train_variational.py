"""The trainer with ``--dequantization=variational`` (issue 11 item 1): the pipelines feed
uint8 images, the model's dequantizer is trained, and --mode=eval and the export's
bits_per_dim report the model's own variational bound.

One tiny run on the bundled digits (20 steps, two replicas: tests/conftest.py configures
2 logical CPUs).
"""

from __future__ import annotations

import json
import math

import numpy as np
import tensorflow as tf

import tfnvp
from trainers import data, model_flags, run_dir, train

VARIATIONAL = ["--flagfile=digits.flags", "--dequantization=variational",
               "--dequantizer_channels=6", "--num_scales=1",
               "--num_res_blocks=1", "--hidden_channels=8", "--batch_size=32",
               "--eval_batch_size=300", "--train_steps=20", "--eval_every=20",
               "--checkpoint_every=20", "--log_every=10", "--summary_every=20",
               "--num_sample_images=0", "--recalibration_batches=1"]


def test_variational_run_trains_evaluates_and_exports_the_models_bound(tmp_path):
    run = tmp_path / "variational"
    assert train.run(["train.py", *VARIATIONAL, f"--output_dir={run}"]) == 0
    config = run_dir.read_config(run)
    assert config["model"]["dequantization"] == "variational"
    model = run_dir.restore_model(str(run), conditioner_dtype=None)
    assert isinstance(model.dequantizer, tfnvp.VariationalDequantizer)
    assert model.dequantizer.hidden_channels == 6  # --dequantizer_channels, restored.
    # Trained: the couplings of q left the identity (their output gains start at zero).
    gains = [c.body.conv_out.gain.numpy() for c in model.dequantizer.conditioners]
    assert all(np.abs(g).max() > 0 for g in gains)

    # --mode=eval: model.bits_per_dim of the uint8 held-out images, each dequantized from
    # its own seed: evaluated in batches of 100, the same as in one batch of 297 here.
    assert train.run(["train.py", f"--output_dir={run}", "--mode=eval",
                      "--eval_batch_size=100"]) == 0
    report = json.loads((run / "eval.json").read_text())
    batch = next(iter(data.make_eval_dataset(data.DataConfig("digits", eval_batch_size=300))))
    images = batch["x"].numpy()
    assert images.dtype == np.uint8 and images.shape == (297, 8, 8, 1)
    bits = model.bits_per_dim(images, seed=batch["seed"])
    assert report["num_examples"] == 297 and math.isfinite(report["bits_per_dim"])
    np.testing.assert_allclose(report["bits_per_dim"], float(np.mean(bits)), rtol=1e-5)

    # The export's bits_per_dim is the model's, for the same seed; another seed, another u.
    assert train.run(["train.py", f"--output_dir={run}", "--mode=export",
                      "--export_version=1"]) == 0
    loaded = tf.saved_model.load(str(run / "saved_model" / "1"))
    seed = tf.constant([1, 2])
    exported = loaded.signatures["bits_per_dim"](images=tf.constant(images[:16]),
                                                 seed=seed)["bits_per_dim"].numpy()
    np.testing.assert_allclose(exported, model.bits_per_dim(images[:16], seed=seed).numpy(),
                               rtol=1e-5)
    other = loaded.bits_per_dim(images[:16], tf.constant([3, 4])).numpy()
    assert np.abs(other - exported).max() > 1e-4


def test_flowpp_cifar_flagfile_has_the_three_flowpp_components(tmp_path):
    train.FLAGS.unparse_flags()
    train.FLAGS(train.resolve_flagfiles(["train.py", "--flagfile=flowpp_cifar.flags",
                                         f"--output_dir={tmp_path}"]))
    config = train.train_config()
    spec = model_flags.model_spec(train.FLAGS, "cifar10", (32, 32, 3), None, None)
    assert (train.FLAGS.dataset, train.FLAGS.batch_size) == ("cifar10", 64)
    train.FLAGS.unparse_flags()
    assert isinstance(spec, tfnvp.RealNVPSpec)
    assert (spec.dequantization, spec.coupling, spec.conditioner.attention) == (
        "variational", "logistic_mixture", True)
    # The Flow++ release's CIFAR-10 sizes: 96 filters, 10 blocks, 32 components, 4 heads.
    assert (spec.hidden_channels, spec.num_res_blocks, spec.mixture_components,
            spec.conditioner.attention_heads) == (96, 10, 32, 4)
    # Flow++'s gated residual blocks with dropout 0.2 in the conditioners.
    assert (spec.conditioner.gated_convolutions, spec.conditioner.dropout) == (True, 0.2)
    # The release's optimization (aravindsrinivas/flowpp, flows/run_cifar.py: max_lr 3e-4,
    # warmup_steps 2000, max_grad_norm 1, ema_decay 0.999) and its dequantizer's 96 filters.
    assert spec.dequantizer_channels == 96
    assert (config.learning_rate, config.warmup_steps, config.clip_grad_norm,
            config.polyak_decay) == (3e-4, 2000, 1.0, 0.999)
