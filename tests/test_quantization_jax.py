"""The JAX backend runs QDQ graphs: real int8 x int8 -> int32 products where Q/DQ surround
Conv/Gemm/MatMul with int8 weights, simulated Q/DQ elsewhere; both agree with onnxruntime."""

from __future__ import annotations

import collections

import numpy as np
import pytest

import compiler
from compiler.onnx_io import export_model
from compiler.reference import run_onnxruntime

jax = pytest.importorskip("jax")

CALIBRATION = "data/digits_calibration.npz"


def _ort_qdq(compiled_onnx, feeds):
    return run_onnxruntime(export_model(compiled_onnx.graph), feeds)[0]  # optimizer off: exact Q/DQ math


def test_digits_runs_as_int8_products(samples_dir):
    calibration = str(samples_dir / CALIBRATION)
    test = np.load(samples_dir / "data" / "digits_test.npz")
    compiled = compiler.compile(samples_dir / "digits_cnn.onnx", backend="cpu", quantize="int8", calibration=calibration)
    ops = collections.Counter(n.qualified_op for n in compiled.graph.nodes)
    assert ops["ai.graphkiln::Int8Conv"] == 2 and ops["ai.graphkiln::Int8Gemm"] == 2
    assert "QuantizeLinear" not in ops and "DequantizeLinear" not in ops
    outputs = np.asarray(compiled(test["input"])[0])
    reference = _ort_qdq(compiler.compile(samples_dir / "digits_cnn.onnx", backend="onnx", quantize="int8", calibration=calibration),
                         {"input": test["input"]})
    np.testing.assert_allclose(outputs, reference, rtol=1e-4, atol=1e-4)
    assert float((outputs.argmax(1) == test["label"]).mean()) >= 0.977


def test_int8_lowering_uses_int32_accumulation():
    import jax.numpy as jnp

    from backends.jax.quant_exec import _int8_conv, _int8_gemm

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    weight = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    jaxpr = str(jax.make_jaxpr(lambda v: _int8_conv(None, v, np.float32(0.02), np.int8(0), weight, np.full(4, 0.01, np.float32), pads=[1, 1, 1, 1]))(x))
    assert "preferred_element_type=int32" in jaxpr and "i8[4,3,3,3]" in jaxpr
    matrix = rng.standard_normal((2, 6)).astype(np.float32)
    gemm_weight = rng.integers(-127, 128, (4, 6)).astype(np.int8)
    bias = np.arange(4, dtype=np.int32)
    result = _int8_gemm(None, jnp.asarray(matrix), np.float32(0.05), np.int8(0), gemm_weight, np.full(4, 0.1, np.float32), bias, transB=1)
    codes = np.clip(np.rint(matrix / 0.05), -128, 127).astype(np.int64)
    expected = ((codes @ gemm_weight.T.astype(np.int64)) + bias) * np.float32(0.05 * 0.1)
    np.testing.assert_allclose(np.asarray(result), expected, rtol=1e-5, atol=1e-5)


def test_simulated_qdq_and_tensorrt_profile_match_onnxruntime(samples_dir):
    data = dict(np.load(samples_dir / "data" / "cnn_bn_residual_inputs.npz"))
    options = dict(quantize="int8", calibration=str(samples_dir / "data" / "cnn_bn_residual_inputs.npz"), quantize_profile="tensorrt")
    jax_model = compiler.compile(samples_dir / "cnn_bn_residual.onnx", backend="cpu", **options)
    ops = collections.Counter(n.qualified_op for n in jax_model.graph.nodes)
    assert ops["ai.graphkiln::Int8Conv"] == 8 and ops["QuantizeLinear"] >= 1  # residual Q/DQ stay simulated
    reference = _ort_qdq(compiler.compile(samples_dir / "cnn_bn_residual.onnx", backend="onnx", **options), data)
    np.testing.assert_allclose(np.asarray(jax_model(**data)[0]), reference, rtol=1e-3, atol=1e-3)
    simulated = compiler.compile(samples_dir / "cnn_bn_residual.onnx", backend="cpu", int8_kernels=False, **options)
    assert not any(n.domain for n in simulated.graph.nodes)
    np.testing.assert_allclose(np.asarray(simulated(**data)[0]), reference, rtol=1e-4, atol=1e-4)
