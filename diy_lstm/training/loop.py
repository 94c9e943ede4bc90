"""The epochs of one try: `for epoch: its steps; then the end-of-epoch actions, each at its cadence`.

    TrainingLoop(settings, task, place, ...).train()  ->  RunResult

The end of an epoch is a list of `Action`s, run in order when their `Cadence` is due:

    loss is finite       every epoch        a NaN or Inf stops the run (the last checkpoint untouched)
    learning rate        every epoch        the schedule's rate for the next epoch
    evaluation           --eval_every, the last and the restart epoch   scalars, goal, progress line
                         (with `stop_at_goal`, the goal ends the try: checkpointed, then exported)
    gate heat maps       --image_every and the last
    text samples         --sample_every
    restart check        the restart epoch  a try that has not learned is given up
    stop agreement       every epoch        Ctrl-C on any worker (or the chief's goal) stops every worker together
    histograms           --histogram_every and the last
    checkpoint           --checkpoint_every, the last, and when stopping or at the goal
    stop                 when stopping      interrupted, with its checkpoint

What only the chief writes goes through its sink (`sink.py`), which does nothing on other workers;
the evaluation-based actions run on the chief only. Everything random derives from `(seed, epoch)`
or the optimizer's step counter, so a resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Callable, Iterator, NamedTuple

import tensorflow as tf

from diy_lstm.model import LSTMModel
from diy_lstm.training import distribute, machine
from diy_lstm.training.checkpoints import ResumeError, RunCheckpoint
from diy_lstm.training.config import RunSettings
from diy_lstm.training.optimizer import Adam
from diy_lstm.training.results import COMPLETED, GIVEN_UP, INTERRUPTED, GivenUp, GoalReached, RunError, RunResult
from diy_lstm.training.sink import RunSink, SilentSink
from diy_lstm.training.task import VALIDATION, Metrics, Task
from diy_lstm.training.trainer import Trainer


@dataclasses.dataclass
class EpochEnd:
    """What the actions at the end of an epoch know: the epochs completed, the last step's loss, and
    what earlier actions found (the evaluation's metrics, whether every worker is stopping, whether
    the try is done at its goal)."""

    epoch: int
    loss: float
    metrics: Metrics | None = None
    stopping: bool = False
    at_goal: bool = False


@dataclasses.dataclass(frozen=True)
class Cadence:
    """Due at every `every`-th epoch (0: never), at the epochs in `at`, when stopping if `stopping`,
    and when the try ends at its goal if `at_goal`."""

    every: int = 1
    at: tuple[int, ...] = ()
    stopping: bool = False
    at_goal: bool = False

    def due(self, end: EpochEnd) -> bool:
        return (
            (self.every > 0 and end.epoch % self.every == 0)
            or end.epoch in self.at
            or (self.stopping and end.stopping)
            or (self.at_goal and end.at_goal)
        )


NEVER = Cadence(every=0)


def every_and_last(every: int, last: int) -> Cadence:
    """Every `every` epochs and at the last one (the goal's, when the try stops there); never if `every` is 0."""
    return Cadence(every, (last,), at_goal=True) if every else NEVER


class Action(NamedTuple):
    """One piece of end-of-epoch work: `run(end)` when `cadence` is due; a result ends the try."""

    name: str
    cadence: Cadence
    run: Callable[[EpochEnd], RunResult | None]


class TrainingLoop:
    """One try of a run, on this process's share of the placement; see the module docstring.

    Args:
      settings, task: what to train.
      place: where the steps run (`distribute.placement`).
      stop: the Ctrl-C request the loop honours at the end of an epoch.
      may_restart: a try that has not learned by the restart epoch is given up (else trains on).
      restarts: the tries given up before this one.
    """

    def __init__(
        self,
        settings: RunSettings,
        task: Task,
        place: distribute.Placement,
        stop,
        may_restart: bool,
        restarts: tuple[GivenUp, ...],
        run_dir: str,
        export_dir: str,
    ):
        self.settings, self.task, self.place, self.stop = settings, task, place, stop
        self.may_restart, self.restarts = may_restart, restarts
        self.run_dir, self.export_dir = run_dir, export_dir
        training = settings.training
        with place.strategy.scope():  # one copy of every variable per replica
            self.model = LSTMModel(settings.model, backprop=training.backprop, inline_loops=training.inline_loops)
            self.optimizer = Adam(
                self.model.trainable_variables, learning_rate=training.learning_rate, weight_decay=training.weight_decay
            )
            scratch = None if place.is_chief else os.path.join(run_dir, f"worker{place.cluster.worker_index}-scratch")
            self.checkpoint = RunCheckpoint(run_dir, self.model, self.optimizer, scratch_dir=scratch)
        jit_compile = {"true": True, "false": False}.get(training.jit_compile, task.fixed_length)
        self.trainer = Trainer(
            self.model,
            self.optimizer,
            task.loss,
            jit_compile,
            training.clip_norm,
            training.preactivation_noise,
            training.seed,
            strategy=place.strategy if place.distributed else None,
            noise_distribution=training.noise_distribution,
        )
        self.start_epoch = self._restore()
        if self.start_epoch > training.epochs:
            raise ResumeError(
                f"{run_dir} has already trained {self.start_epoch} epochs; --epochs={training.epochs} "
                "would undo them: give at least that many, or --fresh to start over"
            )
        sink_kind = RunSink if place.is_chief else SilentSink
        self.sink = sink_kind(run_dir, training.epochs, self.start_epoch, task.evaluated_splits)
        self.started = time.perf_counter()
        self.completed = self.start_epoch
        self.goal: GoalReached | None = None
        self.stopped_at_goal = bool(self.checkpoint.reached_goal.numpy())  # a rerun of a run done at its goal

    def train(self, config: dict) -> RunResult:
        """Trains the remaining epochs and exports; `config` is the run's config.json."""
        self.sink.start(self.settings, config, self.restarts, self.start_epoch)
        self._say_what_runs()
        try:
            stopped = self._epochs()
        except distribute.LOST_WORKER_ERRORS as error:
            if self.place.cluster.num_workers == 1:
                raise
            raise RunError(
                f"training stopped in epoch {self.completed + 1}: "
                f"{distribute.lost_workers(error, self.place.cluster)} stopped responding; rerun every "
                f"worker to resume from {self.checkpoint.latest or 'the start'}"
            ) from error
        finally:
            self.sink.close()
        return stopped or self._finish()

    def _say_what_runs(self) -> None:
        epochs, cluster = f"epochs {self.start_epoch + 1}..{self.settings.training.epochs}", self.place.cluster
        if not self.place.is_chief:
            print(
                f"worker {cluster.worker_index} of {cluster.num_workers}: {epochs} of {self.run_dir}, which the "
                "chief writes"
            )
            return
        if self.start_epoch:
            print(f"resuming from epoch {self.start_epoch} ({self.checkpoint.latest})")
        placed = f", {self.place.describe()}" if self.place.distributed else ""
        print(f"run {self.run_dir}: {self.task.describe()}, lstm_size {self.settings.model.units}{placed}, {epochs}")

    def _epochs(self) -> RunResult | None:
        """Every remaining epoch and its end-of-epoch actions; a result if one of them ended the try."""
        training, restart_epoch = self.settings.training, self.settings.run.restart.epoch
        if self.stopped_at_goal:
            return None  # nothing is left to train
        if 0 < self.start_epoch == restart_epoch and self.place.is_chief:  # stopped right at the check
            resumed_at = EpochEnd(self.start_epoch, math.nan, metrics=self.task.evaluate(self.model))
            if stopped := self._check_restart(resumed_at):
                return stopped
        self.optimizer.learning_rate.assign(training.learning_rate_at(self.start_epoch))
        epochs = range(self.start_epoch, training.epochs)
        batches = iter(distribute.distribute_batches(self.place, lambda: self.task.training_batches(epochs)))
        actions = self.actions()
        for epoch in epochs:
            end = EpochEnd(epoch + 1, self._steps(batches, epoch))
            for action in actions:
                if action.cadence.due(end) and (stopped := action.run(end)) is not None:
                    return stopped
            if end.at_goal:
                self.stopped_at_goal = True
                return None
        return None

    def _steps(self, batches: Iterator, epoch: int) -> float:
        """One epoch's training steps; the loss of its last step."""
        trainer = self.trainer
        step = (
            trainer.train_step
            if epoch < self.settings.training.first_noise_free_epoch
            else trainer.noise_free_train_step
        )
        for _ in range(self.task.steps_per_epoch):
            batch = next(batches)
            self.sink.graph(trainer.train_step, batch)
            loss = step(*batch)
        return float(distribute.first_local(self.place, loss))

    def actions(self) -> list[Action]:
        """The end-of-epoch actions, in order (module docstring)."""
        run, epochs = self.settings.run, self.settings.training.epochs
        restart_epoch = run.restart.epoch
        actions = [
            Action("loss is finite", Cadence(), self._check_finite),
            Action("learning rate", Cadence(), self._schedule),
        ]
        if self.place.is_chief:  # what reads the evaluation (other workers do not evaluate)
            actions += [
                Action("evaluation", Cadence(run.eval_every, (epochs, restart_epoch)), self._evaluate),
                Action("gate heat maps", every_and_last(run.image_every, epochs), self._draw_gates),
                Action("text samples", Cadence(run.sample_every), self._write_samples),
                Action("restart check", Cadence(0, (restart_epoch,)) if restart_epoch else NEVER, self._check_restart),
            ]
        return actions + [
            Action("stop agreement", Cadence(), self._agree_to_stop),
            Action("histograms", every_and_last(run.histogram_every, epochs), self._write_histograms),
            Action("checkpoint", Cadence(run.checkpoint_every, (epochs,), stopping=True, at_goal=True), self._save),
            Action("stop", Cadence(0, stopping=True), self._interrupted),
        ]

    def _check_finite(self, end: EpochEnd) -> None:
        self.completed = end.epoch
        if not math.isfinite(end.loss):
            raise RunError(
                f"training stopped: the loss became {end.loss} in epoch {end.epoch} (learning rate "
                f"{self.settings.training.learning_rate_at(end.epoch - 1):g}); the last good checkpoint "
                f"{self.checkpoint.latest or '(none yet)'} is untouched; lower --learning_rate and rerun"
            )

    def _schedule(self, end: EpochEnd) -> None:
        self.optimizer.learning_rate.assign(self.settings.training.learning_rate_at(end.epoch))

    def _evaluate(self, end: EpochEnd) -> None:
        end.metrics = self.task.evaluate(self.model)
        self.sink.scalars(end.metrics, end.epoch)
        if self.goal is None and self.task.goal_reached(end.metrics):
            self.goal = GoalReached(end.epoch, self._seconds())
        end.at_goal = self.settings.training.stop_at_goal and self.task.goal_reached(end.metrics)
        self.sink.progress(end.epoch, {**self.task.progress(end.metrics), "time": f"{self._seconds():.1f}s"})

    def _draw_gates(self, end: EpochEnd) -> None:
        self.sink.gate_images(self.model, self.task.gate_examples(), end.epoch)

    def _write_samples(self, end: EpochEnd) -> None:
        self.sink.texts(self.task.samples(self.model), end.epoch)

    def _check_restart(self, end: EpochEnd) -> RunResult | None:
        """At the restart epoch, a try that has not learned is checkpointed and given up."""
        if VALIDATION not in end.metrics:
            raise RunError("the restart check reads validation metrics, and this run has no validation split")
        if self.stop.requested or (because := self._not_learned_because(end.metrics)) is None:
            return None
        measured, reason = because
        if not self.may_restart:
            self.sink.say(
                f"epoch {end.epoch}: {reason}, but no restart is left "
                f"(--max_restarts={self.settings.run.restart.max_restarts}): training on"
            )
            return None
        self.checkpoint.save(end.epoch)
        self.sink.flush()
        given_up = GivenUp(
            seed=self.settings.training.seed,
            epoch=end.epoch,
            measured=measured,
            reason=reason,
            validation=dict(end.metrics[VALIDATION]),
            seconds=self._seconds(),
            run_dir=self.run_dir,
        )
        stopped = self._result(GIVEN_UP, metrics={}, given_up=given_up)
        self.sink.results(stopped)
        return stopped

    def _not_learned_because(self, metrics: Metrics) -> tuple[str, str] | None:
        """(measure, reason) if a validation metric is above its restart bound, or the task finds
        the try has not learned (`Task.not_learned`), else None."""
        validation = metrics[VALIDATION]
        for name, bound in self.settings.run.restart.above:
            if validation[name] > bound:
                measured = f"{name} {validation[name]:.3g}"
                return measured, f"validation {measured} is above {bound:g}"
        return self.task.not_learned(metrics)

    def _agree_to_stop(self, end: EpochEnd) -> None:
        asked = distribute.lists_from_every_worker(self.place, [int(self.stop.requested), int(end.at_goal)])
        end.stopping = any(values[0] for values in asked)
        end.at_goal = any(values[1] for values in asked) and not end.stopping  # the chief's goal, for every worker

    def _write_histograms(self, end: EpochEnd) -> None:
        _, gradients = self.trainer.gradients(*distribute.split_batch(self.place, self.task.histogram_batch()))
        self.sink.histograms(self.model.trainable_variables, gradients, end.epoch)

    def _save(self, end: EpochEnd) -> None:
        self.checkpoint.save(end.epoch, reached_goal=end.at_goal)
        self.sink.flush()

    def _interrupted(self, end: EpochEnd) -> RunResult:
        self.sink.say(
            f"interrupted after epoch {end.epoch}; checkpoint saved to {self.checkpoint.latest}. "
            "Run the same command to resume."
        )
        return self._result(INTERRUPTED, metrics={})

    def _finish(self) -> RunResult:
        """The task's finishing steps (every worker), then its finishing change, the export and
        results.json (the chief), once every epoch has trained."""
        self._finishing_steps()
        seconds = self._seconds()
        if not self.place.is_chief:
            return dataclasses.replace(self._result(COMPLETED, metrics={}), seconds=seconds)
        if (changed := self.task.finish(self.model)) is not None:
            self.sink.say(changed)
        metrics = self.task.evaluate(self.model)
        module, signatures = self.task.serving_module(self.model, metrics)
        metadata = {"model_config": dataclasses.asdict(self.settings.model), "config": self.settings.to_json()}
        self.sink.export(module, self.export_dir, signatures, metadata, self.settings.task_name)
        done = dataclasses.replace(
            self._result(COMPLETED, metrics=metrics, export_dir=self.export_dir), seconds=seconds
        )
        self.sink.results(done)
        return done

    def _finishing_steps(self) -> None:
        """`Task.finishing_steps` on the model the epochs left (from the last checkpoint, on a rerun)."""
        finishing = self.task.finishing_steps()
        if finishing is None or not finishing.steps:
            return
        started, trained = time.perf_counter(), self.optimizer.learning_rate.numpy()
        self.optimizer.learning_rate.assign(finishing.learning_rate)
        losses = []
        for _, batch in zip(range(finishing.steps), finishing.batches()):
            loss = self.trainer.train_step(*distribute.split_batch(self.place, tuple(map(tf.constant, batch))))
            losses.append(float(distribute.first_local(self.place, loss)))
        self.optimizer.learning_rate.assign(trained)
        if not all(map(math.isfinite, losses)):
            raise RunError(f"the finishing steps ({finishing.description}) diverged; the checkpoints are untouched")
        self.sink.say(
            f"finishing steps: {finishing.steps} on {finishing.description} at learning rate "
            f"{finishing.learning_rate:g}, loss {losses[0]:.3g} -> {losses[-1]:.3g} "
            f"({time.perf_counter() - started:.1f}s)"
        )

    def _seconds(self) -> float:
        return round(time.perf_counter() - self.started, 2)

    def _result(self, outcome: str, **fields) -> RunResult:
        return RunResult(
            outcome=outcome,
            run_dir=self.run_dir,
            seed=self.settings.training.seed,
            epochs=self.settings.training.epochs,
            resumed_from_epoch=self.start_epoch,
            completed_epochs=self.completed,
            seconds=self._seconds(),
            goal_reached=self.goal,
            restarts=self.restarts,
            machine=machine.describe(),
            stopped_at_goal=self.stopped_at_goal,
            **fields,
        )

    def _restore(self) -> int:
        """The completed epochs of the latest checkpoint, restored. With several workers the chief
        restores first (after its start-up moved or checked the run), then the others read the chief's
        checkpoint, and all must have found the same one."""
        place, checkpoint = self.place, self.checkpoint
        if place.cluster.num_workers == 1:
            return checkpoint.restore_latest()
        start_epoch = checkpoint.restore_latest() if place.is_chief else 0
        distribute.from_every_worker(place, start_epoch)  # the chief is ready
        if not place.is_chief:
            start_epoch = checkpoint.restore_latest()
        found = distribute.from_every_worker(place, start_epoch)
        if len(set(found)) > 1:
            raise RunError(
                f"the workers found different checkpoints to resume from (completed epochs by worker: "
                f"{found}); every worker must see the chief's --logdir ({checkpoint.directory})"
            )
        return start_epoch
