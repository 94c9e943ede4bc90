"""How far the default counter counts right: `python train.py --lstm_size=24` for seeds 0..9, each
scored on fresh sequences far longer than any it trained on.

    python -m benchmarks.generalize                       # seeds 0..9: about 15 minutes on 2 cores
    python -m benchmarks.generalize --seeds=0,1 --sequences=20

For every seed: the whole command's wall-clock seconds and its training seconds (restarts included,
from results.json), the length it was checked exact at (its `about` signature), the per-step error
of `--sequences` fresh sequences at each of `--lengths`, uniform ("every sequence equally likely")
and varied ("each sequence its own character frequencies": long runs of one character, large sums),
scored through the SavedModel as a user scores them, and the first wrong step of `--patterns`
repeated to the longest length (`0000…`, `++-++-…`). Prints a Markdown table and writes JSON.

    python -m benchmarks.generalize --train_flags=--flagfile=experiments/reference_notebook.flags
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

from diy_lstm.cli import quiet

tf = quiet.import_tensorflow()

from absl import app, flags  # noqa: E402

from diy_lstm.serving.export import load_model  # noqa: E402
from diy_lstm.training import machine  # noqa: E402
from tasks.counter import long_check  # noqa: E402
from tasks.counter.generalization import evaluate_length, evaluate_long, evaluate_patterns  # noqa: E402
from tasks.counter.serving import about  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SEEDS = flags.DEFINE_list("seeds", [str(seed) for seed in range(10)], "Seeds of the default command.")
_LENGTHS = flags.DEFINE_list("lengths", ["6", "100", "1000", "10000"], "Lengths scored.")
_SEQUENCES = flags.DEFINE_integer("sequences", 100, "Fresh sequences per length and sampling.", lower_bound=1)
_TRAIN_FLAGS = flags.DEFINE_list("train_flags", [], "Flags added to `train.py --lstm_size=24` (default: none).")
_PATTERNS = flags.DEFINE_list(
    "patterns",
    ["0", "+", "-", "I", "I+", "I-", "+-", "++-", "--+"],
    "Patterns repeated to the longest of --lengths: the shortest one scored wrong is reported.",
)
_LONG_LENGTH = flags.DEFINE_integer(
    "long_length", 1_000_000, "Steps of the long check's cases scored (fresh draws); 0: none.", lower_bound=0
)
_OUTPUT = flags.DEFINE_string("output", "logs/generalize_bench.json", "Where the JSON goes.")
_LOGDIR = flags.DEFINE_string(
    "logdir", None, "Where the runs go (kept); default: a temporary directory, removed after."
)


def train(seed: int, logdir: str) -> tuple[float, dict]:
    """The default command for `seed`: its wall-clock seconds and its results.json."""
    started = time.perf_counter()
    finished = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "train.py"),
            "--lstm_size=24",
            f"--seed={seed}",
            f"--logdir={logdir}",
            f"--run_name=seed{seed}",
            *_TRAIN_FLAGS.value,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        raise RuntimeError(f"seed {seed}: {finished.stderr.strip()[-500:]}")
    with open(os.path.join(logdir, f"seed{seed}", "results.json")) as f:
        return seconds, json.load(f)


def score(export_dir: str) -> dict:
    loaded = tf.saved_model.load(export_dir)
    signature = loaded.signatures["serving_default"]
    errors = {
        f"{sampling} {length}": evaluate_length(
            signature, int(length), _SEQUENCES.value, 4321, 500, sampling, about(loaded)["max_padded_characters"]
        )["error_per_step"]
        for length in _LENGTHS.value
        for sampling in ("uniform", "varied")
    }
    longest = max(map(int, _LENGTHS.value))
    wrong = [
        (row["first_wrong_step"], pattern)
        for pattern, row in evaluate_patterns(signature, _PATTERNS.value, longest).items()
        if row["first_wrong_step"] is not None
    ]
    row = {"per_step_error": errors, "about": about(loaded), "shortest_run_wrong": min(wrong, default=None)}
    if _LONG_LENGTH.value:
        results = evaluate_long(load_model(export_dir), _LONG_LENGTH.value, 4321)
        steps = [sum(r.steps_by_band[b] for r in results.values()) for b in range(len(long_check.BANDS))]
        missed = [sum(r.wrong_by_band[b] for r in results.values()) for b in range(len(long_check.BANDS))]
        row["long_error_by_band"] = {band: m / n for band, n, m in zip(long_check.BANDS, steps, missed) if n}
        row["long_first_wrong"] = min(
            ((r.first_wrong_step, name) for name, r in results.items() if r.first_wrong_step), default=None
        )
    return row


def table(rows: list[dict]) -> str:
    columns = list(rows[0]["per_step_error"])
    bands = list(rows[0].get("long_error_by_band", {}))
    lines = [
        "| seed | command s | training s | restarts | checked exact up to | checked |sum| | "
        + " | ".join(columns + [f"long, |sum| {band}" for band in bands])
        + " | first wrong step of a repeated pattern | of a long case |",
        "| --- | --- | --- | --- | --- | --- | " + " | ".join("---" for _ in columns + bands) + " | --- | --- |",
    ]
    for row in rows:
        errors = [f"{100 * row['per_step_error'][c]:.2f}%" for c in columns]
        errors += [f"{100 * row['long_error_by_band'].get(band, 0.0):.4f}%" for band in bands]
        run, long = row["shortest_run_wrong"], row.get("long_first_wrong")
        runs = "none" if run is None else f"{run[0]:,} (`{run[1]}`)"
        longs = "none" if long is None else f"{long[0]:,} ({long[1]})"
        lines.append(
            f"| {row['seed']} | {row['command_seconds']:.1f} | {row['training_seconds']:.1f} | "
            f"{row['restarts']} | {row['about']['validated_exact_up_to']:,} | "
            f"{row['about'].get('validated_exact_sum', 0):,} | {' | '.join(errors)} | {runs} | {longs} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        logdir = _LOGDIR.value or scratch
        for seed in map(int, _SEEDS.value):
            seconds, results = train(seed, logdir)
            training = results["seconds"] + sum(given_up["seconds"] for given_up in results["restarts"])
            rows.append(
                {
                    "seed": seed,
                    "command_seconds": seconds,
                    "training_seconds": training,
                    "restarts": len(results["restarts"]),
                    **score(results["export_dir"]),
                }
            )
            print(f"seed {seed}: {seconds:.1f}s, {rows[-1]['per_step_error']}", flush=True)
    report = {
        "date": datetime.date.today().isoformat(),
        "machine": machine.describe(),
        "command": "python train.py --lstm_size=24 " + " ".join(_TRAIN_FLAGS.value),
        "rows": rows,
    }
    os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
    with open(_OUTPUT.value, "w") as f:
        json.dump(report, f, indent=2)
    print(f"# {report['date']}  {machine.describe()}\n{table(rows)}")


if __name__ == "__main__":
    app.run(main)
