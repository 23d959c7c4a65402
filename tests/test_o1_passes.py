"""The -O1 passes: dead-code elimination, identity/no-op removal, size-capped constant folding."""

from __future__ import annotations

import resource

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import compiler
from compiler.reference import compare_outputs, random_inputs, run_onnxruntime


def _model(nodes, inputs, outputs, initializers=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _same_outputs(original: onnx.ModelProto, compiled) -> None:
    graph = compiler.load(original)
    feeds = random_inputs(graph)
    verdict = compare_outputs(run_onnxruntime(original, feeds), compiled(**feeds))
    assert verdict.ok, verdict.message


def test_folding_through_onnx_reference_and_shape_chain() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 12])
    c = numpy_helper.from_array(np.array([4.0, 9.0], np.float32), "c")
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),                       # static shape: folds
        helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
        helper.make_node("Unsqueeze", ["b", "zero_axes"], ["b1"]),
        helper.make_node("Concat", ["b1", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
        helper.make_node("Sqrt", ["c"], ["root"]),                      # evaluated by onnx.reference
        helper.make_node("ReduceSum", ["root"], ["total"], keepdims=0),
        helper.make_node("Mul", ["flat", "total"], ["y"]),
    ]
    inits = [
        c,
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array([0], np.int64), "zero_axes"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
    ]
    model = _model(nodes, [x], [y], inits)
    cm = compiler.compile(model, backend="onnx", opt_level=1)
    assert [n.op_type for n in cm.graph.nodes] == ["Reshape", "Mul"]
    assert cm.graph.nodes[0].inputs[1].constant().tolist() == [2, -1]
    assert float(cm.graph.nodes[1].inputs[1].constant()) == 5.0
    _same_outputs(model, cm)


def test_symbolic_shape_is_not_folded() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [2])
    model = _model([helper.make_node("Shape", ["x"], ["y"])], [x], [y])
    cm = compiler.compile(model, backend="onnx", opt_level=1)
    assert [n.op_type for n in cm.graph.nodes] == ["Shape"]


def test_huge_results_are_never_materialized() -> None:
    """ConstantOfShape to 40 GB and Tile by 10^5 stay unfolded, with little memory used."""
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [100000, 100000])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, None)
    shape = numpy_helper.from_array(np.array([100000, 100000], np.int64), "shape")
    small = numpy_helper.from_array(np.ones((10, 10), np.float32), "small")
    repeats = numpy_helper.from_array(np.array([100000, 1000], np.int64), "repeats")
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["y"], value=numpy_helper.from_array(np.array([1.0], np.float32))),
        helper.make_node("Tile", ["small", "repeats"], ["z"]),
    ]
    model = _model(nodes, [], [y, z], [shape, small, repeats])
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    graph, report, _ = compiler.run_pipeline(compiler.load(model), opt_level=1)
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert sorted(n.op_type for n in graph.nodes) == ["ConstantOfShape", "Tile"]
    assert report.passes[0].counters["skipped_over_size_limit"] == 2
    assert peak_after - peak_before < 200_000  # KiB: nothing near 40 GB was allocated


def test_size_limit_is_an_option() -> None:
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [256, 256])
    shape = numpy_helper.from_array(np.array([256, 256], np.int64), "shape")
    model = _model([helper.make_node("ConstantOfShape", ["shape"], ["y"])], [], [y], [shape])
    folded, _, _ = compiler.run_pipeline(compiler.load(model), opt_level=1)
    assert len(folded.nodes) == 1 and folded.nodes[0].op_type == "Identity"  # output kept by name
    kept, _, _ = compiler.run_pipeline(compiler.load(model), opt_level=1, options={"fold_size_limit": 1024})
    assert [n.op_type for n in kept.nodes] == ["ConstantOfShape"]


def test_random_and_quantize_ops_are_not_folded() -> None:
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    q = helper.make_tensor_value_info("q", TensorProto.FLOAT, [4])
    w = numpy_helper.from_array(np.array([1, -2, 3, -4], np.int8), "w")
    scale = numpy_helper.from_array(np.array(0.5, np.float32), "scale")
    nodes = [
        helper.make_node("RandomNormal", [], ["y"], shape=[4], dtype=TensorProto.FLOAT),
        helper.make_node("DequantizeLinear", ["w", "scale"], ["q"]),
    ]
    cm = compiler.compile(_model(nodes, [], [y, q], [w, scale]), backend="onnx", opt_level=1)
    assert sorted(n.op_type for n in cm.graph.nodes) == ["DequantizeLinear", "RandomNormal"]


def test_noop_removal_and_dce() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    m = helper.make_tensor_value_info("m", TensorProto.BOOL, ["batch", 4])
    nodes = [
        helper.make_node("Identity", ["x"], ["a"]),
        helper.make_node("Cast", ["a"], ["b"], to=TensorProto.FLOAT),          # same type: no-op
        helper.make_node("Dropout", ["b", "ratio"], ["c"]),                    # inference: no-op
        helper.make_node("Dropout", ["c"], ["d", "m"]),                        # mask is an output: kept
        helper.make_node("Relu", ["d"], ["y"]),
        helper.make_node("Sigmoid", ["x"], ["dead1"]),
        helper.make_node("Tanh", ["dead1"], ["dead2"]),
    ]
    ratio = numpy_helper.from_array(np.array(0.3, np.float32), "ratio")
    unused = numpy_helper.from_array(np.ones(1000, np.float32), "unused_weight")
    model = _model(nodes, [x], [y, m], [ratio, unused])
    cm = compiler.compile(model, backend="onnx", opt_level=1)
    assert [n.op_type for n in cm.graph.nodes] == ["Dropout", "Relu"]
    assert cm.graph.nodes[0].inputs[0].name == "x"
    assert "unused_weight" not in cm.graph.initializers
    counters = {k: v for r in cm.report.passes for k, v in r.counters.items() if v}
    assert counters["remove_identity"] == 1 and counters["remove_cast_to_same_type"] == 1
    assert counters["remove_dropout_ratio"] == 1 and counters["nodes_removed"] == 2
    assert [v.name for v in cm.graph.outputs] == ["y", "m"]
    _same_outputs(model, cm)


def test_optimize_is_like_onnxsim_simplify() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    a = numpy_helper.from_array(np.array([1.0, 2.0, 3.0], np.float32), "a")
    nodes = [helper.make_node("Add", ["a", "a"], ["two_a"]), helper.make_node("Identity", ["x"], ["xi"]),
             helper.make_node("Mul", ["xi", "two_a"], ["y"])]
    model = _model(nodes, [x], [y], [a])
    optimized = compiler.optimize(model)
    assert isinstance(optimized, onnx.ModelProto)
    onnx.checker.check_model(optimized, full_check=True)
    assert [n.op_type for n in optimized.graph.node] == ["Mul"]
    assert [i.name for i in optimized.graph.input] == ["x"] and [o.name for o in optimized.graph.output] == ["y"]
    assert optimized.graph.input[0].type == model.graph.input[0].type
    feeds = {"x": np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)}
    np.testing.assert_allclose(run_onnxruntime(optimized, feeds)[0], run_onnxruntime(model, feeds)[0])
    assert model.graph.node[1].op_type == "Identity"  # the input proto was not modified


def test_identity_of_a_weight_reads_the_weight_itself() -> None:
    """TorchScript exports weights behind Identity nodes: folding reroutes the readers to the
    initializer (no copy of the data, the proto-backed tensor is kept for export)."""
    from compiler.api import run_pipeline
    from compiler.onnx_io._types import ProtoTensor

    weight = np.linspace(-1, 1, 64 * 32, dtype=np.float32).reshape(64, 32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 32])
    nodes = [helper.make_node("Identity", ["w"], ["w_copy"], name="identity"),
             helper.make_node("MatMul", ["x", "w_copy"], ["y"], name="matmul")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [numpy_helper.from_array(weight, "w")]),
                              opset_imports=[helper.make_opsetid("", 17)])
    graph, _report, _ctx = run_pipeline(compiler.load(model), passes="fold_constants")
    assert [n.op_type for n in graph.nodes] == ["MatMul"]
    read = graph.nodes[0].inputs[1]
    assert read.name == "w" and isinstance(read.const_value, ProtoTensor) and not read.const_value.is_loaded
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)}
    optimized = compiler.optimize(model, opt_level=1)
    verdict = compare_outputs(run_onnxruntime(model, feeds), run_onnxruntime(optimized, feeds), rtol=1e-6, atol=1e-6)
    assert verdict.ok, verdict.message
