"""LayerNormalization on the native CPU kernel (native/layer_norm.cc) through jax.ffi: fp32, the
normalized axes flattened into rows, Mean and InvStdDev not requested."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

TARGET = "kiln_layer_norm"


def runs_natively(ctx: Any, x: Any, scale: Any, bias: Any, axis: int) -> bool:
    """Whether this LayerNormalization node can run on the kernel."""
    if not ctx.native or ctx.output_needed(1) or ctx.output_needed(2):
        return False
    if jnp.result_type(x) != jnp.float32 or not all(isinstance(d, (int, np.integer)) for d in jnp.shape(x)):
        return False
    features = math.prod(jnp.shape(x)[axis:])
    sizes_match = jnp.size(scale) == features and (bias is None or jnp.size(bias) == features)
    return features > 0 and sizes_match and all(jnp.result_type(v) == jnp.float32 for v in (scale, bias) if v is not None)


def layer_norm(x: Any, scale: Any, bias: Any, axis: int, epsilon: float) -> Any:
    """(x - mean) / sqrt(var + epsilon) * scale + bias over the axes from `axis` on."""
    features = math.prod(jnp.shape(x)[axis:])
    scale = jnp.reshape(scale, (features,))
    bias = jnp.zeros((features,), jnp.float32) if bias is None else jnp.reshape(bias, (features,))
    call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct(jnp.shape(x), jnp.float32))
    return call(x, scale, bias, epsilon=np.float32(epsilon))
