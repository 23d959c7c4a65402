"""Issue 3 point 5: every sample model on --backend cpu matches onnxruntime within rtol 1e-4 /
atol 1e-5 in fp32, before (-O0) and after (-O2) the optimization pipeline."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import compiler
from compiler.reference import compare_outputs, run_onnxruntime

SAMPLES = pathlib.Path(__file__).resolve().parent.parent / "samples"
MODELS = sorted(path.stem for path in SAMPLES.glob("*.onnx"))


def _inputs(name: str, graph) -> dict[str, np.ndarray]:
    data = SAMPLES / "data" / f"{name}_inputs.npz"
    if data.exists():
        with np.load(data) as stored:
            return {key: stored[key] for key in stored.files}
    from compiler.reference import random_inputs

    return random_inputs(graph, dim_sizes={"batch": 3})


@pytest.mark.skipif(not MODELS, reason="samples/ holds no models yet")
@pytest.mark.parametrize("opt_level", [0, 2])
@pytest.mark.parametrize("name", MODELS)
def test_sample_matches_onnxruntime(name, opt_level):
    import onnx

    path = SAMPLES / f"{name}.onnx"
    compiled = compiler.compile(str(path), backend="cpu", opt_level=opt_level)
    feeds = _inputs(name, compiled.graph)
    feeds = {key: value for key, value in feeds.items() if key in compiled.input_names}
    expected = run_onnxruntime(onnx.load(str(path)), feeds)
    verdict = compare_outputs(expected, compiled(**feeds), rtol=1e-4, atol=1e-5, names=compiled.output_names)
    assert verdict.ok, f"{name} -O{opt_level}: {verdict.message}"


@pytest.mark.skipif(not MODELS, reason="samples/ holds no models yet")
@pytest.mark.parametrize("name", [m for m in MODELS if m.startswith("transformer")] or ["transformer_dynamo"])
def test_sample_artifact_keeps_symbolic_dims_and_reloads(name, tmp_path):
    """The saved jax.export artifact of a transformer sample keeps batch and sequence symbolic and,
    reloaded, matches onnxruntime at a batch/sequence other than the sample data's."""
    import onnx

    from compiler.backend_registry import load_artifact
    from compiler.reference import random_inputs

    path = SAMPLES / f"{name}.onnx"
    if not path.exists():
        pytest.skip(f"{name} not built")
    compiled = compiler.compile(str(path), backend="cpu", opt_level=2)
    out = compiled.save(str(tmp_path / "out"))
    assert set(compiled.manifest()["jax"]["symbolic_dims"]) == {"batch", "seq"}
    reloaded = load_artifact(out)
    feeds = random_inputs(compiled.graph, seed=4, dim_sizes={"batch": 3, "seq": 5})
    feeds["mask"] = np.arange(5)[None, :] < np.array([5, 3, 1])[:, None]  # key padding, never a fully masked row
    expected = run_onnxruntime(onnx.load(str(path)), feeds)
    verdict = compare_outputs(expected, reloaded(**feeds), rtol=1e-4, atol=1e-5)
    assert verdict.ok, verdict.message
