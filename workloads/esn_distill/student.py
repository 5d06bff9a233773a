"""The product of a run: a Reservoir BERT that encodes token ids without the teacher.

A student is the teacher's embedding layer (a transformers ``BertEmbeddings`` with the teacher's weights) and,
per layer, an ESN: reservoirs regenerated exactly from (seed, layer, direction) and the ESN hyperparameters
(`distill.build_reservoirs`, deterministic), the input standardisation (mu, sd) and the ridge readout (W, b).
It runs chained: layer i's ESN reads layer i-1's ESN output.

On disk (``<artifacts>/student/``): ``config.json`` (the hyperparameters, seed, batch sizes, the BERT
config of the embeddings), ``embeddings.pt`` (their state dict), ``layer_<i>.npz`` (mu, sd, W, b, ridge),
``tokenizer/`` (the teacher's tokenizer, save_pretrained). Reservoir matrices are not stored: a 10,000-unit
W is 800 MB dense, its seed 8 bytes.

Batching is part of the arithmetic: BLAS may round a row differently in a batch of another shape, so the
student steps samples in the same batches (`teacher.batches` with the run's ``batch_tokens``) as the run
that scored it, and reproduces the run's chained metrics exactly, not just closely."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workloads.esn.ridge import RidgeSolution
from workloads.esn_distill.distill import LayerReservoirs, Scratch, build_reservoirs
from workloads.esn_distill.teacher import batches, pad

FORMAT = 1


@dataclass
class StudentLayer:
    res: LayerReservoirs
    readout: RidgeSolution  # over the full [u; x] features (zero rows for u when the readout sees states only)

    def forward(self, H: np.ndarray, lengths: np.ndarray, batch_tokens: int) -> np.ndarray:
        """This layer's output for the real tokens ``H`` (n, D) of consecutive samples with these lengths."""
        out = np.empty((len(H), self.readout.W.shape[1]), dtype=np.float32)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        for a, b in batches(lengths, 0, len(lengths), batch_tokens):
            t0, t1 = int(offsets[a]), int(offsets[b])
            out[t0:t1] = self.readout.predict(self.res.features(H[t0:t1], lengths[a:b]))
        return out


class ReservoirBERT:
    """Token ids -> hidden states, chained through the ESNs. Build with `load` (or layer by layer in a run)."""

    def __init__(self, config: dict[str, Any], embeddings: torch.nn.Module, device: str = "cpu"):
        self.config, self.device = config, device
        self.embeddings = embeddings.to(device).eval()
        self.layers: list[StudentLayer] = []
        self.scratch = Scratch()

    # ---------------------------------------------------------------- building
    @classmethod
    def from_teacher(
        cls,
        model,
        esn,
        seed: int,
        esn_batch_tokens: int,
        embed_batch_tokens: int,
        readout_input: bool,
        device: str = "cpu",
    ) -> ReservoirBERT:
        """A student with the teacher's embeddings and no layer yet (``esn``: the workload's ESNParams)."""
        from transformers.models.bert.modeling_bert import BertEmbeddings

        emb = BertEmbeddings(model.config)
        emb.load_state_dict(model.embeddings.state_dict())
        config = {
            "format": FORMAT,
            "esn": esn.model_dump(),
            "seed": int(seed),
            "hidden": int(model.config.hidden_size),
            "readout_input": bool(readout_input),
            "esn_batch_tokens": int(esn_batch_tokens),
            "embed_batch_tokens": int(embed_batch_tokens),
            "bert_config": model.config.to_dict(),
        }
        return cls(config, emb, device)

    def add_layer(self, res: LayerReservoirs, readout: RidgeSolution) -> StudentLayer:
        layer = StudentLayer(res, readout)
        self.layers.append(layer)
        return layer

    def layer_from_arrays(self, i: int, mu: np.ndarray, sd: np.ndarray, readout: RidgeSolution) -> StudentLayer:
        """Layer ``i`` from its stored arrays: the reservoirs regenerated from the seed."""
        from workloads.esn_distill import ESNParams

        esn = ESNParams.model_validate(self.config["esn"])
        res = build_reservoirs(esn, i, self.config["seed"], self.config["hidden"], mu, sd, self.device, self.scratch)
        return StudentLayer(res, readout)

    # ---------------------------------------------------------------- disk
    def save_config(self, root: Path, tokenizer=None) -> None:
        root.mkdir(parents=True, exist_ok=True)
        (root / "config.json").write_text(json.dumps(self.config, indent=2, default=str))
        torch.save(self.embeddings.state_dict(), root / "embeddings.pt")
        if tokenizer is not None:
            tokenizer.save_pretrained(str(root / "tokenizer"))

    @staticmethod
    def save_layer(root: Path, i: int, layer: StudentLayer) -> None:
        """Layer i's arrays, float64 readout as fitted (what the run predicted with)."""
        tmp = root / f".layer_{i}.tmp.npz"
        np.savez(
            tmp,
            mu=layer.res.mu,
            sd=layer.res.sd,
            W=layer.readout.W,
            b=layer.readout.b,
            ridge=np.float64(layer.readout.ridge),
        )
        tmp.replace(root / f"layer_{i}.npz")  # whole or absent: a resumed run overwrites it

    @classmethod
    def load(cls, root: str | Path, device: str = "cpu", n_layers: int | None = None) -> ReservoirBERT:
        """The student saved under ``root`` (every ``layer_<i>.npz`` there, or the first ``n_layers``)."""
        from transformers import BertConfig
        from transformers.models.bert.modeling_bert import BertEmbeddings

        root = Path(root)
        config = json.loads((root / "config.json").read_text())
        if config.get("format") != FORMAT:
            raise ValueError(f"{root}: student format {config.get('format')}, this code reads {FORMAT}")
        emb = BertEmbeddings(BertConfig.from_dict(config["bert_config"]))
        emb.load_state_dict(torch.load(root / "embeddings.pt", map_location="cpu"))
        student = cls(config, emb, device)
        count = n_layers if n_layers is not None else len(list(root.glob("layer_*.npz")))
        for i in range(count):
            student.layers.append(student.load_layer(root, i))
        return student

    def load_layer(self, root: Path, i: int) -> StudentLayer:
        with np.load(Path(root) / f"layer_{i}.npz") as z:
            readout = RidgeSolution(z["W"], z["b"], float(z["ridge"]))
            return self.layer_from_arrays(i, z["mu"], z["sd"], readout)

    @staticmethod
    def tokenizer(root: str | Path):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(Path(root) / "tokenizer"), local_files_only=True)

    # ---------------------------------------------------------------- encoding
    def embed(self, samples: list[np.ndarray]) -> np.ndarray:
        """hidden_states[0] of the real tokens of ``samples`` (flat (n_tokens, H) float32): the teacher's
        embedding layer, run in padded batches as the teacher's forward runs it."""
        lengths = np.array([len(s) for s in samples], dtype=np.int64)
        out = np.empty((int(lengths.sum()), self.config["hidden"]), dtype=np.float32)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        for a, b in batches(lengths, 0, len(samples), self.config["embed_batch_tokens"]):
            ids, mask = pad(samples[a:b])
            with torch.inference_mode():
                h = self.embeddings(input_ids=torch.from_numpy(ids).to(self.device))
            keep = torch.from_numpy(mask).to(self.device).bool()
            out[offsets[a] : offsets[b]] = h[keep].float().cpu().numpy()
        return out

    def encode(self, samples: list[np.ndarray], layers: int | None = None) -> list[np.ndarray]:
        """[h_0, h_1, ..., h_L] for the real tokens of ``samples`` (each flat (n_tokens, H) float32, samples
        in the given order): embeddings, then every ESN on the previous one's output."""
        lengths = np.array([len(s) for s in samples], dtype=np.int64)
        states = [self.embed(samples)]
        for layer in self.layers[:layers]:
            states.append(layer.forward(states[-1], lengths, self.config["esn_batch_tokens"]))
        return states
