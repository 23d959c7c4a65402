"""The named optimization presets -O0 ... -O3 (flat pass lists; see compiler.pipeline)."""

from compiler.pipeline import register_preset

register_preset(0, "")
register_preset(1, "fold_constants,fixpoint(remove_noops,fold_constants,dce)")
register_preset(2, "fold_constants,fixpoint(remove_noops,fold_constants,dce)")
register_preset(3, "fold_constants,fixpoint(remove_noops,fold_constants,dce)")
