"""The ops-nn lowering rules (activations, softmax family, conv, pooling, normalisation, losses,
recurrent layers, attention, fused ai.graphkiln ops) against onnxruntime on small hand-built
single-node models, compiled through compiler.compile(..., backend="cpu", opt_level=0)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler
from compiler.reference import run_onnxruntime

RNG = np.random.default_rng(7)


def _randn(*shape: int, dtype=np.float32) -> np.ndarray:
    return RNG.standard_normal(shape).astype(dtype)


def _model(nodes, feeds: dict, outputs: list, opset: int = 22, initializers: dict | None = None,
           extra_opsets: dict | None = None) -> onnx.ModelProto:
    """A graph over `feeds` (graph inputs) and `initializers`, with untyped-shape outputs."""
    inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for n, a in feeds.items()]
    outs = [helper.make_tensor_value_info(n, t, None) for n, t in outputs]
    inits = [numpy_helper.from_array(a, n) for n, a in (initializers or {}).items()]
    graph = helper.make_graph(nodes, "nn_case", inputs, outs, inits)
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in (extra_opsets or {}).items()]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


def _check(model: onnx.ModelProto, feeds: dict, rtol: float = 1e-4, atol: float = 1e-5, expected=None, **compile_options):
    """Compile at -O0 on cpu, run, and compare every output with onnxruntime (or `expected`)."""
    compiled = compiler.compile(model, backend="cpu", opt_level=0, **compile_options)
    actual = compiled(**feeds)
    expected = run_onnxruntime(model, feeds) if expected is None else expected
    assert len(actual) == len(expected)
    for index, (got, want) in enumerate(zip(actual, expected)):
        got = np.asarray(got)
        assert got.shape == want.shape, f"output {index}: shape {got.shape} != {want.shape}"
        assert got.dtype == want.dtype, f"output {index}: dtype {got.dtype} != {want.dtype}"
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol,
                                   err_msg=f"output {index}")
    return actual


# --- activations and the softmax family (one multi-output model per family: one compile) -------

ACTIVATIONS = [
    ("Relu", {}), ("LeakyRelu", {"alpha": 0.2}), ("Elu", {"alpha": 0.7}), ("Selu", {}), ("Celu", {"alpha": 1.5}),
    ("Gelu", {}), ("Gelu", {"approximate": "tanh"}), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}), ("HardSwish", {}),
    ("Mish", {}), ("Softplus", {}), ("Softsign", {}), ("ThresholdedRelu", {"alpha": 0.5}),
    ("Shrink", {"bias": 0.1, "lambd": 0.4}), ("Sigmoid", {}),
]


def test_activations_match_onnxruntime():
    x = _randn(3, 4, 5) * 3
    nodes = [helper.make_node(op, ["X"], [f"y{i}"], **attrs) for i, (op, attrs) in enumerate(ACTIVATIONS)]
    nodes.append(helper.make_node("PRelu", ["X", "slope"], ["prelu"]))
    outputs = [(f"y{i}", TensorProto.FLOAT) for i in range(len(ACTIVATIONS))] + [("prelu", TensorProto.FLOAT)]
    model = _model(nodes, {"X": x}, outputs, opset=22, initializers={"slope": _randn(5)})
    _check(model, {"X": x})


def test_swish_and_swiglu_match_definition():
    x, a, b = _randn(2, 6), _randn(2, 6), _randn(2, 6)
    nodes = [helper.make_node("Swish", ["X"], ["s"], alpha=1.7), helper.make_node("SwiGLU", ["A", "B"], ["g"], alpha=1.2)]
    model = _model(nodes, {"X": x, "A": a, "B": b}, [("s", TensorProto.FLOAT), ("g", TensorProto.FLOAT)], opset=28)
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    _check(model, {"X": x, "A": a, "B": b}, expected=[x * sigmoid(1.7 * x), a * sigmoid(1.2 * a) * b])


@pytest.mark.parametrize("opset", [11, 13])
def test_softmax_family_both_axis_semantics(opset):
    """Opset 11 flattens to 2-D at `axis`; opset 13 normalises along the one axis."""
    x = _randn(2, 3, 4) * 4
    nodes = [helper.make_node(op, ["X"], [f"{op}{axis}"], axis=axis)
             for op in ("Softmax", "LogSoftmax", "Hardmax") for axis in (0, 1, -1)]
    outputs = [(n.output[0], TensorProto.FLOAT) for n in nodes]
    _check(_model(nodes, {"X": x}, outputs, opset=opset), {"X": x})


def test_dropout_is_identity_at_inference_and_masks_in_training():
    x = _randn(4, 8)
    nodes = [helper.make_node("Dropout", ["X", "ratio"], ["y", "mask"])]
    model = _model(nodes, {"X": x}, [("y", TensorProto.FLOAT), ("mask", TensorProto.BOOL)],
                   initializers={"ratio": np.array(0.5, np.float32)})
    _check(model, {"X": x})
    training = _model([helper.make_node("Dropout", ["X", "ratio", "train"], ["y", "mask"], seed=3)], {"X": x},
                      [("y", TensorProto.FLOAT), ("mask", TensorProto.BOOL)],
                      initializers={"ratio": np.array(0.5, np.float32), "train": np.array(True)})
    y, mask = compiler.compile(training, backend="cpu", opt_level=0)(X=x)
    assert 0 < mask.sum() < mask.size
    np.testing.assert_allclose(y, np.where(mask, x * 2, 0), rtol=1e-6)


# --- convolutions -------------------------------------------------------------------------------

CONV_CASES = [
    ({"group": 2, "pads": [1, 0, 2, 1]}, (2, 4, 7, 6), (6, 2, 3, 3)),
    ({"group": 4, "strides": [2, 2], "dilations": [2, 1], "pads": [1, 1, 1, 1]}, (1, 4, 9, 8), (8, 1, 3, 2)),
    ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, (1, 3, 7, 6), (4, 3, 4, 3)),
    ({"auto_pad": "SAME_LOWER", "strides": [2, 1]}, (1, 3, 7, 6), (4, 3, 2, 3)),
    ({"auto_pad": "VALID", "strides": [3]}, (2, 3, 11), (5, 3, 3)),
    ({"pads": [1, 0, 1, 1, 0, 1]}, (1, 2, 4, 5, 3), (3, 2, 2, 3, 2)),
]


@pytest.mark.parametrize("attrs, x_shape, w_shape", CONV_CASES)
def test_conv_matches_onnxruntime(attrs, x_shape, w_shape):
    x, w, b = _randn(*x_shape), _randn(*w_shape), _randn(w_shape[0])
    model = _model([helper.make_node("Conv", ["X", "W", "B"], ["Y"], **attrs)], {"X": x}, [("Y", TensorProto.FLOAT)],
                   initializers={"W": w, "B": b})
    _check(model, {"X": x})


CONV_TRANSPOSE_CASES = [
    ({"strides": [2, 2], "output_padding": [1, 0], "pads": [0, 1, 1, 0]}, (1, 2, 3, 4), (2, 3, 3, 3)),
    ({"group": 2, "strides": [2, 1], "dilations": [1, 2]}, (2, 4, 3, 3), (4, 2, 2, 3)),
    ({"strides": [3, 2], "output_shape": [10, 8]}, (1, 1, 3, 3), (1, 2, 3, 3)),
    ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, (1, 2, 3, 3), (2, 3, 3, 3)),
    ({"strides": [2], "output_padding": [1], "group": 3}, (1, 3, 5), (3, 2, 3)),
]


@pytest.mark.parametrize("attrs, x_shape, w_shape", CONV_TRANSPOSE_CASES)
def test_conv_transpose_matches_onnxruntime(attrs, x_shape, w_shape):
    x, w = _randn(*x_shape), _randn(*w_shape)
    b = _randn(w_shape[1] * attrs.get("group", 1))
    model = _model([helper.make_node("ConvTranspose", ["X", "W", "B"], ["Y"], **attrs)], {"X": x},
                   [("Y", TensorProto.FLOAT)], initializers={"W": w, "B": b})
    _check(model, {"X": x})


def test_conv_bf16_precision_stays_close():
    x, w = _randn(1, 8, 6, 6), _randn(4, 8, 3, 3)
    model = _model([helper.make_node("Conv", ["X", "W"], ["Y"], pads=[1, 1, 1, 1])], {"X": x},
                   [("Y", TensorProto.FLOAT)], initializers={"W": w})
    (exact,) = run_onnxruntime(model, {"X": x})
    (low,) = compiler.compile(model, backend="cpu", opt_level=0, precision="bf16")(X=x)
    error = np.abs(np.asarray(low) - exact).max()
    assert low.dtype == np.float32 and 1e-6 < error < 0.3  # computed in bf16, accumulated in fp32


def test_causal_conv_with_state_matches_reference():
    from onnx.reference import ReferenceEvaluator

    x, w, b, state = _randn(2, 3, 5), _randn(3, 1, 4), _randn(3), _randn(2, 3, 3)
    node = helper.make_node("CausalConvWithState", ["X", "W", "B", "S"], ["Y", "present"], activation="silu")
    model = _model([node], {"X": x, "W": w, "B": b, "S": state}, [("Y", TensorProto.FLOAT), ("present", TensorProto.FLOAT)],
                   opset=27)
    feeds = {"X": x, "W": w, "B": b, "S": state}
    _check(model, feeds, expected=ReferenceEvaluator(model).run(None, feeds))


# --- pooling ------------------------------------------------------------------------------------

POOL_CASES = [
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, (1, 2, 8, 7)),
    ("MaxPool", {"kernel_shape": [2, 2], "dilations": [2, 2], "pads": [1, 1, 1, 1]}, (2, 2, 6, 6)),
    ("MaxPool", {"kernel_shape": [3], "auto_pad": "SAME_UPPER", "strides": [2]}, (1, 3, 9)),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}, (1, 2, 7, 7)),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, (1, 2, 7, 7)),
    ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1, "count_include_pad": 1}, (1, 1, 5, 5)),
    ("AveragePool", {"kernel_shape": [3, 2], "auto_pad": "SAME_LOWER"}, (1, 2, 5, 4)),
    ("LpPool", {"kernel_shape": [2, 2], "p": 3, "strides": [1, 2], "pads": [0, 1, 1, 0]}, (1, 2, 5, 5)),
    ("GlobalAveragePool", {}, (2, 3, 4, 5)),
    ("GlobalMaxPool", {}, (2, 3, 4)),
]


@pytest.mark.parametrize("op, attrs, shape", POOL_CASES)
def test_pooling_matches_onnxruntime(op, attrs, shape):
    x = _randn(*shape)
    model = _model([helper.make_node(op, ["X"], ["Y"], **attrs)], {"X": x}, [("Y", TensorProto.FLOAT)])
    _check(model, {"X": x})


@pytest.mark.parametrize("op, attrs, reduce_windows", [
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, 0),
    ("MaxPool", {"kernel_shape": [3, 3], "dilations": [2, 1], "pads": [2, 1, 2, 1], "ceil_mode": 1, "strides": [2, 2]}, 0),
    ("AveragePool", {"kernel_shape": [5, 3], "strides": [1, 2], "pads": [2, 1, 2, 1]}, 1),  # the count stays one
    ("MaxPool", {"kernel_shape": [17, 1]}, 1),  # too wide for slices
])
def test_cpu_pooling_runs_as_one_axis_reductions_of_slices(op, attrs, reduce_windows):
    """In XLA's lowering for the CPU (what runs where the native pool kernel cannot, and what
    artifacts hold) a pooling window is reduced one spatial axis at a time over strided slices (XLA's
    reduce_window runs several times slower there); windows over 16 taps keep reduce_window."""
    x = _randn(2, 3, 19, 12)
    model = _model([helper.make_node(op, ["X"], ["Y"], **attrs)], {"X": x}, [("Y", TensorProto.FLOAT)])
    _check(model, {"X": x})
    _check(model, {"X": x}, native_kernels=False)
    lowered = compiler.compile(model, backend="cpu", opt_level=0, native_kernels=False).runner.lower([x]).as_text()
    assert lowered.count("stablehlo.reduce_window") == reduce_windows


@pytest.mark.parametrize("storage_order", [0, 1])
def test_maxpool_indices_and_maxunpool(storage_order):
    x = _randn(2, 3, 6, 5)
    nodes = [helper.make_node("MaxPool", ["X"], ["Y", "I"], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 1],
                              storage_order=storage_order)]
    outputs = [("Y", TensorProto.FLOAT), ("I", TensorProto.INT64)]
    if not storage_order:
        nodes.append(helper.make_node("MaxUnpool", ["Y", "I"], ["U"], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 1]))
        outputs.append(("U", TensorProto.FLOAT))
    model = _model(nodes, {"X": x}, outputs, opset=12)
    _check(model, {"X": x})


# --- normalisation ------------------------------------------------------------------------------

def test_normalizations_match_onnxruntime():
    x = _randn(2, 4, 3, 5)
    c = 4
    init = {"scale": _randn(c), "bias": _randn(c), "mean": _randn(c), "var": np.abs(_randn(c)) + 0.5,
            "ln_scale": _randn(3, 5), "ln_bias": _randn(3, 5)}
    nodes = [
        helper.make_node("BatchNormalization", ["X", "scale", "bias", "mean", "var"], ["bn"], epsilon=1e-3),
        helper.make_node("InstanceNormalization", ["X", "scale", "bias"], ["inorm"]),
        helper.make_node("GroupNormalization", ["X", "scale", "bias"], ["gn"], num_groups=2, epsilon=1e-4),
        helper.make_node("LayerNormalization", ["X", "ln_scale", "ln_bias"], ["ln", "ln_mean", "ln_inv"], axis=-2),
        helper.make_node("LRN", ["X"], ["lrn"], size=3, alpha=1e-2, beta=0.6, bias=1.5),
        helper.make_node("LpNormalization", ["X"], ["l1"], axis=1, p=1),
        helper.make_node("LpNormalization", ["X"], ["l2"], axis=-1, p=2),
        helper.make_node("MeanVarianceNormalization", ["X"], ["mvn"], axes=[0, 2, 3]),
    ]
    outputs = [(name, TensorProto.FLOAT) for name in ("bn", "inorm", "gn", "ln", "ln_mean", "ln_inv", "lrn", "l1", "l2", "mvn")]
    model = _model(nodes, {"X": x}, outputs, opset=21, initializers=init)
    _check(model, {"X": x}, rtol=1e-4, atol=1e-5)


def test_batchnorm_training_mode_updates_running_statistics():
    x = _randn(3, 2, 4)
    init = {"scale": _randn(2), "bias": _randn(2), "mean": _randn(2), "var": np.abs(_randn(2)) + 0.5}
    node = helper.make_node("BatchNormalization", ["X", "scale", "bias", "mean", "var"], ["Y", "rm", "rv"],
                            training_mode=1, momentum=0.8)
    model = _model([node], {"X": x}, [("Y", TensorProto.FLOAT), ("rm", TensorProto.FLOAT), ("rv", TensorProto.FLOAT)],
                   opset=15, initializers=init)
    _check(model, {"X": x})


def test_rms_normalization_matches_formula():
    x, scale = _randn(2, 3, 8), _randn(8)
    model = _model([helper.make_node("RMSNormalization", ["X", "S"], ["Y"], epsilon=1e-6)], {"X": x},
                   [("Y", TensorProto.FLOAT)], opset=23, initializers={"S": scale})
    expected = x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + 1e-6) * scale
    _check(model, {"X": x}, expected=[expected.astype(np.float32)])


# --- losses -------------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_losses_with_weights_and_ignore_index(reduction):
    scores, labels, weights = _randn(3, 5, 4), RNG.integers(0, 5, (3, 4)).astype(np.int64), np.abs(_randn(5))
    labels[0, 1] = -1
    nodes = [
        helper.make_node("SoftmaxCrossEntropyLoss", ["S", "L", "W"], ["sce", "log_prob"], reduction=reduction, ignore_index=-1),
        helper.make_node("NegativeLogLikelihoodLoss", ["log_prob", "L"], ["nll"], reduction=reduction, ignore_index=-1),
    ]
    outputs = [("sce", TensorProto.FLOAT), ("log_prob", TensorProto.FLOAT), ("nll", TensorProto.FLOAT)]
    model = _model(nodes, {"S": scores, "L": labels}, outputs, initializers={"W": weights})
    _check(model, {"S": scores, "L": labels})


# --- recurrent layers ---------------------------------------------------------------------------

def _recurrent_inputs(op: str, directions: int, hidden: int, size: int, batch: int, steps: int, layout: int):
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[op]
    x = _randn(batch, steps, size) if layout else _randn(steps, batch, size)
    init = {"W": _randn(directions, gates * hidden, size) * 0.5, "R": _randn(directions, gates * hidden, hidden) * 0.5,
            "B": _randn(directions, 2 * gates * hidden) * 0.5,
            "lens": np.array([steps, max(1, steps - 2), steps - 1][:batch], np.int32)}
    state_shape = (batch, directions, hidden) if layout else (directions, batch, hidden)
    init["h0"] = _randn(*state_shape) * 0.5
    inputs = ["X", "W", "R", "B", "lens", "h0"]
    if op == "LSTM":
        init["c0"] = _randn(*state_shape) * 0.5
        init["P"] = _randn(directions, 3 * hidden) * 0.5
        inputs += ["c0", "P"]
    return x, init, inputs


RECURRENT_CASES = [
    ("RNN", "forward", 0, {}), ("RNN", "bidirectional", 1, {"activations": ["Relu", "Tanh"]}),
    ("GRU", "reverse", 0, {}), ("GRU", "bidirectional", 0, {"linear_before_reset": 1}),
    ("GRU", "forward", 1, {"clip": 0.8}),
    ("LSTM", "forward", 0, {}), ("LSTM", "reverse", 1, {}), ("LSTM", "bidirectional", 0, {"input_forget": 1}),
]


@pytest.mark.parametrize("op, direction, layout, attrs", RECURRENT_CASES)
def test_recurrent_layers_match_onnxruntime(op, direction, layout, attrs):
    directions, hidden = (2 if direction == "bidirectional" else 1), 4
    x, init, inputs = _recurrent_inputs(op, directions, hidden, size=3, batch=3, steps=5, layout=layout)
    outputs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    node = helper.make_node(op, inputs, outputs, hidden_size=hidden, direction=direction, layout=layout, **attrs)
    model = _model([node], {"X": x}, [(n, TensorProto.FLOAT) for n in outputs], opset=22, initializers=init)
    expected = None
    if layout:  # onnxruntime has no batch-major kernels: run the time-major twin and transpose
        time_major = {k: (np.swapaxes(v, 0, 1) if k in ("h0", "c0") else v) for k, v in init.items()}
        twin = helper.make_node(op, inputs, outputs, hidden_size=hidden, direction=direction, **attrs)
        twin_model = _model([twin], {"X": np.swapaxes(x, 0, 1)}, [(n, TensorProto.FLOAT) for n in outputs], opset=22,
                            initializers=time_major)
        y, *states = run_onnxruntime(twin_model, {"X": np.swapaxes(x, 0, 1)})
        expected = [np.transpose(y, (2, 0, 1, 3))] + [np.swapaxes(s, 0, 1) for s in states]
    _check(model, {"X": x}, rtol=1e-4, atol=1e-5, expected=expected)


# --- attention ----------------------------------------------------------------------------------

ATTENTION_CASES = [
    ("bool mask", {}, "bool", None),
    ("float mask, causal, GQA", {"is_causal": 1}, "float", 2),
    ("GQA scaled with past", {"scale": 0.3}, None, 2),
    ("softcap, qk output after softmax", {"softcap": 2.0, "qk_matmul_output_mode": 3}, "float", None),
]


@pytest.mark.parametrize("name, attrs, mask_kind, kv_heads", ATTENTION_CASES, ids=[c[0] for c in ATTENTION_CASES])
def test_onnx_attention_matches_reference(name, attrs, mask_kind, kv_heads):
    """ONNX Attention-23 (4-D inputs) against onnx.reference (onnxruntime lacks some of its modes)."""
    from onnx.reference import ReferenceEvaluator

    batch, heads, q_len, kv_len, depth = 2, 4, 3, 5, 8
    kv_heads = kv_heads or heads
    feeds = {"Q": _randn(batch, heads, q_len, depth), "K": _randn(batch, kv_heads, kv_len, depth),
             "V": _randn(batch, kv_heads, kv_len, depth)}
    inputs = ["Q", "K", "V"]
    past = "past" in name
    total = kv_len + (2 if past else 0)
    if mask_kind == "bool":
        feeds["M"] = RNG.random((batch, 1, q_len, total)) > 0.3
    elif mask_kind == "float":
        feeds["M"] = _randn(q_len, total)
    inputs.append("M" if mask_kind else "")
    if past:
        feeds["PK"], feeds["PV"] = _randn(batch, kv_heads, 2, depth), _randn(batch, kv_heads, 2, depth)
        inputs += ["PK", "PV"]
    outputs = ["Y", "present_key", "present_value", "qk"] if (past or "qk" in name) else ["Y"]
    node = helper.make_node("Attention", inputs, outputs, **attrs)
    model = _model([node], feeds, [(n, TensorProto.FLOAT) for n in outputs], opset=23)
    _check(model, feeds, rtol=1e-4, atol=1e-5, expected=ReferenceEvaluator(model).run(None, feeds))


def test_onnx_attention_3d_matches_onnxruntime():
    feeds = {"Q": _randn(2, 3, 16), "K": _randn(2, 5, 8), "V": _randn(2, 5, 8)}
    node = helper.make_node("Attention", ["Q", "K", "V"], ["Y"], q_num_heads=4, kv_num_heads=2)
    _check(_model([node], feeds, [("Y", TensorProto.FLOAT)], opset=23), feeds)


def test_rotary_embedding_matches_reference():
    from onnx.reference import ReferenceEvaluator

    feeds = {"X": _randn(2, 3, 4, 8), "cos": _randn(10, 3), "sin": _randn(10, 3),
             "pos": RNG.integers(0, 10, (2, 4)).astype(np.int64)}
    node = helper.make_node("RotaryEmbedding", ["X", "cos", "sin", "pos"], ["Y"], interleaved=1, rotary_embedding_dim=6)
    model = _model([node], feeds, [("Y", TensorProto.FLOAT)], opset=23)
    _check(model, feeds, expected=ReferenceEvaluator(model).run(None, feeds))


# --- fused ai.graphkiln ops ---------------------------------------------------------------------

def _fused_model(node, feeds: dict, out_shape, initializers=None) -> onnx.ModelProto:
    model = _model([node], feeds, [("Y", TensorProto.FLOAT)], opset=18, initializers=initializers,
                   extra_opsets={"ai.graphkiln": 1})
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("Y", TensorProto.FLOAT, out_shape))
    return model


def _attention_reference(q, k, v, mask, scale, causal):
    groups = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, groups, axis=1), np.repeat(v, groups, axis=1)
    scores = scale * q @ np.swapaxes(k, -1, -2)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf) if mask.dtype == bool else scores + mask
    if causal:
        sq, sk = scores.shape[-2:]
        scores = np.where(np.arange(sk)[None] <= np.arange(sq)[:, None] + (sk - sq), scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    return (weights / weights.sum(-1, keepdims=True)) @ v


@pytest.mark.parametrize("mask_kind, causal, kv_heads", [(None, 0, 4), ("bool", 0, 2), ("float", 1, 1)])
def test_fused_attention_matches_formula(mask_kind, causal, kv_heads):
    q, k, v = _randn(2, 4, 3, 8), _randn(2, kv_heads, 5, 8), _randn(2, kv_heads, 5, 8)
    feeds = {"Q": q, "K": k, "V": v}
    mask = None
    if mask_kind == "bool":
        mask = np.arange(5)[None, None, None, :] < np.array([5, 3])[:, None, None, None]
    elif mask_kind == "float":
        mask = _randn(1, 1, 3, 5)
    if mask is not None:
        feeds["M"] = mask
    node = helper.make_node("Attention", ["Q", "K", "V"] + (["M"] if mask is not None else []), ["Y"],
                            domain="ai.graphkiln", scale=0.4, is_causal=causal)
    expected = _attention_reference(q, k, v, mask, 0.4, causal).astype(np.float32)
    _check(_fused_model(node, feeds, [2, 4, 3, 8]), feeds, expected=[expected])


def test_fused_norms_and_gelu_match_standard_ops():
    x, scale, bias = _randn(2, 3, 8), _randn(8), _randn(8)
    init = {"S": scale, "B": bias}
    for fused, standard, opset in [
        (helper.make_node("Gelu", ["X"], ["Y"], domain="ai.graphkiln", approximate="tanh"),
         helper.make_node("Gelu", ["X"], ["Y"], approximate="tanh"), 20),
        (helper.make_node("LayerNormalization", ["X", "S", "B"], ["Y"], domain="ai.graphkiln", epsilon=1e-3),
         helper.make_node("LayerNormalization", ["X", "S", "B"], ["Y"], epsilon=1e-3), 17),
    ]:
        reference = run_onnxruntime(_model([standard], {"X": x}, [("Y", TensorProto.FLOAT)], opset=opset, initializers=init),
                                    {"X": x})
        _check(_fused_model(fused, {"X": x}, [2, 3, 8], initializers=init), {"X": x}, expected=reference)
    rms = helper.make_node("RMSNormalization", ["X", "S"], ["Y"], domain="ai.graphkiln", epsilon=1e-6)
    expected = x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + 1e-6) * scale
    _check(_fused_model(rms, {"X": x}, [2, 3, 8], initializers={"S": scale}), {"X": x}, expected=[expected.astype(np.float32)])


def test_fused_attention_uses_dot_product_attention_in_bf16():
    """--precision bf16 runs the fused attention's contractions on bf16 operands."""
    import jax

    from backends.jax.interpreter import LoweringOptions, build_function

    q, k, v = _randn(1, 2, 4, 8), _randn(1, 2, 4, 8), _randn(1, 2, 4, 8)
    node = helper.make_node("Attention", ["Q", "K", "V"], ["Y"], domain="ai.graphkiln")
    model = _fused_model(node, {"Q": q, "K": k, "V": v}, [1, 2, 4, 8])
    graph = compiler.load(model)
    function, params = build_function(graph, LoweringOptions(precision="bf16"))
    text = str(jax.make_jaxpr(function)(params, q, k, v))
    assert "bf16" in text and "dot_general" in text
    (low,) = compiler.compile(model, backend="cpu", opt_level=0, precision="bf16")(Q=q, K=k, V=v)
    np.testing.assert_allclose(low, _attention_reference(q, k, v, None, 1 / np.sqrt(8), 0), atol=0.05)


# --- symbolic batch/sequence under jax.export ---------------------------------------------------

def _symbolic_model() -> onnx.ModelProto:
    """Conv -> BatchNorm -> Relu -> MaxPool(+Indices) -> AveragePool -> GlobalAveragePool ->
    LayerNorm, and an Attention over [batch, heads, seq, depth] with a causal mask."""
    init = {"W": _randn(4, 3, 3, 3), "scale": _randn(4), "bias": _randn(4), "mean": _randn(4),
            "var": np.abs(_randn(4)) + 0.5, "ln_scale": _randn(1, 1), "ln_bias": _randn(1, 1)}
    nodes = [
        helper.make_node("Conv", ["X", "W"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["mp", "idx"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("AveragePool", ["mp"], ["ap"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["ap"], ["gap"]),
        helper.make_node("LayerNormalization", ["gap", "ln_scale", "ln_bias"], ["Y"], axis=2),
        helper.make_node("Attention", ["Q", "K", "V"], ["A"], is_causal=1),
    ]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 3, 8, 8])] + [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 2, "seq", 4]) for n in "QKV"]
    outputs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 4, 1, 1]),
               helper.make_tensor_value_info("idx", TensorProto.INT64, ["batch", 4, 4, 4]),
               helper.make_tensor_value_info("A", TensorProto.FLOAT, ["batch", 2, "seq", 4])]
    graph = helper.make_graph(nodes, "symbolic", inputs, outputs, [numpy_helper.from_array(a, n) for n, a in init.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=10)


def test_nn_rules_export_with_symbolic_batch_and_sequence(tmp_path):
    """The saved jax.export artifact keeps batch/seq symbolic and matches onnxruntime at new sizes."""
    from compiler.backend_registry import load_artifact

    model = _symbolic_model()
    compiled = compiler.compile(model, backend="cpu", opt_level=0)
    out = compiled.save(str(tmp_path / "out"))
    assert set(compiled.manifest()["jax"]["symbolic_dims"]) == {"batch", "seq"}
    reloaded = load_artifact(out)
    for batch, seq in [(1, 3), (3, 6)]:
        feeds = {"X": _randn(batch, 3, 8, 8), **{n: _randn(batch, 2, seq, 4) for n in "QKV"}}
        expected = run_onnxruntime(model, feeds)
        for got, want in zip(reloaded(**feeds), expected):
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


FUSION_PASSES = "fold_constants,fixpoint(remove_noops,cse,dce),fuse_gelu,fuse_layer_norm,fuse_attention,dce"


@pytest.mark.parametrize("name", ["transformer_torchscript", "transformer_dynamo"])
def test_fused_transformer_samples_match_onnxruntime(name):
    """With the fusion passes, the samples run through the ai.graphkiln lowerings (fp32 and bf16)."""
    import pathlib

    from compiler.pass_infra import registered_passes

    if not {"fuse_gelu", "fuse_layer_norm", "fuse_attention"} <= set(registered_passes()):
        pytest.skip("fusion passes not registered")
    path = pathlib.Path(__file__).resolve().parent.parent / "samples" / f"{name}.onnx"
    with np.load(path.parent / "data" / f"{name}_inputs.npz") as stored:
        feeds = {key: stored[key] for key in stored.files}
    expected = run_onnxruntime(onnx.load(str(path)), feeds)
    for precision, tolerance in (("fp32", (1e-4, 1e-5)), ("bf16", (5e-2, 5e-2))):
        compiled = compiler.compile(str(path), backend="cpu", opt_level=0, passes=FUSION_PASSES, precision=precision)
        fused = {node.op_type for node in compiled.graph.nodes if node.domain == "ai.graphkiln"}
        assert {"Attention", "Gelu"} <= fused
        for got, want in zip(compiled(**feeds), expected):
            np.testing.assert_allclose(np.asarray(got), want, rtol=tolerance[0], atol=tolerance[1])
