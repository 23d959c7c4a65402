"""GPU latency of graphkiln's JAX backend (--backend gpu, fp32 and bf16) against PyTorch eager and
torch.compile on the same GPU, at batch 1 and 32, on BERT-base, GPT-2 small, ResNet-50,
MobileNetV3 (large) and ViT-B/16 with random weights (seeded, so every process builds the same; no
parameter left all zero: build_models.fill_zero_parameters). The text models use transformers'
default attention (sdpa: torch's fused attention kernels in eager and compiled PyTorch; kiln fuses
the exported form into one Attention op); records before 2026-12-06 used eager attention on both
sides, which denied PyTorch its fused kernels.

One invocation does everything, so it fits in one call on a lent GPU machine:
  1. build: export each model to ONNX (torch.onnx, on the CPU), one process per model in parallel;
  2. warm: compile every configuration once, in parallel processes (fills JAX's persistent
     compilation cache and Inductor's caches, which the timing processes then hit);
  3. time: one model at a time, alone on the GPU: kiln, torch eager, torch.compile.
Results are written after every model to OUT/jax_gpu.json and OUT/jax_gpu.md (a run cut short
still leaves what it measured).

    python bench/jax_gpu.py --out DIR [--models bert_base,resnet50] [--tiny] [--deadline 520]

fp32 is full float32 on both sides (TF32 off in torch, Precision.HIGHEST in kiln); bf16 is
torch.autocast(bfloat16) for PyTorch and --precision bf16 (bf16 operands, fp32 accumulation) for
kiln. Inputs and outputs stay on the GPU; each call is timed to completion (synchronized).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

MODELS = ("bert_base", "gpt2_small", "resnet50", "mobilenet_v3", "vit_b16")
VISION = ("resnet50", "mobilenet_v3", "vit_b16")
SEQUENCE = 128


# ---------------------------------------------------------------------------------------- models

def build_torch_model(name: str, tiny: bool):
    """The torch module for `name`, random weights from a fixed seed, in eval mode."""
    import torch

    from build_models import ATTENTION, fill_zero_parameters, import_torchvision

    import_torchvision()  # before transformers, which imports it too
    torch.manual_seed(0)
    if name == "bert_base":
        from transformers import BertConfig, BertModel

        config = BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128) if tiny else BertConfig()
        config._attn_implementation = ATTENTION  # transformers' default (sdpa) for torch and kiln alike
        model = BertModel(config, add_pooling_layer=False)
    elif name == "gpt2_small":
        from transformers import GPT2Config, GPT2Model

        config = GPT2Config(n_layer=2, n_embd=64, n_head=4) if tiny else GPT2Config()
        config._attn_implementation = ATTENTION  # transformers' default (sdpa) for torch and kiln alike
        config.use_cache = False
        model = GPT2Model(config)
    else:
        import torchvision

        builder = {"resnet50": torchvision.models.resnet50, "mobilenet_v3": torchvision.models.mobilenet_v3_large,
                   "vit_b16": torchvision.models.vit_b_16}[name]
        model = builder(weights=None)
    return _wrap(name, fill_zero_parameters(model)).eval()


def _wrap(name: str, model):
    """A module with named tensor arguments returning one tensor (HF models return ModelOutput)."""
    import torch

    class Text(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask=None):
            return self.inner(input_ids, attention_mask=attention_mask).last_hidden_state

    class Vision(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, pixels):
            return self.inner(pixels)

    return (Vision if name in VISION else Text)(model)


def example_inputs(name: str, batch: int, tiny: bool) -> dict:
    """numpy inputs by ONNX input name (also the forward's argument names)."""
    import numpy as np

    rng = np.random.default_rng(batch)
    if name in VISION:
        return {"pixels": rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)}
    vocab = 1000 if tiny else 30000
    ids = rng.integers(0, vocab, size=(batch, SEQUENCE)).astype(np.int64)
    if name == "bert_base":
        return {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    return {"input_ids": ids}


def export_onnx(name: str, folder: str, tiny: bool) -> str:
    """Export `name` to folder/name.onnx with a symbolic batch (and sequence) dimension: the
    torch.export-based exporter, else the TorchScript one."""
    import torch

    path = os.path.join(folder, f"{name}.onnx")
    model = build_torch_model(name, tiny)
    feeds = example_inputs(name, 2, tiny)
    args = tuple(torch.from_numpy(v) for v in feeds.values())
    batch, sequence = torch.export.Dim("batch", max=4096), torch.export.Dim("sequence", max=1024)
    shapes = {k: ({0: batch} if name in VISION else {0: batch, 1: sequence}) for k in feeds}
    try:
        torch.onnx.export(model, args, path, input_names=list(feeds), output_names=["output"], dynamic_shapes=shapes,
                          dynamo=True, external_data=False, opset_version=18)
    except Exception as error:  # noqa: BLE001 (fall back to the older exporter)
        print(f"[{name}] torch.export-based ONNX export failed ({type(error).__name__}); trying TorchScript", flush=True)
        axes = {k: {0: "batch"} if name in VISION else {0: "batch", 1: "sequence"} for k in feeds}
        axes["output"] = {0: "batch"}
        torch.onnx.export(model, args, path, input_names=list(feeds), output_names=["output"], dynamic_axes=axes,
                          opset_version=17, dynamo=False)
    return path


# ---------------------------------------------------------------------------------------- timing

def _stats(samples: list[float]) -> dict:
    import numpy as np

    return {"median_ms": statistics.median(samples), "p90_ms": float(np.percentile(samples, 90)),
            "min_ms": min(samples), "repeat": len(samples)}


def time_call(call, sync, repeat: int, warmup: int) -> dict:
    for _ in range(warmup):
        sync(call())
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        sync(call())
        samples.append((time.perf_counter() - start) * 1000.0)
    return _stats(samples)


def kiln_runner(path: str, precision: str, feeds: dict, backend: str, opt_level: int = 2):
    """(call, sync, compile seconds, first output as numpy) for kiln --backend gpu (or cpu)."""
    import jax
    import numpy as np

    import compiler

    start = time.perf_counter()
    compiled = compiler.compile(path, backend=backend, opt_level=opt_level, precision=precision)
    runner = compiled.runner
    arrays = [jax.device_put(feeds[name], runner.placement.device) for name in compiled.input_names]
    first = runner.run_on_device(arrays)
    jax.block_until_ready(first)
    seconds = time.perf_counter() - start
    return (lambda: runner.run_on_device(arrays)), jax.block_until_ready, seconds, np.asarray(first[0], dtype=np.float32)


def torch_runner(name: str, precision: str, feeds: dict, compiled: bool, tiny: bool, device: str):
    """(call, sync, compile seconds, output as numpy) for PyTorch eager or torch.compile."""
    import numpy as np
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = build_torch_model(name, tiny)
    if name in ("bert_base", "gpt2_small"):
        try:  # torch's fastest attention for its own runs (the ONNX export used plain matmuls)
            model.inner.set_attn_implementation("sdpa")
        except (AttributeError, ValueError):
            model.inner.config._attn_implementation = "sdpa"
    model = model.to(device)
    tensors = [torch.from_numpy(v).to(device) for v in feeds.values()]
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    dtype = torch.bfloat16 if precision == "bf16" else None

    def forward(*args):
        if dtype is None:
            return model(*args)
        with torch.autocast(device, dtype=dtype):
            return model(*args)

    function = torch.compile(forward) if compiled else forward
    start = time.perf_counter()
    with torch.inference_mode():
        first = function(*tensors)
        synchronize()
    seconds = time.perf_counter() - start

    def call():
        with torch.inference_mode():
            return function(*tensors)

    return call, (lambda _: synchronize()), seconds, first.float().cpu().numpy()


def measure_model(name: str, folder: str, args: argparse.Namespace, warm_only: bool) -> list[dict]:
    """Every configuration of one model; in warm-only mode just compile and run once."""
    import numpy as np

    rows = []
    path = os.path.join(folder, f"{name}.onnx")
    for batch in args.batches:
        feeds = example_inputs(name, batch, args.tiny)
        for precision in args.precisions:
            reference = None
            for runtime in ("kiln", "torch_eager", "torch_compile"):
                if runtime == "torch_eager" and warm_only:
                    continue
                row = {"model": name, "batch": batch, "precision": precision, "runtime": runtime}
                try:
                    if runtime == "kiln":
                        call, sync, seconds, output = kiln_runner(path, precision, feeds, args.platform, args.opt_level)
                    else:
                        device = "cuda" if args.platform == "gpu" else "cpu"
                        call, sync, seconds, output = torch_runner(name, precision, feeds, runtime == "torch_compile",
                                                                   args.tiny, device)
                    row["compile_s"] = seconds
                    if not warm_only:
                        row.update(time_call(call, sync, args.repeat, args.warmup))
                    if runtime == "torch_eager":
                        reference = output
                    elif runtime == "kiln":
                        row["_output"] = output
                except Exception as error:  # record and go on: one failure must not lose the rest
                    row["error"] = f"{type(error).__name__}: {' '.join(str(error).split())[:400]}"
                rows.append(row)
                print(f"[{name}] b{batch} {precision} {runtime}: " + (row.get("error") or
                      (f"{row['median_ms']:.3f} ms" if "median_ms" in row else f"compiled in {row['compile_s']:.1f}s")), flush=True)
            for row in rows:
                output = row.pop("_output", None)
                if output is not None and reference is not None and output.shape == reference.shape:
                    scale = float(np.abs(reference).max()) or 1.0
                    row["max_abs_diff_vs_torch_eager"] = float(np.abs(output - reference).max())
                    row["max_rel_diff_vs_torch_eager"] = row["max_abs_diff_vs_torch_eager"] / scale
    return rows


# ---------------------------------------------------------------------------------------- driver

def child_command(args: argparse.Namespace, phase: str, name: str) -> list[str]:
    command = [sys.executable, os.path.abspath(__file__), "--phase", phase, "--models", name, "--out", args.out,
               "--work", args.work, "--platform", args.platform,
               "--batches", ",".join(map(str, args.batches)), "--precisions", ",".join(args.precisions),
               "--repeat", str(args.repeat), "--warmup", str(args.warmup), "--opt-level", str(args.opt_level)]
    return command + (["--tiny"] if args.tiny else [])


def run_children(args: argparse.Namespace, phase: str, names: list[str], parallel: int, deadline: float) -> dict:
    """Run one child process per model (`parallel` at a time) within the deadline; returns the
    exit status per model."""
    log_path = os.path.join(args.out, "log.txt")

    def one(name: str) -> tuple[str, int | str]:
        left = deadline - time.monotonic()
        if left < 20:
            return name, "skipped: out of time"
        with open(log_path, "a") as log:
            try:
                done = subprocess.run(child_command(args, phase, name), stdout=log, stderr=subprocess.STDOUT,
                                      timeout=left, env=child_environment(args))
                return name, done.returncode
            except subprocess.TimeoutExpired:
                return name, "timed out"

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return dict(pool.map(one, names))


def child_environment(args: argparse.Namespace) -> dict:
    env = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # several processes share the GPU
    env.setdefault("KILN_CACHE_DIR", os.path.join(args.work, "jax_cache"))
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(args.work, "inductor_cache"))
    env.setdefault("TRITON_CACHE_DIR", os.path.join(args.work, "triton_cache"))
    return env


def machine() -> dict:
    info = {"host_cpu": platform.processor() or platform.machine(), "python": platform.python_version()}
    try:
        info["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                                     capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["gpu"] = "unknown"
    for module in ("jax", "torch", "transformers", "torchvision", "onnx", "onnxruntime"):
        try:
            info[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001 (a missing package is recorded, not fatal)
            info[module] = None
    return info


def write_results(args: argparse.Namespace, rows: list[dict], status: dict) -> None:
    payload = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": args.machine,
               "sequence_length": SEQUENCE, "repeat": args.repeat, "warmup": args.warmup, "status": status, "rows": rows}
    with open(os.path.join(args.out, "jax_gpu.json"), "w") as handle:
        json.dump(payload, handle, indent=1)
    with open(os.path.join(args.out, "jax_gpu.md"), "w") as handle:
        handle.write(markdown(payload))


def markdown(payload: dict) -> str:
    machine = payload["machine"]
    lines = ["# JAX GPU backend vs PyTorch eager and torch.compile", "",
             f"Recorded {payload['date']} by `python bench/jax_gpu.py`. GPU: {machine.get('gpu')}; "
             f"jax {machine.get('jax')}, torch {machine.get('torch')}, transformers {machine.get('transformers')}, "
             f"torchvision {machine.get('torchvision')}. Sequence length {payload['sequence_length']} for the text models; "
             f"224x224 images. Median of {payload['repeat']} synchronized calls after {payload['warmup']} warm-up calls, "
             "inputs and outputs on the GPU.", "",
             "| model | batch | precision | kiln ms | torch eager ms | torch.compile ms | kiln vs compile | kiln compile s | kiln-vs-eager rel diff |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    table: dict[tuple, dict] = {}
    for row in payload["rows"]:
        table.setdefault((row["model"], row["batch"], row["precision"]), {})[row["runtime"]] = row
    for (model, batch, precision), cells in table.items():
        def ms(runtime: str) -> str:
            cell = cells.get(runtime, {})
            return f"{cell['median_ms']:.3f}" if "median_ms" in cell else ("error" if "error" in cell else "-")
        kiln, compiled = cells.get("kiln", {}), cells.get("torch_compile", {})
        ratio = (f"{compiled['median_ms'] / kiln['median_ms']:.2f}x" if "median_ms" in kiln and "median_ms" in compiled else "-")
        diff = kiln.get("max_rel_diff_vs_torch_eager")
        lines.append(f"| {model} | {batch} | {precision} | {ms('kiln')} | {ms('torch_eager')} | {ms('torch_compile')} | "
                     f"{ratio} | {kiln.get('compile_s', float('nan')):.1f} | {'-' if diff is None else f'{diff:.2g}'} |")
    lines += ["", goal_line(table)]
    errors = [r for r in payload["rows"] if "error" in r]
    if errors:
        lines += ["", "Errors:"] + [f"- {r['model']} b{r['batch']} {r['precision']} {r['runtime']}: {r['error']}" for r in errors]
    lines += ["", f"Phase status: {json.dumps(payload['status'])}"]
    return "\n".join(lines) + "\n"


def goal_line(table: dict[tuple, dict]) -> str:
    """Issue 3's GPU goal: kiln faster than torch.compile at batch 32 in bf16, on every model measured there."""
    ratios = {model: cells["torch_compile"]["median_ms"] / cells["kiln"]["median_ms"]
              for (model, batch, precision), cells in table.items()
              if batch == 32 and precision == "bf16" and "median_ms" in cells.get("kiln", {})
              and "median_ms" in cells.get("torch_compile", {})}
    if not ratios:
        return "Goal (faster than torch.compile at batch 32 in bf16): not measured in this run."
    verdict = "met" if all(r > 1.0 for r in ratios.values()) else "NOT met"
    figures = ", ".join(f"{model} {ratio:.2f}x" for model, ratio in ratios.items())
    return f"Goal (faster than torch.compile at batch 32 in bf16, torch.compile ms / kiln ms): {verdict} ({figures})."


def driver(args: argparse.Namespace) -> int:
    start = time.monotonic()
    deadline = start + args.deadline
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.work, exist_ok=True)
    args.machine = machine()
    status: dict = {}
    names = list(args.models)
    status["build"] = run_children(args, "build", names, len(names), start + args.deadline * 0.3)
    built = [n for n in names if os.path.exists(os.path.join(args.work, "models", f"{n}.onnx"))]
    status["build_seconds"] = round(time.monotonic() - start, 1)
    status["warm"] = run_children(args, "warm", built, args.jobs, start + args.deadline * 0.6)
    status["warm_seconds"] = round(time.monotonic() - start, 1)
    rows: list[dict] = []
    for name in built:
        status.setdefault("time", {}).update(run_children(args, "time", [name], 1, deadline))
        result_path = os.path.join(args.work, f"rows_{name}.json")
        if os.path.exists(result_path):
            with open(result_path) as handle:
                rows += json.load(handle)
        write_results(args, rows, status)
    status["total_seconds"] = round(time.monotonic() - start, 1)
    write_results(args, rows, status)
    print(open(os.path.join(args.out, "jax_gpu.md")).read())
    return 0


def child(args: argparse.Namespace) -> int:
    name = args.models[0]
    folder = os.path.join(args.work, "models")
    os.makedirs(folder, exist_ok=True)
    if args.phase == "build":
        started = time.perf_counter()
        export_onnx(name, folder, args.tiny)
        print(f"[{name}] exported in {time.perf_counter() - started:.1f}s", flush=True)
        return 0
    rows = measure_model(name, folder, args, warm_only=args.phase == "warm")
    if args.phase == "time":
        with open(os.path.join(args.work, f"rows_{name}.json"), "w") as handle:
            json.dump(rows, handle, indent=1)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for jax_gpu.json, jax_gpu.md and log.txt")
    parser.add_argument("--work", default=None, help="folder for models and caches (default OUT/../kiln_gpu_work)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=5, help="parallel processes while warming the caches")
    parser.add_argument("--deadline", type=float, default=520.0, help="seconds for the whole run")
    parser.add_argument("--opt-level", type=int, default=2, help="kiln optimization level (-O)")
    parser.add_argument("--tiny", action="store_true", help="small configs, to test this script")
    parser.add_argument("--platform", choices=("gpu", "cpu"), default="gpu", help="cpu: test this script without a GPU")
    parser.add_argument("--phase", choices=("build", "warm", "time"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.models = [m for m in args.models.split(",") if m]
    args.batches = [int(b) for b in args.batches.split(",")]
    args.precisions = args.precisions.split(",")
    args.work = args.work or os.path.join(os.path.dirname(os.path.abspath(args.out)), "kiln_gpu_work")
    return child(args) if args.phase else driver(args)


if __name__ == "__main__":
    sys.exit(main())
