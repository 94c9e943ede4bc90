"""The language model's speed against tf.keras.layers.LSTM, and what each learns in the same time.

    python -m benchmarks.text_bench --mode=step          # training step, interleaved, median of repeats
    python -m benchmarks.text_bench --mode=equal_time    # validation bits/char against seconds, both models
    python -m benchmarks.text_bench --mode=generate      # characters per second from the SavedModel
    python -m benchmarks.text_bench --quick ...          # tiny sizes: a correctness run of the script

Sizes: the vocabulary of the shipped corpus (76), H=256, T=100, B=64, 1 and 2 layers. `step` times
our `Trainer` step (hand-written BPTT, XLA) against every peer of `benchmarks/peers.py` (each Keras
variant, Flax), interleaved: above 1, ours is faster.

`equal_time` trains ours with train_text.py's recipe (Adam 0.02 decaying to 0.002 over `--seconds`,
clipping at norm 5, our initialisation) and the peer with a practitioner's (`keras.layers.LSTM`,
Keras's initialisers, Keras's Adam with `clipnorm=5` at a constant rate, stateful streams of the same
windows; `--keras_xla` compiles its step), one peer per rate of `--keras_learning_rates`, each for
`--seconds` of training, in turn, and measures bits per character on the validation text
(`--validation_split`), as many characters of the training text and, for the corpus, the two plays
never trained on, at fixed times (evaluation, and each model's first step, which traces and compiles
it, not counted). The peer is the rate best on validation at the end (`keras_best`);
`--keras_learning_rates=` trains ours alone, and `--ours_keras_init` starts ours from the weights
Keras's initialisers draw (docs/text.md). It writes the
curves as JSON, a PNG and TensorBoard scalars (one run per model).
"""

from __future__ import annotations

import datetime
import json
import os
import time

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
from tasks.text.serving import TextGenerator  # noqa: E402
from tasks.text.task import TextData, TextTask  # noqa: E402

_MODE = flags.DEFINE_enum("mode", "step", ["step", "equal_time", "generate"], "What to measure.")
_QUICK = flags.DEFINE_boolean("quick", False, "Tiny sizes and few repeats: checks the script, measures nothing.")
_REPEATS = flags.DEFINE_integer("repeats", 15, "Timed repeats per model (median).", lower_bound=1)
_SECONDS = flags.DEFINE_float("seconds", 600.0, "equal_time: training seconds per model.", lower_bound=1.0)
_EVALUATIONS = flags.DEFINE_integer("evaluations", 12, "equal_time: validation points per curve.", lower_bound=2)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 0.02, "Our Adam's learning rate (step: constant).")
_KERAS_LEARNING_RATES = flags.DEFINE_list(
    "keras_learning_rates",
    ["0.002", "0.005", "0.01"],
    "equal_time: the Keras peer's constant learning rates (its own Adam, clipnorm 5), each a peer trained "
    "alongside; the peer is the one best on validation at the end.",
)
_VALIDATION_SPLIT = flags.DEFINE_enum(
    "validation_split",
    "interleaved",
    ["interleaved", "tail"],
    "equal_time: which validation text (tasks/text/text_data.split).",
)
_LEARNING_RATE_DECAY = flags.DEFINE_float(
    "learning_rate_decay", 0.1, "equal_time: the rate decays exponentially to this fraction by --seconds."
)
_WEIGHT_DECAY = flags.DEFINE_float("weight_decay", 0.0, "Ours: decoupled weight decay (train_text.py's flag).")
_PREACTIVATION_NOISE = flags.DEFINE_float(
    "preactivation_noise", 0.0, "Ours: Gaussian noise on the gate preactivations in training (train_text.py's flag)."
)
_OURS_KERAS_INIT = flags.DEFINE_boolean(
    "ours_keras_init",
    False,
    "equal_time: ours starts from the weights Keras's initialisers draw (orthogonal recurrent).",
)
_KERAS_XLA = flags.DEFINE_boolean("keras_xla", False, "equal_time: compile the Keras peer's step with XLA.")
_OUTPUT = flags.DEFINE_string("output", "logs/text_bench", "Where JSON, PNG and TensorBoard events go.")

SIZES = {"units": 256, "time": 100, "batch": 64}
QUICK_SIZES = {"units": 16, "time": 10, "batch": 4}
CLIP_NORM = 5.0


def sizes() -> dict:
    return QUICK_SIZES if _QUICK.value else SIZES


def text_task(batch: int, time_steps: int) -> TextTask:
    data = TextData(
        corpus="hamlet_soliloquy" if _QUICK.value else "shakespeare",
        validation_fraction=0.1,
        validation_split=_VALIDATION_SPLIT.value,
        unroll_length=time_steps,
    )
    task = TextTask(data)
    task.prepare(TrainingConfig(epochs=1, batch_size=batch))
    return task


def ours(task: TextTask, units: int, layers: int):
    size = len(task.vocabulary)
    config = ModelConfig(
        input_size=size, units=units, num_layers=layers, output_size=size, initializer="glorot_uniform"
    )
    task.make_variables(config, replicas=1)
    model = LSTMModel(config, backprop="bptt", inline_loops=True)
    trainer = Trainer(
        model,
        Adam(model.trainable_variables, learning_rate=_LEARNING_RATE.value, weight_decay=_WEIGHT_DECAY.value),
        task.loss,
        jit_compile=True,
        clip_norm=CLIP_NORM,
        preactivation_noise=_PREACTIVATION_NOISE.value,
    )
    return model, trainer


def keras_stateful(size: int, units: int, layers: int, batch: int, xla: bool, learning_rate: float = 0.0):
    """The peer as a practitioner sets it up: a Keras LSTM stack (Keras's own initialisers) that takes
    and returns each layer's state (stateful streams), Keras's Adam with `clipnorm`, a constant rate;
    returns `(model, step, optimizer)`."""
    import keras

    inputs = keras.Input((None, size), batch_size=batch)
    states_in, states_out, x = [], [], inputs
    for _ in range(layers):
        h, c = keras.Input((units,), batch_size=batch), keras.Input((units,), batch_size=batch)
        x, h_out, c_out = keras.layers.LSTM(units, return_sequences=True, return_state=True)(x, initial_state=[h, c])
        states_in += [h, c]
        states_out += [h_out, c_out]
    model = keras.Model([inputs, *states_in], [keras.layers.Dense(size)(x), *states_out])
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate, clipnorm=CLIP_NORM)
    optimizer.build(model.trainable_variables)

    def step(inputs, targets, states):
        with tf.GradientTape() as tape:
            logits, *new_states = model([tf.one_hot(inputs, size), *states], training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss, [tf.stop_gradient(s) for s in new_states]

    return model, tf.function(step, jit_compile=xla, autograph=False), optimizer


def text_step_flops(vocabulary: int, units: int, layers: int, time_steps: int, batch: int) -> float:
    """Matmul FLOPs of one training step (forward, and twice that backward): the recurrent matmul of
    every layer, the input matmul of layers above the first (the first reads ids: a gather), the readout."""
    forward = (
        time_steps * batch * 2.0 * (layers * units * 4 * units + (layers - 1) * units * 4 * units + units * vocabulary)
    )
    return 3 * forward


def measure_steps() -> list[dict]:
    """Our step against every peer (`benchmarks/peers.py`), 1 and 2 layers, interleaved."""
    s = sizes()
    task = text_task(s["batch"], s["time"])
    size = len(task.vocabulary)
    start, stop = task.windows[0]
    ids, targets = task.train_streams[:, start:stop], task.train_streams[:, start + 1 : stop + 1]
    rate = peers.large_matmul_rate(256 if _QUICK.value else 1024)
    rows = []
    for layers in (1, 2):
        trainer = ours(task, s["units"], layers)[1]
        batch = (tf.constant(ids, tf.int32), tf.constant(targets, tf.int32), tf.constant(False))
        steps = {"ours": lambda trainer=trainer, batch=batch: trainer.train_step(*batch)["loss"]}
        steps.update(peers.keras_text_steps(size, s["units"], layers, ids, targets))
        if (flax := peers.flax_text_step(size, s["units"], layers, ids, targets)) is not None:
            steps["flax"] = flax
        medians = peers.interleaved_medians(steps, 2 if _QUICK.value else _REPEATS.value)
        ms = {name: 1e3 * seconds for name, seconds in medians.items()}
        peer, peer_ms = peers.fastest_peer(ms)
        row = {
            "layers": layers,
            **s,
            "vocabulary": size,
            "ms": ms,
            "fastest_peer": peer,
            "speedup": peer_ms / ms["ours"],
            "matmul_gflops": rate / 1e9,
            "gflops": text_step_flops(size, s["units"], layers, s["time"], s["batch"]) / medians["ours"] / 1e9,
        }
        print(
            f"layers {layers}: ours {ms['ours']:.1f} ms; "
            + ", ".join(f"{name} {value:.1f}" for name, value in ms.items() if name != "ours")
            + f"; fastest peer {peer}: speedup {row['speedup']:.2f}; {row['gflops']:.1f} GFLOP/s "
            f"(machine {row['matmul_gflops']:.0f})",
            flush=True,
        )
        rows.append(row)
    return rows


def bits_per_char(task: TextTask, text: str, logits_of, layers: int, units: int) -> float:
    """Bits per character over `text`, read in 16 streams with the state carried."""
    from tasks.text.text_data import streams as cut
    from tasks.text.text_data import window_bounds

    text_ids = task.vocabulary.ids(text)
    count = 16
    pieces = cut(text_ids, count)
    states = [tf.zeros([count, units])] * (2 * layers)
    total = 0.0
    for start, stop in window_bounds(pieces.shape[1], task.data.unroll_length):
        logits, states = logits_of(tf.constant(pieces[:, start:stop]), states)
        total += float(
            tf.reduce_sum(
                tf.nn.sparse_softmax_cross_entropy_with_logits(tf.constant(pieces[:, start + 1 : stop + 1]), logits)
            )
        )
    return total / (count * (pieces.shape[1] - 1)) / np.log(2)


def equal_time() -> dict:
    s = sizes()
    task = text_task(s["batch"], s["time"])
    size, units, layers = len(task.vocabulary), s["units"], 1
    model, trainer = ours(task, units, layers)
    if _OURS_KERAS_INIT.value:
        import keras

        from diy_lstm.keras_interop import load_from_keras

        drawn = keras_stateful(size, units, layers, s["batch"], xla=False)[0]
        lstms = [layer for layer in drawn.layers if isinstance(layer, keras.layers.LSTM)]
        load_from_keras(model, lstms, next(layer for layer in drawn.layers if isinstance(layer, keras.layers.Dense)))
    our_step, our_optimizer = trainer.train_step, trainer.optimizer
    peers_by_name = {
        keras_name(rate): keras_stateful(size, units, layers, s["batch"], _KERAS_XLA.value, rate)
        for rate in map(float, _KERAS_LEARNING_RATES.value)
    }
    texts = {
        "validation": task.split_texts["validation"],
        "train": task.split_texts["train"][: len(task.split_texts["validation"])],
        **({"unseen": task.split_texts["unseen"]} if "unseen" in task.split_texts else {}),
    }
    keras_eval_model, _, _ = keras_stateful(size, units, layers, 16, xla=False)  # scores each peer in turn

    @tf.function(autograph=False)
    def our_logits(inputs, states):
        from diy_lstm.cell import LSTMState

        initial = tuple(LSTMState(states[2 * i], states[2 * i + 1]) for i in range(layers))
        output = model.run(tf.one_hot(inputs, size), initial_states=initial, keep_states=True)
        return output.predictions, [t for state in output.final_states() for t in state]

    @tf.function(autograph=False)
    def keras_logits(inputs, states):
        logits, *new_states = keras_eval_model([tf.one_hot(inputs, size), *states], training=False)
        return logits, new_states

    windows = task.windows
    budget = _SECONDS.value
    checkpoints = np.linspace(budget / _EVALUATIONS.value, budget, _EVALUATIONS.value)
    names = ["ours", *peers_by_name]
    curves = {name: [] for name in names}
    position = {name: 0 for name in names}
    clock = {name: 0.0 for name in names}
    keras_states = {name: [tf.zeros([s["batch"], units])] * (2 * layers) for name in peers_by_name}

    def train_for(name, seconds):
        while clock[name] < seconds:
            if name == "ours":  # train_text.py's schedule, in time: decay to --learning_rate_decay by the budget
                our_optimizer.learning_rate.assign(
                    _LEARNING_RATE.value * _LEARNING_RATE_DECAY.value ** min(clock[name] / budget, 1.0)
                )
            index = position[name] % len(windows)
            start, stop = windows[index]
            inputs = tf.constant(task.train_streams[:, start:stop], tf.int32)
            targets = tf.constant(task.train_streams[:, start + 1 : stop + 1], tf.int32)
            first = position[name] == 0  # its time is mostly tracing and XLA compiling: not counted
            began = time.perf_counter()
            if name == "ours":
                float(our_step(inputs, targets, tf.constant(index == 0))["loss"])
            else:
                if index == 0:
                    keras_states[name] = [tf.zeros_like(t) for t in keras_states[name]]
                loss, keras_states[name] = peers_by_name[name][1](inputs, targets, keras_states[name])
                float(loss)
            clock[name] += 0.0 if first else time.perf_counter() - began
            position[name] += 1

    for checkpoint in checkpoints:
        for name in names:  # alternate, so all see the same machine conditions
            train_for(name, checkpoint)
        for name in names:
            if name != "ours":
                keras_eval_model.set_weights(peers_by_name[name][0].get_weights())
            logits_of = our_logits if name == "ours" else keras_logits
            curves[name].append(
                {
                    "seconds": round(clock[name], 1),
                    "windows": position[name],
                    **{
                        f"{split}_bpc": bits_per_char(task, text, logits_of, layers, units)
                        for split, text in texts.items()
                    },
                }
            )
            now = curves[name][-1]
            print(
                f"{checkpoint:7.0f}s  {name:<12} "
                + "  ".join(f"{key} {value:.3f}" for key, value in now.items() if key.endswith("_bpc"))
                + f"  ({position[name]} steps)",
                flush=True,
            )
    return curves


def keras_name(rate: float) -> str:
    return f"keras_lr={rate:g}"


def best_peer(curves: dict) -> str:
    """The peer whose last validation bits per character are lowest: chosen once, at the end."""
    return min((name for name in curves if name != "ours"), key=lambda name: curves[name][-1]["validation_bpc"])


def plot(curves: dict, path: str, title: str) -> None:
    """Bits per character against training seconds, one panel per text scored, every model a line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    splits = [split for split in ("validation", "unseen", "train") if f"{split}_bpc" in curves["ours"][0]]
    figure = Figure(figsize=(5 * len(splits), 4.2), dpi=100)
    xla = " (XLA)" if _KERAS_XLA.value else ""
    for axis, split in zip(figure.subplots(1, len(splits)), splits):
        for name, points in curves.items():
            label = "diy_lstm (hand-written BPTT, XLA)" if name == "ours" else f"keras.layers.LSTM{xla}, {name[6:]}"
            axis.plot([p["seconds"] for p in points], [p[f"{split}_bpc"] for p in points], "o-", label=label)
        axis.set_xlabel("training seconds (evaluation not counted)")
        axis.set_ylabel(f"{ {'train': 'training-text', 'unseen': 'unseen-play'}.get(split, split) } bits per character")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title, fontsize=9)
    FigureCanvasAgg(figure).print_png(path)


def generation_speed() -> list[dict]:
    s = sizes()
    task = text_task(s["batch"], s["time"])
    size = len(task.vocabulary)
    model = LSTMModel(ModelConfig(input_size=size, units=s["units"], output_size=size, initializer="glorot_uniform"))
    generator = TextGenerator(model, task.vocabulary.characters)
    rows = []
    chars = 50 if _QUICK.value else 1000
    for batch in (1, 64):
        prompts = tf.constant([task.split_texts["train"][:5]] * batch)
        seconds = peers.interleaved_medians(
            {"generate": lambda: generator.generate(prompts, chars, 0.8, 0)["text"].numpy()},
            2 if _QUICK.value else 5,
            1,
        )["generate"]
        rows.append({"batch": batch, "chars": chars, "seconds": seconds, "chars_per_second": batch * chars / seconds})
        print(
            f"generate, batch {batch}: {batch * chars / seconds:,.0f} characters/s ({chars} each, {seconds:.2f} s)",
            flush=True,
        )
    return rows


def main(argv: list[str]) -> None:
    logging.set_verbosity(logging.ERROR)
    tf.get_logger().setLevel("ERROR")  # Keras's retracing warnings, one per variant
    measured_on = machine.describe()
    print(
        f"# {datetime.date.today()}  TensorFlow {measured_on['tensorflow']}  {measured_on['cores']} cores "
        f"({measured_on['cpu']})  mode {_MODE.value}",
        flush=True,
    )
    os.makedirs(_OUTPUT.value, exist_ok=True)
    if _MODE.value == "step":
        report = {"rows": measure_steps()}
    elif _MODE.value == "generate":
        report = {"rows": generation_speed()}
    else:
        curves = equal_time()
        report = {"curves": curves}
        title = (
            f"{datetime.date.today()}, {measured_on['cpu']}, {measured_on['cores']} cores: H={sizes()['units']}, "
            f"T={sizes()['time']}, B={sizes()['batch']}, {_VALIDATION_SPLIT.value} validation; ours Adam "
            f"{_LEARNING_RATE.value} decaying to {_LEARNING_RATE.value * _LEARNING_RATE_DECAY.value:g}, gate noise "
            f"{_PREACTIVATION_NOISE.value:g}, weight decay {_WEIGHT_DECAY.value:g}; "
            + (f"Keras Adam constant, best {best_peer(curves)[9:]}" if len(curves) > 1 else "no peer")
        )
        report["keras_best"] = best_peer(curves) if len(curves) > 1 else None
        plot(curves, os.path.join(_OUTPUT.value, "equal_time.png"), title)
        for name, points in curves.items():
            writer = tf.summary.create_file_writer(os.path.join(_OUTPUT.value, "equal_time", name))
            with writer.as_default():
                for point in points:
                    for key, value in point.items():
                        if key.endswith("_bpc"):
                            tf.summary.scalar(f"{key[:-4]}_bits_per_char_by_second", value, step=int(point["seconds"]))
            writer.close()
    report["machine"] = measured_on
    with open(os.path.join(_OUTPUT.value, f"{_MODE.value}.json"), "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    app.run(main)
