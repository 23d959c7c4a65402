"""Weights stored in the layout XLA's kernels read best, so no weight transpose runs on every call:
weights are function arguments, so XLA cannot fold a transpose of them. Convolution kernels are
stored (spatial..., in, out), the layout XLA's CPU convolution reads (ResNet-50 otherwise copies
~40 MB of kernels per call). On the CPU, MatMul/Gemm weights are stored [N, K]: XLA:CPU's fp32
dot (YNNPACK) runs 3-25% faster and steadier with the weight's rows along the reduction
(bench/results/gemm_cpu.md). The function transposes each stored convolution kernel back to
ONNX's layout, which XLA cancels; a stored MatMul/Gemm weight reaches its product as a
`RowsAlongK` that the product contracts along its second axis: a transpose op in front of the
dot is not always folded (a batch-1 Gemm + bias then copies the whole weight on every call)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from compiler.ir import Graph

from .native_rewrites import CONV_GEMM, MATMUL_BIAS, MATMUL_TRANSPOSED, NATIVE_DOMAIN, TRANSPOSED_WEIGHT


def weight_layouts(graph: Graph, params: Mapping[str, np.ndarray], *, transpose_matmul_weights: bool = False
                   ) -> dict[str, tuple[int, ...]]:
    """name -> permutation from ONNX order to stored order, for weights read only as the kernel of
    ungrouped Conv nodes with a kernel larger than 1 (1x1 and depthwise convs are lowered as
    products that read the ONNX order; see conv_forms.py) and, with `transpose_matmul_weights`,
    for 2-D float weights read only as the [K, N] right operand of MatMul or Gemm."""
    layouts: dict[str, tuple[int, ...]] = {}
    for name, array in params.items():
        value = graph.initializers.get(name)
        if value is None or not value.uses:
            continue
        if array.ndim >= 3 and any(size != 1 for size in array.shape[2:]):
            if all(_plain_conv_kernel(use.node, use.index) for use in value.uses):
                layouts[name] = (*range(2, array.ndim), 1, 0)
        elif transpose_matmul_weights and array.ndim == 2 and array.dtype.kind == "f":
            if all(_right_operand_k_by_n(use.node, use.index) for use in value.uses):
                layouts[name] = (1, 0)
    return layouts


def _right_operand_k_by_n(node: Any, index: int) -> bool:
    if node.domain not in ("", "ai.onnx") or index != 1:
        return False
    if node.op_type == "MatMul":
        return True
    trans_b = node.attributes.get("transB")
    return node.op_type == "Gemm" and (trans_b is None or trans_b.value == 0)


@dataclass(frozen=True)
class PanelChoice:
    """How a weight reaches the native panel kernel: packed from its transpose (Gemm's transB, a
    transposed MatMul operand), and whether other ops read it too (a GPT-2 embedding that is also
    the LM head), so the plain weight stays beside the panels."""

    transposed: bool
    shared: bool


def panel_weights(graph: Graph, params: Mapping[str, np.ndarray], min_elements: int = 0) -> dict[str, PanelChoice]:
    """The 2-D float32 weights of at least `min_elements` that some MatMul or Gemm reads as its
    right operand, all such products in one orientation ([K, N] as stored, or [N, K] under Gemm's
    transB): the weights the native CPU kernel runs from packed panels (panel_matmul.py)."""
    chosen: dict[str, PanelChoice] = {}
    for name, array in params.items():
        value = graph.initializers.get(name)
        if value is None or not value.uses or array.ndim != 2 or array.dtype != np.float32 or array.size < min_elements:
            continue
        orientations = [_right_operand_orientation(use.node, use.index) for use in value.uses]
        products = {o for o in orientations if o is not None}
        if len(products) == 1:
            chosen[name] = PanelChoice(products.pop(), None in orientations)
    return chosen


def conv_gemm_kernels(graph: Graph, params: Mapping[str, np.ndarray]) -> list[str]:
    """The 4-D float32 kernels read only as ConvGemm's kernel (native_rewrites.fuse_conv_epilogue):
    the native CPU kernel runs them from row tiles (conv_gemm.pack_conv_kernel)."""
    chosen = []
    for name, array in params.items():
        value = graph.initializers.get(name)
        if value is None or not value.uses or array.ndim != 4 or array.dtype != np.float32:
            continue
        if all((use.node.domain, use.node.op_type, use.index) == (NATIVE_DOMAIN, CONV_GEMM, 1) for use in value.uses):
            chosen.append(name)
    return chosen


def conv_output_pixels(graph: Graph, name: str) -> int | None:
    """Output pixels per image of the ConvGemm nodes reading kernel `name`: their common H x W
    where every one's is known, else None."""
    value = graph.initializers.get(name)
    sizes = set()
    for use in value.uses if value is not None else ():
        shape = use.node.outputs[0].shape
        spatial = list(shape[2:]) if shape is not None and len(shape) == 4 else None
        if spatial is None or not all(isinstance(d, int) for d in spatial):
            return None
        sizes.add(spatial[0] * spatial[1])
    return sizes.pop() if len(sizes) == 1 else None


def reads_panels(node: Any, index: int) -> bool:
    """Whether input `index` of `node` is a product's right operand the panel kernel can read."""
    return _right_operand_orientation(node, index) is not None


def _right_operand_orientation(node: Any, index: int) -> bool | None:
    """False for a [K, N] right operand, True for Gemm's transB [N, K] one, None for any other use."""
    if (node.domain, index) == (NATIVE_DOMAIN, 1) and node.op_type in (MATMUL_BIAS, MATMUL_TRANSPOSED):
        transposed = node.attributes.get(TRANSPOSED_WEIGHT)
        return node.op_type == MATMUL_TRANSPOSED or bool(transposed is not None and transposed.value)
    if node.domain not in ("", "ai.onnx") or index != 1:
        return None
    if node.op_type == "MatMul":
        return False
    if node.op_type == "Gemm":
        trans_b = node.attributes.get("transB")
        return bool(trans_b is not None and trans_b.value)
    return None


def _plain_conv_kernel(node: Any, index: int) -> bool:
    """A Conv kernel XLA's convolution reads: ungrouped, and not a patch embedding (stride equal to
    the kernel: conv_forms.py multiplies those in ONNX order)."""
    group = node.attributes.get("group")
    if not (node.op_type == "Conv" and node.domain in ("", "ai.onnx") and index == 1 and (group is None or group.value == 1)):
        return False
    strides, shape = node.attributes.get("strides"), node.inputs[1].shape
    kernel = list(shape[2:]) if shape is not None else None
    return strides is None or kernel is None or list(strides.value) != kernel


def stored_params(params: Mapping[str, np.ndarray], layouts: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The params with the listed weights transposed into their stored layout."""
    return {name: np.ascontiguousarray(np.transpose(array, layouts[name])) if name in layouts else array
            for name, array in params.items()}


@dataclass(frozen=True)
class RowsAlongK:
    """A MatMul/Gemm weight of ONNX shape [K, N] stored as `rows` [N, K]; only products read it."""

    rows: Any


def onnx_order(array: Any, permutation: tuple[int, ...]) -> Any:
    """A stored weight as its readers see it inside the traced function: a MatMul/Gemm weight as
    RowsAlongK, anything else transposed back to its ONNX layout."""
    if tuple(permutation) == (1, 0):
        return RowsAlongK(array)
    return jnp.transpose(array, tuple(int(i) for i in np.argsort(permutation)))
