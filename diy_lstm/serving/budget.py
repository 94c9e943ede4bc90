"""How much a SavedModel may run through the LSTM at once (a whole call, or one window of it:
`windows.py`), so that it holds at most about `CALL_BYTES` whatever the model and the input.

Running `[batch, time]` steps forward holds, per step, the input projection `[4 × units]` and what the
loop records, for every layer in turn. `python -m benchmarks.scoring_memory` measures it (one counter
scoring call, each size in a fresh process; docs/reliability.md, "Caps"): about 22 bytes a step plus
39 per unit of the first layer, and a few per unit of each further layer. Rounded up:

    bytes per step = 64 + 40 × units + 8 × units × (layers − 1)      (+ 8 × units × layers if every
                                                                       layer's states are kept)
    steps per call = CALL_BYTES // bytes per step
"""

from __future__ import annotations

CALL_BYTES = 500_000_000
WINDOW_BYTES = 125_000_000  # what one window of a call (`windows.py`) runs forward at once
FIXED, PER_UNIT, PER_UNIT_OF_A_FURTHER_LAYER, PER_UNIT_KEPT = 64, 40, 8, 8


def bytes_per_step(units: int, num_layers: int = 1, keep_states: bool = False) -> int:
    """What one step of one sequence holds while a call runs the model forward."""
    kept = PER_UNIT_KEPT * units * num_layers if keep_states else 0
    return FIXED + PER_UNIT * units + PER_UNIT_OF_A_FURTHER_LAYER * units * (num_layers - 1) + kept


def steps_per_call(units: int, num_layers: int = 1, keep_states: bool = False, call_bytes: int = CALL_BYTES) -> int:
    """Sequences × the longest that one call may run forward within `call_bytes`."""
    return call_bytes // bytes_per_step(units, num_layers, keep_states)
