"""The pass families of graphkiln; importing this package registers every pass and preset."""

from . import constant_folding, dce, noop_removal, pipelines  # noqa: F401
from . import algebraic_noops, batchnorm_folding, bias_epilogues, cse, layout_chains  # noqa: F401,E402  (-O2 simplify)
from . import shape_folding, sibling_matmuls, transpose_pushing  # noqa: F401,E402  (-O2 simplify)
from . import fusion  # noqa: F401,E402  (-O3 fusions: GELU, LayerNorm, RMSNorm, attention)
from . import quantization  # noqa: F401,E402  (compression: quantize)
from . import pruning  # noqa: F401,E402  (compression: prune)
from . import recovery  # noqa: F401,E402  (compression: recover)
