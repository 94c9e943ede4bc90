"""Fingerprints of what a run trains on, compared wherever two of them must be the same.

data         the task's `fingerprint()` (a text's SHA-256, size and vocabulary; the counter's
             generated examples), recorded in config.json: a resume on other data is refused
settings     every setting (but how long each waits for the others) and the data: workers of one
             multi-worker run exchange one hash per entry before training and refuse, naming the
             entries that differ, to train with different ones (epochs and cadences included: the
             workers meet at every epoch, checkpoint and evaluation)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from diy_lstm.training import distribute
from diy_lstm.training.config import RunSettings


def digest(value: object) -> int:
    """A 63-bit hash of a JSON value (stable across processes and machines)."""
    encoded = json.dumps(value, sort_keys=True, default=str).encode()
    return int.from_bytes(hashlib.sha256(encoded).digest()[:8], "big") >> 1


# Each worker's own: how long it waits for the others to start; --fresh (only the chief acts on it).
PER_WORKER = ("run.worker_start_timeout", "run.fresh")


def checked_entries(settings: RunSettings, data_fingerprint: dict[str, object]) -> dict[str, object]:
    """`section.field -> value` for every setting the workers of one run must share, and `data.<key>`
    for the data."""
    entries = {}
    for name, section in settings.sections().items():
        for field in dataclasses.fields(section):
            if f"{name}.{field.name}" not in PER_WORKER:
                entries[f"{name}.{field.name}"] = getattr(section, field.name)
    entries.update({f"data.{key}": value for key, value in data_fingerprint.items()})
    return dict(sorted(entries.items()))


def check_workers_agree(
    place: distribute.Placement, settings: RunSettings, data_fingerprint: dict[str, object]
) -> None:
    """Every worker of a multi-worker run must train the same settings on the same data (a collective)."""
    if place.cluster.num_workers == 1:
        return
    from diy_lstm.training.results import RunError

    entries = checked_entries(settings, data_fingerprint)
    names = list(entries)
    mine = [digest(entries[name]) for name in names]
    every_worker = distribute.lists_from_every_worker(place, [len(names), *mine])
    if any(values[0] != len(names) for values in every_worker):
        raise RunError("the workers run different versions of this program; run the same one everywhere")
    differ = [name for index, name in enumerate(names) if len({values[index + 1] for values in every_worker}) > 1]
    if differ:
        raise RunError(
            f"the workers were started with different settings or data: {', '.join(differ)} "
            f"(worker {place.cluster.worker_index} has {', '.join(f'{n}={entries[n]}' for n in differ)}); "
            "start every worker with the same flags and files"
        )


def describe_change(saved: dict | None, now: dict) -> str | None:
    """How the data's fingerprint changed since `saved` (config.json's), or None if it did not."""
    if saved == now:
        return None
    if not isinstance(saved, dict):
        return f"no fingerprint of the data was recorded (now {_shown(now)})"
    keys = sorted(set(saved) | set(now))
    return ", ".join(
        f"{key} {_short(now.get(key))} (was {_short(saved.get(key))})" for key in keys if saved.get(key) != now.get(key)
    )


def _short(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 40 else text[:16] + "…" + text[-8:]


def _shown(values: dict) -> str:
    return ", ".join(f"{key} {_short(value)}" for key, value in sorted(values.items()))
