"""Inputs that must fail clearly, and long inputs that must not fail."""

import json
import shutil

import pytest
import tensorflow as tf
from conftest import SCORE, run_python

from tasks.counter import data_generator as dg


def test_wrong_dtype_to_the_tensor_signature_names_the_dtype(small_export):
    signature = tf.saved_model.load(small_export).signatures["score_encoded"]
    with pytest.raises(
        (TypeError, ValueError, tf.errors.InvalidArgumentError),
        match="expected to be a float tensor but is a int32 tensor",
    ):
        signature(inputs=tf.zeros([1, 4, 3], dtype=tf.int32))


def test_wrong_rank_to_the_tensor_signature_is_refused(small_export):
    signature = tf.saved_model.load(small_export).signatures["score_encoded"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"inputs must be \[batch, time >= 1, 3\]"):
        signature(inputs=tf.zeros([4, 3]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"got shape\] \[2 0 3\]"):
        signature(inputs=tf.zeros([2, 0, 3]))


@pytest.mark.slow
def test_corrupt_saved_model_is_one_line_and_exit_3(small_export, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(small_export, broken)
    (broken / "saved_model.pb").write_bytes(b"\x00garbage")
    result = run_python([SCORE, f"--model_dir={broken}", "++"])
    assert result.returncode == 3 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: --model_dir={broken}: cannot load the SavedModel")


@pytest.mark.slow
def test_directory_without_saved_model(tmp_path):
    result = run_python([SCORE, f"--model_dir={tmp_path}", "++"])
    assert result.returncode == 3 and "no saved_model.pb there" in result.stderr


@pytest.mark.slow
def test_missing_model_dir_flag():
    result = run_python([SCORE, "++"])
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: --model_dir is required: the directory of a SavedModel written by train.py"
    ]


@pytest.mark.slow
def test_a_model_never_chooses_code_to_run(small_export, tmp_path):
    """Metadata naming a Python function (here one that would delete ./0) is data: the scorer calls
    only what the user names with --reference."""
    hostile = tmp_path / "hostile"
    shutil.copytree(small_export, hostile)
    (hostile / "assets.extra" / "diy_lstm.json").write_text(json.dumps({"reference_function": "shutil:rmtree"}))
    victim = tmp_path / "work"
    (victim / "0").mkdir(parents=True)
    result = run_python([SCORE, f"--model_dir={hostile}", "0"], cwd=str(victim))
    assert result.returncode == 0, result.stderr
    assert (victim / "0").is_dir()
    assert result.stdout.splitlines()[0].split() == ["sequence", "prediction", "rounded"]  # no true values


@pytest.mark.slow
def test_long_sequence_scores_in_bounded_memory(small_export):
    """100,000 characters: the loop keeps only h and c per step, so memory grows by megabytes."""
    script = f"""
import resource, sys, json, numpy as np, tensorflow as tf
m = tf.saved_model.load({small_export!r})
f = m.signatures["serving_default"]
rng = np.random.default_rng(0)
def peak_mb(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
f(sequences=tf.constant(["+-I0" * 250]))
before = peak_mb()
out = f(sequences=tf.constant(["".join(rng.choice(list("+-0I"), 100_000))]))
print(json.dumps({{"grew_mb": peak_mb() - before, "length": int(out["lengths"][0]),
                   "finite": bool(np.isfinite(out["final_prediction"].numpy()).all())}}))
"""
    result = run_python(["-c", script], timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["length"] == 100_000 and report["finite"]
    assert report["grew_mb"] < 300, report  # [100000, 1, 4] floats per recorded series: a few MB


def test_bad_sequence_in_python_api_names_position():
    with pytest.raises(dg.SequenceError, match=r"'\\x07' \(U\+0007\) at position 3"):
        dg.encode_sequence("+-\x07")
