"""The counter on a device: what its LiteRT files take, and their check against the SavedModel.

Device code encodes each character as `ENCODING` says (the metadata's `encoding`) and feeds the step
model as characters arrive; `round(output)` is the running sum so far. The check runs
`CHECK_SEQUENCES` fresh sequences of `CHECK_LENGTH` steps (half uniform, half with long runs of one
character) through both files in the LiteRT interpreter and through the SavedModel's
`serving_default`: every step's rounded sum must be the same.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from diy_lstm.errors import BadModel
from diy_lstm.serving.litert import Check, LiteRTModel, run_steps, run_windows
from diy_lstm.serving.strings import characters_of
from tasks.counter import data_generator

IDS = False  # the step takes each character's feature vector, not an id
CHECK_SEQUENCES, CHECK_LENGTH = 16, 10_000
CHECK_SEED = 0


def device_inputs(loaded) -> dict:
    """What device code needs to feed the files: each character's feature vector."""
    if characters_of(loaded.characters) != list(data_generator.ENCODING):
        raise BadModel(
            f"this counter reads the characters {characters_of(loaded.characters)}, not the task's "
            f"{list(data_generator.ENCODING)}; its features are not known"
        )
    return {"encoding": {character: list(vector) for character, vector in data_generator.ENCODING.items()}}


def check(loaded, files: dict[str, LiteRTModel], quantized: bool) -> list[Check]:
    """Each file (`{name: model}`, the step and the sequence model) against the SavedModel `loaded`:
    wrong rounded sums over every step of the check's sequences (none allowed, quantized or not)."""
    rng = np.random.default_rng(CHECK_SEED)
    half = CHECK_SEQUENCES // 2
    sequences = data_generator.sample_sequences(CHECK_LENGTH, half, rng, "uniform")
    sequences += data_generator.sample_sequences(CHECK_LENGTH, CHECK_SEQUENCES - half, rng, "varied")
    served = loaded.signatures["serving_default"](sequences=tf.constant(sequences))["step_predictions"].numpy()
    inputs = np.stack(
        [data_generator.encode_sequence(sequence) for sequence in sequences]
    )  # [sequences, time, features]
    checks = []
    for name, model in files.items():
        run = run_steps if model.state_shape[2] == -1 else run_windows  # the step's batch is free
        predictions = run(model, inputs)[..., 0]
        wrong = int(np.sum(np.round(predictions) != np.round(served)))
        largest = float(np.max(np.abs(predictions - served)))
        detail = (
            f"{CHECK_SEQUENCES} sequences of {CHECK_LENGTH:,} steps: {wrong} steps with another rounded sum "
            f"than the SavedModel's (largest difference {largest:.1e})"
        )
        checks.append(Check(name, "wrong rounded sums", wrong, 0, detail))
    return checks
