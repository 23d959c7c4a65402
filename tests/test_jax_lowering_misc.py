"""The ops-misc lowering rules (control flow, sequences, quantization, Resize, data-dependent shapes)
against onnxruntime on small hand-built models, compiled through compiler.compile(backend="cpu")."""

from __future__ import annotations

import jax
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import compiler
from compiler.errors import UnsupportedError
from compiler.reference import run_onnxruntime

RNG = np.random.default_rng(11)
FLOAT = TensorProto.FLOAT


def _model(nodes, inputs: list, outputs: list, initializers: dict | None = None, opset: int = 21) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.asarray(a), n) for n, a in (initializers or {}).items()]
    graph = helper.make_graph(nodes, "misc_case", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def _tensor(name: str, elem_type: int = FLOAT, shape=None):
    return helper.make_tensor_value_info(name, elem_type, shape)


def _check(model: onnx.ModelProto, feeds: dict, rtol: float = 1e-5, atol: float = 1e-6, compiled=None) -> list:
    compiled = compiled or compiler.compile(model, backend="cpu", opt_level=0)
    actual = compiled(**feeds)
    expected = run_onnxruntime(model, feeds)
    assert len(actual) == len(expected)
    for index, (got, want) in enumerate(zip(actual, expected)):
        assert np.asarray(got).shape == want.shape, f"output {index}"
        assert np.asarray(got).dtype == want.dtype, f"output {index}"
        np.testing.assert_allclose(np.asarray(got, np.float64), want.astype(np.float64), rtol=rtol, atol=atol)
    return actual


def _branch(name: str, op: str, operand: str) -> onnx.GraphProto:
    node = helper.make_node(op, ["x", operand], [f"{name}_out"])
    return helper.make_graph([node], name, [], [_tensor(f"{name}_out", FLOAT, [2, 3])])


# --- If ---------------------------------------------------------------------------------------

def _if_model(condition_nodes: list, condition_inputs: list, initializers: dict) -> onnx.ModelProto:
    node = helper.make_node("If", ["cond"], ["y"], name="choose", then_branch=_branch("then", "Add", "ten"),
                            else_branch=_branch("else", "Mul", "ten"))
    return _model(condition_nodes + [node], [_tensor("x", FLOAT, [2, 3])] + condition_inputs, [_tensor("y", FLOAT, [2, 3])],
                  {"ten": np.full((2, 3), 10.0, np.float32), **initializers})


@pytest.mark.parametrize("flag", [True, False])
def test_if_static_condition_picks_branch_at_trace_time(flag):
    model = _if_model([], [], {"cond": np.array(flag)})
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    compiled = compiler.compile(model, backend="cpu", opt_level=0)
    _check(model, {"x": x}, compiled=compiled)
    jaxpr = str(jax.make_jaxpr(compiled.function)(compiled.params, x))
    assert "cond[" not in jaxpr and ("add" in jaxpr) == flag and ("mul" in jaxpr) != flag


def test_if_run_time_condition_becomes_lax_cond():
    condition = [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
                 helper.make_node("Greater", ["total", "zero"], ["cond"])]
    model = _if_model(condition, [], {"zero": np.array(0.0, np.float32)})
    compiled = compiler.compile(model, backend="cpu", opt_level=0)
    for sign in (1.0, -1.0):
        x = (np.abs(RNG.standard_normal((2, 3))) * sign).astype(np.float32)
        _check(model, {"x": x}, compiled=compiled)
    assert "cond[" in str(jax.make_jaxpr(compiled.function)(compiled.params, x))


# --- Loop and Scan ----------------------------------------------------------------------------

def _loop_body(grow: bool) -> onnx.GraphProto:
    """y_out = y_in + x[i] (or Concat(y_in, y_in) when `grow`); the scan output is y_out."""
    nodes = [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
             helper.make_node("Unsqueeze", ["i", "axis0"], ["start"]),
             helper.make_node("Add", ["start", "one"], ["end"]),
             helper.make_node("Slice", ["x", "start", "end"], ["row"]),
             helper.make_node("Concat", ["y_in", "y_in"], ["y_out"], axis=0) if grow else
             helper.make_node("Add", ["y_in", "row"], ["y_out"]),
             helper.make_node("Identity", ["y_out"], ["scan_out"])]
    inputs = [_tensor("i", TensorProto.INT64, []), _tensor("cond_in", TensorProto.BOOL, []), _tensor("y_in", FLOAT, None)]
    outputs = [_tensor("cond_out", TensorProto.BOOL, []), _tensor("y_out", FLOAT, None), _tensor("scan_out", FLOAT, None)]
    body = helper.make_graph(nodes, "body", inputs, outputs)
    body.initializer.extend([numpy_helper.from_array(np.array([0], np.int64), "axis0"),
                             numpy_helper.from_array(np.array([1], np.int64), "one")])
    return body


def _loop_model(grow: bool) -> onnx.ModelProto:
    loop = helper.make_node("Loop", ["trips", "", "y0"], ["y", "rows"], name="grow" if grow else "accumulate",
                            body=_loop_body(grow))
    return _model([loop], [_tensor("x", FLOAT, [5, 3]), _tensor("y0", FLOAT, [1, 3])],
                  [_tensor("y", FLOAT, None), _tensor("rows", FLOAT, None)], {"trips": np.array(4, np.int64)})


def test_loop_with_counter_and_scan_outputs_matches_onnxruntime():
    model = _loop_model(grow=False)
    outputs = _check(model, {"x": RNG.standard_normal((5, 3)).astype(np.float32), "y0": np.ones((1, 3), np.float32)})
    assert outputs[1].shape == (4, 1, 3)


def test_loop_with_static_trip_count_lowers_to_lax_scan():
    """y_out = 2 * y_in + i with scan outputs: one lax.scan, no unrolling."""
    nodes = [helper.make_node("Cast", ["i"], ["step"], to=FLOAT), helper.make_node("Add", ["y_in", "y_in"], ["twice"]),
             helper.make_node("Add", ["twice", "step"], ["y_out"]), helper.make_node("Identity", ["y_out"], ["seen"]),
             helper.make_node("Identity", ["c"], ["cond_out"])]
    body = helper.make_graph(nodes, "body", [_tensor("i", TensorProto.INT64, []), _tensor("c", TensorProto.BOOL, []),
                                             _tensor("y_in", FLOAT, [3])],
                             [_tensor("cond_out", TensorProto.BOOL, []), _tensor("y_out", FLOAT, [3]), _tensor("seen", FLOAT, [3])])
    loop = helper.make_node("Loop", ["trips", "", "y0"], ["y", "history"], name="counter", body=body)
    model = _model([loop], [_tensor("y0", FLOAT, [3])], [_tensor("y", FLOAT, [3]), _tensor("history", FLOAT, [6, 3])],
                   {"trips": np.array(6, np.int64)})
    y0 = np.array([0.5, -1.0, 2.0], np.float32)
    compiled = compiler.compile(model, backend="cpu", opt_level=0)
    _check(model, {"y0": y0}, compiled=compiled)
    jaxpr = str(jax.make_jaxpr(compiled.function)(compiled.params, y0))
    assert jaxpr.count("scan[") == 1 and "while[" not in jaxpr


def test_loop_whose_shape_changes_per_iteration_names_the_node():
    compiled = compiler.compile(_loop_model(grow=True), backend="cpu", opt_level=0)
    with pytest.raises(UnsupportedError, match=r"cannot lower Loop node 'grow': the shapes of its loop-carried values "
                                               r"change between iterations"):
        compiled(x=np.zeros((5, 3), np.float32), y0=np.ones((1, 3), np.float32))


def test_while_loop_with_run_time_condition_matches_onnxruntime():
    """Doubles y while its sum stays below a limit: a lax.while_loop (the condition is data)."""
    nodes = [helper.make_node("Add", ["y_in", "y_in"], ["y_out"]),
             helper.make_node("ReduceSum", ["y_out"], ["total"], keepdims=0),
             helper.make_node("Less", ["total", "limit"], ["cond_out"])]
    body = helper.make_graph(nodes, "body", [_tensor("i", TensorProto.INT64, []), _tensor("c", TensorProto.BOOL, []),
                                             _tensor("y_in", FLOAT, [3])],
                             [_tensor("cond_out", TensorProto.BOOL, []), _tensor("y_out", FLOAT, [3])])
    loop = helper.make_node("Loop", ["", "go", "y0"], ["y"], name="double", body=body)
    model = _model([loop], [_tensor("y0", FLOAT, [3])], [_tensor("y", FLOAT, [3])],
                   {"go": np.array(True), "limit": np.array(100.0, np.float32)})
    _check(model, {"y0": np.array([0.5, 1.0, 1.5], np.float32)})


def test_scan_matches_onnxruntime():
    body = helper.make_graph(
        [helper.make_node("Add", ["sum_in", "row"], ["sum_out"]), helper.make_node("Mul", ["sum_out", "row"], ["product"])],
        "body", [_tensor("sum_in", FLOAT, [2]), _tensor("row", FLOAT, [2])],
        [_tensor("sum_out", FLOAT, [2]), _tensor("product", FLOAT, [2])])
    scan = helper.make_node("Scan", ["init", "xs"], ["total", "products"], num_scan_inputs=1, body=body,
                            scan_input_directions=[1])
    model = _model([scan], [_tensor("init", FLOAT, [2]), _tensor("xs", FLOAT, [4, 2])],
                   [_tensor("total", FLOAT, [2]), _tensor("products", FLOAT, [4, 2])])
    _check(model, {"init": np.zeros(2, np.float32), "xs": RNG.standard_normal((4, 2)).astype(np.float32)})


def test_sequence_round_trip_matches_onnxruntime():
    nodes = [helper.make_node("SplitToSequence", ["x", "sizes"], ["pieces"], axis=1),
             helper.make_node("SequenceAt", ["pieces", "last"], ["tail"]),
             helper.make_node("SequenceErase", ["pieces"], ["head"]),
             helper.make_node("ConcatFromSequence", ["head"], ["joined"], axis=1),
             helper.make_node("SequenceLength", ["head"], ["count"])]
    model = _model(nodes, [_tensor("x", FLOAT, [2, 6])],
                   [_tensor("tail", FLOAT, None), _tensor("joined", FLOAT, None), _tensor("count", TensorProto.INT64, [])],
                   {"sizes": np.array([1, 2, 3], np.int64), "last": np.array(-1, np.int64)})
    _check(model, {"x": RNG.standard_normal((2, 6)).astype(np.float32)})


# --- quantization ------------------------------------------------------------------------------

def test_per_axis_qdq_matches_onnxruntime():
    weight = RNG.standard_normal((4, 3)).astype(np.float32)
    scale = (np.abs(weight).max(axis=0) / 127).astype(np.float32)
    nodes = [helper.make_node("QuantizeLinear", ["w", "scale", "zero"], ["q"], axis=1),
             helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["w_hat"], axis=1),
             helper.make_node("MatMul", ["x", "w_hat"], ["y"])]
    model = _model(nodes, [_tensor("x", FLOAT, [2, 4])], [_tensor("y", FLOAT, [2, 3]), _tensor("q", TensorProto.INT8, [4, 3])],
                   {"w": weight, "scale": scale, "zero": np.zeros(3, np.int8)})
    _check(model, {"x": RNG.standard_normal((2, 4)).astype(np.float32)})


def test_qlinear_matmul_and_matmul_integer_match_onnxruntime():
    a = RNG.integers(0, 255, (3, 4)).astype(np.uint8)
    b = RNG.integers(0, 255, (4, 2)).astype(np.uint8)
    nodes = [helper.make_node("QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"]),
             helper.make_node("MatMulInteger", ["a", "b", "za", "zb"], ["exact"])]
    model = _model(nodes, [_tensor("a", TensorProto.UINT8, [3, 4])],
                   [_tensor("y", TensorProto.UINT8, [3, 2]), _tensor("exact", TensorProto.INT32, [3, 2])],
                   {"b": b, "sa": np.array(0.02, np.float32), "za": np.array(120, np.uint8), "sb": np.array(0.03, np.float32),
                    "zb": np.array(130, np.uint8), "sy": np.array(0.5, np.float32), "zy": np.array(128, np.uint8)})
    _check(model, {"a": a}, atol=1)


# --- Resize ------------------------------------------------------------------------------------

RESIZE_MODES = [
    ({"mode": "linear"}, "scales", [1, 1, 2.0, 1.5]),
    ({"mode": "linear", "antialias": 1}, "scales", [1, 1, 0.5, 0.6]),
    ({"mode": "cubic", "coordinate_transformation_mode": "align_corners"}, "scales", [1, 1, 1.6, 0.5]),
    ({"mode": "cubic", "exclude_outside": 1, "cubic_coeff_a": -0.5}, "sizes", [1, 2, 9, 3]),
    ({"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}, "sizes", [1, 2, 7, 11]),
    ({"mode": "nearest", "nearest_mode": "round_prefer_ceil", "coordinate_transformation_mode": "half_pixel"}, "scales",
     [1, 1, 3.0, 0.5]),
    ({"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}, "sizes", [1, 2, 1, 4]),
]


def test_resize_modes_match_onnxruntime():
    nodes, outputs, initializers = [], [], {}
    for index, (attributes, kind, values) in enumerate(RESIZE_MODES):
        array = np.array(values, np.float32 if kind == "scales" else np.int64)
        initializers[f"{kind}{index}"] = array
        inputs = ["x", "", f"{kind}{index}"] if kind == "scales" else ["x", "", "", f"{kind}{index}"]
        nodes.append(helper.make_node("Resize", inputs, [f"y{index}"], **attributes))
        outputs.append(_tensor(f"y{index}", FLOAT, None))
    model = _model(nodes, [_tensor("x", FLOAT, [1, 2, 5, 6])], outputs, initializers, opset=19)
    _check(model, {"x": RNG.standard_normal((1, 2, 5, 6)).astype(np.float32)}, rtol=1e-4, atol=1e-5)


# --- data-dependent shapes: eager mode -----------------------------------------------------------

def test_data_dependent_shapes_run_eagerly_with_a_warning():
    nodes = [helper.make_node("Greater", ["x", "zero"], ["positive"]), helper.make_node("NonZero", ["positive"], ["where"]),
             helper.make_node("Unique", ["x"], ["values", "first", "inverse", "counts"], sorted=1)]
    model = _model(nodes, [_tensor("x", FLOAT, [2, 5])],
                   [_tensor("where", TensorProto.INT64, None), _tensor("values", FLOAT, None),
                    _tensor("first", TensorProto.INT64, None), _tensor("inverse", TensorProto.INT64, None),
                    _tensor("counts", TensorProto.INT64, None)], {"zero": np.array(0.0, np.float32)})
    with pytest.warns(UserWarning, match="runs op by op without jit: NonZero, Unique"):
        compiled = compiler.compile(model, backend="cpu", opt_level=0)
    x = np.round(RNG.standard_normal((2, 5))).astype(np.float32)
    _check(model, {"x": x}, compiled=compiled)


# --- random ops: checked by shape, dtype and range (values are jax.random's) ----------------------

def test_random_ops_have_requested_shape_dtype_and_range():
    nodes = [helper.make_node("RandomUniform", [], ["uniform"], shape=[300, 4], low=-2.0, high=3.0, seed=1.0),
             helper.make_node("RandomNormalLike", ["p"], ["normal"], mean=5.0, scale=0.1, seed=2.0),
             helper.make_node("Bernoulli", ["p"], ["coin"], seed=3.0),
             helper.make_node("Multinomial", ["logits"], ["draws"], sample_size=7, seed=4.0)]
    model = _model(nodes, [_tensor("p", TensorProto.DOUBLE, [2, 500]), _tensor("logits", FLOAT, [2, 3])],
                   [_tensor("uniform", FLOAT, [300, 4]), _tensor("normal", TensorProto.DOUBLE, [2, 500]),
                    _tensor("coin", TensorProto.DOUBLE, [2, 500]), _tensor("draws", TensorProto.INT32, [2, 7])])
    p = np.stack([np.zeros(500), np.ones(500)])
    logits = np.log(np.array([[1, 0, 0], [0, 0, 1]], np.float32) + 1e-30)
    uniform, normal, coin, draws = compiler.compile(model, backend="cpu", opt_level=0)(p=p, logits=logits)
    assert uniform.shape == (300, 4) and uniform.dtype == np.float32 and -2 <= uniform.min() < uniform.max() <= 3
    assert normal.dtype == np.float64 and abs(normal.mean() - 5.0) < 0.02 and 0.08 < normal.std() < 0.12
    np.testing.assert_array_equal(coin, p)  # probabilities 0 and 1 give certain outcomes
    np.testing.assert_array_equal(draws, [[0] * 7, [2] * 7])
    assert draws.dtype == np.int32


def test_string_ops_run_on_the_host_and_match_onnxruntime():
    nodes = [helper.make_node("StringNormalizer", ["words"], ["normal"], case_change_action="LOWER", stopwords=["the"]),
             helper.make_node("RegexFullMatch", ["words"], ["is_word"], pattern=r"[A-Za-z]+")]
    model = _model(nodes, [_tensor("words", TensorProto.STRING, [4])],
                   [_tensor("normal", TensorProto.STRING, None), _tensor("is_word", TensorProto.BOOL, [4])])
    words = np.array(["The", "Quick", "fox42", "THE"], dtype=object)
    with pytest.warns(UserWarning, match="without jit"):
        compiled = compiler.compile(model, backend="cpu", opt_level=0)
    normal, is_word = compiled(words=words)
    # onnx's reference evaluator: onnxruntime's StringNormalizer needs an installed en_US locale
    expected = ReferenceEvaluator(model).run(None, {"words": words})
    np.testing.assert_array_equal(normal, expected[0])
    np.testing.assert_array_equal(is_word, expected[1])
