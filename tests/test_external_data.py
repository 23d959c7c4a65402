"""External data: loaded lazily (reading shapes touches no data), memory-mapped, round-tripped."""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import compiler
from compiler.ir import ExternalTensor
from compiler.onnx_io import export_model, save_model
from compiler.reference import run_onnxruntime


def _model_with_external_weight(folder) -> tuple[str, np.ndarray]:
    weight = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 32])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = os.path.join(folder, "model.onnx")
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    return path, weight


def test_external_weights_are_lazy_and_mapped(tmp_path) -> None:
    path, weight = _model_with_external_weight(tmp_path)
    graph = compiler.load(path)
    tensor = graph.initializers["w"].const_value
    assert isinstance(tensor, ExternalTensor)
    assert tuple(tensor.shape) == (64, 32) and tensor.nbytes == weight.nbytes
    assert not tensor.is_loaded  # reading the shape and size did not touch the file
    data = tensor.numpy()
    assert isinstance(data, np.memmap)
    np.testing.assert_array_equal(data, weight)


def test_external_data_round_trip_runs(tmp_path) -> None:
    path, weight = _model_with_external_weight(tmp_path)
    graph = compiler.load(path)
    out_folder = tmp_path / "out"
    out_folder.mkdir()
    save_model(export_model(graph), str(out_folder / "copy.onnx"), external_data=True, size_threshold=0)
    assert sorted(os.listdir(out_folder)) == ["copy.onnx", "copy.onnx.data"]
    reloaded = onnx.load(str(out_folder / "copy.onnx"))
    onnx.checker.check_model(str(out_folder / "copy.onnx"), full_check=True)
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    np.testing.assert_allclose(run_onnxruntime(reloaded, {"x": x})[0], x @ weight, rtol=1e-5, atol=1e-5)


def test_input_file_is_never_modified(tmp_path) -> None:
    path, _ = _model_with_external_weight(tmp_path)
    before = {name: open(tmp_path / name, "rb").read() for name in os.listdir(tmp_path)}
    cm = compiler.compile(path, backend="onnx", opt_level=2)
    cm.save(str(tmp_path / "result"))
    after = {name: open(tmp_path / name, "rb").read() for name in before}
    assert before == after
