"""The language model on a device: what its LiteRT files take, and their check against the SavedModel.

Device code turns each character into its id (its index in the metadata's `characters`) and feeds the
step model; `output` is the next character's logits. The check, in the LiteRT interpreter against
the SavedModel: the step model writes the same greedy continuation of `CHECK_CHARACTERS` characters
after the prompt as `generate` at temperature 0, and both files give `score`'s bits per character
on that text and on as many characters drawn at random from the vocabulary (one text the model
finds likely, one it does not) to `BITS_TOLERANCE`. With dynamic-range quantization the bits may
move by `QUANTIZED_BITS_TOLERANCE` and the continuation is only reported.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from diy_lstm import reference
from diy_lstm.errors import BadInput
from diy_lstm.serving.litert import Check, LiteRTModel, run_steps, run_windows
from diy_lstm.serving.strings import characters_of

IDS = True  # the step takes a character's id
CHECK_CHARACTERS = 500
BITS_TOLERANCE, QUANTIZED_BITS_TOLERANCE = 1e-4, 0.02
CHECK_SEED = 0


def device_inputs(loaded) -> dict:
    """What device code needs to feed the files and read their logits: the characters, id order."""
    return {"characters": characters_of(loaded.characters)}


def greedy(step: LiteRTModel, prompt_ids: np.ndarray, count: int) -> np.ndarray:
    """The `count` most likely next characters, one at a time, after `prompt_ids` (at least one):
    the step model's loop on a device (ids `[count]`)."""
    state, chosen = step.zero_state(1), []
    for index in prompt_ids:
        logits, state = step(np.array([index]), state)
    for _ in range(count):
        chosen.append(int(np.argmax(logits[0])))
        logits, state = step(np.array(chosen[-1:]), state)
    return np.array(chosen, np.int32)


def bits_per_char(logits: np.ndarray, ids: np.ndarray) -> float:
    """-mean log2 p(ids[t + 1] | ..t) of one text's `logits` `[time, vocabulary]` (in float64)."""
    nats, _ = reference.softmax_cross_entropy(logits[np.newaxis, :-1], ids[np.newaxis, 1:])
    return nats / np.log(2.0)


def check(loaded, files: dict[str, LiteRTModel], quantized: bool, prompt: str) -> list[Check]:
    """Each file (`{name: model}`, the step and the sequence model) against the SavedModel `loaded`."""
    characters = characters_of(loaded.characters)
    index = {character: i for i, character in enumerate(characters)}
    if not prompt or any(character not in index for character in prompt):
        raise BadInput(f"--prompt={prompt!r} must be at least one character of the model's vocabulary")
    step_name = next(name for name, model in files.items() if model.state_shape[2] == -1)  # the free batch
    prompt_ids = np.array([index[c] for c in prompt], np.int32)
    written = greedy(files[step_name], prompt_ids, CHECK_CHARACTERS)
    served = (
        loaded.signatures["generate"](
            prompt=tf.constant([prompt]),
            num_chars=tf.constant(CHECK_CHARACTERS),
            temperature=tf.constant(0.0),
            seed=tf.constant(0, tf.int64),
        )["text"][0]
        .numpy()
        .decode()[len(prompt) :]
    )
    differ = [t for t, (ours, theirs) in enumerate(zip(written, served)) if characters[ours] != theirs]
    same = differ[0] if differ else CHECK_CHARACTERS
    checks = [
        Check(
            step_name,
            "greedy characters from the first that differs",
            CHECK_CHARACTERS - same,
            None if quantized else 0,
            f"greedy after {prompt!r}: the first {same} of {CHECK_CHARACTERS} characters as the SavedModel writes them",
        )
    ]
    rng = np.random.default_rng(CHECK_SEED)
    texts = {"its greedy text": np.concatenate([prompt_ids, written]), "random characters": None}
    texts["random characters"] = rng.integers(0, len(characters), len(texts["its greedy text"])).astype(np.int32)
    served_bits = loaded.signatures["score"](
        text=tf.constant(["".join(characters[i] for i in ids) for ids in texts.values()])
    )["bits_per_char"].numpy()
    allowed = QUANTIZED_BITS_TOLERANCE if quantized else BITS_TOLERANCE
    for name, model in files.items():
        run = run_steps if model.state_shape[2] == -1 else run_windows
        bits = [bits_per_char(run(model, ids[np.newaxis])[0], ids) for ids in texts.values()]
        differences = np.abs(np.array(bits) - served_bits)
        detail = ", ".join(
            f"{what} {ours:.4f} against {theirs:.4f}" for what, ours, theirs in zip(texts, bits, served_bits)
        )
        checks.append(Check(name, "bits per character, largest difference", float(differences.max()), allowed, detail))
    return checks
