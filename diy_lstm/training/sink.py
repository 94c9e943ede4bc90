"""What only the chief writes, behind one object: `RunSink` on the chief, `SilentSink` on every other
worker (the same calls, doing nothing), so the run loop never asks who it is before writing.

    start(...)          config.json (and restarts.json), events trimmed to the checkpoint, the HParams
    graph, scalars, step_values, gate_images, texts, histograms        TensorBoard (summaries.py)
    progress            the progress line
    flush               events to disk (right after each checkpoint)
    results             results.json
    export              the SavedModel
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping

import numpy as np
import tensorflow as tf

from diy_lstm.serving.export import export
from diy_lstm.training.checkpoints import write_json_atomically
from diy_lstm.training.config import RunSettings
from diy_lstm.training.progress import Progress
from diy_lstm.training.summaries import (
    RunWriters,
    drop_events_after,
    write_gate_images,
    write_histograms,
    write_hparams,
    write_scalars,
    write_texts,
)
from diy_lstm.training.task import TRAIN, VALIDATION

# Curves by optimizer step (the epoch-indexed runs are named by split): the training batch's loss and
# error every `loss_every`-th step, the validation split's every `validate_every`-th.
TRAIN_STEPS, VALIDATION_STEPS = "train_steps", "validation_steps"
STEP_RUNS = (TRAIN_STEPS, VALIDATION_STEPS)
CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
RESTARTS_FILE = "restarts.json"


class RunSink:
    """The chief's writing: TensorBoard events, the progress line, config.json, results.json, the export."""

    writes = True

    def __init__(
        self,
        run_dir: str,
        epochs: int,
        start_epoch: int,
        splits: tuple[str, ...] = (TRAIN, VALIDATION),
        steps_per_epoch: int = 0,
    ):
        self.run_dir, self.splits, self.steps_per_epoch = run_dir, splits, steps_per_epoch
        self.writers: RunWriters | None = None  # made by `start`, once the old event files are trimmed
        self.progress_line = Progress(total=epochs, start=start_epoch)
        self._graph_due = start_epoch == 0

    def start(self, settings: RunSettings, config: dict, restarts: tuple, start_epoch: int) -> None:
        """What a run writes when it starts: its settings, and the events trimmed to its checkpoint."""
        write_json_atomically(os.path.join(self.run_dir, CONFIG_FILE), config)
        if restarts:
            write_json_atomically(
                os.path.join(self.run_dir, RESTARTS_FILE),
                {"first_seed": restarts[0].seed, "given_up": [dataclasses.asdict(r) for r in restarts]},
            )
        # What a stopped run wrote past its checkpoint; with none, everything (the HParams and graph of
        # step 0 are written again below and by the first step).
        drop_events_after(self.run_dir, start_epoch if start_epoch else -1, self.splits)
        for steps_run in STEP_RUNS:
            drop_events_after(os.path.join(self.run_dir, steps_run), start_epoch * self.steps_per_epoch or -1, ())
        if start_epoch == 0:
            write_hparams(
                self.run_dir, settings.hparams(), trial_id=f"{settings.run.run_name} seed {settings.training.seed}"
            )
        steps_runs = (TRAIN_STEPS,) * bool(settings.run.loss_every) + (VALIDATION_STEPS,) * bool(
            settings.run.validate_every
        )
        self.writers = RunWriters(self.run_dir, (*self.splits, *steps_runs))

    def graph(self, step: tf.types.experimental.PolymorphicFunction, batch: tuple) -> None:
        """The Graphs tab: the training step as traced (before XLA), once per run."""
        if self._graph_due:
            with self.writers[TRAIN].as_default():
                tf.summary.graph(step.get_concrete_function(*batch).graph)
            self._graph_due = False

    def scalars(self, metrics: Mapping[str, Mapping[str, float]], epoch: int) -> None:
        for split, values in metrics.items():
            write_scalars(self.writers[split], values, epoch)

    def step_values(self, steps_run: str, values: Mapping[str, float], step: int) -> None:
        """Values at optimizer step `step` (1-based), in `<run>/<steps_run>` (one of `STEP_RUNS`)."""
        write_scalars(self.writers[steps_run], values, step)

    def gate_images(self, model, examples: Mapping[str, tuple[str, np.ndarray]], epoch: int) -> None:
        write_gate_images(self.writers[VALIDATION], model, examples, epoch)

    def texts(self, texts: Mapping[str, str], epoch: int) -> None:
        write_texts(self.writers[VALIDATION], texts, epoch)

    def histograms(self, variables, gradients, epoch: int) -> None:
        write_histograms(self.writers[TRAIN], variables, gradients, epoch)

    def progress(self, epoch: int, values: Mapping[str, object]) -> None:
        self.progress_line.update(epoch, values)

    def say(self, line: str) -> None:
        """A line for the user (the progress line steps aside first)."""
        self.progress_line.close()
        print(line, flush=True)

    def flush(self) -> None:
        self.writers.flush()

    def results(self, result) -> None:
        write_json_atomically(os.path.join(self.run_dir, RESULTS_FILE), dataclasses.asdict(result))

    def export(
        self, module: tf.Module, export_dir: str, signatures: Mapping, metadata: Mapping, task: str
    ) -> str | None:
        return export(module, export_dir, signatures, metadata, task=task)

    def close(self) -> None:
        self.progress_line.close()
        if self.writers is not None:
            self.writers.close()


class SilentSink(RunSink):
    """A worker that is not the chief: every call does nothing (it writes nothing of the run)."""

    writes = False

    def __init__(self, *unused):
        pass

    def start(self, *unused) -> None:
        pass

    def graph(self, *unused) -> None:
        pass

    def scalars(self, *unused) -> None:
        pass

    def step_values(self, *unused) -> None:
        pass

    def gate_images(self, *unused) -> None:
        pass

    def texts(self, *unused) -> None:
        pass

    def histograms(self, *unused) -> None:
        pass

    def progress(self, *unused) -> None:
        pass

    def say(self, line: str) -> None:
        pass

    def flush(self) -> None:
        pass

    def results(self, *unused) -> None:
        pass

    def export(self, *unused) -> None:
        return None

    def close(self) -> None:
        pass
