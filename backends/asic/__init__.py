"""The ASIC backend: a systolic-array simulator with SCALE-Sim export."""

from . import backend  # noqa: F401
