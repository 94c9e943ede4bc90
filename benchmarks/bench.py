"""Speed of the hand-built LSTM against tf.keras.layers.LSTM, measured in one process.

    python -m benchmarks.bench                 # the full table (several minutes), from the repository root
    python -m benchmarks.bench --quick         # tiny sizes, a correctness run of the script

For each configuration both models get the same sizes, the same data, the same loss (squared error
of the final step's prediction) and the same optimizer (our fused Adam), and each is one
`tf.function`. After warm-up the timings alternate ours, Keras, ours, Keras, ...; each figure is the
median of `--repeats`. Ratios are Keras time / our time: above 1 means ours is faster. The floor is
the step's matmul FLOPs divided by the matmul rate measured in the same run.

The last line is machine-readable: `reference_speedup=X.XX medium_speedup=X.XX large_speedup=X.XX`
(training-step ratios). Ours runs the `Trainer` step that train.py runs, without the training noise
unless a variant asks for it.
"""

from __future__ import annotations

import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from diy_lstm.cli import quiet

tf = quiet.import_tensorflow()

import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from tasks.counter import data_generator  # noqa: E402
from tasks.counter.task import CounterData, CounterTask  # noqa: E402
from diy_lstm.training import machine  # noqa: E402
from diy_lstm.serving.export import export  # noqa: E402
from diy_lstm.training.config import TrainingConfig  # noqa: E402
from tasks.counter.serving import SequenceScorer  # noqa: E402
from diy_lstm.model import LSTMModel, ModelConfig  # noqa: E402
from diy_lstm.training.optimizer import Adam  # noqa: E402
from diy_lstm.training.trainer import Trainer  # noqa: E402

CONFIGS = {  # name: (units, time, batch)
    "reference": (24, 6, 1024),
    "medium": (128, 50, 256),
    "large": (512, 100, 64),
}
QUICK_CONFIGS = {"reference": (8, 6, 64), "medium": (16, 10, 32), "large": (32, 12, 16)}
FEATURES = data_generator.NUM_FEATURES
DEFAULT_PREACTIVATION_NOISE = 1.0  # train.py's --preactivation_noise, timed by the `noise` variant

_CONFIGS = flags.DEFINE_list("configs", list(CONFIGS), "Which configurations to time.")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed repeats per model and measurement (median).", lower_bound=1)
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed calls before timing.", lower_bound=1)
_QUICK = flags.DEFINE_boolean("quick", False, "Tiny sizes and few repeats: checks the script, measures nothing.")
_VARIANTS = flags.DEFINE_list(
    "variants", [], "Extra versions of ours to time beside the default, e.g. noxla,autodiff,autodiff_noxla "
    "(autodiff: TF differentiates the loop; loop: no unrolling; noxla: no jit_compile; noise: with train.py's "
    "training noise on the gate preactivations).")
_TRAINING_RUN = flags.DEFINE_boolean("training_run", True, "Also time the default train.py run to 0% error.")
_MEMORY = flags.DEFINE_boolean("memory", True, "Also measure peak RSS of training at the large size.")
_JSON = flags.DEFINE_string("json", None, "Write all measurements here as JSON.")
_MEMORY_CHILD = flags.DEFINE_string("memory_child", None, "(internal) run one model's training steps and report RSS.")


def default_model_options() -> dict:
    """What train.py uses by default for one fixed length: hand-written BPTT, short loops unrolled,
    the step compiled with XLA; but no training noise, which the Keras step has no counterpart of
    (the `noise` variant times it)."""
    return {"backprop": "bptt", "inline_loops": True, "jit_compile": True, "preactivation_noise": 0.0}


def variant_options(variant: str) -> dict:
    """`default` with changes: autodiff (TF differentiates the loop), loop (never unroll), noxla, noise
    (train.py's default `--preactivation_noise`, which the plain LSTM step that Keras is timed against
    leaves out)."""
    options = default_model_options()
    parts = set(variant.split("_"))
    unknown = parts - {"autodiff", "loop", "noxla", "noise"}
    if unknown:
        raise app.UsageError(f"--variants: unknown part(s) {sorted(unknown)}; use autodiff, loop, noxla, noise")
    if "autodiff" in parts:
        options["backprop"] = "autodiff"
    if "loop" in parts:
        options["inline_loops"] = False
    if "noxla" in parts:
        options["jit_compile"] = False
    if "noise" in parts:
        options["preactivation_noise"] = DEFAULT_PREACTIVATION_NOISE
    return options


def make_data(time_steps: int, batch: int, seed: int = 0):
    """Random +-0I sequences: inputs `[batch, time, 3]`, running sums `[batch, time]`, lengths `[batch]`."""
    rng = np.random.default_rng(seed)
    sequences = data_generator.sample_sequences(time_steps, batch, rng)
    inputs, _ = data_generator.encode_batch(sequences)
    targets = np.stack([data_generator.running_sum(s) for s in sequences]).astype(np.float32)
    return tf.constant(inputs), tf.constant(targets), tf.fill([batch], time_steps)


def ours_steps(units: int, options: dict):
    """Our model with the training step train.py runs (`Trainer`, target "final", one length)."""
    model = LSTMModel(ModelConfig(input_size=FEATURES, units=units), backprop=options["backprop"],
                      inline_loops=options["inline_loops"])
    optimizer = Adam(model.trainable_variables, learning_rate=0.001)
    task = CounterTask(CounterData(target="final"))
    task.prepare(TrainingConfig(epochs=1, batch_size=1))
    trainer = Trainer(model, optimizer, task.loss, jit_compile=options["jit_compile"],
                      preactivation_noise=options["preactivation_noise"])

    def train_step(inputs, targets, lengths):
        return trainer.train_step(inputs, targets, lengths)

    @tf.function(autograph=False)
    def predict(inputs):  # the final prediction only, as Keras's LSTM(return_sequences=False) + Dense
        return model.run(inputs, last_step_only=True).predictions[:, 0]

    return model, train_step, predict


def keras_steps(units: int, time_steps: int):
    import keras

    keras_model = keras.Sequential(
        [keras.Input((time_steps, FEATURES)), keras.layers.LSTM(units), keras.layers.Dense(1)])
    variables = [v.value for v in keras_model.trainable_variables]  # the tf.Variables inside
    optimizer = Adam(variables, learning_rate=0.001)

    @tf.function(autograph=False)
    def train_step(inputs, targets, lengths):
        del lengths  # every sequence is full length
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(keras_model(inputs, training=True)[:, 0] - targets[:, -1]))
        optimizer.apply_gradients(tape.gradient(loss, variables))
        return loss

    @tf.function(autograph=False)
    def predict(inputs):
        return keras_model(inputs)

    return keras_model, train_step, predict


def interleaved_medians(functions: dict, repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each function, calls alternating between them."""
    for function in functions.values():
        for _ in range(warmup):
            np.asarray(function())
    timings = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            np.asarray(function())  # waits for the result
            timings[name].append(time.perf_counter() - start)
    return {name: float(np.median(values)) for name, values in timings.items()}


def matmul_rate(batch: int, units: int, repeats: int) -> float:
    """FLOP/s of this step's gate matmul `[batch, F + H] x [F + H, 4H]`, chained to hide call overhead."""
    left = tf.random.stateless_normal([batch, FEATURES + units], seed=[0, 1])
    right = tf.random.stateless_normal([FEATURES + units, 4 * units], seed=[0, 2]) * 0.01
    chain = 20

    @tf.function
    def many():
        total = tf.zeros([])
        for k in range(chain):
            total += tf.reduce_sum(tf.matmul(left + float(k), right)[:1])
        return total

    seconds = interleaved_medians({"matmul": many}, repeats, 2)["matmul"]
    return chain * 2.0 * batch * (FEATURES + units) * 4 * units / seconds


def training_flops(units: int, time_steps: int, batch: int) -> float:
    """Matmul FLOPs of one training step: forward, and twice that backward (inputs and weights)."""
    return 3 * time_steps * 2.0 * batch * (FEATURES + units) * 4 * units


def time_config(name: str, units: int, time_steps: int, batch: int, repeats: int, warmup: int) -> dict:
    inputs, targets, lengths = make_data(time_steps, batch)
    ours = {"default": ours_steps(units, default_model_options())}
    for variant in _VARIANTS.value:
        ours[variant] = ours_steps(units, variant_options(variant))
    _, keras_train, keras_predict = keras_steps(units, time_steps)

    train_functions = {"keras": lambda: keras_train(inputs, targets, lengths)}
    for variant, (_, train_step, _) in ours.items():
        train_functions[variant] = lambda step=train_step: step(inputs, targets, lengths)
    train = interleaved_medians(train_functions, repeats, warmup)
    _, _, ours_predict = ours["default"]
    predict = interleaved_medians(
        {"keras": lambda: keras_predict(inputs), "default": lambda: ours_predict(inputs)}, repeats, warmup)
    rate = matmul_rate(batch, units, max(5, repeats // 2))
    floor = training_flops(units, time_steps, batch) / rate
    return {
        "config": name, "units": units, "time": time_steps, "batch": batch,
        "train_ms": {k: 1e3 * v for k, v in train.items()},
        "predict_ms": {k: 1e3 * v for k, v in predict.items()},
        "train_speedup": {k: train["keras"] / v for k, v in train.items() if k != "keras"},
        "predict_speedup": predict["keras"] / predict["default"],
        "matmul_gflops": rate / 1e9, "floor_ms": 1e3 * floor,
    }


def scoring_throughput(repeats: int, batch: int = 1024, length: int = 6) -> float:
    """Raw strings per second through the exported SavedModel's serving signature."""
    model = LSTMModel(ModelConfig(input_size=FEATURES, units=24, readout="cell"))
    with tempfile.TemporaryDirectory() as directory:
        scorer = SequenceScorer(model, data_generator.ENCODING)
        path = export(scorer, os.path.join(directory, "m"), scorer.signatures())
        signature = tf.saved_model.load(path).signatures["serving_default"]
        strings = tf.constant(data_generator.sample_sequences(length, batch, np.random.default_rng(0)))
        seconds = interleaved_medians({"score": lambda: signature(sequences=strings)["final_prediction"]},
                                      repeats, 3)["score"]
    return batch / seconds


def default_training_run(quick: bool) -> dict:
    """`python train.py --lstm_size=24` (the defaults): epochs and seconds to 0.0% validation error."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as logdir:
        extra = ["--epochs=20"] if quick else []
        started = time.perf_counter()
        subprocess.run([sys.executable, os.path.join(root, "train.py"), "--lstm_size=24", f"--logdir={logdir}",
                        "--run_name=bench", *extra], check=True, capture_output=True)
        wall = time.perf_counter() - started
        with open(os.path.join(logdir, "bench", "results.json")) as f:
            results = json.load(f)
    return {"wall_seconds_with_startup": wall, "loop_seconds": results["seconds"],
            "goal_reached": results["goal_reached"], "validation_error": results["metrics"]["validation"]["error"]}


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM starts afresh at exec; ru_maxrss would include
    the parent's peak, which a child inherits."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(which: str, units: int, time_steps: int, batch: int, steps: int = 5) -> None:
    inputs, targets, lengths = make_data(time_steps, batch)
    if which == "keras":
        _, train_step, _ = keras_steps(units, time_steps)
    else:
        _, train_step, _ = ours_steps(units, default_model_options())
    baseline = peak_rss_mb()
    for _ in range(steps):
        np.asarray(train_step(inputs, targets, lengths))
    peak = peak_rss_mb()
    print(json.dumps({"peak_mb": peak, "growth_mb": peak - baseline}))


def peak_memory(units: int, time_steps: int, batch: int) -> dict:
    """Peak RSS of a process doing training steps, ours and Keras, each in a fresh process."""
    report = {}
    for which in ("ours", "keras"):
        output = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench", f"--memory_child={which}",
             f"--configs={units},{time_steps},{batch}"],
            check=True, capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        ).stdout
        report[which] = json.loads(output.strip().splitlines()[-1])
    return report


def print_table(rows: list[dict], variants: list[str]) -> None:
    print(f"{'config':<10} {'H':>4} {'T':>4} {'B':>5}  {'train ms ours':>13} {'keras':>7} {'ratio':>6}  "
          f"{'predict ms ours':>15} {'keras':>7} {'ratio':>6}  {'seq/s train':>11} {'floor ms':>8} {'GFLOP/s':>7}")
    for row in rows:
        train, predict = row["train_ms"], row["predict_ms"]
        print(f"{row['config']:<10} {row['units']:>4} {row['time']:>4} {row['batch']:>5}  "
              f"{train['default']:>13.2f} {train['keras']:>7.2f} {row['train_speedup']['default']:>6.2f}  "
              f"{predict['default']:>15.2f} {predict['keras']:>7.2f} {row['predict_speedup']:>6.2f}  "
              f"{row['batch'] / train['default'] * 1e3:>11.0f} {row['floor_ms']:>8.2f} {row['matmul_gflops']:>7.1f}")
    for variant in variants:
        print("  variant " + variant + ": " + ", ".join(
            f"{row['config']} {row['train_ms'][variant]:.2f} ms (ratio {row['train_speedup'][variant]:.2f})"
            for row in rows))


def main(argv: list[str]) -> None:
    logging.set_verbosity(logging.WARNING)
    tf.get_logger().setLevel("ERROR")
    if _MEMORY_CHILD.value:
        units, time_steps, batch = (int(v) for v in _CONFIGS.value)
        memory_child(_MEMORY_CHILD.value, units, time_steps, batch)
        return
    sizes = QUICK_CONFIGS if _QUICK.value else CONFIGS
    repeats, warmup = (2, 1) if _QUICK.value else (_REPEATS.value, _WARMUP.value)
    unknown = [name for name in _CONFIGS.value if name not in sizes]
    if unknown:
        raise app.UsageError(f"--configs: unknown {unknown}; choose from {list(sizes)}")
    measured_on = machine.describe()
    print(f"# {datetime.date.today()}  TensorFlow {measured_on['tensorflow']}  {measured_on['cores']} cores "
          f"({measured_on['cpu']})  repeats {repeats} (median, interleaved)")
    rows = [time_config(name, *sizes[name], repeats, warmup) for name in _CONFIGS.value]
    print_table(rows, _VARIANTS.value)
    extras = {"scoring_sequences_per_second": scoring_throughput(repeats, batch=64 if _QUICK.value else 1024)}
    print(f"SavedModel scoring (raw strings, length 6): {extras['scoring_sequences_per_second']:,.0f} sequences/s")
    if _TRAINING_RUN.value:
        extras["default_training_run"] = run = default_training_run(_QUICK.value)
        first = run["goal_reached"]
        reached = f"epoch {first['epoch']}, {first['seconds']:.1f}s of training" if first else "not reached"
        print(f"default train.py --lstm_size=24: 0.0% validation error: {reached}; "
              f"whole command {run['wall_seconds_with_startup']:.1f}s")
    if _MEMORY.value:
        extras["peak_memory_large"] = memory = peak_memory(*sizes["large"])
        print(f"peak RSS, training at the large size: ours {memory['ours']['peak_mb']:.0f} MB "
              f"(+{memory['ours']['growth_mb']:.0f} MB for the steps), "
              f"Keras {memory['keras']['peak_mb']:.0f} MB (+{memory['keras']['growth_mb']:.0f} MB)")
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            json.dump({"rows": rows, **extras}, f, indent=2)
    speedups = {row["config"]: row["train_speedup"]["default"] for row in rows}
    print(" ".join(f"{name}_speedup={speedups[name]:.2f}" for name in ("reference", "medium", "large")
                   if name in speedups))


if __name__ == "__main__":
    app.run(main)
