"""The long check: is a counter right at every step of sequences a million steps long, whose sums
reach ±1,000,000?

Training checks lengths of a few thousand at most; a counter that is slightly wrong goes wrong only
where the sum is large, after long runs, or after many `I`s. How it goes wrong decides the cases:

    a readout that reads the count with a gain of 1 ± 1e-5       wrong from |sum| ≈ 50,000 (`+`, `-`, `I+`, `I-` runs)
    a cell unit that creeps on `0`s and has a little readout weight    wrong after long runs of `0` (`0`, `I0`)
    a count carried by increments that float32 cannot add exactly      wrong as the sum grows (every run, every drift)
    a count read through a gate that depends on how large it is        wrong on drifts that turn at large sums
    an inversion that is lost or doubled at large sums             wrong on uniform steps far from 0 (`far`)

`CASES` are those shapes, one sequence each, all `length` steps long; `cases(length, seed)` draws the
random ones from `seed`. `run_check(model, cases)` runs them in a `tf.while_loop` compiled by XLA, one
loop per CPU core (the 16 cases of a million steps: about 4 s on 2 cores with the 24-unit counter,
8 bytes held a step) and returns, per case, its wrong steps (a prediction `MARGIN` or more from the
running sum), the first of them, the largest miss and the largest |sum| reached.

A step passes only if its prediction is within `MARGIN` (a quarter) of the sum, not merely rounds to
it: XLA and the SavedModel's own loop may differ in the last bits of a prediction, and the margin
keeps a step that passes here right there.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
from typing import Callable, NamedTuple

import numpy as np
import tensorflow as tf

from diy_lstm.model import LSTMModel
from tasks.counter import data_generator

MARGIN = 0.25
# Bands of |sum| a step's error is counted in: <= 10^2, <= 10^3, ..., <= 10^6, above.
BAND_LIMITS = (100, 1_000, 10_000, 100_000, 1_000_000)
BANDS = ("<=10^2", "<=10^3", "<=10^4", "<=10^5", "<=10^6", ">10^6")
PLUS, MINUS, INVERT, ZERO = (data_generator.ALPHABET.index(c) for c in "+-I0")


def _run(length: int, first: int, then: int) -> np.ndarray:
    """`first` once, then `then` to `length` steps."""
    ids = np.full(length, then, np.int8)
    ids[0] = first
    return ids


def _repeat(pattern: str, length: int) -> np.ndarray:
    ids = np.array([data_generator.ALPHABET.index(c) for c in pattern], np.int8)
    return np.resize(ids, length)


def _drift(length: int, rng: np.random.Generator, segment: int = 100_000) -> np.ndarray:
    """Segments of `segment` steps, each drawn with its own frequencies that favour one direction
    (70-90% one of `+`/`-`, the rest the other one and `0`), an `I` between segments: the sum climbs
    for 10^5 steps, turns, climbs again, as far as a million steps take it."""
    pieces = []
    for start in range(0, length, segment):
        size = min(segment, length - start)
        favoured = rng.choice([PLUS, MINUS])
        share = rng.uniform(0.7, 0.9)
        frequencies = np.zeros(4)
        frequencies[[ZERO, PLUS + MINUS - favoured]] = (1 - share) / 2
        frequencies[favoured] = share
        piece = rng.choice(4, size=size, p=frequencies).astype(np.int8)
        piece[0] = INVERT
        pieces.append(piece)
    return np.concatenate(pieces)


def _far(length: int, rng: np.random.Generator, sign: int) -> np.ndarray:
    """A run of `+` to ±length/2, then uniform steps (a quarter of them `I`) out there."""
    half = length // 2
    head = _run(half, INVERT if sign < 0 else ZERO, PLUS)
    return np.concatenate([head, rng.integers(0, 4, size=length - half).astype(np.int8)])


def _varied(length: int, rng: np.random.Generator) -> np.ndarray:
    """Frequencies drawn anew every 10,000 steps (Dirichlet(1, 1, 1, 1)): runs, drifts, bursts of `I`."""
    pieces = []
    for start in range(0, length, 10_000):
        frequencies = rng.dirichlet(np.ones(4))
        pieces.append(rng.choice(4, size=min(10_000, length - start), p=frequencies).astype(np.int8))
    return np.concatenate(pieces)


CASES: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "+ repeated": lambda n, rng: _run(n, PLUS, PLUS),
    "- repeated": lambda n, rng: _run(n, MINUS, MINUS),
    "I then + repeated": lambda n, rng: _run(n, INVERT, PLUS),
    "I then - repeated": lambda n, rng: _run(n, INVERT, MINUS),
    "0 repeated": lambda n, rng: _run(n, ZERO, ZERO),
    "I then 0 repeated": lambda n, rng: _run(n, INVERT, ZERO),
    "++- repeated": lambda n, rng: _repeat("++-", n),
    "-0-+ repeated": lambda n, rng: _repeat("-0-+", n),
    "drift 1": lambda n, rng: _drift(n, rng),
    "drift 2": lambda n, rng: _drift(n, rng),
    "far above, then uniform": lambda n, rng: _far(n, rng, +1),
    "far below, then uniform": lambda n, rng: _far(n, rng, -1),
    "varied 1": lambda n, rng: _varied(n, rng),
    "varied 2": lambda n, rng: _varied(n, rng),
    "uniform 1": lambda n, rng: rng.integers(0, 4, size=n).astype(np.int8),
    "uniform 2": lambda n, rng: rng.integers(0, 4, size=n).astype(np.int8),
}


def cases(length: int, seed: int = 0, stream: int = 4_000_037) -> np.ndarray:
    """Every case of `CASES` in its order, `[cases, length]` int8 ids (rows of `data_generator.ALPHABET`);
    `stream` keeps the check's draws and the readout fit's apart."""
    rng = np.random.default_rng([seed, length, stream])
    return np.stack([make(length, rng) for make in CASES.values()])


class CaseResult(NamedTuple):
    """wrong_steps: steps whose prediction misses the running sum by the margin or more;
    first_wrong_step: the first of them (1-based; 0: none); largest_miss: the largest
    |prediction - sum|; largest_sum: the largest |sum| the sequence reached; steps_by_band,
    wrong_by_band: its steps and wrong steps in each of `BANDS` of |sum|."""

    wrong_steps: int
    first_wrong_step: int
    largest_miss: float
    largest_sum: int
    steps_by_band: tuple[int, ...]
    wrong_by_band: tuple[int, ...]


def run_check(model: LSTMModel, ids: np.ndarray, margin: float = MARGIN) -> list[CaseResult]:
    """Runs id sequences `[batch, time]` (rows of `data_generator.ALPHABET`, one length) through
    `model` from the zero state; one `CaseResult` per sequence, a step wrong if its prediction is
    `margin` or more from the sum (0.5: wrong as rounded). The sequences are split among the CPU
    cores, one loop on each (a step costs about as much for 8 sequences as for 16)."""
    check = _compiled(model)
    parts = np.array_split(np.asarray(ids), max(1, min(len(ids), len(os.sched_getaffinity(0)))))
    with concurrent.futures.ThreadPoolExecutor(len(parts)) as pool:
        per_part = pool.map(lambda part: _run_part(check, part, model.dtype, margin), parts)
        return [result for part in per_part for result in part]


def _run_part(check, ids: np.ndarray, dtype: tf.DType, margin: float) -> list[CaseResult]:
    ids = np.ascontiguousarray(ids.T)  # [time, batch]
    sums = data_generator.running_sums_of_ids(ids.T).T  # [time, batch]
    wrong, first, miss, steps_by_band, wrong_by_band = (
        value.numpy()
        for value in check(tf.constant(ids, tf.int32), tf.constant(sums, dtype), tf.constant(margin, dtype))
    )
    largest = np.abs(sums).max(axis=0, initial=0)
    return [
        CaseResult(
            int(wrong[i]),
            int(first[i]),
            float(miss[i]),
            int(largest[i]),
            tuple(map(int, steps_by_band[i])),
            tuple(map(int, wrong_by_band[i])),
        )
        for i in range(ids.shape[1])
    ]


def _codes(model: LSTMModel) -> tf.Tensor:
    """`[4, features]`: the encoding of each character of `data_generator.ALPHABET`, in its order."""
    return tf.constant([data_generator.ENCODING[c] for c in data_generator.ALPHABET], model.dtype)


def _step_on_ids(model: LSTMModel, codes: tf.Tensor, weights, ids_t: tf.Tensor, states: tuple) -> tuple:
    """One step of every layer on character ids `[batch]` (rows of `codes`): each layer's `Gates`,
    and the states to carry, as `(h, c)` per layer (the loops' carry)."""
    per_layer = model.step(tf.gather(codes, ids_t), states, weights)
    return per_layer, tuple(tuple(gates.state) for gates in per_layer)


@functools.lru_cache(maxsize=4)  # traced and compiled once per model, not at every evaluation
def _compiled(model: LSTMModel):
    codes = _codes(model)
    limits = tf.constant(BAND_LIMITS, model.dtype)

    @tf.function(jit_compile=True, autograph=False)
    def check(ids: tf.Tensor, sums: tf.Tensor, margin: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """ids, sums `[time, batch]` -> wrong steps, first wrong step, largest miss `[batch]`;
        steps and wrong steps by band `[batch, bands]`."""
        steps, batch = tf.shape(ids)[0], tf.shape(ids)[1]
        weights = model.fused_weights()

        def body(t, states, wrong_steps, first_wrong, largest_miss, steps_by_band, wrong_by_band):
            per_layer, states = _step_on_ids(model, codes, weights, ids[t], states)
            miss = tf.abs(model.readout(per_layer[-1].state)[:, 0] - sums[t])
            wrong = miss >= margin
            first_wrong = tf.where(wrong & tf.equal(first_wrong, 0), t + 1, first_wrong)
            band = tf.one_hot(
                tf.reduce_sum(tf.cast(tf.abs(sums[t])[:, None] > limits, tf.int32), axis=1), len(BANDS), dtype=tf.int32
            )  # [batch, bands]
            wrong_steps += tf.cast(wrong, tf.int32)
            wrong_by_band += band * tf.cast(wrong, tf.int32)[:, None]
            return (
                t + 1,
                states,
                wrong_steps,
                first_wrong,
                tf.maximum(largest_miss, miss),
                steps_by_band + band,
                wrong_by_band,
            )

        zeros, by_band = tf.zeros([batch], tf.int32), tf.zeros([batch, len(BANDS)], tf.int32)
        states = tuple(map(tuple, model.initial_state(batch)))
        initial = (0, states, zeros, zeros, tf.zeros([batch], model.dtype), by_band, by_band)
        return tf.while_loop(lambda t, *_: t < steps, body, initial)[2:]

    return check


def sampled_sources(model: LSTMModel, ids: np.ndarray, stride: int) -> np.ndarray:
    """What the readout reads (`c`, or `h`), every `stride`-th step of ids `[time, batch]`:
    `[time // stride, batch, units]`."""
    return _sampler(model)(tf.constant(ids, tf.int32), tf.constant(stride)).numpy()


@functools.lru_cache(maxsize=4)
def _sampler(model: LSTMModel):
    codes = _codes(model)

    @tf.function(jit_compile=True, autograph=False)
    def sample(ids, stride):
        batch = tf.shape(ids)[1]
        weights = model.fused_weights()
        kept = tf.shape(ids)[0] // stride

        def inner(t, states):
            return t + 1, _step_on_ids(model, codes, weights, ids[t], states)[1]

        def outer(k, states, out):
            _, states = tf.while_loop(lambda t, *_: t < (k + 1) * stride, inner, (k * stride, states))
            last = states[-1]
            return k + 1, states, out.write(k, last[1] if model.config.readout == "cell" else last[0])

        initial = tuple(map(tuple, model.initial_state(batch)))
        out = tf.TensorArray(model.dtype, size=kept)
        return tf.while_loop(lambda k, *_: k < kept, outer, (0, initial, out))[2].stack()

    return sample
