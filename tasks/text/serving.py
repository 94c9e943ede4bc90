"""A character-level language model as a SavedModel: it writes and scores text with no Python of ours.

The vocabulary (id -> character) is passed in by the caller and lives in the graph
(`diy_lstm.serving.strings.CharacterTable`). Signatures (names fixed, for outside tools):

    generate(prompt: string [batch], num_chars: int32 [], temperature: float32 [], seed: int64 [])
        -> {"text": string [batch]}     each prompt followed by `num_chars` generated characters
    score(text: string [batch])
        -> {"bits_per_char": float32 [batch],       -mean log2 p(next character) over each text
            "log_probs": float32 [batch, time]}     ln p(text[t + 1] | text[..t]) at t, 0 past each end
                                                    (time = the longest text's length - 1)

`generate` feeds each prompt through the cell from the zero state (an empty prompt: the zero state
itself), then samples one character at a time from softmax(logits / temperature) and feeds it back,
all in one `tf.while_loop`; temperature 0 takes the most likely character. Sampling is stateless,
seeded by `(seed, step)`: the same seed gives the same text. `score` reads its texts in windows (at
most `SCORE_WINDOW` characters, fewer for a large batch), carrying the state, so its memory grows
with the texts' length, not with length × vocabulary. Bad input fails with an `InvalidArgumentError`
whose message starts with `ERROR_PREFIX` and names what is wrong (`unknown character U+0078 at
position 3 of prompt[0]`); one call takes at most `MAX_SCORED_CHARACTERS` (texts × the longest) to
score, and prompts of at most `ONE_HOT_VALUES // vocabulary` characters (prompts × the longest).
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from diy_lstm.cell import LSTMState, lstm_step, project_input
from diy_lstm.model import LSTMModel
from diy_lstm.rnn import final_step
from diy_lstm.serving.strings import ERROR_PREFIX, CharacterTable

SIGNATURE_INPUTS = {"generate": ("num_chars", "prompt", "seed", "temperature"), "score": ("text",)}
MAX_GENERATED_CHARACTERS = 1_000_000
MAX_PROMPT_CHARACTERS = 1_000_000  # one prompt, on the command line
MAX_SCORED_CHARACTERS = 20_000_000  # texts × the longest of them, in one call
ONE_HOT_VALUES = 200_000_000  # characters × vocabulary read at once (prompts, a window of scored text)
SCORE_WINDOW = 4096


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
        self.characters = CharacterTable(characters)
        self.max_prompt_characters = ONE_HOT_VALUES // size

    def signatures(self) -> dict:
        return {"generate": self.generate.get_concrete_function(), "score": self.score.get_concrete_function()}

    def _logits(self, state: LSTMState) -> tf.Tensor:
        source = state.cell if self.model.config.readout == "cell" else state.hidden
        return tf.matmul(source, self.model.W_out) + self.model.b_out  # [batch, vocabulary]

    def _prompt_states(self, ids: tf.RaggedTensor, lengths: tf.Tensor) -> tuple[tuple[LSTMState, ...], tf.Tensor]:
        """Each layer's state after each prompt's last character, and the logits for the next one
        (the zero state and its logits for an empty prompt)."""
        dense = ids.to_tensor(default_value=0)  # [batch, longest prompt]
        dense = tf.pad(dense, [[0, 0], [0, tf.maximum(0, 1 - tf.shape(dense)[1])]])  # at least one step
        output = self.model.run(dense, keep_states=True)  # ids: one-hot inputs, read as rows of W_x
        last = tf.maximum(lengths, 1)
        started = tf.cast(lengths > 0, self.model.dtype)[:, tf.newaxis]  # [batch, 1]: 0 for an empty prompt
        states = tuple(LSTMState(final_step(tf.transpose(layer.hidden, [1, 0, 2]), last) * started,
                                 final_step(tf.transpose(layer.cell, [1, 0, 2]), last) * started)
                       for layer in output.layers)
        return states, self._logits(states[-1])

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name="prompt"), tf.TensorSpec([], tf.int32, name="num_chars"),
        tf.TensorSpec([], tf.float32, name="temperature"), tf.TensorSpec([], tf.int64, name="seed")],
        autograph=False)
    def generate(self, prompt, num_chars, temperature, seed):
        ids, lengths, checks = self.characters.ids(prompt, "prompt", minimum_length=0,
                                                   max_padded_characters=self.max_prompt_characters)
        checks += [
            tf.debugging.Assert(tf.logical_and(num_chars >= 0, num_chars <= MAX_GENERATED_CHARACTERS), [
                f"{ERROR_PREFIX}num_chars must be in [0, {MAX_GENERATED_CHARACTERS}], got", num_chars]),
            tf.debugging.Assert(tf.logical_and(temperature >= 0.0, tf.math.is_finite(temperature)), [
                f"{ERROR_PREFIX}temperature must be a finite number >= 0, got", temperature]),
        ]
        with tf.control_dependencies(checks):  # nothing below runs before the checks pass
            ids = tf.ragged.map_flat_values(tf.identity, ids)
            lengths = tf.identity(lengths)
            num_chars = tf.identity(num_chars)
        states, logits = self._prompt_states(ids, lengths)
        temperature = tf.cast(temperature, logits.dtype)

        def pick(logits, step):
            def sample():
                seeds = tf.stack([seed, tf.cast(step, tf.int64)])
                return tf.random.stateless_categorical(logits / temperature, 1, seeds, dtype=tf.int32)[:, 0]

            return tf.cond(temperature > 0.0, sample, lambda: tf.argmax(logits, axis=-1, output_type=tf.int32))

        def body(step, logits, states, written):
            chosen = pick(logits, step)
            inputs, new_states = chosen, []  # ids: the first layer reads its rows of W_x
            for layer, state in zip(self.model.layers, states):
                weights = layer.fused_weights()
                gates = lstm_step(project_input(inputs, weights), state, weights.recurrent_kernel, layer.gating)
                inputs = gates.hidden
                new_states.append(gates.state)
            return step + 1, self._logits(new_states[-1]), tuple(new_states), written.write(step, chosen)

        written = tf.TensorArray(tf.int32, size=num_chars, element_shape=[None])
        _, _, _, written = tf.while_loop(
            lambda step, *_: step < num_chars, body, (tf.constant(0), logits, states, written),
            maximum_iterations=num_chars)

        def joined():
            return self.characters.text(tf.transpose(written.stack()))  # [batch]

        continuation = tf.cond(num_chars > 0, joined, lambda: tf.fill(tf.shape(prompt), ""))
        return {"text": tf.strings.join([prompt, continuation])}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")], autograph=False)
    def score(self, text):
        ids, lengths, checks = self.characters.ids(text, "text", minimum_length=2,
                                                   max_padded_characters=MAX_SCORED_CHARACTERS)
        with tf.control_dependencies(checks):
            dense = ids.to_tensor(default_value=0)  # [batch, longest]
        dense = tf.pad(dense, [[0, 0], [0, tf.maximum(0, 2 - tf.shape(dense)[1])]])  # an empty batch too
        picked = self._log_probs(dense[:, :-1], dense[:, 1:])  # [batch, time - 1]
        picked *= tf.sequence_mask(lengths - 1, tf.shape(picked)[1], dtype=tf.float32)
        predictions = tf.cast(tf.maximum(lengths - 1, 1), tf.float32)
        bits = -tf.reduce_sum(picked, axis=1) / predictions / tf.math.log(2.0)
        return {"bits_per_char": bits, "log_probs": picked}

    def _log_probs(self, inputs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        """ln p(targets[:, t] | inputs[:, ..t]) `[batch, time]`, window by window with the state carried."""
        steps = tf.shape(inputs)[1]
        units, batch = self.model.config.units, tf.shape(inputs)[0]
        window = tf.clip_by_value(ONE_HOT_VALUES // (tf.maximum(batch, 1) * self.vocabulary_size), 1, SCORE_WINDOW)
        zeros = tf.zeros(tf.stack([batch, units]), self.model.dtype)
        states = tuple(LSTMState(zeros, zeros) for _ in self.model.layers)

        def body(start, states, written):
            stop = tf.minimum(start + window, steps)
            output = self.model.run(inputs[:, start:stop], initial_states=states, keep_states=True)
            log_probs = tf.nn.log_softmax(tf.cast(output.predictions, tf.float32))  # [batch, window, vocabulary]
            picked = tf.gather(log_probs, targets[:, start:stop], batch_dims=2)  # [batch, window]
            return stop, output.final_states(), written.write(start // window, tf.transpose(picked))

        written = tf.TensorArray(tf.float32, size=0, dynamic_size=True, infer_shape=False, element_shape=[None, None])
        _, _, written = tf.while_loop(lambda start, *_: start < steps, body, (tf.constant(0), states, written))
        return tf.transpose(written.concat())  # [batch, time]
