"""The -O2 simplification passes: exact node counts on tiny graphs and equality with onnxruntime."""

from __future__ import annotations

import json
import pathlib

import networkx as nx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler
from compiler.cli import main
from compiler.onnx_io import export_model
from compiler.reference import compare_outputs, random_inputs, run_onnxruntime

SAMPLES = pathlib.Path(__file__).resolve().parent.parent / "samples"
FLOAT = TensorProto.FLOAT


def _model(nodes, inputs, outputs, initializers=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(np.asarray(a), n) for n, a in initializers])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _tensor(name, shape, dtype=FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def _optimize(model: onnx.ModelProto, passes: str | None = None, **options):
    """Run `passes` (or -O2) and check the result against onnxruntime on the original model."""
    graph, report, ctx = compiler.run_pipeline(compiler.load(model), passes=passes, options=options)
    feeds = random_inputs(compiler.load(model), dim_sizes={"batch": 3, "seq": 5})
    verdict = compare_outputs(run_onnxruntime(model, feeds), run_onnxruntime(export_model(graph), feeds), rtol=1e-4, atol=1e-5)
    assert verdict.ok, verdict.message
    return graph, report, ctx


def _ops(graph) -> list[str]:
    return [n.op_type for n in graph.nodes]


def _counters(report) -> dict[str, int]:
    totals: dict[str, int] = {}
    for record in report.passes:
        for key, value in record.counters.items():
            totals[key] = totals.get(key, 0) + value
    return totals


def test_algebraic_noops_are_removed_unless_they_broadcast() -> None:
    nodes = [
        helper.make_node("Mul", ["x", "ones"], ["a"]),
        helper.make_node("Add", ["zeros", "a"], ["b"]),
        helper.make_node("Sub", ["b", "zero"], ["c"]),
        helper.make_node("Div", ["c", "one"], ["d"]),
        helper.make_node("Pad", ["d", "pads"], ["e"]),
        helper.make_node("Shape", ["e"], ["e_shape"]),
        helper.make_node("Expand", ["e", "e_shape"], ["f"]),
        helper.make_node("Shape", ["x"], ["x_shape"]),
        helper.make_node("Reshape", ["f", "x_shape"], ["g"]),
        helper.make_node("Transpose", ["g"], ["h"], perm=[0, 1]),
        helper.make_node("Relu", ["h"], ["y"]),
        helper.make_node("And", ["flag", "true"], ["flag_kept"]),
        helper.make_node("Or", ["flag_kept", "false"], ["flag_out"]),
        helper.make_node("Mul", ["x", "ones_3d"], ["z"]),  # broadcasts to [2,batch,4]: kept
    ]
    inits = [("ones", np.ones(4, np.float32)), ("zeros", np.zeros((1, 4), np.float32)), ("zero", np.float32(0)),
             ("one", np.float32(1)), ("pads", np.zeros(4, np.int64)), ("ones_3d", np.ones((2, 1, 4), np.float32)),
             ("true", np.ones(4, bool)), ("false", np.zeros((), bool))]
    inputs = [_tensor("x", ["batch", 4]), _tensor("flag", ["batch", 4], TensorProto.BOOL)]
    outputs = [_tensor("y", ["batch", 4]), _tensor("z", [2, "batch", 4]), _tensor("flag_out", ["batch", 4], TensorProto.BOOL)]
    model = _model(nodes, inputs, outputs, inits)
    graph, report, _ = _optimize(model, "remove_algebraic_noops,dce")
    assert _ops(graph) == ["Relu", "Or", "Mul"]  # Or keeps the output name of a graph input: nothing cheaper
    assert graph.nodes[0].inputs[0].name == "x" and graph.nodes[1].inputs[0].name == "flag"
    counters = _counters(report)
    for rule in ("remove_and_true", "remove_mul_by_one", "remove_add_zero", "remove_sub_zero", "remove_div_by_one", "remove_zero_pad_input",
                 "remove_expand_to_same_shape", "remove_reshape_to_same_shape", "remove_identity_transpose"):
        assert counters[rule] == 1, rule


def test_noop_with_the_constant_first_is_kept_when_the_constant_broadcasts() -> None:
    """And(all-true [1,4,1], mask [1,1,4]) is [1,4,4] (a dynamo attention mask): removing it would
    shrink the output. The commutative match puts the constant first; its shape is what counts."""
    nodes = [
        helper.make_node("And", ["true_column", "mask"], ["square"]),
        helper.make_node("Not", ["square"], ["square_out"]),
        helper.make_node("Add", ["zeros_3d", "x"], ["wide"]),  # [2, batch, 4]: kept
        helper.make_node("Relu", ["wide"], ["wide_out"]),
        helper.make_node("Add", ["zeros_row", "x"], ["same"]),  # [1, 4] + [batch, 4]: removed
        helper.make_node("Relu", ["same"], ["y"]),
    ]
    inits = [("true_column", np.ones((1, 4, 1), bool)), ("zeros_3d", np.zeros((2, 1, 4), np.float32)),
             ("zeros_row", np.zeros((1, 4), np.float32))]
    inputs = [_tensor("mask", [1, 1, 4], TensorProto.BOOL), _tensor("x", ["batch", 4])]
    outputs = [_tensor("square_out", [1, 4, 4], TensorProto.BOOL), _tensor("wide_out", [2, "batch", 4]), _tensor("y", ["batch", 4])]
    graph, report, _ = _optimize(_model(nodes, inputs, outputs, inits), "remove_algebraic_noops,dce")
    assert _ops(graph) == ["And", "Not", "Add", "Relu", "Relu"] and graph.nodes[4].inputs[0].name == "x"
    assert _counters(report).get("remove_and_true", 0) == 0 and _counters(report)["remove_add_zero"] == 1


def test_masked_fill_branches_become_scalars_and_not_is_absorbed() -> None:
    """Where(Not(mask), -inf, ConstantOfShape(Shape(mask))) as exporters write masked_fill."""
    fill = numpy_helper.from_array(np.array([0.0], np.float32))
    nodes = [
        helper.make_node("Not", ["mask"], ["keep"]),
        helper.make_node("Shape", ["mask"], ["mask_shape"]),
        helper.make_node("ConstantOfShape", ["mask_shape"], ["zeros"], value=fill),
        helper.make_node("Where", ["keep", "minus_inf", "zeros"], ["bias"]),
        helper.make_node("Expand", ["one", "mask_shape"], ["ones"]),
        helper.make_node("Where", ["mask", "ones", "x"], ["picked"]),
        helper.make_node("Add", ["bias", "picked"], ["y"]),
        helper.make_node("Where", ["mask", "x", "row"], ["z"]),     # the filled branch sets the shape: kept
        helper.make_node("Shape", ["z"], ["z_shape"]),
        helper.make_node("Expand", ["one", "z_shape"], ["wide"]),
        helper.make_node("Where", ["column", "x", "wide"], ["w"]),
    ]
    inits = [("minus_inf", np.float32(-1e9)), ("one", np.float32(1)), ("row", np.ones((1, 5), np.float32)),
             ("column", np.array([[True], [False], [True]]))]
    inputs = [_tensor("mask", ["batch", 5], TensorProto.BOOL), _tensor("x", ["batch", 5])]
    model = _model(nodes, inputs, [_tensor("y", ["batch", 5]), _tensor("w", [3, 5])], inits)
    graph, report, _ = _optimize(model, "remove_algebraic_noops,dce")
    assert _ops(graph) == ["Where", "Where", "Add", "Where", "Shape", "Expand", "Where"]
    assert graph.nodes[0].inputs[0].name == "mask" and graph.nodes[0].inputs[1].constant().shape == ()
    counters = _counters(report)
    assert counters["where_not_to_swapped_branches"] == 1 and counters["where_then_expand_to_scalar"] == 1
    assert counters["where_else_fill_to_scalar"] == 1


def _attention_like_shapes() -> onnx.ModelProto:
    """Shape/Gather/Concat chains over x[batch,seq,64] as the TorchScript exporter writes them."""
    nodes = [helper.make_node("Shape", ["x"], [f"s{i}"]) for i in range(3)]
    nodes += [helper.make_node("Gather", [f"s{i}", f"i{i}"], [f"d{i}"], axis=0) for i in range(3)]
    nodes += [helper.make_node("Unsqueeze", [f"d{i}", "axis0"], [f"u{i}"]) for i in range(2)]
    nodes += [
        helper.make_node("Concat", ["u0", "u1", "four", "sixteen"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["heads"]),
        helper.make_node("Mul", ["d0", "d1"], ["tokens"]),
        helper.make_node("Unsqueeze", ["tokens", "axis0"], ["tokens1"]),
        helper.make_node("Concat", ["tokens1", "sixtyfour"], ["flat_target"], axis=0),
        helper.make_node("Reshape", ["x", "flat_target"], ["flat"]),
        helper.make_node("Cast", ["d2"], ["width"], to=FLOAT),
        helper.make_node("Div", ["flat", "width"], ["y"]),
        helper.make_node("Identity", ["d0"], ["batch_size"]),
    ]
    inits = [("i0", np.int64(0)), ("i1", np.int64(1)), ("i2", np.int64(2)), ("axis0", np.array([0], np.int64)),
             ("four", np.array([4], np.int64)), ("sixteen", np.array([16], np.int64)), ("sixtyfour", np.array([64], np.int64))]
    outputs = [_tensor("heads", ["batch", "seq", 4, 16]), _tensor("y", [None, 64]), _tensor("batch_size", [], TensorProto.INT64)]
    return _model(nodes, [_tensor("x", ["batch", "seq", 64])], outputs, inits)


def test_shape_subgraphs_fold_static_parts_and_keep_symbols() -> None:
    graph, report, _ = _optimize(_attention_like_shapes())
    assert _ops(graph) == ["Shape", "Gather", "Reshape", "Reshape", "Div"]
    heads, flat, divide = graph.nodes[2], graph.nodes[3], graph.nodes[4]
    assert heads.inputs[1].constant().tolist() == [0, 0, 4, 16]
    assert flat.inputs[1].constant().tolist() == [-1, 64]
    assert float(divide.inputs[1].constant()) == 64.0
    assert graph.nodes[1].outputs[0].name == "batch_size"  # the truly symbolic batch size stays computed
    assert [v.name for v in graph.outputs] == ["heads", "y", "batch_size"]


def test_reshape_with_allowzero_and_two_symbols_keeps_what_it_must() -> None:
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Slice", ["s", "start", "end"], ["first_two"]),
        helper.make_node("Concat", ["first_two", "sixtyfour"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"], allowzero=1),
        helper.make_node("Reshape", ["x", "swapped"], ["z"]),
        helper.make_node("Shape", ["x"], ["t"]),
        helper.make_node("Gather", ["t", "order"], ["swapped"], axis=0),
    ]
    nodes = nodes[:4] + nodes[5:] + nodes[4:5]
    inits = [("start", np.array([0], np.int64)), ("end", np.array([2], np.int64)), ("sixtyfour", np.array([64], np.int64)),
             ("order", np.array([1, 0, 2], np.int64))]
    outputs = [_tensor("y", ["batch", "seq", 64]), _tensor("z", ["seq", "batch", 64])]
    model = _model(nodes, [_tensor("x", ["batch", "seq", 64])], outputs, inits)
    graph, _, _ = _optimize(model)
    # y is x with its name kept (no cheaper carrier than the Reshape); z needs both symbols swapped
    assert _ops(graph) == ["Shape", "Reshape", "Gather", "Reshape"]
    assert graph.nodes[1].inputs[1].constant().tolist() == [0, 0, 64] and graph.nodes[1].attr("allowzero", 0) == 0
    assert graph.nodes[3].inputs[1].producer.op_type == "Gather"


def _chunked_blocks(blocks: int) -> onnx.ModelProto:
    """`blocks` blocks as TorchScript exports ShuffleNet's x.chunk(2, dim=1): the Slice's end is
    the block input's channel count (Shape, Gather) integer-divided by 2, and the halves are
    concatenated back. onnx's inference propagates no Div, so a block's channels are known only
    once the block before it folded."""
    nodes, source = [], "x"
    for k in range(blocks):
        p = f"b{k}_"
        nodes += [
            helper.make_node("Shape", [source], [p + "shape"]),
            helper.make_node("Gather", [p + "shape", "one"], [p + "channels"], axis=0),
            helper.make_node("Div", [p + "channels", "two"], [p + "half"]),
            helper.make_node("Unsqueeze", [p + "half", "axis0"], [p + "end"]),
            helper.make_node("Slice", [source, "zero1", p + "end", "one1"], [p + "first"]),
            helper.make_node("Relu", [p + "first"], [p + "active"]),
            helper.make_node("Concat", [p + "active", p + "first"], [p + "out"], axis=1),
        ]
        source = p + "out"
    nodes.append(helper.make_node("Identity", [source], ["y"]))
    inits = [("one", np.int64(1)), ("two", np.int64(2)), ("axis0", np.array([0], np.int64)),
             ("zero1", np.array([0], np.int64)), ("one1", np.array([1], np.int64))]
    return _model(nodes, [_tensor("x", ["batch", 8, 3])], [_tensor("y", ["batch", 8, 3])], inits)


def test_chained_shape_folds_run_past_the_round_cap_while_the_graph_shrinks() -> None:
    """The chain resolves a block a round: 12 blocks need more rounds than -O2's cap of 8, and
    every round makes the graph smaller, so the fixed point goes on instead of failing."""
    graph, report, _ = _optimize(_chunked_blocks(12))
    assert _ops(graph) == ["Slice", "Relu", "Concat"] * 12
    assert {tuple(n.inputs[2].constant().tolist()) for n in graph.nodes if n.op_type == "Slice"} == {(4,)}
    assert max(r.iteration for r in report.passes) > 8


def test_expand_of_freshly_folded_constants_folds_though_its_type_is_unknown() -> None:
    """Expand(constant, Where(...)) as Swin's window-mask construction exports it: the Where folds
    in the same pass, the Expand's output type is still unknown, and its size comes from its inputs."""
    nodes = [
        helper.make_node("Equal", ["minus_one", "minus_one"], ["always"]),
        helper.make_node("Where", ["always", "target", "target"], ["shape"]),
        helper.make_node("Expand", ["column", "shape"], ["grid"]),
        helper.make_node("Add", ["x", "grid"], ["y"]),
    ]
    inits = [("minus_one", np.array([-1, -1], np.int64)), ("target", np.array([7, 7], np.int64)),
             ("column", np.arange(7, dtype=np.float32).reshape(7, 1))]
    model = _model(nodes, [_tensor("x", [7, 7])], [_tensor("y", [7, 7])], inits)
    graph, report, _ = _optimize(model, passes="fold_constants")
    assert _ops(graph) == ["Add"]
    assert graph.nodes[0].inputs[1].constant().shape == (7, 7)


def test_cse_merges_equal_nodes_and_equal_constants() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["r1"]),
        helper.make_node("Relu", ["x"], ["r2"]),
        helper.make_node("Add", ["r1", "c1"], ["a1"]),
        helper.make_node("Add", ["r2", "c2"], ["a2"]),
        helper.make_node("Add", ["r2", "c3"], ["a3"]),  # a different constant: kept
        helper.make_node("Mul", ["a1", "a2"], ["m"]),
        helper.make_node("Mul", ["m", "a3"], ["y"]),
    ]
    inits = [("c1", np.full(4, 2, np.float32)), ("c2", np.full(4, 2, np.float32)), ("c3", np.full(4, 3, np.float32))]
    model = _model(nodes, [_tensor("x", ["batch", 4])], [_tensor("y", ["batch", 4])], inits)
    graph, report, _ = _optimize(model, "cse,dce")
    assert _ops(graph) == ["Relu", "Add", "Add", "Mul", "Mul"]
    assert _counters(report)["nodes_deduplicated"] == 2
    assert graph.nodes[3].inputs[0] is graph.nodes[3].inputs[1]


def test_transpose_and_reshape_chains_cancel_and_merge() -> None:
    nodes = [
        helper.make_node("Transpose", ["x"], ["t1"], perm=[0, 2, 1]),
        helper.make_node("Transpose", ["t1"], ["t2"], perm=[0, 2, 1]),     # cancels
        helper.make_node("Transpose", ["t2"], ["t3"], perm=[1, 0, 2]),
        helper.make_node("Transpose", ["t3"], ["t4"], perm=[0, 2, 1]),     # merges with t3
        helper.make_node("Flatten", ["t4"], ["f"], axis=1),
        helper.make_node("Reshape", ["f", "back"], ["r"]),                   # Flatten+Reshape -> one Reshape
        helper.make_node("Unsqueeze", ["r", "axis0"], ["u"]),
        helper.make_node("Squeeze", ["u", "axis0"], ["y"]),                 # cancels
    ]
    inits = [("back", np.array([4, 2, 3], np.int64)), ("axis0", np.array([0], np.int64))]
    model = _model(nodes, [_tensor("x", [2, 3, 4])], [_tensor("y", [4, 2, 3])], inits)
    graph, report, _ = _optimize(model, "fixpoint(simplify_layout_chains,remove_algebraic_noops,dce)")
    assert _ops(graph) == ["Transpose", "Reshape"]
    assert list(graph.nodes[0].attr("perm")) == [1, 2, 0]
    counters = _counters(report)
    assert counters["cancel_transposes"] == 1 and counters["merge_transposes"] == 1


def _key_transposed_through_3d(merge: list[int], split: list[int], batch: int | str = 2, declared: list | None = None):
    """torch's k.transpose(-2, -1) as its exporters write it: Reshape to 3-D, Transpose(0, 2, 1),
    Reshape back to 4-D (`declared`: the type the dynamo exporter writes for it), then a Relu."""
    nodes = [helper.make_node("Reshape", ["x", "merge"], ["m"]), helper.make_node("Transpose", ["m"], ["mt"], perm=[0, 2, 1]),
             helper.make_node("Reshape", ["mt", "split"], ["kt"]), helper.make_node("Relu", ["kt"], ["y"])]
    inits = [("merge", np.array(merge, np.int64)), ("split", np.array(split, np.int64))]
    model = _model(nodes, [_tensor("x", [batch, 4, 5, 16])], [_tensor("y", None)], inits)
    if declared is not None:
        model.graph.value_info.append(_tensor("kt", declared))
    return model


def test_transpose_between_merged_and_split_leading_dims_becomes_one_transpose() -> None:
    graph, report, _ = _optimize(_key_transposed_through_3d([8, 5, 16], [2, 4, 16, 5]), "simplify_layout_chains,dce")
    assert _ops(graph) == ["Transpose", "Relu"]
    assert list(graph.nodes[0].attr("perm")) == [0, 1, 3, 2]
    assert _counters(report)["transpose_between_leading_merge_and_split"] == 1
    # the 3-D view merges trailing dims instead ([2, 4, 80]): no such rewrite
    graph, _, _ = _optimize(_key_transposed_through_3d([2, 4, 80], [2, 80, 4]), "simplify_layout_chains,dce")
    assert _ops(graph) == ["Reshape", "Transpose", "Reshape", "Relu"]
    # split back in another order ([4, 2, 16, 5]): the data is not a transpose of x's
    graph, _, _ = _optimize(_key_transposed_through_3d([8, 5, 16], [4, 2, 16, 5]), "simplify_layout_chains,dce")
    assert _ops(graph) == ["Reshape", "Transpose", "Reshape", "Relu"]
    # a symbolic batch: the split's type is what the exporter declared
    model = _key_transposed_through_3d([-1, 5, 16], [-1, 4, 16, 5], "batch", declared=["batch", 4, 16, 5])
    graph, _, _ = _optimize(model, "simplify_layout_chains,dce")
    assert _ops(graph) == ["Transpose", "Relu"] and list(graph.nodes[0].attr("perm")) == [0, 1, 3, 2]


def test_shared_transpose_is_kept_and_only_the_cancel_applies() -> None:
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
        helper.make_node("Transpose", ["t"], ["back"], perm=[1, 0]),
        helper.make_node("Relu", ["t"], ["y"]),
        helper.make_node("Add", ["back", "x"], ["z"]),
    ]
    model = _model(nodes, [_tensor("x", [2, 3])], [_tensor("y", [3, 2]), _tensor("z", [2, 3])])
    graph, _, _ = _optimize(model, "simplify_layout_chains,dce")
    assert _ops(graph) == ["Transpose", "Relu", "Add"]
    assert list(graph.nodes[2].inputs) == [graph.inputs[0], graph.inputs[0]]


def test_transposes_pushed_through_elementwise_ops_cancel() -> None:
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 3, 1]),
        helper.make_node("Relu", ["xt"], ["r"]),
        helper.make_node("Transpose", ["r"], ["a"], perm=[0, 3, 1, 2]),      # back to NCHW: cancels
        helper.make_node("Transpose", ["a"], ["at"], perm=[0, 2, 3, 1]),
        helper.make_node("Mul", ["at", "scale"], ["m"]),                    # per-channel constant (NHWC)
        helper.make_node("Transpose", ["m"], ["b"], perm=[0, 3, 1, 2]),
        helper.make_node("Transpose", ["b"], ["p"], perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["w"], ["q"], perm=[0, 2, 3, 1]),
        helper.make_node("Add", ["p", "q"], ["y"]),                          # both transposed alike: one Transpose
    ]
    inits = [("scale", np.arange(1, 4, dtype=np.float32))]
    model = _model(nodes, [_tensor("x", [1, 3, 4, 5]), _tensor("w", [1, 3, 4, 5])], [_tensor("y", [1, 4, 5, 3])], inits)
    graph, report, _ = _optimize(model, "fixpoint(push_transposes,simplify_layout_chains,dce)")
    assert _ops(graph) == ["Relu", "Mul", "Add", "Transpose"]
    assert graph.nodes[1].inputs[1].constant().shape == (1, 3, 1, 1)
    counters = _counters(report)
    assert counters["push_transpose_through_relu"] == 1 and counters["push_transpose_through_mul_constant"] == 1
    assert counters["hoist_transpose_over_add"] == 1


def test_reshape_sinks_through_a_gelu_region_and_both_reshapes_go() -> None:
    """Gemm -> Reshape to 3-D -> tanh-GELU (x read four times) -> Reshape to 2-D -> Gemm, as GPT-2's
    dynamo export writes it; a region read from outside keeps its Reshape."""
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Gemm", ["v", "w1"], ["h"]),
        helper.make_node("Reshape", ["h", "to3d"], ["x"]),
        helper.make_node("Mul", ["x", "half"], ["a"]),
        helper.make_node("Pow", ["x", "three"], ["cube"]),
        helper.make_node("Mul", ["cube", "k"], ["b"]),
        helper.make_node("Add", ["x", "b"], ["c"]),
        helper.make_node("Tanh", ["c"], ["t"]),
        helper.make_node("Add", ["t", "one"], ["d"]),
        helper.make_node("Mul", ["a", "d"], ["gelu"]),
        helper.make_node("Reshape", ["gelu", "to2d"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w2"], ["y"]),
        helper.make_node("Reshape", ["h", "to3d"], ["x2"]),
        helper.make_node("Relu", ["x2"], ["r"]),
        helper.make_node("Reshape", ["r", "to2d"], ["r2"]),
        helper.make_node("Add", ["r2", "x2_flat"], ["z"]),
        helper.make_node("Reshape", ["x2", "to2d"], ["x2_flat"]),
    ]
    nodes = nodes[:14] + nodes[15:] + nodes[14:15]
    inits = [("w1", rng.standard_normal((4, 6)).astype(np.float32)), ("w2", rng.standard_normal((6, 3)).astype(np.float32)),
             ("to3d", np.array([2, -1, 6], np.int64)), ("to2d", np.array([-1, 6], np.int64)), ("half", np.float32(0.5)),
             ("three", np.float32(3)), ("k", np.float32(0.044715)), ("one", np.float32(1))]
    model = _model(nodes, [_tensor("v", [8, 4])], [_tensor("y", [8, 3]), _tensor("z", [8, 6])], inits)
    graph, report, _ = _optimize(model, "fixpoint(simplify_layout_chains,remove_algebraic_noops,dce)")
    assert _ops(graph) == ["Gemm", "Mul", "Pow", "Mul", "Add", "Tanh", "Add", "Mul", "Gemm", "Reshape", "Relu", "Reshape",
                           "Reshape", "Add"]
    assert graph.nodes[1].inputs[0].name == "h" and graph.nodes[8].inputs[0] is graph.nodes[7].outputs[0]
    assert _counters(report)["sink_reshape_through_elementwise"] == 1


def _bn_inits(prefix: str, channels: int, seed: int) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(f"{prefix}_scale", rng.uniform(0.5, 2, channels).astype(np.float32)),
            (f"{prefix}_bias", rng.standard_normal(channels).astype(np.float32)),
            (f"{prefix}_mean", rng.standard_normal(channels).astype(np.float32)),
            (f"{prefix}_var", rng.uniform(0.5, 2, channels).astype(np.float32))]


def _bn(prefix: str, source: str, output: str):
    return helper.make_node("BatchNormalization", [source] + [f"{prefix}_{p}" for p in ("scale", "bias", "mean", "var")],
                            [output], epsilon=1e-3)


def test_batchnorm_folds_into_conv_conv_transpose_gemm_and_matmul() -> None:
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]), _bn("n1", "c1", "y1"),
        helper.make_node("ConvTranspose", ["x", "w2"], ["c2"], group=2), _bn("n2", "c2", "y2"),
        helper.make_node("Gemm", ["v", "w3", "b3"], ["g"], transB=1, alpha=0.5, beta=2.0), _bn("n3", "g", "y3"),
        helper.make_node("MatMul", ["v", "w4"], ["mm"]), _bn("n4", "mm", "y4"),
    ]
    inits = [("w1", rng.standard_normal((6, 4, 3, 3))), ("b1", rng.standard_normal(6)), ("w2", rng.standard_normal((4, 3, 2, 2))),
             ("w3", rng.standard_normal((5, 8))), ("b3", rng.standard_normal(5)), ("w4", rng.standard_normal((8, 7)))]
    inits = [(n, a.astype(np.float32)) for n, a in inits]
    inits += _bn_inits("n1", 6, 2) + _bn_inits("n2", 6, 3) + _bn_inits("n3", 5, 4) + _bn_inits("n4", 7, 5)
    outputs = [_tensor("y1", ["batch", 6, 5, 5]), _tensor("y2", ["batch", 6, 6, 6]), _tensor("y3", ["batch", 5]), _tensor("y4", ["batch", 7])]
    model = _model(nodes, [_tensor("x", ["batch", 4, 5, 5]), _tensor("v", ["batch", 8])], outputs, inits)
    graph, report, _ = _optimize(model, "fold_batchnorm,dce")
    assert _ops(graph) == ["Conv", "ConvTranspose", "Gemm", "Gemm"]
    counters = _counters(report)
    for rule in ("fold_batchnorm_into_conv_bias", "fold_batchnorm_into_conv_transpose", "fold_batchnorm_into_gemm_bias",
                 "fold_batchnorm_into_matmul"):
        assert counters[rule] == 1, rule


def test_batchnorm_after_a_shared_conv_is_not_folded_and_explains_why() -> None:
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"), _bn("n", "c", "y"), helper.make_node("Relu", ["c"], ["z"], name="relu")]
    nodes[1].name = "bn"
    inits = [("w", np.ones((2, 3, 1, 1), np.float32))] + _bn_inits("n", 2, 0)
    model = _model(nodes, [_tensor("x", [1, 3, 2, 2])], [_tensor("y", [1, 2, 2, 2]), _tensor("z", [1, 2, 2, 2])], inits)
    graph, _, ctx = _optimize(model, "fold_batchnorm", debug_rewrites=True)
    assert _ops(graph) == ["Conv", "BatchNormalization", "Relu"]
    assert ctx.artifacts["match_tracer"].explain("fold_batchnorm_into_conv", "bn") == (
        "rule 'fold_batchnorm_into_conv' did not match at 'bn': intermediate value 'c' is also read by Relu 'relu'; "
        "fusing would duplicate work [at BatchNormalization 'bn']")


def test_bias_epilogues_and_gemm_only_where_no_node_is_added() -> None:
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Add", ["c", "bias"], ["y1"]),                     # per-channel [2,1,1] -> Conv bias
        helper.make_node("MatMul", ["v", "m"], ["mm"]),
        helper.make_node("Add", ["mm", "mb"], ["g"]),                       # 2-D -> Gemm
        helper.make_node("Add", ["g", "more"], ["y2"]),                     # Gemm + constant -> C
        helper.make_node("MatMul", ["s", "m"], ["mm3"]),
        helper.make_node("Add", ["mm3", "mb"], ["y3"]),                     # 3-D: a Gemm would need Reshapes
    ]
    inits = [("w", rng.standard_normal((2, 3, 1, 1))), ("bias", rng.standard_normal((2, 1, 1))), ("m", rng.standard_normal((4, 5))),
             ("mb", rng.standard_normal(5)), ("more", rng.standard_normal((1, 5)))]
    inits = [(n, a.astype(np.float32)) for n, a in inits]
    inputs = [_tensor("x", ["batch", 3, 2, 2]), _tensor("v", ["batch", 4]), _tensor("s", ["batch", "seq", 4])]
    outputs = [_tensor("y1", ["batch", 2, 2, 2]), _tensor("y2", ["batch", 5]), _tensor("y3", ["batch", "seq", 5])]
    graph, report, _ = _optimize(_model(nodes, inputs, outputs, inits), "fuse_bias_epilogues,dce")
    assert _ops(graph) == ["Conv", "Gemm", "MatMul", "Add"]
    counters = _counters(report)
    assert counters["conv_add_to_bias"] == 1 and counters["matmul_add_to_gemm"] == 1 and counters["gemm_c_add_to_c"] == 1


def test_fusion_never_creates_a_cycle_or_duplicates_shared_work() -> None:
    """Add(MatMul(a,b), Relu(MatMul(a,b))): a Gemm would read its own output's consumer (a cycle) and
    the MatMul would be computed twice; the rule refuses, says why, and the graph stays acyclic."""
    nodes = [
        helper.make_node("MatMul", ["a", "b"], ["mm"], name="matmul"),
        helper.make_node("Relu", ["mm"], ["r"], name="relu"),
        helper.make_node("Add", ["mm", "r"], ["y"], name="add"),
    ]
    model = _model(nodes, [_tensor("a", [3, 4]), _tensor("b", [4, 5])], [_tensor("y", [3, 5])])
    graph, report, ctx = _optimize(model, "fuse_bias_epilogues", debug_rewrites=True)
    assert _ops(graph) == ["MatMul", "Relu", "Add"]
    assert nx.is_directed_acyclic_graph(graph.to_networkx())
    assert ctx.artifacts["match_tracer"].explain("matmul_add_to_gemm", "add") == (
        "rule 'matmul_add_to_gemm' did not match at 'add': intermediate value 'mm' is also read by Relu 'relu'; "
        "fusing would duplicate work [at Add 'add']")


def test_explain_flag_reports_the_precise_reason(tmp_path, capsys) -> None:
    nodes = [helper.make_node("MatMul", ["s", "m"], ["mm"], name="matmul"), helper.make_node("Add", ["mm", "mb"], ["y"], name="add")]
    inits = [("m", np.ones((4, 5), np.float32)), ("mb", np.ones(5, np.float32))]
    model = _model(nodes, [_tensor("s", ["batch", "seq", 4])], [_tensor("y", ["batch", "seq", 5])], inits)
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    code = main(["-q", "compile", str(path), "--backend", "onnx", "-O2", "--explain", "matmul_add_to_gemm@add",
                 "-o", str(tmp_path / "out.onnx")])
    assert code == 0
    assert "rule 'matmul_add_to_gemm' did not match at 'add': 's' is not 2-D; a Gemm would need Reshapes [at MatMul 'matmul']" in (
        capsys.readouterr().out.splitlines())


EXPECTED_O2_NODES = {"mlp": 5, "cnn_bn_residual": 21, "transformer_torchscript": 49, "transformer_dynamo": 33, "digits_cnn": 9}


@pytest.mark.parametrize("name", sorted(EXPECTED_O2_NODES))
def test_samples_at_o2_match_onnxruntime(name: str) -> None:
    model = onnx.load(str(SAMPLES / f"{name}.onnx"))
    optimized = compiler.optimize(model, opt_level=2)
    assert len(optimized.graph.node) == EXPECTED_O2_NODES[name]
    feeds = dict(np.load(SAMPLES / "data" / f"{name}_inputs.npz"))
    verdict = compare_outputs(run_onnxruntime(model, feeds), run_onnxruntime(optimized, feeds), rtol=1e-4, atol=1e-5)
    assert verdict.ok, verdict.message
    assert [i.name for i in optimized.graph.input] == [i.name for i in model.graph.input]
    assert [o.name for o in optimized.graph.output] == [o.name for o in model.graph.output]
    assert json.dumps([str(i.type) for i in optimized.graph.input]) == json.dumps([str(i.type) for i in model.graph.input])


def test_structural_mismatch_is_explained_not_reported_as_no_match() -> None:
    nodes = [helper.make_node("Relu", ["a"], ["r"], name="relu"), helper.make_node("Add", ["r", "b"], ["y"], name="add")]
    model = _model(nodes, [_tensor("a", [3, 5]), _tensor("b", [3, 5])], [_tensor("y", [3, 5])])
    _graph, _report, ctx = _optimize(model, "fuse_bias_epilogues", debug_rewrites=True)
    assert ctx.artifacts["match_tracer"].explain("matmul_add_to_gemm", "add") == (
        "rule 'matmul_add_to_gemm' did not match at 'add': no input of Add comes from a MatMul "
        "(after matching 1/2 ops) [at Add 'add']")


def test_rules_needing_an_absent_op_are_not_tried(monkeypatch) -> None:
    """The driver skips rules with a pattern op the graph lacks (a GELU needs Erf or Tanh); with a
    tracer on, every rule is tried so that --explain can say why."""
    from compiler.rewriter import Rule

    tried: list[str] = []
    original = Rule.try_match

    def counting(self, node, options=None):
        tried.append(self.name)
        return original(self, node, options)

    monkeypatch.setattr(Rule, "try_match", counting)
    nodes = [helper.make_node("Sigmoid", ["a"], ["s"], name="sigmoid"), helper.make_node("Mul", ["a", "s"], ["y"], name="silu")]
    model = _model(nodes, [_tensor("a", [3, 5])], [_tensor("y", [3, 5])])
    _optimize(model, "fuse_gelu")
    assert tried == []
    _optimize(model, "fuse_gelu", debug_rewrites=True)
    assert tried and all(name.startswith("fuse_gelu") for name in tried)


def test_sibling_matmuls_merge_into_one_product_and_a_split() -> None:
    """Q/K/V-style projections of one activation become one MatMul + Split; a weight of another K,
    a weight some other node also reads, and a sibling that is a graph output are handled exactly."""
    rng = np.random.default_rng(5)
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"]),
        helper.make_node("MatMul", ["x", "wk"], ["k"]),
        helper.make_node("MatMul", ["x", "wv"], ["v"]),                     # also a graph output
        helper.make_node("MatMul", ["x", "shared"], ["s"]),                 # its weight is read twice: kept
        helper.make_node("Add", ["shared", "shared"], ["s2"]),
        helper.make_node("MatMul", ["t", "other"], ["o"]),                  # another activation: kept
        helper.make_node("Mul", ["q", "k"], ["qk"]),
        helper.make_node("Add", ["qk", "v"], ["y"]),
    ]
    inits = [(n, rng.standard_normal(shape).astype(np.float32)) for n, shape in
             [("wq", (4, 6)), ("wk", (4, 6)), ("wv", (4, 6)), ("shared", (4, 4)), ("other", (3, 6))]]
    inputs = [_tensor("x", ["batch", "seq", 4]), _tensor("t", ["batch", 3])]
    outputs = [_tensor("y", ["batch", "seq", 6]), _tensor("v", ["batch", "seq", 6]), _tensor("s", ["batch", "seq", 4]),
               _tensor("s2", [4, 4]), _tensor("o", ["batch", 6])]
    graph, report, _ = _optimize(_model(nodes, inputs, outputs, inits), "merge_sibling_matmuls,dce")
    assert _ops(graph) == ["MatMul", "Split", "MatMul", "Add", "MatMul", "Mul", "Add"]
    assert _counters(report)["matmuls_merged"] == 2
    merged = graph.nodes[0]
    assert merged.inputs[1].const_value.shape == (4, 18) and merged.outputs[0].shape == ("batch", "seq", 18)
    assert [v.name for v in graph.outputs] == ["y", "v", "s", "s2", "o"]  # the interface keeps its names
    assert "wq" not in graph.initializers and "shared" in graph.initializers


def test_sibling_matmuls_with_bias_adds_merge_the_biases_too() -> None:
    rng = np.random.default_rng(6)
    nodes = [helper.make_node("MatMul", ["x", f"w{i}"], [f"m{i}"]) for i in range(3)]
    nodes += [helper.make_node("Add", [f"m{i}", f"b{i}"] if i != 1 else [f"b{i}", f"m{i}"], [f"a{i}"]) for i in range(3)]
    nodes += [helper.make_node("Concat", ["a0", "a1", "a2"], ["y"], axis=-1)]
    inits = [(f"w{i}", rng.standard_normal((8, 2 + i)).astype(np.float32)) for i in range(3)]
    inits += [(f"b{i}", rng.standard_normal(2 + i).astype(np.float32)) for i in range(3)]
    model = _model(nodes, [_tensor("x", ["batch", 8])], [_tensor("y", ["batch", 9])], inits, opset=11)
    graph, _, _ = _optimize(model, "merge_sibling_matmuls,dce")
    assert _ops(graph) == ["MatMul", "Add", "Split", "Concat"]
    assert graph.nodes[2].attr("split") == [2, 3, 4]  # opset 11: the sizes are an attribute
