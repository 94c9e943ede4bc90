"""Files: a run touches only what it made, and what a killed run left is cleaned when it resumes.

A run touches only what it made: random --logdir / --run_name / --export_dir / --fresh choices over
a tree of a user's files (names that look like ours among them) leave every user file byte for byte."""

import dataclasses
import json
import os
import subprocess
import sys
import tempfile

import pytest
import tensorflow as tf
from conftest import ROOT, SMALL_COUNTER, counter_settings, run_python, train_counter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diy_lstm import files
from diy_lstm.serving.export import METADATA_FILE, METADATA_FORMAT, ExportDirError
from diy_lstm.training import run
from diy_lstm.training.checkpoints import ResumeError
from tasks.counter.task import CounterData

# A user's tree: look-alikes of a run directory, of export staging, of a previous export, of another
# task's SavedModel, an empty directory and a plain file.
USER_FILES = {
    "D/checkpoints/my_temp_file.txt": "notes",
    "D/checkpoints/ckpt-1_temp/part": "not a checkpoint",
    "D/results.json": '{"mine": 1}',
    "D/config.json": '{"version": 2, "task": "counter"}',
    "D/.lock": "my lock file",
    "out/exp1.tmp-notes.txt": "x",
    "out/exp1.tmp-dir/inside.txt": "y",
    "out/exp1.previous/a.txt": "z",
    "out/other/saved_model.pb": "another program's model",
    f"text_model/{METADATA_FILE}": json.dumps({"format": METADATA_FORMAT, "config": {"task": "text"}}),
    "text_model/saved_model.pb": "a text model",
    "file.txt": "plain",
}
USER_DIRS = ("empty",)

LOGDIRS = ("u", "u/D", "u/out", "u/new", "u/file.txt", "u/empty", "u/D/checkpoints")
RUN_NAMES = (".", "D", "r", "checkpoints", "exp1.tmp-notes.txt", "out", "empty", "a/b", "other")
EXPORT_DIRS = (
    None,
    "u/out/exp1",
    "u/out",
    "u/D",
    "u/out/exp1.previous",
    "u/empty",
    "u/file.txt",
    "u/text_model",
    "u/out/new_export",
    "u/out/other",
    "RUN/checkpoints",
    "RUN/saved_model",
    "u/out/exp1.tmp-dir",
)
DATA = CounterData(min_length=2, max_length=2)


def make_user_tree(root: str) -> dict[str, bytes]:
    for name, text in USER_FILES.items():
        path = os.path.join(root, "u", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    for name in USER_DIRS:
        os.makedirs(os.path.join(root, "u", name))
    return snapshot(root)


def snapshot(root: str) -> dict[str, bytes]:
    files = {}
    for directory, _, names in os.walk(os.path.join(root, "u")):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


def train_in(root: str, logdir: str, run_name: str, export_dir: str | None, fresh: bool):
    run_dir = os.path.join(root, logdir, run_name)
    if export_dir is not None:
        export_dir = (
            export_dir.replace("RUN", run_dir) if export_dir.startswith("RUN") else os.path.join(root, export_dir)
        )
    settings_ = counter_settings(
        os.path.join(root, logdir),
        run_name,
        units=2,
        data=DATA,
        epochs=1,
        run_options={"export_dir": export_dir, "fresh": fresh, "eval_every": 1},
    )
    try:
        return train_counter(settings_).outcome
    except (files.NotOursError, ExportDirError, ResumeError, OSError) as error:
        return type(error).__name__


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(
        st.tuples(st.sampled_from(LOGDIRS), st.sampled_from(RUN_NAMES), st.sampled_from(EXPORT_DIRS), st.booleans()),
        min_size=1,
        max_size=3,
    )
)
def test_random_runs_over_a_users_tree_leave_every_user_file_byte_for_byte(runs):
    with tempfile.TemporaryDirectory() as root:
        before = make_user_tree(root)
        for logdir, run_name, export_dir, fresh in runs:
            train_in(root, logdir, run_name, export_dir, fresh)
            after = snapshot(root)
            assert {name: after.get(name) for name in before} == before, (logdir, run_name, export_dir, fresh)
            assert all(os.path.isdir(os.path.join(root, "u", name)) for name in USER_DIRS)


@pytest.mark.parametrize(
    "logdir, run_name, export_dir, fresh, outcome",
    [
        ("u", "D", None, False, "NotOursError"),  # adopting a user's directory
        ("u/D", ".", None, False, "NotOursError"),
        ("u", "D", None, True, "NotOursError"),  # --fresh does not move it aside either
        ("u", "r", "u/out/exp1", False, run.COMPLETED),  # beside exp1.tmp-notes.txt and exp1.tmp-dir/
        ("u", "r", "u/text_model", False, "ExportDirError"),  # a counter run never replaces a text model
        ("u", "r", "RUN/checkpoints", False, "ExportDirError"),  # inside the run directory: refused before training
        ("u", "r", "u/out/exp1.previous", False, "ExportDirError"),
        ("u", "empty", None, False, run.COMPLETED),  # an empty directory is taken
    ],
)
def test_the_cases_that_lost_data_before(tmp_path, logdir, run_name, export_dir, fresh, outcome):
    before = make_user_tree(str(tmp_path))
    assert train_in(str(tmp_path), logdir, run_name, export_dir, fresh) == outcome
    after = snapshot(str(tmp_path))
    assert {name: after.get(name) for name in before} == before
    if outcome != run.COMPLETED:  # refused before anything was written
        assert set(after) == set(before) and not os.path.exists(tmp_path / "u" / "r")


def test_export_staging_is_marked_and_only_marked_staging_of_a_dead_process_is_removed(tmp_path):
    parent = str(tmp_path)
    ours = files.make_staging(parent, "m.tmp-")
    assert files.staging_owner(ours) == os.getpid()
    theirs = tmp_path / "m.tmp-theirs"
    theirs.mkdir()
    (theirs / "file").write_text("keep")
    live = tmp_path / "m.tmp-live"
    live.mkdir()
    (live / files.STAGING_MARKER).write_text(json.dumps({"kind": "staging", "pid": os.getppid()}))
    assert files.remove_stale_staging(parent, "m.tmp-") == [ours]  # this process's own leftover only
    assert (theirs / "file").read_text() == "keep" and live.is_dir()


def test_resuming_keeps_events_that_are_not_the_runs_own(tmp_path):
    """evaluate.py --tensorboard_dir=<run> writes steps up to 10,000 in <run>/generalization; a resume
    that trims the run's own events past its checkpoint leaves those alone."""

    settings_ = counter_settings(str(tmp_path), "r", units=2, data=DATA, epochs=2)
    train_counter(settings_)
    writer = tf.summary.create_file_writer(str(tmp_path / "r" / "generalization"))
    with writer.as_default():
        tf.summary.scalar("generalization/error", 0.0, step=1000)
    writer.close()
    before = {p: p.read_bytes() for p in (tmp_path / "r" / "generalization").iterdir()}
    train_counter(dataclasses.replace(settings_, training=dataclasses.replace(settings_.training, epochs=3)))
    assert {p: p.read_bytes() for p in (tmp_path / "r" / "generalization").iterdir()} == before


@pytest.mark.parametrize(
    "kind, found",
    [
        ("link", "is a symbolic link, not a file"),
        ("directory", "is a directory, not a file"),
        ("fifo", "is not a regular file (a FIFO or a device)"),
    ],
)
def test_a_lock_file_that_is_not_a_file_is_refused_naming_it_and_nothing_it_points_to_is_touched(tmp_path, kind, found):
    from diy_lstm.training.lock import LOCK_FILE, RunLock, RunLockedError

    run_dir, target = tmp_path / "r", tmp_path / "precious.txt"
    run_dir.mkdir()
    target.write_text("keep me\n")
    lock = run_dir / LOCK_FILE
    {"link": lambda: lock.symlink_to(target), "directory": lock.mkdir, "fifo": lambda: os.mkfifo(lock)}[kind]()
    with pytest.raises(RunLockedError) as raised:
        with RunLock(str(run_dir)):
            pass
    assert str(raised.value) == f"the run's lock file {lock} {found}; remove it and rerun"
    assert target.read_text() == "keep me\n"


def test_markers_and_json_files_are_never_written_through_a_link(tmp_path):
    from diy_lstm.training.checkpoints import write_json_atomically

    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / files.RUN_MARKER).symlink_to(target)  # an empty directory but for a link where the marker goes
    with pytest.raises(OSError):
        files._write_marker(str(run_dir / files.RUN_MARKER), {"kind": "run"})
    (run_dir / "config.json.tmp").symlink_to(target)  # where the temporary file once went
    (run_dir / "results.json").symlink_to(target)
    write_json_atomically(str(run_dir / "config.json"), {"a": 1})
    write_json_atomically(str(run_dir / "results.json"), {"b": 2})
    assert target.read_text() == "keep me\n"
    assert json.loads((run_dir / "config.json").read_text()) == {"a": 1}
    assert not (run_dir / "results.json").is_symlink() and json.loads((run_dir / "results.json").read_text()) == {
        "b": 2
    }
    assert sorted(os.listdir(run_dir)) == sorted([files.RUN_MARKER, "config.json.tmp", "config.json", "results.json"])


def test_a_run_of_another_task_is_named_as_such_and_left_alone(tmp_path):
    from diy_lstm.model import ModelConfig
    from diy_lstm.training.config import RunConfig, RunSettings, TrainingConfig
    from tasks.text.task import TextData, TextTask

    files.claim_run_dir(str(tmp_path / "r"), "counter")
    (tmp_path / "r" / "saved_model").mkdir()
    before = sorted(os.listdir(tmp_path / "r"))
    task = TextTask(TextData(corpus="fox_and_crow", validation_fraction=0.0, unroll_length=10))
    size = len(task.vocabulary)
    settings_ = RunSettings(
        TextTask.name,
        ModelConfig(input_size=size, units=4, output_size=size),
        task.data,
        TrainingConfig(epochs=1, batch_size=2),
        RunConfig(logdir=str(tmp_path), run_name="r"),
    )
    with pytest.raises(files.NotOursError) as raised:
        run.train(settings_, task)
    assert str(raised.value) == (
        f"{tmp_path}/r is a counter run; a text run does not train in it: choose another --run_name or --logdir"
    )
    assert sorted(os.listdir(tmp_path / "r")) == before


@pytest.mark.slow
@pytest.mark.parametrize(
    "setup, flags, starts",
    [
        (lambda d: (d / "logs").write_text("a file"), ["--logdir={d}/logs"], "error: --logdir/--run_name "),
        (lambda d: None, ["--logdir={d}", "--run_name=" + "r" * 300], "error: [Errno 36] File name too long"),
        (
            lambda d: (d / "precious").mkdir() or (d / "precious" / "notes.txt").write_text("mine"),
            ["--logdir={d}/logs", "--export_dir={d}/precious"],
            "error: --export_dir=",
        ),
        (lambda d: None, ["--logdir={d}", "--" + "x" * 1500 + "=1"], "error: Unknown command line flag 'xxx"),
        (
            lambda d: None,
            ["--logdir={d}", "--sequence_length=20", "--max_sequences_per_length=2"],
            "error: --train_fraction=0.25 leaves 0 training",
        ),
        (
            lambda d: None,
            ["--logdir={d}", "--seed=2147483647", "--restart_epoch=5", "--epochs=10"],
            "error: --seed=2147483647 with --max_restarts=3 could restart",
        ),
    ],
)
def test_train_file_system_and_flag_trouble_is_one_line(tmp_path, setup, flags, starts):
    setup(tmp_path)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    result = run_python(
        [
            os.path.join(ROOT, "train.py"),
            SMALL_COUNTER,
            "--epochs=2",
            "--lstm_size=4",
            *[flag.format(d=tmp_path) for flag in flags],
        ]
    )
    assert result.returncode in (1, 2) and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(starts), result.stderr
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing written, nothing deleted


def dead_pid() -> int:
    """The pid of a process that has exited."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_leftovers_of_a_killed_run_are_cleaned_when_it_resumes_and_nothing_else(tmp_path):
    """TensorFlow's checkpoint staging in the run's own checkpoints/, a JSON write's temporary file and
    export staging marked by a process that is gone are removed; unmarked look-alikes (a user's
    files) are left byte for byte."""
    settings = counter_settings(str(tmp_path), "r", units=4, epochs=4)
    train_counter(settings)
    (tmp_path / "r" / "checkpoints" / "ckpt-9_temp").mkdir()
    killed_export = tmp_path / "r" / "saved_model.tmp-abc123"
    killed_export.mkdir()
    (killed_export / files.STAGING_MARKER).write_text(json.dumps({"kind": "staging", "pid": dead_pid()}))
    killed_json = tmp_path / "r" / "results.json.k3_x9a0q.tmp"  # killed inside write_json_atomically
    killed_json.write_text('{"outcome": "comp')
    look_alikes = {
        "r/results.json.mine.tmp": "mine",
        "r/saved_model.tmp-notes.txt": "mine",
        "r/saved_model.tmp-dir/a.txt": "mine too",
        "r/checkpoints/my_temp_file.txt": "keep",
        "r/checkpoints/ckpt-9_temp.txt": "keep",
    }
    for name, text in look_alikes.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    train_counter(settings)
    assert not (tmp_path / "r" / "checkpoints" / "ckpt-9_temp").exists()
    assert not killed_export.exists() and not killed_json.exists()
    assert {name: (tmp_path / name).read_text() for name in look_alikes} == look_alikes


def test_a_run_directory_that_is_a_file_is_one_error(tmp_path):
    (tmp_path / "r").write_text("not a directory")
    with pytest.raises(files.NotOursError, match="is not a directory"):
        train_counter(counter_settings(str(tmp_path), "r", units=4, epochs=2))
    assert (tmp_path / "r").read_text() == "not a directory"


@pytest.mark.slow
def test_a_garbage_checkpoint_index_is_exactly_one_line(tmp_path):
    first = run_python(
        ["train.py", SMALL_COUNTER, "--lstm_size=2", "--epochs=1", f"--logdir={tmp_path}", "--run_name=r"]
    )
    assert first.returncode == 0
    (tmp_path / "r" / "checkpoints" / "checkpoint").write_text("garbage{{{")
    again = run_python(
        ["train.py", SMALL_COUNTER, "--lstm_size=2", "--epochs=2", f"--logdir={tmp_path}", "--run_name=r"]
    )
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr.startswith("error: cannot restore checkpoint: ") and len(again.stderr.splitlines()) == 1
