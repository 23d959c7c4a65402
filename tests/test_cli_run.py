"""`kiln compile --backend cpu|gpu|tpu`, `kiln run OUT --inputs DATA [--compare onnxruntime]` and
`kiln bench`, through the CLI entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from compiler.cli import main
from jax_backend_support import ensure_basic_rules, mlp_model, onnxruntime_outputs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module", autouse=True)
def _rules() -> None:
    ensure_basic_rules()


@pytest.fixture
def model_and_data(tmp_path):
    model = mlp_model(seed=3)
    path = tmp_path / "mlp.onnx"
    path.write_bytes(model.SerializeToString())
    x = np.random.default_rng(5).standard_normal((6, 8)).astype(np.float32)
    data = tmp_path / "inputs.npz"
    np.savez(data, X=x)
    return model, str(path), str(data), x


def test_compile_then_run_with_compare(model_and_data, tmp_path, capsys):
    model, path, data, x = model_and_data
    out = str(tmp_path / "out")
    assert main(["compile", path, "--backend", "cpu", "-o", out, "-q"]) == 0
    printed = capsys.readouterr().out
    assert "jax cpu: 4 weights" in printed and "symbolic dims: batch" in printed and f"wrote {out}" in printed
    saved = str(tmp_path / "outputs.npz")
    assert main(["run", out, "--inputs", data, "--compare", "onnxruntime", "--save", saved]) == 0
    printed = capsys.readouterr().out
    assert "Y: float32[6, 4]" in printed and "on backend cpu" in printed
    assert "compare with onnxruntime: outputs match" in printed
    with np.load(saved) as outputs:
        np.testing.assert_allclose(outputs["Y"], onnxruntime_outputs(model, {"X": x})[0], rtol=1e-4, atol=1e-5)


def test_run_a_model_file_directly(model_and_data, capsys):
    _, path, data, _ = model_and_data
    assert main(["run", path, "--inputs", data, "--compare", "onnxruntime"]) == 0
    assert "outputs match" in capsys.readouterr().out


@pytest.mark.parametrize("backend", ["tpu", "gpu"])
def test_tpu_and_gpu_artifacts_are_written_here_and_refused_by_run(model_and_data, tmp_path, capsys, backend):
    import jax

    if backend == "gpu" and jax.default_backend() == "gpu":
        pytest.skip("this machine has a GPU")
    _, path, data, _ = model_and_data
    out = tmp_path / f"out_{backend}"
    assert main(["compile", path, "--backend", backend, "-o", str(out), "-q"]) == 0
    assert f"jax {backend}: 4 weights" in capsys.readouterr().out
    assert {"model.jax_export", "stablehlo.mlir", "params.npz", "model.onnx", "report.json"} <= set(os.listdir(out))
    assert main(["run", str(out), "--inputs", data]) == 2
    assert capsys.readouterr().err == (f"kiln: error: artifact was compiled for {backend}; this machine has cpu "
                                       f"(run it on a machine with a {backend}, or recompile with --backend cpu)\n")


def test_run_in_a_fresh_process_through_the_console_entry(model_and_data, tmp_path):
    """The artifact reloads in a new interpreter that has no lowering rules registered by this test."""
    model, path, data, x = model_and_data
    out = str(tmp_path / "out")
    assert main(["compile", path, "--backend", "cpu", "-O2", "-o", out, "-q"]) == 0
    saved = str(tmp_path / "fresh.npz")
    env = dict(os.environ, PYTHONPATH=REPO, KILN_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-m", "compiler.cli", "run", out, "--inputs", data, "--save", saved],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=120)
    assert done.returncode == 0, done.stderr
    with np.load(saved) as outputs:
        np.testing.assert_allclose(outputs["Y"], onnxruntime_outputs(model, {"X": x})[0], rtol=1e-4, atol=1e-5)


def test_run_rejects_inputs_that_do_not_fit(model_and_data, tmp_path, capsys):
    _, path, _, _ = model_and_data
    out = str(tmp_path / "out")
    assert main(["compile", path, "-o", out, "-q"]) == 0
    capsys.readouterr()
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, X=np.ones((2, 5), np.float32))
    assert main(["run", out, "--inputs", str(wrong)]) == 2
    assert capsys.readouterr().err == "kiln: error: input 'X' dim 1 must be 8, got 5 (shape (2, 5))\n"
    named = tmp_path / "named.npz"
    np.savez(named, A=np.ones((2, 8), np.float32), B=np.ones((2, 8), np.float32))
    assert main(["run", out, "--inputs", str(named)]) == 2
    assert "lacks arrays for input(s) X" in capsys.readouterr().err


def test_bench_reports_both_runtimes(model_and_data, tmp_path, capsys):
    _, path, _, _ = model_and_data
    result_path = tmp_path / "bench.json"
    assert main(["bench", path, "--batch", "4", "--repeat", "5", "--warmup", "1", "--threads", "1",
                 "--json", str(result_path)]) == 0
    printed = capsys.readouterr().out
    assert "kiln cpu" in printed and "onnxruntime (ALL opt)" in printed and "outputs match" in printed
    result = json.loads(result_path.read_text())
    assert result["inputs"] == {"X": [4, 8]} and result["threads"] == 1 and result["outputs_match"] is True
    for runtime in ("kiln", "onnxruntime"):
        timing = result[runtime]
        assert timing["repeat"] == 5 and 0 < timing["min_ms"] <= timing["median_ms"] <= timing["p90_ms"]
    assert result["speedup"] == pytest.approx(result["onnxruntime"]["median_ms"] / result["kiln"]["median_ms"])
    assert result["machine"]["cpu"]
    assert "CPU time stolen by other guests while timing:" in printed
    assert result["steal_percent"] is None or 0 <= result["steal_percent"] <= 100  # None: no tick passed


def test_stolen_cpu_time_is_read_from_the_kernels_cpu_line(tmp_path):
    from compiler.benchmark import cpu_ticks, steal_percent, steal_sentence

    stat = tmp_path / "stat"
    stat.write_text("cpu  100 5 20 9000 7 3 2 30 0 0\ncpu0 50 2 10 4500 3 1 1 15 0 0\n")
    before = cpu_ticks(str(stat))
    assert before == (130, 30)  # user + nice + system + irq + softirq; steal
    stat.write_text("cpu  400 5 70 9900 7 3 2 80 0 0\n")
    assert steal_percent(before, cpu_ticks(str(stat))) == pytest.approx(100 * 50 / (350 + 50), abs=0.05)
    assert cpu_ticks(str(tmp_path / "absent")) is None and steal_percent(None, before) is None
    assert steal_sentence(None).endswith("not measured.") and "12.5%" in steal_sentence(12.5)
