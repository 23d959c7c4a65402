"""Unstructured magnitude pruning: zero the smallest |w| of Conv/Gemm/MatMul weights, with one
global threshold over all layers or the same ratio in each layer."""

from __future__ import annotations

from typing import Any

import numpy as np

from compiler.errors import OptionError
from compiler.ir import Graph

from .weights import prunable_weights, replace_weight

SCOPES = ("global", "layer")


def prune_unstructured(graph: Graph, ratio: float, scope: str = "global") -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Zero `ratio` of the prunable weights; returns the per-layer report rows and refusals."""
    if scope not in SCOPES:
        raise OptionError(f"unknown pruning scope {scope!r}", f"use one of {', '.join(SCOPES)}")
    targets = list(prunable_weights(graph))
    threshold = None
    if scope == "global" and targets:
        magnitudes = np.concatenate([np.abs(w.const_value.numpy()).ravel() for _, w in targets])
        threshold = _kth_magnitude(magnitudes, ratio)
    rows = []
    for node, weight in targets:
        array = weight.const_value.numpy()
        limit = threshold if threshold is not None else _kth_magnitude(np.abs(array).ravel(), ratio)
        pruned = np.where(np.abs(array) <= limit, 0.0, array).astype(array.dtype)
        name = weight.name
        replace_weight(graph, node, 1, pruned, "pruned")
        rows.append({"node": node.name, "weight": name, "sparsity": float(np.mean(pruned == 0)),
                     "channels_before": None, "channels_after": None})
    return rows, []


def _kth_magnitude(magnitudes: np.ndarray, ratio: float) -> float:
    """The magnitude at or below which `ratio` of the entries fall (-1 when nothing is pruned)."""
    count = int(round(ratio * magnitudes.size))
    if count <= 0:
        return -1.0
    return float(np.partition(magnitudes, count - 1)[count - 1])
