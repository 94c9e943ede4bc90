"""The SavedModel: scores raw strings with no code of ours, any length, with clear errors."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_python

from diy_lstm import reference
from diy_lstm.model import LSTMModel, ModelConfig
from diy_lstm.serving import export as export_lib
from diy_lstm.serving.export import export, load_metadata
from tasks.counter import data_generator as dg
from tasks.counter.serving import SequenceScorer

SEQUENCES = ["+-I0", "++", "I+++-0", "-", "0I-I+I0-+"]


def expected_finals(model, sequences):
    params = reference.params_from_model(model)
    finals = []
    for sequence in sequences:
        predictions, _ = reference.forward(dg.encode_sequence(sequence)[None], params, readout=model.config.readout)
        finals.append(predictions[0, -1, 0])
    return np.array(finals)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = LSTMModel(ModelConfig(input_size=3, units=6, readout="cell", seed=7))
    path = str(tmp_path_factory.mktemp("export") / "saved_model")
    scorer = SequenceScorer(
        model, dg.ENCODING, trained_lengths=(1, 20), validated_exact_up_to=3000, readout_fit_length=1000
    )
    export(scorer, path, scorer.signatures(), {"note": "test export"})
    return model, path


def test_in_memory_scorer_matches_numpy(exported):
    model, _ = exported
    scorer = SequenceScorer(model, dg.ENCODING)  # tf.function methods hold their instance weakly
    outputs = scorer.score_strings(tf.constant(SEQUENCES))
    np.testing.assert_allclose(outputs["final_prediction"].numpy(), expected_finals(model, SEQUENCES), atol=1e-5)
    assert outputs["lengths"].numpy().tolist() == [len(s) for s in SEQUENCES]
    assert outputs["step_predictions"].shape == (len(SEQUENCES), max(map(len, SEQUENCES)))
    assert outputs["step_predictions"].numpy()[1, 2:].tolist() == [0.0] * 7  # padding reads 0


@pytest.mark.slow
def test_restored_in_a_process_without_this_project(exported, tmp_path):
    model, path = exported
    script = textwrap.dedent(f"""
        import importlib.abc, json, sys

        class RefuseProject(importlib.abc.MetaPathFinder):  # an editable install must not help
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("diy_lstm", "tasks", "train", "evaluate"):
                    raise ImportError(f"this process must not import {{name}}")

        sys.meta_path.insert(0, RefuseProject())
        import tensorflow as tf
        m = tf.saved_model.load({path!r})
        out = m.signatures["serving_default"](sequences=tf.constant({SEQUENCES!r}))
        enc = m.signatures["score_encoded"](inputs=tf.constant([[[1., 0., 0.], [0., 0., 1.], [0., 1., 0.]]]))
        about = {{k: v.numpy().tolist() for k, v in m.signatures["about"]().items()}}
        scores = {{k: v.numpy().tolist() for k, v in out.items()}}
        print(json.dumps(scores | {{"encoded": enc["final_prediction"].numpy().tolist(), "about": about}}))
    """)
    result = run_python(["-I", "-c", script], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    outputs = json.loads(result.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(outputs["final_prediction"], expected_finals(model, SEQUENCES), atol=1e-5)
    assert outputs["final_prediction_rounded"] == np.round(outputs["final_prediction"]).astype(int).tolist()
    np.testing.assert_allclose(outputs["encoded"], expected_finals(model, ["+I-"]), atol=1e-5)
    assert outputs["about"]["trained_lengths"] == [1, 20] and outputs["about"]["validated_exact_up_to"] == 3000
    assert outputs["about"]["readout_fit_length"] == 1000


def test_lengths_1_6_and_300_through_one_traced_function(exported):
    model, path = exported
    loaded = tf.saved_model.load(path)
    signature = loaded.signatures["serving_default"]
    rng = np.random.default_rng(0)
    sequences = ["+", "I0-+-I"] + dg.sample_sequences(300, 1, rng)
    for sequence in sequences:  # one at a time: three different lengths, one concrete function
        got = signature(sequences=tf.constant([sequence]))["final_prediction"].numpy()
        np.testing.assert_allclose(got, expected_finals(model, [sequence]), atol=1e-4)
    library_ops = {node.op for f in signature.graph.as_graph_def().library.function for node in f.node_def}
    assert library_ops & {"While", "StatelessWhile"}, "the time loop must be a While op, not unrolled"


def test_variables_keep_their_gate_names(exported):
    _, path = exported
    loaded = tf.saved_model.load(path)
    assert loaded.model.layers[0].W_f.shape == (3 + 6, 6)
    layer = loaded.model.layers[0]
    assert [getattr(layer, f"W_{g}").name for g in "figo"] == [f"lstm_model/layer_0/W_{g}:0" for g in "figo"]
    np.testing.assert_array_equal(layer.b_f.numpy(), np.ones(6))
    assert loaded.model.W_out.name == "lstm_model/W_out:0"


@pytest.mark.parametrize(
    "batch, pattern",
    [
        (["+x-"], r"unknown character U\+0078 at position 2 of sequences\[0\]; allowed: 0 \+ - I"),
        (["++", ""], r"sequences\[1\] is empty"),
        (["++", "+ +"], r"character U\+0020 at position 2 of sequences\[1\]"),
        (["+😀"], r"character U\+1F600 at position 2 of sequences\[0\]"),  # beyond U+FFFF: five digits
        ([b"+\xff"], r"invalid UTF-8 at position 2 of sequences\[0\]"),
        (["é"], r"U\+00E9"),
        (["+\t"], r"U\+0009"),
    ],
)
def test_bad_strings_fail_with_a_message_naming_them(exported, batch, pattern):
    _, path = exported
    signature = tf.saved_model.load(path).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=pattern):
        signature(sequences=tf.constant(batch))


def test_encoded_signature_rejects_wrong_feature_count(exported):
    _, path = exported
    signature = tf.saved_model.load(path).signatures["score_encoded"]
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"inputs must be \[batch, time >= 1, 3\], got shape\] \[1 4 5\]"
    ):
        signature(inputs=tf.zeros([1, 4, 5]))


def test_empty_batch_gives_empty_outputs(exported):
    _, path = exported
    outputs = tf.saved_model.load(path).signatures["serving_default"](sequences=tf.constant([], dtype=tf.string))
    assert outputs["final_prediction"].shape == (0,)


def test_metadata_is_stored_and_marks_the_export_as_ours(exported):
    _, path = exported
    metadata = load_metadata(path)
    assert metadata.pop(export_lib.MANIFEST_KEY) == [
        "assets/",  # empty, as a SavedModel without assets has it
        "fingerprint.pb",
        "saved_model.pb",
        "variables/variables.data-00000-of-00001",
        "variables/variables.index",
    ]
    assert metadata == {"format": export_lib.METADATA_FORMAT, "note": "test export"}
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o755)  # readable by others, not 0700


SAVED_MODEL_CLI_MODULE = "tensorflow.python.tools.saved_model_cli"


def saved_model_cli(
    beside: str = os.path.dirname(sys.executable),
    scripts: str | None = sysconfig.get_path("scripts"),
    path: str | None = None,
) -> list[str]:
    """The command that runs TensorFlow's `saved_model_cli`: the script beside this interpreter (a
    virtual environment's python need not be activated, so not on PATH), in its scripts directory, on
    `path` (PATH if None), or else its module run by this interpreter."""
    for directory in (beside, scripts):
        script = os.path.join(directory, "saved_model_cli") if directory else ""
        if os.path.isfile(script) and os.access(script, os.X_OK):
            return [script]
    found = shutil.which("saved_model_cli", path=path)
    return [found] if found else [sys.executable, "-m", SAVED_MODEL_CLI_MODULE]


def test_saved_model_cli_is_found_where_no_script_is_beside_the_interpreter(tmp_path):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "saved_model_cli").write_text("#!/bin/sh\n")
    (scripts / "saved_model_cli").chmod(0o755)
    on_path = tmp_path / "on_path"
    shutil.copytree(scripts, on_path)
    empty = str(tmp_path / "empty")
    assert saved_model_cli(beside=empty, scripts=str(scripts), path="") == [str(scripts / "saved_model_cli")]
    assert saved_model_cli(beside=empty, scripts=None, path=str(on_path)) == [str(on_path / "saved_model_cli")]
    assert saved_model_cli(beside=empty, scripts=empty, path=empty) == [sys.executable, "-m", SAVED_MODEL_CLI_MODULE]


def run_saved_model_cli(command: list[str], path: str) -> tuple[str, subprocess.CompletedProcess]:
    """`show --all` and a `run` of serving_default through `command`: (what show printed, the run)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    shown = subprocess.run([*command, "show", "--dir", path, "--all"], capture_output=True, text=True, env=env)
    ran = subprocess.run(
        [
            *command,
            "run",
            "--dir",
            path,
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--input_exprs",
            'sequences=["++-0","I+"]',
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    return shown.stdout, ran


@pytest.mark.slow
@pytest.mark.parametrize("found", ["first found", "the module"])
def test_saved_model_cli_lists_and_runs_both_signatures(exported, tmp_path, found):
    _, path = exported
    command = saved_model_cli() if found == "first found" else saved_model_cli(str(tmp_path), None, str(tmp_path))
    shown, ran = run_saved_model_cli(command, path)
    assert "signature_def['serving_default']" in shown and "signature_def['score_encoded']" in shown
    assert "signature_def['about']" in shown
    assert ran.returncode == 0, ran.stderr
    assert "final_prediction_rounded" in ran.stdout


def test_failed_export_leaves_the_previous_one_loadable(exported, tmp_path, monkeypatch):
    model, _ = exported
    target = str(tmp_path / "saved_model")
    scorer = SequenceScorer(model, dg.ENCODING)
    export(scorer, target, scorer.signatures(), {"version": 1})

    def fail_midway(obj, directory, signatures=None):
        os.makedirs(os.path.join(directory, "variables"))
        with open(os.path.join(directory, "saved_model.pb"), "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(export_lib.tf.saved_model, "save", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        export(scorer, target, scorer.signatures(), {"version": 2})
    monkeypatch.undo()
    assert load_metadata(target)["version"] == 1
    outputs = tf.saved_model.load(target).signatures["serving_default"](sequences=tf.constant(["+-"]))
    np.testing.assert_allclose(outputs["final_prediction"], expected_finals(model, ["+-"]), atol=1e-5)
    assert os.listdir(tmp_path) == ["saved_model"]  # no staging directories left behind


def test_interrupted_swap_is_recovered(exported, tmp_path):
    model, _ = exported
    target = str(tmp_path / "saved_model")
    scorer = SequenceScorer(model, dg.ENCODING)
    export(scorer, target, scorer.signatures(), {"version": 1})
    os.rename(target, target + ".previous")  # as if killed between the two renames
    export(scorer, target, scorer.signatures(), {"version": 2})
    assert load_metadata(target)["version"] == 2
    assert sorted(os.listdir(tmp_path)) == ["saved_model"]


def snapshot(path):
    """Every file's bytes under `path` (or the file's own)."""
    return {p: p.read_bytes() for p in path.rglob("*") if p.is_file()} if path.is_dir() else path.read_bytes()


def test_export_replaces_only_an_export_of_ours_or_an_empty_directory(exported, tmp_path):
    """A directory with a user's file, a plain SavedModel of another program, a file, the run directory
    or one that holds it: refused, and every byte of it left as it was."""
    model, ours = exported
    scorer = SequenceScorer(model, dg.ENCODING)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    other_program = tmp_path / "other"
    tf.saved_model.save(tf.Module(), str(other_program))
    a_file = tmp_path / "a_file"
    a_file.write_text("data")
    for target, fragment in (
        (precious, "holds files that are not a diy_lstm SavedModel"),
        (other_program, "holds files that are not a diy_lstm SavedModel"),
        (a_file, "is a file"),
    ):
        before = snapshot(target)
        with pytest.raises(export_lib.ExportDirError, match=fragment):
            export(scorer, str(target), scorer.signatures())
        assert snapshot(target) == before
    run_dir = tmp_path / "logs" / "run"
    for target in (run_dir, tmp_path / "logs"):
        with pytest.raises(export_lib.ExportDirError, match="is or holds the run directory"):
            export_lib.check_export_dir(str(target), str(run_dir))
    export_lib.check_export_dir(str(run_dir / "saved_model"), str(run_dir))  # the default place is fine
    empty = tmp_path / "empty"
    empty.mkdir()
    export(scorer, str(empty), scorer.signatures())  # an empty directory is taken
    shutil.copytree(ours, tmp_path / "copy")
    export(scorer, str(tmp_path / "copy"), scorer.signatures(), {"version": 3})  # an export of ours is replaced
    assert load_metadata(str(tmp_path / "copy"))["version"] == 3


@pytest.mark.slow
@pytest.mark.parametrize("config", [None, {}, {"task": ""}, {"task": 3}, "counter"])
def test_a_run_does_not_replace_an_export_of_ours_that_names_no_task(exported, tmp_path, config):
    """Every run's export names its task; one that names none was written some other way, so a run
    cannot tell it is its own: refused, untouched. An export that names no task may replace it."""
    from conftest import counter_settings, train_counter

    model, ours = exported
    scorer = SequenceScorer(model, dg.ENCODING)
    target = tmp_path / "no_task"
    shutil.copytree(ours, target)
    metadata = {"format": export_lib.METADATA_FORMAT, **({} if config is None else {"config": config})}
    (target / export_lib.METADATA_FILE).write_text(json.dumps(metadata))
    before = snapshot(target)
    refusal = f"^--export_dir={target} holds a diy_lstm SavedModel that names no task; a counter run does not"
    with pytest.raises(export_lib.ExportDirError, match=refusal):
        export(scorer, str(target), scorer.signatures(), {"config": {"task": "counter"}}, task="counter")
    logdir = tmp_path / "logs"
    with pytest.raises(export_lib.ExportDirError, match=refusal):
        train_counter(counter_settings(str(logdir), "r", units=2, epochs=1, run_options={"export_dir": str(target)}))
    assert snapshot(target) == before and not logdir.exists()
    os.rename(target, f"{target}.previous")  # an interrupted swap would move it back, then replace it
    with pytest.raises(
        export_lib.ExportDirError,
        match=f"^--export_dir={target}.previous holds a diy_lstm SavedModel that names no task",
    ):
        export_lib.check_export_dir(str(target), task="counter")
    os.rename(f"{target}.previous", target)
    export(scorer, str(target), scorer.signatures(), {"version": 2})
    assert {key: value for key, value in load_metadata(str(target)).items() if key != export_lib.MANIFEST_KEY} == {
        "format": export_lib.METADATA_FORMAT,
        "version": 2,
    }


def test_a_run_replaces_an_export_of_its_own_task_only(exported, tmp_path):
    model, _ = exported
    scorer = SequenceScorer(model, dg.ENCODING)
    target = str(tmp_path / "counter_model")
    export(scorer, target, scorer.signatures(), {"config": {"task": "counter"}, "version": 1}, task="counter")
    export(scorer, target, scorer.signatures(), {"config": {"task": "counter"}, "version": 2}, task="counter")
    assert load_metadata(target)["version"] == 2
    with pytest.raises(export_lib.ExportDirError, match="holds a counter model; a text run does not replace it"):
        export_lib.check_export_dir(target, task="text")


def test_an_export_with_a_file_it_did_not_write_is_not_replaced_and_the_file_is_kept(exported, tmp_path):
    model, _ = exported
    scorer = SequenceScorer(model, dg.ENCODING)
    target = tmp_path / "saved_model"
    export(scorer, str(target), scorer.signatures(), {"config": {"task": "counter"}}, task="counter")
    manifest = load_metadata(str(target))[export_lib.MANIFEST_KEY]
    on_disk = sorted(
        [os.path.relpath(os.path.join(parent, name), target) for parent, _, names in os.walk(target) for name in names]
        + [
            os.path.relpath(parent, target) + os.sep
            for parent, directories, names in os.walk(target)
            if not names + directories
        ]
    )
    assert sorted([*manifest, export_lib.METADATA_FILE]) == on_disk and "saved_model.pb" in manifest
    (target / "NOTES.txt").write_text("my notes\n")
    (target / "variables" / "mine").mkdir()
    (target / "variables" / "mine" / "a.txt").write_text("a")
    (target / "assets.extra" / "empty").mkdir()  # a directory that holds nothing is the user's too
    for attempt in (
        lambda: export_lib.check_export_dir(str(target), task="counter"),  # before training
        lambda: export(scorer, str(target), scorer.signatures(), {"config": {"task": "counter"}}, task="counter"),
    ):  # and at the swap
        with pytest.raises(export_lib.ExportDirError) as raised:
            attempt()
        assert str(raised.value) == (
            f"--export_dir={target} holds files the export did not write (NOTES.txt, "
            "assets.extra/empty/, variables/mine/a.txt); refusing to replace it: move them elsewhere or choose "
            "another directory"
        )
    assert (target / "NOTES.txt").read_text() == "my notes\n" and sorted(os.listdir(tmp_path)) == ["saved_model"]
    assert (target / "assets.extra" / "empty").is_dir()
    (target / "NOTES.txt").unlink()
    shutil.rmtree(target / "variables" / "mine")
    (target / "assets.extra" / "empty").rmdir()
    metadata = load_metadata(str(target))  # an export older than the manifest: a SavedModel's own files only
    del metadata[export_lib.MANIFEST_KEY]
    (target / export_lib.METADATA_FILE).write_text(json.dumps(metadata))
    export_lib.check_export_dir(str(target), task="counter")
    (target / "notes.pb").write_text("x")
    with pytest.raises(export_lib.ExportDirError, match=r"did not write \(notes.pb\)"):
        export_lib.check_export_dir(str(target), task="counter")


def test_load_model_gives_back_the_exported_model_as_python(tmp_path):
    """`load_model`: every variable of a 2-layer export, and its predictions against numpy float64."""
    import dataclasses

    config = ModelConfig(input_size=3, units=5, num_layers=2, readout="cell", seed=3)
    model = LSTMModel(config)
    rng = np.random.default_rng(3)
    for variable in model.trainable_variables:
        variable.assign(rng.normal(scale=0.5, size=variable.shape).astype(np.float32))
    scorer = SequenceScorer(model, dg.ENCODING)
    path = str(tmp_path / "saved_model")
    export(scorer, path, scorer.signatures(), {"model_config": dataclasses.asdict(config)})
    loaded = export_lib.load_model(path)
    assert loaded.config == config
    for ours, theirs in zip(loaded.trainable_variables, model.trainable_variables):
        assert ours.name == theirs.name
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    inputs, _ = dg.encode_batch(SEQUENCES[:3])
    expected, _ = reference.forward(inputs, reference.params_from_model(model), readout="cell")
    np.testing.assert_allclose(loaded(inputs).numpy(), expected, atol=1e-5)


class Killed(BaseException):
    """The process is gone: no call after the one it stopped at runs, no cleanup either."""


MUTATIONS = ("mkdir", "open", "rename", "remove", "unlink", "rmdir", "chmod")


def kill_after(monkeypatch, calls: int) -> list[int]:
    """Patches every call that changes the disk (os's and the metadata's `open`) to end the process
    right after the `calls`-th (never, if 0); returns the count so far."""
    count = [0]

    def wrap(function):
        def wrapped(*args, **kwargs):
            if calls and count[0] >= calls:
                raise Killed()
            result = function(*args, **kwargs)
            count[0] += 1
            if count[0] == calls:
                raise Killed()
            return result

        return wrapped

    for name in MUTATIONS:
        monkeypatch.setattr(os, name, wrap(getattr(os, name)))
    monkeypatch.setattr(export_lib, "open", wrap(open), raising=False)
    return count


def whole_export(path: str) -> str:
    """The note of the export of ours at `path` if every file of its manifest is there, unmarked."""
    metadata = load_metadata(path)
    assert all(os.path.lexists(os.path.join(path, name)) for name in metadata[export_lib.MANIFEST_KEY])
    assert not os.path.exists(os.path.join(path, ".diy_lstm-staging"))
    return metadata["note"]


@pytest.mark.slow
def test_a_kill_after_any_file_operation_of_an_export_is_recovered_by_the_next(exported, tmp_path):
    """An export replacing an earlier one, killed right after each call that changes the disk in
    turn: what a rerun does first (`remove_stale_staging`) leaves the old export or the new one whole
    in place, and the next export replaces it, leaving nothing beside it but the user's file."""
    model, _ = exported
    scorer = SequenceScorer(model, dg.ENCODING)
    target = str(tmp_path / "exports" / "saved_model")

    def export_note(note):
        export(scorer, target, scorer.signatures(), {"note": note})

    export_note("first")
    (tmp_path / "exports" / "notes.txt").write_text("mine\n")
    with pytest.MonkeyPatch.context() as patch:
        count = kill_after(patch, 0)
        export_note("second")
    total, kills = count[0], 0
    assert total >= 10  # the staging, its marker, the metadata, two renames, the unmarking, the removal
    for calls in range(1, total + 1):
        with pytest.MonkeyPatch.context() as patch:
            kill_after(patch, calls)
            try:
                export_note("second")
            except Killed:
                kills += 1
        export_lib.remove_stale_staging(target)
        assert whole_export(target) in ("first", "second"), calls
        export_note("first")
        assert whole_export(target) == "first"
        assert sorted(os.listdir(tmp_path / "exports")) == ["notes.txt", "saved_model"], calls
    assert kills == total and (tmp_path / "exports" / "notes.txt").read_text() == "mine\n"


def test_an_export_whose_removal_was_killed_after_its_metadata_went_is_replaced(exported, tmp_path):
    """What a kill while the previous export is removed can leave once its metadata has gone (an empty
    `assets.extra/`, or nothing) is no user's: the next export replaces it and leaves nothing beside."""
    model, _ = exported
    scorer = SequenceScorer(model, dg.ENCODING)
    target = tmp_path / "saved_model"
    export(scorer, str(target), scorer.signatures(), {"note": "first"})
    (tmp_path / "saved_model.previous" / "assets.extra").mkdir(parents=True)
    export(scorer, str(target), scorer.signatures(), {"note": "second"})
    assert whole_export(str(target)) == "second" and os.listdir(tmp_path) == ["saved_model"]
