"""The native convolution kernel (backends/jax/native/conv_gemm.cc, ConvGemm) against onnxruntime:
the geometries it packs patches for, the bias/residual/Relu epilogue fuse_conv_epilogue gives it,
the kernel's packed layout, and the convolutions that stay on XLA."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import compiler
import jax
from backends.jax import conv_gemm
from backends.jax.conv_gemm import COLUMNS, ROWS, ConvKernel, pack_conv_columns, pack_conv_kernel
from backends.jax.interpreter import LoweringOptions, build_function
from backends.jax.native_rewrites import CONV_GEMM, NATIVE_DOMAIN, fuse_conv_epilogue
from jax_backend_support import onnxruntime_outputs
from native_support import check_against_onnxruntime, compiled_hlo, custom_call_targets, floats, needs_kernels, onnx_model

GEOMETRIES = [
    # x shape, kernel shape, Conv attributes
    ((1, 16, 9, 9), (24, 16, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 5, 11, 7), (7, 5, 3, 3), {"pads": [0, 2, 1, 0], "strides": [2, 1]}),  # asymmetric pads, ragged panels
    ((1, 3, 40, 40), (13, 3, 7, 7), {"pads": [3, 3, 3, 3], "strides": [2, 2]}),  # a stem: strided taps gather
    ((1, 64, 6, 6), (100, 64, 1, 1), {}),  # 1x1, a lone ragged panel
    ((2, 40, 8, 8), (30, 40, 1, 1), {"strides": [2, 2]}),  # a strided 1x1 (downsample)
    ((1, 8, 12, 10), (9, 8, 3, 3), {"dilations": [2, 3], "pads": [2, 3, 2, 3]}),
    ((1, 6, 9, 8), (5, 6, 3, 2), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((1, 50, 7, 7), (40, 50, 3, 3), {"pads": [1, 1, 1, 1]}),  # K = 450 spans two K blocks
    ((1, 4, 13, 13), (5, 4, 3, 3), {"pads": [1, 1, 1, 1], "strides": [3, 3]}),  # strides other than 1 and 2 gather
]


def _conv_nodes(attrs: dict, bias: bool = True, then: tuple = ()) -> list:
    nodes = [helper.make_node("Conv", ["X", "W", "B"] if bias else ["X", "W"], ["C"], **attrs)]
    last = "C"
    for op, *extra in then:
        nodes.append(helper.make_node(op, [last, *extra], [f"{op}_out"]))
        last = f"{op}_out"
    nodes.append(helper.make_node("Identity", [last], ["Y"]))
    return nodes


TARGETS = {ROWS: "kiln_conv_gemm", COLUMNS: "kiln_conv_columns"}


def _force_layout(monkeypatch, layout: str) -> None:
    """Every ConvGemm kernel packed in `layout` (the columns form otherwise goes to small images only)."""
    monkeypatch.setattr(conv_gemm, "COLUMNS_MIN_IDLE_LANES", 0.0 if layout == COLUMNS else 2.0)
    monkeypatch.setattr(conv_gemm, "COLUMNS_MIN_IDLE_DEPTH", 0.0)


@needs_kernels
@pytest.mark.parametrize("x_shape, w_shape, attrs", GEOMETRIES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("layout", [ROWS, COLUMNS])
def test_convolution_runs_on_the_kernel(x_shape, w_shape, attrs, bias, layout, monkeypatch):
    _force_layout(monkeypatch, layout)
    feeds = {"X": floats(*x_shape)}
    weights = {"W": floats(*w_shape, scale=0.2), "B": floats(w_shape[0])}
    model = onnx_model(_conv_nodes(attrs, bias), feeds, ["Y"], weights if bias else {"W": weights["W"]})
    compiled = check_against_onnxruntime(model, feeds)
    assert custom_call_targets(compiled, feeds) == [TARGETS[layout]]
    assert "convolution(" not in compiled_hlo(compiled, feeds)


@needs_kernels
@pytest.mark.parametrize("size, kernel, layout", [(7, 3, COLUMNS), (14, 3, COLUMNS), (10, 3, COLUMNS), (28, 3, ROWS),
                                                  (8, 3, ROWS), (56, 3, ROWS), (14, 1, ROWS)])
def test_small_images_take_the_columns_form(size, kernel, layout):
    """Images whose last 32-pixel patch panel would idle a sixteenth of the lanes or more (7 x 7:
    49 pixels in 64 lanes), where the idle share times the depth K is large enough to pay for the
    transpose, run pixels as rows against column panels of the kernel, with a ResNet block's
    residual and Relu applied as the product is transposed into NCHW (a 1x1 of K = 96 stays rows)."""
    feeds = {"X": floats(2, 96, size, size), "R": floats(2, 70, size, size)}
    pad = kernel // 2
    nodes = _conv_nodes({"pads": [pad] * 4}, then=(("Add", "R"), ("Relu",)))
    weights = {"W": floats(70, 96, kernel, kernel, scale=0.1), "B": floats(70)}
    compiled = check_against_onnxruntime(onnx_model(nodes, feeds, ["Y"], weights), feeds)
    assert custom_call_targets(compiled, feeds) == [TARGETS[layout]]
    depth = 96 * kernel * kernel
    assert compiled.runner.host_params["W"].shape == ((3, depth, 32) if layout == COLUMNS else (6, depth, 12))
    program = compiled_hlo(compiled, feeds)
    assert " add(" not in program and " maximum(" not in program


@needs_kernels
def test_resnet_block_add_and_relu_are_the_kernels_epilogue():
    """Relu(Conv(x) + Conv(Relu(Conv(x)))): three kernel calls, no XLA add or maximum left."""
    feeds = {"X": floats(2, 32, 10, 10)}
    nodes = [helper.make_node("Conv", ["X", "W1", "B1"], ["A"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["A"], ["Ar"]),
             helper.make_node("Conv", ["Ar", "W2", "B2"], ["Bc"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["X", "W3"], ["S"]),  # the shortcut, a 1x1 without bias
             helper.make_node("Add", ["S", "Bc"], ["Sum"]), helper.make_node("Relu", ["Sum"], ["Y"])]
    weights = {"W1": floats(48, 32, 3, 3, scale=0.1), "B1": floats(48), "W2": floats(48, 48, 3, 3, scale=0.1),
               "B2": floats(48), "W3": floats(48, 32, 1, 1, scale=0.2)}
    compiled = check_against_onnxruntime(onnx_model(nodes, feeds, ["Y"], weights), feeds)
    assert custom_call_targets(compiled, feeds) == ["kiln_conv_gemm"] * 3
    assert compiled.native_convolutions == 3 and "3 convolution kernels packed" in compiled.describe()
    program = compiled_hlo(compiled, feeds)
    assert " add(" not in program and " maximum(" not in program


def test_epilogue_rewrite_takes_the_add_and_the_relu():
    """Conv -> Add(computed) -> Relu becomes one ConvGemm with the residual as its fourth input; an
    Add of a constant is left to XLA."""
    feeds = {"X": floats(1, 4, 6, 6), "R": floats(1, 8, 6, 6)}
    nodes = [helper.make_node("Conv", ["X", "W"], ["C"], pads=[1, 1, 1, 1]), helper.make_node("Add", ["C", "R"], ["S"]),
             helper.make_node("Relu", ["S"], ["Y"]),
             helper.make_node("Conv", ["X", "W"], ["C2"], pads=[1, 1, 1, 1]), helper.make_node("Add", ["C2", "K"], ["Z"])]
    model = onnx_model(nodes, feeds, ["Y", "Z"], {"W": floats(8, 4, 3, 3), "K": floats(1, 8, 1, 1)})
    graph = compiler.load(model)
    assert fuse_conv_epilogue(graph) == 2
    fused = [n for n in graph.nodes if (n.domain, n.op_type) == (NATIVE_DOMAIN, CONV_GEMM)]
    assert [len(n.inputs) for n in fused] == [4, 3]
    assert fused[0].attributes["activation"].value == "relu" and "activation" not in fused[1].attributes
    assert sorted(n.op_type for n in graph.nodes) == ["Add", CONV_GEMM, CONV_GEMM]


@needs_kernels
def test_residual_that_broadcasts_is_added_by_xla():
    feeds = {"X": floats(2, 6, 8, 8), "R": floats(1, 10, 1, 8)}
    nodes = _conv_nodes({"pads": [1, 1, 1, 1]}, then=(("Add", "R"), ("Relu",)))
    compiled = check_against_onnxruntime(onnx_model(nodes, feeds, ["Y"], {"W": floats(10, 6, 3, 3), "B": floats(10)}), feeds)
    assert custom_call_targets(compiled, feeds) == ["kiln_conv_gemm"]
    assert " add(" in compiled_hlo(compiled, feeds)


def test_packed_kernel_unpacks_to_the_onnx_kernel():
    """pack_conv_kernel's row tiles, stored K block by K block with a ragged last block and padded
    rows, give the OIHW kernel back (the fallback path reads them so)."""
    kernel = floats(14, 9, 3, 3)  # K = 81: blocks of 32, 32 and 17
    packed = pack_conv_kernel(kernel, rows=4, depth=32)
    assert packed.shape == (4, 81, 4)
    block = packed.reshape(-1)[:4 * 32 * 4].reshape(4, 32, 4)  # first K block: [tile][k][row]
    np.testing.assert_array_equal(block[1, 5], kernel.reshape(14, 81)[4:8, 5])
    np.testing.assert_array_equal(np.asarray(ConvKernel(packed, kernel.shape, 32).dense()), kernel)
    columns = pack_conv_columns(kernel, 8)  # W^T [81, 14] in panels of 8 columns, the last 6 wide
    assert columns.shape == (2, 81, 8) and not columns[1, :, 6:].any()
    np.testing.assert_array_equal(columns[1, 5, :6], kernel.reshape(14, 81)[8:, 5])
    np.testing.assert_array_equal(np.asarray(ConvKernel(columns, kernel.shape, 0, COLUMNS).dense()), kernel)


@needs_kernels
@pytest.mark.parametrize("layout", [ROWS, COLUMNS])
def test_traced_without_a_concrete_image_size_the_kernel_is_unpacked_for_xla(layout, monkeypatch):
    """ConvGemm where H and W are symbolic (a trace for export): XLA's convolution of the unpacked
    kernel, and the bias, residual and Relu as ops; grouped convolutions are never rewritten."""
    _force_layout(monkeypatch, layout)
    feeds = {"X": floats(1, 8, 9, 9), "R": floats(1, 6, 9, 9)}
    nodes = [helper.make_node("Conv", ["X", "W", "B"], ["C"], pads=[1, 1, 1, 1]), helper.make_node("Add", ["C", "R"], ["S"]),
             helper.make_node("Relu", ["S"], ["A"]), helper.make_node("Conv", ["A", "G"], ["Y"], group=2, pads=[1, 1, 1, 1])]
    model = onnx_model(nodes, feeds, ["Y"], {"W": floats(6, 8, 3, 3), "B": floats(6), "G": floats(4, 3, 3, 3)})
    function, params = build_function(compiler.load(model), LoweringOptions(platform="cpu", native_kernels=True))
    # packed: one tile of 12 rows (6 used), or one panel of 32 columns, K = 8 * 3 * 3
    assert params["W"].shape == ((1, 72, 12) if layout == ROWS else (1, 72, 32))
    height, width = jax.export.symbolic_shape("h, w")
    specs = [jax.ShapeDtypeStruct((1, 8, height, width), np.float32), jax.ShapeDtypeStruct((1, 6, height, width), np.float32)]
    exported = jax.export.export(jax.jit(function))(params, *specs)
    assert "kiln_conv_gemm" not in exported.mlir_module() and exported.mlir_module().count("stablehlo.convolution") == 2
    got = exported.call(params, feeds["X"], feeds["R"])[0]
    np.testing.assert_allclose(np.asarray(got), onnxruntime_outputs(model, feeds)[0], rtol=1e-4, atol=1e-5)


@needs_kernels
def test_kernel_read_by_another_op_stays_plain():
    feeds = {"X": floats(1, 4, 5, 5)}
    nodes = [helper.make_node("Conv", ["X", "W"], ["C"]), helper.make_node("ReduceSum", ["W"], ["S"], keepdims=0)]
    compiled = check_against_onnxruntime(onnx_model(nodes, feeds, ["C", "S"], {"W": floats(3, 4, 2, 2)}), feeds)
    assert custom_call_targets(compiled, feeds) == []
