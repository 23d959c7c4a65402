"""IR Graph -> ONNX ModelProto, and atomic saving with optional external data."""

from __future__ import annotations

import os
import tempfile
from typing import Callable, Iterable

import onnx

from ..errors import OutputError
from ..ir import Attr, AttrType, Graph, Node, Value
from ._types import tensor_to_proto, type_to_proto

GRAPHKILN_DOMAIN = "ai.graphkiln"


class _Namer:
    """Gives every value (or node) a unique, stable name at export: the first holder of a name keeps
    it, a repeat or an unnamed one gets a fresh name no other holds."""

    def __init__(self, holders: Iterable[Value | Node]):
        self.taken: set[str] = set()
        self.names: dict[int, str] = {}
        self.counter = 0
        for holder in holders:
            if holder.name and holder.name not in self.taken:
                self.taken.add(holder.name)
                self.names[id(holder)] = holder.name

    def name(self, value: Value | Node) -> str:
        known = self.names.get(id(value))
        if known is not None:
            return known
        if value.name == "":
            return ""
        base = value.name or "v"
        while True:
            candidate = f"{base}__{self.counter}"
            self.counter += 1
            if candidate not in self.taken:
                break
        self.taken.add(candidate)
        self.names[id(value)] = candidate
        return candidate


class _OwnNames:
    """Uses each value's own name (for exporting single nodes)."""

    def name(self, value: Value) -> str:
        return value.name if value.name is not None else "v"


def _values_in_scope(graph: Graph) -> Iterable[Value]:
    yield from graph.inputs
    yield from graph.initializers.values()
    for node in graph.nodes:
        yield from node.outputs


class _Exporter:
    def __init__(self, graph: Graph | None, *, value_info: bool, keep_data: Callable[[Value], bool] | None = None):
        if graph is not None:
            _ensure_names(graph)
            self.namer = _Namer(v for scope in graph.self_and_subgraphs() for v in _values_in_scope(scope))
            # node names too: a graph re-imported after onnx's version converter restarts the counter
            # that names new nodes, and onnxruntime refuses a model with two nodes of one name
            self.node_namer = _Namer(graph.all_nodes())
        else:
            self.namer = self.node_namer = _OwnNames()
        self.value_info = value_info
        self.keep_data = keep_data

    def graph(self, graph: Graph, proto: onnx.GraphProto | None = None) -> onnx.GraphProto:
        proto = onnx.GraphProto() if proto is None else proto
        proto.name = graph.name or "graph"
        if graph.doc_string:
            proto.doc_string = graph.doc_string
        for value in graph.inputs:
            self.value_info_of(value, proto.input.add())
        input_ids = {id(v) for v in graph.inputs}
        for name, value in graph.initializers.items():
            if self.keep_data is None or graph.parent is not None or self.keep_data(value):
                tensor_to_proto(value.const_value, self.namer.name(value), into=proto.initializer.add())
            elif id(value) not in input_ids:
                self.value_info_of(value, proto.input.add())
        for node in graph.nodes:
            self.node(node, proto.node.add())
        for value in graph.outputs:
            self.value_info_of(value, proto.output.add())
        if self.value_info:
            io_ids = {id(v) for v in graph.inputs} | {id(v) for v in graph.outputs}
            for node in graph.nodes:
                for value in node.outputs:
                    if value.type is not None and value.name != "" and id(value) not in io_ids:
                        self.value_info_of(value, proto.value_info.add())
        return proto

    def value_info_of(self, value: Value, into: onnx.ValueInfoProto | None = None) -> onnx.ValueInfoProto:
        """The value's name and type, written into `into` when given (repeated fields filled in place)."""
        info = onnx.ValueInfoProto() if into is None else into
        info.name = self.namer.name(value)
        if value.type is not None:
            type_to_proto(value.type, info.type)
        if value.doc_string:
            info.doc_string = value.doc_string
        return info

    def node(self, node: Node, into: onnx.NodeProto | None = None) -> onnx.NodeProto:
        proto = onnx.NodeProto() if into is None else into
        proto.op_type = node.op_type
        if node.domain:
            proto.domain = node.domain
        if node.name:
            proto.name = self.node_namer.name(node)
        if node.doc_string:
            proto.doc_string = node.doc_string
        if node.overload:
            proto.overload = node.overload
        proto.input.extend("" if v is None else self.namer.name(v) for v in node.inputs)
        proto.output.extend(self.namer.name(v) for v in node.outputs)
        for attr in node.attributes.values():
            self.attribute(attr, proto.attribute.add())
        for key, value in node.meta.get("metadata_props", {}).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        return proto

    def attribute(self, attr: Attr, into: onnx.AttributeProto | None = None) -> onnx.AttributeProto:
        proto = onnx.AttributeProto() if into is None else into
        proto.name = attr.name
        proto.type = int(attr.type)
        if attr.ref_attr_name:
            proto.ref_attr_name = attr.ref_attr_name
        if attr.doc_string:
            proto.doc_string = attr.doc_string
        if attr.ref_attr_name:
            return proto
        value = attr.value
        kind = attr.type
        if kind == AttrType.FLOAT:
            proto.f = float(value)
        elif kind == AttrType.INT:
            proto.i = int(value)
        elif kind == AttrType.STRING:
            proto.s = value if isinstance(value, bytes) else str(value).encode()
        elif kind == AttrType.TENSOR:
            tensor_to_proto(value, getattr(value, "name", None), into=proto.t)
        elif kind == AttrType.GRAPH:
            self.graph(value, proto.g)
        elif kind == AttrType.FLOATS:
            proto.floats.extend(float(v) for v in value)
        elif kind == AttrType.INTS:
            proto.ints.extend(int(v) for v in value)
        elif kind == AttrType.STRINGS:
            proto.strings.extend(v if isinstance(v, bytes) else str(v).encode() for v in value)
        elif kind == AttrType.TENSORS:
            for tensor in value:
                tensor_to_proto(tensor, getattr(tensor, "name", None), into=proto.tensors.add())
        elif kind == AttrType.GRAPHS:
            for subgraph in value:
                self.graph(subgraph, proto.graphs.add())
        elif kind == AttrType.SPARSE_TENSOR:
            proto.sparse_tensor.ParseFromString(value.data)
        elif kind == AttrType.SPARSE_TENSORS:
            for item in value:
                proto.sparse_tensors.add().ParseFromString(item.data)
        elif kind == AttrType.TYPE_PROTO:
            type_to_proto(value, proto.tp)
        elif kind == AttrType.TYPE_PROTOS:
            for item in value:
                type_to_proto(item, proto.type_protos.add())
        return proto


def _ensure_names(graph: Graph) -> None:
    """Name every unnamed value once, so repeated exports agree on names."""
    for scope in graph.self_and_subgraphs():
        for value in _values_in_scope(scope):
            if value.name is None:
                value.name = graph.make_name("v")


def graph_to_model(
    graph: Graph, *, value_info: bool = True, keep_data: Callable[[Value], bool] | None = None
) -> onnx.ModelProto:
    """Export an IR graph as a ModelProto with all tensor data inline. With `keep_data`, the
    top-level initializers it rejects become typed graph inputs instead (for analyses)."""
    exporter = _Exporter(graph, value_info=value_info, keep_data=keep_data)
    model = onnx.ModelProto()
    info = graph.model
    model.ir_version = max(info.ir_version, _min_ir_version(graph.opset_imports))
    model.producer_name = info.producer_name or "graphkiln"
    if info.producer_version:
        model.producer_version = info.producer_version
    if info.domain:
        model.domain = info.domain
    if info.model_version:
        model.model_version = info.model_version
    if info.doc_string:
        model.doc_string = info.doc_string
    for key, value in info.metadata_props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    opsets = dict(graph.opset_imports)
    domains_used = {node.domain for node in graph.all_nodes()}
    for domain in domains_used:
        if domain not in opsets:
            opsets[domain] = 1
    for domain, version in sorted(opsets.items()):
        entry = model.opset_import.add()
        entry.domain, entry.version = domain, version
    exporter.graph(graph, model.graph)
    return model


def _min_ir_version(opsets: dict[str, int]) -> int:
    table = getattr(onnx.helper, "VERSION_TABLE", [])
    default = opsets.get("", 1)
    for _release, ir_version, opset, *_ in table:
        if opset == default:
            return ir_version
    return 3


def save_model(
    model: onnx.ModelProto,
    path: str,
    *,
    external_data: bool | None = None,
    size_threshold: int = 1024,
) -> None:
    """Write `model` to `path` atomically (temp file, then rename). Large models (over 1.8 GB)
    or `external_data=True` put tensors in `<name>.data` beside it, written atomically too."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputError(f"output folder {folder} does not exist", "create it first")
    if external_data is None:
        external_data = model.ByteSize() > 1_800_000_000 if _byte_size_safe(model) else True
    data_name = os.path.basename(path) + ".data"
    fd, temporary = tempfile.mkstemp(prefix=".kiln-", suffix=".onnx.tmp", dir=folder)
    os.close(fd)
    try:
        if external_data:
            data_temp = os.path.join(folder, f".kiln-{os.getpid()}-{data_name}.tmp")
            if os.path.exists(data_temp):
                os.remove(data_temp)
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            onnx.external_data_helper.convert_model_to_external_data(
                copy, all_tensors_to_one_file=True, location=os.path.basename(data_temp), size_threshold=size_threshold
            )
            onnx.save_model(copy, temporary)
            # rewrite locations to the final data file name, then move both into place
            for tensor in onnx.external_data_helper._get_all_tensors(copy):
                for entry in tensor.external_data:
                    if entry.key == "location":
                        entry.value = data_name
            with open(temporary, "wb") as handle:
                handle.write(copy.SerializeToString())
            os.replace(data_temp, os.path.join(folder, data_name))
        else:
            with open(temporary, "wb") as handle:
                handle.write(model.SerializeToString())
        _apply_umask(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _apply_umask(path: str) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _byte_size_safe(model: onnx.ModelProto) -> bool:
    try:
        model.ByteSize()
        return True
    except Exception:
        return False


def write_bytes_atomic(path: str, data: bytes | str) -> None:
    """Write a file atomically in its folder, failing with one line when the folder is missing."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputError(f"output folder {folder} does not exist", "create it first")
    fd, temporary = tempfile.mkstemp(prefix=".kiln-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
        _apply_umask(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
