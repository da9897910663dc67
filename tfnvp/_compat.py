"""The private TensorFlow and Keras names tfnvp relies on, in one place.

Each function here wraps one private detail of a library version tfnvp was
written for (TensorFlow 2.18-2.21, Keras 3.8-3.15).  An upgrade that changes
one of them breaks here, with a message naming the versions, instead of in
several modules at once.
"""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["keras_variable_storage", "set_keras_variable_storage"]


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


def set_keras_variable_storage(variable: keras.Variable, storage: tf.Variable) -> None:
    """Makes ``variable`` read and assign ``storage`` until set back (see
    ``tfnvp.nets.shared_body``)."""
    if not hasattr(variable, "_value"):
        raise _unsupported("keras.Variable._value (the backend variable)")
    variable._value = storage
