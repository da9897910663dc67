"""The architecture declared once (``tfnvp.multiscale``): positions, layers, chain and
latent layout derive from one declaration, and a new step type plugs in unchanged."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfnvp
from tfnvp.bijectors import FusedBijector, FusedChain
from tfnvp.steps.multiscale import (Scale, SqueezeOp, Step, StepBuilder, UnsqueezeOp,
                              build_bijectors, check_scales, create_layers, latent_scale_index,
                              walk)

from bijector_checks import assert_exact_bijector


class _LogScale(keras.layers.Layer):
    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.log_scale = self.add_weight(name="log_scale", shape=(channels,),
                                         initializer="random_normal", dtype="float64")


class _ChannelScale(FusedBijector):
    """A new step type's bijector: y = x * exp(s) per channel (data -> latent)."""

    def __init__(self, layer, name):
        self._layer = layer
        super().__init__(forward_min_event_ndims=3, name=name)

    def _log_det(self, t):
        positions = tf.cast(tf.reduce_prod(tf.shape(t)[-3:-1]), t.dtype)
        return tf.fill(tf.shape(t)[:-3], positions * tf.reduce_sum(self._layer.log_scale))

    def _augmented_inverse(self, x, training=False, context=None):
        ildj = self._log_det(x)
        return x * tf.exp(self._layer.log_scale), {"ildj": ildj, "fldj": -ildj}

    def _augmented_forward(self, y, training=False, context=None):
        fldj = -self._log_det(y)
        return y * tf.exp(-self._layer.log_scale), {"fldj": fldj, "ildj": -fldj}


class _ChannelScaleStep(StepBuilder):
    def layers(self, step, position):
        return {"channel_scale": _LogScale(position.channels, name=f"scale_{position.index}")}

    def bijectors(self, step, layers, position, event_ndims):
        return [_ChannelScale(layers["channel_scale"], name=f"channel_scale_{position.index}")]


def _glow_like(step_type, num_scales=2):
    """Glow's layout: squeeze, steps, factor out (last scale: squeeze, steps)."""
    body = (SqueezeOp(), Step(step_type), Step(step_type), UnsqueezeOp())
    return (Scale(body, factor_out="space_to_depth"),) * (num_scales - 1) + (Scale(body),)


def test_a_new_step_type_plugs_into_the_engine():
    owner = keras.layers.Layer()
    scales = _glow_like(_ChannelScaleStep(), num_scales=2)
    check_scales(scales, event_ndims=3)
    assert [(p.scale, p.channels, p.depth) for _, p in walk(scales, 2)] == [
        (0, 8, 1), (0, 8, 1), (1, 16, 2), (1, 16, 2)]
    layers = create_layers(owner, scales, channels=2)
    assert [owner.channel_scale_0, owner.channel_scale_3] == [layers[0]["channel_scale"],
                                              layers[3]["channel_scale"]]
    chain = FusedChain(build_bijectors(scales, layers, 2, event_ndims=3))
    z = tf.random.normal((2, 4, 4, 2), dtype=tf.float64)
    assert_exact_bijector(chain, z, event_ndims=3)
    # Half of the 32 latents leave at scale 0.
    index = latent_scale_index(scales, (4, 4, 2))
    assert sorted(np.unique(index)) == [0, 1] and (index == 0).sum() == 16


def test_real_nvp_declaration_reproduces_the_paper_layout():
    scales = tfnvp.models.realnvp.real_nvp_scales(3, "checkerboard")
    positions = [(step.mask, step.parity, p.channels, p.depth) for step, p in walk(scales, 3)]
    assert positions[:6] == [("checkerboard", k % 2, 3, 0) for k in range(3)] + [
        ("channel", k % 2, 12, 1) for k in range(3)]
    assert positions[-4:] == [("checkerboard", k % 2, 12, 2) for k in range(4)]
    assert len(positions) == 6 * 2 + 4
    model = tfnvp.RealNVP((8, 8, 3), num_scales=3, num_res_blocks=0, hidden_channels=2)
    assert [c.body.hidden_channels for c in model.conditioners] == [
        2, 2, 2, 4, 4, 4, 4, 4, 4, 8, 8, 8, 8, 8, 8, 8]
    np.testing.assert_array_equal(model.latent_scale_index(), latent_scale_index(scales, (8, 8, 3)))


@pytest.mark.parametrize("scales, message", [
    ((), "at least one scale"),
    ((Scale((Step(None),), factor_out="checkerboard"),), "every scale but the coarsest"),
    ((Scale((SqueezeOp(),)),), "not undone"),
    ((Scale((SqueezeOp(), UnsqueezeOp("checkerboard"))),), "innermost open squeeze"),
    ((Scale((SqueezeOp("diagonal"), UnsqueezeOp("diagonal"))),), "unknown squeeze orders"),
])
def test_malformed_declarations_are_refused(scales, message):
    with pytest.raises(ValueError, match=message):
        check_scales(scales, event_ndims=3)
