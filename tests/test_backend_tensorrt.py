"""--backend tensorrt: every sample checked against the TensorRT 10 support table, blocking nodes
reported with reasons, the ONNX written and runnable, static shapes / optimization profiles,
the tensorrt Q/DQ profile under --quantize int8, and one line when no engine can be built."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler
from backends.tensorrt.engine import engine_unavailable
from backends.tensorrt.support import CONSTRAINTS, check_graph, support_table
from compiler.cli import main
from compiler.reference import compare_outputs, run_onnxruntime

from conftest import SAMPLES

SAMPLE_NAMES = ["mlp", "cnn_bn_residual", "digits_cnn", "transformer_torchscript", "transformer_dynamo"]


def test_support_table_is_complete_and_consistent() -> None:
    table = support_table()
    assert table["tensorrt_version"].startswith("10.") and (table["opset_min"], table["opset_max"]) == (9, 24)
    assert not set(table["supported"]) & set(table["unsupported"])
    for op, entry in table["supported"].items():
        assert entry["types"], op
        assert set(entry["constraints"]) <= set(CONSTRAINTS), op
    assert {"QLinearConv", "ConvInteger", "MatMulInteger", "Unique"} <= set(table["unsupported"])


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_every_sample_against_the_support_table(name: str) -> None:
    graph = compiler.load(str(SAMPLES / f"{name}.onnx"))
    ops = {node.op_type for node in graph.all_nodes()}
    assert ops <= set(support_table()["supported"]), ops - set(support_table()["supported"])
    result = check_graph(graph)
    assert result["supported"] and result["blocking"] == []


def _blocked_model() -> onnx.ModelProto:
    """Accepted Relu; unsupported Det; QuantizeLinear with a nonzero zero point; ReduceSum whose axes
    are computed; MaxPool whose Indices output is read."""
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "scale"),
             numpy_helper.from_array(np.array(3, np.int8), "zero")]
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="ok"),
        helper.make_node("Det", ["square"], ["det"], name="det"),
        helper.make_node("QuantizeLinear", ["r", "scale", "zero"], ["q"], name="quant"),
        helper.make_node("Shape", ["axes_src"], ["axes"], name="shape"),
        helper.make_node("ReduceSum", ["r", "axes"], ["s"], name="reduce"),
        helper.make_node("MaxPool", ["r"], ["p", "idx"], name="pool", kernel_shape=[2, 2]),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4]),
              helper.make_tensor_value_info("square", TensorProto.FLOAT, [3, 3]),
              helper.make_tensor_value_info("axes_src", TensorProto.FLOAT, [1])]
    outputs = [helper.make_tensor_value_info(n, t, shape) for n, t, shape in
               [("det", TensorProto.FLOAT, []), ("q", TensorProto.INT8, [1, 2, 4, 4]), ("s", TensorProto.FLOAT, ["a", "b", "c", "d"]),
                ("p", TensorProto.FLOAT, [1, 2, 3, 3]), ("idx", TensorProto.INT64, [1, 2, 3, 3])]]
    graph = helper.make_graph(nodes, "blocked", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_blocking_nodes_are_reported_with_reasons() -> None:
    result = check_graph(compiler.load(_blocked_model()))
    assert result["supported"] is False
    assert result["blocking"] == [
        {"node": "det", "op": "Det", "reason": "Det is not supported by the TensorRT 10.15 ONNX parser"},
        {"node": "quant", "op": "QuantizeLinear", "reason": "zero point must be 0 (TensorRT quantization is symmetric)"},
        {"node": "reduce", "op": "ReduceSum", "reason": "axes input is not a constant"},
        {"node": "pool", "op": "MaxPool", "reason": "the Indices output is used"},
    ]


def test_opset_outside_the_parser_range_blocks() -> None:
    graph = compiler.load(str(SAMPLES / "mlp.onnx"))
    graph.opset_imports[""] = 25
    assert check_graph(graph)["blocking"][0] == {"node": "<model>", "op": "opset",
                                                 "reason": "opset 25 is outside TensorRT's range 9-24"}


def test_blocked_model_still_writes_onnx_and_lists_blockers(tmp_path, capsys) -> None:
    source = tmp_path / "blocked.onnx"
    onnx.save(_blocked_model(), str(source))
    out = tmp_path / "trt"
    code = main(["compile", str(source), "--backend", "tensorrt", "-O0", "-q", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "NOT all nodes accepted" in captured.out and "blocking: det (Det): Det is not supported" in captured.out
    section = json.loads((out / "report.json").read_text())["sections"]["tensorrt"]
    assert [b["node"] for b in section["blocking"]] == ["det", "quant", "reduce", "pool"] and section["engine"] is None
    onnx.checker.check_model(onnx.load(str(out / "model.onnx")))


@pytest.mark.skipif(engine_unavailable() is None, reason="tensorrt and a GPU are present: the engine is built instead")
def test_without_tensorrt_one_line_says_so_and_onnx_runs(tmp_path, capsys) -> None:
    out = tmp_path / "trt"
    code = main(["compile", str(SAMPLES / "transformer_torchscript.onnx"), "--backend", "tensorrt", "-q", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = [line for line in (captured.out + captured.err).splitlines() if "no engine built" in line]
    assert lines == [f"note: tensorrt: no engine built: {engine_unavailable()}; the ONNX for TensorRT is written"]
    model = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    inputs = dict(np.load(SAMPLES / "data" / "transformer_torchscript_inputs.npz"))
    expected = [np.load(SAMPLES / "data" / "transformer_torchscript_outputs.npz")[n.name] for n in model.graph.output]
    verdict = compare_outputs(expected, run_onnxruntime(model, inputs), rtol=1e-4, atol=1e-5)
    assert verdict.ok, verdict.message
    section = json.loads((out / "report.json").read_text())["sections"]["tensorrt"]
    assert section["shapes"] == {"static": False, "unknown_rank": [], "inputs": {
        "input": {"min": [1, 1, 64], "opt": [8, 8, 64], "max": [64, 64, 64]},
        "mask": {"min": [1, 1], "opt": [8, 8], "max": [64, 64]}}}


def test_static_shapes_are_written_into_the_onnx(tmp_path) -> None:
    out = tmp_path / "trt"
    assert main(["compile", str(SAMPLES / "cnn_bn_residual.onnx"), "--backend", "tensorrt", "--shapes", "input=4x3x32x32",
                 "-q", "-o", str(out)]) == 0
    model = onnx.load(str(out / "model.onnx"))
    dims = [[d.dim_value for d in v.type.tensor_type.shape.dim] for v in (model.graph.input[0], model.graph.output[0])]
    assert dims == [[4, 3, 32, 32], [4, 10]]
    section = json.loads((out / "report.json").read_text())["sections"]["tensorrt"]
    assert section["shapes"]["static"] is True
    assert section["shapes"]["inputs"]["input"] == {"min": [4, 3, 32, 32], "opt": [4, 3, 32, 32], "max": [4, 3, 32, 32]}


def test_int8_uses_the_tensorrt_qdq_profile() -> None:
    compiled = compiler.compile(str(SAMPLES / "digits_cnn.onnx"), backend="tensorrt", quantize="int8",
                                calibration=str(SAMPLES / "data" / "digits_calibration.npz"))
    assert compiled.report.sections["quantization"]["profile"] == "tensorrt"
    section = compiled.report.sections["tensorrt"]
    assert section["supported"] and section["quantization"]["profile"] == "tensorrt"
    assert section["quantization"]["quantize_linear"] > 0
    for node in compiled.model.graph.node:  # TensorRT's explicit quantization: zero points are 0
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            point = next(i for i in compiled.model.graph.initializer if i.name == node.input[2])
            assert not numpy_helper.to_array(point).any()
    data = np.load(SAMPLES / "data" / "digits_test.npz")
    outputs = compiled(data["input"][:64])
    accuracy = float((np.argmax(outputs[0], axis=1) == data["label"][:64]).mean())
    assert accuracy > 0.9


@pytest.mark.gpu
@pytest.mark.skipif(engine_unavailable() is not None, reason=f"no engine: {engine_unavailable()}")
def test_engine_is_built_timed_and_compared_with_jax(tmp_path) -> None:
    compiled = compiler.compile(str(SAMPLES / "cnn_bn_residual.onnx"), backend="tensorrt", static_shapes=["input=2x3x32x32"])
    engine = compiled.report.sections["tensorrt"]["engine"]
    assert engine["built"] and engine["latency_ms"] > 0 and engine["compare"]["max_abs_error"] < 1e-2
    compiled.save(str(tmp_path / "trt"))
    assert (tmp_path / "trt" / "model.engine").stat().st_size == engine["engine_bytes"]


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_every_sample_compiles_to_parseable_onnx_at_O3(name: str) -> None:
    compiled = compiler.compile(str(SAMPLES / f"{name}.onnx"), backend="tensorrt", opt_level=3)
    section = compiled.report.sections["tensorrt"]
    assert section["supported"], section["blocking"]
    recheck = check_graph(compiler.load(compiled.model))  # the exported file itself, as TensorRT reads it
    assert recheck["blocking"] == []
    inputs = dict(np.load(SAMPLES / "data" / f"{name}_inputs.npz"))
    outputs = np.load(SAMPLES / "data" / f"{name}_outputs.npz")
    expected = [outputs[v.name] for v in compiled.model.graph.output]
    verdict = compare_outputs(expected, run_onnxruntime(compiled.model, inputs), rtol=1e-4, atol=1e-4)
    assert verdict.ok, verdict.message


def test_shape_ranges_make_an_optimization_profile(tmp_path, capsys) -> None:
    out = tmp_path / "trt"
    assert main(["compile", str(SAMPLES / "transformer_torchscript.onnx"), "--backend", "tensorrt", "-q", "-o", str(out),
                 "--shapes", "input=1x1x64:4x16x64:8x128x64", "--shapes", "mask=1x1:4x16:8x128"]) == 0
    section = json.loads((out / "report.json").read_text())["sections"]["tensorrt"]
    assert section["shapes"]["static"] is False
    assert section["shapes"]["inputs"]["mask"] == {"min": [1, 1], "opt": [4, 16], "max": [8, 128]}
    model = onnx.load(str(out / "model.onnx"))
    assert [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim][:2] == ["batch", "seq"]  # stays dynamic
    code = main(["compile", str(SAMPLES / "transformer_torchscript.onnx"), "--backend", "tensorrt", "-q", "-o", str(out),
                 "--shapes", "input=1x1x32:4x16x64:8x128x64"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == "kiln: error: --shapes input: dim 2 is fixed at 64, got 32"


def test_a_newer_opset_is_converted_into_the_parser_range(tmp_path, capsys) -> None:
    import onnx.version_converter

    source = tmp_path / "mlp25.onnx"
    onnx.save(onnx.version_converter.convert_version(onnx.load(str(SAMPLES / "mlp.onnx")), 25), str(source))
    out = tmp_path / "trt"
    assert main(["compile", str(source), "--backend", "tensorrt", "-o", str(out)]) == 0
    assert "note: tensorrt: converted opset 25 to 24" in capsys.readouterr().out
    model = onnx.load(str(out / "model.onnx"))
    assert {o.domain: o.version for o in model.opset_import}[""] == 24
    section = json.loads((out / "report.json").read_text())["sections"]["tensorrt"]
    assert section["supported"] and section["opset_conversion"] == {"from": 25, "to": 24}
    inputs = dict(np.load(SAMPLES / "data" / "mlp_inputs.npz"))
    expected = np.load(SAMPLES / "data" / "mlp_outputs.npz")
    verdict = compare_outputs([expected[o.name] for o in model.graph.output], run_onnxruntime(model, inputs), rtol=1e-4, atol=1e-5)
    assert verdict.ok, verdict.message
