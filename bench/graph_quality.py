"""Graph quality: node count and optimizer wall time of kiln -O3 (standard-ONNX output) against
onnxsim, onnxslim, onnxoptimizer and onnxruntime's offline optimizer (basic, extended), on every
model of bench/models/ and the transformer samples, outputs checked within 1e-4 of the original.

    python bench/graph_quality.py [--models NAME ...] [--tools TOOL ...] [--timeout 600]

Each (model, tool) runs in its own process (a crash or a memory blow-up costs one cell). Writes
bench/results/graph_quality.md and .json with the machine and the versions."""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "bench" / "models"
RESULTS = ROOT / "bench" / "results"
TOOLS = ("kiln_O3", "onnxsim", "onnxslim", "onnxoptimizer", "ort_basic", "ort_extended")
STANDARD_TOOLS = ("onnxsim", "onnxslim", "onnxoptimizer", "ort_basic")  # the "best of" set
TOLERANCE = 1e-4
REPEAT = 5  # timed runs per cell (median reported; the first, cold one is kept too)
TIME_BUDGET = 20.0  # seconds of optimizing per cell before the repeats stop


def model_catalog() -> dict[str, dict]:
    """name -> {path, inputs: {name: {dtype, dims}}, sizes} for the zoo models and the samples."""
    catalog: dict[str, dict] = {}
    manifest = MODELS / "manifest.json"
    if manifest.exists():
        for name, entry in json.loads(manifest.read_text()).items():
            path = MODELS / entry["file"]
            if path.exists():
                catalog[name] = {"path": str(path), "inputs": entry["inputs"], "sizes": entry.get("sizes", {})}
    for name in ("transformer_torchscript", "transformer_dynamo"):
        catalog[name] = {"path": str(ROOT / "samples" / f"{name}.onnx"), "inputs": None,
                         "feeds": str(ROOT / "samples" / "data" / f"{name}_inputs.npz")}
    return catalog


def make_feeds(entry: dict) -> dict[str, np.ndarray]:
    """Deterministic inputs: token ids in [0, 1000), masks of ones with a padded tail, floats ~ N(0, 1)."""
    if entry.get("feeds"):
        return dict(np.load(entry["feeds"]))
    rng = np.random.default_rng(0)
    feeds = {}
    for name, spec in entry["inputs"].items():
        shape = [entry["sizes"].get(d, 1) if isinstance(d, str) else d for d in spec["dims"]]
        dtype = np.dtype(spec["dtype"])
        if dtype.kind == "f":
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        elif "mask" in name:
            mask = np.ones(shape, dtype)
            mask[..., -shape[-1] // 4:] = 0
            mask[0] = 1
            feeds[name] = mask
        else:
            feeds[name] = rng.integers(0, 1000, shape).astype(dtype)
    return feeds


def prepare(tool: str) -> None:
    """Import the tool (and let kiln load its pass plugins) before the clock starts."""
    if tool == "kiln_O3":
        from compiler.plugins import load_plugins

        load_plugins()
    else:
        __import__({"ort_basic": "onnxruntime", "ort_extended": "onnxruntime"}.get(tool, tool))


def optimize(tool: str, model, work: str):
    """Run one optimizer on an in-memory ModelProto; returns the optimized ModelProto."""
    import onnx

    if tool == "kiln_O3":
        import compiler

        return compiler.optimize(model, opt_level=3)
    if tool == "onnxsim":
        import onnxsim

        simplified, ok = onnxsim.simplify(model)
        if not ok:
            raise RuntimeError("onnxsim could not validate its output")
        return simplified
    if tool == "onnxslim":
        import onnxslim

        return onnxslim.slim(model)
    if tool == "onnxoptimizer":
        import onnxoptimizer

        return onnxoptimizer.optimize(model)
    if tool in ("ort_basic", "ort_extended"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if tool == "ort_basic"
                                            else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
        options.optimized_model_filepath = os.path.join(work, "ort.onnx")
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath)
    raise ValueError(tool)


def run_model(model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs under onnxruntime with its own optimizer off (so the graph itself is measured)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feeds.items() if k in names})


def one_cell(name: str, tool: str, reference_path: str) -> dict:
    """Optimize one model with one tool, count nodes, time it, compare outputs with the reference."""
    import onnx

    entry = model_catalog()[name]
    model = onnx.load(entry["path"])
    prepare(tool)
    with tempfile.TemporaryDirectory() as work:
        times: list[float] = []
        while True:  # median of up to REPEAT runs, as many as fit in TIME_BUDGET seconds (at least one)
            optimized = None
            fresh = onnx.ModelProto()
            fresh.CopyFrom(model)  # untimed: a tool that edits its input in place gets the original every run
            gc.collect()
            start = time.perf_counter()
            optimized = optimize(tool, fresh, work)
            times.append(time.perf_counter() - start)
            if len(times) >= REPEAT or sum(times) >= TIME_BUDGET:
                break
        domains = sorted({n.domain for n in optimized.graph.node if n.domain not in ("", "ai.onnx")})
        cell = {"nodes": len(optimized.graph.node), "seconds": round(statistics.median(times), 3),
                "seconds_first": round(times[0], 3), "runs": len(times), "custom_domains": domains,
                "opset": next((o.version for o in optimized.opset_import if o.domain in ("", "ai.onnx")), None)}
        if optimized.ByteSize() < 2**31 - 2**20 and model.ByteSize() < 2**31 - 2**20:
            expected = np.load(reference_path)
            actual = run_model(optimized, make_feeds(entry))
            errors = [float(np.max(np.abs(expected[f"o{i}"].astype(np.float64) - a.astype(np.float64)), initial=0.0))
                      for i, a in enumerate(actual)]
            cell["max_abs_error"] = max(errors, default=0.0)
            cell["outputs_match"] = len(actual) == len(expected.files) and cell["max_abs_error"] <= TOLERANCE
    return cell


def reference_outputs(name: str, path: str) -> dict:
    import onnx

    entry = model_catalog()[name]
    model = onnx.load(entry["path"])
    outputs = run_model(model, make_feeds(entry))
    np.savez(path, **{f"o{i}": o for i, o in enumerate(outputs)})
    return {"nodes": len(model.graph.node),
            "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)}


def _subprocess(args: list[str], timeout: int) -> dict:
    command = [sys.executable, __file__, *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail[:300]}
    return json.loads(lines[-1])


def machine() -> dict:
    versions = {}
    for package in ("onnx", "onnxruntime", "onnxsim", "onnxslim", "onnxoptimizer", "numpy", "graphkiln"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "versions": versions,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def verdict(row: dict) -> str:
    """The issue's goal for one model: kiln nodes <= best standard tool, time <= onnxsim / 2, outputs ok."""
    kiln = row["tools"].get("kiln_O3", {})
    if "nodes" not in kiln:
        return "kiln failed"
    best = min((row["tools"][t]["nodes"] for t in STANDARD_TOOLS if "nodes" in row["tools"].get(t, {})), default=None)
    notes = []
    if best is not None and kiln["nodes"] > best:
        notes.append(f"+{kiln['nodes'] - best} nodes vs best")
    simplifier = row["tools"].get("onnxsim", {})
    if "seconds" in simplifier and kiln["seconds"] > simplifier["seconds"] / 2:
        notes.append("slower than onnxsim/2")
    if kiln.get("outputs_match") is False:
        notes.append("outputs differ")
    return "met" if not notes else "; ".join(notes)


def write_results(rows: list[dict], info: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"machine": info, "tolerance": TOLERANCE, "models": rows}
    (RESULTS / "graph_quality.json").write_text(json.dumps(payload, indent=1))
    lines = ["# Graph quality: kiln -O3 vs onnxsim, onnxslim, onnxoptimizer, onnxruntime offline", "",
             f"Machine: {info['platform']}, {info['cpus']} CPUs, Python {info['python']}; {info['date']}.",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + ".", "",
             "Cells: nodes / optimizer seconds (model already in memory; median of up to 5 runs in one process, as "
             "many as fit in 20 s, the same for every tool; onnxruntime: session creation writing the "
             "optimized model). `*` marks outputs not within 1e-4 of the original, `!` non-standard ops "
             "(com.microsoft) in the output. The goal column is the issue's: kiln no more nodes than the best of "
             "onnxsim/onnxslim/onnxoptimizer/ort-basic, in at most half of onnxsim's time, outputs within 1e-4.", "",
             "| model | original | " + " | ".join(TOOLS) + " | goal |", "|" + "---|" * (len(TOOLS) + 3)]
    for row in rows:
        cells = []
        for tool in TOOLS:
            cell = row["tools"].get(tool, {})
            if "nodes" not in cell:
                cells.append("error")
                continue
            mark = ("*" if cell.get("outputs_match") is False else "") + ("!" if cell.get("custom_domains") else "")
            cells.append(f"{cell['nodes']}{mark} / {cell['seconds']:.2f}")
        lines.append(f"| {row['model']} | {row.get('original_nodes', '?')} | " + " | ".join(cells) + f" | {verdict(row)} |")
    errors = [(row["model"], tool, cell["error"]) for row in rows for tool, cell in row["tools"].items() if "error" in cell]
    if errors:
        lines += ["", "Errors:", *[f"- {model} / {tool}: {message}" for model, tool, message in errors]]
    (RESULTS / "graph_quality.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*")
    parser.add_argument("--tools", nargs="*", default=list(TOOLS))
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument("--merge", action="store_true", help="update only --tools in the existing results")
    parser.add_argument("--cell", nargs=3, metavar=("MODEL", "TOOL", "REFERENCE"), help=argparse.SUPPRESS)
    parser.add_argument("--reference", nargs=2, metavar=("MODEL", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        print(json.dumps(one_cell(*args.cell)))
        return 0
    if args.reference:
        print(json.dumps(reference_outputs(*args.reference)))
        return 0
    catalog = model_catalog()
    names = args.models or sorted(catalog)
    rows, previous = [], {}
    if args.merge and (RESULTS / "graph_quality.json").exists():
        previous = {row["model"]: row for row in json.loads((RESULTS / "graph_quality.json").read_text())["models"]}
        rows = list(previous.values())
    with tempfile.TemporaryDirectory() as work:
        for name in names:
            reference = os.path.join(work, f"{name}.npz")
            original = _subprocess(["--reference", name, reference], args.timeout)
            row = previous.get(name) or {"model": name, "original_nodes": original.get("nodes"),
                                         "original_opset": original.get("opset"), "tools": {}}
            for tool in args.tools:
                row["tools"][tool] = _subprocess(["--cell", name, tool, reference], args.timeout) if "error" not in original else original
                print(name, tool, row["tools"][tool], flush=True)
            if name not in previous:
                rows.append(row)
            write_results(rows, machine())
    return 0


if __name__ == "__main__":
    sys.exit(main())
