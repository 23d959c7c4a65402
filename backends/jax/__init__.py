"""The JAX/XLA backend: --backend cpu|gpu|tpu."""

from . import backend  # noqa: F401
