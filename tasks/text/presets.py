"""Each built-in corpus brings its own recipe, a flag file `experiments/<corpus>.flags`: the flag values
`train_text.py --corpus=NAME` trains with unless a flag is given explicitly (a flag on the command line
or in a flag file always wins). `python train_text.py --flagfile=experiments/<corpus>.flags` is the same run.

    fox_and_crow       memorizes Aesop's sentence: greedy `generate` from "One bright morning" writes
                       the rest exactly (one stream, one window of the whole sentence)
    hamlet_soliloquy   memorizes the soliloquy: greedy `generate` from "to be, or" writes it all
    shakespeare        the coffee-break recipe (docs/text.md); its values are every text run's defaults

A `--text_file` has no recipe; `fit_to_text` then picks windows and streams that fit the file.
"""

from __future__ import annotations

import pathlib

from absl import flags

from diy_lstm.cli import flagfiles
from diy_lstm.errors import ConfigError, first_line

RECIPES = pathlib.Path(__file__).resolve().parents[2] / "experiments"


def recipe(corpus: str) -> dict[str, str]:
    """`{flag name: value}` of the corpus's recipe file, read as `--flagfile` reads it; a recipe that
    cannot be read is a `ConfigError` naming it."""
    path = RECIPES / f"{corpus}.flags"
    if not path.is_file():
        raise ConfigError(
            f"the recipe of --corpus={corpus}, {path}, is not there: run from a clone of the repository "
            "(pip install -e .), or give every setting with --flagfile"
        )
    try:
        flagfiles.check([f"--flagfile={path}"])
        lines = flags.FLAGS.read_flags_from_files([f"--flagfile={path}"], force_gnu=True)
    except (OSError, ValueError, flags.Error) as error:
        raise ConfigError(f"the recipe of --corpus={corpus}, {path}, cannot be read: {first_line(error)}") from None
    values = {}
    for line in lines:
        name, _, value = line[2:].partition("=")
        values[name] = value
    return values


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
