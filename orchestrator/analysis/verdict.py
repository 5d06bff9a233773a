"""What the numbers of `orch compare` mean, in words: the verdict of each comparison (after Holm's correction:
which group is better, by how much, or that the runs cannot tell), and the notes on groups that sit at the
chance level the workload declared (their numbers say nothing about the question)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from orchestrator.analysis import stats
from orchestrator.analysis.numbers import fmt, fmt_p
from orchestrator.tracking.records import Tag

if TYPE_CHECKING:
    from orchestrator.analysis.compare import Group

TEST_NAMES = {
    "welch_t": "Welch's t-test",
    "paired_t": "paired t-test",
    "mann_whitney_u": "Mann-Whitney U",
    "wilcoxon": "Wilcoxon signed-rank",
    "permutation": "permutation test",
    "permutation_paired": "Fisher's randomization test",
}


def verdict(
    c: stats.Comparison, metric: str, mode: str, alpha: float, confidence: float = stats.CONFIDENCE
) -> tuple[str, str]:
    """(outcome, one plain-language sentence or two) for one comparison, after Holm correction."""
    a, b = f"`{c.a}`", f"`{c.b}`"
    if c.n_a < 2 or c.n_b < 2:
        return "too_few_runs", (
            f"cannot tell: {a} has {c.n_a} and {b} has {c.n_b} finished run(s) with a finite "
            f"{metric}; at least 2 per group are needed for any test."
        )
    direction = "lower" if mode == "min" else "higher"
    tw = "on every shared seed" if c.paired else "in every run"
    if c.identical:
        return "identical", f"no difference: {a} and {b} give identical {metric} {tw}."
    assert c.diff is not None, "two groups with values have a difference"
    a_better = (c.diff < 0) == (mode == "min")
    (lead, lead_mean), (trail, trail_mean) = ((a, c.mean_a), (b, c.mean_b))[:: 1 if a_better else -1]
    word = "lower" if mode == "min" else "higher"
    by_how_much = f"{lead} {fmt(lead_mean)} vs {trail} {fmt(trail_mean)}, {word} by {fmt(abs(c.diff))}"
    if c.p_value is None:
        return "constant", (
            f"{lead} is better than {trail} ({direction} {metric} is better): {by_how_much}, with no "
            f"spread at all: every run gives the same value, so no test applies; the difference is "
            f"exact, not estimated."
        )
    level = f"{round(confidence * 100)}%"
    interval = f"{c.a} - {c.b} = {fmt(c.diff)}, {level} CI {fmt(c.diff_low)} to {fmt(c.diff_high)}"
    evidence = (
        f"{TEST_NAMES[c.primary]} p = {fmt_p(c.p_value)}, Holm p = {fmt_p(c.p_holm)}; "
        f"n = {c.n_a} vs {c.n_b}"
        + (f", {c.n_pairs} paired seeds" if c.uses_pairs else "")
        + (f"; Hedges' g {fmt(c.hedges_g, 2)}" if c.hedges_g is not None else "")
        + (f", Cliff's delta {c.cliffs_delta:+.2f}" if c.cliffs_delta is not None else "")
    )
    if c.significant:
        return ("better" if a_better else "worse"), (
            f"{lead} is better than {trail} ({direction} {metric} is better): {by_how_much} ({interval}). "
            f"Significant at alpha = {alpha:g} after Holm correction ({evidence})."
        )
    text = (
        f"no significant difference between {a} and {b} at alpha = {alpha:g} after Holm correction: "
        f"observed {by_how_much} ({interval}; {evidence})."
    )
    effect = c.effect_for_power
    name = "d_z" if c.uses_pairs else "d"
    n_now = c.n_pairs if c.uses_pairs else min(c.n_a, c.n_b)
    unit = "paired seeds" if c.uses_pairs else "seeds per group"
    if c.seeds_needed is None:
        text += (
            f" The observed effect is negligible ({name} = {fmt(effect, 2)}): no practical number of seeds "
            f"would detect it."
            if effect is not None
            else ""
        )
        return "no_difference", text
    if c.seeds_needed > n_now:
        text += (
            f" Too few seeds to tell: for the observed effect ({name} = {fmt(effect, 2)}) about "
            f"{c.seeds_needed} {unit} would give 80% power; there are {n_now}."
        )
        return "underpowered", text
    text += f" ({c.seeds_needed} {unit} give 80% power for an effect of this size, {name} = {fmt(effect, 2)}.)"
    return "not_significant", text


# -- the whole comparison -----------------------------------------------------------------------------


def chance_levels(parents: list) -> dict[str, float]:
    """The chance levels the workload declared (``CHANCE``), as recorded on its groups."""
    for parent in parents:
        text = parent.data.tags.get(Tag.CHANCE)
        if text:
            try:
                levels = json.loads(text)
                return {str(k): float(v) for k, v in levels.items()}
            except (ValueError, TypeError, AttributeError):
                continue  # a hand-edited tag: compare without it rather than fail
    return {}


def chance_notes(groups: list[Group], metric: str, mode: str, chance: float) -> list[str]:
    """Groups whose interval holds the chance level, or lies on the wrong side of it: their numbers say
    nothing about the question (a comparison between two groups at chance is a comparison of noise)."""
    notes = []
    for g in groups:
        s = g.summary
        if s is None or s.ci_low is None or s.ci_high is None:
            continue
        worse = s.ci_high < chance if mode == "max" else s.ci_low > chance
        if s.ci_low <= chance <= s.ci_high:
            notes.append(
                f"`{g.name}` is at chance on {metric}: its interval [{fmt(s.ci_low)}, {fmt(s.ci_high)}] "
                f"holds the chance level {chance:g}"
            )
        elif worse:
            notes.append(
                f"`{g.name}` is worse than chance on {metric} ({fmt(s.mean)} vs {chance:g}): a "
                f"systematic bias, not a learned solution"
            )
    return notes


def tuning_budgets(parents: list) -> dict[str, int]:
    """Parent run id -> the configurations tried to choose its params (the spec's ``tuning:``), where recorded."""
    budgets = {}
    for parent in parents:
        text = parent.data.tags.get(Tag.TUNING_TRIALS)
        if text is not None and text.isdigit():
            budgets[parent.info.run_id] = int(text)
    return budgets


def tuning_notes(pairs: list[tuple[Group, Group]], budgets: dict[str, int], baseline: bool) -> list[str]:
    """A comparison whose two sides were searched for unequally: a candidate tuned over many configurations
    against a baseline tuned over few wins partly by the search, not by what it is (a reviewer's first
    question). With a named baseline, said when the baseline got less; between peers, when they differ."""
    notes = []
    for x, y in pairs:
        tx = max((budgets[p] for p in x.parents if p in budgets), default=None)
        ty = max((budgets[p] for p in y.parents if p in budgets), default=None)
        if tx is None or ty is None or tx == ty or (baseline and ty > tx):
            continue
        less, more = (y, x) if ty < tx else (x, y)
        n_less, n_more = min(tx, ty), max(tx, ty)
        notes.append(
            f"`{less.name}` was chosen among {n_less} configuration(s), `{more.name}` among {n_more}: part of "
            f"a difference in favour of `{more.name}` may be tuning effort; give `{less.name}` the same search "
            "budget (orch tune) before reading the verdict as a property of the method"
        )
    return notes
