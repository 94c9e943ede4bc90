"""The typed settings of a training run, and what follows from them in one place.

A run is described by four frozen dataclasses:

    ModelConfig     (model.py) the variables: sizes, readout, activation, initialiser, seed
    task data       the task's own dataclass (e.g. the counter's lengths and split)
    TrainingConfig  optimiser, schedule, batches, noise, epochs, and how the step is compiled
    RunConfig       where the run writes and how often it logs, checkpoints and restarts

`RunSettings` holds the four. From it come, each in one place: the run's `config.json`
(`to_json`), the HParams TensorBoard shows (`hparams`), and what a resumed run must keep
(`resume_conflicts`). A field marked `may_change()` can differ on resume (it changes how fast a run
goes, where it writes or what it logs, and at most the rounding of what it learns); every other
field must match, or the resume is refused naming it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from diy_lstm.errors import ConfigError, check_field_types
from diy_lstm.model import ModelConfig

CONFIG_VERSION = 3


def _check(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"--{name} must be {allowed}, got {value!r}")


def may_change(default: Any = dataclasses.MISSING) -> Any:
    """A field that a resumed run may set differently from the run it resumes."""
    return dataclasses.field(default=default, metadata={"may_change_on_resume": True})


BACKPROP_MODES = ("bptt", "autodiff")
JIT_COMPILE_MODES = ("auto", "true", "false")
STRATEGIES = ("default", "mirrored", "multi_worker")
MAX_CPU_DEVICES = 64


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """How the model is trained.

    epochs: passes over the training data; may grow on resume (the schedule stretches with it).
    max_seconds: if > 0, `epochs` is planned when the run starts: as many as fit in this many seconds
      of training steps, measured (`time_budget.py`); the learning rate then decays over them.
    batch_size: examples per update (the task decides what an example is; 0: the task's whole set).
    learning_rate: Adam's α at the first epoch, decaying exponentially to `learning_rate_decay` × α
      by the last epoch (1: constant).
    weight_decay: decoupled (AdamW) weight decay λ: each step θ ← θ - α λ θ.
    clip_norm: if set, gradients are scaled down to this global norm.
    preactivation_noise: standard deviation of Gaussian noise added to every gate preactivation in
      training steps (never when evaluating or serving); 0 for none.
    noise_free_epochs: the last this many epochs train without that noise.
    noise_distribution: "normal" (each value drawn) or "table" (the same Gaussian values, read from a
      table drawn once at a random offset per step: a tenth of the cost; `trainer.table_noise`).
    stop_at_goal: stop (checkpoint and export) at the first evaluation at which the task's goal holds
      (`Task.goal_reached`), instead of training all `epochs`.
    seed: fixes the data order, the initial weights and the noise.
    backprop, inline_loops, jit_compile: how the step runs: hand-written BPTT or autodiff; short
      fixed-length loops written out as straight-line ops; XLA ("auto": when every batch has one
      length). They change how fast a run goes and, through the order of floating-point sums and
      XLA's fused gates, its rounding, never the math (a resume may change them).
    """

    epochs: int = may_change(400)
    max_seconds: float = may_change(0.0)
    batch_size: int = 128
    learning_rate: float = 0.03
    learning_rate_decay: float = 0.1
    weight_decay: float = 0.0
    clip_norm: float | None = None
    preactivation_noise: float = 0.0
    noise_free_epochs: int = 0
    noise_distribution: str = "normal"
    stop_at_goal: bool = False
    seed: int = 0
    backprop: str = may_change("bptt")
    inline_loops: bool = may_change(True)
    jit_compile: str = may_change("auto")

    def __post_init__(self):
        check_field_types(self)
        _check(self.epochs >= 1, "epochs", self.epochs, ">= 1")
        _check(0.0 <= self.max_seconds <= 1e9, "max_seconds", self.max_seconds, "in [0, 1e9]")
        _check(self.batch_size >= 0, "batch_size", self.batch_size, ">= 0")
        _check(0.0 < self.learning_rate < 1e38, "learning_rate", self.learning_rate, "> 0 (and a float32)")
        _check(0.0 < self.learning_rate_decay <= 1.0, "learning_rate_decay", self.learning_rate_decay, "in (0, 1]")
        _check(0.0 <= self.weight_decay <= 1.0, "weight_decay", self.weight_decay, "in [0, 1]")
        _check(self.clip_norm is None or 0.0 < self.clip_norm < math.inf, "clip_norm", self.clip_norm, "> 0")
        _check(0.0 <= self.preactivation_noise <= 100.0, "preactivation_noise", self.preactivation_noise, "in [0, 100]")
        _check(
            0 <= self.noise_free_epochs <= self.epochs, "noise_free_epochs", self.noise_free_epochs, "in [0, epochs]"
        )
        _check(0 <= self.seed < 2**31, "seed", self.seed, "in [0, 2^31)")
        _check(
            self.noise_distribution in ("normal", "table"),
            "noise_distribution",
            self.noise_distribution,
            "normal or table",
        )
        _check(self.backprop in BACKPROP_MODES, "backprop", self.backprop, f"one of {BACKPROP_MODES}")
        _check(self.jit_compile in JIT_COMPILE_MODES, "jit_compile", self.jit_compile, f"one of {JIT_COMPILE_MODES}")

    def learning_rate_at(self, epoch: int) -> float:
        """The learning rate of `epoch` (0-based): exponential decay from `learning_rate` at the first
        epoch to `learning_rate * learning_rate_decay` at the last."""
        if self.epochs <= 1:
            return self.learning_rate
        return self.learning_rate * self.learning_rate_decay ** (epoch / (self.epochs - 1))

    @property
    def first_noise_free_epoch(self) -> int:
        """The first (0-based) of the `noise_free_epochs`; `epochs` when there are none."""
        return self.epochs - self.noise_free_epochs


@dataclasses.dataclass(frozen=True)
class RestartConfig:
    """Giving up a run that has not learned: at the end of epoch `epoch` (0: never), a run whose
    validation metric is above its bound (`above`: metric name -> bound) is stopped, its directory
    moved aside, and trained again from the start as seed + 1, up to `max_restarts` times."""

    epoch: int = 0
    above: tuple[tuple[str, float], ...] = ()
    max_restarts: int = 3

    def __post_init__(self):
        check_field_types(self)
        _check(self.epoch >= 0, "restart_epoch", self.epoch, ">= 0")
        _check(0 <= self.max_restarts <= 100, "max_restarts", self.max_restarts, "in [0, 100]")
        for name, bound in self.above:
            _check(math.isfinite(bound) and bound >= 0.0, f"restart bound on {name}", bound, ">= 0")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Where a run writes, and how often it evaluates, checkpoints and draws.

    The run directory is `<logdir>/<run_name>`; the SavedModel goes to `export_dir` (default
    `<run dir>/saved_model`). `fresh` moves an existing run directory aside and starts over. Every
    `*_every` counts epochs, but `loss_every` and `validate_every`, which count training steps (every
    this many, the step's batch loss and error go to TensorBoard's `<run>/train_steps`, the validation
    split's (`Task.step_validation`) to `<run>/validation_steps`); 0 means never (`sample_every`: the task's
    text samples), but for `check_every`: the evaluations that are thorough (`Task.evaluate`: the
    counter's check), 0 meaning every one. `strategy` and
    `cpu_devices` say where the steps run (`distribute.py`); a run may resume under another. A
    multi-worker run gives up if its other workers have not all started within `worker_start_timeout`
    seconds.
    """

    logdir: str = may_change("logs")
    run_name: str = may_change("run")
    export_dir: str | None = may_change(None)
    eval_every: int = may_change(10)
    checkpoint_every: int = may_change(100)
    histogram_every: int = may_change(100)
    image_every: int = may_change(100)
    sample_every: int = may_change(0)
    loss_every: int = may_change(10)
    validate_every: int = may_change(0)
    check_every: int = may_change(0)
    fresh: bool = may_change(False)
    restart: RestartConfig = may_change(RestartConfig())
    strategy: str = may_change("default")
    cpu_devices: int = may_change(0)
    worker_start_timeout: float = may_change(300.0)

    def __post_init__(self):
        check_field_types(self)
        for name in ("logdir", "run_name", "export_dir"):
            _check("\0" not in (getattr(self, name) or ""), name, getattr(self, name), "a path without a null byte")
        name = self.run_name
        inside = name.strip() != "" and not os.path.isabs(name) and ".." not in name.replace("\\", "/").split("/")
        _check(inside, "run_name", name, "a non-empty relative name without '..' (a directory inside --logdir)")
        _check(self.strategy in STRATEGIES, "strategy", self.strategy, f"one of {STRATEGIES}")
        _check(0 <= self.cpu_devices <= MAX_CPU_DEVICES, "cpu_devices", self.cpu_devices, f"in [0, {MAX_CPU_DEVICES}]")
        _check(
            1.0 <= self.worker_start_timeout <= 86400.0,
            "worker_start_timeout",
            self.worker_start_timeout,
            "in [1, 86400] seconds",
        )
        if self.cpu_devices and self.strategy != "mirrored":
            raise ConfigError(
                f"--cpu_devices={self.cpu_devices} splits this machine's CPU for --strategy=mirrored; "
                f"it does nothing with --strategy={self.strategy}"
            )
        if self.strategy == "multi_worker" and self.restart.epoch:
            raise ConfigError(
                f"--restart_epoch={self.restart.epoch} is not available with --strategy=multi_worker: every "
                "worker would have to move its run aside together; give --restart_epoch=0 (the counter "
                "restarts at epoch 20 by default) and, if a try does not learn, rerun with another --seed"
            )
        for name in ("eval_every", "checkpoint_every"):
            _check(getattr(self, name) >= 1, name, getattr(self, name), ">= 1")
        for name in ("histogram_every", "image_every", "sample_every", "loss_every", "validate_every", "check_every"):
            _check(getattr(self, name) >= 0, name, getattr(self, name), ">= 0")


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Everything one run is given: `task_name` and the four configs (see the module docstring)."""

    task_name: str
    model: ModelConfig
    data: Any  # the task's frozen dataclass
    training: TrainingConfig
    run: RunConfig

    def __post_init__(self):
        if self.training.max_seconds and self.run.strategy == "multi_worker":
            raise ConfigError(
                "--max_seconds plans the epochs on one machine; with --strategy=multi_worker give --epochs"
            )

    def sections(self) -> dict[str, Any]:
        return {"model": self.model, "data": self.data, "training": self.training, "run": self.run}

    def to_json(self) -> dict:
        """The run's `config.json`: every setting, by section."""
        return {
            "version": CONFIG_VERSION,
            "task": self.task_name,
            **{name: dataclasses.asdict(section) for name, section in self.sections().items()},
        }

    def hparams(self) -> dict[str, bool | int | float | str]:
        """Every setting that shapes what is learned, flat, for TensorBoard's HParams tab (None -> 0)."""
        values = {}
        for section in ("model", "data", "training"):
            config = self.sections()[section]
            for field in dataclasses.fields(config):
                value = getattr(config, field.name)
                if value is None:
                    value = 0
                if isinstance(value, (tuple, list)):
                    value = ",".join(map(str, value))
                values[field.name] = value
        return values

    def resume_conflicts(self, saved: dict) -> list[str]:
        """`section.field: saved (now new)` for every setting that differs from `saved` (a `to_json`
        of the run being resumed) and may not change on resume; `epochs` may only grow."""
        if saved.get("version") != CONFIG_VERSION or saved.get("task") != self.task_name:
            return [
                f"config.json (written by another version or task: {saved.get('task')!r} "
                f"version {saved.get('version')}); start over with --fresh"
            ]
        not_objects = [name for name in self.sections() if not isinstance(saved.get(name, {}), dict)]
        if not_objects:
            return [
                f"config.json whose {', '.join(not_objects)} is not a JSON object (damaged); start over with --fresh"
            ]
        conflicts = []
        for name, config in self.sections().items():
            saved_section = saved.get(name, {})
            for field in dataclasses.fields(config):
                if field.metadata.get("may_change_on_resume"):
                    continue
                now = _plain(getattr(config, field.name))
                if field.name in saved_section and _plain(saved_section[field.name]) != now:
                    conflicts.append(f"{field.name}={saved_section[field.name]} (now {now})")
                elif field.name not in saved_section and _default(field) != now:
                    conflicts.append(f"{field.name}={_default(field)} (its default: the run predates it; now {now})")
        return list(dict.fromkeys(conflicts))  # a setting two sections hold (the seed) is named once

    def predated_fields(self, saved: dict) -> list[str]:
        """`field=default` for each setting `saved` (an older run's config.json) does not record: the
        run predates it, so it resumes with the field's default (`resume_conflicts` holds it to that)."""
        return [
            f"{field.name}={_default(field)}"
            for name, config in self.sections().items()
            for field in dataclasses.fields(config)
            if not field.metadata.get("may_change_on_resume") and field.name not in saved.get(name, {})
        ]


def _default(field: dataclasses.Field) -> Any:
    """A config field's default, as JSON gives it back (every field that can be added has one)."""
    if field.default is not dataclasses.MISSING:
        return _plain(field.default)
    if field.default_factory is not dataclasses.MISSING:
        return _plain(field.default_factory())
    return None


def _plain(value: Any) -> Any:
    """Tuples as lists, as JSON gives them back."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
