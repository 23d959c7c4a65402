"""Bad input gets one clear error line and a non-zero exit, no traceback, no partial output."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.cli import main


def _valid_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Neg", ["r"], ["y"], name="neg")]
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])


def _write(path, model: onnx.ModelProto) -> str:
    with open(path, "wb") as handle:
        handle.write(model.SerializeToString())
    return str(path)


def _missing(tmp_path):
    return str(tmp_path / "nope.onnx"), r"model file not found: .*nope\.onnx"


def _not_onnx(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is a text file, not a model\n" * 20)
    return str(path), r"notes\.onnx is (not an ONNX model|truncated or corrupt)"


def _truncated(tmp_path):
    data = _valid_model().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) * 2 // 3])
    return str(path), r"cut\.onnx is truncated or corrupt"


def _cycle(tmp_path):
    model = _valid_model()
    model.graph.node[0].input[0] = "y"  # relu reads neg's output; neg reads relu's
    return _write(tmp_path / "cycle.onnx", model), r"graph has a cycle: 'relu' -> 'neg' -> 'relu'|graph has a cycle: 'neg' -> 'relu' -> 'neg'"


def _undefined(tmp_path):
    model = _valid_model()
    model.graph.node[1].input[0] = "ghost"
    return _write(tmp_path / "undefined.onnx", model), r"node 'neg' reads undefined value 'ghost'"


def _unknown_domain(tmp_path):
    model = _valid_model()
    model.graph.node[1].domain = "com.example.secret"
    model.opset_import.append(helper.make_opsetid("com.example.secret", 1))
    return _write(tmp_path / "domain.onnx", model), r"uses op 'Neg' from unknown domain 'com\.example\.secret'"


def _external_escape(tmp_path):
    model = _valid_model()
    weight = numpy_helper.from_array(np.ones(4, np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../../etc/passwd"), ("offset", "0"), ("length", "16")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    model.graph.initializer.append(weight)
    model.graph.node[1].input[0] = "r"
    model.graph.node.append(helper.make_node("Add", ["y", "w"], ["z"], name="add"))
    model.graph.output[0].name = "z"
    folder = tmp_path / "model_dir"
    folder.mkdir()
    return _write(folder / "escape.onnx", model), r"external-data location '\.\./\.\./etc/passwd' outside the model's folder"


CASES = {
    "missing file": _missing,
    "not onnx": _not_onnx,
    "truncated": _truncated,
    "cycle": _cycle,
    "undefined value": _undefined,
    "unknown domain": _unknown_domain,
    "external data outside folder": _external_escape,
}


def _run(argv, capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("command", ["compile", "inspect"])
def test_bad_model_gives_one_line(case, command, tmp_path, capsys) -> None:
    model_path, message = CASES[case](tmp_path)
    before = open(model_path, "rb").read() if os.path.exists(model_path) else None
    out = tmp_path / "out"
    argv = ["-q", "compile", model_path, "--backend", "onnx", "-o", str(out)] if command == "compile" else ["inspect", model_path]
    code, stdout, stderr = _run(argv, capsys)
    assert code != 0
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("kiln: error: ")
    import re

    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in stderr + stdout
    assert not out.exists()
    leftovers = [p for p in os.listdir(tmp_path) if p.startswith(".")]
    assert leftovers == []
    if before is not None:
        assert open(model_path, "rb").read() == before  # input never modified


def test_output_folder_must_exist(tmp_path, capsys) -> None:
    model_path = _write(tmp_path / "ok.onnx", _valid_model())
    target = tmp_path / "no" / "such" / "dir" / "out"
    code, _, stderr = _run(["-q", "compile", model_path, "--backend", "onnx", "-o", str(target)], capsys)
    assert code != 0
    assert stderr.strip().splitlines() == [f"kiln: error: output folder {target.parent} does not exist (create it first)"]
    assert not (tmp_path / "no").exists()


def test_output_file_in_missing_folder_for_onnx_file_output(tmp_path, capsys) -> None:
    model_path = _write(tmp_path / "ok.onnx", _valid_model())
    target = tmp_path / "missing" / "opt.onnx"
    code, _, stderr = _run(["-q", "compile", model_path, "--backend", "onnx", "-o", str(target)], capsys)
    assert code != 0 and "does not exist" in stderr and len(stderr.strip().splitlines()) == 1


def test_real_process_exit_code_and_stderr(tmp_path) -> None:
    """The installed console entry point behaves the same as main() in a fresh process."""
    model_path, _ = _cycle(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "compiler.cli", "-q", "compile", model_path, "--backend", "onnx", "-o", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("kiln: error: graph has a cycle")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_api_raises_typed_errors(tmp_path) -> None:
    import compiler
    from compiler.errors import InvalidGraphError, ModelLoadError

    with pytest.raises(ModelLoadError, match="not found"):
        compiler.load(tmp_path / "absent.onnx")
    path, _ = _undefined(tmp_path)
    with pytest.raises(InvalidGraphError, match="undefined value 'ghost'"):
        compiler.load(path)
    with pytest.raises(ModelLoadError, match="expected a model path or onnx.ModelProto"):
        compiler.load(42)


@pytest.mark.parametrize("args, kwargs, message", [
    ((np.zeros((2, 4), np.float32), np.zeros(3, np.float32)), {}, r"model takes 1 inputs \(x\), got 2"),
    ((), {"y": np.zeros((2, 4), np.float32)}, r"model has no input named 'y'"),
    ((np.zeros((2, 4), np.float32),), {"x": np.zeros((2, 4), np.float32)}, r"input 'x' given twice"),
    ((), {}, r"missing model input\(s\): x"),
    ((np.zeros((2, 4), np.complex64),), {}, r"input 'x' must be float32, got complex64"),
    ((np.zeros(4, np.float32),), {}, r"input 'x' must have rank 2 .*, got shape \(4,\)"),
    ((np.zeros((2, 5), np.float32),), {}, r"input 'x' dim 1 must be 4, got 5 \(shape \(2, 5\)\)"),
])
def test_calling_a_compiled_model_with_wrong_inputs_names_the_mistake(args, kwargs, message) -> None:
    import compiler
    from compiler.errors import OptionError

    model = compiler.compile(_valid_model(), backend="cpu", opt_level=0)
    with pytest.raises(OptionError, match=message):
        model(*args, **kwargs)
    doubles = np.arange(8, dtype=np.float64).reshape(2, 4) - 4  # a same-kind dtype is cast, not refused
    np.testing.assert_array_equal(model(doubles)[0], -np.maximum(doubles, 0).astype(np.float32))
