"""Streaming ridge (workloads/esn/ridge.py) against direct solves on the full design matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workloads.esn.ridge import RidgeAccumulator, ridge_solve, select_ridge


def direct(X: np.ndarray, Y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge with an unpenalised intercept, solved on [X, 1] in one go."""
    Xa = np.hstack([X, np.ones((len(X), 1))])
    P = lam * np.eye(Xa.shape[1])
    P[-1, -1] = 0.0
    w = np.linalg.solve(Xa.T @ Xa + P, Xa.T @ Y)
    return w[:-1], w[-1]


def data(rng, n=600, f=7, d=3, offset=5.0):
    X = rng.normal(size=(n, f)) * rng.uniform(0.5, 3, size=f) + offset  # far from centred on purpose
    Y = X @ rng.normal(size=(f, d)) + 0.3 * rng.normal(size=(n, d)) - 2.0
    return X, Y


def feed(X, Y, batch, mask=None, dtype=np.float64, F=None) -> RidgeAccumulator:
    acc = RidgeAccumulator(F or X.shape[-1], Y.shape[-1], product_dtype=dtype)
    for i in range(0, len(X), batch):
        acc.update(X[i : i + batch], Y[i : i + batch], None if mask is None else mask[i : i + batch])
    return acc


def test_streaming_masked_equals_direct_solve():
    rng = np.random.default_rng(0)
    X, Y = data(rng)
    mask = rng.random(len(X)) > 0.3
    # Padding rows hold garbage that must not leak into the fit.
    Xp, Yp = X.copy(), Y.copy()
    Xp[~mask], Yp[~mask] = 1e6, -1e6
    acc = feed(Xp.reshape(50, 12, -1), Yp.reshape(50, 12, -1), 7, mask.reshape(50, 12))
    assert acc.n == mask.sum()
    for lam in (0.0, 0.1, 10.0):
        W, b = direct(X[mask], Y[mask], lam)
        sol = acc.solve(lam)
        np.testing.assert_allclose(sol.W, W, rtol=1e-8, atol=1e-9)
        np.testing.assert_allclose(sol.b, b, rtol=1e-8, atol=1e-9)


def test_penalty_list_from_one_eigendecomposition_equals_single_solves():
    rng = np.random.default_rng(1)
    X, Y = data(rng)
    acc = feed(X, Y, 64)
    ridges = [1e-3, 1e-1, 1.0, 100.0]
    for sol, lam in zip(acc.solve(ridges), ridges, strict=False):
        W, b = direct(X, Y, lam)
        np.testing.assert_allclose(sol.W, W, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(sol.b, b, rtol=1e-7, atol=1e-9)
        assert sol.ridge == lam


def test_sse_objective_and_validation_selection_from_statistics():
    rng = np.random.default_rng(2)
    X, Y = data(rng, n=900, f=30)
    tr, va = feed(X[:300], Y[:300], 50), feed(X[300:], Y[300:], 77)
    ridges = [1e-4, 1e-2, 1.0, 1e2, 1e4]
    best, scores = select_ridge(tr, va, ridges)
    direct_scores = {}
    for lam in ridges:
        W, b = direct(X[:300], Y[:300], lam)
        direct_scores[lam] = np.mean((X[300:] @ W + b - Y[300:]) ** 2)
        sol = tr.solve(lam)
        sse_train = np.sum((X[:300] @ W + b - Y[:300]) ** 2)
        assert tr.sse(sol) == pytest.approx(sse_train, rel=1e-8)
        assert tr.objective(sol) == pytest.approx(sse_train + lam * np.sum(W**2), rel=1e-8)
        assert scores[lam] == pytest.approx(direct_scores[lam], rel=1e-8)
    assert best.ridge == min(direct_scores, key=direct_scores.get)


def test_merge_and_subset_equal_accumulating_directly():
    rng = np.random.default_rng(3)
    X, Y = data(rng)
    a, b = feed(X[:200], Y[:200] + 10, 40), feed(X[200:] * 2, Y[200:], 33)  # different shifts
    whole = feed(np.vstack([X[:200], X[200:] * 2]), np.vstack([Y[:200] + 10, Y[200:]]), 100)
    m = a.merged(b)
    for lam in (0.0, 3.0):
        np.testing.assert_allclose(m.solve(lam).W, whole.solve(lam).W, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(m.solve(lam).b, whole.solve(lam).b, rtol=1e-8, atol=1e-10)
    assert m.sse(m.solve(1.0)) == pytest.approx(whole.sse(whole.solve(1.0)), rel=1e-9)
    cols = np.array([0, 2, 5])
    sub = feed(X[:, cols], Y, 64)
    np.testing.assert_allclose(feed(X, Y, 64).subset(cols).solve(0.5).W, sub.solve(0.5).W, rtol=1e-9)


def test_float32_products_stay_accurate_on_offset_data():
    rng = np.random.default_rng(4)
    X, Y = data(rng, n=20000, f=40, offset=300.0)  # float32 X^T X without the shift would lose ~all digits
    W64 = feed(X, Y, 4096).solve(1.0).W
    W32 = feed(X.astype(np.float32), Y.astype(np.float32), 4096, dtype=np.float32).solve(1.0).W
    assert np.max(np.abs(W32 - W64)) / np.max(np.abs(W64)) < 1e-4


def test_ridge_solve_batched_numpy_and_torch():
    rng = np.random.default_rng(5)
    A = rng.normal(size=(3, 4, 6, 6))
    XtX = A @ np.swapaxes(A, -1, -2)
    XtY = rng.normal(size=(3, 4, 6, 2))
    lam = rng.uniform(0.1, 1, size=(3, 4))
    W = ridge_solve(XtX, XtY, lam)
    Wt = ridge_solve(torch.from_numpy(XtX), torch.from_numpy(XtY), torch.from_numpy(lam))
    assert isinstance(Wt, torch.Tensor) and Wt.shape == (3, 4, 6, 2)
    for i in range(3):
        for j in range(4):
            ref = np.linalg.solve(XtX[i, j] + lam[i, j] * np.eye(6), XtY[i, j])
            np.testing.assert_allclose(W[i, j], ref, rtol=1e-10)
            np.testing.assert_allclose(Wt[i, j].numpy(), ref, rtol=1e-10)
    np.testing.assert_allclose(
        ridge_solve(XtX[0, 0], XtY[0, 0], 0.5), np.linalg.solve(XtX[0, 0] + 0.5 * np.eye(6), XtY[0, 0]), rtol=1e-10
    )


def test_matches_reservoirpy_ridge():
    from reservoirpy.nodes import Ridge

    rng = np.random.default_rng(6)
    X, Y = data(rng, n=300, f=10)
    ref = Ridge(ridge=0.7).fit(X, Y)
    sol = feed(X, Y, 64).solve(0.7)
    np.testing.assert_allclose(sol.W, ref.Wout, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(sol.b, np.ravel(ref.bias), rtol=1e-7, atol=1e-10)


def test_empty_accumulator_says_so():
    acc = RidgeAccumulator(3, 2)
    acc.update(np.ones((4, 3)), np.ones((4, 2)), mask=np.zeros(4, bool))
    with pytest.raises(ValueError, match="empty"):
        acc.solve(1.0)


def test_scaled_statistics_equal_accumulating_scaled_features():
    rng = np.random.default_rng(7)
    X, Y = data(rng, f=6)
    c = np.array([1.0, 1.0, 0.3, 0.3, 0.1, 2.0])
    direct_acc = feed(X * c, Y, 64)
    scaled = feed(X, Y, 50).scaled(c)
    for lam in (0.0, 1.0):
        np.testing.assert_allclose(scaled.solve(lam).W, direct_acc.solve(lam).W, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(scaled.solve(lam).b, direct_acc.solve(lam).b, rtol=1e-8, atol=1e-10)
    assert scaled.sse(scaled.solve(1.0)) == pytest.approx(direct_acc.sse(direct_acc.solve(1.0)), rel=1e-9)


def test_overwrite_x_gives_the_same_statistics_and_only_then_touches_x():
    rng = np.random.default_rng(5)
    X, Y = data(rng)
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    kept, shifted = RidgeAccumulator(7, 3, np.float32), RidgeAccumulator(7, 3, np.float32)
    for i in range(0, len(X), 100):
        batch = X32[i : i + 100].copy()
        kept.update(batch, Y32[i : i + 100])
        np.testing.assert_array_equal(batch, X32[i : i + 100])  # the default leaves the caller's X alone
        shifted.update(batch, Y32[i : i + 100], overwrite_x=True)
    np.testing.assert_array_equal(kept.Sxx, shifted.Sxx)
    np.testing.assert_array_equal(kept.Sxy, shifted.Sxy)
    np.testing.assert_array_equal(kept.sx, shifted.sx)


def _filled(F: int, D: int, n: int, seed: int):
    from workloads.esn.ridge import RidgeAccumulator

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, F)) @ rng.normal(size=(F, F)) * 0.3 + 2.0  # correlated, off-centre features
    Y = X[:, :D] * 0.5 + rng.normal(size=(n, D))
    acc = RidgeAccumulator(F, D)
    for a in range(0, n, 97):
        acc.update(X[a : a + 97], Y[a : a + 97])
    return acc


def test_select_and_refit_equals_the_plain_path_with_at_most_4_FxF_matrices():
    import tracemalloc

    from workloads.esn.ridge import select_and_refit, select_ridge

    F, D = 300, 7
    ridges = [0.1, 10.0, 1000.0]
    scales = [np.ones(F), np.r_[np.ones(20), np.full(F - 20, 0.3)]]
    train, val = _filled(F, D, 900, 0), _filled(F, D, 300, 1)
    # the plain path: per scale, select on validation; refit on train + val at the best
    best = None
    for c in scales:
        sol, scores = select_ridge(train.scaled(c), val.scaled(c), ridges)
        if best is None or scores[sol.ridge] < best[0]:
            best = (scores[sol.ridge], sol.ridge, c, scores)
    ref = train.merged(val).scaled(best[2]).solve(best[1])
    tr, va = train.copy(), val.copy()
    import scipy.linalg  # noqa: F401  (its first import allocates megabytes of Python objects: not the solve's)

    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    fit, c, scores = select_and_refit(tr, va, ridges, scales)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert fit.ridge == best[1] and np.array_equal(c, best[2])
    for lam in ridges:
        assert scores[lam] == pytest.approx(best[3][lam], rel=1e-8)
    np.testing.assert_allclose(fit.W, ref.W * c[:, None], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(fit.b, ref.b, rtol=1e-6, atol=1e-8)
    # beyond the two accumulators already held: one working matrix and its eigenvectors (+ F x D pieces)
    assert peak - base <= 2 * F * F * 8 + 64 * F * D + 2**20, (peak - base) / (F * F * 8)
    assert tr.n == 0  # spent: refuses a second solve
    with pytest.raises(ValueError, match="empty"):
        tr.means()


def test_merge_into_equals_merged():
    from workloads.esn.ridge import merge_into

    a, b = _filled(40, 3, 200, 2), _filled(40, 3, 150, 3)
    ref = a.merged(b)
    merge_into(a, b)
    assert a.n == ref.n
    for got, want in zip(a.centred(), ref.centred(), strict=False):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-7)
    for got, want in zip(a.means(), ref.means(), strict=False):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_torch_statistics_give_the_numpy_readout():
    """The GPU path (statistics as float64 torch tensors, torch eigh / Cholesky), run here on CPU tensors."""
    from workloads.esn.ridge import RidgeAccumulator, select_and_refit

    rng = np.random.default_rng(5)
    F, D = 60, 4
    X = rng.normal(size=(700, F)) + 1.5
    Y = X[:, :D] - 0.3 * X[:, D : 2 * D] + rng.normal(size=(700, D))
    accs = {}
    for dev in (None, "cpu"):
        pair = []
        for part in (slice(0, 500), slice(500, 700)):
            acc = RidgeAccumulator(F, D, device=dev)
            for a in range(part.start, part.stop, 90):
                acc.update(X[a : min(a + 90, part.stop)], Y[a : min(a + 90, part.stop)])
            pair.append(acc)
        accs[dev] = pair
    tr, va = accs["cpu"]
    assert type(tr.Sxx).__module__.startswith("torch")
    np.testing.assert_allclose(tr.Sxx.numpy(), accs[None][0].Sxx, rtol=1e-10, atol=1e-8)
    scales = [np.ones(F), np.r_[np.ones(D), np.full(F - D, 0.5)]]
    want = select_and_refit(*accs[None], [0.1, 10.0], scales)
    got = select_and_refit(tr, va, [0.1, 10.0], scales)
    assert got[0].ridge == want[0].ridge and np.array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0].W, want[0].W, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(got[0].b, want[0].b, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("device", [None, "cpu"])
def test_cholesky_and_eigendecomposition_selections_agree(monkeypatch, device):
    """Few ridges: one Cholesky per ridge; many: one eigendecomposition per scale. Same choice, same readout
    (numpy, and the torch form the GPU runs, on CPU tensors)."""
    from workloads.esn import ridge as ridge_mod

    F, D = 80, 5
    scales = [np.ones(F), np.r_[np.ones(10), np.full(F - 10, 0.3)]]
    ridges = [0.01, 1.0, 100.0]
    results = []
    for limit in (len(ridges), 0):  # Cholesky path, then the eigendecomposition path
        monkeypatch.setattr(ridge_mod, "CHOLESKY_RIDGES", limit)
        tr, va = (_filled(F, D, n, seed) for n, seed in ((600, 7), (200, 8)))
        if device:
            for acc in (tr, va):
                acc.device = device
                acc.Sxx, acc.Sxy = (torch.as_tensor(m) for m in (acc.Sxx, acc.Sxy))
        results.append(ridge_mod.select_and_refit(tr, va, ridges, scales))
    (chol, c1, s1), (eig, c2, s2) = results
    assert chol.ridge == eig.ridge and np.array_equal(c1, c2)
    for lam in ridges:
        assert s1[lam] == pytest.approx(s2[lam], rel=1e-9)
    np.testing.assert_allclose(chol.W, eig.W, rtol=1e-8, atol=1e-11)


def test_a_ridge_whose_matrix_is_singular_loses_the_selection():
    """Ridge 0 on rank-deficient features (a constant column: exactly zero once centred): its Cholesky
    fails, it scores inf, and a positive ridge wins; a grid of only singular ridges is a clear error."""
    from workloads.esn.ridge import RidgeAccumulator, select_and_refit

    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 6))
    X = np.c_[X, np.ones(400)]
    Y = X[:, :2] + 0.1 * rng.normal(size=(400, 2))

    def accs():
        tr, va = RidgeAccumulator(7, 2), RidgeAccumulator(7, 2)
        tr.update(X[:300], Y[:300])
        va.update(X[300:], Y[300:])
        return tr, va

    fit, _, scores = select_and_refit(*accs(), [0.0, 1.0], [np.ones(7)])
    assert fit.ridge == 1.0 and scores[0.0] == float("inf") and np.isfinite(scores[1.0])
    with pytest.raises(np.linalg.LinAlgError, match="larger ridge"):
        select_and_refit(*accs(), [0.0], [np.ones(7), np.full(7, 0.5)])
