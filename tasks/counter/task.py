"""The +-0I counter as a task of the training run (`diy_lstm.training.task.Task`).

Data (`data_generator.py`): every sequence of the training length(s), shuffled by the seed and split
into training and validation. The model reads one 3-vector per character and predicts one number per
step; the loss is the squared error of the final sum (`target="final"`, the reference notebook's) or
of every step's running sum (`target="running"`). Metrics, on real steps only (padding counts nowhere):

    error                       share of sequences whose rounded final prediction misses the final sum
    mean_square_error           mean of (final prediction - final sum)²
    error_per_step              share of real steps whose rounded prediction misses the running sum
    mean_square_error_per_step  mean of (prediction - running sum)² over real steps

The goal is 0.00% validation error. The SavedModel is `diy_lstm.serving.export.SequenceScorer` with the
character table of `data_generator.ENCODING` passed in.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Iterator

import numpy as np
import tensorflow as tf

from diy_lstm import readout
from diy_lstm.errors import ConfigError, check_field_types
from diy_lstm.model import LSTMModel
from diy_lstm.rnn import final_step
from diy_lstm.training.config import TrainingConfig
from diy_lstm.training.task import (
    TRAIN,
    VALIDATION,
    BatchLoss,
    Finished,
    FinishingSteps,
    Metrics,
    PlannedBatch,
    Prepared,
    RunModel,
    Task,
)
from tasks.counter import data_generator, long_check
from tasks.counter.serving import SequenceScorer

TARGETS = ("final", "running")


@dataclasses.dataclass(frozen=True)
class ReadoutRefit(Finished):
    """What `CounterTask.finish` did: the line it prints, and the length the readout was refitted on
    and kept (0: not refitted, or the refit not kept), which the export records."""

    fitted_on: int = 0


METRIC_NAMES = ("error", "mean_square_error", "error_per_step", "mean_square_error_per_step")
DEFAULT_GATE_EXAMPLES = ("++I--0+", "+I-0I+-")
MAX_CHARACTERS_IN_MEMORY = 50_000_000  # sequences x length held as training data
CHECK = "check"


# Independent draws of fresh sequences per seed: the check split, the readout fit, the finishing steps.
CHECK_STREAM, READOUT_FIT_STREAM, FINISHING_STREAM, LONG_FIT_STREAM = 1_000_003, 2_000_003, 3_000_017, 5_000_011
RUNS = ("0", "+", "-", "I", "I+", "I-", "I0")
FIT_BATCH = 256  # sequences run forward at once for the readout fit
# The readout fit also reads the long check's shapes at a tenth of its length (drawn apart from it),
# every LONG_FIT_STRIDE-th step: counts large enough to pin the readout's gain to 1 in 10^7.
LONG_FIT_STRIDE = 100
READOUT_RIDGE = 0.1  # λ of `diy_lstm.readout`: of units that count alike, read each a little
MAX_CHECK_STEPS = 50_000_000  # steps of the check split and the long check together: 8 bytes each


def fresh_sequences(length: int, count: int, seed: int, stream: int = CHECK_STREAM) -> list[str]:
    """`count` fresh sequences of `length`: the first half uniform, the rest "varied" (each with its
    own character frequencies, so long runs and large sums are common). `stream` keeps the check
    split and the readout fit's sequences apart."""
    rng = np.random.default_rng([seed, length, stream])
    half = count // 2
    return data_generator.sample_sequences(length, half, rng, "uniform") + data_generator.sample_sequences(
        length, count - half, rng, "varied"
    )


def _largest_sum(ids: np.ndarray | None) -> int:
    return 0 if ids is None else int(np.abs(data_generator.running_sums_of_ids(ids)).max())


def check_examples(length: int, count: int, seed: int, stream: int = CHECK_STREAM) -> data_generator.Examples:
    """`fresh_sequences`, encoded."""
    return data_generator.Examples.from_sequences(fresh_sequences(length, count, seed, stream))


def readout_fit_examples(length: int, count: int, seed: int) -> data_generator.Examples:
    """What the readout is refitted on: `count` fresh sequences of `length` (half uniform, half
    "varied", drawn apart from the check split) and `length` steps of each of `RUNS` repeated,
    the long runs of one character on which a slightly wrong readout drifts furthest."""
    fresh = fresh_sequences(length, count, seed, READOUT_FIT_STREAM)
    runs = [(pattern * length)[:length] for pattern in RUNS]
    return data_generator.Examples.from_sequences(fresh + runs)


@dataclasses.dataclass(frozen=True)
class CounterData:
    """The counter's data and loss.

    min_length, max_length: training lengths (every length in between is in both splits).
    max_sequences_per_length: all 4^L sequences of a length are used when there are at most this
      many, else this many are sampled (`sampling`: "uniform" or "varied").
    train_fraction: share of each length's sequences used for training; the rest is validation.
    target: "final" or "running", see the module docstring.
    check_length: if > 0, a third split, `check`: `check_sequences` fresh sequences of this length
      (half uniform, half "varied", so long runs of one character are in it), scored at every
      thorough evaluation (`RunConfig.check_every`); the goal then needs every step of them within
      `long_check.MARGIN` of the sum too, and the export records the length and the largest |sum|
      as the ones it was checked at.
    long_check_length: if > 0 (and check_length too), once every step of the check split is right, the
      cases of `long_check` (runs, drifts and patterns to ±this length) are scored too, and the
      goal needs every step of them right; the readout fit reads their shapes at a tenth of this.
    readout_fit_length: if > 0, once training ends the readout is refitted by least squares
      (`diy_lstm.readout`) to the running sums of `readout_fit_examples`: `readout_fit_sequences`
      fresh sequences of this length and runs of one character, every LSTM weight held fixed; each
      evaluation scores the check split with the readout such a fit gives at that epoch.
    finishing_steps: if > 0, once training ends (at the goal or the last epoch) this many updates
      at `finishing_learning_rate`, each on `finishing_batch_size` fresh sequences of
      `finishing_length` (half uniform, half "varied"): counts far beyond the training lengths, where
      a gate that leaks a little costs a lot (docs/experiments.md, "The default counts to 10,000").
    gate_examples: sequences whose gates are drawn as heat maps.
    """

    min_length: int = 6
    max_length: int = 6
    max_sequences_per_length: int = data_generator.MAX_SEQUENCES_PER_LENGTH
    sampling: str = "uniform"
    train_fraction: float = 0.25
    target: str = "running"
    check_length: int = 0
    check_sequences: int = 100
    long_check_length: int = 0
    readout_fit_length: int = 0
    readout_fit_sequences: int = 200
    finishing_steps: int = 0
    finishing_length: int = 200
    finishing_batch_size: int = 64
    finishing_learning_rate: float = 0.005
    gate_examples: tuple[str, ...] = dataclasses.field(
        default=DEFAULT_GATE_EXAMPLES, metadata={"may_change_on_resume": True}
    )

    def __post_init__(self):
        check_field_types(self)
        if not 1 <= self.min_length <= self.max_length:
            raise ConfigError(
                f"lengths must satisfy 1 <= min_length <= max_length, got {self.min_length}, {self.max_length}"
            )
        if self.max_sequences_per_length < 2:
            raise ConfigError(f"--max_sequences_per_length must be >= 2, got {self.max_sequences_per_length}")
        per_length = min(self.max_sequences_per_length, 4 ** min(self.max_length, 16))
        if per_length * self.max_length > MAX_CHARACTERS_IN_MEMORY:
            raise ConfigError(
                f"the training data would exceed {MAX_CHARACTERS_IN_MEMORY:,} characters "
                "(--max_sequences_per_length x the longest length); lower one of them"
            )
        if not 0.0 < self.train_fraction < 1.0:
            raise ConfigError(f"--train_fraction must be in (0, 1), got {self.train_fraction}")
        if self.target not in TARGETS:
            raise ConfigError(f"--target must be one of {TARGETS}, got {self.target!r}")
        if self.sampling not in data_generator.SAMPLINGS:
            raise ConfigError(f"--sampling must be one of {data_generator.SAMPLINGS}, got {self.sampling!r}")
        for sequence in self.gate_examples:
            if not sequence or not set(sequence) <= set(data_generator.ALPHABET):
                raise ConfigError(
                    f"--gate_examples must be sequences over {data_generator.ALPHABET!r}, got {sequence!r}"
                )
        if not 0 <= self.check_length <= 100_000 or not 2 <= self.check_sequences <= 10_000:
            raise ConfigError(
                f"--check_length must be in [0, 100000] and --check_sequences in [2, 10000], got "
                f"{self.check_length} and {self.check_sequences}"
            )
        if not 0 <= self.long_check_length <= 2_000_000:
            raise ConfigError(f"--long_check_length must be in [0, 2000000], got {self.long_check_length}")
        check_steps = self.check_sequences * self.check_length + len(long_check.CASES) * self.long_length
        if check_steps > MAX_CHECK_STEPS:
            raise ConfigError(
                f"the check would score {check_steps:,} steps, more than {MAX_CHECK_STEPS:,}; lower "
                "--check_sequences, --check_length or --long_check_length"
            )
        if not 0.0 < self.finishing_learning_rate < 1.0:
            raise ConfigError(f"--finishing_learning_rate must be in (0, 1), got {self.finishing_learning_rate}")
        if not (
            0 <= self.finishing_steps <= 100_000
            and 1 <= self.finishing_length <= 10_000
            and 1 <= self.finishing_batch_size <= 10_000
        ):
            raise ConfigError(
                f"--finishing_steps must be in [0, 100000], --finishing_length and --finishing_batch_size in "
                f"[1, 10000], got {self.finishing_steps}, {self.finishing_length}, {self.finishing_batch_size}"
            )
        if not 0 <= self.readout_fit_length <= 100_000 or not 2 <= self.readout_fit_sequences <= 10_000:
            raise ConfigError(
                f"--readout_fit_length must be in [0, 100000] and --readout_fit_sequences in [2, 10000], "
                f"got {self.readout_fit_length} and {self.readout_fit_sequences}"
            )
        train_size, validation_size = self.split_sizes()
        if train_size < 1 or validation_size < 1:
            raise ConfigError(
                f"--train_fraction={self.train_fraction} leaves {train_size} training and "
                f"{validation_size} validation sequences; both need at least one"
            )

    @property
    def long_length(self) -> int:
        """The length of the long check: `long_check_length`, if there is a check split (else 0)."""
        return self.long_check_length if self.check_length else 0

    def readout_fit_batch(self) -> tuple[int, int]:
        """`(sequences, length)` the readout is refitted on (`readout_fit_examples`), runs included."""
        return self.readout_fit_sequences + len(RUNS), self.readout_fit_length

    def readout_fit_values(self, units: int) -> int:
        """The float64 values one readout fit holds (`diy_lstm.readout`): its steps × (units + 1)."""
        sequences, length = self.readout_fit_batch()
        return sequences * length * (units + 1)

    def split_sizes(self) -> tuple[int, int]:
        """(training, validation) sequences, summed over the lengths, without building them."""
        train = validation = 0
        for length in range(self.min_length, self.max_length + 1):
            count = min(len(data_generator.ALPHABET) ** min(length, 16), self.max_sequences_per_length)
            cut = int(round(count * self.train_fraction))
            train, validation = train + cut, validation + count - cut
        return train, validation


def loss_fn(predictions: tf.Tensor, targets: tf.Tensor, lengths: tf.Tensor, target: str) -> BatchLoss:
    """The training loss of predictions and targets `[batch, time]` for `target`: the mean squared
    error over sequences ("final") or real steps ("running"), and how many it averages (0 for an
    empty batch, whose mean is then 0)."""
    if target == "final":
        return mean_square(final_step(predictions, lengths), final_step(targets, lengths))
    mask = tf.sequence_mask(lengths, tf.shape(predictions)[1], dtype=predictions.dtype)
    count = tf.reduce_sum(mask)
    return BatchLoss(
        tf.math.divide_no_nan(tf.reduce_sum(mask * tf.square(predictions - targets)), count),
        count,
        tf.math.divide_no_nan(tf.reduce_sum(mask * misses(predictions, targets)), count),
    )


def mean_square(predictions: tf.Tensor, targets: tf.Tensor) -> BatchLoss:
    """The mean square error of `predictions` `[batch]`, the batch size, and the share that miss."""
    count = tf.cast(tf.size(predictions), predictions.dtype)
    return BatchLoss(
        tf.math.divide_no_nan(tf.reduce_sum(tf.square(predictions - targets)), count),
        count,
        tf.math.divide_no_nan(tf.reduce_sum(misses(predictions, targets)), count),
    )


def misses(predictions: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """1 where the rounded prediction is not the target, else 0, in the predictions' dtype."""
    return tf.cast(tf.not_equal(tf.round(predictions), targets), predictions.dtype)


METRIC_NAMES = ("error", "mean_square_error", "error_per_step", "mean_square_error_per_step")


def metrics_fn(predictions: tf.Tensor, targets: tf.Tensor, lengths: tf.Tensor) -> dict[str, tf.Tensor]:
    """The four metrics of the module docstring, each a scalar, for `[batch, time]` inputs."""
    dtype = predictions.dtype
    final_prediction = final_step(predictions, lengths)
    final_target = final_step(targets, lengths)
    mask = tf.sequence_mask(lengths, tf.shape(predictions)[1], dtype=dtype)
    real_steps = tf.reduce_sum(mask)
    return {
        "error": tf.reduce_mean(misses(final_prediction, final_target)),
        "mean_square_error": tf.reduce_mean(tf.square(final_prediction - final_target)),
        "error_per_step": tf.reduce_sum(mask * misses(predictions, targets)) / real_steps,
        "mean_square_error_per_step": tf.reduce_sum(mask * tf.square(predictions - targets)) / real_steps,
    }


class CounterTask(Task):
    """The +-0I running-sum task; see the module docstring. A batch is `(inputs [batch, time, 3],
    running_sums [batch, time], lengths [batch])`."""

    name = "counter"
    metric_names = METRIC_NAMES

    def __init__(self, data: CounterData):
        self.data = data
        self.splits: dict[str, data_generator.Examples] = {}
        self.batch_size = 0
        self.last_step_only = False
        self._functions: dict[str, tuple] = {}  # kind -> (model, its compiled function); `_compiled`
        self._fit_examples: data_generator.Examples | None = None
        self._readout_sources = self._readout_sources_model = None

    def prepare(self, training: TrainingConfig) -> Prepared:
        """The splits of `training.seed`, and batches of `training.batch_size` (0: the whole set)."""
        train, validation = data_generator.make_splits(
            self.data.min_length,
            self.data.max_length,
            self.data.train_fraction,
            training.seed,
            self.data.max_sequences_per_length,
            self.data.sampling,
        )
        self.splits = {TRAIN: train, VALIDATION: validation}
        self._check_sequences, self._check_ids, self._long_ids = [], None, None
        if self.data.check_length:
            self._check_sequences = fresh_sequences(self.data.check_length, self.data.check_sequences, training.seed)
            self._check_ids = data_generator.ids_of(self._check_sequences)
        if self.data.long_length:
            self._long_ids = long_check.cases(self.data.long_length, training.seed)
        self._largest_sums = {
            VALIDATION: int(np.abs(validation.running_sums).max()),
            CHECK: _largest_sum(self._check_ids),
            "long": _largest_sum(self._long_ids),
        }
        self._long_fit = None
        self._tensors = {
            split: (tf.constant(examples.inputs), tf.constant(examples.running_sums), tf.constant(examples.lengths))
            for split, examples in self.splits.items()
        }
        self.seed, self.batch_size = training.seed, training.batch_size
        self._fit_examples = None
        # With the final-sum loss and batches of one length, only the last step is read out.
        one_length_batches = self.data.min_length == self.data.max_length or training.batch_size > 0
        self.last_step_only = self.data.target == "final" and one_length_batches
        return Prepared(self.describe(), self.fingerprint())

    def describe(self) -> str:
        return (
            f"{len(self.splits[TRAIN])} training / {len(self.splits[VALIDATION])} validation sequences, "
            f"lengths {self.data.min_length}..{self.data.max_length}"
        )

    def fingerprint(self) -> dict[str, object]:
        """The training and validation examples themselves (what the generator made for this seed)."""
        digest = hashlib.sha256()
        for sequences in [split.sequences for split in self.splits.values()] + [self._check_sequences]:
            digest.update("\n".join(sequences).encode())
        count = sum(len(split) for split in self.splits.values()) + len(self._check_sequences)
        return {"sha256": digest.hexdigest(), "sequences": count}

    @property
    def fixed_length(self) -> bool:
        return self.data.min_length == self.data.max_length

    @property
    def steps_per_epoch(self) -> int:
        return data_generator.steps_per_epoch(self.splits[TRAIN].lengths, self.batch_size)

    def training_batches(self, epochs: range) -> tf.data.Dataset:
        return data_generator.training_batches(self.splits[TRAIN], self.batch_size, self.seed, epochs)

    def planned_batches(self, training: TrainingConfig) -> list[PlannedBatch]:
        data, (train_size, validation_size) = self.data, self.data.split_sizes()
        per_update = train_size if training.batch_size == 0 else min(training.batch_size, train_size)
        planned = [
            PlannedBatch("training", per_update, data.max_length, True, ("--batch_size",)),
            PlannedBatch(
                "evaluating the training split",
                train_size,
                data.max_length,
                False,
                ("--max_sequences_per_length", "--train_fraction"),
            ),
            PlannedBatch(
                "evaluating the validation split",
                validation_size,
                data.max_length,
                False,
                ("--max_sequences_per_length", "--train_fraction"),
            ),
            PlannedBatch(
                "the histograms' gradients over the training split (none with --histogram_every=0)",
                train_size,
                data.max_length,
                True,
                ("--max_sequences_per_length", "--train_fraction"),
                histograms=True,
            ),
        ]
        if data.finishing_steps:
            planned.append(
                PlannedBatch(
                    "the finishing steps",
                    data.finishing_batch_size,
                    data.finishing_length,
                    True,
                    ("--finishing_batch_size", "--finishing_length"),
                )
            )
        if data.readout_fit_length:
            planned.append(
                PlannedBatch(
                    "the readout fit",
                    min(FIT_BATCH, data.readout_fit_batch()[0]),
                    data.readout_fit_length,
                    False,
                    ("--readout_fit_length",),
                )
            )
        return planned

    def loss(self, run_model: RunModel, batch: tuple[tf.Tensor, ...]) -> BatchLoss:
        inputs, running_sums, lengths = batch
        output = run_model(inputs, last_step_only=self.last_step_only)
        targets = tf.cast(running_sums, output.predictions.dtype)
        if self.last_step_only:
            return mean_square(output.predictions[:, 0, 0], targets[:, -1])
        return loss_fn(output.predictions[..., 0], targets, lengths, self.data.target)

    def evaluate(
        self, model: LSTMModel, thorough: bool = True, finished: Finished | None = None
    ) -> dict[str, dict[str, float]]:
        """Metrics per split. The check (`_score_check`) runs only at `thorough` evaluations once
        every validation step is right (before that the goal cannot hold, and it is the evaluation's
        largest cost); with a readout fit, before `finish` has run (`finished` None), as it would
        leave the model: with the refitted readout if it would be kept, the trained one put back after."""
        metrics = {split: self._metrics(model, tensors) for split, tensors in self._tensors.items()}
        if thorough and self._check_ids is not None and metrics[VALIDATION]["error_per_step"] == 0.0:
            metrics[CHECK] = self._check_metrics(model, finished is not None)
        return metrics

    def step_validation(self, model: LSTMModel) -> dict[str, float]:
        """The validation split's `loss` and `error`, as `loss` defines them (noise-free)."""
        values = self._compiled(model, "loss", lambda *batch: self.loss(model.run, batch))(*self._tensors[VALIDATION])
        return {"loss": float(values.mean), "error": float(values.error)}

    def _metrics(self, model: LSTMModel, tensors: tuple[tf.Tensor, ...]) -> dict[str, float]:
        compiled = self._compiled(
            model, "metrics", lambda inputs, targets, lengths: metrics_fn(model(inputs)[..., 0], targets, lengths)
        )
        return {name: float(value) for name, value in compiled(*tensors).items()}

    def _compiled(self, model: LSTMModel, kind: str, function):
        """`function(inputs, targets, lengths)` of a split's tensors, traced once per model and kind."""
        if self._functions.get(kind, (None,))[0] is not model:
            signature = [
                tf.TensorSpec([None, None, data_generator.NUM_FEATURES], model.dtype),
                tf.TensorSpec([None, None], model.dtype),
                tf.TensorSpec([None], tf.int32),
            ]
            self._functions[kind] = (model, tf.function(function, input_signature=signature, autograph=False))
        return self._functions[kind][1]

    def _check_metrics(self, model: LSTMModel, finished: bool) -> dict[str, float]:
        if finished or not self.data.readout_fit_length:
            return self._score_check(model)
        trained = model.W_out.numpy(), model.b_out.numpy()
        self._fit_readout(model, validation_error_per_step=0.0)
        checked = self._score_check(model)
        readout.assign_readout(model, *trained)
        return checked

    def _score_check(self, model: LSTMModel) -> dict[str, float]:
        """The check split's `error_per_step` (steps whose prediction misses the sum by
        `long_check.MARGIN` or more) and `largest_miss`; once that is 0, the long cases'
        `long_wrong_cases` (cases with a wrong step) and `long_largest_miss`."""
        results = long_check.run_check(model, self._check_ids)
        checked = {
            "error_per_step": sum(result.wrong_steps for result in results) / self._check_ids.size,
            "largest_miss": max(result.largest_miss for result in results),
        }
        if self._long_ids is not None and checked["error_per_step"] == 0.0:
            results = long_check.run_check(model, self._long_ids)
            checked["long_wrong_cases"] = float(sum(result.wrong_steps > 0 for result in results))
            checked["long_largest_miss"] = max(result.largest_miss for result in results)
        return checked

    def _long_fit_rows(self, model: LSTMModel) -> tuple[np.ndarray, np.ndarray] | None:
        """What the readout reads, and the sum, every `LONG_FIT_STRIDE`-th step of the long cases
        at a tenth of `long_check_length`: `[rows, units]` and `[rows, 1]`."""
        if not self.data.long_length:
            return None
        if self._long_fit is None:
            self._long_fit = long_check.cases(self.data.long_length // 10, self.seed, LONG_FIT_STREAM)
        ids = self._long_fit  # [cases, time]
        sources = long_check.sampled_sources(model, ids.T, LONG_FIT_STRIDE)  # [kept, cases, units]
        sums = data_generator.running_sums_of_ids(ids)[:, LONG_FIT_STRIDE - 1 :: LONG_FIT_STRIDE].T
        kept = sources.shape[0]
        return sources.reshape(-1, sources.shape[-1]), sums[:kept].reshape(-1, 1)

    def _fit_readout(self, model: LSTMModel, validation_error_per_step: float) -> tuple[readout.ReadoutFit, float]:
        """Puts the least-squares readout on `readout_fit_examples` into the model unless it leaves
        more wrong validation steps than `validation_error_per_step` (the trained readout's); the fit
        and its validation per-step error."""
        if self._fit_examples is None:
            self._fit_examples = readout_fit_examples(
                self.data.readout_fit_length, self.data.readout_fit_sequences, self.seed
            )
        if self._readout_sources is None or self._readout_sources_model is not model:
            self._readout_sources = readout.source_function(model)
            self._readout_sources_model = model
        examples = self._fit_examples
        fit = readout.fit_readout(
            model,
            examples.inputs,
            examples.running_sums[..., None],
            examples.lengths,
            batch_size=FIT_BATCH,
            sources=self._readout_sources,
            more_rows=self._long_fit_rows(model),
            ridge=READOUT_RIDGE,
        )
        trained = model.W_out.numpy(), model.b_out.numpy()
        readout.assign_readout(model, fit.W_out, fit.b_out)
        after = self._metrics(model, self._tensors[VALIDATION])["error_per_step"]
        if after > validation_error_per_step:
            readout.assign_readout(model, *trained)
        return fit, after

    @property
    def evaluated_splits(self) -> tuple[str, ...]:
        return (TRAIN, VALIDATION, CHECK) if self.data.check_length else (TRAIN, VALIDATION)

    def progress(self, metrics: Metrics) -> dict[str, object]:
        values = {
            "train_mse": metrics[TRAIN]["mean_square_error"],
            "validation_error": f"{100 * metrics[VALIDATION]['error']:.2f}%",
            "validation_mse": metrics[VALIDATION]["mean_square_error"],
        }
        if self.data.check_length:
            checked = metrics.get(CHECK, {})
            values[f"check_{self.data.check_length}_error_per_step"] = (
                f"{100 * checked['error_per_step']:.3f}%" if checked else "-"
            )
            if self.data.long_length:
                wrong = checked.get("long_wrong_cases")
                values["long_check_wrong"] = "-" if wrong is None else f"{wrong:.0f}/{len(long_check.CASES)}"
        return values

    def _passed(self, metrics: Metrics) -> list[tuple[int, int]]:
        """`(length, largest |sum|)` of each set scored with every step right, in the order the
        evaluation scores them: validation, the check split, the long check."""
        passed = []
        if metrics[VALIDATION]["error_per_step"] == 0.0:
            passed.append((self.data.max_length, self._largest_sums[VALIDATION]))
            checked = metrics.get(CHECK, {})
            if checked.get("error_per_step") == 0.0:
                passed.append((self.data.check_length, self._largest_sums[CHECK]))
                if checked.get("long_wrong_cases") == 0.0:
                    passed.append((self.data.long_length, self._largest_sums["long"]))
        return passed

    def goal_reached(self, metrics: Metrics) -> bool:
        """0.00% validation error; with a check split (and a long check), not one wrong step in it either."""
        wanted = 1 + bool(self.data.check_length) + bool(self.data.long_length)
        return metrics[VALIDATION]["error"] == 0.0 and len(self._passed(metrics)) >= wanted

    def not_learned(self, metrics: Metrics) -> tuple[str, str] | None:
        """With a check split: not every step of it (and of the long check) right, or not scored."""
        if not self.data.check_length or self.goal_reached(metrics):
            return None
        checked = metrics.get(CHECK)
        if checked is None:
            return "check not scored", "the check split is not scored until every validation step is right"
        if checked["error_per_step"] > 0.0:
            return (
                f"check error_per_step {checked['error_per_step']:.3g}",
                f"{100 * checked['error_per_step']:.3f}% of the steps of length {self.data.check_length} are wrong",
            )
        wrong = checked["long_wrong_cases"]
        return f"long check wrong cases {wrong:.0f}", f"{wrong:.0f} of the long check's cases have a wrong step"

    def validated_exact_up_to(self, metrics: Metrics) -> int:
        """The longest length at which every step of fresh sequences was right (0: none checked)."""
        return max((length for length, _ in self._passed(metrics)), default=0)

    def validated_exact_sum(self, metrics: Metrics) -> int:
        """The largest |sum| of the sequences scored with every step right (0: none)."""
        return max((largest for _, largest in self._passed(metrics)), default=0)

    def finishing_steps(self) -> FinishingSteps | None:
        """`finishing_steps` batches of fresh sequences of `finishing_length` (CounterData)."""
        data = self.data
        if not data.finishing_steps:
            return None

        def batches() -> Iterator[tuple[np.ndarray, ...]]:
            for step in range(data.finishing_steps):
                examples = check_examples(
                    data.finishing_length, data.finishing_batch_size, self.seed, stream=FINISHING_STREAM + step
                )
                yield examples.inputs, examples.running_sums, examples.lengths

        return FinishingSteps(
            data.finishing_steps,
            data.finishing_learning_rate,
            batches,
            f"{data.finishing_batch_size} fresh sequences of length {data.finishing_length}",
        )

    def finish(self, model: LSTMModel) -> ReadoutRefit:
        """With `readout_fit_length`, the readout refitted on fresh sequences of that length; kept
        only if it leaves no more wrong validation steps than the trained readout."""
        length = self.data.readout_fit_length
        if not length:
            return ReadoutRefit()
        before = self._metrics(model, self._tensors[VALIDATION])["error_per_step"]
        fit, after = self._fit_readout(model, before)
        long = self.data.long_length // 10
        longer = f" and {len(long_check.CASES)} long cases of {long:,} (every {LONG_FIT_STRIDE}th step)" if long else ""
        fitted = (
            f"readout refitted on {len(self._fit_examples)} sequences of length {length}{longer} ({fit.steps:,} steps; "
            f"largest error over them {fit.max_error_before:.3f} -> {fit.max_error_after:.3f})"
        )
        if after > before:
            return ReadoutRefit(
                f"{fitted} not kept: validation per-step error {100 * before:.2f}% -> {100 * after:.2f}%"
            )
        return ReadoutRefit(fitted, fitted_on=length)

    def gate_examples(self) -> dict[str, tuple[str, np.ndarray]]:
        return {sequence: (sequence, data_generator.encode_sequence(sequence)) for sequence in self.data.gate_examples}

    def histogram_batch(self) -> tuple[tf.Tensor, ...]:
        return self._tensors[TRAIN]

    def serving_module(self, model: LSTMModel, metrics: Metrics, finished: Finished) -> tuple[tf.Module, dict]:
        scorer = SequenceScorer(
            model,
            data_generator.ENCODING,
            (self.data.min_length, self.data.max_length),
            self.validated_exact_up_to(metrics),
            finished.fitted_on if isinstance(finished, ReadoutRefit) else 0,
            validated_exact_sum=self.validated_exact_sum(metrics),
        )
        return scorer, scorer.signatures()
