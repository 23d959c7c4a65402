"""The named optimization presets -O0 ... -O3 (flat pass lists; see compiler.pipeline)."""

from compiler.pipeline import register_preset

register_preset(0, "")
register_preset(1, "fold_constants,fixpoint(remove_noops,fold_constants,dce)")
# -O2: every pass that keeps the model's opset (folding, simplification, BatchNorm folding, epilogues).
O2_SIMPLIFY = (
    "remove_noops,remove_algebraic_noops,fold_shape_values,fold_reshape_targets,simplify_layout_chains,"
    "push_transposes,fold_batchnorm,fuse_bias_epilogues,cse,merge_sibling_matmuls,fold_constants,dce"
)
O2_PIPELINE = f"fold_constants,fixpoint({O2_SIMPLIFY})"
register_preset(2, O2_PIPELINE)
# -O3: -O2 plus the fusions into richer ops, written as standard ONNX (opset raised) or kept as
# ai.graphkiln ops with --keep-opset; -O2's simplifications run again on what the raise produced.
O3_FUSIONS = "fuse_layer_norm,fuse_rms_norm,fuse_gelu,fuse_attention"
O3_PIPELINE = (f"{O2_PIPELINE},fixpoint({O3_FUSIONS},{O2_SIMPLIFY}),write_fused_ops,"
               f"fixpoint(fuse_attention_heads,{O2_SIMPLIFY})")
register_preset(3, O3_PIPELINE)
# --backend tensorrt: TensorRT 10 parses Attention only with 4-D Q/K/V, so no 3-D head merge.
register_preset(3, O3_PIPELINE.replace("fuse_attention_heads,", ""), backend="tensorrt")
