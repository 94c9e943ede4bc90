"""Write a model's serving module as a SavedModel, atomically, replacing only what is ours; load one back.

    export(module, export_dir, signatures, metadata, task)   the SavedModel, then metadata beside it
    write_directory(export_dir, write, metadata, task, kind) any files of ours (the LiteRT ones) the same way
    load_serving_signature(model_dir, name, inputs)          a signature of a SavedModel, checked
    load_model(export_dir)                                   the `LSTMModel` inside, to look into

Writing is atomic: the SavedModel is built in a staging directory beside the target (marked as ours,
`diy_lstm.files`) and then moved into place, so a failed export leaves the previous one loadable. It
replaces only an empty directory or an earlier export of ours of the same task (recognised by the
`format` and `config.task` of its metadata, `assets.extra/diy_lstm.json`; an export of ours that
names no task is replaced only by an export that names none either), and only if it holds nothing
but the files it was written with (the metadata's `files`, its manifest; for an export older than
the manifest, the files of a SavedModel): anything else is refused before training starts, and
again just before the swap. What a model holds (its signatures, tables, constants) is the task's; this
module knows nothing of it.
"""

from __future__ import annotations

import json
import os
import re
from typing import Callable, Mapping, Sequence

import tensorflow as tf

from diy_lstm import files
from diy_lstm.errors import BadInput, BadModel, first_line
from diy_lstm.model import LSTMModel, ModelConfig

METADATA_FILE = os.path.join("assets.extra", "diy_lstm.json")
METADATA_FORMAT = "diy_lstm SavedModel"  # marks an export of ours: the only kind `export` replaces
LITERT_FORMAT = "diy_lstm LiteRT"  # marks a directory of LiteRT files of ours (`write_directory`, litert.py)
FORMATS = (METADATA_FORMAT, LITERT_FORMAT)  # each replaces only a directory of its own format
MAX_SAVED_MODEL_BYTES = 4_000_000_000  # all files of a SavedModel that is loaded
MAX_METADATA_BYTES = 1_000_000


class ExportDirError(BadInput):
    """An export directory that holds something other than an export of ours; nothing was touched."""


MANIFEST_KEY = "files"  # the metadata's list of every file the export wrote, relative to it
# What an export without a manifest may hold: a SavedModel's own files and our metadata.
_SAVED_MODEL_FILES = re.compile(
    r"saved_model\.pb|fingerprint\.pb|variables/variables\.(index|data-\d+-of-\d+)|"
    r"assets\.extra/diy_lstm\.json"
)
_METADATA_DIR = os.path.dirname(METADATA_FILE) + os.sep  # as `_files_under` lists it when empty
_SAVED_MODEL_DIRS = {"assets" + os.sep}  # empty directories a SavedModel has, listed or not
STAGING_SUFFIX = ".tmp-"  # staging of `<export_dir>` is `<export_dir>.tmp-<random>`, marked (files.py)


def check_export_dir(
    export_dir: str,
    run_dir: str | None = None,
    task: str | None = None,
    *,
    kind: str = METADATA_FORMAT,
    flag: str = "--export_dir",
) -> None:
    """Raises `ExportDirError` unless `export` may write to `export_dir`: a new or empty directory, or
    an earlier export of ours of the same `task` and `kind` (one of `FORMATS`; recognised by its
    metadata), in a place it can write; never the run directory, one that holds it, or a place inside
    it but `<run>/saved_model`. Messages name the directory as `flag`."""
    export_dir = os.path.abspath(export_dir)
    if run_dir is not None:
        run_dir = os.path.abspath(run_dir)
        if os.path.commonpath([export_dir, run_dir]) == export_dir:
            raise ExportDirError(
                f"--export_dir={export_dir} is or holds the run directory {run_dir}; choose a directory of its own"
            )
        if os.path.commonpath([export_dir, run_dir]) == run_dir and export_dir != os.path.join(run_dir, "saved_model"):
            raise ExportDirError(
                f"--export_dir={export_dir} is inside the run directory {run_dir}; choose "
                f"{os.path.join(run_dir, 'saved_model')} (the default) or a place outside it"
            )
    _check_writable_parent(export_dir, flag)
    if os.path.islink(export_dir) or (os.path.exists(export_dir) and not os.path.isdir(export_dir)):
        raise ExportDirError(f"{flag}={export_dir} is a file or a link; choose a new or empty directory")
    previous = _previous_path(export_dir)  # where an export of ours steps aside while the new one moves in
    if os.path.isdir(export_dir) and os.listdir(export_dir):
        _check_replaceable(export_dir, task, kind, flag)
        if os.path.lexists(previous) and not _removal_leftover(previous):  # removed before the swap
            _check_replaceable(previous, task, kind, flag)
    elif not os.path.exists(export_dir) and _our_metadata(previous) is not None:
        _check_replaceable(previous, task, kind, flag)  # an interrupted swap: it is moved back, then replaced


def _check_replaceable(path: str, task: str | None, kind: str, flag: str) -> None:
    """Raises `ExportDirError` unless `path` holds a directory of ours of `kind` and `task`. With `task`
    None (an export that names no task) any of `kind` is replaced; a run's export, which names its task,
    replaces only one that names the same task (every run's export has named it)."""
    metadata = _our_metadata(path)
    if metadata is None:
        raise ExportDirError(
            f"{flag}={path} holds files that are not a {kind}; refusing to replace them: "
            "choose a new or empty directory"
        )
    if metadata["format"] != kind:
        raise ExportDirError(
            f"{flag}={path} holds a {metadata['format']}, not a {kind}; refusing to replace it: "
            "choose a new or empty directory"
        )
    config = metadata.get("config")
    made_by = config.get("task") if isinstance(config, dict) else None
    if task is None or made_by == task:
        _check_only_its_own_files(path, metadata, flag)
        return
    if not isinstance(made_by, str) or not made_by:
        raise ExportDirError(
            f"{flag}={path} holds a {kind} that names no task; a {task} run does not replace it: "
            "choose another directory"
        )
    raise ExportDirError(
        f"{flag}={path} holds a {made_by} model; a {task} run does not replace it: choose another directory"
    )


def _check_only_its_own_files(path: str, metadata: dict, flag: str) -> None:
    """Raises `ExportDirError` if `path` holds a file its export did not write (a user's notes, say)."""
    manifest = metadata.get(MANIFEST_KEY)
    ours = {METADATA_FILE, _METADATA_DIR, files.STAGING_MARKER, *_SAVED_MODEL_DIRS}  # the marker: a killed swap's
    if isinstance(manifest, list):
        foreign = [name for name in _files_under(path) if name not in {*manifest, *ours}]
    else:
        foreign = [name for name in _files_under(path) if name not in ours and not _SAVED_MODEL_FILES.fullmatch(name)]
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ExportDirError(
            f"{flag}={path} holds files the export did not write ({shown}); refusing to "
            "replace it: move them elsewhere or choose another directory"
        )


def _files_under(directory: str) -> list[str]:
    """Every file and link under `directory` and every empty directory (ending in a separator),
    relative to it, sorted (links are not followed)."""
    found = []
    for parent, directories, names in os.walk(directory):
        links = [name for name in directories if os.path.islink(os.path.join(parent, name))]
        found += [os.path.relpath(os.path.join(parent, name), directory) for name in names + links]
        if parent != directory and not names and not directories:
            found.append(os.path.relpath(parent, directory) + os.sep)
    return sorted(found)


def _check_writable_parent(export_dir: str, flag: str) -> None:
    """The nearest existing ancestor of `export_dir`'s parent must be a directory this process can write."""
    if (because := files.unwritable_because(os.path.dirname(export_dir))) is not None:
        raise ExportDirError(f"{flag}={export_dir}: {because}")


def export(
    module: tf.Module, export_dir: str, signatures: Mapping, metadata: Mapping | None = None, task: str | None = None
) -> str:
    """Writes `module` with `signatures` as a SavedModel at `export_dir`, replacing an earlier export
    of ours only once the new one is complete (see `check_export_dir` for what it will not replace).
    `metadata` (JSON-serialisable) goes to `assets.extra/diy_lstm.json`. Returns `export_dir`."""
    save = lambda staging: tf.saved_model.save(module, staging, signatures=dict(signatures))  # noqa: E731
    return write_directory(export_dir, save, metadata, task)


def write_directory(
    export_dir: str,
    write: Callable[[str], None],
    metadata: Mapping | None = None,
    task: str | None = None,
    kind: str = METADATA_FORMAT,
    flag: str = "--export_dir",
) -> str:
    """`write(staging)` fills a new directory, which then replaces `export_dir` whole (as `export`
    does, for any of `FORMATS`), with `metadata` and its manifest in `METADATA_FILE`. Returns `export_dir`."""
    export_dir = os.path.abspath(export_dir)
    check_export_dir(export_dir, task=task, kind=kind, flag=flag)
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    remove_stale_staging(export_dir)
    staging = files.make_staging(parent, os.path.basename(export_dir) + STAGING_SUFFIX)
    try:
        write(staging)
        os.makedirs(os.path.join(staging, os.path.dirname(METADATA_FILE)), exist_ok=True)
        written = [name for name in _files_under(staging) if name not in (files.STAGING_MARKER, _METADATA_DIR)]
        with open(os.path.join(staging, METADATA_FILE), "w") as f:
            json.dump({"format": kind, **dict(metadata or {}), MANIFEST_KEY: written}, f, indent=2, sort_keys=True)
        os.chmod(staging, 0o755)  # mkdtemp makes it 0700; a SavedModel is for others to read too
        _move_into_place(staging, export_dir)
    except BaseException:
        files.remove_staging(staging)  # still marked: only the export in place is unmarked
        raise
    return export_dir


def remove_stale_staging(export_dir: str) -> list[str]:
    """What a killed export left at `export_dir` and beside it, completed or removed (a kill at any
    step of `export` leaves one of these): its marked staging and the empty directories a removal
    leaves (files.py); an export moved into place but still marked, unmarked; the previous export
    moved back if the new one never took its place, else removed. Returns what it removed."""
    export_dir = os.path.abspath(export_dir)
    removed = files.remove_stale_staging(os.path.dirname(export_dir), os.path.basename(export_dir) + STAGING_SUFFIX)
    if _our_metadata(export_dir) is not None and files.staging_owner(export_dir) is not None:
        files.unmark_staging(export_dir)
    previous = _previous_path(export_dir)
    if not os.path.exists(export_dir) and _our_metadata(previous) is not None and _is_whole(previous):
        os.rename(previous, export_dir)
    elif _our_metadata(previous) is not None or _removal_leftover(previous):
        _remove_export(previous)
        removed.append(previous)
    return removed


def _is_whole(path: str) -> bool:
    """Every file the manifest of the export of ours at `path` names is there (none was removed)."""
    manifest = _our_metadata(path).get(MANIFEST_KEY)
    return not isinstance(manifest, list) or all(os.path.lexists(os.path.join(path, name)) for name in manifest)


def _removal_leftover(path: str) -> bool:
    """`path` is what `_remove_export` leaves if killed after the metadata went: no file at all."""
    return os.path.isdir(path) and not os.path.islink(path) and set(_files_under(path)) <= {_METADATA_DIR}


def _remove_export(path: str) -> None:
    """Removes an export of ours, its metadata last (files.remove_tree): a kill leaves an export of
    ours with some of its files, or `_removal_leftover`, each of which the next export removes."""
    if os.path.lexists(os.path.join(path, METADATA_FILE)):
        files.remove_tree(path, last=METADATA_FILE)
        return
    if os.path.isdir(metadata_dir := os.path.join(path, _METADATA_DIR)):
        os.rmdir(metadata_dir)
    os.rmdir(path)


def _our_metadata(export_dir: str) -> dict | None:
    """The metadata of an export of ours at `export_dir`, or None if it is not one."""
    if os.path.islink(export_dir) or not os.path.isdir(export_dir):
        return None
    try:
        metadata = load_metadata(export_dir)
    except (OSError, ValueError):
        return None
    return metadata if metadata.get("format") in FORMATS else None


def _previous_path(export_dir: str) -> str:
    return export_dir + ".previous"


def _move_into_place(staging: str, export_dir: str) -> None:
    """Two renames: the old export steps aside, the new one (still marked) takes its name; then it
    is unmarked and the old one goes. Only an export of ours is ever moved or removed
    (`check_export_dir` has refused anything else; `remove_stale_staging` has emptied `.previous`)."""
    previous = _previous_path(export_dir)
    if os.path.isdir(export_dir) and not os.listdir(export_dir):
        os.rmdir(export_dir)  # an empty directory: nothing to keep
    stepped_aside = os.path.exists(export_dir)
    if stepped_aside:
        os.rename(export_dir, previous)
    os.rename(staging, export_dir)
    files.unmark_staging(export_dir)
    if stepped_aside:
        _remove_export(previous)


def load_metadata(export_dir: str) -> dict:
    """The metadata written by `export`, or {} if there is none (or it is not a JSON object)."""
    path = os.path.join(export_dir, METADATA_FILE)
    if not os.path.exists(path):
        return {}
    metadata = json.loads(files.read_regular_file(path, path, MAX_METADATA_BYTES))
    return metadata if isinstance(metadata, dict) else {}


class LoadError(BadModel):
    """A SavedModel directory that is missing or cannot be loaded; the message says which and why."""


def load_model(export_dir: str) -> LSTMModel:
    """The `LSTMModel` an export of ours holds, as Python to look inside (`gates`, `step`): its config
    from the metadata, its variables from the SavedModel (`model` of the served module). `LoadError`
    says what `export_dir` is instead (missing, a file, a run directory, not an export of ours)."""
    if not os.path.isdir(export_dir):
        what = "a file" if os.path.exists(export_dir) else "not there"
        raise LoadError(f"{export_dir} is {what}; load_model takes the directory of an export")
    if files.is_run_dir(export_dir):
        raise LoadError(f"{export_dir} is a run directory; its export is {os.path.join(export_dir, 'saved_model')}")
    metadata = _our_metadata(export_dir) or {}
    if metadata.get("format") == LITERT_FORMAT:
        raise LoadError(f"{export_dir} holds LiteRT files, not a SavedModel; load_model takes an export")
    config = metadata.get("model_config")
    if not isinstance(config, dict):
        raise LoadError(f"{export_dir} is not a diy_lstm export (no model config in its {METADATA_FILE})")
    try:
        files.check_regular_tree(export_dir, export_dir, MAX_SAVED_MODEL_BYTES)
        model = LSTMModel(ModelConfig(**config))
        saved = tf.saved_model.load(export_dir).model
    except Exception as error:  # a damaged export fails in many ways; report the first line
        raise LoadError(f"{export_dir}: cannot load the export: {first_line(error)}") from None
    for layer, saved_layer in zip(model.layers, saved.layers):
        for name, variable in layer.gate_variables().items():
            variable.assign(getattr(saved_layer, name))
    model.W_out.assign(saved.W_out)
    model.b_out.assign(saved.b_out)
    return model


def load_serving_signature(export_dir: str, signature_name: str, expected_inputs: Sequence[str]):
    """`(loaded, signature, metadata)` of the SavedModel at `export_dir`, whose `signature_name`
    signature takes exactly `expected_inputs`, or `LoadError` saying why not."""
    if not os.path.isdir(export_dir):
        raise LoadError(f"--model_dir={export_dir}: no such directory")
    if not os.path.exists(os.path.join(export_dir, "saved_model.pb")):
        raise LoadError(f"--model_dir={export_dir}: no saved_model.pb there; is this a SavedModel?")
    try:  # before TensorFlow opens anything: a FIFO would hang it, a device would never end
        files.check_regular_tree(export_dir, f"--model_dir={export_dir}", MAX_SAVED_MODEL_BYTES)
    except (files.FileLimitError, OSError) as error:
        raise LoadError(str(error)) from None
    try:
        loaded = tf.saved_model.load(export_dir)
    except Exception as error:  # a damaged SavedModel fails in many ways; report the first line
        raise LoadError(f"--model_dir={export_dir}: cannot load the SavedModel: {first_line(error)}") from None
    if signature_name not in loaded.signatures:
        raise LoadError(
            f"--model_dir={export_dir}: this SavedModel has no {signature_name!r} signature (it has "
            f"{sorted(loaded.signatures) or 'none'}); is it a model of the right kind?"
        )
    signature = loaded.signatures[signature_name]
    inputs = sorted(signature.structured_input_signature[1])
    if inputs != sorted(expected_inputs):
        raise LoadError(
            f"--model_dir={export_dir}: its {signature_name!r} signature takes {inputs}, not "
            f"{sorted(expected_inputs)}; is it a model of the right kind?"
        )
    return loaded, signature, read_metadata(export_dir)


def read_metadata(export_dir: str) -> dict:
    """The metadata `export` wrote, or {} if there is none or it is not a JSON object (it is data
    beside the model: a model loads without it)."""
    try:
        return load_metadata(export_dir)
    except (OSError, ValueError):
        return {}
