"""Native CPU kernels (panel_gemm.cc, conv_gemm.cc, depthwise_conv.cc, attention.cc, layer_norm.cc,
row_ops.cc, pool.cc), compiled on first use for this machine (-march=native) with the system C++
compiler against the XLA FFI headers jaxlib ships, and cached next to the XLA compilation cache.

A machine without a compiler or AVX-512 loses nothing but speed: `library()` returns None and
`unavailable_reason()` says why, and the backend lowers to XLA's own ops.
KILN_NATIVE=0 turns the kernels off."""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile

import jax
import jaxlib

from compiler.pass_infra import switched_off

HERE = os.path.dirname(os.path.abspath(__file__))
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w")
COMPILE_TIMEOUT_SECONDS = 300

SOURCES = ("panel_gemm.cc", "conv_gemm.cc", "depthwise_conv.cc", "attention.cc", "layer_norm.cc", "row_ops.cc",
           "pool.cc")
HEADERS = ("tile.h", "workers.h")
REQUIRED_CPU_FLAGS = ("avx512f",)
LIBRARY_NAME = "kiln_kernels"
# XLA FFI target -> the handler symbol the library exports
TARGETS = {"kiln_panel_matmul": "KilnPanelMatmul", "kiln_panel_matmul_bias": "KilnPanelMatmulBias",
           "kiln_panel_matmul_residual": "KilnPanelMatmulResidual", "kiln_conv_gemm": "KilnConvGemm",
           "kiln_conv_columns": "KilnConvColumns",
           "kiln_depthwise_conv": "KilnDepthwiseConv", "kiln_attention": "KilnAttention",
           "kiln_layer_norm": "KilnLayerNorm", "kiln_row_mean": "KilnRowMean",
           "kiln_row_scale": "KilnRowScale", "kiln_max_pool": "KilnMaxPool",
           "kiln_average_pool": "KilnAveragePool"}

_state: dict[str, object] = {}


def library() -> ctypes.CDLL | None:
    """The kernels' shared library, built once per machine and source version, its FFI targets
    registered with JAX for the CPU; None where it cannot be built here (see unavailable_reason)."""
    if "library" not in _state:
        try:
            built = _build_and_open()
            for target, symbol in TARGETS.items():
                jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(built, symbol)), platform="cpu")
            _state["library"] = built
        except _Unavailable as why:
            _state["library"], _state["reason"] = None, str(why)
            _state["build_failed"] = isinstance(why, _BuildFailed)
    return _state["library"]  # type: ignore[return-value]


def build_failed() -> bool:
    """Whether this machine could build the kernels (x86-64 Linux, AVX-512, a C++ compiler, not
    turned off) but building or loading them failed: a defect in native/, not a missing feature."""
    library()
    return bool(_state.get("build_failed"))


def unavailable_reason() -> str | None:
    """Why library() is None (None when it is not)."""
    library()
    return _state.get("reason")  # type: ignore[return-value]


class _Unavailable(Exception):
    pass


class _BuildFailed(_Unavailable):
    """The compiler or the loader refused the kernels."""


def _build_and_open() -> ctypes.CDLL:
    if switched_off(os.environ.get("KILN_NATIVE")):
        raise _Unavailable("turned off by KILN_NATIVE=0")
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "AMD64"):
        raise _Unavailable(f"they are built for x86-64 Linux, not {sys.platform}/{platform.machine()}")
    signature = _cpu_signature()
    missing = [flag for flag in REQUIRED_CPU_FLAGS if f" {flag}" not in signature]
    if missing:
        raise _Unavailable(f"this CPU lacks {', '.join(missing)}")
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if not compiler:
        raise _Unavailable("no C++ compiler found (set CXX)")
    sources = [os.path.join(HERE, name) for name in SOURCES]
    parts = [open(os.path.join(HERE, name), "rb").read() for name in (*SOURCES, *HEADERS)]
    key = hashlib.sha256(b"\0".join([*parts, " ".join(FLAGS).encode(), compiler.encode(), jaxlib.__version__.encode(),
                                     signature.encode()])).hexdigest()[:20]
    path = os.path.join(_library_dir(), f"{LIBRARY_NAME}-{key}.so")
    if not os.path.exists(path):
        _compile(compiler, sources, path)
    try:
        return ctypes.CDLL(path)
    except OSError as error:
        raise _BuildFailed(f"cannot load {path}: {error}") from None


def _compile(compiler: str, sources: list[str], path: str) -> None:
    """Compile `sources` into the shared library `path` atomically (a temporary file renamed into place)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(path))
    os.close(handle)
    command = [compiler, *FLAGS, f"-I{jax.ffi.include_dir()}", *sources, "-o", temporary]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_SECONDS)
        if done.returncode != 0:
            first = next((line for line in done.stderr.splitlines() if "error" in line), done.stderr.strip()[:200])
            raise _BuildFailed(f"{os.path.basename(compiler)} failed: {first.strip()}")
        os.replace(temporary, path)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise _BuildFailed(f"cannot run {compiler}: {error}") from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _library_dir() -> str:
    from ..cache import cache_dir

    folder = cache_dir()
    if folder is None:  # KILN_NO_CACHE: build into this process's own temporary folder
        return os.path.join(tempfile.gettempdir(), f"graphkiln-native-{os.getpid()}")
    return os.path.join(folder, "native")


def _cpu_signature() -> str:
    """The CPU model and feature flags, which -march=native compiles for."""
    try:
        with open("/proc/cpuinfo") as handle:
            lines = [line for line in handle if line.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor()
