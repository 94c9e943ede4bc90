"""Shared fixtures: subprocess helpers, in-process runs of the counter task, one short training run."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys

import pytest

from diy_lstm.cli import quiet  # noqa: E402

# TensorFlow's start-up lines stay out of the test processes' output, as the commands do it; Ctrl-C
# then raises KeyboardInterrupt again (the tests press it on purpose).
tf = quiet.import_tensorflow()
signal.signal(signal.SIGINT, signal.default_int_handler)

# Two logical CPU devices for the whole test process, made before any TensorFlow work: mirrored runs
# (`--strategy=mirrored --cpu_devices=2`) train in-process; every one-device run uses the first.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

from diy_lstm.model import LSTMModel, ModelConfig  # noqa: E402
from diy_lstm.training import run  # noqa: E402
from diy_lstm.training.config import RunConfig, RunSettings, TrainingConfig  # noqa: E402
from tasks.counter.task import CounterData, CounterTask  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCORE = os.path.join(ROOT, "score.py")  # the command lines, as a user runs them
GENERATE = os.path.join(ROOT, "generate.py")
QUIET_TF = {"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}  # the level commands set (quiet.py)
# train.py's runs in the tests train a notebook-sized counter in seconds, not the default recipe's minute;
# flags after it win. The default itself: test_readout.py.
SMALL_COUNTER = f"--flagfile={os.path.join(ROOT, 'experiments', 'reference_notebook.flags')}"


def run_python(
    args: list[str], cwd: str = ROOT, timeout: float = 300, env: dict | None = None, stdin: str | bytes | None = None
) -> subprocess.CompletedProcess:
    """Runs `python ARGS` and returns the finished process (text stdout/stderr unless stdin is bytes)."""
    full_env = {**os.environ, **QUIET_TF, **(env or {})}
    text = not isinstance(stdin, bytes)
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=text, timeout=timeout, input=stdin
    )


def start_train(*flags: str) -> subprocess.Popen:
    """`python train.py` of the small counter with `flags`, started in the background, its output piped
    as text (for a test that signals or kills it)."""
    return subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "train.py"), SMALL_COUNTER, *flags],
        cwd=ROOT,
        env={**os.environ, **QUIET_TF},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_train(flags: list[str], logdir: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_python([os.path.join(ROOT, "train.py"), SMALL_COUNTER, f"--logdir={logdir}", *flags], timeout=timeout)


def counter_settings(
    logdir: str,
    run_name: str,
    units: int = 8,
    data: CounterData = CounterData(),
    run_options: dict | None = None,
    readout: str = "cell",
    **training,
) -> RunSettings:
    """Settings of an in-process counter run: train.py's defaults, small, quiet (no images or histograms)."""
    training = {"epochs": 40, "preactivation_noise": 1.0, "jit_compile": "false", **training}
    run_config = RunConfig(
        **{"logdir": logdir, "run_name": run_name, "image_every": 0, "histogram_every": 0, **(run_options or {})}
    )
    model = ModelConfig(input_size=3, units=units, readout=readout, seed=training.get("seed", 0))
    return RunSettings(CounterTask.name, model, data, TrainingConfig(**training), run_config)


def train_counter(settings: RunSettings, **kwargs) -> run.RunResult:
    """`run.train` (or `run.train_once` with kwargs) of the counter task, in this process."""
    task = CounterTask(settings.data)
    return run.train_once(settings, task, **kwargs) if kwargs else run.train(settings, task)


class InterruptingTask(CounterTask):
    """The counter task, pressing Ctrl-C (a real SIGINT to this process) during its n-th evaluation."""

    def __init__(self, data, at_evaluation):
        super().__init__(data)
        self.evaluations, self.at_evaluation = 0, at_evaluation

    def evaluate(self, model, thorough=True, finished=None):
        self.evaluations += 1
        if self.evaluations == self.at_evaluation:
            os.kill(os.getpid(), signal.SIGINT)
        return super().evaluate(model, thorough, finished)


def with_training(settings: RunSettings, **changes) -> RunSettings:
    return dataclasses.replace(settings, training=dataclasses.replace(settings.training, **changes))


@pytest.fixture(scope="session")
def short_run(tmp_path_factory):
    """A 40-epoch in-process run (lstm_size 8): its result, run dir and SavedModel."""
    logdir = str(tmp_path_factory.mktemp("logs"))
    settings = counter_settings(logdir, "short", run_options={"checkpoint_every": 20})
    result = train_counter(settings)
    assert result.outcome == run.COMPLETED
    return {"logdir": logdir, "run_dir": result.run_dir, "export_dir": result.export_dir, "result": result}


@pytest.fixture(scope="session")
def small_export(tmp_path_factory):
    """An untrained counter SavedModel (4 units, seed 1): for what the scorer does with any model. Its
    `about` says it was checked up to the scorer's cap, so the scorer adds no note (the note's own
    tests make models that say otherwise)."""
    from diy_lstm.serving.export import export
    from tasks.counter import data_generator
    from tasks.counter.serving import SequenceScorer

    path = str(tmp_path_factory.mktemp("small_export") / "saved_model")
    from tasks.counter.score import MAX_SEQUENCE_CHARACTERS

    config = ModelConfig(input_size=3, units=4, seed=1)
    scorer = SequenceScorer(
        LSTMModel(config), data_generator.ENCODING, (1, MAX_SEQUENCE_CHARACTERS), MAX_SEQUENCE_CHARACTERS
    )
    export(scorer, path, scorer.signatures(), {"model_config": dataclasses.asdict(config)})  # as a run records it
    return path


_MEASURED: dict[str, float] = {}


@pytest.fixture
def measured(record_property):
    """`measured(name, value)` keeps the largest value per name; the run ends with a table of them
    (each value travels in the test's report, so the table also gathers what parallel workers saw)."""

    def record(name: str, value: float) -> float:
        record_property(f"measured:{name}", float(value))
        return float(value)

    return record


def pytest_runtest_logreport(report):
    for key, value in report.user_properties:
        if isinstance(key, str) and key.startswith("measured:"):
            name = key.removeprefix("measured:")
            _MEASURED[name] = max(_MEASURED.get(name, 0.0), float(value))


def pytest_terminal_summary(terminalreporter):
    if _MEASURED:
        terminalreporter.section("largest differences measured")
        for name, value in sorted(_MEASURED.items()):
            terminalreporter.write_line(f"{name:<60} {value:.3e}")


@pytest.fixture(scope="session")
def small_text_export(tmp_path_factory):
    """An untrained text SavedModel (8 units) over the characters of the fox sentence (no newline)."""
    from diy_lstm.serving.export import export
    from tasks.text import text_data
    from tasks.text.serving import TextGenerator

    characters = text_data.Vocabulary.of(text_data.FOX_AND_CROW).characters
    path = str(tmp_path_factory.mktemp("small_text_export") / "saved_model")
    config = ModelConfig(input_size=len(characters), units=8, output_size=len(characters), seed=2)
    generator = TextGenerator(LSTMModel(config), characters)
    metadata = {"config": {"task": "text"}, "model_config": dataclasses.asdict(config)}  # as a run records them
    export(generator, path, generator.signatures(), metadata, task="text")
    return path


def one_line(result: subprocess.CompletedProcess, code: int, starts: str) -> None:
    """A command's result is `code` and exactly one line on stderr, starting with `starts`."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(starts), result.stderr


# The files that take longest, longest first: pytest-xdist hands out whole files (`--dist loadfile`), so
# a long file handed out last would leave the other process idle at the end of the suite.
LONGEST_FIRST = (
    "test_distribute.py",
    "test_text.py",
    "test_benchmark.py",
    "test_fuzz.py",
    "test_notebook.py",
    "test_signals.py",
    "test_bad_inputs.py",
    "test_files.py",
    "test_exit_codes.py",
    "test_readout.py",
    "test_reliability.py",
    "test_cli.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # (stable: each file keeps its order)
