"""The peers our training step is timed against, each driven as its users drive it, and the timing.

    Keras   `model.train_on_batch` with Keras's Adam, every variant a user would try: as `model.fit`
            runs it (`keras`), `use_cudnn=False` (`keras_no_cudnn`), `unroll=True` where the sequence is
            short enough (`keras_unrolled`, T <= 16), the step compiled with XLA (`keras_xla`), the two
            combined with `use_cudnn=False`, and for text an `Embedding` input instead of one-hot
            (`keras_embedding`, `keras_embedding_xla`)
    Flax    `nn.RNN(nn.OptimizedLSTMCell(H))` (a `lax.scan`), the whole step under `jax.jit`, optax Adam
            (jax, flax and optax: `requirements-bench.txt`; left out, with a note, where not installed)

Everything runs in one process, so the timings interleave: after warm-up each repeat calls every
step once, in turn, and each figure is the median of the repeats.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np
import tensorflow as tf

Step = Callable[[], object]


def interleaved_medians(steps: dict[str, Step], repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of each step (each call waits for its result), calls alternating."""
    for step in steps.values():
        for _ in range(warmup):
            np.asarray(step())
    timings = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            started = time.perf_counter()
            np.asarray(step())
            timings[name].append(time.perf_counter() - started)
    return {name: float(np.median(values)) for name, values in timings.items()}


def large_matmul_rate(size: int = 1024, chain: int = 8, repeats: int = 5) -> float:
    """FLOP/s of float32 `[size, size] x [size, size]` matmuls on this machine, chained in one call."""
    left = tf.random.stateless_normal([size, size], seed=[0, 1])
    right = tf.random.stateless_normal([size, size], seed=[0, 2]) / size

    @tf.function
    def many():
        product = left
        for _ in range(chain):
            product = tf.matmul(product, right)
        return product[0, 0]

    seconds = interleaved_medians({"matmul": many}, repeats, 2)["matmul"]
    return chain * 2.0 * size**3 / seconds


# --- Keras ----------------------------------------------------------------------------------------


def _keras_variants(time_steps: int | None, text: bool) -> dict[str, dict]:
    """name -> options: `cudnn` (None: Keras's choice), `unroll`, `jit` ("auto": `model.fit`'s), `embedding`."""
    variants = {
        "keras": {},
        "keras_no_cudnn": {"cudnn": False},
        "keras_xla": {"jit": True},
        "keras_no_cudnn_xla": {"cudnn": False, "jit": True},
    }
    if time_steps is not None and time_steps <= 16:
        variants.update(keras_unrolled={"unroll": True}, keras_unrolled_xla={"unroll": True, "jit": True})
    if text:
        variants.update(keras_embedding={"embedding": True}, keras_embedding_xla={"embedding": True, "jit": True})
    return variants


def _lstm(keras, units: int, options: dict, return_sequences: bool):
    extra = {"use_cudnn": False} if options.get("cudnn") is False else {}
    return keras.layers.LSTM(units, return_sequences=return_sequences, unroll=options.get("unroll", False), **extra)


def keras_counter_steps(units: int, inputs: np.ndarray, final_sums: np.ndarray) -> dict[str, Step]:
    """Keras's step on the counter as ours is timed (squared error of the final sum): `LSTM(units)`
    and `Dense(1)` over `inputs` `[batch, time, 3]`, one `train_on_batch` per call."""
    import keras

    steps = {}
    for name, options in _keras_variants(inputs.shape[1], text=False).items():
        model = keras.Sequential(
            [keras.Input(inputs.shape[1:]), _lstm(keras, units, options, False), keras.layers.Dense(1)]
        )
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", jit_compile=options.get("jit", "auto"))
        steps[name] = lambda model=model: model.train_on_batch(inputs, final_sums)
    return steps


def keras_text_steps(
    vocabulary: int,
    units: int,
    layers: int,
    ids: np.ndarray,
    targets: np.ndarray,
    learning_rate: float = 2e-3,
    clip_norm: float = 5.0,
) -> dict[str, Step]:
    """Keras's char-LM step: one-hot (or `Embedding`) inputs, `layers` × `LSTM(units)`, `Dense(vocabulary)`,
    `SparseCategoricalCrossentropy(from_logits=True)`, `Adam(learning_rate, clipnorm)`."""
    import keras

    one_hot = np.eye(vocabulary, dtype=np.float32)[ids]
    steps = {}
    for name, options in _keras_variants(None, text=True).items():
        first = (
            [keras.Input((ids.shape[1],), dtype="int32"), keras.layers.Embedding(vocabulary, vocabulary)]
            if options.get("embedding")
            else [keras.Input((ids.shape[1], vocabulary))]
        )
        model = keras.Sequential(
            [*first, *[_lstm(keras, units, options, True) for _ in range(layers)], keras.layers.Dense(vocabulary)]
        )
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate, clipnorm=clip_norm),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=options.get("jit", "auto"),
        )
        given = ids if options.get("embedding") else one_hot
        steps[name] = lambda model=model, given=given: model.train_on_batch(given, targets)
    return steps


# --- Flax -----------------------------------------------------------------------------------------


def flax_available() -> bool:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # (else JAX warns on stderr that it found no GPU)
    try:
        import flax  # noqa: F401
        import optax  # noqa: F401
    except ImportError:
        return False
    return True


def _flax_step(module, loss, tx, params):
    import jax

    @jax.jit
    def step(params, opt_state, *batch):
        value, gradients = jax.value_and_grad(lambda p: loss(module.apply(p, batch[0]), *batch[1:]))(params)
        updates, opt_state = tx.update(gradients, opt_state, params)
        import optax

        return optax.apply_updates(params, updates), opt_state, value

    return step


def flax_counter_step(units: int, inputs: np.ndarray, final_sums: np.ndarray) -> Step | None:
    """Flax's LSTM on the counter: `nn.RNN(nn.OptimizedLSTMCell)`, `Dense(1)` on the last step, optax Adam."""
    if not flax_available():
        return None
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import optax

    class Counter(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(1)(nn.RNN(nn.OptimizedLSTMCell(units))(x)[:, -1])[:, 0]

    module, tx = Counter(), optax.adam(1e-3)
    params = module.init(jax.random.PRNGKey(0), jnp.asarray(inputs))
    step = _flax_step(module, lambda predictions, targets: jnp.mean((predictions - targets) ** 2), tx, params)
    state = {"params": params, "opt": tx.init(params)}
    batch = (jnp.asarray(inputs), jnp.asarray(final_sums))

    def call():
        state["params"], state["opt"], value = step(state["params"], state["opt"], *batch)
        return value.block_until_ready()

    return call


def flax_text_step(
    vocabulary: int,
    units: int,
    layers: int,
    ids: np.ndarray,
    targets: np.ndarray,
    learning_rate: float = 2e-3,
    clip_norm: float = 5.0,
) -> Step | None:
    """Flax's char-LM step: one-hot inputs, `layers` × `nn.RNN(nn.OptimizedLSTMCell)`, `Dense`, softmax
    cross-entropy, `optax.chain(clip_by_global_norm, adam)`."""
    if not flax_available():
        return None
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import optax

    class CharLM(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = jax.nn.one_hot(x, vocabulary)
            for _ in range(layers):
                x = nn.RNN(nn.OptimizedLSTMCell(units))(x)
            return nn.Dense(vocabulary)(x)

    def loss(logits, targets):
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    module = CharLM()
    tx = optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(learning_rate))
    params = module.init(jax.random.PRNGKey(0), jnp.asarray(ids))
    step = _flax_step(module, loss, tx, params)
    state = {"params": params, "opt": tx.init(params)}
    batch = (jnp.asarray(ids), jnp.asarray(targets))

    def call():
        state["params"], state["opt"], value = step(state["params"], state["opt"], *batch)
        return value.block_until_ready()

    return call


def fastest_peer(milliseconds: dict[str, float], ours: str = "ours") -> tuple[str, float]:
    """The peer with the shortest step, and its time."""
    name = min((name for name in milliseconds if name != ours and not name.startswith("ours")), key=milliseconds.get)
    return name, milliseconds[name]
