"""Every input is bounded, and a run knows what it trained on (the second hardening round).

Regular files only, up to a cap: texts, flag files, SavedModels, checkpoints. Memory estimated from
the flags before anything is allocated. A resumed run refuses data that changed under it."""

import json
import os
import warnings

import numpy as np
import pytest
import tensorflow as tf

from conftest import counter_settings
from diy_lstm import files
from diy_lstm.cli import flagfiles
from diy_lstm.cli.errors import exit_code
from diy_lstm.model import LSTMModel, ModelConfig
from diy_lstm.serving.export import METADATA_FILE, LoadError, load_serving_signature
from diy_lstm.training import memory, run
from diy_lstm.training.checkpoints import ResumeError
from diy_lstm.training.config import ConfigError, RunConfig, RunSettings, TrainingConfig
from diy_lstm.training.summaries import drawable, gate_heatmap
from tasks.counter.task import CounterTask
from tasks.text import text_data
from tasks.text.task import TextData, TextTask


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return str(path)


def test_texts_flag_files_and_models_are_read_only_as_regular_files(tmp_path, fifo):
    """A FIFO would hang a read forever, /dev/zero grow without end: both are refused before opening."""
    for path, kind in ((fifo, r"a FIFO \(named pipe\)"), ("/dev/zero", "a device"), ("/dev/urandom", "a device"),
                       (str(tmp_path), "a directory")):
        with pytest.raises(text_data.TextError, match=f"^--text_file={path} is {kind}; only regular files are read$"):
            text_data.read_text_file(path)
        with pytest.raises(flagfiles.FlagfileError, match=f"^--flagfile={path} is {kind}"):
            flagfiles.check([f"--flagfile={path}"])
    big = tmp_path / "big.flags"
    big.write_bytes(b"#" * (flagfiles.MAX_FLAGFILE_BYTES + 1))
    with pytest.raises(flagfiles.FlagfileError, match="at most 1,000,000 are read"):
        flagfiles.check(["--flagfile", str(big)])
    nested = tmp_path / "nested.flags"
    nested.write_text(f"--epochs=3\n--flagfile={fifo}\n")
    with pytest.raises(flagfiles.FlagfileError, match="is a FIFO"):
        flagfiles.check([f"--flagfile={nested}"])
    loops = tmp_path / "loop.flags"
    loops.write_text(f"--flagfile={loops}\n")
    with pytest.raises(flagfiles.FlagfileError, match="nest more than 10 deep"):
        flagfiles.check([f"--flagfile={loops}"])
    model = tmp_path / "model"
    model.mkdir()
    os.mkfifo(model / "saved_model.pb")
    with pytest.raises(LoadError, match="saved_model.pb is a FIFO"):
        load_serving_signature(str(model), "serving_default", ["sequences"])


def test_an_empty_text_file_flag_and_a_huge_vocabulary_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="^--text_file is empty"):
        TextData(text_file="")
    many = tmp_path / "many.txt"
    many.write_text("".join(chr(0x4E00 + i) for i in range(text_data.MAX_VOCABULARY + 1)))
    with pytest.raises(text_data.TextError, match="has 10,001 distinct characters; .* at most 10,000"):
        TextTask(TextData(text_file=str(many)))


def test_memory_is_estimated_from_the_flags_and_a_run_that_cannot_fit_is_refused_before_writing(tmp_path):
    model = ModelConfig(input_size=3, units=4096, num_layers=16)
    # 16 layers of 4 x 8193 x 4096 weights, each with its gradient and two Adam moments: about 34 GB.
    assert memory.parameters(model) == 4 * (3 + 4096 + 1) * 4096 + 15 * 4 * (2 * 4096 + 1) * 4096 + 4097
    assert memory.training_bytes(model, 128, 6) > 34e9
    settings = counter_settings(str(tmp_path), "huge", units=4096, epochs=1)
    settings = RunSettings(settings.task_name, model, settings.data, settings.training, settings.run)
    with pytest.raises(memory.MemoryLimitError, match=r"needs about \d+\.\d GB of memory and this machine has .* free; "
                                                      "lower --lstm_size, --num_layers or --batch_size"):
        run.train(settings, CounterTask(settings.data))
    assert os.listdir(tmp_path) == []
    assert exit_code(memory.MemoryLimitError("x")) == 2
    with pytest.raises(memory.MemoryLimitError):
        memory.check_fits(10 * 2**30, "this", "less", available=8 * 2**30)
    memory.check_fits(1 * 2**30, "this", "less", available=8 * 2**30)


def text_settings(tmp_path, text_file, epochs):
    data = TextData(text_file=str(text_file), validation_fraction=0.0, unroll_length=10)
    task = TextTask(data)
    size = len(task.vocabulary)
    model = ModelConfig(input_size=size, units=4, output_size=size, initializer="glorot_uniform")
    training = TrainingConfig(epochs=epochs, batch_size=2, jit_compile="false")
    config = RunConfig(logdir=str(tmp_path), run_name="r", image_every=0, histogram_every=0, eval_every=epochs)
    return RunSettings(TextTask.name, model, data, training, config), task


@pytest.mark.parametrize("edit, changed", [
    (lambda text: text[::-1], "sha256"),  # the same characters, another order: the same vocabulary
    (lambda text: text.replace("a", "Z"), "vocabulary_sha256"),  # every id now means another character
])
def test_a_text_run_refuses_to_resume_on_a_text_that_changed(tmp_path, edit, changed):
    text_file = tmp_path / "my.txt"
    text_file.write_text(text_data.FOX_AND_CROW)
    assert run.train(*text_settings(tmp_path, text_file, 1)).outcome == run.COMPLETED
    before = {name: (tmp_path / "r" / name).read_bytes() for name in ("config.json", "results.json")}
    text_file.write_text(edit(text_data.FOX_AND_CROW))
    with pytest.raises(ResumeError, match=f"^{tmp_path}/r was trained on other data: .*{changed} "):
        run.train(*text_settings(tmp_path, text_file, 2))
    assert {name: (tmp_path / "r" / name).read_bytes() for name in before} == before
    assert exit_code(ResumeError("x")) == 1  # a refused resume is a failed run, as documented


def test_the_data_fingerprint_is_recorded_in_config_json(tmp_path):
    text_file = tmp_path / "my.txt"
    text_file.write_text("abcabcabc" * 10)
    settings, task = text_settings(tmp_path, text_file, 1)
    run.train(settings, task)
    recorded = json.loads((tmp_path / "r" / "config.json").read_text())["data_fingerprint"]
    import hashlib

    assert recorded == {"sha256": hashlib.sha256(b"abcabcabc" * 10).hexdigest(), "bytes": 90, "characters": 90,
                        "vocabulary": 3, "vocabulary_sha256": hashlib.sha256(b"abc").hexdigest()}


def test_gate_heat_maps_of_any_characters_warn_nothing():
    labels = "a中\x01😀¶ é"
    assert drawable(labels) == "a???¶ é"
    gates = type("G", (), {})()
    rng = np.random.default_rng(0)
    for name in ("forget_gate", "input_gate", "output_gate", "cell"):
        setattr(gates, name, rng.random((len(labels), 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PYTHONWARNINGS=error, as a user may run
        assert gate_heatmap(gates, labels, "title").shape[-1] == 4


def test_a_model_with_damaged_metadata_still_loads(small_export, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(small_export, copy)
    (copy / METADATA_FILE).write_text("{not json")
    _, signature, metadata = load_serving_signature(str(copy), "serving_default", ["sequences"])
    assert metadata == {} and signature(sequences=tf.constant(["+-"]))["lengths"].numpy().tolist() == [2]


def test_the_text_signatures_take_empty_batches_and_empty_prompts(small_text_export):
    loaded = tf.saved_model.load(small_text_export)
    generate = loaded.signatures["generate"]
    empty = generate(prompt=tf.constant([], tf.string), num_chars=tf.constant(5), temperature=tf.constant(0.0),
                     seed=tf.constant(0, tf.int64))["text"]
    assert empty.shape == (0,)
    from_nothing = generate(prompt=tf.constant(["", "One"]), num_chars=tf.constant(4), temperature=tf.constant(0.0),
                            seed=tf.constant(0, tf.int64))["text"].numpy()
    assert len(from_nothing[0].decode()) == 4 and from_nothing[1].decode().startswith("One")
    scored = loaded.signatures["score"](text=tf.constant([], tf.string))
    assert scored["bits_per_char"].shape == (0,)


@pytest.mark.slow
def test_long_texts_score_in_windows_as_one_pass_would(small_text_export):
    """The score signature reads long texts window by window with the state carried: the same
    log-probabilities as the model run over the whole text at once."""
    from tasks.text.serving import SCORE_WINDOW

    loaded = tf.saved_model.load(small_text_export)
    rng = np.random.default_rng(0)
    characters = text_data.Vocabulary.of(text_data.FOX_AND_CROW).characters
    text = "".join(rng.choice(list(characters), size=SCORE_WINDOW * 2 + 37))
    log_probs = loaded.signatures["score"](text=tf.constant([text]))["log_probs"].numpy()[0]
    model = LSTMModel(ModelConfig(input_size=len(characters), units=8, output_size=len(characters), seed=2))
    one_hot = tf.one_hot([[characters.index(c) for c in text[:-1]]], len(characters))
    whole = tf.nn.log_softmax(model(one_hot))[0].numpy()  # the exported model's weights: the same seed
    expected = whole[np.arange(len(text) - 1), [characters.index(c) for c in text[1:]]]
    np.testing.assert_allclose(log_probs, expected, atol=1e-4)
