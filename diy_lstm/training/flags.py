"""The flags every training command line shares (model, training, output, restarts), the typed
configs built from them, and `--lstm_size` sweeps. Importing this module defines the flags, each with
its config field's default; a task's command line defines its own beside them and gives the shared
ones its own defaults as typed configs (`use_defaults`). The checks are the configs'.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Iterator

from absl import flags

from diy_lstm.cell import INITIALIZERS, RECURRENT_ACTIVATIONS
from diy_lstm.model import READOUTS, ModelConfig
from diy_lstm.training.config import (
    BACKPROP_MODES,
    JIT_COMPILE_MODES,
    MAX_CPU_DEVICES,
    STRATEGIES,
    ConfigError,
    RestartConfig,
    RunConfig,
    TrainingConfig,
)

MAX_LSTM_SIZE = 4096
_MANY = 10_000_000

# Model. `lstm_size` is the flag's name for `ModelConfig.units`: the size of h and c in every layer.
_LSTM_SIZE = flags.DEFINE_list(
    "lstm_size", ["24"], f"Units per LSTM layer, 1..{MAX_LSTM_SIZE}; a comma list (8,16,24) trains one run each."
)
_MODEL_FLAGS: dict[str, flags.FlagHolder] = {}  # ModelConfig field -> its flag (every one but lstm_size)


def _model_flag(field: str, help_text: str, choices: tuple[str, ...] = (), **bounds) -> None:
    """Defines the flag of one `ModelConfig` field, of the field's kind, with its default."""
    default = ModelConfig.__dataclass_fields__[field].default
    if choices:
        _MODEL_FLAGS[field] = flags.DEFINE_enum(field, default, list(choices), help_text)
    elif isinstance(default, bool):
        _MODEL_FLAGS[field] = flags.DEFINE_boolean(field, default, help_text)
    elif isinstance(default, int):
        _MODEL_FLAGS[field] = flags.DEFINE_integer(field, default, help_text, **bounds)
    else:
        _MODEL_FLAGS[field] = flags.DEFINE_float(field, default, help_text)


_model_flag("num_layers", "Stacked LSTM layers.", lower_bound=1, upper_bound=16)
_model_flag("readout", "The output reads the last layer's h or c.", READOUTS)
_model_flag("recurrent_activation", "Gate activation σ.", tuple(RECURRENT_ACTIVATIONS))
_model_flag("initializer", "'reference': the notebook's truncated normal (-0.2, 0.1).", tuple(INITIALIZERS))
_model_flag("forget_bias", "Initial forget-gate bias b_f, in [-100, 100].")
_model_flag("peephole", "Peephole connections: the gates see the cell state (diy_lstm/cell.py).")
# Training.
_EPOCHS = flags.DEFINE_integer(
    "epochs", TrainingConfig.epochs, "Passes over the training data.", lower_bound=1, upper_bound=_MANY
)
_MAX_SECONDS = flags.DEFINE_float(
    "max_seconds",
    TrainingConfig.max_seconds,
    "If > 0: train as many epochs as fit in this many seconds of training steps (measured when the run "
    "starts; printed, and kept on resume); the learning rate decays over them. --epochs is then ignored.",
    lower_bound=0.0,
    upper_bound=1e9,
)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size",
    TrainingConfig.batch_size,
    "Examples per update; 0: the whole training set.",
    lower_bound=0,
    upper_bound=_MANY,
)
_LEARNING_RATE = flags.DEFINE_float(
    "learning_rate", TrainingConfig.learning_rate, "Adam's learning rate at the first epoch, > 0."
)
_LEARNING_RATE_DECAY = flags.DEFINE_float(
    "learning_rate_decay",
    TrainingConfig.learning_rate_decay,
    "Fraction of --learning_rate reached (exponentially) by the last epoch; in (0, 1].",
)
_CLIP_NORM = flags.DEFINE_float(
    "clip_norm", TrainingConfig.clip_norm, "If set, gradients are scaled down to this global norm."
)
_WEIGHT_DECAY = flags.DEFINE_float(
    "weight_decay", TrainingConfig.weight_decay, "Decoupled (AdamW) weight decay, in [0, 1]."
)
_PREACTIVATION_NOISE = flags.DEFINE_float(
    "preactivation_noise",
    TrainingConfig.preactivation_noise,
    "Std of Gaussian noise on every gate preactivation in training, in [0, 100].",
)
_NOISE_FREE_EPOCHS = flags.DEFINE_integer(
    "noise_free_epochs",
    TrainingConfig.noise_free_epochs,
    "The last this many epochs train without --preactivation_noise.",
    lower_bound=0,
)
_NOISE_DISTRIBUTION = flags.DEFINE_enum(
    "noise_distribution",
    TrainingConfig.noise_distribution,
    ["normal", "table"],
    "normal: every value drawn; table: Gaussian values drawn once, read at a random offset each step (a tenth "
    "of the cost).",
)
_STOP_AT_GOAL = flags.DEFINE_boolean(
    "stop_at_goal",
    TrainingConfig.stop_at_goal,
    "Stop (checkpoint and export) at the first evaluation that reaches the task's goal.",
)
_SEED = flags.DEFINE_integer(
    "seed",
    TrainingConfig.seed,
    "Fixes the data, the initial weights, the batch order and the noise.",
    lower_bound=0,
    upper_bound=2**31 - 1,
)
_BACKPROP = flags.DEFINE_enum(
    "backprop", TrainingConfig.backprop, list(BACKPROP_MODES), "Hand-written BPTT, or TF's autodiff."
)
_INLINE_LOOPS = flags.DEFINE_boolean(
    "inline_loops",
    TrainingConfig.inline_loops,
    "Write the time loop out as straight-line ops when every batch has the same few (<= 16) "
    "steps (loop unrolling; not the text task's --unroll_length window).",
)
_JIT_COMPILE = flags.DEFINE_enum(
    "jit_compile",
    TrainingConfig.jit_compile,
    list(JIT_COMPILE_MODES),
    "XLA for the training step; 'auto': when lengths are fixed.",
)
# Restarts.
_RESTART_EPOCH = flags.DEFINE_integer(
    "restart_epoch",
    RestartConfig.epoch,
    "If > 0: a run that has not learned by this epoch starts over as the next seed.",
    lower_bound=0,
    upper_bound=_MANY,
)
_MAX_RESTARTS = flags.DEFINE_integer(
    "max_restarts",
    RestartConfig.max_restarts,
    "How many times --restart_epoch may start a run over.",
    lower_bound=0,
    upper_bound=100,
)
# Output.
_LOGDIR = flags.DEFINE_string("logdir", RunConfig.logdir, "TensorBoard root: runs go to <logdir>/<run_name>.")
_RUN_NAME = flags.DEFINE_string("run_name", None, "Run directory name under --logdir; default: a timestamp.")
_EXPORT_DIR = flags.DEFINE_string(
    "export_dir", RunConfig.export_dir, "Where the SavedModel goes; default <run dir>/saved_model."
)
_EVAL_EVERY = flags.DEFINE_integer(
    "eval_every", RunConfig.eval_every, "Evaluate and print every this many epochs.", lower_bound=1
)
_CHECKPOINT_EVERY = flags.DEFINE_integer(
    "checkpoint_every", RunConfig.checkpoint_every, "Checkpoint every this many epochs.", lower_bound=1
)
_HISTOGRAM_EVERY = flags.DEFINE_integer(
    "histogram_every", RunConfig.histogram_every, "Weight/gradient histograms; 0: never.", lower_bound=0
)
_IMAGE_EVERY = flags.DEFINE_integer(
    "image_every", RunConfig.image_every, "Gate heat maps, at evaluations; 0: never.", lower_bound=0
)
_LOSS_EVERY = flags.DEFINE_integer(
    "loss_every",
    RunConfig.loss_every,
    "The training batch's loss and error every this many steps (<run>/train_steps); 0: never.",
    lower_bound=0,
)
_VALIDATE_EVERY = flags.DEFINE_integer(
    "validate_every",
    RunConfig.validate_every,
    "The validation split's loss and error every this many steps (<run>/validation_steps); 0: never.",
    lower_bound=0,
)
_CHECK_EVERY = flags.DEFINE_integer(
    "check_every",
    RunConfig.check_every,
    "Evaluations every this many epochs include the task's check (the counter's long sequences); 0: every one.",
    lower_bound=0,
)
_FRESH = flags.DEFINE_boolean("fresh", RunConfig.fresh, "Start over; an existing run directory is renamed aside.")
# Where the steps run (docs/distribute.md).
_STRATEGY = flags.DEFINE_enum(
    "strategy",
    RunConfig.strategy,
    list(STRATEGIES),
    "default: one device; mirrored: every local GPU (or --cpu_devices); multi_worker: the workers TF_CONFIG names.",
)
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices",
    RunConfig.cpu_devices,
    "With --strategy=mirrored and no GPU: split the CPU into this many logical devices (replicas).",
    lower_bound=0,
    upper_bound=MAX_CPU_DEVICES,
)
_WORKER_START_TIMEOUT = flags.DEFINE_float(
    "worker_start_timeout",
    RunConfig.worker_start_timeout,
    "multi_worker: give up (one line, exit 1) if the other workers have not all started within this many seconds.",
    lower_bound=1.0,
    upper_bound=86400.0,
)

flags.register_validator(
    "lstm_size",
    lambda values: (
        bool(values)
        and all(v.strip().isascii() and v.strip().isdigit() and 1 <= int(v) <= MAX_LSTM_SIZE for v in values)
    ),
    message=f"--lstm_size must be integers in [1, {MAX_LSTM_SIZE}], e.g. 24 or 8,16,24",
)
flags.register_validator(  # each size trains in its own directory: a size given twice would train it twice
    "lstm_size",
    lambda values: len({int(v) for v in values}) == len(values),
    message="--lstm_size names a size more than once; each size trains one run",
)


def use_defaults(
    model: ModelConfig | None = None, training: TrainingConfig | None = None, run: RunConfig | None = None
) -> None:
    """A task's defaults for the shared flags, given as typed configs (so checked when made): every
    shared flag takes the value its field holds in the configs given (`lstm_size`: `model.units`)."""
    values = {}
    if model is not None:
        values.update({name: getattr(model, name) for name in _MODEL_FLAGS}, lstm_size=[str(model.units)])
    if training is not None:
        values.update(dataclasses.asdict(training))
    if run is not None:
        values.update(
            {
                field.name: getattr(run, field.name)
                for field in dataclasses.fields(run)
                if field.name not in ("run_name", "restart", "sample_every")
            }
        )  # (a timestamp; two flags; text's)
        values.update(restart_epoch=run.restart.epoch, max_restarts=run.restart.max_restarts)
    for name, value in values.items():
        flags.FLAGS.set_default(name, value)


def model_config(units: int, input_size: int, output_size: int = 1) -> ModelConfig:
    """The `ModelConfig` the model flags describe, for one size of a sweep."""
    return ModelConfig(
        input_size=input_size,
        units=units,
        output_size=output_size,
        seed=_SEED.value,
        **{name: flag.value for name, flag in _MODEL_FLAGS.items()},
    )


def training_config() -> TrainingConfig:
    return TrainingConfig(
        epochs=_EPOCHS.value,
        max_seconds=_MAX_SECONDS.value,
        batch_size=_BATCH_SIZE.value,
        learning_rate=_LEARNING_RATE.value,
        learning_rate_decay=_LEARNING_RATE_DECAY.value,
        weight_decay=_WEIGHT_DECAY.value,
        clip_norm=_CLIP_NORM.value,
        preactivation_noise=_PREACTIVATION_NOISE.value,
        noise_free_epochs=_NOISE_FREE_EPOCHS.value,
        stop_at_goal=_STOP_AT_GOAL.value,
        noise_distribution=_NOISE_DISTRIBUTION.value,
        seed=_SEED.value,
        backprop=_BACKPROP.value,
        inline_loops=_INLINE_LOOPS.value,
        jit_compile=_JIT_COMPILE.value,
    )


def run_config(restart_above: tuple[tuple[str, float], ...] = ()) -> RunConfig:
    """The run flags; `restart_above` (validation metric -> bound) is the task's restart check."""
    restart_epoch = _RESTART_EPOCH.value
    if restart_epoch and restart_epoch >= _EPOCHS.value:
        if flags.FLAGS["restart_epoch"].present:
            raise ConfigError(f"--restart_epoch must be less than --epochs ({_EPOCHS.value}), got {restart_epoch}")
        restart_epoch = 0  # a default restart epoch past a shorter run: no restart check
    if restart_epoch and _SEED.value + _MAX_RESTARTS.value >= 2**31:
        raise ConfigError(
            f"--seed={_SEED.value} with --max_restarts={_MAX_RESTARTS.value} could restart as a seed "
            "of 2^31 or more; lower one of them"
        )
    return RunConfig(
        logdir=_LOGDIR.value,
        run_name=datetime.datetime.now().strftime("%Y%m%d-%H%M%S") if _RUN_NAME.value is None else _RUN_NAME.value,
        export_dir=_EXPORT_DIR.value,
        eval_every=_EVAL_EVERY.value,
        checkpoint_every=_CHECKPOINT_EVERY.value,
        histogram_every=_HISTOGRAM_EVERY.value,
        image_every=_IMAGE_EVERY.value,
        loss_every=_LOSS_EVERY.value,
        validate_every=_VALIDATE_EVERY.value,
        check_every=_CHECK_EVERY.value,
        fresh=_FRESH.value,
        restart=RestartConfig(epoch=restart_epoch, above=restart_above, max_restarts=_MAX_RESTARTS.value),
        strategy=_STRATEGY.value,
        cpu_devices=_CPU_DEVICES.value,
        worker_start_timeout=_WORKER_START_TIMEOUT.value,
    )


def sweep(run: RunConfig) -> Iterator[tuple[int, RunConfig]]:
    """`(units, run config)` per `--lstm_size`: one size runs in `<run_name>`; a list of sizes in
    `<run_name>/lstm_size_<N>` (and `<export_dir>/lstm_size_<N>`)."""
    sizes = [int(v) for v in _LSTM_SIZE.value]
    for size in sizes:
        if len(sizes) == 1:
            yield size, run
            continue
        yield (
            size,
            dataclasses.replace(
                run,
                run_name=os.path.join(run.run_name, f"lstm_size_{size}"),
                export_dir=run.export_dir and os.path.join(run.export_dir, f"lstm_size_{size}"),
            ),
        )
