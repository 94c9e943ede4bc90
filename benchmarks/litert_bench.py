"""LiteRT files against their SavedModel: sizes, and the time of one step at batch 1 (docs/litert.md).

    python -m benchmarks.litert_bench --model_dirs=logs/COUNTER/saved_model,logs/TEXT/saved_model \\
        [--text_sizes=256x1,512x2]

For each export, the step and sequence files are made as `export_litert.py` makes them (float32 and
with dynamic-range quantization), and timed in this process, one after another:
  - the LiteRT interpreter (one thread) running the step file at batch 1, `--steps` calls in a row
    (set the inputs, invoke, read the outputs: what device code does per character);
  - the SavedModel on the same work: a text model's `generate` writing `--steps` characters at
    temperature 0 in one call, per character; a counter's `serving_default` on one sequence of
    `--steps` characters, per character, and on one character per call (a stream scored as it comes).
Each figure is the median of `--repeats` runs after one untimed run. Prints one row per figure and,
last, one JSON line (`--json` also writes it to a file).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time

import numpy as np
from absl import app, flags, logging

from diy_lstm.cli import quiet

tf = quiet.import_tensorflow()

from diy_lstm.serving import litert  # noqa: E402
from diy_lstm.serving.export import load_model  # noqa: E402
from diy_lstm.training import machine  # noqa: E402
from tasks.on_device import task_of  # noqa: E402

_MODEL_DIRS = flags.DEFINE_list("model_dirs", [], "SavedModels of ours (counter or text) to measure.")
_STEPS = flags.DEFINE_integer("steps", 2000, "Steps (characters) a timed run takes.", lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs of each; the median is reported.", lower_bound=1)
_TEXT_SIZES = flags.DEFINE_list(
    "text_sizes", [], "Also untrained text models of these sizes, UNITSxLAYERS (65 characters, as Shakespeare's)."
)
_JSON = flags.DEFINE_string("json", None, "Also write the JSON line to this file.")


def median_seconds(run, repeats: int) -> float:
    run()  # untimed: traces, allocates, warms caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def interpreter_step_seconds(flatbuffer: bytes, ids: bool, input_size: int, steps: int, repeats: int) -> float:
    """Seconds per step of the step file at batch 1 in the LiteRT interpreter (one thread)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
    by_rank = {len(d["shape_signature"]): d["index"] for d in interpreter.get_input_details()}
    inputs, state_in = by_rank[1 if ids else 2], by_rank[4]  # ids [batch] or [batch, features]; state rank 4
    state_out = next(d["index"] for d in interpreter.get_output_details() if len(d["shape_signature"]) == 4)
    zero_state = np.zeros(
        [1 if n == -1 else n for n in interpreter.get_tensor_details()[state_in]["shape_signature"]], np.float32
    )
    interpreter.resize_tensor_input(inputs, [1] if ids else [1, input_size])
    interpreter.resize_tensor_input(state_in, list(zero_state.shape))
    with quiet.captured_stderr():  # the XNNPACK delegate's line
        interpreter.allocate_tensors()
    x = np.zeros([1], np.int32) if ids else np.zeros([1, input_size], np.float32)

    output = next(d["index"] for d in interpreter.get_output_details() if len(d["shape_signature"]) == 2)

    def run():
        state, step_inputs = zero_state, x
        for _ in range(steps):
            interpreter.set_tensor(inputs, step_inputs)
            interpreter.set_tensor(state_in, state)
            interpreter.invoke()
            state = interpreter.get_tensor(state_out)
            if ids:  # greedy: the most likely character is the next input, as `generate` at temperature 0
                step_inputs = np.argmax(interpreter.get_tensor(output), axis=-1).astype(np.int32)

    return median_seconds(run, repeats) / steps


def savedmodel_seconds(loaded, task: str, steps: int, repeats: int) -> dict[str, float]:
    """Seconds per character of the SavedModel: `generate` (text) or `serving_default` (counter)."""
    if task == "text":
        generate = loaded.signatures["generate"]
        arguments = {
            "prompt": tf.constant([""]),
            "num_chars": tf.constant(steps),
            "temperature": tf.constant(0.0),
            "seed": tf.constant(0, tf.int64),
        }
        return {"savedmodel_generate": median_seconds(lambda: generate(**arguments), repeats) / steps}
    score = loaded.signatures["serving_default"]
    sequence = tf.constant(["+-0I"[i % 4] for i in range(steps)])
    whole = tf.strings.reduce_join(sequence)[tf.newaxis]
    one = tf.constant(["+"])
    return {
        "savedmodel_one_sequence": median_seconds(lambda: score(sequences=whole), repeats) / steps,
        "savedmodel_one_character_a_call": median_seconds(lambda: [score(sequences=one) for _ in range(100)], 1) / 100,
    }


def untrained_text_export(size: str, directory: str) -> str:
    """A text SavedModel of `size` (`UNITSxLAYERS`), untrained: the time of a step does not depend on
    the weights."""
    from diy_lstm.model import LSTMModel, ModelConfig
    from diy_lstm.serving.export import export
    from tasks.text.serving import TextGenerator

    units, layers = (int(n) for n in size.split("x"))
    characters = [chr(c) for c in range(32, 32 + 65)]
    config = ModelConfig(len(characters), units, num_layers=layers, output_size=len(characters))
    generator = TextGenerator(LSTMModel(config), characters)
    path = os.path.join(directory, size)
    metadata = {"config": {"task": "text"}, "model_config": dataclasses.asdict(config)}
    return export(generator, path, generator.signatures(), metadata, task="text")


def measure(model_dir: str, steps: int, repeats: int) -> dict:
    loaded, model = tf.saved_model.load(model_dir), load_model(model_dir)
    task = task_of(model_dir, loaded)
    ids = task == "text"
    row: dict = {"model_dir": model_dir, "task": task, "units": model.config.units, "layers": model.config.num_layers}
    for quantize in (False, True):
        kind = "int8" if quantize else "float32"
        step = litert.convert(litert.step_function(model, ids), model, quantize)
        sequence = litert.convert(litert.sequence_function(model, ids, 1, 100), model, quantize)
        row[f"step_bytes_{kind}"], row[f"sequence_bytes_{kind}"] = len(step), len(sequence)
        row[f"litert_step_{kind}"] = interpreter_step_seconds(step, ids, model.config.input_size, steps, repeats)
    row.update(savedmodel_seconds(loaded, task, steps, repeats))
    return row


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.ERROR)  # the converter's own lines
    with tempfile.TemporaryDirectory() as directory:
        model_dirs = [*(_MODEL_DIRS.value or []), *(untrained_text_export(s, directory) for s in _TEXT_SIZES.value)]
        rows = [measure(model_dir, _STEPS.value, _REPEATS.value) for model_dir in model_dirs]
    for row in rows:
        print(f"{row['task']} ({row['units']} units x {row['layers']}), {row['model_dir']}:")
        for key, value in row.items():
            if key.endswith(("float32", "int8")) and "bytes" in key:
                print(f"  {key:<36} {value:>12,} bytes")
            elif isinstance(value, float):
                print(f"  {key:<36} {value * 1e6:>12.1f} us a step")
    line = json.dumps({"machine": machine.describe(), "steps": _STEPS.value, "repeats": _REPEATS.value, "models": rows})
    print(line)
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    app.run(main)
