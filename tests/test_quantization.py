"""int8 QDQ insertion, calibration statistics, the tensorrt profile, int4 weight-only and the
error report, checked with onnx.checker and onnxruntime on the samples."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest

import compiler
from compiler.cli import main
from compiler.data import stream_batches
from compiler.errors import OptionError
from compiler.onnx_io import export_model
from compiler.reference import run_onnxruntime
from passes.quantization.statistics import TensorStatistics

CALIBRATION = "samples/data/digits_calibration.npz"
FP32_ACCURACY = 0.9822


@pytest.fixture(scope="module")
def digits_int8(samples_dir):
    return compiler.compile(samples_dir / "digits_cnn.onnx", backend="onnx", quantize="int8",
                            calibration=str(samples_dir.parent / CALIBRATION))


def _ops(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(n.op_type for n in model.graph.node)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_digits_int8_counts_checker_and_accuracy(digits_int8, samples_dir):
    model = export_model(digits_int8.graph)
    onnx.checker.check_model(model, full_check=True)
    ops = _ops(model)
    assert ops["QuantizeLinear"] == 4 and ops["DequantizeLinear"] == 12  # 4 activations, 4 weights, 4 biases
    types = collections.Counter(onnx.TensorProto.DataType.Name(t.data_type) for t in model.graph.initializer if len(t.dims) >= 2)
    assert types == {"INT8": 4}  # every Conv/Gemm weight is stored as int8, no float copy left
    assert {onnx.TensorProto.DataType.Name(t.data_type) for t in model.graph.initializer if t.name.startswith(("features.0.bias", "classifier.2.bias"))} >= {"INT32"}
    test = np.load(samples_dir / "data" / "digits_test.npz")
    logits = run_onnxruntime(model, {"input": test["input"]})[0]
    accuracy = float((logits.argmax(1) == test["label"]).mean())
    assert accuracy >= FP32_ACCURACY - 0.005
    original = (samples_dir / "digits_cnn.onnx").stat().st_size
    assert original / len(model.SerializeToString()) > 3.45  # 3.50x measured (bench/compression.py)


def test_report_section_has_every_quantized_tensor(digits_int8):
    section = digits_int8.report.sections["quantization"]
    assert section["mode"] == "int8" and section["profile"] == "default"
    assert section["calibration"] == {"method": "percentile", "batches": 4, "samples": 128}
    kinds = collections.Counter(layer["kind"] for layer in section["layers"])
    assert kinds == {"weight": 4, "activation": 4}
    conv = next(l for l in section["layers"] if l["kind"] == "weight" and l["node"] == "/features/features.2/Conv")
    assert len(conv["scale"]) == 32 and conv["zero_point"] == [0] * 32
    assert all(25.0 < layer["sqnr_db"] < 200.0 and layer["max_abs_error"] > 0 for layer in section["layers"])


def test_missing_calibration_is_one_clear_line(samples_dir, capsys, tmp_path):
    code = main(["compile", str(samples_dir / "digits_cnn.onnx"), "--backend", "onnx", "--quantize", "int8", "-o", str(tmp_path / "q.onnx")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in error
    assert error.startswith("kiln: error: --quantize int8 quantizes activations and needs calibration data")
    assert "pass --calibration DATA" in error


def test_exclude_by_op_type_and_weight_only(samples_dir):
    calibration = str(samples_dir.parent / CALIBRATION)
    excluded = compiler.compile(samples_dir / "digits_cnn.onnx", backend="onnx", quantize="int8", calibration=calibration, quantize_exclude=["Gemm"])
    assert _ops(export_model(excluded.graph))["QuantizeLinear"] == 2
    assert _ops(export_model(excluded.graph))["DequantizeLinear"] == 6
    named = compiler.compile(samples_dir / "digits_cnn.onnx", backend="onnx", quantize="int8", calibration=calibration,
                             quantize_include=["/features/features.0/Conv"])
    assert _ops(export_model(named.graph))["QuantizeLinear"] == 1
    weights = compiler.compile(samples_dir / "digits_cnn.onnx", backend="onnx", quantize="int8", weight_only=True)
    assert _ops(export_model(weights.graph)) == {"DequantizeLinear": 4, "Conv": 2, "Gemm": 2, "Relu": 3, "MaxPool": 1, "Flatten": 1}


def test_tensorrt_profile_residuals_and_float_bias(samples_dir):
    data = dict(np.load(samples_dir / "data" / "cnn_bn_residual_inputs.npz"))
    reference = compiler.compile(samples_dir / "cnn_bn_residual.onnx", backend="onnx")(**data)[0]
    compiled = compiler.compile(samples_dir / "cnn_bn_residual.onnx", backend="onnx", quantize="int8",
                                calibration=str(samples_dir / "data" / "cnn_bn_residual_inputs.npz"), quantize_profile="tensorrt")
    model = export_model(compiled.graph)
    onnx.checker.check_model(model, full_check=True)
    counters = next(record.counters for record in compiled.report.passes if record.name == "quantize")
    assert counters["residual_inputs"] == 3 and counters["layers_quantized"] == 9 and counters.get("biases_quantized", 0) == 0
    ops = _ops(model)
    assert ops["QuantizeLinear"] == counters["activations_quantized"]
    assert ops["DequantizeLinear"] == counters["activations_quantized"] + 9
    assert not any(t.data_type == onnx.TensorProto.INT32 for t in model.graph.initializer)
    zero_points = [t for t in model.graph.initializer if t.name.endswith("_zp")]
    assert zero_points and all(t.data_type == onnx.TensorProto.INT8 for t in zero_points)
    for add in (n for n in model.graph.node if n.op_type == "Add"):
        producers = {o: n.op_type for n in model.graph.node for o in n.output}
        assert "DequantizeLinear" in {producers.get(i) for i in add.input}
    assert _cosine(reference, run_onnxruntime(model, data)[0]) > 0.99


def test_transformer_int8_cosine(samples_dir, tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "calibration.npz"
    np.savez(path, input=rng.standard_normal((32, 8, 64)).astype(np.float32), mask=np.ones((32, 8), bool))
    data = dict(np.load(samples_dir / "data" / "transformer_torchscript_inputs.npz"))
    reference = compiler.compile(samples_dir / "transformer_torchscript.onnx", backend="onnx")(**data)[0]
    compiled = compiler.compile(samples_dir / "transformer_torchscript.onnx", backend="onnx", quantize="int8", calibration=str(path))
    model = export_model(compiled.graph)
    assert _ops(model)["QuantizeLinear"] == 4 and _ops(model)["MatMul"] == 6  # Q, K, V merged into one product
    assert _cosine(reference, run_onnxruntime(model, data)[0]) > 0.999


def test_int4_blockwise_weight_only(samples_dir):
    data = dict(np.load(samples_dir / "data" / "transformer_torchscript_inputs.npz"))
    reference = compiler.compile(samples_dir / "transformer_torchscript.onnx", backend="onnx")(**data)[0]
    compiled = compiler.compile(samples_dir / "transformer_torchscript.onnx", backend="onnx", quantize="int4")
    model = export_model(compiled.graph)
    onnx.checker.check_model(model, full_check=True)
    assert {o.domain: o.version for o in model.opset_import}[""] >= 21  # converted from 14 unless fusion raised it
    blocked = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert len(blocked) == 4 and all({a.name: a.i for a in n.attribute}["block_size"] == 32 for n in blocked)
    int4 = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT4]
    assert len(int4) == 4 and not any(t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2 and t.dims[0] >= 64 for t in model.graph.initializer)
    assert _cosine(reference, run_onnxruntime(model, data)[0]) > 0.99
    section = compiled.report.sections["quantization"]
    assert section["mode"] == "int4" and len(section["layers"]) == 4 and section["block_size"] == 32  # Q/K/V are one
    mlp = export_model(compiler.compile(samples_dir / "mlp.onnx", backend="onnx", opt_level=0, quantize="int4").graph)
    assert {o.domain: o.version for o in mlp.opset_import}[""] == 21  # opset 17 -> 21 by onnx.version_converter
    data = dict(np.load(samples_dir / "data" / "mlp_inputs.npz"))
    assert _cosine(next(iter(np.load(samples_dir / "data" / "mlp_outputs.npz").values())), run_onnxruntime(mlp, data)[0]) > 0.99


def test_statistics_methods_clip_outliers():
    stats = TensorStatistics()
    rng = np.random.default_rng(0)
    for _ in range(4):
        stats.update(rng.uniform(-1, 1, 10000).astype(np.float32))
    stats.update(np.array([50.0], dtype=np.float32))  # widens the histogram after the fact
    assert stats.histogram.sum() == 40001 and stats.amax == 50.0
    assert stats.threshold("minmax") == 50.0
    assert 0.9 < stats.threshold("percentile", percentile=99.9) < 1.1
    assert stats.threshold("entropy") < 5.0
    low, high = stats.value_range("percentile", percentile=99.9)
    assert -1.1 < low < -0.9 and 0.9 < high < 1.1


def test_mse_threshold_lowers_the_error_of_heavy_tails():
    values = np.random.default_rng(1).laplace(size=100000).astype(np.float32)
    stats = TensorStatistics()
    stats.update(values)
    limit = stats.threshold("mse")
    assert limit < stats.amax

    def error(clip: float) -> float:
        scale = clip / 127
        return float(np.mean((np.clip(np.rint(values / scale), -127, 127) * scale - values) ** 2))

    assert error(limit) < error(stats.amax)


def test_stream_batches_sources(tmp_path):
    np.savez(tmp_path / "data.npz", input=np.arange(10 * 3, dtype=np.float32).reshape(10, 3))
    messages = []
    batches = list(stream_batches(str(tmp_path / "data.npz"), ["input"], batch_size=4, progress=messages.append))
    assert [b["input"].shape[0] for b in batches] == [4, 4, 2] and len(messages) == 3
    folder = tmp_path / "folder"
    folder.mkdir()
    for index in range(3):
        np.save(folder / f"part{index}.npy", np.full((2, 3), index, dtype=np.float32))
    assert [float(b["input"][0, 0]) for b in stream_batches(str(folder), ["input"], max_samples=5)] == [0.0, 1.0, 2.0]

    def generate():
        for index in range(2):
            yield {"input": np.zeros((1, 3), np.float32) + index}

    assert len(list(stream_batches(generate, ["input"]))) == 2
    with pytest.raises(OptionError, match="no calibration data"):
        list(stream_batches(None, ["input"]))
    # from the API: a list of batches (by name, in input order, or a bare array), or one array
    pair = ["a", "b"]
    listed = [{"a": np.zeros((2, 3)), "b": np.ones((2, 1))}, (np.ones((1, 3)), np.zeros((1, 1)))]
    assert [(b["a"].shape, float(b["b"][0, 0])) for b in stream_batches(listed, pair)] == [((2, 3), 1.0), ((1, 3), 0.0)]
    assert [b["input"].shape for b in stream_batches([np.zeros((3, 3)), np.ones((1, 3))], ["input"], batch_size=2)] == \
        [(2, 3), (1, 3), (1, 3)]
    assert [b["input"].shape for b in stream_batches(np.zeros((5, 3)), ["input"], batch_size=4)] == [(4, 3), (1, 3)]
    with pytest.raises(OptionError, match="a batch must be a mapping, an array or a list of arrays, not str"):
        list(stream_batches(["data.npz"], ["input"]))
    with pytest.raises(OptionError, match=r"calibration data \(a generator\) yielded no batches"):
        list(stream_batches((batch for batch in ()), ["input"]))
    with pytest.raises(OptionError, match="not int"):
        list(stream_batches(3, ["input"]))


def test_callable_calibration_and_uint8_activations(samples_dir, tmp_path):
    script = tmp_path / "batches.py"
    script.write_text(
        "import numpy as np\n"
        f"DATA = np.load({str(samples_dir / 'data' / 'digits_calibration.npz')!r})['input']\n"
        "def batches():\n"
        "    for start in range(0, 128, 16):\n"
        "        yield {'input': DATA[start:start + 16]}\n")
    compiled = compiler.compile(samples_dir / "digits_cnn.onnx", backend="onnx", quantize="int8", calibration=f"{script}:batches",
                                activation_type="uint8", calibration_method="minmax")
    section = compiled.report.sections["quantization"]
    assert section["calibration"] == {"method": "minmax", "batches": 8, "samples": 128}
    model = export_model(compiled.graph)
    zero_points = [t for t in model.graph.initializer if t.name.endswith("_zp")]
    assert len(zero_points) == 4 and all(t.data_type == onnx.TensorProto.UINT8 for t in zero_points)
    activations = [layer for layer in section["layers"] if layer["kind"] == "activation"]
    assert all(layer["zero_point"] == 0 for layer in activations)  # inputs in [0, 1] and ReLU outputs: low = 0
    first = next(layer for layer in activations if layer["tensor"] == "input")
    assert abs(first["scale"] - 1.0 / 255) < 1e-6  # the full uint8 range spans [0, 1], not [-1, 1]
    test = np.load(samples_dir / "data" / "digits_test.npz")
    assert float((run_onnxruntime(model, {"input": test["input"]})[0].argmax(1) == test["label"]).mean()) >= FP32_ACCURACY - 0.005


def test_calibration_data_naming_the_wrong_input_is_one_line(samples_dir, tmp_path, capsys):
    np.savez(tmp_path / "wrong.npz", image=np.zeros((4, 1, 8, 8), np.float32), other=np.zeros(4, np.float32))
    code = main(["compile", str(samples_dir / "digits_cnn.onnx"), "--backend", "onnx", "--quantize", "int8", "-q",
                 "--calibration", str(tmp_path / "wrong.npz"), "-o", str(tmp_path / "q.onnx")])
    error = capsys.readouterr().err.strip()
    assert code != 0 and "\n" not in error and "lacks arrays for input(s) input" in error
