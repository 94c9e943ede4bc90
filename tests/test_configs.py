"""The typed configs refuse what the flags refuse, with the same `ConfigError`, before anything is
made or written; `load_model` and `LSTMModel.step` say what they were given instead of failing later."""

import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf
from conftest import counter_settings, train_counter
from hypothesis import given, settings
from hypothesis import strategies as st

from diy_lstm.model import LSTMModel, ModelConfig
from diy_lstm.serving.export import LoadError, load_model
from diy_lstm.training.config import ConfigError, RestartConfig, RunConfig, TrainingConfig
from tasks.counter.task import METRIC_NAMES, CounterData, metrics_fn
from tasks.text.task import TextData


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ModelConfig(input_size=3, units=2.5), "ModelConfig.units must be an integer, got 2.5"),
        (lambda: ModelConfig(input_size=3, units=math.nan), "ModelConfig.units must be an integer, got nan"),
        (lambda: ModelConfig(input_size=3, units=4, forget_bias=math.nan), "forget_bias (--forget_bias) must be in"),
        (lambda: ModelConfig(input_size=3, units=True), "ModelConfig.units must be an integer, got True"),
        (lambda: TrainingConfig(epochs=2.5), "TrainingConfig.epochs must be an integer, got 2.5"),
        (lambda: TrainingConfig(learning_rate="0.1"), "TrainingConfig.learning_rate must be a number, got '0.1'"),
        (lambda: TrainingConfig(clip_norm=math.inf), "--clip_norm must be > 0, got inf"),
        (lambda: TrainingConfig(stop_at_goal=1), "TrainingConfig.stop_at_goal must be True or False, got 1"),
        (lambda: RestartConfig(epoch=1.0), "RestartConfig.epoch must be an integer, got 1.0"),
        (lambda: RunConfig(run_name="../escaped"), "--run_name must be a non-empty relative name without '..'"),
        (lambda: RunConfig(run_name="a/../../b"), "--run_name must be a non-empty relative name without '..'"),
        (lambda: RunConfig(run_name="/tmp/x"), "--run_name must be a non-empty relative name without '..'"),
        (lambda: RunConfig(run_name="a\0b"), "--run_name must be a path without a null byte"),
        (lambda: RunConfig(logdir="logs\0"), "--logdir must be a path without a null byte"),
        (lambda: RunConfig(loss_every=None), "RunConfig.loss_every must be an integer, got None"),
        (lambda: CounterData(max_sequences_per_length=0), "--max_sequences_per_length must be >= 2, got 0"),
        (lambda: CounterData(check_length=1e4), "CounterData.check_length must be an integer, got 10000.0"),
        (lambda: TextData(unroll_length=100.0), "TextData.unroll_length must be an integer, got 100.0"),
    ],
)
def test_a_config_refuses_a_value_of_the_wrong_kind_or_place_naming_it(make, message):
    with pytest.raises(ConfigError) as raised:
        make()
    assert str(raised.value).startswith(message)


def test_a_restart_bound_on_a_metric_the_task_does_not_report_is_refused_before_anything_is_written(tmp_path):
    settings = counter_settings(
        str(tmp_path), "r", run_options={"restart": RestartConfig(epoch=2, above=(("no_such_metric", 0.0),))}
    )
    with pytest.raises(ConfigError, match="^a restart bound names 'no_such_metric', which the counter task does not"):
        train_counter(settings)
    assert list(tmp_path.iterdir()) == []


def test_the_counter_reports_the_metrics_it_names():
    predictions, targets = tf.constant([[0.2, 1.4]]), tf.constant([[0.0, 1.0]])
    assert tuple(metrics_fn(predictions, targets, tf.constant([2]))) == METRIC_NAMES


def test_load_model_says_what_the_path_is_instead_of_an_export(tmp_path):
    settings = counter_settings(str(tmp_path), "r", units=2, epochs=1, data=CounterData(min_length=2, max_length=2))
    result = train_counter(settings)
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "saved_model.pb").write_text("another program's model")
    for path, message in (
        (tmp_path / "missing", "is not there; load_model takes the directory of an export"),
        (tmp_path / "file.txt", "is a file; load_model takes the directory of an export"),
        (tmp_path / "r", f"is a run directory; its export is {tmp_path / 'r' / 'saved_model'}"),
        (tmp_path / "other", "is not a diy_lstm export (no model config in its assets.extra/diy_lstm.json)"),
    ):
        with pytest.raises(LoadError) as raised:
            load_model(str(path))
        assert str(raised.value) == f"{path} {message}"
    assert load_model(result.export_dir).config == settings.model


def test_a_step_of_an_input_of_another_rank_is_refused():
    model = LSTMModel(ModelConfig(input_size=3, units=4))
    states = model.initial_state(2)
    assert model.step(tf.zeros([2, 3]), states)[-1].hidden.shape == (2, 4)
    with pytest.raises(ValueError, match=r"takes inputs \[batch, input_size\] or ids \[batch\], not \(2, 1, 3\)"):
        model.step(tf.constant(np.zeros([2, 1, 3], np.float32)), states)


def test_multi_worker_with_restarts_is_refused_naming_the_flag_that_turns_them_off():
    with pytest.raises(ConfigError) as raised:
        RunConfig(strategy="multi_worker", restart=RestartConfig(epoch=20))
    assert "give --restart_epoch=0 (the counter restarts at epoch 20 by default)" in str(raised.value)


@pytest.mark.slow
def test_a_flag_value_with_a_line_break_is_refused_in_one_whole_line():
    from conftest import ROOT, run_python

    result = run_python([f"{ROOT}/train_text.py", "--corpus=fox_and_crow\nx"])
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "error: flag --corpus=fox_and_crow\\nx: value should be one of <shakespeare|hamlet_soliloquy|fox_and_crow>\n"
    )


VALUES = st.one_of(
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["model", "training", "run", "restart", "counter", "text"]), st.data())
def test_any_value_in_any_field_of_a_config_is_taken_or_refused_as_a_config_error(which, data):
    """Floats, NaN, infinities, booleans, None and strings in any field: the config is made, or the
    refusal is a `ConfigError` (the command lines' exit 2), never a TypeError met later."""
    make = {
        "model": lambda **kw: ModelConfig(**{"input_size": 3, "units": 4, **kw}),
        "training": TrainingConfig,
        "run": RunConfig,
        "restart": RestartConfig,
        "counter": CounterData,
        "text": TextData,
    }[which]
    kind = {"model": ModelConfig, "training": TrainingConfig, "run": RunConfig, "restart": RestartConfig}.get(
        which, CounterData if which == "counter" else TextData
    )
    names = [
        field.name for field in dataclasses.fields(kind) if field.name not in ("above", "restart", "gate_examples")
    ]
    name = data.draw(st.sampled_from(names))
    try:
        make(**{name: data.draw(VALUES)})
    except ConfigError:
        pass
