"""How a comparison reads: rich tables in the terminal, and one Markdown + one self-contained HTML report
(the plots embedded) that `orch compare` logs to MLflow. Both documents come from the same rows."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator.analysis.compare import Report
from orchestrator.analysis.numbers import fmt, fmt_p
from orchestrator.analysis.verdict import TEST_NAMES

if TYPE_CHECKING:
    from orchestrator.analysis.study import Study

GROUP_COLUMNS = (
    "group",
    "n",
    "missing",
    "failed",
    "killed",
    "running",
    "mean",
    "std",
    "SE",
    "median",
    "min",
    "max",
    "CI (t)",
    "CI (bootstrap)",
    "IQM [CI]",
)
COMPARE_COLUMNS = (
    "comparison",
    "difference",
    "CI",
    "test",
    "p",
    "p (Holm)",
    "significant",
    "Welch p",
    "Mann-Whitney p",
    "paired t p",
    "Wilcoxon p",
    "Hedges' g",
    "Cliff's delta",
    "permutation p",
    "randomization p",
    "P(better) [CI]",
)


def _interval(low, high) -> str:
    return "-" if low is None else f"[{fmt(low)}, {fmt(high)}]"


def group_rows(report: Report) -> list[list[str]]:
    rows = []
    for g in report.groups:
        s, c = g.summary, g.counts
        assert s is not None, "run_compare summarises every group"
        boot = _interval(s.boot_low, s.boot_high) + (f" {s.boot_method}" if s.boot_method not in ("", "BCa") else "")
        rows.append(
            [
                g.name,
                str(s.n),
                str(c["missing"]),
                str(c["failed"]),
                str(c["killed"]),
                str(c["running"] + c["pending"]),
                fmt(s.mean),
                fmt(s.std),
                fmt(s.sem),
                fmt(s.median),
                fmt(s.min),
                fmt(s.max),
                _interval(s.ci_low, s.ci_high),
                boot,
                "-" if g.iqm is None else f"{fmt(g.iqm)} {_interval(g.iqm_low, g.iqm_high)}",
            ]
        )
    return rows


def _p_better(c) -> str:
    if c.p_better is None:
        return "-"
    return f"{c.p_better:.2f}" + ("" if c.p_better_low is None else f" [{c.p_better_low:.2f}, {c.p_better_high:.2f}]")


def comparison_rows(report: Report) -> list[list[str]]:
    rows = []
    for c in report.comparisons:
        p = {k: fmt_p(t.pvalue) for k, t in c.tests.items()}
        rows.append(
            [
                f"{c.a} vs {c.b}",
                fmt(c.diff),
                _interval(c.diff_low, c.diff_high),
                TEST_NAMES.get(c.primary, c.primary),
                fmt_p(c.p_value),
                fmt_p(c.p_holm),
                "yes" if c.significant else "no",
                p.get("welch_t", "-"),
                p.get("mann_whitney_u", "-"),
                p.get("paired_t", "-"),
                p.get("wilcoxon", "-"),
                fmt(c.hedges_g, 3),
                "-" if c.cliffs_delta is None else f"{c.cliffs_delta:+.2f}",
                p.get("permutation", "-"),
                p.get("permutation_paired", "-"),
                _p_better(c),
            ]
        )
    return rows


def method_text(report: Report) -> str:
    level = f"{round(report.confidence * 100)}%"
    return (
        f"Only FINISHED runs count. Intervals: {level} Student t interval of the mean (CI (t)) and {level} "
        f"bootstrap interval of the mean (BCa, 9999 resamples, seed 0; percentile when BCa is undefined); the "
        f"interquartile mean (IQM, the mean of the middle 50% of runs) with its percentile bootstrap interval. "
        f"Tests: Welch's t-test, Mann-Whitney U and a permutation test of the difference of means; when two "
        f"groups share seeds, the paired t-test, Wilcoxon signed-rank test and Fisher's randomization test "
        f"(sign flips of each seed's difference) on the shared seeds. Permutation tests: scipy's "
        f"permutation_test, exact up to 9999 permutations, else 9999 seeded resamples. The primary test: "
        + (
            "Fisher's randomization test on shared seeds, else the permutation test (--test permutation)"
            if report.test == "permutation"
            else "the paired t-test on shared seeds, else Welch's (--test t)"
        )
        + f". The primary p-values are Holm-corrected across the {len(report.comparisons)} comparison(s); "
        f"significant = Holm p < {report.alpha:g}. Difference = first group minus second, with the "
        f"{'t-tests' if report.test == 'permutation' else 'primary test'}'s {level} interval. P(better): the "
        f"probability that a random run of the first group is better than a random run of the second (ties "
        f"count 1/2), with its percentile bootstrap interval (9999 resamples, seed 0, each group resampled alone)."
    )


# -- terminal -----------------------------------------------------------------------------------------
def _runs_cell(g) -> str:
    c = g.counts
    others = [f"{c[k]} {k}" for k in ("failed", "killed", "missing") if c[k]]
    others += [f"{c['running'] + c['pending']} running"] if c["running"] + c["pending"] else []
    return str(g.summary.n) + (f" [red]({', '.join(others)})[/]" if others else "")


def print_report(report: Report, console: Console) -> None:
    """One row per group when the terminal is wide enough, else one column per group (fits 80 columns
    for a handful of groups). Every number is also in --json and the logged report."""
    better = "lower" if report.mode == "min" else "higher"
    level = f"{round(report.confidence * 100)}%"
    title = escape(f"{report.experiment}: {report.metric} ({better} is better)")
    labels = ["n", "mean", "std", "SE", "median", "min", "max", f"{level} CI (t)", f"{level} CI (bootstrap)"]
    labels.append("IQM [CI]")
    rows = group_rows(report)
    names = [escape(f"{r[0]} (baseline)" if r[0] == report.baseline else r[0]) for r in rows]
    cells = [[_runs_cell(g), *r[6:]] for g, r in zip(report.groups, rows, strict=False)]
    wide = console.width >= 24 + 12 * len(labels)
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    if not wide and len(rows) > (console.width - 22) // 19:  # too many groups for columns: the essentials
        keep = [0, 1, 7, 9]  # n, mean, CI (t), IQM [CI]
        labels = [labels[i] for i in keep]
        cells = [[row[i] for i in keep] for row in cells]
        wide = True
    if wide:
        table.add_column("group", no_wrap=True)
        for label in labels:
            table.add_column(label, justify="right")
        for name, row in zip(names, cells, strict=False):
            table.add_row(name, *row)
    else:
        table.add_column("")
        for name in names:
            table.add_column(name, justify="right")
        for i, label in enumerate(labels):
            table.add_row(label, *(row[i] for row in cells))
    console.print(table)
    if report.chance_level is not None:
        console.print(
            f"chance level of {report.metric} (declared by the workload): {report.chance_level:g}", highlight=False
        )
    if report.comparisons:
        table = Table(
            title=f"comparisons (Holm-corrected, alpha = {report.alpha:g})", title_justify="left", box=box.SIMPLE_HEAD
        )
        narrow = console.width < 120  # then the test and effect sizes are left to the verdicts below
        cols = [
            "comparison",
            f"difference ({level} CI)",
            "test",
            "p",
            "Holm p",
            "signif.",
            "P(better) [CI]",
            "Hedges' g",
            "Cliff's d",
        ]
        for col in cols[:2] + cols[3:7] if narrow else cols:
            table.add_column(
                col, justify="left" if col in ("comparison", "test") else "right", no_wrap=col.startswith("diff")
            )
        for c, cr in zip(report.comparisons, comparison_rows(report), strict=False):
            sig = "[bold green]yes[/]" if c.significant else "no"
            shown = [escape(cr[0]), f"{cr[1]} {cr[2]}", cr[3], cr[4], cr[5], sig, cr[15], cr[11], cr[12]]
            table.add_row(*(shown[:2] + shown[3:7] if narrow else shown))
        console.print(table)
        for c in report.comparisons:
            color = {"better": "green", "worse": "red"}.get(
                c.outcome, "yellow" if c.outcome == "underpowered" else "white"
            )
            console.print(f"[{color}]*[/] " + escape(c.verdict.replace("`", "")), highlight=False)
    for note in report.notes:
        console.print(f"[yellow]note:[/] {escape(note.replace('`', ''))}", highlight=False)


def aggregate_rows(study: Study) -> tuple[list[list[str]], list[list[str]]]:
    """The aggregate over several metrics: (group, IQM [CI]) rows and (pair, P(better) [CI]) rows."""
    agg = study.aggregate
    if agg is None:
        return [], []
    groups = [[g.name, "-" if g.iqm is None else f"{g.iqm:.3f} {_interval(g.iqm_low, g.iqm_high)}"] for g in agg.groups]
    pairs = [
        [f"{p.a} vs {p.b}", "-" if p.p_better is None else f"{p.p_better:.2f} {_interval(p.low, p.high)}"]
        for p in agg.pairs
    ]
    return groups, pairs


def print_study(study: Study, console: Console) -> None:
    """Each metric's report, then (several metrics) the aggregate over them."""
    for i, report in enumerate(study.reports):
        if i:
            console.print()
        print_report(report, console)
    if study.aggregate is None:
        return
    groups, pairs = aggregate_rows(study)
    table = Table(
        title=f"over all {len(study.reports)} metrics (each scaled to [0, 1], 1 = best seen)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("group")
    table.add_column("IQM [95% CI, stratified bootstrap]", justify="right")
    for row in groups:
        table.add_row(escape(row[0]), row[1])
    console.print(table)
    for row in pairs:
        console.print(f"P({escape(row[0]).replace(' vs ', ' better than ')}) = {row[1]} (mean over the metrics)")
    for note in study.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)


# -- documents ----------------------------------------------------------------------------------------
def _md_table(header, rows) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(report: Report, images: dict[str, str], study: Study | None = None) -> str:
    better = "lower" if report.mode == "min" else "higher"
    parts = [
        f"# {report.experiment}: `{report.metric}` across seeds ({better} is better)",
        "",
        f"Baseline: `{report.baseline}`" if report.baseline else "All pairs compared.",
        f"Grouped by: {', '.join(report.by) if report.by else 'group (variant x grid point)'}.",
        *(
            [f"Chance level (declared by the workload): {report.chance_level:g}."]
            if report.chance_level is not None
            else []
        ),
        "",
        "## Verdicts",
        "",
    ]
    parts += [f"- {c.verdict}" for c in report.comparisons] or ["(a single group: nothing to compare)"]
    parts += ["", "## Groups", "", _md_table(GROUP_COLUMNS, group_rows(report)), ""]
    if report.comparisons:
        parts += ["## Comparisons", "", _md_table(COMPARE_COLUMNS, comparison_rows(report)), ""]
    if study is not None and study.aggregate is not None:
        groups, pairs = aggregate_rows(study)
        parts += [
            f"## Over all metrics ({', '.join(r.metric for r in study.reports)})",
            "",
            _md_table(["group", "IQM [95% CI]"], groups),
            "",
            _md_table(["comparison", "P(better) [95% CI]"], pairs),
            "",
            f"Scores: {study.aggregate.normalization}. Intervals: stratified bootstrap (each metric's runs "
            "resampled on their own), 9999 resamples, seed 0.",
            "",
        ]
    if report.notes:
        parts += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    parts += ["## Method", "", method_text(report), ""]
    if images:
        parts += ["## Plots", ""] + [f"![{alt}]({name})" for name, alt in images.items()] + [""]
    return "\n".join(parts)


def _html_table(header, rows) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _inline_code(text: str) -> str:
    """`x` -> <code>x</code> after escaping: the verdicts' only markup."""
    pieces = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))


CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px;"
    "text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
    "li{margin:.4em 0}img{max-width:100%;border:1px solid #eee}code{background:#f3f3f3;padding:0 3px}"
)


def html_report(report: Report, files: Path, images: dict[str, str], study: Study | None = None) -> str:
    better = "lower" if report.mode == "min" else "higher"
    title = f"{report.experiment}: {report.metric} across seeds ({better} is better)"
    verdicts = "".join(f"<li>{_inline_code(c.verdict)}</li>" for c in report.comparisons)
    body = [
        f"<h1>{html.escape(title)}</h1>",
        "<p>"
        + (f"Baseline: <code>{html.escape(report.baseline)}</code>" if report.baseline else "All pairs compared.")
        + "</p>",
        *(
            [f"<p>Chance level (declared by the workload): {report.chance_level:g}</p>"]
            if report.chance_level is not None
            else []
        ),
        "<h2>Verdicts</h2>",
        f"<ul>{verdicts or '<li>a single group: nothing to compare</li>'}</ul>",
        "<h2>Groups</h2>",
        _html_table(GROUP_COLUMNS, group_rows(report)),
    ]
    if report.comparisons:
        body += ["<h2>Comparisons</h2>", _html_table(COMPARE_COLUMNS, comparison_rows(report))]
    if study is not None and study.aggregate is not None:
        groups, pairs = aggregate_rows(study)
        body += [
            f"<h2>Over all metrics ({html.escape(', '.join(r.metric for r in study.reports))})</h2>",
            _html_table(["group", "IQM [95% CI]"], groups),
            _html_table(["comparison", "P(better) [95% CI]"], pairs),
            f"<p>Scores: {html.escape(study.aggregate.normalization)}. Intervals: stratified bootstrap.</p>",
        ]
    if report.notes:
        body += ["<h2>Notes</h2><ul>" + "".join(f"<li>{_inline_code(n)}</li>" for n in report.notes) + "</ul>"]
    body += ["<h2>Method</h2>", f"<p>{html.escape(method_text(report))}</p>"]
    for name, alt in images.items():  # embedded: the MLflow UI shows the HTML alone, without its neighbours
        data = base64.b64encode((files / name).read_bytes()).decode()
        body.append(f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>')
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>"
    )


def write(report: Report, files: Path, study: Study | None = None) -> list[Path]:
    """report.md, report.html, compare.json and the PNG plots under ``files``; with a study, also its
    paper table, its curves (``--curves``) and the aggregate over its metrics."""
    import shutil

    from orchestrator.analysis import plots

    files.mkdir(parents=True, exist_ok=True)
    images = {}
    if study is not None and study.table_path:
        shutil.copy(study.table_path, files / f"table{Path(study.table_path).suffix}")
    curves = study.curves if study is not None else None
    if curves is not None and plots.all_curves(curves, report, files / "curves_all.png"):
        images["curves_all.png"] = "every per-step metric across seeds"
    if study is not None and study.aggregate is not None:
        plots.performance_profile(study.aggregate, report.experiment, files / "performance_profile.png")
        images["performance_profile.png"] = "performance profiles over the metrics"
        (files / "study.json").write_text(json.dumps(study.to_dict(), indent=1))
    if report.groups:
        plots.final_metric(report, files / "final_metric.png")
        images["final_metric.png"] = f"{report.metric} per seed and group"
    if plots.curves(report, files / "curves.png"):
        images["curves.png"] = f"{report.curve_metric} across seeds"
    (files / "report.md").write_text(markdown(report, images, study))
    (files / "report.html").write_text(html_report(report, files, images, study))
    (files / "compare.json").write_text(json.dumps(report.to_dict(), indent=1))
    return sorted(files.iterdir())
