"""The private TensorFlow, TensorFlow Probability and Keras names tfnvp relies on, in one place.

No other module of tfnvp, trainers, bench or examples names a private entry
point of these libraries (``tests/test_compat.py`` scans them): each is reached
through this module, written for the versions setup.cfg's ``install_requires``
allows (``SUPPORTED``).  An upgrade that removes or renames one of them fails
here, with a ``RuntimeError`` naming the missing name, the installed versions
and the supported ranges, instead of with an ``AttributeError`` deep inside a
model.  The names a class derives from (``Chain``, ``TransformedDistribution``,
``BijectorCacheWithGreedyAttrs``, ``IdentityParameterized``) are looked up when
tfnvp is imported; the others when first called.

Versions outside ``SUPPORTED`` (pip enforces the ranges at install, so only a
later ``pip install`` of one library, or ``--no-deps``, gets there) are allowed,
with one warning at import: a newer release usually keeps these names, and if
it does not, the first use of a missing one raises the message above.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import logging
import os
import re
import threading
import warnings
from typing import Any, Callable, ContextManager, Iterator

import keras
import tensorflow as tf
import tensorflow_probability as tfp

__all__ = ["BijectorCacheWithGreedyAttrs", "Chain", "IdentityParameterized", "SUPPORTED",
           "TransformedDistribution", "call_unconverted_by_autograph",
           "check_gradient_all_reduce_hook", "distributed_components", "function_call_rewrites",
           "installed_versions", "keras_variable_storage", "maybe_merge_call", "onednn_enabled",
           "op_stack_traces", "report_cpu_kernels", "restored_call_settings",
           "set_keras_variable_storage", "stop_recording", "sublayers", "thread_call_settings"]

# Library -> (lowest supported release, first unsupported one): setup.cfg's
# install_requires (tests/test_compat.py checks that they agree).
SUPPORTED: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "TensorFlow": ((2, 18), (2, 22)),
    "TensorFlow Probability": ((0, 25), (0, 27)),
    "Keras": ((3, 8), (4,)),
}


def installed_versions() -> dict[str, str]:
    """The installed version of each library of ``SUPPORTED``."""
    return {"TensorFlow": tf.__version__, "TensorFlow Probability": tfp.__version__,
            "Keras": keras.__version__}


def _release(version: str) -> tuple[int, ...]:
    """``"2.21.0rc1"`` -> ``(2, 21, 0)``: the leading numeric components."""
    match = re.match(r"\d+(\.\d+)*", version)
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


def _range(library: str) -> str:
    low, high = SUPPORTED[library]
    return f">={'.'.join(map(str, low))},<{'.'.join(map(str, high))}"


def _versions_text() -> str:
    installed = ", ".join(f"{name} {version}" for name, version in installed_versions().items())
    supported = ", ".join(f"{name} {_range(name)}" for name in SUPPORTED)
    return f"installed: {installed}; tfnvp supports {supported}"


def _unsupported(what: str) -> RuntimeError:
    return RuntimeError(
        f"tfnvp relies on {what}, which the installed libraries do not have ({_versions_text()}). "
        "Install versions in the supported ranges: pip install tfnvp's requirements "
        "(setup.cfg), e.g. pip install -e . from a checkout.")


def _unsupported_versions() -> list[str]:
    """``"TensorFlow 2.22.0"`` for each installed library outside its supported range."""
    return [f"{name} {version}" for name, version in installed_versions().items()
            if not SUPPORTED[name][0] <= _release(version) < SUPPORTED[name][1]]


def _warn_if_unsupported() -> None:
    outside = _unsupported_versions()
    if outside:
        warnings.warn(f"tfnvp was not written for {', '.join(outside)} ({_versions_text()}); "
                      "it may fail with a message naming a missing private name.",
                      RuntimeWarning, stacklevel=3)


def _private(module: str, name: str) -> Any:
    """``module.name``, a private name of one of the libraries, or the clear error."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise _unsupported(f"{module}.{name}") from None


_warn_if_unsupported()

# ------------------------------------------------------------------ TFP
# ``tfb.Chain(steps)`` builds ``_Chain`` (not a CompositeTensor) when a step is
# not a CompositeTensor, as tfnvp's are not (they hold Keras layers);
# ``tfnvp.bijectors.chain.FusedChain`` derives from it.
Chain: type = _private("tensorflow_probability.python.bijectors.chain", "_Chain")
# Likewise what ``tfd.TransformedDistribution`` builds for such a bijector
# (``tfnvp.models.checked_distribution``).
TransformedDistribution: type = _private(
    "tensorflow_probability.python.distributions.transformed_distribution",
    "_TransformedDistribution")
# TFP's bijector cache that keeps extra results (the log-det) next to the output
# (``tfnvp.bijectors.base.FusedBijector``).
BijectorCacheWithGreedyAttrs: type = _private(
    "tensorflow_probability.python.internal.cache_util", "BijectorCacheWithGreedyAttrs")

if not hasattr(tfp.bijectors.Bijector, "_get_parameterization"):
    # Overriding a hook that no longer exists would silently cost a 30x slower log_prob.
    raise _unsupported("tfp.bijectors.Bijector._get_parameterization (its hashing hook)")


class IdentityParameterized:
    """TFP's hashing and equality by object identity, for bijectors whose parameters are
    Keras layers (mixed in before ``tfp.bijectors.Bijector``).

    TFP hashes a bijector (for its result cache, at every call) by rebuilding and
    hashing ``parameters`` (``Bijector._get_parameterization``), recursively through a
    chain's members: on a deep flow this took 143 of 148 s of an eager ``log_prob``.
    Two of tfnvp's bijectors are never interchangeable (each reads its own layer's
    variables, which training changes), so identity is the exact notion, the one TFP
    itself falls back to for bijectors without ``parameters``.  Cache entries stay
    keyed on the input tensor and the call kwargs (``training``, ``context``).
    """

    def _get_parameterization(self) -> int:
        return id(self)


# ------------------------------------------------------------------ TensorFlow
def stop_recording() -> ContextManager[None]:
    """A context in which operations are recorded on no gradient tape
    (``tf.recompute_grad``'s own tape control, ``tfnvp.nets.recompute``)."""
    return _private("tensorflow.python.eager.record", "stop_recording")()


def maybe_merge_call(fn: Callable, strategy: tf.distribute.Strategy, *args, **kwargs) -> Any:
    """``fn(strategy, *args, **kwargs)`` in cross-replica context: through ``merge_call``
    from a replica context, directly otherwise (what Keras' optimizers use to apply
    updates; ``tfnvp/optimizers/fused_adam.py``)."""
    try:
        merge = tf.__internal__.distribute.interim.maybe_merge_call
    except AttributeError:
        raise _unsupported("tf.__internal__.distribute.interim.maybe_merge_call") from None
    return merge(fn, strategy, *args, **kwargs)


def distributed_components(variable: tf.distribute.DistributedValues) -> tuple[tf.Variable, ...]:
    """The per-replica ``tf.Variable``s of a distributed variable, replica order."""
    try:
        return tuple(variable.values)
    except AttributeError:
        raise _unsupported("tf.distribute.DistributedValues.values (the components)") from None


def call_unconverted_by_autograph(package: str) -> None:
    """Makes AutoGraph call ``package``'s functions as they are written inside a user's
    ``tf.function``, as it already calls TensorFlow's, TFP's and Keras' own (its
    ``CONVERSION_RULES``, first match wins).

    Without the rule AutoGraph converts every tfnvp function a user's ``tf.function``
    reaches directly (``model.distribution.log_prob``, ``model.nll``, ``FusedAdam``'s update
    through ``tf.distribute``): it parses and rewrites their source on the first trace and
    wraps each of their calls, work that buys nothing, because tfnvp has no
    tensor-dependent Python control flow (its own ``tf.function``s, the trainer's steps and
    exports are traced with ``autograph=False``).
    """
    config = _private("tensorflow.python.autograph.core", "config")
    try:
        rules, rule = tuple(config.CONVERSION_RULES), config.DoNotConvert(package)
    except AttributeError:
        raise _unsupported("tensorflow.python.autograph.core.config.CONVERSION_RULES") from None
    if str(rule) not in map(str, rules):
        config.CONVERSION_RULES = (rule,) + rules


_CALL_OPTIONS: dict[tuple, Any] = {}  # (the context's options, the fields) -> changed options


@contextlib.contextmanager
def function_call_rewrites(fields: dict[str, bool | str]) -> Iterator[None]:
    """A context in which this thread's function calls and traces pass Grappler a
    ``RewriterConfig`` with ``fields`` changed (enum values by name, e.g.
    ``{"meta_optimizer_iterations": "ONE"}``; ``tfnvp.graph_optimization``).

    TensorFlow gives every call of a ``tf.function`` its context's ``FunctionCallOptions``
    (a ``ConfigProto``) and writes them into a traced graph's calls of nested functions;
    a function's graph is optimized once per ``ConfigProto`` it is called with.
    """
    context = _private("tensorflow.python.eager.context", "context")()
    previous = context.function_call_options
    key = (previous.config_proto_serialized, previous.executor_type,
           tuple(sorted(fields.items())))
    options = _CALL_OPTIONS.get(key)
    if options is None:
        config = tf.compat.v1.ConfigProto.FromString(previous.config_proto_serialized)
        rewrites = config.graph_options.rewrite_options
        for name, value in fields.items():
            setattr(rewrites, name, getattr(type(rewrites), value) if isinstance(value, str)
                    else value)
        options = _private("tensorflow.python.eager.context", "FunctionCallOptions")(
            executor_type=previous.executor_type, config_proto=config)
        _CALL_OPTIONS[key] = options
    if options.config_proto_serialized == previous.config_proto_serialized:
        options = previous  # Nested, or set already: the thread keeps its options object.
    with _call_options(options):
        yield


@contextlib.contextmanager
def _call_options(options: Any) -> Iterator[None]:
    """A context in which this thread's ``FunctionCallOptions`` are ``options``; the previous
    ones come back after, unless the block replaced them (TensorFlow does when a setting of
    the process changes)."""
    context = _private("tensorflow.python.eager.context", "context")()
    previous = context.function_call_options
    context.function_call_options = options
    try:
        yield
    finally:
        if context.function_call_options is options:  # Not replaced inside the context.
            context.function_call_options = previous


_OP_STACKS = threading.local()  # .recorded: False inside op_stack_traces(False)


def _stacks_recorded() -> bool:
    return getattr(_OP_STACKS, "recorded", True)


@functools.cache
def _install_op_stack_switch() -> None:
    """Wraps TensorFlow's ``ops._create_c_op`` (which every new graph operation goes
    through) once, so that it records the op's Python stack unless this thread is inside
    ``op_stack_traces(False)``; elsewhere it behaves as before."""
    ops = importlib.import_module("tensorflow.python.framework.ops")
    create = _private("tensorflow.python.framework.ops", "_create_c_op")
    if "extract_traceback" not in inspect.signature(create).parameters:
        raise _unsupported("tensorflow.python.framework.ops._create_c_op(extract_traceback=)")

    @functools.wraps(create)
    def create_c_op(*args, extract_traceback: bool = True, **kwargs):
        recorded = extract_traceback and _stacks_recorded()
        return create(*args, extract_traceback=recorded, **kwargs)

    ops._create_c_op = create_c_op


@contextlib.contextmanager
def op_stack_traces(recorded: bool) -> Iterator[None]:
    """A context in which the graph operations this thread creates record the Python stack
    that created them (``recorded=True``, TensorFlow's behaviour) or not.

    TensorFlow keeps each op's stack for the "defined at" part of a graph's runtime error
    (``op.traceback``, and a SavedModel's optional debug info).  Capturing it walks the whole
    Python stack, which is deep under Keras layers and TFP bijectors: 15-20% of tracing a
    model's training step (``tfnvp.graph_optimization``).  Without it an error still names
    the failing node and carries its message; its stack reads "<stack traces unavailable>".
    """
    _install_op_stack_switch()
    previous = _stacks_recorded()
    _OP_STACKS.recorded = bool(recorded)
    try:
        yield
    finally:
        _OP_STACKS.recorded = previous


def thread_call_settings() -> tuple[Any, bool]:
    """This thread's ``FunctionCallOptions`` (TensorFlow keeps them per thread, and a new
    thread starts with the process's) and whether its new ops record their Python stacks."""
    context = _private("tensorflow.python.eager.context", "context")()
    return context.function_call_options, _stacks_recorded()


@contextlib.contextmanager
def restored_call_settings(settings: tuple[Any, bool]) -> Iterator[None]:
    """A context in which this thread has the ``settings`` of ``thread_call_settings()``
    (taken in another thread)."""
    options, recorded = settings
    with _call_options(options), op_stack_traces(recorded):
        yield


def onednn_enabled() -> bool:
    """Whether this process runs TensorFlow's oneDNN CPU kernels."""
    port = _private("tensorflow.python.util._pywrap_util_port", "IsMklEnabled")
    return bool(port())


def report_cpu_kernels() -> None:
    """Says once, at import, when TensorFlow was imported before tfnvp and left its
    oneDNN kernels off without being asked to (``tfnvp/__init__.py``)."""
    if "TF_ENABLE_ONEDNN_OPTS" in os.environ and os.environ["TF_ENABLE_ONEDNN_OPTS"] != "":
        return
    if onednn_enabled() or tf.config.list_physical_devices("GPU"):
        return
    logging.getLogger("tfnvp").warning(
        "tfnvp: TensorFlow was imported before tfnvp and runs its default CPU kernels; "
        "its oneDNN kernels train and evaluate tfnvp's models about 1.4x as fast on "
        "CPUs like this one. Set TF_ENABLE_ONEDNN_OPTS=1 before TensorFlow is imported "
        "(or import tfnvp first) to use them, or TF_ENABLE_ONEDNN_OPTS=0 to keep the "
        "default kernels without this message.")


# ------------------------------------------------------------------ Keras
def keras_variable_storage(variable: keras.Variable) -> tf.Variable:
    """The ``tf.Variable`` that holds a Keras 3 variable's value (TensorFlow backend)."""
    try:
        return variable._value
    except AttributeError:
        raise _unsupported("keras.Variable._value (the backend variable)") from None


def set_keras_variable_storage(variable: keras.Variable, storage: tf.Variable) -> None:
    """Makes ``variable`` read and assign ``storage`` until set back (see
    ``tfnvp.nets.shared_body``)."""
    if not hasattr(variable, "_value"):
        raise _unsupported("keras.Variable._value (the backend variable)")
    variable._value = storage


def sublayers(layer: keras.layers.Layer, include_self: bool = True) -> list[keras.layers.Layer]:
    """Every layer ``layer`` holds, recursively, and ``layer`` itself first unless
    ``include_self=False``."""
    try:
        walk = layer._flatten_layers
    except AttributeError:
        raise _unsupported("keras.layers.Layer._flatten_layers") from None
    return list(walk(include_self=include_self, recursive=True))


def check_gradient_all_reduce_hook() -> None:
    """Raises the clear error unless Keras' TensorFlow optimizers all-reduce gradients in
    ``_all_reduce_sum_gradients``, the method ``trainers.steps.pre_reduced`` overrides
    (overriding a method that is no longer called would sum gradients twice)."""
    optimizer = _private("keras.src.backend.tensorflow.optimizer", "TFOptimizer")
    if not hasattr(optimizer, "_all_reduce_sum_gradients"):
        raise _unsupported("keras TFOptimizer._all_reduce_sum_gradients (its gradient all-reduce)")
