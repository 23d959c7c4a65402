"""fp32 products against weights packed once into column panels, run by the native kernel in
native/panel_gemm.cc through jax.ffi (CPU only, in-process runs; jax.export artifacts keep XLA's dot
so they stay portable).

XLA:CPU's dot repacks a weight operand on every call, which costs it 10-25% against onnxruntime's
prepacked MLAS GEMM on transformer layers (bench/results/gemm_cpu.md); a `PanelWeight` is the
weight stored as [ceil(N / NR), K, NR] panels, an ordinary array argument the kernel streams as is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import native

TARGET, TARGET_BIAS, TARGET_RESIDUAL = "kiln_panel_matmul", "kiln_panel_matmul_bias", "kiln_panel_matmul_residual"


def panel_width() -> int | None:
    """NR, the panel width the native kernel was built with, or None where it is unavailable."""
    library = native.library()
    return None if library is None else int(library.kiln_panel_width())


def pack_panels(weight: np.ndarray, width: int) -> np.ndarray:
    """A [K, N] weight as [ceil(N / width), K, width] float32 panels, zero past N."""
    k, n = weight.shape
    panels = -(-n // width)
    padded = np.zeros((k, panels * width), np.float32)
    padded[:, :n] = weight
    return np.ascontiguousarray(padded.reshape(k, panels, width).transpose(1, 0, 2))


@dataclass(frozen=True)
class PanelWeight:
    """A MatMul/Gemm right operand of ONNX shape [K, N] as it reaches its product in the traced
    function: the packed `panels` argument and N."""

    panels: Any
    n: int

    @property
    def k(self) -> int:
        return int(self.panels.shape[1])

    def dense(self) -> Any:
        """The [K, N] weight unpacked (a copy on every call: only for products the kernel cannot run)."""
        return jnp.transpose(self.panels, (1, 0, 2)).reshape(self.k, -1)[:, : self.n]


def runs_natively(x: Any, weight: PanelWeight) -> bool:
    """Whether `x @ weight` can run on the kernel: float32 x with K as its last axis."""
    return jnp.result_type(x) == jnp.float32 and jnp.ndim(x) >= 1 and jnp.shape(x)[-1] == weight.k


def residual_fits(x: Any, weight: PanelWeight, residual: Any) -> bool:
    """Whether the kernel can add `residual` to `x @ weight` as it stores it: float32, exactly the
    product's shape (no broadcasting)."""
    shape = tuple(jnp.shape(x)[:-1]) + (weight.n,)
    return jnp.result_type(residual) == jnp.float32 and tuple(jnp.shape(residual)) == shape


# the kernels' epilogues (tile.h: Activation)
ACTIVATIONS = {None: 0, "gelu": 1, "gelu_tanh": 2, "relu": 3, "hard_swish": 4}


def activate(y: Any, activation: str | None) -> Any:
    """`activation` (an ACTIVATIONS name) in XLA's ops: what a kernel's epilogue does, for the
    fallbacks where the kernel cannot run."""
    if activation is None:
        return y
    if activation == "relu":
        return jnp.maximum(y, jnp.zeros((), y.dtype))
    if activation == "hard_swish":
        return y * jnp.clip(y / 6 + 0.5, 0, 1).astype(y.dtype)
    if activation in ("gelu", "gelu_tanh"):
        return jax.nn.gelu(y, approximate=activation == "gelu_tanh").astype(y.dtype)
    raise ValueError(f"unknown epilogue activation {activation!r}")


def panel_matmul(x: Any, weight: PanelWeight, bias: Any = None, activation: str | None = None,
                 residual: Any = None, residual_first: bool = False) -> Any:
    """activation(x[..., K] @ W[K, N] (+ bias[N])) (+ residual[..., N]) -> [..., N] in float32, on
    the native kernel, or with `residual_first` activation(x @ W (+ bias) + residual); activation
    an ACTIVATIONS name."""
    out = jax.ShapeDtypeStruct(tuple(jnp.shape(x)[:-1]) + (weight.n,), jnp.float32)
    code = np.int64(ACTIVATIONS[activation])
    if residual is not None:
        bias = jnp.zeros((0,), jnp.float32) if bias is None else jnp.asarray(bias, jnp.float32).reshape(weight.n)
        residual = jnp.asarray(residual, jnp.float32)
        return jax.ffi.ffi_call(TARGET_RESIDUAL, out)(x, weight.panels, bias, residual, activation=code,
                                                      residual_first=np.int64(residual_first))
    if bias is None:
        return jax.ffi.ffi_call(TARGET, out)(x, weight.panels, activation=code)
    bias = jnp.asarray(bias, jnp.float32).reshape(weight.n)
    return jax.ffi.ffi_call(TARGET_BIAS, out)(x, weight.panels, bias, activation=code)
