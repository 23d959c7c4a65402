"""The CLI over the API: compile --backend onnx writes an optimized model and report.json;
inspect prints ops, parameters, FLOPs and the interface; long work shows progress."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx

from compiler.cli import main
from compiler.reference import compare_outputs, run_onnxruntime

from conftest import SAMPLES


def test_compile_onnx_writes_model_and_report(tmp_path, capsys) -> None:
    out = tmp_path / "cnn"
    code = main(["compile", str(SAMPLES / "cnn_bn_residual.onnx"), "--backend", "onnx", "-O1", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert sorted(os.listdir(out)) == ["model.onnx", "report.json"]
    model = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    report = json.loads((out / "report.json").read_text())
    assert report["backend"] == "onnx" and report["opt_level"] == 1
    assert report["passes"][0]["name"] == "fold_constants"
    assert {"name", "seconds", "nodes_before", "nodes_after", "counters", "modified"} <= set(report["passes"][0])
    assert report["after"]["nodes"] == len(model.graph.node)
    assert "kiln: [1] fold_constants" in captured.err  # progress on stderr
    assert "nodes, pipeline -O1 for backend onnx" in captured.out
    inputs = dict(np.load(SAMPLES / "data" / "cnn_bn_residual_inputs.npz"))
    original = onnx.load(str(SAMPLES / "cnn_bn_residual.onnx"))
    verdict = compare_outputs(run_onnxruntime(original, inputs), run_onnxruntime(model, inputs))
    assert verdict.ok, verdict.message


def test_compile_onnx_to_a_file(tmp_path, capsys) -> None:
    target = tmp_path / "mlp.opt.onnx"
    assert main(["-q", "compile", str(SAMPLES / "mlp.onnx"), "--backend", "onnx", "-o", str(target)]) == 0
    assert target.exists() and (tmp_path / "mlp.opt.report.json").exists()
    assert capsys.readouterr().err == ""


def test_inspect_prints_histogram_params_flops_interface(capsys) -> None:
    assert main(["inspect", str(SAMPLES / "mlp.onnx")]) == 0
    text = capsys.readouterr().out
    assert "input: float[batch, 64]" in text and "logits: float[batch, 10]" in text
    assert "parameters: 17,226" in text  # 64*128+128 + 128*64+64 + 64*10+10
    # 2*(64*128 + 128*64 + 64*10) multiply-adds + 202 bias adds + 192 relu = 34,442
    assert "FLOPs (estimate at batch=1): 34,442" in text
    assert "Gemm  3" in text and "Relu  2" in text


def test_inspect_json(capsys) -> None:
    assert main(["inspect", "--json", "--dim", "batch=8", str(SAMPLES / "transformer_torchscript.onnx")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["flops_symbols"] == {"batch": 8, "seq": 1}
    assert summary["ops"]["MatMul"] == 8
    assert [i["shape"] for i in summary["inputs"]] == [["batch", "seq", 64], ["batch", "seq"]]


def test_readme_quick_start_runs_in_a_fresh_checkout(tmp_path, monkeypatch, capsys) -> None:
    """The README's first command, minus the venv set-up, from a folder holding only samples/:
    every `mkdir` step runs, then the kiln call must succeed and write the artifact folder."""
    import re
    import shlex
    import shutil

    readme = (SAMPLES.parent / "README.md").read_text()
    command = re.search(r"<!-- quickstart:run -->\s*```bash\n(.+)\n```", readme).group(1)
    shutil.copytree(SAMPLES, tmp_path / "samples")
    monkeypatch.chdir(tmp_path)
    steps = [shlex.split(step) for step in command.split("&&")]
    for step in steps:
        if step[0] == "mkdir":
            for folder in step[1:]:
                if not folder.startswith("-"):
                    os.makedirs(folder, exist_ok=True)
    kiln = next(step for step in steps if step[0].endswith("bin/kiln"))
    assert main(kiln[1:]) == 0
    out = kiln[kiln.index("-o") + 1]
    assert {"model.onnx", "report.json"} <= set(os.listdir(out))
    assert "fuse_attention" in capsys.readouterr().out
