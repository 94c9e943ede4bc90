"""Data-parallel training with `tf.distribute`: the strategy, this process's role, each replica's share.

    --strategy=default       one device: TensorFlow's default strategy (nothing to keep in step)
    --strategy=mirrored      `MirroredStrategy`: one replica per local GPU or, with no GPU, per logical
                             CPU device (`--cpu_devices=N`)
    --strategy=multi_worker  `MultiWorkerMirroredStrategy`: one replica per worker process that the
                             standard `TF_CONFIG` environment variable names (per GPU of each)

How a step runs on R replicas (`trainer.py`): the global batch of `--batch_size` examples is cut along
its first axis into R slices (`replica_slice`), and each worker's input pipeline yields only its own
replicas' slices (`distribute_batches`). Every replica computes its slice's loss and hand-written BPTT
gradients with its own copy of the variables; the strategy all-reduces the gradients, each weighted by
its slice's share of the global batch; every replica then applies the same Adam update to its own
copy, so the copies stay equal. That is the update one device computes on the whole batch, up to the
order of floating-point sums.

Only the chief (worker 0, or the task of type "chief") writes the run: TensorBoard events,
config.json, results.json, checkpoints and the export. The other workers read the chief's latest
checkpoint to resume (so every worker must see the chief's `--logdir`: one machine, or a shared
filesystem) and, as TensorFlow's multi-worker recipe has it, write their own checkpoints to a scratch
directory that they delete at once.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import socket
import time
from typing import Callable

import tensorflow as tf

from diy_lstm.errors import RunFailed, first_line
from diy_lstm.training.config import STRATEGIES, ConfigError

TASK_TYPES = ("chief", "worker")


@dataclasses.dataclass(frozen=True)
class Cluster:
    """This process's place among the workers `TF_CONFIG` names; worker 0 is the chief (the task of
    type "chief" if there is one, else worker 0)."""

    worker_index: int
    num_workers: int
    address: str = ""  # this worker's "host:port"
    task: str = ""  # as TensorFlow names it in errors, e.g. "worker 1"
    peers: tuple[tuple[str, str], ...] = ()  # (task, "host:port") of every other worker

    @property
    def is_chief(self) -> bool:
        return self.worker_index == 0


def loopback_tf_configs(count: int) -> list[str]:
    """`TF_CONFIG` for each of `count` workers on this machine, at ports free now (for trying
    `multi_worker` on one machine: the tests and the benchmark)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    cluster = {"worker": [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]}
    for s in sockets:
        s.close()
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}) for index in range(count)]


def read_tf_config(text: str | None) -> Cluster:
    """The cluster in `TF_CONFIG` (`{"cluster": {"worker": ["host:port", ...]}, "task": {"type":
    "worker", "index": i}}`); anything malformed is a `ConfigError` naming what and where."""
    if not text:
        raise ConfigError("--strategy=multi_worker needs the TF_CONFIG environment variable (see docs/distribute.md)")
    try:
        config = json.loads(text)
    except ValueError as error:
        raise ConfigError(f"TF_CONFIG is not JSON: {error}") from None
    if (
        not isinstance(config, dict)
        or not isinstance(config.get("cluster"), dict)
        or not isinstance(config.get("task"), dict)
    ):
        raise ConfigError(
            'TF_CONFIG must be an object with "cluster" and "task", e.g. {"cluster": {"worker": '
            '["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}'
        )
    cluster, task = config["cluster"], config["task"]
    for job, addresses in cluster.items():
        if job not in TASK_TYPES:
            raise ConfigError(
                f"TF_CONFIG cluster job {job!r} is not one of {TASK_TYPES} (a parameter server is not "
                "used by multi_worker)"
            )
        if not isinstance(addresses, list) or not addresses:
            raise ConfigError(f'TF_CONFIG cluster {job!r} must be a non-empty list of "host:port" addresses')
        for position, address in enumerate(addresses):
            host, _, port = str(address).rpartition(":")
            if not isinstance(address, str) or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f'TF_CONFIG cluster {job!r} address {position} is {address!r}; expected "host:port"')
    if len(cluster.get("chief", [])) > 1:
        raise ConfigError(f"TF_CONFIG names {len(cluster['chief'])} chiefs; there can be one")
    task_type, task_index = task.get("type"), task.get("index")
    if task_type not in cluster:
        raise ConfigError(f"TF_CONFIG task type {task_type!r} is not a job of its cluster ({', '.join(cluster)})")
    count = len(cluster[task_type])
    if not isinstance(task_index, int) or isinstance(task_index, bool) or not 0 <= task_index < count:
        raise ConfigError(
            f"TF_CONFIG task index {task_index!r} is not in [0, {count}) for the {count} {task_type!r} address(es)"
        )
    worker_index = task_index + 1 if task_type == "worker" and "chief" in cluster else task_index
    me = f"{task_type} {task_index}"
    peers = tuple(
        (f"{job} {index}", address)
        for job, addresses in cluster.items()
        for index, address in enumerate(addresses)
        if f"{job} {index}" != me
    )
    return Cluster(
        worker_index, sum(len(addresses) for addresses in cluster.values()), cluster[task_type][task_index], me, peers
    )


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except OSError:
        return False


class WorkerStartError(RunFailed):
    """The other workers did not all start in time; nothing of the run was written."""


def wait_for_peers(cluster: Cluster, timeout: float, announce_after: float = 3.0) -> None:
    """Before the strategy starts (its own wait for the other workers has no limit and cannot be
    interrupted from Python): listens on this worker's TF_CONFIG port and waits until every other
    worker's port answers; says what it waits for after `announce_after` seconds, and gives up with
    `WorkerStartError`, naming the workers that never answered, after `timeout`."""
    port = int(cluster.address.rpartition(":")[2])
    listener = socket.socket()
    try:
        listener.bind(("", port))
    except OSError as error:
        listener.close()
        raise ConfigError(
            f"cannot start worker {cluster.worker_index} at {cluster.address} (TF_CONFIG's task): "
            f"{error.strerror or error}; is its port free, and is this the task's machine?"
        ) from None
    listener.listen(64)  # answered until the strategy's own server takes the port
    started, announced = time.monotonic(), False
    try:
        while missing := [f"{task} at {address}" for task, address in cluster.peers if not _listening(address)]:
            waited = time.monotonic() - started
            if waited > timeout:
                raise WorkerStartError(
                    f"{', '.join(missing)} did not start within {timeout:g}s "
                    "(--worker_start_timeout); start every worker TF_CONFIG names, then rerun"
                )
            if waited > announce_after and not announced:
                print(
                    f"waiting for the other workers of TF_CONFIG ({', '.join(missing)}) to start; giving up after "
                    f"{timeout:g}s",
                    flush=True,
                )
                announced = True
            time.sleep(0.2)
    finally:
        listener.close()


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a run trains: its strategy and this process's place among the workers."""

    name: str
    strategy: tf.distribute.Strategy
    cpu_devices: int = 0
    cluster: Cluster = Cluster(worker_index=0, num_workers=1, address="local")

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    @property
    def is_chief(self) -> bool:
        return self.cluster.is_chief

    @property
    def distributed(self) -> bool:
        """Steps run under `strategy.run` with all-reduces (any strategy but the default one)."""
        return self.name != "default"

    @functools.cached_property
    def gather(self) -> Callable[[tf.Tensor], object]:
        """`values` (int64 `[n]`) -> every replica's, `[replicas, n]` (compiled once per `n`)."""

        def replica_values(values: tf.Tensor) -> tf.Tensor:
            computed = values * tf.constant(1, tf.int64)  # a collective takes a computed tensor, not an input
            return tf.distribute.get_replica_context().all_gather(computed[None], axis=0)

        return tf.function(lambda values: self.strategy.run(replica_values, args=(values,)), autograph=False)

    def describe(self) -> str:
        if not self.distributed:
            return "one device"
        devices = ", ".join(self.strategy.extended.worker_devices)
        workers = (
            f" on worker {self.cluster.worker_index} of {self.cluster.num_workers}"
            if self.cluster.num_workers > 1
            else ""
        )
        return f"{self.name}: {self.replicas} replicas{workers} ({devices})"


_PLACEMENT: Placement | None = None  # devices and collective ops are set once per process: one such strategy


def placement(name: str, cpu_devices: int = 0, worker_start_timeout: float = 300.0) -> Placement:
    """Where a run's steps go. `mirrored` and `multi_worker` make their strategy on first use (before
    TensorFlow starts its runtime: logical CPU devices and a cluster's collective ops cannot be set
    later) and give the same one after; a process has at most one of them (and the default, always)."""
    global _PLACEMENT
    if name not in STRATEGIES:
        raise ConfigError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    if name == "default":
        return Placement(name, tf.distribute.get_strategy())
    if _PLACEMENT is not None:
        if (_PLACEMENT.name, _PLACEMENT.cpu_devices) != (name, cpu_devices):
            raise ConfigError(
                f"this process already trains with --strategy={_PLACEMENT.name} "
                f"--cpu_devices={_PLACEMENT.cpu_devices}; one process has one such strategy"
            )
        return _PLACEMENT
    if name == "mirrored":
        _PLACEMENT = Placement(name, tf.distribute.MirroredStrategy(_mirrored_devices(cpu_devices)), cpu_devices)
    else:
        cluster = read_tf_config(os.environ.get("TF_CONFIG"))
        wait_for_peers(cluster, worker_start_timeout)
        try:  # every worker has started: the strategy connects them
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except (tf.errors.OpError, RuntimeError) as error:
            raise ConfigError(
                f"cannot start worker {cluster.worker_index} at {cluster.address} (TF_CONFIG's task): "
                f"{first_line(error)}; is its port free, and is this the task's machine?"
            ) from None
        _PLACEMENT = Placement(name, strategy, cluster=cluster)
    return _PLACEMENT


def _mirrored_devices(cpu_devices: int) -> list[str]:
    """Every GPU; with none, `cpu_devices` logical CPU devices (at least 1) made from the one CPU."""
    if tf.config.list_physical_devices("GPU"):  # (listing logical devices would start the runtime)
        return [device.name for device in tf.config.list_logical_devices("GPU")]
    wanted = max(cpu_devices, 1)
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * wanted)
    except RuntimeError:  # the runtime has started: its devices stay as they are
        pass
    devices = [device.name for device in tf.config.list_logical_devices("CPU")]
    if len(devices) != wanted:
        raise ConfigError(
            f"--cpu_devices={cpu_devices}: TensorFlow already started with {len(devices)} CPU "
            "device(s) in this process; the strategy must be made before any TensorFlow work"
        )
    return devices


def replica_slice(batch: tuple[tf.Tensor, ...], replica: int | tf.Tensor, replicas: int) -> tuple[tf.Tensor, ...]:
    """Replica `replica`'s rows of a global batch: each tensor's first axis is cut into `replicas`
    slices of ceil(rows / replicas) (the last ones shorter, or empty); scalars go to every replica whole."""
    if replicas == 1:
        return batch

    def rows(tensor: tf.Tensor) -> tf.Tensor:
        if tensor.shape.rank == 0:
            return tensor
        count = tf.shape(tensor, out_type=tf.int64)[0]
        per_replica = (count + replicas - 1) // replicas
        first = tf.minimum(tf.cast(replica, tf.int64) * per_replica, count)
        return tensor[first : tf.minimum(first + per_replica, count)]

    return tuple(rows(tf.convert_to_tensor(tensor)) for tensor in batch)


def distribute_batches(place: Placement, make_dataset: Callable[[], tf.data.Dataset]):
    """The training batches as the strategy hands them to its replicas. `make_dataset()` gives one
    global batch per step; every worker builds it and keeps only its own replicas' slices
    (`replica_slice`), one dataset element per replica, in replica order."""
    if not place.distributed:
        return make_dataset()
    replicas = place.replicas

    def worker_dataset(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * local
        return make_dataset().flat_map(
            lambda *batch: tf.data.Dataset.range(local).map(lambda index: replica_slice(batch, first + index, replicas))
        )

    return place.strategy.distribute_datasets_from_function(worker_dataset)


def split_batch(place: Placement, batch: tuple[tf.Tensor, ...]) -> tuple:
    """A global batch as per-replica values (`replica_slice`), for a step run outside the dataset."""
    if not place.distributed:
        return batch
    return tuple(
        place.strategy.experimental_distribute_values_from_function(
            lambda context: replica_slice(batch, context.replica_id_in_sync_group, place.replicas)
        )
    )


def first_local(place: Placement, value):
    """A per-replica value's copy on this worker's first replica (the value itself when not distributed)."""
    if not place.distributed:
        return value
    return place.strategy.experimental_local_results(value)[0]


def from_every_worker(place: Placement, value: int) -> list[int]:
    """`value` as each worker has it, in worker order (a collective: every worker must call it)."""
    return [values[0] for values in lists_from_every_worker(place, [value])]


def lists_from_every_worker(place: Placement, values: list[int]) -> list[list[int]]:
    """`values` (the same number on every worker) as each worker has them, in worker order (a collective)."""
    if place.cluster.num_workers == 1:
        return [list(values)]
    per_replica = first_local(place, place.gather(tf.constant(values, tf.int64))).numpy().tolist()
    return per_replica[:: len(per_replica) // place.cluster.num_workers]


# What a collective op raises when a peer is gone (its heartbeats stopped, or its connection closed).
LOST_WORKER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.AbortedError,
    tf.errors.DeadlineExceededError,
    tf.errors.CancelledError,
    tf.errors.InternalError,
)


def lost_workers(error: tf.errors.OpError, cluster: Cluster) -> str:
    """The other workers a collective's error names as gone, e.g. "worker 1", or "a worker"."""
    message = error.message
    unhealthy = message[message.find("unhealthy") :] if "unhealthy" in message else message
    tasks = {f"{job} {index}" for job, index in re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)", unhealthy)}
    return ", ".join(sorted(tasks - {cluster.task})) or "a worker"
