"""The benchmark script runs end to end (`--quick`: tiny sizes; correctness only, no timing asserted)."""

import json

import pytest
from conftest import run_python


@pytest.mark.slow
def test_quick_benchmark_runs_and_ends_with_the_machine_readable_line(tmp_path):
    report = tmp_path / "bench.json"
    configs = ["default", "reference"]  # the default command's shape, and one short enough for Keras's unrolled LSTM
    args = ["-m", "benchmarks.bench", "--quick", "--memory=false", f"--configs={','.join(configs)}", f"--json={report}"]
    result = run_python(args, timeout=600)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    last = result.stdout.strip().splitlines()[-1].split()
    assert [item.split("=")[0] for item in last] == [f"{c}_speedup" for c in configs] + [
        f"{c}_command_speedup" for c in configs
    ]
    assert all(float(item.split("=")[1]) > 0 for item in last)
    rows = json.loads(report.read_text())["rows"]
    assert [row["config"] for row in rows] == configs
    for row in rows:  # ours, and every Keras variant a user would try (unrolled only for short sequences)
        assert {"ours", "ours_command", "keras", "keras_no_cudnn", "keras_xla", "keras_no_cudnn_xla"} <= set(row["ms"])
        assert ("keras_unrolled" in row["ms"]) == (row["time"] <= 16)
        assert row["speedup"] == pytest.approx(row["ms"][row["fastest_peer"]] / row["ms"]["ours"])
        assert row["command_speedup"] == pytest.approx(row["ms"][row["fastest_peer"]] / row["ms"]["ours_command"])
        assert row["ms"][row["fastest_peer"]] == min(v for k, v in row["ms"].items() if not k.startswith("ours"))
        assert 0 < row["gflops"] < row["matmul_gflops"] * 4


@pytest.mark.slow
def test_quick_text_benchmark_runs_every_mode_and_draws_the_equal_time_plot(tmp_path):
    for mode in ("step", "generate", "equal_time"):
        result = run_python(
            [
                "-m",
                "benchmarks.text_bench",
                "--quick",
                f"--mode={mode}",
                "--seconds=3",
                "--evaluations=2",
                "--keras_learning_rates=0.005,0.01",  # two peers: enough to choose between
                f"--output={tmp_path}",
            ],
            timeout=600,
        )
        assert result.returncode == 0 and result.stderr == "", result.stderr
        report = json.loads((tmp_path / f"{mode}.json").read_text())
        assert report["machine"]["cores"] > 0
    steps = json.loads((tmp_path / "step.json").read_text())["rows"]
    assert [row["layers"] for row in steps] == [1, 2]
    assert all({"ours", "keras", "keras_xla", "keras_embedding", "keras_no_cudnn"} <= set(row["ms"]) for row in steps)
    report = json.loads((tmp_path / "equal_time.json").read_text())
    curves = report["curves"]  # ours and a peer per learning rate; the best on validation at the end chosen
    assert set(curves) == {"ours", "keras_lr=0.005", "keras_lr=0.01"}
    assert all(len(points) == 2 and {"validation_bpc", "train_bpc"} <= set(points[-1]) for points in curves.values())
    assert report["keras_best"] == min(list(curves)[1:], key=lambda name: curves[name][-1]["validation_bpc"])
    assert (tmp_path / "equal_time.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_quick_distribute_benchmark_times_every_placement_in_its_own_processes(tmp_path):
    output = tmp_path / "distribute.json"
    result = run_python(
        ["-m", "benchmarks.distribute_bench", "--quick", "--steps=2", f"--output={output}"], timeout=600
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    rows = json.loads(output.read_text())["rows"]
    assert [(row["placement"], row["replicas"]) for row in rows] == [
        ("one_process", 1),
        ("mirrored", 2),
        ("two_workers", 2),
    ]
    vocabulary, units = 76, 8  # the Shakespeare corpus; --quick's size
    expected_bytes = 4 * (4 * units * (vocabulary + units + 1) + (units + 1) * vocabulary)
    assert {row["gradient_bytes_per_step"] for row in rows} == {expected_bytes}
    assert rows[0]["speed_vs_one_process"] == 1.0


@pytest.mark.slow
def test_litert_benchmark_sizes_and_times_both_tasks_files(tmp_path, small_export):
    """A counter export and an untrained text model the script makes (`--text_sizes`)."""
    report = tmp_path / "litert.json"
    args = ["-m", "benchmarks.litert_bench", f"--model_dirs={small_export}", "--text_sizes=16x2"]
    result = run_python([*args, "--steps=3", "--repeats=1", f"--json={report}"])
    assert result.returncode == 0 and result.stderr == "", result.stderr
    rows = json.loads(report.read_text())["models"]
    assert [(row["task"], row["units"], row["layers"]) for row in rows] == [("counter", 4, 1), ("text", 16, 2)]
    for row in rows:
        assert 0 < row["step_bytes_int8"] <= row["step_bytes_float32"] < row["sequence_bytes_float32"]
        assert row["litert_step_float32"] > 0 and row["litert_step_int8"] > 0
    assert rows[0]["savedmodel_one_sequence"] > 0 and rows[1]["savedmodel_generate"] > 0
