"""Correctness sweep over real architectures: export small configs of torchvision and transformers
models (random weights, no all-zero parameter) with both PyTorch exporters, then check that kiln
compiles each for the CPU at -O2 and -O3 and matches onnxruntime on the same inputs.

    python bench/model_sweep.py export --dir DIR [--only a,b]   # needs torch, torchvision, transformers
    python bench/model_sweep.py check --dir DIR [--only a,b]    # kiln vs onnxruntime, one process a model
    python bench/model_sweep.py rewrite --dir DIR                # the table again from the recorded json

`check` writes bench/results/model_sweep.{json,md}: per model and exporter the node counts before
and after each level, the compile time, the max relative difference to onnxruntime and the first
line of any error. Where the exporter itself fails, the table says so (that is not kiln's)."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

BATCH, SEQUENCE, VOCAB = 2, 16, 1000
LEVELS = (2, 3)
TOLERANCE = 1e-4  # max |kiln - ort| / max |ort|, the zoo benchmarks' fp32 criterion
EXPORTERS = ("torchscript", "dynamo")


@dataclass(frozen=True)
class SweepModel:
    """One architecture: a builder of the torch module and its inputs (name -> dtype, dims; a
    string dim is symbolic in the export)."""

    name: str
    build: Callable[[], Any]
    inputs: dict[str, tuple[str, tuple[str | int, ...]]]
    opset_torchscript: int = 17


TINY_TEXT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                 vocab_size=VOCAB, max_position_embeddings=128)
TEXT = {"input_ids": ("int64", ("batch", "sequence")), "attention_mask": ("int64", ("batch", "sequence"))}


def _wrap(model, output: str, keys: tuple[str, ...] = ()):
    """A module taking plain tensors (passed to `model` as `keys`, or by position without keys) and
    returning the one output named `output` (a field of transformers' ModelOutput, a key of
    torchvision's dict)."""
    import torch

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, first, second=None):  # named, so torch.export's dynamic_shapes match them
            given = [t for t in (first, second) if t is not None]
            result = self.model(**dict(zip(keys, given))) if keys else self.model(*given)
            return result[output]

    return Wrapped().eval()


def _text(model_type: str, head: str = "AutoModel", output: str = "last_hidden_state", **overrides):
    def build():
        import transformers

        config = transformers.AutoConfig.for_model(model_type, **{**TINY_TEXT, **overrides})
        model_class = getattr(transformers, head)
        model = model_class.from_config(config) if hasattr(model_class, "from_config") else model_class(config)
        return _wrap(model, output, ("input_ids", "attention_mask"))

    return build


def _causal(model_type: str, **overrides):
    return _text(model_type, "AutoModelForCausalLM", "logits", use_cache=False, **overrides)


def _hf_vision(model_type: str, **overrides):
    def build():
        import transformers

        config = transformers.AutoConfig.for_model(model_type, **overrides)
        model = transformers.AutoModel.from_config(config)
        return _wrap(model, "last_hidden_state", ("pixel_values",))

    return build


def _torchvision(factory: str, **kwargs):
    def build():
        from build_models import import_torchvision

        torchvision = import_torchvision()
        module = torchvision.models
        for part in factory.split(".")[:-1]:
            module = getattr(module, part)
        model = getattr(module, factory.split(".")[-1])(weights=None, **kwargs).eval()
        if factory.startswith("segmentation."):
            return _wrap(model, "out")
        return model

    return build


def _image(size: int, channels: int = 3) -> dict:
    return {"pixels": ("float32", ("batch", channels, size, size))}


def _hf_image(size: int) -> dict:
    return {"pixel_values": ("float32", ("batch", 3, size, size))}


def _wav2vec2():
    import transformers

    config = transformers.Wav2Vec2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                         conv_dim=(32, 32, 32), conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3),
                                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    return _wrap(transformers.Wav2Vec2Model(config), "last_hidden_state", ("input_values",))


SMALL_VISION = dict(image_size=64, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)

SWEEP = [
    # torchvision classification, segmentation and video
    SweepModel("resnet18", _torchvision("resnet18"), _image(224)),
    SweepModel("resnext50_32x4d", _torchvision("resnext50_32x4d"), _image(224)),
    SweepModel("mobilenet_v2", _torchvision("mobilenet_v2"), _image(224)),
    SweepModel("mobilenet_v3_small", _torchvision("mobilenet_v3_small"), _image(224)),
    SweepModel("efficientnet_b0", _torchvision("efficientnet_b0"), _image(224)),
    SweepModel("efficientnet_v2_s", _torchvision("efficientnet_v2_s"), _image(224)),
    SweepModel("densenet121", _torchvision("densenet121"), _image(224)),
    SweepModel("squeezenet1_1", _torchvision("squeezenet1_1"), _image(224)),
    SweepModel("shufflenet_v2_x1_0", _torchvision("shufflenet_v2_x1_0"), _image(224)),
    SweepModel("mnasnet0_5", _torchvision("mnasnet0_5"), _image(224)),
    SweepModel("regnet_y_400mf", _torchvision("regnet_y_400mf"), _image(224)),
    SweepModel("convnext_tiny", _torchvision("convnext_tiny"), _image(224)),
    SweepModel("swin_t", _torchvision("swin_t"), _image(224)),
    SweepModel("maxvit_t", _torchvision("maxvit_t"), _image(224)),
    SweepModel("googlenet", _torchvision("googlenet", aux_logits=False, init_weights=True), _image(224)),
    SweepModel("inception_v3", _torchvision("inception_v3", aux_logits=False, init_weights=True), _image(299)),
    SweepModel("alexnet", _torchvision("alexnet"), _image(224)),
    SweepModel("vgg11_bn", _torchvision("vgg11_bn"), _image(224)),
    SweepModel("deeplabv3_mobilenet", _torchvision("segmentation.deeplabv3_mobilenet_v3_large", weights_backbone=None), _image(224)),
    SweepModel("lraspp_mobilenet", _torchvision("segmentation.lraspp_mobilenet_v3_large", weights_backbone=None), _image(224)),
    SweepModel("fcn_resnet50", _torchvision("segmentation.fcn_resnet50", weights_backbone=None), _image(224)),
    SweepModel("r3d_18", _torchvision("video.r3d_18"), {"clip": ("float32", ("batch", 3, 8, 112, 112))}),
    # transformers encoders
    SweepModel("bert", _text("bert"), TEXT),
    SweepModel("distilbert", _text("distilbert", dim=64, n_layers=2, n_heads=4, hidden_dim=128), TEXT),
    SweepModel("roberta", _text("roberta"), TEXT),
    SweepModel("albert", _text("albert", embedding_size=32), TEXT),
    SweepModel("electra", _text("electra", embedding_size=32), TEXT),
    SweepModel("deberta_v2", _text("deberta-v2"), TEXT),
    SweepModel("mpnet", _text("mpnet"), TEXT),
    SweepModel("t5_encoder", _text("t5", "T5EncoderModel", d_model=64, d_ff=128, num_layers=2, num_heads=4, d_kv=16), TEXT),
    SweepModel("bart", _text("bart", d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                             decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128), TEXT),
    # transformers decoders
    SweepModel("gpt2", _causal("gpt2"), TEXT),
    SweepModel("gpt_neo", _causal("gpt_neo", num_layers=2, attention_types=[[["global", "local"], 1]], window_size=8), TEXT),
    SweepModel("opt", _causal("opt", ffn_dim=128, word_embed_proj_dim=64), TEXT),
    SweepModel("bloom", _causal("bloom", n_head=4), TEXT),
    SweepModel("gpt_neox", _causal("gpt_neox"), TEXT),
    SweepModel("falcon", _causal("falcon", new_decoder_architecture=False), TEXT),
    SweepModel("llama", _causal("llama", num_key_value_heads=2), TEXT),
    SweepModel("mistral", _causal("mistral", num_key_value_heads=2, sliding_window=8), TEXT),
    SweepModel("qwen2", _causal("qwen2", num_key_value_heads=2), TEXT),
    SweepModel("qwen3", _causal("qwen3", num_key_value_heads=2, head_dim=16), TEXT),
    SweepModel("phi", _causal("phi"), TEXT),
    SweepModel("phi3", _causal("phi3", num_key_value_heads=2, pad_token_id=0), TEXT),
    SweepModel("gemma", _causal("gemma", num_key_value_heads=1, head_dim=16), TEXT),
    SweepModel("gemma2", _causal("gemma2", num_key_value_heads=2, head_dim=16, sliding_window=8), TEXT),
    SweepModel("stablelm", _causal("stablelm", num_key_value_heads=2), TEXT),
    # transformers vision and audio
    SweepModel("vit", _hf_vision("vit", **SMALL_VISION, patch_size=16), _hf_image(64)),
    SweepModel("deit", _hf_vision("deit", **SMALL_VISION, patch_size=16), _hf_image(64)),
    SweepModel("beit", _hf_vision("beit", **SMALL_VISION, patch_size=16), _hf_image(64)),
    SweepModel("dinov2", _hf_vision("dinov2", **SMALL_VISION, patch_size=16), _hf_image(64)),
    SweepModel("swin", _hf_vision("swin", image_size=64, embed_dim=32, depths=[2, 2], num_heads=[2, 4], window_size=4), _hf_image(64)),
    SweepModel("convnext_hf", _hf_vision("convnext", image_size=64, hidden_sizes=[32, 64], depths=[1, 1], num_stages=2), _hf_image(64)),
    SweepModel("segformer", _hf_vision("segformer", num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[32, 64],
                                       num_attention_heads=[1, 2], patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2]), _hf_image(64)),
    SweepModel("mobilevit", _hf_vision("mobilevit", image_size=64, hidden_sizes=[32, 48, 64], neck_hidden_sizes=[8, 16, 24, 32, 48, 64, 96]), _hf_image(64)),
    SweepModel("clip_vision", _hf_vision("clip_vision_model", **SMALL_VISION, patch_size=16), _hf_image(64)),
    SweepModel("wav2vec2", _wav2vec2, {"input_values": ("float32", ("batch", 4000))}),
]


CONCRETE = {"batch": BATCH, "sequence": SEQUENCE}


def example_inputs(spec: SweepModel) -> dict[str, np.ndarray]:
    """The zoo's random inputs at the sweep's sizes, token ids within the tiny vocabulary."""
    from build_models import example_inputs as zoo_inputs

    return zoo_inputs(spec, CONCRETE, vocab=VOCAB)


def _export_one(model, spec: SweepModel, exporter: str, path: str) -> str:
    """Export with symbolic batch (and sequence) dims; dynamo falls back to static shapes where its
    guards refuse the symbols. Returns how the shapes were exported."""
    import torch

    feeds = example_inputs(spec)
    args = tuple(torch.from_numpy(feeds[name]) for name in spec.inputs)
    names = list(spec.inputs)
    if exporter == "torchscript":
        axes = {name: {i: d for i, d in enumerate(dims) if isinstance(d, str)} for name, (_, dims) in spec.inputs.items()}
        torch.onnx.export(model, args, path, dynamo=False, opset_version=spec.opset_torchscript,
                          input_names=names, output_names=["output"], dynamic_axes=axes)
        return "dynamic"
    symbols = {d: torch.export.Dim(d, min=1 if d == "batch" else 2, max=64 if d == "sequence" else 1024)
               for _, dims in spec.inputs.values() for d in dims if isinstance(d, str)}
    dynamic = tuple({i: symbols[d] for i, d in enumerate(dims) if isinstance(d, str)} for _, dims in spec.inputs.values())
    try:
        program = torch.onnx.export(model, args, dynamo=True, input_names=names, output_names=["output"],
                                    dynamic_shapes=dynamic, verbose=False)
        shapes = "dynamic"
    except Exception:  # noqa: BLE001 - a guard on a symbolic dim: export the example's shapes
        program = torch.onnx.export(model, args, dynamo=True, input_names=names, output_names=["output"], verbose=False)
        shapes = "static"
    program.save(path)
    return shapes


def export(args: argparse.Namespace) -> int:
    import contextlib
    import io

    import torch

    from build_models import fill_zero_parameters, import_torchvision

    import_torchvision()
    torch.backends.mha.set_fastpath_enabled(False)
    os.makedirs(args.dir, exist_ok=True)
    manifest_path = os.path.join(args.dir, "manifest.json")
    manifest = json.load(open(manifest_path)) if os.path.exists(manifest_path) else {}
    for spec in selected(args.only):
        torch.manual_seed(0)
        try:
            model = fill_zero_parameters(spec.build())
        except Exception as error:  # noqa: BLE001 - report and go on
            print(f"{spec.name}: build failed: {type(error).__name__}: {str(error)[:200]}", flush=True)
            continue
        np.savez(os.path.join(args.dir, f"{spec.name}_inputs.npz"), **example_inputs(spec))
        for exporter in EXPORTERS:
            key, path = f"{spec.name}_{exporter}", os.path.join(args.dir, f"{spec.name}_{exporter}.onnx")
            start = time.perf_counter()
            try:
                with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
                    shapes = _export_one(model, spec, exporter, path)
                manifest[key] = {"model": spec.name, "exporter": exporter, "shapes": shapes, "torch": torch.__version__}
                print(f"{key}: {shapes} shapes, {time.perf_counter() - start:.0f} s", flush=True)
            except Exception as error:  # noqa: BLE001
                message = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
                manifest[key] = {"model": spec.name, "exporter": exporter, "export_error": f"{type(error).__name__}: {message}"}
                print(f"{key}: export failed: {manifest[key]['export_error']}", flush=True)
            with open(manifest_path, "w") as handle:
                json.dump(manifest, handle, indent=1)
    return 0


def selected(only: str | None) -> list[SweepModel]:
    wanted = set(only.split(",")) if only else None
    return [s for s in SWEEP if not wanted or s.name in wanted]


def max_relative_difference(expected: list[np.ndarray], actual: list[np.ndarray]) -> float:
    scale = max(float(np.max(np.abs(e))) if e.size else 0.0 for e in expected) or 1.0
    return max(float(np.max(np.abs(e.astype(np.float64) - a.astype(np.float64)))) if e.size else 0.0
               for e, a in zip(expected, actual)) / scale


def check_one(path: str, inputs: str) -> dict[str, Any]:
    """ORT's outputs, then kiln -O2 and -O3 for the CPU on the same inputs (run in a child)."""
    import onnx
    import onnxruntime as ort

    import compiler

    feeds = dict(np.load(inputs))
    model = onnx.load(path)
    row: dict[str, Any] = {"nodes": len(model.graph.node)}
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    expected = session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})
    for level in LEVELS:
        start = time.perf_counter()
        try:
            compiled = compiler.compile(path, backend="cpu", opt_level=level)
            seconds = time.perf_counter() - start
            actual = compiled(**{name: feeds[name] for name in feeds})
            actual = list(actual.values()) if isinstance(actual, dict) else list(actual) if isinstance(actual, (list, tuple)) else [actual]
            difference = max_relative_difference(expected, [np.asarray(a) for a in actual])
            ops = compiled.report.after.get("ops", {})
            row[f"O{level}"] = {"nodes": compiled.report.after.get("nodes"), "compile_s": round(seconds, 2),
                                "max_rel_diff": difference, "ok": bool(difference <= TOLERANCE),
                                "attention": ops.get("Attention", 0) + ops.get("ai.graphkiln::Attention", 0),
                                "softmax": ops.get("Softmax", 0)}
        except Exception as error:  # noqa: BLE001 - the sweep records it
            row[f"O{level}"] = {"error": _first_line(error), "ok": False, "trace": traceback.format_exc()[-1500:]}
        row[f"O{level}"]["onnx"] = _check_onnx_output(model, level, feeds, expected, options)
    return row


def _check_onnx_output(model, level: int, feeds: dict, expected: list, options) -> dict[str, Any]:
    """kiln's standard-ONNX output at `level` (compiler.optimize, as onnxsim is used), checked by
    onnx.checker and run by onnxruntime on the same inputs."""
    import onnx
    import onnxruntime as ort

    import compiler

    try:
        optimized = compiler.optimize(model, opt_level=level)
        onnx.checker.check_model(optimized)
        session = ort.InferenceSession(optimized.SerializeToString(), options, providers=["CPUExecutionProvider"])
        actual = session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})
        difference = max_relative_difference(expected, actual)
        return {"nodes": len(optimized.graph.node), "max_rel_diff": difference, "ok": bool(difference <= TOLERANCE)}
    except Exception as error:  # noqa: BLE001 - the sweep records it
        return {"error": _first_line(error), "ok": False}


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:240] if text else ''}"


def check(args: argparse.Namespace) -> int:
    manifest = json.load(open(os.path.join(args.dir, "manifest.json")))
    rows = []
    for spec in selected(args.only):
        for exporter in EXPORTERS:
            key = f"{spec.name}_{exporter}"
            entry = manifest.get(key)
            if entry is None:
                continue
            row = {"model": spec.name, "exporter": exporter, **{k: v for k, v in entry.items() if k in ("shapes", "export_error")}}
            if "export_error" not in entry:
                command = [sys.executable, __file__, "child", "--dir", args.dir, "--only", key]
                try:
                    done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
                    lines = [l for l in done.stdout.splitlines() if l.startswith("{")]
                    row.update(json.loads(lines[-1]) if lines else {"crash": (done.stderr.strip().splitlines() or ["?"])[-1][:240]})
                except subprocess.TimeoutExpired:
                    row["crash"] = f"timed out after {args.timeout} s"
            rows.append(row)
            print(summary_line(row), flush=True)
    write_results(rows, args)
    return 0


def summary_line(row: dict) -> str:
    name = f"{row['model']}_{row['exporter']}"
    if "export_error" in row:
        return f"{name}: export failed ({row['export_error'][:80]})"
    if "crash" in row:
        return f"{name}: CRASH {row['crash']}"
    parts = []
    for level in LEVELS:
        result = row[f"O{level}"]
        parts.append(f"-O{level} " + (f"{result['nodes']} nodes, diff {result['max_rel_diff']:.1e}" + ("" if result["ok"] else " MISMATCH")
                                      if "error" not in result else f"ERROR {result['error'][:160]}"))
        onnx_out = result.get("onnx", {})
        parts.append(f"onnx -O{level} " + (f"diff {onnx_out['max_rel_diff']:.1e}" + ("" if onnx_out["ok"] else " MISMATCH")
                                           if "error" not in onnx_out else f"ERROR {onnx_out.get('error', '')[:160]}"))
    return f"{name}: {row['nodes']} nodes; " + "; ".join(parts)


def child(args: argparse.Namespace) -> int:
    model, _, exporter = args.only.rpartition("_")
    row = check_one(os.path.join(args.dir, f"{args.only}.onnx"), os.path.join(args.dir, f"{model}_inputs.npz"))
    print(json.dumps(row, default=float))
    return 0


def write_results(rows: list[dict], args: argparse.Namespace, stamp: str | None = None) -> None:
    import onnx
    import onnxruntime

    import jax

    os.makedirs(args.results, exist_ok=True)
    stamp = stamp or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    with open(os.path.join(args.results, "model_sweep.json"), "w") as handle:
        json.dump({"recorded": stamp, "rows": rows}, handle, indent=1, default=float)
    exported = [r for r in rows if "export_error" not in r]
    manifest_path = os.path.join(args.dir, "manifest.json")
    manifest = json.load(open(manifest_path)) if os.path.exists(manifest_path) else {}
    torch_versions = sorted({entry["torch"] for entry in manifest.values() if "torch" in entry}) or ["?"]
    passed = {level: sum(1 for r in exported if r.get(f"O{level}", {}).get("ok")) for level in LEVELS}
    onnx_passed = {level: sum(1 for r in exported if r.get(f"O{level}", {}).get("onnx", {}).get("ok")) for level in LEVELS}
    lines = [
        "# Model sweep: kiln's CPU backend against onnxruntime on exported architectures",
        "",
        f"Recorded {stamp} by `python bench/model_sweep.py check` on {platform.platform()}, Python {platform.python_version()}; "
        f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, jax {jax.__version__}.",
        f"Models: small configs of torchvision and transformers architectures (random weights, every all-zero parameter drawn "
        f"from N(0, 0.02)), exported by `bench/model_sweep.py export` with torch {', '.join(torch_versions)}'s TorchScript (opset 17) and dynamo exporters "
        f"(transformers' default attention, sdpa); "
        f"text inputs [batch {BATCH}, sequence {SEQUENCE}] with the last quarter of the attention mask padded.",
        f"A level passes when kiln compiles the model for the CPU and its outputs are within {TOLERANCE:g} of onnxruntime's "
        f"(max |kiln - ort| / max |ort|, onnxruntime with all graph optimizations).",
        "",
        f"Exported: {len(exported)} of {len(rows)}. Passed on the CPU backend: " + ", ".join(f"-O{l} {passed[l]}/{len(exported)}" for l in LEVELS)
        + "; kiln's standard-ONNX output (compiler.optimize, onnx.checker, run by onnxruntime): "
        + ", ".join(f"-O{l} {onnx_passed[l]}/{len(exported)}" for l in LEVELS) + ".",
        "Attention / Softmax left: the Attention ops -O3 fused and the Softmax ops no attention rule matched "
        "(some forms are not fused: 5-D window attention, DeBERTa's disentangled scores, ALiBi, local attention "
        "masked by Where).",
        "",
        "| model | exporter | shapes | nodes | " + " | ".join(f"-O{l} nodes | -O{l} max rel diff | ONNX out -O{l}" for l in LEVELS)
        + " | -O3 Attention / Softmax left | note |",
        "|---|---|---|---:|" + "---:|---:|---:|" * len(LEVELS) + "---:|---|",
    ]
    for row in rows:
        if "export_error" in row:
            lines.append(f"| {row['model']} | {row['exporter']} | | | " + "| | | " * len(LEVELS) + f"| export failed: {row['export_error'][:100]} |")
            continue
        cells, notes = [], []
        for level in LEVELS:
            result = row.get(f"O{level}", {})
            if "error" in result:
                cells += ["", "error"]
                notes.append(f"-O{level}: {result['error'][:120]}")
            elif result:
                cells += [str(result["nodes"]), f"{result['max_rel_diff']:.1e}" + ("" if result["ok"] else " (over)")]
            else:
                cells += ["", ""]
            onnx_out = result.get("onnx", {})
            if "error" in onnx_out:
                cells.append("error")
                notes.append(f"ONNX out -O{level}: {onnx_out['error'][:120]}")
            else:
                cells.append(f"{onnx_out['max_rel_diff']:.1e}" + ("" if onnx_out["ok"] else " (over)") if onnx_out else "")
        if "crash" in row:
            notes.append(row["crash"])
        fused = row.get("O3", {})
        attention = f"{fused['attention']} / {fused['softmax']}" if "attention" in fused else ""
        lines.append(f"| {row['model']} | {row['exporter']} | {row.get('shapes', '')} | {row.get('nodes', '')} | "
                     + " | ".join(cells) + f" | {attention} | {'; '.join(notes)} |")
    with open(os.path.join(args.results, "model_sweep.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")


def rewrite(args: argparse.Namespace) -> int:
    """Write model_sweep.md again from model_sweep.json (after a change to the table's form)."""
    recorded = json.load(open(os.path.join(args.results, "model_sweep.json")))
    write_results(recorded["rows"], args, recorded["recorded"])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("export", "check", "child", "rewrite"))
    parser.add_argument("--dir", required=True, help="folder for the exported models, their inputs and manifest.json")
    parser.add_argument("--only", help="comma-separated model names")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a model's check may take")
    parser.add_argument("--results", default=os.path.join(HERE, "results"))
    args = parser.parse_args(argv)
    return {"export": export, "check": check, "child": child, "rewrite": rewrite}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
