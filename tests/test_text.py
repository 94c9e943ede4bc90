"""The character-level language model: Keras parity, numpy gradients with carried state, stateful
windows, the generate/score SavedModel, round trips that memorize, and bad input."""

import json
import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import GENERATE, QUIET_TF, ROOT, run_python

from diy_lstm import reference
from diy_lstm.keras_interop import load_from_keras
from diy_lstm.model import LSTMModel, ModelConfig
from diy_lstm.serving import litert
from diy_lstm.serving.export import METADATA_FILE
from diy_lstm.training import run
from diy_lstm.training.config import ConfigError, RunConfig, RunSettings, TrainingConfig
from tasks.text import litert as text_litert
from tasks.text import text_data
from tasks.text.presets import fit_to_text
from tasks.text.serving import TextGenerator
from tasks.text.task import TextData, TextTask


def keras_char_model(vocabulary, units, layers, seed):
    import keras

    keras.utils.set_random_seed(seed)
    lstms = [keras.layers.LSTM(units, return_sequences=True) for _ in range(layers)]
    dense = keras.layers.Dense(vocabulary)
    model = keras.Sequential([keras.Input((None, vocabulary)), *lstms, dense])
    rng = np.random.default_rng(seed)
    for variable in model.weights:  # random biases too, so every gate's column is told apart
        variable.assign(rng.normal(scale=0.4, size=variable.shape).astype(np.float32))
    return model, lstms, dense


@pytest.mark.parametrize("layers", [1, 2])
def test_keras_char_model_copied_in_gives_the_same_probabilities_and_loss(layers, measured):
    vocabulary, units = 11, 7
    keras_model, lstms, dense = keras_char_model(vocabulary, units, layers, seed=4)
    ours = LSTMModel(
        ModelConfig(
            input_size=vocabulary,
            units=units,
            num_layers=layers,
            output_size=vocabulary,
            forget_bias=0.0,
            initializer="glorot_uniform",
        )
    )
    load_from_keras(ours, lstms, dense)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, vocabulary, size=(3, 9))
    inputs = tf.one_hot(ids[:, :-1], vocabulary)
    keras_logits = keras_model(inputs).numpy()
    our_logits = ours(inputs).numpy()
    difference = np.max(np.abs(tf.nn.softmax(our_logits) - tf.nn.softmax(keras_logits)))
    assert measured(f"text: probabilities vs Keras, {layers} layer(s), max abs", difference) <= 1e-6
    import keras

    keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(ids[:, 1:], keras_logits)
    task = TextTask(TextData(corpus="fox_and_crow", validation_fraction=0.0, unroll_length=8), text="abcdefghijk" * 3)
    task.prepare(TrainingConfig(epochs=1, batch_size=3))
    task.make_variables(ours.config, replicas=1)
    our_loss = task.loss(
        lambda x, **kwargs: ours.run(x, **kwargs),
        (tf.constant(ids[:, :-1], tf.int32), tf.constant(ids[:, 1:], tf.int32), tf.constant(True)),
    )
    assert abs(float(our_loss.mean) - float(keras_loss)) <= 1e-6


def test_hand_written_bptt_with_a_carried_state_matches_numpy_float64(measured):
    """The gradient of the softmax cross-entropy over a window that starts from the state an earlier
    window left (truncated BPTT: the state is data), against numpy's BPTT written out by hand."""
    vocabulary, units, layers = 9, 6, 2
    config = ModelConfig(
        input_size=vocabulary,
        units=units,
        num_layers=layers,
        output_size=vocabulary,
        seed=3,
        initializer="glorot_uniform",
        dtype="float64",
    )
    model = LSTMModel(config)
    rng = np.random.default_rng(1)
    for variable in model.trainable_variables:  # random biases: every gate's own column matters
        if variable.name.split("/")[-1].startswith("b_"):
            variable.assign(rng.normal(scale=0.3, size=variable.shape))
    ids = rng.integers(0, vocabulary, size=(4, 2 * 7 + 1))
    one_hot = tf.one_hot(ids, vocabulary, dtype=tf.float64)
    earlier = model.run(one_hot[:, :7], keep_states=True).final_states()  # the previous window
    window, targets = one_hot[:, 7:14], ids[:, 8:15]
    with tf.GradientTape() as tape:
        output = model.run(window, training=True, initial_states=earlier)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, output.predictions))
    gradients = dict(zip([v.name for v in model.trainable_variables], tape.gradient(loss, model.trainable_variables)))

    params = reference.params_from_model(model)
    states = [(s.hidden.numpy(), s.cell.numpy()) for s in earlier]
    logits, records = reference.forward(window.numpy(), params, initial_states=states)
    expected_loss, d_logits = reference.softmax_cross_entropy(logits, targets)
    assert abs(float(loss) - expected_loss) <= 1e-12 * abs(expected_loss)
    expected = reference.backward(window.numpy(), params, records, d_logits)
    assert np.mean(np.abs(states[0][0])) > 0.01  # the state carried in is far from zero
    worst = 0.0
    for name, gradient in gradients.items():
        key = name.split(":")[0].split("/", 1)[1]  # lstm_model/layer_0/W_f:0 -> layer_0/W_f
        reference_value = expected[key]
        worst = max(worst, np.max(np.abs(gradient.numpy() - reference_value)) / np.max(np.abs(reference_value)))
    assert measured("text: BPTT with carried state vs numpy float64, relative", worst) <= 1e-8


def test_reference_softmax_cross_entropy_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    logits, targets = rng.normal(size=(2, 3, 5)), rng.integers(0, 5, size=(2, 3))
    _, gradient = reference.softmax_cross_entropy(logits, targets)
    numeric = np.zeros_like(logits)
    for index in np.ndindex(*logits.shape):
        step = np.zeros_like(logits)
        step[index] = 1e-6
        numeric[index] = (
            reference.softmax_cross_entropy(logits + step, targets)[0]
            - reference.softmax_cross_entropy(logits - step, targets)[0]
        ) / 2e-6
    np.testing.assert_allclose(gradient, numeric, atol=1e-8)


def small_task(text, batch_size=2, unroll_length=5, validation_fraction=0.0):
    data = TextData(corpus="fox_and_crow", validation_fraction=validation_fraction, unroll_length=unroll_length)
    task = TextTask(data, text)
    task.prepare(TrainingConfig(epochs=1, batch_size=batch_size))
    return task


def test_windows_carry_the_state_so_two_windows_score_as_one_long_one():
    task = small_task(text_data.FOX_AND_CROW, batch_size=2, unroll_length=5)
    model = LSTMModel(
        ModelConfig(
            input_size=len(task.vocabulary),
            units=8,
            output_size=len(task.vocabulary),
            initializer="glorot_uniform",
            seed=1,
        )
    )
    task.make_variables(model.config, replicas=1)
    run_model = lambda x, **kwargs: model.run(x, **kwargs)  # noqa: E731
    batches = list(task.training_batches(range(1)))
    assert len(batches) == task.steps_per_epoch
    assert [bool(batch[2]) for batch in batches[:2]] == [True, False]  # only the first window resets
    first = task.loss(run_model, tuple(batches[0]))
    second = task.loss(run_model, tuple(batches[1]))
    whole_inputs = tf.concat([batches[0][0], batches[1][0]], axis=1)
    whole_targets = tf.concat([batches[0][1], batches[1][1]], axis=1)
    whole = tf.nn.sparse_softmax_cross_entropy_with_logits(
        whole_targets, model(tf.one_hot(whole_inputs, len(task.vocabulary)))
    )
    np.testing.assert_allclose((float(first.mean) + float(second.mean)) / 2, float(tf.reduce_mean(whole)), rtol=1e-6)
    # Streams are consecutive pieces of the text; targets are inputs shifted by one.
    streams = task.train_streams
    assert task.vocabulary.text(streams[0]) + task.vocabulary.text(streams[1]) == text_data.FOX_AND_CROW[:148]
    np.testing.assert_array_equal(batches[0][1][:, :-1], batches[0][0][:, 1:])


def test_the_last_window_of_a_stream_may_be_shorter_and_every_character_is_read():
    assert text_data.window_bounds(10, 4) == [(0, 4), (4, 8), (8, 9)]
    assert text_data.window_bounds(5, 4) == [(0, 4)]


def train_text(tmp_path, corpus, units, epochs, unroll_length, learning_rate, batch_size=1, **run_options):
    data = TextData(corpus=corpus, validation_fraction=0.0, unroll_length=unroll_length)
    task = TextTask(data)
    size = len(task.vocabulary)
    model = ModelConfig(input_size=size, units=units, output_size=size, initializer="glorot_uniform")
    settings = RunSettings(
        TextTask.name,
        model,
        data,
        TrainingConfig(
            epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, clip_norm=5.0, jit_compile="false"
        ),
        RunConfig(
            logdir=str(tmp_path),
            run_name=corpus,
            histogram_every=0,
            image_every=0,
            eval_every=epochs,
            checkpoint_every=epochs,
            **run_options,
        ),
    )
    return run.train(settings, task), task


def greedy(model_dir, prompt, num_chars):
    generate = tf.saved_model.load(model_dir).signatures["generate"]
    return (
        generate(
            prompt=tf.constant([prompt]),
            num_chars=tf.constant(num_chars),
            temperature=tf.constant(0.0),
            seed=tf.constant(0, tf.int64),
        )["text"][0]
        .numpy()
        .decode()
    )


def bare_run(logdir, *flags, timeout=300):
    """`train_text.py FLAGS` in a subprocess (its preset supplies the rest); the run's directory."""
    result = run_python(["train_text.py", f"--logdir={logdir}", "--run_name=r", *flags], timeout=timeout)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return result, os.path.join(logdir, "r")


@pytest.fixture(scope="module")
def bare_fox(tmp_path_factory):
    return bare_run(str(tmp_path_factory.mktemp("fox")), "--corpus=fox_and_crow")


@pytest.mark.slow
def test_bare_fox_and_crow_preset_memorizes_and_writes_it_back_from_its_first_words(bare_fox):
    _, run_dir = bare_fox
    prompt = "One bright morning"
    assert (
        greedy(os.path.join(run_dir, "saved_model"), prompt, len(text_data.FOX_AND_CROW) - len(prompt))
        == text_data.FOX_AND_CROW
    )


@pytest.mark.slow
def test_the_fresh_fox_on_a_device_writes_the_fable_back_and_scores_it_as_the_savedmodel_does(bare_fox):
    """`export_litert.py` on the fresh fox model passes its own checks (the greedy continuation and
    bits per character against the SavedModel), and its step file, looped in the LiteRT interpreter
    as device code loops it, writes the rest of the fable from its first words."""
    _, run_dir = bare_fox
    prompt = "One bright morning"
    command = [os.path.join(ROOT, "export_litert.py"), f"--model_dir={run_dir}/saved_model", f"--prompt={prompt}"]
    result = run_python(command)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert f"greedy after {prompt!r}: the first 500 of 500 characters as the SavedModel writes them" in result.stdout
    with open(os.path.join(run_dir, "litert", METADATA_FILE)) as f:
        metadata = json.load(f)
    assert [c["measured"] <= c["allowed"] for c in metadata["checks"]] == [True] * 3
    with open(os.path.join(run_dir, "litert", "step.tflite"), "rb") as f:
        step = litert.LiteRTModel(f.read())
    vocabulary = text_data.Vocabulary(tuple(metadata["characters"]))
    rest = len(text_data.FOX_AND_CROW) - len(prompt)
    written = text_litert.greedy(step, vocabulary.ids(prompt), rest)
    assert prompt + "".join(vocabulary.characters[i] for i in written) == text_data.FOX_AND_CROW


@pytest.mark.slow
def test_bare_hamlet_preset_memorizes_the_soliloquy_and_writes_it_back_from_to_be_or(tmp_path):
    _, run_dir = bare_run(str(tmp_path), "--corpus=hamlet_soliloquy")
    prompt = "to be, or"
    assert (
        greedy(os.path.join(run_dir, "saved_model"), prompt, len(text_data.HAMLET_SOLILOQUY) - len(prompt))
        == text_data.HAMLET_SOLILOQUY
    )


@pytest.mark.slow
def test_explicit_flags_override_the_preset_and_the_rest_of_it_applies(tmp_path):
    _, run_dir = bare_run(str(tmp_path), "--corpus=fox_and_crow", "--epochs=3", "--lstm_size=8", "--learning_rate=0.03")
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    assert config["training"]["epochs"] == 3 and config["training"]["learning_rate"] == 0.03  # given
    assert config["model"]["units"] == 8
    assert config["training"]["batch_size"] == 1 and config["data"]["unroll_length"] == 148  # the preset's
    assert config["data"]["validation_fraction"] == 0.0


SETTINGS_OF = (  # `python -c SETTINGS_OF FLAGS` prints the settings train_text.py FLAGS would train with
    "import dataclasses, json; from absl import app; from tasks.text import train; "
    "app.run(lambda argv: print(json.dumps([dataclasses.asdict(s) for s, _ in train.settings_per_size()])))"
)


@pytest.mark.slow
@pytest.mark.parametrize("corpus", sorted(text_data.CORPORA))
def test_every_corpus_recipe_is_a_flag_file_and_runs_as_one(corpus):
    """`--corpus=NAME` and `--flagfile=experiments/NAME.flags` give the same settings, the recipe's."""
    flagfile = os.path.join(ROOT, "experiments", f"{corpus}.flags")
    settings = [
        json.loads(run_python(["-c", SETTINGS_OF, how, "--run_name=r"]).stdout)
        for how in (f"--corpus={corpus}", f"--flagfile={flagfile}")
    ]
    assert settings[0] == settings[1]
    recipe = dict(line[2:].split("=", 1) for line in open(flagfile).read().splitlines() if line.startswith("--"))
    model, data, training = (settings[0][0][part] for part in ("model", "data", "training"))
    assert (data["corpus"], str(model["units"]), str(training["epochs"])) == (
        corpus,
        recipe["lstm_size"],
        recipe["epochs"],
    )
    assert (float(training["learning_rate"]), str(data["unroll_length"])) == (
        float(recipe["learning_rate"]),
        recipe["unroll_length"],
    )


@pytest.mark.slow
def test_a_small_text_file_trains_with_streams_and_windows_that_fit_and_says_so(tmp_path):
    text_file = tmp_path / "notes.txt"
    text_file.write_text("the quick brown fox jumps over the lazy dog. " * 2)  # 90 characters
    result, run_dir = bare_run(
        str(tmp_path / "logs"), f"--text_file={text_file}", "--epochs=2", "--lstm_size=8", "--sample_every=0"
    )
    train, _ = text_data.split(text_file.read_text(), 0.1, "interleaved")
    assert f"chose 1 stream(s) and windows of {len(train) - 1}" in result.stdout, result.stdout
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    assert config["training"]["batch_size"] == 1 and config["data"]["unroll_length"] == len(train) - 1


def test_fit_to_text_changes_only_what_was_not_given():
    assert fit_to_text(100_000, 64, 100, False, False) == (64, 100, None)
    streams, window, said = fit_to_text(1_000, 64, 100, False, False)
    assert (streams, window) == (8, 100) and "chose 8 stream(s)" in said  # 1000 // 8 - 1 = 124 >= 100
    assert fit_to_text(1_000, 64, 100, True, False)[:2] == (64, 14)  # streams given: the window shrinks
    assert fit_to_text(1_000, 64, 100, True, True)[:2] == (64, 100)  # both given: left for the task to refuse


def test_interleaved_split_holds_out_every_tenth_block_and_the_tail_split_the_end():
    text = "".join(chr(0x4E00 + i) for i in range(2_000))  # every position a different character
    blocks = text_data.held_out_blocks(len(text), 0.1, block=50)
    assert [held for _, _, held in blocks] == [i % 10 == 9 for i in range(40)]
    train, validation = text_data.split(text, 0.1, "interleaved", block=50)
    assert len(train) + len(validation) == len(text) and not set(train) & set(validation)
    assert validation[:50] == text[450:500] and validation[50:100] == text[950:1000]
    assert train[:450] == text[:450] and train[450:500] == text[500:550]
    # A text too short for four held-out blocks of the asked size gets smaller blocks.
    assert len(text_data.split(text, 0.1, "interleaved", block=10_000)[1]) == 200
    assert text_data.split(text, 0.1, "tail") == (text[:1800], text[1800:])
    assert text_data.split(text, 0.0, "interleaved") == (text, "")


@pytest.fixture(scope="module")
def generator():
    """An untrained model over a small vocabulary, exported, with the numpy reference of its weights."""
    characters = tuple("abcde .")
    model = LSTMModel(
        ModelConfig(input_size=7, units=5, num_layers=2, output_size=7, seed=2, initializer="glorot_uniform")
    )
    module = TextGenerator(model, characters)
    return module, characters, model


def test_score_signature_matches_numpy_log_probabilities(generator):
    module, characters, model = generator
    texts = ["abc de.", "ba", "eeeee"]
    outputs = module.score(tf.constant(texts))
    params = reference.params_from_model(model)
    for row, text in enumerate(texts):
        ids = np.array([characters.index(c) for c in text])
        logits, _ = reference.forward(np.eye(7)[ids[None, :-1]], params)
        shifted = logits[0] - logits[0].max(axis=-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        expected = log_probs[np.arange(len(text) - 1), ids[1:]]
        got = outputs["log_probs"][row].numpy()
        np.testing.assert_allclose(got[: len(text) - 1], expected, atol=1e-5)
        assert not np.any(got[len(text) - 1 :])  # 0 past the end
        assert float(outputs["bits_per_char"][row]) == pytest.approx(-expected.mean() / math.log(2), abs=1e-5)


def test_generate_is_the_prompt_plus_greedy_or_seeded_samples(generator):
    module, characters, model = generator
    greedy = module.generate(tf.constant(["ab", "c"]), 70, 0.0, 0)["text"].numpy()  # two compiled chunks
    # Greedy by hand: feed the prompt, then each most likely character.
    params = reference.params_from_model(model)
    for row, prompt in enumerate(["ab", "c"]):
        text = prompt
        for _ in range(70):
            ids = np.array([characters.index(c) for c in text])
            logits, _ = reference.forward(np.eye(7)[ids[None]], params)
            text += characters[int(np.argmax(logits[0, -1]))]
        assert greedy[row].decode() == text
    same = [module.generate(tf.constant(["ab"]), 30, 1.0, 7)["text"][0].numpy() for _ in range(2)]
    other = module.generate(tf.constant(["ab"]), 30, 1.0, 8)["text"][0].numpy()
    assert same[0] == same[1] and same[0] != other
    assert module.generate(tf.constant(["ab"]), 0, 1.0, 7)["text"][0].numpy() == b"ab"


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sampled_characters_follow_the_softmax_at_the_temperature(generator, temperature):
    module, characters, model = generator
    rows = 4000
    text = [row.decode() for row in module.generate(tf.constant(["ab"] * rows), 70, temperature, 3)["text"].numpy()]
    logits, _ = reference.forward(np.eye(7)[[0, 1]][None], reference.params_from_model(model))
    expected = np.exp(logits[0, -1] / temperature) / np.exp(logits[0, -1] / temperature).sum()
    counted = np.array([sum(row[2] == c for row in text) for c in characters]) / rows
    np.testing.assert_allclose(counted, expected, atol=4 * np.sqrt(0.25 / rows))  # 4 standard errors
    assert len(set(text)) > rows // 2  # rows draw independently
    # Sampling goes on the same way across the compiled chunks: the first 64 characters of 70 are those of 64.
    shorter = module.generate(tf.constant(["ab"] * rows), 64, temperature, 3)["text"].numpy()
    assert [row.decode() for row in shorter] == [row[:66] for row in text]


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda m: m.generate(tf.constant(["ax"]), 3, 0.0, 0),
            r"unknown character U\+0078 at position 2 of prompt\[0\]",
        ),
        (lambda m: m.generate(tf.constant(["a\u00a0"]), 3, 0.0, 0), r"unknown character U\+00A0 at position 2"),
        (lambda m: m.score(tf.constant(["ab😀"])), r"unknown character U\+1F600 at position 3 of text\[0\]"),
        (lambda m: m.generate(tf.constant(["a"]), -1, 0.0, 0), "num_chars must be in"),
        (lambda m: m.generate(tf.constant(["a"]), 10**7, 0.0, 0), "num_chars must be in"),
        (lambda m: m.generate(tf.constant(["a"]), 3, -0.5, 0), "temperature must be a finite number >= 0"),
        (lambda m: m.generate(tf.constant(["a"]), 3, float("nan"), 0), "temperature must be a finite number >= 0"),
        (lambda m: m.score(tf.constant(["a"])), r"text\[0\] has 1 characters; at least 2"),
    ],
)
def test_bad_input_to_the_signatures_is_named(generator, call, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        call(generator[0])


@pytest.mark.slow
def test_interrupted_and_resumed_text_run_is_bit_identical(tmp_path):
    """The carried state is reset at each epoch's start, so a checkpoint at an epoch's end resumes exactly."""
    whole, _ = train_text(
        tmp_path / "whole", "fox_and_crow", units=16, epochs=4, unroll_length=20, learning_rate=0.01, batch_size=2
    )

    class Interrupting(TextTask):
        def evaluate(self, model, thorough=True, finished=None):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C during the first evaluation (epoch 2)
            return super().evaluate(model, thorough, finished)

    data = TextData(corpus="fox_and_crow", validation_fraction=0.0, unroll_length=20)
    task = Interrupting(data)
    size = len(task.vocabulary)
    model = ModelConfig(input_size=size, units=16, output_size=size, initializer="glorot_uniform")
    settings = RunSettings(
        TextTask.name,
        model,
        data,
        TrainingConfig(epochs=4, batch_size=2, learning_rate=0.01, clip_norm=5.0, jit_compile="false"),
        RunConfig(
            logdir=str(tmp_path / "parts"),
            run_name="fox_and_crow",
            histogram_every=0,
            image_every=0,
            eval_every=2,
            checkpoint_every=4,
        ),
    )
    assert run.train(settings, task).outcome == run.INTERRUPTED
    fresh_task = TextTask(data)
    resumed = run.train(settings, fresh_task)
    assert resumed.resumed_from_epoch == 2
    a = tf.train.load_checkpoint(os.path.join(whole.run_dir, "checkpoints"))
    b = tf.train.load_checkpoint(os.path.join(resumed.run_dir, "checkpoints"))
    for name in a.get_variable_to_shape_map():
        if name.startswith("model/"):
            np.testing.assert_array_equal(a.get_tensor(name), b.get_tensor(name), err_msg=name)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b""), "is empty"),
        (lambda p: p.write_bytes(b"   \n\n"), "is empty"),
        (lambda p: p.write_bytes(b"text\x00\x01\x02"), "is not text: a NUL byte at byte 5"),
        (lambda p: p.write_bytes(b"caf\xe9 au lait"), "is not UTF-8 text: byte 0xE9 at byte 4"),
    ],
)
def test_a_text_file_that_cannot_be_trained_on_is_named(tmp_path, make, message):
    path = tmp_path / "corpus.txt"
    make(path)
    with pytest.raises(text_data.TextError, match=message):
        TextData(text_file=str(path)).read()


def test_a_text_too_short_for_its_windows_is_one_clear_error():
    with pytest.raises(ConfigError, match="--unroll_length=200 is longer than a stream: 149 training characters"):
        small_task(text_data.FOX_AND_CROW, batch_size=1, unroll_length=200)
    with pytest.raises(ConfigError, match="cannot make 64 stream"):
        small_task("to be", batch_size=64)


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--text_file=/nonexistent/file.txt"], "error: --text_file=/nonexistent/file.txt: cannot read it"),
        (["--corpus=fox_and_crow", "--unroll_length=500", "--batch_size=1"], "error: --unroll_length=500 is longer"),
        (["--validation_fraction=0.9"], "error: --validation_fraction must be in [0, 0.5], got 0.9"),
        (["--corpus=nope"], "error: flag --corpus=nope: value should be one of"),
        (["--stop_at_goal"], "error: --stop_at_goal needs a goal: give --goal_bits_per_char"),
        (["--goal_bits_per_char=nan"], "error: --goal_bits_per_char must be a number >= 0 (0: no goal), got nan"),
    ],
)
def test_train_text_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, flags, message):
    result = run_python(["train_text.py", f"--logdir={tmp_path}", "--run_name=r", *flags])
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(message), result.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_generate_command_line(bare_fox):
    model_dir = os.path.join(bare_fox[1], "saved_model")
    ok = run_python([GENERATE, f"--model_dir={model_dir}", "--prompt=One bright", "--num_chars=20", "--temperature=0"])
    assert ok.returncode == 0 and ok.stderr == "" and ok.stdout == text_data.FOX_AND_CROW[:30] + "\n"
    from test_fuzz import run_many

    bad = {
        "--prompt=One Xright": "error: unknown character 'X' (U+0058) at position 5 of --prompt",
        "--temperature=-1": "error: --temperature must be a finite number >= 0, got -1.0",
        "--temperature=nan": "error: --temperature must be a finite number >= 0, got nan",
        "--num_chars=-5": "error: --num_chars must be in [0, 1,000,000], got -5",
        "--num_chars=99999999": "error: --num_chars must be in [0, 1,000,000], got 99999999",
    }
    cases = [[f"--model_dir={model_dir}", flag] for flag in bad]
    for message, (code, stdout, stderr) in zip(bad.values(), run_many("text", "generate", "command.main", cases)):
        assert (code, stdout) == (2, "") and len(stderr.splitlines()) == 1 and stderr.startswith(message), stderr


@pytest.mark.slow
def test_generate_streams_what_the_generate_signature_writes_and_stops_on_ctrl_c(bare_fox):
    model_dir = os.path.join(bare_fox[1], "saved_model")
    signature = tf.saved_model.load(model_dir).signatures["generate"]
    whole = (
        signature(
            prompt=tf.constant(["One"]),
            num_chars=tf.constant(1300),
            temperature=tf.constant(0.9),
            seed=tf.constant(11, tf.int64),
        )["text"][0]
        .numpy()
        .decode()
    )
    streamed = run_python(
        [GENERATE, f"--model_dir={model_dir}", "--prompt=One", "--num_chars=1300", "--temperature=0.9", "--seed=11"]
    )
    assert streamed.returncode == 0 and streamed.stdout == whole + "\n"  # three `more` calls, the last one short
    # A million characters: the first ones arrive long before the end; Ctrl-C or SIGTERM then stops it
    # with 130, the line it was writing ended.
    for stop in (signal.SIGINT, signal.SIGTERM):
        process = subprocess.Popen(
            [sys.executable, GENERATE, f"--model_dir={model_dir}", "--num_chars=1000000", "--temperature=1"],
            cwd=ROOT,
            env={**os.environ, **QUIET_TF},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        first = process.stdout.read(2000)
        process.send_signal(stop)
        rest, errors = process.communicate(timeout=60)
        assert len(first) == 2000 and process.returncode == 130, (stop, errors)
        assert errors.decode() == "error: interrupted\n" and len(first + rest) < 1_000_000
        assert (first + rest).endswith(b"\n"), stop


@pytest.mark.slow
def test_a_recipe_that_cannot_be_read_is_one_line_when_the_command_runs_and_nothing_at_import(tmp_path, monkeypatch):
    """No recipe is read at import (a damaged or missing one broke every text command, even `--help`);
    when the command runs, one that includes itself, or is not there, is a `ConfigError` naming it."""
    from diy_lstm.training.config import ConfigError
    from tasks.text import presets

    (tmp_path / "shakespeare.flags").write_text(f"--flagfile={tmp_path / 'shakespeare.flags'}\n--epochs=3\n")
    monkeypatch.setattr(presets, "RECIPES", tmp_path)
    with pytest.raises(
        ConfigError, match=f"^the recipe of --corpus=shakespeare, {tmp_path}/shakespeare.flags, cannot be read: "
    ):
        presets.recipe("shakespeare")
    with pytest.raises(
        ConfigError, match=f"^the recipe of --corpus=fox_and_crow, {tmp_path}/fox_and_crow.flags, is not there"
    ):
        presets.recipe("fox_and_crow")
    moved = f"import tasks.text.presets as p, pathlib; p.RECIPES = pathlib.Path({str(tmp_path / 'none')!r}); "
    imported = run_python(["-c", moved + "import tasks.text.train; print('imported')"])
    assert imported.returncode == 0 and imported.stdout.strip() == "imported", imported.stderr


@pytest.mark.slow
def test_a_peephole_run_checkpoints_exports_and_loads_its_trained_peepholes(tmp_path):
    """`--peephole` end to end on the text task: trained `p_i, p_f, p_o` in the checkpoint, the same
    values from `load_model` of the export, and the export's `score` equal to numpy float64 on them."""
    from diy_lstm.serving.export import load_model

    _, run_dir = bare_run(str(tmp_path), "--corpus=fox_and_crow", "--peephole", "--epochs=20", "--lstm_size=16")
    checkpoint = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints")))
    model = load_model(os.path.join(run_dir, "saved_model"))
    assert model.config.peephole
    for name in ("p_i", "p_f", "p_o"):
        saved = checkpoint.get_tensor(f"model/layers/0/{name}/.ATTRIBUTES/VARIABLE_VALUE")
        assert np.any(saved != 0.0), name  # trained away from their start at 0
        np.testing.assert_array_equal(getattr(model.layers[0], name).numpy(), saved)
    served = tf.saved_model.load(os.path.join(run_dir, "saved_model"))
    vocabulary = text_data.Vocabulary.of(text_data.FOX_AND_CROW)
    text = text_data.FOX_AND_CROW[:40]
    ids = vocabulary.ids(text)
    logits, _ = reference.forward(np.eye(len(vocabulary))[ids[None, :-1]], reference.params_from_model(model))
    shifted = logits[0] - logits[0].max(axis=-1, keepdims=True)
    expected = (shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True)))[np.arange(len(text) - 1), ids[1:]]
    got = served.signatures["score"](text=tf.constant([text]))["log_probs"][0].numpy()
    np.testing.assert_allclose(got[: len(text) - 1], expected, rtol=0, atol=1e-5)
