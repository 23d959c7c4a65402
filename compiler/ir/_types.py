"""Element types, shapes and value types of the IR (no protobuf: plain Python and numpy)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Iterable, Union

import ml_dtypes
import numpy as np

Dim = Union[int, str, None]
"""One dimension: a known size, a named symbol such as "batch", or None when unknown."""


class DataType(enum.IntEnum):
    """Tensor element types, numbered as ONNX numbers them so conversion is the identity."""

    UNDEFINED = 0
    FLOAT = 1
    UINT8 = 2
    INT8 = 3
    UINT16 = 4
    INT16 = 5
    INT32 = 6
    INT64 = 7
    STRING = 8
    BOOL = 9
    FLOAT16 = 10
    DOUBLE = 11
    UINT32 = 12
    UINT64 = 13
    COMPLEX64 = 14
    COMPLEX128 = 15
    BFLOAT16 = 16
    FLOAT8E4M3FN = 17
    FLOAT8E4M3FNUZ = 18
    FLOAT8E5M2 = 19
    FLOAT8E5M2FNUZ = 20
    UINT4 = 21
    INT4 = 22
    FLOAT4E2M1 = 23
    FLOAT8E8M0 = 24
    UINT2 = 25
    INT2 = 26

    @property
    def numpy(self) -> np.dtype:
        """The numpy dtype holding this element type (ml_dtypes for the narrow floats/ints)."""
        try:
            return _TO_NUMPY[self]
        except KeyError:
            raise TypeError(f"element type {self.name} has no numpy equivalent") from None

    @classmethod
    def from_numpy(cls, dtype: np.dtype | type) -> "DataType":
        """The element type of a numpy dtype."""
        dtype = np.dtype(dtype)
        if dtype.kind in ("U", "S", "O"):
            return cls.STRING
        try:
            return _FROM_NUMPY[dtype]
        except KeyError:
            raise TypeError(f"numpy dtype {dtype} has no ONNX element type") from None

    @property
    def is_floating(self) -> bool:
        return self in _FLOATING

    @property
    def is_integer(self) -> bool:
        return self in _INTEGER

    @property
    def bitwidth(self) -> int:
        if self in (DataType.UINT4, DataType.INT4, DataType.FLOAT4E2M1):
            return 4
        if self in (DataType.UINT2, DataType.INT2):
            return 2
        if self == DataType.STRING:
            return 0
        return self.numpy.itemsize * 8


_TO_NUMPY: dict[DataType, np.dtype] = {
    DataType.FLOAT: np.dtype(np.float32),
    DataType.UINT8: np.dtype(np.uint8),
    DataType.INT8: np.dtype(np.int8),
    DataType.UINT16: np.dtype(np.uint16),
    DataType.INT16: np.dtype(np.int16),
    DataType.INT32: np.dtype(np.int32),
    DataType.INT64: np.dtype(np.int64),
    DataType.STRING: np.dtype(object),
    DataType.BOOL: np.dtype(np.bool_),
    DataType.FLOAT16: np.dtype(np.float16),
    DataType.DOUBLE: np.dtype(np.float64),
    DataType.UINT32: np.dtype(np.uint32),
    DataType.UINT64: np.dtype(np.uint64),
    DataType.COMPLEX64: np.dtype(np.complex64),
    DataType.COMPLEX128: np.dtype(np.complex128),
    DataType.BFLOAT16: np.dtype(ml_dtypes.bfloat16),
    DataType.FLOAT8E4M3FN: np.dtype(ml_dtypes.float8_e4m3fn),
    DataType.FLOAT8E4M3FNUZ: np.dtype(ml_dtypes.float8_e4m3fnuz),
    DataType.FLOAT8E5M2: np.dtype(ml_dtypes.float8_e5m2),
    DataType.FLOAT8E5M2FNUZ: np.dtype(ml_dtypes.float8_e5m2fnuz),
    DataType.UINT4: np.dtype(ml_dtypes.uint4),
    DataType.INT4: np.dtype(ml_dtypes.int4),
    DataType.FLOAT4E2M1: np.dtype(ml_dtypes.float4_e2m1fn),
    DataType.FLOAT8E8M0: np.dtype(ml_dtypes.float8_e8m0fnu),
}
if hasattr(ml_dtypes, "int2"):
    _TO_NUMPY[DataType.INT2] = np.dtype(ml_dtypes.int2)
    _TO_NUMPY[DataType.UINT2] = np.dtype(ml_dtypes.uint2)

_FROM_NUMPY: dict[np.dtype, DataType] = {v: k for k, v in _TO_NUMPY.items() if k != DataType.STRING}

_FLOATING = frozenset(
    {
        DataType.FLOAT, DataType.FLOAT16, DataType.DOUBLE, DataType.BFLOAT16,
        DataType.FLOAT8E4M3FN, DataType.FLOAT8E4M3FNUZ, DataType.FLOAT8E5M2,
        DataType.FLOAT8E5M2FNUZ, DataType.FLOAT4E2M1, DataType.FLOAT8E8M0,
    }
)
_INTEGER = frozenset(
    {
        DataType.UINT8, DataType.INT8, DataType.UINT16, DataType.INT16, DataType.INT32,
        DataType.INT64, DataType.UINT32, DataType.UINT64, DataType.UINT4, DataType.INT4,
        DataType.UINT2, DataType.INT2,
    }
)


class Shape(tuple):
    """A tensor shape: a tuple of dims, each an int, a symbol name (str) or None (unknown)."""

    def __new__(cls, dims: Iterable[Dim] = ()) -> "Shape":
        dims = tuple(dims)
        if all(type(dim) is int or type(dim) is str or dim is None for dim in dims):
            return super().__new__(cls, dims)  # the common case: nothing to convert or reject
        normalized = []
        for dim in dims:
            if isinstance(dim, (bool, np.bool_)):
                raise TypeError("a shape dimension cannot be a bool")
            if isinstance(dim, (int, np.integer)):
                normalized.append(int(dim))
            elif dim is None or isinstance(dim, str):
                normalized.append(dim)
            else:
                raise TypeError(f"a shape dimension must be int, str or None, not {type(dim).__name__}")
        return super().__new__(cls, normalized)

    @property
    def rank(self) -> int:
        return len(self)

    @property
    def is_static(self) -> bool:
        """True when every dimension is a known integer."""
        return all(isinstance(d, int) for d in self)

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(d for d in self if isinstance(d, str))

    def numel(self) -> int | None:
        """Number of elements, or None when a dimension is not a known integer."""
        count = 1
        for dim in self:
            if not isinstance(dim, int):
                return None
            count *= dim
        return count

    def __repr__(self) -> str:
        return "[" + ",".join("?" if d is None else str(d) for d in self) + "]"


@dataclass(frozen=True)
class TensorType:
    """A dense tensor: element type and shape (shape None means the rank is unknown)."""

    dtype: DataType
    shape: Shape | None = None

    def __str__(self) -> str:
        shape = "" if self.shape is None else repr(self.shape)
        return f"{self.dtype.name.lower()}{shape}"


@dataclass(frozen=True)
class SparseTensorType:
    """A sparse tensor (only carried through; no pass rewrites it)."""

    dtype: DataType
    shape: Shape | None = None

    def __str__(self) -> str:
        return f"sparse<{self.dtype.name.lower()}>"


@dataclass(frozen=True)
class SequenceType:
    """An ONNX sequence of elements of one type."""

    elem: "ValueType"

    def __str__(self) -> str:
        return f"seq<{self.elem}>"


@dataclass(frozen=True)
class OptionalType:
    """An ONNX optional holding a value of one type or nothing."""

    elem: "ValueType"

    def __str__(self) -> str:
        return f"optional<{self.elem}>"


@dataclass(frozen=True)
class MapType:
    """An ONNX-ML map (only carried through)."""

    key: DataType
    value: "ValueType"

    def __str__(self) -> str:
        return f"map<{self.key.name.lower()},{self.value}>"


ValueType = Union[TensorType, SparseTensorType, SequenceType, OptionalType, MapType]
