"""Held-out scores, accumulated batch by batch: MSE, normalised MSE, R^2 and cosine of several predictors
against the same targets.

nmse = MSE / mean_d Var(target_d)  (= sum of squared errors / total sum of squares; 1.0 = the test mean);
r2 = mean over dims of the per-dim R^2 (sklearn's uniform average: every dimension counts alike, so the few
large LayerNorm outlier dims do not dominate it as they dominate MSE); cosine = mean over tokens."""

from __future__ import annotations

import numpy as np


class ScoreAccumulator:
    def __init__(self, dim: int):
        self.dim, self.n = dim, 0
        self.shift: np.ndarray | None = None
        self.sum = np.zeros(dim)  # of (y - shift)
        self.sumsq = np.zeros(dim)
        self.sse: dict[str, np.ndarray] = {}
        self.cos: dict[str, float] = {}

    def update(self, target: np.ndarray, **predictions: np.ndarray) -> None:
        """Add a batch: targets (n, dim) and each predictor's (n, dim). Arithmetic stays in the arrays' own
        dtype (float32 features: no float64 copies of every prediction); every sum over tokens is
        accumulated in float64."""
        y = np.asarray(target)
        if not np.issubdtype(y.dtype, np.floating):
            y = y.astype(np.float64)
        if self.shift is None:
            self.shift = y.mean(axis=0, dtype=np.float64)
        yc = y - self.shift.astype(y.dtype)
        self.n += len(y)
        self.sum += yc.sum(axis=0, dtype=np.float64)
        self.sumsq += _column_squares(yc)
        y_norm = _row_norms(y)
        for name, pred in predictions.items():
            p = np.asarray(pred, dtype=y.dtype)
            self.sse[name] = self.sse.get(name, 0.0) + _column_squares(p - y)
            cos = np.einsum("td,td->t", p, y) / np.maximum(_row_norms(p) * y_norm, 1e-30)
            self.cos[name] = self.cos.get(name, 0.0) + float(cos.sum(dtype=np.float64))

    def sst(self) -> np.ndarray:
        """Per-dim total sum of squares around the test mean."""
        return self.sumsq - self.sum**2 / self.n

    def scores(self, name: str) -> dict[str, float]:
        sse, sst = self.sse[name], self.sst()
        with np.errstate(divide="ignore", invalid="ignore"):
            r2_dims = np.where(sst > 0, 1.0 - sse / sst, 0.0)
        return {
            "mse": float(sse.sum() / (self.n * self.dim)),
            "nmse": float(sse.sum() / sst.sum()),
            "r2": float(r2_dims.mean()),
            "cosine": self.cos[name] / self.n,
        }


def _column_squares(a: np.ndarray) -> np.ndarray:
    """Per-column sum of squares, summed over rows in float64."""
    return np.square(a).sum(axis=0, dtype=np.float64)


def _row_norms(a: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("td,td->t", a, a))
