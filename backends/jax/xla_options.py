"""XLA compiler options the backend sets on every compile for a platform (fields of XLA's
DebugOptions, passed per program so they never touch a user's XLA_FLAGS or other JAX code).

CPU: convolutions stay on XLA's own kernels instead of YNNPACK's. jaxlib 0.10 sends convolutions
of 32 channels or more to YNNPACK; on the 2-core Intel SPR host the same compiled ResNet-50 ran
12-22% slower that way (A/B in one process; MobileNetV3 about even), while YNNPACK's dots stay
5-35% faster than XLA's, so dots keep it. An XLA without the option, or a user who sets it in
XLA_FLAGS, gets XLA's defaults.
"""

from __future__ import annotations

import functools
import inspect
import os

import jax
import numpy as np

YNN_FUSIONS = "xla_cpu_experimental_ynn_fusion_type"
CPU_OPTIONS = {YNN_FUSIONS: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


def compiler_options(platform: str) -> dict[str, str]:
    """The options to compile a program for `platform` with (a copy; empty for none)."""
    if platform != "cpu" or YNN_FUSIONS in os.environ.get("XLA_FLAGS", ""):
        return {}
    return dict(CPU_OPTIONS) if _cpu_accepts_options() else {}


@functools.cache
def _cpu_accepts_options() -> bool:
    """Whether this jax takes per-jit options and this XLA:CPU knows CPU_OPTIONS (a tiny compile)."""
    if "compiler_options" not in inspect.signature(jax.jit).parameters:
        return False
    try:
        probe = jax.device_put(np.float32(0), jax.devices("cpu")[0])
        jax.jit(lambda x: x + 1).lower(probe).compile(compiler_options=CPU_OPTIONS)
    except Exception:  # noqa: BLE001  (XLA rejects an unknown option as INVALID_ARGUMENT, other versions differently)
        return False
    return True
