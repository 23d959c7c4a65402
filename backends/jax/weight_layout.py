"""Convolution weights stored in the layout XLA's CPU convolution reads (spatial..., in, out), so
no weight transpose runs on every call: weights are function arguments, so XLA cannot fold a
transpose of them, and ResNet-50 otherwise copies ~40 MB of kernels per call. The function
transposes the stored array back to ONNX's [out, in, spatial...]; XLA cancels the pair."""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from compiler.ir import Graph


def conv_weight_layouts(graph: Graph, params: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """name -> permutation from ONNX order to stored order, for weights read only as the kernel of
    ungrouped Conv nodes with a kernel larger than 1 (1x1 and depthwise convs are lowered as
    products that read the ONNX order; see conv_forms.py)."""
    layouts: dict[str, tuple[int, ...]] = {}
    for name, array in params.items():
        value = graph.initializers.get(name)
        if value is None or array.ndim < 3 or not value.uses or all(size == 1 for size in array.shape[2:]):
            continue
        if all(_plain_conv_kernel(use.node, use.index) for use in value.uses):
            layouts[name] = (*range(2, array.ndim), 1, 0)
    return layouts


def _plain_conv_kernel(node: Any, index: int) -> bool:
    group = node.attributes.get("group")
    return node.op_type == "Conv" and node.domain in ("", "ai.onnx") and index == 1 and (group is None or group.value == 1)


def stored_params(params: Mapping[str, np.ndarray], layouts: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The params with the listed weights transposed into their stored layout."""
    return {name: np.ascontiguousarray(np.transpose(array, layouts[name])) if name in layouts else array
            for name, array in params.items()}


def onnx_order(array: Any, permutation: tuple[int, ...]) -> Any:
    """A stored weight transposed back to its ONNX layout (inside the traced function)."""
    return jnp.transpose(array, tuple(int(i) for i in np.argsort(permutation)))
