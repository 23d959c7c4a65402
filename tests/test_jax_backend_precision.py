"""--precision bf16|fp16: contractions run on low-precision operands with float32 accumulation;
fp32 runs them at full precision. Helpers in backends.jax.precision, used by the lowering rules."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import compiler
from compiler.backend_registry import load_artifact
from backends.jax import precision
from jax_backend_support import ensure_basic_rules, mlp_model, onnxruntime_outputs

RNG = np.random.default_rng(0)
A = RNG.standard_normal((2, 3, 4, 32)).astype(np.float32)
B = RNG.standard_normal((32, 5)).astype(np.float32)


def _dots(function, *args) -> list:
    """(operand dtypes, preferred_element_type, precision) of every dot_general in the jaxpr."""
    jaxpr = jax.make_jaxpr(function)(*args)
    found = []

    def walk(inner):
        for equation in inner.eqns:
            if equation.primitive.name in ("dot_general", "conv_general_dilated"):
                found.append(([str(v.aval.dtype) for v in equation.invars], str(equation.params["preferred_element_type"]),
                              equation.params["precision"]))
            for sub in jax.core.subjaxprs(equation) if hasattr(jax.core, "subjaxprs") else []:
                walk(sub)
            for param in equation.params.values():
                if hasattr(param, "jaxpr"):
                    walk(param.jaxpr)

    walk(jaxpr.jaxpr)
    return found


@pytest.mark.parametrize("name, dtype", [("bf16", "bfloat16"), ("fp16", "float16")])
def test_low_precision_matmul_casts_operands_and_accumulates_in_fp32(name, dtype):
    dots = _dots(lambda a, b: precision.matmul(name, a, b), A, B)
    assert dots == [([dtype, dtype], "float32", None)]
    result = precision.matmul(name, A, B)
    assert result.dtype == jnp.float32 and result.shape == (2, 3, 4, 5)
    error = np.abs(np.asarray(result) - A @ B).max()
    assert 1e-5 < error < 0.2  # really computed in low precision, still accurate to its epsilon


def test_fp32_matmul_is_full_precision():
    dots = _dots(lambda a, b: precision.matmul("fp32", a, b), A, B)
    assert dots == [(["float32", "float32"], "float32", (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST))]
    np.testing.assert_allclose(np.asarray(precision.matmul(None, A, B)), A @ B, rtol=1e-5, atol=1e-5)


def test_integer_matmul_is_untouched():
    a = np.arange(6, dtype=np.int32).reshape(2, 3)
    assert _dots(lambda x: precision.matmul("bf16", x, x.T), a) == [(["int32", "int32"], "int32", None)]


def test_conv_einsum_and_dot_general_follow_the_precision():
    x = RNG.standard_normal((2, 3, 9, 9)).astype(np.float32)
    w = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    conv = _dots(lambda x, w: precision.conv("bf16", x, w, (1, 1), [(1, 1), (1, 1)]), x, w)
    assert conv == [(["bfloat16", "bfloat16"], "float32", None)]
    reference = jax.lax.conv_general_dilated(x, w, (1, 1), [(1, 1), (1, 1)], dimension_numbers=("NCHW", "OIHW", "NCHW"),
                                             precision=jax.lax.Precision.HIGHEST)
    np.testing.assert_allclose(np.asarray(precision.conv("fp32", x, w, (1, 1), [(1, 1), (1, 1)])), np.asarray(reference),
                               rtol=1e-5, atol=1e-5)
    einsum = _dots(lambda a, b: precision.einsum("fp16", "bhqd,dk->bhqk", a, b), A, B)
    assert einsum == [(["float16", "float16"], "float32", None)]
    general = _dots(lambda a, b: precision.dot_general("bf16", a, b, (((3,), (0,)), ((), ()))), A, B)
    assert general == [(["bfloat16", "bfloat16"], "float32", None)]


def _attention_reference(q, k, v, mask=None, causal=False, scale=None):
    groups = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, groups, 1), np.repeat(v, groups, 1)
    scores = q @ np.swapaxes(k, -1, -2) * (scale if scale is not None else 1 / np.sqrt(q.shape[-1]))
    if mask is not None:
        scores = np.where(mask, scores, -np.inf) if mask.dtype == bool else scores + mask
    if causal:
        sq, sk = scores.shape[-2:]
        scores = np.where(np.arange(sk)[None, :] <= np.arange(sq)[:, None] + (sk - sq), scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    return (weights / weights.sum(-1, keepdims=True)) @ v


@pytest.mark.parametrize("case", ["plain", "causal", "float_mask", "bool_mask", "scale", "value_depth"])
def test_attention_matches_the_fused_op_contract(case):
    q = RNG.standard_normal((2, 4, 5, 8)).astype(np.float32)
    k = RNG.standard_normal((2, 2, 7, 8)).astype(np.float32)  # grouped-query: 4 heads over 2
    v = RNG.standard_normal((2, 2, 7, 6 if case == "value_depth" else 8)).astype(np.float32)
    mask = None
    if case == "float_mask":
        mask = RNG.standard_normal((5, 7)).astype(np.float32)
    elif case == "bool_mask":
        mask = RNG.random((2, 1, 5, 7)) > 0.3
        mask[..., 0] = True
    kwargs = {"is_causal": case == "causal", "scale": 0.3 if case == "scale" else None}
    got = np.asarray(precision.attention("fp32", q, k, v, mask, **kwargs))
    expected = _attention_reference(q, k, v, mask, kwargs["is_causal"], kwargs["scale"])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    low = np.asarray(precision.attention("bf16", q, k, v, mask, **kwargs))
    assert low.dtype == np.float32 and np.abs(low - expected).max() < 0.05


def test_attention_in_bf16_computes_scores_in_bf16_with_fp32_accumulation():
    q = RNG.standard_normal((1, 2, 4, 8)).astype(np.float32)
    dots = _dots(lambda q: precision.attention("bf16", q, q, q), q)
    assert dots[0] == (["bfloat16", "bfloat16"], "float32", jax.lax.DotAlgorithmPreset.BF16_BF16_F32)


@pytest.mark.parametrize("name, tolerance", [("bf16", 3e-2), ("fp16", 3e-3)])
def test_compiled_model_in_low_precision(name, tolerance):
    ensure_basic_rules()
    model = mlp_model(inputs=64, hidden=64, outputs=8)
    x = RNG.standard_normal((4, 64)).astype(np.float32)
    expected = onnxruntime_outputs(model, {"X": x})[0]
    cm = compiler.compile(model, backend="cpu", opt_level=0, precision=name)
    got = cm(x)[0]
    assert got.dtype == np.float32
    error = np.abs(got - expected).max()
    assert 1e-6 < error < tolerance * np.abs(expected).max()
    text = cm.export().mlir_module()
    low = {"bf16": "bf16", "fp16": "f16"}[name]
    assert f"tensor<64x64x{low}>" in text and f"-> tensor<?x64xf32>" in text  # low operands, fp32 results


def _cast_model() -> onnx.ModelProto:
    """MatMul (plain weight), Gemm (transB weight, bias), an embedding gathered and also multiplied
    through a Transpose (GPT-2's tied LM head), and a product of two weights."""
    rng = np.random.default_rng(1)
    weights = {"W1": (16, 32), "b1": (32,), "W2": (16, 32), "b2": (16,), "E": (50, 16), "P": (16, 4), "Q": (4, 50)}
    initializers = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
                    for name, shape in weights.items()]
    nodes = [
        helper.make_node("MatMul", ["X", "W1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("Gemm", ["h2", "W2", "b2"], ["g"], transB=1),
        helper.make_node("Gather", ["E", "ids"], ["e"]), helper.make_node("Add", ["g", "e"], ["s"]),
        helper.make_node("Transpose", ["E"], ["Et"], perm=[1, 0]), helper.make_node("MatMul", ["s", "Et"], ["logits"]),
        helper.make_node("MatMul", ["P", "Q"], ["PQ"]), helper.make_node("MatMul", ["s", "PQ"], ["mixed"]),
    ]
    graph = helper.make_graph(
        nodes, "casts",
        [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, ["batch", 16]),
         helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 50]),
         helper.make_tensor_value_info("mixed", onnx.TensorProto.FLOAT, ["batch", 50])],
        initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("name, dtype", [("bf16", "bfloat16"), ("fp16", "float16")])
def test_product_weights_are_stored_in_the_compute_type_and_results_stay_bit_identical(name, dtype):
    ensure_basic_rules()
    model = _cast_model()
    feeds = {"X": RNG.standard_normal((3, 16)).astype(np.float32), "ids": np.array([0, 7, 49], np.int64)}
    once = compiler.compile(model, backend="cpu", opt_level=0, precision=name)
    each_call = compiler.compile(model, backend="cpu", opt_level=0, precision=name, cast_weights_once=False)
    stored = {key: str(array.dtype) for key, array in once.runner.host_params.items()}
    # products' weights cast; the bias, the gathered embedding's float32 copy and the weights
    # multiplied by each other (the product's result type follows them) keep float32
    assert stored == {"W1": dtype, "b1": "float32", "W2": dtype, "b2": "float32", "E": "float32", "E::cast": dtype,
                      "P": "float32", "Q": "float32"}
    assert {str(a.dtype) for a in each_call.runner.host_params.values()} == {"float32"}
    got, reference = once(**feeds), each_call(**feeds)
    for a, b in zip(got, reference):
        assert a.dtype == np.float32 and np.array_equal(a, b)
    expected = onnxruntime_outputs(model, feeds)
    assert 1e-6 < np.abs(got[0] - expected[0]).max() < 0.05 * np.abs(expected[0]).max()  # really low precision
    converts = [m.runner.lower([feeds["X"], feeds["ids"]]).as_text().count("stablehlo.convert") for m in (once, each_call)]
    assert converts[1] - converts[0] == 3  # W1, W2 and the embedding no longer cast on every call


def test_fp32_and_conv_kernels_in_their_stored_layout():
    ensure_basic_rules()
    x = RNG.standard_normal((2, 3, 9, 9)).astype(np.float32)
    weight = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "conv",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 3, 9, 9])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 4, 9, 9])],
                              [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    full = compiler.compile(model, backend="cpu", opt_level=0)
    assert str(full.runner.host_params["w"].dtype) == "float32"
    low = compiler.compile(model, backend="cpu", opt_level=0, precision="bf16")
    kernel = low.runner.host_params["w"]
    assert str(kernel.dtype) == "bfloat16" and kernel.shape == (3, 3, 3, 4)  # (spatial, in, out), cast
    reference = compiler.compile(model, backend="cpu", opt_level=0, precision="bf16", cast_weights_once="off")
    assert np.array_equal(low(x)[0], reference(x)[0])


def test_low_precision_artifact_reloads_with_its_cast_weights(tmp_path):
    ensure_basic_rules()
    model = _cast_model()
    feeds = {"X": RNG.standard_normal((2, 16)).astype(np.float32), "ids": np.array([3, 4], np.int64)}
    compiled = compiler.compile(model, backend="cpu", opt_level=0, precision="bf16")
    folder = compiled.save(str(tmp_path / "out"))
    manifest = json.load(open(os.path.join(folder, "report.json")))["artifacts"]["jax"]
    assert manifest["param_count"] == sum(np.prod(i.dims) for i in model.graph.initializer)  # E counted once
    assert "E::cast" in manifest["param_names"]
    reloaded = load_artifact(folder)
    assert str(reloaded.runner.host_params["W1"].dtype) == "bfloat16"
    for a, b in zip(reloaded(**feeds), compiled(**feeds)):
        assert np.array_equal(a, b)
