"""`orch compare --table latex|markdown`: the significance table of a paper, in the style of ranx's
comparison tables. One row per group, one column per metric; a cell is the mean over seeds +- the half-width
of its t-interval; the best mean of each column is bold; each group has a letter, and a cell's superscript
lists the letters of the groups it is significantly better than on that metric (after Holm's correction
over every comparison of every metric: ``study.run_study``). Only the comparisons made carry letters: with
``--baseline``, each group against the baseline."""

from __future__ import annotations

import math
import string
from typing import TYPE_CHECKING

from orchestrator.analysis.numbers import fmt

if TYPE_CHECKING:
    from orchestrator.analysis.compare import Report
    from orchestrator.analysis.study import Study

KINDS = {"latex": ".tex", "markdown": ".md"}  # --table values and their default file suffix
LATEX_SPECIAL = {c: f"\\{c}" for c in "&%$#_{}"} | {"~": r"\textasciitilde{}", "^": r"\^{}", "\\": r"\textbackslash{}"}


def _letters(n: int) -> list[str]:
    return [string.ascii_lowercase[i % 26] * (1 + i // 26) for i in range(n)]


def _beats(report: Report) -> dict[str, set[str]]:
    """group -> the groups it is significantly better than on this report's metric."""
    out: dict[str, set[str]] = {}
    for c in report.comparisons:
        if c.outcome == "better":
            out.setdefault(c.a, set()).add(c.b)
        elif c.outcome == "worse":
            out.setdefault(c.b, set()).add(c.a)
    return out


def cells(study: Study) -> tuple[list[str], list[str], list[list[tuple[str, bool, str]]]]:
    """(group names, their letters, rows of (mean +- half-width, is the best, superscript letters)); with
    several metrics, a last cell per row: the IQM over all of them and its stratified bootstrap interval."""
    names = list(dict.fromkeys(g.name for r in study.reports for g in r.groups))
    letters = dict(zip(names, _letters(len(names)), strict=True))
    rows: list[list[tuple[str, bool, str]]] = [[] for _ in names]
    for report in study.reports:
        summaries = {g.name: g.summary for g in report.groups}
        means = [s.mean for s in summaries.values() if s is not None and s.mean is not None]
        best = (min if report.mode == "min" else max)(means) if means else None
        beats = _beats(report)
        for i, name in enumerate(names):
            s = summaries.get(name)
            if s is None or s.mean is None:
                rows[i].append(("-", False, ""))
                continue
            text = mean_pm(s.mean, None if s.ci_high is None else s.ci_high - s.mean)
            rows[i].append((text, s.mean == best, "".join(sorted(letters[b] for b in beats.get(name, ())))))
    if study.aggregate is not None:
        iqm = {g.name: g for g in study.aggregate.groups}
        top = max((g.iqm for g in study.aggregate.groups if g.iqm is not None), default=None)
        for i, name in enumerate(names):
            g = iqm.get(name)
            if g is None or g.iqm is None:
                rows[i].append(("-", False, ""))
                continue
            interval = "" if g.iqm_low is None else f" [{g.iqm_low:.2f}, {g.iqm_high:.2f}]"
            rows[i].append((f"{g.iqm:.2f}{interval}", g.iqm == top, ""))
    return names, [letters[n] for n in names], rows


def _headers(study: Study, latex: bool) -> list[str]:
    name = latex_escape if latex else (lambda text: text)
    out = [f"{name(r.metric)} {_arrow(r.mode, latex)}" for r in study.reports]
    return out + (["IQM over the metrics"] if study.aggregate is not None else [])


def mean_pm(mean: float, half: float | None) -> str:
    """``0.679 ± 0.027``: the half-width to two significant digits, the mean to the same decimals."""
    if half is None:
        return fmt(mean)
    if half <= 0 or not math.isfinite(half):
        return f"{fmt(mean)} ± 0"
    decimals = max(0, 1 - math.floor(math.log10(half)))
    return f"{mean:.{decimals}f} ± {half:.{decimals}f}"


def _caption(study: Study) -> str:
    level = f"{round(study.report.confidence * 100)}%"
    return (
        f"{study.report.experiment}: mean ± half-width of the {level} t-interval over seeds; bold: the best "
        f"mean of each metric; superscript: significantly better than the groups with those letters "
        f"(Holm-corrected over all {study.family} comparisons, alpha = {study.alpha:g}; "
        + (f"each group against `{study.report.baseline}`)" if study.report.baseline else "all pairs)")
        + (
            "; IQM over the metrics: each scaled to [0, 1] (1 = the best value seen), with its stratified "
            "bootstrap 95% interval"
            if study.aggregate is not None
            else ""
        )
    )


def _arrow(mode: str, latex: bool) -> str:
    if latex:
        return r"$\downarrow$" if mode == "min" else r"$\uparrow$"
    return "↓" if mode == "min" else "↑"


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(c, c) for c in text)


def render(study: Study, kind: str) -> str:
    names, letters, rows = cells(study)
    if kind == "markdown":
        header = ["", "group", *_headers(study, latex=False)]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for name, letter, row in zip(names, letters, rows, strict=True):
            shown = [(f"**{t}**" if bold else t) + (f"<sup>{sup}</sup>" if sup else "") for t, bold, sup in row]
            lines.append("| " + " | ".join([letter, name.replace("|", "\\|"), *shown]) + " |")
        return "\n".join([*lines, "", _caption(study).replace("±", "+-"), ""])
    body = []
    for name, letter, row in zip(names, letters, rows, strict=True):
        shown = []
        for text, bold, sup in row:
            value = text.replace(" ± ", r" \pm ")
            value = rf"\mathbf{{{value}}}" if bold else value
            shown.append(f"${value}" + (rf"^{{\mathrm{{{sup}}}}}" if sup else "") + "$" if text != "-" else "-")
        body.append(" & ".join([letter, latex_escape(name), *shown]) + r" \\")
    heads = _headers(study, latex=True)
    columns = " & ".join(["", "Group", *heads])
    return "\n".join(
        [
            f"% {latex_escape(_caption(study)).replace('±', '+-')}",
            "% needs \\usepackage{booktabs}",
            r"\begin{tabular}{ll" + "r" * len(heads) + "}",
            r"\toprule",
            columns + r" \\",
            r"\midrule",
            *body,
            r"\bottomrule",
            r"\end{tabular}",
            "",
        ]
    )
