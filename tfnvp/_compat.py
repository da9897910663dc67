"""The private TensorFlow and Keras names tfnvp relies on, in one place.

Each function here wraps one private detail of a library version tfnvp was
written for (TensorFlow 2.18-2.21, Keras 3.8-3.15).  An upgrade that changes
one of them breaks here, with a message naming the versions, instead of in
several modules at once.
"""

from __future__ import annotations

import logging
import os

import keras
import tensorflow as tf

__all__ = ["distributed_components", "keras_variable_storage", "onednn_enabled", "report_cpu_kernels",
           "set_keras_variable_storage", "sublayers"]


def _unsupported(what: str) -> RuntimeError:
    return RuntimeError(
        f"tfnvp relies on {what}, which this Keras ({keras.__version__}) with TensorFlow "
        f"({tf.__version__}) does not have; tfnvp was written for Keras 3.8-3.15 and "
        "TensorFlow 2.18-2.21.")


def keras_variable_storage(variable: keras.Variable) -> tf.Variable:
    """The ``tf.Variable`` that holds a Keras 3 variable's value (TensorFlow backend)."""
    try:
        return variable._value
    except AttributeError:
        raise _unsupported("keras.Variable._value (the backend variable)") from None


def distributed_components(variable: tf.distribute.DistributedValues) -> tuple[tf.Variable, ...]:
    """The per-replica ``tf.Variable``s of a distributed variable, replica order."""
    try:
        return tuple(variable.values)
    except AttributeError:
        raise _unsupported("tf.distribute.DistributedValues.values (the components)") from None


def sublayers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """``layer`` and every layer it holds, recursively."""
    try:
        return list(layer._flatten_layers(include_self=True, recursive=True))
    except AttributeError:
        raise _unsupported("keras.layers.Layer._flatten_layers") from None


def set_keras_variable_storage(variable: keras.Variable, storage: tf.Variable) -> None:
    """Makes ``variable`` read and assign ``storage`` until set back (see
    ``tfnvp.nets.shared_body``)."""
    if not hasattr(variable, "_value"):
        raise _unsupported("keras.Variable._value (the backend variable)")
    variable._value = storage


def onednn_enabled() -> bool:
    """Whether this process runs TensorFlow's oneDNN CPU kernels."""
    from tensorflow.python.util import _pywrap_util_port  # TensorFlow's own flag.

    return bool(_pywrap_util_port.IsMklEnabled())


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
