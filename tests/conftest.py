"""Shared fixtures: the project root on sys.path, subprocess helpers, and one short training run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

QUIET_TF = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def run_python(args: list[str], cwd: str = ROOT, timeout: float = 300, env: dict | None = None,
               stdin: str | None = None) -> subprocess.CompletedProcess:
    """Runs `python ARGS` and returns the finished process (text stdout/stderr)."""
    full_env = {**os.environ, **QUIET_TF, **(env or {})}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, input=stdin
    )


def run_train(flags: list[str], logdir: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_python([os.path.join(ROOT, "train.py"), f"--logdir={logdir}", *flags], timeout=timeout)


@pytest.fixture(scope="session")
def short_run(tmp_path_factory):
    """A 40-epoch run (lstm_size 8): its run dir, SavedModel and printed output."""
    logdir = str(tmp_path_factory.mktemp("logs"))
    result = run_train(
        ["--lstm_size=8", "--epochs=40", "--eval_every=10", "--run_name=short", "--checkpoint_every=20"], logdir
    )
    assert result.returncode == 0, result.stderr
    run_dir = os.path.join(logdir, "short")
    return {"logdir": logdir, "run_dir": run_dir, "export_dir": os.path.join(run_dir, "saved_model"),
            "stdout": result.stdout}


_MEASURED: dict[str, float] = {}


@pytest.fixture
def measured():
    """`measured(name, value)` keeps the largest value per name; the run ends with a table of them."""

    def record(name: str, value: float) -> float:
        _MEASURED[name] = max(_MEASURED.get(name, 0.0), float(value))
        return float(value)

    return record


def pytest_terminal_summary(terminalreporter):
    if _MEASURED:
        terminalreporter.section("largest differences measured")
        for name, value in sorted(_MEASURED.items()):
            terminalreporter.write_line(f"{name:<60} {value:.3e}")
