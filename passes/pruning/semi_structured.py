"""2:4 semi-structured sparsity: in every run of 4 weights along the input-channel axis keep the 2
largest |w| (the pattern sparse tensor cores accelerate); layers whose axis is not a multiple of
4 are refused with the reason."""

from __future__ import annotations

from typing import Any

import numpy as np

from compiler.ir import Graph

from .weights import prunable_weights, reduction_axis, replace_weight

GROUP, KEEP = 4, 2


def two_four_mask(array: np.ndarray, axis: int) -> np.ndarray:
    """Boolean mask keeping the 2 largest |w| of each group of 4 consecutive entries along `axis`."""
    moved = np.moveaxis(np.abs(array), axis, -1)
    groups = moved.reshape(moved.shape[:-1] + (moved.shape[-1] // GROUP, GROUP))
    order = np.argsort(-groups, axis=-1, kind="stable")
    keep = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(keep, order[..., :KEEP], True, axis=-1)
    return np.moveaxis(keep.reshape(moved.shape), -1, axis)


def prune_two_four(graph: Graph) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    rows, refused = [], []
    for node, weight in list(prunable_weights(graph)):
        array = weight.const_value.numpy()
        axis = reduction_axis(node)
        if array.shape[axis] % GROUP:
            refused.append({"node": node.name, "reason": f"input-channel axis has {array.shape[axis]} entries, not a multiple of {GROUP}"})
            continue
        name = weight.name
        pruned = np.where(two_four_mask(array, axis), array, 0.0).astype(array.dtype)
        replace_weight(graph, node, 1, pruned, "pruned")
        rows.append({"node": node.name, "weight": name, "sparsity": float(np.mean(pruned == 0)),
                     "channels_before": None, "channels_after": None})
    return rows, refused
