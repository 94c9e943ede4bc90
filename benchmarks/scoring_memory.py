"""Memory one call of the counter's `serving_default` holds, per padded character: the measured basis
of the scoring budget in `tasks/counter/serving.py` (docs/reliability.md, "Caps").

    python -m benchmarks.scoring_memory [--units=1,4,24,128,512] [--layers=1,2]

For each size and each of two call sizes (sequences of 10,000 characters, P and 4P padded
characters), in a fresh process: a SavedModel of that size (untrained weights, its budget check off),
one small call so that everything is traced and allocated once, then the peak resident memory is
reset (`/proc/self/clear_refs`), the call is made, and its peak (`VmHWM`) above the resident memory
before it is read. The slope between the two sizes is the bytes per padded character, without what
a call holds whatever its size. Prints one row per size and, last, one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from absl import app, flags

_UNITS = flags.DEFINE_list("units", ["1", "4", "24", "128", "512"], "Units per layer to measure.")
_LAYERS = flags.DEFINE_list("layers", ["1", "2"], "Layer counts to measure.")
_CHARACTERS = flags.DEFINE_integer("characters", 1_000_000, "P: the smaller call's padded characters.")
_LENGTH = flags.DEFINE_integer("sequence_length", 10_000, "Characters of each scored sequence.")
_ONE = flags.DEFINE_string("one", None, "Internal: measure one 'units,layers' in this process.")
_GENERATE = flags.DEFINE_string(
    "generate",
    None,
    "'texts,num_chars': instead, one call of a text model's generate "
    "(76 characters, 256 units) with that many empty prompts.",
)
_TEXT_SCORE = flags.DEFINE_string(
    "text_score",
    None,
    "'texts,length,units': instead, one call of a text model's score (76 characters) on that many random texts.",
)

SEQUENCE_LENGTH = 10_000


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def _peak_above_resident(call) -> int:
    """Bytes `call()` held at its peak beyond what was resident before it."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM to the current resident size
    before = _status_kb("VmRSS")
    call()
    return (_status_kb("VmHWM") - before) * 1024


def measure_one(units: int, layers: int, characters: int) -> int:
    """Bytes one call of `characters` padded characters holds at its peak beyond what was resident
    before it, for a model of `units` × `layers` (this process: one call size only, so that no
    memory a larger call freed is reused)."""
    import numpy as np
    import tensorflow as tf

    from diy_lstm.model import LSTMModel, ModelConfig
    from tasks.counter import data_generator
    from tasks.counter.serving import SequenceScorer

    model = LSTMModel(ModelConfig(input_size=3, units=units, num_layers=layers, seed=0))
    scorer = SequenceScorer(model, data_generator.ENCODING, max_padded_characters=2**62)  # no budget
    with tempfile.TemporaryDirectory() as directory:
        tf.saved_model.save(scorer, directory, signatures=scorer.signatures())
        signature = tf.saved_model.load(directory).signatures["serving_default"]
    rng = np.random.default_rng(0)
    alphabet = np.array(list(data_generator.ALPHABET))
    length = _LENGTH.value
    texts = ["".join(rng.choice(alphabet, length)) for _ in range(characters // length)]
    signature(sequences=tf.constant(texts[:1]))  # traced and allocated once
    return _peak_above_resident(lambda: signature(sequences=tf.constant(texts)))


def _text_signatures(units: int):
    """The signatures of a saved text model of `units` over 76 characters (untrained weights)."""
    import tensorflow as tf

    from diy_lstm.model import LSTMModel, ModelConfig
    from tasks.text.serving import TextGenerator

    characters = [chr(c) for c in range(32, 108)]
    generator = TextGenerator(LSTMModel(ModelConfig(input_size=76, units=units, output_size=76, seed=0)), characters)
    with tempfile.TemporaryDirectory() as directory:
        tf.saved_model.save(generator, directory, signatures=generator.signatures())
        return tf.saved_model.load(directory).signatures, characters


def measure_text_score(texts: int, length: int, units: int) -> int:
    """Bytes one `score` call of `texts` random texts of `length` holds at its peak beyond what was resident."""
    import numpy as np
    import tensorflow as tf

    signatures, characters = _text_signatures(units)
    rng = np.random.default_rng(0)
    batch = tf.constant(["".join(rng.choice(characters, length)) for _ in range(texts)])
    signatures["score"](text=batch[:1])  # traced and allocated once
    return _peak_above_resident(lambda: signatures["score"](text=batch))


def measure_generate(texts: int, num_chars: int) -> int:
    """Bytes one `generate` call of `texts` × `num_chars` holds at its peak beyond what was resident."""
    import tensorflow as tf

    signatures, _ = _text_signatures(256)
    generate = signatures["generate"]
    sampling = {"temperature": tf.constant(1.0), "seed": tf.constant(0, tf.int64)}
    generate(prompt=tf.constant([""] * texts), num_chars=tf.constant(64), **sampling)  # compiled once
    return _peak_above_resident(
        lambda: generate(prompt=tf.constant([""] * texts), num_chars=tf.constant(num_chars), **sampling)
    )


def _measured(units: int, layers: int, characters: int) -> int:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.scoring_memory", f"--one={units},{layers}", f"--characters={characters}"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return int(result.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    if _TEXT_SCORE.value:
        texts, length, units = (int(v) for v in _TEXT_SCORE.value.split(","))
        peak = measure_text_score(texts, length, units)
        print(
            f"text score: {texts} texts x {length:,} characters, {units} units: {peak / 1e6:.1f} MB, "
            f"{peak / (texts * length):.1f} bytes a character"
        )
        return
    if _GENERATE.value:
        texts, num_chars = (int(v) for v in _GENERATE.value.split(","))
        peak = measure_generate(texts, num_chars)
        print(
            f"generate: {texts} texts x {num_chars:,} characters: {peak / 1e6:.1f} MB, "
            f"{peak / (texts * num_chars):.1f} bytes a character"
        )
        return
    if _ONE.value:
        units, layers = (int(v) for v in _ONE.value.split(","))
        print(measure_one(units, layers, _CHARACTERS.value))
        return
    rows = []
    print(f"{'units':>6} {'layers':>6} {'P':>10} {'peak at P (MB)':>15} {'at 4P (MB)':>11} {'bytes/char':>11}")
    for layers in map(int, _LAYERS.value):
        for units in map(int, _UNITS.value):
            characters = min(_CHARACTERS.value, 20_000_000 // (units * layers))  # 4P: about 3 GB at most
            characters = max(SEQUENCE_LENGTH, characters - characters % SEQUENCE_LENGTH)
            small, large = _measured(units, layers, characters), _measured(units, layers, 4 * characters)
            row = {
                "units": units,
                "layers": layers,
                "padded_characters": characters,
                "peak_bytes": small,
                "peak_bytes_4x": large,
                "bytes_per_padded_character": round((large - small) / (3 * characters), 1),
            }
            rows.append(row)
            print(
                f"{units:>6} {layers:>6} {characters:>10,} {small / 1e6:>15.1f} {large / 1e6:>11.1f} "
                f"{row['bytes_per_padded_character']:>11.1f}",
                flush=True,
            )
    print(json.dumps(rows))


if __name__ == "__main__":
    app.run(main)
