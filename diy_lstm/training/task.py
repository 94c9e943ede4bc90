"""What a task supplies to the training run of `run.py`.

The run knows LSTMs and training: epochs of compiled steps, evaluation, TensorBoard, checkpoints,
resume, restarts, export. A task knows its data and what "good" means. It plugs in by implementing
`Task`; the members marked * it must write, the others have defaults that suit most tasks:

  * name                         a short name, saved in config.json (a run resumes only its own task)
  * metric_names                 what `evaluate` reports of each split
    evaluated_splits             what `evaluate` reports on: train and validation, and any of the task's own
  * prepare(training)            builds what depends on the seed and batch size (every try), checks them,
                                 and returns what the run needs of it (`Prepared`: a line about the
                                 data, and what identifies it, which resume and every worker must match)
    fixed_length                 every batch has one number of steps (then one XLA compile serves all)
  * steps_per_epoch              training steps in one epoch
  * training_batches(epochs)     a dataset of batches, `steps_per_epoch` per epoch of `epochs`, in order
  * planned_batches(training)    every kind of batch the run will train or evaluate, from the settings
                                 alone: the memory estimate runs on them before `prepare` builds anything
    make_variables(model, reps)  the variables `loss` keeps between steps (e.g. a carried state), if any
  * loss(run_model, batch)       the training loss of one batch: its mean, how many terms it averages, its error
  * evaluate(model, finished)    metrics per split: {"train": {...}, "validation": {...}}
    step_validation(model)       the validation split's loss and error as `loss` defines them
    progress(metrics)            the few numbers the progress line shows (the validation split's metrics)
    goal_reached(metrics)        when the run has done what it set out to (its first epoch is reported)
    not_learned(metrics)         why a try is given up at the restart epoch, beyond the validation bounds
    gate_examples()              tag -> (one label per step, encoded `[time, features]`) drawn as heat maps
    samples(model)               tag -> text, written as text summaries every `sample_every` epochs
    histogram_batch()            a batch whose gradients are drawn as histograms
    finishing_steps()            updates on other batches once training ends, before `finish`
    finish(model)                last changes to the trained model before its final evaluation and
                                 export (e.g. refitting the readout): a `Finished`, which the run
                                 prints and passes back to `evaluate` and `serving_module`
  * serving_module(model, metrics, finished)  the `tf.Module` and signatures the SavedModel holds

A batch is a tuple of tensors; the run passes it to `loss` unchanged, so its layout is the task's,
with one rule for data-parallel training (`distribute.py`): the first axis of every tensor that has
one is the example axis, which is split among replicas; scalars go to every replica whole.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Callable, Iterator, Mapping, NamedTuple

import numpy as np
import tensorflow as tf

from diy_lstm.model import LSTMModel, ModelConfig, ModelOutput
from diy_lstm.training.config import TrainingConfig

TRAIN, VALIDATION = "train", "validation"


class BatchLoss(NamedTuple):
    """A batch's mean loss and how many terms it averages (`count`, e.g. real steps or characters):
    the weight of a replica's slice when the slices of one global batch are joined; and, if the task
    has one, its `error`: the share of those terms the predictions get wrong (a counter's steps whose
    rounded prediction misses, a text's characters not the most likely next one)."""

    mean: tf.Tensor
    count: tf.Tensor
    error: tf.Tensor | None = None


class FinishingSteps(NamedTuple):
    """Updates a task asks for once training ends (at the goal or the last epoch), before `finish`:
    `steps` batches of `batches()` (as `loss` takes them; the same ones every time, from the seed)
    at `learning_rate`. The checkpoints keep the weights from before them."""

    steps: int
    learning_rate: float
    batches: Callable[[], Iterator[tuple[np.ndarray, ...]]]
    description: str


class PlannedBatch(NamedTuple):
    """A kind of batch a run will hold: `examples` × `steps`, trained on (a backward pass) or only
    run forward; `what` names it and `flags` are what make it smaller (both for a refusal's line).
    `histograms`: held only when the run draws histograms (`histogram_batch`'s gradients)."""

    what: str
    examples: int
    steps: int
    trained: bool
    flags: tuple[str, ...]
    histograms: bool = False


@dataclasses.dataclass(frozen=True)
class Finished:
    """What `Task.finish` did to the trained model: one line saying so (None: nothing). A task may
    return a subclass that records more; the run passes it back to `evaluate` and `serving_module`."""

    description: str | None = None


# `run_model(inputs, initial_states=None, *, keep_states=False, last_step_only=False) -> ModelOutput`:
# the model in a training step, with the step's preactivation noise and gate kernel already applied.
RunModel = Callable[..., ModelOutput]
Metrics = Mapping[str, Mapping[str, float]]  # split -> metric name -> value


class Prepared(NamedTuple):
    """What the run needs of the data a task prepared: the line it prints when the run starts, and
    what identifies the data (config.json keeps it; a resume and every worker must match it)."""

    description: str
    fingerprint: dict[str, object]


class Task(abc.ABC):
    """A task the training run can train; see the module docstring."""

    name: str
    metric_names: tuple[str, ...]  # what `evaluate` reports of each split (restart bounds name them)

    @property
    def evaluated_splits(self) -> tuple[str, ...]:
        """The splits `evaluate` reports (each gets its TensorBoard run, `<run>/<split>`)."""
        return (TRAIN, VALIDATION)

    @abc.abstractmethod
    def prepare(self, training: TrainingConfig) -> Prepared:
        """Builds what depends on the training settings (the data split by `training.seed`, batches
        of `training.batch_size`); a setting it cannot use is a `ConfigError`. Writes nothing.
        Returns `Prepared`: one line about the data it built (e.g. "1024 training / 3072 validation
        sequences, lengths 6..6"), and JSON values that identify it (e.g. `{"sha256": ...}`): a run
        resumes, and workers train together, only on data with the same fingerprint."""

    @property
    def fixed_length(self) -> bool:
        """Training batches come in one or two shapes, so XLA (which compiles once per shape) pays
        off; False by default."""
        return False

    @property
    @abc.abstractmethod
    def steps_per_epoch(self) -> int:
        """Training steps (batches) in each epoch."""

    @abc.abstractmethod
    def training_batches(self, epochs: range) -> tf.data.Dataset:
        """The batches of `epochs`, `steps_per_epoch` each, in order; the order depends only on the
        seed and the epoch, so a resumed run sees the same batches."""

    @abc.abstractmethod
    def planned_batches(self, training: TrainingConfig) -> list[PlannedBatch]:
        """Every kind of batch the run will train or evaluate with these settings, found before
        `prepare` (the memory estimate runs on them before anything large is built)."""

    def make_variables(self, model: ModelConfig, replicas: int) -> None:
        """Makes the variables `loss` keeps from one step to the next, one copy per replica (called
        in the strategy's scope; `replicas` share each batch); none by default."""

    @abc.abstractmethod
    def loss(self, run_model: RunModel, batch: tuple[tf.Tensor, ...]) -> BatchLoss:
        """The training loss of `batch`: its mean and the number of terms it averages."""

    @abc.abstractmethod
    def evaluate(
        self, model: LSTMModel, thorough: bool = True, finished: Finished | None = None
    ) -> dict[str, dict[str, float]]:
        """Metrics of the current model on each split: `TRAIN`, and `VALIDATION` unless the task has
        none. Not `thorough` (the evaluations between the run's `check_every` ones), a task may leave
        out what is costly (the counter: its check), and its goal then cannot hold. `finished`: what
        `finish` did, once it has run (None before)."""

    def step_validation(self, model: LSTMModel) -> dict[str, float] | None:
        """The validation split's `loss` and `error`, each as `loss` defines them for a batch (the
        model without noise), for the curve of `RunConfig.validate_every`; None: none (the default)."""
        return None

    def progress(self, metrics: Metrics) -> dict[str, object]:
        """The values of the progress line, by label; by default the validation split's metrics (the
        training split's if there is none)."""
        split = VALIDATION if VALIDATION in metrics else TRAIN
        return {f"{split}_{name}": value for name, value in metrics.get(split, {}).items()}

    def goal_reached(self, metrics: Metrics) -> bool:
        """Whether the run has reached its goal (the first epoch it does is reported); never by default."""
        return False

    def not_learned(self, metrics: Metrics) -> tuple[str, str] | None:
        """At the restart epoch, after the bounds on validation metrics: `(measure, reason)` if the
        try has not learned what the task asks beyond them (e.g. a split of its own), else None."""
        return None

    def gate_examples(self) -> dict[str, tuple[str, np.ndarray]]:
        """Tag -> (a label of one character per step, encoded inputs `[time, features]`), drawn as heat maps."""
        return {}

    def samples(self, model: LSTMModel) -> dict[str, str]:
        """Tag -> text shown in TensorBoard's Text tab (e.g. generated samples); none by default."""
        return {}

    def histogram_batch(self) -> tuple[tf.Tensor, ...] | None:
        """A batch (as `loss` takes it) whose gradients the histograms show; none by default."""
        return None

    def finishing_steps(self) -> FinishingSteps | None:
        """Training on other batches once the epochs end (e.g. longer sequences than the epochs
        train on), on every worker, before `finish`; none by default."""
        return None

    def finish(self, model: LSTMModel) -> Finished:
        """Changes the trained model once every epoch has trained, before the final evaluation and
        the export (on the chief; the checkpoints keep the trained weights, so it must give the same
        change every time it runs on them), and says what it did. Nothing by default."""
        return Finished()

    @abc.abstractmethod
    def serving_module(
        self, model: LSTMModel, metrics: Metrics, finished: Finished
    ) -> tuple[tf.Module, dict[str, tf.types.experimental.ConcreteFunction]]:
        """The module to save and its signatures by name; `metrics` are the final model's (`evaluate`)
        and `finished` what `finish` did, for what the export records of how it was checked."""
