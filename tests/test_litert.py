"""LiteRT files (diy_lstm/serving/litert.py, export_litert.py): builtin ops only, run in the LiteRT
interpreter against the numpy float64 reference; written only when they pass their checks. The
freshly trained counter and fox are converted and checked where they are trained (test_readout.py,
test_text.py)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, one_line, run_python

from diy_lstm import reference
from diy_lstm.cli.errors import UsageError
from diy_lstm.errors import BadInput
from diy_lstm.model import LSTMModel, ModelConfig
from diy_lstm.serving import litert
from diy_lstm.serving.export import METADATA_FILE, ExportDirError, LoadError, export, load_model

EXPORT_LITERT = os.path.join(ROOT, "export_litert.py")
MODELS = {
    "features, hard sigmoid, cell readout": (
        ModelConfig(3, 8, readout="cell", recurrent_activation="hard_sigmoid"),
        False,
    ),
    "ids, two layers": (ModelConfig(5, 6, num_layers=2, output_size=5, seed=3), True),
    "features, peepholes": (ModelConfig(4, 5, output_size=2, peephole=True, seed=4), False),
}


def inputs_for(config: ModelConfig, ids: bool, batch: int, time: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if ids:
        return rng.integers(0, config.input_size, size=(batch, time)).astype(np.int32)
    return rng.normal(size=(batch, time, config.input_size)).astype(np.float32)


def expected(model: LSTMModel, inputs: np.ndarray, ids: bool) -> np.ndarray:
    one_hot = np.eye(model.config.input_size)[inputs] if ids else inputs
    predictions, _ = reference.forward(
        one_hot, reference.params_from_model(model), model.config.recurrent_activation, model.config.readout
    )
    return predictions


@pytest.mark.parametrize("name", MODELS)
def test_step_and_sequence_files_are_builtin_ops_and_match_numpy_float64(name, measured):
    """The step file looped from the zero state and the sequence file run window by window (the last
    window and group padded), each in the LiteRT interpreter, against the numpy float64 reference."""
    config, ids = MODELS[name]
    model = LSTMModel(config)
    step = litert.convert(litert.step_function(model, ids), model)
    sequence = litert.convert(litert.sequence_function(model, ids, batch=2, length=7), model)
    assert "WHILE" in litert.operators(sequence) and "FULLY_CONNECTED" in litert.operators(step)
    for flatbuffer in (step, sequence):  # every op in every subgraph is builtin (upper case), no LSTM kernel
        assert all(op.isupper() for op in litert.operators(flatbuffer)), litert.operators(flatbuffer)
        assert not [op for op in litert.operators(flatbuffer) if "LSTM" in op]
    inputs = inputs_for(config, ids, batch=3, time=17)
    want = expected(model, inputs, ids)
    stepped = litert.run_steps(litert.LiteRTModel(step), inputs)
    windowed = litert.run_windows(litert.LiteRTModel(sequence), inputs)
    assert stepped.shape == windowed.shape == want.shape
    assert measured("LiteRT step vs numpy float64, abs", np.max(np.abs(stepped - want))) <= 1e-5
    assert measured("LiteRT sequence vs numpy float64, abs", np.max(np.abs(windowed - want))) <= 1e-5


def test_the_step_file_takes_any_batch_and_hands_back_the_state_it_was_given_to_carry():
    """One interpreter, batch 1 then 4, and a state carried by hand from one call to the next equal
    to the reference run from that state."""
    config = ModelConfig(3, 4, num_layers=2, seed=5)
    model = LSTMModel(config)
    step = litert.LiteRTModel(litert.convert(litert.step_function(model, False), model))
    assert step.state_shape == (2, 2, -1, 4)
    for batch in (1, 4):
        inputs = inputs_for(config, False, batch, 6, seed=batch)
        np.testing.assert_allclose(litert.run_steps(step, inputs), expected(model, inputs, False), atol=1e-5)
    inputs = inputs_for(config, False, 2, 5, seed=9)
    _, state = step(inputs[:, 0], step.zero_state(2))
    _, records = reference.forward(inputs[:, :1], reference.params_from_model(model))
    for layer, record in enumerate(records):  # [layers, (hidden, cell), batch, units]
        np.testing.assert_allclose(state[layer, 0], record["h"][:, -1], atol=1e-6)
        np.testing.assert_allclose(state[layer, 1], record["c"][:, -1], atol=1e-6)


def int8_values(flatbuffer: bytes) -> int:
    """How many int8 numbers the flatbuffer's constant tensors hold."""
    from ai_edge_litert import schema_py_generated as schema

    file = schema.Model.GetRootAsModel(flatbuffer, 0)
    graph = file.Subgraphs(0)
    tensors = [graph.Tensors(i) for i in range(graph.TensorsLength())]
    return sum(
        int(np.prod(t.ShapeAsNumpy()))
        for t in tensors
        if t.Type() == schema.TensorType.INT8 and file.Buffers(t.Buffer()).DataLength() > 0
    )


def test_quantized_files_store_the_weights_as_int8():
    """Dynamic-range quantization: the gate and readout weights (64 units, 40 characters) as int8; how
    close the outputs stay is each task's check (the command's)."""
    model = LSTMModel(ModelConfig(40, 64, output_size=40, seed=6))
    float_file = litert.convert(litert.step_function(model, True), model)
    quantized = litert.convert(litert.step_function(model, True), model, quantize=True)
    assert int8_values(float_file) == 0
    assert int8_values(quantized) >= 64 * 4 * 64 + 64 * 40  # W_h and W_out at least (W_x is a gather table)
    assert len(quantized) < 0.5 * len(float_file)


def test_a_float64_model_is_refused_in_one_line():
    model = LSTMModel(ModelConfig(3, 4, dtype="float64"))
    with pytest.raises(litert.ConversionError, match="^LiteRT files are float32; this model is float64$"):
        litert.convert(litert.step_function(model, False), model)


def _device(checks):
    return litert.DeviceTask("text", True, lambda loaded: {"characters": ["a"]}, lambda loaded, files, q: checks)


def test_files_that_fail_their_check_are_not_written_and_earlier_ones_stay_whole(tmp_path):
    model = LSTMModel(ModelConfig(5, 4, output_size=5))
    target = str(tmp_path / "litert")
    passing = [litert.Check(litert.STEP_FILE, "x", 0.0, 0.0, "fine")]
    first = litert.export_litert(model, None, target, _device(passing), (1, 3))
    assert sorted(os.listdir(target)) == ["assets.extra", "sequence.tflite", "step.tflite"]
    with open(os.path.join(target, METADATA_FILE)) as f:
        metadata = json.load(f)
    assert metadata["format"] == "diy_lstm LiteRT" and metadata["config"] == {"task": "text"}
    assert metadata["litert_files"]["step.tflite"]["bytes"] == first.sizes["step.tflite"]
    before = {name: open(os.path.join(target, name), "rb").read() for name in ("step.tflite", "sequence.tflite")}
    failing = [litert.Check(litert.SEQUENCE_FILE, "x", 1.0, 0.0, "3 steps differ")]
    with pytest.raises(litert.CheckFailed, match="^sequence.tflite: 3 steps differ; nothing was written$"):
        litert.export_litert(
            LSTMModel(ModelConfig(5, 4, output_size=5, seed=1)), None, target, _device(failing), (1, 3)
        )
    assert {name: open(os.path.join(target, name), "rb").read() for name in before} == before
    assert sorted(os.listdir(tmp_path)) == ["litert"]  # no staging left beside it
    with pytest.raises(LoadError, match="holds LiteRT files, not a SavedModel"):
        load_model(target)


def test_litert_files_and_a_savedmodel_never_replace_each_other(tmp_path, small_text_export):
    model = LSTMModel(ModelConfig(5, 4, output_size=5))
    with pytest.raises(ExportDirError, match="holds a diy_lstm SavedModel, not a diy_lstm LiteRT"):
        litert.check_output_dir(small_text_export, "text")
    litert.export_litert(model, None, str(tmp_path / "litert"), _device([]), (1, 2))
    with pytest.raises(ExportDirError, match="holds a diy_lstm LiteRT, not a diy_lstm SavedModel"):
        export(tf.Module(), str(tmp_path / "litert"), {}, task="text")


@pytest.mark.slow
def test_the_command_converts_and_checks_a_text_model_and_says_what_it_wrote(tmp_path, small_text_export):
    """An untrained text SavedModel: both files written beside it with their checks, which a rerun
    replaces; the greedy text and the bits per character are the SavedModel's."""
    output_dir = tmp_path / "on_device"
    args = [EXPORT_LITERT, f"--model_dir={small_text_export}", f"--output_dir={output_dir}", "--prompt=One"]
    result = run_python(args)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"wrote {output_dir} (float32; builtin ops only), checked in the LiteRT interpreter:"
    assert "greedy after 'One': the first 500 of 500 characters as the SavedModel writes them" in result.stdout
    with open(output_dir / METADATA_FILE) as f:
        metadata = json.load(f)
    assert metadata["inputs"] == "ids" and "".join(metadata["characters"]).startswith(" ,.CFO")
    assert {check["file"] for check in metadata["checks"]} == {"step.tflite", "sequence.tflite"}
    assert all(check["measured"] <= check["allowed"] for check in metadata["checks"])
    again = run_python([*args, "--sequence_length=20"])
    assert again.returncode == 0, again.stderr
    with open(output_dir / METADATA_FILE) as f:
        assert json.load(f)["sequence_shape"] == {"batch": 1, "length": 20}


@pytest.mark.slow
def test_the_command_refuses_bad_input_in_one_line(tmp_path, small_text_export):
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("mine")
    one_line(run_python([EXPORT_LITERT]), 2, "error: --model_dir is required")
    one_line(
        run_python([EXPORT_LITERT, f"--model_dir={small_text_export}", f"--output_dir={foreign}"]),
        2,
        f"error: --output_dir={foreign} holds files that are not a diy_lstm LiteRT",
    )
    assert os.listdir(foreign) == ["todo.txt"]


def test_what_the_command_refuses_before_converting(small_text_export):
    from tasks import on_device
    from tasks.text import litert as text_litert

    with pytest.raises(UsageError, match="^--sequence_batch=100 x --sequence_length=100000 is 10,000,000 steps"):
        on_device.sequence_shape(100, 100_000)
    assert on_device.sequence_shape(1000, 1000) == (1000, 1000)
    loaded = tf.saved_model.load(small_text_export)
    assert on_device.task_of(small_text_export, loaded) == "text"
    for prompt in ("Zzz", ""):
        with pytest.raises(BadInput, match="must be at least one character of the model's vocabulary"):
            text_litert.check(loaded, {}, False, prompt)
    with pytest.raises(LoadError, match="is not there"):
        load_model(os.path.join(os.path.dirname(small_text_export), "none"))
