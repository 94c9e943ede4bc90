"""A character-level language model as a SavedModel: it writes and scores text with no Python of ours.

The vocabulary (id -> character) is passed in by the caller and lives in the graph
(`diy_lstm.serving.strings.CharacterTable`). Signatures (names fixed, for outside tools):

    generate(prompt: string [batch], num_chars: int32 [], temperature: float32 [], seed: int64 [])
        -> {"text": string [batch]}     each prompt followed by `num_chars` generated characters
    start(prompt: string [batch]) -> {"state": float32 [layers, 2, batch, units]}
    more(state, num_chars: int32 [], temperature: float32 [], seed: int64 [], first_step: int64 [])
        -> {"text": string [batch], "state": ...}    the next `num_chars` characters, streamed
    score(text: string [batch])
        -> {"bits_per_char": float32 [batch],       -mean log2 p(next character) over each text
            "log_probs": float32 [batch, time]}     ln p(text[t + 1] | text[..t]) at t, 0 past each end
                                                    (time = the longest text's length - 1)

`generate` feeds each prompt through the cell from the zero state (an empty prompt: the zero state
itself), then samples one character at a time from softmax(logits / temperature) and feeds it back,
in chunks of `GENERATE_CHUNK` characters, each one XLA-compiled loop; temperature 0 takes the most
likely character. `start` and `more` are the same in pieces, for a caller that prints characters as
they come (`python generate.py`). Sampling (Gumbel-max) is stateless, each character's draw
seeded by `(seed, its step)`: the same seed gives the same text at the same batch size, in one call
or in pieces. `score`, and
the prompts of `generate` and `start`, run in windows (at most `windows.MAX_WINDOW` characters, fewer for a
large batch or model), carrying the state, so memory grows with the texts' length, not with length ×
units or vocabulary. Bad input fails with an `InvalidArgumentError`
whose message starts with `ERROR_PREFIX` and names what is wrong (`unknown character U+0078 at
position 3 of prompt[0]`; a `state` not shaped as `start` gives it); one call takes at most
`MAX_PADDED_CHARACTERS` (texts or prompts × the longest) and `window_steps` texts or prompts (a
step of each fits in one window), and writes at most `MAX_OUTPUT_CHARACTERS` (texts × `num_chars`):
each holds about 500 MB at most.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from diy_lstm.cell import LSTMState
from diy_lstm.model import LSTMModel, pack_states, unpack_states
from diy_lstm.rnn import final_step
from diy_lstm.serving import budget
from diy_lstm.serving.strings import ERROR_PREFIX, CharacterTable, checked_shape
from diy_lstm.serving.windows import batch_check, run_in_windows, window_length

PROMPTS = "prompt must be a vector of strings [batch]"  # what `generate` and `start` take

SIGNATURE_INPUTS = {
    "generate": ("num_chars", "prompt", "seed", "temperature"),
    "score": ("text",),
    "start": ("prompt",),
    "more": ("first_step", "num_chars", "seed", "state", "temperature"),
}
MAX_GENERATED_CHARACTERS = 1_000_000  # num_chars, per text
# Texts × num_chars of one `generate` or `more` call: each generated character is held as an id
# (through the chunks, their concatenation and transpose), a string element while the text is joined
# and its UTF-8 bytes: 39 bytes measured (`python -m benchmarks.scoring_memory --generate=100,100000`:
# 393 MB), so at most about 400 MB a call (docs/reliability.md).
MAX_OUTPUT_CHARACTERS = 10_000_000
MAX_PROMPT_CHARACTERS = 1_000_000  # one prompt, on the command line
# `score`, `generate`, `start`: texts or prompts × the longest of them in one call, and each window of
# them run forward at once within `budget.WINDOW_BYTES` as `budget.bytes_per_step` and the logits' 12
# bytes per step and character of the vocabulary count it; one window at a time. Measured at these caps
# (`python -m benchmarks.scoring_memory --text_score=TEXTS,LENGTH,UNITS`, docs/reliability.md): 41 to
# 280 MB a call, the most for many short texts.
MAX_PADDED_CHARACTERS = 2_000_000
BYTES_PER_STEP_AND_CHARACTER = 12


GENERATE_CHUNK = 1024  # characters sampled by one compiled program (docs/performance.md)
# `generate`, `more`: the texts of one call are sampled together, each holding a chunk of ids (4 bytes
# a character of `GENERATE_CHUNK`) and one step of the model and its logits (as a window counts one);
# together within `budget.WINDOW_BYTES` (docs/reliability.md, "What one call may hold").
BYTES_PER_SAMPLED_ID = 4


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
            raise ValueError(
                f"the model reads {model.config.input_size} and writes {model.config.output_size} "
                f"values; a vocabulary of {size} characters needs both to be {size}"
            )
        self.model = model
        self.vocabulary_size = size
        self.characters = CharacterTable(characters)
        config = model.config
        self.window_steps = budget.WINDOW_BYTES // (
            budget.bytes_per_step(config.units, config.num_layers, keep_states=True)
            + BYTES_PER_STEP_AND_CHARACTER * size
        )  # texts × window
        self.sampled_texts = budget.WINDOW_BYTES // (
            BYTES_PER_SAMPLED_ID * GENERATE_CHUNK
            + budget.bytes_per_step(config.units, config.num_layers, keep_states=True)
            + BYTES_PER_STEP_AND_CHARACTER * size
        )  # texts sampled in one call

    def signatures(self) -> dict:
        more = self.more.get_concrete_function(  # every shape is checked in the graph (`checked_shape`)
            tf.TensorSpec(None, self.model.dtype, name="state"),
            tf.TensorSpec(None, tf.int32, name="num_chars"),
            tf.TensorSpec(None, tf.float32, name="temperature"),
            tf.TensorSpec(None, tf.int64, name="seed"),
            tf.TensorSpec(None, tf.int64, name="first_step"),
        )
        return {
            "generate": self.generate.get_concrete_function(),
            "score": self.score.get_concrete_function(),
            "start": self.start.get_concrete_function(),
            "more": more,
        }

    def _prompt_states(self, prompt: tf.Tensor) -> tuple[LSTMState, ...]:
        """Each layer's state after each prompt's last character (the zero state for an empty prompt),
        once the prompts pass the vocabulary's checks: the prompts run window by window, the state
        carried, and each keeps the state of the window its last character is in."""
        ids, lengths, checks = self.characters.ids(
            prompt, "prompt", minimum_length=0, max_padded_characters=MAX_PADDED_CHARACTERS
        )
        checks.append(batch_check(tf.size(prompt), self.window_steps, "prompts"))
        with tf.control_dependencies(checks):  # nothing below runs before the checks pass
            dense = ids.to_tensor(default_value=0)  # [batch, longest prompt]
        steps, batch = tf.shape(dense)[1], tf.shape(dense)[0]
        window = self._window(batch)
        empty = self.model.initial_state(batch)
        last = lengths - 1  # [batch]: the step whose state each prompt ends with (-1: an empty prompt)

        def body(start, states, kept):
            stop = tf.minimum(start + window, steps)
            output = self.model.run(dense[:, start:stop], initial_states=states, keep_states=True)  # ids: rows of W_x
            here = ((last >= start) & (last < stop))[:, tf.newaxis]  # [batch, 1]
            at = tf.clip_by_value(last - start, 0, stop - start - 1)
            kept = tuple(
                LSTMState(
                    *(
                        tf.where(here, final_step(tf.transpose(values, [1, 0, 2]), at + 1), old)
                        for values, old in ((layer.hidden, was.hidden), (layer.cell, was.cell))
                    )
                )
                for layer, was in zip(output.layers, kept)
            )
            return stop, output.final_states(), kept

        _, _, kept = tf.while_loop(
            lambda start, *_: start < steps, body, (tf.constant(0), empty, empty), parallel_iterations=1
        )  # one window in memory at a time (windows.py)
        return kept

    def _window(self, batch: tf.Tensor) -> tf.Tensor:
        """Steps of `batch` sequences run forward at once, within `budget.WINDOW_BYTES`."""
        return window_length(self.window_steps, batch)

    @tf.function(
        input_signature=[
            tf.TensorSpec(None, tf.string, name="prompt"),
            tf.TensorSpec(None, tf.int32, name="num_chars"),
            tf.TensorSpec(None, tf.float32, name="temperature"),
            tf.TensorSpec(None, tf.int64, name="seed"),
        ],
        autograph=False,
    )
    def generate(self, prompt, num_chars, temperature, seed):
        prompt = checked_shape(prompt, [None], PROMPTS)
        states = self._prompt_states(prompt)
        continuation, _ = self._continue(states, num_chars, temperature, seed, tf.constant(0, tf.int64))
        return {"text": tf.strings.join([prompt, continuation])}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.string, name="prompt")], autograph=False)
    def start(self, prompt):
        """The state after each prompt, `[layers, 2 (hidden, cell), batch, units]`, for `more`."""
        return {"state": pack_states(self._prompt_states(checked_shape(prompt, [None], PROMPTS)))}

    @tf.function(autograph=False)
    def more(self, state, num_chars, temperature, seed, first_step):
        """`num_chars` more characters after `state` (from `start` or the last `more`) and the state
        after them. Calls that continue one another (`first_step`: the characters written before)
        write what one `generate` call with the same seed writes."""
        config = self.model.config
        state = checked_shape(
            state,
            [config.num_layers, 2, None, config.units],
            f"state must be [{config.num_layers}, 2, batch, {config.units}] (from start or more)",
        )
        first_step = checked_shape(first_step, [], "first_step must be a scalar")
        continuation, states = self._continue(unpack_states(state), num_chars, temperature, seed, first_step)
        return {"text": continuation, "state": pack_states(states)}

    def _continue(
        self,
        states: tuple[LSTMState, ...],
        num_chars: tf.Tensor,
        temperature: tf.Tensor,
        seed: tf.Tensor,
        first_step: tf.Tensor,
    ) -> tuple[tf.Tensor, tuple[LSTMState, ...]]:
        """`num_chars` characters sampled after `states`, string `[batch]`, and the states after them:
        chunk after chunk of one compiled loop (`_sample_chunk`)."""
        num_chars, temperature, seed = (
            checked_shape(value, [], f"{name} must be a scalar")
            for value, name in ((num_chars, "num_chars"), (temperature, "temperature"), (seed, "seed"))
        )
        batch = tf.shape(states[0].hidden)[:1]
        output = tf.cast(batch[0], tf.int64) * tf.cast(num_chars, tf.int64)
        checks = [
            batch_check(batch[0], self.sampled_texts, "texts sampled"),
            tf.debugging.Assert(
                tf.logical_and(num_chars >= 0, num_chars <= MAX_GENERATED_CHARACTERS),
                [f"{ERROR_PREFIX}num_chars must be in [0, {MAX_GENERATED_CHARACTERS}], got", num_chars],
            ),
            tf.debugging.Assert(
                output <= MAX_OUTPUT_CHARACTERS,
                [
                    tf.strings.join(
                        [
                            ERROR_PREFIX,
                            tf.strings.as_string(batch[0]),
                            " texts of ",
                            tf.strings.as_string(num_chars),
                            " generated characters are ",
                            tf.strings.as_string(output),
                            f" characters; at most {MAX_OUTPUT_CHARACTERS} a call",
                        ]
                    )
                ],
            ),
            tf.debugging.Assert(
                tf.logical_and(temperature >= 0.0, tf.math.is_finite(temperature)),
                [f"{ERROR_PREFIX}temperature must be a finite number >= 0, got", temperature],
            ),
        ]
        with tf.control_dependencies(checks):
            num_chars = tf.identity(num_chars)
        temperature = tf.cast(temperature, self.model.dtype)
        writing = tf.logical_and(num_chars > 0, batch[0] > 0)  # (no texts: nothing to sample)
        chunks = tf.where(writing, (num_chars + GENERATE_CHUNK - 1) // GENERATE_CHUNK, 0)

        def body(chunk, states, written):
            count = tf.minimum(GENERATE_CHUNK, num_chars - chunk * GENERATE_CHUNK)
            chosen, states = self._sample_chunk(
                first_step + tf.cast(chunk * GENERATE_CHUNK, tf.int64), count, states, temperature, seed
            )
            return chunk + 1, states, written.write(chunk, chosen)

        written = tf.TensorArray(tf.int32, size=chunks, element_shape=[GENERATE_CHUNK, None])
        _, states, written = tf.while_loop(
            lambda chunk, *_: chunk < chunks, body, (tf.constant(0), states, written), maximum_iterations=chunks
        )

        def joined():
            return self.characters.text(tf.transpose(written.concat()[:num_chars]))  # [batch]

        return tf.cond(writing, joined, lambda: tf.fill(batch, "")), states

    @tf.function(jit_compile=True, autograph=False)
    def _sample_chunk(self, first_step, count, states, temperature, seed):
        """`count` (at most `GENERATE_CHUNK`) characters sampled after each layer's `states`, as ids
        `[GENERATE_CHUNK, batch]` (0 past `count`), and the states after them; the draw of step
        `first_step + offset` is seeded by `(seed, that step)`. One XLA program: a loop of a fixed
        shape compiles whole, where each step of a graph loop pays for every op it launches."""
        logits = self.model.readout(states[-1])  # [batch, vocabulary]
        sampling = temperature > 0.0
        inverse_temperature = tf.where(sampling, 1.0 / tf.maximum(temperature, 1e-30), tf.ones_like(temperature))
        weights = self.model.fused_weights()  # concatenated once, not per step

        def body(offset, logits, states, written):
            # Gumbel-max: argmax(logits / T + g), g = -ln(-ln u) for u uniform, is a draw from
            # softmax(logits / T); step t's u are seeded by (seed, t); g is 0 for T = 0 (argmax).
            step = first_step + tf.cast(offset, tf.int64)
            uniform = tf.random.stateless_uniform(
                tf.shape(logits), tf.stack([seed, step]), minval=1e-20, maxval=1.0, dtype=logits.dtype
            )
            noise = tf.where(sampling, -tf.math.log(-tf.math.log(uniform)), tf.zeros_like(uniform))
            chosen = tf.argmax(logits * inverse_temperature + noise, axis=-1, output_type=tf.int32)
            states = tuple(gates.state for gates in self.model.step(chosen, states, weights))  # ids: rows of W_x
            written = tf.tensor_scatter_nd_update(written, [[offset]], chosen[tf.newaxis])
            return offset + 1, self.model.readout(states[-1]), states, written

        written = tf.zeros(tf.stack([GENERATE_CHUNK, tf.shape(logits)[0]]), tf.int32)
        _, _, states, written = tf.while_loop(
            lambda offset, *_: offset < count,
            body,
            (tf.constant(0), logits, states, written),
            maximum_iterations=GENERATE_CHUNK,
        )
        return written, states

    @tf.function(input_signature=[tf.TensorSpec(None, tf.string, name="text")], autograph=False)
    def score(self, text):
        text = checked_shape(text, [None], "text must be a vector of strings [batch]")
        ids, lengths, checks = self.characters.ids(
            text, "text", minimum_length=2, max_padded_characters=MAX_PADDED_CHARACTERS
        )
        checks.append(batch_check(tf.size(text), self.window_steps, "texts"))
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

        def picked(output, start, stop):
            log_probs = tf.nn.log_softmax(tf.cast(output.predictions, tf.float32))  # [batch, window, vocabulary]
            return tf.gather(log_probs, targets[:, start:stop], batch_dims=2)  # [batch, window]

        return run_in_windows(self.model, inputs, self._window(tf.shape(inputs)[0]), picked)
