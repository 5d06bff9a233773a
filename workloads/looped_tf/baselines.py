"""The classical in-context learners a trained transformer is compared with (Garg et al. 2022).

Each takes a batch of prompts (xs (B, n, d), ys (B, n)) and returns the prediction for every point from
the points before it only: (B, n), with prediction 0 for the first point (nothing seen yet). Computed in
float64 so the least squares curve matches its analytic expectation to many digits."""

from __future__ import annotations

import torch


def least_squares(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Minimum-norm least squares on the first k points, k = 0 .. n-1. For k < d it interpolates with
    the smallest w (pinv), which is the Bayes-optimal answer for w ~ N(0, I) without noise."""
    xs, ys = xs.double(), ys.double()
    preds = torch.zeros_like(ys)
    for k in range(1, ys.shape[1]):
        w = torch.linalg.pinv(xs[:, :k]) @ ys[:, :k, None]  # (B, d, 1)
        preds[:, k] = (xs[:, k : k + 1] @ w)[:, 0, 0]
    return preds


def nearest_neighbours(xs: torch.Tensor, ys: torch.Tensor, n_neighbours: int = 3) -> torch.Tensor:
    """Mean label of the ``n_neighbours`` closest earlier points (all of them while fewer exist)."""
    xs, ys = xs.double(), ys.double()
    preds = torch.zeros_like(ys)
    for k in range(1, ys.shape[1]):
        dist = (xs[:, :k] - xs[:, k : k + 1]).square().sum(-1)  # (B, k)
        nearest = dist.topk(min(k, n_neighbours), dim=1, largest=False).indices
        preds[:, k] = ys[:, :k].gather(1, nearest).mean(1)
    return preds


def averaging(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """w_hat = mean of x_i y_i over the earlier points (one step of gradient descent from w = 0)."""
    xs, ys = xs.double(), ys.double()
    sums = torch.cumsum(xs * ys[..., None], dim=1)  # sums[:, i] = sum_{j <= i} x_j y_j
    counts = torch.arange(1, ys.shape[1] + 1, dtype=xs.dtype)
    w_hat = sums / counts[None, :, None]
    preds = torch.zeros_like(ys)
    preds[:, 1:] = (xs[:, 1:] * w_hat[:, :-1]).sum(-1)  # point k uses the mean over points 0 .. k-1
    return preds


BASELINES = {"ls": least_squares, "knn": nearest_neighbours, "avg": averaging}
