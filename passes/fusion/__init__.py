"""-O3 fusions into richer ops (GELU, LayerNorm, RMSNorm, attention) and the pass that writes them
as standard ONNX (raising the opset) or keeps them as ai.graphkiln ops (--keep-opset)."""

from . import activation, attention, attention_heads, emission, normalization  # noqa: F401

FUSION_PASSES = ("fuse_layer_norm", "fuse_rms_norm", "fuse_gelu", "fuse_attention")
