"""The training run, for any task: `result = run.train(settings, task)`.

One run, top to bottom (`train_once`):

    set-up          the memory each batch needs, checked before anything large is built; the task's
                    data for these settings (`Task.prepare`) and its carried variables
    checks          before anything is written: the run and export directories (ours, or new, or
                    empty); with several workers, that they all run the same settings and data
    --fresh         an existing run directory is moved aside, once the new run can start
    run directory   <logdir>/<run_name>, marked as ours: config.json, checkpoints/, train/ and
                    validation/ events, results.json, saved_model/ (unless --export_dir says elsewhere)
    resume          the latest checkpoint, if any; settings that shape what is learned and the data's
                    fingerprint must match config.json (`RunSettings.resume_conflicts`)
    build           the model, optimizer, checkpoint (restored), training step and outputs (`build.py`)
    epochs          `loop.TrainingLoop`: each epoch's compiled steps, then the end-of-epoch actions
    restarts        at `restart.epoch` a try whose validation metrics are above their bounds is given
                    up (its directory kept as `<run>.seed<N>-not-learned`) and run again as seed + 1
    export          the task's serving module as a SavedModel, written atomically
    result          a `RunResult`, also written as results.json
    placement       `--strategy` (distribute.py): the steps of one device, or of replicas that
                    share each batch; with several workers only the chief writes the run

Ctrl-C stops at the end of the epoch with a checkpoint (a second Ctrl-C stops at once); rerunning
the same settings resumes, bit for bit.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
import shutil
import signal

from diy_lstm import files
from diy_lstm.serving.export import check_export_dir, remove_stale_staging
from diy_lstm.training import distribute, fingerprint, memory
from diy_lstm.training.build import build
from diy_lstm.training.checkpoints import CHECKPOINT_DIR, JSON_STAGING, ResumeError, read_json
from diy_lstm.training.config import ConfigError, RunSettings
from diy_lstm.training.lock import RunLock
from diy_lstm.training.loop import TrainingLoop
from diy_lstm.training.results import COMPLETED, GIVEN_UP, INTERRUPTED, GivenUp, GoalReached, RunError, RunResult  # noqa: F401
from diy_lstm.training.sink import CONFIG_FILE, RESTARTS_FILE, RESULTS_FILE
from diy_lstm.training.task import Prepared, Task
from diy_lstm.training.time_budget import plan_epochs


class StopRequest:
    """Turns Ctrl-C (SIGINT) or SIGTERM into a request that the loop honours at the end of an epoch
    (checkpointed) or, once every epoch has trained, before the readout refit or the export; a second
    one stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}

    def _handle(self, signum, frame):
        if self.requested:  # a second signal: stop now
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this epoch, or before the export (Ctrl-C again to stop at once)...", flush=True)

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
    place = distribute.placement(
        settings.run.strategy,
        settings.run.cpu_devices,  # first: before any TF work
        settings.run.worker_start_timeout,
    )
    first_seed, restart, run_dir = settings.training.seed, settings.run.restart, run_dir_of(settings)
    restarts = ()  # (--fresh moves the old run and its restarts aside)
    if restart.epoch and not settings.run.fresh:
        restarts = _restarts_in_progress(run_dir, first_seed, restart.max_restarts)
    if restarts:
        settings = _with_seed(settings, restarts[-1].seed + 1)
    while True:
        may_restart = restart.epoch > 0 and settings.training.seed < first_seed + restart.max_restarts
        result = train_once(settings, task, may_restart, restarts, place=place)
        if result.outcome != GIVEN_UP:
            return result
        seed = settings.training.seed
        settings = dataclasses.replace(settings, run=dataclasses.replace(settings.run, fresh=False))
        aside = move_aside(run_dir, f"seed{seed}-not-learned")
        given_up = dataclasses.replace(result.given_up, run_dir=aside)
        print(
            f"epoch {given_up.epoch}: {given_up.reason}: seed {seed} given up (its run moved to {aside}); "
            f"starting over as --seed={seed + 1}"
        )
        restarts = (*restarts, given_up)
        settings = _with_seed(settings, seed + 1)


def _with_seed(settings: RunSettings, seed: int) -> RunSettings:
    return dataclasses.replace(
        settings,
        training=dataclasses.replace(settings.training, seed=seed),
        model=dataclasses.replace(settings.model, seed=seed),
    )


def _restarts_in_progress(run_dir: str, first_seed: int, max_restarts: int) -> tuple[GivenUp, ...]:
    """The tries a rerun of the same command already gave up (from the run directory's restarts.json)."""
    path = os.path.join(run_dir, RESTARTS_FILE)
    recorded = read_json(path, what="the run's restarts.json") or {}
    if recorded.get("first_seed") != first_seed:
        return ()
    entries = recorded.get("given_up", [])
    try:
        if not isinstance(entries, list):
            raise ValueError("given_up is not a list")
        given_up = tuple(GivenUp.from_json(entry) for entry in entries)
        seeds = [entry.seed for entry in given_up]
        if seeds != list(range(first_seed, first_seed + len(seeds))):
            raise ValueError(f"its tries gave up seeds {seeds}, not {first_seed}, {first_seed + 1}, ... in turn")
    except ValueError as error:
        raise ResumeError(
            f"cannot read the run's restarts.json {path}: {error}; rerun with --fresh to start over"
        ) from None
    return given_up if len(given_up) <= max_restarts else ()


def set_up(settings: RunSettings, task: Task, place: distribute.Placement) -> Prepared:
    """The memory each kind of batch needs, checked before anything large is built; then the task's
    data for these settings and its carried variables (each can refuse the run, naming why).
    Returns what the run needs of the data (`Task.prepare`)."""
    _check_memory(settings, task)
    if unknown := [name for name, _ in settings.run.restart.above if name not in task.metric_names]:
        raise ConfigError(
            f"a restart bound names {unknown[0]!r}, which the {task.name} task does not report; "
            f"its validation metrics are {', '.join(task.metric_names)}"
        )
    prepared = task.prepare(settings.training)
    with place.strategy.scope():  # a task that cannot split its batches says so here
        task.make_variables(settings.model, place.replicas)
    return prepared


def check_directories(settings: RunSettings) -> None:
    """The run and export directories: ours (of this task), new, or empty."""
    files.check_run_dir(run_dir_of(settings), task_name=settings.task_name)
    check_export_dir(export_dir_of(settings), run_dir_of(settings), settings.task_name)


def _move_old_run_aside(run_dir: str) -> None:
    """`--fresh`: the existing run moves aside (never one another process is training)."""
    with RunLock(run_dir):
        pass
    aside = move_aside(run_dir, datetime.datetime.now().strftime("replaced-%Y%m%d-%H%M%S"))
    print(f"--fresh: moved the existing run {run_dir} to {aside}")


def _check_memory(settings: RunSettings, task: Task) -> None:
    """Refuses, naming what drives it, a kind of batch the task plans whose estimate cannot fit."""
    model = settings.model
    for batch in task.planned_batches(settings.training):
        if batch.histograms and not settings.run.histogram_every:
            continue
        estimate = memory.training_bytes if batch.trained else memory.inference_bytes
        flags = ("--lstm_size", "--num_layers", *batch.flags)
        memory.check_fits(
            estimate(model, batch.examples, batch.steps),
            f"{batch.what} (lstm_size {model.units} x {model.num_layers} layer(s), batches of "
            f"{batch.examples:,} x {batch.steps:,} steps)",
            f"lower {', '.join(flags[:-1])} or {flags[-1]}",
        )


def train_once(
    settings: RunSettings,
    task: Task,
    may_restart: bool = False,
    restarts: tuple[GivenUp, ...] = (),
    stop: StopRequest | None = None,
    place: distribute.Placement | None = None,
) -> RunResult:
    """One try: trains `settings.training.epochs` epochs (resuming from the latest checkpoint), then
    exports. With `may_restart`, a try that has not learned by the restart epoch stops there
    (checkpointed) with outcome `GIVEN_UP`. `stop` replaces the Ctrl-C handler (tests); `place`
    is where the steps run (default: `settings.run`'s strategy)."""
    own_stop = stop is None
    stop = stop or StopRequest()  # first: a Ctrl-C during start-up stops after the first epoch
    try:
        place = place or distribute.placement(
            settings.run.strategy, settings.run.cpu_devices, settings.run.worker_start_timeout
        )
        try:
            prepared = set_up(settings, task, place)
            if place.is_chief:
                check_directories(settings)
            fingerprint.check_workers_agree(place, settings, prepared.fingerprint)  # (a collective: every worker)
            run_dir, export_dir = run_dir_of(settings), export_dir_of(settings)
            if not place.is_chief:  # writes nothing of the run, so takes no lock on it
                return _train_under_lock(settings, task, prepared, may_restart, restarts, stop, place)
            if settings.run.fresh and files.is_run_dir(run_dir):
                _move_old_run_aside(run_dir)
                settings = dataclasses.replace(settings, run=dataclasses.replace(settings.run, fresh=False))
            files.claim_run_dir(run_dir, settings.task_name)
            with RunLock(run_dir):
                saved = _check_resume(settings, prepared.fingerprint)
                _remove_leftovers(run_dir, export_dir)
                settings = plan_epochs(settings, task, place, saved)  # (a run given seconds, not epochs)
                return _train_under_lock(settings, task, prepared, may_restart, restarts, stop, place)
        except distribute.LOST_WORKER_ERRORS as error:  # (in training, the loop says more)
            if place.cluster.num_workers == 1:
                raise
            raise RunError(
                f"{distribute.lost_workers(error, place.cluster)} stopped before training began (its own "
                "output says why); rerun every worker"
            ) from error
    finally:
        if own_stop:
            stop.restore()


def _train_under_lock(
    settings: RunSettings,
    task: Task,
    prepared: Prepared,
    may_restart: bool,
    restarts: tuple[GivenUp, ...],
    stop: StopRequest,
    place: distribute.Placement,
) -> RunResult:
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    parts = build(settings, task, place, run_dir_of(settings))  # model, optimizer, checkpoint, trainer, sink
    loop = TrainingLoop(settings, task, place, parts, stop, may_restart, restarts, export_dir_of(settings))
    return loop.train(prepared.description, run_config_json(settings, prepared.fingerprint))


def run_config_json(settings: RunSettings, data_fingerprint: dict[str, object]) -> dict:
    """config.json: every setting, and the fingerprint of the data the run trains on."""
    return {**settings.to_json(), "data_fingerprint": data_fingerprint}


def _check_resume(settings: RunSettings, data_fingerprint: dict[str, object]) -> dict | None:
    """Refuses, naming them, settings or data that differ from those a run directory was started with,
    and a directory where the run keeps one of its files (it could not write it at the end). Returns
    the run's config.json (None for a new run)."""
    run_dir = run_dir_of(settings)
    for name in (CONFIG_FILE, RESULTS_FILE, RESTARTS_FILE):
        if os.path.isdir(path := os.path.join(run_dir, name)):
            raise ResumeError(f"{path} is a directory where the run keeps its {name}; move it away and rerun")
    saved = read_json(os.path.join(run_dir, CONFIG_FILE), what="the run's config.json")
    if saved is None:
        return None
    conflicts = settings.resume_conflicts(saved)
    if conflicts:
        raise ResumeError(
            f"{run_dir} was started with {', '.join(conflicts)}; rerun with those settings to resume, "
            "or with --fresh to start over"
        )
    if predated := settings.predated_fields(saved):
        print(f"{run_dir} predates {len(predated)} setting(s); it resumes with their defaults: {', '.join(predated)}")
    if (changed := fingerprint.describe_change(saved.get("data_fingerprint"), data_fingerprint)) is not None:
        raise ResumeError(
            f"{run_dir} was trained on other data: {changed}; resume with the data it was "
            "started on, or --fresh to start over"
        )
    return saved


CHECKPOINT_STAGING = re.compile(r"ckpt-\d+_temp")  # TensorFlow's staging of a checkpoint being written


def _remove_leftovers(run_dir: str, export_dir: str) -> None:
    """What a killed run left half-written: TensorFlow's checkpoint staging (`ckpt-N_temp`) in this
    run's own `checkpoints/`, the temporary files of its JSON writes, and what a killed export left
    (export.py). Called under the run's lock, in a run directory of ours, so no live writer owns them."""
    checkpoints = os.path.join(run_dir, CHECKPOINT_DIR)
    if files.is_run_dir(run_dir) and os.path.isdir(checkpoints) and not os.path.islink(checkpoints):
        for name in os.listdir(checkpoints):
            path = os.path.join(checkpoints, name)
            if CHECKPOINT_STAGING.fullmatch(name) and os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
    if files.is_run_dir(run_dir):
        for name in os.listdir(run_dir):
            path = os.path.join(run_dir, name)
            if JSON_STAGING.fullmatch(name) and os.path.isfile(path) and not os.path.islink(path):
                os.remove(path)
    remove_stale_staging(export_dir)
