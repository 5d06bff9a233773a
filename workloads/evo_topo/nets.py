"""Reservoirs as the engine runs them (`Net`), decoded from genomes or drawn at random.

A genome holds W and the evolved input columns (genome.py). What it does not hold is drawn once per run seed
(`SeedDraws`), by neuron index, so that neuron i of every genome of a run gets the same draw:
- W_in when the input is not evolved (``evolve_input: false``: the lab's "freeze W_in" question);
- the bias when it is not a gene (``bias: fixed``), reservoirpy 0.3's law: +-bias_scaling with probability
  ``input_density``, else 0;
- the output-feedback weights W_fb (every net, random baselines included: reservoirpy 0.3's law,
  +-fb_scaling with probability fb_connectivity).
Random baselines (`random_net`) are reservoirpy 0.3's ``Reservoir`` as the reference builds it: W normal at
spectral radius sr with density rc_connectivity, W_in +-1 with density input_connectivity, and a bias
+-bias_scaling with that same input density (reservoirpy 0.3 draws the bias with the input connectivity; 0.4
dropped the bias by default, which is not what the paper ran).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workloads.esn.reservoir import random_reservoir, rescale_spectral_radius
from workloads.evo_topo.genome import split
from workloads.evo_topo.task import INPUT_DIM, N_POS


@dataclass(frozen=True)
class Net:
    """One reservoir: W (N, N), W_in (N, 16) and bias (N,), as run (radius rescaled, inputs scaled)."""

    W: np.ndarray
    W_in: np.ndarray
    bias: np.ndarray

    @property
    def n(self) -> int:
        return int(self.W.shape[0])


@dataclass(frozen=True)
class Layout:
    """How genomes are decoded (from Params; see `layout`)."""

    evolve_input: bool
    bias: str  # "gene" | "fixed" | "none"
    bias_scaling: float
    sr_rescale: bool
    sr: float
    input_scaling: float

    @property
    def k(self) -> int:
        """The genome's evolved input columns."""
        return INPUT_DIM * self.evolve_input + (self.bias == "gene")


@dataclass(frozen=True)
class SeedDraws:
    """Per-run draws by neuron index, for ``width`` neurons (the largest net of the run)."""

    W_in: np.ndarray  # (width, 16), +-1 with the genome's input density
    bias: np.ndarray  # (width,), +-bias_scaling with the input density
    W_fb: np.ndarray  # (width, 4), +-fb_scaling with density fb_connectivity; zeros when fb_scaling is 0

    @classmethod
    def draw(
        cls,
        width: int,
        input_density: float,
        bias_scaling: float,
        fb_scaling: float,
        fb_connectivity: float,
        seed_seq: list[int],
    ) -> SeedDraws:
        rng = np.random.default_rng(seed_seq)

        def pm(shape, density, scale):
            return scale * rng.choice(np.array([-1.0, 1.0]), size=shape) * (rng.random(shape) < density)

        return cls(
            pm((width, INPUT_DIM), input_density, 1.0),
            pm(width, input_density, bias_scaling),
            pm((width, N_POS), fb_connectivity, fb_scaling),
        )


def decode(g: np.ndarray, layout: Layout, draws: SeedDraws) -> Net:
    """The reservoir a genome stands for: W rescaled to spectral radius sr (unless off, or W is nilpotent:
    radius ~0, common for sparse ternary matrices, left as is rather than divided by ~0), W_in from the genome
    or the seed's draw, times input_scaling, the bias from the genome's last column, the seed's draw, or 0."""
    W, cols = split(np.asarray(g, dtype=np.float64))
    n = W.shape[0]
    if layout.sr_rescale:
        radius = float(np.abs(np.linalg.eigvals(W)).max()) if n else 0.0
        if radius > 1e-9:
            W = W * (layout.sr / radius)
    W_in = cols[:, :INPUT_DIM] if layout.evolve_input else draws.W_in[:n]
    if layout.bias == "gene":
        bias = cols[:, -1] * layout.bias_scaling
    elif layout.bias == "fixed":
        bias = draws.bias[:n]
    else:
        bias = np.zeros(n)
    return Net(np.array(W), W_in * layout.input_scaling, np.array(bias, dtype=np.float64))


def random_net(
    units: int,
    sr: float,
    input_scaling: float,
    rc_connectivity: float,
    input_connectivity: float,
    bias_scaling: float,
    seed,
) -> Net:
    """A random reservoir drawn as reservoirpy 0.3's ``Reservoir`` draws one (see the module docstring).
    reservoirpy's sparse eigen-solver cannot take a 1- or 2-unit W (a size the search can reach, for
    random_matched): those are drawn unscaled and rescaled with a dense eigendecomposition (the same draw; a
    nilpotent W, radius ~0, is left as is)."""
    tiny = units <= 2
    W, W_in, bias = random_reservoir(
        units,
        INPUT_DIM,
        None if tiny else sr,
        input_scaling,
        rc_connectivity,
        input_connectivity,
        seed=seed,
        bias_scaling=bias_scaling,
        bias_connectivity=input_connectivity,
    )
    return Net(rescale_spectral_radius(W, sr) if tiny else W, W_in, bias)


def pad(nets: list[Net], draws: SeedDraws) -> dict[str, np.ndarray]:
    """The population as one zero-padded batch: W (P, N, N), W_in (P, N, 16), bias (P, N), W_fb (P, N, 4),
    valid (P, N) and sizes (P,), N the largest net. Padding neurons have no weights at all: they stay 0."""
    sizes = np.array([net.n for net in nets])
    n, P = int(sizes.max()), len(nets)
    out = {
        "W": np.zeros((P, n, n)),
        "W_in": np.zeros((P, n, INPUT_DIM)),
        "bias": np.zeros((P, n)),
        "W_fb": np.zeros((P, n, N_POS)),
        "valid": np.zeros((P, n)),
        "sizes": sizes,
    }
    for p, net in enumerate(nets):
        k = net.n
        out["W"][p, :k, :k], out["W_in"][p, :k], out["bias"][p, :k] = net.W, net.W_in, net.bias
        out["W_fb"][p, :k], out["valid"][p, :k] = draws.W_fb[:k], 1.0
    return out
