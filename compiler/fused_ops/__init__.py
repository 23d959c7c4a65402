"""The ai.graphkiln fused ops (Gelu, LayerNormalization, RMSNormalization, Attention): each has a
type rule, a standard-ONNX decomposition for export and a numpy kernel. Importing registers them."""

from . import activation, attention, normalization  # noqa: F401

__all__ = ["activation", "attention", "normalization"]
