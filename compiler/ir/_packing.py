"""Packing and unpacking of 2- and 4-bit element types, two or four elements per byte as ONNX stores them."""

from __future__ import annotations

import numpy as np

from ._types import DataType

_SIGNED = {DataType.INT4, DataType.INT2}


def unpack_subbyte(raw: np.ndarray, dtype: DataType, shape: tuple[int, ...]) -> np.ndarray:
    """Unpack little-endian packed 4-/2-bit elements into an array of `dtype` with `shape`."""
    bits = dtype.bitwidth
    per_byte = 8 // bits
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    raw = np.asarray(raw, dtype=np.uint8).reshape(-1)
    mask = (1 << bits) - 1
    parts = [(raw >> (bits * i)) & mask for i in range(per_byte)]
    codes = np.stack(parts, axis=-1).reshape(-1)[:count]
    if dtype in _SIGNED:
        codes = codes.astype(np.int8)
        codes = np.where(codes >= (1 << (bits - 1)), codes - (1 << bits), codes).astype(np.int8)
        return codes.astype(dtype.numpy).reshape(shape)
    return codes.view(np.uint8).astype(np.uint8).view(dtype.numpy).reshape(shape)


def pack_subbyte(array: np.ndarray, dtype: DataType) -> bytes:
    """Pack an array of a 4-/2-bit type into bytes, the first element in the low bits."""
    bits = dtype.bitwidth
    per_byte = 8 // bits
    flat = np.asarray(array).reshape(-1)
    if dtype == DataType.FLOAT4E2M1:
        codes = flat.view(np.uint8)
    else:
        codes = flat.astype(np.int8).view(np.uint8)
    codes = codes & ((1 << bits) - 1)
    pad = (-len(codes)) % per_byte
    codes = np.concatenate([codes, np.zeros(pad, np.uint8)]).reshape(-1, per_byte)
    packed = np.zeros(len(codes), dtype=np.uint8)
    for i in range(per_byte):
        packed |= (codes[:, i] << (bits * i)).astype(np.uint8)
    return packed.tobytes()
