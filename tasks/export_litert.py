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

import os

from absl import flags

from diy_lstm.cli import quiet

tf = quiet.import_tensorflow()

from diy_lstm.cli.errors import ModelError, UsageError  # noqa: E402
from diy_lstm.serving import litert  # noqa: E402
from diy_lstm.serving.export import LoadError, load_model  # noqa: E402
from tasks import on_device  # noqa: E402

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


def main(argv: list[str]) -> int:
    if _MODEL_DIR.value is None:
        raise UsageError("--model_dir is required: the directory of a SavedModel written by train.py or train_text.py")
    model_dir = os.path.abspath(_MODEL_DIR.value)
    shape = on_device.sequence_shape(_SEQUENCE_BATCH.value, _SEQUENCE_LENGTH.value)
    output_dir = os.path.abspath(_OUTPUT_DIR.value or os.path.join(os.path.dirname(model_dir), "litert"))
    try:
        model = load_model(model_dir)
        loaded = tf.saved_model.load(model_dir)
    except LoadError as error:
        raise ModelError(str(error)) from None
    device = on_device.device_task(on_device.task_of(model_dir, loaded), _PROMPT.value)
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
