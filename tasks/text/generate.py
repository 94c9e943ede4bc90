"""Write text with an exported character-level language model (its `start` and `more` signatures).

    python generate.py --model_dir=logs/RUN/saved_model --prompt="To be" --num_chars=300 \\
        --temperature=0.8 [--seed=N]

Prints the prompt and the characters generated after it, as they are made (Ctrl-C or SIGTERM stops it,
the line ended, exit 130): the same text the `generate` signature writes. `--temperature=0` always takes the most likely
character; the same seed gives the same text; an empty prompt (the default) starts from the model's
zero state. Any error (a prompt character the model does not know, a bad flag, a missing
model) is one line on stderr, with the exit code of `diy_lstm.cli.errors`.
"""

from __future__ import annotations

import functools
import math
import sys
from typing import Callable

from absl import flags

from diy_lstm.cli import quiet

tf = quiet.import_tensorflow()

from diy_lstm.cli import main as cli  # noqa: E402
from diy_lstm.cli.errors import ModelError, OutputError, UsageError, graph_error_message  # noqa: E402
from diy_lstm.serving.export import LoadError, load_serving_signature  # noqa: E402
from tasks.text.serving import MAX_GENERATED_CHARACTERS, MAX_PROMPT_CHARACTERS, SIGNATURE_INPUTS  # noqa: E402

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Directory of a SavedModel written by train_text.py.")
_PROMPT = flags.DEFINE_string("prompt", "", "Text to start from (fed through the model first); empty: from nothing.")
_NUM_CHARS = flags.DEFINE_integer(
    "num_chars", 300, f"Characters to generate after the prompt, 0..{MAX_GENERATED_CHARACTERS}."
)
_TEMPERATURE = flags.DEFINE_float("temperature", 0.8, "Softmax temperature, >= 0; 0 takes the most likely.")
_SEED = flags.DEFINE_integer("seed", 0, "Fixes the sampling.", lower_bound=0, upper_bound=2**63 - 1)


def check_prompt(prompt: str) -> None:
    """A prompt that was not valid UTF-8 on the command line reaches Python as lone surrogates."""
    for position, character in enumerate(prompt, start=1):
        if "\udc80" <= character <= "\udcff":
            raise UsageError(f"invalid UTF-8 byte 0x{ord(character) - 0xDC00:02X} at position {position} of --prompt")
    if len(prompt) > MAX_PROMPT_CHARACTERS:
        raise UsageError(f"--prompt has {len(prompt):,} characters; at most {MAX_PROMPT_CHARACTERS:,}")


@functools.lru_cache(maxsize=4)
def _load(model_dir: str):
    """The SavedModel at `model_dir` and its `generate` signature, loaded once per process."""
    try:
        loaded, generate, _ = load_serving_signature(model_dir, "generate", SIGNATURE_INPUTS["generate"])
    except LoadError as error:
        raise ModelError(str(error)) from None
    return loaded, generate


STREAM_CHARACTERS = 512  # characters per `more` call; in pieces, the text is what `generate` writes


def stream(
    model_dir: str, prompt: str, num_chars: int, temperature: float, seed: int, write: Callable[[str], None]
) -> None:
    """Writes the prompt, then the characters the model at `model_dir` writes after it, a piece at
    a time as they are made (`start`, then `more`; one `generate` call for a model without them)."""
    if not 0 <= num_chars <= MAX_GENERATED_CHARACTERS:
        raise UsageError(f"--num_chars must be in [0, {MAX_GENERATED_CHARACTERS:,}], got {num_chars}")
    if not (math.isfinite(temperature) and temperature >= 0.0):
        raise UsageError(f"--temperature must be a finite number >= 0, got {temperature}")
    check_prompt(prompt)
    loaded, generate = _load(model_dir)
    sampling = {"temperature": tf.constant(temperature, tf.float32), "seed": tf.constant(seed, tf.int64)}
    if not {"start", "more"} <= set(loaded.signatures):
        write(call(generate, prompt=tf.constant([prompt]), num_chars=tf.constant(num_chars), **sampling)["text"])
        return
    state = call(loaded.signatures["start"], prompt=tf.constant([prompt]))["state"]
    write(prompt)
    for first_step in range(0, num_chars, STREAM_CHARACTERS):
        outputs = call(
            loaded.signatures["more"],
            state=state,
            first_step=tf.constant(first_step, tf.int64),
            num_chars=tf.constant(min(STREAM_CHARACTERS, num_chars - first_step)),
            **sampling,
        )
        write(outputs["text"])
        state = outputs["state"]


def call(signature, **inputs) -> dict:
    """The signature's outputs (a string output decoded: the first row), a bad prompt as `UsageError`."""
    try:
        outputs = signature(**inputs)
    except tf.errors.InvalidArgumentError as error:
        raise UsageError(graph_error_message(error, lambda what, index: "--prompt") or cli.first_line(error)) from None
    return {
        name: value[0].numpy().decode("utf-8") if value.dtype == tf.string else value for name, value in outputs.items()
    }


def write_out(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as error:  # e.g. >/dev/full
        raise OutputError(f"cannot write the output: {error.strerror or error}") from None


def main(argv: list[str]) -> int:
    if _MODEL_DIR.value is None:
        raise UsageError("--model_dir is required: the directory of a SavedModel written by train_text.py")
    written = []

    def write(text: str) -> None:
        write_out(text)
        written.append(text)

    try:
        stream(_MODEL_DIR.value, _PROMPT.value, _NUM_CHARS.value, _TEMPERATURE.value, _SEED.value, write)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C or SIGTERM: the text written so far ends its line
        if any(written):
            _end_line_quietly()
        raise
    write_out("\n")
    return 0


def _end_line_quietly() -> None:
    try:
        sys.stdout.write("\n")
        sys.stdout.flush()
    except OSError:
        pass  # the output's own trouble was, or will be, reported


def run() -> None:
    """The command line: `python generate.py ...` (or `python -m tasks.text.generate ...`)."""
    cli.run_main(main, writes_output=True)


if __name__ == "__main__":
    run()
