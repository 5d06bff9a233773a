"""How orch writes numbers for people: a value with four significant digits (scientific past 1e5 or under 1e-3)
and a p-value; the report, the notes and the verdicts all use these."""

from __future__ import annotations


def fmt(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "-"
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.{max(1, digits - 2)}e}"
    return f"{x:.{digits}g}"


def fmt_p(p: float | None) -> str:
    return "-" if p is None else ("<1e-16" if p < 1e-16 else f"{p:.2g}" if p < 0.001 else f"{p:.3f}")
