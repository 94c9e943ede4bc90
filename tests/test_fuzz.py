"""Generated bad input for each command line, in this process: every outcome is either a result or one
line on stderr with the documented exit code, and nothing on disk changes.

The command lines' own start-up (TensorFlow's import, signals) is covered by the subprocess tests;
here each case costs microseconds, so a few hundred of each run in seconds.
"""

import io
import os
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

CASES = 300
JUNK = ["x", " ", "\t", "é", "€", "😀", "\x00", "\x7f", "-", "--", "=", "I", "+", "0", "\\", "'", '"', "\n"]


def random_text(rng, alphabet, longest=12):
    return "".join(rng.choice(alphabet) for _ in range(int(rng.integers(0, longest))))


def run_score(argv, stdin_bytes=None):
    """`python score.py ARGV` in this process: (exit code, stdout, stderr)."""
    from diy_lstm.cli import main as cli
    from tasks.counter import score

    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr, sys.stdin
    sys.stdout, sys.stderr = out, err
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin_bytes or b""))
    flags.FLAGS.unparse_flags()
    try:
        code = cli.guarded(score.main, score.split_flags(["score", *argv]), takes_arguments=True)
    except SystemExit as exit_:
        code = exit_.code
    finally:
        sys.stdout, sys.stderr, sys.stdin = saved
        flags.FLAGS.unparse_flags()
    return code, out.getvalue(), err.getvalue()


def assert_one_line_or_result(code, stdout, stderr, expected_rows):
    if code == 0:
        assert stderr == ""
        assert len(stdout.splitlines()) == 1 + expected_rows
    else:
        assert code in (2, 3) and stdout == ""
        assert len(stderr.splitlines()) == 1 and stderr.startswith("error: "), stderr


def test_score_arguments_fuzzed(small_export, tmp_path):
    rng = np.random.default_rng(0)
    before = sorted(os.listdir(tmp_path))
    outcomes = {0: 0, 2: 0, 3: 0}
    for _ in range(CASES):
        alphabet = list("+-0I") if rng.random() < 0.5 else list("+-0I") * 4 + JUNK
        sequences = [random_text(rng, alphabet) for _ in range(int(rng.integers(1, 5)))]
        sequences = [s for s in sequences if not s.startswith("--") or s == "--"] or ["+"]
        extra = []
        if rng.random() < 0.2:
            extra.append(
                rng.choice(
                    [
                        "--bogus=1",
                        "--model_dir=/nonexistent",
                        "--reference=nope:f",
                        "--reference=x",
                        "--" + "z" * int(rng.integers(1, 1500)),
                    ]
                )
            )
        argv = [f"--model_dir={small_export}", *extra, *sequences]
        code, stdout, stderr = run_score(argv)
        # Every argument is a sequence but the flags; after the first `--`, every argument is one.
        cut = sequences.index("--") if "--" in sequences else len(sequences)
        expected = cut + len(sequences[cut + 1 :])
        assert_one_line_or_result(code, stdout, stderr, expected)
        outcomes[code] += 1
    assert sorted(os.listdir(tmp_path)) == before
    assert outcomes[0] > 20 and outcomes[2] > 20 and outcomes[3] > 5  # every kind of outcome was reached


def test_score_stdin_fuzzed_with_random_bytes(small_export):
    rng = np.random.default_rng(1)
    for _ in range(CASES):
        lines = [random_text(rng, list("+-0I") * 6 + JUNK[:8]).encode("utf-8") for _ in range(int(rng.integers(1, 6)))]
        if rng.random() < 0.3:
            lines[int(rng.integers(0, len(lines)))] += bytes(rng.integers(128, 256, size=2).tolist())
        data = b"\n".join(line.replace(b"\n", b"") for line in lines) + b"\n"
        code, stdout, stderr = run_score([f"--model_dir={small_export}"], data)
        assert_one_line_or_result(code, stdout, stderr, len(data.split(b"\n")) - 1)


def test_score_at_load_streams_and_keeps_padding_bounded(small_export):
    """One 100,000-character sequence among 3,000 short ones, through stdin: scored in length-sorted
    batches; every row in input order, the long one among them."""
    rng = np.random.default_rng(2)
    sequences = ["".join(rng.choice(list("+-0I"), size=6)) for _ in range(3000)]
    sequences.insert(1234, "+" * 100_000)
    code, stdout, stderr = run_score([f"--model_dir={small_export}"], ("\n".join(sequences) + "\n").encode())
    assert code == 0 and stderr == ""
    rows = stdout.splitlines()[1:]
    assert [row.split()[0] for row in rows] == sequences


@pytest.mark.slow
def test_score_takes_sequences_as_large_as_allowed_in_calls_within_the_model_s_budget(small_export, monkeypatch):
    """Eight sequences of 600,000 characters: the model's budget (4,000,000 padded characters a call)
    takes six at a time; every row is scored, in input order, and no call is refused."""
    from tasks.counter import score

    calls, (signature, checked, metadata) = [], score._load(small_export)

    def counted(**inputs):
        calls.append(int(inputs["sequences"].shape[0]))
        return signature(**inputs)

    monkeypatch.setattr(score, "_load", lambda model_dir: (counted, checked, metadata))
    rng = np.random.default_rng(5)
    sequences = ["".join(rng.choice(list("+-0I"), size=600_000)) for _ in range(8)]
    code, stdout, stderr = run_score([f"--model_dir={small_export}"], ("\n".join(sequences) + "\n").encode())
    assert (code, stderr) == (0, "") and calls == [6, 2]
    assert [row.split()[0] for row in stdout.splitlines()[1:]] == sequences


TRAIN_FLAGS = {
    "lstm_size": ["0", "-1", "abc", "8,0", "²", "", "4096", "4097", "1e3"],
    "epochs": ["0", "-1", "1e9", "nan", "", "5"],
    "batch_size": ["-1", "0", "x", "64"],
    "learning_rate": ["0", "-1", "nan", "inf", "1e39", "0.01"],
    "learning_rate_decay": ["0", "1.5", "nan", "0.5"],
    "weight_decay": ["nan", "-1", "2", "0.1"],
    "preactivation_noise": ["nan", "-1", "1e9", "0.5"],
    "clip_norm": ["0", "-1", "nan", "1"],
    "train_fraction": ["0", "1", "1e-9", "0.9999999", "nan", "0.5"],
    "sequence_length": ["0", "100001", "20", "3"],
    "max_sequences_per_length": ["1", "2", "100"],
    "min_length": ["0", "5", "9"],
    "max_length": ["3", "6"],
    "seed": ["-1", "2147483648", "7"],
    "restart_epoch": ["-1", "5", "100000"],
    "restart_error": ["1", "-0.5", "nan", "0.1"],
    "restart_mse": ["0", "nan", "0.003"],
    "gate_examples": ["++x", "", "+,-", "I+"],
    "target": ["sum", "final"],
    "run_name": ["../x", "/abs", "", "ok"],
    "forget_bias": ["inf", "nan", "101", "2"],
}


def test_train_flags_fuzzed_fail_as_one_line_before_anything_runs(tmp_path, capsys):
    """train.py's own parsing and error handling, up to the settings it would train with."""
    from diy_lstm.cli import main as cli
    from tasks.counter import train

    def settings_only(argv):
        train.settings_per_size()
        return 0

    rng = np.random.default_rng(3)
    names = sorted(TRAIN_FLAGS)
    outcomes = {}
    for _ in range(CASES):
        chosen = rng.choice(names, size=int(rng.integers(1, 4)), replace=False)
        argv = [f"--{name}={rng.choice(TRAIN_FLAGS[name])}" for name in chosen] + [f"--logdir={tmp_path}"]
        flags.FLAGS.unparse_flags()
        try:
            code = cli.guarded(settings_only, cli.parse_flags_or_exit(["train.py", *argv]))
        except SystemExit as exit_:
            code = exit_.code
        finally:
            flags.FLAGS.unparse_flags()
        stderr = capsys.readouterr().err
        outcomes[code] = outcomes.get(code, 0) + 1
        if code == 0:
            assert stderr == "", argv
        else:
            assert code == 2 and len(stderr.splitlines()) == 1 and stderr.startswith("error: "), (argv, stderr)
    assert os.listdir(tmp_path) == []  # settings are checked before anything is written
    assert outcomes.get(2, 0) > 100 and outcomes.get(0, 0) > 5, outcomes


EVALUATE_RUNNER = """
import contextlib, io, json, sys
from absl import flags
from tasks.counter import evaluate
from diy_lstm.cli import main as cli
results = []
for argv in json.load(sys.stdin):
    out, err = io.StringIO(), io.StringIO()
    flags.FLAGS.unparse_flags()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.guarded(evaluate.main, cli.parse_flags_or_exit(["evaluate.py", *argv]))
        except SystemExit as exit_:
            code = exit_.code
    results.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(results))
"""


@pytest.mark.slow
def test_evaluate_flags_fuzzed(small_export, tmp_path):
    """A few hundred generated flag sets through evaluate.py's own parsing and main, in one process."""
    import json

    from conftest import run_python

    (tmp_path / "a_file").write_text("x")
    choices = {
        "lengths": ["0", "-5", "abc", "²", "100001", "6,20", "", "3"],
        "sequences": ["0", "-1", "5", "1000001", "x"],
        "sampling": ["uniform", "varied", "other"],
        "pattern_length": ["-1", "0", "30", "100001"],
        "patterns": ["0,I+", "+x", "", "--+"],
        "model_dir": [small_export, str(tmp_path / "missing"), str(tmp_path / "a_file"), str(tmp_path)],
        "tensorboard_dir": [str(tmp_path / "a_file"), str(tmp_path / "tb")],
        "score_batch_size": ["0", "7"],
    }
    rng = np.random.default_rng(4)
    cases = []
    for _ in range(CASES):
        names = rng.choice(sorted(choices), size=int(rng.integers(1, 4)), replace=False)
        argv = [f"--{name}={rng.choice(choices[name])}" for name in names]
        if "model_dir" not in names:
            argv.append(f"--model_dir={small_export}")
        if "lengths" not in names:
            argv.append("--lengths=6")
        if "sequences" not in names:
            argv.append("--sequences=5")
        cases.append(argv)
    runner = run_python(["-c", EVALUATE_RUNNER], stdin=json.dumps(cases), timeout=600)
    assert runner.returncode == 0, runner.stderr[-2000:]
    outcomes = {}
    for argv, (code, stdout, stderr) in zip(cases, json.loads(runner.stdout.splitlines()[-1])):
        outcomes[code] = outcomes.get(code, 0) + 1
        if code == 0:
            assert stderr == "" and stdout.splitlines()[0].split()[:2] == ["length", "sequences"], argv
        else:
            assert code in (2, 3) and len(stderr.splitlines()) == 1 and stderr.startswith("error: "), (argv, stderr)
    assert outcomes.get(0, 0) > 10 and outcomes.get(2, 0) > 100 and outcomes.get(3, 0) > 10, outcomes
    assert sorted(os.listdir(tmp_path)) in (["a_file"], ["a_file", "tb"])  # only where it was told to write


RUNNER = """
import contextlib, io, json, sys
from absl import flags
from diy_lstm.cli import main as cli
from tasks.{module} import {command} as command
results = []
for argv in json.load(sys.stdin):
    out, err = io.StringIO(), io.StringIO()
    flags.FLAGS.unparse_flags()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.guarded({main}, cli.parse_flags_or_exit(["{command}", *argv]))
        except SystemExit as exit_:
            code = exit_.code
    results.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(results))
"""


def run_many(module: str, command: str, main: str, cases: list[list[str]]) -> list[tuple[int, str, str]]:
    """Each argument list through a command's own parsing and `main`, all in one fresh process (a
    command's flags, and its defaults of the shared ones, are its own)."""
    import json

    from conftest import run_python

    runner = run_python(
        ["-c", RUNNER.format(module=module, command=command, main=main)], stdin=json.dumps(cases), timeout=900
    )
    assert runner.returncode == 0, runner.stderr[-2000:]
    return [tuple(result) for result in json.loads(runner.stdout.splitlines()[-1])]


TEXT_FLAGS = {
    "text_file": [
        "",
        "/dev/zero",
        "/nonexistent",
        "{tmp}/fifo",
        "{tmp}/binary",
        "{tmp}/empty",
        "{tmp}/tiny",
        "{tmp}/ok",
        "{tmp}",
    ],
    "corpus": ["fox_and_crow", "hamlet_soliloquy", "nope", ""],
    "unroll_length": ["0", "-1", "10001", "5", "x", "1e9"],
    "validation_fraction": ["-0.1", "0.6", "nan", "0.1", "0"],
    "batch_size": ["-1", "0", "3", "1000000", "x"],
    "lstm_size": ["0", "4", "8,0", "abc"],
    "num_layers": ["0", "17", "2"],
    "sample_every": ["-1", "0", "2"],
    "sample_length": ["0", "100001", "10"],
    "epochs": ["0", "2"],
    "learning_rate": ["0", "nan", "0.01"],
    "run_name": ["../x", "/abs", "ok"],
    "flagfile": ["/dev/zero", "{tmp}/fifo", "/nonexistent"],
}


@pytest.mark.slow
def test_train_text_flags_fuzzed_fail_as_one_line_before_anything_is_written(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "binary").write_bytes(b"ab\x00cd")
    (tmp_path / "empty").write_text("")
    (tmp_path / "tiny").write_text("ab")
    (tmp_path / "ok").write_text("the quick brown fox jumps over the lazy dog. " * 20)
    before = sorted(os.listdir(tmp_path))
    rng = np.random.default_rng(5)
    cases = []
    for _ in range(CASES):
        names = rng.choice(sorted(TEXT_FLAGS), size=int(rng.integers(1, 4)), replace=False)
        argv = [f"--{name}={str(rng.choice(TEXT_FLAGS[name])).format(tmp=tmp_path)}" for name in names]
        cases.append(argv + [f"--logdir={tmp_path}/logs"])
    outcomes = {}
    for argv, (code, stdout, stderr) in zip(
        cases, run_many("text", "train", "lambda argv: command.settings_per_size() and 0", cases)
    ):
        outcomes[code] = outcomes.get(code, 0) + 1
        if code == 0:
            assert stderr == "", argv
        else:
            assert code == 2 and len(stderr.splitlines()) == 1 and stderr.startswith("error: "), (argv, stderr)
    assert sorted(os.listdir(tmp_path)) == before  # checked before anything is written
    assert outcomes.get(2, 0) > 100 and outcomes.get(0, 0) > 10, outcomes


PROMPT_PIECES = ["One", " bright", "x", "\x01", "\u00a0", "😀", "\udcff", "\n", "=", "--", "'", "\\", "é", ""]


def file_bytes(directory: str) -> dict[str, bytes]:
    return {
        os.path.join(parent, name): open(os.path.join(parent, name), "rb").read()
        for parent, _, names in os.walk(directory)
        for name in names
    }


@pytest.mark.slow
def test_generate_command_line_fuzzed(small_text_export, tmp_path):
    """All cases in one process: the command loads a model once per process, as the scorer does."""
    model_files = file_bytes(small_text_export)
    rng = np.random.default_rng(6)
    cases = []
    for _ in range(CASES):
        pieces = PROMPT_PIECES if rng.random() < 0.6 else ["One", " bright", " the"]
        prompt = "".join(rng.choice(pieces, size=int(rng.integers(0, 5))))
        argv = [
            f"--model_dir={rng.choice([small_text_export] * 6 + [str(tmp_path), '/nonexistent'])}",
            f"--prompt={prompt}",
        ]
        for name, values in (
            ("num_chars", ["-1", "0", "5", "1000001", "x"]),
            ("temperature", ["-1", "nan", "inf", "0", "0.8"]),
            ("seed", ["-1", "3", "x"]),
        ):
            if rng.random() < 0.4:
                argv.append(f"--{name}={rng.choice(values)}")
        cases.append(argv)
    outcomes = {}
    for argv, (code, stdout, stderr) in zip(cases, run_many("text", "generate", "command.main", cases)):
        outcomes[code] = outcomes.get(code, 0) + 1
        if code == 0:
            assert stderr == "" and stdout.startswith(argv[1].removeprefix("--prompt=")), argv
        else:
            assert code in (2, 3) and stdout == "", (argv, stdout)
            assert len(stderr.splitlines()) == 1 and stderr.startswith("error: "), (argv, stderr)
    assert sorted(os.listdir(tmp_path)) == [] and file_bytes(small_text_export) == model_files
    assert outcomes.get(0, 0) > 30 and outcomes.get(2, 0) > 100 and outcomes.get(3, 0) > 10, outcomes


def random_bytes_text(rng) -> bytes:
    pieces = [b"One", b" ", b"x", b"\x01", "\u00a0".encode(), "😀".encode(), b"\xff", b"\xed\xa0\x80", b"\n", b""]
    valid = [b"One", b" bright", b" the", b"."]  # the model's own characters: half of the texts
    return b"".join(rng.choice(valid if rng.random() < 0.5 else pieces, size=int(rng.integers(0, 6))))


UNITS, LAYERS = 8, 1  # small_text_export's model


def random_state(rng, batch: int) -> np.ndarray:
    """A `more` state: mostly `[layers, 2, batch, units]` of any values, sometimes of another shape."""
    shapes = [
        [LAYERS, 2, batch, UNITS],
        [LAYERS + 1, 2, batch, UNITS],
        [LAYERS, 2, batch, UNITS - 1],
        [LAYERS, 3, batch, UNITS],
        [2, UNITS],
        [LAYERS, 2, batch, UNITS, 1],
        [],
    ]
    shape = shapes[int(rng.integers(1, len(shapes)))] if rng.random() < 0.15 else shapes[0]
    state = np.asarray(rng.normal(size=shape) * rng.choice([0.0, 1.0, 1.0, 1e30]))
    if state.size and rng.random() < 0.1:
        state.flat[int(rng.integers(0, state.size))] = rng.choice([np.nan, np.inf])
    return state.astype(np.float32)


def check_generated(result, prompts: list[bytes], num_chars: int, vocabulary: set[str]) -> None:
    texts = [text.decode("utf-8") for text in result["text"].numpy()]
    assert len(texts) == len(prompts)
    for prompt, text in zip(prompts, texts):
        assert text.startswith(prompt.decode("utf-8")) and len(text) == len(prompt.decode("utf-8")) + num_chars
        assert set(text[len(prompt.decode("utf-8")) :]) <= vocabulary


def check_scored(result, texts: list[bytes]) -> None:
    lengths = [len(text.decode("utf-8")) for text in texts]
    bits, log_probs = result["bits_per_char"].numpy(), result["log_probs"].numpy()
    assert bits.shape == (len(texts),) and log_probs.shape[0] == len(texts)
    for row, length in enumerate(lengths):  # ln p of each next character: finite and <= 0, then 0 past the end
        assert np.all(np.isfinite(log_probs[row, : length - 1])) and np.all(log_probs[row, : length - 1] <= 0)
        assert np.all(log_probs[row, length - 1 :] == 0) and bits[row] >= 0


def check_started(result, prompts: list[bytes]) -> None:
    state = result["state"].numpy()
    assert state.shape == (LAYERS, 2, len(prompts), UNITS)
    for row, prompt in enumerate(prompts):
        assert np.all(np.isfinite(state[:, :, row])) and (prompt or not np.any(state[:, :, row]))  # "": zeros


def check_continued(result, state: np.ndarray, num_chars: int, vocabulary: set[str]) -> None:
    texts = [text.decode("utf-8") for text in result["text"].numpy()]
    assert len(texts) == state.shape[2] and result["state"].shape == state.shape
    assert all(len(text) == num_chars and set(text) <= vocabulary for text in texts)


@pytest.mark.slow
def test_the_text_signatures_fuzzed(small_text_export):
    """Random bytes (invalid UTF-8, surrogates, unknown characters), sizes (past the sampling cap too),
    ranks, states and settings into the four signatures of the text SavedModel, with nothing of this
    project: every call returns what it promises or fails with a message of its in-graph checks."""
    from diy_lstm.cli.errors import graph_error_message
    from tasks.text import text_data

    loaded = tf.saved_model.load(small_text_export)
    vocabulary = set(text_data.FOX_AND_CROW)
    rng = np.random.default_rng(7)
    outcomes = {name: [0, 0] for name in ("generate", "score", "start", "more")}
    for _ in range(CASES):
        texts = [random_bytes_text(rng) for _ in range(int(rng.choice([0, 1, 1, 2, 3])))]
        if rng.random() < 0.03:
            texts = [b"fox"] * 30_000  # more than a call samples (25,489 for this model)
        num_chars = int(rng.choice([-1, 0, 3, 3, 3, 10**7]))
        sampling = {
            "temperature": tf.constant(float(rng.choice([-1.0, 0.0, 0.7, 0.7, 0.7, np.nan, np.inf]))),
            "seed": tf.constant(int(rng.integers(0, 2**62)), tf.int64),
            "num_chars": tf.constant([num_chars] * 2 if rng.random() < 0.05 else num_chars),
        }
        state = random_state(rng, len(texts))
        first_step = tf.constant(int(rng.choice([0, 64, 5, -1, 2**62])), tf.int64)
        calls = {
            "generate": (
                lambda: loaded.signatures["generate"](prompt=of_any_rank(rng, texts), **sampling),
                lambda result: check_generated(result, texts, num_chars, vocabulary),
            ),
            "score": (
                lambda: loaded.signatures["score"](text=of_any_rank(rng, texts)),
                lambda result: check_scored(result, texts),
            ),
            "start": (
                lambda: loaded.signatures["start"](prompt=tf.constant(texts, tf.string)),
                lambda result: check_started(result, texts),
            ),
            "more": (
                lambda: loaded.signatures["more"](state=tf.constant(state), first_step=first_step, **sampling),
                lambda result: check_continued(result, state, num_chars, vocabulary),
            ),
        }
        for name, (call, check) in calls.items():
            try:
                result = call()
            except tf.errors.InvalidArgumentError as error:
                assert graph_error_message(error) is not None, (name, error.message[:300])
                outcomes[name][1] += 1
                continue
            check(result)
            outcomes[name][0] += 1
    assert all(ok > 30 and refused > 30 for ok, refused in outcomes.values()), outcomes


def of_any_rank(rng, texts: list) -> tf.Tensor:
    """`texts` as a vector, mostly; sometimes as a column `[n, 1]`, which a signature must refuse."""
    vector = tf.constant(texts, tf.string)
    return tf.reshape(vector, [-1, 1]) if texts and rng.random() < 0.05 else vector


def damage_run(rng, run_dir, target) -> str:
    """One random change to a finished run's own files, of the shapes a careless hand or a hostile one
    leaves: links to `target`, directories and FIFOs where files go, JSON of other shapes."""
    import json

    values = [
        None,
        3,
        "text",
        [1, 2],
        {},
        {"first_seed": 0, "given_up": "x"},
        {"first_seed": 0, "given_up": [{}]},
        {"training": [1]},
        {"format": "diy_lstm SavedModel", "files": 7},
    ]
    place = str(
        rng.choice(
            [
                "config.json",
                "restarts.json",
                ".lock",
                ".diy_lstm-run",
                "saved_model/NOTES.txt",
                "saved_model/assets.extra/diy_lstm.json",
                "results.json",
            ]
        )
    )
    path = os.path.join(run_dir, place)
    kind = str(rng.choice(["json", "link", "directory", "fifo", "garbage"]))
    if os.path.isdir(path) and not os.path.islink(path):
        os.rmdir(path)
    elif os.path.lexists(path):
        os.remove(path)
    if kind == "json":
        with open(path, "w") as f:
            json.dump(values[int(rng.integers(len(values)))], f)
    elif kind == "link":
        os.symlink(target, path)
    elif kind == "directory":
        os.mkdir(path)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        with open(path, "wb") as f:
            f.write(bytes(rng.integers(0, 256, int(rng.integers(0, 40)), dtype=np.uint8)))
    return f"{place} as {kind}"


@pytest.mark.slow
def test_a_run_s_own_files_damaged_at_random_are_one_line_or_a_run_and_nothing_outside_changes(tmp_path):
    """A finished run, one of its files replaced by a link, a directory, a FIFO, JSON of another shape
    or garbage, then the same run again: it completes, or refuses with one line of a documented kind;
    what a link points to is never written."""
    import shutil

    from conftest import counter_settings, train_counter

    from diy_lstm.cli.errors import exit_code
    from diy_lstm.files import NotOursError
    from diy_lstm.serving.export import ExportDirError
    from diy_lstm.training import run
    from diy_lstm.training.checkpoints import ResumeError
    from diy_lstm.training.lock import RunLockedError

    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    pristine = tmp_path / "pristine"
    settings = counter_settings(str(pristine), "r", units=2, epochs=1)
    assert train_counter(settings).outcome == run.COMPLETED
    rng = np.random.default_rng(11)
    outcomes = {}
    for case in range(40):
        logdir = tmp_path / f"case{case}"
        shutil.copytree(pristine, logdir, symlinks=True)
        shape = damage_run(rng, str(logdir / "r"), str(target))
        try:
            result = train_counter(counter_settings(str(logdir), "r", units=2, epochs=2))
            outcome = result.outcome
        except (ResumeError, NotOursError, ExportDirError, RunLockedError) as error:  # each one line, exit 1 or 2
            assert exit_code(error) in (1, 2) and str(error) and "\n" not in str(error).strip(), (shape, repr(error))
            outcome = type(error).__name__
        outcomes.setdefault(outcome, []).append(shape)
        assert target.read_text() == "keep me\n", shape
    assert {run.COMPLETED, "ResumeError", "ExportDirError"} <= set(outcomes), outcomes
