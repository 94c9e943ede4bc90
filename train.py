"""Train the hand-built LSTM on the +-0I running-sum task.

    python train.py --lstm_size=24

Reads top to bottom: flags -> run directory -> data -> model -> optimizer -> checkpoint -> loop
(train, evaluate, log, checkpoint) -> export. Rerunning the same command resumes the run from its
last checkpoint; `--fresh` starts it over. `--lstm_size=8,16,24` trains one run per size.
`--restart_epoch=N` starts a run that has not learned by epoch N over as the next seed.
"""

from __future__ import annotations

import datetime
import math
import os
import signal
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import data_generator  # noqa: E402
from diy_lstm import cell as cell_lib  # noqa: E402
from diy_lstm import machine  # noqa: E402
from diy_lstm.checkpoints import (ConfigMismatchError, RunCheckpoint, check_or_write_config,  # noqa: E402
                                  read_config, write_json_atomically)
from diy_lstm.export import SequenceScorer, export  # noqa: E402
from diy_lstm.model import READOUTS, LSTMModel, ModelConfig  # noqa: E402
from diy_lstm.optimizer import Adam  # noqa: E402
from diy_lstm.progress import Progress  # noqa: E402
from diy_lstm.rnn import BACKPROP_MODES  # noqa: E402
from diy_lstm.summaries import (RunWriters, write_gate_images, write_hparams, write_histograms,  # noqa: E402
                                write_scalars)
from diy_lstm.training import TARGETS, Trainer  # noqa: E402

MAX_LSTM_SIZE = 4096
MAX_SEQUENCE_LENGTH = 100_000
MAX_CHARACTERS_IN_MEMORY = 50_000_000  # sequences x length held as training data

# Data.
_SEQUENCE_LENGTH = flags.DEFINE_integer(
    "sequence_length", 6, "Length of every training sequence (unless --min_length/--max_length).",
    lower_bound=1, upper_bound=MAX_SEQUENCE_LENGTH)
_MIN_LENGTH = flags.DEFINE_integer(
    "min_length", None, "Shortest training length; with --max_length, lengths are mixed.",
    lower_bound=1, upper_bound=MAX_SEQUENCE_LENGTH)
_MAX_LENGTH = flags.DEFINE_integer(
    "max_length", None, "Longest training length; with --min_length, lengths are mixed.",
    lower_bound=1, upper_bound=MAX_SEQUENCE_LENGTH)
_MAX_SEQUENCES_PER_LENGTH = flags.DEFINE_integer(
    "max_sequences_per_length", data_generator.MAX_SEQUENCES_PER_LENGTH,
    "All 4^L sequences of a length L are used when there are at most this many; else this many are sampled.",
    lower_bound=2, upper_bound=10_000_000)
_SAMPLING = flags.DEFINE_enum(
    "sampling", "uniform", list(data_generator.SAMPLINGS),
    "How sampled lengths are drawn: uniform over the 4^L sequences, or 'varied' (each sequence its own "
    "character frequencies: more long runs and large sums).")
_TRAIN_FRACTION = flags.DEFINE_float(
    "train_fraction", 0.25, "Share of the sequences used for training; the rest is held out. In (0, 1).")
# Model.
_LSTM_SIZE = flags.DEFINE_list(
    "lstm_size", ["24"], f"Units per LSTM layer, 1..{MAX_LSTM_SIZE}; a comma list (8,16,24) trains one run each.")
_NUM_LAYERS = flags.DEFINE_integer("num_layers", 1, "Stacked LSTM layers.", lower_bound=1, upper_bound=16)
_READOUT = flags.DEFINE_enum(
    "readout", "cell", list(READOUTS), "The per-step prediction is a linear function of the last layer's "
    "hidden state h or its cell state c (c is unbounded, so large sums stay representable).")
_RECURRENT_ACTIVATION = flags.DEFINE_enum(
    "recurrent_activation", "sigmoid", list(cell_lib.RECURRENT_ACTIVATIONS), "Gate activation σ.")
_INITIALIZER = flags.DEFINE_enum(
    "initializer", "reference", list(cell_lib.INITIALIZERS),
    "Weight initialiser: 'reference' is the notebook's truncated normal (mean -0.2, std 0.1).")
_FORGET_BIAS = flags.DEFINE_float("forget_bias", 1.0, "Initial value of the forget-gate bias b_f.")
# Optimisation.
_TARGET = flags.DEFINE_enum(
    "target", "running", list(TARGETS),
    "Loss on every step's running sum, or on the final sum only (the reference's choice).")
_EPOCHS = flags.DEFINE_integer("epochs", 400, "Passes over the training set.", lower_bound=1, upper_bound=10_000_000)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 128, "Sequences per update; 0 means the whole training set (the reference's choice).",
    lower_bound=0, upper_bound=10_000_000)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 0.03, "Adam's learning rate at the first epoch, > 0.")
_LEARNING_RATE_DECAY = flags.DEFINE_float(
    "learning_rate_decay", 0.1, "By the last epoch the learning rate has decayed (exponentially) to this "
    "fraction of --learning_rate; 1 keeps it constant. In (0, 1].")
_CLIP_NORM = flags.DEFINE_float("clip_norm", None, "If set, gradients are scaled down to this global norm.")
_WEIGHT_DECAY = flags.DEFINE_float(
    "weight_decay", 0.0, "Decoupled weight decay (AdamW): each step every weight shrinks by lr * this.",
    lower_bound=0.0, upper_bound=1.0)
_READOUT_L1 = flags.DEFINE_float(
    "readout_l1", 0.0, "L1 penalty on the readout weights W_out, as a proximal step after each update: every "
    "readout weight moves lr * this towards 0 and stops at 0. In [0, 1].", lower_bound=0.0, upper_bound=1.0)
_READOUT_L1_EPOCHS = flags.DEFINE_integer(
    "readout_l1_epochs", None, "Apply --readout_l1 in the last this many epochs only; default: in every epoch.",
    lower_bound=1, upper_bound=10_000_000)
_PREACTIVATION_NOISE = flags.DEFINE_float(
    "preactivation_noise", 1.0, "Standard deviation of Gaussian noise added to every gate preactivation in "
    "training steps (never when scoring); 0 for none (the notebook). In [0, 100].", lower_bound=0.0,
    upper_bound=100.0)
_NOISE_FREE_EPOCHS = flags.DEFINE_integer(
    "noise_free_epochs", 0, "The last this many epochs train without --preactivation_noise, so that the model "
    "is calibrated for scoring, which never adds noise. At most --epochs.", lower_bound=0, upper_bound=10_000_000)
_NOISE_FREE_LEARNING_RATE = flags.DEFINE_float(
    "noise_free_learning_rate", None, "If set, Adam's (constant) learning rate in the --noise_free_epochs; "
    "default: the --learning_rate schedule goes on.")
_NOISE_FREE_SAMPLING = flags.DEFINE_enum(
    "noise_free_sampling", None, list(data_generator.SAMPLINGS),
    "How the training sequences of the --noise_free_epochs are drawn: a second training set of the same size "
    "and lengths (the held-out set stays). Default: as --sampling, the one training set throughout. Only "
    "sampled lengths (4^L > --max_sequences_per_length) can differ.")
_SEED = flags.DEFINE_integer("seed", 0, "Fixes the data shuffle, the initial weights, the batch order and the noise.",
                             lower_bound=0, upper_bound=2**31 - 1)
_RESTART_EPOCH = flags.DEFINE_integer(
    "restart_epoch", 0, "If > 0: at the end of this epoch a run whose held-out final-sum error is above "
    "--restart_error is given up (its directory moved aside, kept) and trained again from the start as "
    "--seed=SEED+1 would be, up to --max_restarts times. 0: never. Less than --epochs.",
    lower_bound=0, upper_bound=10_000_000)
_RESTART_ERROR = flags.DEFINE_float(
    "restart_error", 0.0, "The held-out final-sum error (a share, in [0, 1)) a run may have at --restart_epoch.",
    lower_bound=0.0)
_RESTART_MSE = flags.DEFINE_float(
    "restart_mse", None, "If set: the held-out mean square error a run may have at --restart_epoch; above it the "
    "run is given up too, even with no error. > 0.")
_MAX_RESTARTS = flags.DEFINE_integer(
    "max_restarts", 3, "How many times --restart_epoch may start a run over; the last try trains to the end.",
    lower_bound=0, upper_bound=100)
_BACKPROP = flags.DEFINE_enum(
    "backprop", "bptt", list(BACKPROP_MODES), "Hand-written backpropagation through time, or TF's autodiff.")
_UNROLL = flags.DEFINE_boolean("unroll", True, "Unroll the time loop when every batch has the same length.")
_JIT_COMPILE = flags.DEFINE_enum(
    "jit_compile", "auto", ["auto", "true", "false"],
    "Compile the training step with XLA; 'auto': when every sequence has the same length (one compile).")
# Output.
_LOGDIR = flags.DEFINE_string("logdir", "logs", "TensorBoard root: runs go to <logdir>/<run_name>.")
_RUN_NAME = flags.DEFINE_string("run_name", None, "Run directory name under --logdir; default: a timestamp.")
_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "Where the SavedModel goes; default <run dir>/saved_model.")
_EVAL_EVERY = flags.DEFINE_integer(
    "eval_every", 10, "Evaluate, log and print every this many epochs.", lower_bound=1, upper_bound=10_000_000)
_CHECKPOINT_EVERY = flags.DEFINE_integer(
    "checkpoint_every", 100, "Checkpoint every this many epochs (and at the end).", lower_bound=1,
    upper_bound=10_000_000)
_HISTOGRAM_EVERY = flags.DEFINE_integer(
    "histogram_every", 100, "Histograms of every gate variable and its gradient every this many epochs; 0: never.",
    lower_bound=0, upper_bound=10_000_000)
_IMAGE_EVERY = flags.DEFINE_integer(
    "image_every", 100, "Gate heat maps of --gate_examples every this many epochs (at evaluations); 0: never.",
    lower_bound=0, upper_bound=10_000_000)
_GATE_EXAMPLES = flags.DEFINE_list(
    "gate_examples", ["++I--0+", "+I-0I+-"], "Sequences whose gates are drawn as heat maps in the Images tab.")
_FRESH = flags.DEFINE_boolean(
    "fresh", False, "Start the run over; an existing run directory is renamed aside (and the new name printed).")

# Settings that shape the variables or the data: a resumed run must keep them.
RESUME_MUST_MATCH = (
    "sequence_length", "min_length", "max_length", "max_sequences_per_length", "sampling", "noise_free_sampling",
    "train_fraction", "lstm_size", "num_layers", "readout", "recurrent_activation", "initializer", "forget_bias",
    "seed",
)


def _lstm_sizes(values: list[str]) -> bool:
    return all(v.strip().isdigit() and 1 <= int(v) <= MAX_LSTM_SIZE for v in values) and len(values) > 0


flags.register_validator(
    "lstm_size", _lstm_sizes, message=f"--lstm_size must be integers in [1, {MAX_LSTM_SIZE}], e.g. 24 or 8,16,24")
flags.register_validator(
    "train_fraction", lambda v: 0.0 < v < 1.0, message="--train_fraction must be in (0, 1), e.g. 0.25")
flags.register_validator(
    "learning_rate", lambda v: 0.0 < v < 1e38, message="--learning_rate must be > 0 (and a float32), e.g. 0.05")
flags.register_validator(
    "learning_rate_decay", lambda v: 0.0 < v <= 1.0, message="--learning_rate_decay must be in (0, 1], e.g. 0.1")
flags.register_validator(
    "noise_free_learning_rate", lambda v: v is None or 0.0 < v < 1e38,
    message="--noise_free_learning_rate must be > 0 (and a float32), e.g. 0.00005")
flags.register_validator(
    "restart_error", lambda v: 0.0 <= v < 1.0, message="--restart_error must be in [0, 1), e.g. 0.01 for 1%")
flags.register_validator(
    "restart_mse", lambda v: v is None or 0.0 < v < math.inf, message="--restart_mse must be > 0, e.g. 0.003")
flags.register_validator("clip_norm", lambda v: v is None or v > 0.0, message="--clip_norm must be > 0")
flags.register_validator(
    "forget_bias", lambda v: math.isfinite(v) and abs(v) <= 100, message="--forget_bias must be in [-100, 100]")
flags.register_validator(
    "gate_examples", lambda values: all(v and set(v) <= set(data_generator.ALPHABET) for v in values),
    message=f"--gate_examples must be sequences over {data_generator.ALPHABET!r}, e.g. ++I--0+,+I-0I+-")
flags.register_validator(
    "run_name", lambda v: v is None or (v.strip() != "" and ".." not in v.split("/") and not v.startswith("/")),
    message="--run_name must be a non-empty relative name without '..'")


@flags.multi_flags_validator(["min_length", "max_length"], message="--min_length and --max_length go together, "
                             "with --min_length <= --max_length")
def _length_range(values: dict) -> bool:
    low, high = values["min_length"], values["max_length"]
    return (low is None) == (high is None) and (low is None or low <= high)


@flags.multi_flags_validator(["noise_free_epochs", "epochs"], message="--noise_free_epochs must be at most --epochs")
def _noise_free_within_epochs(values: dict) -> bool:
    return values["noise_free_epochs"] <= values["epochs"]


@flags.multi_flags_validator(
    ["noise_free_epochs", "noise_free_learning_rate", "noise_free_sampling"],
    message="--noise_free_learning_rate and --noise_free_sampling act on the --noise_free_epochs; set that too")
def _noise_free_settings_need_noise_free_epochs(values: dict) -> bool:
    unused = values["noise_free_learning_rate"] is not None or values["noise_free_sampling"] is not None
    return values["noise_free_epochs"] > 0 or not unused


@flags.multi_flags_validator(["restart_epoch", "epochs"], message="--restart_epoch must be less than --epochs")
def _restart_within_epochs(values: dict) -> bool:
    return values["restart_epoch"] < values["epochs"]


@flags.multi_flags_validator(
    ["restart_mse", "restart_epoch"], message="--restart_mse acts at --restart_epoch; set that too")
def _restart_mse_needs_restart_epoch(values: dict) -> bool:
    return values["restart_mse"] is None or values["restart_epoch"] > 0


@flags.multi_flags_validator(["readout_l1_epochs", "epochs"], message="--readout_l1_epochs must be at most --epochs")
def _readout_l1_within_epochs(values: dict) -> bool:
    return values["readout_l1_epochs"] is None or values["readout_l1_epochs"] <= values["epochs"]


@flags.multi_flags_validator(
    ["sequence_length", "max_length", "max_sequences_per_length"],
    message=f"the training data would exceed {MAX_CHARACTERS_IN_MEMORY:,} characters "
    "(--max_sequences_per_length x the longest length); lower one of them")
def _data_fits(values: dict) -> bool:
    longest = values["max_length"] or values["sequence_length"]
    per_length = min(values["max_sequences_per_length"], 4 ** min(longest, 16))
    return per_length * longest <= MAX_CHARACTERS_IN_MEMORY


_OWN_FLAGS = {flag.name for flag in flags.FLAGS.get_key_flags_for_module(sys.modules[__name__])}


def settings_from_flags(lstm_size: int, run_name: str) -> dict:
    """Every setting of one run, as plain values (saved as the run's config.json)."""
    settings = {name: flags.FLAGS[name].value for name in flags.FLAGS if name in _OWN_FLAGS}
    settings.update(
        lstm_size=lstm_size,
        run_name=run_name,
        min_length=_MIN_LENGTH.value or _SEQUENCE_LENGTH.value,
        max_length=_MAX_LENGTH.value or _SEQUENCE_LENGTH.value,
        noise_free_sampling=_NOISE_FREE_SAMPLING.value or _SAMPLING.value,
        restarts=[],
    )
    return settings


def run_dir_of(settings: dict) -> str:
    return os.path.join(settings["logdir"], settings["run_name"])


def first_noise_free_epoch(settings: dict) -> int:
    """The first (0-based) of the --noise_free_epochs; --epochs when there are none."""
    return settings["epochs"] - settings["noise_free_epochs"]


def learning_rate_at(epoch: int, settings: dict) -> float:
    """--learning_rate at the first epoch, decaying exponentially to --learning_rate_decay times it by the last;
    --noise_free_learning_rate instead, if set, in the --noise_free_epochs."""
    if settings["noise_free_learning_rate"] and epoch >= first_noise_free_epoch(settings):
        return settings["noise_free_learning_rate"]
    if settings["epochs"] <= 1:
        return settings["learning_rate"]
    return settings["learning_rate"] * settings["learning_rate_decay"] ** (epoch / (settings["epochs"] - 1))


def set_epoch_schedule(trainer: Trainer, epoch: int, settings: dict) -> None:
    """Sets what changes by epoch for the epoch about to run (0-based): the learning rate, and the
    --readout_l1 strength, which is 0 before the last --readout_l1_epochs epochs."""
    trainer.optimizer.learning_rate.assign(learning_rate_at(epoch, settings))
    if trainer.readout_l1 is not None:
        penalised = epoch >= settings["epochs"] - (settings["readout_l1_epochs"] or settings["epochs"])
        trainer.readout_l1.assign(settings["readout_l1"] if penalised else 0.0)


class StopRequest:
    """Turns Ctrl-C (SIGINT) into a request that the loop honours at the end of an epoch."""

    def __init__(self):
        self.requested = False
        self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this epoch (Ctrl-C again to stop at once)...", flush=True)

    def restore(self):
        signal.signal(signal.SIGINT, self._previous)


def hparams_of(settings: dict) -> dict:
    """The settings shown in TensorBoard's HParams tab (numbers and strings only; 0 means off)."""
    names = ("lstm_size", "num_layers", "min_length", "max_length", "learning_rate", "learning_rate_decay",
             "batch_size", "epochs", "target", "readout", "recurrent_activation", "initializer", "forget_bias",
             "weight_decay", "readout_l1", "preactivation_noise", "noise_free_epochs", "sampling",
             "noise_free_sampling", "backprop", "seed")
    hparams = {name: settings[name] for name in names}
    hparams["clip_norm"] = settings["clip_norm"] or 0.0
    hparams["noise_free_learning_rate"] = settings["noise_free_learning_rate"] or 0.0
    hparams["readout_l1_epochs"] = settings["readout_l1_epochs"] or settings["epochs"]
    return hparams


def move_aside(run_dir: str, label: str) -> str:
    """Renames `run_dir` to `<run_dir>.<label>` (plus a timestamp if that is taken); returns the new path."""
    aside = f"{run_dir}.{label}"
    if os.path.exists(aside):
        aside += datetime.datetime.now().strftime("-%Y%m%d-%H%M%S")
    os.rename(run_dir, aside)
    return aside


def prepare_run_dir(run_dir: str, fresh: bool) -> None:
    if fresh and os.path.exists(run_dir):
        aside = move_aside(run_dir, datetime.datetime.now().strftime("replaced-%Y%m%d-%H%M%S"))
        print(f"--fresh: moved the existing run {run_dir} to {aside}")


def restart_in_progress(settings: dict) -> dict:
    """The `seed` and `restarts` of a run directory that a --restart_epoch restart of this command
    started (so that rerunning the command resumes it); empty if there is none."""
    saved = None if settings["fresh"] or not settings["restart_epoch"] else read_config(run_dir_of(settings))
    if saved is None or not settings["seed"] < saved.get("seed", -1) <= settings["seed"] + settings["max_restarts"]:
        return {}
    return {"seed": saved["seed"], "restarts": saved.get("restarts", [])}


def train_with_restarts(settings: dict) -> dict:
    """`train`, started over as --seed=SEED+1, SEED+2, ... while a run has not learned by --restart_epoch.
    A given-up run keeps its directory, renamed `<run>.seed<N>-not-learned`."""
    first_seed = settings["seed"]
    settings = {**settings, **restart_in_progress(settings)}
    while True:
        may_restart = settings["restart_epoch"] > 0 and settings["seed"] < first_seed + settings["max_restarts"]
        summary = train(settings, may_restart)
        if not summary.get("not_learned"):
            return summary
        seed = settings["seed"]
        aside = move_aside(run_dir_of(settings), f"seed{seed}-not-learned")
        print(f"epoch {summary['epoch']}: {summary['reason']}: seed {seed} given up (its run moved to {aside}); "
              f"starting over as --seed={seed + 1}")
        given_up = {name: summary[name] for name in
                    ("seed", "epoch", "measured", "reason", "test_error", "test_mse", "seconds")}
        settings = {**settings, "seed": seed + 1, "fresh": False,
                    "restarts": [*settings["restarts"], {**given_up, "run_dir": aside}]}


def not_learned_because(held_out: dict[str, float], settings: dict) -> tuple[str, str] | None:
    """If a run with these held-out metrics at --restart_epoch has not learned: the measure that says so
    ("67.03%" or "mse 0.0046") and why, in a sentence; None if it has learned."""
    if held_out["error"] > settings["restart_error"]:
        error = f"{100 * held_out['error']:.2f}%"
        return error, f"held-out error {error} is above --restart_error={100 * settings['restart_error']:.2f}%"
    if settings["restart_mse"] is not None and held_out["mean_square_error"] > settings["restart_mse"]:
        mse = f"mse {held_out['mean_square_error']:.3g}"
        return mse, f"held-out {mse} is above --restart_mse={settings['restart_mse']:g}"
    return None


def evaluate(trainer: Trainer, examples: data_generator.Examples) -> dict[str, float]:
    metrics = trainer.evaluate(
        tf.constant(examples.inputs), tf.constant(examples.running_sums), tf.constant(examples.lengths)
    )
    return {name: float(value) for name, value in metrics.items()}


def train(settings: dict, may_restart: bool = False) -> dict:
    """One training run; returns its summary (also written to <run dir>/results.json).

    With `may_restart`, a run whose held-out error at --restart_epoch is above --restart_error stops
    there (checkpointed) and returns `{"not_learned": True, ...}` instead.
    """
    run_dir = run_dir_of(settings)
    prepare_run_dir(run_dir, settings["fresh"])
    check_or_write_config(run_dir, settings, RESUME_MUST_MATCH)
    tf.config.experimental.enable_op_determinism()

    data_settings = (settings["min_length"], settings["max_length"], settings["train_fraction"], settings["seed"],
                     settings["max_sequences_per_length"])
    train_examples, test_examples = data_generator.make_splits(*data_settings, settings["sampling"])
    noise_free_examples = (train_examples if settings["noise_free_sampling"] == settings["sampling"] else
                           data_generator.make_splits(*data_settings, settings["noise_free_sampling"])[0])
    model_config = ModelConfig(
        input_size=data_generator.NUM_FEATURES, units=settings["lstm_size"], num_layers=settings["num_layers"],
        readout=settings["readout"], recurrent_activation=settings["recurrent_activation"],
        forget_bias=settings["forget_bias"], initializer=settings["initializer"], seed=settings["seed"])
    model = LSTMModel(model_config, backprop=settings["backprop"], unroll=settings["unroll"])
    optimizer = Adam(model.trainable_variables, learning_rate=settings["learning_rate"],
                     weight_decay=settings["weight_decay"])
    full_length_batches = settings["min_length"] == settings["max_length"] or settings["batch_size"] > 0
    jit_compile = {"true": True, "false": False}.get(
        settings["jit_compile"], settings["min_length"] == settings["max_length"])
    trainer = Trainer(model, optimizer, settings["target"], jit_compile, settings["clip_norm"], full_length_batches,
                      settings["preactivation_noise"], settings["seed"], settings["readout_l1"])

    checkpoint = RunCheckpoint(run_dir, model, optimizer)
    start_epoch = checkpoint.restore_latest()
    epochs = settings["epochs"]
    if start_epoch:
        print(f"resuming from epoch {start_epoch} ({checkpoint.latest})")
    print(f"run {run_dir}: {len(train_examples)} training / {len(test_examples)} held-out sequences, "
          f"lengths {settings['min_length']}..{settings['max_length']}, lstm_size {settings['lstm_size']}, "
          f"epochs {start_epoch + 1}..{epochs}")

    writers = RunWriters(run_dir)
    if start_epoch == 0:
        write_hparams(run_dir, hparams_of(settings), trial_id=f"{settings['run_name']} seed {settings['seed']}")
    gate_examples = {name: data_generator.encode_sequence(name) for name in settings["gate_examples"]}
    progress = Progress(total=epochs, start=start_epoch)
    stop = StopRequest()
    started = time.perf_counter()
    first_perfect_epoch = None
    completed = start_epoch
    trace_graph = start_epoch == 0
    whole_training_set = [tf.constant(a) for a in
                          (train_examples.inputs, train_examples.running_sums, train_examples.lengths)]

    def given_up_at(epoch: int, held_out: dict[str, float]) -> dict | None:
        """At --restart_epoch, if the run has not learned: checkpoints it and says why it stops."""
        if epoch != settings["restart_epoch"]:
            return None
        because = not_learned_because(held_out, settings)
        if because is None:
            return None
        measured, reason = because
        if not may_restart:
            progress.close()
            print(f"epoch {epoch}: {reason}, but no restart is left (--max_restarts={settings['max_restarts']}): "
                  "training on")
            return None
        checkpoint.save(epoch)
        writers.flush()
        not_learned = {"not_learned": True, "seed": settings["seed"], "epoch": epoch, "measured": measured,
                       "reason": reason, "test_error": held_out["error"], "test_mse": held_out["mean_square_error"],
                       "seconds": round(time.perf_counter() - started, 2)}
        write_json_atomically(os.path.join(run_dir, "results.json"), not_learned)
        return not_learned

    try:
        if 0 < start_epoch == settings["restart_epoch"] and (
                not_learned := given_up_at(start_epoch, evaluate(trainer, test_examples))):
            return not_learned
        noisy_end = max(start_epoch, first_noise_free_epoch(settings))
        batches = data_generator.training_batches(
            train_examples, settings["batch_size"], settings["seed"], range(start_epoch, noisy_end))
        if noisy_end < epochs:
            batches = batches.concatenate(data_generator.training_batches(
                noise_free_examples, settings["batch_size"], settings["seed"], range(noisy_end, epochs)))
        set_epoch_schedule(trainer, start_epoch, settings)
        for epoch, last_in_epoch, inputs, targets, lengths in batches:
            if trace_graph:  # the Graphs tab shows the training step (as traced, before XLA)
                with writers.train.as_default():
                    tf.summary.graph(trainer.train_step.get_concrete_function(inputs, targets, lengths).graph)
                trace_graph = False
            epoch = int(epoch)
            step = trainer.train_step if epoch < noisy_end else trainer.noise_free_train_step
            loss = step(inputs, targets, lengths)
            if not last_in_epoch:
                continue
            loss = float(loss)
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"training stopped: the loss became {loss} in epoch {epoch + 1} "
                    f"(learning rate {learning_rate_at(epoch, settings):g}); the last good checkpoint "
                    f"{checkpoint.latest or '(none yet)'} is untouched; lower --learning_rate and rerun")
            completed = epoch + 1
            set_epoch_schedule(trainer, completed, settings)
            if completed % settings["eval_every"] == 0 or completed in (epochs, settings["restart_epoch"]):
                train_metrics = evaluate(trainer, train_examples)
                test_metrics = evaluate(trainer, test_examples)
                write_scalars(writers.train, train_metrics, completed)
                write_scalars(writers.test, test_metrics, completed)
                if test_metrics["error"] == 0.0 and first_perfect_epoch is None:
                    first_perfect_epoch = (completed, time.perf_counter() - started)
                if settings["image_every"] and (completed % settings["image_every"] == 0 or completed == epochs):
                    write_gate_images(writers.test, model, gate_examples, completed)
                progress.update(completed, {
                    "train_mse": train_metrics["mean_square_error"],
                    "test_error": f"{100 * test_metrics['error']:.2f}%",
                    "test_mse": test_metrics["mean_square_error"],
                    "time": f"{time.perf_counter() - started:.1f}s",
                })
                if not stop.requested and (not_learned := given_up_at(completed, test_metrics)):
                    return not_learned
            if settings["histogram_every"] and (completed % settings["histogram_every"] == 0 or completed == epochs):
                _, gradients = trainer.gradients(*whole_training_set)
                write_histograms(writers.train, model.trainable_variables, gradients, completed)
            if completed % settings["checkpoint_every"] == 0 or completed == epochs or stop.requested:
                checkpoint.save(completed)
                writers.flush()
            if stop.requested:
                print(f"interrupted after epoch {completed}; checkpoint saved to {checkpoint.latest}. "
                      "Run the same command to resume.")
                return {"interrupted": True, "completed_epochs": completed}
    finally:
        stop.restore()
        progress.close()
        writers.close()
    elapsed = time.perf_counter() - started

    export_dir = settings["export_dir"] or os.path.join(run_dir, "saved_model")
    metadata = {
        "model_config": model_config.to_dict(),
        "settings": settings,
        "reference_function": "data_generator:final_sum",
        "alphabet": list(data_generator.ENCODING),
    }
    export(SequenceScorer(model, data_generator.ENCODING), export_dir, metadata)
    summary = {
        "run_dir": run_dir,
        "export_dir": export_dir,
        "epochs": epochs,
        "resumed_from_epoch": start_epoch,
        "seconds": round(elapsed, 2),
        "machine": machine.describe(),
        "train": evaluate(trainer, train_examples),
        "test": evaluate(trainer, test_examples),
        "first_zero_test_error": None if first_perfect_epoch is None else
        {"epoch": first_perfect_epoch[0], "seconds": round(first_perfect_epoch[1], 2)},
        "seed": settings["seed"],
        "restarts": settings["restarts"],
    }
    write_json_atomically(os.path.join(run_dir, "results.json"), summary)
    return summary


def main(argv: list[str]) -> int:
    logging.set_verbosity(logging.WARNING)
    tf.get_logger().setLevel("ERROR")
    if len(argv) > 1:
        print(f"error: unexpected arguments {argv[1:]}; all settings are --flags (see --help)", file=sys.stderr)
        return 2
    sizes = [int(v) for v in _LSTM_SIZE.value]
    base_name = _RUN_NAME.value or datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for size in sizes:
        sweep = len(sizes) > 1
        run_name = os.path.join(base_name, f"lstm_size_{size}") if sweep else base_name
        settings = settings_from_flags(size, run_name)
        if sweep and settings["export_dir"]:
            settings["export_dir"] = os.path.join(settings["export_dir"], f"lstm_size_{size}")
        try:
            summary = train_with_restarts(settings)
        except (ConfigMismatchError, FloatingPointError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        if summary.get("interrupted"):
            return 130
        print_summary(summary)
    return 0


def print_summary(summary: dict) -> None:
    test, train_metrics = summary["test"], summary["train"]
    resumed, epochs = summary["resumed_from_epoch"], summary["epochs"]
    if resumed == epochs:
        trained = f"no epochs left to train (the run had completed all {epochs})"
    else:
        trained = f"epochs {resumed + 1}..{epochs}" if resumed else f"{epochs} epochs"
    print(f"done: {trained} in {summary['seconds']:.1f}s")
    if summary["restarts"]:
        given_up = ", ".join(
            f"seed {r['seed']} ({r.get('measured', format(r['test_error'], '.2%'))} at epoch {r['epoch']}, "
            f"{r['seconds']:.0f}s)"
            for r in summary["restarts"])
        in_all = summary["seconds"] + sum(r["seconds"] for r in summary["restarts"])
        print(f"  trained as --seed={summary['seed']} after giving up {given_up}; {in_all:.1f}s of training in all")
    print(f"  held-out: error {100 * test['error']:.2f}% (final sum), {100 * test['error_per_step']:.2f}% "
          f"(per step), mse {test['mean_square_error']:.3g}")
    print(f"  training: error {100 * train_metrics['error']:.2f}%, mse {train_metrics['mean_square_error']:.3g}")
    first = summary["first_zero_test_error"]
    if first:
        after = f" after resuming from epoch {resumed}" if resumed else ""
        print(f"  0.00% held-out error first reached{after} at epoch {first['epoch']} ({first['seconds']:.1f}s)")
    print(f"  SavedModel: {summary['export_dir']}")


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
