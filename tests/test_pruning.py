"""Pruning: unstructured (global/per layer), 2:4 masks, structured channel removal through BN,
activations and residual Adds (exact on a model whose pruned channels are dead), refusals."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler
from compiler.onnx_io import export_model
from compiler.reference import run_onnxruntime


def _initializer(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def residual_model(rng: np.random.Generator) -> onnx.ModelProto:
    """conv_a -> BN -> Relu, + conv_b (residual Add) -> Relu -> conv_c; channels 2 and 3 of the
    tied layers are weak and conv_c ignores them, so removing them is exact."""
    weight_a = rng.standard_normal((4, 3, 3, 3))
    weight_b = rng.standard_normal((4, 3, 1, 1))
    weight_a[2:] *= 0.01
    weight_b[2:] *= 0.01
    weight_c = rng.standard_normal((2, 4, 1, 1))
    weight_c[:, 2:] = 0.0
    inits = [
        _initializer("wa", weight_a), _initializer("ba", rng.standard_normal(4)), _initializer("wb", weight_b),
        _initializer("wc", weight_c), _initializer("bn_scale", rng.uniform(0.5, 1.5, 4)), _initializer("bn_bias", rng.standard_normal(4)),
        _initializer("bn_mean", rng.standard_normal(4)), _initializer("bn_var", rng.uniform(0.5, 1.5, 4)),
        _initializer("shift", rng.standard_normal((4, 1, 1))),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["a", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["n"], name="bn"),
        helper.make_node("Relu", ["n"], ["r"], name="relu"),
        helper.make_node("Conv", ["x", "wb"], ["b"], name="conv_b"),
        helper.make_node("Add", ["r", "b"], ["s"], name="residual"),
        helper.make_node("Add", ["s", "shift"], ["t"], name="shifted"),
        helper.make_node("Relu", ["t"], ["u"], name="relu2"),
        helper.make_node("Conv", ["u", "wc"], ["y"], name="conv_c"),
    ]
    graph = helper.make_graph(nodes, "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_channel_pruning_through_bn_and_residual_is_exact():
    rng = np.random.default_rng(0)
    model = residual_model(rng)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    expected = run_onnxruntime(model, {"x": x})[0]
    compiled = compiler.compile(model, backend="onnx", opt_level=0, prune=0.5, prune_mode="channels")  # -O0 keeps the BN
    pruned = export_model(compiled.graph)
    onnx.checker.check_model(pruned, full_check=True)
    shapes = {t.name.split("_pruned")[0]: list(t.dims) for t in pruned.graph.initializer}
    assert shapes["wa"] == [2, 3, 3, 3] and shapes["wb"] == [2, 3, 1, 1] and shapes["wc"] == [2, 2, 1, 1]
    assert shapes["bn_scale"] == [2] and shapes["shift"] == [2, 1, 1]
    np.testing.assert_allclose(run_onnxruntime(pruned, {"x": x})[0], expected, rtol=1e-5, atol=1e-5)
    section = compiled.report.sections["pruning"]
    assert {(l["node"], l["channels_before"], l["channels_after"]) for l in section["layers"]} == {("conv_a", 4, 2), ("conv_b", 4, 2)}
    assert section["refused"] == [{"node": "conv_c", "reason": "its channels reach the graph output 'y'"}]
    assert section["params_after"] < section["params_before"] and section["bytes_after"] < section["bytes_before"]


def test_channel_pruning_refuses_concat_with_reason():
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"), helper.make_node("Concat", ["c", "x"], ["y"], name="join", axis=1)]
    graph = helper.make_graph(nodes, "concat", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 7, 4, 4])], [_initializer("w", rng.standard_normal((4, 3, 1, 1)))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    compiled = compiler.compile(model, backend="onnx", prune=0.5, prune_mode="channels")
    assert compiled.report.sections["pruning"]["refused"] == [
        {"node": "conv", "reason": "its channels feed Concat 'join' (input 0), through which removal is not propagated"}]
    assert compiled.report.sections["pruning"]["layers"] == []


def test_digits_channel_pruning_shapes(samples_dir):
    compiled = compiler.compile(samples_dir / "digits_cnn.onnx", backend="onnx", prune=0.5, prune_mode="channels")
    section = compiled.report.sections["pruning"]
    assert [(l["channels_before"], l["channels_after"]) for l in section["layers"]] == [(16, 8), (32, 16), (64, 32)]
    assert section["params_before"] == 38282 and section["params_after"] == 9802
    test = np.load(samples_dir / "data" / "digits_test.npz")
    assert compiled(input=test["input"][:4])[0].shape == (4, 10)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_unstructured_magnitude(samples_dir, scope):
    compiled = compiler.compile(samples_dir / "mlp.onnx", backend="onnx", prune=0.5, prune_mode="unstructured", prune_scope=scope)
    section = compiled.report.sections["pruning"]
    assert section["sparsity_before"] == 0.0 and abs(section["sparsity_after"] - 0.5) < 0.01
    assert section["params_after"] == section["params_before"] and section["nonzero_params_after"] < section["nonzero_params_before"]
    sparsities = [l["sparsity"] for l in section["layers"]]
    if scope == "layer":
        assert all(abs(s - 0.5) < 0.01 for s in sparsities)
    else:
        assert max(sparsities) - min(sparsities) > 0.01
    data = dict(np.load(samples_dir / "data" / "mlp_inputs.npz"))
    assert compiled(**data)[0].shape == next(iter(np.load(samples_dir / "data" / "mlp_outputs.npz").values())).shape


def test_two_four_masks(samples_dir):
    compiled = compiler.compile(samples_dir / "digits_cnn.onnx", backend="onnx", prune=0.5, prune_mode="2:4")
    section = compiled.report.sections["pruning"]
    assert section["refused"] == [{"node": "/features/features.0/Conv", "reason": "input-channel axis has 1 entries, not a multiple of 4"}]
    conv = next(n for n in compiled.graph.nodes if n.name == "/features/features.2/Conv")
    weight = conv.inputs[1].constant()
    groups = np.moveaxis(weight, 1, -1).reshape(32, 3, 3, 4, 4)
    assert np.all((groups != 0).sum(axis=-1) <= 2)
    gemm = next(n for n in compiled.graph.nodes if n.name == "/classifier/classifier.0/Gemm")
    assert np.all((gemm.inputs[1].constant().reshape(64, 128, 4) != 0).sum(axis=-1) <= 2)
