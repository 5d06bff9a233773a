"""The teacher: a transformers ``BertModel``, pretrained (loaded offline) or built from a size preset with
seeded random weights; and its hidden states, written once to a per-layer token cache on disk.

The cache holds only real tokens (padding dropped), one float32 ``.npy`` file per hidden state
(embeddings + one per layer), in the corpus's canonical order. A layer pair then needs two files in memory,
not the whole stack (13 x 250k tokens x 768 x 4 bytes = 10 GB for the lab's run)."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from orchestrator.errors import InputError
from workloads.esn_distill.data import Corpus

# (hidden_size, num_attention_heads, intermediate_size); the layer count is a separate parameter.
PRESETS = {
    "bert-base": (768, 12, 3072),
    "bert-small": (512, 8, 2048),
    "bert-mini": (256, 4, 1024),
    "bert-tiny": (128, 2, 512),
}


def load_pretrained(name: str, allow_download: bool = False):
    """(model, tokenizer) from a local directory or a hub name already in the local cache. Without
    ``allow_download`` nothing touches the network, so a missing model fails at once, not after timeouts."""
    from transformers import AutoTokenizer, BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a progress bar per load in every job's stderr says nothing
    local_only = not allow_download
    try:
        model = BertModel.from_pretrained(name, local_files_only=local_only)
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_only)
    except (OSError, ValueError) as err:
        where = "is not a directory here" if not Path(name).is_dir() else "is a directory without a usable BERT"
        raise InputError(
            f"cannot load the pretrained teacher '{name}' offline ({where}; {type(err).__name__}). "
            "Either give a local directory saved with save_pretrained (model + tokenizer files), "
            "or download it once on a machine with internet (huggingface-cli download NAME) and run with "
            "HF_HOME pointing at that cache, or set teacher.allow_download=true where the hub is reachable, "
            "or drop teacher.pretrained to use a seeded random teacher (teacher.config).",
            field="teacher.pretrained",
        ) from None
    return model, tokenizer


def random_teacher(
    preset: str,
    num_layers: int,
    vocab_size: int,
    max_len: int,
    seed: int,
    hidden_size: int | None = None,
    num_heads: int | None = None,
    intermediate_size: int | None = None,
    init_range: float = 0.02,
):
    from transformers import BertConfig, BertModel

    hidden, heads, inter = PRESETS[preset]
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size or hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads or heads,
        intermediate_size=intermediate_size or inter,
        max_position_embeddings=max(512, max_len),
        initializer_range=init_range,
    )
    if config.hidden_size % config.num_attention_heads:
        raise InputError(
            f"hidden_size {config.hidden_size} is not a multiple of num_attention_heads {config.num_attention_heads}",
            field="teacher.hidden_size",
        )
    torch.manual_seed(seed)  # the weights are a function of the seed alone
    return BertModel(config)


def teacher_params(model) -> tuple[int, int]:
    """(parameters of the encoder layers the ESNs replace, parameters of the whole model)."""
    layers = sum(p.numel() for p in model.encoder.layer.parameters())
    return int(layers), int(sum(p.numel() for p in model.parameters()))


class HiddenStateCache:
    """``layer_{k}.npy`` (n_tokens, H) float32 for k = 0..L, written once, read one layer at a time; with
    ``attention``, also ``attn_{i}.npy`` for i = 0..L-1: layer i's attention sub-layer output (BertAttention:
    self-attention, projection, residual, LayerNorm), the input of its feed-forward block."""

    def __init__(self, root: Path, fingerprint: str, attention: bool = False):
        self.root, self.fingerprint, self.attention = Path(root), fingerprint, attention
        self.marker = self.root / "complete.json"

    def complete(self) -> bool:
        if not self.marker.exists():
            return False
        return json.loads(self.marker.read_text()).get("fingerprint") == self.fingerprint

    def path(self, k: int) -> Path:
        return self.root / f"layer_{k}.npy"

    def load(self, k: int) -> np.ndarray:
        return np.load(self.path(k))

    def attn_path(self, i: int) -> Path:
        return self.root / f"attn_{i}.npy"

    def load_attention(self, i: int) -> np.ndarray:
        return np.load(self.attn_path(i))

    def meta(self) -> dict:
        return json.loads(self.marker.read_text())

    def write(self, model, corpus: Corpus, batch_tokens: int, device: str, precision: str = "float32") -> None:
        """Run the teacher over every sample (inference mode, attention mask for padding) and append each
        batch's real tokens to the per-layer files. Sequential writes: memory stays at one batch."""
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        model = prepared(model, device, precision)
        n_states = model.config.num_hidden_layers + 1
        hidden = model.config.hidden_size
        files = []
        paths = [self.path(k) for k in range(n_states)]
        if self.attention:
            paths += [self.attn_path(i) for i in range(n_states - 1)]
        for path in paths:
            f = open(path, "wb")  # noqa: SIM115 - kept open while the states are streamed in
            np.lib.format.write_array_header_1_0(
                f,
                {
                    "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                    "fortran_order": False,
                    "shape": (corpus.n_tokens, hidden),
                },
            )
            files.append(f)
        captured: list[torch.Tensor] = []
        hooks = (
            [
                layer.attention.register_forward_hook(lambda _m, _i, out: captured.append(out[0]))
                for layer in model.encoder.layer
            ]
            if self.attention
            else []
        )
        try:
            for first, end in batches(corpus.lengths, 0, len(corpus.samples), batch_tokens):
                ids, mask = pad(corpus.samples[first:end])
                with forward_mode(device, precision):
                    out = model(
                        input_ids=torch.from_numpy(ids).to(device),
                        attention_mask=torch.from_numpy(mask).to(device),
                        output_hidden_states=True,
                    )
                lengths = mask.sum(axis=1)
                for f, h in zip(files, [*out.hidden_states, *captured], strict=False):
                    h = h.float().cpu().contiguous()  # no copy for float32 CPU states
                    for b, L in enumerate(lengths):  # each sample's real tokens, straight from h's memory:
                        f.write(h[b, :L].numpy().data)  # row-major b, t = canonical order, no gather copy
                captured.clear()
        finally:
            for hook in hooks:
                hook.remove()
            for f in files:
                f.close()
        self.marker.write_text(
            json.dumps(
                {"fingerprint": self.fingerprint, "n_states": n_states, "hidden": hidden, "n_tokens": corpus.n_tokens}
            )
        )

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class OneDNNLinear(torch.nn.Module):
    """An ``nn.Linear`` for CPU inference whose product runs on oneDNN rather than torch's default BLAS,
    optionally followed by BERT's (erf) GELU fused into the product (``activation="gelu"``).

    torch's CPU matmul is MKL, which runs its AVX2 kernels on AMD CPUs; oneDNN picks the CPU's widest
    kernels itself. Same float32 arithmetic: bert-base hidden states agree to ~4e-6 relative, and the
    forward is 1.7x faster on an AVX-512 EPYC (measured, 2 threads). The weight is packed once into
    oneDNN's blocked layout and the input and output stay plain tensors (``mkldnn._linear_pointwise``, the op
    torch's own compiler emits): converting every activation to oneDNN's layout and back cost ~10 % of
    the forward. Where this torch lacks that op, the activations are converted (``aten.mkldnn_linear``)."""

    def __init__(self, linear: torch.nn.Linear, activation: str = "none"):
        super().__init__()
        weight, bias = linear.weight.detach(), None if linear.bias is None else linear.bias.detach()
        self.packed = _HAS_POINTWISE
        # buffers: this module is not trained, and they follow the model's .to()
        if self.packed:
            self.register_buffer("weight", torch.ops.mkldnn._reorder_linear_weight(weight))
            self.register_buffer("bias", bias)
        else:
            self.register_buffer("weight", weight.to_mkldnn())
            self.register_buffer("bias", None if bias is None else bias.to_mkldnn())
        self.activation = activation
        self.out_features = linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1]).contiguous()
        if self.packed:  # "none" as the algorithm: the exact (erf) GELU, BERT's "gelu"
            y = torch.ops.mkldnn._linear_pointwise(
                flat, self.weight, self.bias, self.activation, [], "none" if self.activation == "gelu" else ""
            )
        else:
            y = torch.ops.aten.mkldnn_linear(flat.to_mkldnn(), self.weight, self.bias).to_dense()
            if self.activation == "gelu":
                y = torch.nn.functional.gelu(y)
        return y.reshape(*x.shape[:-1], self.out_features)


_HAS_POINTWISE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def cpu_vendor() -> str:
    """The CPU's vendor id (``GenuineIntel``, ``AuthenticAMD``; empty where /proc/cpuinfo says nothing)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("vendor_id")), "")
    except OSError:
        return ""


def onednn_is_faster() -> bool:
    """Whether oneDNN's linears beat torch's default (MKL) on this CPU: on AMD with AVX-512 only. Measured,
    bert-base forward, 2 threads, per 4,096 tokens: AMD EPYC AVX-512 1.7x faster; AMD EPYC AVX2 slower
    (7.8 s vs 6.8 s); Intel Xeon AVX-512 slower (3.4 s vs 2.8 s: MKL runs its AVX-512 kernels on Intel,
    only its AVX2 ones on AMD). A property of the CPU, so every forward of a run on one machine takes the
    same path."""
    return cpu_vendor() == "AuthenticAMD" and torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def prepared(model, device: str, precision: str = "float32"):
    """The teacher ready for inference on ``device``: eval mode, and for float32 on an AVX-512 AMD CPU its
    linears on oneDNN (bfloat16 autocast sends them there itself). Idempotent, so that every forward of a
    run (the cache, the probe), resumed or not, runs the same arithmetic."""
    model = model.to(device).eval()
    return linears_on_onednn(model) if device == "cpu" and precision == "float32" and onednn_is_faster() else model


def forward_mode(device: str, precision: str) -> contextlib.AbstractContextManager:
    """The context of every teacher forward: inference mode, and for ``bfloat16`` torch's autocast, which
    runs the matmuls in bfloat16 and keeps layer norms and softmax in float32. On a CPU with AMX (or a GPU)
    that is ~2.7x faster for bert-base; without bfloat16 units it is slower than float32."""
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    if precision == "bfloat16":
        stack.enter_context(torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16))
    return stack


def linears_on_onednn(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` (float32, CPU, inference) with every ``nn.Linear`` replaced in place by a OneDNNLinear;
    unchanged where torch has no oneDNN (the products then stay on the default BLAS)."""
    if not torch.backends.mkldnn.is_available():
        return model
    for name, child in model.named_children():
        dense = _linear_before_exact_gelu(child)
        if dense is not None:  # BertIntermediate: dense then GELU, fused into one oneDNN op
            child.dense = OneDNNLinear(dense, activation="gelu")
            child.intermediate_act_fn = torch.nn.Identity()
        elif isinstance(child, torch.nn.Linear) and child.weight.dtype == torch.float32:
            setattr(model, name, OneDNNLinear(child))
        else:
            linears_on_onednn(child)
    return model


def _linear_before_exact_gelu(module: torch.nn.Module) -> torch.nn.Linear | None:
    """``module.dense`` where ``module`` is BERT's intermediate block with the exact (erf) GELU: ``dense``
    (float32) then ``intermediate_act_fn`` (transformers' GELUActivation, F.gelu without approximation)."""
    from transformers.activations import GELUActivation

    act = getattr(module, "intermediate_act_fn", None)
    dense = getattr(module, "dense", None)
    exact = isinstance(act, GELUActivation) and act.act is torch.nn.functional.gelu
    return dense if exact and isinstance(dense, torch.nn.Linear) and dense.weight.dtype == torch.float32 else None


def batches(lengths: np.ndarray, first: int, end: int, batch_tokens: int):
    """Consecutive sample ranges [a, b) within [first, end) whose padded size (count x longest) stays within
    ``batch_tokens`` (at least one sample per batch)."""
    a = first
    while a < end:
        b, longest = a, 0
        while b < end:
            longest2 = max(longest, int(lengths[b]))
            if b > a and longest2 * (b - a + 1) > batch_tokens:
                break
            longest, b = longest2, b + 1
        yield a, b
        a = b


def pad(samples: list[np.ndarray], fill: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded (B, T) ids and the (B, T) int64 attention mask."""
    T = max(len(s) for s in samples)
    ids = np.full((len(samples), T), fill, dtype=np.int64)
    mask = np.zeros((len(samples), T), dtype=np.int64)
    for b, s in enumerate(samples):
        ids[b, : len(s)] = s
        mask[b, : len(s)] = 1
    return ids, mask
