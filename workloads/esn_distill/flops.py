"""The arithmetic of a run, counted from its shapes: how many floating-point operations the teacher forward and
each layer's fit execute (a multiply-add = 2), split by the precision they run in.

Divided by this host's measured matrix-product peak it is the run's floor: no implementation that executes
these operations on the same cores can be faster. ``benchmarks/esn_distill_e2e.py`` prints it beside the wall time,
which tells a speed target that the hardware cannot meet from one the code misses.

What is counted, per layer (F = hidden + units x directions readout features, D = hidden targets):
- features, for every token stepped: the train and validation tokens (statistics), the test tokens twice (the
  scores, the chained pass): the input drive W_in u (dense, as computed) and the recurrence W x (its non-zeros:
  a sparse W steps as CSR on CPU);
- readout statistics on the train + validation tokens: X^T X (a symmetric rank-k update, n F^2) and X^T Y;
- predictions of the test tokens (ESN, linear baseline, chained pass), and with ``train_on: chained`` the
  fitted layer's features and predictions on every token (the next layer's inputs);
- float64: per (state scale, ridge) a Cholesky factor (F^3 / 3), its solve (2 F^2 D) and the validation score
  (2 F^2 D), then the refit. The linear baseline's hidden-wide solves (< 1 %) are left out.
Padding, elementwise work (tanh, layer norms, GELU) and memory traffic are not counted: a floor, not a model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from workloads.esn.reservoir import sparse_enough
from workloads.esn_distill.distill import DIRECTIONS


@dataclass
class Flops:
    float32: float = 0.0
    float64: float = 0.0

    def seconds(self, peak32: float, peak64: float) -> float:
        """The time at these peaks (flop/s) of float32 and float64 matrix products."""
        return self.float32 / peak32 + self.float64 / peak64


def teacher(lengths: Sequence[int], n_layers: int, hidden: int, intermediate: int) -> Flops:
    """A BERT forward over samples of these lengths (no padding): per layer and token the Q, K, V and output
    projections (4 H^2 multiply-adds) and the feed-forward (2 H I); per sample and layer the attention
    products QK^T and AV (2 L^2 H); the pooler (H^2 per sample)."""
    tokens = float(sum(lengths))
    squares = float(sum(int(L) ** 2 for L in lengths))
    per_layer = tokens * (4 * hidden**2 + 2 * hidden * intermediate) + squares * 2 * hidden
    return Flops(float32=2 * (n_layers * per_layer + len(lengths) * hidden**2))


def layer(
    esn, hidden: int, n_fit: int, n_test: int, n_candidates: int, chained: bool = True, n_student: int = 0
) -> Flops:
    """One layer's fit and scores. ``esn``: ESNParams; ``n_fit``: train + validation tokens; ``n_test``: test
    tokens; ``n_candidates``: (state scale, ridge) pairs scored on validation (0 when there is nothing to
    choose); ``n_student``: tokens the fitted layer is run on besides (``train_on: chained``: all of them)."""
    d = len(DIRECTIONS[esn.direction])
    F, D, U = hidden + esn.units * d, hidden, esn.units
    recurrent = esn.connectivity * U * U if sparse_enough(U, esn.connectivity) else U * U
    per_token_features = 2 * d * (hidden * U + recurrent)
    stepped = n_fit + n_test * (2 if chained else 1) + n_student
    statistics = n_fit * F * F + 2 * n_fit * F * D
    predictions = 2 * n_test * (F * D + hidden * D) + 2 * (n_test * chained + n_student) * F * D
    S = F if esn.readout_input else F - hidden  # the columns the readout is solved on
    solve = S**3 / 3 + 2 * S * S * D
    return Flops(
        float32=stepped * per_token_features + statistics + predictions,
        float64=n_candidates * (solve + 2 * S * S * D) + solve,
    )


def run(
    params, lengths_by_split: dict[str, Sequence[int]], n_layers: int, hidden: int, intermediate: int
) -> dict[str, Flops]:
    """The teacher forward and one layer's work of an esn_distill run (``params``: its Params); the run
    does ``n_layers`` such layers."""
    ep = params.esn
    n = {split: int(sum(lengths)) for split, lengths in lengths_by_split.items()}
    all_lengths = [L for lengths in lengths_by_split.values() for L in lengths]
    candidates = len(ep.ridges) * len(ep.state_scales)
    per_layer = layer(
        ep,
        hidden,
        n["train"] + n["val"],
        n["test"],
        candidates if candidates > 1 else 0,
        params.chained,
        sum(n.values()) if params.train_on == "chained" else 0,
    )
    return {"teacher": teacher(all_lengths, n_layers, hidden, intermediate), "per_layer": per_layer}
