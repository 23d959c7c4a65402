"""The JAX runner's process settings: CPU programs run on the calling thread unless the user or an
earlier JAX client decided otherwise."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import jax
import pytest

from backends.jax import allocator, runtime

REPO = pathlib.Path(__file__).resolve().parent.parent

PROBE = """
import jax, numpy as np
{before}
import compiler
model = compiler.compile("samples/mlp.onnx", backend="cpu", opt_level=2)
model(np.zeros((2, 64), np.float32))
print("async", jax.config.values["jax_cpu_enable_async_dispatch"])
"""


def _probe(before: str = "", **env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "JAX_CPU_ENABLE_ASYNC_DISPATCH"}
    environment.update(env)
    result = subprocess.run([sys.executable, "-c", PROBE.format(before=before)], cwd=REPO, env=environment,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[-1]


def test_a_fresh_process_runs_cpu_programs_inline():
    assert _probe() == "False"


def test_the_users_jax_setting_wins():
    assert _probe(JAX_CPU_ENABLE_ASYNC_DISPATCH="1") == "True"


def test_a_client_made_before_the_backend_keeps_async_dispatch():
    assert _probe(before="jax.devices('cpu')") == "True"


def test_setting_is_skipped_once_a_client_exists(monkeypatch):
    jax.devices("cpu")  # this process's client exists now
    calls = []
    monkeypatch.setattr(jax.config, "update", lambda *args: calls.append(args))
    monkeypatch.delenv("JAX_CPU_ENABLE_ASYNC_DISPATCH", raising=False)
    assert runtime.run_cpu_programs_inline() is False
    assert calls == []


@pytest.mark.parametrize("value", ["0", "1"])
def test_setting_is_skipped_when_the_environment_names_it(monkeypatch, value):
    from jax._src import xla_bridge

    calls = []
    monkeypatch.setattr(xla_bridge, "backends_are_initialized", lambda: False)
    monkeypatch.setattr(jax.config, "update", lambda *args: calls.append(args))
    monkeypatch.setenv("JAX_CPU_ENABLE_ASYNC_DISPATCH", value)
    assert runtime.run_cpu_programs_inline() is False
    monkeypatch.delenv("JAX_CPU_ENABLE_ASYNC_DISPATCH")
    assert runtime.run_cpu_programs_inline() is True
    assert calls == [("jax_cpu_enable_async_dispatch", False)]


FAULT_PROBE = """
import resource, sys
import numpy as np
import backends.jax.backend
faults = []
for _ in range(8):
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    first, second = np.ones(5 << 20, np.float32), np.ones(5 << 20, np.float32)  # two 20 MB buffers, as two calls' outputs
    del first, second
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
print(sum(faults[2:]))
"""


def _faults(**env: str) -> int:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != allocator.SWITCH}
    environment.update(env)
    result = subprocess.run([sys.executable, "-c", FAULT_PROBE], cwd=REPO, env=environment, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings")
def test_freed_call_buffers_are_reused_without_page_faults():
    """After the backend loads, buffers of tens of megabytes freed and allocated again come from the
    heap it kept (no page faults); with the tuning turned off every round maps them anew."""
    assert _faults() == 0
    assert _faults(KILN_MALLOC_TUNING="0") > 1000


def test_users_malloc_settings_are_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert not allocator.keep_freed_buffers_mapped()
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.setenv(allocator.SWITCH, "off")
    assert not allocator.keep_freed_buffers_mapped()
