"""Interrupted runs resume exactly; runs repeat exactly; a diverging run stops without damage."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from conftest import QUIET_TF, ROOT, run_train
from diy_lstm import machine

RUN_FLAGS = ["--lstm_size=8", "--epochs=100", "--batch_size=256", "--eval_every=10", "--checkpoint_every=20",
             "--seed=3", "--target=running", "--preactivation_noise=0.5", "--noise_free_epochs=30", "--image_every=0",
             "--histogram_every=0"]
QUICK = ["--image_every=0", "--histogram_every=0", "--jit_compile=false"]


def final_weights(run_dir):
    reader = tf.train.load_checkpoint(os.path.join(run_dir, "checkpoints"))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.startswith("model/")}


def results(run_dir):
    with open(os.path.join(run_dir, "results.json")) as f:
        return json.load(f)


def held_out_series(run_dir, tag="mean_square_error"):
    accumulator = event_accumulator.EventAccumulator(os.path.join(run_dir, "test"),
                                                     size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    return [(e.step, tf.make_ndarray(e.tensor_proto).item()) for e in accumulator.Tensors(tag)]


def start_train(logdir, run_name, flags):
    return subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "train.py"), f"--logdir={logdir}", f"--run_name={run_name}", *flags],
        cwd=ROOT, env={**os.environ, **QUIET_TF}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(run_dir, process, timeout=120):
    index = os.path.join(run_dir, "checkpoints", "checkpoint")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(index):
            return
        if process.poll() is not None:
            pytest.fail(f"training ended before its first checkpoint: {process.stderr.read()}")
        time.sleep(0.02)
    pytest.fail("no checkpoint appeared")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    logdir = str(tmp_path_factory.mktemp("reference_run"))
    result = run_train(RUN_FLAGS + ["--run_name=whole"], logdir)
    assert result.returncode == 0, result.stderr
    return os.path.join(logdir, "whole")


def assert_same_run(run_dir, reference_dir):
    ours, expected = final_weights(run_dir), final_weights(reference_dir)
    assert ours.keys() == expected.keys() and len(ours) == 10
    assert "model/layers/0/W_f/.ATTRIBUTES/VARIABLE_VALUE" in ours  # gate names in the checkpoint
    for name in expected:
        np.testing.assert_array_equal(ours[name], expected[name], err_msg=name)  # bit for bit
    assert results(run_dir)["test"] == results(reference_dir)["test"]
    assert held_out_series(run_dir) == held_out_series(reference_dir)  # same steps, no duplicates, same values


def test_sigkill_after_a_checkpoint_then_resume_is_bit_identical(uninterrupted, tmp_path):
    process = start_train(str(tmp_path), "killed", RUN_FLAGS)
    wait_for_checkpoint(str(tmp_path / "killed"), process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = run_train(RUN_FLAGS + ["--run_name=killed"], str(tmp_path))
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines()[0].startswith("resuming from epoch ")
    assert_same_run(str(tmp_path / "killed"), uninterrupted)


def test_ctrl_c_saves_a_checkpoint_and_resume_is_bit_identical(uninterrupted, tmp_path):
    process = start_train(str(tmp_path), "interrupted", RUN_FLAGS)
    wait_for_checkpoint(str(tmp_path / "interrupted"), process)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    stopped_at = int(stdout.split("interrupted after epoch ")[1].split(";")[0])
    assert tf.train.latest_checkpoint(str(tmp_path / "interrupted" / "checkpoints")).endswith(f"ckpt-{stopped_at}")
    resumed = run_train(RUN_FLAGS + ["--run_name=interrupted"], str(tmp_path))
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines()[0].startswith(f"resuming from epoch {stopped_at} ")
    assert f"done: epochs {stopped_at + 1}..100 in " in resumed.stdout
    assert results(str(tmp_path / "interrupted"))["resumed_from_epoch"] == stopped_at
    assert results(uninterrupted)["resumed_from_epoch"] == 0
    assert_same_run(str(tmp_path / "interrupted"), uninterrupted)


def test_rerunning_a_completed_run_trains_nothing_and_says_so(uninterrupted, tmp_path):
    shutil.copytree(uninterrupted, tmp_path / "completed")
    again = run_train(RUN_FLAGS + ["--run_name=completed"], str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert "done: no epochs left to train (the run had completed all 100)" in again.stdout
    assert results(str(tmp_path / "completed"))["resumed_from_epoch"] == 100
    assert_same_run(str(tmp_path / "completed"), uninterrupted)


def test_same_seed_gives_the_same_run_and_records_the_machine(uninterrupted, tmp_path):
    again = run_train(RUN_FLAGS + ["--run_name=again"], str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert_same_run(str(tmp_path / "again"), uninterrupted)
    # Printed to 3 significant digits: a training MSE below 1e-9 is what tells a counter that stays exact
    # far beyond its training length (README, "Generalizing"), so it must not print as 0.0000.
    printed = next(line for line in again.stdout.splitlines() if line.startswith("  training: error"))
    training_mse = results(uninterrupted)["train"]["mean_square_error"]
    assert float(printed.split("mse ")[1]) == pytest.approx(training_mse, rel=5e-3)
    recorded = results(uninterrupted)["machine"]
    assert recorded["tensorflow"] == tf.__version__ and recorded["cores"] == os.cpu_count()
    assert recorded["cpu"] == machine.cpu_model()


def test_diverging_run_stops_naming_the_epoch_and_keeps_the_last_checkpoint(tmp_path):
    flags = ["--lstm_size=4", "--eval_every=5", "--checkpoint_every=5", "--run_name=nan", *QUICK]
    assert run_train(flags + ["--epochs=10"], str(tmp_path)).returncode == 0
    checkpoint_dir = tmp_path / "nan" / "checkpoints"
    before = {name: hashlib.sha256((checkpoint_dir / name).read_bytes()).hexdigest()
              for name in os.listdir(checkpoint_dir)}
    result = run_train(flags + ["--epochs=30", "--learning_rate=1e30"], str(tmp_path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: training stopped: the loss became") and "in epoch 1" in message
    assert "ckpt-10" in message
    after = {name: hashlib.sha256((checkpoint_dir / name).read_bytes()).hexdigest()
             for name in os.listdir(checkpoint_dir)}
    assert after == before
    from diy_lstm.export import load_metadata
    assert load_metadata(str(tmp_path / "nan" / "saved_model"))["settings"]["epochs"] == 10  # export untouched


def test_changed_settings_on_resume_are_refused_by_name(tmp_path):
    assert run_train(["--lstm_size=4", "--epochs=5", "--run_name=r", *QUICK], str(tmp_path)).returncode == 0
    result = run_train(["--lstm_size=6", "--epochs=5", "--run_name=r", *QUICK], str(tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "--lstm_size=4 (now 6)" in result.stderr


def test_fresh_moves_the_old_run_aside_and_says_so(tmp_path):
    assert run_train(["--lstm_size=4", "--epochs=5", "--run_name=r", *QUICK], str(tmp_path)).returncode == 0
    result = run_train(["--lstm_size=4", "--epochs=5", "--run_name=r", "--fresh", *QUICK], str(tmp_path))
    assert result.returncode == 0
    aside = [name for name in os.listdir(tmp_path) if name.startswith("r.replaced-")]
    assert len(aside) == 1 and "moved the existing run" in result.stdout
    assert os.path.exists(tmp_path / aside[0] / "checkpoints" / "checkpoint")


def test_corrupt_checkpoint_is_reported_not_overwritten(tmp_path):
    assert run_train(["--lstm_size=4", "--epochs=5", "--run_name=r", *QUICK], str(tmp_path)).returncode == 0
    checkpoint_dir = tmp_path / "r" / "checkpoints"
    index = next(name for name in os.listdir(checkpoint_dir) if name.endswith(".index"))
    (checkpoint_dir / index).write_bytes(b"not a checkpoint")
    result = run_train(["--lstm_size=4", "--epochs=10", "--run_name=r", *QUICK], str(tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot restore checkpoint" in result.stderr
    assert (checkpoint_dir / index).read_bytes() == b"not a checkpoint"


RESTART_FLAGS = ["--lstm_size=4", "--epochs=4", "--eval_every=1", "--checkpoint_every=2", *QUICK]


def test_a_run_not_learned_by_the_restart_epoch_starts_over_as_the_next_seed(tmp_path):
    direct = run_train(RESTART_FLAGS + ["--run_name=direct", "--seed=1"], str(tmp_path))
    assert direct.returncode == 0, direct.stderr
    restarted = run_train(RESTART_FLAGS + ["--run_name=r", "--restart_epoch=2", "--max_restarts=1"], str(tmp_path))
    assert restarted.returncode == 0, restarted.stderr
    # Two epochs of 4 units do not learn: seed 0 is given up at epoch 2; seed 1, the last try, trains on.
    assert "seed 0 given up" in restarted.stdout and "no restart is left (--max_restarts=1)" in restarted.stdout
    given_up = results(str(tmp_path / "r.seed0-not-learned"))
    assert given_up["seed"] == 0 and given_up["epoch"] == 2 and given_up["test_error"] > 0
    assert tf.train.latest_checkpoint(str(tmp_path / "r.seed0-not-learned" / "checkpoints")).endswith("ckpt-2")
    assert [step for step, _ in held_out_series(str(tmp_path / "r.seed0-not-learned"))] == [1, 2]
    assert_same_run(str(tmp_path / "r"), str(tmp_path / "direct"))  # as if started with --seed=1
    assert results(str(tmp_path / "r"))["seed"] == 1
    assert [r["seed"] for r in results(str(tmp_path / "r"))["restarts"]] == [0]

    again = run_train(RESTART_FLAGS + ["--run_name=r", "--restart_epoch=2", "--max_restarts=1"], str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert "done: no epochs left to train" in again.stdout
    assert "trained as --seed=1 after giving up seed 0 (" in again.stdout and "s of training in all" in again.stdout
    assert sorted(os.listdir(tmp_path)) == ["direct", "r", "r.seed0-not-learned"]


def test_a_run_with_a_held_out_mse_above_restart_mse_starts_over_even_within_the_restart_error(tmp_path):
    flags = RESTART_FLAGS + ["--run_name=r", "--restart_epoch=2", "--restart_error=0.99", "--restart_mse=0.01",
                             "--max_restarts=1"]
    result = run_train(flags, str(tmp_path))
    assert result.returncode == 0, result.stderr
    given_up = results(str(tmp_path / "r.seed0-not-learned"))
    # The check reads the held-out evaluation of epoch 2, the one the test writer logged.
    (_, logged_error), = [point for point in held_out_series(str(tmp_path / "r.seed0-not-learned"), "error")
                          if point[0] == 2]
    (_, logged_mse), = [point for point in held_out_series(str(tmp_path / "r.seed0-not-learned")) if point[0] == 2]
    assert given_up["test_error"] == pytest.approx(logged_error, rel=1e-6) and logged_error <= 0.99
    assert given_up["test_mse"] == pytest.approx(logged_mse, rel=1e-6) and logged_mse > 0.01
    assert f"held-out mse {logged_mse:.3g} is above --restart_mse=0.01: seed 0 given up" in result.stdout
    assert "no restart is left (--max_restarts=1)" in result.stdout
    assert f"after giving up seed 0 (mse {logged_mse:.3g} at epoch 2, " in result.stdout


def test_a_run_within_the_restart_error_and_mse_is_not_restarted(tmp_path):
    result = run_train(RESTART_FLAGS + ["--run_name=r", "--restart_epoch=2", "--restart_error=0.99",
                                        "--restart_mse=1000"], str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "given up" not in result.stdout and sorted(os.listdir(tmp_path)) == ["r"]
    assert results(str(tmp_path / "r"))["seed"] == 0 and results(str(tmp_path / "r"))["restarts"] == []
