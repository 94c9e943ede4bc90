"""Signals: Ctrl-C and SIGTERM stop a run at the end of an epoch with a checkpoint (during start-up, at
once), a second stops it at once, SIGKILL at any moment loses at most the epoch, and every resume is
bit-identical to a run never stopped."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import (
    QUIET_TF,
    ROOT,
    SMALL_COUNTER,
    InterruptingTask,
    counter_settings,
    run_train,
    start_train,
    train_counter,
)
from test_reliability import (
    assert_same_run,
    event_steps,
    results,
    settings,
    train_uninterrupted,
    validation_series,
)

from diy_lstm.training import run


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The run each stopped and resumed run here must end equal to."""
    return train_uninterrupted(tmp_path_factory)


CLI_FLAGS = [
    "--lstm_size=8",
    "--epochs=100",
    "--batch_size=256",
    "--eval_every=10",
    "--checkpoint_every=20",
    "--seed=3",
    "--target=running",
    "--preactivation_noise=0.5",
    "--noise_free_epochs=30",
    "--image_every=0",
    "--histogram_every=0",
    "--jit_compile=false",
]


def start_cli_run(logdir, run_name):
    return start_train(f"--logdir={logdir}", f"--run_name={run_name}", *CLI_FLAGS)


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


@pytest.mark.slow
def test_sigterm_stops_at_the_end_of_the_epoch_with_a_checkpoint(tmp_path):
    flags = ["--epochs=100000", "--eval_every=1", "--image_every=0", "--histogram_every=0", "--jit_compile=false"]
    process = start_train(f"--logdir={tmp_path}", "--run_name=r", "--lstm_size=4", *flags)
    while not (process.stdout.readline() or "epoch").startswith("epoch"):
        pass
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and stderr == "", stderr
    stopped = int(stdout.split("interrupted after epoch ")[1].split(";")[0])
    assert tf.train.latest_checkpoint(str(tmp_path / "r" / "checkpoints")).endswith(f"ckpt-{stopped}")


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.3, 1.5])
def test_ctrl_c_during_start_up_is_one_line_and_exit_130(tmp_path, delay):
    process = start_train(f"--logdir={tmp_path}", "--run_name=r", "--lstm_size=4")
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr and len(stderr.splitlines()) <= 1, stderr


def test_ctrl_c_checkpoints_the_epoch_and_resuming_is_bit_identical(uninterrupted, tmp_path, capsys):
    interrupted = settings(tmp_path, "interrupted")
    stopped = run.train(interrupted, InterruptingTask(interrupted.data, 3))
    assert stopped.outcome == run.INTERRUPTED and stopped.completed_epochs == 30
    assert tf.train.latest_checkpoint(os.path.join(stopped.run_dir, "checkpoints")).endswith("ckpt-30")
    assert "interrupted after epoch 30; checkpoint saved to" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
    resumed = train_counter(interrupted)
    assert resumed.outcome == run.COMPLETED and resumed.resumed_from_epoch == 30
    assert capsys.readouterr().out.splitlines()[0].startswith("resuming from epoch 30 ")
    assert_same_run(resumed.run_dir, uninterrupted)


def test_ctrl_c_once_every_epoch_has_trained_stops_before_the_export_and_a_rerun_finishes(tmp_path, capsys):
    """Ctrl-C during the final evaluation (the run's third, after epochs 1 and 2): no export, exit
    130's outcome, the checkpoint of epoch 2 kept; the same settings again export and complete."""
    interrupted = counter_settings(str(tmp_path), "late", units=4, epochs=2, run_options={"eval_every": 1})
    stopped = run.train(interrupted, InterruptingTask(interrupted.data, 3))
    assert stopped.outcome == run.INTERRUPTED and stopped.completed_epochs == 2 and stopped.export_dir is None
    assert "interrupted before the export; the checkpoint" in capsys.readouterr().out
    assert not os.path.exists(tmp_path / "late" / "saved_model") and not os.path.exists(
        tmp_path / "late" / "results.json"
    )
    finished = train_counter(interrupted)
    assert finished.outcome == run.COMPLETED and finished.resumed_from_epoch == 2
    assert os.path.isdir(finished.export_dir) and results(finished.run_dir)["completed_epochs"] == 2


@pytest.mark.slow
def test_sigkill_then_ctrl_c_then_resume_on_the_command_line_is_bit_identical(uninterrupted, tmp_path):
    process = start_cli_run(str(tmp_path), "killed")
    wait_for_checkpoint(str(tmp_path / "killed"), process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process = start_cli_run(str(tmp_path), "killed")
    while process.poll() is None and "resuming from epoch" not in (process.stdout.readline() or "resuming from epoch"):
        pass
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and stderr == "", stderr
    assert "interrupted after epoch " in stdout and "Run the same command to resume." in stdout
    resumed = run_train(CLI_FLAGS + ["--run_name=killed"], str(tmp_path))
    assert resumed.returncode == 0 and resumed.stderr == "", resumed.stderr
    assert resumed.stdout.splitlines()[0].startswith("resuming from epoch ")
    assert "  validation: error " in resumed.stdout
    assert_same_run(str(tmp_path / "killed"), uninterrupted)


@pytest.mark.slow
def test_killed_at_random_moments_and_resumed_every_step_shows_once(tmp_path):
    """SIGKILL (or SIGINT twice) at random moments, rerun each time: TensorBoard's own loader reads
    each evaluation step exactly once, with the values of an uninterrupted run."""
    flags = [
        "--lstm_size=4",
        "--epochs=60",
        "--eval_every=5",
        "--checkpoint_every=10",
        "--image_every=0",
        "--histogram_every=0",
        "--jit_compile=false",
    ]
    reference_run = run_train(flags + ["--run_name=whole"], str(tmp_path))
    assert reference_run.returncode == 0, reference_run.stderr
    rng = np.random.default_rng(7)
    for attempt in range(4):
        process = subprocess.Popen(
            [
                sys.executable,
                os.path.join(ROOT, "train.py"),
                SMALL_COUNTER,
                f"--logdir={tmp_path}",
                "--run_name=killed",
                *flags,
            ],
            cwd=ROOT,
            env={**os.environ, **QUIET_TF},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(float(rng.uniform(2.5, 7.0)))
        if attempt % 2:
            process.send_signal(signal.SIGINT)
            time.sleep(0.05)
            process.send_signal(signal.SIGINT)
        else:
            process.kill()
        process.wait()
    finished = run_train(flags + ["--run_name=killed"], str(tmp_path))
    assert finished.returncode == 0, finished.stderr
    steps = list(range(5, 61, 5))
    for split in ("train", "validation"):
        assert event_steps(str(tmp_path / "killed"), split, "error") == steps
    assert validation_series(str(tmp_path / "killed")) == validation_series(str(tmp_path / "whole"))


# The command line, as a user runs it: killed, interrupted, resumed.
