"""The character-level language model as a task of the training run (`diy_lstm.training.task.Task`).

Each character is a one-hot vector over the vocabulary; the LSTM layers read it and a readout gives
logits over the vocabulary for the next character. The loss is the softmax cross-entropy per
character (nats). Truncated BPTT, stateful, as char-rnn does it (`text_data.py`): each window of
`unroll_length` characters starts from the state the previous window of the same stream ended with
(kept in variables between steps, never differentiated through), and the state is reset at the start
of each epoch. Metrics, on each split read the same way:

    loss            mean cross-entropy, nats per character
    bits_per_char   loss / ln 2
    perplexity      e^loss
    accuracy        share of characters that are the most likely prediction

The SavedModel is `tasks.text.serving.TextGenerator` with the vocabulary passed in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np
import tensorflow as tf

from diy_lstm.cell import LSTMState
from diy_lstm.errors import check_field_types
from diy_lstm.model import LSTMModel, ModelConfig
from diy_lstm.training.config import ConfigError, TrainingConfig, may_change
from diy_lstm.training.task import (
    TRAIN,
    VALIDATION,
    BatchLoss,
    Finished,
    Metrics,
    PlannedBatch,
    Prepared,
    RunModel,
    Task,
)
from tasks.text import text_data
from tasks.text.serving import TextGenerator

EVALUATION_STREAMS = 16  # parallel streams when reading a split for its metrics
MAX_EVALUATED_CHARACTERS = 200_000  # the training split's metrics read its first this many characters
GATE_LINE_LENGTH = 40
SAMPLE_TEMPERATURES = (0.0, 0.5, 1.0)
UNSEEN = "unseen"  # --corpus=shakespeare: As You Like It and Henry V, never trained on


@dataclasses.dataclass(frozen=True)
class TextData:
    """Which text, how it is split and how it is cut.

    corpus: a built-in corpus (`text_data.CORPORA`), unless `text_file` names a UTF-8 file.
    validation_fraction: the share held out for validation, in [0, 0.5]; 0: no validation split.
    validation_split: "interleaved" (every `round(1 / fraction)`-th block of `validation_block`
      characters, throughout the text: how well it learnt) or "tail" (the contiguous end: how far
      it carries over to text it has not seen); see `text_data.split`.
    unroll_length: characters per truncated-BPTT window.
    sample_length: characters generated for each text sample.
    goal_bits_per_char: if > 0, the run's goal: validation bits per character at most this (the
      training split's, without a validation split); with `stop_at_goal` the run ends there.
    """

    # How the text is named may change on resume: the fingerprint of what it holds may not.
    corpus: str = may_change("shakespeare")
    text_file: str | None = may_change(None)
    validation_fraction: float = 0.1
    validation_split: str = "interleaved"
    validation_block: int = text_data.DEFAULT_BLOCK
    unroll_length: int = 100
    sample_length: int = may_change(300)
    goal_bits_per_char: float = 0.0

    def __post_init__(self):
        check_field_types(self)
        if self.text_file is not None and not self.text_file.strip():
            raise ConfigError("--text_file is empty: give the path of a UTF-8 text file, or leave it out for --corpus")
        if self.text_file is None and self.corpus not in text_data.CORPORA:
            raise ConfigError(f"--corpus must be one of {', '.join(text_data.CORPORA)}, got {self.corpus!r}")
        if not 0.0 <= self.validation_fraction <= 0.5:
            raise ConfigError(f"--validation_fraction must be in [0, 0.5], got {self.validation_fraction}")
        if self.validation_split not in text_data.SPLITS:
            raise ConfigError(
                f"--validation_split must be one of {', '.join(text_data.SPLITS)}, got {self.validation_split!r}"
            )
        if not 1 <= self.validation_block <= 10_000_000:
            raise ConfigError(f"--validation_block must be in [1, 10000000], got {self.validation_block}")
        if not 1 <= self.unroll_length <= 10_000:
            raise ConfigError(f"--unroll_length must be in [1, 10000], got {self.unroll_length}")
        if not 0.0 <= self.goal_bits_per_char < math.inf:
            raise ConfigError(f"--goal_bits_per_char must be a number >= 0 (0: no goal), got {self.goal_bits_per_char}")

    def read(self) -> str:
        return text_data.read_text_file(self.text_file) if self.text_file else text_data.corpus_text(self.corpus)

    @property
    def source(self) -> str:
        return f"--text_file={self.text_file}" if self.text_file else f"--corpus={self.corpus}"


class TextTask(Task):
    """The language model; a batch is `(inputs [streams, time], targets [streams, time], reset)`
    (ids, and whether this window starts an epoch)."""

    name = "text"
    metric_names = ("loss", "bits_per_char", "perplexity", "accuracy")  # `metrics_of`

    @property
    def evaluated_splits(self) -> tuple[str, ...]:
        return (TRAIN, VALIDATION, UNSEEN) if UNSEEN in self.split_texts else (TRAIN, VALIDATION)

    def __init__(self, data: TextData, text: str | None = None):
        self.data = data
        self.text = data.read() if text is None else text
        self.vocabulary = text_data.Vocabulary.of(self.text, data.source)
        train_text, validation_text = text_data.split(
            self.text, data.validation_fraction, data.validation_split, data.validation_block
        )
        self.split_texts = {TRAIN: train_text}
        if validation_text:
            self.split_texts[VALIDATION] = validation_text
        # What `evaluate` reads: the training text's head and the validation text, each in a few streams.
        evaluated = {
            TRAIN: (train_text[:MAX_EVALUATED_CHARACTERS], "--batch_size"),
            VALIDATION: (validation_text, "--validation_fraction"),
        }
        if data.text_file is None and data.corpus == "shakespeare":  # two plays never trained on
            self.split_texts[UNSEEN] = text_data.read_text_file(text_data.SHAKESPEARE_UNSEEN_FILE)
            evaluated[UNSEEN] = (self.split_texts[UNSEEN], "--corpus")
        self.evaluation_streams = {
            split: self._streams(text, min(EVALUATION_STREAMS, max(1, len(text) // (data.unroll_length + 1))), flag)
            for split, (text, flag) in evaluated.items()
            if split in self.split_texts
        }
        self.batch_size = 0
        self.train_streams = np.zeros((0, 0), np.int32)
        self.windows: list[tuple[int, int]] = []
        self._states: list[tuple[tf.Variable, tf.Variable]] = []
        self._evaluate_window = None
        self._generator: TextGenerator | None = None

    def _streams(self, text: str, count: int, flag: str, whole_window: bool = False) -> np.ndarray:
        """`text` cut into `count` streams of at least 2 characters; with `whole_window`, each long enough
        for a full window of `unroll_length` (the training streams). `flag` is what to lower if not."""
        ids = self.vocabulary.ids(text)
        if len(ids) // count < 2:
            raise ConfigError(
                f"{self.data.source}: {len(text)} characters cannot make {count} stream(s) of at least "
                f"2 characters; lower {flag} or give a longer text"
            )
        if whole_window and self.data.unroll_length > len(ids) // count - 1:
            raise ConfigError(
                f"--unroll_length={self.data.unroll_length} is longer than a stream: {len(text)} "
                f"training characters in {count} stream(s) of {len(ids) // count}; lower "
                "--unroll_length or --batch_size"
            )
        return text_data.streams(ids, count)

    def prepare(self, training: TrainingConfig) -> Prepared:
        """The training text in `training.batch_size` streams (0: one), cut into windows."""
        self.batch_size = training.batch_size or 1
        self.train_streams = self._streams(self.split_texts[TRAIN], self.batch_size, "--batch_size", whole_window=True)
        self.windows = text_data.window_bounds(self.train_streams.shape[1], self.data.unroll_length)
        return Prepared(self.describe(), self.fingerprint())

    def make_variables(self, model: ModelConfig, replicas: int) -> None:
        """The state each layer carries from one window to the next: `[streams, units]` per replica,
        each replica's own (`ON_READ`: never synchronised), for its slice of the streams."""
        if model.input_size != len(self.vocabulary) or model.output_size != len(self.vocabulary):
            raise ConfigError(
                f"the model reads {model.input_size} and writes {model.output_size} values; this "
                f"text's vocabulary has {len(self.vocabulary)} characters"
            )
        if self.batch_size % replicas:
            raise ConfigError(
                f"--batch_size={self.batch_size} streams cannot be split evenly over {replicas} "
                f"replicas; give a multiple of {replicas}"
            )
        shape = [self.batch_size // replicas, model.units]

        def carried(name: str) -> tf.Variable:
            return tf.Variable(
                tf.zeros(shape),
                trainable=False,
                name=name,
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )

        self._states = [
            (carried(f"carried_h_{layer}"), carried(f"carried_c_{layer}")) for layer in range(model.num_layers)
        ]

    def fingerprint(self) -> dict[str, object]:
        """The text's SHA-256 and size, and its vocabulary (which fixes what each one-hot id means)."""
        encoded = self.text.encode("utf-8")
        vocabulary = "".join(self.vocabulary.characters).encode("utf-8")
        return {
            "sha256": hashlib.sha256(encoded).hexdigest(),
            "bytes": len(encoded),
            "characters": len(self.text),
            "vocabulary": len(self.vocabulary),
            "vocabulary_sha256": hashlib.sha256(vocabulary).hexdigest(),
        }

    def describe(self) -> str:
        validation = len(self.split_texts.get(VALIDATION, ""))
        return (
            f"{self.data.source}: {len(self.split_texts[TRAIN]):,} training / {validation:,} validation "
            f"characters, vocabulary {len(self.vocabulary)}, {self.batch_size} streams of "
            f"{self.train_streams.shape[1]:,}, windows of {self.data.unroll_length}"
        )

    @property
    def fixed_length(self) -> bool:
        return True  # full windows, and at most one shorter last window: two compiles

    @property
    def steps_per_epoch(self) -> int:
        return len(self.windows)

    def training_batches(self, epochs: range) -> tf.data.Dataset:
        streams = tf.constant(self.train_streams)
        bounds = tf.constant(self.windows, dtype=tf.int64)  # [windows, 2]
        plan = tf.data.Dataset.range(len(epochs)).flat_map(lambda _: tf.data.Dataset.range(len(self.windows)))

        def window(index):
            start, stop = bounds[index][0], bounds[index][1]
            return (
                tf.cast(streams[:, start:stop], tf.int32),
                tf.cast(streams[:, start + 1 : stop + 1], tf.int32),
                tf.equal(index, 0),
            )

        options = tf.data.Options()
        options.autotune.enabled = False
        return plan.map(window).prefetch(2).with_options(options)

    def planned_batches(self, training: TrainingConfig) -> list[PlannedBatch]:
        window = self.data.unroll_length
        streams = max((s.shape[0] for s in self.evaluation_streams.values()), default=1)
        return [
            PlannedBatch("training", training.batch_size or 1, window, True, ("--batch_size", "--unroll_length")),
            PlannedBatch("evaluating", streams, window, False, ("--unroll_length",)),
        ]

    def _initial_states(self, reset: tf.Tensor) -> tuple[LSTMState, ...]:
        keep = 1.0 - tf.cast(reset, tf.float32)  # 0 at an epoch's first window: the state starts at zero
        return tuple(LSTMState(hidden * keep, cell * keep) for hidden, cell in self._states)

    def loss(self, run_model: RunModel, batch: tuple[tf.Tensor, ...]) -> BatchLoss:
        inputs, targets, reset = batch
        # The ids themselves: the model reads one-hot inputs as rows of W_x (no one-hot tensor is made).
        output = run_model(inputs, initial_states=self._initial_states(reset), keep_states=True)
        for (hidden, cell), state in zip(self._states, output.final_states()):
            hidden.assign(tf.stop_gradient(state.hidden))
            cell.assign(tf.stop_gradient(state.cell))
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, output.predictions)  # [streams, time]
        count = tf.cast(tf.size(losses), losses.dtype)
        wrong = tf.not_equal(tf.argmax(output.predictions, axis=-1, output_type=targets.dtype), targets)
        return BatchLoss(tf.reduce_sum(losses) / count, count, tf.reduce_sum(tf.cast(wrong, losses.dtype)) / count)

    def _window_metrics(self, model: LSTMModel):
        """A compiled window of evaluation: (summed loss, correct predictions, next states)."""
        units, layers = model.config.units, model.config.num_layers

        def window(inputs, targets, states):
            initial = tuple(LSTMState(states[0, layer], states[1, layer]) for layer in range(layers))
            output = model.run(inputs, initial_states=initial, keep_states=True)
            logits = output.predictions
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)
            correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), targets), tf.float32)
            final = output.final_states()
            next_states = tf.stack([tf.stack([s.hidden for s in final]), tf.stack([s.cell for s in final])])
            return tf.reduce_sum(losses), tf.reduce_sum(correct), next_states

        signature = [
            tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([2, layers, None, units], model.dtype),
        ]
        return tf.function(window, input_signature=signature, autograph=False)

    def metrics_of(self, model: LSTMModel, streams: np.ndarray) -> dict[str, float]:
        """The four metrics of the module docstring over `streams` `[count, length]` of ids, read
        window by window with the state carried."""
        if self._evaluate_window is None or self._evaluate_window[0] is not model:
            self._evaluate_window = (model, self._window_metrics(model))
        window = self._evaluate_window[1]
        count = streams.shape[0]
        states = tf.zeros([2, model.config.num_layers, count, model.config.units], model.dtype)
        total_loss = total_correct = 0.0
        for start, stop in text_data.window_bounds(streams.shape[1], self.data.unroll_length):
            loss, correct, states = window(streams[:, start:stop], streams[:, start + 1 : stop + 1], states)
            total_loss, total_correct = total_loss + float(loss), total_correct + float(correct)
        characters = count * (streams.shape[1] - 1)
        loss = total_loss / characters
        return {
            "loss": loss,
            "bits_per_char": loss / math.log(2),
            "perplexity": math.exp(min(loss, 700.0)),
            "accuracy": total_correct / characters,
        }

    def evaluate(
        self, model: LSTMModel, thorough: bool = True, finished: Finished | None = None
    ) -> dict[str, dict[str, float]]:
        return {split: self.metrics_of(model, streams) for split, streams in self.evaluation_streams.items()}

    def step_validation(self, model: LSTMModel) -> dict[str, float] | None:
        """The validation text's `loss` (nats a character) and `error` (1 - accuracy), read whole."""
        if VALIDATION not in self.evaluation_streams:
            return None
        metrics = self.metrics_of(model, self.evaluation_streams[VALIDATION])
        return {"loss": metrics["loss"], "error": 1.0 - metrics["accuracy"]}

    def progress(self, metrics: Metrics) -> dict[str, object]:
        values = {"train_bpc": metrics[TRAIN]["bits_per_char"]}
        if VALIDATION in metrics:
            values.update(
                validation_bpc=metrics[VALIDATION]["bits_per_char"],
                validation_accuracy=f"{100 * metrics[VALIDATION]['accuracy']:.1f}%",
            )
        return values

    def goal_reached(self, metrics: Metrics) -> bool:
        """Bits per character at most `goal_bits_per_char` on validation (else training), if set."""
        split = VALIDATION if VALIDATION in metrics else TRAIN
        return 0.0 < self.data.goal_bits_per_char and metrics[split]["bits_per_char"] <= self.data.goal_bits_per_char

    def _showcase_text(self) -> str:
        return self.split_texts.get(VALIDATION) or self.split_texts[TRAIN]

    def gate_examples(self) -> dict[str, tuple[str, np.ndarray]]:
        line = self._showcase_text()[:GATE_LINE_LENGTH]
        labels = line.replace("\n", "¶")  # one visible label per character
        encoded = np.eye(len(self.vocabulary), dtype=np.float32)[self.vocabulary.ids(line)]
        return {"line": (labels, encoded)}

    def samples(self, model: LSTMModel) -> dict[str, str]:
        if self._generator is None or self._generator.model is not model:  # traced once per model
            self._generator = TextGenerator(model, self.vocabulary.characters)
        generator = self._generator
        prompt = self._showcase_text()[:20]
        return {
            f"samples/temperature_{temperature:g}": generator.generate(
                tf.constant([prompt]), self.data.sample_length, temperature, 0
            )["text"][0]
            .numpy()
            .decode()
            for temperature in SAMPLE_TEMPERATURES
        }

    def histogram_batch(self) -> tuple[tf.Tensor, ...]:
        start, stop = self.windows[0]
        return (
            tf.constant(self.train_streams[:, start:stop], tf.int32),
            tf.constant(self.train_streams[:, start + 1 : stop + 1], tf.int32),
            tf.constant(True),
        )

    def serving_module(self, model: LSTMModel, metrics: Metrics, finished: Finished) -> tuple[tf.Module, dict]:
        generator = TextGenerator(model, self.vocabulary.characters)
        return generator, generator.signatures()
