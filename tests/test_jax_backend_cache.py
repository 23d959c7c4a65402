"""The persistent compilation cache is on by default: a second process compiling the same model
reads XLA's executable from the cache folder; KILN_NO_CACHE=1 turns it off."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = """
import json, sys
import jax.monitoring
hits = []
jax.monitoring.register_event_listener(lambda event, **_: hits.append(event) if event.endswith("cache_hits") else None)
sys.path.insert(0, sys.argv[1])
import numpy as np
import compiler
from jax_backend_support import ensure_basic_rules, mlp_model
ensure_basic_rules()
model = compiler.compile(mlp_model(seed=11), backend="cpu", opt_level=0)
model(np.ones((3, 8), np.float32))
print(json.dumps({"hits": len(hits), "cache": jax.config.jax_compilation_cache_dir}))
"""


CLI = """
import json, sys
import jax.monitoring
events = []
jax.monitoring.register_event_listener(lambda event, **_: events.append(event.rsplit("/", 1)[-1]))
from compiler.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "hits": events.count("cache_hits"), "misses": events.count("cache_misses")}))
"""


def _run(tmp_path, script: str = SCRIPT, args: tuple = (os.path.join(REPO, "tests"),), **env_overrides) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_") or k == "KILN_VERIFY"}
    env.update(PYTHONPATH=REPO, **env_overrides)
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          env=env, cwd=str(tmp_path), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_second_process_hits_the_persistent_cache(tmp_path):
    cache = tmp_path / "cache"
    first = _run(tmp_path, KILN_CACHE_DIR=str(cache))
    assert first["cache"] == str(cache) and first["hits"] == 0
    # JAX's LRU (with the filelock package) keeps an -atime file beside each -cache entry
    entries = [name for name in os.listdir(cache) if name.startswith("jit_function") and not name.endswith("-atime")]
    assert len(entries) == 1  # the model's executable was written although it compiled in well under 1 s
    second = _run(tmp_path, KILN_CACHE_DIR=str(cache))
    assert second["hits"] >= 1


def test_default_folder_is_under_the_user_cache(tmp_path):
    result = _run(tmp_path, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    assert result["cache"] == str(tmp_path / "xdg" / "graphkiln" / "xla")
    assert any(name.startswith("jit_function") for name in os.listdir(tmp_path / "xdg" / "graphkiln" / "xla"))


def test_kiln_no_cache_disables_it(tmp_path):
    cache = tmp_path / "cache"
    result = _run(tmp_path, KILN_CACHE_DIR=str(cache), KILN_NO_CACHE="1")
    assert result["cache"] is None and result["hits"] == 0
    assert not cache.exists()


def test_kiln_run_of_a_static_artifact_finds_what_kiln_compile_cached(tmp_path):
    """kiln compile compiles a fully static artifact as kiln run will jit and place it, so the run
    in a new process compiles nothing."""
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from jax_backend_support import mlp_model

    model, out, data = tmp_path / "mlp.onnx", tmp_path / "out", tmp_path / "x.npz"
    model.write_bytes(mlp_model(seed=11, batch=3).SerializeToString())
    np.savez(data, X=np.ones((3, 8), np.float32))
    cache = str(tmp_path / "cache")
    compiled = _run(tmp_path, CLI, ("compile", str(model), "--backend", "cpu", "-o", str(out)), KILN_CACHE_DIR=cache)
    assert compiled["code"] == 0 and compiled["misses"] >= 1
    ran = _run(tmp_path, CLI, ("run", str(out), "--inputs", str(data)), KILN_CACHE_DIR=cache)
    assert ran["code"] == 0 and ran["misses"] == 0 and ran["hits"] >= 1


def test_entries_an_unbounded_cache_wrote_do_not_block_new_ones(tmp_path):
    """A cache folder first filled without JAX's LRU (no filelock, or KILN_CACHE_MAX_BYTES=-1) has
    entries without -atime files; the LRU's eviction scan used to fail on them at every write."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "jit_function-0123456789abcdef-cache").write_bytes(b"an entry written without an access time")
    unbounded = _run(tmp_path, KILN_CACHE_DIR=str(cache), KILN_CACHE_MAX_BYTES="-1")
    assert unbounded["hits"] == 0
    written = [name for name in os.listdir(cache) if name.endswith("-cache")]
    assert len(written) >= 2 and not any(name.endswith("-atime") for name in os.listdir(cache))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_") or k == "KILN_VERIFY"}
    done = subprocess.run([sys.executable, "-c", SCRIPT.replace("np.ones((3, 8)", "np.ones((5, 8)"), os.path.join(REPO, "tests")],
                          capture_output=True, text=True, cwd=str(tmp_path), timeout=120,
                          env=dict(env, PYTHONPATH=REPO, KILN_CACHE_DIR=str(cache)))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Error writing persistent compilation cache" not in done.stderr
    names = os.listdir(cache)
    assert len([name for name in names if name.endswith("-cache")]) > len(written)  # the new model's executable
    assert all(name[: -len("-cache")] + "-atime" in names for name in names if name.endswith("-cache"))
