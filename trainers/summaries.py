"""TensorBoard scalar and image summaries written with TensorFlow alone.

``tf.summary.scalar`` and ``tf.summary.image`` live in the ``tensorboard``
package, which training does not need (only viewing does).  These write the
same records -- ``tf.summary.write`` with the scalars/images plugin metadata --
so TensorBoard reads them as usual.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

__all__ = ["SummaryWriter"]


def _metadata(plugin: str) -> bytes:
    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = plugin
    return metadata.SerializeToString()


_SCALARS = _metadata("scalars")
_IMAGES = _metadata("images")


class SummaryWriter:
    """A TensorBoard event-file writer for one directory (e.g. ``RUN/tensorboard/train``)."""

    def __init__(self, logdir: str):
        self.logdir = logdir
        self._file_writer = None

    @property
    def _writer(self):
        """Created on first use: a run that fails before its first summary writes no file."""
        if self._file_writer is None:
            self._file_writer = tf.summary.create_file_writer(self.logdir)
        return self._file_writer

    def scalars(self, step: int, values: dict) -> None:
        with self._writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.write(name, tf.cast(tf.convert_to_tensor(value), tf.float32),
                                 metadata=_SCALARS)

    def image(self, step: int, name: str, image: np.ndarray) -> None:
        """One uint8 ``[H, W, C]`` image (C = 1 or 3)."""
        image = np.asarray(image, np.uint8)
        encoded = tf.io.encode_png(image)
        # The images plugin's layout: [width, height, png bytes...].
        tensor = tf.stack([tf.as_string(image.shape[1]), tf.as_string(image.shape[0]), encoded])
        with self._writer.as_default(step=step):
            tf.summary.write(name, tensor, metadata=_IMAGES)

    def flush(self) -> None:
        if self._file_writer is not None:
            self._file_writer.flush()
