"""CPU latency of graphkiln's JAX backend (-O2 and -O3; with its native CPU kernels unless
--no-native) against onnxruntime (ORT_ENABLE_ALL, the same intra-op thread count) on the sample models and the zoo models in bench/models/ (BERT-base, GPT-2
small, ResNet-50, MobileNetV3, ViT-B/16, built by bench/build_models.py; skipped when absent).

Each model runs in its own process (a fresh XLA client honours the thread pinning); in it the
kiln builds and onnxruntime are timed in alternation on the same inputs, and their outputs are
compared (max relative difference). Results go to bench/results/jax_cpu.{json,md} with the machine,
versions, thread counts and load average they came from.

    python bench/jax_latency.py [--batch 1] [--seq 128] [--threads 2] [--repeat 20] [--only NAME] [--no-native]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

ZOO = ("bert_base", "gpt2", "vit_b_16", "resnet50", "mobilenet_v3")
TRANSFORMERS = ("bert_base", "gpt2", "vit_b_16")
EXPORTERS = ("torchscript", "dynamo")
RTOL, ATOL = 1e-3, 1e-4  # fp32 agreement of two runtimes after 12 transformer layers


def find_models(samples_dir: str, models_dir: str, exporters: list[str], only: list[str]) -> list[tuple[str, str, str]]:
    """(name, kind, path) of every sample and zoo model present, in a stable order."""
    found = []
    if os.path.isdir(samples_dir):
        for file in sorted(os.listdir(samples_dir)):
            if file.endswith(".onnx"):
                found.append((file[:-5], "sample", os.path.join(samples_dir, file)))
    for model in ZOO:
        for exporter in exporters:
            path = os.path.join(models_dir, f"{model}_{exporter}.onnx")
            if os.path.exists(path):
                found.append((f"{model}_{exporter}", "zoo", path))
    return [m for m in found if not only or m[0] in only or m[0].rsplit("_", 1)[0] in only]


def model_inputs(path: str, kind: str, batch: int, seq: int) -> dict[str, np.ndarray]:
    """Zoo models: bench/build_models.example_inputs (real token ids, a padded attention mask);
    samples: compiler.benchmark.benchmark_inputs with the batch and sequence sizes."""
    if kind == "zoo":
        from build_models import ZOO as SPECS, example_inputs

        base = os.path.basename(path)[:-5].rsplit("_", 1)[0]
        spec = next(s for s in SPECS if s.name == base)
        return example_inputs(spec, {"batch": batch, "sequence": seq})
    import compiler
    from compiler.benchmark import benchmark_inputs

    graph = compiler.load(path)
    dims: dict[str, int] = {}
    for value in graph.inputs:
        for axis, dim in enumerate(value.shape or ()):
            if not isinstance(dim, int) and dim:
                dims.setdefault(str(dim), batch if axis == 0 else seq)
    return benchmark_inputs(graph, batch, dims)


def max_relative_difference(expected: list[np.ndarray], actual: list[np.ndarray]) -> float:
    """max |a - b| / max |a| over all outputs (0 when equal)."""
    worst = 0.0
    for want, got in zip(expected, actual):
        want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
        scale = float(np.max(np.abs(want))) if want.size else 0.0
        error = float(np.max(np.abs(want - got))) if want.size else 0.0
        worst = max(worst, error / scale if scale else error)
    return worst


def time_in_blocks(calls: dict[str, Any], repeat: int, warmup: int, rounds: int,
                   min_block_seconds: float = 0.0) -> dict[str, dict[str, float]]:
    """Each runtime timed in its own block of calls (rounds x (warm-up + repeat / rounds) calls, the
    blocks of the runtimes taking turns). Not call by call: onnxruntime's and XLA's worker threads
    spin for a while after each call, and on a 2-core machine interleaved calls steal each other's
    cores. A block of a fast model runs at least `min_block_seconds` (its call time estimated from
    the warm-up), so sub-millisecond medians rest on hundreds of calls, not a handful."""
    from compiler.benchmark import summarize_samples

    samples: dict[str, list[float]] = {name: [] for name in calls}
    per_round = max(1, repeat // rounds)
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            for _ in range(warmup):
                call()
            estimate = (time.perf_counter() - start) / max(1, warmup)
            count = max(per_round, int(min_block_seconds / estimate) if estimate > 0 else per_round)
            for _ in range(count):
                start = time.perf_counter()
                call()
                samples[name].append((time.perf_counter() - start) * 1000.0)
    return {name: summarize_samples(values, warmup) for name, values in samples.items()}


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """Child process: compile one model at each -O level, time against onnxruntime, compare outputs."""
    import compiler
    from compiler.benchmark import onnxruntime_session, pinned_threads

    feeds = model_inputs(args.single, args.kind, args.batch, args.seq)
    result: dict[str, Any] = {"inputs": {k: list(v.shape) for k, v in feeds.items()}, "kiln": {}}
    with pinned_threads(args.threads) as threads:
        session = onnxruntime_session(args.single, threads)
        names = [i.name for i in session.get_inputs()]
        expected = session.run(None, {n: feeds[n] for n in names})
        calls = {"onnxruntime": lambda: session.run(None, {n: feeds[n] for n in names})}
        for level in args.opt_levels:
            start = time.perf_counter()
            model = compiler.compile(args.single, backend="cpu", opt_level=level, native_kernels=not args.no_native)
            outputs = model(**feeds)
            result["kiln"][f"O{level}"] = {"compile_s": time.perf_counter() - start,
                                           "max_rel_diff": max_relative_difference(expected, outputs),
                                           "nodes": len(model.graph.nodes), "native_products": model.native_products,
                                           "native_convolutions": model.native_convolutions}
            calls[f"O{level}"] = (lambda m: lambda: m(**feeds))(model)
        timings = time_in_blocks(calls, args.repeat, args.warmup, args.rounds, args.min_block_seconds)
    result["threads"] = threads
    result["onnxruntime"] = timings.pop("onnxruntime")
    for level, timing in timings.items():
        entry = result["kiln"][level]
        entry.update(timing)
        entry["ort_over_kiln"] = result["onnxruntime"]["median_ms"] / timing["median_ms"]
        entry["outputs_match"] = entry["max_rel_diff"] <= RTOL
    return result


def run_all(args: argparse.Namespace) -> list[dict]:
    """Each model measured in a fresh process (its own XLA client and thread pools), in turn."""
    from compiler.benchmark import cpu_ticks, steal_percent

    results = []
    for name, kind, path in find_models(args.samples, args.models, args.exporters, args.only):
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
            target = handle.name
        command = [sys.executable, os.path.abspath(__file__), "--single", path, "--kind", kind, "--json", target,
                   "--batch", str(args.batch), "--seq", str(args.seq), "--repeat", str(args.repeat),
                   "--warmup", str(args.warmup), "--rounds", str(args.rounds), "--threads", str(args.threads),
                   "--min-block-seconds", str(args.min_block_seconds)]
        command += [f"-O{level}" for level in args.opt_levels] + (["--no-native"] if args.no_native else [])
        print(f"== {name} ({kind}), load {os.getloadavg()[0]:.2f}", flush=True)
        ticks = cpu_ticks()
        done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO))
        if done.returncode == 0:
            with open(target) as result_file:
                result = json.load(result_file)
            result.update(name=name, kind=kind, steal_percent=steal_percent(ticks, cpu_ticks()))
            ort = result["onnxruntime"]["median_ms"]
            for level, entry in result["kiln"].items():
                print(f"   kiln {level} {entry['median_ms']:.2f} ms vs onnxruntime {ort:.2f} ms: "
                      f"{entry['ort_over_kiln']:.2f}x, max rel diff {entry['max_rel_diff']:.2g}", flush=True)
            print(f"   CPU time stolen while measuring it: {result['steal_percent']}%", flush=True)
        else:
            error = (done.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
            result = {"name": name, "kind": kind, "error": error}
            print(f"   FAILED: {error}", flush=True)
        os.unlink(target)
        results.append(result)
    return results


def native_unavailable() -> str | None:
    """Why the native CPU kernels cannot run here (None when they can)."""
    from backends.jax import native

    reason = native.unavailable_reason()
    return f"unavailable: {reason}" if reason else None


def environment(args: argparse.Namespace, load_before: tuple, load_after: tuple, steal: float | None) -> dict[str, Any]:
    """Machine, versions, threads, load and stolen CPU time: what the figures depend on."""
    import jax
    import jaxlib
    import onnx
    import onnxruntime

    from compiler.benchmark import machine_description

    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_description(),
        "versions": {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "onnxruntime": onnxruntime.__version__,
                     "onnx": onnx.__version__, "numpy": np.__version__},
        "threads": args.threads,
        "batch": args.batch,
        "sequence": args.seq,
        "repeat": args.repeat,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "min_block_seconds": args.min_block_seconds,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "native_kernels": "off (--no-native)" if args.no_native else (native_unavailable() or "on"),
        "spin_us": os.environ.get("KILN_SPIN_US", "300 (default)"),
        "malloc_tuning": _malloc_tuning(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "steal_percent": steal,
        "zoo_attention": _zoo_attention(args.models),
    }


def _zoo_attention(models_dir: str) -> dict[str, str]:
    """The transformers attention implementation each zoo text model was exported with (manifest)."""
    from build_models import TRANSFORMERS_MODELS

    path = os.path.join(models_dir, "manifest.json")
    manifest = json.load(open(path)) if os.path.exists(path) else {}
    return {name: entry.get("attention") or "eager (before the manifest said)"
            for name, entry in manifest.items() if entry.get("model") in TRANSFORMERS_MODELS}


def _malloc_tuning() -> str:
    """Whether the backend's malloc settings apply in this process (backends/jax/allocator.py)."""
    from backends.jax import allocator

    if any(name in os.environ for name in allocator.USER_SETTINGS):
        return "off (MALLOC_*_ set)"
    if os.environ.get(allocator.SWITCH, "1").lower() in ("0", "false", "off", "no"):
        return f"off ({allocator.SWITCH})"
    return "on (32 MB mmap threshold, 256 MB trim threshold)"


def markdown(results: list[dict], env: dict[str, Any], levels: list[int]) -> str:
    from compiler.benchmark import steal_sentence

    machine, versions = env["machine"], env["versions"]
    header = "| model | inputs | ORT ms | " + " | ".join(f"kiln -O{l} ms | ORT/kiln -O{l}" for l in levels)
    header += " | max rel diff | compile s | steal % |"
    lines = [
        f"# JAX CPU backend vs onnxruntime: latency (batch {env['batch']})",
        "",
        f"Recorded {env['date_utc']} by `python bench/jax_latency.py --batch {env['batch']} --seq {env['sequence']} "
        f"--threads {env['threads']} --repeat {env['repeat']} --rounds {env['rounds']} "
        f"--min-block-seconds {env.get('min_block_seconds', 0)}`.",
        f"Machine: {machine['cpu']}, {machine['cpus']} logical CPUs usable, {machine['os']}, Python {machine['python']}.",
        f"Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        f"Threads: {env['threads']} for both (onnxruntime intra_op_num_threads, inter_op 1; XLA's CPU client "
        f"sized by the process's CPU affinity). XLA_FLAGS: `{env['xla_flags'] or '(none)'}`.",
        f"Load average (1/5/15 min) before: {env['load_average_before']}, after: {env['load_average_after']}. "
        + steal_sentence(env.get("steal_percent")),
        f"Native CPU kernels (backends/jax/native: panel GEMM, convolution, attention, layer norm, pools, row "
        f"ops): {env.get('native_kernels', 'on')}; their helper threads spin {env.get('spin_us', '?')} us after "
        f"each loop (KILN_SPIN_US). glibc malloc tuning (backends/jax/allocator.py, process-wide, so onnxruntime "
        f"runs under it too): {env.get('malloc_tuning', '?')}.",
        "kiln: `compiler.compile(..., backend='cpu', opt_level=N)`, fp32; onnxruntime: ORT_ENABLE_ALL, "
        f"CPUExecutionProvider. Each runtime is timed in blocks of calls ({env['rounds']} rounds, the runtimes "
        "taking turns; interleaving single calls lets each runtime's spinning worker threads steal the other's "
        f"cores); median ms per call, numpy in and out, at least {env['repeat']} timed calls in all and each "
        f"block at least {env.get('min_block_seconds', 0)} s long, {env['warmup']} "
        f"warm-up calls before each block. Text models: sequence {env['sequence']}, "
        "inputs from bench/build_models.example_inputs (last quarter of the attention mask padded).",
        "",
        header,
        "|---|---|---:|" + "---:|---:|" * len(levels) + "---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['name']} | FAILED: {r['error']} |")
            continue
        shapes = ", ".join(f"{k}{v}" for k, v in r["inputs"].items())
        cells = [r["name"], shapes, f"{r['onnxruntime']['median_ms']:.2f}"]
        for level in levels:
            entry = r["kiln"][f"O{level}"]
            cells += [f"{entry['median_ms']:.2f}", f"{entry['ort_over_kiln']:.2f}x"]
        cells.append(" / ".join(f"{r['kiln'][f'O{l}']['max_rel_diff']:.1e}" for l in levels))
        cells.append(" / ".join(f"{r['kiln'][f'O{l}']['compile_s']:.1f}" for l in levels))
        cells.append("?" if r.get("steal_percent") is None else f"{r['steal_percent']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    transformers = [r for r in results if "error" not in r and r["name"].rsplit("_", 1)[0] in TRANSFORMERS + ("transformer",)]
    if transformers:
        best = {r["name"]: max(e["ort_over_kiln"] for e in r["kiln"].values()) for r in transformers}
        met = all(v >= 1.0 for v in best.values())
        summary = ", ".join(f"{name} {ratio:.2f}x" for name, ratio in best.items())
        lines += ["", f"Goal (no slower than onnxruntime on the transformer models, the samples' two included; best -O level): "
                      f"{'met' if met else 'NOT met'} ({summary})."]
    lines += ["", "ORT/kiln > 1 means kiln is faster. max rel diff = max |ORT - kiln| / max |ORT| over the outputs. "
              "steal %: CPU time the hypervisor gave other guests while that model was measured (/proc/stat).",
              "Zoo weights: the configs' random init with every all-zero parameter (biases, ViT's classifier head) "
              "drawn from N(0, 0.02) (build_models.fill_zero_parameters), so no optimizer drops a bias add that "
              "trained weights keep and every output comparison is against non-zero outputs."]
    attention = env.get("zoo_attention")
    if attention:
        lines.append("Zoo text models' attention (transformers' attn_implementation at export): "
                     + ", ".join(f"{name} {kind}" for name, kind in sorted(attention.items())) + ".")
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", default=os.path.join(REPO, "samples"))
    parser.add_argument("--models", default=os.path.join(HERE, "models"))
    parser.add_argument("--only", action="append", default=[], help="model name, with or without the exporter")
    parser.add_argument("--exporters", nargs="+", default=list(EXPORTERS), choices=EXPORTERS)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=128, help="size of non-batch symbolic dims (sequence length)")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-native", action="store_true", help="XLA's ops only (no native CPU kernels), for A/B runs")
    parser.add_argument("--rounds", type=int, default=2, help="blocks of calls per runtime, taking turns")
    parser.add_argument("--min-block-seconds", type=float, default=0.5,
                        help="a block of a fast model repeats its call for at least this long")
    parser.add_argument("-O", dest="opt_levels", type=int, action="append", help="kiln -O levels (default 2 and 3)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "jax_cpu"))
    parser.add_argument("--single", help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="sample", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.opt_levels = args.opt_levels or [2, 3]
    return args


def main() -> int:
    args = parse_args()
    if args.single:
        result = run_one(args)
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)
        return 0
    from compiler.benchmark import cpu_ticks, steal_percent

    load_before, ticks_before = os.getloadavg(), cpu_ticks()
    results = run_all(args)
    env = environment(args, load_before, os.getloadavg(), steal_percent(ticks_before, cpu_ticks()))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as handle:
        json.dump({"environment": env, "results": results}, handle, indent=1)
    with open(args.out + ".md", "w") as handle:
        handle.write(markdown(results, env, args.opt_levels))
    print(f"wrote {args.out}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
