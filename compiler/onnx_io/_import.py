"""ONNX ModelProto -> IR Graph. Validates what a user can get wrong (missing or non-ONNX files,
truncation, unsafe external data, cycles, undefined values, unknown ops) with one-line errors."""

from __future__ import annotations

import functools
import os
from typing import Iterable

import onnx
from google.protobuf.message import DecodeError

from ..errors import InvalidGraphError, ModelLoadError
from ..ir import Attr, AttrType, Graph, GraphError, ModelInfo, Node, Opaque, Value
from ._types import tensor_from_proto, type_from_proto

KNOWN_EXTRA_DOMAINS = {"ai.graphkiln", "com.microsoft", "com.microsoft.nchwc", "ai.onnx.contrib"}
# ops onnxruntime registers in the ONNX domain though no ONNX opset has them (its optimizer writes
# SimplifiedLayerNormalization, an RMSNorm, into saved LLaMA-style models)
ONNXRUNTIME_ONNX_DOMAIN_OPS = {"SimplifiedLayerNormalization"}


def read_model_proto(path: str) -> onnx.ModelProto:
    """Parse the file at `path` (external data left on disk) or fail with one clear line."""
    if not isinstance(path, (str, os.PathLike)):
        raise ModelLoadError(f"expected a model path or onnx.ModelProto, got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelLoadError(f"model file not found: {path}", "check the path")
    if os.path.isdir(path):
        raise ModelLoadError(f"{path} is a folder, not an ONNX model file")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise ModelLoadError(f"cannot read {path}: {error.strerror}") from None
    if not data:
        raise ModelLoadError(f"{path} is empty, not an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as error:
        reason = "truncated or corrupt" if _looks_like_onnx_prefix(data) else "not an ONNX model"
        raise ModelLoadError(f"{path} is {reason} (protobuf: {error})", "re-export the model") from None
    _check_is_model(model, path)
    return model


def _looks_like_onnx_prefix(data: bytes) -> bool:
    # A ModelProto normally starts with field 1 (ir_version, varint): tag byte 0x08.
    return data[:1] == b"\x08"


def _check_is_model(model: onnx.ModelProto, where: str) -> None:
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise ModelLoadError(f"{where} is not an ONNX model (no IR version or graph)", "pass a .onnx file")
    if not model.opset_import:
        raise ModelLoadError(f"{where} declares no opset imports", "re-export the model with an opset")
    for field, message in ((model.graph.node, "node"), (model.graph.output, "output")):
        for item in field:
            if item.ByteSize() == 0:
                raise ModelLoadError(f"{where} is truncated or corrupt (empty {message} entry)")


def check_external_data(model: onnx.ModelProto, base_dir: str) -> None:
    """Refuse external-data locations that leave the model's folder or point at missing bytes."""
    base_real = os.path.realpath(base_dir)
    for tensor in _all_tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        if not location or os.path.isabs(location):
            raise ModelLoadError(
                f"initializer {tensor.name!r} has external-data location {location!r} that is not a relative path",
                "external data must sit in the model's folder",
            )
        target = os.path.realpath(os.path.join(base_real, location))
        if os.path.commonpath([base_real, target]) != base_real:
            raise ModelLoadError(
                f"initializer {tensor.name!r} has external-data location {location!r} outside the model's folder",
                "refusing to read it; move the data file beside the model",
            )
        if not os.path.isfile(target):
            raise ModelLoadError(f"external data file {location!r} of initializer {tensor.name!r} is missing")
        offset = int(info.get("offset", 0) or 0)
        length = int(info["length"]) if info.get("length") else None
        size = os.path.getsize(target)
        if offset > size or (length is not None and offset + length > size):
            raise ModelLoadError(f"external data file {location!r} is too short for initializer {tensor.name!r}")


def _all_tensors(graph: onnx.GraphProto) -> Iterable[onnx.TensorProto]:
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == onnx.AttributeProto.TENSORS:
                yield from attr.tensors
            elif attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_tensors(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _all_tensors(sub)


def check_ops_known(model: onnx.ModelProto) -> None:
    """Refuse nodes whose domain is unknown (neither ONNX's, ours, nor a model-local function's)."""
    known = _onnx_domains() | KNOWN_EXTRA_DOMAINS | {"", "ai.onnx"}
    functions = {(f.domain, f.name) for f in model.functions}
    checked: set[str] = set()
    for node, graph_name in _all_nodes(model.graph):
        if (node.domain, node.op_type) in functions:
            continue
        if node.domain not in known:
            raise InvalidGraphError(
                f"node {node.name or node.op_type!r} in graph {graph_name!r} uses op {node.op_type!r} "
                f"from unknown domain {node.domain!r}",
                "only ONNX domains, com.microsoft and ai.graphkiln are supported",
            )
        if node.domain in ("", "ai.onnx") and node.op_type not in checked and node.op_type not in ONNXRUNTIME_ONNX_DOMAIN_OPS:
            checked.add(node.op_type)
            version = _opset_of(model, "")
            try:
                onnx.defs.get_schema(node.op_type, version, "")
            except onnx.defs.SchemaError:
                raise InvalidGraphError(
                    f"node {node.name or node.op_type!r} uses op {node.op_type!r}, which ONNX opset {version} lacks"
                ) from None


@functools.lru_cache(maxsize=1)
def _onnx_domains() -> frozenset[str]:
    """The domains onnx's schema registry knows (read once: listing every schema is slow)."""
    return frozenset(schema.domain for schema in onnx.defs.get_all_schemas_with_history())


def _opset_of(model: onnx.ModelProto, domain: str) -> int:
    for entry in model.opset_import:
        if entry.domain in (domain, "ai.onnx" if domain == "" else domain):
            return entry.version
    return 1


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node, graph.name
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _all_nodes(sub)


class _Importer:
    """Builds IR graphs from GraphProtos, resolving names through nested scopes."""

    def __init__(self, base_dir: str | None):
        self.base_dir = base_dir

    def graph(self, proto: onnx.GraphProto, outer: dict[str, Value], *, opsets: dict[str, int] | None = None) -> Graph:
        scope: dict[str, Value] = dict(outer)
        value_types = {vi.name: vi for vi in proto.value_info}
        graph = Graph(name=proto.name, opset_imports=opsets, doc_string=proto.doc_string or None)
        initializer_names = {t.name for t in proto.initializer}
        inputs_by_name: dict[str, Value] = {}
        for vi in proto.input:
            value = Value(vi.name, type_from_proto(vi.type), doc_string=vi.doc_string or None)
            graph.add_input(value)
            scope[vi.name] = value
            inputs_by_name[vi.name] = value
        for tensor in proto.initializer:
            const = tensor_from_proto(tensor, self.base_dir)
            value = inputs_by_name.get(tensor.name)
            if value is None:
                value = Value(tensor.name, const_value=const)
            else:
                value.const_value = const
            graph.add_initializer(value)
            scope[tensor.name] = value
        for sparse in proto.sparse_initializer:
            dense = _sparse_to_dense(sparse)
            value = graph.make_constant(dense, name=sparse.values.name)
            scope[value.name] = value
        nodes = self._nodes_in_order(proto, scope, initializer_names)
        for node_proto in nodes:
            node = self.node(node_proto, scope, graph)
            graph.append(node)
            for value in node.outputs:
                if value.name:
                    info = value_types.get(value.name)
                    if info is not None:
                        value.type = type_from_proto(info.type)
                    scope[value.name] = value
        for vi in proto.output:
            value = scope.get(vi.name)
            if value is None:
                raise InvalidGraphError(f"graph {proto.name!r} output {vi.name!r} is never produced")
            declared = type_from_proto(vi.type)
            if declared is not None:
                value.type = declared
            if vi.doc_string:
                value.doc_string = vi.doc_string
            graph.outputs.append(value)
        return graph

    def _nodes_in_order(self, proto: onnx.GraphProto, scope: dict[str, Value], initializers: set[str]):
        """The nodes in an order where each input is defined first; files are allowed to list
        them out of order, but a cycle or a read of a value nobody defines is an error."""
        producer_of: dict[str, int] = {}
        for index, node in enumerate(proto.node):
            for name in node.output:
                if name:
                    if name in producer_of:
                        other = proto.node[producer_of[name]]
                        raise InvalidGraphError(
                            f"value {name!r} is produced twice (by {other.name or other.op_type!r} "
                            f"and {node.name or node.op_type!r})"
                        )
                    producer_of[name] = index
        deps: list[set[int]] = []
        for index, node in enumerate(proto.node):
            needed = set()
            for name in list(node.input) + _captured_names(node):
                if not name or name in scope:
                    continue
                if name not in producer_of:
                    raise InvalidGraphError(
                        f"node {node.name or node.op_type!r} reads undefined value {name!r}",
                        "every input must be a graph input, an initializer or another node's output",
                    )
                needed.add(producer_of[name])
            deps.append(needed)
        in_order = all(all(d < i for d in needed) for i, needed in enumerate(deps))
        if in_order:
            return list(proto.node)
        import networkx as nx

        digraph = nx.DiGraph()
        digraph.add_nodes_from(range(len(proto.node)))
        digraph.add_edges_from((d, i) for i, needed in enumerate(deps) for d in needed)
        try:
            order = list(nx.lexicographical_topological_sort(digraph))
        except nx.NetworkXUnfeasible:
            cycle = nx.find_cycle(digraph)
            names = [proto.node[a].name or proto.node[a].op_type for a, _ in cycle]
            raise InvalidGraphError(
                "graph has a cycle: " + " -> ".join(repr(n) for n in names + names[:1]),
                "ONNX graphs must be acyclic",
            ) from None
        return [proto.node[i] for i in order]

    def node(self, proto: onnx.NodeProto, scope: dict[str, Value], graph: Graph) -> Node:
        inputs = []
        for name in proto.input:
            inputs.append(scope[name] if name else None)
        attributes = [self.attribute(attr, scope) for attr in proto.attribute]
        outputs = [Value(name) for name in proto.output]
        node = Node(
            proto.op_type,
            inputs,
            attributes,
            domain=proto.domain,
            outputs=outputs,
            name=proto.name or None,
            doc_string=proto.doc_string or None,
            overload=getattr(proto, "overload", "") or "",
        )
        for entry in proto.metadata_props:
            node.meta.setdefault("metadata_props", {})[entry.key] = entry.value
        return node

    def attribute(self, proto: onnx.AttributeProto, scope: dict[str, Value]) -> Attr:
        kind = AttrType(proto.type) if proto.type else _guess_attr_type(proto)
        ref = proto.ref_attr_name or None
        doc = proto.doc_string or None
        if kind == AttrType.FLOAT:
            value = proto.f
        elif kind == AttrType.INT:
            value = proto.i
        elif kind == AttrType.STRING:
            value = _decode(proto.s)
        elif kind == AttrType.TENSOR:
            value = tensor_from_proto(proto.t, self.base_dir)
        elif kind == AttrType.GRAPH:
            value = self.graph(proto.g, scope)
        elif kind == AttrType.FLOATS:
            value = list(proto.floats)
        elif kind == AttrType.INTS:
            value = list(proto.ints)
        elif kind == AttrType.STRINGS:
            value = [_decode(s) for s in proto.strings]
        elif kind == AttrType.TENSORS:
            value = [tensor_from_proto(t, self.base_dir) for t in proto.tensors]
        elif kind == AttrType.GRAPHS:
            value = [self.graph(g, scope) for g in proto.graphs]
        elif kind == AttrType.SPARSE_TENSOR:
            value = Opaque("sparse_tensor", proto.sparse_tensor.SerializeToString())
        elif kind == AttrType.SPARSE_TENSORS:
            value = [Opaque("sparse_tensor", t.SerializeToString()) for t in proto.sparse_tensors]
        elif kind == AttrType.TYPE_PROTO:
            value = type_from_proto(proto.tp)
        else:
            value = [type_from_proto(t) for t in proto.type_protos]
        return Attr(proto.name, kind, value, ref, doc)


def _captured_names(node: onnx.NodeProto) -> list[str]:
    """Names a node's subgraphs read from the enclosing scope."""
    names: list[str] = []
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for graph in graphs:
            defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
            for inner in graph.node:
                defined.update(inner.output)
            for inner in graph.node:
                names.extend(n for n in inner.input if n and n not in defined)
                names.extend(n for n in _captured_names(inner) if n not in defined)
            names.extend(o.name for o in graph.output if o.name not in defined)
    return names


def _guess_attr_type(proto: onnx.AttributeProto) -> AttrType:
    for field, kind in (("f", AttrType.FLOAT), ("i", AttrType.INT), ("s", AttrType.STRING), ("t", AttrType.TENSOR), ("g", AttrType.GRAPH)):
        if proto.HasField(field):
            return kind
    for field, kind in (("floats", AttrType.FLOATS), ("ints", AttrType.INTS), ("strings", AttrType.STRINGS), ("tensors", AttrType.TENSORS), ("graphs", AttrType.GRAPHS)):
        if len(getattr(proto, field)):
            return kind
    raise InvalidGraphError(f"attribute {proto.name!r} has no type and no value")


def _decode(data: bytes) -> str | bytes:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def _sparse_to_dense(sparse: onnx.SparseTensorProto):
    import numpy as np
    from onnx import numpy_helper

    values = numpy_helper.to_array(sparse.values)
    indices = numpy_helper.to_array(sparse.indices)
    dense = np.zeros(tuple(sparse.dims), dtype=values.dtype)
    flat = dense.reshape(-1)
    if indices.ndim == 1:
        flat[indices] = values
    else:
        flat[np.ravel_multi_index(tuple(indices.T), dense.shape)] = values
    return dense


def model_to_graph(model: onnx.ModelProto, base_dir: str | None = None, source_path: str | None = None) -> Graph:
    """Import a parsed, validated ModelProto (functions already inlined) into an IR Graph."""
    opsets = {entry.domain if entry.domain != "ai.onnx" else "": entry.version for entry in model.opset_import}
    info = ModelInfo(
        ir_version=model.ir_version,
        producer_name=model.producer_name,
        producer_version=model.producer_version,
        domain=model.domain,
        model_version=model.model_version,
        doc_string=model.doc_string,
        metadata_props={entry.key: entry.value for entry in model.metadata_props},
        source_path=source_path,
    )
    try:
        graph = _Importer(base_dir).graph(model.graph, {}, opsets=opsets)
    except GraphError as error:
        raise InvalidGraphError(str(error)) from None
    graph.model = info
    return graph
