"""The native kernels' helper threads (backends/jax/native/workers.h): the C++ check of their loop
protocol (each item once, spinning or woken from sleep, two threads' loops at once, after fork), and
compiled models called from several Python threads at once, whose parallel kernels then share them."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

import numpy as np
import pytest
from onnx import helper

from backends.jax import native
from native_support import check_against_onnxruntime, floats, needs_kernels, onnx_model

HERE = os.path.dirname(os.path.abspath(__file__))


@needs_kernels
@pytest.mark.parametrize("spin_us", ["300", "0"])
def test_loop_protocol_holds_spinning_asleep_concurrent_and_forked(tmp_path, spin_us):
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    binary = tmp_path / "workers_check"
    build = subprocess.run([compiler, "-O2", "-std=c++17", "-pthread", f"-I{native.HERE}",
                            os.path.join(HERE, "native", "workers_check.cc"), "-o", str(binary)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    done = subprocess.run([str(binary)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "KILN_SPIN_US": spin_us})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "found the helpers busy" in done.stdout


@needs_kernels
def test_models_called_from_several_threads_at_once_stay_exact():
    """Each call's products are big enough to run in parallel; while one thread's loop holds the
    helpers the others run theirs on XLA's pool, and every result matches onnxruntime's."""
    feeds = {"X": floats(64, 256)}
    nodes = [helper.make_node("MatMul", ["X", "W1"], ["H"]), helper.make_node("Relu", ["H"], ["R"]),
             helper.make_node("MatMul", ["R", "W2"], ["Y"])]
    model = onnx_model(nodes, feeds, ["Y"], {"W1": floats(256, 512, scale=1 / 16), "W2": floats(512, 128, scale=1 / 22)})
    compiled = check_against_onnxruntime(model, feeds)
    assert compiled.native_products == 2
    inputs = [floats(64, 256) for _ in range(4)]
    expected = [compiled(x)[0] for x in inputs]
    failures: list[str] = []

    def worker(index: int) -> None:
        for _ in range(150):
            got = compiled(inputs[index])[0]
            if not np.array_equal(got, expected[index]):
                failures.append(f"thread {index}: max difference {np.max(np.abs(got - expected[index]))}")
                return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
