"""Export the benchmark zoo (random weights, from transformers/torchvision configs, with no
parameter left all zero) with both PyTorch exporters into bench/models/ (gitignored): BERT-base,
GPT-2 small, T5-small encoder, ViT-B/16, ResNet-50, EfficientNet-B0 and MobileNetV3-Large.

Needs torch, torchvision and transformers (pip install -e ".[bench]" plus
`pip install torch torchvision transformers`); graphkiln itself never imports torch.

    python bench/build_models.py [--only bert,resnet50] [--exporters torchscript,dynamo] [--out bench/models]

Writes <name>_<exporter>.onnx and manifest.json (input names, dtypes, symbolic dims and the
concrete sizes the benchmarks use). The transformers models use transformers' default attention
(sdpa), as users export them; `--attention eager` gives the explicit matmul/softmax form that
records before 2026-12-06 used."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from dataclasses import dataclass
from typing import Callable

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SEQUENCE = 128
IMAGE = 224
# transformers' attention implementation: its default, "sdpa" (torch's scaled_dot_product_attention,
# what users export), or "eager" (explicit matmuls and softmax); --attention sets it
ATTENTION = "sdpa"
TRANSFORMERS_MODELS = ("bert_base", "gpt2", "t5_small_encoder")  # the zoo entries it applies to


@dataclass(frozen=True)
class ZooModel:
    """One zoo entry: how to build it and what its inputs look like."""

    name: str
    build: Callable[[], "object"]
    inputs: dict[str, tuple[str, tuple[str | int, ...]]]  # name -> (dtype, dims with symbol names)
    opset_torchscript: int = 17


def import_torchvision():
    """torchvision; tolerates a build whose C extension does not match a CPU-only torch (the
    models need none of its custom ops)."""
    try:
        import torchvision
    except RuntimeError:
        for name in [key for key in sys.modules if key.startswith("torchvision")]:
            del sys.modules[name]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
        import torchvision
    return torchvision


def fill_zero_parameters(model, std: float = 0.02):
    """`model` with every all-zero parameter drawn from N(0, std) (torch's seeded generator): the
    configs' init leaves biases at zero and ViT's classifier head entirely zero, so its logits were
    all zeros (every output comparison vacuous) and optimizers could drop bias adds that trained
    weights keep."""
    import torch

    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.is_floating_point() and not parameter.any():
                parameter.normal_(0.0, std)
    return model


class _TextWrapper:
    """Wraps a transformers model so the export sees plain tensors in and one tensor out."""

    @staticmethod
    def wrap(model, with_mask: bool):
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask=None):
                if with_mask:
                    return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                # An explicit all-ones mask keeps transformers' packed-sequence detection (aten::diff,
                # which the TorchScript exporter lacks) out of the trace.
                return self.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits

        return Wrapped().eval()


def _bert():
    from transformers import BertConfig, BertModel

    return _TextWrapper.wrap(BertModel(BertConfig(attn_implementation=ATTENTION)), with_mask=True)


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    return _TextWrapper.wrap(GPT2LMHeadModel(GPT2Config(use_cache=False, attn_implementation=ATTENTION)), with_mask=False)


def _t5_encoder():
    from transformers import T5Config, T5EncoderModel

    config = T5Config(d_model=512, d_ff=2048, num_layers=6, num_heads=8, d_kv=64, attn_implementation=ATTENTION)
    return _TextWrapper.wrap(T5EncoderModel(config), with_mask=True)


def _vision(factory: str):
    def build():
        torchvision = import_torchvision()
        return getattr(torchvision.models, factory)(weights=None).eval()

    return build


TEXT_INPUTS = {"input_ids": ("int64", ("batch", "sequence")), "attention_mask": ("int64", ("batch", "sequence"))}
IMAGE_INPUTS = {"pixels": ("float32", ("batch", 3, IMAGE, IMAGE))}

ZOO = [
    ZooModel("bert_base", _bert, TEXT_INPUTS),
    ZooModel("gpt2", _gpt2, {"input_ids": ("int64", ("batch", "sequence"))}),
    ZooModel("t5_small_encoder", _t5_encoder, TEXT_INPUTS),
    ZooModel("vit_b_16", _vision("vit_b_16"), IMAGE_INPUTS),
    ZooModel("resnet50", _vision("resnet50"), IMAGE_INPUTS),
    ZooModel("efficientnet_b0", _vision("efficientnet_b0"), IMAGE_INPUTS),
    ZooModel("mobilenet_v3", _vision("mobilenet_v3_large"), IMAGE_INPUTS),
]

CONCRETE = {"batch": 2, "sequence": SEQUENCE}


def example_inputs(spec: ZooModel, sizes: dict[str, int] = CONCRETE, seed: int = 0, vocab: int = 30000) -> dict[str, np.ndarray]:
    """Random inputs of the concrete sizes (token ids below `vocab`, within every zoo vocabulary;
    the last quarter of each attention mask padded)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, (dtype, dims) in spec.inputs.items():
        shape = tuple(sizes[d] if isinstance(d, str) else d for d in dims)
        if name == "input_ids":
            feeds[name] = rng.integers(0, vocab, size=shape).astype(np.int64)
        elif name == "attention_mask":
            mask = np.ones(shape, np.int64)
            mask[:, -shape[1] // 4 :] = 0
            feeds[name] = mask
        else:
            feeds[name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def _export(model, spec: ZooModel, exporter: str, path: str) -> None:
    import torch

    feeds = example_inputs(spec)
    args = tuple(torch.from_numpy(feeds[name]) for name in spec.inputs)
    names = list(spec.inputs)
    if exporter == "torchscript":
        axes = {name: {i: d for i, d in enumerate(dims) if isinstance(d, str)} for name, (_, dims) in spec.inputs.items()}
        axes["output"] = {0: "batch"}
        torch.onnx.export(model, args, path, dynamo=False, opset_version=spec.opset_torchscript,
                          input_names=names, output_names=["output"], dynamic_axes=axes)
        return
    symbols = {d: torch.export.Dim(d, min=1 if d == "batch" else 2, max=4096) for _, dims in spec.inputs.values() for d in dims if isinstance(d, str)}
    dynamic = tuple({i: symbols[d] for i, d in enumerate(dims) if isinstance(d, str)} for _, dims in spec.inputs.values())
    program = torch.onnx.export(model, args, dynamo=True, input_names=names, output_names=["output"],
                                dynamic_shapes=dynamic, verbose=False)
    program.save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated model names")
    parser.add_argument("--exporters", default="torchscript,dynamo")
    parser.add_argument("--out", default=os.path.join(HERE, "models"))
    parser.add_argument("--attention", choices=("sdpa", "eager"), default=ATTENTION,
                        help="transformers' attention implementation (default: sdpa, transformers' own default)")
    args = parser.parse_args(argv)
    globals()["ATTENTION"] = args.attention

    import torch

    import_torchvision()  # before transformers, which imports it too
    torch.backends.mha.set_fastpath_enabled(False)  # the fused MHA kernel has no ONNX export
    torch.manual_seed(0)
    os.makedirs(args.out, exist_ok=True)
    wanted = set(args.only.split(",")) if args.only else None
    manifest_path = os.path.join(args.out, "manifest.json")
    manifest = json.load(open(manifest_path)) if os.path.exists(manifest_path) else {}
    for spec in ZOO:
        if wanted and spec.name not in wanted:
            continue
        model = fill_zero_parameters(spec.build())
        for exporter in args.exporters.split(","):
            path = os.path.join(args.out, f"{spec.name}_{exporter}.onnx")
            start = time.perf_counter()
            try:
                with torch.no_grad():
                    _export(model, spec, exporter, path)
            except Exception as error:  # noqa: BLE001 - report and go on with the rest of the zoo
                print(f"{spec.name} ({exporter}): export failed: {type(error).__name__}: {str(error)[:300]}", flush=True)
                continue
            manifest[f"{spec.name}_{exporter}"] = {
                "model": spec.name,
                "exporter": exporter,
                "file": os.path.basename(path),
                "inputs": {name: {"dtype": dtype, "dims": list(dims)} for name, (dtype, dims) in spec.inputs.items()},
                "sizes": CONCRETE,
                "torch": torch.__version__,
                "attention": ATTENTION if spec.name in TRANSFORMERS_MODELS else None,
            }
            print(f"{spec.name} ({exporter}): {os.path.getsize(path) / 1e6:.0f} MB in {time.perf_counter() - start:.0f} s", flush=True)
            with open(manifest_path, "w") as handle:
                json.dump(manifest, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
