"""Models for the visualizer tests and its benchmark: a deep stack of named encoder-like blocks
(29 nodes per block, so 360 blocks give 10,441 nodes), a model whose strings carry
script-injection payloads, and a test-only fusion pass that records `fused_from` provenance."""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEQ, WIDTH = 4, 8
# The passes the tests run (fixed, so the expected counts do not move when the presets grow).
BASE_PIPELINE = "fold_constants,fixpoint(remove_noops,fold_constants,dce)"

# Payloads: each would set window.__kilnXss (or call alert) if the page ever parsed it as markup.
SCRIPT_PAYLOAD = "</script><script>window.__kilnXss=1;alert(1)</script>"
IMG_PAYLOAD = '"><img src=x onerror="window.__kilnXss=2;alert(2)">'
SVG_PAYLOAD = "<svg/onload=window.__kilnXss=3>"


class _BlockWriter:
    """Collects nodes and initializers; every node named under the block's scope."""

    def __init__(self, seed: int = 0) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.random = np.random.default_rng(seed)

    def weight(self, name: str, shape: tuple[int, ...]) -> str:
        array = (self.random.standard_normal(shape) * 0.2).astype(np.float32)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attributes) -> str:
        output = name.strip("/").replace("/", "_") + "_out"
        self.nodes.append(helper.make_node(op, inputs, [output], name=name, **attributes))
        return output

    def block(self, x: str, index: int) -> str:
        """Pre-LN block: LayerNorm (decomposed), q/k/v attention, GELU MLP, two residuals."""
        s = f"/layers.{index}"
        mean = self.node("ReduceMean", [x], f"{s}/norm/ReduceMean", axes=[-1])
        centred = self.node("Sub", [x, mean], f"{s}/norm/Sub")
        square = self.node("Mul", [centred, centred], f"{s}/norm/Mul")
        variance = self.node("ReduceMean", [square], f"{s}/norm/ReduceMean_1", axes=[-1])
        eps = self.node("Constant", [], f"{s}/norm/Constant", value=numpy_helper.from_array(np.array(1e-5, np.float32)))
        shifted = self.node("Add", [variance, eps], f"{s}/norm/Add")
        root = self.node("Sqrt", [shifted], f"{s}/norm/Sqrt")
        normed = self.node("Div", [centred, root], f"{s}/norm/Div")
        q = self.node("MatMul", [normed, self.weight(f"layers.{index}.q", (WIDTH, WIDTH))], f"{s}/attn/q/MatMul")
        k = self.node("MatMul", [normed, self.weight(f"layers.{index}.k", (WIDTH, WIDTH))], f"{s}/attn/k/MatMul")
        v = self.node("MatMul", [normed, self.weight(f"layers.{index}.v", (WIDTH, WIDTH))], f"{s}/attn/v/MatMul")
        kt = self.node("Transpose", [k], f"{s}/attn/Transpose", perm=[1, 0])
        scores = self.node("MatMul", [q, kt], f"{s}/attn/MatMul")
        probs = self.node("Softmax", [scores], f"{s}/attn/Softmax", axis=-1)
        mixed = self.node("MatMul", [probs, v], f"{s}/attn/MatMul_1")
        kept = self.node("Identity", [mixed], f"{s}/attn/Identity")
        proj = self.node("MatMul", [kept, self.weight(f"layers.{index}.o", (WIDTH, WIDTH))], f"{s}/attn/o/MatMul")
        biased = self.node("Add", [proj, self.weight(f"layers.{index}.o_bias", (WIDTH,))], f"{s}/attn/o/Add")
        x = self.node("Add", [x, biased], f"{s}/Add")
        up = self.node("MatMul", [x, self.weight(f"layers.{index}.up", (WIDTH, WIDTH))], f"{s}/mlp/up/MatMul")
        up = self.node("Add", [up, self.weight(f"layers.{index}.up_bias", (WIDTH,))], f"{s}/mlp/up/Add")
        half = self.node("Mul", [up, self.weight(f"layers.{index}.half", ())], f"{s}/mlp/gelu/Mul")
        erf = self.node("Erf", [self.node("Mul", [up, self.weight(f"layers.{index}.rsqrt2", ())], f"{s}/mlp/gelu/Div")], f"{s}/mlp/gelu/Erf")
        one = self.node("Add", [erf, self.weight(f"layers.{index}.one", ())], f"{s}/mlp/gelu/Add")
        gelu = self.node("Mul", [half, one], f"{s}/mlp/gelu/Mul_1")
        down = self.node("MatMul", [gelu, self.weight(f"layers.{index}.down", (WIDTH, WIDTH))], f"{s}/mlp/down/MatMul")
        down = self.node("Add", [down, self.weight(f"layers.{index}.down_bias", (WIDTH,))], f"{s}/mlp/down/Add")
        return self.node("Add", [x, down], f"{s}/Add_1")


NODES_PER_BLOCK = 29


def stacked_blocks_model(blocks: int, opset: int = 17) -> onnx.ModelProto:
    """`blocks` encoder-like blocks on a [4, 8] float input, 29 nodes each, and a final Identity
    (per block one Constant folds and one Identity is a no-op, so the -O1 passes change it)."""
    writer = _BlockWriter()
    x = "input"
    for index in range(blocks):
        x = writer.block(x, index)
    writer.nodes.append(helper.make_node("Identity", [x], ["output"], name="/output/Identity"))
    graph = helper.make_graph(
        writer.nodes, f"stacked_{blocks}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [SEQ, WIDTH])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [SEQ, WIDTH])],
        writer.initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def hostile_model() -> onnx.ModelProto:
    """A valid model whose node names, op types, doc strings, value names and graph
    name carry script-injection payloads (the op with a hostile type is in the com.microsoft
    domain, which the importer accepts without a schema)."""
    nodes = [
        helper.make_node("Relu", ["x"], [f"relu{IMG_PAYLOAD}"], name=f"relu{SCRIPT_PAYLOAD}", doc_string=f"doc{IMG_PAYLOAD}"),
        helper.make_node(f"Op{SCRIPT_PAYLOAD}", [f"relu{IMG_PAYLOAD}"], ["evil"], name=f"custom{IMG_PAYLOAD}",
                         domain="com.microsoft", doc_string=SCRIPT_PAYLOAD, note=f"attr{SCRIPT_PAYLOAD}"),
        helper.make_node("Neg", ["x"], [f"neg{SVG_PAYLOAD}"], name=f"neg{SVG_PAYLOAD}", doc_string=SVG_PAYLOAD),
        helper.make_node("Identity", [f"neg{SVG_PAYLOAD}"], ["y"], name=f"identity{SCRIPT_PAYLOAD}"),
    ]
    graph = helper.make_graph(
        nodes, f"graph{SCRIPT_PAYLOAD}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("evil", TensorProto.FLOAT, [2, 3])],
        doc_string=f"graph doc{IMG_PAYLOAD}",
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                             ir_version=9, doc_string=SCRIPT_PAYLOAD)


@contextlib.contextmanager
def gemm_fusion_pass() -> Iterator[str]:
    """A test-only rewrite pass (MatMul + Add with constant 2-D weight and bias -> Gemm) whose
    new nodes carry `fused_from`, registered only inside the `with` block; yields its name."""
    from compiler import pass_infra
    from compiler.pass_infra import register_pass
    from compiler.rewriter import Rule, fail
    from passes.rewrite_pass import RewritePass

    def pattern(op, x, w, b):
        return op.Add(op.MatMul(x, w, _capture="mm"), b)

    def check(ctx, x, w, b, mm, **_):
        weight, bias = w.constant(), b.constant()
        if weight is None or bias is None or weight.ndim != 2 or bias.ndim != 1:
            return fail("weight or bias is not a constant 2-D/1-D tensor", mm)
        return x.shape is not None and len(x.shape) == 2 or fail("input is not 2-D", mm)

    def replace(op, x, w, b, **_):
        return op.Gemm(x, w, b)

    class VizTestGemmFusion(RewritePass):
        name = "viz_test_gemm_fusion"
        description = "test only: MatMul + Add -> Gemm, to show fused_from in the visualizer"
        rules = (Rule("viz_test_matmul_add_to_gemm", pattern, replace, check),)

    register_pass(VizTestGemmFusion)
    try:
        yield VizTestGemmFusion.name
    finally:
        pass_infra._PASSES.pop(VizTestGemmFusion.name, None)  # other tests never see it
