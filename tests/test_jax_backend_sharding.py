"""--devices N shards the batch over a jax.sharding Mesh; --model-parallel M splits large weight
matrices over a "model" axis. Run on 4 simulated CPU devices (tests/conftest.py sets XLA_FLAGS)."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

import compiler
from compiler.errors import OptionError
from jax_backend_support import ensure_basic_rules, mlp_model, onnxruntime_outputs

pytestmark = pytest.mark.skipif(jax.device_count("cpu") < 4, reason="needs XLA_FLAGS=--xla_force_host_platform_device_count=4")

MODEL = mlp_model(inputs=32, hidden=64, outputs=16)
X = np.random.default_rng(0).standard_normal((8, 32)).astype(np.float32)


@pytest.fixture(scope="module", autouse=True)
def _rules() -> None:
    ensure_basic_rules()


@pytest.fixture(scope="module")
def single_device_outputs() -> np.ndarray:
    return compiler.compile(MODEL, backend="cpu", opt_level=0)(X)[0]


def test_batch_is_sharded_over_four_devices(single_device_outputs):
    cm = compiler.compile(MODEL, backend="cpu", opt_level=0, devices=4)
    assert cm.runner.placement.describe() == "4 cpu devices (mesh batch=4 x model=1)"
    placed = cm.runner.placement.place_inputs([X])[0]
    assert placed.sharding.spec == PartitionSpec("batch", None)
    assert {shard.data.shape for shard in placed.addressable_shards} == {(2, 32)}
    assert all(p.sharding.spec == PartitionSpec() for p in cm.runner.device_params.values())
    output = cm.runner.run_on_device([X])[0]
    assert len(output.sharding.device_set) == 4
    np.testing.assert_allclose(cm(X)[0], single_device_outputs, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(single_device_outputs, onnxruntime_outputs(MODEL, {"X": X})[0], rtol=1e-4, atol=1e-5)


def test_batch_not_divisible_runs_replicated(single_device_outputs):
    cm = compiler.compile(MODEL, backend="cpu", opt_level=0, devices=4)
    assert cm.runner.placement.place_inputs([X[:3]])[0].sharding.spec == PartitionSpec()
    np.testing.assert_allclose(cm(X[:3])[0], single_device_outputs[:3], rtol=1e-6, atol=1e-6)


def test_model_parallel_splits_large_weights(single_device_outputs):
    cm = compiler.compile(MODEL, backend="cpu", opt_level=0, devices=4, model_parallel=2, model_parallel_min_elements=512)
    placement = cm.runner.placement
    assert placement.describe() == "4 cpu devices (mesh batch=2 x model=2)"
    params = cm.runner.device_params
    assert params["W1"].sharding.spec == PartitionSpec(None, "model")  # 32x64: columns split
    assert {shard.data.shape for shard in params["W1"].addressable_shards} == {(32, 32)}
    assert params["W2"].sharding.spec == PartitionSpec(None, "model")
    assert params["b1"].sharding.spec == PartitionSpec()  # vectors stay replicated
    assert placement.sharded_params(cm.params) == ["W1", "W2"]
    hlo = cm.runner.lower([X]).compile().as_text()
    assert "all-gather" in hlo or "all-reduce" in hlo  # XLA SPMD inserted the collectives
    np.testing.assert_allclose(cm(X)[0], single_device_outputs, rtol=1e-5, atol=1e-6)


def test_small_weights_stay_replicated_by_default():
    cm = compiler.compile(MODEL, backend="cpu", opt_level=0, devices=4, model_parallel=2)
    assert cm.runner.placement.sharded_params(cm.params) == []


@pytest.mark.parametrize("options, message", [
    ({"devices": 16}, "--devices 16 asks for 16 cpu devices; this machine has 4 (on the CPU, set "
                      "XLA_FLAGS=--xla_force_host_platform_device_count=N to simulate N devices)"),
    ({"devices": 4, "model_parallel": 3}, "--model-parallel 3 must divide --devices 4"),
])
def test_device_option_errors(options, message):
    with pytest.raises(OptionError) as raised:
        compiler.compile(MODEL, backend="cpu", opt_level=0, **options)
    assert raised.value.one_line() == message


def test_cli_devices_reach_the_saved_artifact(tmp_path, single_device_outputs):
    from compiler.backend_registry import load_artifact
    from compiler.cli import main

    model_path = tmp_path / "mlp.onnx"
    model_path.write_bytes(MODEL.SerializeToString())
    out = tmp_path / "out"
    assert main(["compile", str(model_path), "--backend", "cpu", "-O0", "--devices", "4", "--model-parallel", "2",
                 "-o", str(out), "-q"]) == 0
    manifest = json.loads((out / "report.json").read_text())["artifacts"]["jax"]
    assert (manifest["devices"], manifest["model_parallel"]) == (4, 2)
    reloaded = load_artifact(str(out))
    assert reloaded.runner.placement.device_count == 4
    np.testing.assert_allclose(reloaded(X)[0], single_device_outputs, rtol=1e-5, atol=1e-6)
    assert os.path.exists(out / "model.jax_export")
