"""Conditioner bodies traced once per configuration and input, shared by every layer like them.

A flow has many conditioner networks of one configuration acting on tensors
of one shape: Real NVP's checkerboard couplings of a scale, its channel
couplings, Glow's ``K`` steps of a level.  Traced inline, a graph grows with
the number of layers, and TensorFlow pays tracing, differentiation and graph
optimization for every copy the first time a function runs.

``call(body, x, training, context)`` computes ``body(x, training=training,
context=context)`` through a ``tf.function`` whose inputs are ``x``,
``context`` and the body's variables (as resource handles, so reads and
batch-norm updates go to the calling layer's own variables).  Every body of
the same class, configuration and variable shapes, called in the same mode on
inputs of the same shape and dtype, calls the same function: it is traced and
differentiated once (TensorFlow keeps a function's gradient with it), and it is
not inlined (``_noinline``), so Grappler optimizes it once and the caller's
graph holds one call op per conditioner.  The numbers are those of the
inline call: the same ops on the same values.

The function is traced with the calling body's code: while it traces, the
body's Keras variables are pointed at the function's variable inputs
(``bound``, ``tfnvp._compat.set_keras_variable_storage``) and set back after.
Code that runs again while the gradient is built, after the trace, must not
read variables: ``tfnvp.nets.recompute`` recomputes from the weights' values
handed to its custom gradient.

A body may run a first layer inline, before the shared trace: its
``untraced_prefix`` (``ResNet``'s prepared input, ``tfnvp.nets.conditioner_input``,
which holds what differs between otherwise identical couplings: the mask's
parity).  ``call`` runs the prefix as the body would, then the traced function
on its output, and calls the body with ``prefixed=True`` there; the prefix's
configuration (``untraced_config``) and variables are not part of the key.
Keeping it out of the trace also keeps XLA able to compile the caller once: the
gradient of a concatenation inside a not-inlined function reads its axis from
the function's outputs, so XLA would take every input of the call, the data
included, as a compile-time constant and compile again at every step.

Used only where the body opts in (``traced_once = True`` on ``ResNet``, its
residual blocks, ``MLP`` and ``GlowNet``: layers whose configuration, variable
shapes and ``trace_settings()`` -- module switches read while tracing, such
as ``tfnvp.nets.resnet.FOLD_EVAL_BATCH_NORM`` -- determine their computation) and outside ``tf.distribute`` strategies with more than one
replica (synchronized batch norms all-reduce across replicas in the body).
``ENABLED = False`` traces every body inline (read when a function is traced).
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
from typing import Iterator, Sequence

import keras
import tensorflow as tf

from tfnvp._compat import (distributed_components, keras_variable_storage,
                           set_keras_variable_storage, sublayers)
from tfnvp import running_average
from tfnvp.running_average import Training

__all__ = ["ENABLED", "bound", "call", "shareable"]

ENABLED = True

# Tracing re-points shared Python objects (the template body's variables):
# one thread at a time.
_LOCK = threading.RLock()
_STATE = threading.local()
_FUNCTIONS: dict[tuple, tf.types.experimental.PolymorphicFunction] = {}


@contextlib.contextmanager
def bound(pairs: Sequence[tuple[keras.Variable, tf.Variable]]) -> Iterator[None]:
    """Points each Keras variable of ``pairs`` at its storage while the block runs."""
    with _LOCK:
        saved = [(variable, keras_variable_storage(variable)) for variable, _ in pairs]
        for variable, storage in pairs:
            set_keras_variable_storage(variable, storage)
        try:
            yield
        finally:
            for variable, storage in reversed(saved):
                set_keras_variable_storage(variable, storage)


def shareable(body: keras.layers.Layer) -> bool:
    """Whether ``call`` traces ``body`` once for all bodies like it here."""
    return (ENABLED and getattr(type(body), "traced_once", False) and tf.inside_function()
            and tf.distribute.get_strategy().num_replicas_in_sync == 1)


def _storage(variable: keras.Variable) -> tf.Variable:
    """The backend ``tf.Variable`` of ``variable`` on this (only) replica.

    A variable created under a ``tf.distribute`` strategy is a distributed variable
    (e.g. ``MirroredVariable``); its first component is the one a read on this
    replica (or outside the strategy) sees.  It is passed itself: a distributed
    variable given to a ``tf.function`` is not an input by position (a function
    traced for one layer's would read that layer's for every caller).
    """
    storage = keras_variable_storage(variable)
    if isinstance(storage, tf.distribute.DistributedValues):
        storage = distributed_components(storage)[0]
    return storage


def _prefix(body: keras.layers.Layer) -> keras.layers.Layer | None:
    """The body's first layer run inline, before the trace (module docstring), if any."""
    return getattr(body, "untraced_prefix", None)


def _call_variables(body: keras.layers.Layer, training: Training) -> list[keras.Variable]:
    """The variables a traced call of ``body`` in mode ``training`` may read: all of them
    but its ``untraced_prefix``'s, and where dropout is off (evaluation, recalibration)
    not its dropout layers' seed states (a SavedModel refuses to capture those untracked
    states)."""
    prefix = _prefix(body)
    excluded = set() if prefix is None else {id(v) for v in prefix.variables}
    if not training or running_average.is_cumulative(training):  # As nets.gating.dropped.
        excluded |= {id(layer.seed_generator.state) for layer in sublayers(body)
                     if isinstance(layer, keras.layers.Dropout)}
    return [v for v in body.variables if id(v) not in excluded]


def _key(body: keras.layers.Layer, tensors: Sequence[tf.Tensor | None],
         training: Training) -> tuple:
    config = dict(body.get_config())
    for field in ("name", *getattr(body, "untraced_config", ())):
        config.pop(field, None)
    # ``trace_settings()``: module switches the body's code reads while it is traced.
    return (type(body), getattr(body, "trace_settings", tuple)(),
            json.dumps(config, sort_keys=True, default=repr),
            tuple((tuple(v.shape), v.dtype, v.trainable) for v in _call_variables(body, training)),
            tuple(None if t is None else (tuple(t.shape), t.dtype.name) for t in tensors),
            training)


def _run_template(training: Training, inputs: tf.Tensor, condition: tf.Tensor | None,
                  *storages: tf.Variable) -> tf.Tensor:
    """The traced code: the template body (``call``) on its variables' function inputs."""
    template = _STATE.template
    extra = {} if condition is None else dict(context=condition)
    if _prefix(template) is not None:
        extra["prefixed"] = True
    with bound(tuple(zip(_call_variables(template, training), storages, strict=True))):
        return template(inputs, training=training, **extra)


def call(body: keras.layers.Layer, x: tf.Tensor, training: Training,
         context: tf.Tensor | None = None) -> tf.Tensor:
    """``body(x, training=training[, context=context])``, traced once per kind of body
    (module docstring); inline where ``shareable(body)`` is false."""
    kwargs = {} if context is None else dict(context=context)
    if not shareable(body):
        return body(x, training=training, **kwargs)
    if _prefix(body) is not None:
        x = _prefix(body)(x, training=training)
    key = _key(body, (x, context), training)
    function = _FUNCTIONS.get(key)
    if function is None:
        # A partial, not a closure: TensorFlow counts traces per code object, and would
        # warn of "retracing" after five kinds of bodies.
        function = tf.function(functools.partial(_run_template, training), autograph=False,
                               experimental_attributes={"_noinline": True})
        _FUNCTIONS[key] = function
    with _LOCK:
        _STATE.template = body  # The code a new trace runs: any body of this key.
        try:
            return function(x, context, *[_storage(v) for v in _call_variables(body, training)])
        finally:
            _STATE.template = None
