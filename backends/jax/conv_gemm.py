"""fp32 2-D convolutions on the native kernel in native/conv_gemm.cc through jax.ffi (CPU only,
in-process runs, like panel_matmul.py): the kernel matrix packed once into row tiles, the image's
patches packed by the kernel as it goes, input, output and residual all NCHW. Where an image has few
output pixels (7 x 7, 14 x 14), whose 32-pixel patch panels would leave lanes idle, the kernel matrix
is packed transposed as column panels instead and the pixels become the rows (the columns form).

XLA:CPU runs a convolution through Eigen's im2col and GEMM with NCHW <-> NHWC layout copies around
it, at 23-89 GFLOP/s on 2 threads on ResNet-50's layers where onnxruntime's reach 109-192; a ResNet block's
bias, residual Add and Relu are the kernel's epilogue here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import native
from .panel_matmul import ACTIVATIONS, pack_panels

TARGET = "kiln_conv_gemm"
COLUMNS_TARGET = "kiln_conv_columns"
ROWS, COLUMNS = "rows", "columns"  # ConvKernel layouts: row tiles of W, or column panels of W^T
# the columns form where patch panels would idle at least this share of their lanes, and that share
# times the depth K (the work the idle lanes waste, against the transpose the form adds) is at least
# COLUMNS_MIN_IDLE_DEPTH: on ResNet-50's 14 x 14 layers 3x3 256 -> 256 (K 2304) ran 0.86x the time,
# 1x1 256 -> 1024 (K 256) 1.21x
COLUMNS_MIN_IDLE_LANES = 1 / 16
COLUMNS_MIN_IDLE_DEPTH = 96


def row_tile() -> int | None:
    """MR, the rows of the kernel's register tile (the row tiles' height), or None where unavailable."""
    library = native.library()
    return None if library is None else int(library.kiln_row_tile())


def depth_block() -> int | None:
    """The K block the kernel multiplies in (its row tiles are stored block by block)."""
    library = native.library()
    return None if library is None else int(library.kiln_depth_block())


def pack_conv_kernel(kernel: np.ndarray, rows: int, depth: int) -> np.ndarray:
    """An OIHW float32 kernel as the row tiles of its [O, I*H*W] matrix (k = (i, h, w) row-major, the
    order the kernel packs patches in), O zero-padded to tiles of `rows`, stored K block by K block
    ([K / depth][tiles][kc][rows] in memory) and shaped [tiles, K, rows]."""
    out_channels = kernel.shape[0]
    matrix = kernel.reshape(out_channels, -1).astype(np.float32)
    tiles, k = -(-out_channels // rows), matrix.shape[1]
    padded = np.zeros((tiles * rows, k), np.float32)
    padded[:out_channels] = matrix
    blocks = [padded[:, k0:k0 + depth].reshape(tiles, rows, -1).transpose(0, 2, 1).ravel() for k0 in range(0, k, depth)]
    return np.concatenate(blocks).reshape(tiles, k, rows)


def pack_conv_columns(kernel: np.ndarray, width: int) -> np.ndarray:
    """An OIHW float32 kernel as column panels of W^T [I*H*W, O]: [ceil(O / width), K, width]."""
    return pack_panels(kernel.reshape(kernel.shape[0], -1).astype(np.float32).T, width)


def prefers_columns(pixels: int | None, depth: int, width: int) -> bool:
    """Whether images of `pixels` output pixels and a kernel of depth K = I*H*W run faster in the
    columns form (see COLUMNS_MIN_IDLE_LANES): 49 pixels idle 23% of 64 lanes."""
    if not pixels:
        return False
    lanes = -(-pixels // width) * width
    idle = (lanes - pixels) / lanes
    return idle >= COLUMNS_MIN_IDLE_LANES and idle * depth >= COLUMNS_MIN_IDLE_DEPTH


@dataclass(frozen=True)
class ConvKernel:
    """A ConvGemm kernel as it reaches the traced function: the packed `tiles` argument (row tiles,
    or column panels in the columns layout), the ONNX kernel shape (O, I, H, W) and the K block the
    row tiles were packed with."""

    tiles: Any
    shape: tuple[int, int, int, int]
    depth: int
    layout: str = ROWS

    def dense(self) -> Any:
        """The OIHW kernel unpacked (a copy on every call: only for convolutions the kernel cannot run)."""
        if self.layout == COLUMNS:
            count, k, width = self.tiles.shape
            columns = jnp.transpose(self.tiles, (1, 0, 2)).reshape(k, count * width)[:, :self.shape[0]]
            return jnp.transpose(columns).reshape(self.shape)
        count, k, rows = self.tiles.shape
        flat, blocks = jnp.reshape(self.tiles, (-1,)), []
        for k0 in range(0, k, self.depth):
            kc = min(self.depth, k - k0)
            block = flat[k0 * count * rows:(k0 + kc) * count * rows].reshape(count, kc, rows)
            blocks.append(jnp.transpose(block, (0, 2, 1)).reshape(count * rows, kc))
        return jnp.concatenate(blocks, axis=1)[:self.shape[0]].reshape(self.shape)


def runs_natively(x: Any, kernel: ConvKernel) -> bool:
    """Whether the kernel can run this convolution: a float32 NCHW x with concrete C, H, W that match."""
    return (jnp.ndim(x) == 4 and jnp.result_type(x) == jnp.float32
            and all(isinstance(size, int) for size in jnp.shape(x)[1:]) and jnp.shape(x)[1] == kernel.shape[1])


def output_shape(x: Any, kernel: ConvKernel, strides: Sequence[int], padding: Sequence[tuple[int, int]],
                 dilations: Sequence[int]) -> tuple:
    """[N, O, Ho, Wo] of the convolution of NCHW x, padding ((top, bottom), (left, right))."""
    spatial = [(x.shape[2 + a] + sum(padding[a]) - (kernel.shape[2 + a] - 1) * dilations[a] - 1) // strides[a] + 1
               for a in range(2)]
    return (x.shape[0], kernel.shape[0], *spatial)


def conv_gemm(x: Any, kernel: ConvKernel, bias: Any, residual: Any, activation: str | None, strides: Sequence[int],
              padding: Sequence[tuple[int, int]], dilations: Sequence[int]) -> Any:
    """activation(conv(x, kernel) + bias[O] (+ residual)) -> output_shape float32 on the native
    kernel; residual of exactly that shape (or None), activation an ACTIVATIONS name."""
    (top, _), (left, _) = padding
    _, _, kh, kw = kernel.shape
    out = jax.ShapeDtypeStruct(output_shape(x, kernel, strides, padding, dilations), jnp.float32)
    empty = jnp.zeros((0,), jnp.float32)
    bias = empty if bias is None else jnp.asarray(bias, jnp.float32).reshape(kernel.shape[0])
    residual = empty if residual is None else jnp.asarray(residual, jnp.float32)
    attrs = dict(kernel_h=kh, kernel_w=kw, stride_h=strides[0], stride_w=strides[1], pad_top=top, pad_left=left,
                 dilation_h=dilations[0], dilation_w=dilations[1], activation=ACTIVATIONS[activation])
    target = COLUMNS_TARGET if kernel.layout == COLUMNS else TARGET
    return jax.ffi.ffi_call(target, out)(x, kernel.tiles, bias, residual, **{k: np.int64(v) for k, v in attrs.items()})
