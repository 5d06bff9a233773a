"""Streaming ridge regression: accumulate sufficient statistics batch by batch, solve once.

A readout over T tokens x F features never needs the (T, F) design matrix: X^T X (F x F), X^T Y (F x D),
the column sums and the token count are enough, and they add up over batches. Memory is therefore
O(F^2 + F D), independent of the number of tokens. Sums are kept in float64; each batch's product may be
computed in float32 (numpy's ``X.T @ X`` is a symmetric rank-k BLAS update, ~2x faster than float64).

The intercept is fitted, not penalised (reservoirpy's ``Ridge(fit_bias=True)`` convention): the solve uses
centred statistics. To keep the centring exact with float32 products, every batch is first shifted by a
fixed reference (the first batch's means; the "shifted data" algorithm), so the products hold small
numbers and ``S - n m m^T`` does not cancel catastrophically.

Several penalties are solved from one eigendecomposition of the centred X^T X; a held-out accumulator
scores each of them without keeping its tokens (``select_ridge``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast, overload

import numpy as np

__all__ = ["RidgeAccumulator", "RidgeSolution", "ridge_solve", "select_ridge"]


def ridge_solve(XtX, XtY, ridge):
    """Solve ``(XtX + ridge I) W = XtY`` for every leading index (numpy arrays or torch tensors).

    XtX (..., F, F), XtY (..., F, D), ridge a float or an array broadcastable to the leading dims ``...``.
    Returns W (..., F, D) in the input's type, dtype and device. No intercept handling here: pass centred
    statistics (``RidgeAccumulator.solve`` does) or append a constant feature yourself.
    """
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a project dependency
        torch = None
    if torch is not None and isinstance(XtX, torch.Tensor):
        eye = torch.eye(XtX.shape[-1], dtype=XtX.dtype, device=XtX.device)
        lam = torch.as_tensor(ridge, dtype=XtX.dtype, device=XtX.device)
        A = XtX + lam.reshape((*lam.shape, 1, 1)) * eye
        return torch.linalg.solve(A, torch.as_tensor(XtY, dtype=XtX.dtype, device=XtX.device))
    XtX, XtY = np.asarray(XtX), np.asarray(XtY)
    lam = np.asarray(ridge, dtype=XtX.dtype)
    A = XtX + lam.reshape((*lam.shape, 1, 1)) * np.eye(XtX.shape[-1], dtype=XtX.dtype)
    return np.linalg.solve(A, XtY)


class RidgeSolution:
    """A fitted readout: ``predict(X) = X @ W + b``."""

    def __init__(self, W: np.ndarray, b: np.ndarray, ridge: float):
        self.W, self.b, self.ridge = W, b, float(ridge)

    def predict(self, X):
        """X (..., F) numpy or torch -> (..., D) in X's type/dtype/device."""
        if isinstance(X, np.ndarray):
            return X @ self.W.astype(X.dtype) + self.b.astype(X.dtype)
        import torch

        W = torch.as_tensor(self.W, dtype=X.dtype, device=X.device)
        return X @ W + torch.as_tensor(self.b, dtype=X.dtype, device=X.device)


class RidgeAccumulator:
    """Sufficient statistics of a ridge regression Y ~ X W + b, fed batch by batch.

    Held (float64): n; sx = sum(x - s); sy = sum(y - t); S_xx = sum (x-s)(x-s)^T; S_xy = sum (x-s)(y-t)^T;
    s_yy = sum (y-t)^2 per target dim; s, t = the fixed shifts (the first batch's means).
    ``product_dtype`` is the dtype of each batch's matrix products (float32: fast, float64: exact).
    """

    def __init__(self, n_features: int, n_targets: int, product_dtype=np.float64, device: str | None = None):
        self.F, self.D = int(n_features), int(n_targets)
        self.product_dtype = np.dtype(product_dtype)
        self.n = 0
        # the first batch's means (None until it came); X^T X and X^T Y: numpy, or torch tensors on ``device``
        self.x_shift: Any = None
        self.y_shift: Any = None
        self.Sxx: Any
        self.Sxy: Any
        self.sx = np.zeros(self.F)
        self.sy = np.zeros(self.D)
        self.device = device  # None: numpy; a torch device ("cuda"): X^T X and X^T Y there, float64
        if device is None:
            self.Sxx = np.zeros((self.F, self.F))
            self.Sxy = np.zeros((self.F, self.D))
        else:
            import torch

            self.Sxx = torch.zeros((self.F, self.F), dtype=torch.float64, device=device)
            self.Sxy = torch.zeros((self.F, self.D), dtype=torch.float64, device=device)
        self.syy = np.zeros(self.D)

    # ---------------------------------------------------------------- accumulation
    def update(self, X, Y, mask=None, overwrite_x: bool = False) -> None:
        """Add the tokens of X (..., F) and Y (..., D) (numpy or torch); with ``mask`` (...) bool, only the
        tokens where it is True (padding out). Leading dims are flattened. ``overwrite_x``: X may be
        shifted in place (no copy of the largest array) when it already has the product dtype."""
        X, Y = _numpy(X).reshape(-1, self.F), _numpy(Y).reshape(-1, self.D)
        if mask is not None:
            keep = _numpy(mask).reshape(-1).astype(bool)
            X, Y = X[keep], Y[keep]
        if X.shape[0] == 0:
            return
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"X has {X.shape[0]} tokens, Y has {Y.shape[0]}")
        if self.x_shift is None:
            self.x_shift = X.mean(axis=0, dtype=np.float64)
            self.y_shift = Y.mean(axis=0, dtype=np.float64)
        if self.device is not None:
            self._update_torch(X, Y)
            return
        dt = self.product_dtype
        Xc = X if overwrite_x and X.dtype == dt and X.flags.writeable else X.astype(dt, copy=True)
        Xc -= self.x_shift.astype(dt)
        Yc = Y.astype(dt, copy=True)
        Yc -= self.y_shift.astype(dt)
        self.n += X.shape[0]
        self.sx += Xc.sum(axis=0, dtype=np.float64)
        self.sy += Yc.sum(axis=0, dtype=np.float64)
        self.Sxx += Xc.T @ Xc  # numpy runs a.T @ a as a symmetric rank-k update (syrk)
        self.Sxy += Xc.T @ Yc
        self.syy += np.einsum("td,td->d", Yc, Yc, dtype=np.float64)

    def _update_torch(self, X: np.ndarray, Y: np.ndarray) -> None:
        """The GPU form of `update`: products in float64 (a GPU's float64 is fast enough, and the sums need
        it), added in place (``addmm_``: no F x F temporary)."""
        import torch

        Xc = torch.as_tensor(X, device=self.device).to(torch.float64)
        Xc -= torch.as_tensor(self.x_shift, device=self.device)
        Yc = torch.as_tensor(Y, device=self.device).to(torch.float64)
        Yc -= torch.as_tensor(self.y_shift, device=self.device)
        self.n += X.shape[0]
        self.sx += Xc.sum(0).cpu().numpy()
        self.sy += Yc.sum(0).cpu().numpy()
        self.Sxx.addmm_(Xc.T, Xc)
        self.Sxy.addmm_(Xc.T, Yc)
        self.syy += (Yc * Yc).sum(0).cpu().numpy()

    def merged(self, other: RidgeAccumulator) -> RidgeAccumulator:
        """A new accumulator holding the tokens of both (e.g. train + validation for the final refit)."""
        out = RidgeAccumulator(self.F, self.D, self.product_dtype)
        for acc in (self, other):
            if acc.n == 0:
                continue
            s = acc._shifted_to(
                self.x_shift if self.x_shift is not None else acc.x_shift,
                self.y_shift if self.y_shift is not None else acc.y_shift,
            )
            if out.x_shift is None:
                out.x_shift, out.y_shift = s["x_shift"], s["y_shift"]
            out.n += acc.n
            out.sx += s["sx"]
            out.sy += s["sy"]
            out.Sxx += s["Sxx"]
            out.Sxy += s["Sxy"]
            out.syy += s["syy"]
        return out

    def _shifted_to(self, xs: np.ndarray, ys: np.ndarray) -> dict:
        """The statistics re-expressed around other shifts (exact algebra, no tokens needed)."""
        dx, dy, n = self.x_shift - xs, self.y_shift - ys, self.n  # x - xs = (x - s) + dx
        return {
            "x_shift": xs,
            "y_shift": ys,
            "sx": self.sx + n * dx,
            "sy": self.sy + n * dy,
            "Sxx": self.Sxx + np.outer(self.sx, dx) + np.outer(dx, self.sx) + n * np.outer(dx, dx),
            "Sxy": self.Sxy + np.outer(self.sx, dy) + np.outer(dx, self.sy) + n * np.outer(dx, dy),
            "syy": self.syy + 2 * self.sy * dy + n * dy * dy,
        }

    def copy(self) -> RidgeAccumulator:
        out = self._same_targets(self.F)
        out.device = self.device
        out.x_shift = None if self.x_shift is None else self.x_shift.copy()
        out.sx = self.sx.copy()
        out.Sxx, out.Sxy = (
            (self.Sxx.clone(), self.Sxy.clone()) if self.device is not None else (self.Sxx.copy(), self.Sxy.copy())
        )
        return out

    def subset(self, features) -> RidgeAccumulator:
        """The statistics of a regression on a subset of the features (e.g. the linear baseline on u out
        of the ESN's [u; x]): the same tokens, a sub-block of X^T X, no second pass over the data."""
        idx = np.arange(self.F)[np.asarray(features)]
        out = self._same_targets(len(idx))
        out.x_shift = None if self.x_shift is None else self.x_shift[idx]
        if self.device is not None:  # a sub-block (the linear baseline's u block): small, to numpy
            import torch

            it = torch.as_tensor(idx, device=self.Sxx.device)
            out.sx, out.Sxx, out.Sxy = self.sx[idx], _numpy(self.Sxx[it][:, it]), _numpy(self.Sxy[it])
            return out
        out.sx, out.Sxx, out.Sxy = self.sx[idx], self.Sxx[np.ix_(idx, idx)], self.Sxy[idx]
        return out

    def scaled(self, scale: np.ndarray) -> RidgeAccumulator:
        """The statistics of the features multiplied by ``scale`` (F,): a per-block penalty through the
        one-penalty solver (weights of features scaled by c are penalised as lambda / c^2)."""
        c = np.asarray(scale, dtype=np.float64)
        out = self._same_targets(self.F)
        out.x_shift = None if self.x_shift is None else self.x_shift * c
        out.sx, out.Sxx, out.Sxy = self.sx * c, self.Sxx * np.outer(c, c), self.Sxy * c[:, None]
        return out

    def _same_targets(self, n_features: int) -> RidgeAccumulator:
        """An accumulator of these tokens' target statistics, for ``n_features`` features set by the caller."""
        out = RidgeAccumulator(n_features, self.D, self.product_dtype)
        out.n, out.sy, out.syy, out.y_shift = self.n, self.sy.copy(), self.syy.copy(), self.y_shift
        return out

    # ---------------------------------------------------------------- statistics
    def merged_target_mean(self, other: RidgeAccumulator) -> np.ndarray:
        """The mean target of both accumulators' tokens (no F x F work)."""
        n = self.n + other.n
        return (self.n * self.means()[1] + other.n * other.means()[1]) / n

    def means(self) -> tuple[np.ndarray, np.ndarray]:
        self._check_nonempty()
        return self.x_shift + self.sx / self.n, self.y_shift + self.sy / self.n

    def centred(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centred X^T X, X^T Y and per-dim sum of squares of Y (float64)."""
        self._check_nonempty()
        mx, my = self.sx / self.n, self.sy / self.n
        Cxx = self.Sxx - self.n * np.outer(mx, mx)
        Cxy = self.Sxy - self.n * np.outer(mx, my)
        cyy = self.syy - self.n * my * my
        return (Cxx + Cxx.T) / 2, Cxy, cyy

    def _check_nonempty(self) -> None:
        if self.n == 0:
            raise ValueError("ridge accumulator is empty: no token was added (all masked?)")

    # ---------------------------------------------------------------- solving
    @overload
    def solve(self, ridges: float) -> RidgeSolution: ...

    @overload
    def solve(self, ridges: Sequence[float]) -> list[RidgeSolution]: ...

    def solve(self, ridges: float | Sequence[float]) -> list[RidgeSolution] | RidgeSolution:
        """The readout for each penalty (one eigendecomposition for a list; one solve for a float).
        The penalty applies to the weights, not to the intercept."""
        Cxx, Cxy, _ = self.centred()
        mx, my = self.means()
        if np.isscalar(ridges):  # a float, or a numpy scalar
            ridge = float(cast(float, ridges))
            W = ridge_solve(Cxx, Cxy, ridge)
            return RidgeSolution(W, my - mx @ W, ridge)
        evals, V = np.linalg.eigh(Cxx)
        P = V.T @ Cxy
        out = []
        for lam in cast(Sequence[float], ridges):
            W = V @ (P / (evals + lam)[:, None])
            out.append(RidgeSolution(W, my - mx @ W, float(lam)))
        return out

    def sse(self, sol: RidgeSolution) -> float:
        """Sum over this accumulator's tokens of ||y - x W - b||^2, from the statistics alone."""
        self._check_nonempty()
        W = sol.W
        c = self.y_shift - self.x_shift @ W - sol.b  # residual = (y-t) - (x-s) W + c
        if self.device is not None:  # the F x F product where the statistics are
            import torch

            Wt = torch.as_tensor(W, dtype=torch.float64, device=self.Sxx.device)
            quad = float((Wt * (self.Sxx @ Wt)).sum())
            cross = float((Wt * self.Sxy).sum())
        else:
            quad = np.einsum("fd,fd->", W, self.Sxx @ W)
            cross = np.einsum("fd,fd->", W, self.Sxy)
        base = self.syy.sum() - 2 * cross + quad
        lin = 2 * c @ (self.sy - self.sx @ W)
        return float(base + lin + self.n * c @ c)

    def objective(self, sol: RidgeSolution) -> float:
        """The ridge training objective on this data: SSE + ridge * ||W||_F^2 (intercept unpenalised)."""
        return self.sse(sol) + sol.ridge * float(np.sum(sol.W * sol.W))


def select_ridge(
    train: RidgeAccumulator, val: RidgeAccumulator, ridges: Sequence[float]
) -> tuple[RidgeSolution, dict[float, float]]:
    """Fit on ``train`` for every penalty (one eigendecomposition), score each on ``val`` (MSE per token
    and target dim, from statistics): returns the best train solution and the scores."""
    sols = train.solve(list(ridges))
    scores = {s.ridge: val.sse(s) / (val.n * val.D) for s in sols}
    best = min(sols, key=lambda s: (scores[s.ridge], -s.ridge))  # ties: the larger penalty
    return best, scores


def _numpy(a) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    return np.asarray(a)


# ---------------------------------------------------------------------------------------------------------
# The memory-lean selection and refit: at most 4 F x F float64 matrices at once (the train and validation
# statistics, one working matrix and its eigenvectors), where `select_ridge` + `merged` + `scaled` hold up to
# ~12 (measured: 35-45 GB at F = 20,768). Same arithmetic up to rounding (tested against them).

_ROWS = 1024  # rows per chunk of a rank-1 update: a (chunk, F) temporary instead of an (F, F) one


def _is_torch(a) -> bool:
    return type(a).__module__.startswith("torch")


def _centred_scaled(acc: RidgeAccumulator, scale: np.ndarray, out=None):
    """(Sxx - n mx mx^T) * c c^T into ``out`` (a new F x F matrix when None): the centred, scaled X^T X, with
    no F x F temporary."""
    mx = acc.sx / acc.n
    S = acc.Sxx
    if _is_torch(S):
        import torch

        mx_t = torch.as_tensor(mx, device=S.device)
        c = torch.as_tensor(scale, dtype=S.dtype, device=S.device)
        out = S.clone() if out is None else out.copy_(S)
        for a in range(0, acc.F, _ROWS):
            out[a : a + _ROWS] -= acc.n * mx_t[a : a + _ROWS, None] * mx_t[None, :]
        out *= c[:, None]
        out *= c[None, :]
        return out
    if out is None:
        out = np.array(S, copy=True)
    elif out is not S:
        np.copyto(out, S)
    for a in range(0, acc.F, _ROWS):
        out[a : a + _ROWS] -= acc.n * mx[a : a + _ROWS, None] * mx[None, :]
    out *= scale[:, None]
    out *= scale[None, :]
    return out


def _centred_xy(acc: RidgeAccumulator) -> np.ndarray:
    mx, my = acc.sx / acc.n, acc.sy / acc.n
    return _numpy(acc.Sxy) - acc.n * np.outer(mx, my)


def _eigh(C):
    """Eigenvalues and eigenvectors of the symmetric ``C``, which may be overwritten (numpy: LAPACK's dsyevr
    on C in place, O(F) workspace; dsyevd, numpy's own, needs 2 F^2 more)."""
    if _is_torch(C):
        import torch

        return torch.linalg.eigh(C)
    from scipy.linalg import eigh

    return eigh(C, overwrite_a=True, check_finite=False, driver="evr")


CHOLESKY_RIDGES = 12  # up to this many ridges per scale, one Cholesky per ridge beats one eigendecomposition


def select_and_refit(
    train: RidgeAccumulator, val: RidgeAccumulator, ridges: Sequence[float], scales: Sequence[np.ndarray]
) -> tuple[RidgeSolution, np.ndarray, dict[float, float]]:
    """The readout with the best (scale, ridge) on validation, refitted on train + validation.

    For each ``scales`` vector c (per feature; the solve is on features x c, i.e. weights penalised as
    ridge / c^2), every ridge's solution on train is scored on ``val`` from its statistics. Up to
    CHOLESKY_RIDGES ridges, each is one Cholesky solve of train's centred scaled X^T X + ridge I (F^3 / 3
    flops: at F = 2,769 a factor and solve took 0.34 s where LAPACK's eigendecomposition took 3.4 s, 2 AVX2
    cores); beyond, one eigendecomposition per scale serves every ridge. Returns (the refitted readout on the
    unscaled features, the chosen c, the chosen c's validation scores; a ridge whose matrix is not positive
    definite scores inf). The refit merges val into train IN PLACE: both accumulators are spent (their
    statistics are no longer valid)."""
    if len(ridges) == 1 and len(scales) == 1:  # nothing to choose: no selection solve, only the refit
        merge_into(train, val)
        c = np.asarray(scales[0], dtype=np.float64)
        return solve_in_place(train, float(ridges[0]), c), c, {}
    best: tuple[float, float, int] | None = None  # (score, -ridge, scale index)
    best_scores: dict[float, float] = {}
    work = None  # the one working F x F matrix, refilled for every solve
    for k, c in enumerate(scales):
        c = np.asarray(c, dtype=np.float64)
        Cxy = _centred_xy(train) * c[:, None]
        mx, my = train.means()

        # Ws: the solution on the scaled features; this scale's c, mx, my bound now (the loop moves on)
        def val_score(Ws, lam: float, c=c, mx=mx, my=my) -> float:
            W = _numpy(Ws) * c[:, None]
            return val.sse(RidgeSolution(W, my - mx @ W, lam)) / (val.n * val.D)

        scores = {}
        if len(ridges) <= CHOLESKY_RIDGES:
            for lam in ridges:
                work = _centred_scaled(train, c, out=work)
                Ws = _factor_solve(work, Cxy, float(lam))
                scores[float(lam)] = float("inf") if Ws is None else val_score(Ws, lam)
        else:
            work = _centred_scaled(train, c, out=work)
            evals, V = _eigh(work)  # destroys work on CPU
            if _is_torch(V):
                import torch

                P = V.T @ torch.as_tensor(Cxy, device=V.device)
            else:
                P = V.T @ Cxy
            for lam in ridges:
                scores[float(lam)] = val_score(V @ (P / (evals + lam)[:, None]), lam)
            del V, P
        lam_k = min(scores, key=lambda r: (scores[r], -r))  # ties: the larger penalty
        key = (scores[lam_k], -lam_k, k)
        if best is None or key < best:
            best, best_scores = key, scores
    assert best is not None
    if not np.isfinite(best[0]):
        raise np.linalg.LinAlgError(
            "no ridge of the grid gives a positive definite X^T X + ridge I: add a larger ridge"
        )
    del work
    ridge, c = -best[1], np.asarray(scales[best[2]], dtype=np.float64)
    merge_into(train, val)
    return solve_in_place(train, ridge, c), c, best_scores


def _factor_solve(C, Cxy: np.ndarray, ridge: float) -> np.ndarray | None:
    """(C + ridge I)^-1 Cxy by Cholesky, overwriting C (numpy: in place; torch: its factor is a second
    matrix); None when C + ridge I is not positive definite."""
    if _is_torch(C):
        import torch

        C.diagonal().add_(ridge)
        L, info = torch.linalg.cholesky_ex(C)
        if int(info):
            return None
        out = _numpy(torch.cholesky_solve(torch.as_tensor(Cxy, device=C.device), L))
        del L
        return out
    from scipy.linalg import LinAlgError, cho_factor, cho_solve

    C.flat[:: C.shape[0] + 1] += ridge
    try:
        factor = cho_factor(C, lower=True, overwrite_a=True, check_finite=False)
    except LinAlgError:
        return None
    return cho_solve(factor, Cxy, check_finite=False)


def merge_into(acc: RidgeAccumulator, other: RidgeAccumulator) -> None:
    """``acc`` += ``other`` (its tokens added), in place and without an F x F temporary: both are re-centred
    on their own means, added, and the between-means term added (Chan et al.'s pairwise update); ``acc``
    then holds centred statistics (shifts = the merged means, sx = 0). ``other`` is left centred too."""
    for part in (acc, other):
        _centre_in_place(part)
    n1, n2 = acc.n, other.n
    n = n1 + n2
    assert acc.x_shift is not None and other.x_shift is not None  # both centred: shifts = their means
    assert acc.y_shift is not None and other.y_shift is not None
    dx, dy = other.x_shift - acc.x_shift, other.y_shift - acc.y_shift
    f = n1 * n2 / n
    S, So = acc.Sxx, other.Sxx
    torch_stats = _is_torch(S)
    if torch_stats:
        import torch

        dxt = torch.as_tensor(dx, device=S.device)
    for a in range(0, acc.F, _ROWS):
        S[a : a + _ROWS] += So[a : a + _ROWS]
        if torch_stats:
            S[a : a + _ROWS] += f * dxt[a : a + _ROWS, None] * dxt[None, :]
        else:
            S[a : a + _ROWS] += f * dx[a : a + _ROWS, None] * dx[None, :]
    Sxy = (
        acc.Sxy + other.Sxy + f * np.outer(dx, dy)
        if not torch_stats
        else acc.Sxy + other.Sxy + f * torch.as_tensor(np.outer(dx, dy), device=S.device)
    )
    acc.Sxy = Sxy
    acc.syy = acc.syy + other.syy + f * dy * dy
    acc.x_shift = acc.x_shift + dx * n2 / n
    acc.y_shift = acc.y_shift + dy * n2 / n
    acc.n = n


def _centre_in_place(acc: RidgeAccumulator) -> None:
    """Re-express the statistics around the accumulator's own means (sx = sy = 0), in place."""
    mx, my = acc.sx / acc.n, acc.sy / acc.n
    S = acc.Sxx
    if _is_torch(S):
        import torch

        mxt = torch.as_tensor(mx, device=S.device)
        for a in range(0, acc.F, _ROWS):
            S[a : a + _ROWS] -= acc.n * mxt[a : a + _ROWS, None] * mxt[None, :]
        acc.Sxy = acc.Sxy - acc.n * torch.as_tensor(np.outer(mx, my), device=S.device)
    else:
        for a in range(0, acc.F, _ROWS):
            S[a : a + _ROWS] -= acc.n * mx[a : a + _ROWS, None] * mx[None, :]
        acc.Sxy = acc.Sxy - acc.n * np.outer(mx, my)
    acc.syy = acc.syy - acc.n * my * my
    acc.x_shift, acc.y_shift = acc.x_shift + mx, acc.y_shift + my
    acc.sx, acc.sy = np.zeros(acc.F), np.zeros(acc.D)


def solve_in_place(acc: RidgeAccumulator, ridge: float, scale: np.ndarray) -> RidgeSolution:
    """The readout for one penalty on the features scaled by ``scale``, mapped back to the unscaled ones.
    Overwrites ``acc``'s X^T X with its Cholesky factor (no second F x F matrix)."""
    C = _centred_scaled(acc, scale, out=acc.Sxx)
    Ws = _factor_solve(C, _centred_xy(acc) * scale[:, None], ridge)
    if Ws is None:
        raise np.linalg.LinAlgError(f"X^T X + {ridge:g} I is not positive definite: use a larger ridge")
    W = Ws * scale[:, None]
    mx, my = acc.means()
    acc.n = 0  # spent: its X^T X holds the factor now (an empty accumulator refuses to be solved again)
    return RidgeSolution(W, my - mx @ W, ridge)
