"""-O3 fusions (GELU, LayerNorm, RMSNorm, attention), opset raising and --keep-opset: exact node
counts on tiny graphs and on both transformer samples, outputs equal under onnxruntime."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler
from compiler.custom_ops import GRAPHKILN_DOMAIN
from compiler.onnx_io import export_model
from compiler.reference import compare_outputs, random_inputs, run_onnxruntime

SAMPLES = "samples"


def _model(nodes, inputs, outputs, initializers=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _tensor(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _optimize(model, **options):
    """-O3 through the ONNX backend; returns (graph, exported standard model)."""
    cm = compiler.compile(model, backend="onnx", opt_level=3, **options)
    return cm.graph, export_model(cm.graph, decompose_custom=True)


def _assert_same(original, exported) -> None:
    feeds = random_inputs(compiler.load(original))
    verdict = compare_outputs(run_onnxruntime(original, feeds), run_onnxruntime(exported, feeds), atol=1e-4)
    assert verdict.ok, verdict.message


def _ops(graph) -> list[tuple[str, str]]:
    return [(n.domain, n.op_type) for n in graph.nodes]


def _gelu_nodes(tanh: bool) -> tuple[list, list]:
    if tanh:  # GPT-2's NewGELU as both exporters write it
        nodes = [helper.make_node("Mul", ["x", "half"], ["hx"]), helper.make_node("Pow", ["x", "three"], ["cube"]),
                 helper.make_node("Mul", ["cube", "coefficient"], ["c1"]), helper.make_node("Add", ["x", "c1"], ["inner"]),
                 helper.make_node("Mul", ["inner", "root"], ["scaled"]), helper.make_node("Tanh", ["scaled"], ["t"]),
                 helper.make_node("Add", ["t", "one"], ["curve"]), helper.make_node("Mul", ["hx", "curve"], ["y"])]
        constants = [("half", np.float32(0.5)), ("three", np.float32(3.0)), ("coefficient", np.float32(0.044715)),
                     ("root", np.float32(math.sqrt(2 / math.pi))), ("one", np.float32(1.0))]
    else:  # TorchScript's erf form: (x * (erf(x / sqrt2) + 1)) * 0.5
        nodes = [helper.make_node("Div", ["x", "sqrt2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
                 helper.make_node("Add", ["e", "one"], ["curve"]), helper.make_node("Mul", ["x", "curve"], ["m"]),
                 helper.make_node("Mul", ["m", "half"], ["y"])]
        constants = [("sqrt2", np.float32(math.sqrt(2))), ("one", np.float32(1.0)), ("half", np.float32(0.5))]
    return nodes, constants


@pytest.mark.parametrize("tanh", [False, True])
def test_gelu_fuses_to_one_node_and_raises_opset(tanh: bool) -> None:
    nodes, constants = _gelu_nodes(tanh)
    model = _model(nodes, [_tensor("x", ["batch", 16])], [_tensor("y", ["batch", 16])], constants, opset=17)
    graph, exported = _optimize(model)
    assert _ops(graph) == [("", "Gelu")] and graph.opset == 20
    assert graph.nodes[0].attr("approximate", "none") == ("tanh" if tanh else "none")
    assert exported.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    _assert_same(model, exported)


def test_keep_opset_writes_graphkiln_gelu() -> None:
    nodes, constants = _gelu_nodes(False)
    model = _model(nodes, [_tensor("x", [4, 16])], [_tensor("y", [4, 16])], constants, opset=17)
    graph, exported = _optimize(model, keep_opset=True)
    assert _ops(graph) == [(GRAPHKILN_DOMAIN, "Gelu")] and graph.opset == 17
    exported_ops = Counter(n.op_type for n in exported.graph.node)
    assert exported_ops == {"Mul": 3, "Erf": 1, "Add": 1}  # decomposed for export
    _assert_same(model, exported)


def test_layer_norm_decomposed_form_fuses() -> None:
    nodes = [helper.make_node("ReduceMean", ["x"], ["mean"], axes=[-1]), helper.make_node("Sub", ["x", "mean"], ["d"]),
             helper.make_node("Pow", ["d", "two"], ["sq"]), helper.make_node("ReduceMean", ["sq"], ["var"], axes=[-1]),
             helper.make_node("Add", ["var", "eps"], ["ve"]), helper.make_node("Sqrt", ["ve"], ["std"]),
             helper.make_node("Div", ["d", "std"], ["n"]), helper.make_node("Mul", ["n", "w"], ["nw"]),
             helper.make_node("Add", ["nw", "b"], ["y"])]
    constants = [("two", np.float32(2)), ("eps", np.float32(1e-5)), ("w", np.linspace(0.5, 1.5, 8, dtype=np.float32)),
                 ("b", np.linspace(-1, 1, 8, dtype=np.float32))]
    model = _model(nodes, [_tensor("x", ["batch", 3, 8])], [_tensor("y", ["batch", 3, 8])], constants, opset=14)
    graph, exported = _optimize(model)
    assert _ops(graph) == [("", "LayerNormalization")] and graph.opset == 17
    assert graph.nodes[0].attr("epsilon") == pytest.approx(1e-5)
    _assert_same(model, exported)


def test_layer_norm_not_fused_over_two_axes() -> None:
    nodes = [helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1, 2]), helper.make_node("Sub", ["x", "mean"], ["d"]),
             helper.make_node("Pow", ["d", "two"], ["sq"]), helper.make_node("ReduceMean", ["sq"], ["var"], axes=[1, 2]),
             helper.make_node("Add", ["var", "eps"], ["ve"]), helper.make_node("Sqrt", ["ve"], ["std"]),
             helper.make_node("Div", ["d", "std"], ["n"]), helper.make_node("Mul", ["n", "w"], ["nw"]),
             helper.make_node("Add", ["nw", "b"], ["y"])]
    constants = [("two", np.float32(2)), ("eps", np.float32(1e-5)), ("w", np.ones(8, np.float32)), ("b", np.zeros(8, np.float32))]
    model = _model(nodes, [_tensor("x", [2, 3, 8])], [_tensor("y", [2, 3, 8])], constants, opset=14)
    graph, _ = _optimize(model)
    assert all(op_type != "LayerNormalization" for _, op_type in _ops(graph))


@pytest.mark.parametrize("inverse", ["reciprocal", "one_over"])
def test_rms_norm_t5_forms_fuse(inverse: str) -> None:
    root = [helper.make_node("Reciprocal", ["std"], ["inv"])] if inverse == "reciprocal" else [
        helper.make_node("Div", ["one", "std"], ["inv"])]
    nodes = [helper.make_node("Pow", ["x", "two"], ["sq"]), helper.make_node("ReduceMean", ["sq", "axes"], ["ms"]),
             helper.make_node("Add", ["ms", "eps"], ["me"]), helper.make_node("Sqrt", ["me"], ["std"]), *root,
             helper.make_node("Mul", ["x", "inv"], ["n"]), helper.make_node("Mul", ["w", "n"], ["y"])]
    constants = [("two", np.float32(2)), ("eps", np.float32(1e-6)), ("one", np.float32(1)),
                 ("axes", np.array([-1], np.int64)), ("w", np.linspace(0.5, 1.5, 8, dtype=np.float32))]
    model = _model(nodes, [_tensor("x", ["batch", 5, 8])], [_tensor("y", ["batch", 5, 8])], constants, opset=18)
    graph, exported = _optimize(model)
    assert _ops(graph) == [("", "RMSNormalization")] and graph.opset == 23
    _assert_same(model, exported)
    kept, _ = _optimize(model, keep_opset=True)
    assert _ops(kept) == [(GRAPHKILN_DOMAIN, "RMSNormalization")] and kept.opset == 18


def test_rms_norm_without_weight_then_weight_folds_into_one_op() -> None:
    nodes = [helper.make_node("Pow", ["x", "two"], ["sq"]), helper.make_node("ReduceMean", ["sq"], ["ms"], axes=[-1]),
             helper.make_node("Add", ["ms", "eps"], ["me"]), helper.make_node("Sqrt", ["me"], ["std"]),
             helper.make_node("Div", ["x", "std"], ["n"]), helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("Mul", ["n", "w"], ["y"])]
    constants = [("two", np.float32(2)), ("eps", np.float32(1e-6)), ("w", np.linspace(0.5, 1.5, 8, dtype=np.float32))]
    model = _model(nodes[:5] + nodes[6:], [_tensor("x", [2, 8])], [_tensor("y", [2, 8])], constants, opset=17)
    graph, exported = _optimize(model)
    assert _ops(graph) == [("", "RMSNormalization")]
    np.testing.assert_allclose(graph.nodes[0].inputs[1].constant(), np.linspace(0.5, 1.5, 8), rtol=1e-6)
    _assert_same(model, exported)
    model = _model(nodes[:6], [_tensor("x", [2, 8])], [_tensor("r", [2, 8])], constants[:2], opset=17)  # no weight at all
    graph, exported = _optimize(model)
    assert _ops(graph) == [("", "RMSNormalization"), ("", "Relu")]
    _assert_same(model, exported)


def test_attention_with_position_bias_and_mask_fuses() -> None:
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 3, 1]), helper.make_node("MatMul", ["q", "kt"], ["s"]),
             helper.make_node("Add", ["s", "bias"], ["sb"]), helper.make_node("Add", ["sb", "mask"], ["sm"]),
             helper.make_node("Softmax", ["sm"], ["p"], axis=-1), helper.make_node("MatMul", ["p", "v"], ["y"])]
    inputs = [_tensor("q", [2, 4, 6, 8]), _tensor("k", [2, 6, 4, 8]), _tensor("v", [2, 4, 6, 8]),
              _tensor("bias", [1, 4, 6, 6]), _tensor("mask", [2, 1, 1, 6])]
    model = _model(nodes, inputs, [_tensor("y", [2, 4, 6, 8])], opset=17)
    graph, exported = _optimize(model)
    ops = Counter(op_type for _, op_type in _ops(graph))
    assert ops == {"Attention": 1, "Transpose": 1, "Add": 1}  # K to heads, bias + mask ([2, 4, 6, 6]: no Expand)
    assert graph.nodes[-1].attr("scale") == 1.0
    _assert_same(model, exported)


def test_attention_with_scale_split_over_q_and_k_fuses() -> None:
    nodes = [helper.make_node("Mul", ["q", "c"], ["qs"]), helper.make_node("Mul", ["kt", "c"], ["ks"]),
             helper.make_node("MatMul", ["qs", "ks"], ["s"]), helper.make_node("Softmax", ["s"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["y"])]
    inputs = [_tensor("q", ["batch", 2, 5, 16]), _tensor("kt", ["batch", 2, 16, 5]), _tensor("v", ["batch", 2, 5, 16])]
    model = _model(nodes, inputs, [_tensor("y", ["batch", 2, 5, 16])], [("c", np.float32(16 ** -0.25))], opset=18)
    graph, exported = _optimize(model)
    assert [op_type for _, op_type in _ops(graph)] == ["Transpose", "Attention"]
    assert graph.nodes[-1].attr("scale") == pytest.approx(0.25, rel=1e-6)
    _assert_same(model, exported)


@pytest.mark.parametrize("scaled, guarded", [(True, True), (False, True), (False, False)])
def test_sdpa_forms_fuse_and_keep_fully_masked_rows(scaled: bool, guarded: bool) -> None:
    """torch's scaled_dot_product_attention as its exporters write transformers' default attention:
    K^T through a 3-D Reshape/Transpose/Reshape, sqrt(scale) on Q and K^T (none for OPT, which
    scales Q itself, and T5), an additive mask, and Where(IsNaN(P), 0, P) so a row whose every key
    is masked with -inf gives zeros (no guard in T5). The guard moves to the output; a fully masked
    batch row gives what the original gives on onnxruntime (the exported standard model) and on
    the CPU backend."""
    nodes = [helper.make_node("Reshape", ["k", "flat"], ["kf"]), helper.make_node("Transpose", ["kf"], ["kft"], perm=[0, 2, 1]),
             helper.make_node("Reshape", ["kft", "heads"], ["kt"])]
    q, kt = "q", "kt"
    if scaled:
        nodes += [helper.make_node("Mul", ["q", "c"], ["qs"]), helper.make_node("Mul", ["kt", "c"], ["ks"])]
        q, kt = "qs", "ks"
    nodes += [helper.make_node("MatMul", [q, kt], ["s"]), helper.make_node("Add", ["s", "mask"], ["sm"]),
              helper.make_node("Softmax", ["sm"], ["p"], axis=-1)]
    if guarded:
        nodes += [helper.make_node("IsNaN", ["p"], ["bad"]), helper.make_node("Where", ["bad", "zero", "p"], ["pg"])]
    nodes.append(helper.make_node("MatMul", ["pg" if guarded else "p", "v"], ["y"]))
    inputs = [_tensor(name, [2, 2, 5, 16]) for name in ("q", "k", "v")] + [_tensor("mask", [2, 1, 1, 5])]
    constants = [("c", np.float32(16 ** -0.25)), ("zero", np.float32(0.0)),
                 ("flat", np.array([4, 5, 16], np.int64)), ("heads", np.array([2, 2, 16, 5], np.int64))]
    model = _model(nodes, inputs, [_tensor("y", [2, 2, 5, 16])], constants, opset=18)
    graph, exported = _optimize(model)
    ops = Counter(op_type for _, op_type in _ops(graph))
    assert ops["Attention"] == 1 and "Softmax" not in ops and "MatMul" not in ops, ops
    assert ops["IsNaN"] == ops["Where"] == int(guarded)
    attention = next(n for n in graph.nodes if n.op_type == "Attention")
    assert attention.attr("scale") == pytest.approx(0.25 if scaled else 1.0, rel=1e-6)
    rng = np.random.default_rng(0)
    feeds = {name: rng.standard_normal((2, 2, 5, 16)).astype(np.float32) for name in ("q", "k", "v")}
    mask = np.zeros((2, 1, 1, 5), np.float32)
    mask[0, ..., 3:] = -np.inf  # padding
    # guarded: a sequence with no token left. Unguarded, such a row is a uniform softmax, which
    # onnxruntime 1.32's Attention gives as zeros, so there the row keeps one key
    mask[1, ..., 0 if guarded else 1:] = -np.inf
    feeds["mask"] = mask
    expected = run_onnxruntime(model, feeds)[0]
    assert np.isfinite(expected).all() and (not guarded or not expected[1].any())
    np.testing.assert_allclose(run_onnxruntime(exported, feeds)[0], expected, rtol=1e-5, atol=1e-6)
    cpu = compiler.compile(model, backend="cpu", opt_level=3)
    np.testing.assert_allclose(np.asarray(cpu(**feeds)[0]), expected, rtol=1e-5, atol=1e-6)


def test_sdpa_on_projections_becomes_one_3d_attention_with_the_guard_after_it() -> None:
    """A whole sdpa block as the dynamo exporter writes BERT's: [B, S, H*D] projections split into
    heads, K^T through a 3-D Reshape/Transpose/Reshape, sqrt(scale) on both, mask, NaN guard, and the
    heads merged back. -O3 leaves Attention on the 3-D projections (q_num_heads), then the guard."""
    batch, length, heads, depth = 2, 5, 2, 8
    nodes = []
    for name in ("q", "k", "v"):
        nodes += [helper.make_node("Reshape", [name, "split"], [f"{name}4"]),
                  helper.make_node("Transpose", [f"{name}4"], [f"{name}h"], perm=[0, 2, 1, 3])]
    nodes += [helper.make_node("Reshape", ["kh", "flat"], ["kf"]), helper.make_node("Transpose", ["kf"], ["kft"], perm=[0, 2, 1]),
              helper.make_node("Reshape", ["kft", "back"], ["kt"]),
              helper.make_node("Mul", ["qh", "c"], ["qs"]), helper.make_node("Mul", ["kt", "c"], ["ks"]),
              helper.make_node("MatMul", ["qs", "ks"], ["s"]), helper.make_node("Add", ["s", "mask"], ["sm"]),
              helper.make_node("Softmax", ["sm"], ["p"], axis=-1), helper.make_node("IsNaN", ["p"], ["bad"]),
              helper.make_node("Where", ["bad", "zero", "p"], ["pg"]), helper.make_node("MatMul", ["pg", "vh"], ["o"]),
              helper.make_node("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3]), helper.make_node("Reshape", ["ot", "merged"], ["y"])]
    hidden = heads * depth
    inputs = [_tensor(name, [batch, length, hidden]) for name in ("q", "k", "v")] + [_tensor("mask", [batch, 1, 1, length])]
    constants = [("c", np.float32(depth ** -0.25)), ("zero", np.float32(0.0)),
                 ("split", np.array([batch, length, heads, depth], np.int64)),
                 ("flat", np.array([batch * heads, length, depth], np.int64)),
                 ("back", np.array([batch, heads, depth, length], np.int64)),
                 ("merged", np.array([batch, length, hidden], np.int64))]
    model = _model(nodes, inputs, [_tensor("y", [batch, length, hidden])], constants, opset=18)
    graph, exported = _optimize(model)
    assert [op_type for _, op_type in _ops(graph)] == ["Expand", "Attention", "IsNaN", "Where"]
    attention = graph.nodes[1]
    assert attention.attr("q_num_heads") == attention.attr("kv_num_heads") == heads
    assert [v.name for v in attention.inputs[:3]] == ["q", "k", "v"]
    _assert_same(model, exported)


def test_learned_queries_broadcast_over_the_batch_are_not_fused() -> None:
    """DETR-style queries [1, H, S, D] against a batch of keys: MatMul broadcasts the batch of 1,
    the Attention op does not, so the product stays as it is."""
    nodes = [helper.make_node("MatMul", ["q", "kt"], ["s"]), helper.make_node("Softmax", ["s"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["y"])]
    inputs = [_tensor("q", [1, 2, 5, 16]), _tensor("kt", [3, 2, 16, 7]), _tensor("v", [3, 2, 7, 16])]
    model = _model(nodes, inputs, [_tensor("y", [3, 2, 5, 16])], opset=18)
    graph, exported = _optimize(model)
    assert [op_type for _, op_type in _ops(graph)] == ["MatMul", "Softmax", "MatMul"]
    _assert_same(model, exported)


def _attention_model(scale_op: str, opset: int) -> onnx.ModelProto:
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]), helper.make_node("MatMul", ["q", "kt"], ["s"]),
             helper.make_node(scale_op, ["s", "c"], ["ss"]), helper.make_node("Add", ["ss", "mask"], ["sm"]),
             helper.make_node("Softmax", ["sm"], ["p"], axis=-1), helper.make_node("MatMul", ["p", "v"], ["y"])]
    scale = np.float32(math.sqrt(8)) if scale_op == "Div" else np.float32(1 / math.sqrt(8))
    heads = [_tensor(name, ["batch", 2, "seq", 8]) for name in ("q", "k", "v")]
    return _model(nodes, [*heads, _tensor("mask", ["batch", 1, 1, "seq"])], [_tensor("y", ["batch", 2, "seq", 8])],
                  [("c", scale)], opset=opset)


@pytest.mark.parametrize("scale_op", ["Div", "Mul"])
def test_attention_core_fuses_to_one_op(scale_op: str) -> None:
    model = _attention_model(scale_op, 17)
    graph, exported = _optimize(model)
    ops = Counter(op_type for _, op_type in _ops(graph))
    assert ops["Attention"] == 1 and graph.opset == 23 and sum(ops.values()) == 4  # + Expand of the mask (Shape, Concat)
    assert graph.nodes[-1].attr("scale") == pytest.approx(1 / math.sqrt(8), rel=1e-6)
    _assert_same(model, exported)
    kept, kept_exported = _optimize(model, keep_opset=True)
    assert _ops(kept) == [(GRAPHKILN_DOMAIN, "Attention")] and kept.opset == 17
    _assert_same(model, kept_exported)


def test_attention_with_shared_scores_is_not_fused() -> None:
    model = _attention_model("Div", 17)
    model.graph.output.append(_tensor("ss", None))  # the scaled scores are read outside the pattern
    graph, _ = _optimize(model)
    assert all(op_type != "Attention" for _, op_type in _ops(graph))


SAMPLE_COUNTS = {
    # name: (nodes at -O3, opset after, fused ops); inputs: torchscript 119 nodes opset 14, dynamo 43 opset 18
    # (Q, K and V read one activation: merge_sibling_matmuls makes them one MatMul + Split)
    "transformer_torchscript": (20, 23, {"LayerNormalization": 2, "Gelu": 1, "Attention": 1}),
    "transformer_dynamo": (20, 23, {"LayerNormalization": 2, "Gelu": 1, "Attention": 1}),
}


@pytest.mark.parametrize("name", sorted(SAMPLE_COUNTS))
def test_transformer_samples_at_o3(name: str) -> None:
    nodes, opset, fused = SAMPLE_COUNTS[name]
    path = f"{SAMPLES}/{name}.onnx"
    graph, exported = _optimize(path)
    ops = Counter(op_type for _, op_type in _ops(graph))
    assert len(graph.nodes) == nodes and graph.opset == opset
    assert {k: ops[k] for k in fused} == fused
    attention = next(n for n in graph.nodes if n.op_type == "Attention")
    assert len(attention.inputs[0].shape) == 3 and attention.attr("q_num_heads") == 4  # heads split/merge absorbed
    assert [i.name for i in exported.graph.input] == ["input", "mask"]
    feeds = dict(np.load(f"{SAMPLES}/data/{name}_inputs.npz"))
    expected = dict(np.load(f"{SAMPLES}/data/{name}_outputs.npz"))
    verdict = compare_outputs(list(expected.values()), run_onnxruntime(exported, feeds), atol=1e-4)
    assert verdict.ok, verdict.message


def test_cli_keep_opset_writes_graphkiln_ops(tmp_path) -> None:
    output = tmp_path / "out.onnx"
    result = subprocess.run([sys.executable, "-m", "compiler.cli", "compile", f"{SAMPLES}/transformer_torchscript.onnx",
                             "--backend", "onnx", "-O3", "--keep-opset", "-o", str(output)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    model = onnx.load(str(output))
    fused = Counter(n.op_type for n in model.graph.node if n.domain == GRAPHKILN_DOMAIN)
    assert fused == {"LayerNormalization": 2, "Gelu": 1, "Attention": 1}
    assert {o.domain: o.version for o in model.opset_import}[""] == 14
    assert json.loads((tmp_path / "out.report.json").read_text())


@pytest.mark.parametrize("name", ["mlp", "cnn_bn_residual", "digits_cnn", "transformer_torchscript", "transformer_dynamo"])
def test_every_sample_matches_at_o3(name: str) -> None:
    graph, exported = _optimize(f"{SAMPLES}/{name}.onnx")
    assert not any(n.domain == GRAPHKILN_DOMAIN for n in exported.graph.node)
    feeds = dict(np.load(f"{SAMPLES}/data/{name}_inputs.npz"))
    expected = list(dict(np.load(f"{SAMPLES}/data/{name}_outputs.npz")).values())
    verdict = compare_outputs(expected, run_onnxruntime(exported, feeds), atol=1e-4)
    assert verdict.ok, verdict.message
