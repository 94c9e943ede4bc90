"""train.py and `python -m diy_lstm.score` as a user runs them: output, event files, errors."""

import glob
import os

import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from conftest import ROOT, run_python, run_train


def load_events(directory):
    accumulator = event_accumulator.EventAccumulator(directory, size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    return accumulator


def scalar_series(accumulator, tag):
    """TF2 writes scalars as tensor events; returns [(step, value)]."""
    return [(event.step, float(tensor_util.make_ndarray(event.tensor_proto))) for event in accumulator.Tensors(tag)]


def test_progress_lines_and_summary(short_run):
    lines = short_run["stdout"].splitlines()
    assert [l.split()[1] for l in lines if l.startswith("epoch")] == ["10/40", "20/40", "30/40", "40/40"]
    assert any("held-out: error" in line for line in lines)
    assert any(line.strip() == f"SavedModel: {short_run['export_dir']}" for line in lines)


def test_event_files_hold_the_four_series_and_the_graph(short_run):
    for split in ("train", "test"):
        accumulator = load_events(os.path.join(short_run["run_dir"], split))
        for tag in ("error", "mean_square_error"):
            series = scalar_series(accumulator, tag)
            assert [step for step, _ in series] == [10, 20, 30, 40]
            values = [value for _, value in series]
            assert all(0.0 <= v for v in values)
            if tag == "error":
                assert all(v <= 1.0 for v in values)
    train_events = load_events(os.path.join(short_run["run_dir"], "train"))
    graph = train_events.Graph()  # the training step's graph
    assert any(node.op == "ResourceApplyAdam" for node in graph.node) or any(
        node.op == "ResourceApplyAdam" for function in graph.library.function for node in function.node_def)


def test_score_cli_prints_prediction_and_truth(short_run):
    result = run_python(["-m", "diy_lstm.score", f"--model_dir={short_run['export_dir']}", "++0", "I+++-0", "+"])
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert [row[0] for row in rows] == ["++0", "I+++-0", "+"]
    assert [int(row[3]) for row in rows] == [2, -2, 1]  # true sums from data_generator
    for row in rows:
        assert int(row[2]) == round(float(row[1]))
        assert row[4] == ("yes" if int(row[2]) == int(row[3]) else "NO")


def test_score_cli_reads_stdin_and_takes_leading_minus_after_double_dash(short_run):
    from_stdin = run_python(["-m", "diy_lstm.score", f"--model_dir={short_run['export_dir']}"], stdin="-I--\n++\n")
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert [line.split()[0] for line in from_stdin.stdout.splitlines()[1:]] == ["-I--", "++"]
    after_dash = run_python(["-m", "diy_lstm.score", f"--model_dir={short_run['export_dir']}", "--", "-I--"])
    assert after_dash.returncode == 0 and after_dash.stdout.splitlines()[1].split()[3] == "1"


@pytest.mark.parametrize(
    "sequence, expected",
    [("+x-", "unknown character 'x' (U+0078) at position 2 of sequence 2 '+x-'"),
     ("+ +", "unknown character ' ' (U+0020) at position 2 of sequence 2 '+ +'"),
     ("++é", "unknown character 'é' (U+00E9) at position 3 of sequence 2 '++é'"),
     ("", "sequence 2 '' is empty")],
)
def test_score_cli_bad_character_is_one_clear_line(short_run, sequence, expected):
    result = run_python(["-m", "diy_lstm.score", f"--model_dir={short_run['export_dir']}", "++", sequence])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"error: {expected}"), last_line
    assert result.stdout == ""


def test_score_cli_missing_model_dir(tmp_path):
    result = run_python(["-m", "diy_lstm.score", f"--model_dir={tmp_path / 'nope'}", "++"])
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert "no such directory" in result.stderr


@pytest.mark.parametrize(
    "flag, fragment",
    [("--lstm_size=0", "--lstm_size"), ("--sequence_length=-1", "sequence_length"),
     ("--train_fraction=1.5", "train_fraction"), ("--epochs=-3", "epochs")],
)
def test_bad_flags_fail_clearly_without_traceback(tmp_path, flag, fragment):
    result = run_train([flag, "--run_name=bad"], str(tmp_path), timeout=120)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert fragment in result.stderr
    assert not os.path.exists(tmp_path / "bad")  # nothing written


@pytest.mark.parametrize(
    "flag, fragment",
    [("--lstm_size=abc", "--lstm_size must be integers"), ("--lstm_size=100000", "--lstm_size must be integers"),
     ("--lstm_size=8,0", "--lstm_size must be integers"), ("--epochs=ten", "epochs"),
     ("--epochs=100000000", "epochs"), ("--batch_size=-5", "batch_size"),
     ("--learning_rate=0", "--learning_rate must be > 0"), ("--learning_rate=nan", "--learning_rate must be > 0"),
     ("--min_length=5", "--min_length and --max_length go together"),
     ("--min_length=9 --max_length=3", "--min_length <= --max_length"), ("--target=sum", "target"),
     ("--gate_examples=++x", "--gate_examples"), ("--run_name=../elsewhere", "--run_name"),
     ("--sequence_length=100000 --max_sequences_per_length=10000", "would exceed"),
     ("--forget_bias=inf", "--forget_bias"), ("--preactivation_noise=-1", "preactivation_noise"),
     ("--preactivation_noise=1e9", "preactivation_noise"),
     ("--epochs=10 --noise_free_epochs=11", "--noise_free_epochs must be at most --epochs"),
     ("--readout_l1=-0.1", "readout_l1"), ("--readout_l1=2", "readout_l1"),
     ("--epochs=10 --readout_l1_epochs=11", "--readout_l1_epochs must be at most --epochs"),
     ("--noise_free_epochs=5 --noise_free_learning_rate=nan", "--noise_free_learning_rate must be > 0"),
     ("--noise_free_learning_rate=0.001", "act on the --noise_free_epochs"),
     ("--noise_free_sampling=varied", "act on the --noise_free_epochs"),
     ("--epochs=100 --restart_epoch=100", "--restart_epoch must be less than --epochs"),
     ("--restart_error=1", "--restart_error must be in \\[0, 1\\)"), ("--max_restarts=-1", "max_restarts"),
     ("--restart_epoch=5 --restart_mse=0", "--restart_mse must be > 0"),
     ("--restart_mse=0.003", "--restart_mse acts at --restart_epoch")],
)
def test_every_bad_flag_is_named(flag, fragment):
    """The same absl parsing as the command line, in this process (no TensorFlow start-up per case)."""
    from absl import flags

    import train  # noqa: F401  (defines the flags)

    flags.FLAGS.unparse_flags()
    try:
        with pytest.raises(flags.Error, match=fragment.replace("+", "\\+")):
            flags.FLAGS(["train.py", *flag.split()])
    finally:
        flags.FLAGS.unparse_flags()


@pytest.mark.parametrize("flagfile", sorted(glob.glob(os.path.join(ROOT, "experiments", "*.flags"))))
def test_experiment_flagfiles_parse(flagfile):
    from absl import flags

    import train  # noqa: F401  (defines the flags)

    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["train.py", f"--flagfile={flagfile}"])
        assert flags.FLAGS["epochs"].present  # the file's settings were read, not the defaults
    finally:
        flags.FLAGS.unparse_flags()
