"""Shared test setup: verify the IR after every pass, quiet warnings from onnx's test corpus."""

from __future__ import annotations

import os
import pathlib
import warnings

import pytest

os.environ.setdefault("KILN_VERIFY", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"onnx\.backend\.test\..*")

REPO = pathlib.Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"


@pytest.fixture(scope="session")
def samples_dir() -> pathlib.Path:
    return SAMPLES
