"""``--where``: keep the groups whose params, tags or metrics satisfy every clause of a small filter,
``params.noise > 0.1 and variant = low``. MLflow's own filter compares params only as strings (no ``>``):
here a value compares as a number when both sides are numbers, else as text."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

from orchestrator.errors import InputError
from orchestrator.tracking.records import Tag

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "!=": operator.ne,
    "==": operator.eq,
    "=": operator.eq,
    "<": operator.lt,
    ">": operator.gt,
}
CLAUSE = re.compile(
    r"^\s*(?P<field>(?:params|tags|metrics)\.[\w.\-]+|variant)\s*(?P<op><=|>=|!=|==|=|<|>)\s*"
    r"(?P<value>'[^']*'|\"[^\"]*\"|\S+)\s*$"
)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def parse(where: str) -> list[tuple[str, Callable[[Any, Any], bool], str]]:
    clauses = []
    for part in re.split(r"\s+and\s+", where.strip(), flags=re.IGNORECASE):
        found = CLAUSE.match(part)
        if not found:
            raise InputError(
                f"cannot read '{part}': expected FIELD OP VALUE (FIELD: params.X, tags.X, metrics.X "
                f"or variant; OP: {' '.join(OPERATORS)}), clauses joined by 'and'",
                "--where",
            )
        clauses.append((found["field"], OPERATORS[found["op"]], found["value"].strip("'\"")))
    return clauses


def matches(run: Any, clauses: list[tuple[str, Callable[[Any, Any], bool], str]]) -> bool:
    """``run``: an MLflow Run (``data.params``, ``data.tags``, ``data.metrics``)."""
    for field, compare, wanted in clauses:
        if field == "variant":
            actual: Any = run.data.tags.get(Tag.VARIANT)
        else:
            kind, name = field.split(".", 1)
            actual = getattr(run.data, kind).get(name)
        if actual is None:
            return False
        a, b = _number(str(actual)), _number(wanted)
        if not (compare(a, b) if a is not None and b is not None else compare(str(actual), wanted)):
            return False
    return True
