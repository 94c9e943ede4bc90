"""Each built-in corpus brings its own recipe: the flag values `train_text.py --corpus=NAME` trains with
unless a flag is given explicitly (a flag on the command line or in a flag file always wins).

    fox_and_crow       memorizes Aesop's sentence: greedy `generate` from "One bright morning" writes
                       the rest exactly (one stream, one window of the whole sentence)
    hamlet_soliloquy   memorizes the soliloquy: greedy `generate` from "to be, or" writes it all
    shakespeare        the coffee-break recipe (about 7 minutes on 2 cores; docs/text.md)

A `--text_file` has no recipe; `fit_to_text` then picks windows and streams that fit the file.
The 30-minute Shakespeare recipe is a flag file: `experiments/shakespeare_30min.flags`.
"""

from __future__ import annotations

PRESETS: dict[str, dict[str, object]] = {
    "fox_and_crow": {
        "lstm_size": ["128"],
        "epochs": 300,
        "batch_size": 1,
        "unroll_length": 148,
        "learning_rate": 0.01,
        "validation_fraction": 0.0,
        "eval_every": 50,
        "checkpoint_every": 300,
        "sample_every": 300,
        "image_every": 300,
        "histogram_every": 300,
    },
    "hamlet_soliloquy": {
        "lstm_size": ["256"],
        "epochs": 150,
        "batch_size": 1,
        "unroll_length": 100,
        "learning_rate": 0.005,
        "validation_fraction": 0.0,
        "eval_every": 25,
        "checkpoint_every": 150,
        "sample_every": 150,
        "image_every": 150,
        "histogram_every": 150,
    },
    "shakespeare": {
        "lstm_size": ["256"],
        "epochs": 20,
        "batch_size": 64,
        "unroll_length": 100,
        "learning_rate": 0.02,
        "eval_every": 1,
        "checkpoint_every": 1,
        "sample_every": 1,
        "image_every": 5,
        "histogram_every": 5,
    },
}
# What every text run trains with unless its recipe or a flag says otherwise.
TEXT_DEFAULTS: dict[str, object] = {
    "learning_rate_decay": 0.1,
    "clip_norm": 5.0,
    "initializer": "glorot_uniform",
    "readout": "hidden",
    "preactivation_noise": 0.0,
}
MIN_FITTED_WINDOW = 16


def fit_to_text(
    characters: int, streams: int, window: int, streams_given: bool, window_given: bool
) -> tuple[int, int, str | None]:
    """`(streams, window)` for a training text of `characters`: as asked when every stream holds a
    whole window; else fewer streams (down to one) and then a shorter window (down to
    `MIN_FITTED_WINDOW`, or the text), changing only what was not given explicitly. The third value
    says what was chosen, or is None if nothing changed."""
    asked = (streams, window)
    fits = lambda s, w: characters // s - 1 >= w  # noqa: E731
    while not fits(streams, window) and streams > 1 and not streams_given:
        streams = max(1, streams // 2)
    if not fits(streams, window) and not window_given:
        window = max(1, min(window, characters // streams - 1))
    if (streams, window) == asked:
        return streams, window, None
    return (
        streams,
        window,
        (
            f"{characters:,} training characters do not fill {asked[0]} streams of a "
            f"{asked[1]}-character window: chose {streams} stream(s) and windows of {window}"
        ),
    )
