"""Checkpoints of a training run, and resuming from them.

A run directory holds `config.json` (the settings that shape the variables and the data) and
`checkpoints/` (a `tf.train.CheckpointManager`). A checkpoint holds the model, the optimizer (its
moments, step count and learning rate) and the number of completed epochs. Everything random in
training is derived from `(seed, epoch)`, so nothing else is needed to resume exactly.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

import tensorflow as tf

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"


class ConfigMismatchError(ValueError):
    """The run directory was started with different settings than the ones given now."""


class RunCheckpoint:
    """The checkpointed state of a run: `model`, `optimizer` and `epoch` (completed epochs).

    Args:
      run_dir: the run's directory.
      model, optimizer: trackable objects (e.g. `LSTMModel`, `Adam`).
      max_to_keep: how many checkpoints to keep.
    """

    def __init__(self, run_dir: str, model: tf.Module, optimizer: tf.Module, max_to_keep: int = 3):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=self.epoch)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(run_dir, CHECKPOINT_DIR), max_to_keep=max_to_keep
        )

    @property
    def latest(self) -> str | None:
        return self.manager.latest_checkpoint

    def restore_latest(self) -> int:
        """Restores the latest checkpoint if there is one; returns the completed epochs (0 if none)."""
        if self.latest is None:
            return 0
        try:
            self.checkpoint.restore(self.latest).assert_existing_objects_matched()
        except (tf.errors.OpError, AssertionError, ValueError) as error:
            first_line = str(error).strip().splitlines()[0]
            raise ConfigMismatchError(f"cannot restore checkpoint {self.latest}: {first_line}") from None
        return int(self.epoch.numpy())

    def save(self, completed_epochs: int) -> str:
        self.epoch.assign(completed_epochs)
        return self.manager.save(checkpoint_number=completed_epochs)


def read_config(run_dir: str) -> dict | None:
    """The `config.json` of `run_dir`, or None if it has none."""
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def check_or_write_config(run_dir: str, config: Mapping, keys_that_must_match: tuple[str, ...]) -> None:
    """Writes `config.json` for a new run; for an existing run, checks that the settings in
    `keys_that_must_match` are unchanged, and raises `ConfigMismatchError` naming them if not."""
    saved = read_config(run_dir)
    if saved is not None:
        changed = [k for k in keys_that_must_match if k in saved and saved[k] != config.get(k)]
        if changed:
            details = ", ".join(f"--{k}={saved[k]} (now {config.get(k)})" for k in changed)
            raise ConfigMismatchError(f"{run_dir} was started with {details}")
        return
    os.makedirs(run_dir, exist_ok=True)
    write_json_atomically(os.path.join(run_dir, CONFIG_FILE), config)


def write_json_atomically(path: str, data: Mapping) -> None:
    """Writes `data` as JSON to `path` through a temporary file beside it, so that `path` holds
    either its old content or the whole new one, never a part."""
    temporary = path + ".tmp"
    with open(temporary, "w") as f:
        json.dump(dict(data), f, indent=2, sort_keys=True)
    os.replace(temporary, path)
