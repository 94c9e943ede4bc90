"""Resume and repeat: a rerun resumes exactly (signals that stop a run: test_signals.py); the same seed
repeats exactly; a diverging or mismatched run stops without damage; restarts; one writer per run."""

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import (
    ROOT,
    counter_settings,
    train_counter,
    with_training,
)
from tensorboard.backend.event_processing import event_accumulator

from diy_lstm.training import machine, run
from diy_lstm.training.checkpoints import ResumeError
from diy_lstm.training.config import RestartConfig
from tasks.counter.task import CounterData, CounterTask

TRAINING = {"epochs": 100, "batch_size": 256, "seed": 3, "preactivation_noise": 0.5, "noise_free_epochs": 30}
RUN = {"eval_every": 10, "checkpoint_every": 20}


def settings(logdir, name, **changes):
    return counter_settings(str(logdir), name, run_options=RUN, **{**TRAINING, **changes})


def final_weights(run_dir):
    reader = tf.train.load_checkpoint(os.path.join(run_dir, "checkpoints"))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map() if name.startswith("model/")}


def results(run_dir):
    with open(os.path.join(run_dir, "results.json")) as f:
        return json.load(f)


def validation_series(run_dir, tag="mean_square_error"):
    accumulator = event_accumulator.EventAccumulator(
        os.path.join(run_dir, "validation"), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    return [(e.step, tf.make_ndarray(e.tensor_proto).item()) for e in accumulator.Tensors(tag)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return train_uninterrupted(tmp_path_factory)


def train_uninterrupted(tmp_path_factory) -> str:
    """The run directory of `settings` trained start to end, which stopped and resumed runs must equal."""
    result = train_counter(settings(tmp_path_factory.mktemp("reference_run"), "whole"))
    assert result.outcome == run.COMPLETED and result.resumed_from_epoch == 0
    return result.run_dir


def assert_same_run(run_dir, reference_dir):
    ours, expected = final_weights(run_dir), final_weights(reference_dir)
    assert ours.keys() == expected.keys() and len(ours) == 10
    assert "model/layers/0/W_f/.ATTRIBUTES/VARIABLE_VALUE" in ours  # gate names in the checkpoint
    for name in expected:
        np.testing.assert_array_equal(ours[name], expected[name], err_msg=name)  # bit for bit
    assert results(run_dir)["metrics"] == results(reference_dir)["metrics"]
    assert validation_series(run_dir) == validation_series(reference_dir)  # same steps, no duplicates, same values


def test_rerunning_a_completed_run_trains_nothing(uninterrupted, tmp_path):
    shutil.copytree(uninterrupted, tmp_path / "completed")
    again = train_counter(settings(tmp_path, "completed"))
    assert again.resumed_from_epoch == 100 == again.completed_epochs
    assert_same_run(again.run_dir, uninterrupted)


@pytest.mark.slow
def test_same_seed_gives_the_same_run_and_records_the_machine(uninterrupted, tmp_path):
    again = train_counter(settings(tmp_path, "again"))
    assert_same_run(again.run_dir, uninterrupted)
    recorded = results(uninterrupted)["machine"]
    assert recorded["tensorflow"] == tf.__version__ and recorded["cores"] == os.cpu_count()
    assert recorded["cpu"] == machine.cpu_model()
    with open(os.path.join(uninterrupted, "config.json")) as f:
        config = json.load(f)
    assert config["training"]["seed"] == 3 and config["model"]["units"] == 8 and config["task"] == "counter"


def checkpoint_hashes(run_dir):
    directory = os.path.join(run_dir, "checkpoints")
    return {
        name: hashlib.sha256(open(os.path.join(directory, name), "rb").read()).hexdigest()
        for name in os.listdir(directory)
    }


class PoisonedTask(CounterTask):
    """The counter task whose inputs become NaN from epoch 8 on (0-based epoch 7)."""

    def training_batches(self, epochs):
        steps = self.steps_per_epoch
        return (
            super()
            .training_batches(epochs)
            .enumerate()
            .map(
                lambda step, batch: (
                    tf.where(epochs.start + step // steps >= 7, batch[0] * float("nan"), batch[0]),
                    *batch[1:],
                )
            )
        )


class PoisonedFromTheStart(CounterTask):
    """The counter task whose inputs are NaN from the first step."""

    def training_batches(self, epochs):
        return (
            super().training_batches(epochs).map(lambda inputs, sums, lengths: (inputs * float("nan"), sums, lengths))
        )


def test_diverging_run_stops_naming_the_epoch_and_keeps_the_last_checkpoint(tmp_path):
    settings_ = counter_settings(
        str(tmp_path), "nan", units=4, epochs=10, run_options={"eval_every": 5, "checkpoint_every": 5}
    )
    with pytest.raises(run.RunError, match=r"^training stopped: the loss became nan in epoch 8 .*ckpt-5"):
        run.train(settings_, PoisonedTask(settings_.data))
    assert sorted(os.listdir(tmp_path / "nan" / "checkpoints")) == [
        "checkpoint",
        "ckpt-5.data-00000-of-00001",
        "ckpt-5.index",
    ]
    assert not os.path.exists(tmp_path / "nan" / "saved_model")  # nothing exported from a broken run
    resumed = train_counter(settings_)  # the same run, healthy data: resumes from the good checkpoint
    assert resumed.resumed_from_epoch == 5 and resumed.outcome == run.COMPLETED


SMALL = {"units": 4, "epochs": 5}


@pytest.mark.parametrize(
    "change, named",
    [
        ({"units": 6}, "units=4 (now 6)"),
        pytest.param({"learning_rate": 0.01}, "learning_rate=0.03 (now 0.01)", marks=pytest.mark.slow),
        pytest.param({"batch_size": 64}, "batch_size=128 (now 64)", marks=pytest.mark.slow),
        pytest.param({"preactivation_noise": 0.0}, "preactivation_noise=1.0 (now 0.0)", marks=pytest.mark.slow),
        ({"data": CounterData(target="final")}, "target=running (now final)"),
    ],
)
def test_changed_settings_on_resume_are_refused_by_name(tmp_path, change, named):
    train_counter(counter_settings(str(tmp_path), "r", **SMALL))
    config_before = open(tmp_path / "r" / "config.json").read()
    escaped = named.replace("(", "[(]").replace(")", "[)]")
    with pytest.raises(ResumeError, match=f"was started with .*{escaped}"):
        train_counter(counter_settings(str(tmp_path), "r", **{**SMALL, **change}))
    assert open(tmp_path / "r" / "config.json").read() == config_before


def test_a_run_written_before_a_setting_existed_resumes_with_its_default_and_refuses_another(tmp_path, capsys):
    """A config.json from before `long_check_length` and `weight_decay` (removed here): the run resumes
    with their defaults, saying so once; a value other than the default is refused by name."""
    train_counter(counter_settings(str(tmp_path), "r", **SMALL))
    with open(tmp_path / "r" / "config.json") as f:
        config = json.load(f)
    del config["data"]["long_check_length"], config["training"]["weight_decay"]
    with open(tmp_path / "r" / "config.json", "w") as f:
        json.dump(config, f)
    with pytest.raises(ResumeError, match=r"weight_decay=0.0 \(its default: the run predates it; now 0.01\)"):
        train_counter(counter_settings(str(tmp_path), "r", **{**SMALL, "weight_decay": 0.01}))
    capsys.readouterr()
    resumed = train_counter(counter_settings(str(tmp_path), "r", units=4, epochs=6))
    assert resumed.resumed_from_epoch == 5 and resumed.outcome == run.COMPLETED
    said = [line for line in capsys.readouterr().out.splitlines() if "predates" in line]
    assert said == [
        f"{tmp_path / 'r'} predates 2 setting(s); it resumes with their defaults: long_check_length=0, weight_decay=0.0"
    ]


@pytest.mark.slow
def test_epochs_may_grow_on_resume_but_not_shrink_below_what_was_trained(tmp_path):
    train_counter(counter_settings(str(tmp_path), "r", **SMALL))
    with pytest.raises(ResumeError, match="has already trained 5 epochs; --epochs=3 would undo them"):
        train_counter(counter_settings(str(tmp_path), "r", units=4, epochs=3))
    longer = train_counter(counter_settings(str(tmp_path), "r", units=4, epochs=8))
    assert longer.resumed_from_epoch == 5 and longer.completed_epochs == 8
    with open(tmp_path / "r" / "config.json") as f:
        assert json.load(f)["training"]["epochs"] == 8  # config.json says what ran


@pytest.mark.slow
def test_fresh_moves_the_old_run_aside_and_says_so(tmp_path, capsys):
    train_counter(counter_settings(str(tmp_path), "r", **SMALL))
    fresh = counter_settings(str(tmp_path), "r", run_options={"fresh": True}, **SMALL)
    assert train_counter(fresh).resumed_from_epoch == 0
    aside = [name for name in os.listdir(tmp_path) if name.startswith("r.replaced-")]
    assert len(aside) == 1 and "moved the existing run" in capsys.readouterr().out
    assert os.path.exists(tmp_path / aside[0] / "checkpoints" / "checkpoint")


@pytest.mark.parametrize(
    "damage",
    [
        "index",
        *(
            pytest.param(damage, marks=pytest.mark.slow)
            for damage in ("checkpoint_file", "empty_checkpoint_file", "data")
        ),
        "config",
    ],
)
def test_a_damaged_checkpoint_or_config_is_reported_and_not_overwritten(tmp_path, damage):
    train_counter(counter_settings(str(tmp_path), "r", **SMALL))
    directory = tmp_path / "r" / "checkpoints"
    target = {
        "index": next(directory.glob("*.index")),
        "checkpoint_file": directory / "checkpoint",
        "empty_checkpoint_file": directory / "checkpoint",
        "data": next(directory.glob("*.data-*")),
        "config": tmp_path / "r" / "config.json",
    }[damage]
    content = b"" if damage == "empty_checkpoint_file" else target.read_bytes()[:7] + b"garbage"
    target.write_bytes(content)

    def snapshot():  # every file of the run but the lock, which says who holds the run now
        return {p: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file() and p.name != ".lock"}

    before = snapshot()
    with pytest.raises(ResumeError, match="cannot re(store checkpoint|ad the run's config.json)"):
        train_counter(counter_settings(str(tmp_path), "r", units=4, epochs=10))
    assert snapshot() == before


RESTART = {"units": 4, "epochs": 4, "run_options": {"eval_every": 1, "checkpoint_every": 2}}


def restart_settings(logdir, name, above=(("error", 0.0),), max_restarts=1, **training):
    base = counter_settings(str(logdir), name, **{**RESTART, **training})
    restart = RestartConfig(epoch=2, above=above, max_restarts=max_restarts)
    return dataclasses.replace(base, run=dataclasses.replace(base.run, restart=restart))


@pytest.mark.slow
def test_a_run_not_learned_by_the_restart_epoch_starts_over_as_the_next_seed(tmp_path, capsys):
    direct = train_counter(counter_settings(str(tmp_path), "direct", seed=1, **RESTART))
    restarted = train_counter(restart_settings(tmp_path, "r"))
    printed = capsys.readouterr().out
    # Two epochs of 4 units do not learn: seed 0 is given up at epoch 2; seed 1, the last try, trains on.
    assert "seed 0 given up" in printed and "no restart is left (--max_restarts=1)" in printed
    given_up = results(str(tmp_path / "r.seed0-not-learned"))["given_up"]
    assert given_up["seed"] == 0 and given_up["epoch"] == 2 and given_up["validation"]["error"] > 0
    assert tf.train.latest_checkpoint(str(tmp_path / "r.seed0-not-learned" / "checkpoints")).endswith("ckpt-2")
    assert [step for step, _ in validation_series(str(tmp_path / "r.seed0-not-learned"))] == [1, 2]
    assert_same_run(restarted.run_dir, direct.run_dir)  # as if started with --seed=1
    assert restarted.seed == 1 and [r.seed for r in restarted.restarts] == [0]

    again = train_counter(restart_settings(tmp_path, "r"))
    assert again.resumed_from_epoch == 4 and again.seed == 1 and [r.seed for r in again.restarts] == [0]
    assert sorted(os.listdir(tmp_path)) == ["direct", "r", "r.seed0-not-learned"]


@pytest.mark.slow
def test_a_run_above_any_restart_bound_starts_over_and_one_within_all_bounds_does_not(tmp_path, capsys):
    mse_bound = (("error", 0.99), ("mean_square_error", 0.01))
    train_counter(restart_settings(tmp_path, "r", above=mse_bound))
    given_up = results(str(tmp_path / "r.seed0-not-learned"))["given_up"]
    logged = dict(validation_series(str(tmp_path / "r.seed0-not-learned")))[2]  # the evaluation the check read
    assert given_up["validation"]["mean_square_error"] == pytest.approx(logged, rel=1e-6) and logged > 0.01
    assert given_up["validation"]["error"] <= 0.99
    assert f"validation mean_square_error {logged:.3g} is above 0.01: seed 0 given up" in capsys.readouterr().out
    within = train_counter(restart_settings(tmp_path, "within", above=(("error", 0.99), ("mean_square_error", 1e3))))
    assert within.seed == 0 and within.restarts == ()
    assert not [name for name in os.listdir(tmp_path) if name.startswith("within.")]


def test_a_second_process_on_the_same_run_is_refused_naming_the_first_and_a_dead_holder_is_no_obstacle(tmp_path):
    from diy_lstm.training.lock import RunLock, RunLockedError

    settings_ = counter_settings(str(tmp_path), "r", **SMALL)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time\nfrom diy_lstm.training.lock import RunLock\n"
                "from diy_lstm.files import claim_run_dir\n"
                f"claim_run_dir({str(tmp_path / 'r')!r}, 'counter')\n"
                f"with RunLock({str(tmp_path / 'r')!r}):\n    print('locked', flush=True); time.sleep(60)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"is in use by process {holder.pid} \\(since "):
            train_counter(settings_)
        with pytest.raises(RunLockedError):  # --fresh never moves a run that is being trained
            train_counter(dataclasses.replace(settings_, run=dataclasses.replace(settings_.run, fresh=True)))
    finally:
        holder.kill()
        holder.wait()
    assert os.listdir(tmp_path) == ["r"] and sorted(os.listdir(tmp_path / "r")) == [".diy_lstm-run", ".lock"]
    assert train_counter(settings_).outcome == run.COMPLETED  # the killed holder's lock died with it
    with RunLock(str(tmp_path / "r")):
        pass  # and the finished run let go of it


def event_steps(run_dir, split, tag):
    accumulator = event_accumulator.EventAccumulator(
        os.path.join(run_dir, split), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    return [event.step for event in accumulator.Tensors(tag)]


@pytest.mark.slow
def test_events_past_the_checkpoint_a_run_resumes_from_are_dropped(tmp_path):
    """Events on disk past the last checkpoint (here: a run whose writer flushed at epoch 30 while its
    last checkpoint was 20) are dropped when it resumes, so every step shows once."""
    from diy_lstm.training.summaries import drop_events_after

    settings_ = counter_settings(
        str(tmp_path),
        "r",
        units=4,
        epochs=30,
        run_options={"eval_every": 5, "checkpoint_every": 10, "validate_every": 7},
    )
    train_counter(settings_)
    for name in os.listdir(tmp_path / "r" / "checkpoints"):  # as if killed after epoch 30's events reached disk
        if name.startswith("ckpt-30"):
            os.remove(tmp_path / "r" / "checkpoints" / name)
    (tmp_path / "r" / "checkpoints" / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-20"\nall_model_checkpoint_paths: "ckpt-10"\n'
        'all_model_checkpoint_paths: "ckpt-20"\n'
    )
    assert event_steps(str(tmp_path / "r"), "validation", "error") == [5, 10, 15, 20, 25, 30]
    assert train_counter(settings_).resumed_from_epoch == 20
    assert event_steps(str(tmp_path / "r"), "validation", "error") == [5, 10, 15, 20, 25, 30]
    assert event_steps(str(tmp_path / "r"), "train", "mean_square_error") == [5, 10, 15, 20, 25, 30]
    task = CounterTask(settings_.data)
    task.prepare(settings_.training)
    every_tenth = list(range(10, 30 * task.steps_per_epoch + 1, 10))  # each batch's loss every 10th step
    assert event_steps(str(tmp_path / "r"), "train_steps", "error") == every_tenth
    every_seventh = list(range(7, 30 * task.steps_per_epoch + 1, 7))  # validation every 7th
    assert event_steps(str(tmp_path / "r"), "validation_steps", "loss") == every_seventh
    assert drop_events_after(str(tmp_path / "r"), 30) == 0  # nothing left to drop


def test_a_config_json_section_that_is_not_an_object_and_a_changed_seed_are_each_named_once(tmp_path):
    settings_ = counter_settings(str(tmp_path), "r", **SMALL)
    saved = json.loads(json.dumps(settings_.to_json()))
    for damaged in ([1, 2], "text", None, 3):
        assert settings_.resume_conflicts({**saved, "training": damaged}) == [
            "config.json whose training is not a JSON object (damaged); start over with --fresh"
        ]
    reseeded = with_training(settings_, seed=1)
    reseeded = dataclasses.replace(reseeded, model=dataclasses.replace(reseeded.model, seed=1))
    assert reseeded.resume_conflicts(saved) == ["seed=0 (now 1)"]


@pytest.mark.parametrize(
    "recorded, fault",
    [
        ([1, 2], "not a JSON object"),
        ({"first_seed": 0, "given_up": {"seed": 0}}, "given_up is not a list"),
        ({"first_seed": 0, "given_up": [None]}, "a given-up try must be an object with exactly seed, epoch"),
        ({"first_seed": 0, "given_up": [{"seed": 0}]}, "a given-up try must be an object with exactly seed, epoch"),
        (
            {
                "first_seed": 0,
                "given_up": [
                    {
                        "seed": "0",
                        "epoch": 2,
                        "measured": "error 1",
                        "reason": "r",
                        "validation": {"error": "x"},
                        "seconds": 1.5,
                        "run_dir": "d",
                    }
                ],
            },
            "a given-up try's seed, validation is not what a run writes",
        ),
    ],
)
def test_a_damaged_restarts_json_is_one_line_naming_it(tmp_path, recorded, fault):
    (tmp_path / "restarts.json").write_text(json.dumps(recorded))
    with pytest.raises(ResumeError, match=f"^cannot read the run's restarts.json .*: {fault}"):
        run._restarts_in_progress(str(tmp_path), 0, 3)
    good = {
        "seed": 0,
        "epoch": 2,
        "measured": "error 1",
        "reason": "r",
        "validation": {"error": 1.0},
        "seconds": 1.5,
        "run_dir": "d",
    }
    (tmp_path / "restarts.json").write_text(json.dumps({"first_seed": 0, "given_up": [good]}))
    assert run._restarts_in_progress(str(tmp_path), 0, 3)[0].validation == {"error": 1.0}
    for seeds in ([1], [0, 2], [0, 0]):  # well-formed, but not the tries a run gives up in turn
        tries = [{**good, "seed": seed} for seed in seeds]
        (tmp_path / "restarts.json").write_text(json.dumps({"first_seed": 0, "given_up": tries}))
        with pytest.raises(ResumeError, match=rf"its tries gave up seeds \[{', '.join(map(str, seeds))}\], not 0, 1"):
            run._restarts_in_progress(str(tmp_path), 0, 3)


def events(directory, kind):
    accumulator = event_accumulator.EventAccumulator(directory)
    accumulator.Reload()
    return accumulator


def test_a_run_that_stops_before_its_first_checkpoint_starts_its_events_again_once(tmp_path):
    """HParams and the graph are written at step 0; a run stopped before it checkpointed (here: it
    diverged in its first epoch) and started again shows each once."""
    from test_reliability import PoisonedFromTheStart

    settings = counter_settings(str(tmp_path), "r", units=2, epochs=2, run_options={"checkpoint_every": 2})
    from diy_lstm.training import run

    with pytest.raises(run.RunError):
        run.train(settings, PoisonedFromTheStart(settings.data))
    assert train_counter(settings).outcome == run.COMPLETED
    top = [e for e in tf.compat.v1.train.summary_iterator(_only_file(tmp_path / "r")) if e.summary.value]
    assert [value.tag for e in top for value in e.summary.value].count("_hparams_/session_start_info") == 1
    graphs = [e for e in tf.compat.v1.train.summary_iterator(_only_file(tmp_path / "r" / "train")) if e.graph_def]
    assert len(graphs) == 1


def _only_file(directory):
    names = [name for name in os.listdir(directory) if ".tfevents." in name]
    assert len(names) >= 1
    return str(directory / sorted(names)[-1]) if len(names) == 1 else _merged(directory, names)


def _merged(directory, names):
    """Several event files (one per process): read as one, in order."""
    merged = directory / "merged.tfevents.check"
    with tf.io.TFRecordWriter(str(merged)) as writer:
        for name in sorted(names):
            for record in tf.data.TFRecordDataset(str(directory / name)):
                writer.write(record.numpy())
    return str(merged)


def test_a_run_given_seconds_plans_its_epochs_once_and_is_the_run_of_those_epochs(tmp_path, capsys, monkeypatch):
    """`max_seconds`: epochs = whole epochs of the measured step that fit (a step's time is fixed here,
    so the plan is known); config.json records them; a rerun keeps them even where the machine got
    slower; the same settings with `epochs` alone give the same weights bit for bit."""
    from diy_lstm.training import time_budget

    monkeypatch.setattr(time_budget, "step_seconds", lambda settings, task, place: 0.01)
    budget = counter_settings(str(tmp_path), "budget", units=4, max_seconds=3.0, epochs=999)
    steps_per_epoch = -(-CounterData().split_sizes()[0] // budget.training.batch_size)
    planned = int(3.0 / (0.01 * steps_per_epoch))
    result = train_counter(budget)
    assert result.completed_epochs == planned >= 2
    printed = capsys.readouterr().out
    assert f"--max_seconds=3: 0.010 s a training step (the mean of 10), {steps_per_epoch} steps an epoch: " in printed
    with open(tmp_path / "budget" / "config.json") as f:
        assert json.load(f)["training"]["epochs"] == planned
    monkeypatch.setattr(time_budget, "step_seconds", lambda settings, task, place: 1.0)
    again = train_counter(budget)
    assert again.completed_epochs == planned and again.resumed_from_epoch == planned
    assert f"--max_seconds=3: {planned} epochs, as the run planned them" in capsys.readouterr().out
    same = train_counter(counter_settings(str(tmp_path), "epochs", units=4, epochs=planned))
    for name, value in final_weights(result.run_dir).items():
        np.testing.assert_array_equal(final_weights(same.run_dir)[name], value, err_msg=name)


def test_the_step_a_budget_is_planned_with_is_measured_on_a_throwaway_model(tmp_path):
    """The real `step_seconds`: a positive time, and the task's model untouched by it."""
    from diy_lstm.training import distribute, time_budget

    settings = counter_settings(str(tmp_path), "x", units=4)
    task = CounterTask(settings.data)
    task.prepare(settings.training)
    place = distribute.placement("default", 0, 0)
    assert time_budget.step_seconds(settings, task, place) > 0
