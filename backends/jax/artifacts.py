"""The JAX files of a kiln output folder: `model.jax_export` (jax.export serialized, symbolic dims
kept), `stablehlo.mlir` (the same module as text) and `params.npz` (the weights, in argument
order), and reloading them in a fresh process on the platform they were exported for."""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import ml_dtypes  # noqa: F401  (registers bfloat16 & co. with numpy)
import numpy as np

from compiler.errors import ModelLoadError, UnsupportedError

from .export import RUNTIME_PLATFORMS, local_platform, platform_present

EXPORT_FILE = "model.jax_export"
STABLEHLO_FILE = "stablehlo.mlir"
PARAMS_FILE = "params.npz"


def write_artifacts(folder: str, exported: jax.export.Exported, params: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Write the three files into `folder` (the caller's staging folder, swapped in atomically);
    returns the manifest entries that describe them."""
    with open(os.path.join(folder, EXPORT_FILE), "wb") as handle:
        handle.write(exported.serialize())
    with open(os.path.join(folder, STABLEHLO_FILE), "w", encoding="utf-8") as handle:
        handle.write(exported.mlir_module())
    names = list(params)
    dtypes = [np.dtype(params[n].dtype).name for n in names]
    stored = {f"p{index}": _storable(params[name]) for index, name in enumerate(names)}
    np.savez(os.path.join(folder, PARAMS_FILE), **stored)
    return {
        "export": EXPORT_FILE,
        "stablehlo": STABLEHLO_FILE,
        "params": PARAMS_FILE,
        "param_names": names,
        "param_dtypes": dtypes,
        "export_platforms": list(exported.platforms),
        "input_shapes": [str(aval.shape) for aval in exported.in_avals[len(names):]],
        "jax_version": jax.__version__,
        "x64": bool(jax.config.jax_enable_x64),
    }


def _storable(array: np.ndarray) -> np.ndarray:
    """npz keeps only numpy's own dtypes; ml_dtypes types (bfloat16, float8) travel as raw bits."""
    array = np.asarray(array)
    if array.dtype.kind == "V" or type(array.dtype).__module__.startswith("ml_dtypes") or array.dtype.name in _ML_DTYPES:
        return array.view(f"u{array.dtype.itemsize}")
    return array


_ML_DTYPES = {"bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "int4", "uint4"}


def read_params(folder: str, manifest: Mapping[str, Any]) -> dict[str, np.ndarray]:
    names = manifest.get("param_names", [])
    dtypes = manifest.get("param_dtypes", [])
    path = os.path.join(folder, manifest.get("params", PARAMS_FILE))
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[f"p{index}"] for index, name in enumerate(names)}
    except (OSError, KeyError, ValueError) as error:
        raise ModelLoadError(f"cannot read the weights {path}: {error}", "recompile the model with kiln compile") from None
    for (name, array), dtype in zip(list(arrays.items()), dtypes):
        if array.dtype.name != dtype:
            arrays[name] = array.view(np.dtype(dtype))
    return arrays


def read_exported(folder: str, manifest: Mapping[str, Any]) -> jax.export.Exported:
    """Deserialize the artifact; refuse with one line when its platform is absent here."""
    path = os.path.join(folder, manifest.get("export", EXPORT_FILE))
    try:
        with open(path, "rb") as handle:
            exported = jax.export.deserialize(bytearray(handle.read()))
    except OSError as error:
        raise ModelLoadError(f"cannot read the JAX artifact {path}: {error.strerror}", "recompile the model with kiln compile") from None
    except Exception as error:  # a corrupt or incompatible file
        raise ModelLoadError(f"cannot deserialize the JAX artifact {path}: {type(error).__name__}",
                             f"it was written by jax {manifest.get('jax_version', '?')}; this is jax {jax.__version__}") from None
    check_platform(exported)
    return exported


def check_platform(exported: jax.export.Exported) -> None:
    """UnsupportedError unless one of the artifact's platforms is present on this machine."""
    if any(platform_present(p) for p in exported.platforms):
        return
    wanted = "/".join(RUNTIME_PLATFORMS.get(p, p) for p in exported.platforms)
    raise UnsupportedError(f"artifact was compiled for {wanted}; this machine has {local_platform()}",
                           f"run it on a machine with a {wanted}, or recompile with --backend {local_platform()}")
