"""Speed of the hand-built LSTM's training step on the counter against every peer, in one process.

    python -m benchmarks.bench                 # the full table (several minutes), from the repository root
    python -m benchmarks.bench --quick         # tiny sizes, a correctness run of the script

Ours is the `Trainer` step `train.py` runs for one fixed length (hand-written BPTT, XLA), on the
final-sum loss; the peers (`benchmarks/peers.py`) are every Keras variant, driven by
`train_on_batch` with Keras's Adam, and Flax's LSTM under `jax.jit`, on the same data and loss. The
calls interleave; each figure is the median of `--repeats`. `speedup` is the fastest peer's time over
ours. `GFLOP/s` is the step's matmul FLOPs (forward, and twice that backward) over its time, next to
this machine's rate on large float32 matmuls. `ours_command` is the step the default command runs
at the same size (`tasks/counter/defaults.py`: hard-sigmoid gates, the readout from `c`, the
running-sum loss, table noise, which no peer has); `command_speedup` is the fastest peer's plain
step over it. The `default` configuration is the default command's own shape. With `--memory`, the
peak RSS of a process doing only our training steps, per size.

The last line is machine-readable: `default_speedup=X.XX ... default_command_speedup=X.XX ...`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import subprocess
import sys

from diy_lstm.cli import quiet

tf = quiet.import_tensorflow()

import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from benchmarks import peers  # noqa: E402
from diy_lstm.model import LSTMModel, ModelConfig  # noqa: E402
from diy_lstm.training import machine  # noqa: E402
from diy_lstm.training.config import TrainingConfig  # noqa: E402
from diy_lstm.training.optimizer import Adam  # noqa: E402
from diy_lstm.training.trainer import Trainer  # noqa: E402
from tasks.counter import data_generator  # noqa: E402
from tasks.counter.defaults import DEFAULT_DATA, DEFAULT_MODEL, DEFAULT_TRAINING  # noqa: E402
from tasks.counter.task import CounterData, CounterTask  # noqa: E402

CONFIGS = {  # name: (units, time, batch)
    "default": (DEFAULT_MODEL.units, DEFAULT_DATA.max_length, DEFAULT_TRAINING.batch_size),
    "reference": (24, 6, 1024),
    "medium": (128, 50, 256),
    "large": (512, 100, 64),
}
QUICK_CONFIGS = {"default": (8, 20, 32), "reference": (8, 6, 64), "medium": (16, 10, 32), "large": (32, 12, 16)}
FEATURES = data_generator.NUM_FEATURES

_CONFIGS = flags.DEFINE_list("configs", list(CONFIGS), "Which configurations to time.")
_REPEATS = flags.DEFINE_integer("repeats", 15, "Timed repeats per step (median).", lower_bound=1)
_QUICK = flags.DEFINE_boolean("quick", False, "Tiny sizes and few repeats: checks the script, measures nothing.")
_MEMORY = flags.DEFINE_boolean("memory", True, "Also measure the peak RSS of our training at each size.")
_JSON = flags.DEFINE_string("json", None, "Write all measurements here as JSON.")
_MEMORY_CHILD = flags.DEFINE_string("memory_child", None, "(internal) units,time,batch: report our training's RSS.")


def make_data(time_steps: int, batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random +-0I sequences: inputs `[batch, time, 3]` and their running sums `[batch, time]`."""
    sequences = data_generator.sample_sequences(time_steps, batch, np.random.default_rng(seed))
    inputs, _ = data_generator.encode_batch(sequences)
    return inputs, data_generator.running_sums(sequences).astype(np.float32)


def ours_step(units: int, inputs: np.ndarray, sums: np.ndarray, command: bool = False) -> peers.Step:
    """Our `Trainer` step as `train.py` runs it for one fixed length: plain (the logistic σ, the readout
    from `h`, the final-sum loss: the peers' step) or, with `command`, the default command's."""
    config = ModelConfig(input_size=FEATURES, units=units)
    data, training = CounterData(target="final"), TrainingConfig(epochs=1, batch_size=len(inputs))
    if command:
        config = dataclasses.replace(DEFAULT_MODEL, units=units)
        data, training = DEFAULT_DATA, dataclasses.replace(DEFAULT_TRAINING, batch_size=len(inputs))
    model = LSTMModel(config, inline_loops=training.inline_loops)
    task = CounterTask(data)
    task.prepare(training)
    noise = {"preactivation_noise": training.preactivation_noise, "noise_distribution": training.noise_distribution}
    trainer = Trainer(model, Adam(model.trainable_variables, learning_rate=1e-3), task.loss, jit_compile=True, **noise)
    batch = (tf.constant(inputs), tf.constant(sums), tf.fill([len(inputs)], inputs.shape[1]))
    return lambda: trainer.train_step(*batch)["loss"]


def training_flops(units: int, time_steps: int, batch: int) -> float:
    """Matmul FLOPs of one training step: the gates' `[x_t, h_{t-1}] · W` at every step, twice that backward."""
    return 3 * time_steps * 2.0 * batch * (FEATURES + units) * 4 * units


def time_config(name: str, units: int, time_steps: int, batch: int, repeats: int, rate: float) -> dict:
    inputs, sums = make_data(time_steps, batch)
    final_sums = sums[:, -1]
    steps = {"ours": ours_step(units, inputs, sums), "ours_command": ours_step(units, inputs, sums, command=True)}
    steps.update(peers.keras_counter_steps(units, inputs, final_sums))
    if (flax := peers.flax_counter_step(units, inputs, final_sums)) is not None:
        steps["flax"] = flax
    medians = peers.interleaved_medians(steps, repeats, warmup=2 if _QUICK.value else 4)
    milliseconds = {step: 1e3 * seconds for step, seconds in medians.items()}
    peer, peer_ms = peers.fastest_peer(milliseconds)
    return {
        "config": name,
        "units": units,
        "time": time_steps,
        "batch": batch,
        "ms": milliseconds,
        "fastest_peer": peer,
        "speedup": peer_ms / milliseconds["ours"],
        "command_speedup": peer_ms / milliseconds["ours_command"],
        "gflops": training_flops(units, time_steps, batch) / medians["ours"] / 1e9,
        "matmul_gflops": rate / 1e9,
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM starts afresh at exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))


def memory_child(units: int, time_steps: int, batch: int, steps: int = 5) -> None:
    step = ours_step(units, *make_data(time_steps, batch))
    for _ in range(steps):
        np.asarray(step())
    print(json.dumps({"peak_mb": peak_rss_mb()}))


def peak_memory(units: int, time_steps: int, batch: int) -> float:
    """Peak RSS of a fresh process doing our training steps at this size, MB."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", f"--memory_child={units},{time_steps},{batch}"],
        check=True,
        capture_output=True,
        text=True,
        cwd=root,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])["peak_mb"]


def print_table(rows: list[dict]) -> None:
    names = [name for name in rows[0]["ms"] if name not in ("ours", "ours_command")]
    print(
        "| config | H T B | ours ms | ours, the command's step | " + " | ".join(names) + " | fastest peer | speedup | "
        "command's speedup | GFLOP/s (machine) |"
    )
    print("| --- " * (8 + len(names)) + "|")
    for row in rows:
        ms = row["ms"]
        peers_ms = " | ".join(f"{ms[name]:.2f}" if name in ms else "-" for name in names)
        print(
            f"| {row['config']} | {row['units']} {row['time']} {row['batch']} | {ms['ours']:.2f} | "
            f"{ms['ours_command']:.2f} | {peers_ms} | {row['fastest_peer']} | {row['speedup']:.2f} | "
            f"{row['command_speedup']:.2f} | "
            f"{row['gflops']:.1f} ({row['matmul_gflops']:.0f}) |"
        )


def main(argv: list[str]) -> None:
    logging.set_verbosity(logging.ERROR)
    tf.get_logger().setLevel("ERROR")
    if _MEMORY_CHILD.value:
        memory_child(*(int(v) for v in _MEMORY_CHILD.value.split(",")))
        return
    sizes = QUICK_CONFIGS if _QUICK.value else CONFIGS
    unknown = [name for name in _CONFIGS.value if name not in sizes]
    if unknown:
        raise app.UsageError(f"--configs: unknown {unknown}; choose from {list(sizes)}")
    repeats = 2 if _QUICK.value else _REPEATS.value
    measured_on = machine.describe()
    print(
        f"# {datetime.date.today()}  TensorFlow {measured_on['tensorflow']}  {measured_on['cores']} cores "
        f"({measured_on['cpu']})  median of {repeats}, interleaved"
        + ("" if peers.flax_available() else "  (Flax not installed: pip install -r requirements-bench.txt)")
    )
    rate = peers.large_matmul_rate(256 if _QUICK.value else 1024)
    rows = [time_config(name, *sizes[name], repeats, rate) for name in _CONFIGS.value]
    print_table(rows)
    if _MEMORY.value:
        for row in rows:
            row["peak_rss_mb"] = peak_memory(row["units"], row["time"], row["batch"])
        print("peak RSS of our training: " + ", ".join(f"{row['config']} {row['peak_rss_mb']:.0f} MB" for row in rows))
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            json.dump({"date": datetime.date.today().isoformat(), "machine": measured_on, "rows": rows}, f, indent=2)
    print(
        " ".join(f"{row['config']}_speedup={row['speedup']:.2f}" for row in rows)
        + " "
        + " ".join(f"{row['config']}_command_speedup={row['command_speedup']:.2f}" for row in rows)
    )


if __name__ == "__main__":
    app.run(main)
