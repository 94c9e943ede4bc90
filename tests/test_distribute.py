"""Data-parallel training (diy_lstm/distribute.py): replicas reproduce one device's training.

Mirrored runs train in this process on the two logical CPU devices conftest.py makes; multi-worker
runs start `train.py` workers on loopback ports chosen at run time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
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
    train_counter,
)

from diy_lstm.model import LSTMModel, ModelConfig
from diy_lstm.training import distribute, run
from diy_lstm.training.config import ConfigError, RunConfig, RunSettings, TrainingConfig
from diy_lstm.training.optimizer import Adam
from diy_lstm.training.trainer import Trainer
from tasks.counter import data_generator
from tasks.counter.task import CounterData, CounterTask
from tasks.text.task import TextData, TextTask

MIRRORED = {"strategy": "mirrored", "cpu_devices": 2}


def model_weights(run_dir: str) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(os.path.join(run_dir, "checkpoints"))
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if name.startswith("model/") and "OPTIMIZER" not in name
    }


def largest_difference(run_dir: str, reference_dir: str) -> float:
    ours, expected = model_weights(run_dir), model_weights(reference_dir)
    assert ours.keys() == expected.keys() and ours
    return max(float(np.max(np.abs(ours[name] - expected[name]))) for name in expected)


def test_mirrored_places_one_replica_on_each_logical_cpu_device():
    place = distribute.placement("mirrored", 2)
    assert place.replicas == 2 and place.is_chief and place.distributed
    assert [device.rsplit(":", 1)[1] for device in place.strategy.extended.worker_devices] == ["0", "1"]
    assert distribute.placement("mirrored", 2) is place  # one per process
    with pytest.raises(ConfigError, match="already trains with --strategy=mirrored --cpu_devices=2"):
        distribute.placement("mirrored", 3)


def test_a_batch_is_cut_along_its_first_axis_and_scalars_go_whole():
    rows = tf.reshape(tf.range(10), [5, 2])
    first, second = (distribute.replica_slice((rows, tf.constant(True)), replica, 2) for replica in (0, 1))
    np.testing.assert_array_equal(first[0], [[0, 1], [2, 3], [4, 5]])
    np.testing.assert_array_equal(second[0], [[6, 7], [8, 9]])
    assert bool(first[1]) and bool(second[1])
    assert distribute.replica_slice((tf.range(1),), 1, 2)[0].shape == [0]  # fewer rows than replicas


@pytest.mark.parametrize("noise", [0.0, 1.0])
def test_the_replicas_joined_gradient_is_the_one_device_gradient(noise, measured):
    """An uneven global batch (mixed lengths: 3 + 2 sequences, with padding), gradients of the running
    loss from one device and from two replicas, each with its share of the noise."""
    place = distribute.placement("mirrored", 2)
    examples, _ = data_generator.make_splits(3, 6, 0.5, seed=1)
    pick = np.array([0, 50, 200, 300, 1000])
    inputs = examples.inputs[pick, :6]
    batch = (tf.constant(inputs), tf.constant(examples.running_sums[pick, :6]), tf.constant(examples.lengths[pick]))
    task = CounterTask(CounterData(min_length=3, max_length=6))
    task.prepare(TrainingConfig(epochs=1, batch_size=5))
    gradients = {}
    for name, strategy in (("default", None), ("mirrored", place.strategy)):
        with (strategy or tf.distribute.get_strategy()).scope():
            model = LSTMModel(ModelConfig(input_size=3, units=6, seed=5))
            optimizer = Adam(model.trainable_variables)
        trainer = Trainer(model, optimizer, task.loss, preactivation_noise=noise, seed=9, strategy=strategy)
        given = distribute.split_batch(place, batch) if strategy else batch
        loss, gradients[name] = trainer.gradients(*given)
        gradients[name] = [g.numpy() for g in gradients[name]] + [loss.numpy()]
    worst = max(
        float(np.max(np.abs(d - m)) / np.max(np.abs(d))) for d, m in zip(gradients["default"], gradients["mirrored"])
    )
    assert measured("mirrored vs one device: gradient of one uneven batch, relative", worst) <= 1e-6
    assert len(set(examples.lengths[pick])) > 1


def text_run(logdir: str, name: str, run_options: dict, epochs: int = 3) -> run.RunResult:
    data = TextData(corpus="hamlet_soliloquy", validation_fraction=0.1, unroll_length=25)
    training = TrainingConfig(
        epochs=epochs, batch_size=4, learning_rate=0.02, clip_norm=5.0, preactivation_noise=0.5, jit_compile="false"
    )
    task = TextTask(data)
    model = ModelConfig(
        input_size=len(task.vocabulary),
        units=16,
        num_layers=2,
        output_size=len(task.vocabulary),
        initializer="glorot_uniform",
    )
    run_config = RunConfig(
        logdir=logdir,
        run_name=name,
        histogram_every=epochs,
        image_every=epochs,
        sample_every=epochs,
        eval_every=epochs,
        **run_options,
    )
    return run.train(RunSettings(TextTask.name, model, data, training, run_config), task)


@pytest.mark.parametrize(
    "task", [pytest.param("counter", marks=pytest.mark.slow), pytest.param("text", marks=pytest.mark.slow)]
)
def test_a_mirrored_run_ends_with_the_weights_and_metrics_of_a_one_device_run(task, tmp_path, measured):
    """Same seed and global batch. The counter: 20 epochs with noise, lengths 1..3 in batches of 8
    (slices of 4 + 4, 2 + 2, and 1 + none for the one training sequence of length 1); the text: 2
    layers, each replica carrying its own 2 streams' state, with histograms, heat maps and samples."""
    results = {}
    for name, options in (("default", {}), ("mirrored", MIRRORED)):
        if task == "counter":
            data = CounterData(min_length=1, max_length=3)
            results[name] = train_counter(
                counter_settings(
                    str(tmp_path),
                    name,
                    data=data,
                    epochs=20,
                    batch_size=8,
                    clip_norm=1.0,
                    weight_decay=0.01,
                    run_options={"eval_every": 20, **options},
                )
            )
        else:
            results[name] = text_run(str(tmp_path), name, options)
    difference = largest_difference(results["mirrored"].run_dir, results["default"].run_dir)
    assert measured(f"mirrored vs one device: {task} run, largest weight difference", difference) <= 1e-4
    for split, metrics in results["default"].metrics.items():
        for metric, value in metrics.items():
            assert results["mirrored"].metrics[split][metric] == pytest.approx(value, rel=1e-4, abs=1e-6), metric
    saved = json.load(open(os.path.join(results["mirrored"].run_dir, "config.json")))
    assert (saved["run"]["strategy"], saved["run"]["cpu_devices"]) == ("mirrored", 2)


@pytest.mark.slow
def test_a_run_stopped_on_one_device_resumes_mirrored_and_back(tmp_path, measured):
    """Ctrl-C after epoch 10 (one device), resumed mirrored, Ctrl-C after epoch 20, resumed on one device."""
    whole = train_counter(counter_settings(str(tmp_path), "whole", epochs=30, run_options={"eval_every": 10}))
    for options, until in (({}, 10), (MIRRORED, 20)):
        settings = counter_settings(str(tmp_path), "parts", epochs=30, run_options={"eval_every": 10, **options})
        stopped = run.train(settings, InterruptingTask(settings.data, at_evaluation=1))
        assert (stopped.outcome, stopped.completed_epochs) == (run.INTERRUPTED, until)
    finished = train_counter(counter_settings(str(tmp_path), "parts", epochs=30, run_options={"eval_every": 10}))
    assert (finished.outcome, finished.resumed_from_epoch) == (run.COMPLETED, 20)
    difference = largest_difference(finished.run_dir, whole.run_dir)
    assert measured("one device -> mirrored -> one device vs one device: largest weight difference", difference) <= 1e-4


def test_text_streams_that_cannot_split_evenly_over_the_replicas_are_refused_before_any_writing(tmp_path):
    data = TextData(corpus="hamlet_soliloquy", validation_fraction=0.0, unroll_length=10)
    task = TextTask(data)
    model = ModelConfig(input_size=len(task.vocabulary), units=4, output_size=len(task.vocabulary))
    settings = RunSettings(
        TextTask.name,
        model,
        data,
        TrainingConfig(epochs=1, batch_size=3),
        RunConfig(logdir=str(tmp_path), run_name="odd", **MIRRORED),
    )
    with pytest.raises(ConfigError, match=r"^--batch_size=3 streams cannot be split evenly over 2 replicas"):
        run.train(settings, task)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "tf_config, named",
    [
        (None, "needs the TF_CONFIG environment variable"),
        ("{cluster", "TF_CONFIG is not JSON"),
        ('{"cluster": {"worker": ["a:1"]}}', 'TF_CONFIG must be an object with "cluster" and "task"'),
        (
            '{"cluster": {"worker": ["a:1", "b"]}, "task": {"type": "worker", "index": 0}}',
            "TF_CONFIG cluster 'worker' address 1 is 'b'",
        ),
        (
            '{"cluster": {"worker": ["a:1", "b:70000"]}, "task": {"type": "worker", "index": 0}}',
            "address 1 is 'b:70000'",
        ),
        (
            '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}',
            r"task index 1 is not in \[0, 1\)",
        ),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "task type 'ps' is not a job"),
        ('{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "job 'ps' is not one of"),
        ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}', "must be a non-empty list"),
    ],
)
def test_a_malformed_tf_config_is_named(tf_config, named):
    with pytest.raises(ConfigError, match=named):
        distribute.read_tf_config(tf_config)


def test_the_chief_is_worker_0_or_the_task_called_chief():
    workers = ["a:1", "b:2"]
    plain = {"cluster": {"worker": workers}}
    with_chief = {"cluster": {"chief": ["c:3"], "worker": workers}}
    read = lambda config, task_type, index: distribute.read_tf_config(  # noqa: E731
        json.dumps({**config, "task": {"type": task_type, "index": index}})
    )
    assert (read(plain, "worker", 0).is_chief, read(plain, "worker", 1).is_chief) == (True, False)
    assert read(plain, "worker", 1).num_workers == 2 and read(plain, "worker", 1).address == "b:2"
    assert read(with_chief, "chief", 0).is_chief and not read(with_chief, "worker", 0).is_chief
    assert (read(with_chief, "worker", 1).worker_index, read(with_chief, "worker", 1).num_workers) == (2, 3)


# --- several processes ---------------------------------------------------------------------------


@contextlib.contextmanager
def workers(flags: list[str], count: int = 2):
    """`count` train.py workers on loopback, each in its own process group; all killed on the way out."""
    processes = []
    try:
        for tf_config in distribute.loopback_tf_configs(count):
            processes.append(
                subprocess.Popen(
                    [sys.executable, os.path.join(ROOT, "train.py"), SMALL_COUNTER, "--strategy=multi_worker", *flags],
                    cwd=ROOT,
                    env={**os.environ, **QUIET_TF, "TF_CONFIG": tf_config},
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    start_new_session=True,
                )
            )
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


def finish(processes, timeout: float = 240) -> list[tuple[int, str, str]]:
    """Each process's (exit code, stdout, stderr), once it has ended."""
    outputs = [p.communicate(timeout=timeout) for p in processes]
    return [(p.returncode, *output) for p, output in zip(processes, outputs)]


def validation_final_predictions(export_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """The export's final predictions of train.py's default validation sequences, and their final sums."""
    _, validation = data_generator.make_splits(6, 6, 0.25, seed=0)
    score = tf.saved_model.load(export_dir).signatures["score_encoded"]
    return score(inputs=tf.constant(validation.inputs, tf.float32))[
        "final_prediction"
    ].numpy(), validation.running_sums[:, -1]


@pytest.mark.slow
def test_two_workers_on_loopback_train_the_one_process_model_and_the_chief_exports_it(tmp_path, measured):
    flags = ["--lstm_size=8", "--epochs=12", "--eval_every=6", "--run_name=run"]
    single = run_train([*flags], str(tmp_path / "one_process"))
    assert single.returncode == 0, single.stderr
    with workers([f"--logdir={tmp_path / 'two_workers'}", *flags]) as processes:
        (chief_code, chief_out, chief_err), (code, out, err) = finish(processes)
    assert (chief_code, chief_err, code, err) == (0, "", 0, ""), (chief_err, err)
    assert "multi_worker: 2 replicas on worker 0 of 2" in chief_out
    assert out.splitlines()[0].startswith("worker 1 of 2: epochs 1..12 of")
    two, one = tmp_path / "two_workers" / "run", tmp_path / "one_process" / "run"
    names = lambda path: sorted(name.split(".tfevents.")[0] for name in os.listdir(path))  # noqa: E731
    assert names(two) == names(one)  # the same files, and no scratch directory of worker 1 left
    difference = largest_difference(str(two), str(one))
    assert measured("2 workers vs one process: counter run, largest weight difference", difference) <= 1e-4
    (ours, sums), (expected, _) = (validation_final_predictions(str(path / "saved_model")) for path in (two, one))
    largest = np.max(np.abs(ours - expected))
    assert measured("2 workers vs one process: export's validation predictions", largest) <= 1e-3
    misses = {
        name: float(np.mean(np.round(predictions) != sums)) for name, predictions in (("two", ours), ("one", expected))
    }
    assert misses["two"] == misses["one"]
    assert misses["two"] == pytest.approx(json.load(open(two / "results.json"))["metrics"]["validation"]["error"])


def latest_checkpoint_epoch(checkpoints) -> int:
    saved = [
        int(name[len("ckpt-") : -len(".index")])
        for name in (os.listdir(checkpoints) if checkpoints.is_dir() else [])
        if name.endswith(".index")
    ]
    return max(saved, default=0)


def wait_for_checkpoint_after(checkpoints, epoch: int, chief: subprocess.Popen, seconds: float = 180) -> int:
    """The completed epochs of the first checkpoint the chief writes after `epoch`."""
    deadline = time.monotonic() + seconds
    while (latest := latest_checkpoint_epoch(checkpoints)) <= epoch:
        assert time.monotonic() < deadline and chief.poll() is None, f"no checkpoint after epoch {epoch}"
        time.sleep(0.2)
    return latest


@pytest.mark.slow
def test_a_dead_worker_stops_the_other_in_one_line_all_resume_and_ctrl_c_on_one_stops_all(tmp_path):
    logdir = tmp_path / "logs"
    flags = [
        f"--logdir={logdir}",
        "--run_name=run",
        "--lstm_size=8",
        "--epochs=400",
        "--checkpoint_every=10",
        "--eval_every=10",
        "--histogram_every=0",
        "--image_every=0",
    ]
    checkpoints = logdir / "run" / "checkpoints"
    with workers(flags) as (chief, other):
        wait_for_checkpoint_after(checkpoints, 0, chief)
        os.killpg(other.pid, signal.SIGKILL)
        killed = time.monotonic()
        code, out, err = finish([chief], timeout=120)[0]
        waited = time.monotonic() - killed
    assert code == 1 and waited < 120
    assert len(err.splitlines()) == 1 and "worker 1 stopped responding; rerun every worker to resume from" in err, err
    last = int(err.rsplit("ckpt-", 1)[1])
    with workers(flags) as (chief, other):  # rerun both: they resume; then Ctrl-C on worker 1 stops both
        wait_for_checkpoint_after(checkpoints, last, chief)
        other.send_signal(signal.SIGINT)
        (chief_code, chief_out, chief_err), (code, out, err) = finish([chief, other])
    assert (chief_code, chief_err, code) == (130, "", 130), chief_err
    assert f"resuming from epoch {last} " in chief_out
    stopped = int(chief_out.split("interrupted after epoch ")[1].split(";")[0])
    assert f"checkpoints/ckpt-{stopped}. Run the same command to resume." in chief_out
    assert latest_checkpoint_epoch(checkpoints) == stopped
    assert "stopping after this epoch" in out and not (logdir / "run" / "worker1-scratch").exists()


@pytest.mark.slow
def test_a_chief_that_refuses_to_start_stops_the_other_worker_in_one_line(tmp_path):
    not_ours = tmp_path / "not_an_export"
    (not_ours / "notes").mkdir(parents=True)
    with workers([f"--logdir={tmp_path / 'logs'}", f"--export_dir={not_ours}", "--lstm_size=8"]) as processes:
        (chief_code, _, chief_err), (code, out, err) = finish(processes, timeout=120)
    assert chief_code == 2 and len(chief_err.splitlines()) == 1 and str(not_ours) in chief_err
    assert (
        code == 1
        and err == "error: worker 0 stopped before training began (its own output says why); rerun every worker\n"
    )
    assert os.listdir(not_ours) == ["notes"]


@pytest.mark.slow
def test_a_worker_whose_address_is_taken_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        tf_config = json.dumps(
            {"cluster": {"worker": [f"127.0.0.1:{port}", "127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}}
        )
        finished = subprocess.run(
            [
                sys.executable,
                os.path.join(ROOT, "train.py"),
                SMALL_COUNTER,
                "--strategy=multi_worker",
                f"--logdir={tmp_path}",
            ],
            cwd=ROOT,
            env={**os.environ, **QUIET_TF, "TF_CONFIG": tf_config},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert finished.returncode == 2 and finished.stdout == ""
    assert finished.stderr == (
        f"error: cannot start worker 0 at 127.0.0.1:{port} (TF_CONFIG's task): Address already "
        "in use; is its port free, and is this the task's machine?\n"
    )
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_train_py_mirrored_on_two_cpu_devices_reaches_the_one_device_held_out_error(tmp_path):
    """The issue's command, to its goal: every validation sequence right, as one device gets them (that
    its weights are one device's: `test_a_mirrored_run_ends_with_the_weights_and_metrics_of_a_one_device_run`)."""
    flags = ["--lstm_size=24", "--run_name=mirrored", "--stop_at_goal", "--strategy=mirrored", "--cpu_devices=2"]
    finished = run_train(flags, str(tmp_path), timeout=600)
    assert finished.returncode == 0 and finished.stderr == "", finished.stderr
    assert "mirrored: 2 replicas" in finished.stdout
    assert json.load(open(tmp_path / "mirrored" / "results.json"))["metrics"]["validation"]["error"] == 0.0


@pytest.mark.slow
def test_workers_started_with_different_settings_refuse_naming_them_before_writing(tmp_path):
    """Each worker's flags: the same but for --seed, --learning_rate, --epochs and --eval_every on worker 1
    (the last two may change on resume, but the workers meet at every epoch and evaluation)."""
    configs = distribute.loopback_tf_configs(2)
    per_worker = [["--epochs=2"], ["--seed=1", "--learning_rate=0.01", "--epochs=3", "--eval_every=2"]]
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                os.path.join(ROOT, "train.py"),
                SMALL_COUNTER,
                "--strategy=multi_worker",
                f"--logdir={tmp_path}",
                "--run_name=r",
                "--lstm_size=4",
                *extra,
            ],
            cwd=ROOT,
            env={**os.environ, **QUIET_TF, "TF_CONFIG": config},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for config, extra in zip(configs, per_worker)
    ]
    try:
        results = finish(processes, timeout=180)
    finally:
        for process in processes:
            process.kill()
    for index, (code, _, err) in enumerate(results):
        assert code == 1 and len(err.splitlines()) == 1, err
        assert (
            err.startswith("error: the workers were started with different settings or data: ")
            and "training.learning_rate" in err
            and "training.seed" in err
            and "model.seed" in err
        ), err
        assert "training.epochs" in err and "run.eval_every" in err, err
    assert "training.seed=1" in results[1][2] and "training.seed=0" in results[0][2]
    assert os.listdir(tmp_path) == []  # refused before the run directory was made


@pytest.mark.slow
def test_a_chief_whose_peer_never_starts_says_what_it_waits_for_and_gives_up(tmp_path):
    chief_config = json.loads(distribute.loopback_tf_configs(2)[0])
    peer = chief_config["cluster"]["worker"][1]
    started = time.monotonic()
    finished = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "train.py"),
            SMALL_COUNTER,
            "--strategy=multi_worker",
            f"--logdir={tmp_path}",
            "--worker_start_timeout=8",
        ],
        cwd=ROOT,
        env={**os.environ, **QUIET_TF, "TF_CONFIG": json.dumps(chief_config)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert time.monotonic() - started < 60
    assert finished.returncode == 1
    assert (
        finished.stdout == f"waiting for the other workers of TF_CONFIG (worker 1 at {peer}) to start; giving up "
        "after 8s\n"
    )
    assert (
        finished.stderr == f"error: worker 1 at {peer} did not start within 8s (--worker_start_timeout); start "
        "every worker TF_CONFIG names, then rerun\n"
    )
    assert os.listdir(tmp_path) == []
