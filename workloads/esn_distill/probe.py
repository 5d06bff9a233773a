"""The downstream check: a linear probe on pooled hidden states, the student's against the teacher's.

The task ships with the workload: is a passage of the King James Bible (data/kjv.txt.gz) from the Old
Testament (label 0) or the New (label 1)? Passages are ``probe.length``-token pieces of chapters ([CLS] and
[SEP] included), ``probe.n_per_class`` per testament, drawn from the chapters with the run's seed; a task
with real linguistic signal (vocabulary, names, style) that needs no download.

The probe is a ridge classifier: one-hot targets, ridge readout on the standardised pooled features, penalty
chosen on a validation part, refitted on train + validation, accuracy of the argmax on the test part.
Closed-form and seeded: same seed, same accuracy. The passages may overlap the distillation samples when the
run distils on the KJV itself (both come from the same text); the teacher's accuracy is unaffected, and
the student's says how much of what the probe needs survives the distillation either way."""

from __future__ import annotations

import numpy as np
import torch

from workloads.esn.ridge import RidgeAccumulator, select_ridge
from workloads.esn_distill.data import KJV_NEW_TESTAMENT, read_paragraphs
from workloads.esn_distill.teacher import batches, forward_mode, pad, prepared

SPLIT = (0.6, 0.2)  # train, validation fractions; the rest is the test part


def passages(tokenizer, n_per_class: int, length: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """``n_per_class`` passages per testament (ids with [CLS]/[SEP]) and their labels, in a seeded order.
    Chapters are tokenised in a seeded order only until enough pieces are found (the whole text is ~1M
    tokens, a probe needs a few tens of thousands)."""
    chapters = read_paragraphs("kjv")
    rng = np.random.default_rng([seed, 11])
    body = length - 2
    out: list[np.ndarray] = []
    labels: list[int] = []
    for label, pool in ((0, np.arange(KJV_NEW_TESTAMENT)), (1, np.arange(KJV_NEW_TESTAMENT, len(chapters)))):
        pieces: list[np.ndarray] = []
        order = rng.permutation(pool)
        for start in range(0, len(order), 16):
            chunk = [chapters[k] for k in order[start : start + 16]]
            for ids in tokenizer(chunk, add_special_tokens=False, verbose=False)["input_ids"]:
                for a in range(0, len(ids) - body + 1, body):
                    pieces.append(
                        np.asarray([tokenizer.cls_token_id, *ids[a : a + body], tokenizer.sep_token_id], dtype=np.int64)
                    )
            if len(pieces) >= 4 * n_per_class:  # enough to choose from
                break
        if len(pieces) < n_per_class:
            raise ValueError(
                f"the probe text gives {len(pieces)} passages of {length} tokens for class "
                f"{label}, fewer than n_per_class={n_per_class}"
            )
        chosen = rng.choice(len(pieces), size=n_per_class, replace=False)
        out += [pieces[k] for k in chosen]
        labels += [label] * n_per_class
    order = rng.permutation(len(out))
    return [out[k] for k in order], np.asarray(labels)[order]


def teacher_states(
    model, samples: list[np.ndarray], batch_tokens: int, device: str, precision: str = "float32"
) -> list[np.ndarray]:
    """The teacher's hidden_states[0..L] for the real tokens of ``samples`` (flat, float32), its forward at
    ``precision`` as the cache's."""
    lengths = np.array([len(s) for s in samples])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    model = prepared(model, device, precision)
    n_states = model.config.num_hidden_layers + 1
    out = [np.empty((int(offsets[-1]), model.config.hidden_size), np.float32) for _ in range(n_states)]
    for a, b in batches(lengths, 0, len(samples), batch_tokens):
        ids, mask = pad(samples[a:b])
        with forward_mode(device, precision):
            hs = model(
                input_ids=torch.from_numpy(ids).to(device),
                attention_mask=torch.from_numpy(mask).to(device),
                output_hidden_states=True,
            ).hidden_states
        keep = torch.from_numpy(mask).to(device).bool()
        for k, h in enumerate(hs):
            out[k][offsets[a] : offsets[b]] = h[keep].float().cpu().numpy()
    return out


def pool(states: list[np.ndarray], lengths: np.ndarray, tokens: str, layers: str, last_n: int) -> np.ndarray:
    """One vector per sample from flat per-layer states [h_0, ..., h_L]: ``tokens`` first ([CLS]) or mean
    (over the sample's real tokens); ``layers`` last (h_L), sum or concat of the last ``last_n`` states."""
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    chosen = states[-1:] if layers == "last" else states[-min(last_n, len(states)) :]
    per_layer = []
    for h in chosen:
        if tokens == "first":
            per_layer.append(h[offsets[:-1]].astype(np.float64))
        else:
            per_layer.append(np.add.reduceat(h.astype(np.float64), offsets[:-1], axis=0) / lengths[:, None])
    if layers == "concat":
        return np.concatenate(per_layer, axis=1)
    return np.sum(per_layer, axis=0)


def accuracy(features: np.ndarray, labels: np.ndarray, ridges) -> float:
    """Test accuracy of a ridge classifier (penalty chosen on validation, refit on train + validation)."""
    n = len(labels)
    n_train, n_val = int(SPLIT[0] * n), int(SPLIT[1] * n)
    mu, sd = features[:n_train].mean(0), features[:n_train].std(0) + 1e-8
    X = (features - mu) / sd
    Y = np.eye(int(labels.max()) + 1)[labels]
    parts = {"train": slice(0, n_train), "val": slice(n_train, n_train + n_val)}
    accs = {}
    for name, sl in parts.items():
        acc = RidgeAccumulator(X.shape[1], Y.shape[1])
        acc.update(X[sl], Y[sl])
        accs[name] = acc
    best, _ = select_ridge(accs["train"], accs["val"], ridges)
    sol = accs["train"].merged(accs["val"]).solve(float(best.ridge))
    assert not isinstance(sol, list)  # one penalty, one solution
    test = slice(n_train + n_val, n)
    return float(np.mean(sol.predict(X[test]).argmax(1) == labels[test]))
