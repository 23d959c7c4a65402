"""Name scopes of nodes (PyTorch's "/encoder/layer.0/attn/MatMul" names or the dynamo exporter's
`pkg.torch.onnx.name_scopes` metadata), used to group and collapse nodes in the visualizer."""

from __future__ import annotations

import ast
from typing import Any


def node_scope(node: dict[str, Any]) -> str:
    """The scope path of a snapshot node, "a/b/c" without leading slash; "" when it has none.
    A node a rewrite created takes the common scope of the nodes it was fused from."""
    props = (node.get("meta") or {}).get("metadata_props") or {}
    scopes = props.get("pkg.torch.onnx.name_scopes") if isinstance(props, dict) else None
    if isinstance(scopes, str):
        try:
            parts = [str(part) for part in ast.literal_eval(scopes) if part]
        except (ValueError, SyntaxError):
            parts = []
        if len(parts) > 1:
            return "/".join(parts[:-1])
    scope = name_scope(node.get("name") or "")
    if scope or not node.get("fused_from"):
        return scope
    return common_scope([name_scope(str(name)) for name in node["fused_from"]])


def name_scope(name: str) -> str:
    """"a/b" for a node named "/a/b/MatMul"; "" for a name without a path."""
    parts = [part for part in name.strip("/").split("/") if part]
    return "/".join(parts[:-1])


def common_scope(scopes: list[str]) -> str:
    """The deepest scope that holds all of `scopes` (a fused node sits where its sources sat)."""
    if not scopes:
        return ""
    split = [scope.split("/") if scope else [] for scope in scopes]
    common: list[str] = []
    for parts in zip(*split):
        if any(part != parts[0] for part in parts):
            break
        common.append(parts[0])
    return "/".join(common)

