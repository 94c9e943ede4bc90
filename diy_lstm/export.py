"""Export a trained model as a SavedModel that scores raw strings with no Python of ours.

The character table (character -> feature vector) is passed in by the caller and lives in the
graph as a `tf.lookup.StaticHashTable`, so `tf.saved_model.load(path)` alone can score strings:

    scorer = tf.saved_model.load(path)
    scorer.signatures["serving_default"](sequences=tf.constant(["+-I0", "++"]))

Signatures (both return the same dict of dense tensors):
  serving_default(sequences: string [batch])            raw strings, any lengths in one batch
  score_encoded(inputs: float32 [batch, time, features]) already-encoded sequences, all full length

  step_predictions          float32 [batch, max_time]  prediction after every step, 0 past the end
  lengths                   int32   [batch]
  final_prediction          float32 [batch]            prediction after each sequence's last step
  final_prediction_rounded  int64   [batch]

Bad strings fail with an `InvalidArgumentError` whose message starts with `ERROR_PREFIX` and names
the sequence, the character (with its code point, as TensorFlow prints non-ASCII bytes escaped) and
its position from 1, e.g. `unknown character x (U+0078) at position 2 of sequences[0]`. Writing is
atomic: the SavedModel is built in a temporary directory beside the target and then moved into place,
so a failed export leaves the previous one loadable. It replaces only an earlier export of ours
(recognised by the `format` of its metadata) or an empty directory: anything else is refused.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Mapping, Sequence

import tensorflow as tf

from diy_lstm import ownership
from diy_lstm.model import LSTMModel
from diy_lstm.rnn import final_step

METADATA_FILE = os.path.join("assets.extra", "diy_lstm.json")
METADATA_FORMAT = "diy_lstm SavedModel"  # marks an export of ours: the only kind `export` replaces
ERROR_PREFIX = "bad sequence: "
_HEX_DIGITS = "0123456789ABCDEF"


def code_point_label(character: tf.Tensor) -> tf.Tensor:
    """`U+XXXX` for a scalar string holding one character."""
    code_point = tf.strings.unicode_decode(character, "UTF-8", errors="replace")[0]  # int32
    digits = [
        tf.strings.substr(_HEX_DIGITS, (code_point // 16**power) % 16, 1) for power in (3, 2, 1, 0)
    ]
    return tf.strings.join(["U+"] + digits)


class SequenceScorer(tf.Module):
    """A model plus the character table that turns strings into its inputs.

    Args:
      model: a trained `LSTMModel` with `output_size` 1.
      encoding: character -> feature vector (length `model.config.input_size`).
    """

    def __init__(self, model: LSTMModel, encoding: Mapping[str, Sequence[float]], name: str | None = None):
        super().__init__(name=name)
        features = model.config.input_size
        for character, vector in encoding.items():
            if len(character) != 1 or len(vector) != features:
                raise ValueError(
                    f"encoding entry {character!r}: {list(vector)} must map one character to {features} numbers"
                )
        self.model = model
        characters = list(encoding)
        self.alphabet = tf.constant(characters)
        # Row len(characters) is the padding row: zeros.
        self.codes = tf.constant([list(encoding[c]) for c in characters] + [[0.0] * features], dtype=tf.float32)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(self.alphabet, tf.range(len(characters), dtype=tf.int64)),
            default_value=-1,
        )

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="sequences")], autograph=False)
    def score_strings(self, sequences: tf.Tensor) -> dict[str, tf.Tensor]:
        """Scores raw strings, `[batch]`, of any lengths."""
        characters = tf.strings.unicode_split(sequences, "UTF-8", errors="replace")  # [batch, (time)]
        ids = self.table.lookup(characters)
        lengths = tf.cast(characters.row_lengths(), tf.int32)
        padding_id = tf.shape(self.codes, out_type=tf.int64)[0] - 1
        with tf.control_dependencies(self._check(characters, ids, lengths)):
            dense_ids = ids.to_tensor(default_value=padding_id)  # [batch, max_time]
        # An empty batch still gets one (padding) step, so the time loop has something to run.
        at_least_one_step = [[0, 0], [0, tf.maximum(0, 1 - tf.shape(dense_ids)[1])]]
        dense_ids = tf.pad(dense_ids, at_least_one_step, constant_values=padding_id)
        inputs = tf.gather(self.codes, dense_ids)  # [batch, max_time, features]
        return self._score(inputs, lengths)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32, name="inputs")], autograph=False)
    def score_encoded(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        """Scores encoded sequences `[batch, time, features]`, every one `time` steps long."""
        features = self.model.config.input_size
        shape = tf.shape(inputs)
        padded_shape = tf.concat([shape, [0, 0, 0]], axis=0)  # indexable whatever the rank
        well_formed = (tf.size(shape) == 3) & (padded_shape[1] > 0) & (padded_shape[2] == features)
        checks = [tf.debugging.Assert(
            well_formed, [f"{ERROR_PREFIX}inputs must be [batch, time >= 1, {features}], got shape", shape])]
        with tf.control_dependencies(checks):
            inputs = tf.ensure_shape(inputs, [None, None, features])
        lengths = tf.fill(tf.shape(inputs)[:1], tf.shape(inputs)[1])
        return self._score(inputs, lengths)

    def _check(self, characters: tf.RaggedTensor, ids: tf.RaggedTensor, lengths: tf.Tensor) -> list:
        """Assertions that fail with a message naming the first empty sequence or unknown character."""
        empty = tf.where(tf.equal(lengths, 0))[:, 0]
        unknown = tf.where(ids.flat_values < 0)[:, 0]  # indices into the flat characters

        def empty_message():
            return tf.strings.join([ERROR_PREFIX, "sequences[", tf.strings.as_string(empty[0]), "] is empty"])

        def unknown_message():
            first = unknown[0]
            row = ids.value_rowids()[first]
            character = characters.flat_values[first]
            return tf.strings.join(
                [
                    ERROR_PREFIX, "unknown character ", character, " (", code_point_label(character),
                    ") at position ", tf.strings.as_string(first - ids.row_splits[row] + 1),
                    " of sequences[", tf.strings.as_string(row), "]; allowed: ",
                    tf.strings.reduce_join(self.alphabet, separator=" "),
                ]
            )

        no_message = lambda: tf.constant("")  # noqa: E731
        return [
            tf.debugging.Assert(tf.size(empty) == 0, [tf.cond(tf.size(empty) > 0, empty_message, no_message)]),
            tf.debugging.Assert(tf.size(unknown) == 0, [tf.cond(tf.size(unknown) > 0, unknown_message, no_message)]),
        ]

    def _score(self, inputs: tf.Tensor, lengths: tf.Tensor) -> dict[str, tf.Tensor]:
        predictions = tf.cast(self.model(inputs)[..., 0], tf.float32)  # [batch, time]
        predictions *= tf.sequence_mask(lengths, tf.shape(predictions)[1], dtype=tf.float32)
        final = final_step(predictions, lengths)
        return {
            "step_predictions": predictions,
            "lengths": lengths,
            "final_prediction": final,
            "final_prediction_rounded": tf.cast(tf.round(final), tf.int64),
        }


    def signatures(self) -> dict:
        """The SavedModel's signatures: `serving_default` (raw strings) and `score_encoded`."""
        return {"serving_default": self.score_strings.get_concrete_function(),
                "score_encoded": self.score_encoded.get_concrete_function()}


class ExportDirError(ValueError):
    """An export directory that holds something other than an export of ours; nothing was touched."""


STAGING_SUFFIX = ".tmp-"  # staging of `<export_dir>` is `<export_dir>.tmp-<random>`, marked (ownership.py)


def check_export_dir(export_dir: str, run_dir: str | None = None, task: str | None = None) -> None:
    """Raises `ExportDirError` unless `export` may write to `export_dir`: a new or empty directory, or
    an earlier export of ours of the same `task` (recognised by its metadata), in a place it can
    write; never the run directory, one that holds it, or a place inside it but `<run>/saved_model`."""
    export_dir = os.path.abspath(export_dir)
    if run_dir is not None:
        run_dir = os.path.abspath(run_dir)
        if os.path.commonpath([export_dir, run_dir]) == export_dir:
            raise ExportDirError(f"--export_dir={export_dir} is or holds the run directory {run_dir}; "
                                 "choose a directory of its own")
        if os.path.commonpath([export_dir, run_dir]) == run_dir and export_dir != os.path.join(run_dir, "saved_model"):
            raise ExportDirError(f"--export_dir={export_dir} is inside the run directory {run_dir}; choose "
                                 f"{os.path.join(run_dir, 'saved_model')} (the default) or a place outside it")
    _check_writable_parent(export_dir)
    if os.path.islink(export_dir) or (os.path.exists(export_dir) and not os.path.isdir(export_dir)):
        raise ExportDirError(f"--export_dir={export_dir} is a file or a link; choose a new or empty directory")
    previous = _previous_path(export_dir)  # where an export of ours steps aside while the new one moves in
    if os.path.isdir(export_dir) and os.listdir(export_dir):
        _check_replaceable(export_dir, task)
        if os.path.lexists(previous):  # removed before the swap
            _check_replaceable(previous, task)
    elif not os.path.exists(export_dir) and _our_metadata(previous) is not None:
        _check_replaceable(previous, task)  # an interrupted swap: it is moved back, then replaced


def _check_replaceable(path: str, task: str | None) -> None:
    """Raises `ExportDirError` unless `path` holds an export of ours of `task` (any task if None)."""
    metadata = _our_metadata(path)
    if metadata is None:
        raise ExportDirError(f"--export_dir={path} holds files that are not a diy_lstm SavedModel; "
                             "refusing to replace them: choose a new or empty directory")
    config = metadata.get("config")
    made_by = config.get("task") if isinstance(config, dict) else None
    if task is not None and made_by is not None and made_by != task:
        raise ExportDirError(f"--export_dir={path} holds a {made_by} model; a {task} run does not replace it: "
                             "choose another directory")


def _check_writable_parent(export_dir: str) -> None:
    """The nearest existing ancestor of `export_dir`'s parent must be a directory this process can write."""
    ancestor = os.path.dirname(export_dir)
    while not os.path.lexists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise ExportDirError(f"--export_dir={export_dir}: {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ExportDirError(f"--export_dir={export_dir}: {ancestor} is not writable")


def export(module: tf.Module, export_dir: str, signatures: Mapping, metadata: Mapping | None = None,
           task: str | None = None) -> str:
    """Writes `module` with `signatures` as a SavedModel at `export_dir`, replacing an earlier export
    of ours only once the new one is complete (see `check_export_dir` for what it will not replace).
    `metadata` (JSON-serialisable) goes to `assets.extra/diy_lstm.json`. Returns `export_dir`."""
    export_dir = os.path.abspath(export_dir)
    check_export_dir(export_dir, task=task)
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    _recover_interrupted_swap(export_dir)
    staging = ownership.make_staging(parent, os.path.basename(export_dir) + STAGING_SUFFIX)
    try:
        tf.saved_model.save(module, staging, signatures=dict(signatures))
        os.makedirs(os.path.join(staging, os.path.dirname(METADATA_FILE)), exist_ok=True)
        with open(os.path.join(staging, METADATA_FILE), "w") as f:
            json.dump({"format": METADATA_FORMAT, **dict(metadata or {})}, f, indent=2, sort_keys=True)
        os.chmod(staging, 0o755)  # mkdtemp makes it 0700; a SavedModel is for others to read too
        ownership.unmark_staging(staging)
        _move_into_place(staging, export_dir)
    except BaseException:
        if os.path.isdir(staging):
            _remove_own_staging(staging)
        raise
    return export_dir


def remove_stale_staging(export_dir: str) -> list[str]:
    """What a killed export left beside `export_dir`: its marked staging directories (ownership.py)."""
    export_dir = os.path.abspath(export_dir)
    return ownership.remove_stale_staging(os.path.dirname(export_dir), os.path.basename(export_dir) + STAGING_SUFFIX)


def _remove_own_staging(staging: str) -> None:
    """The staging this call made (marked or, after `unmark_staging`, holding our metadata)."""
    if ownership.staging_owner(staging) is not None or _our_metadata(staging) is not None:
        shutil.rmtree(staging, ignore_errors=True)


def _our_metadata(export_dir: str) -> dict | None:
    """The metadata of an export of ours at `export_dir`, or None if it is not one."""
    if os.path.islink(export_dir) or not os.path.isdir(export_dir):
        return None
    try:
        metadata = load_metadata(export_dir)
    except (OSError, ValueError):
        return None
    return metadata if metadata.get("format") == METADATA_FORMAT else None


def _previous_path(export_dir: str) -> str:
    return export_dir + ".previous"


def _move_into_place(staging: str, export_dir: str) -> None:
    """Two renames: the old export steps aside, the new one takes its name; then the old one goes.
    Only an export of ours is ever moved or removed (`check_export_dir` has refused anything else)."""
    previous = _previous_path(export_dir)
    if os.path.isdir(export_dir) and not os.listdir(export_dir):
        os.rmdir(export_dir)  # an empty directory: nothing to keep
    if os.path.exists(export_dir):
        if _our_metadata(previous) is not None:
            shutil.rmtree(previous)
        os.rename(export_dir, previous)
    os.rename(staging, export_dir)
    if _our_metadata(previous) is not None:
        shutil.rmtree(previous)


def _recover_interrupted_swap(export_dir: str) -> None:
    """If a process died between the two renames, put the previous export (ours) back."""
    previous = _previous_path(export_dir)
    if _our_metadata(previous) is not None and not os.path.exists(export_dir):
        os.rename(previous, export_dir)


def load_metadata(export_dir: str) -> dict:
    """The metadata written by `export`, or {} if there is none (or it is not a JSON object)."""
    path = os.path.join(export_dir, METADATA_FILE)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        metadata = json.load(f)
    return metadata if isinstance(metadata, dict) else {}


# The inputs each signature of ours takes, by name (other SavedModels are refused, not guessed at).
SIGNATURE_INPUTS = {"serving_default": ["sequences"], "generate": ["num_chars", "prompt", "seed", "temperature"],
                    "score": ["text"]}


class LoadError(Exception):
    """A SavedModel directory that is missing or cannot be loaded; the message says which and why."""


def load_saved_model(export_dir: str, signature_name: str):
    """The signature `signature_name` of the SavedModel at `export_dir`, or `LoadError` saying why not."""
    _, signature, _ = load_serving_signature(export_dir, signature_name)
    return signature


def load_serving_signature(export_dir: str, signature_name: str = "serving_default"):
    """`(loaded, signature, metadata)` of the SavedModel at `export_dir`, or `LoadError`."""
    if not os.path.isdir(export_dir):
        raise LoadError(f"--model_dir={export_dir}: no such directory")
    if not os.path.exists(os.path.join(export_dir, "saved_model.pb")):
        raise LoadError(f"--model_dir={export_dir}: no saved_model.pb there; is this a SavedModel?")
    try:
        loaded = tf.saved_model.load(export_dir)
        metadata = load_metadata(export_dir)
    except Exception as error:  # a damaged SavedModel fails in many ways; report the first line
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LoadError(f"--model_dir={export_dir}: cannot load the SavedModel: {first_line}") from None
    if signature_name not in loaded.signatures:
        raise LoadError(f"--model_dir={export_dir}: this SavedModel has no {signature_name!r} signature (it has "
                        f"{sorted(loaded.signatures) or 'none'}); is it a model of the right kind?")
    signature = loaded.signatures[signature_name]
    inputs = sorted(signature.structured_input_signature[1])
    expected = sorted(SIGNATURE_INPUTS.get(signature_name, inputs))
    if inputs != expected:
        raise LoadError(f"--model_dir={export_dir}: its {signature_name!r} signature takes {inputs}, not {expected}; "
                        "is it a model of the right kind?")
    return loaded, signature, metadata
