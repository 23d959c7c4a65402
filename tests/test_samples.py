"""The bundled samples: small, valid, built by a committed script, and faithful to torch."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import compiler
from compiler.reference import compare_outputs, run_onnxruntime

from conftest import SAMPLES

MODELS = ["mlp", "cnn_bn_residual", "transformer_torchscript", "transformer_dynamo", "digits_cnn"]


@pytest.mark.parametrize("name", MODELS)
def test_sample_is_small_valid_and_matches_torch(name: str) -> None:
    path = SAMPLES / f"{name}.onnx"
    assert path.stat().st_size < 2_000_000
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    inputs = dict(np.load(SAMPLES / "data" / f"{name}_inputs.npz"))
    expected = list(np.load(SAMPLES / "data" / f"{name}_outputs.npz").values())
    verdict = compare_outputs(expected, run_onnxruntime(model, inputs), rtol=1e-4, atol=1e-5)
    assert verdict.ok, verdict.message


def test_samples_have_their_build_script_and_manifest() -> None:
    script = (SAMPLES / "build_samples.py").read_text()
    manifest = json.loads((SAMPLES / "manifest.json").read_text())
    for name in MODELS:
        assert f"{name}.onnx" in script or name in script
        assert manifest[name]["bytes"] == (SAMPLES / f"{name}.onnx").stat().st_size


def test_transformer_samples_have_the_exporter_forms() -> None:
    torchscript = compiler.load(SAMPLES / "transformer_torchscript.onnx")
    ops = {n.op_type for n in torchscript.nodes}
    assert {"ReduceMean", "Pow", "Sqrt", "Erf", "Softmax", "Shape", "Gather", "Concat"} <= ops
    assert "LayerNormalization" not in ops
    dynamo = compiler.load(SAMPLES / "transformer_dynamo.onnx")
    assert "LayerNormalization" in {n.op_type for n in dynamo.nodes}
    for graph in (torchscript, dynamo):
        assert [tuple(v.shape) for v in graph.inputs] == [("batch", "seq", 64), ("batch", "seq")]


def test_digits_held_out_set_and_accuracy_record() -> None:
    test = np.load(SAMPLES / "data" / "digits_test.npz")
    record = json.loads((SAMPLES / "data" / "digits_fp32_accuracy.json").read_text())
    model = onnx.load(str(SAMPLES / "digits_cnn.onnx"))
    logits = run_onnxruntime(model, {"input": test["input"]})[0]
    accuracy = float(np.mean(logits.argmax(axis=1) == test["label"]))
    assert accuracy > 0.95
    assert accuracy == pytest.approx(record["fp32_accuracy_onnxruntime"], abs=1e-9)
