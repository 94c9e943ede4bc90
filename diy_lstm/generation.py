"""A character-level language model as a SavedModel: it writes and scores text with no Python of ours.

The vocabulary (id -> character) is passed in by the caller and lives in the graph, beside a
`tf.lookup.StaticHashTable` for character -> id. Signatures (names fixed, for outside tools):

    generate(prompt: string [batch], num_chars: int32 [], temperature: float32 [], seed: int64 [])
        -> {"text": string [batch]}     each prompt followed by `num_chars` generated characters
    score(text: string [batch])
        -> {"bits_per_char": float32 [batch],       -mean log2 p(next character) over each text
            "log_probs": float32 [batch, time]}     ln p(text[t + 1] | text[..t]) at t, 0 past each end
                                                    (time = the longest text's length - 1)

`generate` feeds each prompt through the cell from the zero state, then samples one character at a
time from softmax(logits / temperature) and feeds it back, all in one `tf.while_loop`; temperature 0
takes the most likely character. Sampling is stateless, seeded by `(seed, step)`: the same seed
gives the same text. Bad input fails with an `InvalidArgumentError` whose message starts with
`ERROR_PREFIX` and names what is wrong (`unknown character x (U+0078) at position 3 of prompt[0]`).
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from diy_lstm.cell import LSTMState, lstm_step
from diy_lstm.export import ERROR_PREFIX, code_point_label
from diy_lstm.model import LSTMModel
from diy_lstm.rnn import final_step

MAX_GENERATED_CHARACTERS = 1_000_000


class TextGenerator(tf.Module):
    """A model whose outputs are logits over `characters`, with the table that reads and writes them.

    Args:
      model: an `LSTMModel` with `input_size == output_size == len(characters)` (one-hot in).
      characters: the vocabulary, id order.
    """

    def __init__(self, model: LSTMModel, characters: Sequence[str], name: str | None = None):
        super().__init__(name=name)
        size = len(characters)
        if model.config.input_size != size or model.config.output_size != size:
            raise ValueError(f"the model reads {model.config.input_size} and writes {model.config.output_size} "
                             f"values; a vocabulary of {size} characters needs both to be {size}")
        self.model = model
        self.vocabulary_size = size
        self.characters = tf.constant(list(characters))
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(self.characters, tf.range(size, dtype=tf.int64)), default_value=-1)

    def signatures(self) -> dict:
        return {"generate": self.generate.get_concrete_function(), "score": self.score.get_concrete_function()}

    def _ids(self, texts: tf.Tensor, what: str, minimum_length: int) -> tuple[tf.RaggedTensor, tf.Tensor, list]:
        """Ragged ids `[batch, (time)]`, lengths `[batch]`, and checks naming the first bad text."""
        characters = tf.strings.unicode_split(texts, "UTF-8", errors="replace")
        ids = tf.cast(self.table.lookup(characters), tf.int32)  # -1 for an unknown character
        lengths = tf.cast(characters.row_lengths(), tf.int32)
        short = tf.where(lengths < minimum_length)[:, 0]
        unknown = tf.where(ids.flat_values < 0)[:, 0]

        def short_message():
            return tf.strings.join([ERROR_PREFIX, what, "[", tf.strings.as_string(short[0]), "] has ",
                                    tf.strings.as_string(tf.gather(lengths, short[0])), " characters; at least ",
                                    str(minimum_length), " are needed"])

        def unknown_message():
            first = unknown[0]
            row = ids.value_rowids()[first]
            character = characters.flat_values[first]
            return tf.strings.join([ERROR_PREFIX, "unknown character ", character, " (", code_point_label(character),
                                    ") at position ", tf.strings.as_string(first - ids.row_splits[row] + 1), " of ",
                                    what, "[", tf.strings.as_string(row),
                                    "]; it is not in the vocabulary of the model"])

        no_message = lambda: tf.constant("")  # noqa: E731
        checks = [
            tf.debugging.Assert(tf.size(short) == 0, [tf.cond(tf.size(short) > 0, short_message, no_message)]),
            tf.debugging.Assert(tf.size(unknown) == 0, [tf.cond(tf.size(unknown) > 0, unknown_message, no_message)]),
        ]
        return ids, lengths, checks

    def _one_hot(self, ids: tf.Tensor) -> tf.Tensor:
        return tf.one_hot(ids, self.vocabulary_size, dtype=self.model.dtype)

    def _logits(self, state: LSTMState) -> tf.Tensor:
        source = state.cell if self.model.config.readout == "cell" else state.hidden
        return tf.matmul(source, self.model.W_out) + self.model.b_out  # [batch, vocabulary]

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name="prompt"), tf.TensorSpec([], tf.int32, name="num_chars"),
        tf.TensorSpec([], tf.float32, name="temperature"), tf.TensorSpec([], tf.int64, name="seed")],
        autograph=False)
    def generate(self, prompt, num_chars, temperature, seed):
        ids, lengths, checks = self._ids(prompt, "prompt", 1)
        checks += [
            tf.debugging.Assert(tf.logical_and(num_chars >= 0, num_chars <= MAX_GENERATED_CHARACTERS), [
                f"{ERROR_PREFIX}num_chars must be in [0, {MAX_GENERATED_CHARACTERS}], got", num_chars]),
            tf.debugging.Assert(tf.logical_and(temperature >= 0.0, tf.math.is_finite(temperature)), [
                f"{ERROR_PREFIX}temperature must be a finite number >= 0, got", temperature]),
        ]
        with tf.control_dependencies(checks):  # nothing below runs before the checks pass
            dense = ids.to_tensor(default_value=0)  # [batch, longest prompt]
            num_chars = tf.identity(num_chars)
        output = self.model.run(self._one_hot(dense), keep_states=True)
        states = tuple(  # each layer's state after each prompt's own last character
            LSTMState(final_step(tf.transpose(layer.hidden, [1, 0, 2]), lengths),
                      final_step(tf.transpose(layer.cell, [1, 0, 2]), lengths)) for layer in output.layers)
        logits = final_step(output.predictions, lengths)  # [batch, vocabulary]
        temperature = tf.cast(temperature, logits.dtype)

        def pick(logits, step):
            def sample():
                seeds = tf.stack([seed, tf.cast(step, tf.int64)])
                return tf.random.stateless_categorical(logits / temperature, 1, seeds, dtype=tf.int32)[:, 0]

            return tf.cond(temperature > 0.0, sample, lambda: tf.argmax(logits, axis=-1, output_type=tf.int32))

        def body(step, logits, states, written):
            chosen = pick(logits, step)
            inputs, new_states = self._one_hot(chosen), []
            for layer, state in zip(self.model.layers, states):
                gates = lstm_step(inputs, state, layer.fused_weights(), layer.activation)
                inputs = gates.hidden
                new_states.append(gates.state)
            return step + 1, self._logits(new_states[-1]), tuple(new_states), written.write(step, chosen)

        written = tf.TensorArray(tf.int32, size=num_chars, element_shape=[None])
        _, _, _, written = tf.while_loop(
            lambda step, *_: step < num_chars, body, (tf.constant(0), logits, states, written),
            maximum_iterations=num_chars)

        def joined():
            return tf.strings.reduce_join(tf.gather(self.characters, written.stack()), axis=0)  # [batch]

        continuation = tf.cond(num_chars > 0, joined, lambda: tf.fill(tf.shape(prompt), ""))
        return {"text": tf.strings.join([prompt, continuation])}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")], autograph=False)
    def score(self, text):
        ids, lengths, checks = self._ids(text, "text", 2)
        with tf.control_dependencies(checks):
            dense = ids.to_tensor(default_value=0)  # [batch, longest]
        dense = tf.pad(dense, [[0, 0], [0, tf.maximum(0, 2 - tf.shape(dense)[1])]])  # an empty batch too
        logits = self.model(self._one_hot(dense[:, :-1]))  # predicts characters 1 .. time
        log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))
        picked = tf.gather(log_probs, dense[:, 1:], batch_dims=2)  # [batch, time - 1]
        picked *= tf.sequence_mask(lengths - 1, tf.shape(picked)[1], dtype=tf.float32)
        predictions = tf.cast(tf.maximum(lengths - 1, 1), tf.float32)
        bits = -tf.reduce_sum(picked, axis=1) / predictions / tf.math.log(2.0)
        return {"bits_per_char": bits, "log_probs": picked}
