"""onnxruntime's com.microsoft fusions, as its graph optimizer writes them into saved models
(optimized_model_filepath at the extended level): FusedMatMul, FusedGemm, FusedConv, BiasGelu,
FastGelu, Gelu, QuickGelu and the skip / simplified layer norms (attention: microsoft_attention.py).
Semantics follow onnxruntime's contrib operator docs; tests compare with onnxruntime itself."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from .. import precision
from ..registry import LoweringContext, lowering
from .activations import gelu_math
from .conv import conv_nd
from .linalg import gemm
from .normalization import layer_norm_math, rms_norm_stats
from .recurrent import named_activation

MICROSOFT = "com.microsoft"


@lowering("FusedMatMul", domain=MICROSOFT)
def fused_matmul(ctx: LoweringContext, a: Any, b: Any, alpha: float = 1.0, transA: int = 0, transB: int = 0,  # noqa: N803
                 transBatchA: int = 0, transBatchB: int = 0) -> Any:  # noqa: N803
    """alpha * A' @ B' with A', B' optionally transposed on their last two axes."""
    if transBatchA or transBatchB:
        raise ctx.fail("transBatchA/transBatchB are not lowered (onnxruntime writes them only for "
                       "Transpose+MatMul fusions on batch axes)")
    a, b = jnp.asarray(a), jnp.asarray(b)
    if transA:
        a = jnp.swapaxes(a, -1, -2) if a.ndim >= 2 else a
    if transB:
        b = jnp.swapaxes(b, -1, -2) if b.ndim >= 2 else b
    result = precision.matmul(ctx, a, b)
    return result if alpha == 1.0 else result * jnp.asarray(alpha, result.dtype)


def _activation(name: str, params: Sequence[float]) -> Any:
    """onnxruntime's fused activation by name (the ones MLAS fuses), with its activation_params."""
    p = list(params or ())
    if name == "":
        return lambda x: x
    if name == "Clip":
        return lambda x: jnp.clip(x, p[0] if p else -jnp.inf, p[1] if len(p) > 1 else jnp.inf)
    if name not in ("Relu", "Tanh", "Sigmoid", "LeakyRelu", "HardSigmoid"):
        raise KeyError(name)
    return named_activation(name, p[0] if p else None, p[1] if len(p) > 1 else None)


@lowering("FusedConv", domain=MICROSOFT)
def fused_conv(ctx: LoweringContext, x: Any, w: Any, bias: Any = None, z: Any = None, activation: str = "",
               activation_params: Sequence[float] = (), **attrs: Any) -> Any:
    """activation(Conv(X, W, B) + Z)."""
    try:
        act = _activation(activation, activation_params)
    except KeyError:
        raise ctx.fail(f"activation {activation!r} is not one onnxruntime fuses into Conv") from None
    y = conv_nd(ctx, x, w, bias, **attrs)
    if z is not None:
        y = y + jnp.asarray(z, y.dtype)
    return act(y)


@lowering("FusedGemm", domain=MICROSOFT)
def fused_gemm(ctx: LoweringContext, a: Any, b: Any, c: Any = None, activation: str = "", activation_alpha: float = 0.01,
               activation_beta: float = 0.5, activation_gamma: float = 0.0, **attrs: Any) -> Any:
    """activation(Gemm(A, B, C))."""
    params = {"LeakyRelu": [activation_alpha], "HardSigmoid": [activation_alpha, activation_beta],
              "Clip": [activation_alpha, activation_beta]}.get(activation, [])
    try:
        act = _activation(activation, params)
    except KeyError:
        raise ctx.fail(f"activation {activation!r} is not one onnxruntime fuses into Gemm") from None
    del activation_gamma  # only ScaledTanh-style activations read it; none of those is fused
    return act(gemm(ctx, a, b, c, **attrs))


@lowering("Gelu", domain=MICROSOFT)
def microsoft_gelu(ctx: LoweringContext, x: Any) -> Any:
    """Gelu, erf form."""
    return gelu_math(x)


@lowering("BiasGelu", domain=MICROSOFT)
def bias_gelu(ctx: LoweringContext, a: Any, bias: Any) -> Any:
    """Gelu(A + bias), erf form."""
    return gelu_math(jnp.asarray(a) + jnp.asarray(bias))


@lowering("FastGelu", domain=MICROSOFT)
def fast_gelu(ctx: LoweringContext, x: Any, bias: Any = None) -> Any:
    """Gelu's tanh approximation of X + bias."""
    return gelu_math(x if bias is None else jnp.asarray(x) + jnp.asarray(bias), "tanh")


@lowering("QuickGelu", domain=MICROSOFT)
def quick_gelu(ctx: LoweringContext, x: Any, alpha: float = 1.702) -> Any:
    """x * sigmoid(alpha * x) (alpha 1 is SiLU)."""
    x = jnp.asarray(x)
    return x * jax.nn.sigmoid(jnp.asarray(alpha, x.dtype) * x)


def _skip_sum(x: Any, skip: Any, bias: Any) -> Any:
    total = jnp.asarray(x) + jnp.asarray(skip)
    return total if bias is None else total + jnp.asarray(bias)


@lowering("SkipLayerNormalization", domain=MICROSOFT)
def skip_layer_normalization(ctx: LoweringContext, x: Any, skip: Any, gamma: Any, beta: Any = None, bias: Any = None,
                             epsilon: float = 1e-12) -> tuple:
    """LayerNorm(X + skip + bias) over the last axis: (output, mean, inv_std_var, input_skip_bias_sum)."""
    total = _skip_sum(x, skip, bias)
    y, mean, inv_std = layer_norm_math(total, gamma, beta, -1, epsilon)
    return y, mean, inv_std, total


@lowering("SkipSimplifiedLayerNormalization", domain=MICROSOFT)
def skip_simplified_layer_normalization(ctx: LoweringContext, x: Any, skip: Any, gamma: Any, bias: Any = None,
                                        epsilon: float = 1e-12) -> tuple:
    """RMSNorm(X + skip + bias) over the last axis: (output, mean (unused), inv_std_var, input_skip_bias_sum)."""
    total = _skip_sum(x, skip, bias)
    y, inv_rms = rms_norm_stats(total, gamma, -1, epsilon)
    return y, None, inv_rms, total


def _simplified_layer_normalization(ctx: LoweringContext, x: Any, scale: Any, axis: int = -1, epsilon: float = 1e-5,
                                    stash_type: int = 1) -> tuple:
    """RMSNorm over the last axis (onnxruntime registers it in the ONNX domain): (Y, inv_std_var)."""
    if axis not in (-1, jnp.ndim(x) - 1):
        raise ctx.fail(f"axis {axis}: only the last axis is lowered")
    return rms_norm_stats(x, scale, -1, epsilon)


lowering("SimplifiedLayerNormalization")(_simplified_layer_normalization)
lowering("SimplifiedLayerNormalization", domain=MICROSOFT)(_simplified_layer_normalization)
