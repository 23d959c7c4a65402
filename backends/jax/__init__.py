"""The JAX/XLA backend: --backend cpu|gpu|tpu."""
