"""Every exit code the documentation promises, from the table in docs/reliability.md: each example
command runs as written there and ends with its row's code and at most one line on stderr."""

import os
import re
import shlex
import subprocess
import sys

import pytest
from conftest import QUIET_TF, ROOT

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
