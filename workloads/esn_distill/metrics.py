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
        y = np.asarray(target, dtype=np.float64)
        if self.shift is None:
            self.shift = y.mean(axis=0)
        yc = y - self.shift
        self.n += len(y)
        self.sum += yc.sum(axis=0)
        self.sumsq += np.einsum("td,td->d", yc, yc)
        y_norm = np.linalg.norm(y, axis=1)
        for name, pred in predictions.items():
            p = np.asarray(pred, dtype=np.float64)
            err = p - y
            self.sse[name] = self.sse.get(name, 0.0) + np.einsum("td,td->d", err, err)
            cos = np.einsum("td,td->t", p, y) / np.maximum(np.linalg.norm(p, axis=1) * y_norm, 1e-30)
            self.cos[name] = self.cos.get(name, 0.0) + float(cos.sum())

    def sst(self) -> np.ndarray:
        """Per-dim total sum of squares around the test mean."""
        return self.sumsq - self.sum ** 2 / self.n

    def scores(self, name: str) -> dict[str, float]:
        sse, sst = self.sse[name], self.sst()
        with np.errstate(divide="ignore", invalid="ignore"):
            r2_dims = np.where(sst > 0, 1.0 - sse / sst, 0.0)
        return {"mse": float(sse.sum() / (self.n * self.dim)),
                "nmse": float(sse.sum() / sst.sum()),
                "r2": float(r2_dims.mean()),
                "cosine": self.cos[name] / self.n}
