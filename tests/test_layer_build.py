"""Composite layers build every weight from shapes alone.

Keras builds a layer without ``build`` by tracing its ``call`` symbolically,
once per level of nesting (the paper's CIFAR-10 model took ~3x longer to
create).  Each composite layer therefore has a ``build``; these tests prove it
creates exactly the weights a call would, so that nothing is created later (in
a trace, or missing from a checkpoint written before the first call).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfnvp.nets.attention import GatedAttention
from tfnvp.nets.glow_net import GlowAffineHead, GlowNet
from tfnvp.nets.logistic_mixture_parameters import LogisticMixtureParameters
from tfnvp.nets.mlp import MLP
from tfnvp.nets.resnet import ResNet
from tfnvp.nets.shift_and_log_scale import ShiftAndLogScale
from tfnvp.dequantizers.variational import ConvNet

_X = (2, 4, 4, 3)
_CONTEXT = (2, 2)

CASES = {
    "resnet": (lambda: ResNet(4, 2, 6), [_X]),
    "resnet_attention_gated": (lambda: ResNet(4, 1, 6, skip_connections=False, attention=True,
                                              attention_heads=2, gated=True, dropout=0.1), [_X]),
    "shift_and_log_scale": (lambda: ShiftAndLogScale(ResNet(4, 1, 6), channels=3), [_X]),
    "shift_and_log_scale_context": (
        lambda: ShiftAndLogScale(ResNet(4, 1, 6), channels=3), [_X, _CONTEXT]),
    "logistic_mixture": (lambda: LogisticMixtureParameters(
        ResNet(4, 1, LogisticMixtureParameters.output_channels(3, 2)), channels=3, components=2),
        [_X, _CONTEXT]),
    "glow_net_context": (lambda: GlowNet(4, hidden_channels=3, context_channels=2),
                         [_X, _CONTEXT]),
    "glow_net_flowpp": (lambda: GlowNet(4, hidden_channels=4, attention=True,
                                        attention_heads=2, gated=True, dropout=0.1), [_X]),
    "glow_head": (lambda: GlowAffineHead(GlowNet(4, hidden_channels=3), channels=4),
                  [(2, 4, 4, 4)]),
    "glow_head_flowpp_context": (lambda: GlowAffineHead(
        GlowNet(4, hidden_channels=4, context_channels=2, attention=True, attention_heads=2,
                gated=True, dropout=0.1), channels=4), [(2, 4, 4, 4), _CONTEXT]),
    "glow_head_context": (lambda: GlowAffineHead(GlowNet(4, hidden_channels=3, context_channels=2),
                                                 channels=4), [(2, 4, 4, 4), _CONTEXT]),
    "mlp": (lambda: MLP(5, 2, 3), [(2, 7)]),
    "attention": (lambda: GatedAttention(4, heads=2), [(2, 4, 4, 4)]),
    "conv_net": (lambda: ConvNet(4, 5), [_X]),
}


# Layers whose call takes ``training=`` and ``context=``: build(x_shape, context_shape=None).
_CONDITIONED = (ShiftAndLogScale, LogisticMixtureParameters, GlowNet, GlowAffineHead)


def _call(layer, shapes):
    tensors = [tf.random.stateless_normal(s, [1, len(s)]) for s in shapes]
    kwargs = {"context": tensors[1]} if len(tensors) > 1 else {}
    if isinstance(layer, (*_CONDITIONED, ResNet)):
        kwargs["training"] = True
    return layer(tensors[0], **kwargs)


@pytest.mark.parametrize("name", sorted(CASES))
def test_build_from_shapes_creates_every_weight_a_call_uses(name):
    make, shapes = CASES[name]
    called = make()
    _call(called, shapes)

    built = make()
    names = ["x_shape", "context_shape"][:len(shapes)]
    if len(shapes) == 1 and not isinstance(built, _CONDITIONED):
        built.build(shapes[0])
    else:
        built.build(**dict(zip(names, shapes)))
    assert built.built and all(layer.built for layer in built._flatten_layers())
    before = [v.path for v in built.variables]
    assert [tuple(v.shape) for v in built.variables] == [
        tuple(v.shape) for v in called.variables]  # Same weights, in the same order.
    _call(built, shapes)
    assert [v.path for v in built.variables] == before  # The call created nothing.

def test_keras_builds_a_nested_layer_without_tracing_its_call(monkeypatch):
    """The first call runs each ``call`` once: no symbolic build trace."""
    calls = []
    original = ResNet.call

    def counting(self, *args, **kwargs):
        calls.append(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ResNet, "call", counting)
    head = ShiftAndLogScale(ResNet(4, 1, 6), channels=3)
    out = _call(head, [_X])
    assert len(calls) == 1
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(out[0]), 0.0)  # Zero-init output.
