"""The `recover` pass (`--recover distill --calibration DATA [--steps N]`): fine-tune the float
weights of the pruned or quantized graph in JAX so its outputs match the original model's on the
calibration data (Adam, cosine-decayed learning rate, straight-through fake quantization), then
write the weights back into the IR (re-quantized with the scales training saw)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from compiler.data import stream_batches
from compiler.errors import OptionError, UnsupportedError
from compiler.ir import ArrayTensor, DataType, Graph
from compiler.pass_infra import Pass, PassContext, PassResult, register_pass
from compiler.reference import run_onnxruntime, to_runnable_model
from compiler.rewriter import Rule, apply_rules, fail

DEFAULT_STEPS = 500
DEFAULT_LEARNING_RATE = 3e-3
QUANTIZED_LEARNING_RATE = 1e-4  # int8 steps are coarse: large updates only hop between codes
TRAINED_OPS = ("Conv", "Gemm", "MatMul")


# ---- training form: Q/DQ pairs and weight DequantizeLinear become FakeQuantize -------------

def _pair_pattern(op, x, scale, zero_point, scale2, zero_point2):
    return op.DequantizeLinear(op.QuantizeLinear(x, scale, zero_point, _capture="q"), scale2, zero_point2, _capture="dq")


def _pair_check(ctx, scale, zero_point, scale2, zero_point2, q, dq, **_):
    if scale is not scale2 or zero_point is not zero_point2 or q.attr("axis", 1) != dq.attr("axis", 1):
        return fail("Q and DQ use different parameters", dq)
    return True


def _pair_replace(op, x, scale, zero_point, dq, **_):
    return op.FakeQuantize(x, scale, zero_point, axis=dq.attr("axis", 1), _domain="ai.graphkiln")


def _weight_pattern(op, codes, scale):
    return op.DequantizeLinear(codes, scale, _capture="dq")


def _weight_check(ctx, codes, scale, dq, **_):
    array = codes.constant()
    if array is None or codes.dtype not in (DataType.INT8, DataType.INT32) or dq.attr("block_size", 0):
        return fail("not an int8/int32 per-channel constant", dq)
    return True


def _weight_replace(op, codes, scale, dq, **_):
    axis = dq.attr("axis", 1)
    array = codes.constant()
    scales = scale.constant()
    shape = [1] * array.ndim
    if np.ndim(scales) == 1 and array.ndim:
        shape[axis % array.ndim] = -1
    restored = (array.astype(np.float32) * np.reshape(scales, shape)).astype(np.float32)
    weight = op.const(restored, name=f"{codes.name}__float")
    weight.meta["quantized_from"] = codes.name
    zero = op.const(np.zeros(np.shape(scales), dtype=array.dtype))
    return op.FakeQuantize(weight, scale, zero, axis=axis, _domain="ai.graphkiln")


TRAINING_RULES = [
    Rule("qdq_to_fake_quantize", _pair_pattern, _pair_replace, _pair_check),
    Rule("weight_dq_to_fake_quantize", _weight_pattern, _weight_replace, _weight_check),
]


def training_graph(graph: Graph) -> Graph:
    """A copy of `graph` whose quantization is FakeQuantize on float weights (trainable)."""
    copy = graph.copy()
    apply_rules(copy, TRAINING_RULES)
    copy.opset_imports.setdefault("ai.graphkiln", 1)
    return copy


def trainable_names(graph: Graph) -> list[str]:
    """Float weights and biases of Conv/Gemm/MatMul, directly or through a FakeQuantize."""
    names = []
    for node in graph.nodes:
        if node.op_type not in TRAINED_OPS or node.domain:
            continue
        for value in node.inputs[1:3]:
            if value is None:
                continue
            producer = value.producer
            if producer is not None and producer.op_type == "FakeQuantize":
                value = producer.inputs[0]
            if value.is_initializer() and value.dtype == DataType.FLOAT and value.const_value.size >= 2:
                names.append(value.name)
    return list(dict.fromkeys(names))


@dataclass
class Distiller:
    """Fits the student's trainable params to the teacher outputs with Adam + cosine decay."""

    function: Any
    params: dict[str, np.ndarray]
    trainable: list[str]
    masks: dict[str, np.ndarray]

    def loss_fn(self):
        import jax
        import jax.numpy as jnp

        def loss(trained, fixed, inputs, targets):
            # constants made inside lowerings (e.g. reduce_window init values) must stay concrete
            # under jit, or reverse-mode autodiff cannot see which monoid a window reduces with
            with jax.ensure_compile_time_eval():
                outputs = self.function({**fixed, **trained}, *inputs)
            terms = [jnp.mean((o.astype(jnp.float32) - t) ** 2) for o, t in zip(outputs, targets)]
            return sum(terms) / len(terms)

        return loss

    def fit(self, batches: list, targets: list, steps: int, learning_rate: float,
            progress: Any = None) -> tuple[float, float, dict[str, np.ndarray]]:
        import jax
        import optax

        trained = {k: jax.numpy.asarray(self.params[k]) for k in self.trainable}
        fixed = {k: v for k, v in self.params.items() if k not in trained}
        masks = {k: jax.numpy.asarray(m) for k, m in self.masks.items() if k in trained}
        loss = jax.jit(self.loss_fn())
        optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, max(steps, 1)))
        state = optimizer.init(trained)

        @jax.jit
        def step(trained, state, inputs, wanted):
            value, grads = jax.value_and_grad(self.loss_fn())(trained, fixed, inputs, wanted)
            grads = {k: g * masks[k] if k in masks else g for k, g in grads.items()}
            updates, state = optimizer.update(grads, state, trained)
            return optax.apply_updates(trained, updates), state, value

        before = float(np.mean([loss(trained, fixed, b, t) for b, t in zip(batches, targets)]))
        report_every = max(steps // 5, 1)
        for index in range(steps):
            trained, state, value = step(trained, state, batches[index % len(batches)], targets[index % len(batches)])
            if progress is not None and (index + 1) % report_every == 0:
                progress(f"recover step {index + 1}/{steps}, batch loss {float(value):.4g}")
        after = float(np.mean([loss(trained, fixed, b, t) for b, t in zip(batches, targets)]))
        return before, after, {k: np.asarray(v) for k, v in trained.items()}


def write_back(graph: Graph, training: Graph, trained: dict[str, np.ndarray]) -> int:
    """Store trained weights in `graph`: float initializers directly, quantized ones as new codes."""
    written = 0
    for name, array in trained.items():
        value = training.initializers[name]
        source = value.meta.get("quantized_from")
        target = graph.initializers.get(source or name)
        if target is None:
            continue
        if source is None:
            target.const_value = ArrayTensor(array.astype(np.float32))
        else:
            target.const_value = ArrayTensor(_requantize(training, value, array, target.const_value.numpy().dtype))
        written += 1
    return written


def _requantize(training: Graph, value, array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    fake = next(use.node for use in value.uses if use.node.op_type == "FakeQuantize")
    scales = fake.inputs[1].constant()
    axis = fake.attr("axis", 1)
    shape = [1] * array.ndim
    if np.ndim(scales) == 1:
        shape[axis % array.ndim] = -1
    info = np.iinfo(dtype)
    limit = 127 if dtype == np.int8 else info.max
    return np.clip(np.rint(array / np.reshape(scales, shape)), -limit, limit).astype(dtype)


def _pruning_masks(graph: Graph, names: list[str], ctx: PassContext) -> dict[str, np.ndarray]:
    """Zero patterns that training must keep (unstructured and 2:4 pruning)."""
    pruning = ctx.artifacts.get("report:pruning") or {}
    if pruning.get("mode") not in ("unstructured", "2:4"):
        return {}
    return {n: (graph.initializers[n].const_value.numpy() != 0).astype(np.float32) for n in names}


def _load_data(teacher: Graph, source: Any, ctx: PassContext) -> tuple[list, list]:
    input_names = [v.name for v in teacher.inputs if v.const_value is None]
    model = to_runnable_model(teacher)
    batches, targets = [], []
    for batch in stream_batches(source, input_names, batch_size=ctx.option("recover_batch_size", 32)):
        feeds = {n: np.asarray(batch[n]) for n in input_names}
        batches.append(tuple(feeds[n] for n in input_names))
        outputs = run_onnxruntime(model, feeds)
        targets.append(tuple(np.asarray(o, dtype=np.float32) for o in outputs))
    return batches, targets


@register_pass
class RecoverPass(Pass):
    name = "recover"
    description = "distill the compressed graph toward the original through JAX (Adam, cosine decay, STE)"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        method = ctx.option("recover")
        if not method:
            return PassResult(graph, False)
        if method != "distill":
            raise OptionError(f"unknown --recover method {method!r}", "use distill")
        teacher = ctx.artifacts.get("compression:teacher")
        if teacher is None:
            ctx.note("recover: no pruning or quantization ran before it; nothing to recover")
            return PassResult(graph, False)
        if ctx.option("calibration") is None:
            raise OptionError("--recover distill fine-tunes on calibration data", "pass --calibration DATA")
        return PassResult(graph, True, self._distill(graph, teacher, ctx))

    def _distill(self, graph: Graph, teacher: Graph, ctx: PassContext) -> dict[str, int]:
        from backends.jax import quant_exec  # noqa: F401  (FakeQuantize lowering)
        from backends.jax.interpreter import LoweringOptions, build_function

        steps = int(ctx.option("steps") or DEFAULT_STEPS)
        training = training_graph(graph)
        names = trainable_names(training)
        if not names:
            raise UnsupportedError("recover: the graph has no float Conv/Gemm/MatMul weights to fine-tune")
        function, params = build_function(training, LoweringOptions())
        batches, targets = _load_data(teacher, ctx.option("calibration"), ctx)
        distiller = Distiller(function, params, [n for n in names if n in params], _pruning_masks(training, names, ctx))
        quantized = any(n.op_type == "FakeQuantize" for n in training.nodes)
        rate = float(ctx.option("recover_lr") or (QUANTIZED_LEARNING_RATE if quantized else DEFAULT_LEARNING_RATE))
        before, after, trained = distiller.fit(batches, targets, steps, rate, ctx.progress)
        applied = after < before
        if not applied:
            ctx.note(f"recover: distillation did not lower the loss ({before:.4g} -> {after:.4g}); weights left unchanged")
        written = write_back(graph, training, trained) if applied else 0
        ctx.artifacts["report:recovery"] = {
            "steps": steps, "learning_rate": rate, "loss_before": before, "loss_after": after,
            "metric": "output_mse", "before": before, "after": after if applied else before, "applied": applied,
            "parameters_tuned": written, "batches": len(batches),
        }
        return {"steps": steps, "weights_written": written}
