"""Recovery by distillation through JAX: the pruned digits CNN regains its accuracy, the quantized
one keeps valid int8 codes, and FakeQuantize passes gradients straight through."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import compiler
from compiler.errors import OptionError
from compiler.onnx_io import export_model
from compiler.reference import run_onnxruntime

jax = pytest.importorskip("jax")


def _accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float((outputs.argmax(1) == labels).mean())


def test_channel_pruning_recovers_accuracy(samples_dir):
    test = np.load(samples_dir / "data" / "digits_test.npz")
    calibration = str(samples_dir / "data" / "digits_calibration.npz")
    compiled = compiler.compile(samples_dir / "digits_cnn.onnx", backend="onnx", prune=0.5, prune_mode="channels",
                                calibration=calibration, recover="distill", steps=400, recover_lr=1e-2)
    section = compiled.report.sections["recovery"]
    assert section["applied"] and section["loss_after"] < section["loss_before"] / 50
    assert section["metric"] == "output_mse" and section["parameters_tuned"] == 8
    assert _accuracy(compiled(input=test["input"])[0], test["label"]) >= 0.9622  # within 2 points of fp32 0.9822


def test_quantized_recovery_keeps_int8_codes(samples_dir):
    calibration = str(samples_dir / "data" / "digits_calibration.npz")
    compiled = compiler.compile(samples_dir / "digits_cnn.onnx", backend="onnx", quantize="int8", calibration=calibration,
                                recover="distill", steps=60)
    section = compiled.report.sections["recovery"]
    assert section["learning_rate"] == 1e-4 and section["loss_after"] < section["loss_before"]
    model = export_model(compiled.graph)
    onnx.checker.check_model(model, full_check=True)
    weights = [t for t in model.graph.initializer if len(t.dims) >= 2]
    assert weights and all(t.data_type == onnx.TensorProto.INT8 for t in weights)
    test = np.load(samples_dir / "data" / "digits_test.npz")
    assert _accuracy(run_onnxruntime(model, {"input": test["input"]})[0], test["label"]) >= 0.977


def test_recover_needs_calibration(samples_dir):
    with pytest.raises(OptionError, match="--recover distill fine-tunes on calibration data"):
        compiler.compile(samples_dir / "digits_cnn.onnx", backend="onnx", prune=0.5, recover="distill")


def test_fake_quantize_lowering_matches_kernel_and_passes_gradient():
    import jax.numpy as jnp

    from backends.jax.quant_exec import fake_quantize
    from passes.quantization.fake_quant import FAKE_QUANTIZE

    x = np.linspace(-2.0, 2.0, 24, dtype=np.float32).reshape(2, 3, 4)
    scale = np.array([0.01, 0.02, 0.05], dtype=np.float32)
    zero = np.zeros(3, dtype=np.int8)
    expected = FAKE_QUANTIZE.kernel(x, scale, zero, axis=1)[0]
    np.testing.assert_allclose(np.asarray(fake_quantize(jnp.asarray(x), scale, zero, 1)), expected, rtol=0, atol=1e-6)
    gradient = jax.grad(lambda v: jnp.sum(fake_quantize(v, scale, zero, 1)))(jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(gradient), np.ones_like(x))
    assert np.abs(expected).max() <= 127 * 0.05 + 1e-6
