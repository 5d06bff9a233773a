"""docs/architecture.md's floors, as a test: the table "The rooms and their floors" is read from the doc, and
every import in orchestrator/ (at module level or inside a function; type-only imports aside) must go to a
room on a lower floor or stay in its own room. The core never imports the lab's workloads."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "orchestrator"
DOC = REPO / "docs" / "architecture.md"


def floors() -> dict[str, int]:
    """Module or folder (``errors.py``, ``spec/``) -> its floor, from the doc."""
    return {name: floor for name, (floor, _) in rows().items()}


def rows() -> dict[str, tuple[int, int]]:
    """Module or folder -> (floor, row of the table): the names of one row are one room (``cli.py`` and
    ``cli_tracking.py`` are the commands; they may import each other)."""
    text = DOC.read_text()
    table = text[text.index("## The rooms and their floors") :]
    found: dict[str, tuple[int, int]] = {}
    for n, line in enumerate(table.splitlines()):
        match = re.match(r"\| (\d+) \| (.+?) \|", line)
        if match:
            for name in re.findall(r"`([\w/]+(?:\.py|/))`", match.group(2)):
                found[name] = (int(match.group(1)), n)
        elif found and not line.startswith("|"):
            break
    return found


def room_of(module: str, rooms: dict[str, int]) -> str | None:
    """``orchestrator.spec.plan`` -> ``spec/``; ``orchestrator.api`` -> ``api.py``."""
    parts = module.split(".")[1:]
    if not parts:
        return None
    if f"{parts[0]}/" in rooms:
        return f"{parts[0]}/"
    return f"{parts[0]}.py" if f"{parts[0]}.py" in rooms else None


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import of the file that runs (type-only imports aside)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    found = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x
                package = path.relative_to(REPO).with_suffix("").parts[:-1]
                base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_doc_places_every_module_of_the_package_in_a_room():
    rooms = floors()
    assert len(rooms) > 15 and rooms["errors.py"] == 0 and rooms["cli.py"] > rooms["api.py"] > rooms["spec/"]
    unplaced = [
        str(p.relative_to(PACKAGE))
        for p in modules()
        if p.name != "__init__.py" or p.parent == PACKAGE
        if room_of(".".join(("orchestrator", *p.relative_to(PACKAGE).with_suffix("").parts)), rooms) is None
        and p.name not in ("__init__.py", "__main__.py")
    ]
    assert not unplaced, f"modules docs/architecture.md places on no floor: {unplaced}"


def test_no_import_runs_up_a_floor_and_the_core_never_imports_the_workloads():
    rooms, same_room = floors(), rows()
    upward, lab = [], []
    for path in modules():
        dotted = ".".join(("orchestrator", *path.relative_to(PACKAGE).with_suffix("").parts))
        mine = room_of(dotted, rooms)
        for line, target in imports(path):
            if target == "workloads" or target.startswith("workloads."):
                lab.append(f"{path.relative_to(REPO)}:{line} imports {target}")
            if mine is None or not target.startswith("orchestrator."):
                continue
            theirs = room_of(target, rooms)
            if theirs is not None and same_room[theirs] != same_room[mine] and rooms[theirs] >= rooms[mine]:
                upward.append(
                    f"{path.relative_to(REPO)}:{line} ({mine}, floor {rooms[mine]}) imports {target} "
                    f"({theirs}, floor {rooms[theirs]})"
                )
    assert not upward, "imports that run up (or across) a floor:\n" + "\n".join(upward)
    assert not lab, "the core imports the lab's workloads:\n" + "\n".join(lab)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The test above can fail: an import of api (floor 6) from errors.py (floor 0) is found."""
    rooms = floors()
    module = tmp_path / "errors.py"
    module.write_text("def f():\n    from orchestrator import api\n    from orchestrator.api import submit\n")
    found = [t for _, t in imports(module) if t.startswith("orchestrator.")]
    assert "orchestrator.api" in found and rooms[room_of("orchestrator.api", rooms)] > rooms["errors.py"]
