"""Registry of ops outside ONNX (domain ai.graphkiln): each has a type rule, a decomposition into
standard ONNX ops (so every graph can be exported as plain ONNX) and optionally a numpy kernel.

Op families register themselves from their own modules; the compiler looks them up here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .ir import Node, Value, ValueType

GRAPHKILN_DOMAIN = "ai.graphkiln"

InferFn = Callable[[Node], Sequence[ValueType | None]]
DecomposeFn = Callable[["OpBuilder", Node], Sequence[Value]]  # noqa: F821
KernelFn = Callable[..., Sequence[np.ndarray]]


@dataclass
class CustomOp:
    """The definition of one non-standard op."""

    op_type: str
    infer: InferFn
    decompose: DecomposeFn
    kernel: KernelFn | None = None
    domain: str = GRAPHKILN_DOMAIN
    doc: str = ""
    min_opset: int = 13  # default-domain opset the decomposition needs
    attributes: dict[str, str] = field(default_factory=dict)


_REGISTRY: dict[tuple[str, str], CustomOp] = {}


def register_custom_op(op: CustomOp) -> CustomOp:
    _REGISTRY[(op.domain, op.op_type)] = op
    return op


def get_custom_op(domain: str, op_type: str) -> CustomOp | None:
    from .plugins import load_plugins

    load_plugins()
    return _REGISTRY.get((domain, op_type))


def custom_ops() -> dict[tuple[str, str], CustomOp]:
    from .plugins import load_plugins

    load_plugins()
    return dict(_REGISTRY)
