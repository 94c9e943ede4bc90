"""The counter's SavedModel: it scores raw strings with no Python of ours.

The character table (character -> feature vector) is passed in by the caller and lives in the graph
(`diy_lstm.serving.strings.CharacterTable`), so `tf.saved_model.load(path)` alone can score strings:

    scorer = tf.saved_model.load(path)
    scorer.signatures["serving_default"](sequences=tf.constant(["+-I0", "++"]))

Signatures (the first two return the same dict of dense tensors):
  serving_default(sequences: string [batch])            raw strings, any lengths in one batch
  score_encoded(inputs: float32 [batch, time, features]) already-encoded sequences, all full length
  about()                                               what the model was trained and checked on:
      trained_lengths        int32 [2]  the shortest and longest training length
      validated_exact_up_to  int32 []   the longest length at which it scored fresh sequences with
                                        no wrong step (0: not checked beyond training)
      readout_fit_length     int32 []   the length of the fresh sequences its readout was refitted on
                                        after training (0: not refitted)
      validated_exact_sum    int64 []   the largest |sum| those sequences reached (0: none checked);
                                        a model that does not say was checked only by length
      max_padded_characters  int64 []   what one call of either scoring signature may score: sequences
                                        × the longest of them
      max_sequences          int64 []   and how many sequences (it runs them in windows of time)

  step_predictions          float32 [batch, max_time]  prediction after every step, 0 past the end
  lengths                   int32   [batch]
  final_prediction          float32 [batch]            prediction after each sequence's last step
  final_prediction_rounded  int64   [batch]

Bad strings fail with an `InvalidArgumentError` whose message starts with `ERROR_PREFIX` and names
the sequence, the character's code point and its position from 1, e.g. `unknown character U+0078 at
position 2 of sequences[0]`. One call scores at most `max_padded_characters` (sequences × the
longest) and `max_sequences`, in windows of time with the state carried (`diy_lstm/serving/windows.py`),
so that it holds at most about 500 MB whatever the model; the command line splits larger inputs into
calls of that size.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import tensorflow as tf

from diy_lstm.model import LSTMModel
from diy_lstm.rnn import final_step
from diy_lstm.serving import budget
from diy_lstm.serving.strings import CharacterTable, checked_shape, padded_size_check
from diy_lstm.serving.windows import batch_check, run_in_windows, window_length

SIGNATURE_INPUTS = {"serving_default": ("sequences",)}
# One call scores at most MAX_PADDED_CHARACTERS (sequences × the longest; each held through the call as
# ids, inputs and predictions) and runs them in windows of `window_steps` (sequences × steps) within
# `budget.WINDOW_BYTES`, so that it holds about 500 MB at most whatever the model (docs/reliability.md,
# "Caps").
MAX_PADDED_CHARACTERS = 4_000_000


class CallBudget(NamedTuple):
    """What one call of a loaded model may score: sequences × the longest, and sequences."""

    padded_characters: int
    sequences: int


def window_steps(units: int, num_layers: int = 1) -> int:
    """Sequences × steps one window runs at once (every layer's state kept for the next window)."""
    return budget.steps_per_call(units, num_layers, keep_states=True, call_bytes=budget.WINDOW_BYTES)


def call_budget(checked: Mapping[str, object], metadata: Mapping[str, object]) -> CallBudget:
    """The budget a loaded model's `about` (`checked`) states. A model exported before windows (no
    `max_sequences`) runs a call whole: no more than `budget.steps_per_call` of its `model_config`
    (metadata; a 64-unit model's if it does not say) then."""
    advertised, sequences = checked.get("max_padded_characters"), checked.get("max_sequences")
    if isinstance(sequences, int) and sequences > 0 and isinstance(advertised, int) and advertised > 0:
        return CallBudget(advertised, sequences)
    config = metadata.get("model_config")
    sizes = (config.get("units"), config.get("num_layers", 1)) if isinstance(config, dict) else (None, None)
    whole = (
        budget.steps_per_call(*sizes) if all(isinstance(v, int) and v > 0 for v in sizes) else budget.steps_per_call(64)
    )
    padded = min(advertised, whole) if isinstance(advertised, int) and advertised > 0 else whole
    return CallBudget(padded, padded)


class SequenceScorer(tf.Module):
    """A model plus the character table that turns strings into its inputs.

    Args:
      model: a trained `LSTMModel` with `output_size` 1.
      encoding: character -> feature vector (length `model.config.input_size`).
    """

    def __init__(
        self,
        model: LSTMModel,
        encoding: Mapping[str, Sequence[float]],
        trained_lengths: tuple[int, int] = (0, 0),
        validated_exact_up_to: int = 0,
        readout_fit_length: int = 0,
        validated_exact_sum: int = 0,
        max_padded_characters: int | None = None,
        name: str | None = None,
    ):
        super().__init__(name=name)
        features = model.config.input_size
        for character, vector in encoding.items():
            if len(character) != 1 or len(vector) != features:
                raise ValueError(
                    f"encoding entry {character!r}: {list(vector)} must map one character to {features} numbers"
                )
        self.model = model
        characters = list(encoding)
        self.characters = CharacterTable(characters, allowed=" ".join(characters))
        # Row len(characters) is the padding row: zeros.
        self.codes = tf.constant([list(encoding[c]) for c in characters] + [[0.0] * features], dtype=tf.float32)
        self.trained_lengths = tf.constant(list(trained_lengths), tf.int32)
        self.validated_exact_up_to = tf.constant(validated_exact_up_to, tf.int32)
        self.readout_fit_length = tf.constant(readout_fit_length, tf.int32)
        self.validated_exact_sum = tf.constant(validated_exact_sum, tf.int64)
        self.max_padded_characters = max_padded_characters or MAX_PADDED_CHARACTERS
        self.window_steps = window_steps(model.config.units, model.config.num_layers)

    @tf.function(input_signature=[], autograph=False)
    def about(self) -> dict[str, tf.Tensor]:
        """What the model was trained and checked on, and what one call may score (module docstring)."""
        return {
            "trained_lengths": tf.identity(self.trained_lengths),
            "validated_exact_up_to": tf.identity(self.validated_exact_up_to),
            "readout_fit_length": tf.identity(self.readout_fit_length),
            "validated_exact_sum": tf.identity(self.validated_exact_sum),
            "max_padded_characters": tf.constant(self.max_padded_characters, tf.int64),
            "max_sequences": tf.constant(self.window_steps, tf.int64),
        }

    @tf.function(input_signature=[tf.TensorSpec(None, tf.string, name="sequences")], autograph=False)
    def score_strings(self, sequences: tf.Tensor) -> dict[str, tf.Tensor]:
        """Scores raw strings, `[batch]`, of any lengths."""
        sequences = checked_shape(sequences, [None], "sequences must be a vector of strings [batch]")
        ids, lengths, checks = self.characters.ids(
            sequences, "sequences", max_padded_characters=self.max_padded_characters
        )
        checks.append(batch_check(tf.size(sequences), self.window_steps, "sequences"))
        with tf.control_dependencies(checks):
            dense_ids = ids.to_tensor(default_value=self.characters.size)  # [batch, max_time]; padding row
        # An empty batch still gets one (padding) step, so the time loop has something to run.
        at_least_one_step = [[0, 0], [0, tf.maximum(0, 1 - tf.shape(dense_ids)[1])]]
        dense_ids = tf.pad(dense_ids, at_least_one_step, constant_values=self.characters.size)
        inputs = tf.gather(self.codes, dense_ids)  # [batch, max_time, features]
        return self._score(inputs, lengths)

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="inputs")], autograph=False)
    def score_encoded(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        """Scores encoded sequences `[batch, time, features]`, every one `time` steps long."""
        features = self.model.config.input_size
        inputs = checked_shape(
            inputs,
            [None, None, features],
            f"inputs must be [batch, time >= 1, {features}]",
            also=lambda shape: shape[1] > 0,
        )
        lengths = tf.fill(tf.shape(inputs)[:1], tf.shape(inputs)[1])
        with tf.control_dependencies(
            [
                padded_size_check(lengths, "inputs", self.max_padded_characters),
                batch_check(tf.shape(inputs)[0], self.window_steps, "inputs"),
            ]
        ):
            inputs = tf.identity(inputs)
        return self._score(inputs, lengths)

    def _score(self, inputs: tf.Tensor, lengths: tf.Tensor) -> dict[str, tf.Tensor]:
        window = window_length(self.window_steps, tf.shape(inputs)[0])
        predictions = run_in_windows(
            self.model,
            inputs,
            window,  # [batch, time]
            lambda output, start, stop: tf.cast(output.predictions[..., 0], tf.float32),
        )
        predictions *= tf.sequence_mask(lengths, tf.shape(predictions)[1], dtype=tf.float32)
        final = final_step(predictions, lengths)
        return {
            "step_predictions": predictions,
            "lengths": lengths,
            "final_prediction": final,
            "final_prediction_rounded": tf.cast(tf.round(final), tf.int64),
        }

    def signatures(self) -> dict:
        """The SavedModel's signatures: `serving_default` (raw strings) and `score_encoded`."""
        return {
            "serving_default": self.score_strings.get_concrete_function(),
            "score_encoded": self.score_encoded.get_concrete_function(),
            "about": self.about.get_concrete_function(),
        }


def about(loaded) -> dict[str, object]:
    """What the `about` signature of a loaded counter SavedModel says ({} for one without it)."""
    if "about" not in loaded.signatures:
        return {}
    return {name: value.numpy().tolist() for name, value in loaded.signatures["about"]().items()}
