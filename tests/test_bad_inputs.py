"""Bad input and output: each is one line naming what is wrong, with its exit code, never a traceback
(a foreign or damaged model, a bad character, a bad flag, a closed or full output, a reference that
fails); and long inputs that must not fail."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import tensorflow as tf
from conftest import GENERATE, QUIET_TF, ROOT, SCORE, SMALL_COUNTER, one_line, run_python
from test_fuzz import run_score

from diy_lstm import files
from tasks.counter import data_generator as dg


def test_wrong_dtype_to_the_tensor_signature_names_the_dtype(small_export):
    signature = tf.saved_model.load(small_export).signatures["score_encoded"]
    with pytest.raises(
        (TypeError, ValueError, tf.errors.InvalidArgumentError),
        match="expected to be a float tensor but is a int32 tensor",
    ):
        signature(inputs=tf.zeros([1, 4, 3], dtype=tf.int32))


def test_wrong_rank_to_the_tensor_signature_is_refused(small_export):
    signature = tf.saved_model.load(small_export).signatures["score_encoded"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"inputs must be \[batch, time >= 1, 3\]"):
        signature(inputs=tf.zeros([4, 3]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"got shape\] \[2 0 3\]"):
        signature(inputs=tf.zeros([2, 0, 3]))


@pytest.mark.slow
def test_corrupt_saved_model_is_one_line_and_exit_3(small_export, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(small_export, broken)
    (broken / "saved_model.pb").write_bytes(b"\x00garbage")
    result = run_python([SCORE, f"--model_dir={broken}", "++"])
    assert result.returncode == 3 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: --model_dir={broken}: cannot load the SavedModel")


@pytest.mark.slow
def test_directory_without_saved_model(tmp_path):
    result = run_python([SCORE, f"--model_dir={tmp_path}", "++"])
    assert result.returncode == 3 and "no saved_model.pb there" in result.stderr


@pytest.mark.slow
def test_missing_model_dir_flag():
    result = run_python([SCORE, "++"])
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: --model_dir is required: the directory of a SavedModel written by train.py"
    ]


@pytest.mark.slow
def test_a_model_never_chooses_code_to_run(small_export, tmp_path):
    """Metadata naming a Python function (here one that would delete ./0) is data: the scorer calls
    only what the user names with --reference."""
    hostile = tmp_path / "hostile"
    shutil.copytree(small_export, hostile)
    (hostile / "assets.extra" / "diy_lstm.json").write_text(json.dumps({"reference_function": "shutil:rmtree"}))
    victim = tmp_path / "work"
    (victim / "0").mkdir(parents=True)
    result = run_python([SCORE, f"--model_dir={hostile}", "0"], cwd=str(victim))
    assert result.returncode == 0, result.stderr
    assert (victim / "0").is_dir()
    assert result.stdout.splitlines()[0].split() == ["sequence", "prediction", "rounded"]  # no true values


@pytest.mark.slow
def test_long_sequence_scores_in_bounded_memory(small_export):
    """100,000 characters: the loop keeps only h and c per step, so memory grows by megabytes."""
    script = f"""
import resource, sys, json, numpy as np, tensorflow as tf
m = tf.saved_model.load({small_export!r})
f = m.signatures["serving_default"]
rng = np.random.default_rng(0)
def peak_mb(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
f(sequences=tf.constant(["+-I0" * 250]))
before = peak_mb()
out = f(sequences=tf.constant(["".join(rng.choice(list("+-0I"), 100_000))]))
print(json.dumps({{"grew_mb": peak_mb() - before, "length": int(out["lengths"][0]),
                   "finite": bool(np.isfinite(out["final_prediction"].numpy()).all())}}))
"""
    result = run_python(["-c", script], timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["length"] == 100_000 and report["finite"]
    assert report["grew_mb"] < 300, report  # [100000, 1, 4] floats per recorded series: a few MB


def test_bad_sequence_in_python_api_names_position():
    with pytest.raises(dg.SequenceError, match=r"'\\x07' \(U\+0007\) at position 3"):
        dg.encode_sequence("+-\x07")


class OtherSignature(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="words")])
    def __call__(self, words):
        return {"length": tf.strings.length(words)}


@pytest.mark.slow
def test_a_savedmodel_of_another_program_is_one_line_in_score_evaluate_and_generate(tmp_path, small_export):
    plain = tmp_path / "plain"
    tf.saved_model.save(tf.Module(), str(plain))
    other = tmp_path / "other"
    module = OtherSignature()
    tf.saved_model.save(module, str(other), signatures={"serving_default": module.__call__.get_concrete_function()})
    from test_fuzz import run_score

    for model_dir, line in (
        (plain, f"error: --model_dir={plain}: this SavedModel has no 'serving_default' signature"),
        (other, f"error: --model_dir={other}: its 'serving_default' signature takes ['words'], not ['sequences']"),
    ):
        code, stdout, stderr = run_score([f"--model_dir={model_dir}", "++"])  # score.py, in this process
        assert (code, stdout) == (3, "") and len(stderr.splitlines()) == 1 and stderr.startswith(line), stderr
    one_line(
        run_python(["evaluate.py", f"--model_dir={other}", "--lengths=6", "--sequences=5"]),
        3,
        f"error: --model_dir={other}: its 'serving_default' signature takes ['words']",
    )
    one_line(
        run_python([GENERATE, f"--model_dir={small_export}"]),
        3,
        f"error: --model_dir={small_export}: this SavedModel has no 'generate' signature",
    )
    metadata = tmp_path / "list_metadata"
    shutil.copytree(small_export, metadata)
    (metadata / "assets.extra" / "diy_lstm.json").write_text("[1, 2]")
    assert run_score([f"--model_dir={metadata}", "++"])[0] == 0


@pytest.mark.slow
def test_score_output_trouble_and_a_closed_stdin(small_export):
    many = "\n".join(["+-I0"] * 50_000) + "\n"
    head = subprocess.run(
        f"{sys.executable} {SCORE} --model_dir={small_export} | head -1",
        shell=True,
        input=many,
        capture_output=True,
        text=True,
        env={**os.environ, **QUIET_TF},
        cwd=ROOT,
    )
    assert head.stdout.split() == ["sequence", "prediction", "rounded"] and head.stderr == "", head.stderr
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, SCORE, f"--model_dir={small_export}", "++"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **QUIET_TF},
            cwd=ROOT,
        )
    assert result.returncode == 1 and result.stderr == "error: cannot write the output: No space left on device\n"
    closed = subprocess.run(
        [sys.executable, SCORE, f"--model_dir={small_export}"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**os.environ, **QUIET_TF},
        cwd=ROOT,
    )
    assert closed.returncode == 0 and closed.stdout.split() == ["sequence", "prediction", "rounded"]
    dashes = subprocess.run(
        [sys.executable, SCORE, f"--model_dir={small_export}", "-+" * 800],
        capture_output=True,
        text=True,
        env={**os.environ, **QUIET_TF},
        cwd=ROOT,
    )
    assert dashes.returncode == 0 and dashes.stdout.splitlines()[1].startswith("-+-+")  # a sequence, not a flag
    argv_bytes = subprocess.run(
        [sys.executable, SCORE, f"--model_dir={small_export}".encode(), b"+\xff-"],
        capture_output=True,
        env={**os.environ, **QUIET_TF},
        cwd=ROOT,
    )
    assert argv_bytes.returncode == 2
    assert argv_bytes.stderr == b"error: invalid UTF-8 byte 0xFF at position 2 of sequence 1\n"


def test_a_flag_too_long_for_absl_s_suggestions_is_named_not_a_neighbour():
    """absl recurses once per character when it suggests a flag; where the stack runs out first
    (it depends on the interpreter's build), the one line must still name the unknown flag."""
    from absl import flags

    from diy_lstm.cli import main as cli
    from tasks.counter import train  # noqa: F401  (defines the flags)

    line = cli.unknown_flag(["--epochs=2", "--lstm_size=4", "--" + "x" * 1500 + "=1"])
    assert line == f"Unknown command line flag '{'x' * 60}... (1500 characters)'"
    assert cli.unknown_flag(["--epochs=2", "--nope=1"]) == "Unknown command line flag 'nope'"
    assert "epochs" in flags.FLAGS


def test_an_in_graph_message_reads_as_it_was_written_not_escaped(small_text_export):
    from diy_lstm.cli.errors import graph_error_message

    start = tf.saved_model.load(small_text_export).signatures["start"]
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        start(prompt=tf.constant(["oe~"]))
    assert graph_error_message(raised.value) == (
        "unknown character '~' (U+007E) at position 3 of prompt[0]; it is not in the model's vocabulary"
    )


def test_a_tensorflow_error_is_its_own_words_without_the_graph_function_or_op_it_came_from(tmp_path):
    from diy_lstm.errors import first_line

    (tmp_path / "file").write_text("x")
    with pytest.raises(tf.errors.OpError) as raised:
        tf.summary.create_file_writer(str(tmp_path / "file" / "run"))
    assert "{{function_node" in raised.value.message and "[Op:" in raised.value.message  # what TensorFlow says
    assert first_line(raised.value) == f"{tmp_path / 'file'} is not a directory"
    assert files.unwritable_because(str(tmp_path / "file" / "run")) == f"{tmp_path / 'file'} is a file, not a directory"
    assert files.unwritable_because(str(tmp_path / "new" / "run")) is None


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
