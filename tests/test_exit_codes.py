"""Every exit code the documentation promises, from the table in docs/reliability.md: each example
command runs as written there and ends with its row's code and at most one line on stderr."""

import dataclasses
import os
import re
import shlex
import subprocess
import sys

import pytest
import tensorflow as tf
from conftest import QUIET_TF, ROOT, counter_settings, train_counter

from diy_lstm import files
from diy_lstm.training import run

DOC = os.path.join(ROOT, "docs", "reliability.md")
MEMORY = {"DIY_LSTM_AVAILABLE_MEMORY_BYTES": str(16 * 2**30)}  # the free memory the examples see, on any machine


def documented_examples() -> list[tuple[int, str]]:
    """`(code, command)` of each row of the "Exit codes" table whose example is a command."""
    text = open(DOC, encoding="utf-8").read()
    table = text[text.index("## Exit codes") :].split("\n\n## ")[0]
    rows = re.findall(r"^\| (\d+) \| [^|]+ \| `(python [^`]+)` \|$", table, flags=re.M)
    return [(int(code), command) for code, command in rows]


def test_the_table_documents_every_code_of_the_error_table():
    from diy_lstm.cli import errors

    documented = {code for code, _ in documented_examples()}
    assert documented == set(errors.EXIT_CODES.values()) | {errors.EXIT_OK}
    assert len(documented_examples()) >= 10


@pytest.mark.slow
def test_every_documented_example_exits_with_its_code(tmp_path, small_export, small_text_export):
    logs, not_ours = tmp_path / "logs", tmp_path / "mine"
    not_ours.mkdir()
    (not_ours / "notes.txt").write_text("mine")
    (logs / "damaged").mkdir(parents=True)
    (logs / "damaged" / ".diy_lstm-run").write_text('{"kind": "run", "task": "counter"}')
    (logs / "damaged" / "config.json").write_text("{cut sho")
    for code, command in documented_examples():
        for placeholder, value in (
            ("TEXT_MODEL", small_text_export),
            ("NOT_OURS", not_ours),
            ("MODEL", small_export),
            ("LOGS", logs),
        ):
            command = command.replace(placeholder, str(value))
        words = shlex.split(command)
        stdout = None
        if words[-1] == ">/dev/full":
            words, stdout = words[:-1], open("/dev/full", "w")
        result = subprocess.run(
            [sys.executable, *words[1:]],
            cwd=ROOT,
            env={**os.environ, **QUIET_TF, **MEMORY},
            stdout=stdout or subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
        assert result.returncode == code, (command, result.stderr)
        assert len(result.stderr.splitlines()) == (code != 0), (command, result.stderr)
    assert (not_ours / "notes.txt").read_text() == "mine" and os.listdir(not_ours) == ["notes.txt"]
    assert (logs / "damaged" / "config.json").read_text() == "{cut sho"


@pytest.mark.slow
def test_a_size_whose_directory_is_not_ours_stops_every_size_before_any_trains(tmp_path):
    """`--lstm_size=2,3` with `<run>/lstm_size_3` a user's directory: exit 2 and nothing written,
    not size 2 trained and then exit 2."""
    from conftest import run_train

    (tmp_path / "r" / "lstm_size_3").mkdir(parents=True)
    (tmp_path / "r" / "lstm_size_3" / "notes.txt").write_text("mine")
    result = run_train(["--lstm_size=2,3", "--run_name=r", "--epochs=1"], str(tmp_path))
    assert result.returncode == 2 and "lstm_size_3 is not empty and is not a diy_lstm run" in result.stderr
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["lstm_size_3"]


def test_a_file_put_into_the_export_during_training_fails_the_run_at_the_swap_keeping_its_checkpoint(tmp_path):
    """A foreign file found at the swap, after training wrote its checkpoints: a `RunError` (exit 1)
    that says the trained model is kept, not exit 2's "nothing written"; the next run exports."""

    from diy_lstm.cli.errors import EXIT_FAILED, exit_code
    from diy_lstm.training.results import RunError
    from tasks.counter.task import CounterData, CounterTask

    settings = counter_settings(str(tmp_path), "r", units=2, epochs=2, data=CounterData(min_length=2, max_length=2))
    export_dir = tmp_path / "r" / "saved_model"

    class PutsANoteInTheExport(CounterTask):
        def evaluate(self, model, thorough=True, finished=None):
            if export_dir.is_dir():
                (export_dir / "NOTES.txt").write_text("mine")
            return super().evaluate(model, thorough, finished)

    train_counter(settings)
    settings = dataclasses.replace(settings, training=dataclasses.replace(settings.training, epochs=3))
    with pytest.raises(RunError) as raised:
        run.train(settings, PutsANoteInTheExport(settings.data))
    assert exit_code(raised.value) == EXIT_FAILED
    assert str(raised.value).startswith("training finished, but the export was refused: --export_dir=")
    assert str(raised.value).endswith(
        f"the trained model is kept in {tmp_path / 'r' / 'checkpoints' / 'ckpt-3'}: rerun the same command to export"
    )
    assert (export_dir / "NOTES.txt").read_text() == "mine"


def test_every_error_we_raise_on_purpose_is_of_one_kind_and_its_kind_decides_the_exit_code():
    """Each error class of the library and the tasks derives from exactly one of the three kinds, and
    `exit_code` gives that kind's code (a class outside them would be a bug with a traceback)."""
    import inspect

    import diy_lstm.cli.errors as cli_errors
    from diy_lstm import errors
    from diy_lstm.cli import flagfiles
    from diy_lstm.serving import export
    from diy_lstm.training import checkpoints, distribute, lock, memory, results
    from tasks.counter import data_generator
    from tasks.text import text_data

    kinds = {errors.BadInput: 2, errors.RunFailed: 1, errors.BadModel: 3}
    modules = (errors, files, flagfiles, export, checkpoints, distribute, lock, memory, results, cli_errors)
    found = {
        cls
        for module in (*modules, data_generator, text_data)
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, Exception) and cls.__module__.startswith(("diy_lstm", "tasks")) and cls not in kinds
    }
    assert len(found) >= 15
    for cls in found:
        of = [kind for kind in kinds if issubclass(cls, kind)]
        assert len(of) == 1, cls
        assert cli_errors.exit_code(cls("x")) == kinds[of[0]], cls


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
