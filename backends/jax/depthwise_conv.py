"""fp32 depthwise 2-D convolutions (ONNX Conv with group = C and one input channel per kernel) on
the native kernel in native/depthwise_conv.cc through jax.ffi (CPU only, in-process runs): NCHW in
and out, the padding, bias and activation inside the kernel.

XLA runs MobileNet's depthwise convolutions as a pad, shifted multiply-adds and an activation pass,
each a trip through memory; onnxruntime's kernels were 1.8x faster over MobileNetV3's 15 layers."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .panel_matmul import ACTIVATIONS

TARGET = "kiln_depthwise_conv"


def runs_natively(x: Any, kernel: Any) -> bool:
    """Whether the kernel can run this convolution: float32 NCHW x with concrete C, H, W and a
    float32 [C * m, 1, KH, KW] kernel."""
    return (jnp.ndim(x) == 4 and jnp.result_type(x) == jnp.float32 and jnp.ndim(kernel) == 4
            and jnp.result_type(kernel) == jnp.float32 and all(isinstance(d, int) for d in jnp.shape(x)[1:])
            and jnp.shape(kernel)[1] == 1 and jnp.shape(kernel)[0] % jnp.shape(x)[1] == 0)


def depthwise_conv(x: Any, kernel: Any, bias: Any, activation: str | None, strides: Sequence[int],
                   padding: Sequence[tuple[int, int]], dilations: Sequence[int]) -> Any:
    """activation(depthwise conv(x, kernel) + bias) -> [N, C * m, Ho, Wo] float32 on the native kernel,
    padding ((top, bottom), (left, right)), activation an ACTIVATIONS name."""
    _, _, kh, kw = jnp.shape(kernel)
    spatial = [(x.shape[2 + a] + sum(padding[a]) - ((kh, kw)[a] - 1) * dilations[a] - 1) // strides[a] + 1
               for a in range(2)]
    out = jax.ShapeDtypeStruct((x.shape[0], jnp.shape(kernel)[0], *spatial), jnp.float32)
    bias = jnp.zeros((0,), jnp.float32) if bias is None else jnp.asarray(bias, jnp.float32).reshape(-1)
    attrs = dict(kernel_h=kh, kernel_w=kw, stride_h=strides[0], stride_w=strides[1], pad_top=padding[0][0],
                 pad_left=padding[1][0], dilation_h=dilations[0], dilation_w=dilations[1],
                 activation=ACTIVATIONS[activation])
    return jax.ffi.ffi_call(TARGET, out)(x, jnp.asarray(kernel, jnp.float32), bias,
                                         **{k: np.int64(v) for k, v in attrs.items()})
