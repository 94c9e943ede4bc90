"""The +-0I running-sum task: alphabet, encoding, targets, splits and tf.data batches.

A sequence is a string over `+ - 0 I`. `+` adds 1, `-` subtracts 1, `0` does nothing, and `I`
inverts the meaning of every character after it (a second `I` inverts back). The target at each
step is the running sum so far:

    running_sum("0+I000") == [0, 1, 1, 1, 1, 1]      running_sum("-I--") == [-1, -1, 0, 1]

Each character is one 3-vector: `0`=[0,0,0], `+`=[1,0,0], `-`=[0,1,0], `I`=[0,0,1].

The names of the reference notebook (`getSequences`, `encodeSequence`, `decodeSequence`) are kept
as aliases of the snake_case functions at the bottom of this file.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import tensorflow as tf

from diy_lstm.errors import BadInput
from diy_lstm.serving.strings import describe_character

ALPHABET = "0+-I"
ENCODING = {
    "0": (0.0, 0.0, 0.0),
    "+": (1.0, 0.0, 0.0),
    "-": (0.0, 1.0, 0.0),
    "I": (0.0, 0.0, 1.0),
}
NUM_FEATURES = 3
# Up to this many sequences of one length are enumerated in full (4^8); longer lengths are sampled.
MAX_SEQUENCES_PER_LENGTH = 4**8


class SequenceError(BadInput):
    """A sequence that is not a non-empty string over the alphabet; the message says where."""


def check_sequence(sequence: str) -> None:
    """Raises `SequenceError` naming the first unknown character and its position (from 1)."""
    if not isinstance(sequence, str):
        raise SequenceError(f"a sequence must be a string, got {type(sequence).__name__}")
    if not sequence:
        raise SequenceError("empty sequence: a sequence needs at least one character")
    for position, character in enumerate(sequence, start=1):
        if character not in ENCODING:
            raise SequenceError(
                f"unknown character {describe_character(character)} at position {position} of "
                f"{sequence!r}; allowed: {', '.join(repr(c) for c in ENCODING)}"
            )


def running_sum(sequence: str) -> np.ndarray:
    """The target at every step, `[time]` int64: the sum so far, `I` flipping the sign of what follows."""
    check_sequence(sequence)
    sums = np.empty(len(sequence), dtype=np.int64)
    total, sign = 0, 1
    for step, character in enumerate(sequence):
        if character == "I":
            sign = -sign
        elif character == "+":
            total += sign
        elif character == "-":
            total -= sign
        sums[step] = total
    return sums


def running_sums(sequences: list[str]) -> np.ndarray:
    """`running_sum` of many sequences of one length at once, `[count, length]` int64 (vectorised)."""
    return running_sums_of_ids(ids_of(sequences)).astype(np.int64)


def ids_of(sequences: list[str]) -> np.ndarray:
    """Sequences of one length over `ALPHABET` as `[count, length]` int8 ids (rows of `ALPHABET`)."""
    characters = np.frombuffer("".join(sequences).encode("ascii"), np.uint8).reshape(len(sequences), -1)
    return _ALPHABET_INDEX[characters].astype(np.int8)


def running_sums_of_ids(ids: np.ndarray) -> np.ndarray:
    """The running sum at every step of id sequences `[..., time]` (`ids_of`), int32: `I` flips the
    sign of what follows (-1 after an odd number of them)."""
    ids = np.asarray(ids)
    sign = 1 - 2 * (np.cumsum(ids == ALPHABET.index("I"), axis=-1, dtype=np.int32) % 2)
    steps = (ids == ALPHABET.index("+")).astype(np.int32) - (ids == ALPHABET.index("-"))
    return np.cumsum(sign * steps, axis=-1, dtype=np.int32)


def final_sum(sequence: str) -> int:
    """The running sum after the last character."""
    return int(running_sum(sequence)[-1])


def encode_sequence(sequence: str) -> np.ndarray:
    """`[time, 3]` float32, one row per character."""
    check_sequence(sequence)
    return np.array([ENCODING[character] for character in sequence], dtype=np.float32)


_DECODING = {code: character for character, code in ENCODING.items()}


def decode_sequence(encoded: np.ndarray) -> str:
    """The inverse of `encode_sequence`: `[time, 3]` rows back to characters."""
    encoded = np.asarray(encoded)
    if encoded.ndim != 2 or encoded.shape[1] != NUM_FEATURES:
        raise SequenceError(f"expected an array of shape [time, {NUM_FEATURES}], got {list(encoded.shape)}")
    characters = []
    for row_index, row in enumerate(encoded):
        code = tuple(float(value) for value in row)
        if code not in _DECODING:
            raise SequenceError(f"row {row_index} is {list(code)}, which encodes no character")
        characters.append(_DECODING[code])
    return "".join(characters)


def encode_batch(sequences: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Pads to the longest sequence: inputs `[batch, max_time, 3]` float32 and lengths `[batch]` int32.

    Padding rows are zeros (the encoding of `0`, which changes no sum); use the lengths to ignore them.
    """
    lengths = np.array([len(sequence) for sequence in sequences], dtype=np.int32)
    inputs = np.zeros((len(sequences), max(lengths, default=0), NUM_FEATURES), dtype=np.float32)
    for index, sequence in enumerate(sequences):
        inputs[index, : len(sequence)] = encode_sequence(sequence)
    return inputs, lengths


def all_sequences(length: int) -> list[str]:
    """Every one of the 4^length sequences, in a fixed (lexicographic by `ALPHABET`) order."""
    return ["".join(characters) for characters in itertools.product(ALPHABET, repeat=length)]


SAMPLINGS = ("uniform", "varied")


def sample_sequences(length: int, count: int, rng: np.random.Generator, sampling: str = "uniform") -> list[str]:
    """`count` sequences of `length`, drawn with replacement.

    "uniform": every one of the 4^length equally likely (each character uniform and independent).
    "varied": each sequence first draws its own character frequencies (Dirichlet(1, 1, 1, 1)), so
    long runs, many I's and sums far from 0 are common, as they are in long uniform sequences.
    """
    alphabet = np.array(list(ALPHABET))
    if sampling == "uniform":
        return ["".join(row) for row in alphabet[rng.integers(0, len(ALPHABET), size=(count, length))]]
    if sampling != "varied":
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    frequencies = rng.dirichlet(np.ones(len(ALPHABET)), size=count)  # [count, 4]
    cumulative = np.cumsum(frequencies, axis=1)
    draws = rng.random((count, length, 1)) > cumulative[:, np.newaxis, :]  # [count, length, 4]
    indices = np.minimum(draws.sum(axis=2), len(ALPHABET) - 1)
    return ["".join(row) for row in alphabet[indices]]


def get_sequences(
    length: int, seed: int = 0, max_count: int = MAX_SEQUENCES_PER_LENGTH, sampling: str = "uniform"
) -> list[str]:
    """All sequences of `length` shuffled by `seed` when there are at most `max_count`, else `max_count`
    sampled ones (see `sample_sequences`). The same arguments always give the same list."""
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    rng = np.random.default_rng([seed, length])
    if len(ALPHABET) ** length <= max_count:
        sequences = all_sequences(length)
        return [sequences[i] for i in rng.permutation(len(sequences))]
    return sample_sequences(length, max_count, rng, sampling)


def split(sequences: list[str], train_fraction: float) -> tuple[list[str], list[str]]:
    """The first `round(n * train_fraction)` for training, the rest held out."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    cut = int(round(len(sequences) * train_fraction))
    return sequences[:cut], sequences[cut:]


_CODES = np.array([ENCODING[character] for character in ALPHABET], np.float32)  # [4, 3], rows in ALPHABET order
_ALPHABET_INDEX = np.full(256, len(ALPHABET), np.int64)  # byte -> row of _CODES (len(ALPHABET): not a character)
_ALPHABET_INDEX[np.frombuffer(ALPHABET.encode("ascii"), np.uint8)] = np.arange(len(ALPHABET))


def _valid_ascii(sequences: list[str]) -> bool:
    """Every character is one of `ALPHABET` (so the vectorised encoding applies)."""
    joined = "".join(sequences)
    return joined.isascii() and bool(
        np.all(_ALPHABET_INDEX[np.frombuffer(joined.encode("ascii"), np.uint8)] < len(ALPHABET))
    )


@dataclasses.dataclass
class Examples:
    """Encoded sequences with their targets, padded to the longest.

    inputs: `[batch, max_time, 3]` float32. lengths: `[batch]` int32.
    running_sums: `[batch, max_time]` float32, zero after each sequence's end.
    """

    sequences: list[str]
    inputs: np.ndarray
    lengths: np.ndarray
    running_sums: np.ndarray

    @classmethod
    def from_sequences(cls, sequences: list[str]) -> "Examples":
        if sequences and len({len(sequence) for sequence in sequences}) == 1 and _valid_ascii(sequences):
            return cls._of_one_length(sequences)
        inputs, lengths = encode_batch(sequences)
        sums = np.zeros(inputs.shape[:2], dtype=np.float32)
        for index, sequence in enumerate(sequences):
            sums[index, : len(sequence)] = running_sum(sequence)
        return cls(list(sequences), inputs, lengths, sums)

    @classmethod
    def _of_one_length(cls, sequences: list[str]) -> "Examples":
        """The same as `from_sequences` for sequences of one length, vectorised."""
        characters = np.frombuffer("".join(sequences).encode("ascii"), np.uint8).reshape(len(sequences), -1)
        inputs = _CODES[_ALPHABET_INDEX[characters]]  # [batch, time, 3]
        lengths = np.full(len(sequences), characters.shape[1], np.int32)
        return cls(list(sequences), inputs, lengths, running_sums(sequences).astype(np.float32))

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def final_sums(self) -> np.ndarray:
        """`[batch]` float32."""
        return self.running_sums[np.arange(len(self)), self.lengths - 1]


def make_splits(
    min_length: int,
    max_length: int,
    train_fraction: float,
    seed: int = 0,
    max_per_length: int = MAX_SEQUENCES_PER_LENGTH,
    sampling: str = "uniform",
) -> tuple[Examples, Examples]:
    """Train and held-out examples for every length in `[min_length, max_length]`.

    Each length is split on its own, so every length is in both parts. With one length and
    4^length <= max_per_length this is the reference setup: all sequences, shuffled, split.
    """
    train, test = [], []
    for length in range(min_length, max_length + 1):
        train_part, test_part = split(get_sequences(length, seed, max_per_length, sampling), train_fraction)
        train += train_part
        test += test_part
    return Examples.from_sequences(train), Examples.from_sequences(test)


def batch_plan(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The batches of one epoch as index arrays; the order depends only on `(seed, epoch)`.

    `batch_size=0` means one batch of everything. With mixed lengths each batch holds one length
    (so no step is padding); the batches of all lengths are then shuffled together.
    """
    rng = np.random.default_rng([seed, epoch])
    plan = []
    for length in np.unique(lengths):
        indices = np.flatnonzero(lengths == length)
        indices = indices[rng.permutation(len(indices))]
        size = len(indices) if batch_size == 0 else batch_size
        plan += [indices[start : start + size] for start in range(0, len(indices), size)]
    if batch_size == 0 and len(plan) > 1:
        plan = [np.concatenate(plan)]
    return [plan[i] for i in rng.permutation(len(plan))]


def steps_per_epoch(lengths: np.ndarray, batch_size: int) -> int:
    """How many batches `batch_plan` makes of each epoch (the same for every epoch)."""
    if batch_size == 0:
        return 1
    return sum(-(-int(np.sum(lengths == length)) // batch_size) for length in np.unique(lengths))


def training_batches(examples: Examples, batch_size: int, seed: int, epochs: range) -> tf.data.Dataset:
    """The batches of `epochs`, in order, as one dataset (one pipeline for the whole run).

    Each element is `(inputs [batch, time, 3], running_sums [batch, time], lengths [batch])`; `time`
    is the longest length in the batch; each epoch has `steps_per_epoch` of them.
    """
    inputs = tf.constant(examples.inputs)
    running_sums = tf.constant(examples.running_sums)
    lengths = tf.constant(examples.lengths)

    def plans():
        for epoch in epochs:
            yield from batch_plan(examples.lengths, batch_size, seed, epoch)

    def gather(indices):
        batch_lengths = tf.gather(lengths, indices)
        time = tf.reduce_max(batch_lengths)
        batch_inputs = tf.gather(inputs, indices)[:, :time]
        return batch_inputs, tf.gather(running_sums, indices)[:, :time], batch_lengths

    signature = tf.TensorSpec([None], tf.int64)
    dataset = tf.data.Dataset.from_generator(plans, output_signature=signature).map(gather).prefetch(2)
    # Nothing here is tuned; with autotuning on, iterating past the last batch waits for the tuner's
    # next wake-up, which comes at doubling intervals (11 s of a 41 s default run).
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


# The reference notebook's names.
getSequences = get_sequences
encodeSequence = encode_sequence
decodeSequence = decode_sequence
