"""TensorBoard output of a run: `<run_dir>/train` and `<run_dir>/test` event files.

Events are held in memory and written to disk only by `flush()`, which training calls right after
each checkpoint. So the event files never run ahead of the last checkpoint: a run killed between
checkpoints and then resumed writes each step once, with no duplicated points.
"""

from __future__ import annotations

import os
from typing import Mapping

import tensorflow as tf

# Large enough that nothing is written before an explicit flush().
_MAX_QUEUE = 1_000_000
_FLUSH_MILLIS = 10**9


class RunWriters:
    """The `train` and `test` summary writers of one run directory."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.train = tf.summary.create_file_writer(
            os.path.join(run_dir, "train"), max_queue=_MAX_QUEUE, flush_millis=_FLUSH_MILLIS
        )
        self.test = tf.summary.create_file_writer(
            os.path.join(run_dir, "test"), max_queue=_MAX_QUEUE, flush_millis=_FLUSH_MILLIS
        )

    def flush(self) -> None:
        self.train.flush()
        self.test.flush()

    def close(self) -> None:
        self.train.close()
        self.test.close()


def write_scalars(writer, values: Mapping[str, float], step: int) -> None:
    """One scalar per entry of `values`, at `step`."""
    with writer.as_default(step=step):
        for name, value in values.items():
            tf.summary.scalar(name, value)
