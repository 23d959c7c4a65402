"""Evaluate one node on constant inputs: fast numpy kernels for the ops that fill shape
computations, onnx.reference for everything else. Used by constant folding."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import onnx

from .ir import DataType, Node, Shape
from .onnx_io._export import _Exporter

Kernel = Callable[[Node, list], list]


def _attr_axes(node: Node, inputs: list, position: int) -> list[int] | None:
    if len(inputs) > position and inputs[position] is not None:
        return [int(a) for a in np.asarray(inputs[position]).reshape(-1)]
    axes = node.attr("axes")
    return None if axes is None else list(axes)


def _shape(node: Node, inputs: list) -> list:
    dims = np.asarray(inputs[0]).shape if not isinstance(inputs[0], Shape) else inputs[0]
    start, end = node.attr("start", 0), node.attr("end", None)
    return [np.array(list(dims)[start:end], dtype=np.int64)]


def _gather(node: Node, inputs: list) -> list:
    return [np.take(inputs[0], np.asarray(inputs[1], dtype=np.int64), axis=node.attr("axis", 0))]


def _concat(node: Node, inputs: list) -> list:
    return [np.concatenate([np.asarray(x) for x in inputs], axis=node.attr("axis"))]


def _unsqueeze(node: Node, inputs: list) -> list:
    axes = _attr_axes(node, inputs, 1)
    data = np.asarray(inputs[0])
    rank = data.ndim + len(axes)
    for axis in sorted(a % rank for a in axes):
        data = np.expand_dims(data, axis)
    return [data]


def _squeeze(node: Node, inputs: list) -> list:
    axes = _attr_axes(node, inputs, 1)
    data = np.asarray(inputs[0])
    return [np.squeeze(data) if axes is None else np.squeeze(data, axis=tuple(a % data.ndim for a in axes))]


def _cast(node: Node, inputs: list) -> list:
    target = DataType(node.attr("to"))
    if target == DataType.STRING or np.asarray(inputs[0]).dtype == object:
        raise NotImplementedError
    return [np.asarray(inputs[0]).astype(target.numpy)]


def _reshape(node: Node, inputs: list) -> list:
    data, shape = np.asarray(inputs[0]), [int(s) for s in np.asarray(inputs[1]).reshape(-1)]
    if not node.attr("allowzero", 0):
        shape = [data.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return [data.reshape(shape)]


def _binary(function: Callable) -> Kernel:
    def kernel(node: Node, inputs: list) -> list:
        a, b = np.asarray(inputs[0]), np.asarray(inputs[1])
        if a.dtype != b.dtype:
            raise NotImplementedError
        result = function(a, b)
        return [result.astype(a.dtype) if result.dtype != np.bool_ else result]
    return kernel


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu":
        if np.any(b == 0):
            raise NotImplementedError
        return np.trunc(a / b).astype(a.dtype)
    return a / b


_KERNELS: dict[str, Kernel] = {
    "Shape": _shape,
    "Gather": _gather,
    "Concat": _concat,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Cast": _cast,
    "Reshape": _reshape,
    "Identity": lambda node, inputs: [np.asarray(inputs[0])],
    "Add": _binary(np.add),
    "Sub": _binary(np.subtract),
    "Mul": _binary(np.multiply),
    "Div": _binary(_div),
    "Equal": _binary(np.equal),
}


def evaluate_node(node: Node, inputs: Sequence[np.ndarray | None], opset_imports: dict[str, int]) -> list[np.ndarray]:
    """Outputs of `node` on constant `inputs` (None for absent optional inputs)."""
    kernel = _KERNELS.get(node.op_type) if not node.domain else None
    if kernel is not None:
        try:
            return kernel(node, list(inputs))
        except (NotImplementedError, ValueError, TypeError, IndexError):
            pass
    return _evaluate_with_onnx_reference(node, inputs, opset_imports)


def _evaluate_with_onnx_reference(node: Node, inputs: Sequence[np.ndarray | None], opset_imports: dict[str, int]) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    proto = _Exporter(None, value_info=False).node(node)
    input_names = [f"in{i}" if v is not None else "" for i, v in enumerate(inputs)]
    output_names = [f"out{i}" if v.name != "" else "" for i, v in enumerate(node.outputs)]
    del proto.input[:]
    proto.input.extend(input_names)
    del proto.output[:]
    proto.output.extend(output_names)
    graph_inputs = [
        onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype) if np.asarray(v).dtype != object else onnx.TensorProto.STRING, np.asarray(v).shape)
        for name, v in zip(input_names, inputs) if name
    ]
    graph_outputs = [onnx.helper.make_empty_tensor_value_info(name) for name in output_names if name]
    graph = onnx.helper.make_graph([proto], "fold", graph_inputs, graph_outputs)
    opsets = [onnx.helper.make_opsetid(domain, version) for domain, version in opset_imports.items()]
    model = onnx.helper.make_model(graph, opset_imports=opsets)
    evaluator = ReferenceEvaluator(model)
    feeds = {name: np.asarray(v) for name, v in zip(input_names, inputs) if name}
    results = evaluator.run(None, feeds)
    outputs: list[np.ndarray] = []
    position = 0
    for name in output_names:
        if name:
            outputs.append(np.asarray(results[position]))
            position += 1
        else:
            outputs.append(None)
    return outputs
