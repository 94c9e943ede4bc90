"""Write an exported model as LiteRT files for a device, checked against the SavedModel.

    python export_litert.py --model_dir=logs/RUN/saved_model [--output_dir=logs/RUN/litert] [--quantize]

Reads a counter or text SavedModel written by `train.py` or `train_text.py`, converts it to a step and
a sequence model of builtin ops only (`diy_lstm/serving/litert.py` says what each takes), runs both
in the LiteRT interpreter against the SavedModel (the task's `litert.py` says how), and only if they
agree writes them with `assets.extra/diy_lstm.json` (what device code needs: the characters, the
state's shape, the checks) to `--output_dir`, replacing only earlier LiteRT files of ours of the same
task. Any error is one line on stderr, with the exit code of `diy_lstm.cli.errors`; a check that
fails writes nothing (exit 1).
"""

from __future__ import annotations

import functools
import os

from absl import flags

from diy_lstm.cli import quiet

tf = quiet.import_tensorflow()

from diy_lstm.cli.errors import ModelError, UsageError  # noqa: E402
from diy_lstm.serving import litert  # noqa: E402
from diy_lstm.serving.export import LoadError, load_model, read_metadata  # noqa: E402
from tasks.counter import litert as counter_litert  # noqa: E402
from tasks.text import litert as text_litert  # noqa: E402

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Directory of a SavedModel written by train.py or train_text.py.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where the LiteRT files go; default: litert beside --model_dir.")
_QUANTIZE = flags.DEFINE_bool(
    "quantize", False, "Store the weights as int8 (dynamic-range quantization); checked with the task's tolerance."
)
_SEQUENCE_BATCH = flags.DEFINE_integer(
    "sequence_batch", 1, "Sequences one call of the sequence model takes.", lower_bound=1, upper_bound=1000
)
_SEQUENCE_LENGTH = flags.DEFINE_integer(
    "sequence_length", 100, "Steps one call of the sequence model takes.", lower_bound=1, upper_bound=100_000
)
_PROMPT = flags.DEFINE_string(
    "prompt", None, "Text: the prompt the greedy check starts from; default: the vocabulary's first character."
)
MAX_SEQUENCE_STEPS = 1_000_000  # batch x length of the sequence model: its outputs and states held per call


def device_task(task: str | None, prompt: str | None) -> litert.DeviceTask:
    """The task's LiteRT parts (`ModelError` for a SavedModel of no task we know)."""
    if task == "counter":
        return litert.DeviceTask(task, counter_litert.IDS, counter_litert.device_inputs, counter_litert.check)
    if task == "text":
        check = functools.partial(_text_check, prompt=prompt)
        return litert.DeviceTask(task, text_litert.IDS, text_litert.device_inputs, check)
    raise ModelError(
        f"--model_dir={_MODEL_DIR.value} is a SavedModel of task {task!r}; LiteRT files are made "
        "for the counter and text tasks"
    )


def sequence_shape(batch: int, length: int) -> tuple[int, int]:
    """`(batch, length)` of the sequence file, once within `MAX_SEQUENCE_STEPS` (`UsageError` if not)."""
    if batch * length > MAX_SEQUENCE_STEPS:
        raise UsageError(
            f"--sequence_batch={batch} x --sequence_length={length} is {batch * length:,} steps a call; "
            f"at most {MAX_SEQUENCE_STEPS:,}"
        )
    return batch, length


def task_of(model_dir: str, loaded) -> str | None:
    """The task a SavedModel of ours was made for: as its metadata says, or (an export that does not
    say) as its signatures show."""
    config = read_metadata(model_dir).get("config")
    if isinstance(config, dict) and config.get("task"):
        return config["task"]
    if {"serving_default", "score_encoded"} <= set(loaded.signatures):
        return "counter"
    return "text" if "generate" in loaded.signatures else None


def _text_check(loaded, files, quantized, prompt):
    if prompt is None:
        prompt = text_litert.device_inputs(loaded)["characters"][0]
    return text_litert.check(loaded, files, quantized, prompt)


def main(argv: list[str]) -> int:
    if _MODEL_DIR.value is None:
        raise UsageError("--model_dir is required: the directory of a SavedModel written by train.py or train_text.py")
    model_dir = os.path.abspath(_MODEL_DIR.value)
    shape = sequence_shape(_SEQUENCE_BATCH.value, _SEQUENCE_LENGTH.value)
    output_dir = os.path.abspath(_OUTPUT_DIR.value or os.path.join(os.path.dirname(model_dir), "litert"))
    try:
        model = load_model(model_dir)
        loaded = tf.saved_model.load(model_dir)
    except LoadError as error:
        raise ModelError(str(error)) from None
    device = device_task(task_of(model_dir, loaded), _PROMPT.value)
    litert.check_output_dir(output_dir, device.name)
    written = litert.export_litert(model, loaded, output_dir, device, shape, _QUANTIZE.value, {"source": model_dir})
    weights = "int8 weights (dynamic range)" if _QUANTIZE.value else "float32"
    print(f"wrote {written.output_dir} ({weights}; builtin ops only), checked in the LiteRT interpreter:")
    for name, size in written.sizes.items():
        shape_note = "batch free" if name == litert.STEP_FILE else f"batch {shape[0]} x {shape[1]} steps"
        print(f"  {name}: {size:,} bytes, {shape_note}; ops {', '.join(written.ops[name])}")
        for check in written.checks:
            if check.file == name:
                print(f"    {check.detail}")
    return 0
