"""Depthwise, 1x1 and patch-embedding convolutions lowered in their cheaper forms (backends/jax/conv_forms.py): same
results as onnxruntime, and no XLA convolution left in the program; Conv kernels and MatMul/Gemm
weights stored in the layout XLA reads (backends/jax/weight_layout.py) and read in place, also
through a saved artifact."""

from __future__ import annotations

import re

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler
from backends.jax.xla_options import YNN_FUSIONS, compiler_options
from compiler.backend_registry import load_artifact
from jax_backend_support import onnxruntime_outputs

CASES = [  # (attributes, input shape, weight shape): depthwise ...
    ({"group": 6, "pads": [1, 1, 1, 1]}, (2, 6, 9, 8), (6, 1, 3, 3)),
    ({"group": 4, "strides": [2, 2], "dilations": [2, 1], "pads": [2, 0, 1, 3]}, (1, 4, 11, 9), (8, 1, 3, 2)),
    ({"group": 5, "strides": [2], "pads": [2, 2]}, (2, 5, 13), (5, 1, 5)),
    ({"group": 3, "auto_pad": "SAME_UPPER", "strides": [2, 2]}, (1, 3, 7, 6), (3, 1, 3, 3)),
    # ... and pointwise
    ({}, (2, 8, 5, 7), (4, 8, 1, 1)),
    ({"strides": [2, 3]}, (1, 8, 9, 10), (6, 8, 1, 1)),
    ({"strides": [1, 2, 1]}, (2, 3, 4, 5, 6), (5, 3, 1, 1, 1)),
    # ... and patchify (ViT's patch embedding; a remainder that no patch covers is dropped)
    ({"strides": [8, 8]}, (2, 3, 32, 24), (32, 3, 8, 8)),
    ({"strides": [3, 3]}, (1, 4, 10, 13), (5, 4, 3, 3)),
    ({"strides": [2, 4]}, (1, 2, 9, 8), (3, 2, 2, 4)),
]


def _conv_model(attrs: dict, x_shape: tuple, w_shape: tuple):
    rng = np.random.default_rng(len(x_shape) + w_shape[0])
    weight = rng.standard_normal(w_shape).astype(np.float32)
    bias = rng.standard_normal(w_shape[0]).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["X", "W", "B"], ["Y"], **attrs)], "conv",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    return model, {"X": rng.standard_normal(x_shape).astype(np.float32)}


@pytest.mark.parametrize("attrs, x_shape, w_shape", CASES)
def test_conv_form_matches_onnxruntime_without_xla_convolution(attrs, x_shape, w_shape):
    model, feeds = _conv_model(attrs, x_shape, w_shape)
    compiled = compiler.compile(model, backend="cpu", opt_level=0)
    expected = onnxruntime_outputs(model, feeds)[0]
    np.testing.assert_allclose(compiled(**feeds)[0], expected, rtol=1e-5, atol=1e-5)
    program = compiled.runner.lower(compiled.bind_inputs((), feeds)).as_text()
    assert "convolution" not in program


def test_general_conv_keeps_xla_convolution():
    model, feeds = _conv_model({"group": 2, "pads": [1, 1, 1, 1]}, (1, 4, 6, 6), (4, 2, 3, 3))
    compiled = compiler.compile(model, backend="cpu", opt_level=0)
    np.testing.assert_allclose(compiled(**feeds)[0], onnxruntime_outputs(model, feeds)[0], rtol=1e-5, atol=1e-5)
    assert "convolution" in compiled.runner.lower(compiled.bind_inputs((), feeds)).as_text()


def _library_fused_convolutions(program: str) -> int:
    """How many convolutions of an optimized XLA:CPU program sit in computations that a YNNPACK
    fusion calls."""
    called = set(re.findall(r"calls=(%[\w.]+)[^\n]*__ynn_fusion", program))
    blocks = re.findall(r"^(%[\w.]+) [^\n]*\{\n(.*?)^\}", program, flags=re.M | re.S)
    return sum(body.count("convolution(") for name, body in blocks if name in called)


def test_general_conv_runs_on_xlas_kernel_not_ynnpack():
    """backends/jax/xla_options.py: YNNPACK's convolutions measured slower than XLA's own on ResNet-50."""
    if not compiler_options("cpu"):
        pytest.skip("this XLA:CPU has no per-program YNNPACK fusion option")
    model, feeds = _conv_model({"pads": [1, 1, 1, 1]}, (1, 32, 16, 16), (32, 32, 3, 3))  # YNNPACK takes >= 32 channels
    # XLA's convolution: what artifacts, bf16/fp16 and runs without the native kernels (ConvGemm) get
    compiled = compiler.compile(model, backend="cpu", opt_level=0, native_kernels=False)
    np.testing.assert_allclose(compiled(**feeds)[0], onnxruntime_outputs(model, feeds)[0], rtol=1e-5, atol=1e-5)
    lowered = compiled.runner.lower(compiled.bind_inputs((), feeds))
    program = lowered.compile().as_text()
    assert program.count("convolution(") == 1 and _library_fused_convolutions(program) == 0
    # the same program with YNNPACK's convolutions allowed puts it in a fusion (the check can fail)
    allowed = lowered.compile(compiler_options={YNN_FUSIONS: "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"})
    assert _library_fused_convolutions(allowed.as_text()) == 1


def _weight_copies(compiled, feeds, name: str) -> list[str]:
    """Instructions of the optimized XLA program named transpose/copy that read weight `name`."""
    program = compiled.runner.lower(compiled.bind_inputs((), feeds)).compile().as_text()
    return [line for line in program.splitlines()
            if ("transpose" in line.split("=")[0] or "copy" in line.split("=")[0]) and f"param_values__{name}__" in line]


def test_conv_kernel_stored_in_xla_layout_and_reloads(tmp_path):
    model, feeds = _conv_model({"pads": [1, 1, 1, 1], "strides": [2, 1]}, (3, 4, 9, 8), (6, 4, 3, 3))
    compiled = compiler.compile(model, backend="cpu", opt_level=0)
    assert compiled.params["W"].shape == (3, 3, 4, 6)  # [kh, kw, in, out]
    assert compiled.params["B"].shape == (6,)
    expected = onnxruntime_outputs(model, feeds)[0]
    np.testing.assert_allclose(compiled(**feeds)[0], expected, rtol=1e-5, atol=1e-5)
    assert not _weight_copies(compiled, feeds, "W")
    reloaded = load_artifact(compiled.save(str(tmp_path / "out")))
    np.testing.assert_allclose(reloaded(**feeds)[0], expected, rtol=1e-5, atol=1e-5)


def test_half_precision_depthwise_conv_accumulates_in_float32():
    """A float16 model in the default (fp32) precision: the depthwise form sums its 25 taps in float32
    and rounds once, so every output is the float64 result rounded to float16 within one ulp."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 8, 12, 12)).astype(np.float16)
    w = rng.standard_normal((8, 1, 5, 5)).astype(np.float16)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["X", "W"], ["Y"], group=8, pads=[2, 2, 2, 2])], "conv16",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT16, list(x.shape))],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT16, None)], [numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    compiled = compiler.compile(model, backend="cpu", opt_level=0)
    got = compiled(X=x)[0]
    assert got.dtype == np.float16
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (2, 2), (2, 2)))
    exact = sum(padded[:, :, i:i + 12, j:j + 12] * w[:, 0, i, j].astype(np.float64)[None, :, None, None]
                for i in range(5) for j in range(5))
    ulp = np.spacing(np.abs(exact).astype(np.float16)).astype(np.float64)
    assert np.all(np.abs(got.astype(np.float64) - exact) <= ulp)


@pytest.mark.parametrize("op, attrs, weight_shape", [
    ("Gemm", {"transB": 1}, (300, 512)),  # a torchvision classifier: the weight is [N, K] in the file
    ("Gemm", {}, (512, 300)),  # stored [N, K] by the backend
    ("MatMul", {}, (512, 300)),
])
def test_batch_one_product_with_bias_reads_its_weight_in_place(op, attrs, weight_shape):
    """XLA:CPU emits a batch-1 product fused with its bias itself (not YNNPACK) and copied a
    transposed weight into [K, N] on every call; the lowering contracts the weight's own axes."""
    rng = np.random.default_rng(3)
    weight = (rng.standard_normal(weight_shape) / 20).astype(np.float32)
    bias = rng.standard_normal(300).astype(np.float32)
    nodes = ([helper.make_node("Gemm", ["X", "W", "B"], ["Y"], **attrs)] if op == "Gemm" else
             [helper.make_node("MatMul", ["X", "W"], ["P"]), helper.make_node("Add", ["P", "B"], ["Y"])])
    graph = helper.make_graph(
        nodes, "linear", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 512])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    feeds = {"X": rng.standard_normal((1, 512)).astype(np.float32)}
    compiled = compiler.compile(model, backend="cpu", opt_level=0)
    assert compiled.params["W"].shape == (300, 512)  # [N, K] either way
    np.testing.assert_allclose(compiled(**feeds)[0], onnxruntime_outputs(model, feeds)[0], rtol=1e-5, atol=1e-5)
    assert not _weight_copies(compiled, feeds, "W")
