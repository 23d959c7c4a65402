"""--backend asic: SCALE-Sim's compute-cycle model per dataflow (checked against numbers recorded
from SCALE-Sim 3.0.0 and, when the scalesim package is installed, against a live run), tiling of
Conv/depthwise Conv/Gemm/batched MatMul, vector-unit cost, SRAM/DRAM traffic, stalls, latency,
energy, the report section and the SCALE-Sim files."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler
from backends.asic.config import ENERGY_PJ, config_from_options
from backends.asic.scalesim_io import cross_check, scalesim_available
from backends.asic.simulate import simulate
from backends.asic.systolic import MatrixProblem, SramAccesses, compute_cycles, sram_accesses
from compiler.cli import main

from conftest import SAMPLES

# Per-layer "Total Cycles" of SCALE-Sim 3.0.0 (COMPUTE_REPORT.csv, 8x8 array, no stalls) for:
# conv 10x10 ifmap, 3x3 filter, 4 channels, 8 filters, stride 1 -> E=64, K=36, M=8;
# GEMM M=16, K=32, N=24; depthwise 9x9, 3x3, 3 channels, stride 2 (3 layers of E=16, K=9, M=1).
RECORDED = {
    "os": {"conv": 399, "gemm": 275, "depthwise": 3 * 45},
    "ws": {"conv": 429, "gemm": 455, "depthwise": 3 * 75},
    "is": {"conv": 1199, "gemm": 367, "depthwise": 3 * 91},
}


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_compute_cycles_match_recorded_scalesim(dataflow: str) -> None:
    expected = RECORDED[dataflow]
    assert compute_cycles(MatrixProblem(64, 36, 8), 8, 8, dataflow) == expected["conv"]
    assert compute_cycles(MatrixProblem(16, 32, 24), 8, 8, dataflow) == expected["gemm"]
    assert 3 * compute_cycles(MatrixProblem(16, 9, 1), 8, 8, dataflow) == expected["depthwise"]


def test_sram_accesses_follow_the_dataflow() -> None:
    problem = MatrixProblem(64, 36, 8)  # 8 row folds of E (os) / 5 of K (ws, is); 1 column fold of M
    assert sram_accesses(problem, 8, 8, "os") == SramAccesses(64 * 36, 8 * 36 * 8, 64 * 8)
    assert sram_accesses(problem, 8, 8, "ws") == SramAccesses(64 * 36, 36 * 8, 5 * 64 * 8)
    assert sram_accesses(problem, 8, 8, "is") == SramAccesses(36 * 64, 8 * 36 * 8, 5 * 64 * 8)


def _layers_model() -> onnx.ModelProto:
    """Conv, depthwise Conv (stride 2), Gemm, a batched MatMul and a Relu on the vector unit."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 4, 3, 3)).astype(np.float32), "w_conv"),
        numpy_helper.from_array(rng.standard_normal((8, 1, 3, 3)).astype(np.float32), "w_dw"),
        numpy_helper.from_array(rng.standard_normal((128, 128)).astype(np.float32), "w_fc"),
        numpy_helper.from_array(np.array([2, 8, 8], np.int64), "shape3"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w_conv"], ["c1"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
        helper.make_node("Conv", ["r1", "w_dw"], ["c2"], name="depthwise", group=8, strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["c2"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w_fc"], ["fc"], name="fc"),
        helper.make_node("Reshape", ["fc", "shape3"], ["fc3"], name="reshape"),
        helper.make_node("Transpose", ["fc3"], ["fc3t"], name="transpose", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["fc3", "fc3t"], ["scores"], name="bmm"),
    ]
    graph = helper.make_graph(nodes, "layers", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_tiling_of_each_matrix_op(dataflow: str) -> None:
    config = config_from_options({"array": "8x8", "dataflow": dataflow})
    section, layers = simulate(compiler.load(_layers_model()), config, {})
    by_node = {layer["node"]: layer for layer in section["layers"]}
    assert [layer.node for layer in layers] == ["conv", "depthwise", "fc", "bmm"]
    assert by_node["conv"]["mapping"] == [dict(ofmap_px=64, window=36, filters=8, repeats=1, **_folds(64, 36, 8, dataflow))]
    assert by_node["depthwise"]["mapping"][0]["repeats"] == 8  # one 1-channel problem per group
    assert by_node["depthwise"]["compute_cycles"] == 8 * compute_cycles(MatrixProblem(16, 9, 1), 8, 8, dataflow)
    assert by_node["fc"]["compute_cycles"] == compute_cycles(MatrixProblem(1, 128, 128), 8, 8, dataflow)
    assert by_node["bmm"]["compute_cycles"] == 2 * compute_cycles(MatrixProblem(8, 8, 8), 8, 8, dataflow)
    assert by_node["relu"]["kind"] == "vector" and by_node["relu"]["compute_cycles"] == 8 * 8 * 8 // 8
    assert by_node["flatten"]["cycles"] == 0 and by_node["reshape"]["cycles"] == 0
    assert by_node["transpose"]["compute_cycles"] == 128 // 8  # data movement: one op per element
    for layer in section["layers"]:
        if layer["kind"] == "array":
            macs = sum(m["ofmap_px"] * m["window"] * m["filters"] * m["repeats"] for m in layer["mapping"])
            assert layer["macs"] == macs
            assert layer["utilization"] == pytest.approx(macs / (layer["cycles"] * 64))


def _folds(e: int, k: int, m: int, dataflow: str) -> dict[str, int]:
    rows, cols = {"os": (e, m), "ws": (k, m), "is": (k, e)}[dataflow]
    return {"row_folds": -(-rows // 8), "col_folds": -(-cols // 8)}


@pytest.mark.skipif(not scalesim_available(), reason="scalesim (the asic extra) is not installed")
@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_cycles_agree_with_scalesim_on_small_layers(dataflow: str) -> None:
    config = config_from_options({"array": "8x8", "dataflow": dataflow})
    _, layers = simulate(compiler.load(_layers_model()), config, {})
    rows = cross_check(layers, config)
    assert [r["kind"] for r in rows] == ["conv", "conv", "gemm", "gemm", "gemm"]  # bmm: one row per batch
    for row in rows:
        assert row["rel_diff"] <= 0.01, row
        assert row["scalesim"] > 0


def test_traffic_stalls_latency_and_energy_of_a_gemm() -> None:
    weight = np.ones((64, 64), np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16, 64])],
                              [numpy_helper.from_array(weight, "w")])
    model = compiler.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    fast = config_from_options({"array": "16x16", "dataflow": "os", "bandwidth": 1000, "freq": 500})
    layer = simulate(model, fast, {})[0]["layers"][0]
    assert layer["dram_bytes"] == 64 * 64 * 4 + 16 * 64 * 4 + 16 * 64 * 4  # weights, input, output once
    assert layer["compute_cycles"] == compute_cycles(MatrixProblem(16, 64, 64), 16, 16, "os") and layer["stall_cycles"] == 0
    assert layer["latency_us"] == pytest.approx(layer["cycles"] / 500)
    words = sram_accesses(MatrixProblem(16, 64, 64), 16, 16, "os")
    assert layer["sram_read_bytes"] == 4 * (words.ifmap_reads + words.filter_reads)
    energy = (16 * 64 * 64 * ENERGY_PJ["mac"]["fp32"] + (layer["sram_read_bytes"] + layer["sram_write_bytes"]) * 2.5
              + layer["dram_bytes"] * 243.75)
    assert layer["energy_pj"] == pytest.approx(energy)
    slow = config_from_options({"array": "16x16", "dataflow": "os", "bandwidth": 1, "freq": 500})  # 2 B/cycle
    stalled = simulate(model, slow, {})[0]["layers"][0]
    assert stalled["stall_cycles"] == layer["dram_bytes"] // 2 - layer["compute_cycles"]
    tiny = config_from_options({"array": "16x16", "dataflow": "os", "sram": 2, "bandwidth": 1000})  # 2 KB buffers
    spilled = simulate(model, tiny, {})[0]["layers"][0]
    # os streams the 4 KB input once per column fold (4 folds of 64 filters on 16 columns)
    assert spilled["dram_bytes"] == 64 * 64 * 4 + 4 * 16 * 64 * 4 + 16 * 64 * 4


def test_cli_writes_report_section_and_scalesim_files(tmp_path, capsys) -> None:
    out = tmp_path / "asic"
    code = main(["compile", str(SAMPLES / "cnn_bn_residual.onnx"), "--backend", "asic", "--array", "8x8", "--dataflow", "ws",
                 "--sram", "64", "--bandwidth", "10", "--freq", "500", "--shapes", "input=2x3x32x32", "-q", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "asic 8x8 ws:" in captured.out
    report = json.loads((out / "report.json").read_text())
    section = report["sections"]["asic"]
    model = onnx.load(str(out / "model.onnx"))
    assert [layer["node"] for layer in section["layers"]] == [n.name for n in model.graph.node]
    kinds = [layer["op"] for layer in section["layers"] if layer["kind"] == "array"]
    assert kinds == ["Conv"] * 8 + ["Gemm"]
    assert section["config"]["rows"] == 8 and section["config"]["dataflow"] == "ws" and section["config"]["sram_kb"] == 64
    total = section["total"]
    assert total["cycles"] == sum(layer["cycles"] for layer in section["layers"])
    assert total["cycles"] == total["compute_cycles"] + total["stall_cycles"]
    assert total["latency_us"] == pytest.approx(total["cycles"] / 500)
    assert total["dram_bytes"] > 0 and total["energy_pj"] > 0 and 0 < total["utilization"] < 1
    first = section["layers"][0]
    assert first["mapping"][0]["repeats"] == 2  # batch 2 from --shapes
    conv_rows = (out / "scalesim" / "topology_conv.csv").read_text().splitlines()
    assert conv_rows[0].startswith("Layer name, IFMAP Height") and len(conv_rows) == 1 + 8 * 2
    assert conv_rows[1].endswith(", 34, 34, 3, 3, 3, 16, 1,")  # padded 32x32 input, 3x3, 3 -> 16 channels
    assert (out / "scalesim" / "topology_gemm.csv").read_text().splitlines()[1].endswith(", 2, 10, 32,")
    assert "Dataflow = ws" in (out / "scalesim" / "scale.cfg").read_text()


@pytest.mark.parametrize("flag, value, message", [
    ("--array", "8by8", "--array expects ROWSxCOLS"),
    ("--sram", "0", "--sram must be positive"),
    ("--shapes", "image=1x3x32x32", "--shapes names 'image', which is not a model input"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, flag: str, value: str, message: str) -> None:
    code = main(["compile", str(SAMPLES / "cnn_bn_residual.onnx"), "--backend", "asic", flag, value, "-q", "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("kiln: error: ") and message in err and len(err.strip().splitlines()) == 1


def test_int8_model_moves_fewer_bytes_than_fp32() -> None:
    calibration = str(SAMPLES / "data" / "digits_calibration.npz")
    options = dict(array="8x8", dataflow="os", static_shapes=["input=1x1x8x8"])
    fp32 = compiler.compile(str(SAMPLES / "digits_cnn.onnx"), backend="asic", **options).report.sections["asic"]
    int8 = compiler.compile(str(SAMPLES / "digits_cnn.onnx"), backend="asic", quantize="int8", calibration=calibration,
                            **options).report.sections["asic"]
    float_layers = [layer for layer in fp32["layers"] if layer["kind"] == "array"]
    int_layers = [layer for layer in int8["layers"] if layer["kind"] == "array"]
    assert [layer["node"] for layer in int_layers] == [layer["node"] for layer in float_layers]
    assert {layer["precision"] for layer in int_layers} == {"int8"}
    for f, q in zip(float_layers, int_layers):
        assert q["compute_cycles"] == f["compute_cycles"]  # same tiling, narrower words
        assert q["sram_read_bytes"] * 4 == f["sram_read_bytes"]
        assert q["energy_pj"] < f["energy_pj"]
    assert int8["total"]["dram_bytes"] < fp32["total"]["dram_bytes"]


def test_fused_graphkiln_op_is_costed_through_its_decomposition(monkeypatch) -> None:
    from compiler import custom_ops
    from compiler.custom_ops import GRAPHKILN_DOMAIN, CustomOp
    from compiler.ir import Node

    def infer(node):
        return [node.inputs[0].type.__class__(node.inputs[0].dtype, (node.inputs[0].shape[0], node.inputs[1].shape[1]))]

    def decompose(op, node):
        return [op.Relu(op.MatMul(node.inputs[0], node.inputs[1]))]

    test_op = CustomOp("AsicTestMatMulRelu", infer, decompose, doc="test only: Relu(MatMul(a, b))")
    monkeypatch.setitem(custom_ops._REGISTRY, (GRAPHKILN_DOMAIN, "AsicTestMatMulRelu"), test_op)  # removed after the test
    graph = compiler.load(helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="plain")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16, 32])],
        [numpy_helper.from_array(np.ones((32, 32), np.float32), "w")]), opset_imports=[helper.make_opsetid("", 17)]))
    plain = next(iter(graph.nodes))
    fused = Node("AsicTestMatMulRelu", [plain.inputs[0], plain.inputs[1]], domain=GRAPHKILN_DOMAIN, name="fused")
    graph.insert_node(fused, before=plain)
    fused.outputs[0].type = plain.outputs[0].type
    graph.replace_all_uses_with(plain.outputs[0], fused.outputs[0])
    graph.remove_node(plain)
    graph.opset_imports[GRAPHKILN_DOMAIN] = 1
    config = config_from_options({"array": "8x8", "dataflow": "os"})
    layers = simulate(graph, config, {})[0]["layers"]
    assert [(layer["node"], layer["op"], layer["kind"], layer["parts"]) for layer in layers] == [
        ("fused", "ai.graphkiln::AsicTestMatMulRelu", "array", ["MatMul", "Relu"])]
    assert layers[0]["compute_cycles"] == compute_cycles(MatrixProblem(16, 32, 32), 8, 8, "os") + 16 * 32 // 8


def test_integer_matmul_runs_on_the_array_in_int8() -> None:
    weight = numpy_helper.from_array(np.ones((32, 16), np.int8), "w")
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "w"], ["y"], name="mmi")], "g",
                              [helper.make_tensor_value_info("a", TensorProto.UINT8, [16, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [16, 16])], [weight])
    model = compiler.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    layer = simulate(model, config_from_options({"array": "8x8", "dataflow": "ws", "bandwidth": 1000}), {})[0]["layers"][0]
    assert (layer["kind"], layer["precision"]) == ("array", "int8")
    words = sram_accesses(MatrixProblem(16, 32, 16), 8, 8, "ws")
    assert layer["sram_read_bytes"] == words.ifmap_reads + words.filter_reads  # one byte per word
    assert layer["dram_bytes"] == 32 * 16 + 16 * 32 + 16 * 16  # int8 weights and input, requantized int8 output


def test_attention_op_is_two_batched_products_and_a_softmax() -> None:
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2, 8, 4]) for n in ("q", "k", "v")]
    graph = helper.make_graph([helper.make_node("Attention", ["q", "k", "v"], ["y"], name="attn")], "g", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 4])])
    model = compiler.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)]))
    section, layers = simulate(model, config_from_options({"array": "8x8", "dataflow": "os"}), {})
    layer = section["layers"][0]
    assert (layer["kind"], layer["macs"], layer["vector_ops"]) == ("array", 2 * (8 * 4 * 8 + 8 * 8 * 4), 7 * 2 * 8 * 8)
    expected = 2 * compute_cycles(MatrixProblem(8, 4, 8), 8, 8, "os") + 2 * compute_cycles(MatrixProblem(8, 8, 4), 8, 8, "os")
    assert layer["compute_cycles"] == expected + 7 * 2 * 8 * 8 // 8
    assert [(row.kind, row.dims, row.repeat) for row in layers[0].topology] == [("gemm", (8, 8, 4), 2), ("gemm", (8, 4, 8), 2)]
