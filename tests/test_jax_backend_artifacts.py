"""The JAX backend's saved artifacts: jax.export serialized module (symbolic batch kept), StableHLO
text and weights; reloading them in a fresh process; refusing platforms absent here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

import compiler
from compiler.backend_registry import load_artifact
from compiler.errors import ModelLoadError, OptionError, UnsupportedError
from jax_backend_support import ensure_basic_rules, mlp_model, onnxruntime_outputs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module", autouse=True)
def _rules() -> None:
    ensure_basic_rules()


def _report(folder) -> dict:
    with open(os.path.join(folder, "report.json")) as handle:
        return json.load(handle)


def test_save_writes_export_stablehlo_and_weights(tmp_path):
    model = mlp_model()
    out = compiler.compile(model, backend="cpu", opt_level=0).save(str(tmp_path / "out"))
    assert sorted(os.listdir(out)) == ["model.jax_export", "model.onnx", "params.npz", "report.json", "stablehlo.mlir"]
    manifest = _report(out)["artifacts"]["jax"]
    assert manifest["export_platforms"] == ["cpu"]
    assert manifest["symbolic_dims"] == {"batch": "batch"}
    assert manifest["input_shapes"] == ["(batch, 8)"]
    assert manifest["param_names"] == ["W1", "b1", "W2", "b2"]
    text = open(os.path.join(out, "stablehlo.mlir")).read()
    assert "tensor<?x8xf32>" in text and "tensor<?x4xf32>" in text  # the batch stays symbolic
    with np.load(os.path.join(out, "params.npz")) as stored:
        # on the CPU the MatMul weights are stored [N, K] (weight_layout.py), and the manifest says so
        assert sorted(stored.files) == ["p0", "p1", "p2", "p3"] and stored["p0"].shape == (16, 8)
    assert manifest["param_layouts"] == {"W1": [1, 0], "W2": [1, 0]}


def test_weights_are_arguments_not_constants(tmp_path):
    """The weight matrices enter the exported module as arguments (stored [N, K] on the CPU); no
    weight constant is baked in, in either layout."""
    cm = compiler.compile(mlp_model(), backend="cpu", opt_level=0)
    text = cm.export().mlir_module()
    main = text[text.index("func.func public @main"):].split("\n", 1)[0]
    assert "tensor<16x8xf32>" in main and "tensor<4x16xf32>" in main
    assert not re.search(r"constant dense<[^>]*> : tensor<(8x16|16x4|16x8|4x16)xf32>", text)
    assert set(cm.params) == {"W1", "b1", "W2", "b2"}


RELOAD_SCRIPT = """
import json, sys
import numpy as np
from compiler.backend_registry import load_artifact
model = load_artifact(sys.argv[1])
results = {}
for batch in (3, 7):
    x = np.random.default_rng(batch).standard_normal((batch, 8)).astype(np.float32)
    results[str(batch)] = model(x)[0].tolist()
print(json.dumps({"backend": model.backend_name, "outputs": results}))
"""


def test_reload_runs_in_a_fresh_process_and_matches_onnxruntime(tmp_path):
    model = mlp_model()
    out = compiler.compile(model, backend="cpu", opt_level=2).save(str(tmp_path / "out"))
    env = dict(os.environ, PYTHONPATH=REPO, KILN_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", RELOAD_SCRIPT, out], capture_output=True, text=True, env=env,
                          cwd=str(tmp_path), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    reloaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert reloaded["backend"] == "cpu"
    for batch in (3, 7):  # two batch sizes through the one symbolic artifact
        x = np.random.default_rng(batch).standard_normal((batch, 8)).astype(np.float32)
        expected = onnxruntime_outputs(model, {"X": x})[0]
        np.testing.assert_allclose(np.array(reloaded["outputs"][str(batch)], np.float32), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend, platform", [("tpu", "tpu"), ("gpu", "cuda")])
def test_export_for_an_absent_platform_writes_artifacts_and_refuses_to_run(tmp_path, backend, platform):
    if backend == "gpu" and jax.default_backend() == "gpu":
        pytest.skip("this machine has a GPU")
    cm = compiler.compile(mlp_model(), backend=backend, opt_level=0)
    x = np.ones((2, 8), np.float32)
    with pytest.raises(UnsupportedError) as raised:
        cm(x)
    assert raised.value.one_line() == (f"model was compiled for {backend}; this machine has cpu (save it (kiln compile -o OUT) "
                                       "and run the artifact where that platform exists)")
    out = cm.save(str(tmp_path / "out"))
    exported = jax.export.deserialize(bytearray(open(os.path.join(out, "model.jax_export"), "rb").read()))
    assert exported.platforms == (platform,)
    assert str(exported.in_avals[-1].shape) == "(batch, 8)"
    assert "tensor<?x8xf32>" in open(os.path.join(out, "stablehlo.mlir")).read()
    with pytest.raises(UnsupportedError) as refused:
        load_artifact(out)
    assert refused.value.one_line() == (f"artifact was compiled for {backend}; this machine has cpu "
                                        f"(run it on a machine with a {backend}, or recompile with --backend cpu)")


def test_static_shapes_option_fixes_the_exported_dims(tmp_path):
    cm = compiler.compile(mlp_model(), backend="cpu", opt_level=0, static_shapes=["X=5x8"])
    assert str(cm.export().in_avals[-1].shape) == "(5, 8)"
    with pytest.raises(OptionError, match="rank 3 given"):
        compiler.compile(mlp_model(), backend="cpu", opt_level=0, static_shapes=["X=5x8x1"]).export()


def test_bfloat16_weights_round_trip(tmp_path):
    from backends.jax.artifacts import read_params, write_artifacts

    weights = {"w": np.arange(6, dtype=np.float32).reshape(2, 3).astype(jax.numpy.bfloat16), "v": np.ones(3, np.float16)}
    exported = jax.export.export(jax.jit(lambda p, x: p["w"].astype(np.float32) @ x))(
        {k: jax.ShapeDtypeStruct(a.shape, a.dtype) for k, a in weights.items()}, jax.ShapeDtypeStruct((3,), np.float32))
    entries = write_artifacts(str(tmp_path), exported, weights)
    back = read_params(str(tmp_path), entries)
    assert back["w"].dtype == jax.numpy.bfloat16 and back["v"].dtype == np.float16
    np.testing.assert_array_equal(back["w"].astype(np.float32), weights["w"].astype(np.float32))


def test_corrupt_artifact_is_one_clear_error(tmp_path):
    out = compiler.compile(mlp_model(), backend="cpu", opt_level=0).save(str(tmp_path / "out"))
    with open(os.path.join(out, "model.jax_export"), "wb") as handle:
        handle.write(b"not a flatbuffer")
    with pytest.raises(ModelLoadError, match="cannot deserialize the JAX artifact"):
        load_artifact(out)


def _table_model():
    """y = x + table[:seq] * seq: a constant table sliced by the input's symbolic length (BERT's
    position embeddings), and a shape-derived number meeting a traced tensor."""
    from onnx import TensorProto, helper, numpy_helper

    table = np.arange(8 * 4, dtype=np.float32).reshape(8, 4)
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["seq"], axis=0),
        helper.make_node("Unsqueeze", ["seq", "zero"], ["end"]),
        helper.make_node("Slice", ["table", "start", "end", "zero"], ["rows"]),
        helper.make_node("Cast", ["steps"], ["steps_int"], to=TensorProto.INT64),
        helper.make_node("Mul", ["steps_int", "end"], ["scaled_int"]),  # traced int64 x [seq]
        helper.make_node("Cast", ["scaled_int"], ["scaled"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["rows", "scaled"], ["weighted"]),
        helper.make_node("Add", ["x", "weighted"], ["y"]),
    ]
    inits = [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array(1, np.int64), "one"),
             numpy_helper.from_array(np.array([0], np.int64), "zero"), numpy_helper.from_array(np.array([0], np.int64), "start")]
    graph = helper.make_graph(
        nodes, "table", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 4]),
                         helper.make_tensor_value_info("steps", TensorProto.FLOAT, ["batch", 1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_slice_of_a_constant_table_by_a_symbolic_length_exports_with_its_bound(tmp_path):
    """jax.export cannot tell that table[:seq] has seq rows unless seq <= 8 is declared: the export
    finds that bound in the graph, the manifest lists it, and a longer input is one clear error."""
    model = _table_model()
    out = compiler.compile(model, backend="cpu", opt_level=0).save(str(tmp_path / "out"))
    assert _report(out)["artifacts"]["jax"]["symbolic_bounds"] == ["seq <= 8"]
    reloaded = load_artifact(out)
    rng = np.random.default_rng(0)
    for batch, seq in ((2, 5), (1, 8)):
        feeds = {"x": rng.standard_normal((batch, seq, 4)).astype(np.float32),
                 "steps": rng.integers(1, 4, (batch, 1, 1)).astype(np.float32)}
        np.testing.assert_allclose(reloaded(**feeds)[0], onnxruntime_outputs(model, feeds)[0], rtol=1e-6)
    too_long = {"x": np.zeros((1, 9, 4), np.float32), "steps": np.ones((1, 1, 1), np.float32)}
    with pytest.raises(OptionError, match=r"input dim seq=9 is over 8, the most this model takes"):
        reloaded(**too_long)
