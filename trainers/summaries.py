"""TensorBoard scalar and image summaries (``tf.summary``, from the ``tensorboard`` package)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

__all__ = ["SummaryWriter"]


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
                tf.summary.scalar(name, tf.cast(tf.convert_to_tensor(value), tf.float32))

    def image(self, step: int, name: str, image: np.ndarray) -> None:
        """One uint8 ``[H, W, C]`` image (C = 1 or 3)."""
        with self._writer.as_default(step=step):
            tf.summary.image(name, np.asarray(image, np.uint8)[None])

    def flush(self) -> None:
        if self._file_writer is not None:
            self._file_writer.flush()

    def close(self) -> None:
        """Writes what is buffered and closes the event file (a later summary reopens it)."""
        if self._file_writer is not None:
            self._file_writer.close()
            self._file_writer = None
