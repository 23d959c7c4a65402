"""The `prune` pass: `--prune RATIO --prune-mode unstructured|channels|2:4`, with its report."""

from __future__ import annotations

from compiler.errors import OptionError
from compiler.ir import Graph
from compiler.pass_infra import Pass, PassContext, PassResult, register_pass

from .channels import prune_channels
from .magnitude import prune_unstructured
from .semi_structured import prune_two_four
from .weights import model_statistics

MODES = ("unstructured", "channels", "2:4")


@register_pass
class PrunePass(Pass):
    name = "prune"
    description = "magnitude pruning: unstructured (global or per layer), structured channels, 2:4"
    changes_shapes = True

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        ratio = ctx.option("prune")
        if not ratio:
            return PassResult(graph, False)
        ratio = float(ratio)
        if not 0.0 < ratio < 1.0:
            raise OptionError(f"--prune takes a ratio between 0 and 1 (exclusive), not {ratio}")
        mode = ctx.option("prune_mode") or "unstructured"
        if mode not in MODES:
            raise OptionError(f"unknown --prune-mode {mode!r}", f"use one of {', '.join(MODES)}")
        if ctx.option("recover"):  # the float original, for distillation
            ctx.artifacts.setdefault("compression:teacher", graph.copy())
        before = model_statistics(graph)
        if mode == "unstructured":
            rows, refused = prune_unstructured(graph, ratio, ctx.option("prune_scope") or "global")
        elif mode == "channels":
            rows, refused = prune_channels(graph, ratio)
        else:
            if ratio != 0.5:
                ctx.note(f"prune 2:4 always removes half of each group of 4; ratio {ratio} ignored")
            rows, refused = prune_two_four(graph)
        after = model_statistics(graph)
        ctx.artifacts["report:pruning"] = {
            "mode": mode, "ratio": ratio, "scope": (ctx.option("prune_scope") or "global") if mode == "unstructured" else None,
            "params_before": before["params"], "params_after": after["params"],
            "nonzero_params_before": before["nonzero_params"], "nonzero_params_after": after["nonzero_params"],
            "bytes_before": before["bytes"], "bytes_after": after["bytes"],
            "bytes_sparse_after": after["sparse_bytes"],  # zeros of pruned weights stored as a bitmask
            "sparsity_before": before["sparsity"], "sparsity_after": after["sparsity"],
            "layers": rows, "refused": refused,
        }
        return PassResult(graph, bool(rows), {"layers_pruned": len(rows), "refused": len(refused)})
