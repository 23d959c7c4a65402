"""Recurrent layers RNN, GRU and LSTM: forward/reverse/bidirectional, layout 0/1, sequence_lens,
initial states, peepholes, clip and custom activations; one lax.scan per direction with the
input projection of all steps computed up front."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from .. import precision
from ..registry import LoweringContext, lowering

_DEFAULT_ALPHA = {"LeakyRelu": 0.01, "ThresholdedRelu": 1.0, "ScaledTanh": 1.0, "HardSigmoid": 0.2, "Elu": 1.0, "Affine": 1.0}
_DEFAULT_BETA = {"ScaledTanh": 1.0, "HardSigmoid": 0.5, "Affine": 0.0}


def named_activation(name: str, alpha: float | None, beta: float | None) -> Callable[[Any], Any]:
    """The ONNX RNN activation `name` (case-insensitive) with its alpha/beta (None: its default)."""
    key = {n.lower(): n for n in ("Relu", "Tanh", "Sigmoid", "Affine", "LeakyRelu", "ThresholdedRelu", "ScaledTanh",
                                  "HardSigmoid", "Elu", "Softsign", "Softplus")}.get(name.lower())
    if key is None:
        raise ValueError(f"unknown recurrent activation {name!r}")
    a = _DEFAULT_ALPHA.get(key) if alpha is None else alpha
    b = _DEFAULT_BETA.get(key) if beta is None else beta
    table = {
        "Relu": lambda x: jnp.maximum(x, 0),
        "Tanh": jnp.tanh,
        "Sigmoid": jax.nn.sigmoid,
        "Affine": lambda x: a * x + b,
        "LeakyRelu": lambda x: jnp.where(x >= 0, x, a * x),
        "ThresholdedRelu": lambda x: jnp.where(x > a, x, 0),
        "ScaledTanh": lambda x: a * jnp.tanh(b * x),
        "HardSigmoid": lambda x: jnp.clip(a * x + b, 0, 1),
        "Elu": lambda x: jnp.where(x > 0, x, a * jnp.expm1(x)),
        "Softsign": lambda x: x / (1 + jnp.abs(x)),
        "Softplus": jax.nn.softplus,
    }
    return table[key]


def _activations(count: int, directions: int, names: Sequence[str] | None, alphas, betas, defaults: Sequence[str]):
    """Per direction, the list of `count` activation callables."""
    names = list(names) if names else list(defaults) * directions
    if len(names) == count:
        names = names * directions
    alphas, betas = list(alphas or []), list(betas or [])
    functions = [
        named_activation(n if isinstance(n, str) else n.decode(), alphas[i] if i < len(alphas) else None,
                    betas[i] if i < len(betas) else None)
        for i, n in enumerate(names)
    ]
    return [functions[d * count:(d + 1) * count] for d in range(directions)]


def _reverse_index(steps: int, lengths: Any) -> Any:
    """[T, B] time index reversing each sequence within its length (padding stays in place)."""
    t = jnp.arange(steps)[:, None]
    return jnp.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)


def _take_time(x: Any, index: Any) -> Any:
    """x [T, B, ...] reordered per batch column by index [T, B]."""
    expanded = index.reshape(index.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, expanded, axis=0)


def _run_direction(cell, carry, projected: Any, lengths: Any, reverse: bool):
    """Scan `cell(carry, x_t) -> (carry, h_t)` over projected [T, B, G]; masked steps keep state and
    output zeros. Returns (outputs [T, B, H], final carry)."""
    steps = projected.shape[0]
    index = _reverse_index(steps, lengths) if reverse else None
    inputs = _take_time(projected, index) if reverse else projected
    valid = jnp.arange(steps)[:, None] < lengths[None, :]

    def step(state, item):
        x_t, valid_t = item
        new_state, h_t = cell(state, x_t)
        keep = valid_t[:, None]
        new_state = jax.tree_util.tree_map(lambda new, old: jnp.where(keep, new, old), new_state, state)
        return new_state, jnp.where(keep, h_t, jnp.zeros((), h_t.dtype))

    final, outputs = lax.scan(step, carry, (inputs, valid))
    if reverse:
        outputs = _take_time(outputs, index)
    return outputs, final


def _prepare(ctx, x, layout: int, w, b, sequence_lens, gates: int, hidden: int):
    """Time-major X, its projection per direction [D, T, B, G*H] (+ both biases), and lengths."""
    x = jnp.asarray(x)
    if layout:
        x = jnp.swapaxes(x, 0, 1)
    steps, batch = x.shape[:2]
    w = jnp.asarray(w)
    projected = precision.einsum(ctx, "tbi,dgi->dtbg", x, w)
    if b is not None:
        b = jnp.asarray(b)
        projected = projected + (b[:, : gates * hidden] + b[:, gates * hidden:])[:, None, None, :]
    lengths = jnp.full((batch,), steps, jnp.int32) if sequence_lens is None else jnp.asarray(sequence_lens).astype(jnp.int32)
    return x, projected, lengths


def _initial(value: Any, directions: int, batch: int, hidden: int, dtype: Any, layout: int) -> Any:
    if value is None:
        return jnp.zeros((directions, batch, hidden), dtype)
    value = jnp.asarray(value, dtype)
    return jnp.swapaxes(value, 0, 1) if layout else value


def _finish(outputs: list[Any], finals: list[Sequence[Any]], layout: int) -> tuple:
    """Y [T, D, B, H] (layout 1: [B, T, D, H]) and final states [D, B, H] (layout 1: [B, D, H])."""
    y = jnp.stack(outputs, axis=1)
    states = [jnp.stack([f[i] for f in finals]) for i in range(len(finals[0]))]
    if layout:
        y = jnp.transpose(y, (2, 0, 1, 3))
        states = [jnp.swapaxes(s, 0, 1) for s in states]
    return (y, *states)


def _directions(direction: str) -> list[bool]:
    return {"forward": [False], "reverse": [True], "bidirectional": [False, True]}[direction]


def _clip(value: Any, clip: float | None) -> Any:
    return value if clip is None else jnp.clip(value, -clip, clip)


@lowering("RNN")
def rnn(ctx: LoweringContext, x: Any, w: Any, r: Any, b: Any = None, sequence_lens: Any = None, initial_h: Any = None,
        *, hidden_size: int, activations=None, activation_alpha=None, activation_beta=None, clip: float | None = None,
        direction: str = "forward", layout: int = 0) -> Any:
    """Ht = f(Xt W^T + Ht-1 R^T + Wb + Rb)."""
    reverses = _directions(direction)
    x, projected, lengths = _prepare(ctx, x, layout, w, b, sequence_lens, 1, hidden_size)
    functions = _activations(1, len(reverses), activations, activation_alpha, activation_beta, ["Tanh"])
    h0 = _initial(initial_h, len(reverses), x.shape[1], hidden_size, x.dtype, layout)
    outputs, finals = [], []
    for d, reverse in enumerate(reverses):
        recurrence, (f,) = jnp.asarray(r)[d], functions[d]

        def cell(state, x_t, recurrence=recurrence, f=f):
            (h,) = state
            h = f(_clip(x_t + precision.matmul(ctx, h, recurrence.T), clip))
            return (h,), h

        out, final = _run_direction(cell, (h0[d],), projected[d], lengths, reverse)
        outputs.append(out)
        finals.append(final)
    return _finish(outputs, finals, layout)


@lowering("GRU")
def gru(ctx: LoweringContext, x: Any, w: Any, r: Any, b: Any = None, sequence_lens: Any = None, initial_h: Any = None,
        *, hidden_size: int, activations=None, activation_alpha=None, activation_beta=None, clip: float | None = None,
        direction: str = "forward", layout: int = 0, linear_before_reset: int = 0) -> Any:
    """Gates z, r, h; Ht = (1 - z) h + z Ht-1 (linear_before_reset applies r after R h)."""
    reverses = _directions(direction)
    hidden = hidden_size
    x, projected, lengths = _prepare(ctx, x, layout, w, None, sequence_lens, 3, hidden)
    batch = x.shape[1]
    bias = jnp.zeros((len(reverses), 6 * hidden), x.dtype) if b is None else jnp.asarray(b)
    functions = _activations(2, len(reverses), activations, activation_alpha, activation_beta, ["Sigmoid", "Tanh"])
    h0 = _initial(initial_h, len(reverses), batch, hidden, x.dtype, layout)
    outputs, finals = [], []
    for d, reverse in enumerate(reverses):
        recurrence, (f, g) = jnp.asarray(r)[d], functions[d]
        input_bias, recurrent_bias = bias[d, : 3 * hidden], bias[d, 3 * hidden:]

        def cell(state, x_t, recurrence=recurrence, f=f, g=g, input_bias=input_bias, recurrent_bias=recurrent_bias):
            (h,) = state
            x_t = x_t + input_bias
            recurrent = precision.matmul(ctx, h, recurrence.T)
            z = f(_clip(x_t[:, :hidden] + recurrent[:, :hidden] + recurrent_bias[:hidden], clip))
            reset = f(_clip(x_t[:, hidden:2 * hidden] + recurrent[:, hidden:2 * hidden] + recurrent_bias[hidden:2 * hidden], clip))
            if linear_before_reset:
                candidate = x_t[:, 2 * hidden:] + reset * (recurrent[:, 2 * hidden:] + recurrent_bias[2 * hidden:])
            else:
                candidate = (x_t[:, 2 * hidden:] + precision.matmul(ctx, reset * h, recurrence[2 * hidden:].T)
                             + recurrent_bias[2 * hidden:])
            candidate = g(_clip(candidate, clip))
            h = (1 - z) * candidate + z * h
            return (h,), h

        out, final = _run_direction(cell, (h0[d],), projected[d], lengths, reverse)
        outputs.append(out)
        finals.append(final)
    return _finish(outputs, finals, layout)


@lowering("LSTM")
def lstm(ctx: LoweringContext, x: Any, w: Any, r: Any, b: Any = None, sequence_lens: Any = None, initial_h: Any = None,
         initial_c: Any = None, p: Any = None, *, hidden_size: int, activations=None, activation_alpha=None,
         activation_beta=None, clip: float | None = None, direction: str = "forward", input_forget: int = 0,
         layout: int = 0) -> Any:
    """Gates i, o, f, c with optional peepholes P (i, o, f); Ct = f Ct-1 + i c, Ht = o h(Ct)."""
    reverses = _directions(direction)
    hidden = hidden_size
    x, projected, lengths = _prepare(ctx, x, layout, w, b, sequence_lens, 4, hidden)
    batch = x.shape[1]
    functions = _activations(3, len(reverses), activations, activation_alpha, activation_beta, ["Sigmoid", "Tanh", "Tanh"])
    h0 = _initial(initial_h, len(reverses), batch, hidden, x.dtype, layout)
    c0 = _initial(initial_c, len(reverses), batch, hidden, x.dtype, layout)
    peepholes = jnp.zeros((len(reverses), 3 * hidden), x.dtype) if p is None else jnp.asarray(p)
    outputs, finals = [], []
    for d, reverse in enumerate(reverses):
        recurrence, (f, g, h_act) = jnp.asarray(r)[d], functions[d]
        peep_i, peep_o, peep_f = (peepholes[d, k * hidden:(k + 1) * hidden] for k in range(3))

        def cell(state, x_t, recurrence=recurrence, f=f, g=g, h_act=h_act, peep_i=peep_i, peep_o=peep_o, peep_f=peep_f):
            h, c = state
            gates = x_t + precision.matmul(ctx, h, recurrence.T)
            i_gate = f(_clip(gates[:, :hidden] + peep_i * c, clip))
            f_gate = 1 - i_gate if input_forget else f(_clip(gates[:, 2 * hidden:3 * hidden] + peep_f * c, clip))
            candidate = g(_clip(gates[:, 3 * hidden:], clip))
            c = f_gate * c + i_gate * candidate
            o_gate = f(_clip(gates[:, hidden:2 * hidden] + peep_o * c, clip))
            h = o_gate * h_act(c)
            return (h, c), h

        out, final = _run_direction(cell, (h0[d], c0[d]), projected[d], lengths, reverse)
        outputs.append(out)
        finals.append(final)
    return _finish(outputs, finals, layout)
