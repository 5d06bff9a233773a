"""Per-layer baselines that give an ESN's score a meaning:

- identity: predict h_{i+1} = h_i (a residual stream changes little per layer);
- mean: predict the training mean of h_{i+1} (nmse ~ 1 by construction);
- linear: a token-wise ridge map h_i -> h_{i+1} (no context at all). Its statistics are the u-block of the
  ESN readout's accumulator: the same training tokens, no second pass over the data.
"""

from __future__ import annotations

import numpy as np

from workloads.esn.ridge import RidgeAccumulator, RidgeSolution, select_ridge


def fit_linear(train: RidgeAccumulator, val: RidgeAccumulator, input_dim: int, ridges) -> RidgeSolution:
    """Ridge h_i -> h_{i+1} on the first ``input_dim`` features (u) of the ESN accumulators; penalty chosen on
    validation, then refitted on train + validation, exactly as the ESN readout is."""
    cols = np.arange(input_dim)
    tr, va = train.subset(cols), val.subset(cols)
    best, _ = select_ridge(tr, va, ridges)
    return tr.merged(va).solve(best.ridge)


def predictions(u: np.ndarray, train_mean: np.ndarray, linear: RidgeSolution) -> dict[str, np.ndarray]:
    return {"identity": u, "mean": np.broadcast_to(train_mean, u.shape), "linear": linear.predict(u)}
