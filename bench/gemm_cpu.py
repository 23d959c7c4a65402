"""The fp32 matrix products that dominate the transformer zoo at batch 1, timed alone: XLA's CPU
dot (what the JAX backend emits: weights passed as arguments, Precision.HIGHEST, in the stored
[K, N] layout and in [N, K]) against onnxruntime's MatMul (MLAS, weight prepacked at session
creation), the same thread count. It separates kernel speed from graph-level work when reading
bench/results/jax_cpu.md.

    python bench/gemm_cpu.py [--threads 2] [--blocks 4]

Results: bench/results/gemm_cpu.{md,json}, with the machine and versions.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

# (where it comes from, M, K, N): M = tokens at batch 1 (seq 128; ViT-B/16: 197 patches + class)
SHAPES = (
    ("BERT/GPT-2 attention output, 768x768", 128, 768, 768),
    ("GPT-2 fused QKV, 768x2304", 128, 768, 2304),
    ("MLP up, 768x3072", 128, 768, 3072),
    ("MLP down, 3072x768", 128, 3072, 768),
    ("ViT MLP up (197 tokens)", 197, 768, 3072),
    ("GPT-2 LM head, 768x50257", 128, 768, 50257),
)


def best_and_median(call: Callable[[], Any], calls: int, blocks: int) -> tuple[float, float]:
    """(min, median) ms per call over `blocks` blocks of `calls` calls, one warm-up call per block."""
    samples = []
    for _ in range(blocks):
        call()
        for _ in range(calls):
            start = time.perf_counter()
            call()
            samples.append((time.perf_counter() - start) * 1000.0)
    return min(samples), statistics.median(samples)


def measure(threads: int, blocks: int) -> list[dict[str, Any]]:
    import jax
    import jax.numpy as jnp
    import onnx
    from jax import lax

    from compiler.benchmark import onnxruntime_session

    highest = lax.Precision.HIGHEST
    stored_kn = jax.jit(lambda x, w: jnp.matmul(x, w, precision=highest))
    stored_nk = jax.jit(lambda x, w: lax.dot_general(x, w, (((1,), (1,)), ((), ())), precision=highest))
    rng = np.random.default_rng(0)
    rows = []
    for label, m, k, n in SHAPES:
        x = rng.standard_normal((m, k), dtype=np.float32)
        w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
        graph = onnx.helper.make_graph(
            [onnx.helper.make_node("MatMul", ["x", "w"], ["y"])], "gemm",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [m, k])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [m, n])],
            [onnx.numpy_helper.from_array(w, "w")])
        session = onnxruntime_session(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]),
                                      threads)
        xj, wj, wt = jnp.asarray(x), jnp.asarray(w), jnp.asarray(np.ascontiguousarray(w.T))
        calls = 5 if n > 10000 else 25
        timings = {"onnxruntime": [], "xla_kn": [], "xla_nk": []}
        for _ in range(blocks):  # the runtimes take turns, so drifting machine load hits all three
            timings["onnxruntime"].append(best_and_median(lambda: session.run(None, {"x": x}), calls, 1))
            timings["xla_kn"].append(best_and_median(lambda: stored_kn(xj, wj).block_until_ready(), calls, 1))
            timings["xla_nk"].append(best_and_median(lambda: stored_nk(xj, wt).block_until_ready(), calls, 1))
        expected = session.run(None, {"x": x})[0]
        error = float(np.max(np.abs(np.asarray(stored_kn(xj, wj)) - expected)) / np.max(np.abs(expected)))
        row = {"shape": label, "m": m, "k": k, "n": n, "gflop": 2 * m * k * n / 1e9, "max_rel_diff": error}
        for name, pairs in timings.items():
            row[name] = {"min_ms": min(p[0] for p in pairs), "median_ms": statistics.median(p[1] for p in pairs)}
            row[name]["gflops"] = row["gflop"] / row[name]["min_ms"] * 1000.0
        rows.append(row)
        print(f"{label}: ORT {row['onnxruntime']['min_ms']:.2f} ms, XLA [K,N] {row['xla_kn']['min_ms']:.2f} ms, "
              f"[N,K] {row['xla_nk']['min_ms']:.2f} ms (min)", flush=True)
    return rows


def markdown(rows: list[dict[str, Any]], env: dict[str, Any]) -> str:
    machine = env["machine"]
    lines = [
        "# fp32 GEMM kernels on the CPU: XLA's dot vs onnxruntime's MatMul",
        "",
        f"Recorded {env['date_utc']} by `python bench/gemm_cpu.py --threads {env['threads']}`.",
        f"Machine: {machine['cpu']}, {machine['cpus']} logical CPUs usable, {machine['os']}.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + ".",
        f"Threads: {env['threads']} for both. XLA: `jnp.matmul(..., precision=HIGHEST)` jitted, weight passed as an "
        "argument (as the JAX backend passes weights), the dot lowered by XLA:CPU to a YNNPACK fusion; [N,K] is the "
        "same product with the weight stored transposed. onnxruntime: one MatMul with the weight as an initializer "
        "(MLAS prepacks it once). min and median ms per call over blocks in turn.",
        "",
        "| product | M x K x N | ORT min / median ms | XLA [K,N] min / median ms | XLA [N,K] min / median ms "
        "| ORT/XLA best (min) | GFLOP/s ORT / XLA best |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ort, kn, nk = row["onnxruntime"], row["xla_kn"], row["xla_nk"]
        best = min(kn["min_ms"], nk["min_ms"])
        lines.append(
            f"| {row['shape']} | {row['m']}x{row['k']}x{row['n']} | {ort['min_ms']:.2f} / {ort['median_ms']:.2f} "
            f"| {kn['min_ms']:.2f} / {kn['median_ms']:.2f} | {nk['min_ms']:.2f} / {nk['median_ms']:.2f} "
            f"| {ort['min_ms'] / best:.2f}x | {ort['gflops']:.0f} / {row['gflop'] / best * 1000:.0f} |")
    lines += ["", "ORT/XLA < 1 means onnxruntime's kernel is faster. Outputs agree within "
              f"{max(r['max_rel_diff'] for r in rows):.1e} (max relative difference)."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "gemm_cpu"))
    args = parser.parse_args()
    from compiler.benchmark import machine_description, pinned_threads

    with pinned_threads(args.threads) as threads:
        rows = measure(threads, args.blocks)
    import jax
    import onnxruntime

    env = {"date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": machine_description(), "threads": threads,
           "versions": {"jax": jax.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}}
    with open(args.out + ".json", "w") as handle:
        json.dump({"environment": env, "rows": rows}, handle, indent=1)
    with open(args.out + ".md", "w") as handle:
        handle.write(markdown(rows, env))
    print(f"wrote {args.out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
