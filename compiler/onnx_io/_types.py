"""Conversion of ONNX TypeProto and TensorProto to and from IR types and tensors."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ..ir import (
    ArrayTensor,
    DataType,
    ExternalTensor,
    LazyTensor,
    MapType,
    OptionalType,
    SequenceType,
    Shape,
    SparseTensorType,
    Tensor,
    TensorType,
    ValueType,
)
from ..ir._packing import pack_subbyte

_EAGER_BYTES = 4096


def shape_from_proto(shape_proto: onnx.TensorShapeProto) -> Shape:
    dims = []
    for dim in shape_proto.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param") and dim.dim_param:
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return Shape(dims)


def type_from_proto(type_proto: onnx.TypeProto) -> ValueType | None:
    """The IR type of a TypeProto (None when it is empty)."""
    kind = type_proto.WhichOneof("value")
    if kind == "tensor_type":
        tensor = type_proto.tensor_type
        shape = shape_from_proto(tensor.shape) if tensor.HasField("shape") else None
        return TensorType(DataType(tensor.elem_type), shape)
    if kind == "sparse_tensor_type":
        tensor = type_proto.sparse_tensor_type
        shape = shape_from_proto(tensor.shape) if tensor.HasField("shape") else None
        return SparseTensorType(DataType(tensor.elem_type), shape)
    if kind == "sequence_type":
        elem = type_from_proto(type_proto.sequence_type.elem_type)
        return SequenceType(elem) if elem is not None else SequenceType(TensorType(DataType.UNDEFINED))
    if kind == "optional_type":
        elem = type_from_proto(type_proto.optional_type.elem_type)
        return OptionalType(elem) if elem is not None else OptionalType(TensorType(DataType.UNDEFINED))
    if kind == "map_type":
        value = type_from_proto(type_proto.map_type.value_type)
        return MapType(DataType(type_proto.map_type.key_type), value)
    return None


def _shape_to_proto(shape: Shape, target: onnx.TensorShapeProto) -> None:
    for dim in shape:
        entry = target.dim.add()
        if isinstance(dim, int):
            entry.dim_value = dim
        elif isinstance(dim, str):
            entry.dim_param = dim


def type_to_proto(value_type: ValueType, into: onnx.TypeProto | None = None) -> onnx.TypeProto:
    """The TypeProto of an IR type, written into `into` when given (no intermediate message to copy)."""
    proto = onnx.TypeProto() if into is None else into
    if isinstance(value_type, TensorType):
        proto.tensor_type.elem_type = int(value_type.dtype)
        if value_type.shape is not None:
            proto.tensor_type.shape.SetInParent()
            _shape_to_proto(value_type.shape, proto.tensor_type.shape)
    elif isinstance(value_type, SparseTensorType):
        proto.sparse_tensor_type.elem_type = int(value_type.dtype)
        if value_type.shape is not None:
            proto.sparse_tensor_type.shape.SetInParent()
            _shape_to_proto(value_type.shape, proto.sparse_tensor_type.shape)
    elif isinstance(value_type, SequenceType):
        type_to_proto(value_type.elem, proto.sequence_type.elem_type)
    elif isinstance(value_type, OptionalType):
        type_to_proto(value_type.elem, proto.optional_type.elem_type)
    elif isinstance(value_type, MapType):
        proto.map_type.key_type = int(value_type.key)
        type_to_proto(value_type.value, proto.map_type.value_type)
    return proto


def tensor_from_proto(proto: onnx.TensorProto, base_dir: str | None) -> Tensor:
    """A lazy IR tensor for a TensorProto; external data is resolved against `base_dir`
    (callers validate locations first) and memory-mapped when read."""
    dtype = DataType(proto.data_type)
    shape = Shape(proto.dims)
    name = proto.name or None
    if proto.data_location == onnx.TensorProto.EXTERNAL:
        info = {entry.key: entry.value for entry in proto.external_data}
        import os

        path = os.path.join(base_dir or ".", info["location"])
        offset = int(info.get("offset", 0) or 0)
        length = int(info["length"]) if info.get("length") else None
        return ExternalTensor(path, offset, length, dtype, shape, name=name)
    if proto.HasField("raw_data"):  # sized from the header: reading raw_data would copy the bytes
        lazy = ProtoTensor(proto, dtype, shape, name=name)
        if lazy.nbytes > _EAGER_BYTES:
            return lazy
    return ArrayTensor(numpy_helper.to_array(proto), name=name, dtype=dtype)


class ProtoTensor(LazyTensor):
    """A tensor backed by the TensorProto it was imported from: its values are a read-only view of
    the raw bytes, read on first use, and export copies the proto as it is instead of re-encoding."""

    def __init__(self, proto: onnx.TensorProto, dtype: DataType, shape: Shape, name: str | None = None):
        self.proto = proto
        super().__init__(self._read, dtype, shape, name=name)

    def _read(self) -> np.ndarray:
        if self.dtype.bitwidth < 8 or not np.little_endian:  # packed sub-byte data, or byte swapping
            return numpy_helper.to_array(self.proto)
        array = np.frombuffer(self.proto.raw_data, dtype=self.dtype.numpy)  # read-only: the IR never writes in place
        return array.reshape(tuple(self.shape))


def tensor_to_proto(tensor: Tensor, name: str | None, into: onnx.TensorProto | None = None) -> onnx.TensorProto:
    """A TensorProto holding the tensor's data (raw bytes where ONNX allows), written into `into`
    when given (filling a repeated field in place saves copying large weights twice)."""
    if isinstance(tensor, ProtoTensor):
        proto = into if into is not None else onnx.TensorProto()
        proto.CopyFrom(tensor.proto)
        proto.name = name or ""
        return proto
    proto = _encode_tensor(tensor, name)
    if into is None:
        return proto
    into.CopyFrom(proto)
    return into


def _encode_tensor(tensor: Tensor, name: str | None) -> onnx.TensorProto:
    array = tensor.numpy()
    dtype = tensor.dtype
    if dtype.bitwidth in (2, 4):
        proto = onnx.TensorProto()
        proto.data_type = int(dtype)
        proto.dims.extend(array.shape)
        proto.raw_data = pack_subbyte(np.asarray(array), dtype)
    elif dtype == DataType.STRING:
        proto = onnx.helper.make_tensor(
            name or "", onnx.TensorProto.STRING, array.shape,
            [s if isinstance(s, bytes) else str(s).encode() for s in np.asarray(array).reshape(-1)],
        )
    else:
        array = np.asarray(array)
        if array.dtype != dtype.numpy:
            array = array.astype(dtype.numpy)
        proto = numpy_helper.from_array(array if array.flags.c_contiguous else array.copy(order="C"))
        proto.data_type = int(dtype)
    proto.name = name or ""
    return proto
