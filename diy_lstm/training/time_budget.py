"""A run given seconds instead of epochs (`TrainingConfig.max_seconds`): the epochs are planned once.

    settings = plan_epochs(settings, task, place, saved_config)

Before a new run trains, a throwaway copy of its model, optimizer and compiled step (`build.make_trainer`)
is compiled and `TIMED_STEPS` of its steps are timed; the run then trains as many whole epochs as
fit in `max_seconds` of such steps. From there it is a run of that many epochs like any other: the
learning rate decays over them (`TrainingConfig.learning_rate_at`), config.json records them, the
same seed gives the same weights, and `--epochs=N` without `--max_seconds` trains the same run again.
A resumed run keeps the epochs it planned. Evaluation, samples, checkpoints and the export come on
top of the budget: it counts training steps only.
"""

from __future__ import annotations

import dataclasses
import time

from diy_lstm.training import distribute
from diy_lstm.training.build import make_trainer
from diy_lstm.training.config import RunSettings
from diy_lstm.training.task import Task

TIMED_STEPS = 10  # after one untimed step that compiles


def plan_epochs(
    settings: RunSettings, task: Task, place: distribute.Placement, saved_config: dict | None
) -> RunSettings:
    """`settings` with the epochs that fit in `max_seconds` (unchanged without a budget); a run being
    resumed (`saved_config`, its config.json) keeps the epochs it planned."""
    training = settings.training
    if not training.max_seconds:
        return settings
    saved = (saved_config or {}).get("training", {})
    if saved.get("max_seconds") == training.max_seconds and isinstance(saved.get("epochs"), int):
        epochs = saved["epochs"]
        print(f"--max_seconds={training.max_seconds:g}: {epochs} epochs, as the run planned them")
    else:
        seconds = step_seconds(settings, task, place)
        epochs = max(1, int(training.max_seconds / (seconds * task.steps_per_epoch)))
        print(
            f"--max_seconds={training.max_seconds:g}: {seconds:.3f} s a training step (the mean of "
            f"{TIMED_STEPS}), {task.steps_per_epoch} steps an epoch: {epochs} epochs"
        )
    return dataclasses.replace(settings, training=dataclasses.replace(training, epochs=epochs))


def step_seconds(settings: RunSettings, task: Task, place: distribute.Placement) -> float:
    """Seconds of one training step of `settings` on `task`, measured on a throwaway model."""
    trainer = make_trainer(settings, task, place)
    batches = iter(distribute.distribute_batches(place, lambda: task.training_batches(range(1 + TIMED_STEPS))))
    float(distribute.first_local(place, trainer.train_step(*next(batches))["loss"]))  # compiles
    started = time.perf_counter()
    for _ in range(TIMED_STEPS):
        values = trainer.train_step(*next(batches))
    float(distribute.first_local(place, values["loss"]))
    return (time.perf_counter() - started) / TIMED_STEPS
