"""Property tests: random small graphs (elementwise, MatMul/Gemm, Transpose, Reshape through shape
chains, Squeeze/Unsqueeze, Concat, Conv, BatchNormalization, deliberate no-ops and duplicates) give
the same outputs under onnxruntime before and after each pass and the whole -O2 pipeline."""

from __future__ import annotations

import os

import networkx as nx
import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import compiler
from compiler.onnx_io import export_model
from compiler.reference import compare_outputs, run_onnxruntime

BATCH = 2
UNARY = ("Relu", "Sigmoid", "Neg", "Abs", "Tanh")
BINARY = ("Add", "Sub", "Mul", "Max")


class RandomGraph:
    """Builds an ONNX model one random op at a time; every value's concrete shape is tracked."""

    def __init__(self, draw):
        self.draw = draw
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.shapes: dict[str, tuple[int, ...]] = {"x": (BATCH, 3, 4, 4)}
        self.rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}{self.count}"

    def const(self, array: np.ndarray) -> str:
        name = self.name("c")
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def emit(self, op_type: str, inputs: list[str], shape: tuple[int, ...] | None, **attributes) -> str:
        output = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attributes))
        if shape is not None:
            self.shapes[output] = shape
        return output

    def pick(self, rank: int | None = None) -> str:
        """A value to build on: often the newest one, so that ops form chains the rules look for."""
        names = [n for n, s in self.shapes.items() if rank is None or len(s) == rank]
        if not names:
            return "x"
        return names[-1] if self.draw(st.booleans()) else self.draw(st.sampled_from(names))

    def weights(self, *shape: int) -> str:
        return self.const(self.rng.standard_normal(shape).astype(np.float32))


def _unary(g: RandomGraph) -> None:
    v = g.pick()
    g.emit(g.draw(st.sampled_from(UNARY)), [v], g.shapes[v])


def _binary(g: RandomGraph) -> None:
    v = g.pick()
    shape = g.shapes[v]
    partners = [n for n, s in g.shapes.items() if s == shape]
    kind = g.draw(st.sampled_from(["value", "constant", "neutral"]))
    op_type = g.draw(st.sampled_from(BINARY))
    if kind == "value":
        other = g.draw(st.sampled_from(partners))
    else:
        rank = g.draw(st.integers(0, len(shape)))
        cshape = tuple(g.draw(st.sampled_from([1, d])) for d in shape[len(shape) - rank:])
        if kind == "neutral":
            op_type = g.draw(st.sampled_from(["Add", "Sub", "Mul", "Div"]))
            cshape = g.draw(st.sampled_from([cshape, (2,) + shape]))  # the second one broadcasts: not a no-op
            value = 1.0 if op_type in ("Mul", "Div") else 0.0
            other = g.const(np.full(cshape, value, np.float32))
        else:
            other = g.const(g.rng.uniform(0.5, 1.5, cshape).astype(np.float32))
    other_shape = g.shapes[other] if other in g.shapes else _initializer(g, other).shape
    out_shape = tuple(np.broadcast_shapes(shape, other_shape))
    commutative_first = op_type in ("Add", "Mul", "Max") and g.draw(st.booleans())  # exporters write both orders
    g.emit(op_type, [other, v] if commutative_first else [v, other], out_shape)


def _initializer(g: RandomGraph, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in g.initializers if t.name == name)


def _transpose(g: RandomGraph) -> None:
    v = g.pick()
    perm = g.draw(st.permutations(range(len(g.shapes[v]))))
    g.emit("Transpose", [v], tuple(g.shapes[v][p] for p in perm), perm=list(perm))


def _reshape(g: RandomGraph) -> None:
    """Keep dim 0, regroup the rest; the target is either constant or computed from Shape."""
    v = g.pick()
    shape = g.shapes[v]
    if len(shape) < 2:
        return
    rest = int(np.prod(shape[1:]))
    factors = [d for d in (1, 2, 3, 4, 6, 8, 12, 16) if rest % d == 0]
    first = g.draw(st.sampled_from(factors))
    new_rest = [first, rest // first] if g.draw(st.booleans()) else [rest]
    if g.draw(st.booleans()):
        target = g.const(np.array([0] + new_rest, np.int64))
    else:
        shape_of = g.emit("Shape", [v], None)
        dim = g.emit("Gather", [shape_of, g.const(np.array([0], np.int64))], None, axis=0)
        target = g.emit("Concat", [dim, g.const(np.array(new_rest, np.int64))], None, axis=0)
    g.emit("Reshape", [v, target], (shape[0], *new_rest))


def _squeeze_unsqueeze(g: RandomGraph) -> None:
    v = g.pick()
    axis = g.draw(st.integers(0, len(g.shapes[v])))
    shape = g.shapes[v]
    grown = shape[:axis] + (1,) + shape[axis:]
    u = g.emit("Unsqueeze", [v, g.const(np.array([axis], np.int64))], grown)
    if g.draw(st.booleans()):
        g.emit("Squeeze", [u, g.const(np.array([axis], np.int64))], shape)


def _concat(g: RandomGraph) -> None:
    v = g.pick()
    shape = g.shapes[v]
    axis = g.draw(st.integers(0, len(shape) - 1)) if shape else 0
    if not shape:
        return
    partners = [n for n, s in g.shapes.items() if s == shape]
    other = g.draw(st.sampled_from(partners))
    g.emit("Concat", [v, other], shape[:axis] + (shape[axis] * 2,) + shape[axis + 1:], axis=axis)


def _matmul(g: RandomGraph) -> None:
    v = g.pick()
    shape = g.shapes[v]
    if not shape:
        return
    width = g.draw(st.sampled_from([3, 5]))
    if len(shape) == 2 and g.draw(st.booleans()):
        out = g.emit("Gemm", [v, g.weights(width, shape[1]), g.weights(width)], (shape[0], width), transB=1, alpha=0.5)
    else:
        out = g.emit("MatMul", [v, g.weights(shape[-1], width)], shape[:-1] + (width,))
    if g.draw(st.booleans()):
        g.emit("Add", [out, g.weights(width)], g.shapes[out])


def _projections(g: RandomGraph) -> None:
    """Two or three MatMuls of one value (attention's Q/K/V projections), widths drawn apart, each
    with or without its bias Add."""
    v = g.pick()
    shape = g.shapes[v]
    if not shape:
        return
    for _ in range(g.draw(st.integers(2, 3))):
        width = g.draw(st.sampled_from([2, 3, 5]))
        out = g.emit("MatMul", [v, g.weights(shape[-1], width)], shape[:-1] + (width,))
        if g.draw(st.booleans()):
            g.emit("Add", [out, g.weights(width)], g.shapes[out])


def _conv_bn(g: RandomGraph) -> None:
    v = g.pick(4)
    if len(g.shapes[v]) != 4:
        return
    n, c, h, w = g.shapes[v]
    out_channels = g.draw(st.sampled_from([2, 4]))
    transposed = g.draw(st.booleans())
    inputs = [v, g.weights(c, out_channels, 2, 2) if transposed else g.weights(out_channels, c, 3, 3)]
    if g.draw(st.booleans()):
        inputs.append(g.weights(out_channels))
    if transposed:
        out = g.emit("ConvTranspose", inputs, (n, out_channels, h + 1, w + 1))
    else:
        out = g.emit("Conv", inputs, (n, out_channels, h, w), pads=[1, 1, 1, 1])
    if g.draw(st.booleans()):
        out = g.emit("Add", [out, g.weights(out_channels, 1, 1)], g.shapes[out])
    _batchnorm(g, out, out_channels)


def _batchnorm(g: RandomGraph, value: str, channels: int) -> None:
    params = [g.weights(channels), g.weights(channels), g.weights(channels),
              g.const(g.rng.uniform(0.5, 2.0, channels).astype(np.float32))]
    g.emit("BatchNormalization", [value, *params], g.shapes[value], epsilon=1e-3)


def _gemm_bn(g: RandomGraph) -> None:
    v = g.pick(2)
    if len(g.shapes[v]) != 2:
        return
    out = g.emit("MatMul", [v, g.weights(g.shapes[v][1], 4)], (g.shapes[v][0], 4))
    _batchnorm(g, out, 4)


def _duplicate_or_noop(g: RandomGraph) -> None:
    if g.nodes and g.draw(st.booleans()):
        copy = onnx.NodeProto()
        copy.CopyFrom(g.draw(st.sampled_from(g.nodes)))
        outputs = [g.name("dup") for _ in copy.output]
        shapes = [g.shapes.get(o) for o in copy.output]
        del copy.output[:]
        copy.output.extend(outputs)
        copy.name = outputs[0]
        g.nodes.append(copy)
        for output, shape in zip(outputs, shapes):
            if shape is not None:
                g.shapes[output] = shape
        return
    v = g.pick()
    op_type = g.draw(st.sampled_from(["Identity", "Dropout", "Expand", "Pad"]))
    if op_type == "Expand":
        g.emit("Expand", [v, g.emit("Shape", [v], None)], g.shapes[v])
    elif op_type == "Pad":
        g.emit("Pad", [v, g.const(np.zeros(2 * len(g.shapes[v]), np.int64))], g.shapes[v])
    else:
        g.emit(op_type, [v], g.shapes[v])


def _layout_sandwich(g: RandomGraph) -> None:
    """Transpose, an elementwise op (maybe with a constant or a second transposed value), Transpose."""
    v = g.pick()
    shape = g.shapes[v]
    perm = list(g.draw(st.permutations(range(len(shape)))))
    moved = tuple(shape[p] for p in perm)
    t = g.emit("Transpose", [v], moved, perm=perm)
    choice = g.draw(st.sampled_from(["unary", "constant", "pair"]))
    if choice == "unary":
        middle = g.emit(g.draw(st.sampled_from(UNARY)), [t], moved)
    elif choice == "constant":
        rank = g.draw(st.integers(0, len(moved)))
        cshape = tuple(g.draw(st.sampled_from([1, d])) for d in moved[len(moved) - rank:])
        constant = g.const(g.rng.uniform(0.5, 1.5, cshape).astype(np.float32))
        middle = g.emit(g.draw(st.sampled_from(BINARY + ("Div",))), [t, constant], moved)
    else:
        partners = [n for n, s in g.shapes.items() if s == shape]
        other = g.emit("Transpose", [g.draw(st.sampled_from(partners))], moved, perm=perm)
        middle = g.emit(g.draw(st.sampled_from(BINARY)), [t, other], moved)
    back = list(np.argsort(perm)) if g.draw(st.booleans()) else list(g.draw(st.permutations(range(len(shape)))))
    g.emit("Transpose", [middle], tuple(moved[p] for p in back), perm=[int(p) for p in back])


def _masked_fill(g: RandomGraph) -> None:
    """Where over a computed mask with a branch filled to a shape (exporters' masked_fill/zeros_like)."""
    v = g.pick()
    mask = g.emit("Greater", [v, g.const(np.float32(0.0))], None)
    if g.draw(st.booleans()):
        mask = g.emit("Not", [mask], None)
    source = g.draw(st.sampled_from([n for n, s in g.shapes.items() if s == g.shapes[v] or s == g.shapes[v][1:]] or [v]))
    shape = g.emit("Shape", [source], None)
    if g.draw(st.booleans()):
        filled = g.emit("ConstantOfShape", [shape], None, value=numpy_helper.from_array(np.array([0.5], np.float32)))
    else:
        filled = g.emit("Expand", [g.const(np.float32(-2.0)), shape], None)
    out_shape = tuple(np.broadcast_shapes(g.shapes[v], g.shapes[source]))
    branches = [v, filled] if g.draw(st.booleans()) else [filled, v]
    g.emit("Where", [mask, *branches], out_shape)


def _reshape_region(g: RandomGraph) -> None:
    """Reshape, a few elementwise ops with scalars (reading the Reshape more than once), Reshape."""
    v = g.pick()
    shape = g.shapes[v]
    flat = (int(np.prod(shape)),)
    inner = g.emit("Reshape", [v, g.const(np.array(flat, np.int64))], flat)
    current = inner
    for _ in range(g.draw(st.integers(1, 3))):
        if g.draw(st.booleans()):
            current = g.emit(g.draw(st.sampled_from(UNARY)), [current], flat)
        else:
            other = g.draw(st.sampled_from([inner, g.const(np.float32(g.rng.uniform(0.5, 1.5)))]))
            current = g.emit(g.draw(st.sampled_from(BINARY)), [current, other], flat)
    target = shape if g.draw(st.booleans()) else flat
    g.emit("Reshape", [current, g.const(np.array([-1, *target[1:]], np.int64))], tuple(target))


def _flatten(g: RandomGraph) -> None:
    v = g.pick()
    shape = g.shapes[v]
    if len(shape) >= 2:
        g.emit("Flatten", [v], (shape[0], int(np.prod(shape[1:]))), axis=1)


STEPS = [_layout_sandwich, _flatten, _masked_fill, _reshape_region, _unary, _binary, _transpose, _reshape, _squeeze_unsqueeze, _concat, _matmul, _projections, _conv_bn, _gemm_bn, _duplicate_or_noop]


@st.composite
def random_models(draw) -> onnx.ModelProto:
    g = RandomGraph(draw)
    for _ in range(draw(st.integers(2, 9))):
        draw(st.sampled_from(STEPS))(g)
    produced = [n for node in g.nodes for n in node.output if n in g.shapes]
    outputs = produced[-1:] + draw(st.lists(st.sampled_from(produced or ["x"]), max_size=2, unique=True))
    outputs = list(dict.fromkeys(outputs)) or ["x"]
    if outputs == ["x"]:
        outputs = [g.emit("Relu", ["x"], g.shapes["x"])]
    infos = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    graph = helper.make_graph(g.nodes, "random", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 4, 4])],
                              infos, g.initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _heavy_ops(graph) -> int:
    """Nodes that do the real work; no pass may add one (fusing a value with other users would)."""
    return sum(n.op_type in ("MatMul", "Gemm", "Conv", "ConvTranspose") for n in graph.nodes)


PASSES = ["remove_noops", "remove_algebraic_noops", "fold_shape_values", "fold_reshape_targets", "simplify_layout_chains",
          "push_transposes", "fold_batchnorm", "fuse_bias_epilogues", "cse", "merge_sibling_matmuls", "fold_constants", "dce", None]


@pytest.mark.parametrize("pass_name", PASSES, ids=[p or "O2" for p in PASSES])
@settings(max_examples=int(os.environ.get("KILN_PROPERTY_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(model=random_models())
def test_pass_keeps_outputs_of_random_graphs(pass_name: str | None, model: onnx.ModelProto) -> None:
    feeds = {"x": np.random.default_rng(0).standard_normal((BATCH, 3, 4, 4)).astype(np.float32)}
    expected = run_onnxruntime(model, feeds)
    before = compiler.load(model)
    heavy_before = _heavy_ops(before)
    pipeline = f"{pass_name},dce" if pass_name else None  # dead leftovers are dce's to remove, not each pass's
    graph, _, _ = compiler.run_pipeline(before, passes=pipeline, verify_each_pass=True)
    assert nx.is_directed_acyclic_graph(graph.to_networkx())
    assert _heavy_ops(graph) <= heavy_before, "a rewrite duplicated a MatMul/Gemm/Conv"
    assert len(graph.nodes) <= len(model.graph.node), "a rewrite added nodes"
    optimized = export_model(graph)
    onnx.checker.check_model(optimized, full_check=True)  # the declared shapes agree with strict inference
    verdict = compare_outputs(expected, run_onnxruntime(optimized, feeds), rtol=1e-4, atol=1e-4)
    assert verdict.ok, f"{pass_name or '-O2'} changed the outputs: {verdict.message}"
    assert [o.name for o in optimized.graph.output] == [o.name for o in model.graph.output]
