"""A run's parts, built in one step before it trains: `parts = build(settings, task, place, run_dir)`.

    model        `LSTMModel(settings.model)`, one copy of every variable per replica
    optimizer    Adam over the model's variables
    checkpoint   both, restored from the run's latest checkpoint: `start_epoch`, the epochs it completed
    trainer      the compiled training step (`Trainer`), XLA when the task's lengths are fixed
    sink         what the chief writes (TensorBoard events, results); nothing on other workers

Everything here is made in this order, and nothing trains: `loop.TrainingLoop` takes the parts.
"""

from __future__ import annotations

import dataclasses
import os

from diy_lstm.model import LSTMModel
from diy_lstm.training import distribute
from diy_lstm.training.checkpoints import ResumeError, RunCheckpoint
from diy_lstm.training.config import RunSettings
from diy_lstm.training.optimizer import Adam
from diy_lstm.training.results import RunError
from diy_lstm.training.sink import RunSink, SilentSink
from diy_lstm.training.task import Task
from diy_lstm.training.trainer import Trainer


@dataclasses.dataclass(frozen=True)
class RunParts:
    """What a try trains with (module docstring)."""

    run_dir: str
    model: LSTMModel
    optimizer: Adam
    checkpoint: RunCheckpoint
    trainer: Trainer
    sink: RunSink | SilentSink
    start_epoch: int


def build(settings: RunSettings, task: Task, place: distribute.Placement, run_dir: str) -> RunParts:
    """The parts of one try of `settings` on `task`, on this process's share of `place`, its
    checkpoint in `run_dir` restored. `ResumeError` if the run has trained more epochs than asked."""
    training = settings.training
    trainer = make_trainer(settings, task, place)
    model, optimizer = trainer.model, trainer.optimizer
    with place.strategy.scope():
        scratch = None if place.is_chief else os.path.join(run_dir, f"worker{place.cluster.worker_index}-scratch")
        checkpoint = RunCheckpoint(run_dir, model, optimizer, scratch_dir=scratch)
    start_epoch = _restore(place, checkpoint)
    if start_epoch > training.epochs:
        raise ResumeError(
            f"{run_dir} has already trained {start_epoch} epochs; --epochs={training.epochs} "
            "would undo them: give at least that many, or --fresh to start over"
        )
    sink_kind = RunSink if place.is_chief else SilentSink
    sink = sink_kind(run_dir, training.epochs, start_epoch, task.evaluated_splits, task.steps_per_epoch)
    return RunParts(run_dir, model, optimizer, checkpoint, trainer, sink, start_epoch)


def make_trainer(settings: RunSettings, task: Task, place: distribute.Placement) -> Trainer:
    """A new model of `settings`, its Adam and the compiled step (`Trainer`, XLA when the task's
    lengths are fixed), with one copy of every variable per replica of `place`."""
    training = settings.training
    with place.strategy.scope():
        model = LSTMModel(settings.model, backprop=training.backprop, inline_loops=training.inline_loops)
        optimizer = Adam(
            model.trainable_variables, learning_rate=training.learning_rate, weight_decay=training.weight_decay
        )
    return Trainer(
        model,
        optimizer,
        task.loss,
        {"true": True, "false": False}.get(training.jit_compile, task.fixed_length),
        training.clip_norm,
        training.preactivation_noise,
        training.seed,
        strategy=place.strategy if place.distributed else None,
        noise_distribution=training.noise_distribution,
    )


def _restore(place: distribute.Placement, checkpoint: RunCheckpoint) -> int:
    """The completed epochs of the latest checkpoint, restored. With several workers the chief
    restores first (after its start-up moved or checked the run), then the others read the chief's
    checkpoint, and all must have found the same one."""
    if place.cluster.num_workers == 1:
        return checkpoint.restore_latest()
    start_epoch = checkpoint.restore_latest() if place.is_chief else 0
    distribute.from_every_worker(place, start_epoch)  # the chief is ready
    if not place.is_chief:
        start_epoch = checkpoint.restore_latest()
    found = distribute.from_every_worker(place, start_epoch)
    if len(set(found)) > 1:
        raise RunError(
            f"the workers found different checkpoints to resume from (completed epochs by worker: "
            f"{found}); every worker must see the chief's --logdir ({checkpoint.directory})"
        )
    return start_epoch
