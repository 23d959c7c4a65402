"""verify(graph): the structural invariants of the IR plus ONNX type-constraint checks."""

from __future__ import annotations

from functools import lru_cache

import onnx

from .ir import Graph, Node, TensorType, VerificationError, verify_structure


def verify(graph: Graph) -> None:
    """Raise VerificationError when `graph` is malformed: a cycle, a dangling or undefined use, two
    producers for one value, or dtypes that break the op's ONNX type constraints."""
    verify_structure(graph)
    opset = graph.opset
    for node in graph.all_nodes():
        _check_types(node, opset)


@lru_cache(maxsize=4096)
def _schema(op_type: str, domain: str, opset: int):
    try:
        return onnx.defs.get_schema(op_type, opset, domain)
    except onnx.defs.SchemaError:
        return None


def _check_types(node: Node, opset: int) -> None:
    if node.domain not in ("", "ai.onnx"):
        return
    schema = _schema(node.op_type, "", opset)
    if schema is None:
        return
    bound: dict[str, tuple[int, str]] = {}
    slots = _formal_slots(schema.inputs, len(node.inputs))
    for position, (value, type_str) in enumerate(zip(node.inputs, slots)):
        _bind(node, bound, type_str, value, f"input {position}")
    out_slots = _formal_slots(schema.outputs, len(node.outputs))
    for position, (value, type_str) in enumerate(zip(node.outputs, out_slots)):
        _bind(node, bound, type_str, value, f"output {position}")


def _formal_slots(params, count: int) -> list[str | None]:
    """The type parameter of each actual input/output position (None where unconstrained)."""
    slots: list[str | None] = [p.type_str for p in params]
    if params and params[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic:
        last = params[-1]
        if not last.is_homogeneous:
            slots[-1] = None
        slots.extend([slots[-1]] * max(0, count - len(slots)))
    return slots[:count] + [None] * max(0, count - len(slots))


def _bind(node: Node, bound: dict, type_str: str | None, value, where: str) -> None:
    if value is None or type_str is None or not isinstance(value.type, TensorType):
        return
    dtype = value.type.dtype
    if not dtype:
        return
    if type_str.startswith("tensor("):
        return
    previous = bound.get(type_str)
    if previous is None:
        bound[type_str] = (int(dtype), where)
        return
    if previous[0] != int(dtype):
        from .ir import DataType

        raise VerificationError(
            f"type mismatch at {node.op_type} {node.name!r}: {where} ({value.name!r}) is "
            f"{DataType(dtype).name.lower()} but {previous[1]} is {DataType(previous[0]).name.lower()} "
            f"(both are {type_str})"
        )
