"""Checkpoints of a training run, and resuming from them.

A run directory holds `config.json` (the run's settings, see `config.py`) and `checkpoints/` (a
`tf.train.CheckpointManager`). A checkpoint holds the model, the optimizer (its
moments, step count and learning rate) and the number of completed epochs. Everything random in
training is derived from `(seed, epoch)`, so nothing else is needed to resume exactly.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from typing import Mapping

import tensorflow as tf

from diy_lstm import files
from diy_lstm.errors import RunFailed, first_line

CHECKPOINT_DIR = "checkpoints"
MAX_JSON_BYTES = 10_000_000  # config.json, results.json, restarts.json
MAX_CHECKPOINT_BYTES = 40_000_000_000  # the files of checkpoints/ together


class ResumeError(RunFailed):
    """The run directory cannot be resumed as asked (other settings or data, a damaged checkpoint or
    config): the run failed, nothing was overwritten (exit 1, not a usage error)."""


class RunCheckpoint:
    """The checkpointed state of a run: `model`, `optimizer` and `epoch` (completed epochs).

    Args:
      run_dir: the run's directory.
      model, optimizer: trackable objects (e.g. `LSTMModel`, `Adam`).
      max_to_keep: how many checkpoints to keep.
      scratch_dir: for a worker that is not the chief (TensorFlow's multi-worker recipe): it restores
        from the chief's checkpoints in `run_dir`, and saves to this directory, deleted at once.
    """

    def __init__(
        self, run_dir: str, model: tf.Module, optimizer: tf.Module, max_to_keep: int = 3, scratch_dir: str | None = None
    ):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        # Set when the run stopped at its goal (`TrainingConfig.stop_at_goal`): nothing is left to train.
        self.reached_goal = tf.Variable(False, trainable=False, name="reached_goal")
        self.checkpoint = tf.train.Checkpoint(
            model=model, optimizer=optimizer, epoch=self.epoch, reached_goal=self.reached_goal
        )
        self.directory = os.path.join(run_dir, CHECKPOINT_DIR)
        self.scratch_dir = scratch_dir
        self.manager = None
        if scratch_dir is not None:
            files.remove_staging(scratch_dir)  # what a killed worker left (only if it is marked as ours)
            return
        index = os.path.join(self.directory, "checkpoint")
        try:  # a FIFO or a device among the files would hang TensorFlow's reads
            if os.path.isdir(self.directory):
                files.check_regular_tree(self.directory, f"the checkpoints {self.directory}", MAX_CHECKPOINT_BYTES)
        except (files.FileLimitError, OSError) as error:
            raise ResumeError(f"cannot restore checkpoint: {error}") from None
        try:
            self.manager = tf.train.CheckpointManager(self.checkpoint, self.directory, max_to_keep=max_to_keep)
        except Exception as error:  # the index file is text protobuf; damage shows as a parse error
            raise ResumeError(f"cannot restore checkpoint: {index} is damaged ({first_line(error)})") from None
        saved = (
            [name for name in os.listdir(self.directory) if name.startswith("ckpt-")]
            if os.path.isdir(self.directory)
            else []
        )
        if self.manager.latest_checkpoint is None and saved:
            raise ResumeError(
                f"cannot restore checkpoint: {index} names no checkpoint, but "
                f"{self.directory} holds {sorted(saved)[0]}; nothing was overwritten"
            )

    @property
    def latest(self) -> str | None:
        return tf.train.latest_checkpoint(self.directory) if self.manager is None else self.manager.latest_checkpoint

    def restore_latest(self) -> int:
        """Restores the latest checkpoint if there is one; returns the completed epochs (0 if none)."""
        if self.latest is None:
            return 0
        try:
            self.checkpoint.restore(self.latest).assert_existing_objects_matched()
        except Exception as error:  # a damaged file fails in many ways (OpError, IndexError, ...)
            raise ResumeError(f"cannot restore checkpoint {self.latest}: {first_line(error)}") from None
        return int(self.epoch.numpy())

    def save(self, completed_epochs: int, reached_goal: bool = False) -> str | None:
        """Saves (the chief) or saves to the scratch directory and deletes it (another worker)."""
        self.epoch.assign(completed_epochs)
        self.reached_goal.assign(reached_goal)
        if self.manager is not None:
            return self.manager.save(checkpoint_number=completed_epochs)
        files.make_marked_dir(self.scratch_dir)
        self.checkpoint.write(os.path.join(self.scratch_dir, f"ckpt-{completed_epochs}"))
        files.remove_staging(self.scratch_dir)
        return None


def read_json(path: str, what: str | None = None) -> dict | None:
    """The JSON object in `path`, or None if there is no such file. If `what` is given, a file that
    is not a JSON object raises `ResumeError` naming `what`; otherwise it reads as None."""
    if not os.path.exists(path):
        return None
    try:
        values = json.loads(files.read_regular_file(path, path, MAX_JSON_BYTES))
        if not isinstance(values, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as error:
        if what is None:
            return None
        raise ResumeError(f"cannot read {what} {path}: {error}") from None
    return values


# `write_json_atomically`'s temporary file beside `<name>.json`: `<name>.json.<8 of mkstemp's characters>.tmp`.
JSON_STAGING = re.compile(r"[\w.-]+\.json\.[a-z0-9_]{8}\.tmp")


def write_json_atomically(path: str, data: Mapping) -> None:
    """Writes `data` as JSON to `path` through a temporary file beside it, so that `path` holds
    either its old content or the whole new one, never a part. The temporary file is new (nothing
    there, a link included, is written through); a link at `path` is replaced, not followed."""
    descriptor, temporary = tempfile.mkstemp(
        prefix=os.path.basename(path) + ".", suffix=".tmp", dir=os.path.dirname(path) or "."
    )
    try:
        with os.fdopen(descriptor, "w") as f:
            json.dump(dict(data), f, indent=2, sort_keys=True)
        os.chmod(temporary, 0o644)  # mkstemp makes it 0600; the run's files are for others to read too
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
