"""The fp32 matrix products that dominate the transformer zoo at batch 1: XLA's CPU dot (weights
passed as arguments, Precision.HIGHEST, in [K, N] and in [N, K]), the JAX backend's native panel
kernel (backends/jax/native/panel_gemm.cc: the weight packed once into panels, what the CPU runner
uses) and onnxruntime's MatMul (MLAS, weight prepacked at session creation), the same thread count.
Timed alone (the weight stays in cache) and in chains of 12 MLP blocks with distinct weights (each
weight streams from memory, as in a model). It separates kernel speed from graph-level work when
reading bench/results/jax_cpu.md.

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

    from backends.jax.panel_matmul import PanelWeight, pack_panels, panel_matmul, panel_width

    width = panel_width()
    native = jax.jit(lambda x, panels, n: panel_matmul(x, PanelWeight(panels, n)), static_argnums=2)
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
        if width:
            panels = jnp.asarray(pack_panels(w, width))
            timings["native"] = []
        for _ in range(blocks):  # the runtimes take turns, so drifting machine load hits them all
            timings["onnxruntime"].append(best_and_median(lambda: session.run(None, {"x": x}), calls, 1))
            timings["xla_kn"].append(best_and_median(lambda: stored_kn(xj, wj).block_until_ready(), calls, 1))
            timings["xla_nk"].append(best_and_median(lambda: stored_nk(xj, wt).block_until_ready(), calls, 1))
            if width:
                timings["native"].append(best_and_median(lambda: native(xj, panels, n).block_until_ready(), calls, 1))
        expected = session.run(None, {"x": x})[0]
        outputs = [stored_kn(xj, wj)] + ([native(xj, panels, n)] if width else [])
        error = max(float(np.max(np.abs(np.asarray(o) - expected)) / np.max(np.abs(expected))) for o in outputs)
        row = {"shape": label, "m": m, "k": k, "n": n, "gflop": 2 * m * k * n / 1e9, "max_rel_diff": error}
        for name, pairs in timings.items():
            row[name] = {"min_ms": min(p[0] for p in pairs), "median_ms": statistics.median(p[1] for p in pairs)}
            row[name]["gflops"] = row["gflop"] / row[name]["min_ms"] * 1000.0
        rows.append(row)
        native_ms = f", native {row['native']['min_ms']:.2f} ms" if width else ""
        print(f"{label}: ORT {row['onnxruntime']['min_ms']:.2f} ms, XLA [K,N] {row['xla_kn']['min_ms']:.2f} ms, "
              f"[N,K] {row['xla_nk']['min_ms']:.2f} ms{native_ms} (min)", flush=True)
    return rows


def measure_chains(threads: int, blocks: int, layers: int = 12) -> list[dict[str, Any]]:
    """ms per product in a chain of `layers` MLP blocks (768 -> 3072 -> 768, distinct weights: 57 MB
    each way at 12) for onnxruntime, the native CPU runner and XLA's dots, in turns."""
    import jax
    import onnx

    import compiler
    from compiler.benchmark import onnxruntime_session

    rng = np.random.default_rng(1)
    rows = []
    for m in (128, 197):
        nodes, weights, previous = [], [], "x"
        for layer in range(layers):
            for name, shape in ((f"up{layer}", (768, 3072)), (f"down{layer}", (3072, 768))):
                weights.append(onnx.numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32), name))
                nodes.append(onnx.helper.make_node("MatMul", [previous, name], [f"{name}_out"]))
                previous = f"{name}_out"
        graph = onnx.helper.make_graph(nodes, "chain", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [m, 768])],
                                       [onnx.helper.make_tensor_value_info(previous, onnx.TensorProto.FLOAT, [m, 768])], weights)
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
        x = rng.standard_normal((m, 768)).astype(np.float32)
        session = onnxruntime_session(model, threads)
        runners = {"onnxruntime": lambda: session.run(None, {"x": x})}
        for name, native in (("native", True), ("xla", False)):
            runner = compiler.compile(model, backend="cpu", opt_level=0, native_kernels=native).runner
            runners[name] = lambda runner=runner: jax.block_until_ready(runner.run_on_device([x]))
        timings = {name: [] for name in runners}
        for _ in range(blocks):
            for name, call in runners.items():
                timings[name].append(best_and_median(call, 5, 1))
        row = {"m": m, "layers": layers}
        for name, pairs in timings.items():
            row[name] = {"median_ms_per_product": statistics.median(p[1] for p in pairs) / (2 * layers)}
        rows.append(row)
        print(f"chain M={m}: " + ", ".join(f"{k} {row[k]['median_ms_per_product']:.3f} ms" for k in runners), flush=True)
    return rows


def markdown(rows: list[dict[str, Any]], env: dict[str, Any]) -> str:
    from compiler.benchmark import steal_sentence

    machine = env["machine"]
    native = all("native" in row for row in rows)
    lines = [
        "# fp32 GEMM kernels on the CPU: XLA's dot and the native panel kernel vs onnxruntime's MatMul",
        "",
        f"Recorded {env['date_utc']} by `python bench/gemm_cpu.py --threads {env['threads']}`.",
        f"Machine: {machine['cpu']}, {machine['cpus']} logical CPUs usable, {machine['os']}. "
        + steal_sentence(env.get("steal_percent")),
        "Versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + ".",
        f"Threads: {env['threads']} for both. XLA: `jnp.matmul(..., precision=HIGHEST)` jitted, weight passed as an "
        "argument (as the JAX backend passes weights), the dot lowered by XLA:CPU to a YNNPACK fusion; [N,K] is the "
        "same product with the weight stored transposed. onnxruntime: one MatMul with the weight as an initializer "
        "(MLAS prepacks it once). native: the JAX backend's panel kernel through jax.ffi, the weight packed once "
        "into [N/32, K, 32] panels (what `compiler.compile(..., backend='cpu')` runs). min and median ms per call over "
        "blocks in turn.",
        "",
        "| product | M x K x N | ORT min / median ms | XLA [K,N] min / median ms | XLA [N,K] min / median ms "
        "| native min / median ms | ORT/XLA best (min) | ORT/native (min) | GFLOP/s ORT / XLA best / native |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ort, kn, nk = row["onnxruntime"], row["xla_kn"], row["xla_nk"]
        nat = row.get("native", {"min_ms": float("nan"), "median_ms": float("nan"), "gflops": float("nan")})
        best = min(kn["min_ms"], nk["min_ms"])
        lines.append(
            f"| {row['shape']} | {row['m']}x{row['k']}x{row['n']} | {ort['min_ms']:.2f} / {ort['median_ms']:.2f} "
            f"| {kn['min_ms']:.2f} / {kn['median_ms']:.2f} | {nk['min_ms']:.2f} / {nk['median_ms']:.2f} "
            f"| {nat['min_ms']:.2f} / {nat['median_ms']:.2f} | {ort['min_ms'] / best:.2f}x | {ort['min_ms'] / nat['min_ms']:.2f}x "
            f"| {ort['gflops']:.0f} / {row['gflop'] / best * 1000:.0f} / {nat['gflops']:.0f} |")
    lines += ["", "ORT/X < 1 means onnxruntime's kernel is faster. Outputs agree within "
              f"{max(r['max_rel_diff'] for r in rows):.1e} (max relative difference)."]
    if not native:
        lines.append("The native kernel was unavailable here (" + str(env.get("native_unavailable")) + ").")
    chains = env.get("chains") or []
    if chains:
        lines += ["", "In a chain of 12 MLP blocks with distinct weights (each weight streams from memory, as in a model), "
                  "median ms per product:", "", "| M | onnxruntime | native | XLA dot | ORT/native | ORT/XLA |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for row in chains:
            o, nat, x = (row[k]["median_ms_per_product"] for k in ("onnxruntime", "native", "xla"))
            lines.append(f"| {row['m']} | {o:.3f} | {nat:.3f} | {x:.3f} | {o / nat:.2f}x | {o / x:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "gemm_cpu"))
    args = parser.parse_args()
    from compiler.benchmark import cpu_ticks, machine_description, pinned_threads, steal_percent

    from backends.jax import native

    ticks_before = cpu_ticks()
    with pinned_threads(args.threads) as threads:
        rows = measure(threads, args.blocks)
        chains = measure_chains(threads, args.blocks) if native.library() is not None else []
    import jax
    import onnxruntime

    env = {"date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": machine_description(), "threads": threads, "chains": chains,
           "native_unavailable": native.unavailable_reason(), "steal_percent": steal_percent(ticks_before, cpu_ticks()),
           "versions": {"jax": jax.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}}
    with open(args.out + ".json", "w") as handle:
        json.dump({"environment": env, "rows": rows}, handle, indent=1)
    with open(args.out + ".md", "w") as handle:
        handle.write(markdown(rows, env))
    print(f"wrote {args.out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
