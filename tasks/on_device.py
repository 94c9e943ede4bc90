"""What `export_litert.py` needs of the tasks, without its flags (the benchmarks and tests import it):
which task a SavedModel is of, that task's LiteRT parts, and the sequence file's shape."""

from __future__ import annotations

import functools

from diy_lstm.cli.errors import ModelError, UsageError
from diy_lstm.serving import litert
from diy_lstm.serving.export import read_metadata
from tasks.counter import litert as counter_litert
from tasks.text import litert as text_litert

MAX_SEQUENCE_STEPS = 1_000_000  # batch x length of the sequence model: its outputs and states held per call


def device_task(task: str | None, prompt: str | None) -> litert.DeviceTask:
    """The task's LiteRT parts (`ModelError` for a SavedModel of no task we know)."""
    if task == "counter":
        return litert.DeviceTask(task, counter_litert.IDS, counter_litert.device_inputs, counter_litert.check)
    if task == "text":
        check = functools.partial(_text_check, prompt=prompt)
        return litert.DeviceTask(task, text_litert.IDS, text_litert.device_inputs, check)
    raise ModelError(f"the SavedModel is of task {task!r}; LiteRT files are made for the counter and text tasks")


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


def _text_check(loaded, files: dict, quantized: bool, prompt: str | None) -> list[litert.Check]:
    """The text task's check, from `--prompt` or the vocabulary's first character."""
    if prompt is None:
        prompt = text_litert.device_inputs(loaded)["characters"][0]
    return text_litert.check(loaded, files, quantized, prompt)
