"""Elementwise unary math (Exp, Log, trigonometric, Erf, rounding, Sign, IsInf/IsNaN, Sigmoid,
Tanh); Floor/Ceil/Neg/Abs/Sign also run on static (trace-time) values."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erf

from ..registry import lowering
from ._helpers import all_static, lowering_and_static

_UNARY = {
    "Exp": jnp.exp, "Log": jnp.log, "Sqrt": jnp.sqrt, "Reciprocal": jnp.reciprocal,
    "Sin": jnp.sin, "Cos": jnp.cos, "Tan": jnp.tan, "Asin": jnp.arcsin, "Acos": jnp.arccos,
    "Atan": jnp.arctan, "Sinh": jnp.sinh, "Cosh": jnp.cosh, "Asinh": jnp.arcsinh,
    "Acosh": jnp.arccosh, "Atanh": jnp.arctanh, "Erf": erf, "Round": jnp.round,
    "Sigmoid": jax.nn.sigmoid, "Tanh": jnp.tanh,
}
_STATIC_UNARY = {"Floor": (np.floor, jnp.floor), "Ceil": (np.ceil, jnp.ceil), "Neg": (np.negative, jnp.negative),
                 "Abs": (np.abs, jnp.abs), "Sign": (np.sign, jnp.sign)}


def _register_unary(op_type: str, function: Any) -> None:
    lowering(op_type)(lambda ctx, x, **_attrs: function(x))


def _register_static_unary(op_type: str, numpy_function: Any, jax_function: Any) -> None:
    def rule(ctx, x, **_attrs):
        if all_static(x):
            x = np.asarray(x)
            return numpy_function(x) if x.dtype == object else np.asarray(numpy_function(x)).astype(x.dtype)
        return jax_function(x)

    lowering_and_static(op_type)(rule)


for _op, _function in _UNARY.items():
    _register_unary(_op, _function)
for _op, (_numpy_function, _jax_function) in _STATIC_UNARY.items():
    _register_static_unary(_op, _numpy_function, _jax_function)


@lowering("IsNaN")
def is_nan(ctx, x):
    return jnp.isnan(x)


@lowering("IsInf")
def is_inf(ctx, x, detect_negative=1, detect_positive=1):
    positive = jnp.isposinf(x) if detect_positive else jnp.zeros(x.shape, bool)
    negative = jnp.isneginf(x) if detect_negative else jnp.zeros(x.shape, bool)
    return positive | negative
