"""The pass manager: registry, presets edited by --passes/--disable, fixed points, timing, IR
verification after each pass, numeric checks per pass and snapshots."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler
from compiler.errors import OptionError, PassFailure
from compiler.ir import Graph, Node
from compiler.pass_infra import Pass, PassContext, PassResult, register_pass
from compiler.pipeline import FixedPoint, PassStep, Pipeline, build_pipeline


def _model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    w = numpy_helper.from_array((np.arange(12, dtype=np.float32).reshape(4, 3) - 6) / 10, "w")
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    nodes = [
        helper.make_node("Mul", ["w", "two"], ["w2"], name="scale_weight"),
        helper.make_node("Identity", ["x"], ["xi"], name="identity"),
        helper.make_node("MatMul", ["xi", "w2"], ["mm"], name="matmul"),
        helper.make_node("Dropout", ["mm"], ["d"], name="dropout"),
        helper.make_node("Relu", ["d"], ["y"], name="relu"),
        helper.make_node("Neg", ["x"], ["unused"], name="dead"),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y], [w, two])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_pipeline_text_round_trips() -> None:
    text = "fold_constants,fixpoint(remove_noops,fold_constants,dce),dce"
    pipeline = Pipeline.parse(text)
    assert pipeline.steps[1] == FixedPoint((PassStep("remove_noops"), PassStep("fold_constants"), PassStep("dce")))
    assert str(pipeline) == text
    assert str(Pipeline.parse("fixpoint:3(dce)")) == "fixpoint:3(dce)"
    with pytest.raises(OptionError, match="missing '\\)'"):
        Pipeline.parse("fixpoint(dce")


def test_o1_runs_real_passes_to_a_fixed_point() -> None:
    cm = compiler.compile(_model(), backend="onnx", opt_level=1)
    ops = [n.op_type for n in cm.graph.nodes]
    assert ops == ["MatMul", "Relu"]
    assert list(cm.graph.initializers) == ["w2"]
    names = [r.label for r in cm.report.passes]
    assert names[0] == "fold_constants" and "remove_noops#1" in names and "dce#1" in names
    last_round = [r for r in cm.report.passes if r.iteration == max(p.iteration for p in cm.report.passes)]
    assert not any(r.modified for r in last_round)  # the fixed point was reached
    first = cm.report.passes[0]
    assert (first.nodes_before, first.nodes_after, first.counters["nodes_folded"]) == (6, 5, 1)
    assert all(r.seconds >= 0 for r in cm.report.passes)
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    w = (np.arange(12, dtype=np.float32).reshape(4, 3) - 6) / 10
    np.testing.assert_allclose(cm(x)[0], np.maximum(x @ (w * 2), 0), rtol=1e-6)


def test_passes_and_disable_edit_the_preset() -> None:
    pipeline, log = build_pipeline(1, "onnx", passes=None, disable=["fold_constants"])
    assert "fold_constants" not in pipeline.pass_names()
    assert log == ["skipped pass fold_constants (disabled)"]
    cm = compiler.compile(_model(), backend="onnx", passes="dce")
    assert [r.name for r in cm.report.passes] == ["dce"]
    assert len(cm.graph.nodes) == 5
    cm = compiler.compile(_model(), backend="onnx", opt_level=0, passes="+remove_noops")
    assert [r.name for r in cm.report.passes] == ["remove_noops"]
    with pytest.raises(OptionError, match="unknown pass 'no_such_pass'"):
        compiler.compile(_model(), backend="onnx", passes="dce,no_such_pass")


def test_o0_runs_nothing() -> None:
    cm = compiler.compile(_model(), backend="onnx", opt_level=0)
    assert cm.report.passes == [] and len(cm.graph.nodes) == 6


@register_pass
class _BreakGraph(Pass):
    """Test-only pass that leaves a node reading a value nobody defines."""

    name = "test_break_graph"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        from compiler.ir import Value

        relu = next(n for n in graph.nodes if n.op_type == "Relu")
        relu.replace_input_with(0, Value("phantom"))
        return PassResult(graph, True)


@register_pass
class _ChangeNumerics(Pass):
    """Test-only pass that miscompiles: Relu becomes Abs."""

    name = "test_miscompile"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        relu = next(n for n in graph.nodes if n.op_type == "Relu")
        relu.op_type = "Abs"
        return PassResult(graph, True)


def test_verification_after_each_pass_names_the_pass() -> None:
    with pytest.raises(PassFailure, match=r"IR invalid after pass test_break_graph: .*undefined value 'phantom'.*passes before it: dce"):
        compiler.compile(_model(), backend="onnx", passes="dce,test_break_graph")


def test_check_each_pass_catches_a_miscompile() -> None:
    with pytest.raises(PassFailure, match=r"pass test_miscompile changed the model's outputs: y: max abs error"):
        compiler.compile(_model(), backend="onnx", passes="remove_noops,test_miscompile", check_each_pass=True)
    cm = compiler.compile(_model(), backend="onnx", opt_level=1, check_each_pass=True)
    assert all(r.max_error is not None for r in cm.report.passes if r.modified)


def test_snapshots_keep_every_stage() -> None:
    cm = compiler.compile(_model(), backend="onnx", opt_level=1, keep_snapshots=True)
    snapshots = cm.report.sections["snapshots"]
    assert len(snapshots) == len(cm.report.passes) + 1
    assert snapshots[0]["stage"] == "input" and len(snapshots[0]["graph"]["nodes"]) == 6
    uids_before = {n["uid"] for n in snapshots[0]["graph"]["nodes"]}
    uids_after = {n["uid"] for n in snapshots[-1]["graph"]["nodes"]}
    assert uids_after < uids_before  # surviving nodes keep their identity across passes


def test_fixed_point_that_never_settles_is_an_error() -> None:
    @register_pass
    class _Flip(Pass):
        name = "test_always_changes"

        def run(self, graph: Graph, ctx: PassContext) -> PassResult:
            return PassResult(graph, True)

    with pytest.raises(PassFailure, match=r"did not reach a fixed point: 3 rounds in a row changed the graph "
                                          r"without making it smaller \(3 rounds in all\)"):
        compiler.compile(_model(), backend="onnx", passes="fixpoint:3(test_always_changes)")


def test_fixed_point_that_keeps_shrinking_the_graph_runs_past_the_cap() -> None:
    """A deep model whose chains resolve one block a round (torchscript ShuffleNet's channel
    shuffles, Swin's window shapes) needs more rounds than the cap; each one makes it smaller."""

    @register_pass
    class _OneIdentityAtATime(Pass):
        name = "test_remove_one_identity"

        def run(self, graph: Graph, ctx: PassContext) -> PassResult:
            node = next((n for n in graph.nodes if n.op_type == "Identity"), None)
            if node is None:
                return PassResult(graph, False)
            graph.replace_all_uses_with(node.outputs[0], node.inputs[0])
            graph.remove_node(node)
            return PassResult(graph, True)

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    names = ["x"] + [f"i{k}" for k in range(7)]
    nodes = [helper.make_node("Identity", [a], [b]) for a, b in zip(names, names[1:])]
    nodes.append(helper.make_node("Relu", [names[-1]], ["y"]))
    model = helper.make_model(helper.make_graph(nodes, "chain", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    cm = compiler.compile(model, backend="onnx", passes="fixpoint:2(test_remove_one_identity)")
    assert [n.op_type for n in cm.graph.nodes] == ["Relu"]
    assert [r.label for r in cm.report.passes][-1] == "test_remove_one_identity#8"  # 7 removals, then a quiet round


def test_in_place_contract_is_enforced() -> None:
    @register_pass
    class _Liar(Pass):
        name = "test_in_place_liar"

        def run(self, graph: Graph, ctx: PassContext) -> PassResult:
            return PassResult(graph.copy(), True)

    with pytest.raises(PassFailure, match="declares in_place but returned a different graph"):
        compiler.compile(_model(), backend="onnx", passes="test_in_place_liar")


def test_fixed_point_skips_a_pass_on_a_graph_it_left_unchanged() -> None:
    runs: list[str] = []

    @register_pass
    class _Observer(Pass):
        name = "test_observer"

        def run(self, graph: Graph, ctx: PassContext) -> PassResult:
            runs.append(self.name)
            return PassResult(graph, False)

    @register_pass
    class _ChangesTwice(Pass):
        name = "test_changes_twice"

        def run(self, graph: Graph, ctx: PassContext) -> PassResult:
            runs.append(self.name)
            return PassResult(graph, runs.count(self.name) <= 2)

    compiled = compiler.compile(_model(), backend="onnx", passes="fixpoint(test_observer,test_changes_twice,test_observer)")
    # round 1: observer, change, observer. Round 2: the first observer is skipped (the second one
    # already saw this very graph), change, observer. Round 3: both observers skipped, change (no).
    assert runs == ["test_observer", "test_changes_twice", "test_observer", "test_changes_twice", "test_observer",
                    "test_changes_twice"]
    labels = [record.label for record in compiled.report.passes]
    assert labels == ["test_observer#1", "test_changes_twice#1", "test_observer#1",
                      "test_changes_twice#2", "test_observer#2", "test_changes_twice#3"]
    assert any("skipped 3 re-runs" in line and "test_observer x3" in line for line in compiled.report.log)
