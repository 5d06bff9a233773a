"""Reading a spec file without trusting it: bounded in size, strictly UTF-8, parsed by libyaml's safe
loader (plain data only, no object tags), duplicate keys refused, and alias bombs measured before anything
walks them. Every refusal is an ``InputError`` naming the file, so a hostile or careless spec costs
milliseconds and leaves nothing behind."""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import Any

import yaml

from orchestrator.errors import InputError

# A spec is a few kB; the largest real one in this repository is under 10 kB. 1 MiB leaves room for long
# grids and generated specs while refusing a log file, a dataset or /dev/zero before reading it all.
MAX_SPEC_BYTES = 1 << 20
# Values in the document once aliases are expanded. A billion-laughs document is a few hundred bytes but
# expands to 10^9 values: every later walk (nest, validation, hashing) would take that long.
MAX_VALUES = 200_000
MAX_DEPTH = 64

_Base: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster, same safe constructors


class StrictLoader(_Base):  # type: ignore[misc, valid-type]
    """The safe loader, refusing a key given twice in one mapping (YAML says keys are unique; PyYAML keeps
    the last silently, so a second ``variants:`` block would drop the first without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` merges: overriding is its point
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base constructor says so with its own error
                break
            if duplicate:
                line = key_node.start_mark.line + 1
                raise InputError(
                    f"duplicate key '{key}' (line {line}; first on line {seen[key]}): each key may "
                    "appear once in a mapping"
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_text(path: Path, what: str = "spec file") -> str:
    """The file's text: a regular file, at most ``MAX_SPEC_BYTES``, valid UTF-8 (a UTF-8 BOM is fine)."""
    source = str(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"not a regular file: expected a YAML {what}", source)
        if info.st_size > MAX_SPEC_BYTES:
            raise InputError(
                f"the file is {info.st_size / 2**20:.1f} MiB; a {what} may be at most {MAX_SPEC_BYTES >> 20} MiB",
                source,
            )
        with open(path, "rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)  # bounded even if the file grows while read
    except OSError as err:
        raise InputError(f"cannot read the {what}: {err.strerror or err}", source) from None
    if len(data) > MAX_SPEC_BYTES:
        raise InputError(f"a {what} may be at most {MAX_SPEC_BYTES >> 20} MiB", source)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError(f"the file is UTF-16; save the {what} as UTF-8", source)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise InputError(
            f"not valid UTF-8 text: byte 0x{data[err.start]:02x} at line {line} "
            f"(offset {err.start}); save the {what} as UTF-8",
            source,
        ) from None


def parse(text: str, source: str) -> Any:
    """Safe-parse YAML text with line numbers in errors and no object-constructing tags."""
    try:
        return yaml.load(text, Loader=StrictLoader)
    except InputError as err:
        raise InputError(err.message, source, err.field) from None
    except yaml.constructor.ConstructorError as err:
        line = f" (line {err.problem_mark.line + 1})" if err.problem_mark else ""
        if "tag" not in str(err.problem):  # e.g. "found unhashable key": a list used as a mapping key
            raise InputError(f"malformed YAML{line}: {err.problem}", source) from None
        raise InputError(
            f"YAML tag not allowed{line}: {err.problem}; only plain YAML data is accepted", source
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        context = getattr(err, "context", None)  # "expected a single document in the stream"
        problem = f"{context}, {problem}" if context else problem
        raise InputError(f"malformed YAML: {where}{problem}", source) from None
    except RecursionError:
        raise InputError(f"nested too deeply (more than {MAX_DEPTH} levels)", source) from None


def check_size(doc: Any, source: str) -> None:
    """Refuse a document whose aliases expand it past ``MAX_VALUES`` values or ``MAX_DEPTH`` levels.
    Linear in the document as parsed: an alias is one shared object, counted once per use by memo."""
    sizes: dict[int, int] = {}

    def size(node: Any, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise InputError(f"nested too deeply (more than {MAX_DEPTH} levels)", source)
        if not isinstance(node, (dict, list)):
            return 1
        if id(node) in sizes:
            return sizes[id(node)]
        children = list(node.items()) if isinstance(node, dict) else [(None, v) for v in node]
        total = 1
        for key, value in children:
            total += size(key, depth + 1) + size(value, depth + 1) if key is not None else size(value, depth + 1)
            if total > MAX_VALUES:
                raise InputError(
                    f"the document expands to more than {MAX_VALUES:,} values (YAML aliases "
                    "repeating a block?); a spec is small data",
                    source,
                )
        sizes[id(node)] = total
        return total

    size(doc, 0)


def non_finite(doc: Any, prefix: str = "") -> str | None:
    """The dotted path of the first NaN or infinity in a parsed document, else None. JSON cannot carry
    them and no orch field means them: ``offset: .nan`` would run and finish with a meaningless loss."""
    if isinstance(doc, float) and not math.isfinite(doc):
        return prefix or "(value)"
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        found = non_finite(value, f"{prefix}.{key}" if prefix else str(key))
        if found:
            return found
    return None


def reject_non_finite(doc: Any, source: str, prefix: str = "") -> None:
    path = non_finite(doc, prefix)
    if path is not None:
        raise InputError("expected a finite number, got NaN or infinity (.nan/.inf)", source, path)


def load_mapping(path: Path) -> dict[str, Any]:
    """One YAML mapping from ``path``, every check above applied."""
    source = str(path)
    doc = parse(read_text(path), source)
    if not isinstance(doc, dict):
        raise InputError(f"expected a mapping of spec fields at the top level, got {type(doc).__name__}", source)
    check_size(doc, source)
    reject_non_finite(doc, source)
    return doc


def load_value(text: str, source: str, field: str) -> Any:
    """One ``--set`` value, through the same checks as a spec file: bounded, strict (no tags, no duplicate
    keys), no alias bomb or recursive alias, no NaN."""
    if len(text) > MAX_SET_CHARS:
        raise InputError(f"a --set value is at most {MAX_SET_CHARS:,} characters, got {len(text):,}", source, field)
    try:
        value = parse(text, source)
        check_size(value, source)
    except InputError as err:
        raise InputError(err.message, source, field) from None
    reject_non_finite(value, source, field)
    return value


MAX_SET_CHARS = 64 * 1024


# -- fields whose value names something on the disk ------------------------------------------------
MAX_NAME = 100  # an experiment name becomes a directory name and MLflow's; 255 is the filesystem's limit
PSEUDO_FS = ("/proc", "/sys", "/dev")


def check_name(name: str) -> str:
    if name in (".", "..") or name.startswith("."):
        raise ValueError(
            f"'{name}' is not a usable experiment name: it names a (hidden) directory; start with a letter or digit"
        )
    if len(name) > MAX_NAME:
        raise ValueError(f"expected at most {MAX_NAME} characters, got {len(name)}")
    return name


def check_workdir(workdir: str) -> str:
    """A workdir orch can create run directories in: not under /proc, /sys or /dev, and its nearest
    existing ancestor a writable directory. Checked without creating anything."""
    if not workdir.strip():
        raise ValueError("expected a directory path, got an empty string")
    path = Path(workdir).expanduser()
    path = path if path.is_absolute() else Path.cwd() / path
    resolved = Path(os.path.abspath(path))
    if any(resolved == Path(p) or Path(p) in resolved.parents for p in PSEUDO_FS):
        raise ValueError(f"'{resolved}' is on a pseudo-filesystem; expected a directory on real storage")
    node = resolved
    while not node.exists():
        node = node.parent
    if not node.is_dir():
        raise ValueError(f"'{node}' is not a directory")
    if not os.access(node, os.W_OK | os.X_OK):
        raise ValueError(f"cannot create directories under '{node}' (not writable)")
    return workdir
