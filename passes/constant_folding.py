"""Constant folding: evaluate nodes whose inputs are all known (and Shape/Size of static shapes),
replacing them by initializers. A size cap keeps huge results from ever being materialized."""

from __future__ import annotations

import numpy as np

from compiler.ir import DataType, Graph, Node, SequenceType, OptionalType, TensorType, Value, constant_node_value
from compiler.node_eval import evaluate_node
from compiler.pass_infra import Pass, PassContext, PassResult, register_pass

DEFAULT_SIZE_LIMIT = 16 * 1024 * 1024  # bytes of one folded result

NON_DETERMINISTIC = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
)
# Folding these would undo quantization or training structure that later stages rely on.
KEEP = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
# Outputs no larger than their inputs (broadcast aside), so a shape is not needed to bound them.
NON_EXPANDING = frozenset(
    {
        "Shape", "Size", "Gather", "GatherElements", "Slice", "Concat", "Unsqueeze", "Squeeze", "Reshape",
        "Flatten", "Transpose", "Cast", "CastLike", "Identity", "Neg", "Abs", "Sqrt", "Reciprocal", "Exp",
        "Log", "Floor", "Ceil", "Not", "Sign", "ReduceSum", "ReduceProd", "ReduceMax", "ReduceMin",
        "ReduceMean", "ArgMax", "ArgMin", "NonZero", "Relu", "Sigmoid", "Tanh", "Erf", "Softmax",
        # elementwise with broadcasting: the inputs' broadcast shape bounds them
        "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Max", "Min", "Where", "Equal", "Less", "LessOrEqual",
        "Greater", "GreaterOrEqual", "And", "Or", "Xor",
    }
)


def _made_count(node: Node, inputs: list[np.ndarray | None]) -> int | None:
    """Elements that an op making a tensor from a shape (Expand, ConstantOfShape, Tile, Range) will
    write, read from its constant inputs: their output type is unknown until inference runs again
    (Swin's window masks expand shapes that were folded a moment earlier)."""
    try:
        if node.op_type == "Expand":
            return int(np.prod(np.broadcast_shapes(inputs[0].shape, tuple(int(d) for d in inputs[1].reshape(-1)))))
        if node.op_type == "ConstantOfShape":
            return int(np.prod(inputs[0].astype(np.int64)))
        if node.op_type == "Tile":
            return int(np.prod(np.asarray(inputs[0].shape, np.int64) * inputs[1].astype(np.int64)))
        if node.op_type == "Range":
            start, limit, delta = (float(np.asarray(a).reshape(())) for a in inputs)
            return max(0, int(np.ceil((limit - start) / delta)))
    except (AttributeError, ValueError, TypeError, ZeroDivisionError, IndexError, OverflowError):
        return None
    return None


def _input_constant(value: Value | None) -> np.ndarray | None:
    if value is None:
        return None
    return value.constant()


def _predicted_bytes(node: Node, inputs: list[np.ndarray | None]) -> int | None:
    """Bytes the outputs will take, from inferred types; None when it cannot be bounded."""
    total = 0
    for value in node.outputs:
        if value.name == "":
            continue
        if not isinstance(value.type, TensorType):
            return None
        count = value.shape.numel() if value.shape is not None else None
        if count is None:
            count = _made_count(node, inputs)
        if count is None:
            if node.op_type not in NON_EXPANDING:
                return None
            arrays = [a for a in inputs if a is not None]
            try:
                count = int(np.prod(np.broadcast_shapes(*[a.shape for a in arrays]))) if arrays else 0
            except ValueError:
                count = sum(a.size for a in arrays)
            count = max(count, sum(a.size for a in arrays))
        bits = value.dtype.bitwidth if value.dtype else 64
        total += count * max(bits, 8) // 8
    return total


class ConstantFolder:
    """Folds what it can in one graph and counts what it did and what it refused."""

    def __init__(self, graph: Graph, size_limit: int):
        self.graph = graph
        self.size_limit = size_limit
        self.folded = 0
        self.skipped_large = 0
        self.bytes_created = 0

    def fold_all(self) -> None:
        for node in list(self.graph.nodes):
            if node.graph is self.graph:
                self.fold(node)

    def fold(self, node: Node) -> bool:
        if node.domain or node.op_type in NON_DETERMINISTIC or node.op_type in KEEP or node.subgraphs():
            return False
        if any(not isinstance(v.type, (TensorType, type(None))) for v in node.outputs):
            return False
        if node.op_type == "Identity" and node.output.is_graph_output():
            return False  # already the cheapest way to give a constant output its name
        if node.op_type == "Identity" and node.inputs[0] is not None and node.inputs[0].const_value is not None:
            # readers take the initializer itself: no copy of the weight, which stays as imported
            self.graph.replace_all_uses_with(node.output, node.inputs[0])
            self.graph.remove_node(node)
            self.folded += 1
            return True
        results = self._evaluate(node)
        if results is None:
            return False
        for old, array in zip(node.outputs, results):
            if array is None or old.name == "":
                continue
            array = np.asarray(array)
            dtype = old.dtype if old.dtype else DataType.from_numpy(array.dtype)
            if dtype != DataType.STRING and array.dtype != dtype.numpy:
                array = array.astype(dtype.numpy)
            name = old.name or "folded"
            if old.is_graph_output():
                name = self.graph.make_name(name)
            else:
                old.name = self.graph.make_name(f"{name}_unfolded")
            new = self.graph.make_constant(array, name=name, dtype=dtype)
            self.bytes_created += array.nbytes
            self.graph.replace_all_uses_with(old, new)
        if all(not v.uses and not v.is_graph_output() for v in node.outputs):
            self.graph.remove_node(node)
        self.folded += 1
        return True

    def _evaluate(self, node: Node) -> list[np.ndarray | None] | None:
        if node.op_type == "Constant":
            value = constant_node_value(node)
            return None if value is None else [value]
        if node.op_type in ("Shape", "Size"):
            return _static_shape_facts(node)
        arrays: list[np.ndarray | None] = []
        for value in node.inputs:
            array = _input_constant(value)
            if value is not None and array is None:
                return None
            arrays.append(array)
        predicted = _predicted_bytes(node, arrays)
        if predicted is None or predicted > self.size_limit:
            self.skipped_large += predicted is not None
            return None
        try:
            return evaluate_node(node, arrays, self.graph.root.opset_imports)
        except Exception:
            return None


def _static_shape_facts(node: Node) -> list[np.ndarray] | None:
    """Shape/Size of an input whose shape is fully known, without touching its data."""
    source = node.inputs[0]
    if source is None or source.shape is None or not source.shape.is_static:
        return None
    dims = list(source.shape)
    if node.op_type == "Size":
        return [np.array(int(np.prod(dims, dtype=np.int64)), dtype=np.int64)]
    start, end = node.attr("start", 0), node.attr("end", None)
    return [np.array(dims[start:end], dtype=np.int64)]


@register_pass
class ConstantFolding(Pass):
    name = "fold_constants"
    description = "evaluate nodes with constant inputs (size-capped) and Shape/Size of static shapes"
    pins_shapes = True

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        limit = int(ctx.option("fold_size_limit", DEFAULT_SIZE_LIMIT))
        totals = {"nodes_folded": 0, "skipped_over_size_limit": 0, "bytes_created": 0}
        for target in graph.self_and_subgraphs():
            folder = ConstantFolder(target, limit)
            folder.fold_all()
            totals["nodes_folded"] += folder.folded
            totals["skipped_over_size_limit"] += folder.skipped_large
            totals["bytes_created"] += folder.bytes_created
        return PassResult(graph, totals["nodes_folded"] > 0, totals)
