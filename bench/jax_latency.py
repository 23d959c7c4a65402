"""CPU latency of graphkiln's JAX backend against onnxruntime (ORT_ENABLE_ALL, the same intra-op
thread count) on the sample models and the zoo models in bench/models/ (BERT-base, GPT-2 small,
ResNet-50, MobileNetV3, ViT-B/16, built by bench/build_models.py; skipped when absent).

Each model runs in its own process (a fresh XLA client honours the thread pinning), and the
results go to bench/results/jax_cpu_latency.{json,md} with the machine they came from.

    python bench/jax_latency.py [--batch 1] [--seq 128] [--threads N] [--repeat 50] [--only NAME]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

ZOO = ("bert_base", "gpt2_small", "resnet50", "mobilenet_v3", "vit_b16")
TRANSFORMERS = ("bert_base", "gpt2_small", "vit_b16", "transformer_torchscript", "transformer_dynamo")


def find_models(samples_dir: str, models_dir: str, only: list[str]) -> list[tuple[str, str, str]]:
    """(name, kind, path) of every sample and zoo model present, in a stable order."""
    found = []
    if os.path.isdir(samples_dir):
        for file in sorted(os.listdir(samples_dir)):
            if file.endswith(".onnx"):
                found.append((file[:-5], "sample", os.path.join(samples_dir, file)))
    if os.path.isdir(models_dir):
        for file in sorted(os.listdir(models_dir)):
            if file.endswith(".onnx"):
                found.append((file[:-5], "zoo", os.path.join(models_dir, file)))
    return [m for m in found if not only or m[0] in only]


def symbol_sizes(path: str, batch: int, seq: int) -> dict[str, int]:
    """Sizes for the model's symbolic input dims: the first is the batch, the others the sequence."""
    import compiler

    sizes: dict[str, int] = {}
    for value in compiler.load(path).inputs:
        for axis, dim in enumerate(value.shape or ()):
            if not isinstance(dim, int) and dim:
                sizes.setdefault(str(dim), batch if axis == 0 else seq)
    return sizes


def run_one(args: argparse.Namespace) -> None:
    """Child process: benchmark one model and write its result as JSON."""
    from compiler.benchmark import benchmark_model

    dims = symbol_sizes(args.single, args.batch, args.seq)
    result = benchmark_model(args.single, backend="cpu", batch=args.batch, dims=dims, repeat=args.repeat,
                             warmup=args.warmup, threads=args.threads, opt_level=args.opt_level, precision=args.precision)
    import jax

    result["jax_version"] = jax.__version__
    result["x64"] = bool(jax.config.jax_enable_x64)
    with open(args.json, "w") as handle:
        json.dump(result, handle, indent=1)


def run_all(args: argparse.Namespace) -> list[dict]:
    results = []
    for name, kind, path in find_models(args.samples, args.models, args.only):
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
            target = handle.name
        command = [sys.executable, os.path.abspath(__file__), "--single", path, "--json", target,
                   "--batch", str(args.batch), "--seq", str(args.seq), "--repeat", str(args.repeat),
                   "--warmup", str(args.warmup), "--opt-level", str(args.opt_level), "--precision", args.precision]
        if args.threads:
            command += ["--threads", str(args.threads)]
        print(f"== {name} ({kind})", flush=True)
        done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO))
        if done.returncode == 0:
            with open(target) as result_file:
                result = json.load(result_file)
            result.update(name=name, kind=kind)
            print(f"   kiln {result['kiln']['median_ms']:.3f} ms, onnxruntime {result['onnxruntime']['median_ms']:.3f} ms, "
                  f"speedup {result['speedup']:.2f}x, match {result['outputs_match']}", flush=True)
        else:
            error = (done.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
            result = {"name": name, "kind": kind, "error": error}
            print(f"   FAILED: {error}", flush=True)
        os.unlink(target)
        results.append(result)
    return results


def markdown(results: list[dict], args: argparse.Namespace) -> str:
    from compiler.benchmark import machine_description

    machine = machine_description()
    ok = [r for r in results if "error" not in r]
    threads = ok[0]["threads"] if ok else args.threads
    lines = [
        "# JAX CPU backend vs onnxruntime: latency",
        "",
        f"Recorded {datetime.date.today().isoformat()} by `python bench/jax_latency.py "
        f"--batch {args.batch} --seq {args.seq} --repeat {args.repeat}`.",
        f"Machine: {machine['cpu']}, {machine['cpus']} logical CPUs usable, {machine['os']}, Python {machine['python']}.",
        f"Threads: {threads} for both (onnxruntime intra_op_num_threads; XLA pinned by CPU affinity).",
        f"kiln: -O{args.opt_level}, --backend cpu, {args.precision}; onnxruntime: ORT_ENABLE_ALL, CPUExecutionProvider.",
        "Calls alternate between the two runtimes; times are ms per call, numpy in and out.",
        "",
        "| model | kind | inputs | kiln median | kiln p90 | ORT median | ORT p90 | ORT/kiln | compile s | outputs match |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['name']} | {r['kind']} | | | | | | | | FAILED: {r['error']} |")
            continue
        shapes = ", ".join(f"{k}{v}" for k, v in r["inputs"].items())
        lines.append(
            f"| {r['name']} | {r['kind']} | {shapes} | {r['kiln']['median_ms']:.3f} | {r['kiln']['p90_ms']:.3f} | "
            f"{r['onnxruntime']['median_ms']:.3f} | {r['onnxruntime']['p90_ms']:.3f} | {r['speedup']:.2f}x | "
            f"{r['kiln']['compile_s']:.1f} | {'yes' if r['outputs_match'] else 'NO'} ({r['max_abs_error']:.2g}) |")
    transformers = [r for r in ok if r["name"] in TRANSFORMERS]
    if transformers:
        met = all(r["speedup"] >= 1.0 for r in transformers)
        lines += ["", f"Goal (no slower than onnxruntime on the transformer models): {'met' if met else 'NOT met'} "
                      f"({', '.join(f'{r['name']} {r['speedup']:.2f}x' for r in transformers)})."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", default=os.path.join(REPO, "samples"))
    parser.add_argument("--models", default=os.path.join(REPO, "bench", "models"))
    parser.add_argument("--only", action="append", default=[])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=128, help="size of non-batch symbolic dims (sequence length)")
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--opt-level", type=int, default=2)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "jax_cpu_latency"))
    parser.add_argument("--single", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        run_one(args)
        return 0
    results = run_all(args)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as handle:
        json.dump(results, handle, indent=1)
    with open(args.out + ".md", "w") as handle:
        handle.write(markdown(results, args))
    print(f"wrote {args.out}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
