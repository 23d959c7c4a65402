"""MobileNet's convolutions on the native kernels against onnxruntime: the depthwise kernel
(native/depthwise_conv.cc, DepthwiseConv) over the geometries it pads and strides for, the HardSwish
epilogue of both convolution kernels, and squeeze-excitation's one-pixel convolutions run as panel
products (fuse_conv_epilogue's _conv_as_product)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import compiler
import jax
from backends.jax.interpreter import LoweringOptions, build_function
from backends.jax.native_rewrites import CONV_GEMM, DEPTHWISE_CONV, MATMUL_BIAS, NATIVE_DOMAIN, fuse_conv_epilogue, fuse_depthwise_epilogue
from jax_backend_support import onnxruntime_outputs
from native_support import check_against_onnxruntime, compiled_hlo, custom_call_targets, floats, needs_kernels, onnx_model

DEPTHWISE = [
    # x shape, output channels per input channel, kernel (kh, kw), Conv attributes
    ((1, 16, 30, 30), 1, (3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 24, 29, 31), 1, (3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),  # odd sizes: ragged vectors
    ((1, 40, 14, 14), 1, (5, 5), {"pads": [2, 2, 2, 2], "strides": [2, 2]}),
    ((1, 96, 7, 7), 1, (5, 5), {"pads": [2, 2, 2, 2]}),  # planes narrower than a vector
    ((2, 8, 13, 17), 2, (3, 5), {"pads": [0, 2, 1, 1], "strides": [1, 2]}),  # a multiplier, asymmetric pads
    ((1, 5, 20, 19), 1, (3, 3), {"pads": [1, 0, 2, 1], "strides": [3, 3], "dilations": [2, 1]}),  # gathered taps
    ((1, 6, 11, 40), 3, (3, 3), {"dilations": [2, 3]}),  # no padding, wide rows over three vectors
    ((1, 12, 9, 10), 1, (3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
]


def _depthwise_model(x_shape, multiplier, kernel, attrs, bias=True, activation=None):
    channels = x_shape[1]
    inputs = ["X", "W", "B"] if bias else ["X", "W"]
    nodes = [helper.make_node("Conv", inputs, ["C"], group=channels, kernel_shape=list(kernel), **attrs)]
    nodes.append(helper.make_node(activation or "Identity", ["C"], ["Y"]))
    weights = {"W": floats(channels * multiplier, 1, *kernel, scale=0.3), "B": floats(channels * multiplier)}
    feeds = {"X": floats(*x_shape)}
    return onnx_model(nodes, feeds, ["Y"], weights if bias else {"W": weights["W"]}), feeds


@needs_kernels
@pytest.mark.parametrize("x_shape, multiplier, kernel, attrs", DEPTHWISE)
@pytest.mark.parametrize("bias, activation", [(True, "Relu"), (False, "HardSwish"), (True, None)])
def test_depthwise_convolution_runs_on_the_kernel(x_shape, multiplier, kernel, attrs, bias, activation):
    model, feeds = _depthwise_model(x_shape, multiplier, kernel, attrs, bias, activation)
    compiled = check_against_onnxruntime(model, feeds)
    assert custom_call_targets(compiled, feeds) == ["kiln_depthwise_conv"]
    program = compiled_hlo(compiled, feeds)
    assert "convolution(" not in program and " pad(" not in program and " maximum(" not in program


def test_depthwise_rewrite_takes_the_activation_and_leaves_other_groupings():
    """A depthwise Conv -> HardSwish becomes one DepthwiseConv; a grouped Conv with several input
    channels per group and a depthwise Conv whose kernel is computed stay Conv."""
    feeds = {"X": floats(1, 4, 6, 6), "K": floats(4, 1, 3, 3)}
    nodes = [helper.make_node("Conv", ["X", "W"], ["C"], group=4, pads=[1, 1, 1, 1]),
             helper.make_node("HardSwish", ["C"], ["Y"]),
             helper.make_node("Conv", ["X", "G"], ["Z"], group=2),
             helper.make_node("Conv", ["X", "K"], ["V"], group=4)]
    model = onnx_model(nodes, feeds, ["Y", "Z", "V"], {"W": floats(8, 1, 3, 3), "G": floats(4, 2, 1, 1)})
    graph = compiler.load(model)
    assert fuse_depthwise_epilogue(graph) == 1
    fused = [n for n in graph.nodes if (n.domain, n.op_type) == (NATIVE_DOMAIN, DEPTHWISE_CONV)]
    assert len(fused) == 1 and fused[0].attributes["activation"].value == "hard_swish"
    assert sorted(n.op_type for n in graph.nodes) == ["Conv", "Conv", DEPTHWISE_CONV]


@needs_kernels
def test_hard_swish_is_the_convolution_kernels_epilogue():
    """Conv -> HardSwish (MobileNetV3's expansions): one conv_gemm call, no XLA clamp after it."""
    feeds = {"X": floats(1, 16, 12, 12)}
    nodes = [helper.make_node("Conv", ["X", "W", "B"], ["C"], pads=[1, 1, 1, 1]), helper.make_node("HardSwish", ["C"], ["Y"])]
    compiled = check_against_onnxruntime(onnx_model(nodes, feeds, ["Y"], {"W": floats(20, 16, 3, 3, scale=0.2), "B": floats(20)}), feeds)
    assert custom_call_targets(compiled, feeds) == ["kiln_conv_gemm"]
    program = compiled_hlo(compiled, feeds)
    assert " clamp(" not in program and " minimum(" not in program and " maximum(" not in program


def _squeeze_excitation(channels: int, squeezed: int, batch="n"):
    nodes = [helper.make_node("GlobalAveragePool", ["X"], ["G"]), helper.make_node("Conv", ["G", "W1", "B1"], ["C1"]),
             helper.make_node("Relu", ["C1"], ["R"]), helper.make_node("Conv", ["R", "W2", "B2"], ["C2"]),
             helper.make_node("HardSigmoid", ["C2"], ["S"], alpha=1 / 6), helper.make_node("Mul", ["X", "S"], ["Y"])]
    weights = {"W1": floats(squeezed, channels, 1, 1, scale=0.1), "B1": floats(squeezed),
               "W2": floats(channels, squeezed, 1, 1, scale=0.1), "B2": floats(channels)}
    return nodes, weights


@needs_kernels
def test_squeeze_excitation_convolutions_of_one_pixel_are_panel_products():
    """GAP -> Conv 1x1 -> Relu -> Conv 1x1 -> HardSigmoid -> Mul: both convolutions read one pixel,
    so they run as [N, C] products on the panel kernel (the Relu as its epilogue), not on 32-pixel
    convolution panels, and the pool and the product with x on the row kernels; the batch stays
    symbolic."""
    feeds = {"X": floats(3, 256, 7, 7)}
    nodes, weights = _squeeze_excitation(256, 64)
    model = onnx_model(nodes, feeds, ["Y"], weights)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "n"
    compiled = check_against_onnxruntime(model, feeds)
    assert custom_call_targets(compiled, feeds) == ["kiln_row_mean", *["kiln_panel_matmul_bias"] * 2, "kiln_row_scale"]
    graph = compiler.load(model)
    assert fuse_conv_epilogue(graph) == 2
    products = [n for n in graph.nodes if (n.domain, n.op_type) == (NATIVE_DOMAIN, MATMUL_BIAS)]
    assert [n.attributes.get("activation") and n.attributes["activation"].value for n in products] == ["relu", None]
    assert not any(n.op_type in ("Conv", CONV_GEMM, "Relu") for n in graph.nodes)
    assert [graph.initializers[n.inputs[1].name].const_value.shape for n in products] == [(64, 256), (256, 64)]
    assert "W1" not in graph.initializers and "W2" not in graph.initializers  # the 4-D kernels are dropped


@needs_kernels
def test_depthwise_traced_without_a_concrete_image_size_runs_on_xla():
    """DepthwiseConv where H and W are symbolic (a trace for export): XLA's ops, no custom call."""
    model, feeds = _depthwise_model((1, 8, 9, 9), 1, (3, 3), {"pads": [1, 1, 1, 1]}, activation="HardSwish")
    function, params = build_function(compiler.load(model), LoweringOptions(platform="cpu", native_kernels=True))
    height, width = jax.export.symbolic_shape("h, w")
    exported = jax.export.export(jax.jit(function))(params, jax.ShapeDtypeStruct((1, 8, height, width), np.float32))
    assert "kiln_" not in exported.mlir_module()
    got = exported.call(params, feeds["X"])[0]
    np.testing.assert_allclose(np.asarray(got), onnxruntime_outputs(model, feeds)[0], rtol=1e-4, atol=1e-5)
