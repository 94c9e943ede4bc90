"""The benchmark script runs end to end (`--quick`: tiny sizes; correctness only, no timing asserted)."""

import json

import pytest

from conftest import run_python


@pytest.mark.slow
def test_quick_benchmark_runs_and_ends_with_the_machine_readable_line(tmp_path):
    report = tmp_path / "bench.json"
    result = run_python(["-m", "benchmarks.bench", "--quick", "--training_run=false", "--memory=false",
                         "--variants=noxla,noise", f"--json={report}"], timeout=600)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    last = result.stdout.strip().splitlines()[-1].split()
    assert [item.split("=")[0] for item in last] == ["reference_speedup", "medium_speedup", "large_speedup"]
    assert all(float(item.split("=")[1]) > 0 for item in last)
    rows = json.loads(report.read_text())["rows"]
    assert [row["config"] for row in rows] == ["reference", "medium", "large"]
    for row in rows:
        assert set(row["train_ms"]) == {"keras", "default", "noxla", "noise"}
        assert row["floor_ms"] > 0
