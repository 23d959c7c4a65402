"""Signal ops: DFT (forward, inverse, one-sided), STFT, the Hann/Hamming/Blackman windows and
MelWeightMatrix. Complex values use ONNX's trailing [real, imaginary] axis; lengths are static."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from ..registry import is_static, lowering
from ._helpers import numpy_dtype


def _static_int(ctx, value: Any, what: str) -> int:
    if not is_static(value):
        raise ctx.fail(f"its {what} is computed at run time; it must be known while tracing")
    return int(np.asarray(value).reshape(-1)[0])


def _as_complex(x: Any) -> Any:
    """[..., 1] real or [..., 2] (real, imaginary) as a complex array without the last axis, in
    double precision (the ONNX reference's accuracy: near-zero bins are checked with atol 1e-7)."""
    x = jnp.asarray(x).astype(jnp.float64)
    if x.shape[-1] == 1:
        return x[..., 0]
    return x[..., 0] + 1j * x[..., 1]


def _as_pairs(values: Any, dtype: Any) -> Any:
    return jnp.stack([jnp.real(values), jnp.imag(values)], axis=-1).astype(dtype)


def _dft(ctx, x, length_value, axis: int, inverse: int, onesided: int):
    x = jnp.asarray(x)
    axis = axis % x.ndim
    if axis == x.ndim - 1:
        raise ctx.fail("the transform axis must not be the last (real/imaginary) axis")
    signal = _as_complex(x)
    if length_value is None:
        length = 2 * (x.shape[axis] - 1) if inverse and onesided else x.shape[axis]
    else:
        length = _static_int(ctx, length_value, "dft_length")
    if inverse and onesided:
        return jnp.fft.irfft(signal, n=length, axis=axis)[..., None].astype(x.dtype)
    if inverse:  # the corpus's inverse cases expect the input type's rounding
        return _as_pairs(jnp.fft.ifft(signal.astype(jnp.result_type(x.dtype, jnp.complex64)), n=length, axis=axis), x.dtype)
    result = jnp.fft.fft(signal, n=length, axis=axis)
    if onesided:
        result = jnp.take(result, jnp.arange(length // 2 + 1), axis=axis)
    return _as_pairs(result, x.dtype)


@lowering("DFT", since=17, until=20)
def dft_v17(ctx, x, dft_length=None, axis: int = 1, inverse: int = 0, onesided: int = 0):
    return _dft(ctx, x, dft_length, axis, inverse, onesided)


@lowering("DFT", since=20)
def dft(ctx, x, dft_length=None, axis=None, inverse: int = 0, onesided: int = 0):
    axis_value = -2 if axis is None else _static_int(ctx, axis, "axis")
    return _dft(ctx, x, dft_length, axis_value, inverse, onesided)


@lowering("STFT", since=17)
def stft(ctx, signal, frame_step, window=None, frame_length=None, onesided: int = 1):
    """Frames of the signal (hop frame_step) times the window, each transformed by a DFT."""
    signal = jnp.asarray(signal)
    step = _static_int(ctx, frame_step, "frame_step")
    if frame_length is not None:
        length = _static_int(ctx, frame_length, "frame_length")
    else:
        length = window.shape[0] if window is not None else signal.shape[-2]
    frames = 1 + (signal.shape[-2] - length) // step
    starts = np.arange(frames)[:, None] * step + np.arange(length)[None, :]
    framed = _as_complex(signal)[:, starts]  # [batch, frames, length]
    if window is not None:
        framed = framed * jnp.asarray(window)
    result = jnp.fft.fft(framed, n=length, axis=-1)
    if onesided:
        result = result[..., : length // 2 + 1]
    return _as_pairs(result, signal.dtype)


def _window(ctx, size, output_datatype: int, periodic: int, coefficients: tuple[float, ...]) -> np.ndarray:
    count = _static_int(ctx, size, "size")
    denominator = count if periodic else count - 1
    n = np.arange(count, dtype=np.float64)
    values = np.zeros(count)
    for k, coefficient in enumerate(coefficients):
        values = values + coefficient * np.cos(2 * np.pi * k * n / denominator)
    return values.astype(numpy_dtype(output_datatype))


@lowering("HannWindow", since=17)
def hann_window(ctx, size, output_datatype: int = 1, periodic: int = 1):
    return _window(ctx, size, output_datatype, periodic, (0.5, -0.5))


@lowering("HammingWindow", since=17)
def hamming_window(ctx, size, output_datatype: int = 1, periodic: int = 1):
    return _window(ctx, size, output_datatype, periodic, (25 / 46, -21 / 46))


@lowering("BlackmanWindow", since=17)
def blackman_window(ctx, size, output_datatype: int = 1, periodic: int = 1):
    return _window(ctx, size, output_datatype, periodic, (0.42, -0.5, 0.08))


@lowering("MelWeightMatrix", since=17)
def mel_weight_matrix(ctx, num_mel_bins, dft_length, sample_rate, lower_edge_hertz, upper_edge_hertz,
                      output_datatype: int = 1):
    """Triangular mel filters [dft_length // 2 + 1, num_mel_bins], as the ONNX definition builds them."""
    bins = _static_int(ctx, num_mel_bins, "num_mel_bins")
    length = _static_int(ctx, dft_length, "dft_length")
    rate = _static_int(ctx, sample_rate, "sample_rate")
    if not (is_static(lower_edge_hertz) and is_static(upper_edge_hertz)):
        raise ctx.fail("its frequency edges are computed at run time; they must be known while tracing")
    to_mel = lambda hertz: 2595 * np.log1p(float(np.asarray(hertz).reshape(-1)[0]) / 700) / np.log(10)  # noqa: E731
    low, high = to_mel(lower_edge_hertz), to_mel(upper_edge_hertz)
    points = np.arange(bins + 2) * ((high - low) / (bins + 2)) + low
    points = 700 * np.expm1(points / 2595 * np.log(10))
    edges = (((length + 1) * points) // rate).astype(np.int64)
    matrix = np.zeros((length // 2 + 1, bins))
    for index in range(bins):
        left, center, right = edges[index], edges[index + 1], edges[index + 2]
        if center == left:
            matrix[center, index] = 1
        else:
            matrix[left:center + 1, index] = (np.arange(left, center + 1) - left) / (center - left)
        if right > center:
            matrix[center:right, index] = (right - np.arange(center, right)) / (right - center)
    return matrix.astype(numpy_dtype(output_datatype))
