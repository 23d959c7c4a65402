"""Build graphkiln's bundled sample models, their example inputs and the digits data.

Run from the repository root (after ``pip install -r samples/requirements-build.txt``)::

    python samples/build_samples.py            # build every sample
    python samples/build_samples.py mlp digits_cnn   # build only some of them

Torch is used here, at build time only; graphkiln itself never imports it. Every builder seeds
its own random generators, so a rebuild on the same versions gives the same models. Each model is
checked (size under 2 MB, ``onnx.checker`` with ``full_check=True``, symbolic input dims, the
operators it exists to exercise) and run under onnxruntime against torch on two input shapes.
A summary of every model (inputs, outputs, opset, operator histogram) goes to
``samples/manifest.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

SAMPLES_DIR = Path(__file__).resolve().parent
DATA_DIR = SAMPLES_DIR / "data"
MAX_MODEL_BYTES = 2 * 1024 * 1024
RTOL = 1e-4
ATOL = 1e-5

Feeds = dict[str, np.ndarray]
Entry = dict[str, Any]  # one model's record in manifest.json


class SampleError(RuntimeError):
    """A built sample is not what it must be."""


def check(condition: bool, message: str) -> None:
    """Raise SampleError with ``message`` unless ``condition`` holds (kept under ``python -O``)."""
    if not condition:
        raise SampleError(message)


@dataclass(frozen=True)
class ModelSpec:
    """How a sample is exported and what its ONNX file must contain."""

    name: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    symbolic_dims: dict[str, tuple[str | None, ...]]
    required_ops: tuple[str, ...]

    @property
    def path(self) -> Path:
        """Where the model's .onnx file is written."""
        return SAMPLES_DIR / f"{self.name}.onnx"


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


class MLP(nn.Module):
    """64 -> 128 -> 64 -> 10 multilayer perceptron with ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map [batch, 64] features to [batch, 10] logits."""
        return self.layers(x)


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """A bias-free Conv2d followed by BatchNorm2d, 'same' padding for odd kernels."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
    )


class ResidualBlock(nn.Module):
    """Two 3x3 Conv+BN layers with an identity or 1x1-conv (downsampling) shortcut and Add."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, cout, 3, stride), nn.ReLU(), conv_bn(cout, cout, 3))
        self.shortcut = (
            conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(body(x) + shortcut(x))."""
        return self.relu(self.body(x) + self.shortcut(x))


class ResNetCNN(nn.Module):
    """Small ResNet: stem, residual block, stride-2 residual block, residual block, GAP, Linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(3, 16, 3),
            nn.ReLU(),
            ResidualBlock(16, 16),
            ResidualBlock(16, 32, stride=2),
            ResidualBlock(32, 32),
            nn.AdaptiveAvgPool2d(1),
        )
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map [batch, 3, 32, 32] images to [batch, classes] logits."""
        return self.fc(torch.flatten(self.features(x), 1))


class EncoderBlock(nn.Module):
    """Pre-LayerNorm transformer encoder block with hand-written multi-head attention.

    The attention reads batch and sequence length with ``x.size()`` so that exporters emit
    Shape/Gather/Concat chains feeding Reshape. ``mask`` is a [batch, seq] bool key-padding mask,
    True for real tokens and False for padding; padded keys get the float32 minimum added to
    their scores before Softmax.
    """

    def __init__(self, d_model: int = 64, n_heads: int = 4, d_ff: int = 256) -> None:
        super().__init__()
        self.d_model = d_model
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.norm1 = nn.LayerNorm(d_model)
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))

    def split_heads(self, t: torch.Tensor) -> torch.Tensor:
        """[batch, seq, d_model] -> [batch, heads, seq, head_dim]."""
        batch, seq = t.size(0), t.size(1)
        return t.view(batch, seq, self.n_heads, self.head_dim).transpose(1, 2)

    def attention(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Masked multi-head scaled-dot-product self-attention with output projection."""
        batch, seq = x.size(0), x.size(1)
        q = self.split_heads(self.q_proj(x))
        k = self.split_heads(self.k_proj(x))
        v = self.split_heads(self.v_proj(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        bias = torch.zeros_like(mask, dtype=scores.dtype).masked_fill(
            ~mask, torch.finfo(scores.dtype).min
        )
        probs = torch.softmax(scores + bias[:, None, None, :], dim=-1)
        context = torch.matmul(probs, v).transpose(1, 2).reshape(batch, seq, self.d_model)
        return self.out_proj(context)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x + attn(ln1(x)), then + ffn(ln2(.)); [batch, seq, d_model] in and out."""
        x = x + self.attention(self.norm1(x), mask)
        return x + self.ff(self.norm2(x))


class DigitsCNN(nn.Module):
    """Small CNN for the 8x8 scikit-learn digits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map [batch, 1, 8, 8] images in [0, 1] to [batch, 10] logits."""
        return self.classifier(torch.flatten(self.features(x), 1))


# --------------------------------------------------------------------------------------------
# Export and verification
# --------------------------------------------------------------------------------------------


def export_torchscript(
    model: nn.Module,
    example: Feeds,
    spec: ModelSpec,
    opset: int,
    training: torch.onnx.TrainingMode = torch.onnx.TrainingMode.EVAL,
) -> None:
    """Export with the TorchScript exporter (``dynamo=False``), dims named per ``spec``."""
    dynamic_axes = {
        name: {axis: dim for axis, dim in enumerate(dims) if dim is not None}
        for name, dims in spec.symbolic_dims.items()
    }
    torch.onnx.export(
        model,
        tuple(torch.from_numpy(example[name]) for name in spec.input_names),
        str(spec.path),
        dynamo=False,
        opset_version=opset,
        input_names=list(spec.input_names),
        output_names=list(spec.output_names),
        dynamic_axes=dynamic_axes,
        training=training,
        # Folding only matters for EVAL; with PRESERVE torch warns that it may alter parameters.
        do_constant_folding=training == torch.onnx.TrainingMode.EVAL,
    )


def export_dynamo(model: nn.Module, example: Feeds, spec: ModelSpec, opset: int) -> None:
    """Export with the torch.export-based exporter into one self-contained .onnx file."""
    dims = {
        dim: torch.export.Dim(dim)
        for dims in spec.symbolic_dims.values()
        for dim in dims
        if dim is not None
    }
    dynamic_shapes = tuple(
        {axis: dims[dim] for axis, dim in enumerate(spec.symbolic_dims[name]) if dim is not None}
        for name in spec.input_names
    )
    program = torch.onnx.export(
        model,
        tuple(torch.from_numpy(example[name]) for name in spec.input_names),
        dynamo=True,
        opset_version=opset,
        input_names=list(spec.input_names),
        output_names=list(spec.output_names),
        dynamic_shapes=dynamic_shapes,
        verbose=False,
    )
    assert program is not None
    # Node stack traces hold this machine's file paths and line numbers; the other metadata the
    # exporter writes (namespace, fx_node, class_hierarchy, name_scopes) is kept.
    proto = program.model_proto
    for node in proto.graph.node:
        kept = [prop for prop in node.metadata_props if prop.key != "pkg.torch.onnx.stack_trace"]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
    onnx.save(proto, str(spec.path))


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    """Count of each operator type in the main graph, most frequent first."""
    counts = collections.Counter(node.op_type for node in model.graph.node)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def value_info_summary(value: onnx.ValueInfoProto) -> dict[str, Any]:
    """Name, element type and shape (ints or symbol names) of a graph input or output."""
    tensor_type = value.type.tensor_type
    shape = [d.dim_param if d.HasField("dim_param") else d.dim_value for d in tensor_type.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
    return {"name": value.name, "dtype": str(dtype), "shape": shape}


def check_onnx_file(spec: ModelSpec) -> onnx.ModelProto:
    """Check size, validity, single-file weights, symbolic dims and required operators."""
    size = spec.path.stat().st_size
    check(size < MAX_MODEL_BYTES, f"{spec.path.name} is {size} bytes")
    model = onnx.load(str(spec.path))
    onnx.checker.check_model(model, full_check=True)
    for init in model.graph.initializer:
        check(init.data_location != onnx.TensorProto.EXTERNAL, f"{init.name} is external")
    inputs = {value.name: value for value in model.graph.input}
    check(tuple(inputs) == spec.input_names, f"inputs {list(inputs)}")
    outputs = tuple(value.name for value in model.graph.output)
    check(outputs == spec.output_names, f"outputs {list(outputs)}")
    for name, dims in spec.symbolic_dims.items():
        actual = value_info_summary(inputs[name])["shape"]
        for axis, dim in enumerate(dims):
            if dim is not None:
                check(actual[axis] == dim, f"{name} axis {axis} is {actual[axis]!r}, not {dim!r}")
    missing = set(spec.required_ops) - set(op_histogram(model))
    check(not missing, f"{spec.path.name} lacks {sorted(missing)}")
    return model


def check_against_torch(model: nn.Module, spec: ModelSpec, feeds_list: Sequence[Feeds]) -> None:
    """Run the ONNX file under onnxruntime and compare with torch on each feed dict."""
    session = ort.InferenceSession(str(spec.path), providers=["CPUExecutionProvider"])
    for feeds in feeds_list:
        with torch.no_grad():
            expected = model(*(torch.from_numpy(feeds[name]) for name in spec.input_names))
        (actual,) = session.run(list(spec.output_names), feeds)
        np.testing.assert_allclose(actual, expected.numpy(), rtol=RTOL, atol=ATOL)


def save_example(spec: ModelSpec, model: nn.Module, feeds: Feeds) -> None:
    """Write ``data/<name>_inputs.npz`` and the torch reference ``data/<name>_outputs.npz``."""
    with torch.no_grad():
        output = model(*(torch.from_numpy(feeds[name]) for name in spec.input_names))
    outputs: Feeds = {spec.output_names[0]: output.numpy()}
    np.savez(DATA_DIR / f"{spec.name}_inputs.npz", allow_pickle=False, **feeds)
    np.savez(DATA_DIR / f"{spec.name}_outputs.npz", allow_pickle=False, **outputs)


def finish(model: nn.Module, spec: ModelSpec, feeds_list: Sequence[Feeds]) -> Entry:
    """Verify an exported sample, save its example batch and return its manifest entry."""
    proto = check_onnx_file(spec)
    check_against_torch(model, spec, feeds_list)
    save_example(spec, model, feeds_list[0])
    return {
        "file": spec.path.name,
        "bytes": spec.path.stat().st_size,
        "opsets": {imp.domain or "ai.onnx": imp.version for imp in proto.opset_import},
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "inputs": [value_info_summary(v) for v in proto.graph.input],
        "outputs": [value_info_summary(v) for v in proto.graph.output],
        "op_histogram": op_histogram(proto),
    }


def float_batch(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Standard-normal float32 array."""
    return rng.standard_normal(shape).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


def build_mlp() -> Entry:
    """mlp.onnx: the MLP, TorchScript exporter, opset 17, symbolic batch."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    spec = ModelSpec(
        name="mlp",
        input_names=("input",),
        output_names=("logits",),
        symbolic_dims={"input": ("batch", None)},
        required_ops=("Gemm", "Relu"),
    )
    model = MLP().eval()
    feeds_list = [{"input": float_batch(rng, 2, 64)}, {"input": float_batch(rng, 5, 64)}]
    export_torchscript(model, feeds_list[0], spec, opset=17)
    return finish(model, spec, feeds_list)


def build_cnn_bn_residual() -> Entry:
    """cnn_bn_residual.onnx: small ResNet with BatchNormalization kept (not folded into Conv)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    spec = ModelSpec(
        name="cnn_bn_residual",
        input_names=("input",),
        output_names=("logits",),
        symbolic_dims={"input": ("batch", None, None, None)},
        required_ops=("Conv", "BatchNormalization", "Relu", "Add", "GlobalAveragePool", "Gemm"),
    )
    model = ResNetCNN()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    model.eval()
    feeds_list = [
        {"input": float_batch(rng, 2, 3, 32, 32)},
        {"input": float_batch(rng, 3, 3, 32, 32)},
    ]
    # TrainingMode.EVAL would run the exporter's eval peephole, which folds BN into the Conv
    # weights; PRESERVE keeps BN as written while the module itself is in eval mode.
    export_torchscript(
        model, feeds_list[0], spec, opset=17, training=torch.onnx.TrainingMode.PRESERVE
    )
    return finish(model, spec, feeds_list)


def transformer_feeds(rng: np.random.Generator, batch: int, seq: int) -> Feeds:
    """Random [batch, seq, 64] input and a key-padding mask with trailing pads in each row."""
    lengths = np.maximum(seq - np.arange(batch) * 2, 1)
    mask = np.arange(seq)[None, :] < lengths[:, None]
    return {"input": float_batch(rng, batch, seq, 64), "mask": mask}


def transformer_spec(name: str, required_ops: tuple[str, ...]) -> ModelSpec:
    """Spec shared by both transformer exports."""
    return ModelSpec(
        name=name,
        input_names=("input", "mask"),
        output_names=("output",),
        symbolic_dims={"input": ("batch", "seq", None), "mask": ("batch", "seq")},
        required_ops=required_ops,
    )


def transformer_model() -> tuple[EncoderBlock, list[Feeds]]:
    """The seeded encoder block (eval mode) and its example feeds (batch 2 x seq 8, 3 x 5)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(2)
    model = EncoderBlock().eval()
    with torch.no_grad():
        for norm in (model.norm1, model.norm2):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.2, 0.2)
    return model, [transformer_feeds(rng, 2, 8), transformer_feeds(rng, 3, 5)]


def build_transformer_torchscript() -> Entry:
    """transformer_torchscript.onnx: opset 14, so LayerNorm is decomposed and GELU uses Erf."""
    spec = transformer_spec(
        "transformer_torchscript",
        required_ops=(
            "ReduceMean", "Sub", "Pow", "Sqrt", "Div", "Erf", "Softmax", "MatMul",
            "Shape", "Gather", "Unsqueeze", "Concat", "Reshape", "Transpose", "Where",
        ),
    )  # fmt: skip
    model, feeds_list = transformer_model()
    export_torchscript(model, feeds_list[0], spec, opset=14)
    return finish(model, spec, feeds_list)


def build_transformer_dynamo() -> Entry:
    """transformer_dynamo.onnx: the same block through the dynamo (torch.export) exporter.

    At opset 18 it writes LayerNormalization and an Erf-based GELU (its default opset, 20,
    would write the Gelu operator instead).
    """
    spec = transformer_spec(
        "transformer_dynamo",
        required_ops=(
            "LayerNormalization", "Erf", "Softmax", "MatMul",
            "Shape", "Concat", "Reshape", "Transpose", "Where",
        ),
    )  # fmt: skip
    model, feeds_list = transformer_model()
    export_dynamo(model, feeds_list[0], spec, opset=18)
    return finish(model, spec, feeds_list)


def train_digits_cnn(x_train: np.ndarray, y_train: np.ndarray) -> DigitsCNN:
    """Train DigitsCNN with Adam, minibatches of 64, 40 epochs (a few seconds on one core)."""
    torch.manual_seed(0)
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    inputs, labels = torch.from_numpy(x_train), torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(40):
        for batch in torch.randperm(len(inputs), generator=generator).split(64):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(inputs[batch]), labels[batch])
            loss.backward()
            optimizer.step()
    return model.eval()


def build_digits_cnn() -> Entry:
    """digits_cnn.onnx plus the held-out test set, calibration set and fp32 accuracy record."""
    import sklearn
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.25, random_state=0, stratify=labels
    )
    model = train_digits_cnn(x_train, y_train)
    spec = ModelSpec(
        name="digits_cnn",
        input_names=("input",),
        output_names=("logits",),
        symbolic_dims={"input": ("batch", None, None, None)},
        required_ops=("Conv", "Relu", "MaxPool", "Flatten", "Gemm"),
    )
    rng = np.random.default_rng(3)
    calibration = x_train[np.sort(rng.choice(len(x_train), size=128, replace=False))]
    feeds_list = [{"input": x_test[:2]}, {"input": x_test[2:7]}]
    export_torchscript(model, feeds_list[0], spec, opset=17)
    entry = finish(model, spec, feeds_list)

    np.savez(DATA_DIR / "digits_test.npz", input=x_test, label=y_test)
    np.savez(DATA_DIR / "digits_calibration.npz", input=calibration)
    session = ort.InferenceSession(str(spec.path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": x_test})
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(x_test)).numpy()
    accuracy: dict[str, Any] = {
        "model": spec.path.name,
        "dataset": "sklearn.datasets.load_digits, /16 to [0, 1], "
        "train_test_split(test_size=0.25, random_state=0, stratify=labels)",
        "n_train": len(x_train),
        "n_test": len(x_test),
        "n_calibration": len(calibration),
        "fp32_accuracy_onnxruntime": float(np.mean(logits.argmax(1) == y_test)),
        "fp32_accuracy_torch": float(np.mean(torch_logits.argmax(1) == y_test)),
        "versions": {
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
            "scikit-learn": sklearn.__version__,
        },
    }
    check(accuracy["fp32_accuracy_onnxruntime"] > 0.95, f"digits accuracy too low: {accuracy}")
    (DATA_DIR / "digits_fp32_accuracy.json").write_text(json.dumps(accuracy, indent=2) + "\n")
    entry["fp32_test_accuracy"] = accuracy["fp32_accuracy_onnxruntime"]
    return entry


BUILDERS: dict[str, Callable[[], Entry]] = {
    "mlp": build_mlp,
    "cnn_bn_residual": build_cnn_bn_residual,
    "transformer_torchscript": build_transformer_torchscript,
    "transformer_dynamo": build_transformer_dynamo,
    "digits_cnn": build_digits_cnn,
}


def print_histogram(name: str, entry: Entry) -> None:
    """Print one model's size, opsets and operator histogram."""
    print(f"\n{name}.onnx  {entry['bytes']} bytes  opsets {entry['opsets']}")
    for op, count in entry["op_histogram"].items():
        print(f"  {op:<20} {count}")


def main(argv: Sequence[str] | None = None) -> None:
    """Build the requested samples (all by default), print histograms, update the manifest."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help=f"any of {', '.join(BUILDERS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = set(args.models) - set(BUILDERS)
    if unknown:
        parser.error(f"unknown samples: {', '.join(sorted(unknown))}")
    torch.set_num_threads(1)  # one reduction order, so training and outputs repeat exactly
    # The legacy exporter is used on purpose: its output is one of the forms graphkiln imports.
    warnings.filterwarnings("ignore", "You are using the legacy TorchScript", DeprecationWarning)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    manifest_path = SAMPLES_DIR / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for name in args.models or BUILDERS:
        manifest[name] = BUILDERS[name]()
    manifest = {name: manifest[name] for name in BUILDERS if name in manifest}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    for name, entry in manifest.items():
        print_histogram(name, entry)


if __name__ == "__main__":
    main()
