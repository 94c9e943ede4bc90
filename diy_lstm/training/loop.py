"""The epochs of one try: `for epoch: its steps; then the end of the epoch, each action at its cadence`.

    parts = build.build(settings, task, place, run_dir)       the model, optimizer, checkpoint, ...
    TrainingLoop(settings, task, place, parts, ...).train()   ->  RunResult

The end of an epoch (`TrainingLoop._end_of_epoch`) reads top to bottom, each action when its
`Cadence` is due: the loss is finite; the next epoch's learning rate; on the chief, the evaluation
(scalars, goal, progress line), gate heat maps, text samples and the restart check; every worker
agrees whether to stop (Ctrl-C anywhere, or the chief's goal); histograms; the checkpoint; a stop.

What only the chief writes goes through its sink (`sink.py`), which does nothing on other workers;
the evaluation-based actions run on the chief only. Everything random derives from `(seed, epoch)`
or the optimizer's step counter, so a resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Iterator

import tensorflow as tf

from diy_lstm.serving.export import ExportDirError
from diy_lstm.training import distribute, machine
from diy_lstm.training.build import RunParts
from diy_lstm.training.config import RunSettings
from diy_lstm.training.results import COMPLETED, GIVEN_UP, INTERRUPTED, GivenUp, GoalReached, RunError, RunResult
from diy_lstm.training.sink import TRAIN_STEPS, VALIDATION_STEPS
from diy_lstm.training.task import VALIDATION, Finished, Metrics, Task


@dataclasses.dataclass(frozen=True)
class Cadence:
    """Due at every `every`-th epoch (0: never), at the epochs in `at`, when stopping if `stopping`,
    and when the try ends at its goal if `at_goal`."""

    every: int = 1
    at: tuple[int, ...] = ()
    stopping: bool = False
    at_goal: bool = False

    def due(self, epoch: int, stopping: bool = False, at_goal: bool = False) -> bool:
        """At the end of `epoch` (epochs completed), when every worker is `stopping`, or the try ends `at_goal`."""
        return (
            (self.every > 0 and epoch % self.every == 0)
            or epoch in self.at
            or (self.stopping and stopping)
            or (self.at_goal and at_goal)
        )


NEVER = Cadence(every=0)


def _floats(place: distribute.Placement, values: dict[str, tf.Tensor]) -> dict[str, float]:
    """A training step's values (`Trainer.train_step`) as numbers, from this worker's first replica."""
    return {name: float(distribute.first_local(place, value)) for name, value in values.items()}


def every_and_last(every: int, last: int) -> Cadence:
    """Every `every` epochs and at the last one (the goal's, when the try stops there); never if `every` is 0."""
    return Cadence(every, (last,), at_goal=True) if every else NEVER


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
        parts: RunParts,
        stop,
        may_restart: bool,
        restarts: tuple[GivenUp, ...],
        export_dir: str,
    ):
        self.settings, self.task, self.place, self.stop = settings, task, place, stop
        self.may_restart, self.restarts = may_restart, restarts
        self.run_dir, self.export_dir = parts.run_dir, export_dir
        self.model, self.optimizer, self.checkpoint = parts.model, parts.optimizer, parts.checkpoint
        self.trainer, self.sink, self.start_epoch = parts.trainer, parts.sink, parts.start_epoch
        self.started = time.perf_counter()
        self.completed = self.start_epoch
        self.goal: GoalReached | None = None
        self.stopped_at_goal = bool(self.checkpoint.reached_goal.numpy())  # a rerun of a run done at its goal

    def train(self, description: str, config: dict) -> RunResult:
        """Trains the remaining epochs and exports; `description` is the task's line about its data
        (`Prepared`), `config` the run's config.json."""
        self.sink.start(self.settings, config, self.restarts, self.start_epoch)
        self._say_what_runs(description)
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

    def _say_what_runs(self, description: str) -> None:
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
        print(f"run {self.run_dir}: {description}, lstm_size {self.settings.model.units}{placed}, {epochs}")

    def _epochs(self) -> RunResult | None:
        """Every remaining epoch and its end-of-epoch actions; a result if one of them ended the try."""
        training, restart_epoch = self.settings.training, self.settings.run.restart.epoch
        if self.stopped_at_goal:
            return None  # nothing is left to train
        if 0 < self.start_epoch == restart_epoch and self.place.is_chief:  # stopped right at the check
            if stopped := self._check_restart(self.start_epoch, self.task.evaluate(self.model)):
                return stopped
        self.optimizer.learning_rate.assign(training.learning_rate_at(self.start_epoch))
        epochs = range(self.start_epoch, training.epochs)
        batches = iter(distribute.distribute_batches(self.place, lambda: self.task.training_batches(epochs)))
        for epoch in epochs:
            if (stopped := self._end_of_epoch(epoch + 1, self._steps(batches, epoch))) is not None:
                return stopped
            if self.stopped_at_goal:
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
        run, steps = self.settings.run, self.task.steps_per_epoch
        for index in range(steps):
            batch = next(batches)
            self.sink.graph(trainer.train_step, batch)
            values = step(*batch)
            number = epoch * steps + index + 1
            if run.loss_every and number % run.loss_every == 0:
                self.sink.step_values(TRAIN_STEPS, _floats(self.place, values), number)
            if run.validate_every and number % run.validate_every == 0 and self.place.is_chief:
                if (validation := self.task.step_validation(self.model)) is not None:
                    self.sink.step_values(VALIDATION_STEPS, validation, number)
        return _floats(self.place, values)["loss"]

    def _end_of_epoch(self, epoch: int, loss: float) -> RunResult | None:
        """The end of `epoch` (epochs completed; `loss`: its last step's), in the module docstring's
        order; a result if the try ends here (given up, or interrupted)."""
        run, training = self.settings.run, self.settings.training
        self._check_finite(epoch, loss)
        self.optimizer.learning_rate.assign(training.learning_rate_at(epoch))  # the next epoch's
        at_goal = False
        if self.place.is_chief:  # what reads the evaluation (other workers do not evaluate)
            metrics = None
            if Cadence(run.eval_every, (training.epochs, run.restart.epoch)).due(epoch):
                metrics = self._evaluate(epoch)
                at_goal = training.stop_at_goal and self.task.goal_reached(metrics)
            if every_and_last(run.image_every, training.epochs).due(epoch, at_goal=at_goal):
                self.sink.gate_images(self.model, self.task.gate_examples(), epoch)
            if Cadence(run.sample_every).due(epoch):
                self.sink.texts(self.task.samples(self.model), epoch)
            if run.restart.epoch == epoch and (given_up := self._check_restart(epoch, metrics)) is not None:
                return given_up
        stopping, at_goal = self._agree_to_stop(at_goal)
        histograms_due = every_and_last(run.histogram_every, training.epochs).due(epoch, stopping, at_goal)
        if histograms_due and (batch := self.task.histogram_batch()) is not None:
            _, gradients = self.trainer.gradients(*distribute.split_batch(self.place, batch))
            self.sink.histograms(self.model.trainable_variables, gradients, epoch)
        if Cadence(run.checkpoint_every, (training.epochs,), stopping=True, at_goal=True).due(epoch, stopping, at_goal):
            self.checkpoint.save(epoch, reached_goal=at_goal)
            self.sink.flush()
        if stopping:
            self.sink.say(
                f"interrupted after epoch {epoch}; checkpoint saved to {self.checkpoint.latest}. "
                "Run the same command to resume."
            )
            return self._result(INTERRUPTED, metrics={})
        self.stopped_at_goal = at_goal
        return None

    def _check_finite(self, epoch: int, loss: float) -> None:
        self.completed = epoch
        if not math.isfinite(loss):
            raise RunError(
                f"training stopped: the loss became {loss} in epoch {epoch} (learning rate "
                f"{self.settings.training.learning_rate_at(epoch - 1):g}); the last good checkpoint "
                f"{self.checkpoint.latest or '(none yet)'} is untouched; lower --learning_rate and rerun"
            )

    def _evaluate(self, epoch: int) -> Metrics:
        """The task's metrics (thorough at every `check_every`-th epoch, the restart epoch and the
        last), written; the first time the goal holds is kept; the progress line."""
        run, epochs = self.settings.run, self.settings.training.epochs
        thorough = not run.check_every or Cadence(run.check_every, (epochs, run.restart.epoch)).due(epoch)
        metrics = self.task.evaluate(self.model, thorough)
        self.sink.scalars(metrics, epoch)
        if self.goal is None and self.task.goal_reached(metrics):
            self.goal = GoalReached(epoch, self._seconds())
        self.sink.progress(epoch, {**self.task.progress(metrics), "time": f"{self._seconds():.1f}s"})
        return metrics

    def _check_restart(self, epoch: int, metrics: Metrics) -> RunResult | None:
        """At the restart epoch, a try that has not learned is checkpointed and given up."""
        if VALIDATION not in metrics:
            raise RunError("the restart check reads validation metrics, and this run has no validation split")
        if self.stop.requested or (because := self._not_learned_because(metrics)) is None:
            return None
        measured, reason = because
        if not self.may_restart:
            self.sink.say(
                f"epoch {epoch}: {reason}, but no restart is left "
                f"(--max_restarts={self.settings.run.restart.max_restarts}): training on"
            )
            return None
        self.checkpoint.save(epoch)
        self.sink.flush()
        given_up = GivenUp(
            seed=self.settings.training.seed,
            epoch=epoch,
            measured=measured,
            reason=reason,
            validation=dict(metrics[VALIDATION]),
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

    def _agree_to_stop(self, at_goal: bool) -> tuple[bool, bool]:
        """`(stopping, at_goal)` for every worker: Ctrl-C on any of them stops all; the chief's goal is every one's."""
        asked = distribute.lists_from_every_worker(self.place, [int(self.stop.requested), int(at_goal)])
        stopping = any(values[0] for values in asked)
        return stopping, any(values[1] for values in asked) and not stopping

    def _finish(self) -> RunResult:
        """The task's finishing steps (every worker), then its finishing change, the export and
        results.json (the chief), once every epoch has trained. The model is evaluated last, as it
        is exported: if a try stopped at its goal and the finishing steps lost it, the model of the
        goal's epoch is put back (finished again, evaluated again) and exported instead."""
        at_goal = [variable.numpy() for variable in self.model.variables] if self.stopped_at_goal else None
        self._finishing_steps()
        if not self.place.is_chief:
            return self._result(COMPLETED, metrics={})
        if (stopped := self._stopped_before("the readout refit and the export")) is not None:
            return stopped
        metrics, finished = self._finished_metrics()
        if at_goal is not None and not self.task.goal_reached(metrics):
            because = self.task.not_learned(metrics)
            for variable, value in zip(self.model.variables, at_goal):
                variable.assign(value)
            self.sink.say(
                f"the finishing steps lost the goal ({because[1] if because else 'the goal no longer holds'}): "
                f"the model of epoch {self.completed} is exported instead"
            )
            metrics, finished = self._finished_metrics()
        if (stopped := self._stopped_before("the export")) is not None:
            return stopped
        self.stopped_at_goal = self.stopped_at_goal and self.task.goal_reached(metrics)
        seconds = self._seconds()  # training, the finishing steps and the final evaluation
        module, signatures = self.task.serving_module(self.model, metrics, finished)
        metadata = {"model_config": dataclasses.asdict(self.settings.model), "config": self.settings.to_json()}
        try:
            self.sink.export(module, self.export_dir, signatures, metadata, self.settings.task_name)
        except ExportDirError as error:  # found at the swap: the run has written, so not "bad input"
            raise RunError(
                f"training finished, but the export was refused: {error}; the trained model is kept in "
                f"{self.checkpoint.latest}: rerun the same command to export"
            ) from None
        done = dataclasses.replace(
            self._result(COMPLETED, metrics=metrics, export_dir=self.export_dir), seconds=seconds
        )
        self.sink.results(done)
        return done

    def _stopped_before(self, what: str) -> RunResult | None:
        """A stop request (Ctrl-C, SIGTERM) made once every epoch has trained, honoured before `what`:
        nothing is exported; the last checkpoint stays, and the same command finishes the run."""
        if not self.stop.requested:
            return None
        self.sink.say(
            f"interrupted before {what}; the checkpoint {self.checkpoint.latest} is kept. "
            "Run the same command to finish."
        )
        return self._result(INTERRUPTED, metrics={})

    def _finished_metrics(self) -> tuple[Metrics, Finished]:
        """The task's finishing change (`Task.finish`), then its metrics of the model as it stands."""
        finished = self.task.finish(self.model)
        if finished.description is not None:
            self.sink.say(finished.description)
        return self.task.evaluate(self.model, finished=finished), finished

    def _finishing_steps(self) -> None:
        """`Task.finishing_steps` on the model the epochs left (from the last checkpoint, on a rerun)."""
        finishing = self.task.finishing_steps()
        if finishing is None or not finishing.steps:
            return
        started, trained = time.perf_counter(), self.optimizer.learning_rate.numpy()
        self.optimizer.learning_rate.assign(finishing.learning_rate)
        losses = []
        for _, batch in zip(range(finishing.steps), finishing.batches()):
            values = self.trainer.train_step(*distribute.split_batch(self.place, tuple(map(tf.constant, batch))))
            losses.append(_floats(self.place, values)["loss"])
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
