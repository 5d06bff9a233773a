"""One layer of Reservoir BERT: an ESN driven token by token by hidden_states[i] (state reset per sequence),
a streamed ridge readout on [u_t; x_t; 1] predicting hidden_states[i+1][t], scored on held-out tokens
beside the baselines, and the chained pass (fed with the previous ESN's prediction instead of the teacher's).

Nothing here holds tokens x units: features are built per batch of samples, folded into the readout's
statistics (workloads/esn/ridge.py) and dropped."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from workloads.esn.reservoir import esn_states, random_reservoir
from workloads.esn.ridge import RidgeAccumulator, RidgeSolution, select_and_refit
from workloads.esn_distill import baselines
from workloads.esn_distill.data import Corpus
from workloads.esn_distill.metrics import ScoreAccumulator
from workloads.esn_distill.teacher import batches

DIRECTIONS = {"forward": ("forward",), "backward": ("backward",), "both": ("forward", "backward")}


class Scratch:
    """Large arrays reused from batch to batch (and layer to layer) instead of allocated afresh: every fresh
    array of hundreds of MB is page-faulted in again, measured here at ~1 s per GB on a VM whose memory is
    reclaimed in the background (kdamond), several seconds per layer."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def array(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        """A C-contiguous array of this shape and dtype (contents undefined), valid until the next call
        with this name."""
        size, dtype = math.prod(shape), np.dtype(dtype)
        a = self._arrays.get(name)
        if a is None or a.size < size or a.dtype != dtype:
            a = self._arrays[name] = np.empty(size, dtype=dtype)
        return a[:size].reshape(shape)


@dataclass
class LayerReservoirs:
    """The fixed part of layer i's ESN: one reservoir per direction, and the input standardisation."""

    mats: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # direction -> (W, W_in, bias)
    leak: float
    mu: np.ndarray  # per-dim train mean / std of h_i: BERT's hidden states have a few outlier dims
    sd: np.ndarray
    scratch: Scratch

    @property
    def units(self) -> int:
        return sum(W.shape[0] for W, _, _ in self.mats.values())

    def n_fixed_params(self) -> int:
        return int(sum(int((m != 0).sum()) for mats in self.mats.values() for m in mats))

    def features(self, u: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """u: the real tokens (n, D) of consecutive samples with these lengths -> [u; x_fwd; x_bwd] (n, F),
        a scratch array: valid until the next call.

        Padded (B, T) batches go through the engine. Tokens move between the flat (n, .) layout and the
        padded one by one slice copy per sample (a backward reservoir reads its sample reversed within its
        own length, padding left at the end): no index arrays, no torch elementwise kernel (whose threads
        would contend with BLAS's on CPU)."""
        W0 = next(iter(self.mats.values()))[0]
        B, T, D = len(lengths), int(lengths.max()), u.shape[1]
        spans = [(int(a), int(a + L), int(L)) for a, L in zip(np.cumsum(lengths) - lengths, lengths, strict=False)]
        z = (u - self.mu) / self.sd
        out_dtype = np.float64 if W0.dtype == torch.float64 else np.float32
        X = self.scratch.array("features", (len(u), D + self.units), out_dtype)
        X[:, :D] = u
        col = D
        for direction, (W, W_in, bias) in self.mats.items():
            reverse = direction == "backward"
            padded = self.scratch.array("inputs", (B, T, D), np.float32)
            padded.fill(0.0)
            for b, (a, e, L) in enumerate(spans):
                padded[b, :L] = z[e - 1 : None if a == 0 else a - 1 : -1] if reverse else z[a:e]
            inputs = torch.from_numpy(padded).to(W0.device, W0.dtype)
            if W0.device.type == "cpu":
                states_t = torch.from_numpy(self.scratch.array("states", (B, T, W.shape[0]), out_dtype))
                states = esn_states(W, W_in, inputs, self.leak, bias, out=states_t).numpy()
            else:
                states = esn_states(W, W_in, inputs, self.leak, bias).cpu().numpy()
            block = X[:, col : col + W.shape[0]]
            for b, (a, e, L) in enumerate(spans):
                block[a:e] = states[b, L - 1 :: -1] if reverse else states[b, :L]
            col += W.shape[0]
        return X


ARPACK_FROM_UNITS = 2001  # radius "auto": reservoirpy's own (bit-identical) below, the fast estimate from here


def radius_method(esn) -> str:
    if esn.radius != "auto":
        return esn.radius
    return "arpack" if esn.units >= ARPACK_FROM_UNITS else "reservoirpy"


def build_reservoirs(
    esn,
    layer: int,
    seed: int,
    input_dim: int,
    mu: np.ndarray,
    sd: np.ndarray,
    device: str,
    scratch: Scratch | None = None,
) -> LayerReservoirs:
    """Layer ``layer``'s reservoirs, drawn with reservoirpy's initialisers from (seed, layer, direction)."""
    dtype = torch.float64 if esn.dtype == "float64" else torch.float32
    mats = {}
    for k, direction in enumerate(DIRECTIONS[esn.direction]):
        sub_seed = int(np.random.SeedSequence([seed, layer, k]).generate_state(1)[0])
        W, W_in, bias = random_reservoir(
            esn.units,
            input_dim,
            esn.sr,
            esn.input_scaling,
            esn.connectivity,
            esn.input_connectivity,
            sub_seed,
            bias_scaling=esn.bias_scaling,
            radius=radius_method(esn),
        )
        W_t, W_in_t, bias_t = (torch.as_tensor(m, dtype=dtype, device=device) for m in (W, W_in, bias))
        mats[direction] = (W_t, W_in_t, bias_t)
    return LayerReservoirs(mats, esn.leak, mu.astype(np.float32), sd.astype(np.float32), scratch or Scratch())


def feature_batches(
    res: LayerReservoirs, H: np.ndarray, base: int, corpus: Corpus, split: str, batch_tokens: int
) -> Iterator[tuple[np.ndarray, int, int]]:
    """(features, t0, t1) per batch of samples of ``split``; ``H`` row j holds token ``base + j``."""
    lengths, offsets = corpus.lengths, corpus.offsets
    first, end = corpus.bounds[split]
    for a, b in batches(lengths, first, end, batch_tokens):
        t0, t1 = int(offsets[a]), int(offsets[b])
        yield res.features(H[t0 - base : t1 - base], lengths[a:b]), t0, t1


def accumulate(
    res: LayerReservoirs, H_in: np.ndarray, H_out: np.ndarray, corpus: Corpus, batch_tokens: int, product_dtype
) -> dict[str, RidgeAccumulator]:
    """Readout statistics of the train and validation tokens."""
    D, F = H_out.shape[1], H_in.shape[1] + res.units
    accs = {}
    W0 = next(iter(res.mats.values()))[0]
    # On a GPU the statistics stay there (float64), and so does the solve (ridge.select_and_refit).
    stats_device = str(W0.device) if W0.device.type == "cuda" else None
    for split in ("train", "val"):
        acc = RidgeAccumulator(F, D, product_dtype, device=stats_device)
        for X, t0, t1 in feature_batches(res, H_in, 0, corpus, split, batch_tokens):
            acc.update(X, H_out[t0:t1], overwrite_x=True)  # the batch's features are not used again
        accs[split] = acc
    return accs


@dataclass
class LayerFit:
    esn: RidgeSolution
    linear: RidgeSolution
    target_mean: np.ndarray
    val_scores: dict[float, float]
    state_scale: float = 1.0


def fit_layer(
    accs: dict[str, RidgeAccumulator],
    input_dim: int,
    ridges,
    state_scales=(1.0,),
    readout_input: bool = True,
    consume: bool = False,
) -> LayerFit:
    """Penalty chosen on validation (a Cholesky solve per (scale, ridge)), then refitted on train + val
    (`workloads/esn/ridge.py: select_and_refit`, at most 4 F x F matrices).

    With several ``state_scales`` c, the reservoir-state columns are scaled by c before the solve (their
    weights penalised as ridge / c^2, the input's as ridge): the best (scale, ridge) on validation wins. A
    small c lets the readout fall back toward the linear map.
    ``readout_input=False``: the readout sees the states alone (reservoirpy's ``Reservoir >> Ridge``); its
    weights on u are zero (the returned W still spans [u; x], so predictions take the same features).
    ``consume``: the accumulators may be spent by the refit (the run's case: no copy of F x F statistics);
    otherwise they are copied first and stay usable."""
    F = accs["train"].F
    # The linear baseline and the target mean first: the refit below merges the statistics in place.
    linear = baselines.fit_linear(accs["train"], accs["val"], input_dim, ridges)
    target_mean = accs["train"].merged_target_mean(accs["val"])
    if readout_input:
        cols = np.arange(F)
        train, val = (accs["train"], accs["val"]) if consume else (accs["train"].copy(), accs["val"].copy())
    else:
        cols = np.arange(input_dim, F)
        train, val = accs["train"].subset(cols), accs["val"].subset(cols)
    n_input = input_dim if readout_input else 0  # leading columns of ``train`` that are u
    scales = []
    for c in state_scales:
        scale = np.ones(len(cols))
        scale[n_input:] = c
        scales.append(scale)
    fit, best_scale, best_scores = select_and_refit(train, val, ridges, scales)
    W = np.zeros((F, fit.W.shape[1]))
    W[cols] = fit.W
    esn = RidgeSolution(W, fit.b, fit.ridge)
    return LayerFit(esn, linear, target_mean, best_scores, float(best_scale[-1]))


def score_layer(
    res: LayerReservoirs, fit: LayerFit, H_in: np.ndarray, H_out: np.ndarray, corpus: Corpus, batch_tokens: int
) -> dict[str, float]:
    """ESN and baselines on the held-out tokens (teacher inputs)."""
    D = H_in.shape[1]
    sc = ScoreAccumulator(H_out.shape[1])
    for X, t0, t1 in feature_batches(res, H_in, 0, corpus, "test", batch_tokens):
        sc.update(H_out[t0:t1], esn=fit.esn.predict(X), **baselines.predictions(X[:, :D], fit.target_mean, fit.linear))
    row = sc.scores("esn")
    for name in ("identity", "mean", "linear"):
        row[f"baseline_{name}_nmse"] = sc.scores(name)["nmse"]
        row[f"baseline_{name}_mse"] = sc.scores(name)["mse"]  # the lab reports raw MSE
    row["baseline_linear_r2"] = sc.scores("linear")["r2"]
    return row
