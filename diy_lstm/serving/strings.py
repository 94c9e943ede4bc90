"""Raw strings into ids inside a SavedModel, with the checks both task's models share.

`CharacterTable(characters)` lives in the graph: the characters (id order) and a table from each
character's code point to its id. `ids(texts, ...)` decodes UTF-8 to code points (4 bytes a
character, never one string per character), looks them up, and returns checks that fail with an
`InvalidArgumentError` whose message starts with `ERROR_PREFIX` and names the first bad text:

    bad input: sequences[2] is empty
    bad input: sequences[0] has 1 characters; at least 2 are needed
    bad input: unknown character U+1F600 at position 3 of prompt[0]; allowed: 0 + - I
    bad input: invalid UTF-8 at position 2 of text[1]
    bad input: 4 texts of up to 3000000 characters are 12000000 padded characters; at most 10000000

`diy_lstm.cli.errors.graph_error_message` turns such a message into a command line's one line.
"""

from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf

ERROR_PREFIX = "bad input: "
INVALID_UTF8 = 0xD800  # a surrogate: never the code point of valid UTF-8, so it marks an invalid byte
_HEX_DIGITS = "0123456789ABCDEF"


def describe_character(character: str) -> str:
    """`'x' (U+0078)`: a character and its code point, readable even for spaces, newlines and controls
    (the command lines' twin of `code_point_label`)."""
    return f"{character!r} (U+{ord(character):04X})"


def code_point_label(code_point: tf.Tensor) -> tf.Tensor:
    """`U+XXXX` (4 to 6 hex digits, as Unicode writes them) for a scalar int32 code point."""
    digits = tf.strings.join(
        [tf.strings.substr(_HEX_DIGITS, (code_point // 16**power) % 16, 1) for power in (5, 4, 3, 2, 1, 0)]
    )
    leading = tf.where(code_point < 0x10000, 2, tf.where(code_point < 0x100000, 1, 0))
    return tf.strings.join(["U+", tf.strings.substr(digits, leading, 6 - leading)])


class CharacterTable(tf.Module):
    """The characters a model reads, in id order, and the in-graph lookup from a code point to its id.

    Args:
      characters: single code points, id order.
      allowed: how an error lists the characters, e.g. "0 + - I" (default: none listed).
    """

    def __init__(self, characters: Sequence[str], allowed: str | None = None, name: str | None = None):
        super().__init__(name=name)
        if any(len(character) != 1 for character in characters) or len(set(characters)) != len(characters):
            raise ValueError(f"characters must be distinct single characters, got {list(characters)!r}")
        self.size = len(characters)
        self.characters = tf.constant(list(characters))  # [size]
        code_points = tf.constant([ord(character) for character in characters], tf.int32)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(code_points, tf.range(self.size, dtype=tf.int32)), default_value=-1
        )
        self.allowed = allowed

    def ids(
        self, texts: tf.Tensor, what: str, minimum_length: int = 1, max_padded_characters: int | None = None
    ) -> tuple[tf.RaggedTensor, tf.Tensor, list[tf.Operation]]:
        """Ragged ids `[batch, (time)]` int32, lengths `[batch]` int32, and the checks to run first.

        Args:
          texts: `[batch]` UTF-8 strings.
          what: the input's name in messages (`sequences`, `prompt`, `text`).
          minimum_length: characters each text needs.
          max_padded_characters: if set, batch × longest text may not exceed it (the memory of a call).
        """
        code_points = tf.strings.unicode_decode(texts, "UTF-8", errors="replace", replacement_char=INVALID_UTF8)
        ids = tf.ragged.map_flat_values(self.table.lookup, code_points)  # -1: not a character of ours
        lengths = tf.cast(code_points.row_lengths(), tf.int32)
        checks = [self._length_check(lengths, what, minimum_length), self._character_check(code_points, ids, what)]
        if max_padded_characters is not None:
            checks.append(padded_size_check(lengths, what, max_padded_characters))
        return ids, lengths, checks

    @staticmethod
    def _length_check(lengths: tf.Tensor, what: str, minimum_length: int) -> tf.Operation:
        short = tf.where(lengths < minimum_length)[:, 0]

        def message():
            index = tf.strings.as_string(short[0])
            if minimum_length == 1:
                return tf.strings.join([ERROR_PREFIX, what, "[", index, "] is empty"])
            return tf.strings.join(
                [
                    ERROR_PREFIX,
                    what,
                    "[",
                    index,
                    "] has ",
                    tf.strings.as_string(tf.gather(lengths, short[0])),
                    f" characters; at least {minimum_length} are needed",
                ]
            )

        return _assert_none(short, message)

    def _character_check(self, code_points: tf.RaggedTensor, ids: tf.RaggedTensor, what: str) -> tf.Operation:
        unknown = tf.where(ids.flat_values < 0)[:, 0]  # indices into the flat characters

        def message():
            first = unknown[0]
            row = ids.value_rowids()[first]
            position = tf.strings.as_string(first - ids.row_splits[row] + 1)
            code_point = code_points.flat_values[first]
            where = [" at position ", position, " of ", what, "[", tf.strings.as_string(row), "]"]
            allowed = [f"; allowed: {self.allowed}"] if self.allowed else ["; it is not in the model's vocabulary"]
            unknown_character = tf.strings.join(
                [ERROR_PREFIX, "unknown character ", code_point_label(code_point), *where, *allowed]
            )
            return tf.cond(
                tf.equal(code_point, INVALID_UTF8),
                lambda: tf.strings.join([ERROR_PREFIX, "invalid UTF-8", *where]),
                lambda: unknown_character,
            )

        return _assert_none(unknown, message)

    def text(self, ids: tf.Tensor) -> tf.Tensor:
        """The characters of `ids` `[..., time]` joined: `[...]` strings."""
        return tf.strings.reduce_join(tf.gather(self.characters, ids), axis=-1)


def characters_of(loaded_table) -> list[str]:
    """The characters, id order, of a `CharacterTable` in a loaded SavedModel (read from its lookup table)."""
    code_points, ids = tf.raw_ops.LookupTableExportV2(
        table_handle=loaded_table.table.resource_handle, Tkeys=tf.int32, Tvalues=tf.int32
    )
    order = tf.argsort(ids).numpy()
    return [chr(code_point) for code_point in code_points.numpy()[order]]


def checked_shape(
    tensor: tf.Tensor, shape: Sequence[int | None], what: str, also: Callable[[tf.Tensor], tf.Tensor] | None = None
) -> tf.Tensor:
    """`tensor` once its shape is `shape` (None: any size on that axis) and `also(its shape, padded
    with zeros to at least len(shape))` holds; else the `bad input:` error "`what`, got shape [...]".
    A signature that takes `tensor` declares no shape (`tf.TensorSpec(None)`): a loaded signature takes
    a tensor of any shape, and a declared one would let the graph's optimizer take this check as passed."""
    actual = tf.shape(tensor)
    padded = tf.concat([actual, tf.zeros([len(shape)], tf.int32)], axis=0)  # indexable whatever the rank
    well_formed = tf.equal(tf.size(actual), len(shape))
    for axis, size in enumerate(shape):
        if size is not None:
            well_formed &= tf.equal(padded[axis], size)
    if also is not None:
        well_formed &= also(padded)
    check = tf.debugging.Assert(well_formed, [f"{ERROR_PREFIX}{what}, got shape", actual], summarize=8)
    with tf.control_dependencies([check]):
        tensor = tf.identity(tensor)
    if None in shape:
        return tf.ensure_shape(tensor, shape)
    # A fully known shape given to `ensure_shape` would let the optimizer fold this check away.
    return tf.reshape(tensor, shape)


def padded_size_check(lengths: tf.Tensor, what: str, max_padded_characters: int) -> tf.Operation:
    """An assertion that a batch of `lengths` `[batch]`, padded to the longest, holds at most
    `max_padded_characters` steps: what one call may hold."""
    longest = tf.cast(tf.reduce_max(tf.concat([lengths, [0]], 0)), tf.int64)
    padded = tf.cast(tf.size(lengths), tf.int64) * longest
    return tf.debugging.Assert(
        padded <= max_padded_characters,
        [
            tf.strings.join(
                [
                    ERROR_PREFIX,
                    tf.strings.as_string(tf.size(lengths)),
                    f" {what} of up to ",
                    tf.strings.as_string(longest),
                    " characters are ",
                    tf.strings.as_string(padded),
                    f" padded characters; at most {max_padded_characters}",
                ]
            )
        ],
    )


def _assert_none(found: tf.Tensor, message) -> tf.Operation:
    """An assertion that `found` is empty, whose message (built only when it fails) names the first."""
    return tf.debugging.Assert(tf.size(found) == 0, [tf.cond(tf.size(found) > 0, message, lambda: tf.constant(""))])
