"""Compute cycles and SRAM accesses of one matrix problem on a systolic array, with SCALE-Sim v3's
analytical model (scalesim/compute/systolic_compute_{os,ws,is}.py).

A layer is the product of an ifmap operand matrix (E rows = output pixels, K columns = window
size) and a filter matrix (K x M filters). Each dataflow pins two of (E, K, M) to the array:

  os: Sr=E on rows, Sc=M on columns, T=K streamed; fold = T + R + C - 2 cycles
  ws: Sr=K on rows, Sc=M on columns, T=E streamed; fold = 2R + C + T - 2 cycles (R to preload)
  is: Sr=K on rows, Sc=E on columns, T=M streamed; fold = 2R + C + T - 2 cycles

with ceil(Sr/R) * ceil(Sc/C) folds run back to back. SCALE-Sim reports a layer's stall-free
"Total Cycles" as the last cycle index of its demand trace, i.e. folds * fold_cycles - 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class MatrixProblem:
    """E output pixels (rows of the ifmap matrix), K = window size, M = filters (columns)."""

    ofmap_px: int
    window: int
    filters: int

    @property
    def macs(self) -> int:
        return self.ofmap_px * self.window * self.filters


@dataclass(frozen=True)
class Mapping:
    """How one MatrixProblem folds onto the array under one dataflow."""

    spatial_rows: int  # Sr
    spatial_cols: int  # Sc
    temporal: int  # T
    row_folds: int
    col_folds: int
    fold_cycles: int

    @property
    def folds(self) -> int:
        return self.row_folds * self.col_folds


def mapping(problem: MatrixProblem, rows: int, cols: int, dataflow: str) -> Mapping:
    """The SCALE-Sim mapping of `problem` on a rows x cols array for dataflow os, ws or is."""
    e, k, m = problem.ofmap_px, problem.window, problem.filters
    if dataflow == "os":
        sr, sc, t = e, m, k
        fold = t + rows + cols - 2
    elif dataflow == "ws":
        sr, sc, t = k, m, e
        fold = 2 * rows + cols + t - 2
    elif dataflow == "is":
        sr, sc, t = k, e, m
        fold = 2 * rows + cols + t - 2
    else:
        raise ValueError(f"unknown dataflow {dataflow!r}")
    return Mapping(sr, sc, t, math.ceil(sr / rows), math.ceil(sc / cols), fold)


def compute_cycles(problem: MatrixProblem, rows: int, cols: int, dataflow: str) -> int:
    """Stall-free cycles of one problem, equal to SCALE-Sim's per-layer "Total Cycles"."""
    plan = mapping(problem, rows, cols, dataflow)
    return plan.folds * plan.fold_cycles - 1


@dataclass(frozen=True)
class SramAccesses:
    """Words read from the ifmap and filter buffers and written to the ofmap buffer."""

    ifmap_reads: int
    filter_reads: int
    ofmap_writes: int


def sram_accesses(problem: MatrixProblem, rows: int, cols: int, dataflow: str) -> SramAccesses:
    """Operand words moved between the SRAM buffers and the array (SCALE-Sim's read/write counts):
    the streamed operand is re-read once per fold of the other spatial dimension, partial sums are
    written once per fold of the reduction dimension."""
    plan = mapping(problem, rows, cols, dataflow)
    e, k, m = problem.ofmap_px, problem.window, problem.filters
    if dataflow == "os":
        return SramAccesses(plan.col_folds * e * k, plan.row_folds * k * m, e * m)
    if dataflow == "ws":
        return SramAccesses(plan.col_folds * e * k, k * m, plan.row_folds * e * m)
    return SramAccesses(k * e, plan.col_folds * k * m, plan.row_folds * e * m)


def refetch_factors(problem: MatrixProblem, rows: int, cols: int, dataflow: str) -> tuple[int, int, int]:
    """How many times ifmap and filter are streamed in full, and how many partial-sum passes the
    output takes, when an operand does not fit its SRAM buffer (1, 1, 1 when everything fits)."""
    plan = mapping(problem, rows, cols, dataflow)
    if dataflow == "os":
        return plan.col_folds, plan.row_folds, 1
    if dataflow == "ws":
        return plan.col_folds, 1, plan.row_folds
    return 1, plan.col_folds, plan.row_folds


def utilization(problem: MatrixProblem, cycles: int, rows: int, cols: int) -> float:
    """Fraction of MAC slots doing useful work (SCALE-Sim's "Overall Util")."""
    return problem.macs / (cycles * rows * cols) if cycles > 0 else 0.0
