"""The native row kernels (backends/jax/native/row_ops.cc) against onnxruntime: means over trailing
axes (GlobalAveragePool, ReduceMean) and a squeeze-and-excitation block's per-channel product, and
the cases that stay XLA's ops."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from native_support import check_against_onnxruntime, custom_call_targets, floats, needs_kernels, onnx_model


@needs_kernels
@pytest.mark.parametrize("shape", [(1, 672, 14, 14), (2, 5, 3, 7), (3, 9, 1, 1), (1, 4, 5, 6, 7)])
def test_global_average_pool_runs_on_the_kernel(shape):
    feeds = {"X": floats(*shape) + 0.5}
    model = onnx_model([helper.make_node("GlobalAveragePool", ["X"], ["Y"])], feeds, ["Y"])
    compiled = check_against_onnxruntime(model, feeds)
    assert custom_call_targets(compiled, feeds) == ["kiln_row_mean"]
    assert compiled(**feeds)[0].shape == shape[:2] + (1,) * (len(shape) - 2)


@needs_kernels
@pytest.mark.parametrize("axes, keepdims, native", [([2, 3], 1, True), ([3, 2], 0, True), ([-1], 1, True), ([1, 2, 3], 0, True),
                                                    ([1, 2], 1, False), ([0], 0, False)])
def test_reduce_mean_over_trailing_axes_runs_on_the_kernel(axes, keepdims, native):
    feeds = {"X": floats(2, 6, 5, 7)}
    model = onnx_model([helper.make_node("ReduceMean", ["X", "A"], ["Y"], keepdims=keepdims)], feeds, ["Y"],
                       {"A": np.array(axes, np.int64)}, opset=18)
    compiled = check_against_onnxruntime(model, feeds)
    assert custom_call_targets(compiled, feeds) == (["kiln_row_mean"] if native else [])


def _excitation(x_shape, scale_shape, first="X"):
    feeds = {"X": floats(*x_shape), "S": floats(*scale_shape)}
    operands = ["X", "S"] if first == "X" else ["S", "X"]
    return onnx_model([helper.make_node("Mul", operands, ["Y"])], feeds, ["Y"]), feeds


@needs_kernels
@pytest.mark.parametrize("x_shape, scale_shape, first", [((1, 672, 14, 14), (1, 672, 1, 1), "X"), ((2, 40, 28, 28), (2, 40, 1, 1), "S"),
                                                         ((1, 96, 17, 19), (96, 1, 1), "X"), ((2, 3, 40, 50), (2, 3, 40, 1), "X"),
                                                         ((4, 64, 33), (4, 64, 1), "S")])
def test_per_channel_products_run_on_the_kernel(x_shape, scale_shape, first):
    model, feeds = _excitation(x_shape, scale_shape, first)
    compiled = check_against_onnxruntime(model, feeds)
    assert custom_call_targets(compiled, feeds) == ["kiln_row_scale"]


@needs_kernels
@pytest.mark.parametrize("x_shape, scale_shape", [((2, 40, 28, 28), (1, 40, 1, 1)),  # one factor for every image
                                                  ((1, 40, 28, 28), (1, 1, 28, 28)),  # a factor per pixel
                                                  ((1, 8, 8, 8), (1, 8, 1, 1)),  # too small to leave XLA's fusion
                                                  ((1, 64, 30, 30), (1, 64, 30, 30))])  # no broadcast
def test_other_products_stay_xla_ops(x_shape, scale_shape):
    model, feeds = _excitation(x_shape, scale_shape)
    compiled = check_against_onnxruntime(model, feeds)
    assert custom_call_targets(compiled, feeds) == []
