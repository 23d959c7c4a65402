"""`kiln`: a thin command line over the Python API. User mistakes print one line and exit
non-zero; tracebacks appear only with --debug."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from typing import Any, Callable, Sequence

BACKENDS = ("cpu", "gpu", "tpu", "onnx", "tensorrt", "asic")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2) instead of the usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"kiln: error: {message} (see kiln {self.prog.split()[-1]} --help)\n")


def _add_pipeline_options(parser: argparse.ArgumentParser) -> None:
    level = parser.add_mutually_exclusive_group()
    for n in range(4):
        level.add_argument(f"-O{n}", dest="opt_level", action="store_const", const=n, help=f"optimization level {n}" + (" (default)" if n == 2 else ""))
    parser.set_defaults(opt_level=2)
    parser.add_argument("--passes", help="pipeline to run instead of the preset, e.g. 'fold_constants,dce' (or '+name' to append)")
    parser.add_argument("--disable", action="append", default=[], metavar="PASS", help="drop a pass from the pipeline (repeatable, or comma-separated)")
    parser.add_argument("--disable-rule", action="append", default=[], metavar="RULE", help="disable one rewrite rule by name")
    parser.add_argument("--keep-opset", action="store_true", help="write fused ops as ai.graphkiln ops instead of raising the opset")
    parser.add_argument("--quantize", choices=("int8", "int4"), help="insert quantization (int8 QDQ, or int4 weight-only)")
    parser.add_argument("--calibration", metavar="DATA", help=".npz, folder of .npy/.npz, or module:function yielding batches")
    parser.add_argument("--calibration-method", choices=("minmax", "percentile", "entropy", "mse"), default=None)
    parser.add_argument("--prune", type=float, metavar="RATIO", help="fraction of weights (or channels) to prune")
    parser.add_argument("--prune-mode", choices=("unstructured", "channels", "2:4"), default=None)
    parser.add_argument("--quantize-profile", choices=("default", "tensorrt"), default=None, help="where Q/DQ go (tensorrt: TensorRT explicit quantization)")
    parser.add_argument("--quantize-include", action="append", default=None, metavar="OP_OR_NODE", help="quantize only these op types / node names (repeatable, or comma-separated)")
    parser.add_argument("--quantize-exclude", action="append", default=None, metavar="OP_OR_NODE", help="leave these op types / node names in float (repeatable, or comma-separated)")
    parser.add_argument("--reduce-range", action="store_true", default=None, help="7-bit int8 weights, for onnxruntime's u8s8 kernels on CPUs without VNNI")
    parser.add_argument("--activation-type", choices=("int8", "uint8"), default=None, help="activation codes: int8 symmetric (default) or uint8 asymmetric")
    parser.add_argument("--prune-scope", choices=("global", "layer"), default=None, help="unstructured pruning: one global threshold or the ratio per layer")
    parser.add_argument("--recover", choices=("distill",), help="fine-tune weights after compression to match the original")
    parser.add_argument("--steps", type=int, help="recovery training steps")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--check-each-pass", action="store_true", help="compare outputs with the input model after every pass")
    parser.add_argument("--verify", action="store_true", help="verify the IR after every pass")
    parser.add_argument("--dump-ir", metavar="DIR", help="write numbered IR dumps after each pass that changed the graph")
    parser.add_argument("--explain", action="append", default=[], metavar="RULE@NODE", help="say why a rewrite rule did not match at a node")


def _add_backend_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, help="shard the batch over N devices (jax backends)")
    parser.add_argument("--model-parallel", type=int, metavar="M", help="of the --devices, split large weight matrices over M (jax backends)")
    parser.add_argument("--array", help="systolic array size ROWSxCOLS (asic)")
    parser.add_argument("--dataflow", choices=("os", "ws", "is"), help="systolic dataflow (asic)")
    parser.add_argument("--sram", type=float, metavar="KB", help="on-chip SRAM per operand buffer in KB (asic)")
    parser.add_argument("--bandwidth", type=float, metavar="GB/s", help="DRAM bandwidth (asic)")
    parser.add_argument("--freq", type=float, metavar="MHz", help="clock frequency (asic)")
    parser.add_argument("--shapes", metavar="NAME=DIMS", action="append", default=[], help="static input shape, e.g. input=1x3x224x224 (tensorrt/asic; cpu/gpu/tpu artifacts keep these dims instead of symbolic ones)")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress output")
    parser = _Parser(prog="kiln", description="graphkiln: an ahead-of-time graph compiler for neural networks", parents=[common])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    original_add = commands.add_parser
    commands.add_parser = lambda name, **kw: original_add(name, parents=[common], **kw)  # type: ignore[method-assign]

    compile_ = commands.add_parser("compile", help="optimize a model and lower it for a backend")
    compile_.add_argument("model")
    compile_.add_argument("--backend", choices=BACKENDS, default="cpu")
    compile_.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (or .onnx file for --backend onnx)")
    compile_.add_argument("--report", metavar="HTML", help="also write the pass-by-pass visualizer report")
    _add_pipeline_options(compile_)
    _add_backend_options(compile_)

    run = commands.add_parser("run", help="run a compiled output folder or a model on input data")
    run.add_argument("target", metavar="OUT_OR_MODEL")
    run.add_argument("--inputs", required=True, metavar="DATA", help=".npz/.npy file or folder, keyed by input name")
    run.add_argument("--compare", choices=("onnxruntime",), help="also run the original ONNX in onnxruntime and compare")
    run.add_argument("--backend", choices=BACKENDS, default="cpu", help="backend when OUT_OR_MODEL is a model file")
    run.add_argument("--save", metavar="NPZ", help="write the outputs to an .npz file")
    run.add_argument("--rtol", type=float, default=1e-4)
    run.add_argument("--atol", type=float, default=1e-5)

    viz = commands.add_parser("viz", help="write the pass-by-pass visualizer report")
    viz.add_argument("model")
    viz.add_argument("-o", "--output", required=True, metavar="REPORT")
    viz.add_argument("--format", choices=("html", "json"), default=None, help="default: from the file extension")
    viz.add_argument("--backend", choices=BACKENDS, default="onnx")
    _add_pipeline_options(viz)
    _add_backend_options(viz)

    inspect_ = commands.add_parser("inspect", help="print ops, parameters, FLOPs and the interface of a model")
    inspect_.add_argument("model")
    inspect_.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect_.add_argument("--dim", action="append", default=[], metavar="SYMBOL=N", help="size of a symbolic dim for FLOPs")

    bench = commands.add_parser("bench", help="latency of a backend against onnxruntime")
    bench.add_argument("model")
    bench.add_argument("--backend", choices=BACKENDS, default="cpu")
    bench.add_argument("--batch", type=int, default=1)
    bench.add_argument("--dim", action="append", default=[], metavar="SYMBOL=N")
    bench.add_argument("--repeat", type=int, default=50)
    bench.add_argument("--warmup", type=int, default=5)
    bench.add_argument("--threads", type=int, default=None)
    bench.add_argument("--json", metavar="FILE", help="write the results as JSON")
    _add_pipeline_options(bench)
    return parser


def _progress_printer(quiet: bool) -> Callable[[str], None] | None:
    if quiet:
        return None
    counter = {"n": 0}

    def show(message: str) -> None:
        counter["n"] += 1
        print(f"kiln: [{counter['n']}] {message}", file=sys.stderr, flush=True)

    return show


def _split_list(items: Sequence[str]) -> list[str]:
    return [part for item in items for part in item.split(",") if part]


def _dims(items: Sequence[str]) -> dict[str, int]:
    from .errors import OptionError

    dims: dict[str, int] = {}
    for item in items:
        name, _, size = item.partition("=")
        if not size.isdigit():
            raise OptionError(f"--dim expects SYMBOL=N, got {item!r}")
        dims[name] = int(size)
    return dims


def _pipeline_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {
        "keep_opset": args.keep_opset,
        "disabled_rules": _split_list(args.disable_rule),
        "debug_rewrites": bool(args.explain),
    }
    for key in ("quantize_include", "quantize_exclude"):
        if getattr(args, key, None):
            options[key] = _split_list(getattr(args, key))
    for key in ("calibration_method", "quantize_profile", "reduce_range", "activation_type", "prune_scope", "prune_mode", "recover", "steps", "devices", "model_parallel", "array", "dataflow", "sram",
                "bandwidth", "freq"):
        value = getattr(args, key, None)
        if value is not None:
            options[key] = value
    if getattr(args, "shapes", None):
        options["static_shapes"] = args.shapes
    return dict(
        opt_level=args.opt_level,
        quantize=args.quantize,
        prune=args.prune,
        calibration=args.calibration,
        precision=args.precision,
        passes=args.passes,
        disable=_split_list(args.disable),
        check_each_pass=args.check_each_pass,
        **options,
    )


def _explain(compiled: Any, requests: Sequence[str]) -> None:
    tracer = compiled.ctx.artifacts.get("match_tracer")
    for request in requests:
        rule, _, node = request.partition("@")
        if tracer is None:
            print(f"explain {request}: no rewrite pass ran", file=sys.stderr)
        else:
            print(tracer.explain(rule, node))


def cmd_compile(args: argparse.Namespace) -> int:
    from . import api

    _check_output_parent(args.output)
    if args.report:
        _check_output_parent(args.report)
    if args.verify:
        os.environ["KILN_VERIFY"] = "1"
    kwargs = _pipeline_kwargs(args)
    compiled = api.compile(args.model, backend=args.backend, keep_snapshots=bool(args.report),
                           progress=_progress_printer(args.quiet), dump_dir=args.dump_ir, **kwargs)
    _explain(compiled, args.explain)
    if args.backend == "onnx" and args.output.endswith(".onnx"):
        from .onnx_io import export_model, save_model, write_bytes_atomic

        save_model(export_model(compiled.graph, decompose_custom=not args.keep_opset), args.output)
        report_path = os.path.splitext(args.output)[0] + ".report.json"
        write_bytes_atomic(report_path, json.dumps(compiled.report.to_json(), indent=1, default=str))
    else:
        compiled.save(args.output)
    if args.report:
        from .viz import write_report

        write_report(compiled.report, args.report)
    print(compiled.report.summary())
    extra = getattr(compiled, "describe", None)
    if callable(extra):
        print(extra())
    print(f"wrote {args.output}")
    return 0


def _check_output_parent(path: str) -> None:
    from .errors import OutputError

    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise OutputError(f"output folder {parent} does not exist", "create it first")


def cmd_run(args: argparse.Namespace) -> int:
    import numpy as np

    from . import api
    from .backend_registry import load_artifact
    from .data import load_inputs
    from .errors import ModelLoadError

    if os.path.isdir(args.target):
        compiled = load_artifact(args.target)
        original = os.path.join(args.target, "model.onnx")
    elif os.path.isfile(args.target):
        compiled = api.compile(args.target, backend=args.backend)
        original = args.target
    else:
        raise ModelLoadError(f"{args.target} not found", "pass a kiln output folder or an .onnx file")
    feeds = load_inputs(args.inputs, compiled.input_names)
    start = time.perf_counter()
    outputs = compiled(**feeds)
    seconds = time.perf_counter() - start
    for name, array in zip(compiled.output_names, outputs):
        array = np.asarray(array)
        stats = f" min {array.min():.5g} max {array.max():.5g} mean {array.mean():.5g}" if array.size and array.dtype.kind in "fiu" else ""
        print(f"{name}: {array.dtype}{list(array.shape)}{stats}")
    print(f"ran in {seconds * 1000:.1f} ms on backend {compiled.backend_name}")
    if args.save:
        from .onnx_io import write_bytes_atomic
        import io

        buffer = io.BytesIO()
        np.savez(buffer, **{n: np.asarray(a) for n, a in zip(compiled.output_names, outputs)})
        write_bytes_atomic(args.save, buffer.getvalue())
    if args.compare:
        return _compare_with_onnxruntime(original, feeds, outputs, compiled.output_names, args)
    return 0


def _compare_with_onnxruntime(model_path, feeds, outputs, names, args) -> int:
    import onnx

    from .onnx_io import load_graph
    from .reference import compare_outputs, run_onnxruntime, to_runnable_model

    graph = load_graph(model_path)
    expected = run_onnxruntime(to_runnable_model(graph), feeds, optimize=True)
    verdict = compare_outputs(expected, outputs, rtol=args.rtol, atol=args.atol, names=names)
    print(f"compare with onnxruntime: {verdict.message} (max abs error {verdict.max_abs_error:.3g})")
    return 0 if verdict.ok else 1


def cmd_viz(args: argparse.Namespace) -> int:
    from . import api
    from .viz import write_report

    _check_output_parent(args.output)
    kwargs = _pipeline_kwargs(args)
    compiled = api.compile(args.model, backend=args.backend, keep_snapshots=True,
                           progress=_progress_printer(args.quiet), **kwargs)
    write_report(compiled.report, args.output, format=args.format)
    print(f"wrote {args.output} ({len(compiled.report.passes)} passes, {compiled.report.after.get('nodes')} nodes)")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from . import api
    from .analysis import format_summary, summarize

    summary = summarize(api.load(args.model), _dims(args.dim))
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .benchmark import benchmark_model, format_benchmark

    result = benchmark_model(args.model, backend=args.backend, batch=args.batch, dims=_dims(args.dim),
                             repeat=args.repeat, warmup=args.warmup, threads=args.threads,
                             opt_level=args.opt_level, precision=args.precision)
    print(format_benchmark(result))
    if args.json:
        from .onnx_io import write_bytes_atomic

        write_bytes_atomic(args.json, json.dumps(result, indent=1))
    return 0


COMMANDS = {"compile": cmd_compile, "run": cmd_run, "viz": cmd_viz, "inspect": cmd_inspect, "bench": cmd_bench}


def main(argv: Sequence[str] | None = None) -> int:
    from .errors import KilnError

    parser = build_parser()
    args = parser.parse_args(argv)
    args.debug = getattr(args, "debug", False)
    args.quiet = getattr(args, "quiet", False)
    try:
        return COMMANDS[args.command](args)
    except KilnError as error:
        if args.debug:
            traceback.print_exc()
        print(f"kiln: error: {error.one_line()}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("kiln: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("kiln: error: out of memory", file=sys.stderr)
        return 1
    except Exception as error:  # an internal bug: still one line unless --debug
        if args.debug:
            traceback.print_exc()
        text = " ".join(str(error).split())[:300]
        print(f"kiln: internal error: {type(error).__name__}: {text} (rerun with --debug for the traceback)", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
