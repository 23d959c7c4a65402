"""Backends of graphkiln; importing this package registers them with compiler.backend_registry."""

from . import jax, onnx  # noqa: F401
from . import asic, tensorrt  # noqa: F401
