"""The graphkiln IR: typed values with use-def chains, nodes, graphs and lazy tensors.

Imports neither protobuf nor JAX; ONNX import/export lives in compiler.onnx_io."""

from ._core import (
    Attr,
    AttrType,
    Graph,
    GraphError,
    ModelInfo,
    Node,
    Opaque,
    Use,
    Value,
    constant_node_value,
    stable_topological_order,
)
from ._tensor import ArrayTensor, ExternalTensor, LazyTensor, Tensor
from ._types import (
    DataType,
    Dim,
    MapType,
    OptionalType,
    SequenceType,
    Shape,
    SparseTensorType,
    TensorType,
    ValueType,
)
from ._verify import VerificationError, verify_structure

__all__ = [
    "ArrayTensor", "Attr", "AttrType", "DataType", "Dim", "ExternalTensor", "Graph", "GraphError",
    "LazyTensor", "MapType", "ModelInfo", "Node", "Opaque", "OptionalType", "SequenceType", "Shape",
    "SparseTensorType", "Tensor", "TensorType", "Use", "Value", "ValueType", "VerificationError",
    "constant_node_value", "stable_topological_order", "verify_structure",
]
