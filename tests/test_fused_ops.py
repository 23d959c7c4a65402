"""The ai.graphkiln fused ops: each exports as standard ONNX (decomposed below the opset that has
the op, the standard op at or above it) and its numpy kernel matches onnxruntime on both forms."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler
from compiler.custom_ops import GRAPHKILN_DOMAIN, get_custom_op
from compiler.onnx_io import export_model
from compiler.reference import run_onnxruntime

RNG = np.random.default_rng(0)


def _model(op_type, inputs, attributes, opset, initializers=()):
    names = [name for name, _ in inputs]
    node = helper.make_node(op_type, names, ["y"], domain=GRAPHKILN_DOMAIN, **attributes)
    graph_inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                    for name, a in inputs if name not in dict(initializers)]
    inits = [numpy_helper.from_array(a, name) for name, a in initializers]
    graph = helper.make_graph([node], "g", graph_inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(GRAPHKILN_DOMAIN, 1)])


def _float(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


CASES = {
    "gelu_erf": ("Gelu", [("x", _float(2, 3, 8))], {}),
    "gelu_tanh": ("Gelu", [("x", _float(2, 3, 8))], {"approximate": "tanh"}),
    "layer_norm": ("LayerNormalization", [("x", _float(2, 3, 8)), ("s", _float(8)), ("b", _float(8))], {"epsilon": 1e-3}),
    "layer_norm_no_bias": ("LayerNormalization", [("x", _float(2, 3, 8)), ("s", _float(8))], {}),
    "rms_norm": ("RMSNormalization", [("x", _float(2, 3, 8)), ("s", _float(8))], {"epsilon": 1e-6}),
    "attention": ("Attention", [("q", _float(2, 4, 5, 8)), ("k", _float(2, 4, 6, 8)), ("v", _float(2, 4, 6, 3))], {}),
    "attention_float_mask": ("Attention", [("q", _float(2, 4, 5, 8)), ("k", _float(2, 4, 5, 8)), ("v", _float(2, 4, 5, 8)),
                                           ("m", _float(2, 1, 5, 5))], {"scale": 0.3}),
    "attention_bool_mask": ("Attention", [("q", _float(1, 2, 4, 8)), ("k", _float(1, 2, 4, 8)), ("v", _float(1, 2, 4, 8)),
                                          ("m", np.tril(np.ones((4, 4), bool))[None, None].repeat(2, 1))], {}),
    "attention_grouped_causal": ("Attention", [("q", _float(1, 4, 3, 8)), ("k", _float(1, 2, 5, 8)), ("v", _float(1, 2, 5, 8))],
                                 {"is_causal": 1}),
    "attention_causal_self": ("Attention", [("q", _float(1, 4, 5, 8)), ("k", _float(1, 2, 5, 8)), ("v", _float(1, 2, 5, 8))],
                              {"is_causal": 1}),
}
# ONNX Attention-23 aligns a causal mask top-left; the contract aligns it bottom-right, so a causal
# op whose query and key lengths differ is decomposed even at opset 23.
DECOMPOSED_AT_23 = {"attention_grouped_causal"}


@pytest.mark.parametrize("opset", [14, 23])
@pytest.mark.parametrize("case", sorted(CASES))
def test_exports_as_standard_onnx_and_matches_kernel(case: str, opset: int) -> None:
    op_type, inputs, attributes = CASES[case]
    scale_like = [(n, a) for n, a in inputs if n in ("s", "b")]
    model = _model(op_type, inputs, attributes, opset, scale_like)
    exported = export_model(compiler.load(model), decompose_custom=True)
    onnx.checker.check_model(exported, full_check=True)
    op_types = [n.op_type for n in exported.graph.node]
    assert all(n.domain in ("", "ai.onnx") for n in exported.graph.node)
    if opset == 23 and case not in DECOMPOSED_AT_23:
        assert op_types.count(op_type) == 1, op_types  # the standard op itself
    else:
        assert op_type not in op_types and len(op_types) > 1
    feeds = {n: a for n, a in inputs if n not in dict(scale_like)}
    actual = run_onnxruntime(exported, feeds)[0]
    kernel = get_custom_op(GRAPHKILN_DOMAIN, op_type).kernel
    expected = kernel(*[a for _, a in inputs], **attributes)[0]
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


def test_type_rule_gives_attention_output_shape() -> None:
    op_type, inputs, attributes = CASES["attention"]
    graph = compiler.load(_model(op_type, inputs, attributes, 14))
    assert list(graph.outputs[0].shape) == [2, 4, 5, 3]
    assert graph.outputs[0].dtype.numpy == np.float32
