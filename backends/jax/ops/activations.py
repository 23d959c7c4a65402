"""Activation functions, Softmax/LogSoftmax/Hardmax and Dropout (inference and seeded training)."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..registry import LoweringContext, lowering


@lowering("Relu")
def relu(ctx: LoweringContext, x: Any) -> Any:
    """max(x, 0) for every numeric type (Relu-14 adds integers)."""
    x = jnp.asarray(x)
    return jnp.maximum(x, jnp.zeros((), x.dtype))


@lowering("LeakyRelu")
def leaky_relu(ctx: LoweringContext, x: Any, alpha: float = 0.01) -> Any:
    """x if x >= 0 else alpha * x."""
    x = jnp.asarray(x)
    return jnp.where(x >= 0, x, x * jnp.asarray(alpha, x.dtype))


@lowering("PRelu")
def prelu(ctx: LoweringContext, x: Any, slope: Any) -> Any:
    """x where x >= 0 else slope * x; slope broadcasts (unidirectionally) to x."""
    x = jnp.asarray(x)
    slope = jnp.asarray(slope, x.dtype)
    return jnp.where(x >= 0, x, x * slope)


@lowering("Elu")
def elu(ctx: LoweringContext, x: Any, alpha: float = 1.0) -> Any:
    """x if x > 0 else alpha * (exp(x) - 1)."""
    x = jnp.asarray(x)
    return jnp.where(x > 0, x, jnp.asarray(alpha, x.dtype) * jnp.expm1(x))


@lowering("Selu")
def selu(ctx: LoweringContext, x: Any, alpha: float = 1.67326319217681884765625, gamma: float = 1.05070102214813232421875) -> Any:
    """gamma * (x if x > 0 else alpha * (exp(x) - 1))."""
    x = jnp.asarray(x)
    alpha, gamma = jnp.asarray(alpha, x.dtype), jnp.asarray(gamma, x.dtype)
    return jnp.where(x > 0, gamma * x, gamma * (alpha * jnp.exp(x) - alpha))


@lowering("Celu")
def celu(ctx: LoweringContext, x: Any, alpha: float = 1.0) -> Any:
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1))."""
    x = jnp.asarray(x)
    alpha = jnp.asarray(alpha, x.dtype)
    return jnp.maximum(x, 0) + jnp.minimum(0, alpha * jnp.expm1(x / alpha))


def gelu_math(x: Any, approximate: str = "none") -> Any:
    """ONNX Gelu-20 (also ai.graphkiln Gelu): erf form, or the tanh approximation."""
    x = jnp.asarray(x)
    if approximate == "tanh":
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)
        return 0.5 * x * (1.0 + jnp.tanh(inner))
    return 0.5 * x * (1.0 + jax.lax.erf(x / jnp.asarray(math.sqrt(2.0), x.dtype)))


@lowering("Gelu", since=20)
def gelu(ctx: LoweringContext, x: Any, approximate: str = "none") -> Any:
    """Gelu-20: erf form or tanh approximation."""
    return gelu_math(x, approximate)


@lowering("HardSigmoid")
def hard_sigmoid(ctx: LoweringContext, x: Any, alpha: float = 0.2, beta: float = 0.5) -> Any:
    """clip(alpha * x + beta, 0, 1)."""
    x = jnp.asarray(x)
    return jnp.clip(jnp.asarray(alpha, x.dtype) * x + jnp.asarray(beta, x.dtype), 0, 1).astype(x.dtype)


@lowering("HardSwish")
def hard_swish(ctx: LoweringContext, x: Any) -> Any:
    """x * clip(x / 6 + 1/2, 0, 1)."""
    x = jnp.asarray(x)
    return x * jnp.clip(x / 6 + 0.5, 0, 1).astype(x.dtype)


@lowering("Mish")
def mish(ctx: LoweringContext, x: Any) -> Any:
    """x * tanh(softplus(x))."""
    x = jnp.asarray(x)
    return x * jnp.tanh(jax.nn.softplus(x))


@lowering("Softplus")
def softplus(ctx: LoweringContext, x: Any) -> Any:
    """log(1 + exp(x)), overflow-safe."""
    return jax.nn.softplus(jnp.asarray(x))


@lowering("Softsign")
def softsign(ctx: LoweringContext, x: Any) -> Any:
    """x / (1 + |x|)."""
    x = jnp.asarray(x)
    return x / (1 + jnp.abs(x))


@lowering("Swish")
def swish(ctx: LoweringContext, x: Any, alpha: float = 1.0) -> Any:
    """x * sigmoid(alpha * x) (Swish-24)."""
    x = jnp.asarray(x)
    return x * jax.nn.sigmoid(jnp.asarray(alpha, x.dtype) * x)


@lowering("ThresholdedRelu")
def thresholded_relu(ctx: LoweringContext, x: Any, alpha: float = 1.0) -> Any:
    """x if x > alpha else 0."""
    x = jnp.asarray(x)
    return jnp.where(x > alpha, x, jnp.zeros((), x.dtype))


@lowering("Shrink")
def shrink(ctx: LoweringContext, x: Any, bias: float = 0.0, lambd: float = 0.5) -> Any:
    """x + bias below -lambd, x - bias above lambd, 0 between."""
    x = jnp.asarray(x)
    bias_value = jnp.asarray(bias, x.dtype)
    zero = jnp.zeros((), x.dtype)
    return jnp.where(x < -lambd, x + bias_value, jnp.where(x > lambd, x - bias_value, zero))


def _coerced(function, x: Any, axis: int) -> Any:
    """Opset < 13 semantics: flatten to 2-D at `axis`, apply over the trailing block, reshape back."""
    x = jnp.asarray(x)
    axis = axis + x.ndim if axis < 0 else axis
    flat = x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))
    return function(flat, axis=-1).reshape(x.shape)


@lowering("Softmax", since=13)
def softmax(ctx: LoweringContext, x: Any, axis: int = -1) -> Any:
    """Softmax-13: along one axis."""
    return jax.nn.softmax(jnp.asarray(x), axis=axis)


@lowering("Softmax", since=1, until=13)
def softmax_legacy(ctx: LoweringContext, x: Any, axis: int = 1) -> Any:
    """Softmax-1/11: over the trailing block from `axis` (coerced to 2-D)."""
    return _coerced(jax.nn.softmax, x, axis)


@lowering("LogSoftmax", since=13)
def log_softmax(ctx: LoweringContext, x: Any, axis: int = -1) -> Any:
    """LogSoftmax-13: along one axis."""
    return jax.nn.log_softmax(jnp.asarray(x), axis=axis)


@lowering("LogSoftmax", since=1, until=13)
def log_softmax_legacy(ctx: LoweringContext, x: Any, axis: int = 1) -> Any:
    """LogSoftmax-1/11: over the trailing block from `axis` (coerced to 2-D)."""
    return _coerced(jax.nn.log_softmax, x, axis)


def _hardmax(x: Any, axis: int) -> Any:
    """1 at the first maximum along `axis`, 0 elsewhere."""
    index = jnp.argmax(x, axis=axis)
    return jax.nn.one_hot(index, x.shape[axis], axis=axis, dtype=x.dtype)


@lowering("Hardmax", since=13)
def hardmax(ctx: LoweringContext, x: Any, axis: int = -1) -> Any:
    """Hardmax-13: one-hot of the first maximum along one axis."""
    x = jnp.asarray(x)
    return _hardmax(x, axis + x.ndim if axis < 0 else axis)


@lowering("Hardmax", since=1, until=13)
def hardmax_legacy(ctx: LoweringContext, x: Any, axis: int = 1) -> Any:
    """Hardmax-1/11: one-hot of the first maximum of the trailing block from `axis`."""
    return _coerced(lambda flat, axis: _hardmax(flat, flat.ndim - 1), x, axis)


@lowering("Dropout", since=12)
def dropout(ctx: LoweringContext, x: Any, ratio: Any = None, training_mode: Any = None, seed: int | None = None) -> Any:
    """Identity (mask all true) at inference; with a static true training_mode, a seeded bernoulli
    keep-mask scaled by 1/(1-ratio)."""
    x = jnp.asarray(x)
    ratio_value = 0.5 if ratio is None else ratio
    if training_mode is None or (_is_known(training_mode) and not bool(np.asarray(training_mode).reshape(-1)[0])):
        return x, jnp.ones(x.shape, jnp.bool_)
    if _is_known(ratio_value) and float(np.asarray(ratio_value).reshape(-1)[0]) == 0.0:
        return x, jnp.ones(x.shape, jnp.bool_)
    key = jax.random.PRNGKey(0 if seed is None else int(seed))
    ratio_value = jnp.asarray(ratio_value, jnp.float32).reshape(())
    keep = jax.random.uniform(key, x.shape) >= ratio_value
    scale = (1.0 / (1.0 - ratio_value)).astype(x.dtype)
    training = jnp.asarray(training_mode).reshape(()).astype(jnp.bool_)
    keep = jnp.logical_or(keep, jnp.logical_not(training))
    scale = jnp.where(training, scale, jnp.ones((), x.dtype))
    return jnp.where(keep, x * scale, jnp.zeros((), x.dtype)), keep


@lowering("Dropout", since=1, until=12)
def dropout_legacy(ctx: LoweringContext, x: Any, ratio: float = 0.5, is_test: int = 0, **_: Any) -> Any:
    """Opsets 1-11: an inference-time identity (the mask is all true; opsets < 10 type it like X)."""
    x = jnp.asarray(x)
    mask = jnp.ones(x.shape, ctx.output_dtype(1) or jnp.bool_) if ctx.num_outputs() > 1 else None
    return x, mask


def _is_known(value: Any) -> bool:
    return isinstance(value, (np.ndarray, np.number, bool, int, float))
