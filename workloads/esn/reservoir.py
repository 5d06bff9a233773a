"""Batched leaky-tanh reservoir: many trials and many reservoirs stepped together in torch.

reservoirpy steps one reservoir through one sequence with a Python loop per step (~50 us/step, measured);
here the input drive ``W_in u`` of every step is one matmul, and the loop over time does one batched
``x @ W^T`` for every reservoir and every sequence at once. reservoirpy stays the reference (tests compare
states to < 1e-9 in float64) and the source of random initialisers (`random_reservoir`).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

from workloads.esn.update import leaky_update_

_DRIVE_ELEMENTS = 1 << 22  # the most drive elements computed by one matmul (32 MiB in float64)
SPARSE_DENSITY = 0.15  # a single reservoir at most this dense steps with a sparse W (CPU; ~even at 0.2)
SPARSE_MIN_UNITS = 64  # below this, dense BLAS on a tiny W is as fast

__all__ = [
    "as_tensor",
    "esn_states",
    "random_reservoir",
    "rescale_spectral_radius",
    "sparse_spectral_radius",
    "spectral_radius",
]


def as_tensor(a, like: torch.Tensor | None = None) -> torch.Tensor:
    """``a`` as a torch tensor; with ``like``, on its dtype and device (numpy arrays are not copied when
    dtype already matches)."""
    t = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    if like is not None:
        t = t.to(dtype=like.dtype, device=like.device)
    return t


def esn_states(
    W,
    W_in,
    inputs,
    leak,
    bias=None,
    x0=None,
    reverse: bool = False,
    *,
    last_only: bool = False,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """States of leaky-tanh reservoirs driven by ``inputs``.

    Shapes (leading dims ``...`` broadcast between the arguments, e.g. W (P, N, N) with inputs (B, T, D)
    runs a population of P reservoirs on the same B trials and returns (P, B, T, N)):
      W (..., N, N), W_in (..., N, D), inputs (..., B, T, D), bias (..., N) or None,
      x0 (..., B, N) or None (zeros), leak a float or a tensor/array broadcastable to (..., N).
    Returns states (..., B, T, N) with reservoirpy's convention (``Reservoir.run``, state starting at x0):

        x_t = (1 - leak) * x_{t-1} + leak * tanh(W x_{t-1} + W_in u_t + b),   x_{-1} = x0,
        states[..., t, :] = x_t   (the state AFTER reading inputs[..., t, :]).

    ``reverse=True`` feeds the sequence from its last step to its first (a backward reservoir) and returns
    the states aligned with the inputs: states[..., t, :] has read inputs t..T-1.
    ``last_only=True`` returns only the final state (..., B, N) (the one after the last input read), without
    storing the (..., B, T, N) history: what a readout at the last step needs, at 1/T of the memory.
    ``out``: a (..., B, T, N) tensor of W's dtype and device to write the states into (a caller stepping many
    batches reuses one buffer: fresh large arrays cost page faults, ~1 s per GB on a VM that reclaims).
    The input drive W_in u of all steps is one matmul (in chunks of steps when the drive of a broadcast
    population would be large), then a Python loop over T does the recurrence for every reservoir and
    sequence at once. dtype and device follow ``W``; inputs may be numpy or torch. A neuron whose W
    row/column, W_in row and bias are 0 (padding) stays exactly 0, so populations of different sizes can
    share one padded tensor.
    """
    W = as_tensor(W)
    if not W.is_floating_point():
        W = W.to(torch.get_default_dtype())
    W_in, u = as_tensor(W_in, W), as_tensor(inputs, W)
    if reverse:
        u = torch.flip(u, dims=(-2,))
    W_in_t = W_in.transpose(-1, -2)  # (..., D, N)
    b = None if bias is None else as_tensor(bias, W)[..., None, None, :]  # (..., 1, 1, N)
    leak_t = as_tensor(leak, W)
    if leak_t.ndim > 0:  # per-neuron leak (..., N) -> (..., 1, N) against the state (..., B, N)
        leak_t = leak_t.unsqueeze(-2)
    n, steps = W.shape[-1], u.shape[-2]
    batch_shape = torch.broadcast_shapes(u.shape[:-2], (*W.shape[:-2], 1), (*W_in.shape[:-2], 1))
    x = torch.zeros((*batch_shape, n), dtype=W.dtype, device=W.device)
    if x0 is not None:
        x = x + as_tensor(x0, W)
    recurrent_product, torch_blas = _recurrent_product(W)
    pre = torch.empty_like(x)  # the pre-activation, reused every step
    if last_only:
        out = None
    elif out is None:
        out = torch.empty((*batch_shape, steps, n), dtype=W.dtype, device=W.device)
    elif out.shape != (*batch_shape, steps, n) or out.dtype != W.dtype or out.device != W.device:
        raise ValueError(
            f"out is {tuple(out.shape)} {out.dtype} on {out.device}; the states are "
            f"{tuple((*batch_shape, steps, n))} {W.dtype} on {W.device}"
        )
    # On CPU the per-step elementwise work runs on numpy views of the same memory: torch's own elementwise
    # kernels start OpenMP threads, and with 2+ threads they and BLAS's threads spin against each other on
    # the same cores every step (measured 11x slower, 1,000 units x 112 sequences on 2 cores). numpy's
    # ufuncs are single-threaded and its tanh is SIMD (4-15x faster than torch's on CPU).
    cpu = W.device.type == "cpu"
    # numpy views of the tensors on CPU, the tensors themselves on a GPU
    xs: Any
    pres: Any
    outs: Any
    xs, pres, outs = (t.numpy() if cpu and t is not None else t for t in (x, pre, out))
    leak_s = leak_t.numpy() if cpu else leak_t
    tanh = np.tanh if cpu else torch.tanh
    # The input drive W_in u of many steps is one matmul; steps go in chunks so that the drive of a whole
    # population on shared inputs ((P, B, T, N), broadcast) never has to sit in memory at once.
    per_step = max(1, math.prod(batch_shape) * n)
    chunk = max(1, min(steps, _DRIVE_ELEMENTS // per_step))
    for start in range(0, steps, chunk):
        block = u[..., start : start + chunk, :]  # (..., B, c, D)
        if block.shape[-3] >= 64:
            # Many sequences: a time-major drive (..., c, B, N), so that step k's drive is one contiguous
            # (..., B, N) block; one (B, D) @ (D, N) product per step and leading index (numpy broadcasts
            # without copying the inputs for each reservoir of a population).
            drive = _matmul(block.transpose(-2, -3), W_in_t.unsqueeze(-3), torch_blas)
        else:
            # Few (long) sequences: one (B*c, D) @ (D, N) product per leading index, seen time-major.
            flat = _matmul(block.reshape((*block.shape[:-3], -1, block.shape[-1])), W_in_t, torch_blas)
            drive = flat.reshape(flat.shape[:-2] + block.shape[-3:-1] + (n,)).transpose(-2, -3)
        drives = drive.numpy() if cpu else drive  # a fresh array: updated in place
        if b is not None:
            drives += b.numpy() if cpu else b
        for k in range(drive.shape[-3]):
            recurrent_product(x, pre)
            pres += drives[..., k, :, :]
            leaky_update_(xs, pres, leak_s, tanh)  # x and pre are ours
            if outs is not None:  # reversed: the state after step j has read inputs T-1-j..T-1
                outs[..., steps - 1 - (start + k) if reverse else start + k, :] = xs
    return x if out is None else out


def _matmul(a: torch.Tensor, b: torch.Tensor, torch_blas: bool = False) -> torch.Tensor:
    """a @ b with broadcasting; on CPU through numpy, which broadcasts without materialising copies, unless
    the recurrence runs on torch's threads (``torch_blas``): one thread pool per run, never two spinning."""
    if a.device.type == "cpu" and not torch_blas:
        return torch.from_numpy(np.matmul(a.numpy(), b.numpy()))
    return a @ b


def sparse_enough(units: int, density: float) -> bool:
    """Whether a reservoir of ``units`` with this fraction of non-zeros in W is stepped sparse (on CPU)."""
    return units >= SPARSE_MIN_UNITS and density <= SPARSE_DENSITY


def steps_sparse(W: torch.Tensor) -> bool:
    """Whether the recurrence of ``W`` runs on a sparse copy: one CPU reservoir, large and sparse enough."""
    return W.device.type == "cpu" and W.ndim == 2 and sparse_enough(W.shape[0], int(torch.count_nonzero(W)) / W.numel())


def _recurrent_product(W: torch.Tensor):
    """(``product(x, out)``: out = x @ W^T for states x (..., B, N), the reservoir's recurrent term; whether
    it runs on torch's thread pool rather than numpy's BLAS).

    A single CPU reservoir as sparse as reservoirpy's (rc_connectivity <= SPARSE_DENSITY) uses a CSR copy of
    W: ~1/density fewer multiply-adds (1.3-3x faster per step than dense BLAS at 10%, 300-1,000 units).
    Populations (batched W) and GPUs stay dense. On CPU the dense product is numpy's batched matmul: one BLAS
    gemm per reservoir, ~2x faster than torch's for (P, B, N) @ (P, N, N) (measured, 1 thread)."""
    if W.device.type != "cpu":
        Wt_gpu = W.transpose(-1, -2)
        return (lambda x, out: torch.matmul(x, Wt_gpu, out=out)), True
    if steps_sparse(W):
        with warnings.catch_warnings():  # "sparse CSR support is in beta": CSR @ dense is all we use
            warnings.simplefilter("ignore", UserWarning)
            W_csr = W.to_sparse_csr()
        # (W @ x^T)^T: torch writes W @ x^T contiguous, numpy copies its transpose into out (writing a
        # transposed `out=` view directly is 5x slower in torch).
        product = lambda x, out: np.copyto(out.numpy(), torch.mm(W_csr, x.T).numpy().T)  # noqa: E731
        # With several threads the drive goes through torch's BLAS too: torch's and numpy's thread pools
        # alternating spin against each other (measured 1.5x slower). With one there is no pool, and
        # numpy's OpenBLAS gemm is ~1.4x faster than torch's MKL on this AMD CPU.
        return product, torch.get_num_threads() > 1
    Wt = W.transpose(-1, -2).contiguous().numpy()
    return (lambda x, out: np.matmul(x.numpy(), Wt, out=out.numpy())), False


def spectral_radius(W) -> float:
    """Largest absolute eigenvalue of a square matrix (dense, numpy or torch)."""
    a = W.detach().cpu().numpy() if isinstance(W, torch.Tensor) else np.asarray(W)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(np.linalg.eigvals(a.astype(np.float64)))))


def sparse_spectral_radius(W, seed: int = 0, tol: float = 1e-3, k: int = 6, ncv: int = 120) -> float:
    """Largest absolute eigenvalue of a (sparse) square matrix by ARPACK (``scipy.sparse.linalg.eigs``) on
    the sparse W, only matrix-vector products: seconds to a minute or two at 10,000 units and 10% density,
    where a dense ``eigvals`` is O(N^3).

    Why these settings: a random reservoir's eigenvalues fill a disc, so the few of largest modulus are
    within ~0.1-1% of each other (10,000 units: 31.827, 31.790, 31.748). ARPACK asked for one (k=1) then
    converges slowly and may settle on the wrong one (0.7% low at 1,000 units, measured); asking for 6 with
    a 60-vector Krylov space separates them: 1.3e-8 and 3.4e-6 relative to the exact radius on two
    1,000-unit draws, in 0.07 s.
    ``tol`` 1e-3 bounds each Ritz value's relative residual (the accuracy asked of the radius); a 120-vector
    Krylov space needs fewer restarts: at 10,000 units 12.7 s where (ncv 60, tol 1e-4) took 32.8 s, the
    two radii 1.7e-7 apart (measured, load 1.5). The start vector is seeded: same W, same
    radius, so a reservoir regenerated from its seed is bit-identical."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import ArpackNoConvergence, eigs

    n = W.shape[0]
    if n == 0:
        return 0.0
    if n <= max(2 * ncv, 64):  # too small for a Krylov space of ncv vectors: the exact radius is cheap
        return spectral_radius(W.toarray() if sp.issparse(W) else W)
    A = sp.csr_matrix(W, dtype=np.float64)
    v0 = np.random.default_rng(seed).normal(size=n)
    try:
        vals = eigs(A, k=k, which="LM", tol=tol, ncv=min(ncv, n - 1), v0=v0, return_eigenvectors=False, maxiter=50 * n)
    except ArpackNoConvergence as err:  # what converged so far, when anything did
        vals = err.eigenvalues
        if len(vals) == 0:
            raise
    return float(np.max(np.abs(vals)))


def rescale_spectral_radius(W, sr: float, eps: float = 1e-9):
    """``W`` scaled to spectral radius ``sr`` (same type as ``W``, a new array). A W whose radius is below
    ``eps`` (nilpotent: a sparse ternary matrix often is) is returned unchanged (a copy) rather
    than blown up by a division by ~0."""
    radius = spectral_radius(W)
    if radius < eps:
        return W.clone() if isinstance(W, torch.Tensor) else np.array(W, copy=True)
    return W * (sr / radius)


def random_reservoir(
    units: int,
    input_dim: int,
    sr: float | None,
    input_scaling: float,
    rc_connectivity: float,
    input_connectivity: float,
    seed,
    bias_scaling: float = 0.0,
    bias_connectivity: float = 1.0,
    dtype=np.float64,
    radius: str = "reservoirpy",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense (W, W_in, bias) drawn with reservoirpy.mat_gen exactly as ``Reservoir(units, sr=...,
    input_scaling=..., rc_connectivity=..., input_connectivity=..., seed=seed)`` draws them: W ~ normal
    rescaled to spectral radius ``sr``, W_in ~ bernoulli(+-1) * input_scaling, bias ~ bernoulli * bias_scaling
    with density ``bias_connectivity`` (zeros when bias_scaling is 0, reservoirpy 0.4's default; reservoirpy
    0.3 drew it with bias_scaling 1 and the input connectivity as density, what evo_topo's baselines use).
    ``sr=None``: W as drawn, not rescaled (the same draw).
    ``radius="arpack"``: the same draw, rescaled with `sparse_spectral_radius` (seeded, 6 eigenvalues)
    instead of reservoirpy's own ARPACK call (one eigenvalue, tolerance 0: more than 5 minutes at 10,000
    units); equal to reservoirpy's W to within ARPACK's tolerance 1e-3 (under 1e-4 measured at 1,000 units)."""
    from reservoirpy.mat_gen import bernoulli, normal
    from reservoirpy.utils.random import rand_generator

    win_rng, w_rng, bias_rng = rand_generator(seed).spawn(3)  # the same split as Reservoir.initialize
    W_in = bernoulli(
        units, input_dim, input_scaling=input_scaling, connectivity=input_connectivity, dtype=dtype, seed=win_rng
    )
    if radius == "arpack" and sr is not None:
        W = normal(units, units, sr=None, connectivity=rc_connectivity, dtype=dtype, seed=w_rng)
        rho = sparse_spectral_radius(W, seed=units)
        W = W * (sr / rho) if rho > 1e-9 else W
    else:
        W = normal(units, units, sr=sr, connectivity=rc_connectivity, dtype=dtype, seed=w_rng)
    if bias_scaling:
        bias = bernoulli(units, connectivity=bias_connectivity, input_scaling=bias_scaling, dtype=dtype, seed=bias_rng)
    else:
        bias = np.zeros(units, dtype=dtype)
    dense = [np.asarray(m.toarray() if hasattr(m, "toarray") else m, dtype=dtype) for m in (W, W_in, bias)]
    dense[2] = dense[2].reshape(units)
    return dense[0], dense[1], dense[2]
