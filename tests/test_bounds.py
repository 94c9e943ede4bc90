"""Every input is bounded, and a run knows what it trained on.

Regular files only, up to a cap: texts, flag files, SavedModels, checkpoints. Memory estimated from
the flags before anything is allocated. A resumed run refuses data that changed under it."""

import dataclasses
import io
import json
import os
import shutil
import tempfile
import warnings
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from conftest import counter_settings, one_line, run_python
from hypothesis import given, settings
from hypothesis import strategies as st

from diy_lstm.cli import flagfiles
from diy_lstm.cli.errors import exit_code
from diy_lstm.model import LSTMModel, ModelConfig
from diy_lstm.serving.export import METADATA_FILE, LoadError, load_serving_signature
from diy_lstm.training import memory, run
from diy_lstm.training.checkpoints import ResumeError
from diy_lstm.training.config import ConfigError, RunConfig, RunSettings, TrainingConfig
from diy_lstm.training.summaries import drawable, gate_heatmap
from tasks.counter.defaults import DEFAULT_DATA
from tasks.counter.task import CounterData, CounterTask
from tasks.text import text_data
from tasks.text.task import TextData, TextTask


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return str(path)


def absl_opens(content: bytes | None = None, arguments: list[str] = ()) -> tuple[list[str], bool]:
    """The files absl's own flag-file reading opens, past the one holding `content` (or from
    `arguments`), each recorded and read as empty; and whether absl then refused what it read."""
    from absl.flags import _flagvalues

    opened, real_open = [], open
    with tempfile.NamedTemporaryFile(suffix=".flags") as top:
        top.write(content or b"")
        top.flush()

        def recording_open(path, *args, **kwargs):
            if path == top.name:
                return real_open(path, *args, **kwargs)
            opened.append(path)
            return io.StringIO("")

        with mock.patch.object(_flagvalues, "open", recording_open, create=True):
            values = _flagvalues.FlagValues()
            try:
                if content is None:
                    values.read_flags_from_files(list(arguments))
                else:
                    values._get_flag_file_lines(top.name)
            except flags.Error:  # e.g. `--flagfile` with nothing after it
                return opened, True
    return opened, False


FLAGFILE_PIECES = [
    "--flagfile=",
    "-flagfile=",
    "--flagfile",
    "a",
    "~/b",
    " ",
    "\t",
    "\f",
    "\v",
    "\r",
    "\n",
    "\r\n",
    "#",
    "//",
    "\x1c",
    "\x85",
    "\u2028",
    "=",
    "--",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(FLAGFILE_PIECES), max_size=30))
def test_the_flag_files_a_flag_file_names_are_the_ones_absl_opens(pieces):
    content = "".join(pieces)
    opened, refused = absl_opens(content.encode("utf-8"))
    ours = flagfiles.nested_files(content)
    assert (ours[: len(opened)] if refused else ours) == opened  # where absl stops, it has opened no more


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "--flagfile",
                "-flagfile",
                "--flagfile=x ",
                "--flagfile= y\t",
                "-flagfile=~/q",
                "--flagfile=",
                "--",
                "--run_name",
                "z",
                "--flagfile=a\fb",
            ]
        ),
        max_size=8,
    )
)
def test_the_flag_files_a_command_line_names_are_the_ones_absl_opens(arguments):
    opened, refused = absl_opens(arguments=arguments)
    ours = flagfiles.named_files(arguments)
    assert (ours[: len(opened)] if refused else ours) == opened


def test_a_fifo_behind_a_form_feed_or_a_trailing_space_is_refused_not_opened(tmp_path, fifo):
    for line in (f"--flagfile={fifo}\f\n", f"--flagfile={fifo} \n", f"--flagfile= {fifo}\t"):
        outer = tmp_path / "outer.flags"
        outer.write_text(f"--epochs=3\n{line}")
        with pytest.raises(flagfiles.FlagfileError, match="is a FIFO"):
            flagfiles.check([f"--flagfile={outer}"])
    with pytest.raises(flagfiles.FlagfileError, match="is a FIFO"):
        flagfiles.check([f"--flagfile={fifo} "])


def test_texts_flag_files_and_models_are_read_only_as_regular_files(tmp_path, fifo):
    """A FIFO would hang a read forever, /dev/zero grow without end: both are refused before opening."""
    for path, kind in (
        (fifo, r"a FIFO \(named pipe\)"),
        ("/dev/zero", "a device"),
        ("/dev/urandom", "a device"),
        (str(tmp_path), "a directory"),
    ):
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


def sparse_file(path, size: int) -> None:
    """A file of `size` bytes that takes no room on disk: every cap is checked before a byte is read."""
    with open(path, "wb") as f:
        f.truncate(size)


def test_texts_saved_models_and_checkpoints_are_read_only_up_to_their_caps(tmp_path, small_export):
    big = tmp_path / "big.txt"
    sparse_file(big, 200_000_001)
    with pytest.raises(
        text_data.TextError, match=f"^--text_file={big} is 200,000,001 bytes; at most 200,000,000 are read$"
    ):
        text_data.read_text_file(str(big))
    model = tmp_path / "model"
    shutil.copytree(small_export, model)
    sparse_file(model / "variables" / "a", 2_000_000_001)
    sparse_file(model / "variables" / "b", 2_000_000_001)
    total = sum(os.path.getsize(os.path.join(parent, name)) for parent, _, names in os.walk(model) for name in names)
    with pytest.raises(LoadError, match=f"^--model_dir={model} holds {total:,} bytes; at most 4,000,000,000 are read$"):
        load_serving_signature(str(model), "serving_default", ["sequences"])


def test_a_run_reads_its_checkpoints_and_config_json_only_up_to_their_caps(tmp_path):
    settings = counter_settings(str(tmp_path), "r", units=2, epochs=1)
    assert run.train(settings, CounterTask(settings.data)).outcome == run.COMPLETED
    again = counter_settings(str(tmp_path), "r", units=2, epochs=2)
    checkpoints = tmp_path / "r" / "checkpoints"
    sparse_file(checkpoints / "big", 40_000_000_001)
    with pytest.raises(
        ResumeError,
        match=f"^cannot restore checkpoint: the checkpoints {checkpoints}: "
        f"{checkpoints}/big is 40,000,000,001 bytes; at most 40,000,000,000 "
        "are read$",
    ):
        run.train(again, CounterTask(again.data))
    (checkpoints / "big").unlink()
    config = tmp_path / "r" / "config.json"
    config.write_text(config.read_text().ljust(10_000_001))  # still JSON, one byte over
    with pytest.raises(
        ResumeError,
        match=f"^cannot read the run's config.json {config}: {config} is 10,000,001 bytes; "
        "at most 10,000,000 are read$",
    ):
        run.train(again, CounterTask(again.data))
    assert exit_code(ResumeError("x")) == 1


def test_an_empty_text_file_flag_and_a_huge_vocabulary_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="^--text_file is empty"):
        TextData(text_file="")
    many = tmp_path / "many.txt"
    many.write_text("".join(chr(0x4E00 + i) for i in range(text_data.MAX_VOCABULARY + 1)))
    with pytest.raises(text_data.TextError, match="has 10,001 distinct characters; .* at most 10,000"):
        TextTask(TextData(text_file=str(many)))


def test_memory_is_estimated_from_the_flags_and_a_run_that_cannot_fit_is_refused_before_writing(tmp_path, monkeypatch):
    monkeypatch.setenv("DIY_LSTM_AVAILABLE_MEMORY_BYTES", str(16 * 2**30))  # whatever this machine has free
    model = ModelConfig(input_size=3, units=4096, num_layers=16)
    # 16 layers of 4 x 8193 x 4096 weights, each with its gradient and two Adam moments: about 34 GB.
    assert memory.parameters(model) == 4 * (3 + 4096 + 1) * 4096 + 15 * 4 * (2 * 4096 + 1) * 4096 + 4097
    assert memory.training_bytes(model, 128, 6) > 34e9
    settings = counter_settings(str(tmp_path), "huge", units=4096, epochs=1)
    settings = RunSettings(settings.task_name, model, settings.data, settings.training, settings.run)
    with pytest.raises(
        memory.MemoryLimitError,
        match=r"needs about \d+\.\d GB of memory and this machine has 16\.0 GB "
        "free; lower --lstm_size, --num_layers or --batch_size",
    ):
        run.train(settings, CounterTask(settings.data))
    assert os.listdir(tmp_path) == []
    assert exit_code(memory.MemoryLimitError("x")) == 2
    with pytest.raises(memory.MemoryLimitError):
        memory.check_fits(10 * 2**30, "this", "less", available=8 * 2**30)
    memory.check_fits(1 * 2**30, "this", "less", available=8 * 2**30)


def test_the_histograms_gradient_over_the_training_split_is_in_the_estimate_when_it_is_drawn(tmp_path, monkeypatch):
    """The gradient the histograms draw is over the whole training split (14,746 × 20 by default): a
    backward pass of that size, 2.4 GB at 128 units (a 2-epoch run of them peaked at 4.3 GB, 3.2 GB
    above an 8-unit run's), counted only when histograms are drawn."""
    monkeypatch.setenv("DIY_LSTM_AVAILABLE_MEMORY_BYTES", str(2 * 2**30))
    settings = counter_settings(str(tmp_path), "r", units=128, run_options={"histogram_every": 10})
    settings = dataclasses.replace(settings, data=DEFAULT_DATA)
    task = CounterTask(settings.data)
    assert DEFAULT_DATA.split_sizes()[0] == 14_746
    assert memory.training_bytes(settings.model, 14_746, 20) > 2.4e9 > 0.8 * 2 * 2**30
    with pytest.raises(memory.MemoryLimitError, match=r"^the histograms' gradients over the training split"):
        run._check_memory(settings, task)
    run._check_memory(dataclasses.replace(settings, run=dataclasses.replace(settings.run, histogram_every=0)), task)


def test_a_check_larger_than_its_cap_is_refused_naming_its_flags():
    """The check holds 8 bytes a step (ids and sums, int32 and float32): at most 50,000,000 steps."""
    with pytest.raises(ConfigError) as raised:
        CounterData(check_length=100_000, check_sequences=1_000)
    assert str(raised.value) == (
        "the check would score 100,000,000 steps, more than 50,000,000; lower --check_sequences, "
        "--check_length or --long_check_length"
    )
    CounterData(check_length=10_000, check_sequences=1_000, long_check_length=2_000_000)  # 42,000,000: fits


def test_the_free_memory_figure_can_be_set_instead_of_read_from_the_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("DIY_LSTM_AVAILABLE_MEMORY_BYTES", str(3 * 2**30))
    assert memory.available_bytes() == 3 * 2**30
    with pytest.raises(memory.MemoryLimitError, match=r"this machine has 3\.0 GB free"):
        memory.check_fits(3 * 2**30, "this", "less")
    monkeypatch.setenv("DIY_LSTM_AVAILABLE_MEMORY_BYTES", "1000")  # not even a 2-unit counter fits
    settings = counter_settings(str(tmp_path), "r", units=2, epochs=1)
    with pytest.raises(
        memory.MemoryLimitError,
        match=r"^training \(lstm_size 2 x 1 layer\(s\), batches of 128 x 6 "
        r"steps\) needs .* this machine has 0\.0 GB free; lower "
        r"--lstm_size, --num_layers or --batch_size$",
    ):
        run.train(settings, CounterTask(settings.data))
    assert os.listdir(tmp_path) == []
    for setting in ("lots", "-5", "1.5e9", ""):
        monkeypatch.setenv("DIY_LSTM_AVAILABLE_MEMORY_BYTES", setting)
        with pytest.raises(
            memory.MemoryLimitError,
            match=f"^DIY_LSTM_AVAILABLE_MEMORY_BYTES='{setting}' must be a whole number of bytes",
        ):
            memory.available_bytes()


def text_settings(tmp_path, text_file, epochs):
    data = TextData(text_file=str(text_file), validation_fraction=0.0, unroll_length=10)
    task = TextTask(data)
    size = len(task.vocabulary)
    model = ModelConfig(input_size=size, units=4, output_size=size, initializer="glorot_uniform")
    training = TrainingConfig(epochs=epochs, batch_size=2, jit_compile="false")
    config = RunConfig(logdir=str(tmp_path), run_name="r", image_every=0, histogram_every=0, eval_every=epochs)
    return RunSettings(TextTask.name, model, data, training, config), task


@pytest.mark.parametrize(
    "edit, changed",
    [
        (lambda text: text[::-1], "sha256"),  # the same characters, another order: the same vocabulary
        pytest.param(
            lambda text: text.replace("a", "Z"),
            "vocabulary_sha256",  # every id now means another character
            marks=pytest.mark.slow,
        ),
    ],
)
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


def test_a_text_run_resumes_on_the_same_text_however_it_is_named(tmp_path):
    text_file = tmp_path / "my.txt"
    text_file.write_text(text_data.FOX_AND_CROW)
    assert run.train(*text_settings(tmp_path, text_file, 1)).outcome == run.COMPLETED
    settings, task = text_settings(tmp_path, f"{tmp_path}/./my.txt", 2)
    settings = dataclasses.replace(settings, data=dataclasses.replace(settings.data, corpus="hamlet_soliloquy"))
    resumed = run.train(settings, task)
    assert (resumed.outcome, resumed.resumed_from_epoch, resumed.completed_epochs) == (run.COMPLETED, 1, 2)


def test_the_data_fingerprint_is_recorded_in_config_json(tmp_path):
    text_file = tmp_path / "my.txt"
    text_file.write_text("abcabcabc" * 10)
    settings, task = text_settings(tmp_path, text_file, 1)
    run.train(settings, task)
    recorded = json.loads((tmp_path / "r" / "config.json").read_text())["data_fingerprint"]
    import hashlib

    assert recorded == {
        "sha256": hashlib.sha256(b"abcabcabc" * 10).hexdigest(),
        "bytes": 90,
        "characters": 90,
        "vocabulary": 3,
        "vocabulary_sha256": hashlib.sha256(b"abc").hexdigest(),
    }


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
    copy = tmp_path / "copy"
    shutil.copytree(small_export, copy)
    (copy / METADATA_FILE).write_text("{not json")
    _, signature, metadata = load_serving_signature(str(copy), "serving_default", ["sequences"])
    assert metadata == {} and signature(sequences=tf.constant(["+-"]))["lengths"].numpy().tolist() == [2]


def test_the_text_signatures_take_empty_batches_and_empty_prompts(small_text_export):
    loaded = tf.saved_model.load(small_text_export)
    generate = loaded.signatures["generate"]
    empty = generate(
        prompt=tf.constant([], tf.string),
        num_chars=tf.constant(5),
        temperature=tf.constant(0.0),
        seed=tf.constant(0, tf.int64),
    )["text"]
    assert empty.shape == (0,)
    from_nothing = generate(
        prompt=tf.constant(["", "One"]),
        num_chars=tf.constant(4),
        temperature=tf.constant(0.0),
        seed=tf.constant(0, tf.int64),
    )["text"].numpy()
    assert len(from_nothing[0].decode()) == 4 and from_nothing[1].decode().startswith("One")
    scored = loaded.signatures["score"](text=tf.constant([], tf.string))
    assert scored["bits_per_char"].shape == (0,)


def test_the_more_signature_refuses_a_state_of_another_shape(small_text_export):
    """8 units, 1 layer: the state is [1, 2, batch, 8]; a loaded signature passes any shape on."""
    from diy_lstm.cli.errors import graph_error_message

    more = tf.saved_model.load(small_text_export).signatures["more"]
    sampling = {
        "num_chars": tf.constant(2),
        "temperature": tf.constant(0.0),
        "seed": tf.constant(0, tf.int64),
        "first_step": tf.constant(0, tf.int64),
    }
    for shape, shown in (
        ([1, 2, 2, 7], "1 2 2 7"),
        ([2, 2, 2, 8], "2 2 2 8"),
        ([2, 8], "2 8"),
        ([1, 2, 2, 8, 1], "1 2 2 8 1"),
    ):
        with pytest.raises(tf.errors.InvalidArgumentError) as refused:
            more(state=tf.zeros(shape), **sampling)
        assert graph_error_message(refused.value) == (
            f"state must be [1, 2, batch, 8] (from start or more), got shape {shown}"
        )
    assert more(state=tf.zeros([1, 2, 3, 8]), **sampling)["text"].shape == (3,)


def test_every_signature_refuses_an_input_of_another_rank_in_one_line(small_text_export, small_export):
    """A loaded signature passes a tensor of any shape on: each checks every input's rank before any
    op reads it (a `[2, 2]` batch of strings is not 4 sequences, a vector is not a scalar)."""
    from diy_lstm.cli.errors import graph_error_message

    text, counter = (tf.saved_model.load(path).signatures for path in (small_text_export, small_export))
    sampling = {"num_chars": 2, "temperature": 0.0, "seed": tf.constant(0, tf.int64)}
    state = text["start"](prompt=tf.constant(["a"]))["state"]
    calls = [
        (text["generate"], {**sampling, "prompt": [["a", "b"], ["c", "d"]]}, "prompt must be a vector of strings"),
        (text["generate"], {**sampling, "prompt": "a"}, "prompt must be a vector of strings [batch], got shape "),
        (text["generate"], {**sampling, "prompt": ["a"], "num_chars": [2, 3]}, "num_chars must be a scalar"),
        (text["generate"], {**sampling, "prompt": ["a"], "temperature": [0.0]}, "temperature must be a scalar"),
        (text["start"], {"prompt": [["a"]]}, "prompt must be a vector of strings [batch], got shape 1 1"),
        (text["score"], {"text": [["ab"]]}, "text must be a vector of strings [batch], got shape 1 1"),
        (text["more"], {**sampling, "state": state, "first_step": [0, 0]}, "first_step must be a scalar"),
        (text["more"], {**sampling, "state": state, "first_step": 0, "seed": [1]}, "seed must be a scalar"),
        (counter["serving_default"], {"sequences": [["+-", "+"], ["-", "0"]]}, "sequences must be a vector"),
        (counter["score_encoded"], {"inputs": tf.zeros([2, 3])}, "inputs must be [batch, time >= 1, 3], got shape 2 3"),
    ]
    for signature, inputs, message in calls:
        dtypes = {"seed": tf.int64, "first_step": tf.int64, "temperature": tf.float32}
        tensors = {name: tf.constant(value, dtypes.get(name)) for name, value in inputs.items()}
        with pytest.raises(tf.errors.InvalidArgumentError) as refused:
            signature(**tensors)
        assert graph_error_message(refused.value).startswith(message), (inputs, refused.value.message)


@pytest.mark.slow
def test_long_texts_score_in_windows_as_one_pass_would(small_text_export):
    """The score signature reads long texts window by window with the state carried: the same
    log-probabilities as the model run over the whole text at once."""
    from diy_lstm.serving.windows import MAX_WINDOW as SCORE_WINDOW

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


SCORE_CAP = "one sequence may have at most 1,000,000"


def test_the_counter_scorer_refuses_one_sequence_over_its_cap_in_one_line(small_export, monkeypatch):
    from test_fuzz import run_score

    model = f"--model_dir={small_export}"
    too_long = "+" * 1_000_001
    assert run_score([model, "+-", too_long]) == (
        2,
        "",
        f"error: sequence 2 has more than 1,000,000 characters; {SCORE_CAP}\n",
    )
    for data, line in (
        (f"+-\n++\n{too_long}\n".encode(), 3),
        (("é" * 1_000_001 + "\n").encode(), 1),  # 2,000,002 bytes: read whole, then counted
        (b"+" * 4_000_003, 1),
    ):  # no newline: not read past 4 bytes a character
        assert run_score([model], data) == (
            2,
            "",
            f"error: line {line} has more than 1,000,000 characters; {SCORE_CAP}\n",
        )
    from tasks.counter import score

    monkeypatch.setattr(score, "MAX_SEQUENCE_CHARACTERS", 10)  # the cap itself is allowed, one more is not
    code, stdout, stderr = run_score([model], b"+" * 10 + b"\n")
    assert (code, stderr, stdout.splitlines()[1].split()[0]) == (0, "", "+" * 10)
    assert run_score([model, "+" * 10])[0] == 0
    assert run_score([model], b"+" * 11 + b"\n")[0] == run_score([model, "+" * 11])[0] == 2


def test_the_counter_signature_refuses_a_call_over_its_budget(small_export):
    """4,000,000 padded characters a call: 401 sequences padded to 10,000 are 4,010,000 (while holding
    only 10,400 characters); and for 4 units at most 125,000,000 / (64 + 48 x 4) = 488,281 sequences,
    so that one step of each fits in a window."""
    from diy_lstm.cli.errors import graph_error_message
    from tasks.counter.serving import about

    loaded = tf.saved_model.load(small_export)
    checked = about(loaded)
    assert (checked["max_padded_characters"], checked["max_sequences"]) == (4_000_000, 488_281)
    signature = loaded.signatures["serving_default"]
    for call, what in (
        (lambda: signature(sequences=tf.constant(["+"] * 400 + ["+-" * 5000])), "sequences"),
        (lambda: loaded.signatures["score_encoded"](inputs=tf.zeros([401, 10_000, 3])), "inputs"),
    ):
        with pytest.raises(tf.errors.InvalidArgumentError) as refused:
            call()
        assert graph_error_message(refused.value) == (
            f"401 {what} of up to 10000 characters are 4010000 padded characters; at most 4000000"
        )
    with pytest.raises(tf.errors.InvalidArgumentError) as refused:
        signature(sequences=tf.constant(["+"] * 488_282))
    assert graph_error_message(refused.value) == "488282 sequences; at most 488281 a call for this model"
    assert signature(sequences=tf.constant(["++-"]))["final_prediction_rounded"].shape == (1,)  # still serving


def test_a_model_exported_before_windows_is_held_to_a_whole_call_s_budget():
    from diy_lstm.serving import budget
    from tasks.counter.serving import CallBudget, call_budget

    four_units = {"model_config": {"units": 4, "num_layers": 1}}
    assert call_budget({"max_padded_characters": 4_000_000, "max_sequences": 10}, four_units) == (4_000_000, 10)
    whole = 500_000_000 // (64 + 40 * 4)  # 2,232,142: run whole, every step of it held at once
    assert budget.steps_per_call(4) == whole
    assert call_budget({"max_padded_characters": 25_000_000}, four_units) == CallBudget(whole, whole)
    assert call_budget({"max_padded_characters": 1_000}, four_units) == (1_000, 1_000)
    two_layers = 500_000_000 // (64 + 40 * 24 + 8 * 24)
    assert call_budget({}, {"model_config": {"units": 24, "num_layers": 2}}) == (two_layers, two_layers)
    assert (
        call_budget({"max_padded_characters": 10**12}, {})
        == call_budget({}, {"model_config": "?"})
        == (budget.steps_per_call(64),) * 2
    )


@pytest.mark.slow  # a scorer traced anew, and 9,000 steps run step by step for the reference
def test_sequences_scored_in_windows_get_the_predictions_of_one_pass(monkeypatch):
    """Sequences of 1 to 9,000 characters scored in windows of 1,000 steps, the state carried: every
    step's prediction is the one the whole sequence run at once gives."""
    from diy_lstm.serving import windows
    from tasks.counter import data_generator
    from tasks.counter.serving import SequenceScorer

    monkeypatch.setattr(windows, "MAX_WINDOW", 1_000)
    model = LSTMModel(ModelConfig(input_size=3, units=6, num_layers=2, seed=4))
    scorer = SequenceScorer(model, data_generator.ENCODING)
    rng = np.random.default_rng(0)
    sequences = ["".join(rng.choice(list("+-0I"), size=length)) for length in (1, 999, 1_000, 1_001, 9_000)]
    scored = scorer.score_strings(tf.constant(sequences))
    for number, sequence in enumerate(sequences):
        whole = model(tf.constant(data_generator.encode_sequence(sequence)[None], tf.float32))[0, :, 0].numpy()
        steps = scored["step_predictions"][number, : len(sequence)].numpy()
        np.testing.assert_allclose(steps, whole, rtol=1e-5, atol=1e-5)
        assert not scored["step_predictions"][number, len(sequence) :].numpy().any()


def test_the_text_score_signature_refuses_a_call_over_its_cap(small_text_export):
    from diy_lstm.cli.errors import graph_error_message

    score = tf.saved_model.load(small_text_export).signatures["score"]
    with pytest.raises(tf.errors.InvalidArgumentError) as refused:
        score(text=tf.constant(["One"] * 200 + ["the fox " * 1250]))
    assert graph_error_message(refused.value) == (
        "201 text of up to 10000 characters are 2010000 padded characters; at most 2000000"
    )
    assert score(text=tf.constant(["the fox"]))["bits_per_char"].shape == (1,)


def test_the_text_prompt_signatures_refuse_a_call_over_their_cap(small_text_export):
    """Prompts × the longest may be at most 2,000,000 characters, and prompts at most as many as one
    window takes a step of (`window_steps`: 125,000,000 bytes over what a step of them holds)."""
    from diy_lstm.cli.errors import graph_error_message
    from diy_lstm.serving import budget
    from tasks.text.serving import BYTES_PER_STEP_AND_CHARACTER

    loaded = tf.saved_model.load(small_text_export)
    sampling = {"num_chars": tf.constant(1), "temperature": tf.constant(0.0), "seed": tf.constant(0, tf.int64)}
    window_steps = budget.WINDOW_BYTES // (
        budget.bytes_per_step(8, 1, keep_states=True) + BYTES_PER_STEP_AND_CHARACTER * len(set(text_data.FOX_AND_CROW))
    )
    for name, extra in (("generate", sampling), ("start", {})):
        with pytest.raises(tf.errors.InvalidArgumentError) as refused:
            loaded.signatures[name](prompt=tf.constant(["One"] * 200 + ["the fox " * 1250]), **extra)
        assert graph_error_message(refused.value) == (
            "201 prompt of up to 10000 characters are 2010000 padded characters; at most 2000000"
        )
        with pytest.raises(tf.errors.InvalidArgumentError) as refused:
            loaded.signatures[name](prompt=tf.constant(["O"] * (window_steps + 1)), **extra)
        assert graph_error_message(refused.value) == (
            f"{window_steps + 1} prompts; at most {window_steps} a call for this model"
        )
    with pytest.raises(tf.errors.InvalidArgumentError) as refused:
        loaded.signatures["score"](text=tf.constant(["On"] * (window_steps + 1)))
    assert (
        graph_error_message(refused.value) == f"{window_steps + 1} texts; at most {window_steps} a call for this model"
    )


def test_the_sampling_signatures_refuse_more_texts_than_a_call_samples(small_text_export):
    """`generate` and `more` sample each text with a chunk of ids and one step of the model: at most
    125,000,000 bytes over 4 bytes × `GENERATE_CHUNK` and what a step holds, whatever `num_chars` is
    and however the state was made (`more` had no cap on its batch)."""
    from diy_lstm.cli.errors import graph_error_message
    from diy_lstm.serving import budget
    from tasks.text.serving import BYTES_PER_STEP_AND_CHARACTER, GENERATE_CHUNK

    loaded = tf.saved_model.load(small_text_export)
    sampling = {"num_chars": tf.constant(1), "temperature": tf.constant(0.0), "seed": tf.constant(0, tf.int64)}
    texts = budget.WINDOW_BYTES // (
        4 * GENERATE_CHUNK
        + budget.bytes_per_step(8, 1, keep_states=True)
        + BYTES_PER_STEP_AND_CHARACTER * len(set(text_data.FOX_AND_CROW))
    )
    refusal = f"{texts + 1} texts sampled; at most {texts} a call for this model"
    with pytest.raises(tf.errors.InvalidArgumentError) as refused:
        loaded.signatures["generate"](prompt=tf.constant([""] * (texts + 1)), **sampling)
    assert graph_error_message(refused.value) == refusal
    with pytest.raises(tf.errors.InvalidArgumentError) as refused:
        loaded.signatures["more"](state=tf.zeros([1, 2, texts + 1, 8]), first_step=tf.constant(0, tf.int64), **sampling)
    assert graph_error_message(refused.value) == refusal
    assert loaded.signatures["generate"](prompt=tf.constant([""] * texts), **sampling)["text"].shape == (texts,)


@pytest.mark.slow  # a scorer traced anew, and 9,000 steps run step by step for the reference
def test_prompts_run_in_windows_end_in_the_state_one_pass_gives(monkeypatch):
    """Prompts of 0 to 9,000 characters in windows of 1,000 (as a large batch would get): each ends in
    the state the whole prompt run at once gives."""
    from diy_lstm.serving import windows
    from tasks.text.serving import TextGenerator

    characters = sorted(set(text_data.FOX_AND_CROW))
    model = LSTMModel(
        ModelConfig(input_size=len(characters), units=8, output_size=len(characters), seed=3, num_layers=2)
    )
    monkeypatch.setattr(windows, "MAX_WINDOW", 1_000)
    generator = TextGenerator(model, characters)
    prompts = [(text_data.FOX_AND_CROW * 20)[:length] for length in (0, 1, 999, 1_000, 1_001, 9_000)]
    state = generator.start(tf.constant(prompts))["state"].numpy()  # [layers, 2, batch, units]
    index = {character: i for i, character in enumerate(characters)}
    for number, prompt in enumerate(prompts):
        if not prompt:
            assert not state[:, :, number].any()
            continue
        whole = model.run(tf.constant([[index[c] for c in prompt]]), keep_states=True)
        expected = np.stack([[layer.hidden[-1, 0], layer.cell[-1, 0]] for layer in whole.layers])
        np.testing.assert_allclose(state[:, :, number], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_generate_refuses_a_prompt_over_its_cap_in_one_line(small_text_export):
    """A prompt this long cannot come through a command line's arguments (Linux takes at most 128 KB
    an argument), so it goes through the command's own parsing and main in one process."""
    from test_fuzz import run_many

    results = run_many(
        "text", "generate", "command.main", [[f"--model_dir={small_text_export}", "--prompt=" + "x" * 1_000_001]]
    )
    assert results == [(2, "", "error: --prompt has 1,000,001 characters; at most 1,000,000\n")]


def test_stdin_is_read_in_chunks_bounded_by_characters_as_well_as_lines():
    from tasks.counter.score import read_chunks

    lines = [b"+" * length for length in (10, 10, 4, 30, 1, 1, 1, 50)]
    chunks = list(read_chunks(io.BytesIO(b"\n".join(lines) + b"\n"), size=3, characters=20))
    assert [[len(line) for line in chunk] for chunk in chunks] == [[10, 10], [4, 30], [1, 1, 1], [50]]
    held = [sum(map(len, chunk)) for chunk in chunks]
    assert all(total - len(chunk[-1]) < 20 for total, chunk in zip(held, chunks))  # under the cap but its last line


@pytest.mark.slow
def test_evaluate_refuses_work_that_cannot_fit_before_starting(tmp_path, small_export):
    result = run_python(["evaluate.py", f"--model_dir={small_export}", "--sequences=1000000", "--lengths=100000"])
    one_line(result, 2, "error: --sequences=1000000 of length 100000 would hold 100,000,000,000 characters")
    (tmp_path / "file").write_text("x")
    for where in (tmp_path / "file", tmp_path / "file" / "under" / "it"):  # refused before the evaluation
        one_line(
            run_python(["evaluate.py", f"--model_dir={small_export}", f"--tensorboard_dir={where}"]),
            2,
            f"error: --tensorboard_dir={where}: {tmp_path / 'file'} is a file, not a directory",
        )
