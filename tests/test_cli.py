"""train.py and `python score.py` as a user runs them: output, event files, the scorer's notes, errors."""

import dataclasses
import glob
import os

import pytest
import tensorflow as tf
from absl import flags
from conftest import (
    ROOT,
    SCORE,
    counter_settings,
    run_python,
    run_train,
    train_counter,
)
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util
from test_fuzz import run_score

from diy_lstm.model import ModelConfig
from diy_lstm.training.config import ConfigError, RunConfig, TrainingConfig
from tasks.counter.task import CounterData
from tasks.text.task import TextData


def load_events(directory):
    accumulator = event_accumulator.EventAccumulator(directory, size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    return accumulator


def scalar_series(accumulator, tag):
    """TF2 writes scalars as tensor events; returns [(step, value)]."""
    return [(event.step, float(tensor_util.make_ndarray(event.tensor_proto))) for event in accumulator.Tensors(tag)]


@pytest.mark.slow
def test_train_command_prints_only_its_own_lines(tmp_path):
    result = run_train(["--lstm_size=8", "--epochs=20", "--run_name=r", "--image_every=0"], str(tmp_path))
    assert result.returncode == 0 and result.stderr == "", result.stderr  # no TensorFlow start-up lines
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"run {tmp_path}/r: 1024 training / 3072 validation sequences, lengths 6..6, lstm_size 8, epochs 1..20"
    )
    assert [line.split()[1] for line in lines if line.startswith("epoch")] == ["10/20", "20/20"]
    assert lines[3] == "done: 20 epochs in " + lines[3].split(" in ")[1]
    assert lines[4].startswith("  validation: error ") and lines[5].startswith("  training: error ")
    assert lines[-1].startswith(f"  SavedModel: {tmp_path}/r/saved_model (its about signature: ")


def test_event_files_hold_the_metrics_of_both_splits_and_the_graph(short_run):
    for split in ("train", "validation"):
        accumulator = load_events(os.path.join(short_run["run_dir"], split))
        for tag in ("error", "mean_square_error", "error_per_step", "mean_square_error_per_step"):
            series = scalar_series(accumulator, tag)
            assert [step for step, _ in series] == [10, 20, 30, 40]
            assert all(0.0 <= value for _, value in series)
        final = dict(scalar_series(accumulator, "error"))[40]
        assert final == pytest.approx(short_run["result"].metrics[split]["error"], abs=1e-7)
    graph = load_events(os.path.join(short_run["run_dir"], "train")).Graph()  # the training step's graph
    assert any(node.op == "ResourceApplyAdam" for node in graph.node) or any(
        node.op == "ResourceApplyAdam" for function in graph.library.function for node in function.node_def
    )


def score(short_run, *arguments, **kwargs):
    return run_python([SCORE, f"--model_dir={short_run['export_dir']}", *arguments], **kwargs)


@pytest.mark.slow
def test_score_cli_prints_prediction_and_the_truth_it_is_told_to_compute(short_run):
    result = score(short_run, "--reference=data_generator:final_sum", "++0", "I+++-0", "+", "-I--")
    # 40 epochs of 8 units may leave a wrong validation step: then its about says it was never checked exact
    assert result.returncode == 0 and result.stderr in (
        "",
        "note: a sequence has 6 characters; this model was "
        "trained on lengths 6..6 and never checked exact at any "
        "length: its answers are unchecked\n",
    ), result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert [row[0] for row in rows] == ["++0", "I+++-0", "+", "-I--"]  # -I-- is a sequence, not a flag
    assert [int(row[3]) for row in rows] == [2, -2, 1, 1]  # true sums, worked by hand
    for row in rows:
        assert int(row[2]) == round(float(row[1]))
        assert row[4] == ("yes" if int(row[2]) == int(row[3]) else "NO")


@pytest.mark.slow
def test_score_cli_reads_stdin_and_takes_sequences_after_double_dash(short_run):
    from_stdin = score(short_run, stdin="-I--\n++\n")
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert [line.split()[0] for line in from_stdin.stdout.splitlines()[1:]] == ["-I--", "++"]
    after_dash = score(short_run, "--", "--model_dir=x", "-I--")
    assert after_dash.returncode == 2  # after `--` even a flag-like argument is a sequence
    assert "'m' (U+006D) at position 3 of sequence 1 '--model_dir=x'" in after_dash.stderr


BAD_SCORE_INPUT = [
    (["++", "+x-"], None, "unknown character 'x' (U+0078) at position 2 of sequence 2 '+x-'"),
    (["+x"], None, "unknown character 'x' (U+0078) at position 2 of sequence 1 '+x'"),
    (["++", "+ +"], None, "unknown character ' ' (U+0020) at position 2 of sequence 2 '+ +'"),
    (["++", "++é"], None, "unknown character 'é' (U+00E9) at position 3 of sequence 2 '++é'"),
    (["++", ""], None, "sequence 2 '' is empty"),
    ([], b"+\xff-\n", "invalid UTF-8 byte 0xFF at byte 2 of line 1"),
    (["--bogus", "++"], None, "Unknown command line flag 'bogus'"),
    (["--reference=nonexistent_module:f", "++"], None, "--reference=nonexistent_module:f: cannot import it"),
]


@pytest.mark.slow
@pytest.mark.parametrize("arguments, stdin, expected", [BAD_SCORE_INPUT[index] for index in (1, 5, 7)])
def test_score_cli_bad_input_is_exactly_one_line_and_exit_2(short_run, arguments, stdin, expected):
    """As a user runs it, in its own process: nothing else on stderr, not even TensorFlow's own logs."""
    result = score(short_run, *arguments, stdin=stdin)
    stderr = result.stderr.decode() if isinstance(result.stderr, bytes) else result.stderr
    assert result.returncode == 2
    assert len(stderr.splitlines()) == 1 and stderr.startswith(f"error: {expected}"), stderr
    assert not result.stdout


@pytest.mark.slow
def test_every_bad_score_input_is_exactly_one_line_and_exit_2_in_process(short_run):
    """Every case of `BAD_SCORE_INPUT` through score.py's parsing and `main` in this process."""
    from test_fuzz import run_score

    for arguments, stdin, expected in BAD_SCORE_INPUT:
        code, stdout, stderr = run_score([f"--model_dir={short_run['export_dir']}", *arguments], stdin)
        assert (code, stdout) == (2, "") and len(stderr.splitlines()) == 1, (arguments, stderr)
        assert stderr.startswith(f"error: {expected}"), stderr


@pytest.mark.slow
def test_score_cli_missing_model_dir(tmp_path):
    result = run_python([SCORE, f"--model_dir={tmp_path / 'nope'}", "++"])
    assert result.returncode == 3 and result.stderr == f"error: --model_dir={tmp_path / 'nope'}: no such directory\n"


@pytest.mark.slow
@pytest.mark.parametrize(
    "flag, message",
    [
        (
            "--lstm_size=0",
            "error: flag --lstm_size=['0']: --lstm_size must be integers in [1, 4096], e.g. 24 or 8,16,24",
        ),
        ("--train_fraction=1.5", "error: --train_fraction must be in (0, 1), got 1.5"),
        ("--epochs=-3", "error: flag --epochs=-3: -3 is not an integer in the range [1, 10000000]"),
        ("--noise_free_epochs=500", "error: --noise_free_epochs must be in [0, epochs], got 500"),
    ],
)
def test_bad_flags_are_one_line_exit_2_and_write_nothing(tmp_path, flag, message):
    result = run_train([flag, "--run_name=bad"], str(tmp_path), timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [message]
    assert os.listdir(tmp_path) == []  # nothing written


def settings_from(argv):
    """train.py's flags parsed as on the command line, and its configs built, in this process."""
    from tasks.counter import train

    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["train.py", *argv])
        return train.settings_per_size()
    finally:
        flags.FLAGS.unparse_flags()


@pytest.mark.parametrize(
    "flag, fragment",
    [
        ("--lstm_size=abc", "--lstm_size must be integers"),
        ("--lstm_size=100000", "--lstm_size must be integers"),
        ("--lstm_size=8,0", "--lstm_size must be integers"),
        ("--lstm_size=²", "--lstm_size must be integers"),
        ("--lstm_size=4,4", "--lstm_size names a size more than once"),
        ("--lstm_size=8,16,008", "--lstm_size names a size more than once"),
        ("--epochs=ten", "epochs"),
        ("--epochs=100000000", "epochs"),
        ("--batch_size=-5", "batch_size"),
        ("--learning_rate=0", "--learning_rate must be > 0"),
        ("--learning_rate=nan", "--learning_rate must be > 0"),
        ("--weight_decay=nan", "--weight_decay must be in \\[0, 1\\]"),
        ("--preactivation_noise=nan", "--preactivation_noise must be in \\[0, 100\\]"),
        ("--min_length=5", "--min_length and --max_length go together"),
        ("--min_length=9 --max_length=3", "--min_length <= --max_length"),
        ("--target=sum", "target"),
        ("--gate_examples=++x", "--gate_examples"),
        ("--run_name=../elsewhere", "--run_name"),
        ("--sequence_length=100000 --max_sequences_per_length=10000", "would exceed"),
        ("--forget_bias=inf", "--forget_bias"),
        ("--preactivation_noise=-1", "preactivation_noise"),
        ("--preactivation_noise=1e9", "preactivation_noise"),
        ("--train_fraction=1e-9", "leaves 0 training and 16384 validation sequences"),
        ("--train_fraction=0.9999999", "leaves 16384 training and 0 validation sequences"),
        ("--epochs=10 --noise_free_epochs=11", "--noise_free_epochs must be in \\[0, epochs\\]"),
        ("--epochs=100 --restart_epoch=100", "--restart_epoch must be less than --epochs"),
        ("--restart_error=1", "--restart_error must be in \\[0, 1\\)"),
        ("--max_restarts=-1", "max_restarts"),
        ("--restart_epoch=5 --restart_mse=0", "--restart_mse must be > 0"),
        ("--restart_epoch=0 --restart_mse=0.003", "--restart_mse acts at --restart_epoch"),
        ("--clip_norm=0", "--clip_norm must be > 0"),
        ("--readout_fit_length=100000 --readout_fit_sequences=1000", "the readout fit would hold 2,517,500,000 values"),
        (
            "--readout_fit_length=10000 --readout_fit_sequences=9 --lstm_size=511",  # 9 sequences and 7 runs
            r"the readout fit would hold 81,920,000 values \(16 sequences \(--readout_fit_sequences and 7 runs\) "
            r"x 10,000 steps \(--readout_fit_length\) x \(lstm_size + 1\)\), more than 50,000,000",
        ),
    ],
)
def test_every_bad_flag_is_named_before_anything_runs(flag, fragment):
    with pytest.raises((flags.Error, ConfigError), match=fragment.replace("+", "\\+")):
        settings_from(flag.split())


@pytest.mark.parametrize(
    "removed",
    ["readout_l1", "readout_l1_epochs", "noise_free_sampling", "noise_free_learning_rate", "sample_distribution"],
)
def test_flags_that_experiments_rejected_are_gone(removed):
    with pytest.raises(flags.Error, match=f"Unknown command line flag '{removed}'"):
        settings_from([f"--{removed}=1"])


COUNTER_FLAGFILES = [  # the text task's recipes name their --corpus (tests/test_text.py)
    path
    for path in sorted(glob.glob(os.path.join(ROOT, "experiments", "*.flags")))
    if "--corpus=" not in open(path).read()
]


@pytest.mark.parametrize("flagfile", COUNTER_FLAGFILES)
def test_experiment_flagfiles_build_their_settings(flagfile):
    (settings,) = settings_from([f"--flagfile={flagfile}"])
    written = dict(line.strip()[2:].split("=", 1) for line in open(flagfile) if line.startswith("--"))
    assert settings.training.epochs == int(written["epochs"]) != 80  # the file's settings, not the defaults
    assert settings.data.max_length == int(written["sequence_length"]) == 6


def test_a_sweep_is_one_run_per_size_in_its_own_directory():
    sweep = settings_from(["--lstm_size=4,8", "--run_name=s", "--export_dir=/tmp/e"])
    assert [(s.model.units, s.run.run_name, s.run.export_dir) for s in sweep] == [
        (4, "s/lstm_size_4", "/tmp/e/lstm_size_4"),
        (8, "s/lstm_size_8", "/tmp/e/lstm_size_8"),
    ]


@pytest.mark.parametrize(
    "make, named",
    [
        (lambda: ModelConfig(input_size=3, units=0), "units"),
        (lambda: ModelConfig(input_size=3, units=4, readout="gate"), "readout"),
        (lambda: TrainingConfig(epochs=1, learning_rate=0), "--learning_rate"),
        (lambda: RunConfig(strategy="everywhere"), "--strategy"),
        (lambda: CounterData(train_fraction=2.0), "--train_fraction"),
        (lambda: CounterData(gate_examples=("+x",)), "--gate_examples"),
        (lambda: CounterData(min_length=12, max_length=12, max_sequences_per_length=10**7), "--max_sequences_per"),
        (lambda: TextData(unroll_length=0), "--unroll_length"),
    ],
)
def test_every_config_checks_its_own_settings_and_raises_one_error_type_naming_the_setting(make, named):
    with pytest.raises(ConfigError, match=named) as raised:
        make()
    assert type(raised.value) is ConfigError


def test_the_bare_command_trains_with_the_typed_defaults_the_flags_derive_from():
    """`python train.py` with no flag: every config equal to the counter's `DEFAULT_*` configs, and a
    flag left at its field's default where the counter names none (`--weight_decay`: TrainingConfig's)."""
    import dataclasses

    from tasks.counter import defaults

    (settings,) = settings_from(["--run_name=r"])
    assert settings.model == defaults.DEFAULT_MODEL
    assert settings.data == defaults.DEFAULT_DATA
    assert settings.training == defaults.DEFAULT_TRAINING
    restart = dataclasses.replace(defaults.DEFAULT_RUN.restart, above=(("error", 0.0),))
    assert settings.run == dataclasses.replace(defaults.DEFAULT_RUN, run_name="r", restart=restart)
    assert settings.training.weight_decay == TrainingConfig.weight_decay


def test_the_step_curves_hold_each_batch_and_the_validation_split_as_counted_here(tmp_path):
    """`--loss_every=1`, no noise: `<run>/train_steps` holds every step's batch loss and error, and
    step 1's are the untrained model's mean square error and share of rounded misses over the first
    batch, computed here from its forward pass. `--validate_every`: `<run>/validation_steps` at every
    such step, the last the checkpointed model's over the validation split's steps."""
    import numpy as np
    import tensorflow as tf

    from diy_lstm.model import LSTMModel
    from tasks.counter.task import CounterTask

    settings = counter_settings(
        str(tmp_path), "steps", units=4, epochs=2, preactivation_noise=0.0, run_options={"loss_every": 1}
    )
    task = CounterTask(settings.data)
    task.prepare(settings.training)
    every = task.steps_per_epoch // 2
    settings = dataclasses.replace(settings, run=dataclasses.replace(settings.run, validate_every=every))

    def loss_and_error(model, inputs, sums, lengths):
        predictions, sums = model(inputs).numpy()[..., 0], np.asarray(sums)
        real = np.arange(predictions.shape[1])[None, :] < np.asarray(lengths)[:, None]
        return np.mean((predictions - sums)[real] ** 2), np.mean((np.round(predictions) != sums)[real])

    def curves(run):
        events = load_events(str(tmp_path / "steps" / run))
        (steps, losses), (_, errors) = (zip(*scalar_series(events, tag)) for tag in ("loss", "error"))
        return list(steps), losses, errors

    inputs, sums, lengths = next(iter(task.training_batches(range(2))))
    expected = loss_and_error(LSTMModel(settings.model), inputs, sums, lengths)
    train_counter(settings)
    steps, losses, errors = curves("train_steps")
    assert steps == list(range(1, 2 * task.steps_per_epoch + 1)) and all(np.isfinite(losses))
    assert abs(losses[0] - expected[0]) <= 1e-6 * expected[0] and errors[0] == pytest.approx(expected[1], abs=1e-6)
    trained = LSTMModel(settings.model)
    tf.train.Checkpoint(model=trained).restore(tf.train.latest_checkpoint(str(tmp_path / "steps" / "checkpoints")))
    validation = task.splits["validation"]
    expected = loss_and_error(trained, validation.inputs, validation.running_sums, validation.lengths)
    steps, losses, errors = curves("validation_steps")
    assert steps == list(range(every, 2 * task.steps_per_epoch + 1, every))
    assert losses[-1] == pytest.approx(expected[0], rel=1e-5) and errors[-1] == pytest.approx(expected[1], abs=1e-6)


def test_the_scorer_notes_a_sequence_longer_than_the_model_was_checked_on(short_run):
    from tasks.counter.serving import about

    checked = about(tf.saved_model.load(short_run["export_dir"]))
    assert checked["trained_lengths"] == [6, 6]
    limit = checked["validated_exact_up_to"]
    assert limit in (0, 6)  # the training length, if every validation step was right
    code, stdout, stderr = run_score([f"--model_dir={short_run['export_dir']}", "+" * (limit + 1)])
    assert code == 0 and stderr.startswith(
        f"note: a sequence has {limit + 1:,} characters; this model was trained on lengths 6..6 and "
    )


@pytest.mark.parametrize("validated", [0, 6, 10_000])
def test_the_note_comes_for_the_first_sequence_longer_than_the_about_signature_says_and_only_then(tmp_path, validated):
    from diy_lstm.model import LSTMModel, ModelConfig
    from diy_lstm.serving.export import export
    from tasks.counter import data_generator
    from tasks.counter.serving import SequenceScorer

    model_dir = str(tmp_path / "saved_model")
    scorer = SequenceScorer(
        LSTMModel(ModelConfig(input_size=3, units=4, seed=1)), data_generator.ENCODING, (6, 20), validated
    )
    export(scorer, model_dir, scorer.signatures())
    if validated:  # nothing to say at the checked length
        code, stdout, stderr = run_score([f"--model_dir={model_dir}", "-", "+" * validated])
        assert (code, stderr) == (0, "") and len(stdout.splitlines()) == 3
    checked = (
        f"checked exact up to {validated:,}: longer answers are unchecked"
        if validated
        else "never checked exact at any length: its answers are unchecked"
    )
    code, stdout, stderr = run_score([f"--model_dir={model_dir}", "-", "I" * (validated + 1), "0" * (validated + 2)])
    assert code == 0 and len(stdout.splitlines()) == 4
    assert stderr == (
        f"note: a sequence has {validated + 2:,} characters; this model was trained on lengths 6..20 and {checked}\n"
    )


def test_the_scorer_notes_a_predicted_sum_larger_than_the_model_was_checked_at(tmp_path):
    from test_goal import hand_built_counter

    from diy_lstm.serving.export import export
    from tasks.counter import data_generator
    from tasks.counter.serving import SequenceScorer

    model_dir = str(tmp_path / "saved_model")
    scorer = SequenceScorer(
        hand_built_counter(), data_generator.ENCODING, (6, 20), 1000, validated_exact_sum=50
    )  # an exact counter, said to be checked to length 1,000 and |sum| 50
    export(scorer, model_dir, scorer.signatures())
    code, stdout, stderr = run_score([f"--model_dir={model_dir}", "+" * 50, "I" + "+" * 49])
    assert (code, stderr) == (0, "") and [row.split()[2] for row in stdout.splitlines()[1:]] == ["50", "-49"]
    code, stdout, stderr = run_score([f"--model_dir={model_dir}", "-" * 20, "I" + "+" * 60, "+" * 70])
    assert code == 0 and [row.split()[2] for row in stdout.splitlines()[1:]] == ["-20", "-60", "70"]
    assert stderr == (
        "note: a predicted sum is 70; this model was checked exact up to |sum| 50: larger answers are unchecked\n"
    )
