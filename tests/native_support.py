"""What the native-kernel tests share: models of a few nodes, the check against onnxruntime, and the
custom calls and optimized program a compiled model lowers to."""

from __future__ import annotations

import re

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler
from backends.jax import native
from jax_backend_support import onnxruntime_outputs

needs_kernels = pytest.mark.skipif(native.library() is None, reason=f"native kernels unavailable: {native.unavailable_reason()}")
RNG = np.random.default_rng(7)


def floats(*shape, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def onnx_model(nodes, inputs: dict[str, np.ndarray], outputs: list[str], initializers: dict | None = None, opset: int = 23):
    graph = helper.make_graph(
        nodes, "native",
        [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for name, a in inputs.items()],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        [numpy_helper.from_array(a, name) for name, a in (initializers or {}).items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def check_against_onnxruntime(model, feeds, rtol=1e-4, atol=1e-5, opt_level=0):
    """Outputs of the native build match onnxruntime's; returns the compiled model."""
    compiled = compiler.compile(model, backend="cpu", opt_level=opt_level)
    for want, got in zip(onnxruntime_outputs(model, feeds), compiled(**feeds)):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    return compiled


def custom_call_targets(compiled, feeds) -> list[str]:
    text = compiled.runner.lower([feeds[name] for name in compiled.input_names]).as_text()
    return re.findall(r"stablehlo\.custom_call @(\w+)", text)


def compiled_hlo(compiled, feeds) -> str:
    return compiled.runner.lower([feeds[name] for name in compiled.input_names]).compile().as_text()
