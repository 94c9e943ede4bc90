"""The counter's training command line: `python train.py` (the entry point at the top level).

    python train.py --lstm_size=24
    python train.py --flagfile=experiments/reference_notebook.flags

Flags -> configs -> `diy_lstm.training.run.train` -> a printed summary. The run (epochs, evaluation,
TensorBoard, checkpoints, resume, restarts, export) is the library's; the task (data, loss, metrics,
SavedModel) is `tasks.counter.task`. Rerunning the same command resumes the run from its last
checkpoint; `--fresh` starts it over; `--lstm_size=8,16,24` trains one run per size. The model,
training and output flags shared with other tasks are in `diy_lstm/training/flags.py` (`--helpfull`).
"""

from __future__ import annotations

import math

from absl import flags

from diy_lstm import readout
from diy_lstm.cli import main as cli
from diy_lstm.training import flags as training_flags
from diy_lstm.training.config import ConfigError, RunSettings
from diy_lstm.training.results import RunResult
from diy_lstm.training.task import TRAIN, VALIDATION
from tasks.counter import data_generator, long_check
from tasks.counter.defaults import DEFAULT_DATA, DEFAULT_MODEL, DEFAULT_RUN, DEFAULT_TRAINING
from tasks.counter.serving import about
from tasks.counter.task import CHECK, RUNS, TARGETS, CounterData, CounterTask

MAX_SEQUENCE_LENGTH = 100_000

training_flags.use_defaults(DEFAULT_MODEL, DEFAULT_TRAINING, DEFAULT_RUN)

# The counter's data and loss (the shared flags are in diy_lstm/training/flags.py).
_SEQUENCE_LENGTH = flags.DEFINE_integer(
    "sequence_length",
    DEFAULT_DATA.max_length,
    "Length of every training sequence (unless --min_length/--max_length).",
    lower_bound=1,
    upper_bound=MAX_SEQUENCE_LENGTH,
)
_MIN_LENGTH = flags.DEFINE_integer(
    "min_length",
    None,
    "Shortest training length; with --max_length, lengths are mixed.",
    lower_bound=1,
    upper_bound=MAX_SEQUENCE_LENGTH,
)
_MAX_LENGTH = flags.DEFINE_integer(
    "max_length",
    None,
    "Longest training length; with --min_length, lengths are mixed.",
    lower_bound=1,
    upper_bound=MAX_SEQUENCE_LENGTH,
)
_MAX_SEQUENCES_PER_LENGTH = flags.DEFINE_integer(
    "max_sequences_per_length",
    DEFAULT_DATA.max_sequences_per_length,
    "All 4^L sequences of a length are used when there are at most this many; else this many are sampled.",
    lower_bound=2,
    upper_bound=10_000_000,
)
_SAMPLING = flags.DEFINE_enum(
    "sampling",
    DEFAULT_DATA.sampling,
    list(data_generator.SAMPLINGS),
    "How sampled sequences are drawn: uniform, or 'varied' (each its own character frequencies).",
)
_TRAIN_FRACTION = flags.DEFINE_float(
    "train_fraction",
    DEFAULT_DATA.train_fraction,
    "Share of each length's sequences used for training; the rest is validation.",
)
_TARGET = flags.DEFINE_enum(
    "target", DEFAULT_DATA.target, list(TARGETS), "Loss on every step's running sum, or on the final sum only."
)
_GATE_EXAMPLES = flags.DEFINE_list(
    "gate_examples", list(DEFAULT_DATA.gate_examples), "Sequences whose gates are drawn as heat maps."
)
_CHECK_LENGTH = flags.DEFINE_integer(
    "check_length",
    DEFAULT_DATA.check_length,
    "If > 0: at every evaluation whose validation steps are all right, score "
    "--check_sequences fresh sequences of this length (half with long runs of one character); the goal then needs "
    "every step of them right.",
    lower_bound=0,
    upper_bound=100_000,
)
_CHECK_SEQUENCES = flags.DEFINE_integer(
    "check_sequences",
    DEFAULT_DATA.check_sequences,
    "Sequences in the --check_length split.",
    lower_bound=2,
    upper_bound=10_000,
)
_LONG_CHECK_LENGTH = flags.DEFINE_integer(
    "long_check_length",
    DEFAULT_DATA.long_check_length,
    "If > 0 (with --check_length): once the check split is right, also score runs, drifts and patterns "
    "of this many steps, whose sums reach +-this (tasks/counter/long_check.py); the goal then needs every "
    "step of them right.",
    lower_bound=0,
    upper_bound=2_000_000,
)
_READOUT_FIT_LENGTH = flags.DEFINE_integer(
    "readout_fit_length",
    DEFAULT_DATA.readout_fit_length,
    "If > 0: once training ends, refit the readout by least squares on fresh sequences of "
    "this length (LSTM weights fixed), so it reads counts far beyond the training lengths.",
    lower_bound=0,
    upper_bound=100_000,
)
_READOUT_FIT_SEQUENCES = flags.DEFINE_integer(
    "readout_fit_sequences",
    DEFAULT_DATA.readout_fit_sequences,
    "Sequences the --readout_fit_length fit uses.",
    lower_bound=2,
    upper_bound=10_000,
)
_FINISHING_STEPS = flags.DEFINE_integer(
    "finishing_steps",
    DEFAULT_DATA.finishing_steps,
    "Once training ends: this many updates on fresh sequences of --finishing_length, whose "
    "counts go far beyond the training lengths; 0: none.",
    lower_bound=0,
    upper_bound=100_000,
)
_FINISHING_LENGTH = flags.DEFINE_integer(
    "finishing_length",
    DEFAULT_DATA.finishing_length,
    "Length of the --finishing_steps sequences.",
    lower_bound=1,
    upper_bound=10_000,
)
_FINISHING_BATCH_SIZE = flags.DEFINE_integer(
    "finishing_batch_size",
    DEFAULT_DATA.finishing_batch_size,
    "Sequences per --finishing_steps update.",
    lower_bound=1,
    upper_bound=10_000,
)
_FINISHING_LEARNING_RATE = flags.DEFINE_float(
    "finishing_learning_rate",
    DEFAULT_DATA.finishing_learning_rate,
    "Adam's learning rate in the --finishing_steps, in (0, 1).",
)
_RESTART_ERROR = flags.DEFINE_float(
    "restart_error", 0.0, "The validation error (a share, in [0, 1)) a run may have at --restart_epoch."
)
_RESTART_MSE = flags.DEFINE_float(
    "restart_mse", None, "If set: the validation mean square error a run may have at --restart_epoch, > 0."
)


def data_from_flags() -> CounterData:
    """The data flags as a `CounterData` (which checks them), before anything runs."""
    min_length = _MIN_LENGTH.value or _SEQUENCE_LENGTH.value
    max_length = _MAX_LENGTH.value or _SEQUENCE_LENGTH.value
    if (_MIN_LENGTH.value is None) != (_MAX_LENGTH.value is None) or min_length > max_length:
        raise ConfigError("--min_length and --max_length go together, with --min_length <= --max_length")
    return CounterData(
        min_length,
        max_length,
        _MAX_SEQUENCES_PER_LENGTH.value,
        _SAMPLING.value,
        _TRAIN_FRACTION.value,
        _TARGET.value,
        _CHECK_LENGTH.value,
        _CHECK_SEQUENCES.value,
        _LONG_CHECK_LENGTH.value,
        _READOUT_FIT_LENGTH.value,
        _READOUT_FIT_SEQUENCES.value,
        _FINISHING_STEPS.value,
        _FINISHING_LENGTH.value,
        _FINISHING_BATCH_SIZE.value,
        _FINISHING_LEARNING_RATE.value,
        tuple(_GATE_EXAMPLES.value),
    )


def restart_bounds() -> tuple[tuple[str, float], ...]:
    """The counter's restart check: validation error above --restart_error, or MSE above --restart_mse."""
    if not 0.0 <= _RESTART_ERROR.value < 1.0:
        raise ConfigError(f"--restart_error must be in [0, 1), e.g. 0.01 for 1%, got {_RESTART_ERROR.value}")
    bounds = (("error", _RESTART_ERROR.value),)
    if _RESTART_MSE.value is not None:
        if not 0.0 < _RESTART_MSE.value < math.inf:
            raise ConfigError(f"--restart_mse must be > 0, got {_RESTART_MSE.value}")
        if not flags.FLAGS.restart_epoch:
            raise ConfigError("--restart_mse acts at --restart_epoch; set that too")
        bounds += (("mean_square_error", _RESTART_MSE.value),)
    return bounds


def settings_per_size() -> list[RunSettings]:
    """One `RunSettings` per `--lstm_size`, all checked before the first run starts."""
    data, training = data_from_flags(), training_flags.training_config()
    runs = list(training_flags.sweep(training_flags.run_config(restart_bounds())))
    fit_values = data.readout_fit_values(max(units for units, _ in runs))
    if fit_values > readout.MAX_FIT_VALUES:
        sequences, length = data.readout_fit_batch()
        raise ConfigError(
            f"the readout fit would hold {fit_values:,} values ({sequences:,} sequences (--readout_fit_"
            f"sequences and {len(RUNS)} runs) x {length:,} steps (--readout_fit_length) x (lstm_size "
            f"+ 1)), more than {readout.MAX_FIT_VALUES:,}; lower one of them"
        )
    return [
        RunSettings(
            CounterTask.name,
            training_flags.model_config(units, data_generator.NUM_FEATURES),
            data,
            training,
            run_config,
        )
        for units, run_config in runs
    ]


def print_summary(result: RunResult) -> None:
    validation, train_metrics = result.metrics[VALIDATION], result.metrics[TRAIN]
    if result.restarts:
        given_up = ", ".join(
            f"seed {r.seed} ({r.measured} at epoch {r.epoch}, {r.seconds:.0f}s)" for r in result.restarts
        )
        print(
            f"  trained as --seed={result.seed} after giving up {given_up}; "
            f"{result.seconds_in_all:.1f}s of training in all"
        )
    print(
        f"  validation: error {100 * validation['error']:.2f}% (final sum), "
        f"{100 * validation['error_per_step']:.2f}% (per step), mse {validation['mean_square_error']:.3g}"
    )
    print(f"  training: error {100 * train_metrics['error']:.2f}%, mse {train_metrics['mean_square_error']:.3g}")
    if CHECK in result.metrics:
        check = result.metrics[CHECK]
        print(
            f"  check (fresh sequences of the check length): {100 * check['error_per_step']:.3f}% of the steps "
            f"wrong, largest miss {check['largest_miss']:.3g}"
        )
        if "long_wrong_cases" in check:
            print(
                f"  long check: {check['long_wrong_cases']:.0f} of {len(long_check.CASES)} cases with a wrong "
                f"step, largest miss {check['long_largest_miss']:.3g}"
            )
    if result.goal_reached:
        after = f" after resuming from epoch {result.resumed_from_epoch}" if result.resumed_from_epoch else ""
        checked = " and every check step right" if CHECK in result.metrics else ""
        print(
            f"  0.00% validation error{checked} first reached{after} at epoch {result.goal_reached.epoch} "
            f"({result.goal_reached.seconds:.1f}s)"
        )
    print(f"  SavedModel: {result.export_dir} ({_what_it_says(result.export_dir)})")


def _what_it_says(export_dir: str) -> str:
    """What the written SavedModel's own `about` signature says it was checked at."""
    import tensorflow as tf

    checked = about(tf.saved_model.load(export_dir))
    length, largest = checked.get("validated_exact_up_to", 0), checked.get("validated_exact_sum", 0)
    if not length:
        return "its about signature: never checked exact"
    return f"its about signature: every step right to length {length:,} and |sum| {largest:,}"


def main(argv: list[str]) -> int:
    return cli.train_each(((settings, CounterTask(settings.data)) for settings in settings_per_size()), print_summary)
