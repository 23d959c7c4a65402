"""Quantization arithmetic shared by the passes and the error report: scales, zero points,
rounding as ONNX QuantizeLinear does it (half to even, saturate), and error metrics."""

from __future__ import annotations

import numpy as np

INT8_RANGE = (-128, 127)
UINT8_RANGE = (0, 255)
INT4_RANGE = (-8, 7)
SYMMETRIC_INT8_LIMIT = 127.0


def quantize(array: np.ndarray, scale: np.ndarray | float, zero_point: np.ndarray | int, limits: tuple[int, int]) -> np.ndarray:
    """QuantizeLinear: round(x / scale) + zero_point, saturated to `limits` (integers as int32)."""
    scaled = np.rint(np.asarray(array, dtype=np.float32) / np.asarray(scale, dtype=np.float32))
    return np.clip(scaled + np.asarray(zero_point, dtype=np.float32), *limits).astype(np.int32)


def dequantize(codes: np.ndarray, scale: np.ndarray | float, zero_point: np.ndarray | int) -> np.ndarray:
    return ((np.asarray(codes, dtype=np.float32) - np.asarray(zero_point, dtype=np.float32)) * np.asarray(scale, dtype=np.float32)).astype(np.float32)


def fake_quantize(array: np.ndarray, scale: np.ndarray | float, zero_point: np.ndarray | int, limits: tuple[int, int]) -> np.ndarray:
    return dequantize(quantize(array, scale, zero_point, limits), scale, zero_point)


def per_channel_symmetric(weight: np.ndarray, axis: int, limit: int = 127) -> tuple[np.ndarray, np.ndarray]:
    """(int8 codes, float32 scales along `axis`): scale = max|w| / limit per output channel
    (limit 63 is onnxruntime's reduce_range, which keeps u8s8 kernels on AVX2 from saturating)."""
    moved = np.moveaxis(np.asarray(weight, dtype=np.float32), axis, 0)
    amax = np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1)
    scale = np.where(amax > 0, amax / limit, 1.0).astype(np.float32)
    shape = [1] * weight.ndim
    shape[axis] = -1
    codes = quantize(weight, scale.reshape(shape), 0, (-limit, limit)).astype(np.int8)
    return codes, scale


def activation_parameters(low: float, high: float, signed: bool) -> tuple[np.float32, int]:
    """Per-tensor (scale, zero point): int8 symmetric around 0, or uint8 asymmetric over [low, high]."""
    if signed:
        amax = max(abs(low), abs(high))
        scale = amax / SYMMETRIC_INT8_LIMIT if amax > 0 else 1.0
        return np.float32(scale), 0
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / 255.0 if high > low else 1.0
    zero_point = int(np.clip(np.rint(-low / scale), 0, 255))
    return np.float32(scale), zero_point


def sqnr_db(reference: np.ndarray, approximation: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in decibels (inf when exact)."""
    reference = np.asarray(reference, dtype=np.float64)
    noise = float(np.sum((reference - np.asarray(approximation, dtype=np.float64)) ** 2))
    signal = float(np.sum(reference ** 2))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * float(np.log10(signal / noise))


class ErrorAccumulator:
    """Streams SQNR and max abs error over batches (sums of signal and noise energy)."""

    def __init__(self) -> None:
        self.signal = 0.0
        self.noise = 0.0
        self.max_abs_error = 0.0

    def update(self, reference: np.ndarray, approximation: np.ndarray) -> None:
        reference = np.asarray(reference, dtype=np.float64)
        difference = reference - np.asarray(approximation, dtype=np.float64)
        self.signal += float(np.sum(reference ** 2))
        self.noise += float(np.sum(difference ** 2))
        if difference.size:
            self.max_abs_error = max(self.max_abs_error, float(np.abs(difference).max()))

    @property
    def sqnr_db(self) -> float:
        if self.noise == 0.0:
            return float("inf")
        if self.signal == 0.0:
            return float("-inf")
        return 10.0 * float(np.log10(self.signal / self.noise))
