"""What a careless or hostile user can do to the command lines: foreign models, broken pipes, full
disks, closed stdin, files where directories should be, leftovers of killed runs, signals."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf
from conftest import GENERATE, QUIET_TF, ROOT, SCORE, SMALL_COUNTER, counter_settings, run_python, train_counter

from diy_lstm import files


def one_line(result, code, starts):
    assert result.returncode == code, (result.returncode, result.stderr)
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(starts), result.stderr


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


@pytest.mark.slow
@pytest.mark.parametrize(
    "setup, flags, starts",
    [
        (lambda d: (d / "logs").write_text("a file"), ["--logdir={d}/logs"], "error: --logdir/--run_name "),
        (lambda d: None, ["--logdir={d}", "--run_name=" + "r" * 300], "error: [Errno 36] File name too long"),
        (
            lambda d: (d / "precious").mkdir() or (d / "precious" / "notes.txt").write_text("mine"),
            ["--logdir={d}/logs", "--export_dir={d}/precious"],
            "error: --export_dir=",
        ),
        (lambda d: None, ["--logdir={d}", "--" + "x" * 1500 + "=1"], "error: Unknown command line flag 'xxx"),
        (
            lambda d: None,
            ["--logdir={d}", "--sequence_length=20", "--max_sequences_per_length=2"],
            "error: --train_fraction=0.25 leaves 0 training",
        ),
        (
            lambda d: None,
            ["--logdir={d}", "--seed=2147483647", "--restart_epoch=5", "--epochs=10"],
            "error: --seed=2147483647 with --max_restarts=3 could restart",
        ),
    ],
)
def test_train_file_system_and_flag_trouble_is_one_line(tmp_path, setup, flags, starts):
    setup(tmp_path)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    result = run_python(
        [
            os.path.join(ROOT, "train.py"),
            SMALL_COUNTER,
            "--epochs=2",
            "--lstm_size=4",
            *[flag.format(d=tmp_path) for flag in flags],
        ]
    )
    assert result.returncode in (1, 2) and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(starts), result.stderr
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing written, nothing deleted


def dead_pid() -> int:
    """The pid of a process that has exited."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_leftovers_of_a_killed_run_are_cleaned_when_it_resumes_and_nothing_else(tmp_path):
    """TensorFlow's checkpoint staging in the run's own checkpoints/, a JSON write's temporary file and
    export staging marked by a process that is gone are removed; unmarked look-alikes (a user's
    files) are left byte for byte."""
    settings = counter_settings(str(tmp_path), "r", units=4, epochs=4)
    train_counter(settings)
    (tmp_path / "r" / "checkpoints" / "ckpt-9_temp").mkdir()
    killed_export = tmp_path / "r" / "saved_model.tmp-abc123"
    killed_export.mkdir()
    (killed_export / files.STAGING_MARKER).write_text(json.dumps({"kind": "staging", "pid": dead_pid()}))
    killed_json = tmp_path / "r" / "results.json.k3_x9a0q.tmp"  # killed inside write_json_atomically
    killed_json.write_text('{"outcome": "comp')
    look_alikes = {
        "r/results.json.mine.tmp": "mine",
        "r/saved_model.tmp-notes.txt": "mine",
        "r/saved_model.tmp-dir/a.txt": "mine too",
        "r/checkpoints/my_temp_file.txt": "keep",
        "r/checkpoints/ckpt-9_temp.txt": "keep",
    }
    for name, text in look_alikes.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    train_counter(settings)
    assert not (tmp_path / "r" / "checkpoints" / "ckpt-9_temp").exists()
    assert not killed_export.exists() and not killed_json.exists()
    assert {name: (tmp_path / name).read_text() for name in look_alikes} == look_alikes


@pytest.mark.slow
def test_sigterm_stops_at_the_end_of_the_epoch_with_a_checkpoint(tmp_path):
    process = subprocess.Popen(
        [
            sys.executable,
            os.path.join(ROOT, "train.py"),
            SMALL_COUNTER,
            f"--logdir={tmp_path}",
            "--run_name=r",
            "--lstm_size=4",
            "--epochs=100000",
            "--eval_every=1",
            "--image_every=0",
            "--histogram_every=0",
            "--jit_compile=false",
        ],
        cwd=ROOT,
        env={**os.environ, **QUIET_TF},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while not (process.stdout.readline() or "epoch").startswith("epoch"):
        pass
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and stderr == "", stderr
    stopped = int(stdout.split("interrupted after epoch ")[1].split(";")[0])
    assert tf.train.latest_checkpoint(str(tmp_path / "r" / "checkpoints")).endswith(f"ckpt-{stopped}")


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


def test_a_run_directory_that_is_a_file_is_one_error(tmp_path):
    (tmp_path / "r").write_text("not a directory")
    with pytest.raises(files.NotOursError, match="is not a directory"):
        train_counter(counter_settings(str(tmp_path), "r", units=4, epochs=2))
    assert (tmp_path / "r").read_text() == "not a directory"


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.3, 1.5])
def test_ctrl_c_during_start_up_is_one_line_and_exit_130(tmp_path, delay):
    process = subprocess.Popen(
        [
            sys.executable,
            os.path.join(ROOT, "train.py"),
            SMALL_COUNTER,
            f"--logdir={tmp_path}",
            "--run_name=r",
            "--lstm_size=4",
        ],
        cwd=ROOT,
        env={**os.environ, **QUIET_TF},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr and len(stderr.splitlines()) <= 1, stderr


@pytest.mark.parametrize(
    "error, code, line",
    [
        (OSError(28, "No space left on device"), 1, "error: [Errno 28] No space left on device"),
        (
            tf.errors.ResourceExhaustedError(None, None, "disk full while writing ckpt-100\nmore detail"),
            1,
            "error: disk full while writing ckpt-100",
        ),
        (KeyboardInterrupt(), 130, "error: interrupted"),
    ],
)
def test_a_failure_deep_in_a_run_is_one_line_with_its_exit_code(capsys, error, code, line):
    from diy_lstm.cli import main as cli

    def main(argv):
        raise error

    assert cli.guarded(main, ["train.py"]) == code
    assert capsys.readouterr().err == line + "\n"


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
