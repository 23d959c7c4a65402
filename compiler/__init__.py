"""graphkiln: an ahead-of-time graph compiler for neural networks.

    import compiler
    g = compiler.load("model.onnx")
    cm = compiler.compile("model.onnx", backend="cpu", opt_level=2)
    outputs = cm(x)
    opt = compiler.optimize(model_proto, opt_level=2)
"""

from .api import compile, load, optimize, run_pipeline
from .backend_registry import CompiledModel, load_artifact
from .errors import KilnError
from .verify import verify

__all__ = ["CompiledModel", "KilnError", "compile", "load", "load_artifact", "optimize", "run_pipeline", "verify"]
__version__ = "0.1.0"
