"""The accelerator being simulated: array size, dataflow, SRAM, DRAM bandwidth, clock and the
per-access energies (all from the --array/--dataflow/--sram/--bandwidth/--freq options)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from compiler.errors import OptionError

DATAFLOWS = ("os", "ws", "is")

# Energy per operation / per byte in picojoules, from M. Horowitz, "Computing's energy problem
# (and what we can do about it)", ISSCC 2014, 45 nm, 0.9 V: a MAC is one multiply plus one add
# (int8: 0.2 + 0.03 pJ; fp16: 1.1 + 0.4; fp32: 3.7 + 0.9); an on-chip SRAM access is 20 pJ per
# 64-bit word of a 32 KB array (2.5 pJ/byte); a DRAM access is 1.3-2.6 nJ per 64-bit word (the
# midpoint, 1.95 nJ, is 243.75 pJ/byte). Vector-unit operations cost one add of the same width.
ENERGY_PJ: dict[str, dict[str, float]] = {
    "mac": {"int8": 0.23, "fp16": 1.5, "fp32": 4.6},
    "vector_op": {"int8": 0.03, "fp16": 0.4, "fp32": 0.9},
    "sram_byte": {"any": 2.5},
    "dram_byte": {"any": 243.75},
}
ENERGY_SOURCE = "Horowitz, ISSCC 2014 (45 nm): MAC = mult + add; SRAM 20 pJ/64 bit (32 KB); DRAM 1.95 nJ/64 bit"


@dataclass(frozen=True)
class AsicConfig:
    """One systolic-array accelerator. `sram_kb` is the size of each of the three operand buffers
    (ifmap, filter, ofmap), as in SCALE-Sim; `vector_lanes` defaults to the array width."""

    rows: int = 32
    cols: int = 32
    dataflow: str = "os"
    sram_kb: float = 256.0
    bandwidth_gbps: float = 16.0
    freq_mhz: float = 1000.0
    vector_lanes: int = 0
    energy_pj: dict[str, dict[str, float]] = field(default_factory=lambda: ENERGY_PJ)

    @property
    def lanes(self) -> int:
        return self.vector_lanes or self.cols

    @property
    def sram_bytes(self) -> int:
        return int(self.sram_kb * 1024)

    @property
    def dram_bytes_per_cycle(self) -> float:
        """DRAM bytes delivered per array clock cycle (GB/s over MHz)."""
        return self.bandwidth_gbps * 1e9 / (self.freq_mhz * 1e6)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(vector_lanes=self.lanes, dram_bytes_per_cycle=self.dram_bytes_per_cycle,
                    energy_source=ENERGY_SOURCE, word_bytes={"int8": 1, "fp16": 2, "bf16": 2, "fp32": 4})
        return data


def parse_array(text: str) -> tuple[int, int]:
    """'128x128' -> (128, 128); one clear error otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", str(text))
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise OptionError(f"--array expects ROWSxCOLS with positive sizes (e.g. 32x32), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def _positive(options: Mapping[str, Any], key: str, flag: str, default: float) -> float:
    value = options.get(key)
    if value is None:
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise OptionError(f"{flag} expects a number, got {value!r}") from None
    if not number > 0:
        raise OptionError(f"{flag} must be positive, got {value}")
    return number


def config_from_options(options: Mapping[str, Any]) -> AsicConfig:
    """The accelerator described by compile options (array, dataflow, sram, bandwidth, freq)."""
    rows, cols = parse_array(options["array"]) if options.get("array") else (32, 32)
    dataflow = options.get("dataflow") or "os"
    if dataflow not in DATAFLOWS:
        raise OptionError(f"--dataflow must be one of {', '.join(DATAFLOWS)}, got {dataflow!r}")
    return AsicConfig(
        rows=rows,
        cols=cols,
        dataflow=dataflow,
        sram_kb=_positive(options, "sram", "--sram", 256.0),
        bandwidth_gbps=_positive(options, "bandwidth", "--bandwidth", 16.0),
        freq_mhz=_positive(options, "freq", "--freq", 1000.0),
    )
