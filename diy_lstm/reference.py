"""A plain numpy (float64) LSTM: the forward pass and backpropagation through time, by hand.

The same parameters as `LSTMModel`, by the same names (per layer `W_i, W_f, W_g, W_o`
`[input + units, units]` acting on `[x_t, h_{t-1}]`, `b_i, b_f, b_g, b_o` `[units]`, and with
peepholes `p_i, p_f, p_o` `[units]`; a readout `W_out` `[units, outputs]`, `b_out`), the same
equations (`cell.lstm_step`, `cell.lstm_step_backward`), written here one gate at a time on the
unfused `W_k`, with no automatic differentiation anywhere. Tests hold the TensorFlow model to
this file: forward values and gradients must agree.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from diy_lstm.cell import BIASES, GATES, PEEPHOLES, WEIGHTS


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # = 1 / (1 + e^-x), without overflow for large |x|


def _hard_sigmoid(slope: float):
    return (
        lambda x: np.clip(slope * x + 0.5, 0.0, 1.0),
        lambda y: np.where((y > 0.0) & (y < 1.0), slope, 0.0),
    )


# name -> (activation, derivative written in terms of the activation's output)
ACTIVATIONS = {
    "sigmoid": (sigmoid, lambda y: y * (1.0 - y)),
    "hard_sigmoid": _hard_sigmoid(1.0 / 6.0),
    "hard_sigmoid_keras2": _hard_sigmoid(0.2),
}


@dataclasses.dataclass
class LayerParams:
    """One layer: `W[k]` `[input + units, units]` and `b[k]` `[units]` for k in `cell.GATES` (i, f, g, o),
    and the peepholes `p[k]` `[units]` for k in i, f, o (empty without them)."""

    W: dict[str, np.ndarray]
    b: dict[str, np.ndarray]
    p: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def units(self) -> int:
        return self.b["f"].shape[0]


@dataclasses.dataclass
class Params:
    layers: list[LayerParams]
    W_out: np.ndarray  # [units, outputs]
    b_out: np.ndarray  # [outputs]


def params_from_model(model) -> Params:
    """Copies an `LSTMModel`'s variables into float64 numpy arrays."""
    layers = [
        LayerParams(
            W={k: getattr(layer, WEIGHTS[k]).numpy().astype(np.float64) for k in GATES},
            b={k: getattr(layer, BIASES[k]).numpy().astype(np.float64) for k in GATES},
            p={k: getattr(layer, PEEPHOLES[k]).numpy().astype(np.float64) for k in PEEPHOLES if layer.peephole},
        )
        for layer in model.layers
    ]
    return Params(layers, model.W_out.numpy().astype(np.float64), model.b_out.numpy().astype(np.float64))


def layer_forward(
    inputs: np.ndarray,
    layer: LayerParams,
    activation: str = "sigmoid",
    noise: np.ndarray | None = None,
    initial_state: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """One layer over `inputs` `[batch, time, features]`, from `initial_state` `(h_0, c_0)` (zeros if None).

    `noise`, if given, `[batch, time, 4 * units]` with columns for i, f, g, o in that order (the
    `cell.GATES` order), is added to the gate preactivations.

    Returns `i, f, g, o, c, h`, each `[batch, time, units]` (`g` is the candidate).
    """
    act, _ = ACTIVATIONS[activation]
    batch, time, _ = inputs.shape
    units = layer.units
    if noise is None:
        noise = np.zeros((batch, time, 4 * units))
    noise_of = {gate: noise[..., index * units : (index + 1) * units] for index, gate in enumerate("ifgo")}
    hidden, cell = (
        (np.zeros((batch, units)), np.zeros((batch, units)))
        if initial_state is None
        else (np.asarray(initial_state[0], np.float64), np.asarray(initial_state[1], np.float64))
    )
    record = {name: np.zeros((batch, time, units)) for name in ("i", "f", "g", "o", "c", "h")}
    record["h0"], record["c0"] = hidden, cell
    peep = {k: layer.p.get(k, np.zeros(units)) for k in PEEPHOLES}  # zeros: no peepholes
    for t in range(time):
        joined = np.concatenate([inputs[:, t], hidden], axis=1)  # [batch, features + units]
        input_gate = act(joined @ layer.W["i"] + layer.b["i"] + noise_of["i"][:, t] + peep["i"] * cell)
        forget_gate = act(joined @ layer.W["f"] + layer.b["f"] + noise_of["f"][:, t] + peep["f"] * cell)
        candidate = np.tanh(joined @ layer.W["g"] + layer.b["g"] + noise_of["g"][:, t])
        cell = forget_gate * cell + input_gate * candidate
        output_gate = act(joined @ layer.W["o"] + layer.b["o"] + noise_of["o"][:, t] + peep["o"] * cell)
        hidden = output_gate * np.tanh(cell)
        for name, value in zip("ifgoch", (input_gate, forget_gate, candidate, output_gate, cell, hidden)):
            record[name][:, t] = value
    return record


def forward(
    inputs: np.ndarray,
    params: Params,
    activation: str = "sigmoid",
    readout: str = "hidden",
    preactivation_noise: list[np.ndarray] | None = None,
    initial_states: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
    """All layers and the readout. Returns predictions `[batch, time, outputs]` and each layer's
    record from `layer_forward` (what `backward` needs). `preactivation_noise`: one `noise` array
    per layer, see `layer_forward`; `backward` needs nothing more, as the records hold its effect.
    `initial_states`: one `(h_0, c_0)` per layer (zeros if None)."""
    records = []
    layer_inputs = np.asarray(inputs, dtype=np.float64)
    for index, layer in enumerate(params.layers):
        noise = preactivation_noise[index] if preactivation_noise is not None else None
        initial = initial_states[index] if initial_states is not None else None
        record = layer_forward(layer_inputs, layer, activation, noise, initial)
        records.append(record)
        layer_inputs = record["h"]
    source = records[-1]["c"] if readout == "cell" else records[-1]["h"]
    return source @ params.W_out + params.b_out, records


def backward(
    inputs: np.ndarray,
    params: Params,
    records: list[dict[str, np.ndarray]],
    d_predictions: np.ndarray,
    activation: str = "sigmoid",
    readout: str = "hidden",
) -> dict[str, np.ndarray]:
    """Gradients of a loss L given `d_predictions` = ∂L/∂predictions `[batch, time, outputs]`.

    Returns `{"layer_0/W_f": ..., "layer_0/b_f": ..., ..., "W_out": ..., "b_out": ...}`.
    """
    _, derivative = ACTIVATIONS[activation]
    top = records[-1]
    source = top["c"] if readout == "cell" else top["h"]
    grads = {
        "W_out": np.einsum("btu,bto->uo", source, d_predictions),
        "b_out": d_predictions.sum(axis=(0, 1)),
    }
    d_source = d_predictions @ params.W_out.T  # [batch, time, units]
    d_hidden_seq = np.zeros_like(d_source) if readout == "cell" else d_source
    d_cell_seq = d_source if readout == "cell" else np.zeros_like(d_source)

    for index in reversed(range(len(params.layers))):
        layer_inputs = np.asarray(inputs, dtype=np.float64) if index == 0 else records[index - 1]["h"]
        layer_grads, d_inputs = layer_backward(
            layer_inputs, params.layers[index], records[index], d_hidden_seq, d_cell_seq, derivative
        )
        grads.update({f"layer_{index}/{name}": value for name, value in layer_grads.items()})
        d_hidden_seq = d_inputs  # the layer below produced these inputs as its h
        d_cell_seq = np.zeros_like(d_inputs)
    return grads


def layer_backward(
    layer_inputs: np.ndarray,
    layer: LayerParams,
    record: dict[str, np.ndarray],
    d_hidden_seq: np.ndarray,
    d_cell_seq: np.ndarray,
    derivative,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One layer's BPTT, t = T-1 .. 0: `d_hidden_seq`, `d_cell_seq` `[batch, time, units]` are the loss
    gradients reaching its `h` and `c` from above; `derivative` is σ' in terms of σ's output.

    Returns the gradients by parameter name (`{"W_f": ..., "b_f": ..., "p_f": ...}`) and the
    gradient reaching `layer_inputs` `[batch, time, features]`.
    """
    features = layer_inputs.shape[2]
    batch, time, units = record["h"].shape
    d_W = {k: np.zeros_like(layer.W[k]) for k in GATES}
    d_b = {k: np.zeros_like(layer.b[k]) for k in GATES}
    d_p = {k: np.zeros(units) for k in layer.p}
    peep = {k: layer.p.get(k, np.zeros(units)) for k in PEEPHOLES}  # zeros: no peepholes
    d_inputs = np.zeros_like(layer_inputs)
    dh_next = np.zeros((batch, units))
    dc_next = np.zeros((batch, units))
    for t in reversed(range(time)):
        i, f, g, o, c = (record[name][:, t] for name in "ifgoc")
        previous_hidden = record["h"][:, t - 1] if t > 0 else record["h0"]
        previous_cell = record["c"][:, t - 1] if t > 0 else record["c0"]
        tanh_cell = np.tanh(c)
        dh = d_hidden_seq[:, t] + dh_next
        dz = {"o": dh * tanh_cell * derivative(o)}
        dc = d_cell_seq[:, t] + dc_next + dh * o * (1.0 - tanh_cell**2) + dz["o"] * peep["o"]
        dz["i"] = dc * g * derivative(i)
        dz["f"] = dc * previous_cell * derivative(f)
        dz["g"] = dc * i * (1.0 - g**2)
        joined = np.concatenate([layer_inputs[:, t], previous_hidden], axis=1)
        d_joined = np.zeros_like(joined)
        for k in GATES:
            d_W[k] += joined.T @ dz[k]
            d_b[k] += dz[k].sum(axis=0)
            d_joined += dz[k] @ layer.W[k].T
        for k, seen in (("i", previous_cell), ("f", previous_cell), ("o", c)):
            if k in d_p:
                d_p[k] += (dz[k] * seen).sum(axis=0)
        d_inputs[:, t] = d_joined[:, :features]
        dh_next = d_joined[:, features:]
        dc_next = dc * f + dz["i"] * peep["i"] + dz["f"] * peep["f"]
    grads = {WEIGHTS[k]: d_W[k] for k in GATES} | {BIASES[k]: d_b[k] for k in GATES}
    return grads | {PEEPHOLES[k]: d_p[k] for k in d_p}, d_inputs


def softmax_cross_entropy(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy (nats) of `logits` `[batch, time, classes]` against integer
    `targets` `[batch, time]`, and its gradient with respect to the logits (softmax minus one-hot,
    over the number of terms)."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    batch, time = targets.shape
    picked = np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    d_logits = np.exp(log_probs)
    np.put_along_axis(d_logits, targets[..., None], np.take_along_axis(d_logits, targets[..., None], -1) - 1.0, -1)
    return float(-picked.mean()), d_logits / (batch * time)
