"""Direct lowerings of the ai.graphkiln fused ops (Gelu, LayerNormalization, RMSNormalization,
Attention), so fused graphs run as one XLA-friendly call instead of their decompositions."""

from __future__ import annotations

from typing import Any

from compiler.custom_ops import GRAPHKILN_DOMAIN

from .. import precision
from ..registry import LoweringContext, lowering
from .activations import gelu_math
from .normalization import layer_norm_math, rms_norm_math


@lowering("Gelu", domain=GRAPHKILN_DOMAIN)
def fused_gelu(ctx: LoweringContext, x: Any, approximate: str = "none") -> Any:
    """ai.graphkiln Gelu: same math as ONNX Gelu-20."""
    return gelu_math(x, approximate)


@lowering("LayerNormalization", domain=GRAPHKILN_DOMAIN)
def fused_layer_normalization(ctx: LoweringContext, x: Any, scale: Any, bias: Any = None, axis: int = -1,
                              epsilon: float = 1e-5, stash_type: int = 1) -> Any:
    """ai.graphkiln LayerNormalization: ONNX LayerNormalization-17's Y only."""
    return layer_norm_math(x, scale, bias, axis, epsilon, stash_type)[0]


@lowering("RMSNormalization", domain=GRAPHKILN_DOMAIN)
def fused_rms_normalization(ctx: LoweringContext, x: Any, scale: Any, axis: int = -1, epsilon: float = 1e-5) -> Any:
    """ai.graphkiln RMSNormalization: same math as ONNX RMSNormalization-23."""
    return rms_norm_math(x, scale, axis, epsilon)


@lowering("Attention", domain=GRAPHKILN_DOMAIN)
def fused_attention(ctx: LoweringContext, q: Any, k: Any, v: Any, mask: Any = None, scale: float | None = None,
                    is_causal: int = 0) -> Any:
    """softmax(scale * Q K^T + mask) V on [B, H, S, D] (grouped-query when H > Hkv), through
    jax.nn.dot_product_attention in the requested precision."""
    return precision.attention(ctx, q, k, v, mask, scale=scale, is_causal=bool(is_causal))
