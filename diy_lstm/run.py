"""The training run, for any task: `result = run.train(settings, task)`.

One run, top to bottom:

    run directory   <logdir>/<run_name>: config.json, checkpoints/, train/ and validation/ events,
                    results.json, saved_model/ (unless --export_dir says elsewhere)
    model           LSTMModel(settings.model); Adam over its variables
    resume          the latest checkpoint, if any (model, optimizer, completed epochs); settings
                    that shape what is learned must match config.json (`RunSettings.resume_conflicts`)
    loop            the task's batches, epoch after epoch: one compiled step each; after an epoch the
                    learning rate of the next, a NaN guard, and every so often evaluation (scalars,
                    progress line, gate heat maps), histograms, a checkpoint
    restarts        at `restart.epoch` a run whose validation metrics are above their bounds is given
                    up (its directory kept as `<run>.seed<N>-not-learned`) and run again as seed + 1
    export          the task's serving module as a SavedModel, written atomically
    result          a `RunResult`, also written as results.json
    placement       `--strategy` (distribute.py): the steps of one device, or of replicas that
                    share each batch; with several workers only the chief writes the run

Ctrl-C stops at the end of the epoch with a checkpoint (a second Ctrl-C stops at once); rerunning
the same settings resumes. Everything random derives from `(seed, epoch)` or the optimizer's step
counter, so a resumed run ends with the same weights, bit for bit, as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import re
import shutil
import signal
import time
import tensorflow as tf

from diy_lstm import distribute, machine, ownership
from diy_lstm.checkpoints import CHECKPOINT_DIR, ConfigMismatchError, RunCheckpoint, read_json, write_json_atomically
from diy_lstm.config import RunSettings
from diy_lstm.export import check_export_dir, export, remove_stale_staging
from diy_lstm.lock import RunLock
from diy_lstm.model import LSTMModel
from diy_lstm.optimizer import Adam
from diy_lstm.progress import Progress
from diy_lstm.summaries import (RunWriters, drop_events_after, write_gate_images, write_hparams, write_histograms,
                                write_scalars, write_texts)
from diy_lstm.task import TRAIN, VALIDATION, Task
from diy_lstm.training import Trainer

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
RESTARTS_FILE = "restarts.json"

COMPLETED, INTERRUPTED, GIVEN_UP = "completed", "interrupted", "given_up"


class RunError(Exception):
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

    @property
    def seconds_in_all(self) -> float:
        """Training time of this try and every given-up one."""
        return self.seconds + sum(given_up.seconds for given_up in self.restarts)


class StopRequest:
    """Turns Ctrl-C (SIGINT) or SIGTERM into a request that the loop honours at the end of an epoch
    (checkpointed); a second one stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}

    def _handle(self, signum, frame):
        if self.requested:  # a second signal: stop now
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this epoch (Ctrl-C again to stop at once)...", flush=True)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def run_dir_of(settings: RunSettings) -> str:
    return os.path.normpath(os.path.join(settings.run.logdir, settings.run.run_name))


def export_dir_of(settings: RunSettings) -> str:
    return settings.run.export_dir or os.path.join(run_dir_of(settings), "saved_model")


def move_aside(run_dir: str, label: str) -> str:
    """Renames `run_dir` to `<run_dir>.<label>` (plus a timestamp if that is taken); returns the new path."""
    aside = f"{run_dir}.{label}"
    stamp = datetime.datetime.now().strftime("-%Y%m%d-%H%M%S")
    for attempt in range(100):
        if not os.path.lexists(aside):
            break
        aside = f"{run_dir}.{label}{stamp}" + (f"-{attempt}" if attempt else "")
    os.rename(run_dir, aside)  # (never onto an existing path: an empty directory there would be replaced)
    return aside


def train(settings: RunSettings, task: Task) -> RunResult:
    """`train_once`, started over as seed + 1, + 2, ... while a try has not learned by the restart
    epoch (`settings.run.restart`); the last allowed try trains to the end. Rerunning the same
    settings resumes the try in progress."""
    place = distribute.placement(settings.run.strategy, settings.run.cpu_devices)  # first: before any TF work
    first_seed = settings.training.seed
    restart = settings.run.restart
    run_dir = run_dir_of(settings)
    if settings.run.fresh and ownership.is_run_dir(run_dir) and place.is_chief:  # (a directory not ours: refused below)
        with RunLock(run_dir):  # never move a run another process is training
            pass
        aside = move_aside(run_dir, datetime.datetime.now().strftime("replaced-%Y%m%d-%H%M%S"))
        print(f"--fresh: moved the existing run {run_dir} to {aside}")
        settings = dataclasses.replace(settings, run=dataclasses.replace(settings.run, fresh=False))
    restarts = _restarts_in_progress(run_dir, first_seed, restart.max_restarts) if restart.epoch else ()
    if restarts:
        settings = _with_seed(settings, restarts[-1].seed + 1)
    while True:
        may_restart = restart.epoch > 0 and settings.training.seed < first_seed + restart.max_restarts
        result = train_once(settings, task, may_restart, restarts, place=place)
        if result.outcome != GIVEN_UP:
            return result
        seed = settings.training.seed
        aside = move_aside(run_dir, f"seed{seed}-not-learned")
        given_up = dataclasses.replace(result.given_up, run_dir=aside)
        print(f"epoch {given_up.epoch}: {given_up.reason}: seed {seed} given up (its run moved to {aside}); "
              f"starting over as --seed={seed + 1}")
        restarts = (*restarts, given_up)
        settings = _with_seed(settings, seed + 1)


def _with_seed(settings: RunSettings, seed: int) -> RunSettings:
    return dataclasses.replace(settings, training=dataclasses.replace(settings.training, seed=seed),
                               model=dataclasses.replace(settings.model, seed=seed))


def _restarts_in_progress(run_dir: str, first_seed: int, max_restarts: int) -> tuple[GivenUp, ...]:
    """The tries a rerun of the same command already gave up (from the run directory's restarts.json)."""
    recorded = read_json(os.path.join(run_dir, RESTARTS_FILE)) or {}
    if recorded.get("first_seed") != first_seed:
        return ()
    given_up = tuple(GivenUp(**entry) for entry in recorded.get("given_up", []))
    return given_up if len(given_up) <= max_restarts else ()


def _check_resume(settings: RunSettings) -> None:
    """Refuses, naming them, settings that differ from those a run directory was started with."""
    run_dir = run_dir_of(settings)
    saved = read_json(os.path.join(run_dir, CONFIG_FILE), what="the run's config.json")
    if saved is not None and (conflicts := settings.resume_conflicts(saved)):
        raise ConfigMismatchError(f"{run_dir} was started with {', '.join(conflicts)}; rerun with those "
                                  "settings to resume, or with --fresh to start over")


def _write_config(settings: RunSettings, restarts: tuple[GivenUp, ...]) -> None:
    """config.json (what this run is, as it runs now) and, after restarts, the tries given up."""
    run_dir = run_dir_of(settings)
    os.makedirs(run_dir, exist_ok=True)
    write_json_atomically(os.path.join(run_dir, CONFIG_FILE), settings.to_json())
    if restarts:
        write_json_atomically(os.path.join(run_dir, RESTARTS_FILE), {
            "first_seed": restarts[0].seed, "given_up": [dataclasses.asdict(r) for r in restarts]})


CHECKPOINT_STAGING = re.compile(r"ckpt-\d+_temp")  # TensorFlow's staging of a checkpoint being written


def _remove_leftovers(run_dir: str, export_dir: str) -> None:
    """What a killed run left half-written: TensorFlow's checkpoint staging (`ckpt-N_temp`) in this
    run's own `checkpoints/`, and the marked staging of an export whose process is gone (export.py).
    Called under the run's lock, in a run directory of ours, so no live writer owns them."""
    checkpoints = os.path.join(run_dir, CHECKPOINT_DIR)
    if ownership.is_run_dir(run_dir) and os.path.isdir(checkpoints) and not os.path.islink(checkpoints):
        for name in os.listdir(checkpoints):
            path = os.path.join(checkpoints, name)
            if CHECKPOINT_STAGING.fullmatch(name) and os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
    remove_stale_staging(export_dir)


def _not_learned_because(settings: RunSettings, validation: dict[str, float]) -> tuple[str, str] | None:
    """(measure, reason) if a validation metric is above its restart bound, else None."""
    for name, bound in settings.run.restart.above:
        if validation[name] > bound:
            measured = f"{name} {validation[name]:.3g}"
            return measured, f"validation {measured} is above {bound:g}"
    return None


def train_once(settings: RunSettings, task: Task, may_restart: bool = False,
               restarts: tuple[GivenUp, ...] = (), stop: StopRequest | None = None,
               place: distribute.Placement | None = None) -> RunResult:
    """One try: trains `settings.training.epochs` epochs (resuming from the latest checkpoint), then
    exports. With `may_restart`, a try that has not learned by the restart epoch stops there
    (checkpointed) with outcome `GIVEN_UP`. `stop` replaces the Ctrl-C handler (tests); `place`
    is where the steps run (default: `settings.run`'s strategy)."""
    own_stop = stop is None
    stop = stop or StopRequest()  # first: a Ctrl-C during start-up stops after the first epoch
    try:
        place = place or distribute.placement(settings.run.strategy, settings.run.cpu_devices)
        try:
            with place.strategy.scope():  # first: a task that cannot split its batches says so before any writing
                task.make_variables(place.replicas)
            if not place.is_chief:  # writes nothing of the run, so takes no lock on it
                return _train_once(settings, task, may_restart, restarts, stop, place)
            ownership.check_run_dir(run_dir_of(settings))  # nothing is written before both checks pass
            check_export_dir(export_dir_of(settings), run_dir_of(settings), settings.task_name)
            ownership.claim_run_dir(run_dir_of(settings), settings.task_name)
            with RunLock(run_dir_of(settings)):
                return _train_once(settings, task, may_restart, restarts, stop, place)
        except distribute.LOST_WORKER_ERRORS as error:  # (in training, _train_once says more)
            if place.cluster.num_workers == 1:
                raise
            raise RunError(f"{distribute.lost_workers(error, place.cluster)} stopped before training began (its own "
                           "output says why); rerun every worker") from error
    finally:
        if own_stop:
            stop.restore()


def _train_once(settings: RunSettings, task: Task, may_restart: bool, restarts: tuple[GivenUp, ...],
                stop: StopRequest, place: distribute.Placement) -> RunResult:
    training, run_config = settings.training, settings.run
    run_dir = run_dir_of(settings)
    export_dir = export_dir_of(settings)
    chief = place.is_chief
    if chief:
        _check_resume(settings)
    tf.config.experimental.enable_op_determinism()

    task.prepare(training.seed)
    with place.strategy.scope():  # one copy of every variable per replica
        model = LSTMModel(settings.model, backprop=training.backprop, unroll=training.unroll)
        optimizer = Adam(model.trainable_variables, learning_rate=training.learning_rate,
                         weight_decay=training.weight_decay)
        scratch = None if chief else os.path.join(run_dir, f"worker{place.cluster.worker_index}-scratch")
        checkpoint = RunCheckpoint(run_dir, model, optimizer, scratch_dir=scratch)
    jit_compile = {"true": True, "false": False}.get(training.jit_compile, task.fixed_length)
    trainer = Trainer(model, optimizer, task.loss, jit_compile, training.clip_norm, training.preactivation_noise,
                      training.seed, strategy=place.strategy if place.distributed else None)
    start_epoch = _restore(checkpoint, place)
    epochs = training.epochs
    if start_epoch > epochs:
        raise ConfigMismatchError(f"{run_dir} has already trained {start_epoch} epochs; --epochs={epochs} would "
                                  "undo them: give at least that many, or --fresh to start over")
    if chief:
        _write_config(settings, restarts)
        drop_events_after(run_dir, start_epoch, (TRAIN, VALIDATION))  # what a stopped run wrote past its checkpoint
        _remove_leftovers(run_dir, export_dir)
        if start_epoch:
            print(f"resuming from epoch {start_epoch} ({checkpoint.latest})")
        placed = f", {place.describe()}" if place.distributed else ""
        print(f"run {run_dir}: {task.describe()}, lstm_size {settings.model.units}{placed}, "
              f"epochs {start_epoch + 1}..{epochs}")
    else:
        print(f"worker {place.cluster.worker_index} of {place.cluster.num_workers}: epochs {start_epoch + 1}..{epochs} "
              f"of {run_dir}, which the chief writes")

    writers = RunWriters(run_dir, (TRAIN, VALIDATION), write=chief)
    if start_epoch == 0 and chief:
        write_hparams(run_dir, settings.hparams(), trial_id=f"{run_config.run_name} seed {training.seed}")
    gate_examples = task.gate_examples()
    progress = Progress(total=epochs, start=start_epoch)
    started = time.perf_counter()
    goal = None
    completed = start_epoch
    trace_graph = start_epoch == 0 and chief
    restart_epoch = run_config.restart.epoch

    def result(outcome: str, **fields) -> RunResult:
        return RunResult(outcome=outcome, run_dir=run_dir, seed=training.seed, epochs=epochs,
                         resumed_from_epoch=start_epoch, completed_epochs=completed,
                         seconds=round(time.perf_counter() - started, 2), goal_reached=goal, restarts=restarts,
                         machine=machine.describe(), **fields)

    def given_up_at(epoch: int, metrics: dict[str, dict[str, float]]) -> RunResult | None:
        """At the restart epoch, if the try has not learned: checkpoints it and says why it stops."""
        if epoch != restart_epoch:
            return None
        if VALIDATION not in metrics:
            raise RunError("the restart check reads validation metrics, and this run has no validation split")
        validation = metrics[VALIDATION]
        if (because := _not_learned_because(settings, validation)) is None:
            return None
        measured, reason = because
        if not may_restart:
            progress.close()
            print(f"epoch {epoch}: {reason}, but no restart is left "
                  f"(--max_restarts={run_config.restart.max_restarts}): training on")
            return None
        checkpoint.save(epoch)
        writers.flush()
        stopped = result(GIVEN_UP, metrics={}, given_up=GivenUp(
            seed=training.seed, epoch=epoch, measured=measured, reason=reason, validation=dict(validation),
            seconds=round(time.perf_counter() - started, 2), run_dir=run_dir))
        write_json_atomically(os.path.join(run_dir, RESULTS_FILE), dataclasses.asdict(stopped))
        return stopped

    try:
        if 0 < start_epoch == restart_epoch and (stopped := given_up_at(start_epoch, task.evaluate(model))):
            return stopped
        noisy_end = max(start_epoch, training.first_noise_free_epoch)
        optimizer.learning_rate.assign(training.learning_rate_at(start_epoch))
        epochs_left = range(start_epoch, epochs)
        batches = distribute.distribute_batches(place, lambda: task.training_batches(training, epochs_left))
        for epoch, last_in_epoch, *batch in batches:
            if trace_graph:  # the Graphs tab shows the training step (as traced, before XLA)
                with writers[TRAIN].as_default():
                    tf.summary.graph(trainer.train_step.get_concrete_function(*batch).graph)
                trace_graph = False
            epoch = int(distribute.first_local(place, epoch))
            step = trainer.train_step if epoch < noisy_end else trainer.noise_free_train_step
            loss = step(*batch)
            if not distribute.first_local(place, last_in_epoch):
                continue
            loss = float(loss)
            if not math.isfinite(loss):
                raise RunError(
                    f"training stopped: the loss became {loss} in epoch {epoch + 1} "
                    f"(learning rate {training.learning_rate_at(epoch):g}); the last good checkpoint "
                    f"{checkpoint.latest or '(none yet)'} is untouched; lower --learning_rate and rerun")
            completed = epoch + 1
            optimizer.learning_rate.assign(training.learning_rate_at(completed))
            if chief and (completed % run_config.eval_every == 0 or completed in (epochs, restart_epoch)):
                metrics = task.evaluate(model)
                for split, values in metrics.items():
                    write_scalars(writers[split], values, completed)
                if goal is None and task.goal_reached(metrics):
                    goal = GoalReached(completed, round(time.perf_counter() - started, 2))
                if run_config.image_every and (completed % run_config.image_every == 0 or completed == epochs):
                    write_gate_images(writers[VALIDATION], model, gate_examples, completed)
                progress.update(completed, {**task.progress(metrics),
                                            "time": f"{time.perf_counter() - started:.1f}s"})
                if run_config.sample_every and completed % run_config.sample_every == 0:
                    write_texts(writers[VALIDATION], task.samples(model), completed)
                if not stop.requested and (stopped := given_up_at(completed, metrics)):
                    return stopped
            stopping = any(distribute.from_every_worker(place, int(stop.requested)))  # every worker stops together
            if run_config.histogram_every and (completed % run_config.histogram_every == 0 or completed == epochs):
                _, gradients = trainer.gradients(*distribute.split_batch(place, task.histogram_batch()))
                write_histograms(writers[TRAIN], model.trainable_variables, gradients, completed)
            if completed % run_config.checkpoint_every == 0 or completed == epochs or stopping:
                checkpoint.save(completed)
                writers.flush()
            if stopping:
                if chief:
                    print(f"interrupted after epoch {completed}; checkpoint saved to {checkpoint.latest}. "
                          "Run the same command to resume.")
                return result(INTERRUPTED, metrics={})
    except distribute.LOST_WORKER_ERRORS as error:
        if place.cluster.num_workers == 1:
            raise
        raise RunError(f"training stopped in epoch {completed + 1}: {distribute.lost_workers(error, place.cluster)} "
                       f"stopped responding; rerun every worker to resume from {checkpoint.latest or 'the start'}") \
            from error
    finally:
        progress.close()
        writers.close()
    seconds = round(time.perf_counter() - started, 2)
    if not chief:
        return dataclasses.replace(result(COMPLETED, metrics={}), seconds=seconds)

    module, signatures = task.serving_module(model)
    export(module, export_dir, signatures, {"model_config": dataclasses.asdict(settings.model),
                                            "config": settings.to_json()}, task=settings.task_name)
    done = dataclasses.replace(result(COMPLETED, metrics=task.evaluate(model), export_dir=export_dir),
                               seconds=seconds)
    write_json_atomically(os.path.join(run_dir, RESULTS_FILE), dataclasses.asdict(done))
    return done


def _restore(checkpoint: RunCheckpoint, place: distribute.Placement) -> int:
    """The completed epochs of the latest checkpoint, restored. With several workers the chief
    restores first (after its start-up moved or checked the run), then the others read the chief's
    checkpoint, and all must have found the same one."""
    if place.cluster.num_workers == 1:
        return checkpoint.restore_latest()
    start_epoch = checkpoint.restore_latest() if place.is_chief else 0
    distribute.from_every_worker(place, start_epoch)  # the chief is ready
    if not place.is_chief:
        start_epoch = checkpoint.restore_latest()
    found = distribute.from_every_worker(place, start_epoch)
    if len(set(found)) > 1:
        raise RunError(f"the workers found different checkpoints to resume from (completed epochs by worker: "
                       f"{found}); every worker must see the chief's --logdir ({checkpoint.directory})")
    return start_epoch
