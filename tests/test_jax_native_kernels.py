"""The native CPU kernels (backends/jax/native/: packed-panel GEMM, attention, layer norm) against
onnxruntime, the rewrite that feeds a fused QKV projection to the attention kernel, and the
fallbacks to XLA's ops where a kernel cannot run (the convolution kernel: test_jax_native_conv.py)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler
from backends.jax import native
from backends.jax.interpreter import LoweringOptions, build_function
from backends.jax.native_rewrites import NATIVE_DOMAIN, VIEW_ATTENTION, fuse_attention_views
from jax_backend_support import onnxruntime_outputs
from native_support import RNG, needs_kernels
from native_support import check_against_onnxruntime as _check
from native_support import compiled_hlo as _compiled_hlo
from native_support import custom_call_targets as _custom_call_targets
from native_support import floats as _floats
from native_support import onnx_model as _model


def test_kernels_build_wherever_the_machine_allows():
    """The kernel tests skip where the machine cannot build the kernels (no AVX-512, no compiler);
    a compile error in native/ must fail the suite here instead of skipping all of them."""
    native.library()
    assert not native.build_failed(), native.unavailable_reason()


@needs_kernels
@pytest.mark.parametrize("m_shape, k, n", [((1,), 300, 77), ((5, 3), 64, 300), ((2, 129), 600, 130), ((7, 2), 389, 65), ((128,), 768, 2304)])
def test_matmul_weights_run_on_the_panel_kernel(m_shape, k, n):
    feeds = {"X": _floats(*m_shape, k)}
    model = _model([helper.make_node("MatMul", ["X", "W"], ["Y"])], feeds, ["Y"], {"W": _floats(k, n, scale=k ** -0.5)})
    compiled = _check(model, feeds)
    assert _custom_call_targets(compiled, feeds) == ["kiln_panel_matmul"]
    assert compiled.native_products == 1


@needs_kernels
@pytest.mark.parametrize("attrs, c_shape", [({}, (70,)), ({"transB": 1}, (1, 70)), ({"alpha": 0.5, "beta": 2.0}, (70,)),
                                            ({"transA": 1, "transB": 1}, (9, 70)), ({}, None)])
def test_gemm_weights_run_on_the_panel_kernel(attrs, c_shape):
    k = 300
    x = _floats(k, 9) if attrs.get("transA") else _floats(9, k)
    weight = _floats(70, k) if attrs.get("transB") else _floats(k, 70)
    inits = {"W": weight}
    names = ["X", "W"]
    if c_shape is not None:
        inits["C"] = _floats(*c_shape)
        names.append("C")
    model = _model([helper.make_node("Gemm", names, ["Y"], **attrs)], {"X": x}, ["Y"], inits)
    compiled = _check(model, {"X": x})
    targets = _custom_call_targets(compiled, {"X": x})
    fused_bias = c_shape is not None and c_shape[0] != 9 and "alpha" not in attrs
    assert targets == ["kiln_panel_matmul_bias" if fused_bias else "kiln_panel_matmul"]


@needs_kernels
def test_small_weights_stay_xla_dots_and_shared_weights_keep_both_forms():
    feeds = {"X": _floats(16, 16), "Z": _floats(256, 8), "U": _floats(8, 256)}
    nodes = [helper.make_node("MatMul", ["X", "W"], ["H"]),  # too small
             helper.make_node("MatMul", ["V", "Z"], ["G"]),  # V read as a left operand: plain
             helper.make_node("MatMul", ["U", "V"], ["F"])]  # and as a right one: panels
    model = _model(nodes, feeds, ["H", "G", "F"], {"W": _floats(16, 16), "V": _floats(256, 256, scale=0.1)})
    compiled = _check(model, feeds)
    assert compiled.native_products == 1 and _custom_call_targets(compiled, feeds) == ["kiln_panel_matmul"]
    assert sorted(compiled.runner.host_params) == ["V", "V::panels", "W"]


@needs_kernels
def test_tied_embedding_is_gathered_plain_and_multiplied_transposed_from_panels():
    """GPT-2's LM head: the [vocab, hidden] embedding is gathered and multiplied through a Transpose."""
    feeds = {"ids": RNG.integers(0, 300, (2, 7)).astype(np.int64)}
    nodes = [helper.make_node("Gather", ["E", "ids"], ["h"]), helper.make_node("Transpose", ["E"], ["Et"], perm=[1, 0]),
             helper.make_node("MatMul", ["h", "Et"], ["logits"])]
    model = _model(nodes, feeds, ["logits"], {"E": _floats(300, 64)})
    compiled = _check(model, feeds)
    assert _custom_call_targets(compiled, feeds) == ["kiln_panel_matmul"]
    assert compiled.runner.host_params["E::panels"].shape == (10, 64, 32)


def _attention_case(three_d, batch, q_len, kv_len, q_heads, kv_heads, depth, v_depth, mask=None, **attrs):
    if three_d:
        shapes = [(batch, q_len, q_heads * depth), (batch, kv_len, kv_heads * depth), (batch, kv_len, kv_heads * v_depth)]
        attrs.update(q_num_heads=q_heads, kv_num_heads=kv_heads)
    else:
        shapes = [(batch, q_heads, q_len, depth), (batch, kv_heads, kv_len, depth), (batch, kv_heads, kv_len, v_depth)]
    feeds = {name: _floats(*shape) for name, shape in zip("qkv", shapes)}
    names = ["q", "k", "v"]
    if mask is not None:
        feeds["m"] = mask
        names.append("m")
    return _model([helper.make_node("Attention", names, ["y"], **attrs)], feeds, ["y"]), feeds


@needs_kernels
@pytest.mark.parametrize("case", [
    dict(three_d=True, batch=1, q_len=128, kv_len=128, q_heads=12, kv_heads=12, depth=64, v_depth=64),
    dict(three_d=False, batch=2, q_len=197, kv_len=197, q_heads=3, kv_heads=3, depth=64, v_depth=64),
    dict(three_d=True, batch=2, q_len=5, kv_len=7, q_heads=4, kv_heads=2, depth=8, v_depth=16, is_causal=1),
    dict(three_d=False, batch=1, q_len=33, kv_len=40, q_heads=6, kv_heads=3, depth=80, v_depth=24, scale=0.3),
    dict(three_d=True, batch=1, q_len=1, kv_len=300, q_heads=2, kv_heads=2, depth=64, v_depth=64),
])
def test_attention_runs_on_the_kernel(case):
    model, feeds = _attention_case(**case)
    compiled = _check(model, feeds)
    assert _custom_call_targets(compiled, feeds) == ["kiln_attention"]


@needs_kernels
@pytest.mark.parametrize("mask_kind", ["bool", "float", "padding"])
def test_attention_masks_including_fully_masked_rows(mask_kind):
    if mask_kind == "bool":
        mask = RNG.random((2, 1, 17, 50)) > 0.3
        mask[1, 0, 3, :] = False  # a fully masked row gives zeros
    elif mask_kind == "float":
        mask = _floats(2, 2, 17, 50)
    else:
        keys = np.where(RNG.random((1, 1, 1, 50)) > 0.5, 0.0, -np.inf).astype(np.float32)
        mask = np.ascontiguousarray(np.broadcast_to(keys, (1, 1, 17, 50)))
    model, feeds = _attention_case(True, 2, 17, 50, 2, 2, 32, 32, mask=mask)
    _check(model, feeds)


@needs_kernels
@pytest.mark.parametrize("shape", ["causal", "padded_keys"])
def test_keys_masked_for_a_whole_query_block_are_skipped_without_changing_a_bit(shape):
    """Keys that every query of a block masks (-inf, or float32's lowest value as transformers'
    exports write it: a causal mask's future, padded keys) are left out of the block's products; a
    -1e4 mask, which the kernel does not skip but whose keys still get probability exactly 0, gives
    exactly the same outputs, and all match onnxruntime."""
    length = 130  # query blocks of 48 rows: 48, 48, 34
    if shape == "causal":
        allowed = np.tril(np.ones((length, length), bool))[None, None]
    else:
        keys = np.ones((2, 1, 1, length), bool)
        keys[0, ..., 85:] = False  # padded keys across a 32-key panel boundary
        keys[1, ..., 20:] = False
        allowed = np.broadcast_to(keys, (2, 1, length, length))  # onnxruntime wants the query axis
    model, feeds = _attention_case(True, 2, length, length, 2, 2, 64, 64, mask=np.zeros(allowed.shape, np.float32))
    outputs = []
    for fill in (-np.inf, np.finfo(np.float32).min, -1e4):
        feeds["m"] = np.where(allowed, 0.0, fill).astype(np.float32)
        outputs.append(_check(model, feeds)(**feeds)[0])
    assert np.array_equal(outputs[0], outputs[1]) and np.array_equal(outputs[0], outputs[2])


@needs_kernels
def test_a_row_masked_everywhere_by_finite_values_keeps_every_key():
    """float32's lowest value on every key of a row is a uniform softmax, not a zero row: the kernel
    keeps all keys there and agrees with XLA's lowering."""
    keys = np.ones((2, 1, 1, 60), bool)
    keys[1] = False
    mask = np.where(np.broadcast_to(keys, (2, 1, 60, 60)), 0.0, np.finfo(np.float32).min).astype(np.float32)
    model, feeds = _attention_case(True, 2, 60, 60, 2, 2, 32, 32, mask=mask)
    native_out = compiler.compile(model, backend="cpu", opt_level=0)(**feeds)[0]
    xla_out = compiler.compile(model, backend="cpu", opt_level=0, native_kernels=False)(**feeds)[0]
    np.testing.assert_allclose(native_out, xla_out, rtol=1e-4, atol=1e-5)
    assert np.abs(native_out[1]).max() > 0


@needs_kernels
@pytest.mark.parametrize("mask_kind, target", [("bool", "constant"), ("float", "constant"), ("float", "concat")])
def test_attention_reads_a_mask_before_its_expand(mask_kind, target):
    """A [B, 1, 1, S] mask that the graph expands over the queries reaches the kernel unexpanded (it
    broadcasts the bias by zero strides); the Expand's shape comes as a constant or, as torch's
    exporter writes it, as Concat(Shape(mask)[-1:], [1])."""
    length = 50 if target == "concat" else 17
    keys = RNG.random((2, 1, 1, 50)) > 0.3
    keys[1] = False  # every key masked for the second item: its rows come out zero
    mask = keys if mask_kind == "bool" else np.where(keys, 0.0, -1e9).astype(np.float32)
    model, feeds = _attention_case(True, 2, length, 50, 2, 2, 16, 16, mask=mask)
    attention = model.graph.node[0]
    attention.input[3] = "m_expanded"
    if target == "constant":
        model.graph.initializer.append(numpy_helper.from_array(np.array([2, 1, length, 50], np.int64), "target"))
        expands = [helper.make_node("Expand", ["m", "target"], ["m_expanded"])]
    else:
        model.graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "one"))
        expands = [helper.make_node("Shape", ["m"], ["last"], start=-1),
                   helper.make_node("Concat", ["last", "one"], ["target"], axis=0),
                   helper.make_node("Expand", ["m", "target"], ["m_expanded"])]
    model.graph.node.insert(0, expands[-1])
    for node in reversed(expands[:-1]):
        model.graph.node.insert(0, node)
    compiled = _check(model, feeds)
    lowered = compiled.runner.lower([feeds[name] for name in compiled.input_names]).as_text()
    assert _custom_call_targets(compiled, feeds) == ["kiln_attention"]
    assert f"2x1x{length}x50x" not in lowered and "2x1x1x50xf32" in lowered


@needs_kernels
def test_attention_with_its_scores_requested_stays_in_xla():
    model, feeds = _attention_case(False, 1, 4, 6, 2, 2, 8, 8, qk_matmul_output_mode=1)
    model.graph.node[0].output.extend(["", "", "scores"])
    model.graph.output.append(helper.make_tensor_value_info("scores", TensorProto.FLOAT, None))
    compiled = _check(model, feeds)
    assert "kiln_attention" not in _custom_call_targets(compiled, feeds)


def _packed_qkv_model(batch=2, length=9, heads=4, depth=16, widths=None, mask=True):
    hidden = heads * depth
    widths = widths or [hidden] * 3
    feeds = {"x": _floats(batch, length, 128)}
    inits = {"w": _floats(128, sum(widths), scale=0.1), "sizes": np.array(widths, np.int64)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["qkv"]),
             helper.make_node("Split", ["qkv", "sizes"], ["q", "k", "v"], axis=-1)]
    names = ["q", "k", "v"]
    if mask:
        feeds["m"] = RNG.random((batch, 1, length, length)) > 0.2
        names.append("m")
    kv_heads = heads * widths[1] // widths[0]
    nodes.append(helper.make_node("Attention", names, ["y"], q_num_heads=heads, kv_num_heads=kv_heads))
    return _model(nodes, feeds, ["y"], inits), feeds


@needs_kernels
@pytest.mark.parametrize("widths, mask", [(None, True), ([64, 32, 32], False)])
def test_split_qkv_is_read_in_place_by_the_kernel(widths, mask):
    model, feeds = _packed_qkv_model(widths=widths, mask=mask)
    compiled = _check(model, feeds)
    assert _custom_call_targets(compiled, feeds) == ["kiln_panel_matmul", "kiln_attention"]
    assert " slice(" not in _compiled_hlo(compiled, feeds)  # no copy of q, k or v out of the projection


def _vision_attention_model(batch=2, length=11, heads=4, depth=32):
    """torchvision's MultiheadAttention as exported: a [S, B, 3E] projection cut into heads by
    Reshape/Transpose/Unsqueeze/Squeeze/Gather, 4-D Attention, and the output transposed back."""
    hidden = heads * depth
    feeds = {"x": _floats(length, batch, hidden)}
    inits = {"w": _floats(hidden, 3 * hidden, scale=0.1), "wo": _floats(hidden, hidden, scale=0.1),
             "s5": np.array([length, batch, 3, hidden], np.int64), "heads": np.array([length, batch * heads, depth], np.int64),
             "bhsd": np.array([batch, heads, length, depth], np.int64), "out": np.array([length * batch, hidden], np.int64),
             "axis0": np.array([2], np.int64), "i0": np.array(0, np.int64), "i1": np.array(1, np.int64),
             "i2": np.array(2, np.int64)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["qkv"]),
             helper.make_node("Reshape", ["qkv", "s5"], ["r5"]),
             helper.make_node("Transpose", ["r5"], ["t5"], perm=[2, 0, 1, 3]),
             helper.make_node("Unsqueeze", ["t5", "axis0"], ["u5"]),
             helper.make_node("Squeeze", ["u5", "axis0"], ["s4"])]
    for name, index in (("q", "i0"), ("k", "i1"), ("v", "i2")):
        nodes += [helper.make_node("Gather", ["s4", index], [f"{name}g"], axis=0),
                  helper.make_node("Reshape", [f"{name}g", "heads"], [f"{name}h"]),
                  helper.make_node("Transpose", [f"{name}h"], [f"{name}t"], perm=[1, 0, 2]),
                  helper.make_node("Reshape", [f"{name}t", "bhsd"], [name])]
    nodes += [helper.make_node("Attention", ["q", "k", "v"], ["y"]),
              helper.make_node("Transpose", ["y"], ["yt"], perm=[2, 0, 1, 3]),
              helper.make_node("Reshape", ["yt", "out"], ["y2"]),
              helper.make_node("MatMul", ["y2", "wo"], ["z"])]
    return _model(nodes, feeds, ["z"], inits), feeds


@needs_kernels
@pytest.mark.parametrize("batch", [1, 2])
def test_vision_attention_views_and_output_transpose_are_absorbed(batch):
    model, feeds = _vision_attention_model(batch=batch)
    compiled = _check(model, feeds)
    assert _custom_call_targets(compiled, feeds) == ["kiln_panel_matmul", "kiln_attention", "kiln_panel_matmul"]
    hlo = _compiled_hlo(compiled, feeds)
    # batch 1: q, k, v are strided views of the projection and the output lands transposed; with a
    # larger batch the [S, B*H, D] reshape of the chain is no view, so those operands are copied
    copies = hlo.count(" transpose(") + hlo.count(" copy(") + hlo.count(" slice(")
    assert copies == 0 if batch == 1 else copies > 0


@needs_kernels
def test_multi_query_heads_taken_from_the_end_of_the_projection_are_read_as_views():
    """Falcon's multi-query attention as TorchScript exports it: one [B, S, (H + 2) D] projection
    viewed as H + 2 heads, Q the first H, K and V the heads at index -2 and -1 (Gathers of one
    negative index kept as an axis). The kernel must read K and V from the end, not from before
    the start."""
    batch, length, heads, depth = 2, 7, 4, 16
    feeds = {"x": _floats(batch, length, 64)}
    inits = {"w": _floats(64, (heads + 2) * depth, scale=0.1), "split": np.array([batch, length, heads + 2, depth], np.int64),
             "first": np.array(0, np.int64).reshape(1), "last_query": np.array(heads, np.int64).reshape(1),
             "axis2": np.array([2], np.int64), "key_head": np.array([-2], np.int64), "value_head": np.array([-1], np.int64)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["qkv"]), helper.make_node("Reshape", ["qkv", "split"], ["heads"]),
             helper.make_node("Slice", ["heads", "first", "last_query", "axis2"], ["qs"]),
             helper.make_node("Transpose", ["qs"], ["q"], perm=[0, 2, 1, 3])]
    for name, index in (("k", "key_head"), ("v", "value_head")):
        nodes += [helper.make_node("Gather", ["heads", index], [f"{name}g"], axis=2),
                  helper.make_node("Transpose", [f"{name}g"], [name], perm=[0, 2, 1, 3])]
    nodes.append(helper.make_node("Attention", ["q", "k", "v"], ["y"]))
    model = _model(nodes, feeds, ["y"], inits)
    compiled = _check(model, feeds)
    assert "kiln_attention" in _custom_call_targets(compiled, feeds)


def test_attention_view_rewrite():
    model, _ = _vision_attention_model()
    graph = compiler.load(model)
    assert fuse_attention_views(graph) == 1
    assert [(n.domain, n.op_type) for n in graph.nodes] == [("", "MatMul"), (NATIVE_DOMAIN, VIEW_ATTENTION),
                                                            ("", "Reshape"), ("", "MatMul")]
    fused = next(n for n in graph.nodes if n.op_type == VIEW_ATTENTION)
    assert fused.attributes["output_perm"].value == [2, 0, 1, 3]
    assert [v.name for v in fused.inputs[:3]] == ["qkv"] * 3
    plain, _ = _attention_case(False, 1, 4, 6, 2, 2, 8, 8)
    assert fuse_attention_views(compiler.load(plain)) == 0  # nothing to absorb: Attention stays


@needs_kernels
def test_attention_view_that_is_not_a_view_still_runs():
    model, feeds = _vision_attention_model()
    for node in model.graph.node:  # reshape the transposed heads: numpy copies there, so q is materialized
        if node.output[0] == "q":
            node.input[0] = "qt"
        if node.output[0] == "qt":
            node.input[0] = "qh"
    _check(model, feeds)


@needs_kernels
@pytest.mark.parametrize("shape, axis, with_bias", [((3, 7, 768), -1, True), ((2, 5, 37), -1, False), ((2, 3, 4, 5), 2, True)])
def test_layer_norm_runs_on_the_kernel(shape, axis, with_bias):
    feeds = {"X": _floats(*shape, scale=3.0) + 1.5}
    normalized = shape[axis:]
    inits = {"S": _floats(*normalized)}
    names = ["X", "S"]
    if with_bias:
        inits["B"] = _floats(*normalized)
        names.append("B")
    model = _model([helper.make_node("LayerNormalization", names, ["Y"], axis=axis, epsilon=1e-5)], feeds, ["Y"], inits)
    compiled = _check(model, feeds)
    assert _custom_call_targets(compiled, feeds) == ["kiln_layer_norm"]


@needs_kernels
def test_layer_norm_statistics_requested_stay_in_xla():
    feeds = {"X": _floats(4, 32)}
    model = _model([helper.make_node("LayerNormalization", ["X", "S"], ["Y", "Mean", "InvStd"])], feeds,
                   ["Y", "Mean", "InvStd"], {"S": _floats(32)})
    compiled = _check(model, feeds)
    assert _custom_call_targets(compiled, feeds) == []


@needs_kernels
def test_bf16_artifacts_and_turned_off_runs_keep_xla_ops(tmp_path):
    model, feeds = _packed_qkv_model()
    off = compiler.compile(model, backend="cpu", opt_level=0, native_kernels=False)
    assert off.native_products is None and _custom_call_targets(off, feeds) == []
    bf16 = compiler.compile(model, backend="cpu", opt_level=0, precision="bf16")
    assert bf16.native_products is None and _custom_call_targets(bf16, feeds) == []
    on = compiler.compile(model, backend="cpu", opt_level=0)
    assert "native CPU kernels (1 weight products in panels, 0 convolution kernels packed" in on.describe()
    assert on._xla_form is None  # running in process never builds the XLA-only lowering (a second weight copy)
    exported = on.export().mlir_module()
    assert "kiln_" not in exported  # the saved artifact stays portable StableHLO
    function, params = build_function(on.graph, LoweringOptions(platform="cpu", native_kernels=True))
    assert function.panel_weights == ("w",) and params["w"].shape == (6, 128, 32)


def test_turned_off_by_environment(monkeypatch):
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("KILN_NATIVE", "0")
    assert native.library() is None and native.unavailable_reason() == "turned off by KILN_NATIVE=0"
    model, feeds = _packed_qkv_model()
    compiled = compiler.compile(model, backend="cpu", opt_level=0)
    assert "native CPU kernels unavailable: turned off by KILN_NATIVE=0" in compiled.describe()
    for want, got in zip(onnxruntime_outputs(model, feeds), compiled(**feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@needs_kernels
@pytest.mark.parametrize("bias_first, bias_shape", [(False, (300,)), (True, (1, 1, 300)), (False, (5, 300))])
def test_matmul_bias_row_is_added_by_the_kernel(bias_first, bias_shape):
    feeds = {"X": _floats(2, 5, 128)}
    add_inputs = ["b", "P"] if bias_first else ["P", "b"]
    nodes = [helper.make_node("MatMul", ["X", "W"], ["P"]), helper.make_node("Add", add_inputs, ["Y"])]
    model = _model(nodes, feeds, ["Y"], {"W": _floats(128, 300, scale=0.1), "b": _floats(*bias_shape)})
    compiled = _check(model, feeds, opt_level=0)
    row = bias_shape[:-1] == (1,) * (len(bias_shape) - 1)
    assert _custom_call_targets(compiled, feeds) == ["kiln_panel_matmul_bias" if row else "kiln_panel_matmul"]


@needs_kernels
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_after_a_biased_product_runs_in_the_kernel_epilogue(approximate):
    feeds = {"X": _floats(3, 7, 128, scale=2.0)}
    nodes = [helper.make_node("MatMul", ["X", "W"], ["P"]), helper.make_node("Add", ["P", "b"], ["H"]),
             helper.make_node("Gelu", ["H"], ["Y"], approximate=approximate)]
    model = _model(nodes, feeds, ["Y"], {"W": _floats(128, 200, scale=0.2), "b": _floats(200)}, opset=20)
    compiled = _check(model, feeds, rtol=1e-4, atol=1e-5)
    assert _custom_call_targets(compiled, feeds) == ["kiln_panel_matmul_bias"]
    hlo = _compiled_hlo(compiled, feeds)
    assert " erf(" not in hlo and " tanh(" not in hlo


@needs_kernels
@pytest.mark.parametrize("op", ["MatMul", "Gemm"])
def test_gelu_after_an_unbiased_product_runs_in_the_kernel_epilogue(op):
    feeds = {"X": _floats(9, 128, scale=2.0)}
    nodes = [helper.make_node(op, ["X", "W"], ["H"]), helper.make_node("Gelu", ["H"], ["Y"], approximate="tanh")]
    model = _model(nodes, feeds, ["Y"], {"W": _floats(128, 200, scale=0.2)}, opset=20)
    compiled = _check(model, feeds)
    assert _custom_call_targets(compiled, feeds) == ["kiln_panel_matmul"]


@needs_kernels
@pytest.mark.parametrize("second_reader", [False, True])
def test_gelu_after_a_reshaped_product_runs_in_the_kernel_epilogue(second_reader):
    """torchscript's GPT-2 MLP: Gemm on [tokens, K], Reshape to [1, tokens, N], then Gelu; the Gelu
    moves before the reshape into the epilogue unless the reshaped product has another reader."""
    feeds = {"X": _floats(9, 128, scale=2.0)}
    nodes = [helper.make_node("Gemm", ["X", "W", "b"], ["P"]), helper.make_node("Reshape", ["P", "shape"], ["R"]),
             helper.make_node("Gelu", ["R"], ["Y"], approximate="tanh")]
    outputs = ["Y"] + (["R"] if second_reader else [])
    model = _model(nodes, feeds, outputs, {"W": _floats(128, 200, scale=0.2), "b": _floats(200),
                                           "shape": np.array([1, 9, 200], np.int64)}, opset=20)
    compiled = _check(model, feeds)
    assert _custom_call_targets(compiled, feeds) == ["kiln_panel_matmul_bias"]
    assert (" tanh(" in _compiled_hlo(compiled, feeds)) == second_reader


@needs_kernels
@pytest.mark.parametrize("residual_first, bias", [(False, False), (True, True)])
def test_residual_add_after_a_product_runs_in_the_kernel_epilogue(residual_first, bias):
    feeds = {"X": _floats(2, 5, 128), "R": _floats(2, 5, 300)}
    product = [helper.make_node("MatMul", ["X", "W"], ["P"])]
    if bias:
        product.append(helper.make_node("Add", ["P", "b"], ["Pb"]))
    last = "Pb" if bias else "P"
    nodes = [*product, helper.make_node("Add", ["R", last] if residual_first else [last, "R"], ["Y"])]
    model = _model(nodes, feeds, ["Y"], {"W": _floats(128, 300, scale=0.1), "b": _floats(300)})
    compiled = _check(model, feeds)
    assert _custom_call_targets(compiled, feeds) == ["kiln_panel_matmul_residual"]
    assert " add(" not in _compiled_hlo(compiled, feeds)


@needs_kernels
def test_residual_add_after_a_reshaped_product_and_a_broadcast_one():
    """torchscript's layout (Gemm on [tokens, K], Reshape, Add of the residual stream) runs in the
    epilogue; a residual that broadcasts against the product is added by XLA, still exactly."""
    feeds = {"X": _floats(10, 128), "R": _floats(2, 5, 300), "B": _floats(1, 300)}
    nodes = [helper.make_node("Gemm", ["X", "W", "b"], ["P"]), helper.make_node("Reshape", ["P", "shape"], ["Q"]),
             helper.make_node("Add", ["Q", "R"], ["Y"]),
             helper.make_node("MatMul", ["X", "W2"], ["P2"]), helper.make_node("Add", ["P2", "B"], ["Z"])]
    model = _model(nodes, feeds, ["Y", "Z"], {"W": _floats(128, 300, scale=0.1), "b": _floats(300),
                                             "shape": np.array([2, 5, 300], np.int64), "W2": _floats(128, 300, scale=0.1)})
    compiled = _check(model, feeds)
    assert sorted(_custom_call_targets(compiled, feeds)) == ["kiln_panel_matmul", "kiln_panel_matmul_residual"]


@needs_kernels
def test_reshaped_product_that_broadcasts_against_the_residual_keeps_the_add():
    feeds = {"X": _floats(5, 128), "R": _floats(2, 5, 300)}
    nodes = [helper.make_node("MatMul", ["X", "W"], ["P"]), helper.make_node("Reshape", ["P", "shape"], ["Q"]),
             helper.make_node("Add", ["Q", "R"], ["Y"])]
    model = _model(nodes, feeds, ["Y"], {"W": _floats(128, 300, scale=0.1), "shape": np.array([1, 5, 300], np.int64)})
    compiled = _check(model, feeds)
    assert _custom_call_targets(compiled, feeds) == ["kiln_panel_matmul"]


def _symbolic_model(nodes, inputs: dict[str, list], initializers: dict, outputs=("Y",)):
    """A model whose inputs have the given (partly symbolic) dims, as exporters write them."""
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(name, TensorProto.FLOAT, dims) for name, dims in inputs.items()],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        [numpy_helper.from_array(a, name) for name, a in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


@needs_kernels
def test_residual_after_a_reshape_whose_dims_only_tracing_matches():
    """torchscript's GPT-2: Gemm on [tokens, K], Reshape to a shape computed from another tensor,
    Add of a residual whose symbolic dims carry other names. The residual is fused when tracing
    shows equal dims, and added by XLA (broadcasting) when it shows otherwise."""
    nodes = [helper.make_node("Gemm", ["X", "W", "b"], ["P"]), helper.make_node("Shape", ["R"], ["dims"], end=2),
             helper.make_node("Concat", ["dims", "columns"], ["shape"], axis=0),
             helper.make_node("Reshape", ["P", "shape"], ["Q"]), helper.make_node("Add", ["Q", "S"], ["Y"])]
    model = _symbolic_model(nodes, {"X": ["tokens", 128], "R": ["batch", "sequence", 1], "S": ["b", "s", "n"]},
                            {"W": _floats(128, 300, scale=0.1), "b": _floats(300), "columns": np.array([300], np.int64)})
    fused = {"X": _floats(10, 128), "R": _floats(2, 5, 1), "S": _floats(2, 5, 300)}
    compiled = _check(model, fused)
    assert _custom_call_targets(compiled, fused) == ["kiln_panel_matmul_residual"]
    assert " add(" not in _compiled_hlo(compiled, fused)
    broadcast = {**fused, "S": _floats(1, 5, 1)}
    for want, got in zip(onnxruntime_outputs(model, broadcast), compiled(**broadcast)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert _custom_call_targets(compiled, broadcast) == ["kiln_panel_matmul_bias"]


@needs_kernels
@pytest.mark.parametrize("batch, fused", [(1, True), (2, False)])
def test_residual_after_a_transpose_that_moves_only_unit_dims(batch, fused):
    """torchvision's ViT (sequence-first attention): Gemm(transB) on [tokens x batch, K], Reshape
    to [tokens, batch, N], Transpose to [batch, tokens, N], Add of the residual stream. At batch 1
    the transpose is a reshape and the residual is fused; at batch 2 XLA transposes and adds."""
    nodes = [helper.make_node("Gemm", ["X", "W", "b"], ["P"], transB=1),
             helper.make_node("Reshape", ["P", "shape"], ["Q"]),
             helper.make_node("Transpose", ["Q"], ["T"], perm=[1, 0, 2]), helper.make_node("Add", ["T", "R"], ["Y"])]
    model = _symbolic_model(nodes, {"X": ["rows", 128], "R": ["batch", 7, 300]},
                            {"W": _floats(300, 128, scale=0.1), "b": _floats(300),
                             "shape": np.array([7, batch, 300], np.int64)})
    feeds = {"X": _floats(7 * batch, 128), "R": _floats(batch, 7, 300)}
    compiled = _check(model, feeds)
    assert compiled.runner.host_params["W"].shape == (10, 128, 32)  # packed once, as [K, N] panels
    want = ["kiln_panel_matmul_residual"] if fused else ["kiln_panel_matmul_bias"]
    assert _custom_call_targets(compiled, feeds) == want
    assert (" add(" in _compiled_hlo(compiled, feeds)) != fused


@needs_kernels
def test_residual_add_after_a_gelu_epilogue():
    feeds = {"X": _floats(9, 128, scale=2.0), "R": _floats(9, 200)}
    nodes = [helper.make_node("MatMul", ["X", "W"], ["H"]), helper.make_node("Gelu", ["H"], ["G"]),
             helper.make_node("Add", ["G", "R"], ["Y"])]
    model = _model(nodes, feeds, ["Y"], {"W": _floats(128, 200, scale=0.2)}, opset=20)
    compiled = _check(model, feeds)
    assert _custom_call_targets(compiled, feeds) == ["kiln_panel_matmul_residual"]
    hlo = _compiled_hlo(compiled, feeds)
    assert " erf(" not in hlo and " add(" not in hlo
