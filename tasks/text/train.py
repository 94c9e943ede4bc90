"""The text task's training command line: `python train_text.py` (the entry point at the top level).

    python train_text.py --corpus=shakespeare
    python generate.py --model_dir=logs/RUN/saved_model --prompt="To be" --num_chars=300

Flags -> configs -> `diy_lstm.training.run.train` -> a printed summary, as `train.py`: the same run
(TensorBoard, checkpoints, resume by rerunning, `--fresh`, export); the task (text, vocabulary,
streams, loss, samples, the `generate`/`score` SavedModel) is `tasks.text.task`. Shared flags: `--helpfull`.
"""

from __future__ import annotations

import dataclasses

from absl import flags

from diy_lstm.cli import main as cli
from diy_lstm.training import flags as training_flags
from diy_lstm.training.config import ConfigError, RunSettings
from diy_lstm.training.results import RunResult
from diy_lstm.training.task import TRAIN, VALIDATION
from tasks.text import text_data
from tasks.text.presets import fit_to_text, recipe
from tasks.text.task import UNSEEN, TextData, TextTask

_TEXT_FILE = flags.DEFINE_string("text_file", None, "Train on this UTF-8 text file instead of --corpus.")
_CORPUS = flags.DEFINE_enum("corpus", TextData.corpus, list(text_data.CORPORA), "A built-in corpus (text_data.py).")
_UNROLL_LENGTH = flags.DEFINE_integer(
    "unroll_length", TextData.unroll_length, "Characters per truncated-BPTT window.", lower_bound=1, upper_bound=10_000
)
_VALIDATION_FRACTION = flags.DEFINE_float(
    "validation_fraction",
    TextData.validation_fraction,
    "The share of the text held out for validation, in [0, 0.5]; 0: none.",
)
_VALIDATION_SPLIT = flags.DEFINE_enum(
    "validation_split",
    TextData.validation_split,
    list(text_data.SPLITS),
    "interleaved: every round(1/fraction)-th block of --validation_block characters (how well it learnt); "
    "tail: the contiguous end (how far it carries over to text it has not read).",
)
_VALIDATION_BLOCK = flags.DEFINE_integer(
    "validation_block",
    TextData.validation_block,
    "Characters per interleaved block.",
    lower_bound=1,
    upper_bound=10_000_000,
)
_SAMPLE_EVERY = flags.DEFINE_integer(
    "sample_every", 1, "Text samples at 3 temperatures in TensorBoard every this many epochs; 0: never.", lower_bound=0
)
_SAMPLE_LENGTH = flags.DEFINE_integer(
    "sample_length", TextData.sample_length, "Characters per text sample.", lower_bound=1, upper_bound=100_000
)
_GOAL_BITS_PER_CHAR = flags.DEFINE_float(
    "goal_bits_per_char",
    TextData.goal_bits_per_char,
    "If > 0: the run's goal, validation bits per character at most this (training's "
    "without validation); --stop_at_goal ends the run there.",
)


def apply_preset() -> None:
    """For every flag not given explicitly: the default corpus's recipe (a --text_file trains with it
    too), then the chosen corpus's over it (presets.py). Read when the command runs, not at import."""
    values = recipe(_CORPUS.default)
    if _TEXT_FILE.value is None and _CORPUS.value != _CORPUS.default:
        values.update(recipe(_CORPUS.value))
    for name, value in values.items():
        flags.FLAGS.set_default(name, value)  # a flag given on the command line keeps its value


def fit_streams(text: str) -> tuple[int, int]:
    """The streams (`--batch_size`) and window (`--unroll_length`) to train with: for a --text_file,
    ones that fit its training text (saying what was chosen)."""
    given = flags.FLAGS.batch_size, _UNROLL_LENGTH.value
    if _TEXT_FILE.value is None:
        return given
    train_text, _ = text_data.split(text, _VALIDATION_FRACTION.value, _VALIDATION_SPLIT.value, _VALIDATION_BLOCK.value)
    batch, window, chosen = fit_to_text(
        len(train_text),
        flags.FLAGS.batch_size or 1,
        _UNROLL_LENGTH.value,
        flags.FLAGS["batch_size"].present,
        _UNROLL_LENGTH.present,
    )
    if not chosen:
        return given
    print(f"--text_file={_TEXT_FILE.value}: {chosen}")
    return batch, window


def settings_per_size() -> list[tuple[RunSettings, TextTask]]:
    """One `(RunSettings, TextTask)` per `--lstm_size`, all checked before the first run starts."""
    apply_preset()
    text = TextData(corpus=_CORPUS.value, text_file=_TEXT_FILE.value).read()
    batch_size, unroll_length = fit_streams(text)
    data = TextData(
        corpus=_CORPUS.value,
        text_file=_TEXT_FILE.value,
        validation_fraction=_VALIDATION_FRACTION.value,
        validation_split=_VALIDATION_SPLIT.value,
        validation_block=_VALIDATION_BLOCK.value,
        unroll_length=unroll_length,
        sample_length=_SAMPLE_LENGTH.value,
        goal_bits_per_char=_GOAL_BITS_PER_CHAR.value,
    )
    training = dataclasses.replace(training_flags.training_config(), batch_size=batch_size)
    if training.stop_at_goal and not data.goal_bits_per_char:
        raise ConfigError("--stop_at_goal needs a goal: give --goal_bits_per_char")
    runs = training_flags.sweep(dataclasses.replace(training_flags.run_config(), sample_every=_SAMPLE_EVERY.value))
    planned = []
    for units, run_config in runs:
        task = TextTask(data, text)
        size = len(task.vocabulary)
        model = training_flags.model_config(units, input_size=size, output_size=size)
        planned.append((RunSettings(TextTask.name, model, data, training, run_config), task))
    return planned


def print_summary(result: RunResult) -> None:
    for split in (VALIDATION, UNSEEN, TRAIN):
        if split in result.metrics:
            metrics = result.metrics[split]
            print(
                f"  {split}: {metrics['bits_per_char']:.3f} bits per character (loss {metrics['loss']:.3f} nats, "
                f"perplexity {metrics['perplexity']:.2f}), next-character accuracy {100 * metrics['accuracy']:.1f}%"
            )
    print(f"  SavedModel: {result.export_dir}")
    print(f"  write with it: python generate.py --model_dir={result.export_dir} --prompt=... --num_chars=300")


def main(argv: list[str]) -> int:
    return cli.train_each(settings_per_size(), print_summary)
