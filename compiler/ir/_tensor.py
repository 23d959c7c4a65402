"""Constant tensors of the IR: in memory, or lazy (external data memory-mapped on first read)."""

from __future__ import annotations

import os
from typing import Callable

import numpy as np

from ._types import DataType, Shape


class Tensor:
    """A constant tensor. Reading `dtype`, `shape` or `nbytes` never touches data on disk."""

    name: str | None = None

    @property
    def dtype(self) -> DataType:
        raise NotImplementedError

    @property
    def shape(self) -> Shape:
        raise NotImplementedError

    def numpy(self) -> np.ndarray:
        """The tensor's values as a numpy array (loaded on first use for lazy tensors)."""
        raise NotImplementedError

    @property
    def size(self) -> int:
        return self.shape.numel() or 0

    @property
    def nbytes(self) -> int:
        bits = self.dtype.bitwidth
        return (self.size * bits + 7) // 8 if bits else int(self.numpy().nbytes)

    @property
    def is_loaded(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.dtype.name.lower()}{self.shape!r})"


class ArrayTensor(Tensor):
    """A tensor held in memory as a numpy array."""

    def __init__(self, array: np.ndarray, name: str | None = None, dtype: DataType | None = None):
        array = np.asarray(array)
        self._array = array
        self._dtype = dtype if dtype is not None else DataType.from_numpy(array.dtype)
        self._shape: Shape | None = None
        self.name = name

    @property
    def dtype(self) -> DataType:
        return self._dtype

    @property
    def shape(self) -> Shape:
        if self._shape is None:
            self._shape = Shape(self._array.shape)
        return self._shape

    def numpy(self) -> np.ndarray:
        return self._array


class LazyTensor(Tensor):
    """A tensor whose values come from a function called on first read, then cached."""

    def __init__(self, load: Callable[[], np.ndarray], dtype: DataType, shape: Shape, name: str | None = None):
        self._load = load
        self._dtype = dtype
        self._shape = Shape(shape)
        self._array: np.ndarray | None = None
        self.name = name

    @property
    def dtype(self) -> DataType:
        return self._dtype

    @property
    def shape(self) -> Shape:
        return self._shape

    @property
    def is_loaded(self) -> bool:
        return self._array is not None

    def numpy(self) -> np.ndarray:
        if self._array is None:
            array = self._load()
            if not isinstance(array, np.ndarray):
                array = np.asarray(array)
            if tuple(array.shape) != tuple(self._shape):
                array = array.reshape(self._shape)
            self._array = array
        return self._array


class ExternalTensor(LazyTensor):
    """A tensor stored in an external-data file beside the model, memory-mapped when first read."""

    def __init__(
        self,
        path: str,
        offset: int,
        length: int | None,
        dtype: DataType,
        shape: Shape,
        name: str | None = None,
    ):
        self.path = path
        self.offset = offset
        self.length = length
        super().__init__(self._read, dtype, shape, name)

    def _read(self) -> np.ndarray:
        shape = tuple(self.shape)
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        bits = self.dtype.bitwidth
        if bits < 8:
            from ._packing import unpack_subbyte

            nbytes = (count * bits + 7) // 8
            raw = np.fromfile(self.path, dtype=np.uint8, count=nbytes, offset=self.offset)
            return unpack_subbyte(raw, self.dtype, shape)
        if count == 0:
            return np.zeros(shape, dtype=self.dtype.numpy)
        mapped = np.memmap(self.path, dtype=self.dtype.numpy, mode="r", offset=self.offset, shape=shape)
        return mapped

    @property
    def nbytes(self) -> int:
        if self.length is not None:
            return self.length
        return super().nbytes

    def file_size_ok(self) -> bool:
        """True when the file holds every byte this tensor claims."""
        return os.path.getsize(self.path) >= self.offset + self.nbytes
