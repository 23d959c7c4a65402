"""The IR's mutation API keeps use-def chains current; verify() catches broken invariants."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import compiler
from compiler.ir import (
    DataType,
    Graph,
    GraphError,
    Node,
    Shape,
    TensorType,
    Value,
    VerificationError,
)
from compiler.verify import verify


def _float(name: str, *shape) -> Value:
    return Value(name, TensorType(DataType.FLOAT, Shape(shape)))


def _chain() -> tuple[Graph, Node, Node, Node]:
    x = _float("x", "batch", 4)
    a = Node("Relu", [x], name="a", outputs=["ra"])
    b = Node("Neg", [a.output], name="b", outputs=["nb"])
    c = Node("Add", [a.output, b.output], name="c", outputs=["y"])
    graph = Graph([x], [c.output], [a, b, c], opset_imports={"": 17})
    return graph, a, b, c


def test_uses_follow_construction_and_replacement() -> None:
    graph, a, b, c = _chain()
    assert [(u.node.name, u.index) for u in a.output.uses] == [("b", 0), ("c", 0)]
    c.replace_input_with(1, a.output)
    assert [(u.node.name, u.index) for u in a.output.uses] == [("b", 0), ("c", 0), ("c", 1)]
    assert b.output.uses == ()
    verify(graph)


def test_remove_node_refuses_while_read_and_names_readers() -> None:
    graph, a, b, c = _chain()
    with pytest.raises(GraphError, match=r"read by Neg 'b', Add 'c'"):
        graph.remove_node(a)
    with pytest.raises(GraphError, match="graph output"):
        graph.remove_node(c)


def test_replace_all_uses_keeps_graph_output_name() -> None:
    graph, a, b, c = _chain()
    replacement = Node("Sub", [a.output, b.output], name="s")
    graph.insert_node(replacement, before=c)
    graph.replace_all_uses_with(c.output, replacement.output)
    graph.remove_node(c)
    assert graph.outputs[0] is replacement.output
    assert graph.outputs[0].name == "y"
    verify(graph)


def test_replace_output_with_graph_input_inserts_identity() -> None:
    graph, a, b, c = _chain()
    x = graph.inputs[0]
    graph.replace_all_uses_with(c.output, x)
    graph.remove_node(c)
    assert graph.outputs[0].name == "y"
    assert graph.outputs[0].producer.op_type == "Identity"
    assert graph.outputs[0].producer.inputs[0] is x


def test_iteration_survives_removal_and_insertion() -> None:
    graph, a, b, c = _chain()
    seen = []
    for node in graph.nodes:
        seen.append(node.name)
        if node is a:
            graph.insert_node(Node("Abs", [a.output], name="inserted"), after=a)
        if node is b:
            c.replace_input_with(1, a.output)
            graph.remove_node(b)
    assert seen == ["a", "inserted", "b", "c"]
    assert [n.name for n in graph.nodes] == ["a", "inserted", "c"]


def test_toposort_orders_and_detects_cycles() -> None:
    graph, a, b, c = _chain()
    graph.nodes.reorder([c, b, a])
    with pytest.raises(VerificationError, match="before"):
        verify(graph)
    graph.toposort()
    assert [n.name for n in graph.nodes] == ["a", "b", "c"]
    a.replace_input_with(0, c.output)  # a now reads c: a cycle
    with pytest.raises(GraphError, match="cycle"):
        graph.toposort()


def test_verify_catches_dangling_and_undefined_uses() -> None:
    graph, a, b, c = _chain()
    stranger = _float("stranger", 4)
    c.replace_input_with(1, stranger)
    with pytest.raises(VerificationError, match="undefined value 'stranger'"):
        verify(graph)
    graph2, a2, b2, c2 = _chain()
    ghost = Node("Neg", [a2.output], name="ghost")  # reads a2 but was never added to the graph
    with pytest.raises(VerificationError, match="use by removed node Neg 'ghost'"):
        verify(graph2)
    ghost._detach_inputs()
    verify(graph2)


def test_verify_catches_duplicate_producers() -> None:
    graph, a, b, c = _chain()
    b.outputs[0].name = "ra"  # same name as a's output
    with pytest.raises(VerificationError, match="two producers"):
        verify(graph)


def test_verify_catches_type_mismatch() -> None:
    graph, a, b, c = _chain()
    a.output.type = TensorType(DataType.FLOAT, Shape(["batch", 4]))
    verify(graph)
    b.outputs[0].type = TensorType(DataType.INT64, Shape(["batch", 4]))
    with pytest.raises(VerificationError, match=r"type mismatch at Neg 'b': output 0 \('nb'\) is int64 but input 0 is float"):
        verify(graph)


def test_networkx_view_serves_analyses() -> None:
    import networkx as nx

    graph, a, b, c = _chain()
    view = graph.to_networkx()
    assert set(view.edges()) == {(a, b), (a, c), (b, c)}
    assert nx.is_directed_acyclic_graph(view)
    assert nx.has_path(view, a, c)
    assert nx.immediate_dominators(view, a)[c] is a


def test_subgraph_captures_count_as_inputs() -> None:
    cond = Value("cond", TensorType(DataType.BOOL, Shape([])))
    x = _float("x", 2)
    outer = Node("Neg", [x], name="outer", outputs=["n"])
    then_node = Node("Relu", [outer.output], name="inner", outputs=["t"])
    then_graph = Graph([], [then_node.output], [then_node], name="then")
    else_node = Node("Abs", [x], name="inner2", outputs=["e"])
    else_graph = Graph([], [else_node.output], [else_node], name="else")
    branch = Node("If", [cond], {"then_branch": then_graph, "else_branch": else_graph}, name="if", outputs=["y"])
    graph = Graph([cond, x], [branch.output], [branch, outer], opset_imports={"": 17})
    assert outer.output in branch.implicit_inputs()
    graph.toposort()
    assert [n.name for n in graph.nodes] == ["outer", "if"]
    verify(graph)
    with pytest.raises(GraphError, match="read by Relu 'inner'"):
        graph.remove_node(outer)


def test_copy_is_deep_and_independent() -> None:
    graph, a, b, c = _chain()
    graph.make_constant(np.ones(3, np.float32), name="w")
    clone = graph.copy()
    verify(clone)
    assert [n.name for n in clone.nodes] == ["a", "b", "c"]
    assert clone.nodes[0] is not a and clone.inputs[0] is not graph.inputs[0]
    clone_c = clone.nodes[2]
    clone.replace_all_uses_with(clone_c.output, clone.inputs[0])
    clone.remove_node(clone_c)
    assert [n.name for n in graph.nodes] == ["a", "b", "c"]
    verify(graph)


def test_model_local_functions_are_inlined_on_load():
    """A node calling a model-local function becomes the function's body."""
    function = onnx.helper.make_function("local", "F", ["x"], ["y"], [onnx.helper.make_node("Relu", ["x"], ["t"]), onnx.helper.make_node("Neg", ["t"], ["y"])], [onnx.helper.make_opsetid("", 17)])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("F", ["a"], ["b"], domain="local")], "g",
        [onnx.helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [2])],
        [onnx.helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [2])],
    )
    model = onnx.helper.make_model(graph, functions=[function], opset_imports=[onnx.helper.make_opsetid("", 17), onnx.helper.make_opsetid("local", 1)])
    assert [node.op_type for node in compiler.load(model).nodes] == ["Relu", "Neg"]


def test_large_initializers_stay_backed_by_their_proto_through_a_round_trip() -> None:
    from compiler.onnx_io import export_model, import_model
    from compiler.onnx_io._types import ProtoTensor

    weight = np.arange(64 * 64, dtype=np.float32).reshape(64, 64) / 7
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 64])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 64])
    graph = onnx.helper.make_graph([onnx.helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y],
                                   [onnx.numpy_helper.from_array(weight, "w")])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    imported = import_model(model)
    tensor = imported.initializers["w"].const_value
    assert isinstance(tensor, ProtoTensor) and not tensor.is_loaded
    assert tensor.shape == (64, 64) and not tensor.is_loaded  # the type alone, no bytes read
    array = tensor.numpy()
    np.testing.assert_array_equal(array, weight)
    assert not array.flags.writeable  # a view of the proto's bytes: the IR never writes in place
    exported = export_model(imported)
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(exported.graph.initializer[0]), weight)
    assert exported.graph.initializer[0].name == "w"


def test_refreshing_types_pins_symbols_that_inference_can_resolve() -> None:
    from compiler.ir import Shape, TensorType
    from compiler.shape_inference import infer_types

    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["a", "b"])
    target = onnx.numpy_helper.from_array(np.array([3, 2], np.int64), "target")
    graph = onnx.helper.make_graph([onnx.helper.make_node("Reshape", ["x", "target"], ["r"]),
                                    onnx.helper.make_node("Relu", ["r"], ["y"])], "g", [x], [y], [target],
                                   value_info=[onnx.helper.make_tensor_value_info("r", onnx.TensorProto.FLOAT, ["a", "b"])])
    imported = compiler.load(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]))
    reshaped = imported.nodes[0].outputs[0]
    assert reshaped.shape == ("a", "b")  # at import the exporter's complete value_info is taken as it is
    infer_types(imported)  # after a pass: inference may pin a symbol to the int it computes
    assert reshaped.type == TensorType(reshaped.dtype, Shape([3, 2]))


def test_import_infers_untyped_graphs_from_a_weight_free_copy_of_the_proto() -> None:
    """A graph without value_info is typed at import from the proto itself: shape vectors computed
    by Shape/Gather/Concat propagate into the Reshape, big weights take part only by their type,
    and the caller's ModelProto is left as it was."""
    weight = np.ones((64, 256), np.float32)
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 64])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    nodes = [
        onnx.helper.make_node("MatMul", ["x", "w"], ["h"]),
        onnx.helper.make_node("Shape", ["h"], ["s"]),
        onnx.helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
        onnx.helper.make_node("Concat", ["b", "split"], ["target"], axis=0),
        onnx.helper.make_node("Reshape", ["h", "target"], ["y"]),
    ]
    graph = onnx.helper.make_graph(nodes, "g", [x], [y], [
        onnx.numpy_helper.from_array(weight, "w"),
        onnx.numpy_helper.from_array(np.array([0], np.int64), "zero"),
        onnx.numpy_helper.from_array(np.array([16, 16], np.int64), "split"),
    ])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    before = model.SerializeToString()
    imported = compiler.load(model)
    types = {v.name: v.type for n in imported.nodes for v in n.outputs}
    assert types["h"] == TensorType(DataType.FLOAT, Shape(["batch", 256]))
    assert types["target"] == TensorType(DataType.INT64, Shape([3]))
    assert imported.outputs[0].type == TensorType(DataType.FLOAT, Shape(["batch", 16, 16]))
    assert model.SerializeToString() == before


def test_import_types_a_file_whose_nodes_are_out_of_order() -> None:
    """Files may list nodes in any order; inference at import still types every value."""
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    nodes = [onnx.helper.make_node("Relu", ["h"], ["y"]), onnx.helper.make_node("Neg", ["x"], ["h"])]
    graph = onnx.helper.make_graph(nodes, "g", [x], [y])
    imported = compiler.load(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]))
    assert [n.op_type for n in imported.nodes] == ["Neg", "Relu"]
    assert imported.outputs[0].type == TensorType(DataType.FLOAT, Shape(["batch", 4]))


def test_export_gives_every_node_its_own_name() -> None:
    """A graph re-imported after onnx's version converter restarts the counter that names new
    nodes, so two may share a name (Reshape__22 in GPT-2's -O3); onnxruntime refuses such a model."""
    import onnxruntime as ort

    from compiler.onnx_io import export_model

    nodes = [onnx.helper.make_node("Relu", ["x"], ["a"], name="Reshape__22"),
             onnx.helper.make_node("Neg", ["a"], ["b"], name="Reshape__22"),
             onnx.helper.make_node("Abs", ["b"], ["y"], name="Reshape__22__0")]
    graph = onnx.helper.make_graph(nodes, "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [3])])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    exported = export_model(compiler.load(model))
    assert [n.name for n in exported.graph.node] == ["Reshape__22", "Reshape__22__1", "Reshape__22__0"]
    x = np.array([-1.0, 0.5, 2.0], np.float32)
    session = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], np.abs(-np.maximum(x, 0)))
