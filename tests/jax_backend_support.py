"""Small models for the JAX backend tests, and a check that the real lowering table covers the
ops they use."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def ensure_basic_rules() -> None:
    """Load the real lowering table (MatMul, Add, Relu, Gemm... now exist there; nothing stands in)."""
    from backends.jax.registry import has_lowering

    missing = [op for op in ("MatMul", "Add", "Relu", "Gemm") if not has_lowering("", op)]
    assert not missing, f"the lowering table lacks {missing}"


def mlp_model(inputs: int = 8, hidden: int = 16, outputs: int = 4, seed: int = 0, batch: str | int = "batch") -> onnx.ModelProto:
    """Y = relu(X @ W1 + b1) @ W2 + b2 with a symbolic batch dimension."""
    rng = np.random.default_rng(seed)
    weights = {
        "W1": (rng.standard_normal((inputs, hidden)) / np.sqrt(inputs)).astype(np.float32),
        "b1": rng.standard_normal(hidden).astype(np.float32),
        "W2": (rng.standard_normal((hidden, outputs)) / np.sqrt(hidden)).astype(np.float32),
        "b2": rng.standard_normal(outputs).astype(np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["X", "W1"], ["h0"], name="fc1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="fc1_bias"),
        helper.make_node("Relu", ["h1"], ["h2"], name="act"),
        helper.make_node("MatMul", ["h2", "W2"], ["h3"], name="fc2"),
        helper.make_node("Add", ["h3", "b2"], ["Y"], name="fc2_bias"),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [batch, inputs])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [batch, outputs])],
        [numpy_helper.from_array(array, name) for name, array in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def onnxruntime_outputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    from compiler.reference import run_onnxruntime

    return run_onnxruntime(model, feeds)
