"""Type and shape inference for IR graphs: ONNX's own inference (with data propagation, so shape
subgraphs resolve) plus the type rules of ai.graphkiln ops. Known facts are never lost: inferred
types only fill in what is unknown, and graph inputs keep their declared types."""

from __future__ import annotations

import math

import onnx

from .custom_ops import get_custom_op
from .ir import DataType, Graph, Node, Shape, TensorType, Value, ValueType
from .onnx_io._types import type_from_proto

GENERATED_DIM_PREFIX = "unk__"  # onnx's inference names each dim it cannot tell unk__<n>
_INLINE_CONST_LIMIT = 4096  # elements; larger initializers go in as typed inputs (shape only)


def infer_types(graph: Graph, *, rounds: int = 3, trust_declared: bool = False,
                imported_from: onnx.ModelProto | None = None) -> None:
    """Fill in unknown value types throughout `graph` (subgraphs included). With `trust_declared`
    (at import), a graph whose every value the exporter already typed completely is left as it is.
    `imported_from`, the ModelProto the graph was just built from, lets a graph of standard ops be
    inferred from a weight-free copy of that proto instead of a re-export of the IR."""
    if trust_declared and fully_typed(graph):
        return  # the exporter's dims (ints or its own symbols) are what inference would find
    has_custom = any(not _is_standard(node) for node in graph.all_nodes())
    if imported_from is not None and not has_custom and _in_topological_order(imported_from.graph):
        _merge_inferred(_named_values(graph), _run_onnx_inference(_light_proto(imported_from)))
        return
    for _ in range(rounds):
        changed = _infer_custom(graph)
        changed |= _infer_onnx(graph)
        if not changed or not has_custom:
            break  # ONNX inference is its own fixed point: only custom ops' rules can add to it


def fully_typed(graph: Graph) -> bool:
    """Whether every value a node writes has a tensor type whose dims are all ints or symbols
    (exporters such as PyTorch's dynamo exporter write such value_info for the whole graph)."""
    for node in graph.all_nodes():
        for value in node.outputs:
            if value.name == "":
                continue
            value_type = value.type
            if not isinstance(value_type, TensorType) or not value_type.dtype or value_type.shape is None:
                return False
            if any(dim is None for dim in value_type.shape):
                return False
    return True


def _is_standard(node: Node) -> bool:
    """Whether onnx's own inference knows the node's domain (else a custom op's type rule does)."""
    return node.domain in ("", "ai.onnx", "ai.onnx.ml")


def _infer_custom(graph: Graph) -> bool:
    changed = False
    for node in graph.all_nodes():
        if _is_standard(node):
            continue
        op = get_custom_op(node.domain, node.op_type)
        if op is None:
            continue
        try:
            types = op.infer(node)
        except Exception:
            continue
        for value, inferred in zip(node.outputs, types):
            changed |= merge_type(value, inferred)
    return changed


def _infer_onnx(graph: Graph) -> bool:
    model = _light_model(graph)
    return _merge_inferred(_named_values(graph), _run_onnx_inference(model))


def _run_onnx_inference(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Inferred value infos by name (subgraphs included); data propagation where it runs."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception:
        try:
            inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=False)
        except Exception:
            return {}
    found: dict[str, onnx.ValueInfoProto] = {}
    _collect_value_infos(inferred.graph, found)
    return found


def _merge_inferred(names: dict[str, Value], found: dict[str, onnx.ValueInfoProto]) -> bool:
    changed = False
    for name, value in names.items():
        info = found.get(name)
        if info is None or value.is_graph_input():
            continue
        changed |= merge_type(value, type_from_proto(info.type))
    return changed


def _named_values(graph: Graph) -> dict[str, Value]:
    """Every named value a node writes (subgraphs included), and the graph outputs."""
    names: dict[str, Value] = {}
    for node in graph.all_nodes():
        for value in node.outputs:
            if value.name:
                names[value.name] = value
    for value in graph.outputs:
        if value.name:
            names.setdefault(value.name, value)
    return names


def _collect_value_infos(graph: onnx.GraphProto, found: dict[str, onnx.ValueInfoProto]) -> None:
    for info in list(graph.value_info) + list(graph.output):
        found[info.name] = info
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _collect_value_infos(attr.g, found)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    _collect_value_infos(sub, found)


def _keep_data(dtype: DataType, size: int) -> bool:
    """Which initializers inference sees with their values: float data never decides a shape,
    so only tiny float tensors; integer tensors up to 64k elements (shape vectors, indices)."""
    return size <= 16 if dtype.is_floating else size <= 1 << 16


def _keep_for_inference(value: Value) -> bool:
    tensor = value.const_value
    return _keep_data(tensor.dtype, tensor.size) and (tensor.is_loaded or not tensor.dtype.is_floating)


def _light_model(graph: Graph) -> onnx.ModelProto:
    """Export `graph` for inference without bulky weights: big initializers become typed inputs;
    known outputs of custom ops go in as value_info so inference continues past them."""
    from .onnx_io._export import _Exporter, graph_to_model

    model = graph_to_model(graph, value_info=False, keep_data=_keep_for_inference)
    custom = [node for node in graph.nodes if not _is_standard(node)]
    if custom:  # a second exporter only names values; build it only when there is something to write
        exporter = _Exporter(graph, value_info=False)
        for node in custom:
            for value in node.outputs:
                if value.type is not None and value.name:
                    exporter.value_info_of(value, model.graph.value_info.add())
    return model


def _in_topological_order(graph: onnx.GraphProto) -> bool:
    """Whether every node's inputs are defined before it (ONNX inference reads nodes in file order;
    files listing them otherwise are inferred from the IR, which sorted them at import)."""
    defined = {info.name for info in graph.input} | {tensor.name for tensor in graph.initializer}
    defined.update(sparse.values.name for sparse in graph.sparse_initializer)
    defined.add("")
    for node in graph.node:
        if not defined.issuperset(node.input):
            return False
        defined.update(node.output)
    return True


def _light_proto(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of an imported ModelProto for inference, made by protobuf (no Python per node):
    nodes, inputs, outputs and value_info as they are; big initializers become typed inputs."""
    light = onnx.ModelProto(ir_version=model.ir_version)
    light.opset_import.extend(model.opset_import)
    source, target = model.graph, light.graph
    target.node.extend(source.node)
    target.input.extend(source.input)
    target.output.extend(source.output)
    target.value_info.extend(source.value_info)
    target.sparse_initializer.extend(source.sparse_initializer)
    declared = {info.name for info in source.input}
    for tensor in source.initializer:
        size = math.prod(tensor.dims)
        if tensor.data_location != onnx.TensorProto.EXTERNAL and _keep_data(DataType(tensor.data_type), size):
            target.initializer.add().CopyFrom(tensor)
        elif tensor.name not in declared:
            info = target.input.add()
            info.name = tensor.name
            info.type.tensor_type.elem_type = tensor.data_type
            shape = info.type.tensor_type.shape
            shape.SetInParent()
            for dim in tensor.dims:
                shape.dim.add().dim_value = dim
    return light


def merge_type(value: Value, inferred: ValueType | None) -> bool:
    """Refine `value.type` with `inferred`; returns True when anything new was learned."""
    if inferred is None:
        return False
    current = value.type
    if current is None:
        value.type = inferred
        return True
    if not isinstance(current, TensorType) or not isinstance(inferred, TensorType):
        return False
    dtype = current.dtype if current.dtype else inferred.dtype
    shape = current.shape
    if inferred.shape is not None:
        if shape is None:
            shape = inferred.shape
        elif len(shape) == len(inferred.shape):
            shape = Shape(new if _more_known(old, new) else old for old, new in zip(shape, inferred.shape))
    merged = TensorType(dtype, shape)
    if merged != current:
        value.type = merged
        return True
    return False


def is_unknown_dim(dim: int | str | None) -> bool:
    """Whether a dim says nothing: None, or a name onnx's inference made up for an unknown dim."""
    return dim is None or (isinstance(dim, str) and dim.startswith(GENERATED_DIM_PREFIX))


def _more_known(old: int | str | None, new: int | str | None) -> bool:
    """Whether inferred dim `new` says more than `old`: a number beats a name, a real name beats a
    made-up one, anything beats nothing."""
    if new is None or old == new:
        return False
    return is_unknown_dim(old) and not is_unknown_dim(new) or (isinstance(old, str) and isinstance(new, int))


def output_types_like(node: Node, index: int = 0) -> list[ValueType | None]:
    """A type rule for ops whose outputs all look like input `index` (common for fused ops)."""
    source = node.inputs[index]
    return [source.type if source is not None else None for _ in node.outputs]
