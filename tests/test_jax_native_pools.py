"""MaxPool and AveragePool on the native kernel (backends/jax/native/pool.cc) against onnxruntime:
windows, strides, dilations, explicit and automatic padding, ceil mode, counting the padding or
not; the cases that stay XLA's ops."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

import compiler

from native_support import check_against_onnxruntime, custom_call_targets, floats, needs_kernels, onnx_model

CASES = [
    ((1, 64, 112, 112), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),  # ResNet's
    ((2, 3, 17, 23), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ((1, 4, 15, 15), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ((1, 5, 20, 40), {"kernel_shape": [3, 5], "strides": [1, 1], "pads": [1, 2, 0, 2]}),
    ((1, 3, 19, 50), {"kernel_shape": [3, 3], "strides": [3, 3], "pads": [1, 1, 1, 1]}),
    ((1, 2, 16, 33), {"kernel_shape": [3, 3], "dilations": [2, 2], "strides": [1, 2]}),
    ((1, 6, 13, 13), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((1, 2, 5, 70), {"kernel_shape": [5, 5], "strides": [2, 2], "pads": [2, 2, 2, 2], "ceil_mode": 1}),
]


@needs_kernels
@pytest.mark.parametrize("shape, attrs", CASES)
def test_max_pool_runs_on_the_kernel(shape, attrs):
    feeds = {"X": floats(*shape)}
    model = onnx_model([helper.make_node("MaxPool", ["X"], ["Y"], **attrs)], feeds, ["Y"], opset=18)
    compiled = check_against_onnxruntime(model, feeds, rtol=0, atol=0)
    assert custom_call_targets(compiled, feeds) == ["kiln_max_pool"]


@needs_kernels
def test_infinities_give_what_xla_ops_give():
    """A window of -inf and padding only is -inf, as in XLA's lowering and the ONNX reference
    (onnxruntime starts from the lowest finite float and returns that); +inf wins its windows."""
    x = floats(1, 2, 9, 9)
    x[0, 0, :3, :3] = -np.inf
    x[0, 1, 4, 4] = np.inf
    model = onnx_model([helper.make_node("MaxPool", ["X"], ["Y"], kernel_shape=[3, 3], strides=[2, 2], pads=[2, 2, 2, 2])],
                       {"X": x}, ["Y"], opset=18)
    native = compiler.compile(model, backend="cpu", opt_level=0)
    assert custom_call_targets(native, {"X": x}) == ["kiln_max_pool"]
    got = native(x)[0]
    np.testing.assert_array_equal(got, compiler.compile(model, backend="cpu", opt_level=0, native_kernels=False)(x)[0])
    np.testing.assert_array_equal(got, ReferenceEvaluator(model).run(None, {"X": x})[0])
    assert got[0, 0, 0, 0] == -np.inf and got[0, 1, 2, 2] == np.inf


@needs_kernels
@pytest.mark.parametrize("case", ["indices", "one_d", "int8", "tall"])
def test_other_max_pools_stay_xla_ops(case):
    if case == "int8":
        feeds = {"X": np.random.default_rng(3).integers(-100, 100, (1, 3, 8, 8)).astype(np.int8)}
    else:
        feeds = {"X": floats(1, 3, 8, 8) if case != "one_d" else floats(1, 3, 20)}
    kernel = {"one_d": [3], "tall": [17, 1]}.get(case, [3, 3])
    if case == "tall":  # more window rows than the kernel keeps in registers
        feeds = {"X": floats(1, 2, 20, 6)}
    outputs = ["Y", "I"] if case == "indices" else ["Y"]
    model = onnx_model([helper.make_node("MaxPool", ["X"], outputs, kernel_shape=kernel, strides=[2] * len(kernel))],
                       feeds, outputs, opset=18)
    if case == "int8":
        model.graph.output[0].type.tensor_type.elem_type = 3  # INT8
    if case == "indices":
        model.graph.output[1].type.tensor_type.elem_type = 7  # INT64
    compiled = check_against_onnxruntime(model, feeds, rtol=0, atol=0)
    assert custom_call_targets(compiled, feeds) == []


AVERAGE_CASES = [
    ((1, 32, 56, 56), {"kernel_shape": [2, 2], "strides": [2, 2]}),  # a ResNet-D shortcut's
    ((1, 8, 35, 35), {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]}),  # Inception's
    ((1, 8, 35, 35), {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    ((2, 3, 15, 17), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ((2, 3, 15, 17), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 1, 2], "ceil_mode": 1, "count_include_pad": 1}),
    ((1, 4, 19, 40), {"kernel_shape": [5, 3], "strides": [3, 3], "pads": [2, 1, 2, 1]}),
    ((1, 2, 16, 33), {"kernel_shape": [3, 3], "dilations": [2, 2], "strides": [1, 2], "pads": [2, 2, 2, 2], "count_include_pad": 1}),
    ((1, 6, 13, 13), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER"}),
]


@needs_kernels
@pytest.mark.parametrize("shape, attrs", AVERAGE_CASES)
def test_average_pool_runs_on_the_kernel(shape, attrs):
    feeds = {"X": floats(*shape)}
    model = onnx_model([helper.make_node("AveragePool", ["X"], ["Y"], **attrs)], feeds, ["Y"], opset=19)
    compiled = check_against_onnxruntime(model, feeds, rtol=1e-5, atol=1e-6)
    assert custom_call_targets(compiled, feeds) == ["kiln_average_pool"]


@needs_kernels
def test_average_pool_of_a_tall_window_stays_xla_ops():
    feeds = {"X": floats(1, 2, 20, 6)}
    model = onnx_model([helper.make_node("AveragePool", ["X"], ["Y"], kernel_shape=[17, 1])], feeds, ["Y"], opset=19)
    compiled = check_against_onnxruntime(model, feeds, rtol=1e-5, atol=1e-6)
    assert custom_call_targets(compiled, feeds) == []
