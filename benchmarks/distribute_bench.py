"""Training throughput on one device, on mirrored replicas, and on two worker processes.

    python -m benchmarks.distribute_bench              # the table of docs/distribute.md
    python -m benchmarks.distribute_bench --quick      # tiny sizes: a correctness run of the script

The step is train_text.py's (the Shakespeare streams, T=100, a global batch of B=64 streams, XLA
per replica, Adam, clipping), timed for each LSTM size under three placements, each in fresh
processes (logical devices and a cluster are set before TensorFlow starts):

    one_process     --strategy=default
    mirrored        --strategy=mirrored --cpu_devices=2 (2 replicas of 32 streams, one process)
    two_workers     --strategy=multi_worker, 2 processes on loopback (1 replica of 32 streams each)

Placements are interleaved within each repeat; each measurement is the median step time of its
timed steps (after warm-up steps that trace and compile), and the table gives the median over
repeats, as characters per second and relative to one process. What crosses between replicas per
step is one all-reduce of the gradients: 4·(4H(V+H+1) + (H+1)V) bytes in float32.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from diy_lstm.cli import quiet

tf = quiet.import_tensorflow()

import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from diy_lstm.model import LSTMModel, ModelConfig  # noqa: E402
from diy_lstm.training import distribute, machine  # noqa: E402
from diy_lstm.training.config import TrainingConfig  # noqa: E402
from diy_lstm.training.optimizer import Adam  # noqa: E402
from diy_lstm.training.trainer import Trainer  # noqa: E402
from tasks.text.task import TextData, TextTask  # noqa: E402

_QUICK = flags.DEFINE_boolean("quick", False, "Tiny sizes, one repeat: checks the script, measures nothing.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Repeats of every (size, placement).", lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps per measurement (median step time).", lower_bound=1)
_UNITS = flags.DEFINE_list("units", ["64", "256", "512"], "LSTM sizes.")
_OUTPUT = flags.DEFINE_string("output", "logs/distribute_bench.json", "Where the JSON of the table goes.")
# One measurement, in this process (the driver starts these).
_MEASURE = flags.DEFINE_enum("measure", None, ["default", "mirrored", "multi_worker"], "(internal) measure one.")
_MEASURE_UNITS = flags.DEFINE_integer("measure_units", 64, "(internal) LSTM size to measure.")

PLACEMENTS = {"one_process": "default", "mirrored": "mirrored", "two_workers": "multi_worker"}
SIZES = {"time": 100, "batch": 64, "warm_up": 3}
QUICK_SIZES = {"time": 10, "batch": 4, "warm_up": 1}


def measure(strategy: str, units: int, sizes: dict, steps: int) -> dict:
    """Median seconds per training step of the text model under `strategy`, in this process."""
    place = distribute.placement(strategy, 2 if strategy == "mirrored" else 0)
    task = TextTask(TextData(corpus="shakespeare", unroll_length=sizes["time"]))
    size = len(task.vocabulary)
    config = ModelConfig(input_size=size, units=units, output_size=size, initializer="glorot_uniform")
    training = TrainingConfig(epochs=1, batch_size=sizes["batch"], learning_rate=0.002, clip_norm=5.0)
    task.prepare(training)
    with place.strategy.scope():
        model = LSTMModel(config)
        optimizer = Adam(model.trainable_variables, learning_rate=training.learning_rate)
        task.make_variables(config, place.replicas)
    trainer = Trainer(
        model,
        optimizer,
        task.loss,
        jit_compile=True,
        clip_norm=training.clip_norm,
        strategy=place.strategy if place.distributed else None,
    )
    batches = iter(distribute.distribute_batches(place, lambda: task.training_batches(range(1))))
    times = []
    for index in range(sizes["warm_up"] + steps):
        batch = next(batches)
        started = time.perf_counter()
        float(trainer.train_step(*batch)["loss"])  # waits for the step
        if index >= sizes["warm_up"]:
            times.append(time.perf_counter() - started)
    gradient_bytes = sum(int(np.prod(v.shape)) * 4 for v in model.trainable_variables)
    return {
        "seconds_per_step": float(np.median(times)),
        "replicas": place.replicas,
        "gradient_bytes": gradient_bytes,
        "characters_per_step": sizes["batch"] * sizes["time"],
    }


def _run_placement(placement: str, units: int) -> dict:
    """One measurement in fresh processes (two for two_workers); the chief's (process 0's) numbers."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.distribute_bench",
        f"--measure={PLACEMENTS[placement]}",
        f"--measure_units={units}",
        f"--steps={_STEPS.value}",
        f"--quick={_QUICK.value}",
    ]
    tf_configs = distribute.loopback_tf_configs(2) if placement == "two_workers" else [None]
    processes = []
    for tf_config in tf_configs:
        env = {**os.environ, **({"TF_CONFIG": tf_config} if tf_config else {})}
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [process.communicate(timeout=900) for process in processes]
    for process, (_, stderr) in zip(processes, outputs):
        if process.returncode:
            raise RuntimeError(f"{placement} at {units} units failed: {stderr.strip()[-500:]}")
    return json.loads(outputs[0][0].strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    logging.set_verbosity(logging.WARNING)
    sizes = QUICK_SIZES if _QUICK.value else SIZES
    if _MEASURE.value:
        print(json.dumps(measure(_MEASURE.value, _MEASURE_UNITS.value, sizes, _STEPS.value)))
        return
    units_list = [8] if _QUICK.value else [int(u) for u in _UNITS.value]
    repeats = 1 if _QUICK.value else _REPEATS.value
    measured: dict[int, dict[str, list[dict]]] = {units: {p: [] for p in PLACEMENTS} for units in units_list}
    for repeat in range(repeats):
        for units in units_list:
            for placement in PLACEMENTS:  # interleaved
                measured[units][placement].append(_run_placement(placement, units))
                print(
                    f"repeat {repeat + 1}/{repeats}, H={units}, {placement}: "
                    f"{measured[units][placement][-1]['seconds_per_step'] * 1000:.1f} ms per step",
                    flush=True,
                )
    rows = []
    for units in units_list:
        base = float(np.median([m["seconds_per_step"] for m in measured[units]["one_process"]]))
        for placement in PLACEMENTS:
            seconds = float(np.median([m["seconds_per_step"] for m in measured[units][placement]]))
            first = measured[units][placement][0]
            rows.append(
                {
                    "units": units,
                    "placement": placement,
                    "replicas": first["replicas"],
                    "ms_per_step": round(seconds * 1000, 1),
                    "characters_per_second": round(first["characters_per_step"] / seconds),
                    "speed_vs_one_process": round(base / seconds, 2),
                    "gradient_bytes_per_step": first["gradient_bytes"],
                }
            )
    print("| H | placement | replicas | ms per step | characters/s | vs one process | all-reduced bytes per step |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['units']} | {row['placement']} | {row['replicas']} | {row['ms_per_step']} | "
            f"{row['characters_per_second']:,} | {row['speed_vs_one_process']} | "
            f"{row['gradient_bytes_per_step']:,} |"
        )
    os.makedirs(os.path.dirname(_OUTPUT.value) or ".", exist_ok=True)
    with open(_OUTPUT.value, "w") as f:
        json.dump(
            {"rows": rows, "sizes": sizes, "repeats": repeats, "steps": _STEPS.value, "machine": machine.describe()},
            f,
            indent=2,
        )
    print(f"wrote {_OUTPUT.value}")


if __name__ == "__main__":
    app.run(main)
