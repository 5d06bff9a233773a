"""Masking the carried state of the looped model: before each injection keep the state of only the first or
the last N (x, y) pairs of the prompt and reset the rest to the injection's neutral value (0 for ``add``,
1 for ``mul``), so that those positions restart from what the first iteration sees. A probe of how much of
the state the learnt algorithm relies on (the lab's masking study).

Pair i occupies positions 2i (x_i) and 2i + 1 (y_i); "last N" counts from the end of the prompt actually
fed (under the points curriculum, a shorter one)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch


@dataclass(frozen=True)
class Keep:
    """Which pairs of the state survive: ``side`` first or last, ``pairs`` of them."""

    side: Literal["first", "last"]
    pairs: int

    def positions(self, n_tokens: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(n_tokens, 1) bool: True where the state is kept."""
        n_pairs = n_tokens // 2
        kept = min(self.pairs, n_pairs)
        pair = torch.arange(n_tokens, device=device) // 2
        keep = pair < kept if self.side == "first" else pair >= n_pairs - kept
        return keep[:, None]


def apply(z: torch.Tensor, keep: Keep, neutral: float) -> torch.Tensor:
    """z (B, T, C) with the positions outside ``keep`` set to ``neutral``."""
    return torch.where(keep.positions(z.shape[1], z.device), z, torch.full_like(z, neutral))
