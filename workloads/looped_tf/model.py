"""A GPT-2 style pre-LN causal transformer over regression prompts, run once (standard) or looped.

Read top to bottom: attention, MLP, block, backbone (position embeddings + blocks + final LayerNorm),
then the in-context model that wraps the backbone with read_in / read_out and the loop.

The looped model of Yang et al. (2024) keeps a state z (zeros at first) and repeats
    z <- backbone(z + e)        (input injection: e = read_in(prompt) is re-added every iteration)
reading the prediction out after every iteration. A standard transformer is the same computation with
one iteration of an n_layer backbone (z = 0, so the backbone sees e): one implementation serves both."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from workloads.looped_tf.state_mask import Keep, apply

Injection = Literal["add", "mul"]


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd ({n_embd}) must be a multiple of n_head ({n_head})")
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd)  # one matmul for q, k and v
        self.proj = nn.Linear(n_embd, n_embd)

    def forward(self, x: torch.Tensor, x_tokens_only: bool = False) -> torch.Tensor:
        """Causal attention; with ``x_tokens_only`` the outputs at the even positions alone (see Backbone)."""
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        mask, causal = None, True
        if x_tokens_only:
            q = q[:, ::2]
            # query 2i may look at keys 0 .. 2i: no longer the square causal mask, so spell it out
            mask = torch.arange(t, device=x.device)[None] <= torch.arange(0, t, 2, device=x.device)[:, None]
            causal = False
        # (B, T, C) -> (B, heads, T, C/heads): heads become a batch dimension for the fused kernel.
        q = q.reshape(b, q.shape[1], self.n_head, c // self.n_head).transpose(1, 2)
        k, v = (u.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for u in (k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        return self.proj(y.transpose(1, 2).reshape(b, q.shape[2], c))


class MLP(nn.Module):
    def __init__(self, n_embd: int):
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd)
        self.proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))  # GPT-2's tanh GELU


class Block(nn.Module):
    """Pre-LN: normalise, transform, add back. The residual stream itself is never normalised."""

    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = MLP(n_embd)

    def forward(self, x: torch.Tensor, x_tokens_only: bool = False) -> torch.Tensor:
        a = self.attn(self.ln_1(x), x_tokens_only)
        x = (x[:, ::2] if x_tokens_only else x) + a
        return x + self.mlp(self.ln_2(x))


class Backbone(nn.Module):
    """GPT-2 without token embeddings: add learned positions, run the blocks, end with ln_f. In the loop
    the positions are re-added and ln_f re-applied every iteration, as in the reference code."""

    def __init__(self, n_layer: int, n_embd: int, n_head: int, block_size: int):
        super().__init__()
        self.wpe = nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        # GPT-2 initialisation: N(0, 0.02), zero biases, and the projections that write into the residual
        # stream scaled by 1/sqrt(2 n_layer) so its variance does not grow with depth.
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layer))

    def forward(self, h: torch.Tensor, x_tokens_only: bool = False) -> torch.Tensor:
        """(B, T, C) -> (B, T, C); with ``x_tokens_only``, (B, T/2, C) at the x tokens only. Only the x tokens
        are read out, and in the last layer nothing else depends on the other positions, so that layer
        can skip them: the same numbers for about half a layer less work (12% of a 4-layer model)."""
        h = h + self.wpe.weight[: h.shape[1]]
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            h = block(h, x_tokens_only and i == last)
        return self.ln_f(h)


class InContextRegressor(nn.Module):
    """read_in (d -> n_embd), backbone looped ``n_loops`` times with input injection, read_out (n_embd -> 1)
    at the x tokens. ``forward`` returns the predictions of the last ``grad_loops`` iterations; the
    iterations before them run without gradient (they only produce the starting state), which is what
    makes training with many loops affordable."""

    def __init__(
        self, n_dims: int, n_points: int, n_embd: int, n_layer: int, n_head: int, injection: Injection = "add"
    ):
        super().__init__()
        self.injection = injection
        self.read_in = nn.Linear(n_dims, n_embd)  # default PyTorch init, as the references leave it
        self.backbone = Backbone(n_layer, n_embd, n_head, block_size=2 * n_points)
        self.read_out = nn.Linear(n_embd, 1)

    @property
    def neutral(self) -> float:
        """The state that leaves the injection unchanged: z + e = e, z * e = e."""
        return 0.0 if self.injection == "add" else 1.0

    def step(
        self, z: torch.Tensor, e: torch.Tensor, x_tokens_only: bool = False, keep: Keep | None = None
    ) -> torch.Tensor:
        """One iteration: the backbone applied to the state (masked first, if asked) with the prompt injected."""
        if keep is not None:
            z = apply(z, keep, self.neutral)
        return self.backbone(z + e if self.injection == "add" else z * e, x_tokens_only)

    def predict(self, z: torch.Tensor) -> torch.Tensor:
        return self.read_out(z[:, ::2]).squeeze(-1)  # even positions are the x tokens: (B, n)

    def forward(
        self, prompt: torch.Tensor, n_loops: int = 1, grad_loops: int | None = None, keep: Keep | None = None
    ) -> list[torch.Tensor]:
        """prompt (B, 2n, d) -> [predictions (B, n) after iteration n_loops - grad_loops + 1, ..., n_loops];
        ``keep`` masks the state before every injection (state_mask.py)."""
        grad_loops = n_loops if grad_loops is None else grad_loops
        if not 1 <= grad_loops <= n_loops:
            raise ValueError(f"need 1 <= grad_loops <= n_loops, got {grad_loops} and {n_loops}")
        e = self.read_in(prompt)
        # Start from the neutral state, so iteration 1 sees the prompt alone.
        z = torch.full_like(e, self.neutral)
        with torch.no_grad():
            for _ in range(n_loops - grad_loops):
                z = self.step(z, e, keep=keep)
        predictions = []
        for _ in range(grad_loops - 1):
            z = self.step(z, e, keep=keep)
            predictions.append(self.predict(z))
        # The last state is only read out: its last layer need not compute the y tokens.
        z_x = self.step(z, e, x_tokens_only=True, keep=keep)
        predictions.append(self.read_out(z_x).squeeze(-1))
        return predictions
