"""Write text with an exported character-level language model (its `generate` signature).

    python -m diy_lstm.generate --model_dir=logs/RUN/saved_model --prompt="To be" --num_chars=300 \\
        --temperature=0.8 [--seed=N]

Prints the prompt and the characters generated after it. `--temperature=0` always takes the most
likely character; the same seed gives the same text. Any error (a prompt character the model does
not know, a bad flag, a missing model) is one line on stderr: exit 2 for bad input, 3 for a model
that cannot be loaded.
"""

from __future__ import annotations

import math
import re
import sys

from absl import app, flags

from diy_lstm import quiet

quiet.import_tensorflow()  # before anything else imports it

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Directory of a SavedModel written by train_text.py.")
_PROMPT = flags.DEFINE_string("prompt", "\n", "Text to start from; it is fed through the model first.")
_NUM_CHARS = flags.DEFINE_integer("num_chars", 300, "Characters to generate after the prompt.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.8, "Softmax temperature, >= 0; 0 takes the most likely.")
_SEED = flags.DEFINE_integer("seed", 0, "Fixes the sampling.", lower_bound=0, upper_bound=2**63 - 1)

EXIT_BAD_INPUT, EXIT_BAD_MODEL = 2, 3
_ASSERTION = re.compile(r"assertion failed: \[(.*?)\](?: \[(.*?)\])?\s*\n", re.DOTALL)


class GenerateError(Exception):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def generate(model_dir: str, prompt: str, num_chars: int, temperature: float, seed: int) -> str:
    """The prompt and `num_chars` characters the model at `model_dir` writes after it."""
    tf = quiet.import_tensorflow()
    from diy_lstm.export import ERROR_PREFIX, LoadError, load_saved_model
    from diy_lstm.generation import MAX_GENERATED_CHARACTERS

    if not 0 <= num_chars <= MAX_GENERATED_CHARACTERS:
        raise GenerateError(f"--num_chars must be in [0, {MAX_GENERATED_CHARACTERS:,}], got {num_chars}",
                            EXIT_BAD_INPUT)
    if not (math.isfinite(temperature) and temperature >= 0.0):
        raise GenerateError(f"--temperature must be a finite number >= 0, got {temperature}", EXIT_BAD_INPUT)
    if not prompt:
        raise GenerateError("--prompt is empty; give at least one character", EXIT_BAD_INPUT)

    try:
        signature = load_saved_model(model_dir, "generate")
    except LoadError as error:
        raise GenerateError(str(error), EXIT_BAD_MODEL) from None
    try:
        outputs = signature(prompt=tf.constant([prompt]), num_chars=tf.constant(num_chars, tf.int32),
                            temperature=tf.constant(temperature, tf.float32), seed=tf.constant(seed, tf.int64))
    except tf.errors.InvalidArgumentError as error:
        found = _ASSERTION.search(error.message)
        line = " ".join(part for part in found.groups() if part) if found else error.message.strip().splitlines()[-1]
        line = line.removeprefix(ERROR_PREFIX).replace("of prompt[0]", "of --prompt")
        character = re.search(r"unknown character .* \(U\+([0-9A-F]+)\) at", line)
        if character:  # TensorFlow prints non-ASCII bytes escaped: show the character itself
            shown = chr(int(character.group(1), 16))
            line = re.sub(r"unknown character .* \(U\+", f"unknown character {shown!r} (U+", line, count=1)
        raise GenerateError(line, EXIT_BAD_INPUT) from None
    return outputs["text"][0].numpy().decode("utf-8")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print(f"error: unexpected arguments {argv[1:]}; give the prompt as --prompt=...", file=sys.stderr)
        return EXIT_BAD_INPUT
    if _MODEL_DIR.value is None:
        print("error: --model_dir is required: the directory of a SavedModel written by train_text.py",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        text = generate(_MODEL_DIR.value, _PROMPT.value, _NUM_CHARS.value, _TEMPERATURE.value, _SEED.value)
    except GenerateError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    try:
        print(text, flush=True)
    except BrokenPipeError:
        sys.stdout = None
    return 0


if __name__ == "__main__":
    from diy_lstm import cli

    app.run(lambda argv: sys.exit(main(argv)), flags_parser=cli.parse_flags_or_exit)
