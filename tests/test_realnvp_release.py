"""Real NVP's coupling networks in the authors' release's form (issue 29, item 1).

Each option does what it claims: the prepared input (checked against a NumPy
computation of the release's formula), the mask channel in the first
convolution's input, the kept half only in channel couplings, no batch-norm
gamma and a 1x1 output convolution, the scalar s-scale (0 in checkerboard
couplings: a new one's log-scale is exactly 0; 1 in channel couplings), the
L2 penalty (checkerboard scales in, channel scales out), the channel-major
squeeze (a NumPy reshape/transpose) and where it is used, the conditioner
batch-norm momentum and epsilon reaching every conditioner batch norm, and
the stored configurations of before meaning the old form.  The float64
exactness of the pieces is in ``test_conformance.py`` (the release's
couplings, the channel-major squeeze) and below for whole flows.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import tfnvp
from tfnvp import _compat
from tfnvp.bijectors import Squeeze
from tfnvp.models.realnvp import real_nvp_scales
from tfnvp.nets import ShiftAndLogScale
from tfnvp.nets.conditioner_input import ConditionerInput
from tfnvp.nets.batch_norm import BatchNormalization
from tfnvp.steps.multiscale import SqueezeOp, walk

from bijector_checks import assert_exact_bijector, perturb_weights

OLD_FORM = dict(conditioner_form="direct", channel_squeeze="space_to_depth",
                conditioner_batch_norm_momentum=0.99, conditioner_batch_norm_epsilon=1e-3)


def _model(image_shape=(4, 4, 2), dtype="float64", **options) -> tfnvp.RealNVP:
    return tfnvp.RealNVP(image_shape, num_scales=2, num_res_blocks=1, hidden_channels=4,
                         dtype=dtype, **options)


def _heads(model) -> list[ShiftAndLogScale]:
    return [layer for layer in model.conditioners if isinstance(layer, ShiftAndLogScale)]


def _walk(model) -> list:
    """Every step and its position (the model's declaration, ``RealNVPSpec.layout``)."""
    return walk(model.spec.layout(), model.spec.image_shape[-1])


def _steps(model) -> list[tuple[ShiftAndLogScale, str, tuple[int, int, int]]]:
    """Every coupling's head, mask and the shape of the tensor it couples."""
    height = model.spec.image_shape[0]
    return [(head, step.mask, (height // 2 ** position.depth,) * 2 + (position.channels,))
            for head, (step, position) in zip(_heads(model), _walk(model), strict=True)]


def _masks(model) -> list[str]:
    return [mask for _, mask, _ in _steps(model)]


def _batch_norm_reference(t: np.ndarray, beta: np.ndarray, epsilon: float) -> np.ndarray:
    """Training mode: batch mean and biased variance over batch and positions, no gamma."""
    mean = t.mean(axis=(0, 1, 2))
    variance = t.var(axis=(0, 1, 2))
    return (t - mean) / np.sqrt(variance + epsilon) + beta


@pytest.mark.parametrize("parity", [0, 1])
def test_checkerboard_input_is_the_release_formula_with_the_mask_channel(parity):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 6, 2))
    context = rng.standard_normal((3, 4, 6, 3))
    odd = (np.add.outer(np.arange(4), np.arange(6)) % 2)[..., None].astype(float)
    b = odd if parity == 0 else 1.0 - odd  # Section 3.4: parity 0 keeps the odd i + j.
    layer = ConditionerInput(2, "checkerboard", parity, batch_norm_epsilon=1e-4, dtype="float64")
    layer.build((None, 4, 6, 5))
    layer.norm.beta.assign([0.3, -0.2])
    out = layer(tf.constant(np.concatenate([b * x, context], -1)), training=True).numpy()
    u = 2.0 * _batch_norm_reference(b * x, np.array([0.3, -0.2]), 1e-4)
    expected = np.concatenate([np.maximum(u, 0), np.maximum(-u, 0),
                               np.broadcast_to(b, (3, 4, 6, 1)), context], -1)
    assert out.shape == (3, 4, 6, 2 * 2 + 1 + 3)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
    assert not layer.norm.scale and not any("gamma" in w.path for w in layer.weights)


@pytest.mark.parametrize("parity", [0, 1])
def test_channel_input_reads_only_the_kept_half(parity):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, 2, 8))
    kept = x[..., 4:] if parity else x[..., :4]
    layer = ConditionerInput(8, "channel", parity, batch_norm_epsilon=1e-4, dtype="float64")
    out = layer(tf.constant(x), training=True).numpy()
    u = _batch_norm_reference(kept, 0.0, 1e-4)  # beta starts at 0; no x2, no mask channel.
    np.testing.assert_allclose(out, np.concatenate([np.maximum(u, 0), np.maximum(-u, 0)], -1),
                               rtol=0, atol=1e-12)
    other = x.copy()
    other[..., slice(0, 4) if parity else slice(4, 8)] = 7.0  # The half that is not kept.
    again = ConditionerInput(8, "channel", parity, batch_norm_epsilon=1e-4, dtype="float64")
    np.testing.assert_array_equal(again(tf.constant(other), training=True).numpy(), out)


def test_release_networks_have_the_mask_channel_no_gamma_and_a_1x1_output():
    release, direct = _model((4, 4, 2)), _model((4, 4, 2), **OLD_FORM)
    for model, form in ((release, "release"), (direct, "direct")):
        for head, mask in zip(_heads(model), _masks(model), strict=True):
            body, channels = head.body, head.channels
            conv_in_inputs = body.conv_in.direction.shape[2]
            if form == "release":
                expected = 2 * channels + 1 if mask == "checkerboard" else channels
                assert conv_in_inputs == expected, (mask, conv_in_inputs)
                assert body.conv_out.kernel_size == 1
            else:
                assert conv_in_inputs == channels and body.conv_out.kernel_size == 3
            norms = [layer for layer in _compat.sublayers(body)
                     if isinstance(layer, BatchNormalization)]
            assert norms and all(norm.scale == (form == "direct") for norm in norms)


def test_new_checkerboard_coupling_has_log_scale_exactly_zero_and_learns_it():
    model = _model((4, 4, 2), dtype="float32")
    x = tf.random.uniform((8, 4, 4, 2), 0.0, 256.0, seed=1)
    for head, mask, shape in _steps(model):
        assert head.scale.shape == () and head.regularized_scale == (mask == "checkerboard")
        assert float(head.scale.numpy()) == (0.0 if mask == "checkerboard" else 1.0)
        inputs = tf.random.normal((8, *shape), seed=2)
        shift, log_scale = head(inputs, training=True)
        assert not np.any(shift.numpy())  # A new coupling is the identity ...
        assert not np.any(log_scale.numpy())
        raw = head.body(inputs, training=True)[..., head.channels:]
        # ... but a checkerboard coupling's raw log-scale is not 0, so its factor learns.
        assert np.any(raw.numpy()) == (mask == "checkerboard")
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model.nll(x, training=True))
    # The checkerboard couplings' factors (0) get a gradient from the first step (the channel
    # couplings' get theirs once their raw log-scale, starting at 0, has one).
    scales = [head.scale for head, mask, _ in _steps(model) if mask == "checkerboard"]
    grads = tape.gradient(loss, scales)
    assert len(grads) == 7 and all(g is not None and float(g) != 0.0 for g in grads)


def test_penalty_has_the_checkerboard_scales_and_not_the_channel_ones():
    model = _model((4, 4, 2))
    heads, masks = _heads(model), _masks(model)
    for index, head in enumerate(heads):
        head.scale.assign(0.5 + index)
    penalized = {id(w) for w in model.regularized_weights()}
    for head, mask in zip(heads, masks):
        assert (id(head.scale) in penalized) == (mask == "checkerboard")
    gains = [layer.gain for layer in _compat.sublayers(model)
             if isinstance(layer, tfnvp.nets.WeightNormConv2D)]
    expected = (sum(float(np.sum(g.numpy() ** 2)) for g in gains)
                + sum((0.5 + i) ** 2 for i, m in enumerate(masks) if m == "checkerboard"))
    np.testing.assert_allclose(float(model.weight_scale_penalty()), expected, rtol=1e-6)
    direct = _model((4, 4, 2), **OLD_FORM)
    assert all(isinstance(w.path, str) and w.path.endswith("/g")
               for w in direct.regularized_weights())


@pytest.mark.parametrize("shape", [(2, 4, 6, 3), (2, 3, 2, 4, 2)])
def test_channel_major_squeeze_is_the_releases_reshape(shape):
    x = np.random.default_rng(3).standard_normal(shape)
    *batch, h, w, c = shape
    reference = (x.reshape(*batch, h // 2, 2, w // 2, 2, c)
                 .transpose(*range(len(batch)), len(batch), len(batch) + 2, len(batch) + 4,
                            len(batch) + 1, len(batch) + 3)
                 .reshape(*batch, h // 2, w // 2, 4 * c))
    squeeze = Squeeze(order="channel_major")
    np.testing.assert_array_equal(squeeze.inverse(tf.constant(x)).numpy(), reference)
    np.testing.assert_array_equal(squeeze.forward(tf.constant(reference)).numpy(), x)
    assert not np.array_equal(Squeeze().inverse(tf.constant(x)).numpy(), reference)


@pytest.mark.parametrize("channel_squeeze", ["channel_major", "space_to_depth"])
def test_channel_couplings_run_on_the_chosen_squeeze(channel_squeeze):
    model = _model((4, 4, 2), channel_squeeze=channel_squeeze)
    squeezes = [element.order for scale in model.spec.layout() for element in scale.body
                if isinstance(element, SqueezeOp)]
    assert squeezes == [channel_squeeze]
    # The latent layout is the body's un-squeezed tensor's: the same for both orders.
    np.testing.assert_array_equal(
        model.latent_scale_index(),
        tfnvp.RealNVP((4, 4, 2), num_scales=2, num_res_blocks=0, hidden_channels=2,
                      channel_squeeze="space_to_depth").latent_scale_index())
    with pytest.raises(tfnvp.UsageError, match="channel_squeeze"):
        real_nvp_scales(2, channel_squeeze="rows")


def test_conditioner_batch_norm_momentum_and_epsilon_reach_every_conditioner_batch_norm():
    model = _model((4, 4, 2), batch_norm_momentum=0.95, conditioner_batch_norm_momentum=0.8,
                   conditioner_batch_norm_epsilon=2e-5)
    norms = [layer for head in _heads(model) for layer in _compat.sublayers(head)
             if isinstance(layer, BatchNormalization)]
    # Per network: the prepared input's, two per residual block, the output head's.
    assert len(norms) == 4 * len(_heads(model))
    assert all(n.momentum == 0.8 and n.epsilon == 2e-5 for n in norms)
    direct = _model((4, 4, 2), **{**OLD_FORM, "conditioner_batch_norm_epsilon": 3e-5})
    norms = [layer for head in _heads(direct) for layer in _compat.sublayers(head)
             if isinstance(layer, BatchNormalization)]
    assert len(norms) == 3 * len(_heads(direct))  # No prepared input.
    assert all(n.momentum == 0.99 and n.epsilon == 3e-5 for n in norms)


def test_stored_configurations_of_before_are_the_old_form():
    spec = tfnvp.RealNVPSpec((4, 4, 2))
    assert (spec.conditioner_form, spec.channel_squeeze) == ("release", "channel_major")
    assert spec.conditioner_batch_norm_momentum == 0.9
    assert spec.conditioner_batch_norm_epsilon == 1e-4
    stored = {k: v for k, v in spec.to_config().items()
              if k not in ("conditioner_form", "channel_squeeze", "conditioner_batch_norm_momentum",
                           "conditioner_batch_norm_epsilon")}
    stored["batch_norm_momentum"] = 0.97
    old = tfnvp.RealNVPSpec.from_config(stored, legacy=True)
    assert (old.conditioner_form, old.channel_squeeze) == ("direct", "space_to_depth")
    assert (old.conditioner_momentum, old.conditioner_batch_norm_epsilon) == (0.97, 1e-3)
    assert tfnvp.RealNVPSpec.from_config(old.to_config()) == old
    norms = [layer for layer in _compat.sublayers(tfnvp.RealNVP(old))
             if isinstance(layer, BatchNormalization)]
    assert norms and all(n.momentum == 0.97 and n.epsilon == 1e-3 and n.scale for n in norms)
    with pytest.raises(tfnvp.UsageError, match="conditioner_form"):
        tfnvp.RealNVPSpec((4, 4, 2), conditioner_form="prepared")
    with pytest.raises(tfnvp.UsageError, match="conditioner_batch_norm_epsilon"):
        tfnvp.RealNVPSpec((4, 4, 2), conditioner_batch_norm_epsilon=0.0)


def test_release_flow_exact_against_numerical_jacobian():
    model = tfnvp.RealNVP((8, 8, 2), num_scales=3, num_res_blocks=1, hidden_channels=4,
                          dtype="float64")
    perturb_weights(model.conditioners + model.statistics, scale=0.2)
    x = tf.random.uniform((2, 8, 8, 2), 8.0, 248.0, dtype=tf.float64, seed=4)
    z = model.bijector.inverse(x)
    errors = assert_exact_bijector(model.bijector, tf.identity(z), event_ndims=3,
                                   graph_mode=False)
    assert errors["log_det_vs_numerical"] < 1e-6 and errors["round_trip"] < 1e-9


@pytest.mark.parametrize("mask,parity", [("checkerboard", 1), ("channel", 1)])
def test_release_coupling_exact_in_training_mode(mask, parity):
    """Training mode: the prepared input's batch norm uses the batch's statistics of
    ``b * x``, which the coupling leaves unchanged, so both directions still agree."""
    model = _model((4, 4, 2))
    perturb_weights(model.conditioners, scale=0.3)
    head, shape = next((head, shape) for head, (step, position), (_, _, shape)
                       in zip(_heads(model), _walk(model), _steps(model))
                       if step.mask == mask and step.parity == parity)
    coupling = tfnvp.bijectors.AffineCoupling(head, mask=mask, parity=parity)
    z = tf.constant(np.random.default_rng(5).standard_normal((4, *shape)))
    errors = assert_exact_bijector(coupling, z, event_ndims=3, graph_mode=False, training=True)
    assert errors["log_det_vs_numerical"] < 1e-6 and errors["round_trip"] < 1e-9
