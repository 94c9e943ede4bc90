"""The command lines as a careless user meets them: one line, the right exit code, the right character."""

import os
import subprocess
import sys

import pytest
import tensorflow as tf
from conftest import GENERATE, QUIET_TF, ROOT, SCORE, SMALL_COUNTER, counter_settings, run_python, train_counter
from tensorboard.backend.event_processing import event_accumulator
from test_fuzz import run_score


def closed_stdout(args, cwd=ROOT):
    """`python ARGS >&-`: the command starts with file descriptor 1 closed."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**os.environ, **QUIET_TF},
        stderr=subprocess.PIPE,
        text=True,
        timeout=300,
        preexec_fn=lambda: os.close(1),
    )


@pytest.mark.slow
def test_a_closed_standard_output_is_one_line_or_no_trouble(tmp_path, small_export):
    trained = closed_stdout(
        ["train.py", SMALL_COUNTER, "--lstm_size=2", "--epochs=1", f"--logdir={tmp_path}", "--run_name=r"]
    )
    assert trained.returncode == 0 and trained.stderr == "", trained.stderr  # progress goes nowhere, the run is whole
    assert (tmp_path / "r" / "saved_model" / "saved_model.pb").exists()
    scored = closed_stdout([SCORE, f"--model_dir={small_export}", "+-"])
    assert (
        scored.returncode == 1
        and scored.stderr == "error: standard output is closed: there is nowhere to write the result\n"
    )


@pytest.mark.slow
def test_generate_prompts_of_any_characters_and_outputs_that_fail_are_one_line(small_text_export):
    from test_fuzz import run_many

    prompts = {
        "One\x01": "error: unknown character '\\x01' (U+0001) at position 4 of --prompt",
        "One\u00a0": "error: unknown character '\\xa0' (U+00A0) at position 4 of --prompt",
        "One😀": "error: unknown character '😀' (U+1F600) at position 4 of --prompt",
    }
    cases = [[f"--model_dir={small_text_export}", f"--prompt={prompt}"] for prompt in prompts]
    for message, (code, stdout, stderr) in zip(prompts.values(), run_many("text", "generate", "command.main", cases)):
        assert (code, stdout) == (2, "") and stderr.startswith(message) and len(stderr.splitlines()) == 1, stderr
    invalid = subprocess.run(
        [sys.executable, GENERATE, f"--model_dir={small_text_export}", b"--prompt=One\xff"],
        cwd=ROOT,
        env={**os.environ, **QUIET_TF},
        capture_output=True,
    )
    assert invalid.returncode == 2 and invalid.stderr == b"error: invalid UTF-8 byte 0xFF at position 4 of --prompt\n"
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, GENERATE, f"--model_dir={small_text_export}"],
            cwd=ROOT,
            env={**os.environ, **QUIET_TF},
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
        )
    assert result.returncode == 1 and result.stderr == "error: cannot write the output: No space left on device\n"
    default = run_python([GENERATE, f"--model_dir={small_text_export}", "--num_chars=20"])
    assert (
        default.returncode == 0 and default.stderr == "" and len(default.stdout) == 21
    )  # from nothing, no newline in it


def test_the_scorer_names_characters_beyond_u_ffff_and_user_code_that_fails(small_export, tmp_path, monkeypatch):
    code, _, stderr = run_score([f"--model_dir={small_export}", "+😀-"])
    assert (
        code == 2
        and stderr == "error: unknown character '😀' (U+1F600) at position 2 of sequence 1 '+😀-'; allowed: 0 + - I\n"
    )
    (tmp_path / "refs.py").write_text(
        "not_callable = 3\ndef two(a, b):\n    return 0\ndef fails(s):\n    raise KeyError(s)\n"
    )
    (tmp_path / "raises_on_import.py").write_text("raise RuntimeError('broken module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for reference, message in (
        ("refs:not_callable", "--reference=refs:not_callable is not a function of one sequence"),
        ("refs:two", "--reference=refs:two is not a function of one sequence"),
        (
            "raises_on_import:f",
            "--reference=raises_on_import:f: importing raises_on_import raised RuntimeError: broken module",
        ),
        ("refs:fails", "--reference raised KeyError on '+-': '+-'"),
    ):
        code, stdout, stderr = run_score([f"--model_dir={small_export}", f"--reference={reference}", "+-"])
        assert (code, stdout, stderr) == (2, "", f"error: {message}\n")


def test_a_reference_that_returns_no_integer_is_one_line(small_export, tmp_path, monkeypatch):
    (tmp_path / "reference_values.py").write_text(
        "import numpy\n"
        "def none(s):\n    return None\n"
        "def half(s):\n    return 2.5\n"
        "def text(s):\n    return '2'\n"
        "def truth(s):\n    return True\n"
        "def many(s):\n    return [s] * 100\n"
        "class Lines:\n    def __repr__(self):\n        return 'a\\nb'\n"
        "def lines(s):\n    return Lines()\n"
        "def numpy_int(s):\n    return numpy.int64(len(s))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = f"--model_dir={small_export}"
    for function, shown in (
        ("none", "None (NoneType)"),
        ("half", "2.5 (float)"),
        ("text", "'2' (str)"),
        ("truth", "True (bool)"),
        ("many", "['+-', '+-', '+-', '+-', '+-', '+-', ... (list)"),
        ("lines", "a b (Lines)"),
    ):
        reference = f"--reference=reference_values:{function}"
        assert run_score([model, reference, "+-"]) == (
            2,
            "",
            f"error: {reference} returned {shown} on '+-'; it must return an integer\n",
        )
    code, stdout, stderr = run_score([model, "--reference=reference_values:numpy_int", "+-", "I"])
    assert code == 0 and stderr == ""
    assert [row.split()[3] for row in stdout.splitlines()[1:]] == ["2", "1"]  # the true values: the lengths


def test_the_scorer_notes_a_sequence_longer_than_the_model_was_checked_on(short_run):
    from tasks.counter.serving import about

    checked = about(tf.saved_model.load(short_run["export_dir"]))
    assert checked["trained_lengths"] == [6, 6]
    limit = checked["validated_exact_up_to"]
    assert limit in (0, 6)  # the training length, if every validation step was right
    code, stdout, stderr = run_score([f"--model_dir={short_run['export_dir']}", "+" * (limit + 1)])
    assert code == 0 and stderr.startswith(
        f"note: a sequence has {limit + 1:,} characters; this model was trained on lengths 6..6 and "
    )


@pytest.mark.parametrize("validated", [0, 6, 10_000])
def test_the_note_comes_for_the_first_sequence_longer_than_the_about_signature_says_and_only_then(tmp_path, validated):
    from diy_lstm.model import LSTMModel, ModelConfig
    from diy_lstm.serving.export import export
    from tasks.counter import data_generator
    from tasks.counter.serving import SequenceScorer

    model_dir = str(tmp_path / "saved_model")
    scorer = SequenceScorer(
        LSTMModel(ModelConfig(input_size=3, units=4, seed=1)), data_generator.ENCODING, (6, 20), validated
    )
    export(scorer, model_dir, scorer.signatures())
    if validated:  # nothing to say at the checked length
        code, stdout, stderr = run_score([f"--model_dir={model_dir}", "-", "+" * validated])
        assert (code, stderr) == (0, "") and len(stdout.splitlines()) == 3
    checked = (
        f"checked exact up to {validated:,}: longer answers are unchecked"
        if validated
        else "never checked exact at any length: its answers are unchecked"
    )
    code, stdout, stderr = run_score([f"--model_dir={model_dir}", "-", "I" * (validated + 1), "0" * (validated + 2)])
    assert code == 0 and len(stdout.splitlines()) == 4
    assert stderr == (
        f"note: a sequence has {validated + 2:,} characters; this model was trained on lengths 6..20 and {checked}\n"
    )


def test_the_scorer_notes_a_predicted_sum_larger_than_the_model_was_checked_at(tmp_path):
    from test_goal import hand_built_counter

    from diy_lstm.serving.export import export
    from tasks.counter import data_generator
    from tasks.counter.serving import SequenceScorer

    model_dir = str(tmp_path / "saved_model")
    scorer = SequenceScorer(
        hand_built_counter(), data_generator.ENCODING, (6, 20), 1000, validated_exact_sum=50
    )  # an exact counter, said to be checked to length 1,000 and |sum| 50
    export(scorer, model_dir, scorer.signatures())
    code, stdout, stderr = run_score([f"--model_dir={model_dir}", "+" * 50, "I" + "+" * 49])
    assert (code, stderr) == (0, "") and [row.split()[2] for row in stdout.splitlines()[1:]] == ["50", "-49"]
    code, stdout, stderr = run_score([f"--model_dir={model_dir}", "-" * 20, "I" + "+" * 60, "+" * 70])
    assert code == 0 and [row.split()[2] for row in stdout.splitlines()[1:]] == ["-20", "-60", "70"]
    assert stderr == (
        "note: a predicted sum is 70; this model was checked exact up to |sum| 50: larger answers are unchecked\n"
    )


@pytest.mark.slow
def test_a_garbage_checkpoint_index_is_exactly_one_line(tmp_path):
    first = run_python(
        ["train.py", SMALL_COUNTER, "--lstm_size=2", "--epochs=1", f"--logdir={tmp_path}", "--run_name=r"]
    )
    assert first.returncode == 0
    (tmp_path / "r" / "checkpoints" / "checkpoint").write_text("garbage{{{")
    again = run_python(
        ["train.py", SMALL_COUNTER, "--lstm_size=2", "--epochs=2", f"--logdir={tmp_path}", "--run_name=r"]
    )
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr.startswith("error: cannot restore checkpoint: ") and len(again.stderr.splitlines()) == 1


def events(directory, kind):
    accumulator = event_accumulator.EventAccumulator(directory)
    accumulator.Reload()
    return accumulator


def test_a_run_that_stops_before_its_first_checkpoint_starts_its_events_again_once(tmp_path):
    """HParams and the graph are written at step 0; a run stopped before it checkpointed (here: it
    diverged in its first epoch) and started again shows each once."""
    from test_reliability import PoisonedFromTheStart

    settings = counter_settings(str(tmp_path), "r", units=2, epochs=2, run_options={"checkpoint_every": 2})
    from diy_lstm.training import run

    with pytest.raises(run.RunError):
        run.train(settings, PoisonedFromTheStart(settings.data))
    assert train_counter(settings).outcome == run.COMPLETED
    top = [e for e in tf.compat.v1.train.summary_iterator(_only_file(tmp_path / "r")) if e.summary.value]
    assert [value.tag for e in top for value in e.summary.value].count("_hparams_/session_start_info") == 1
    graphs = [e for e in tf.compat.v1.train.summary_iterator(_only_file(tmp_path / "r" / "train")) if e.graph_def]
    assert len(graphs) == 1


def _only_file(directory):
    names = [name for name in os.listdir(directory) if ".tfevents." in name]
    assert len(names) >= 1
    return str(directory / sorted(names)[-1]) if len(names) == 1 else _merged(directory, names)


def _merged(directory, names):
    """Several event files (one per process): read as one, in order."""
    merged = directory / "merged.tfevents.check"
    with tf.io.TFRecordWriter(str(merged)) as writer:
        for name in sorted(names):
            for record in tf.data.TFRecordDataset(str(directory / name)):
                writer.write(record.numpy())
    return str(merged)
