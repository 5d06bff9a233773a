"""Token samples for the teacher: text tokenised by a locally built (or locally loaded) tokenizer, or
seeded random token ids. Split by sample into train / validation / test.

Samples are stored in a canonical order, train then validation then test, each sorted by length: a split
is a contiguous range of tokens, and consecutive samples pad little when batched.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from orchestrator.errors import InputError

DATA_DIR = Path(__file__).parent / "data"
DEFAULT_TEXT = DATA_DIR / "public_domain.txt"
# Texts shipped with the workload, by the name ``data.text_path`` may give instead of a path.
SHIPPED_TEXTS = {"fables": DEFAULT_TEXT, "kjv": DATA_DIR / "kjv.txt.gz"}
KJV_NEW_TESTAMENT = 929  # paragraph (chapter) index of Matthew 1 in kjv.txt.gz: 929 OT chapters before it
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SPLITS = ("train", "val", "test")


@dataclass
class Corpus:
    """Samples (1-D int arrays, [CLS] ... [SEP]) in canonical order; ``bounds[split] = (first, end)``
    sample indices; ``offsets[k]`` = index of sample k's first token in the flat token arrays."""

    samples: list[np.ndarray]
    bounds: dict[str, tuple[int, int]]

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(s) for s in self.samples], dtype=np.int64)

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)])

    @property
    def n_tokens(self) -> int:
        return int(self.lengths.sum())

    def token_range(self, split: str) -> tuple[int, int]:
        first, end = self.bounds[split]
        off = self.offsets
        return int(off[first]), int(off[end])


def resolve_text(path: str | Path | None) -> Path:
    """The file behind ``data.text_path``: None = the shipped fables, a name of SHIPPED_TEXTS, or a path."""
    if path is None:
        return DEFAULT_TEXT
    return SHIPPED_TEXTS.get(str(path), Path(path))


def read_paragraphs(path: str | Path | None) -> list[str]:
    """Blank-line-separated paragraphs of a UTF-8 text (``.gz``: gzip-compressed), whitespace normalised."""
    import gzip

    path = resolve_text(path)
    if not path.is_file():
        raise InputError(
            f"text file {path} does not exist (or give one of {sorted(SHIPPED_TEXTS)})", field="data.text_path"
        )
    raw = path.read_bytes()
    text = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode("utf-8")
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n")]
    return [p for p in paragraphs if p]


@lru_cache(maxsize=4)
def build_tokenizer(text_path: str | None, vocab_size: int):
    """A lower-cased BERT WordPiece tokenizer whose vocabulary comes from the text itself: specials, every
    character (alone and as a ``##`` continuation), then whole words by frequency (ties alphabetical) up to
    ``vocab_size``; unknown words fall back to character pieces. Built with `tokenizers`, no download.

    Not ``tokenizers.trainers.WordPieceTrainer``: measured here (tokenizers 0.23), it gives a different
    vocabulary in each process (ties broken by hash order), and a seed must give the same token ids."""
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import BertTokenizerFast  # type: ignore[attr-defined]  # exported lazily

    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for paragraph in read_paragraphs(text_path):
        counts.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(paragraph)))
    chars = sorted({c for w in counts for c in w})
    vocab = list(dict.fromkeys(SPECIALS + chars + ["##" + c for c in chars]))
    if vocab_size < len(vocab):
        raise InputError(
            f"vocab_size {vocab_size} is below the {len(vocab)} specials and characters of the text",
            field="data.vocab_size",
        )
    known = set(vocab)
    words = sorted((w for w in counts if w not in known), key=lambda w: (-counts[w], w))
    vocab += words[: vocab_size - len(vocab)]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizer, pre, decoders.WordPiece()
    return BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
    )


def text_samples(tokenizer, text_path: str | None, max_len: int, min_len: int) -> list[np.ndarray]:
    """Every paragraph, tokenised, cut into pieces of at most ``max_len`` tokens with [CLS] and [SEP];
    pieces shorter than ``min_len`` are dropped."""
    body = max_len - 2
    out = []
    # verbose=False: no "longer than the maximum length" warning, pieces are cut to max_len below
    for ids in tokenizer(read_paragraphs(text_path), add_special_tokens=False, verbose=False)["input_ids"]:
        for start in range(0, len(ids), body):
            piece = [tokenizer.cls_token_id, *ids[start : start + body], tokenizer.sep_token_id]
            if len(piece) >= min_len:
                out.append(np.asarray(piece, dtype=np.int64))
    return out


def packed_samples(
    tokenizer, text_path: str | None, max_len: int, min_len: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """The paragraphs' tokens as one stream (in text order), cut into consecutive samples whose lengths,
    [CLS] and [SEP] included, are drawn uniformly in [min_len, max_len]; the last, shorter rest is dropped.

    What the lab's 212-288-token samples need: most paragraphs are shorter than that, so cutting single
    paragraphs (``text_samples``) gives none of them. A sample may start mid-sentence, as BERT's own
    pre-training segments do."""
    stream = np.concatenate(
        [
            np.asarray(ids, dtype=np.int64)
            for ids in tokenizer(read_paragraphs(text_path), add_special_tokens=False, verbose=False)["input_ids"]
        ]
    )
    out: list[np.ndarray] = []
    start = 0
    while True:
        body = int(rng.integers(min_len, max_len + 1)) - 2
        if start + body > len(stream):
            return out
        out.append(
            np.concatenate([[tokenizer.cls_token_id], stream[start : start + body], [tokenizer.sep_token_id]]).astype(
                np.int64
            )
        )
        start += body


def random_samples(
    rng: np.random.Generator, n: int, vocab_size: int, max_len: int, min_len: int, cls_id: int = 2, sep_id: int = 3
) -> list[np.ndarray]:
    lengths = rng.integers(min_len, max_len + 1, size=n)
    first = len(SPECIALS)  # no special token inside a sample
    return [
        np.concatenate([[cls_id], rng.integers(first, vocab_size, size=L - 2), [sep_id]]).astype(np.int64)
        for L in lengths
    ]


def split_samples(
    samples: list[np.ndarray], rng: np.random.Generator, val_fraction: float, test_fraction: float
) -> Corpus:
    n = len(samples)
    n_test, n_val = max(1, round(test_fraction * n)), max(1, round(val_fraction * n))
    if n - n_test - n_val < 1:
        raise InputError(
            f"{n} samples leave none for training after {n_val} validation and {n_test} test", field="data.n_samples"
        )
    order = rng.permutation(n)
    parts = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
    canon: list[np.ndarray] = []
    bounds: dict[str, tuple[int, int]] = {}
    for split in SPLITS:
        idx = sorted(parts[split], key=lambda k: (-len(samples[k]), k))  # longest first, stable
        bounds[split] = (len(canon), len(canon) + len(idx))
        canon.extend(samples[k] for k in idx)
    return Corpus(canon, bounds)


def make_corpus(data, tokenizer, vocab_size: int, seed: int) -> Corpus:
    """``data``: the workload's DataParams. The sample choice and the split depend only on ``seed``."""
    rng = np.random.default_rng([seed, 7])
    if data.source == "random":
        samples = random_samples(
            rng, data.n_samples, vocab_size, data.max_len, data.min_len, *(_special_ids(tokenizer))
        )
    else:
        if data.packing == "pack":  # its own generator: the paragraph mode's draws stay as they were
            pool = packed_samples(
                tokenizer, data.text_path, data.max_len, data.min_len, np.random.default_rng([seed, 8])
            )
        else:
            pool = text_samples(tokenizer, data.text_path, data.max_len, data.min_len)
        if len(pool) < data.n_samples:
            raise InputError(
                f"the text gives {len(pool)} samples of {data.min_len}..{data.max_len} tokens, "
                f"fewer than n_samples={data.n_samples}: lower n_samples or max_len, give a "
                "longer data.text_path (or data.text_path=kjv), data.packing=pack, "
                "or data.source=random",
                field="data.n_samples",
            )
        chosen = np.sort(rng.choice(len(pool), size=data.n_samples, replace=False))
        samples = [pool[k] for k in chosen]
    return split_samples(samples, rng, data.val_fraction, data.test_fraction)


def _special_ids(tokenizer) -> tuple[int, int]:
    if tokenizer is None:
        return 2, 3
    return tokenizer.cls_token_id, tokenizer.sep_token_id
