"""What a training run reports: its outcome, its metrics, the tries it gave up (`run.train`'s `RunResult`)."""

from __future__ import annotations

import dataclasses

from diy_lstm.errors import RunFailed

COMPLETED, INTERRUPTED, GIVEN_UP = "completed", "interrupted", "given_up"


class RunError(RunFailed):
    """A run that cannot go on (diverged, or cannot resume); the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class GivenUp:
    """A try that had not learned by the restart epoch."""

    seed: int
    epoch: int
    measured: str  # the measure that gave it up, e.g. "error 0.67" or "mean_square_error 0.0046"
    reason: str
    validation: dict[str, float]
    seconds: float
    run_dir: str

    @classmethod
    def from_json(cls, entry: object) -> "GivenUp":
        """The try `dataclasses.asdict` wrote as `entry` (restarts.json), or `ValueError` saying what
        in it does not fit."""
        names = [field.name for field in dataclasses.fields(cls)]
        if not isinstance(entry, dict) or sorted(entry) != sorted(names):
            raise ValueError(f"a given-up try must be an object with exactly {', '.join(names)}")
        numbers, texts = ("seed", "epoch", "seconds"), ("measured", "reason", "run_dir")
        wrong = [name for name in numbers if not _is_number(entry[name], whole=name != "seconds")]
        wrong += [name for name in texts if not isinstance(entry[name], str)]
        validation = entry["validation"]
        if not (isinstance(validation, dict) and all(_is_number(v) for v in validation.values())):
            wrong.append("validation")
        if wrong:
            raise ValueError(f"a given-up try's {', '.join(wrong)} is not what a run writes")
        return cls(**entry)


def _is_number(value: object, whole: bool = False) -> bool:
    kinds = int if whole else (int, float)
    return isinstance(value, kinds) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class GoalReached:
    """The first evaluation at which `Task.goal_reached` held."""

    epoch: int
    seconds: float


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What `train` did. `outcome` is `COMPLETED`, `INTERRUPTED` (Ctrl-C; rerun to resume) or
    `GIVEN_UP` (only from `train_once`: the restart check stopped it). `metrics` (split -> name ->
    value) are those of the final model, empty unless completed."""

    outcome: str
    run_dir: str
    seed: int
    epochs: int
    resumed_from_epoch: int
    completed_epochs: int
    seconds: float
    metrics: dict[str, dict[str, float]]
    export_dir: str | None = None
    goal_reached: GoalReached | None = None
    restarts: tuple[GivenUp, ...] = ()
    given_up: GivenUp | None = None
    machine: dict = dataclasses.field(default_factory=dict)
    stopped_at_goal: bool = False  # it stopped at its goal (`stop_at_goal`) before `epochs`

    @property
    def seconds_in_all(self) -> float:
        """Training time of this try and every given-up one."""
        return self.seconds + sum(given_up.seconds for given_up in self.restarts)
