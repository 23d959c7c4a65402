"""onnxruntime's com.microsoft ops in the JAX backend: the fusions its optimizer saves into models
(FusedMatMul, FusedConv, FusedGemm, BiasGelu, FastGelu, Gelu, QuickGelu, the skip/simplified layer
norms), the attention ops of its transformers optimizer and of onnxruntime-genai, and its quantized
ops (QOperator format, dynamic-quantization fusions, MatMulNBits), each compared with onnxruntime
running the same node."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler
from compiler.errors import KilnError
from jax_backend_support import onnxruntime_outputs

MS = "com.microsoft"
F, U8, I8, I32 = TensorProto.FLOAT, TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32
RNG = np.random.default_rng(11)


def _model(node, feeds: dict, outputs: list[tuple[str, int]], initializers: dict | None = None):
    inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape))
              for name, a in feeds.items()]
    graph = helper.make_graph([node] if not isinstance(node, list) else node, "ms", inputs,
                              [helper.make_tensor_value_info(name, dtype, None) for name, dtype in outputs],
                              [numpy_helper.from_array(np.asarray(a), n) for n, a in (initializers or {}).items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)], ir_version=9)


def _check(model, feeds: dict, rtol: float = 1e-5, atol: float = 1e-5, quantum: int = 0) -> None:
    """kiln -O0 and -O2 against onnxruntime; integer outputs within `quantum` steps (0: exact)."""
    expected = onnxruntime_outputs(model, feeds)
    for level in (0, 2):
        got = compiler.compile(model, backend="cpu", opt_level=level)(**feeds)
        for want, have in zip(expected, got):
            assert have.dtype == want.dtype and have.shape == want.shape
            if np.issubdtype(want.dtype, np.integer):
                assert np.max(np.abs(have.astype(np.int64) - want.astype(np.int64))) <= quantum
            else:
                np.testing.assert_allclose(have, want, rtol=rtol, atol=atol)


def _floats(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("attrs, a_shape, b_shape", [
    ({"alpha": 0.5}, (2, 3, 4), (4, 5)),
    ({"transA": 1, "transB": 1}, (2, 4, 3), (2, 5, 4)),
    ({"transB": 1, "alpha": 2.0}, (6, 4), (5, 4)),
])
def test_fused_matmul(attrs, a_shape, b_shape):
    feeds = {"a": _floats(*a_shape), "b": _floats(*b_shape)}
    _check(_model(helper.make_node("FusedMatMul", ["a", "b"], ["y"], domain=MS, **attrs), feeds, [("y", F)]), feeds)


def test_fused_matmul_batch_transpose_is_one_clear_error():
    feeds = {"a": _floats(2, 3, 4), "b": _floats(4, 5)}
    model = _model(helper.make_node("FusedMatMul", ["a", "b"], ["y"], domain=MS, transBatchA=1), feeds, [("y", F)])
    with pytest.raises(KilnError, match="transBatchA/transBatchB are not lowered"):
        compiler.compile(model, backend="cpu", opt_level=0)(**feeds)


@pytest.mark.parametrize("op, inputs, attrs", [
    ("Gelu", ["x"], {}), ("BiasGelu", ["x", "bias"], {}), ("FastGelu", ["x"], {}), ("FastGelu", ["x", "bias"], {}),
    ("QuickGelu", ["x"], {"alpha": 1.0}), ("QuickGelu", ["x"], {}),
])
def test_gelu_family(op, inputs, attrs):
    feeds = {"x": _floats(2, 5, 8) * 3}
    model = _model(helper.make_node(op, inputs, ["y"], domain=MS, **attrs), feeds, [("y", F)], {"bias": _floats(8)})
    _check(model, feeds)


def test_skip_layer_normalization_all_outputs():
    feeds = {"x": _floats(2, 4, 8), "skip": _floats(2, 4, 8)}
    node = helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta", "bias"],
                            ["y", "mean", "inv_std", "sum"], domain=MS, epsilon=1e-5)
    model = _model(node, feeds, [("y", F), ("mean", F), ("inv_std", F), ("sum", F)],
                   {"gamma": _floats(8), "beta": _floats(8), "bias": _floats(8)})
    _check(model, feeds)


def test_simplified_layer_normalizations():
    feeds = {"x": _floats(2, 4, 8), "skip": _floats(2, 4, 8)}
    nodes = [helper.make_node("SkipSimplifiedLayerNormalization", ["x", "skip", "gamma"], ["y", "", "", "sum"],
                              domain=MS, epsilon=1e-6),
             helper.make_node("SimplifiedLayerNormalization", ["sum", "gamma"], ["z"], axis=-1, epsilon=1e-6)]
    _check(_model(nodes, feeds, [("y", F), ("sum", F), ("z", F)], {"gamma": _floats(8)}), feeds)


@pytest.mark.parametrize("activation, params, with_z", [("Relu", [], False), ("LeakyRelu", [0.2], True),
                                                        ("Clip", [-0.5, 0.5], False), ("HardSigmoid", [0.3, 0.4], True)])
def test_fused_conv(activation, params, with_z):
    feeds = {"x": _floats(1, 3, 6, 6)}
    inputs = ["x", "w", "b"] + (["z"] if with_z else [])
    extra = {"activation_params": params} if params else {}
    node = helper.make_node("FusedConv", inputs, ["y"], domain=MS, activation=activation, pads=[1, 1, 1, 1],
                            strides=[1, 1], **extra)
    model = _model(node, feeds, [("y", F)], {"w": _floats(4, 3, 3, 3), "b": _floats(4), "z": _floats(1, 4, 6, 6)})
    _check(model, feeds)


def test_fused_gemm():
    feeds = {"a": _floats(3, 5)}
    node = helper.make_node("FusedGemm", ["a", "b", "c"], ["y"], domain=MS, transB=1, alpha=0.5, activation="LeakyRelu",
                            activation_alpha=0.1)
    _check(_model(node, feeds, [("y", F)], {"b": _floats(4, 5), "c": _floats(4)}), feeds)


def _quantized(dtype, *shape):
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max + 1, shape).astype(dtype)


@pytest.mark.parametrize("dtype, code", [(np.uint8, U8), (np.int8, I8)])
@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
def test_qlinear_binary(op, dtype, code):
    feeds = {"a": _quantized(dtype, 2, 3, 4), "b": _quantized(dtype, 3, 4)}
    zero = {"a_zp": np.array(3, dtype), "b_zp": np.array(-2 if dtype == np.int8 else 7, dtype), "c_zp": np.array(5, dtype),
            "a_s": np.float32(0.02), "b_s": np.float32(0.03), "c_s": np.float32(0.05 if op == "QLinearAdd" else 0.2)}
    node = helper.make_node(op, ["a", "a_s", "a_zp", "b", "b_s", "b_zp", "c_s", "c_zp"], ["y"], domain=MS)
    _check(_model(node, feeds, [("y", code)], zero), feeds)


@pytest.mark.parametrize("op, attrs, quantum", [
    ("QLinearSigmoid", {}, 0),
    ("QLinearLeakyRelu", {"alpha": 0.1}, 1),  # onnxruntime reads a 256-entry table it rounds on its own
    ("QLinearSoftmax", {"axis": -1, "opset": 13}, 0),
    # scale ratio 2.5 over 20 values puts exact .5 ties in the requantization: onnxruntime's float
    # arithmetic lands either side of some of them
    ("QLinearGlobalAveragePool", {"channels_last": 0}, 1),
])
def test_qlinear_unary(op, attrs, quantum):
    feeds = {"x": _quantized(np.uint8, 2, 3, 4, 5)}
    params = {"x_s": np.float32(0.05), "x_zp": np.array(128, np.uint8), "y_s": np.float32(1 / 256 if op == "QLinearSoftmax" else 0.02),
              "y_zp": np.array(0 if op == "QLinearSoftmax" else 100, np.uint8)}
    node = helper.make_node(op, ["x", "x_s", "x_zp", "y_s", "y_zp"], ["y"], domain=MS, **attrs)
    _check(_model(node, feeds, [("y", U8)], params), feeds, quantum=quantum)


def test_qlinear_concat():
    feeds = {"a": _quantized(np.int8, 2, 3), "b": _quantized(np.int8, 2, 5)}
    params = {"y_s": np.float32(0.1), "y_zp": np.array(1, np.int8), "a_s": np.float32(0.05), "a_zp": np.array(0, np.int8),
              "b_s": np.float32(0.2), "b_zp": np.array(-3, np.int8)}
    node = helper.make_node("QLinearConcat", ["y_s", "y_zp", "a", "a_s", "a_zp", "b", "b_s", "b_zp"], ["y"], domain=MS, axis=1)
    _check(_model(node, feeds, [("y", I8)], params), feeds)


@pytest.mark.parametrize("quantized_output", [True, False])
def test_qgemm(quantized_output):
    feeds = {"a": _quantized(np.uint8, 3, 6)}
    params = {"a_s": np.float32(0.04), "a_zp": np.array(120, np.uint8), "b": _quantized(np.int8, 4, 6),
              "b_s": np.array([0.01, 0.02, 0.03, 0.04], np.float32), "b_zp": np.zeros(4, np.int8),
              "c": RNG.integers(-500, 500, 4).astype(np.int32), "y_s": np.float32(0.05), "y_zp": np.array(10, np.uint8)}
    inputs = ["a", "a_s", "a_zp", "b", "b_s", "b_zp", "c"] + (["y_s", "y_zp"] if quantized_output else [])
    node = helper.make_node("QGemm", inputs, ["y"], domain=MS, transB=1, alpha=1.0)
    _check(_model(node, feeds, [("y", U8 if quantized_output else F)], params), feeds)


@pytest.mark.parametrize("bits, k, block_size, zero_points, with_bias", [
    (4, 64, 32, "packed", True), (4, 40, 16, None, False), (8, 48, 16, "packed", False), (4, 64, 32, "float", True),
])
def test_matmul_nbits(bits, k, block_size, zero_points, with_bias):
    """Blockwise low-bit weights (onnxruntime-genai's format), K not always a multiple of the block."""
    n = 6
    blocks = -(-k // block_size)
    codes = RNG.integers(0, 1 << bits, (n, blocks, block_size)).astype(np.uint8)
    per_byte = 8 // bits
    packed = np.zeros((n, blocks, block_size // per_byte), np.uint8)
    for i in range(per_byte):
        packed |= codes[..., i::per_byte] << (i * bits)
    params = {"b": packed, "scales": (RNG.random(n * blocks) * 0.1 + 0.01).astype(np.float32), "bias": _floats(n)}
    inputs = ["a", "b", "scales"]
    if zero_points == "packed":
        zp_codes = RNG.integers(0, 1 << bits, (n, blocks)).astype(np.uint8)
        zp_bytes = -(-blocks // per_byte)
        zp = np.zeros((n, zp_bytes * per_byte), np.uint8)
        zp[:, :blocks] = zp_codes
        params["zp"] = np.bitwise_or.reduce([zp[:, i::per_byte] << (i * bits) for i in range(per_byte)]).astype(np.uint8).reshape(-1)
        inputs.append("zp")
    elif zero_points == "float":
        params["zp"] = (RNG.random(n * blocks) * 8).astype(np.float32)
        inputs.append("zp")
    if with_bias:
        inputs += [""] * (4 - len(inputs)) + ["", "bias"]
    feeds = {"a": _floats(2, 3, k)}
    node = helper.make_node("MatMulNBits", inputs, ["y"], domain=MS, K=k, N=n, bits=bits, block_size=block_size)
    _check(_model(node, feeds, [("y", F)], params), feeds, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mask_kind, unidirectional", [("none", 0), ("lengths", 0), ("raw", 0), ("raw", 1), ("3d", 0)])
def test_attention_with_packed_weights(mask_kind, unidirectional):
    """onnxruntime's transformers optimizer writes BERT's self-attention as one Attention node."""
    batch, length, hidden, heads = 2, 5, 16, 4
    feeds = {"x": _floats(batch, length, hidden)}
    inputs = ["x", "w", "b"]
    params = {"w": _floats(hidden, 3 * hidden) / 4, "b": _floats(3 * hidden)}
    if mask_kind == "lengths":
        feeds["mask"] = np.array([5, 3], np.int32)
    elif mask_kind == "raw":
        feeds["mask"] = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.int32)
    elif mask_kind == "3d":
        feeds["mask"] = (RNG.random((batch, length, length)) > 0.3).astype(np.int32)
        feeds["mask"][..., 0] = 1
    if mask_kind != "none":
        inputs.append("mask")
    node = helper.make_node("Attention", inputs, ["y"], domain=MS, num_heads=heads, unidirectional=unidirectional)
    _check(_model(node, feeds, [("y", F)], params), feeds, rtol=1e-4, atol=1e-5)


def test_embed_layer_normalization():
    batch, length, hidden = 2, 6, 8
    feeds = {"ids": RNG.integers(0, 30, (batch, length)).astype(np.int32),
             "segments": RNG.integers(0, 2, (batch, length)).astype(np.int32),
             "mask": np.array([[1] * 6, [1] * 4 + [0] * 2], np.int32)}
    params = {"word": _floats(30, hidden), "position": _floats(16, hidden), "segment": _floats(2, hidden),
              "gamma": _floats(hidden), "beta": _floats(hidden)}
    node = helper.make_node("EmbedLayerNormalization", ["ids", "segments", "word", "position", "segment", "gamma", "beta",
                                                        "mask"], ["y", "mask_index", "sum"], domain=MS, epsilon=1e-5)
    _check(_model(node, feeds, [("y", F), ("mask_index", I32), ("sum", F)], params), feeds)


@pytest.mark.parametrize("per_column, with_bias", [(False, True), (True, False)])
def test_matmul_integer_to_float_and_dynamic_quantize_matmul(per_column, with_bias):
    """What onnxruntime saves for a dynamically quantized MatMul (quantize_dynamic, then its optimizer)."""
    n = 5
    params = {"b": _quantized(np.int8, 8, n), "b_s": (RNG.random(n if per_column else ()) * 0.05 + 0.01).astype(np.float32),
              "b_zp": np.zeros(n if per_column else (), np.int8), "a_s": np.float32(0.03), "a_zp": np.array(130, np.uint8),
              "bias": _floats(n)}
    tail = ["bias"] if with_bias else []
    feeds = {"codes": _quantized(np.uint8, 2, 3, 8), "x": _floats(2, 3, 8)}
    nodes = [helper.make_node("MatMulIntegerToFloat", ["codes", "b", "a_s", "b_s", "a_zp", "b_zp"] + tail, ["y"], domain=MS),
             helper.make_node("DynamicQuantizeMatMul", ["x", "b", "b_s", "b_zp"] + tail, ["z"], domain=MS)]
    _check(_model(nodes, feeds, [("y", F), ("z", F)], params), feeds, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout, interleaved, offset_positions, num_heads", [
    ("bsd", 0, False, 2), ("bsd", 1, True, 2), ("bnsh", 0, False, 0), ("bsd", 0, True, 0),
])
def test_rotary_embedding(layout, interleaved, offset_positions, num_heads):
    batch, length, heads, head_size, max_positions = 2, 5, 2, 8, 16
    shape = (batch, length, heads * head_size) if layout == "bsd" else (batch, heads, length, head_size)
    angles = np.arange(max_positions)[:, None] * (1.0 / 10000 ** (np.arange(head_size // 2) / (head_size // 2)))[None, :]
    params = {"cos": np.cos(angles).astype(np.float32), "sin": np.sin(angles).astype(np.float32)}
    feeds = {"x": _floats(*shape),
             "positions": np.array([3], np.int64) if offset_positions else RNG.integers(0, max_positions, (batch, length))}
    attrs = {"interleaved": interleaved, **({"num_heads": num_heads} if num_heads else {})}
    node = helper.make_node("RotaryEmbedding", ["x", "positions", "cos", "sin"], ["y"], domain=MS, **attrs)
    _check(_model(node, feeds, [("y", F)], params), feeds)


@pytest.mark.parametrize("case", ["prompt", "padded_prompt", "decode", "padded_decode", "rotary_prompt", "rotary_decode",
                                  "packed", "window", "preallocated_decode"])
def test_group_query_attention(case):
    """onnxruntime-genai's decoder attention: KV cache, per-sequence lengths, optional rotary; a
    preallocated cache (8 slots, sequences at 5 and 3 tokens) keeps its length."""
    batch, heads, kv_heads = 2, 4, 2
    head_size = 16 if case.startswith("rotary") else 8  # onnxruntime rotates heads of 16k features only
    decode = case.endswith("decode")
    length, past = (1, 4) if decode else (5, 0)
    lengths = np.array([past + length - 1, past + length - 1 if not case.startswith("padded") else 2], np.int32)
    if case == "preallocated_decode":
        past, lengths = 8, np.array([4, 2], np.int32)
    feeds = {"q": _floats(batch, length, heads * head_size), "k": _floats(batch, length, kv_heads * head_size),
             "v": _floats(batch, length, kv_heads * head_size), "seqlens": lengths,
             "total": np.array(int(lengths.max()) + 1, np.int32)}
    inputs = ["q", "k", "v", "past_k" if past else "", "past_v" if past else "", "seqlens", "total"]
    if past:
        feeds["past_k"], feeds["past_v"] = _floats(batch, kv_heads, past, head_size), _floats(batch, kv_heads, past, head_size)
    if case == "packed":
        feeds["q"] = np.concatenate([feeds.pop("q"), feeds.pop("k"), feeds.pop("v")], axis=-1)
        inputs[1:3] = ["", ""]
    attrs = {"num_heads": heads, "kv_num_heads": kv_heads}
    params = {}
    if case.startswith("rotary"):
        angles = np.arange(16)[:, None] * (1.0 / 10000 ** (np.arange(head_size // 2) / (head_size // 2)))[None, :]
        params = {"cos": np.cos(angles).astype(np.float32), "sin": np.sin(angles).astype(np.float32)}
        inputs += ["cos", "sin"]
        attrs["do_rotary"] = 1
    if case == "window":
        attrs["local_window_size"] = 3
    node = helper.make_node("GroupQueryAttention", inputs, ["y", "present_k", "present_v"], domain=MS, **attrs)
    model = _model(node, feeds, [("y", F), ("present_k", F), ("present_v", F)], params)
    if case == "preallocated_decode":  # the model says present has past's shape
        for output in model.graph.output[1:]:
            output.CopyFrom(helper.make_tensor_value_info(output.name, F, [batch, kv_heads, past, head_size]))
    _check(model, feeds, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", ["self", "cross_bias", "lengths_mask", "raw_mask", "attention_bias", "causal_past"])
def test_multi_head_attention(case):
    batch, length, hidden, heads = 2, 4, 16, 2
    key_length = 6 if case.startswith("cross") else length
    feeds = {"q": _floats(batch, length, hidden), "k": _floats(batch, key_length, hidden), "v": _floats(batch, key_length, hidden)}
    inputs = ["q", "k", "v", "", "", "", "", ""]
    outputs = [("y", F)]
    params = {"bias": _floats(3 * hidden), "attn_bias": _floats(1, heads, length, key_length)}
    attrs = {"num_heads": heads}
    if case == "cross_bias":
        inputs[3] = "bias"
    if case == "lengths_mask":
        feeds["mask"] = np.array([4, 2], np.int32)
        inputs[4] = "mask"
    if case == "raw_mask":
        feeds["mask"] = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], np.int32)
        inputs[4] = "mask"
    if case == "attention_bias":
        inputs[5] = "attn_bias"
    if case == "causal_past":
        feeds["past_k"], feeds["past_v"] = _floats(batch, heads, 3, hidden // heads), _floats(batch, heads, 3, hidden // heads)
        inputs[6:8] = ["past_k", "past_v"]
        attrs["unidirectional"] = 1
        outputs += [("present_k", F), ("present_v", F)]
    while inputs and inputs[-1] == "":
        inputs.pop()
    node = helper.make_node("MultiHeadAttention", inputs, [name for name, _ in outputs], domain=MS, **attrs)
    _check(_model(node, feeds, outputs, params), feeds, rtol=1e-4, atol=1e-5)
