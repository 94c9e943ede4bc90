"""A model as LiteRT (TensorFlow Lite) flatbuffers of builtin ops only, and the interpreter that runs them.

On a device the loop over time is the caller's: it feeds a step (or a window of steps) and carries the
state from one call to the next. Two files, each one signature (`serving_default`):

    step:      inputs  float32 [batch, input_size], or ids int32 [batch] (one-hot inputs)
               state   float32 [layers, 2, batch, units]                 zeros to start
            -> output  float32 [batch, output_size]
               state   float32 [layers, 2, batch, units]                 after this step
    sequence:  inputs  float32 [batch, length, input_size], or ids int32 [batch, length]
               state   as above
            -> outputs float32 [batch, length, output_size]
               state   after the `length` steps

The state is `model.pack_states`'s layout: layer, (hidden, cell), batch, units. The step's batch is
free (the interpreter resizes to what it is given); the sequence's batch and length are fixed when it
is converted. The step model is the cell's equations (`cell.lstm_step`) as FULLY_CONNECTED,
LOGISTIC, TANH, MUL and ADD; the sequence model is the hand-built time loop (`rnn.scan`), whose
`tf.while_loop` becomes the builtin WHILE op. The converter lowers the loop's TensorArrays to
builtins only when their element shape is fully known, so the sequence model's batch is fixed
(TensorFlow 2.21, with a free batch: `'tf.TensorListReserve' op requires element_shape to be 1D
tensor during TF Lite transformation pass`). No op is fused into TensorFlow Lite's LSTM kernels:
the hand-built cell stays hand-built (docs/litert.md).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from diy_lstm.cli.quiet import captured_stderr
from diy_lstm.errors import BadModel, RunFailed, first_line
from diy_lstm.model import LSTMModel, pack_states, unpack_states
from diy_lstm.serving.export import LITERT_FORMAT, check_export_dir, write_directory

STEP_FILE, SEQUENCE_FILE = "step.tflite", "sequence.tflite"
SIGNATURE = "serving_default"


class ConversionError(BadModel):
    """The converter could not write a model with builtin ops only; the message is its first line."""


def _float32_config(model: LSTMModel):
    if model.dtype != tf.float32:
        raise ConversionError(f"LiteRT files are float32; this model is {model.dtype.name}")
    return model.config


def step_function(model: LSTMModel, ids: bool) -> tf.types.experimental.ConcreteFunction:
    """One step of every layer and the readout, as the step file's signature (module docstring)."""
    config = _float32_config(model)
    inputs = (
        tf.TensorSpec([None], tf.int32, name="inputs")
        if ids
        else tf.TensorSpec([None, config.input_size], tf.float32, name="inputs")
    )
    state = tf.TensorSpec([config.num_layers, 2, None, config.units], tf.float32, name="state")

    @tf.function(input_signature=[inputs, state], autograph=False)
    def step(inputs, state):
        per_layer = model.step(inputs, unpack_states(state))
        return {"output": model.readout(per_layer[-1].state), "state": pack_states([g.state for g in per_layer])}

    return step.get_concrete_function()


def sequence_function(model: LSTMModel, ids: bool, batch: int, length: int) -> tf.types.experimental.ConcreteFunction:
    """`model.run` over `length` steps of `batch` sequences from a given state, as the sequence file's
    signature (module docstring)."""
    config = _float32_config(model)
    inputs = (
        tf.TensorSpec([batch, length], tf.int32, name="inputs")
        if ids
        else tf.TensorSpec([batch, length, config.input_size], tf.float32, name="inputs")
    )
    state = tf.TensorSpec([config.num_layers, 2, batch, config.units], tf.float32, name="state")

    @tf.function(input_signature=[inputs, state], autograph=False)
    def sequence(inputs, state):
        output = model.run(inputs, initial_states=unpack_states(state), keep_states=True)
        return {"outputs": output.predictions, "state": pack_states(output.final_states())}

    return sequence.get_concrete_function()


def convert(function: tf.types.experimental.ConcreteFunction, model: LSTMModel, quantize: bool = False) -> bytes:
    """`function` as a LiteRT flatbuffer of TensorFlow Lite's builtin ops only (no Flex, no custom op);
    `quantize`: post-training dynamic-range quantization (weights stored as int8, computed in float).
    `ConversionError` with the converter's first error line if it cannot."""
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    try:
        flatbuffer = converter.convert()
    except Exception as error:  # the converter raises its own kinds, with the MLIR diagnostics
        raise ConversionError(f"the converter refused the {function.name}: {_converter_message(error)}") from None
    not_builtin = [name for name in operators(flatbuffer) if not name.isupper()]
    if not_builtin:  # (the converter was told so; this is the file's own word)
        raise ConversionError(f"the converted {function.name} holds ops that are not builtin: {not_builtin}")
    return flatbuffer


def _converter_message(error: Exception) -> str:
    """The first `error:` line of the converter's diagnostics (the rest is where it was called from)."""
    lines = [line.strip() for line in str(error).splitlines()]
    return next((line.split("error: ", 1)[1] for line in lines if "error: " in line), first_line(error))


@functools.cache
def _builtin_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as schema

    return {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}


def operators(flatbuffer: bytes) -> list[str]:
    """The names of every op in every subgraph of a LiteRT flatbuffer (a WHILE's body included), sorted:
    a builtin op by its upper-case name (`FULLY_CONNECTED`), a custom one by its own (`FlexTensorListReserve`)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    codes = [model.OperatorCodes(index) for index in range(model.OperatorCodesLength())]
    names = []
    for code in codes:
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())  # small codes live in the old field
        custom = code.CustomCode()
        names.append(custom.decode() if custom else _builtin_names()[builtin])
    used = {
        names[subgraph.Operators(index).OpcodeIndex()]
        for subgraph in (model.Subgraphs(s) for s in range(model.SubgraphsLength()))
        for index in range(subgraph.OperatorsLength())
    }
    return sorted(used)


class LiteRTModel:
    """One step or sequence flatbuffer in the LiteRT interpreter: `model(inputs, state)` in numpy.

    Args:
      flatbuffer: the file's bytes (`convert`'s result, or read from a `.tflite` file).
      num_threads: the interpreter's threads (1: what a phone's one core does).
    """

    def __init__(self, flatbuffer: bytes, num_threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_content=flatbuffer, num_threads=num_threads)
        with captured_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
            self.interpreter.allocate_tensors()
        self.runner = self.interpreter.get_signature_runner(SIGNATURE)
        details = self.runner.get_input_details()
        self.state_shape = tuple(int(n) for n in details["state"]["shape_signature"])  # -1: the free batch
        self.input_dtype = details["inputs"]["dtype"]

    def zero_state(self, batch: int) -> np.ndarray:
        """The state to start from, `[layers, 2, batch, units]` zeros."""
        layers, _, _, units = self.state_shape
        return np.zeros([layers, 2, batch, units], np.float32)

    def __call__(self, inputs: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(output or outputs, state)` after `inputs`, from `state` (module docstring for the shapes)."""
        result = self.runner(inputs=np.asarray(inputs, self.input_dtype), state=np.asarray(state, np.float32))
        return result.get("output", result.get("outputs")), result["state"]


def run_steps(step: LiteRTModel, inputs: np.ndarray) -> np.ndarray:
    """The step model looped over `inputs` `[batch, time, input_size]` (or ids `[batch, time]`) from the
    zero state, as device code loops it: every step's output, `[batch, time, output_size]`."""
    state, outputs = step.zero_state(len(inputs)), []
    for t in range(inputs.shape[1]):
        output, state = step(inputs[:, t], state)
        outputs.append(output)
    return np.stack(outputs, axis=1)


def run_windows(sequence: LiteRTModel, inputs: np.ndarray) -> np.ndarray:
    """The sequence model over `inputs` (as `run_steps` takes them) window after window, the state
    carried, from the zero state: `[batch, time, output_size]`. Sequences run in groups of its batch,
    the last group and window padded (inputs of 0: the padding only follows what is kept)."""
    batch, length = sequence.runner.get_input_details()["inputs"]["shape"][:2]
    count, time = inputs.shape[:2]
    padded = np.zeros((-(-count // batch) * batch, -(-time // length) * length, *inputs.shape[2:]), inputs.dtype)
    padded[:count, :time] = inputs
    groups = []
    for first in range(0, len(padded), batch):
        state, windows = sequence.zero_state(batch), []
        for start in range(0, padded.shape[1], length):
            outputs, state = sequence(padded[first : first + batch, start : start + length], state)
            windows.append(outputs)
        groups.append(np.concatenate(windows, axis=1))
    return np.concatenate(groups)[:count, :time]


@dataclasses.dataclass(frozen=True)
class Check:
    """One comparison of a LiteRT file with the SavedModel it came from: `measured` against `allowed`
    (None: reported, not required), `detail` saying what was compared."""

    file: str
    what: str
    measured: float
    allowed: float | None
    detail: str

    @property
    def passed(self) -> bool:
        return self.allowed is None or self.measured <= self.allowed


@dataclasses.dataclass(frozen=True)
class DeviceTask:
    """What a task says of its LiteRT files: whether they take ids, what device code needs to feed
    them (`device_inputs(loaded)`, JSON), and `check(loaded, files, quantized)` against the SavedModel."""

    name: str
    ids: bool
    device_inputs: Callable[[Any], dict]
    check: Callable[[Any, dict[str, "LiteRTModel"], bool], list[Check]]


@dataclasses.dataclass(frozen=True)
class Written:
    """What `export_litert` wrote: the directory, each file's bytes and ops, and the checks it passed."""

    output_dir: str
    sizes: dict[str, int]
    ops: dict[str, list[str]]
    checks: list[Check]


class CheckFailed(RunFailed):
    """A LiteRT file does not give its SavedModel's answers; nothing was written."""


OUTPUT_FLAG = "--output_dir"


def check_output_dir(output_dir: str, task: str) -> None:
    """Raises `ExportDirError` unless `export_litert` may write `output_dir` (new, empty, or LiteRT files
    of ours of `task`): checked before the slow part."""
    check_export_dir(output_dir, task=task, kind=LITERT_FORMAT, flag=OUTPUT_FLAG)


def export_litert(
    model: LSTMModel,
    loaded: Any,
    output_dir: str,
    device: DeviceTask,
    sequence_shape: tuple[int, int],
    quantize: bool = False,
    metadata: dict | None = None,
) -> Written:
    """Converts `model` (whose SavedModel is `loaded`) to the step and sequence files (`sequence_shape`:
    batch, length), checks them in the interpreter (`device.check`), and only if every check passes
    writes them to `output_dir` with `metadata` (replacing earlier LiteRT files of ours, as `export`
    replaces an export); the files on disk are then read back and must be the bytes checked."""
    flatbuffers = {
        STEP_FILE: convert(step_function(model, device.ids), model, quantize),
        SEQUENCE_FILE: convert(sequence_function(model, device.ids, *sequence_shape), model, quantize),
    }
    checks = device.check(loaded, {name: LiteRTModel(flat) for name, flat in flatbuffers.items()}, quantize)
    if failed := [check for check in checks if not check.passed]:
        raise CheckFailed(f"{failed[0].file}: {failed[0].detail}; nothing was written")
    ops = {name: operators(flat) for name, flat in flatbuffers.items()}
    batch, length = sequence_shape
    about = {
        "config": {"task": device.name},
        "model_config": dataclasses.asdict(model.config),
        "weights": "int8, dynamic range" if quantize else "float32",
        "inputs": "ids" if device.ids else "features",
        **device.device_inputs(loaded),
        "sequence_shape": {"batch": batch, "length": length},
        "litert_files": {
            name: {"bytes": len(flat), "sha256": hashlib.sha256(flat).hexdigest(), "ops": ops[name]}
            for name, flat in flatbuffers.items()
        },
        "checks": [dataclasses.asdict(check) for check in checks],
        **(metadata or {}),
    }

    def write(staging: str) -> None:
        for name, flat in flatbuffers.items():
            with open(os.path.join(staging, name), "wb") as f:
                f.write(flat)

    write_directory(output_dir, write, about, device.name, LITERT_FORMAT, OUTPUT_FLAG)
    for name, flat in flatbuffers.items():  # what is on disk is what was checked
        with open(os.path.join(output_dir, name), "rb") as f:
            if hashlib.sha256(f.read()).digest() != hashlib.sha256(flat).digest():
                raise RunFailed(f"{os.path.join(output_dir, name)} is not the file that was checked")
    return Written(os.path.abspath(output_dir), {n: len(f) for n, f in flatbuffers.items()}, ops, checks)
