"""What a task supplies to the training run of `run.py`.

The run knows LSTMs and training: epochs of compiled steps, evaluation, TensorBoard, checkpoints,
resume, restarts, export. A task knows its data and what "good" means. It plugs in by implementing
`Task`:

    name                      a short name, saved in config.json (a run resumes only its own task)
    prepare(seed)             builds the data for a seed (called at the start of every try)
    describe()                one line about the data, printed when a run starts
    fixed_length              every batch has one number of steps (then one XLA compile serves all)
    training_batches(...)     a dataset of `(epoch, last_in_epoch, *batch)`, one element per step
    make_variables(replicas)  the variables `loss` keeps between steps (e.g. a carried state), if any
    loss(run_model, batch)    the training loss of one batch: its mean and how many terms it averages
    evaluate(model)           metrics per split: {"train": {...}, "validation": {...}}
    progress(metrics)         the few numbers the progress line shows
    goal_reached(metrics)     when the run has done what it set out to (its first epoch is reported)
    gate_examples()           tag -> (one label per step, encoded `[time, features]`) drawn as heat maps
    samples(model)            tag -> text, written as text summaries every `sample_every` epochs
    histogram_batch()         a batch whose gradients are drawn as histograms
    serving_module(model)     the `tf.Module` and signatures the SavedModel holds (tables passed in)

A batch is a tuple of tensors; the run passes it to `loss` unchanged, so its layout is the task's,
with one rule for data-parallel training (`distribute.py`): the first axis of every tensor that has
one is the example axis, which is split among replicas; scalars go to every replica whole.
"""

from __future__ import annotations

import abc
from typing import Callable, Mapping

import numpy as np
import tensorflow as tf

from diy_lstm.config import TrainingConfig
from diy_lstm.model import LSTMModel, ModelOutput
from diy_lstm.training import BatchLoss

TRAIN, VALIDATION = "train", "validation"

# `run_model(inputs, last_step_only=False) -> ModelOutput`: the model in a training step, with the
# step's preactivation noise and compile options already applied.
RunModel = Callable[..., ModelOutput]
Metrics = Mapping[str, Mapping[str, float]]  # split -> metric name -> value


class Task(abc.ABC):
    """A task the training run can train; see the module docstring."""

    name: str

    def prepare(self, seed: int) -> None:
        """Builds whatever depends on the seed (the data split, the batch order); nothing by default."""

    @abc.abstractmethod
    def describe(self) -> str:
        """One line about the data, e.g. "1024 training / 3072 validation sequences, lengths 6..6"."""

    @property
    @abc.abstractmethod
    def fixed_length(self) -> bool:
        """Training batches come in one or two shapes, so XLA (which compiles once per shape) pays off."""

    @abc.abstractmethod
    def training_batches(self, training: TrainingConfig, epochs: range) -> tf.data.Dataset:
        """`(epoch int64, last_in_epoch bool, *batch)` for every step of `epochs`, in order; the order
        depends only on `(training.seed, epoch)`, so a resumed run sees the same batches."""

    def make_variables(self, replicas: int) -> None:
        """Makes the variables `loss` keeps from one step to the next, one copy per replica (called
        in the strategy's scope; `replicas` share each batch); none by default."""

    @abc.abstractmethod
    def loss(self, run_model: RunModel, batch: tuple[tf.Tensor, ...]) -> BatchLoss:
        """The training loss of `batch`: its mean and the number of terms it averages."""

    @abc.abstractmethod
    def evaluate(self, model: LSTMModel) -> dict[str, dict[str, float]]:
        """Metrics of the current model on each split: `TRAIN`, and `VALIDATION` unless the task has none."""

    @abc.abstractmethod
    def progress(self, metrics: Metrics) -> dict[str, object]:
        """The values of the progress line, by label."""

    def goal_reached(self, metrics: Metrics) -> bool:
        """Whether the run has reached its goal (the first epoch it does is reported); never by default."""
        return False

    def gate_examples(self) -> dict[str, tuple[str, np.ndarray]]:
        """Tag -> (a label of one character per step, encoded inputs `[time, features]`), drawn as heat maps."""
        return {}

    def samples(self, model: LSTMModel) -> dict[str, str]:
        """Tag -> text shown in TensorBoard's Text tab (e.g. generated samples); none by default."""
        return {}

    @abc.abstractmethod
    def histogram_batch(self) -> tuple[tf.Tensor, ...]:
        """A batch (as `loss` takes it) whose gradients the histograms show."""

    @abc.abstractmethod
    def serving_module(self, model: LSTMModel) -> tuple[tf.Module, dict[str, tf.types.experimental.ConcreteFunction]]:
        """The module to save and its signatures by name."""
