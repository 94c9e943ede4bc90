"""How much memory a run or a scoring call will need, estimated from its settings before anything is
allocated, and a one-line refusal when that cannot fit in the memory this machine has free.

The estimate counts float32 tensors of the step (docs/reliability.md, "Caps"):

    parameters    every weight, its gradient and Adam's two moments: 4 × parameters
    per layer     what the forward loop records for the hand-written backward pass and what the
                  backward pass makes: about 16 × time × batch × units (gates, states, noise, dz)
    inputs        the batch as the model reads it, and its gradient's working copies: 4 × time × batch × inputs
    outputs       predictions, the loss's gradient and the task's working copies: 4 × time × batch × outputs

and scoring keeps, per layer, the states of every step: 3 × time × batch × units. It is meant to be
within a factor of two of the peak; a refusal says the estimate and the flag to change. The free
memory is the system's (`MemAvailable`) unless `DIY_LSTM_AVAILABLE_MEMORY_BYTES` names a figure (a
container that reports the host's memory; tests that must not depend on the machine).
"""

from __future__ import annotations

import math
import os

from diy_lstm.cell import parameter_shapes
from diy_lstm.errors import BadInput
from diy_lstm.model import ModelConfig

BYTES_PER_FLOAT = 4
HEADROOM = 0.8  # the share of free memory a run may plan to use
AVAILABLE_MEMORY_VARIABLE = "DIY_LSTM_AVAILABLE_MEMORY_BYTES"  # the free memory to assume instead of the machine's


class MemoryLimitError(BadInput):
    """A run or a call that would need more memory than the machine has free."""


def parameters(model: ModelConfig) -> int:
    """The number of trained numbers: each layer's (`cell.parameter_shapes`) and the readout's."""
    total = (model.units + 1) * model.output_size
    for index in range(model.num_layers):
        inputs = model.input_size if index == 0 else model.units
        total += sum(math.prod(shape) for shape in parameter_shapes(inputs, model.units, model.peephole).values())
    return total


def training_bytes(model: ModelConfig, batch: int, time: int) -> int:
    """The estimated peak of one training step on `[batch, time]` (module docstring)."""
    cells = batch * time
    floats = (
        4 * parameters(model)
        + 16 * cells * model.units * model.num_layers
        + 4 * cells * model.input_size
        + 4 * cells * model.output_size
    )
    return BYTES_PER_FLOAT * floats


def inference_bytes(model: ModelConfig, batch: int, time: int) -> int:
    """The estimated peak of running the model forward on `[batch, time]` (evaluation, scoring)."""
    cells = batch * time
    floats = (
        parameters(model)
        + 3 * cells * model.units * model.num_layers
        + cells * model.input_size
        + 2 * cells * model.output_size
    )
    return BYTES_PER_FLOAT * floats


def available_bytes(meminfo_path: str = "/proc/meminfo") -> int | None:
    """Memory free for a new allocation: `AVAILABLE_MEMORY_VARIABLE` if set, else Linux `MemAvailable`,
    or None where the system does not say."""
    if (setting := os.environ.get(AVAILABLE_MEMORY_VARIABLE)) is not None:
        return _bytes_setting(setting)
    try:
        with open(meminfo_path) as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _bytes_setting(setting: str) -> int:
    """The byte count `AVAILABLE_MEMORY_VARIABLE` was set to, or `MemoryLimitError` saying why it is not one."""
    text = setting.strip()
    if not (text.isascii() and text.isdigit()):
        raise MemoryLimitError(
            f"{AVAILABLE_MEMORY_VARIABLE}={setting!r} must be a whole number of bytes, e.g. 17179869184 for 16 GB"
        )
    return int(text)


def gigabytes(count: int) -> str:
    return f"{count / 2**30:.1f} GB"


def check_fits(needed: int, what: str, advice: str, available: int | None = None) -> None:
    """Raises `MemoryLimitError` if `needed` bytes exceed `HEADROOM` of the free memory."""
    available = available_bytes() if available is None else available
    if available is not None and needed > HEADROOM * available:
        raise MemoryLimitError(
            f"{what} needs about {gigabytes(needed)} of memory and this machine has "
            f"{gigabytes(available)} free; {advice}"
        )
