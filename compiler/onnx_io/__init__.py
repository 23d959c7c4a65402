"""ONNX in and out: files or ModelProtos to IR graphs and back, with validation at the door."""

from __future__ import annotations

import os

import onnx
import onnx.inliner

from ..errors import InvalidGraphError, ModelLoadError
from ..ir import Graph
from ._export import graph_to_model, save_model, write_bytes_atomic
from ._import import check_external_data, check_ops_known, model_to_graph, read_model_proto

__all__ = ["export_model", "graph_to_model", "import_model", "load_graph", "save_model", "write_bytes_atomic"]


def import_model(model: onnx.ModelProto, base_dir: str | None = None, source_path: str | None = None) -> Graph:
    """Validate a ModelProto, inline its local functions, infer types and build the IR graph."""
    if not isinstance(model, onnx.ModelProto):
        raise ModelLoadError(f"expected an onnx.ModelProto, got {type(model).__name__}")
    if model.ir_version <= 0 or not model.HasField("graph") or not model.opset_import:
        raise ModelLoadError("the ModelProto has no IR version, graph or opset imports")
    if base_dir is not None:
        check_external_data(model, base_dir)
    elif _has_external_data(model):
        raise ModelLoadError("the ModelProto refers to external data but no folder was given", "load it from its file path")
    check_ops_known(model)
    if model.functions:
        model = _inline_functions(model)
    graph = model_to_graph(model, base_dir, source_path)
    from ..shape_inference import infer_types

    infer_types(graph, trust_declared=True, imported_from=model)
    return graph


def load_graph(source: "str | os.PathLike | onnx.ModelProto") -> Graph:
    """A path or ModelProto -> IR graph (external data memory-mapped lazily)."""
    if isinstance(source, onnx.ModelProto):
        return import_model(source)
    if isinstance(source, Graph):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise ModelLoadError(f"expected a model path or onnx.ModelProto, got {type(source).__name__}")
    path = os.fspath(source)
    model = read_model_proto(path)
    base_dir = os.path.dirname(os.path.abspath(path))
    return import_model(model, base_dir, source_path=os.path.abspath(path))


def export_model(graph: Graph, *, decompose_custom: bool = False, value_info: bool = True) -> onnx.ModelProto:
    """IR graph -> ModelProto. With `decompose_custom`, ai.graphkiln ops are first rewritten into
    their standard-ONNX decompositions (on a copy), so any ONNX runtime can run the result."""
    if decompose_custom and any(n.domain == "ai.graphkiln" for n in graph.all_nodes()):
        from ..decompose import decompose_custom_ops

        graph = graph.copy()
        decompose_custom_ops(graph)
    return graph_to_model(graph, value_info=value_info)


def _has_external_data(model: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def _inline_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.inliner.inline_local_functions(model)
    except Exception as error:  # the inliner is C++; surface its message in one line
        raise InvalidGraphError(f"cannot inline the model's local functions: {error}") from None
