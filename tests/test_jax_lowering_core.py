"""ops-core lowering rules (elementwise, unary math, casts, reductions, contractions, shape and
layout ops) against onnxruntime on tiny models, and a symbolic-batch shape chain that jax.export
lowers with no run-time shape computation left."""

from __future__ import annotations

import jax
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler
from compiler.reference import run_onnxruntime

RNG = np.random.default_rng(0)
F = TensorProto.FLOAT
I64 = TensorProto.INT64


def _model(nodes, inputs, outputs, initializers=(), opset=18):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def _tensor(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def _single(op, feeds, attrs=None, consts=(), out_elem=F, outputs=1, opset=18):
    """A one-node model: graph inputs from `feeds`, initializers from `consts` (name, array)."""
    inputs = [_tensor(n, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape)) for n, a in feeds.items()]
    names = list(feeds) + [n for n, _ in consts]
    out_names = [f"y{i}" for i in range(outputs)]
    node = helper.make_node(op, names, out_names, **(attrs or {}))
    return _model([node], inputs, [_tensor(n, out_elem, None) for n in out_names],
                  [numpy_helper.from_array(a, n) for n, a in consts], opset)


def _check(model, feeds, rtol=1e-5, atol=1e-6):
    expected = run_onnxruntime(model, feeds)
    actual = compiler.compile(model, backend="cpu", opt_level=0)(**feeds)
    assert len(actual) == len(expected)
    for want, got in zip(expected, actual):
        assert got.dtype == want.dtype, (got.dtype, want.dtype)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def _x(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


BINARY = ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean"]


@pytest.mark.parametrize("op", BINARY)
def test_binary_broadcasting(op):
    a, b = np.abs(_x(2, 3, 4)) + 0.5, _x(3, 1)
    _check(_single(op, {"a": a, "b": b}), {"a": a, "b": b})


@pytest.mark.parametrize("op,fmod", [("Div", 0), ("Mod", 0), ("Mod", 1)])
def test_integer_division_and_mod_signs(op, fmod):
    a = np.array([7, -7, 7, -7, 0, 9], np.int64)
    b = np.array([2, 2, -2, -2, 3, -4], np.int64)
    attrs = {"fmod": fmod} if op == "Mod" else {}
    _check(_single(op, {"a": a, "b": b}, attrs, out_elem=I64), {"a": a, "b": b})


@pytest.mark.parametrize("op", ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"])
def test_comparisons(op):
    a, b = np.array([1, 2, 3, 4], np.float32), np.array([2, 2, 2, 2], np.float32)
    _check(_single(op, {"a": a, "b": b}, out_elem=TensorProto.BOOL), {"a": a, "b": b})


@pytest.mark.parametrize("op", ["Exp", "Tanh", "Sigmoid", "Erf", "Floor", "Ceil", "Round", "Sign", "Neg", "Abs",
                                "Sin", "Cos", "Atan", "Sinh", "Asinh", "Reciprocal"])
def test_unary_math(op):
    x = _x(3, 5)
    _check(_single(op, {"x": x}), {"x": x})


def test_where_clip_and_logic():
    c, a, b = np.array([True, False, True]), _x(3), _x(3)
    _check(_single("Where", {"c": c, "a": a, "b": b}), {"c": c, "a": a, "b": b})
    x = _x(4, 4)
    _check(_single("Clip", {"x": x}, consts=[("lo", np.float32(-0.5)), ("hi", np.float32(0.5))]), {"x": x})
    p, q = np.array([True, False, True, False]), np.array([True, True, False, False])
    for op in ("And", "Or", "Xor"):
        _check(_single(op, {"p": p, "q": q}, out_elem=TensorProto.BOOL), {"p": p, "q": q})


@pytest.mark.parametrize("to", [TensorProto.INT32, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BOOL, TensorProto.INT64])
def test_cast(to):
    x = (_x(3, 4) * 10).astype(np.float32)
    model = _single("Cast", {"x": x}, {"to": to}, out_elem=to)
    _check(model, {"x": x}, rtol=1e-3)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2",
                                "ReduceLogSumExp", "ReduceSumSquare"])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reductions_axes_input(op, keepdims):
    x = _x(2, 3, 4)
    model = _single(op, {"x": x}, {"keepdims": keepdims}, consts=[("axes", np.array([-1, 0], np.int64))])
    _check(model, {"x": x})


def test_argmax_select_last_and_cumsum():
    x = np.array([[1, 3, 3, 0], [2, 2, 1, 2]], np.float32)
    _check(_single("ArgMax", {"x": x}, {"axis": 1, "select_last_index": 1}, out_elem=I64), {"x": x})
    _check(_single("ArgMin", {"x": x}, {"axis": 0, "keepdims": 0}, out_elem=I64), {"x": x})
    y = _x(3, 4)
    _check(_single("CumSum", {"y": y}, {"exclusive": 1, "reverse": 1}, consts=[("axis", np.array(1, np.int64))]), {"y": y})


def test_gemm_matmul_einsum():
    a, b, c = _x(3, 4), _x(5, 4), _x(5)
    _check(_single("Gemm", {"a": a, "b": b, "c": c}, {"transB": 1, "alpha": 0.5, "beta": 2.0}), {"a": a, "b": b, "c": c})
    p, q = _x(2, 3, 4), _x(4, 6)
    _check(_single("MatMul", {"p": p, "q": q}), {"p": p, "q": q})
    _check(_single("Einsum", {"p": p, "q": q}, {"equation": "bij,jk->bki"}), {"p": p, "q": q})


SHAPE_CASES = [
    ("Reshape", {}, [("shape", np.array([0, -1, 2], np.int64))]),
    ("Transpose", {"perm": [2, 0, 1]}, []),
    ("Flatten", {"axis": 2}, []),
    ("Unsqueeze", {}, [("axes", np.array([0, -1], np.int64))]),
    ("Slice", {}, [("s", np.array([3, 0], np.int64)), ("e", np.array([0, 9], np.int64)),
                   ("a", np.array([2, 1], np.int64)), ("st", np.array([-1, 2], np.int64))]),
    ("Expand", {}, [("shape", np.array([2, 1, 1, 3, 4], np.int64))]),
    ("Tile", {}, [("repeats", np.array([1, 2, 2], np.int64))]),
    ("Pad", {"mode": "reflect"}, [("pads", np.array([0, 1, 1, 0, 1, -1], np.int64))]),
    ("Trilu", {"upper": 0}, [("k", np.array(1, np.int64))]),
    ("CenterCropPad", {}, [("shape", np.array([3, 2, 6], np.int64))]),
]


@pytest.mark.parametrize("op,attrs,consts", SHAPE_CASES, ids=[c[0] for c in SHAPE_CASES])
def test_shape_and_layout_ops(op, attrs, consts):
    x = _x(2, 3, 4)
    _check(_single(op, {"x": x}, attrs, consts=consts), {"x": x})


def test_split_concat_gather_squeeze():
    x = _x(2, 7, 1)
    _check(_single("Split", {"x": x}, {"axis": 1, "num_outputs": 3}, outputs=3), {"x": x})
    _check(_single("Squeeze", {"x": x}, consts=[("axes", np.array([2], np.int64))]), {"x": x})
    indices = np.array([[0, -1], [3, 2]], np.int64)
    _check(_single("Gather", {"x": x, "i": indices}, {"axis": 1}), {"x": x, "i": indices})
    a, b = _x(2, 3), _x(2, 1)
    _check(_single("Concat", {"a": a, "b": b}, {"axis": -1}), {"a": a, "b": b})


def test_shape_given_as_graph_input_is_specialised_per_call():
    """A Reshape target fed as a graph input is baked into the trace; a new value retraces."""
    x = _x(2, 6)
    model = _single("Reshape", {"x": x, "shape": np.array([3, 4], np.int64)})
    compiled = compiler.compile(model, backend="cpu", opt_level=0)
    for target in ([3, 4], [4, -1], [2, 6]):
        shape = np.array(target, np.int64)
        (result,) = compiled(x, shape)
        np.testing.assert_array_equal(result, x.reshape(target))


def _attention_shape_chain_model() -> onnx.ModelProto:
    """X[batch, seq, 64] -> split heads through Shape/Gather/Unsqueeze/Concat/Reshape (the way
    torch.onnx exports view()), transpose, scale, merge heads back."""
    def const(name, value):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value, np.int64)))

    nodes = [
        helper.make_node("Shape", ["X"], ["shape"]),
        const("zero", 0), const("one", 1), const("heads", [4]), const("depth", [16]), const("minus1", [-1]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Gather", ["shape", "one"], ["seq"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "zero_axes"], ["batch1"]),
        helper.make_node("Unsqueeze", ["seq", "zero_axes"], ["seq1"]),
        helper.make_node("Concat", ["batch1", "seq1", "heads", "depth"], ["split_shape"], axis=0),
        helper.make_node("Reshape", ["X", "split_shape"], ["split"]),
        helper.make_node("Transpose", ["split"], ["heads_first"], perm=[0, 2, 1, 3]),
        helper.make_node("Mul", ["heads_first", "scale"], ["scaled"]),
        helper.make_node("Transpose", ["scaled"], ["back"], perm=[0, 2, 1, 3]),
        helper.make_node("Concat", ["batch1", "seq1", "minus1"], ["merge_shape"], axis=0),
        helper.make_node("Reshape", ["back", "merge_shape"], ["merged"]),
        helper.make_node("MatMul", ["merged", "W"], ["Y"]),
    ]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "zero_axes"),
             numpy_helper.from_array(np.float32(0.25), "scale"),
             numpy_helper.from_array(_x(64, 8), "W")]
    return _model(nodes, [_tensor("X", F, ["batch", "seq", 64])], [_tensor("Y", F, ["batch", "seq", 8])], inits, opset=17)


def test_symbolic_batch_shape_chain_exports_without_runtime_shape_ops():
    model = _attention_shape_chain_model()
    compiled = compiler.compile(model, backend="cpu", opt_level=0)
    batch, seq = jax.export.symbolic_shape("batch, seq")
    params = {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype) for k, v in compiled.params.items()}
    spec = jax.ShapeDtypeStruct((batch, seq, 64), np.float32)
    jaxpr = jax.make_jaxpr(compiled.function)(params, spec)
    primitives = {equation.primitive.name for equation in jaxpr.jaxpr.eqns}
    assert not primitives & {"concatenate", "gather", "dynamic_slice", "iota", "convert_element_type"}, primitives
    assert primitives >= {"reshape", "transpose", "dot_general"}
    exported = jax.export.export(jax.jit(compiled.function), platforms=["cpu"])(params, spec)
    text = exported.mlir_module()
    # the only shape computation left is jax's own dim plumbing for the symbolic dynamic_reshape
    # (get_dimension_size of the input); no gather/slice of a shape tensor survives
    assert "gather" not in text and "dynamic_slice" not in text and "stablehlo.slice" not in text
    assert str(exported.in_avals[-1].shape) == "(batch, seq, 64)"
    for shape in ((1, 3, 64), (5, 2, 64)):
        x = _x(*shape)
        (expected,) = run_onnxruntime(model, {"X": x})
        (actual,) = exported.call(compiled.params, x)
        np.testing.assert_allclose(np.asarray(actual), expected, rtol=1e-5, atol=1e-5)
