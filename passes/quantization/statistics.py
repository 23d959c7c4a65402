"""Per-tensor calibration statistics streamed over batches: min/max plus a histogram of |x| from
which MinMax, Percentile, Entropy (KL, as TensorRT calibrates) and MSE clipping ranges are chosen."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHODS = ("minmax", "percentile", "entropy", "mse")
DEFAULT_BINS = 2048


@dataclass
class TensorStatistics:
    """Running statistics of one tensor; `update` takes one batch, `threshold` picks a range."""

    bins: int = DEFAULT_BINS
    minimum: float = np.inf
    maximum: float = -np.inf
    count: int = 0
    histogram: np.ndarray | None = None
    edge: float = 0.0  # the histogram covers |x| in [0, edge]

    def update(self, array: np.ndarray) -> None:
        values = np.asarray(array, dtype=np.float32).reshape(-1)
        values = values[np.isfinite(values)]
        if values.size == 0:
            return
        self.minimum = min(self.minimum, float(values.min()))
        self.maximum = max(self.maximum, float(values.max()))
        self.count += int(values.size)
        magnitudes = np.abs(values)
        top = float(magnitudes.max())
        if self.histogram is None:
            self.edge = top if top > 0 else 1.0
            self.histogram = np.zeros(self.bins, dtype=np.int64)
        elif top > self.edge:
            self._widen(top)
        counts, _ = np.histogram(magnitudes, bins=self.bins, range=(0.0, self.edge))
        self.histogram += counts

    def _widen(self, top: float) -> None:
        """Re-bin the histogram onto [0, top] (old counts move with their bin centres)."""
        width = self.edge / self.bins
        centres = (np.arange(self.bins) + 0.5) * width
        counts, _ = np.histogram(centres, bins=self.bins, range=(0.0, top), weights=self.histogram)
        self.histogram = counts.astype(np.int64)
        self.edge = top

    @property
    def amax(self) -> float:
        return max(abs(self.minimum), abs(self.maximum), 0.0) if self.count else 0.0

    def threshold(self, method: str, *, percentile: float = 99.999, levels: int = 128) -> float:
        """The clipping magnitude chosen by `method` (|x| above it saturates)."""
        if not self.count or self.histogram is None:
            return 0.0
        if method == "minmax":
            return self.amax
        if method == "percentile":
            return percentile_threshold(self.histogram, self.edge, percentile)
        if method == "entropy":
            return entropy_threshold(self.histogram, self.edge, levels)
        if method == "mse":
            return mse_threshold(self.histogram, self.edge, levels)
        raise ValueError(f"unknown calibration method {method!r}")

    def value_range(self, method: str, **kwargs: float) -> tuple[float, float]:
        """(low, high) to quantize: the observed range clipped to +-threshold, always holding 0."""
        limit = self.threshold(method, **kwargs)
        low = max(min(self.minimum, 0.0), -limit)
        high = min(max(self.maximum, 0.0), limit)
        return float(low), float(high)


def percentile_threshold(histogram: np.ndarray, edge: float, percentile: float) -> float:
    cumulative = np.cumsum(histogram)
    index = int(np.searchsorted(cumulative, cumulative[-1] * percentile / 100.0))
    return float(min(index + 1, len(histogram)) * edge / len(histogram))


def entropy_threshold(histogram: np.ndarray, edge: float, levels: int = 128) -> float:
    """TensorRT's KL-divergence calibration: the clip whose `levels`-bin quantized distribution
    diverges least from the clipped reference distribution."""
    bins = len(histogram)
    counts = histogram.astype(np.float64)
    best_index, best_divergence = bins, np.inf
    step = max(1, (bins - levels) // 256)
    for index in range(levels, bins + 1, step):
        reference = counts[:index].copy()
        reference[index - 1] += counts[index:].sum()
        if reference.sum() == 0:
            continue
        groups = np.array_split(counts[:index], levels)
        expanded = []
        for group in groups:
            nonzero = group > 0
            mean = group.sum() / max(int(nonzero.sum()), 1)
            expanded.append(np.where(nonzero, mean, 0.0))
        candidate = np.concatenate(expanded)
        divergence = _kl_divergence(reference, candidate)
        if divergence < best_divergence:
            best_divergence, best_index = divergence, index
    return float(best_index * edge / bins)


def _kl_divergence(reference: np.ndarray, candidate: np.ndarray) -> float:
    p = reference / reference.sum()
    total = candidate.sum()
    if total == 0:
        return np.inf
    q = candidate / total
    mask = p > 0
    q = np.where(q > 0, q, 1e-12)
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def mse_threshold(histogram: np.ndarray, edge: float, levels: int = 128) -> float:
    """The clip minimising the expected squared error of uniform quantization with `levels`
    steps per sign, estimated on the histogram's bin centres."""
    bins = len(histogram)
    centres = (np.arange(bins) + 0.5) * edge / bins
    weights = histogram.astype(np.float64)
    best, best_error = edge, np.inf
    for fraction in np.linspace(0.05, 1.0, 96):
        limit = edge * fraction
        scale = limit / (levels - 1)
        quantized = np.clip(np.round(centres / scale), 0, levels - 1) * scale
        error = float(np.sum(weights * (quantized - centres) ** 2))
        if error < best_error:
            best, best_error = limit, error
    return float(best)
