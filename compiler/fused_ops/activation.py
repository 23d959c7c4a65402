"""ai.graphkiln::Gelu(X; approximate "none"|"tanh"): ONNX Gelu-20 for models below opset 20."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from compiler.builder import OpBuilder
from compiler.custom_ops import GRAPHKILN_DOMAIN, CustomOp, register_custom_op
from compiler.ir import Node, Value

from ._common import constant_like, same_as_first_input

_TANH_COEFFICIENT = 0.044715


def _decompose(op: OpBuilder, node: Node) -> Sequence[Value]:
    x = node.inputs[0]
    if op.graph.opset >= 20:
        return [op.Gelu(x, approximate=node.attr("approximate", "none"))]
    half = op.Mul(x, constant_like(op, x, 0.5))
    if node.attr("approximate", "none") == "tanh":
        cube = op.Mul(op.Mul(x, x), x)
        inner = op.Add(x, op.Mul(cube, constant_like(op, x, _TANH_COEFFICIENT)))
        curve = op.Tanh(op.Mul(inner, constant_like(op, x, math.sqrt(2.0 / math.pi))))
    else:
        curve = op.Erf(op.Mul(x, constant_like(op, x, 1.0 / math.sqrt(2.0))))
    return [op.Mul(half, op.Add(curve, constant_like(op, x, 1.0)))]


def gelu_reference(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    """GELU in float64, cast back to x's dtype."""
    wide = np.asarray(x, np.float64)
    if approximate == "tanh":
        curve = np.tanh(math.sqrt(2.0 / math.pi) * (wide + _TANH_COEFFICIENT * wide**3))
    else:
        from scipy.special import erf  # noqa: PLC0415  (scipy ships with jax)

        curve = erf(wide / math.sqrt(2.0))
    return (0.5 * wide * (1.0 + curve)).astype(x.dtype)


def _kernel(x: np.ndarray, approximate: str = "none") -> list[np.ndarray]:
    return [gelu_reference(x, approximate)]


GELU = register_custom_op(CustomOp(
    "Gelu", same_as_first_input, _decompose, _kernel, domain=GRAPHKILN_DOMAIN, min_opset=13,
    doc="Gaussian error linear unit, the math of ONNX Gelu-20",
    attributes={"approximate": '"none" (erf, default) or "tanh"'},
))
